#!/usr/bin/env bash
# The tests of the tests: the crash harnesses, and the unit tests written
# for the windows they rarely hit, must fail on a library built with one
# crash rule broken on purpose.
#
#     tests/run_mutants.sh [--kill-rounds N] [--powercut-rounds N] [--seed S]
#
# For each mutant of the SAL_MUTANT build option
#
#     SLOT_FIRST  the commit slot is made durable before the data
#     SKIP_FLUSH  a durable sync never flushes the data
#     REUSE_ID    a committed id is reused at once after its release
#     READY_EARLY an id released during a commit's flush is reusable when
#                 that commit ends, not the one after it
#
# configures build-mutant-NAME/ (-DSAL_MUTANT=NAME), builds the two
# harnesses and test_concurrency only, and runs the kill harness
# (tests/test_kill.c, default 100 rounds) and the power-cut harness
# (tests/test_powercut.c, default 60 rounds), each stopping at its first
# failed round, then the unit tests that force such windows with a hook
# (test_concurrency: released_during_flush, emptied_during_cut).  A mutant
# is caught if any of them fails.  Prints one line per mutant, then
#
#     mutants: K of 4 caught
#
# and exits nonzero if one survived (or a build failed).  The heaps go to
# /dev/shm when it is writable and TMPDIR is not set: the harnesses check
# what reaches the simulated disk, not the real one, and a tmpfs makes them
# several times faster.  About 2 minutes on 2 cores, most of it building.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

kill_rounds=100
powercut_rounds=60
seed="${SAL_TEST_SEED:-1}"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --kill-rounds) kill_rounds="$2"; shift 2 ;;
        --powercut-rounds) powercut_rounds="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
jobs="$(nproc 2>/dev/null || echo 2)"
mutants=(SLOT_FIRST SKIP_FLUSH REUSE_ID READY_EARLY)
caught=0
start=$SECONDS
logdir="$(mktemp -d "${TMPDIR:-/tmp}/sal-mutants-XXXXXX")"
trap 'rm -rf "$logdir"' EXIT

# failed_rounds LOG PREFIX: F from "PREFIX N passed, F failed..." (or "?")
failed_rounds() {
    sed -n "s/^$2 *[0-9]* passed, \([0-9]*\) failed.*/\1/p" "$1" | tail -n 1 | grep . \
        || echo "?"
}

for m in "${mutants[@]}"; do
    build="$root/build-mutant-$m"
    t=$SECONDS
    echo "==> mutant $m: building in ${build#"$root"/}/"
    if ! cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAL_MUTANT="$m" \
            -DSAL_BUILD_BENCH=OFF -DSAL_BUILD_EXAMPLES=OFF -DSAL_BUILD_GC_TOOL=OFF -Wno-dev \
            >"$logdir/$m-configure.log" 2>&1 ||
       ! cmake --build "$build" -j "$jobs" --target test_kill test_powercut test_concurrency \
            >"$logdir/$m-build.log" 2>&1; then
        cat "$logdir/$m-configure.log" "$logdir/$m-build.log" 2>/dev/null | tail -n 30
        echo "mutant $m: BUILD FAILED"
        continue
    fi
    set +e
    "$build/tests/test_kill" --rounds "$kill_rounds" --seed "$seed" --max-failures 1 \
        >"$logdir/$m-kill.log" 2>&1
    "$build/tests/test_powercut" --rounds "$powercut_rounds" --seed "$seed" --max-failures 1 \
        >"$logdir/$m-powercut.log" 2>&1
    unit_failed=0
    for f in "released_during_*" "emptied_*"; do
        "$build/tests/test_concurrency" --filter "$f" >>"$logdir/$m-unit.log" 2>&1 ||
            unit_failed=1
    done
    set -e
    kf="$(failed_rounds "$logdir/$m-kill.log" kill-rounds:)"
    pf="$(failed_rounds "$logdir/$m-powercut.log" power-cuts:)"
    by=()
    [ "$kf" != "?" ] && [ "$kf" -gt 0 ] && by+=(kill)
    [ "$pf" != "?" ] && [ "$pf" -gt 0 ] && by+=(power-cut)
    [ "$unit_failed" -eq 1 ] && by+=(unit)
    echo "    $(tail -n 1 "$logdir/$m-kill.log")"
    echo "    $(tail -n 1 "$logdir/$m-powercut.log")"
    if [ "${#by[@]}" -gt 0 ]; then
        caught=$((caught + 1))
        first="$(grep -h -m 1 -e 'FAILED' -e 'ERROR:' "$logdir/$m-kill.log" \
            "$logdir/$m-powercut.log" "$logdir/$m-unit.log" | head -n 1)"
        echo "mutant $m: caught by ${by[*]} ($((SECONDS - t)) s); first failure: ${first:0:200}"
    else
        echo "mutant $m: SURVIVED: no harness or unit test failed ($((SECONDS - t)) s)"
    fi
done
echo "==> $((SECONDS - start)) s"
echo "mutants: $caught of ${#mutants[@]} caught"
[ "$caught" -eq "${#mutants[@]}" ]
