#!/usr/bin/env bash
# Build sal and run its test suite with ctest.
#
#     scripts/test.sh [PRESET] [CTEST-ARGS...]
#
# PRESET is a configure preset from CMakePresets.json: default (build/,
# the default), asan (build-asan/, AddressSanitizer + UndefinedBehavior-
# Sanitizer) or tsan (build-tsan/, ThreadSanitizer).  Further
# arguments go to ctest, for example `scripts/test.sh tsan -L concurrency`
# or `scripts/test.sh default -R alloc`.  When such a filter selects no
# test, the script says so and succeeds; a suite with no test fails.
#
# Installs what is missing (CMake, a compiler, CMocka) with apt-get when it
# runs as root or sudo works without a password; otherwise prints the
# apt-get command to run and exits 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sal_help_requested "$@"
cd "$SAL_ROOT"

preset=default
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    preset="$1"
    shift
fi
case "$preset" in
    default|asan|tsan) ;;
    *)
        echo "usage: scripts/test.sh [default|asan|tsan] [CTEST-ARGS...]" >&2
        exit 2
        ;;
esac
build_dir="$(sal_preset_dir "$preset")"

read -r -a missing <<<"$(sal_build_packages)"
sal_have_cmocka || missing+=(libcmocka-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
sal_need_packages "${missing[@]}"

echo "==> configuring preset '$preset' in ${build_dir#"$SAL_ROOT"/}/"
cmake --preset "$preset"
echo "==> building"
cmake --build --preset "$preset" -j "$(sal_jobs)"

# Count the tests the arguments select before running them: ctest treats
# "no test" as success, which must not pass for a whole suite.
count="$(ctest --test-dir "$build_dir" -N "$@" \
         | sed -n 's/^Total Tests: *\([0-9]*\).*/\1/p')"
if [ "${count:-0}" -eq 0 ]; then
    if [ "$#" -gt 0 ]; then
        echo "==> no test matches '$*' in preset '$preset'; nothing to run"
        exit 0
    fi
    echo "error: the build in ${build_dir#"$SAL_ROOT"/}/ has no tests" >&2
    exit 1
fi

# The test preset adds --output-on-failure, a per-test timeout and the
# sanitizer options; it is `ctest --test-dir build --output-on-failure`.
echo "==> running $count tests"
ctest --preset "$preset" -j "$(sal_jobs)" "$@"
