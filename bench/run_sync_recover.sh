#!/usr/bin/env bash
# W6 (durable sync of P new objects) against the peer peer_msync -o, and W7
# (recovery after a killed writer), RUNS rounds each (default 3), medians
# and ratios as markdown.
#
#     bench/run_sync_recover.sh [-R RUNS] [-n W7_OBJECTS] [-b SALBENCH] [-o FILE]
#
# W6: the peer is run twice per round, with -c 8192 (large folios) and -c 4
# (4 KiB folios), and the lower of the two is the reference, as
# shared/spec/benchmarks.md asks.  sal runs `salbench sync` (objects written
# into space already on disk, like the peer's) in the same round; like the
# peer's seq_sync_us_P, its sync_us_P times the allocations and writes of
# the P objects and the sync (sync_only_us_P: the sync alone).
# W7: `salbench recover -n N` (same boot: the table's locations are used)
# and `salbench recover -n N --sweep` (locations rebuilt from the segments,
# as after a reboot and as sal-gc repair does).  Target: 10M objects/s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs=3
n7=10000000
salbench="$root/build/bench/salbench"
out=""
while getopts "R:n:b:o:h" opt; do
    case "$opt" in
        R) runs="$OPTARG" ;;
        n) n7="$OPTARG" ;;
        b) salbench="$OPTARG" ;;
        o) out="$OPTARG" ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
    esac
done
peers="${SAL_PEERS_DIR:-$root/../shared/peers}"
[ -x "$salbench" ] || { echo "no $salbench: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
[ -f "$peers/peer_msync.c" ] || { echo "no peer sources in $peers (set SAL_PEERS_DIR)" >&2; exit 1; }
salbench="$(cd "$(dirname "$salbench")" && pwd)/$(basename "$salbench")" # the peers run from /tmp
peerbin="$(dirname "$salbench")/peers"
mkdir -p "$peerbin"
cc -O2 -std=c11 -o "$peerbin/peer_msync" "$peers/peer_msync.c"

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
counts=1,100,10000,100000
for r in $(seq 1 "$runs"); do
    echo "round $r/$runs" >&2
    echo "sal $("$salbench" sync -o "$counts")" >>"$raw"
    echo "peer8192 $(cd /tmp && "$peerbin/peer_msync" -c 8192 -o "$counts")" >>"$raw"
    echo "peer4 $(cd /tmp && "$peerbin/peer_msync" -c 4 -o "$counts")" >>"$raw"
    echo "rec $("$salbench" recover -n "$n7")" >>"$raw"
    echo "sweep $("$salbench" recover -n "$n7" --sweep)" >>"$raw"
done

# median KEY TAG: the median over rounds of KEY in the lines tagged TAG
median() {
    grep "^$2 " "$raw" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2 | sort -g |
        awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

{
    echo "## W6 durable sync, W7 recovery (median of $runs rounds, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$root" rev-parse --short HEAD))"
    echo
    echo "| P | sal sync_us (writes + sync) | peer seq_sync_us (lower of -c 8192, -c 4) | ratio | gate | sal sync alone | sal dev_write_kib | peer dev_write_kib |"
    echo "|---|---|---|---|---|---|---|---|"
    for p in ${counts//,/ }; do
        s=$(median "sync_us_$p" sal)
        a=$(median "seq_sync_us_$p" peer8192)
        b=$(median "seq_sync_us_$p" peer4)
        ref=$(awk -v a="$a" -v b="$b" 'BEGIN {print (a < b) ? a : b}')
        refw=$(awk -v a="$a" -v b="$b" -v wa="$(median "seq_dev_write_kib_$p" peer8192)" \
            -v wb="$(median "seq_dev_write_kib_$p" peer4)" 'BEGIN {print (a < b) ? wa : wb}')
        ratio=$(awk -v s="$s" -v r="$ref" 'BEGIN {printf "%.2fx", s / r}')
        pass=$(awk -v s="$s" -v r="$ref" 'BEGIN {print (s <= 2 * r) ? "pass (<= 2x)" : "FAIL (> 2x)"}')
        echo "| $p | $s | $ref | $ratio | $pass | $(median "sync_only_us_$p" sal) | $(median "dev_write_kib_$p" sal) | $refw |"
    done
    echo
    echo "| W7, $n7 objects | recover_s | objects_per_s | gate (10M/s) |"
    echo "|---|---|---|---|"
    for tag in rec sweep; do
        ops=$(median objects_per_s "$tag")
        name=$([ "$tag" = rec ] && echo "after a kill (table locations)" || echo "repair / after a reboot (sweep)")
        echo "| $name | $(median recover_s "$tag") | $ops | $(awk -v o="$ops" 'BEGIN {print (o >= 1e7) ? "pass" : "FAIL"}') |"
    done
} | if [ -n "$out" ]; then tee "$out"; else cat; fi
