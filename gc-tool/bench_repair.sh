#!/usr/bin/env bash
# Time `sal-gc repair` against the library's own repair call on copies of
# the same heap, and print both figures and their ratio.
#
#     gc-tool/bench_repair.sh [-r RUNS] [-b BUILD_DIR] HEAP
#     gc-tool/bench_repair.sh [-r RUNS] [-b BUILD_DIR] --make N [DIR]
#
# HEAP is copied twice per run (cp --sparse=always, into the directory of
# HEAP unless $TMPDIR names another); one copy is repaired by
# `sal-gc repair`, the other by `sal-recover-time` (sal_heap_open with
# SAL_OPEN_REPAIR, then sal_heap_close: the library's recovery call and its
# commits).  The page cache is warm and clean: each copy is synced and read
# once before it is timed; the two alternate which goes first.  The median
# of RUNS (default 3) runs is printed.
#
# --make N builds a W7 heap first (shared/spec/benchmarks.md: N objects as a
# tree of fan-out 16 with 64-byte leaves, durably committed by a child that
# is then killed with SIGKILL) in DIR (default: a temporary directory),
# and benchmarks it.
#
# Output: one line of key=value pairs, then a markdown table row:
#     gc_repair_s=... library_repair_s=... ratio=... objects=... runs=...
set -euo pipefail

runs=3
build=""
make_n=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        -r) runs="$2"; shift 2 ;;
        -b) build="$2"; shift 2 ;;
        --make) make_n="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "$build" ]; then
    for d in build-release build; do
        if [ -x "$here/$d/gc-tool/sal-gc" ]; then build="$here/$d"; break; fi
    done
fi
gc="$build/gc-tool/sal-gc"
timer="$build/gc-tool/sal-recover-time"
if [ ! -x "$gc" ] || [ ! -x "$timer" ]; then
    echo "bench_repair.sh: build sal-gc and sal-recover-time first (-b BUILD_DIR)" >&2
    exit 2
fi

cleanup_dir=""
if [ -n "$make_n" ]; then
    dir="${1:-}"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/sal-w7-XXXXXX")"
        cleanup_dir="$dir"
    fi
    heap="$dir/w7.sal"
    rm -f "$heap"
    "$timer" --make "$make_n" "$heap" >&2
else
    [ "$#" -eq 1 ] || { echo "usage: bench_repair.sh [-r RUNS] [-b BUILD] HEAP | --make N [DIR]" >&2; exit 2; }
    heap="$1"
fi
[ -f "$heap" ] || { echo "bench_repair.sh: $heap: no such file" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-$(dirname "$heap")}/sal-bench-repair-XXXXXX")"
trap 'rm -rf "$work" ${cleanup_dir:+"$cleanup_dir"}' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

gc_times=()
lib_times=()
objects=0
for ((i = 0; i < runs; i++)); do
    order="gc lib"
    [ $((i % 2)) -eq 1 ] && order="lib gc" # alternate: both share the drift
    for who in $order; do
        copy="$work/$who.sal"
        cp --sparse=always "$heap" "$copy"
        sync # the copy's dirty pages are written now, not during the repair
        cat "$copy" >/dev/null # warm the page cache
        if [ "$who" = gc ]; then
            t0="$(now)"
            set +e
            "$gc" repair --no-progress "$copy" >"$work/gc.out" 2>&1
            rc=$?
            set -e
            t1="$(now)"
            if [ "$rc" -gt 1 ]; then
                echo "bench_repair.sh: sal-gc repair exited $rc:" >&2
                cat "$work/gc.out" >&2
                exit 1
            fi
            gc_times+=("$(echo "$t1 - $t0" | bc -l)")
        else
            t0="$(now)"
            "$timer" "$copy" >"$work/lib.out"
            t1="$(now)"
            lib_times+=("$(echo "$t1 - $t0" | bc -l)")
            objects="$(sed -n 's/.*objects=\([0-9]*\).*/\1/p' "$work/lib.out")"
        fi
        rm -f "$copy"
    done
done
g="$(printf '%s\n' "${gc_times[@]}" | median)"
l="$(printf '%s\n' "${lib_times[@]}" | median)"
ratio="$(echo "$g / $l" | bc -l)"
printf 'gc_repair_s=%.3f library_repair_s=%.3f ratio=%.3f objects=%s runs=%s\n' \
    "$g" "$l" "$ratio" "$objects" "$runs"
printf '| repair, %s objects | %.3f s | %.3f s | %.2fx |\n' "$objects" "$g" "$l" "$ratio"
