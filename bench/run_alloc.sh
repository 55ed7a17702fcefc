#!/bin/bash
# run_alloc.sh - W1 (alloc): salbench against the allocator peers, same run.
#
# Runs `salbench alloc` and peer_alloc_{glibc,jemalloc,mimalloc} (and
# mimalloc again with MIMALLOC_LARGE_OS_PAGES=1, the peer to beat) with 1 and
# 2 threads, and bench/churn_floor (the least work a churn can do through
# an id table and through a pointer; one thread) through hyperfine: RUNS rounds, each round one hyperfine call
# that runs every configuration once, so the configurations alternate and
# share the machine's drift.  Each command's key=value line is captured into
# a raw file, hyperfine's wall/user/system times are added from its CSV
# export, and the medians and the sal/peer ratios are printed as a markdown
# table (stdout, and -o FILE).
#
# usage: bench/run_alloc.sh [-o FILE] [-r RAWFILE] [-n N] [-w W] [-R RUNS]
#                           [-b SALBENCH] [-m GIB]
#                           [-- extra salbench alloc options]
#   -o FILE     also write the markdown table to FILE
#   -r RAWFILE  keep the raw key=value lines in RAWFILE
#   -n N, -w W  workload size (default 10000000 and 1000000, as the peers)
#   -R RUNS     rounds (default 3; env RUNS)
#   -b PATH     the salbench binary (default build/bench/salbench; env
#               SALBENCH); churn_floor is taken from beside it.  Neither
#               is rebuilt then: build that tree first.
#   -m GIB      touch GIB GiB of memory right before each measured command
#               (bench/warm_memory.c says why; default 4, 0 for none; env
#               WARM_GIB).  Not timed.
# env: SAL_PEERS_DIR  the peer programs' sources (default ../shared/peers
#                     beside the repository); they are built with their own
#                     Makefile into a peers/ directory next to salbench.
#      THREADS        thread counts to run (default "1 2")
set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
N=${ALLOC_N:-10000000}
W=${ALLOC_W:-1000000}
THREADS=${THREADS:-"1 2"}
WARM_GIB=${WARM_GIB:-4}
OUT=
RAW_KEEP=
SALBENCH_GIVEN=0
[ -n "${SALBENCH:-}" ] && SALBENCH_GIVEN=1
SALBENCH=${SALBENCH:-$ROOT/build/bench/salbench}

die() { echo "run_alloc.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while getopts "o:r:n:w:R:b:m:h" opt; do
    case $opt in
    o) OUT=$OPTARG ;;
    r) RAW_KEEP=$OPTARG ;;
    n) N=$OPTARG ;;
    w) W=$OPTARG ;;
    R) RUNS=$OPTARG ;;
    b) SALBENCH=$OPTARG; SALBENCH_GIVEN=1 ;;
    m) WARM_GIB=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
EXTRA=("$@") # passed to salbench alloc

command -v hyperfine >/dev/null ||
    die "hyperfine is not installed (Debian: apt-get install hyperfine, or run ../shared/peers/install.sh)"

# ---- salbench ------------------------------------------------------------
if [ "$SALBENCH_GIVEN" = 0 ] && [ -f "$ROOT/build/CMakeCache.txt" ]; then
    cmake --build "$ROOT/build" --target salbench >&2 || die "building salbench failed"
fi
[ -x "$SALBENCH" ] || die "no salbench at $SALBENCH; build it first:
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build
or give its path with -b PATH"
SALBENCH=$(cd "$(dirname "$SALBENCH")" && pwd)/$(basename "$SALBENCH")
CACHE=$(dirname "$(dirname "$SALBENCH")")/CMakeCache.txt
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$CACHE" 2>/dev/null)
case "$BUILD_TYPE" in
Release | RelWithDebInfo | "") ;;
*) echo "run_alloc.sh: warning: salbench is a '$BUILD_TYPE' build; figures need Release" >&2 ;;
esac

# ---- peers ---------------------------------------------------------------
PEERS=${SAL_PEERS_DIR:-$ROOT/../shared/peers}
PEERS_BIN=$(dirname "$SALBENCH")/peers
HOW_TO_INSTALL="install the peers' packages with: sudo sh $PEERS/install.sh
(Debian packages libjemalloc-dev libmimalloc-dev liblmdb-dev hyperfine)"
if [ -f "$PEERS/Makefile" ] && [ -f "$PEERS/peer_alloc.c" ]; then
    PEERS=$(cd "$PEERS" && pwd)
    mkdir -p "$PEERS_BIN"
    # Build out of tree (VPATH) so that the peers' directory stays untouched.
    for b in peer_alloc_glibc peer_alloc_jemalloc peer_alloc_mimalloc; do
        # -B: a binary already built beside the sources would otherwise
        # satisfy the target through VPATH and nothing would land here.
        make -s -B -C "$PEERS_BIN" -f "$PEERS/Makefile" VPATH="$PEERS" "$b" \
            >/dev/null 2>"$PEERS_BIN/$b.log" ||
            echo "run_alloc.sh: could not build $b (see $PEERS_BIN/$b.log)" >&2
    done
else
    echo "run_alloc.sh: no peer sources at $PEERS (set SAL_PEERS_DIR); using the peers built before in $PEERS_BIN, if any" >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/run_alloc.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$TMP"' EXIT
RAW=$TMP/raw.txt
: >"$RAW"

cc -O2 -o "$TMP/warm_memory" "$ROOT/bench/warm_memory.c" || die "building warm_memory failed"
export WARM="$TMP/warm_memory $WARM_GIB"

# The wrapper hyperfine runs (hyperfine's --prepare warms the memory, not
# timed): run the command, prefix its line with the configuration and
# round, append it to the raw file, pass on the status.
cat >"$TMP/run1" <<'EOF'
#!/bin/bash
cfg=$1 run=$2; shift 2
out=$("$@"); rc=$?
[ $rc -eq 0 ] || echo "run_alloc.sh: [$cfg] round $run failed (rc=$rc)" >&2
echo "cfg=$cfg run=$run rc=$rc $out" >>"$RAW"
exit $rc
EOF
chmod +x "$TMP/run1"
export RAW

# Configurations: NAME|COMMAND (the thread count is appended per round).
CFGS=()
CFGS+=("sal|$(printf '%q ' "$SALBENCH" alloc -n "$N" -w "$W" ${EXTRA[@]+"${EXTRA[@]}"})-t")
PEER_NAMES=(glibc jemalloc mimalloc mimalloc_large)
MISSING=()
for p in "${PEER_NAMES[@]}"; do
    bin=$PEERS_BIN/peer_alloc_${p%_large}
    if [ ! -x "$bin" ]; then
        MISSING+=("$p")
        continue
    fi
    if [ "$p" = mimalloc_large ]; then
        CFGS+=("$p|env MIMALLOC_LARGE_OS_PAGES=1 $(printf '%q ' "$bin" -n "$N" -w "$W")-t")
    else
        CFGS+=("$p|$(printf '%q ' "$bin" -n "$N" -w "$W")-t")
    fi
done
# The churn floor (built beside salbench; one thread only).
FLOOR=$(dirname "$SALBENCH")/churn_floor
if [ "$SALBENCH_GIVEN" = 0 ] && [ -f "$ROOT/build/CMakeCache.txt" ]; then
    cmake --build "$ROOT/build" --target churn_floor >&2 || die "building churn_floor failed"
fi
if [ -x "$FLOOR" ]; then
    for m in table pointer; do
        CFGS+=("floor_$m|$(printf '%q ' "$FLOOR" -n "$N" -w "$W" --resolve "$m")")
    done
else
    echo "run_alloc.sh: no churn_floor beside salbench: the floor rows stay empty" >&2
fi
if [ ${#MISSING[@]} -gt 0 ]; then
    echo "run_alloc.sh: peers not available: ${MISSING[*]}" >&2
    echo "$HOW_TO_INSTALL" >&2
fi

{
    echo "# host: $(uname -srm); $(nproc) cores;$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "# THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    echo "# heap dir: ${TMPDIR:-/tmp} ($(df -T "${TMPDIR:-/tmp}" | awk 'NR==2{print $2}'))"
    echo "# $(hyperfine --version); rounds $RUNS; n=$N w=$W; threads $THREADS; salbench $SALBENCH (${BUILD_TYPE:-?}) ${EXTRA[*]+${EXTRA[*]}}"
    echo "# memory touched before each command: $WARM_GIB GiB"
} >&2

T0=$(date +%s)
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)
for r in $(seq 1 "$RUNS"); do
    # Every (configuration, threads) pair once; the order is rotated by one
    # each round so that no configuration always runs first (cold machine)
    # or right after the same neighbour.
    all=()
    for t in $THREADS; do
        for c in "${CFGS[@]}"; do
            case $c in floor_*) [ "$t" = 1 ] || continue ;; esac
            all+=("$t|$c")
        done
    done
    args=()
    for ((k = 0; k < ${#all[@]}; k++)); do
        e=${all[$(((k + r - 1) % ${#all[@]}))]}
        t=${e%%|*} c=${e#*|}
        name=${c%%|*} cmd=${c#*|}
        case $name in floor_*) ;; *) cmd="$cmd $t" ;; esac # the others end in -t
        args+=(-n "${name}_t$t" "$(printf '%q' "$TMP/run1") ${name}_t$t $r $cmd")
    done
    echo "# round $r/$RUNS" >&2
    hyperfine --runs 1 --style basic -i --prepare "$WARM" --export-csv "$TMP/round$r.csv" \
        "${args[@]}" >&2 || echo "run_alloc.sh: hyperfine failed in round $r" >&2
    # command,mean,stddev,median,user,system,min,max
    awk -F, -v r="$r" 'NR > 1 { printf "cfg=%s run=%s wall_s=%.3f user_s=%.3f sys_s=%.3f\n", $1, r, $2, $5, $6 }' \
        "$TMP/round$r.csv" >>"$RAW"
done
echo "# total wall time: $(($(date +%s) - T0)) s" >&2
[ -n "$RAW_KEEP" ] && cp "$RAW" "$RAW_KEEP"

# ---- medians and the table -------------------------------------------------
TABLE=$TMP/table.md
awk -v runs="$RUNS" -v n="$N" -v w="$W" -v threads="$THREADS" \
    -v date="$(date -u +%Y-%m-%dT%H:%MZ)" \
    -v host="$(uname -r); $(nproc) cores" \
    -v commit="$COMMIT" '
function isnum(x) { return x ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ }
function median(id,    m, i, p, x, a) {
    m = nv[id]; if (m == 0) return ""
    for (i = 1; i <= m; i++) a[i] = vals[id, i] + 0
    for (i = 2; i <= m; i++) { x = a[i]; p = i - 1
        while (p >= 1 && a[p] > x) { a[p + 1] = a[p]; p-- }
        a[p + 1] = x }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function med(cfg, k) { return median(cfg SUBSEP k) }
function fmt(v) {
    if (v == "") return "-"
    if (v == int(v)) return sprintf("%d", v)
    if (v >= 1000) return sprintf("%.0f", v)
    if (v >= 10) return sprintf("%.1f", v)
    return sprintf("%.2f", v)
}
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : a / b }
function fmtr(x) { return x == "" ? "-" : sprintf("%.2fx", x) }
function gate(label, x, lim) {
    printf "| %s | %s | at most %.1fx | %s |\n", label, fmtr(x), lim,
        x == "" ? "not measured" : (x <= lim ? "pass" : "**FAIL**")
}
{
    cfg = ""; bad = 0
    for (i = 1; i <= NF; i++) {
        eq = index($i, "="); if (!eq) continue
        k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
        if (k == "cfg") { cfg = v; continue }
        if (k == "rc" && v != 0) { bad = 1; fails++ }
        if (bad || k == "run" || !isnum(v)) continue
        id = cfg SUBSEP k
        vals[id, ++nv[id]] = v
    }
}
END {
    np = split("glibc jemalloc mimalloc mimalloc_large", peer, " ")
    nt = split(threads, th, " ")
    nf = split("p1_alloc_ns p1_free_ns p2_fill_ns p2_churn_ns p2_drain_ns p1_alloc_mops peak_rss_mib wall_s", fig, " ")
    printf "## W1 alloc: sal against the allocators (median of %d rounds)\n\n", runs
    printf "%s, kernel %s, sal %s; n=%d, w=%d. Each cell: median (sal / peer).\n", date, host, commit, n, w
    printf "Lower is better except for `_mops`. wall_s: hyperfine, whole process.\n\n"
    printf "| figure | threads | sal | glibc | jemalloc | mimalloc | mimalloc large pages |\n"
    printf "|---|---|---|---|---|---|---|\n"
    for (f = 1; f <= nf; f++) for (j = 1; j <= nt; j++) {
        t = th[j]; s = med("sal_t" t, fig[f])
        printf "| %s | %s | %s |", fig[f], t, fmt(s)
        for (p = 1; p <= np; p++) {
            v = med(peer[p] "_t" t, fig[f])
            if (v == "") printf " - |"
            else printf " %s (%s) |", fmt(v), fmtr(ratio(s, v))
        }
        printf "\n"
    }
    # What an id table costs at the least (bench/churn_floor.c).
    ft = med("floor_table_t1", "p2_churn_ns"); fp = med("floor_pointer_t1", "p2_churn_ns")
    mc = med("mimalloc_t1", "p2_churn_ns"); sc = med("sal_t1", "p2_churn_ns")
    printf "\n| p2_churn_ns, 1 thread | median | vs mimalloc | sal vs it |\n|---|---|---|---|\n"
    printf "| sal | %s | %s | - |\n", fmt(sc), fmtr(ratio(sc, mc))
    printf "| floor through an id table | %s | %s | %s |\n", fmt(ft), fmtr(ratio(ft, mc)), fmtr(ratio(sc, ft))
    printf "| floor through a pointer | %s | %s | %s |\n", fmt(fp), fmtr(ratio(fp, mc)), fmtr(ratio(sc, fp))
    printf "\n| sal only | threads | median |\n|---|---|---|\n"
    ns = split("p1_cpu_ns file_mib disk_mib alloc_waits payload_mib rss_end_mib close_ms", so, " ")
    for (f = 1; f <= ns; f++) for (j = 1; j <= nt; j++)
        printf "| %s | %s | %s |\n", so[f], th[j], fmt(med("sal_t" th[j], so[f]))
    printf "\n| check | threads | result |\n|---|---|---|\n"
    for (j = 1; j <= nt; j++) {
        t = th[j]; cs = med("sal_t" t, "checksum"); msg = ""; compared = 0
        for (p = 1; p <= np; p++) {
            cp = med(peer[p] "_t" t, "checksum")
            if (cp != "") compared++
            if (cp != "" && cs != "" && cp != cs) msg = msg " differs from " peer[p]
        }
        if (cs == "") msg = "sal did not run"
        else if (compared == 0) msg = "no peer ran: nothing to compare"
        printf "| checksum | %s | %s |\n", t, msg == "" ? "same as every peer" : "**" msg "**"
    }
    for (m = 1; m <= 2; m++) {
        fl = m == 1 ? "floor_table" : "floor_pointer"; cf = med(fl "_t1", "checksum")
        if (cf != "")
            printf "| checksum | %s | %s |\n", fl, med("sal_t1", "checksum") == "" ? "sal did not run" : cf == med("sal_t1", "checksum") ? "same as sal" : "**differs from sal**"
    }
    printf "| failed runs | all | %d |\n", fails + 0
    printf "\n| gate (shared/spec/benchmarks.md) | ratio | bar | result |\n|---|---|---|---|\n"
    gate("p1_alloc_ns, 1 thread, vs mimalloc large pages", ratio(med("sal_t1", "p1_alloc_ns"), med("mimalloc_large_t1", "p1_alloc_ns")), 0.8)
    gate("p1_alloc_ns, 2 threads, vs mimalloc large pages", ratio(med("sal_t2", "p1_alloc_ns"), med("mimalloc_large_t2", "p1_alloc_ns")), 1.0)
    gate("p2_fill_ns, 1 thread, vs mimalloc", ratio(med("sal_t1", "p2_fill_ns"), med("mimalloc_t1", "p2_fill_ns")), 0.5)
    gate("p2_churn_ns, 1 thread, vs mimalloc", ratio(med("sal_t1", "p2_churn_ns"), med("mimalloc_t1", "p2_churn_ns")), 1.0)
    gate("p1_cpu_ns, 2 threads vs 1 thread", ratio(med("sal_t2", "p1_cpu_ns"), med("sal_t1", "p1_cpu_ns")), 1.1)
}' "$RAW" >"$TABLE"

cat "$TABLE"
if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")" && cp "$TABLE" "$OUT" && echo "# table written to $OUT" >&2
fi
! grep -q ' rc=[1-9]' "$RAW"
