#!/usr/bin/env bash
# Fuzz sal-gc's checker and the library's open with libFuzzer.
#
#     tests/run_fuzz.sh [SECONDS] [LIBFUZZER-ARGS...]
#
# Builds tests/fuzz_heap.c with clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer in build-fuzz/ (SAL_FUZZ_BUILD_DIR overrides),
# writes fresh seeds (small real heaps, as sparse images) next to the
# checked-in ones in tests/corpus/heap/, and fuzzes for SECONDS (default
# 60).  New inputs go to build-fuzz/corpus-heap/; a crash, a leak or a hang
# (-timeout=10 s per input) stops the run and leaves the input in
# build-fuzz/fuzz-artifacts/ (replay: build-fuzz/tests/fuzz_heap FILE).
# Exit status: 0 if nothing was found, libFuzzer's otherwise.
#
# Needs clang and its libFuzzer runtime (Debian: clang libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
[ "$#" -gt 0 ] && shift
case "$seconds" in
    ''|*[!0-9]*) echo "usage: tests/run_fuzz.sh [SECONDS] [LIBFUZZER-ARGS...]" >&2; exit 2 ;;
esac
build="${SAL_FUZZ_BUILD_DIR:-build-fuzz}"
cc="${SAL_FUZZ_CC:-clang}"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run_fuzz.sh: $cc not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link"
# Every check aborts, the seed generator's (real heaps written through the
# library) too.
flags="$flags -fno-sanitize-recover=all"
CC="$cc" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug \
    -DSAL_BUILD_FUZZ=ON -DSAL_BUILD_TESTS=ON -DSAL_BUILD_GC_TOOL=ON \
    -DSAL_BUILD_BENCH=OFF -DSAL_BUILD_EXAMPLES=OFF -DSAL_INSTALL=OFF \
    -DCMAKE_C_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target fuzz_heap fuzz_heap_seeds

corpus="$build/corpus-heap"
artifacts="$build/fuzz-artifacts"
mkdir -p "$corpus" "$artifacts"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" "$build/tests/fuzz_heap_seeds" "$corpus"

echo "==> fuzzing for $seconds s (corpus $corpus + tests/corpus/heap)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
exec "$build/tests/fuzz_heap" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$@" "$corpus" tests/corpus/heap
