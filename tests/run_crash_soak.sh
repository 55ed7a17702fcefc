#!/usr/bin/env bash
# Run the crash harnesses for as long as you like.
#
#     tests/run_crash_soak.sh [KILL_ROUNDS [POWERCUT_ROUNDS]] [--seed S] [--build-dir DIR]
#
# Runs KILL_ROUNDS rounds of the kill harness (tests/test_kill.c: real
# SIGKILLs during a random multi-session workload, then recovery) and
# POWERCUT_ROUNDS rounds of the power-cut harness (tests/test_powercut.c:
# simulated power losses, then recovery after a simulated reboot), and
# prints their summary lines:
#
#     kill-rounds: N passed, F failed; mid-sync K; median commits before kill M; seeds A-B
#     power-cuts: N passed, F failed; seeds A-B
#
# KILL_ROUNDS defaults to 10000 (what the crash contract asks before it is
# called done); POWERCUT_ROUNDS defaults to KILL_ROUNDS.  A round of the kill
# harness takes about 60 ms, one of the power-cut harness about 150 ms on a
# tmpfs and 350 ms on a disk (TMPDIR decides where the heaps go).  Round i
# of each uses seed S+i (S: --seed, SAL_TEST_SEED, or the time); a failed
# round is printed with its seed, and SAL_CRASH_KEEP=1 keeps its files.
#
# The harnesses are built in build-crash/ (RelWithDebInfo, test hooks on)
# unless --build-dir names another configured build tree.  Exits nonzero if
# a round failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

kill_rounds=""
powercut_rounds=""
seed="${SAL_TEST_SEED:-}"
build="$root/build-crash"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --seed) seed="$2"; shift 2 ;;
        --build-dir) build="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
        *)
            if [ -z "$kill_rounds" ]; then kill_rounds="$1"
            elif [ -z "$powercut_rounds" ]; then powercut_rounds="$1"
            else echo "too many arguments (see --help)" >&2; exit 2
            fi
            shift ;;
    esac
done
kill_rounds="${kill_rounds:-10000}"
powercut_rounds="${powercut_rounds:-$kill_rounds}"
seed="${seed:-$(( $(date +%s) % 1000000000 ))}"

if [ ! -f "$build/CMakeCache.txt" ]; then
    echo "==> configuring ${build#"$root"/}/"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSAL_BUILD_BENCH=OFF -DSAL_BUILD_EXAMPLES=OFF >/dev/null
fi
echo "==> building the harnesses in ${build#"$root"/}/"
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" \
    --target test_kill test_powercut >/dev/null

logdir="$(mktemp -d "${TMPDIR:-/tmp}/sal-soak-XXXXXX")"
trap 'rm -rf "$logdir"' EXIT
status=0
start=$SECONDS

# run NAME SUMMARY-PREFIX BINARY ROUNDS: stream the output but the summary
# line, which is printed again at the end.
run() {
    local name="$1" prefix="$2" bin="$3" rounds="$4" t=$SECONDS rc
    echo "==> $name: $rounds rounds from seed $seed"
    set +e
    "$bin" --rounds "$rounds" --seed "$seed" | tee "$logdir/$name.log" | grep -v "^$prefix"
    rc=${PIPESTATUS[0]}
    set -e
    echo "    ($((SECONDS - t)) s, exit status $rc)"
    [ "$rc" -eq 0 ] || status=1
}
if [ "$kill_rounds" -gt 0 ]; then
    run kill kill-rounds: "$build/tests/test_kill" "$kill_rounds"
fi
if [ "$powercut_rounds" -gt 0 ]; then
    run powercut power-cuts: "$build/tests/test_powercut" "$powercut_rounds"
fi
echo
echo "==> crash soak done in $((SECONDS - start)) s"
for name in kill powercut; do
    if [ -f "$logdir/$name.log" ]; then
        tail -n 1 "$logdir/$name.log"
    fi
done
exit "$status"
