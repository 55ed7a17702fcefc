/*
 * w1_alloc.c - salbench alloc: workload W1 on a sal heap.
 *
 * Mirrors ../shared/peers/peer_alloc.c operation for operation, with
 * malloc/free replaced by sal_alloc/sal_release:
 *
 * Phase 1: N allocations of pseudo-random sizes 16..256 bytes (nrefs 0,
 *          type 0), the first 8 bytes of each written (= i), every id kept
 *          in an mmap'd array faulted in before timing; then each object's
 *          first word is read back (sal_read) into the checksum and the
 *          object released (sal_release).
 * Phase 2: churn.  Fill a working set of W objects, then N random
 *          replacements (read and release a random slot, allocate a new
 *          object into it), then read and release the working set.
 * With -t T, T threads each do N/T allocations and churn ops on a private
 * working set of W/T objects; phases start and end on a barrier and are
 * timed on the wall clock by thread 0, as in the peer.  The PRNG streams
 * (seed PEER_SEED + 0x1000003*(tid+1), sizes 16 + below(241), slot picks)
 * are the peer's, so the checksum must equal the peer's for the same N, W
 * and T.
 *
 * What sal adds to phase 1, and the peer does not have: the heap is created
 * INSIDE phase 1's timed region (thread 0 creates it right after the phase
 * clock starts, the others wait for it on a barrier), and so is each
 * thread's sal_session_open().  Every phase runs inside one write section per
 * thread (sal_write_begin/end inside the timed region), or, with
 * --section-ops S, a section that is ended and restarted every S operations.
 * Closing the sessions and the heap happens after the last phase and is not
 * part of any phase (reported separately as close_ms).
 *
 * p1_cpu_ns: the CPU time of the WHOLE PROCESS (CLOCK_PROCESS_CPUTIME_ID:
 * every thread, including the library's background segment provider and
 * the barrier waits) consumed between the start and the end of phase 1,
 * divided by the total number of phase-1 allocations N.  With perfect
 * scaling it is the same for 1 and 2 threads.
 *
 * Output: one line of key=value pairs on stdout (same keys as the peer,
 * plus p1_cpu_ns, file_mib, alloc_waits and a few sal-only figures).
 * file_mib is the heap file's length at the end (sal_heap_stats_get
 * file_bytes, which includes the sparse object-table region), disk_mib the
 * blocks it really occupies (st_blocks); both are taken after the drain,
 * before sal_heap_close().
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "bench_common.h"
#include "workloads.h"

#define WL "alloc"

#define NPHASE 5
enum { PH_ALLOC, PH_FREE, PH_FILL, PH_CHURN, PH_DRAIN };
static const char *phase_name[NPHASE] = {"p1_alloc", "p1_free", "p2_fill",
                                         "p2_churn", "p2_drain"};

typedef struct {
    int tid;
    uint64_t n;        /* phase-1 allocations and phase-2 churn ops */
    uint64_t w;        /* phase-2 working set */
    sal_id *ids;       /* id array, mmap'd (not from the heap) */
    size_t ids_bytes;
    uint64_t payload;  /* bytes requested in phase 1 */
    uint64_t check;    /* checksum of the words read back */
} targ;

static pthread_barrier_t bar;
static double phase_t0[NPHASE], phase_t1[NPHASE];
static double p1_cpu0, p1_cpu1;

static sal_heap *g_heap;        /* created by thread 0 inside phase 1 */
static const char *g_path;
static sal_options g_opt;
static uint64_t g_section_ops;  /* 0: one write section per phase */
static int g_phase_times;       /* --phase-times: print them on stderr */

/* Same as the peer's pick_size. */
static inline size_t pick_size(bench_rng *r)
{
    return 16 + (size_t)bench_rng_below(r, 241); /* 16..256 inclusive */
}

/* Start/stop a phase: all threads line up; thread 0 reads the clock. */
static void phase_begin(targ *a, int ph)
{
    pthread_barrier_wait(&bar);
    if (a->tid == 0) {
        phase_t0[ph] = bench_now();
        if (ph == PH_ALLOC)
            p1_cpu0 = bench_process_cpu_s();
    }
}

static sal_heap_stats phase_stats[NPHASE]; /* at each phase's end */

static void phase_end(targ *a, int ph)
{
    pthread_barrier_wait(&bar);
    if (a->tid == 0) {
        phase_t1[ph] = bench_now();
        if (ph == PH_ALLOC)
            p1_cpu1 = bench_process_cpu_s();
        if (g_phase_times) /* outside the timed region */
            BENCH_CHECK(WL, sal_heap_stats_get(g_heap, &phase_stats[ph]));
    }
}

/* With --section-ops S: leave and re-enter the write section every S ops,
 * as a long-running application would, so that freed space can be reused. */
static inline void section_tick(sal_session *s, uint64_t i)
{
    if (g_section_ops && (i + 1) % g_section_ops == 0) {
        BENCH_CHECK(WL, sal_write_end(s));
        BENCH_CHECK(WL, sal_write_begin(s));
    }
}

static inline uint64_t read_word(sal_session *s, sal_id id)
{
    const void *p;
    BENCH_CHECK(WL, sal_read(s, id, &p));
    return *(const uint64_t *)p;
}

static void *worker(void *p)
{
    targ *a = p;
    bench_rng r;
    sal_id *ids = a->ids;
    sal_session *s = NULL;
    uint64_t i, chk = 0, payload = 0;
    sal_id id;
    void *obj;

    bench_rng_init(&r, PEER_SEED + 0x1000003ULL * (uint64_t)(a->tid + 1));

    /* ---- phase 1: create the heap, N allocations, keep all ---- */
    phase_begin(a, PH_ALLOC);
    if (a->tid == 0)
        BENCH_CHECK(WL, sal_heap_create(g_path, &g_opt, &g_heap));
    pthread_barrier_wait(&bar); /* the others wait for the heap */
    BENCH_CHECK(WL, sal_session_open(g_heap, &s));
    BENCH_CHECK(WL, sal_write_begin(s));
    for (i = 0; i < a->n; i++) {
        size_t sz = pick_size(&r);
        BENCH_CHECK(WL, sal_alloc(s, sz, 0, 0, &id, &obj));
        *(uint64_t *)obj = i;
        payload += sz;
        ids[i] = id;
        section_tick(s, i);
    }
    BENCH_CHECK(WL, sal_write_end(s));
    phase_end(a, PH_ALLOC);

    phase_begin(a, PH_FREE);
    BENCH_CHECK(WL, sal_write_begin(s));
    for (i = 0; i < a->n; i++) {
        chk += read_word(s, ids[i]);
        BENCH_CHECK(WL, sal_release(s, ids[i]));
        section_tick(s, i);
    }
    BENCH_CHECK(WL, sal_write_end(s));
    phase_end(a, PH_FREE);

    /* ---- phase 2: working set of W, N random replacements ---- */
    phase_begin(a, PH_FILL);
    BENCH_CHECK(WL, sal_write_begin(s));
    for (i = 0; i < a->w; i++) {
        BENCH_CHECK(WL, sal_alloc(s, pick_size(&r), 0, 0, &id, &obj));
        *(uint64_t *)obj = i;
        ids[i] = id;
        section_tick(s, i);
    }
    BENCH_CHECK(WL, sal_write_end(s));
    phase_end(a, PH_FILL);

    phase_begin(a, PH_CHURN);
    BENCH_CHECK(WL, sal_write_begin(s));
    for (i = 0; i < a->n; i++) {
        uint64_t j = bench_rng_below(&r, a->w);
        chk += read_word(s, ids[j]);
        BENCH_CHECK(WL, sal_release(s, ids[j]));
        BENCH_CHECK(WL, sal_alloc(s, pick_size(&r), 0, 0, &id, &obj));
        *(uint64_t *)obj = i;
        ids[j] = id;
        section_tick(s, i);
    }
    BENCH_CHECK(WL, sal_write_end(s));
    phase_end(a, PH_CHURN);

    phase_begin(a, PH_DRAIN);
    BENCH_CHECK(WL, sal_write_begin(s));
    for (i = 0; i < a->w; i++) {
        chk += read_word(s, ids[i]);
        BENCH_CHECK(WL, sal_release(s, ids[i]));
        section_tick(s, i);
    }
    BENCH_CHECK(WL, sal_write_end(s));
    phase_end(a, PH_DRAIN);

    BENCH_CHECK(WL, sal_session_close(s));

    a->payload = payload;
    a->check = chk;
    return NULL;
}

void w1_alloc_usage(FILE *out)
{
    fprintf(out,
            "salbench alloc [-n N] [-w W] [-t T] [--dir DIR] [options]\n"
            "  W1, as peer_alloc_{glibc,jemalloc,mimalloc}: N allocations\n"
            "  of 16..256 B kept then released; fill W, N random\n"
            "  replacements, drain.\n"
            "  -n N                 phase-1 allocations and phase-2 churn ops"
            " (10000000)\n"
            "  -w W                 phase-2 working set (1000000)\n"
            "  -t T                 threads; each does N/T ops on W/T objects"
            " (1)\n"
            "  --dir DIR            create the heap as DIR/heap.sal and keep"
            " it\n"
            "                       (default: a temporary directory, removed)\n"
            "  -s, --section-ops S  end and restart the write section every S"
            " ops\n"
            "                       (default 0: one section per phase)\n"
            "  --ready-segments K   sal_options.ready_segments (library"
            " default)\n"
            "  --segment-mib M      sal_options.segment_bytes in MiB (library"
            " default)\n"
            "  --phase-times        print each phase's CLOCK_MONOTONIC start and"
            " end, and\n"
            "                       the heap's segment counts at its end, on\n"
            "                       stderr (for perf record -k"
            " CLOCK_MONOTONIC; perf report\n"
            "                       --time START,END)\n"
            "  keys: p{1_alloc,1_free,2_fill,2_churn,2_drain}_{ns,mops}"
            " p1_cpu_ns payload_mib\n"
            "        ptrarr_mib rss_start_mib peak_rss_mib rss_end_mib"
            " checksum file_mib\n"
            "        disk_mib alloc_waits live_end close_ms segments_recycled\n");
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "salbench alloc: %s\n", msg);
    w1_alloc_usage(stderr);
    return 2;
}

enum { OPT_DIR = 256, OPT_READY, OPT_SEGMENT, OPT_PHASE_TIMES };

int w1_alloc_main(int argc, char **argv)
{
    uint64_t n = 10000000, w = 1000000, t64 = 1, v;
    const char *dir = NULL;
    int c;
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, OPT_DIR},
        {"section-ops", required_argument, NULL, 's'},
        {"ready-segments", required_argument, NULL, OPT_READY},
        {"segment-mib", required_argument, NULL, OPT_SEGMENT},
        {"phase-times", no_argument, NULL, OPT_PHASE_TIMES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };

    sal_options_init(&g_opt);
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:w:t:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (bench_parse_count(optarg, &n))
                return usage_error("-n wants a count");
            break;
        case 'w':
            if (bench_parse_count(optarg, &w))
                return usage_error("-w wants a count");
            break;
        case 't':
            if (bench_parse_count(optarg, &t64))
                return usage_error("-t wants a count");
            break;
        case 's':
            if (bench_parse_count(optarg, &g_section_ops))
                return usage_error("--section-ops wants a count");
            break;
        case OPT_DIR: dir = optarg; break;
        case OPT_READY:
            if (bench_parse_count(optarg, &v) || v > 1u << 20)
                return usage_error("--ready-segments wants a count");
            g_opt.ready_segments = (unsigned)v;
            break;
        case OPT_SEGMENT:
            if (bench_parse_count(optarg, &v) || v == 0 || v > 1024 || (v & (v - 1)))
                return usage_error("--segment-mib wants a power of two from 1 to 1024 (MiB)");
            g_opt.segment_bytes = v << 20;
            break;
        case OPT_PHASE_TIMES: g_phase_times = 1; break;
        case 'h': w1_alloc_usage(stdout); return 0;
        default: return usage_error("bad option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument");
    if (t64 < 1 || t64 > SAL_MAX_SESSIONS)
        return usage_error("-t must be 1..SAL_MAX_SESSIONS");
    int t = (int)t64;
    if (n < t64 || w < t64)
        return usage_error("-n and -w must be at least -t");

    bench_dir hd;
    bench_dir_setup(&hd, dir);
    g_path = hd.path;

    long rss_start = bench_rss_now_kib();

    targ *a = calloc((size_t)t, sizeof *a); /* tiny, before any timing */
    pthread_t *th = calloc((size_t)t, sizeof *th);
    if (!a || !th) {
        fprintf(stderr, "salbench alloc: out of memory\n");
        return 1;
    }
    size_t arr_total = 0;
    for (int k = 0; k < t; k++) {
        a[k].tid = k;
        a[k].n = n / t64 + ((uint64_t)k < n % t64);
        a[k].w = w / t64 + ((uint64_t)k < w % t64);
        uint64_t slots = a[k].n > a[k].w ? a[k].n : a[k].w;
        a[k].ids_bytes = slots * sizeof(sal_id);
        a[k].ids = mmap(NULL, a[k].ids_bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a[k].ids == MAP_FAILED) {
            fprintf(stderr, "salbench alloc: mmap: %s\n", strerror(errno));
            return 1;
        }
        memset(a[k].ids, 0, a[k].ids_bytes); /* fault in before timing */
        arr_total += a[k].ids_bytes;
    }

    pthread_barrier_init(&bar, NULL, (unsigned)t);
    for (int k = 0; k < t; k++) {
        int rc = pthread_create(&th[k], NULL, worker, &a[k]);
        if (rc != 0) {
            fprintf(stderr, "salbench alloc: pthread_create: %s\n",
                    strerror(rc));
            return 1;
        }
    }
    for (int k = 0; k < t; k++)
        pthread_join(th[k], NULL);

    uint64_t payload = 0, chk = 0;
    for (int k = 0; k < t; k++) {
        payload += a[k].payload;
        chk += a[k].check;
    }

    long rss_end = bench_rss_now_kib(); /* heap still mapped */
    sal_heap_stats st;
    BENCH_CHECK(WL, sal_heap_stats_get(g_heap, &st));
    struct stat fst; /* file_mib is the file's length; disk_mib its blocks */
    double disk_mib = stat(g_path, &fst) == 0 ? fst.st_blocks / 2048.0 : -1;
    double c0 = bench_now();
    BENCH_CHECK(WL, sal_heap_close(g_heap));
    double close_s = bench_now() - c0;
    long peak_rss = bench_peak_rss_kib();
    bench_dir_done(&hd);

    double s[NPHASE];
    for (int ph = 0; ph < NPHASE; ph++) {
        s[ph] = phase_t1[ph] - phase_t0[ph];
        if (g_phase_times)
            fprintf(stderr,
                    "phase %s %.6f,%.6f file_mib=%.1f segments_in_use=%llu"
                    " segments_free=%llu segments_recycled=%llu\n",
                    phase_name[ph], phase_t0[ph], phase_t1[ph],
                    phase_stats[ph].file_bytes / 1048576.0,
                    (unsigned long long)phase_stats[ph].segments_in_use,
                    (unsigned long long)phase_stats[ph].segments_free,
                    (unsigned long long)phase_stats[ph].segments_recycled);
    }
    /* Same formulas as the peer: ns per op as seen by one thread =
     * wall / (ops per thread); aggregate Mops/s = total ops / wall. */
    double per_thr_n = (double)n / t, per_thr_w = (double)w / t;
    double ops[NPHASE] = {(double)n, (double)n, (double)w, (double)n,
                          (double)w};
    double per[NPHASE] = {per_thr_n, per_thr_n, per_thr_w, per_thr_n,
                          per_thr_w};

    printf("bench=alloc alloc=sal threads=%d n=%llu w=%llu", t,
           (unsigned long long)n, (unsigned long long)w);
    for (int ph = 0; ph < NPHASE; ph++)
        printf(" %s_ns=%.2f %s_mops=%.2f", phase_name[ph],
               s[ph] * 1e9 / per[ph], phase_name[ph], ops[ph] / s[ph] / 1e6);
    printf(" p1_cpu_ns=%.2f", (p1_cpu1 - p1_cpu0) * 1e9 / (double)n);
    printf(" payload_mib=%.1f ptrarr_mib=%.1f rss_start_mib=%.1f"
           " peak_rss_mib=%.1f rss_end_mib=%.1f checksum=%llu",
           payload / 1048576.0, arr_total / 1048576.0, rss_start / 1024.0,
           peak_rss / 1024.0, rss_end / 1024.0, (unsigned long long)chk);
    printf(" file_mib=%.1f disk_mib=%.1f alloc_waits=%llu live_end=%llu"
           " close_ms=%.2f section_ops=%llu segment_mib=%llu"
           " ready_segments=%u segments_recycled=%llu\n",
           st.file_bytes / 1048576.0, disk_mib,
           (unsigned long long)st.alloc_waits,
           (unsigned long long)st.live_objects, close_s * 1e3,
           (unsigned long long)g_section_ops,
           (unsigned long long)(st.segment_bytes >> 20), g_opt.ready_segments,
           (unsigned long long)st.segments_recycled);
    fflush(stdout);

    for (int k = 0; k < t; k++)
        munmap(a[k].ids, a[k].ids_bytes);
    free(a);
    free(th);
    pthread_barrier_destroy(&bar);

    /* Self-check: every object was released, so none may be left. */
    if (st.live_objects != 0) {
        fprintf(stderr, "salbench alloc: %llu objects still live after the "
                        "drain (expected 0)\n",
                (unsigned long long)st.live_objects);
        return 1;
    }
    return 0;
}
