/*
 * w6_sync.c - W6: the cost of a durable sync of P new objects.
 *
 *     salbench sync [-o P1,P2,...] [--fresh] [--dir DIR]
 *
 * Mirrors the peer `peer_msync -o ...`: in a heap of 1 GiB, for each P
 * (default 1,100,10000,100000) allocate and write P objects of 128 B, then
 * sal_sync(SAL_SYNC_DURABLE), timing both, as the peer times its writes
 * and its syncs.  The peer writes P objects contiguously into a file that
 * was written in full and fsync'd before, and msyncs that range plus one
 * header page: the least a durable commit can cost.  Like the peer, the
 * heap's 1 GiB has been written and made durable before the timed syncs
 * (it was filled with objects, which were then released and committed
 * away), so new objects land in space that exists on disk.  --fresh skips
 * that: the new objects then go to segments allocated for them, whose
 * first write-back also converts their extents (a journal commit on ext4).
 * The setup then waits for the background work it caused (settle) and
 * ends with a durable commit, as the peer's timed commits follow its own
 * msyncs: the first timed commit meets the disk in the state the peer's
 * does (see settle and docs/benchmarks.md).
 *
 * Output keys: sync_us_P (allocations, writes and sync, against the peer's
 * seq_sync_us_P), sync_only_us_P (the sync alone), dev_write_kib_P
 * (device writes meanwhile, from /sys/dev/block/.../stat: device-wide, so
 * other writers count) and alloc_waits_P (segments the session had to
 * prepare itself).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "bench_common.h"
#include "workloads.h"

#define W "sync"
#define HEAP_BYTES (1ull << 30)
#define OBJECT_BYTES 128u

void w6_sync_usage(FILE *out)
{
    fprintf(out,
            "salbench sync [-o P1,P2,...] [--fresh] [--dir DIR]\n"
            "  W6: durable sync of P new 128-byte objects in a 1 GiB heap\n"
            "  -o LIST   object counts (default 1,100,10000,100000)\n"
            "  --fresh   new objects in newly allocated segments instead of\n"
            "            space already written (see the source for why)\n"
            "  --dir DIR keep the heap in DIR (default: a temporary directory)\n");
}

/* Sectors written to the device holding `path` (-1 if unknown). */
static long long dev_sectors_written(const char *path)
{
    struct stat st;
    char p[128];
    unsigned long long f[7];
    if (stat(path, &st) != 0)
        return -1;
    snprintf(p, sizeof p, "/sys/dev/block/%u:%u/stat", major(st.st_dev), minor(st.st_dev));
    FILE *fp = fopen(p, "r");
    if (!fp)
        return -1;
    int got = fscanf(fp, "%llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3],
                     &f[4], &f[5], &f[6]);
    fclose(fp);
    return got == 7 ? (long long)f[6] : -1;
}

/* Fill the heap with 1 GiB of objects, commit, release them all, commit
 * twice (ids and segments are reusable after the commit that no longer
 * references them), so the space is written, durable and free. */
static void prewrite(sal_heap *h, sal_session *s)
{
    uint64_t n = HEAP_BYTES / (24 + OBJECT_BYTES); /* 24: the object header */
    sal_id *ids = malloc(n * sizeof *ids);
    if (!ids)
        bench_die(W, "malloc", SAL_ENOMEM);
    BENCH_CHECK(W, sal_write_begin(s));
    for (uint64_t i = 0; i < n; i++) {
        void *p;
        BENCH_CHECK(W, sal_alloc(s, OBJECT_BYTES, 0, 1, &ids[i], &p));
        memset(p, (int)i, OBJECT_BYTES);
    }
    BENCH_CHECK(W, sal_write_end(s));
    BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));
    for (uint64_t i = 0; i < n; i++)
        BENCH_CHECK(W, sal_release(s, ids[i]));
    free(ids);
    BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));
    BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));
}

/* The end of the setup, as the peer's ends with its fsync: wait until the
 * provider has finished the setup's background work (at most 5 s): the
 * ids the prewrite released moved to the free pool and the queue of
 * prepared segments full, so that the first timed rounds do not meet the
 * setup's work.  The work the rounds themselves cause stays in the
 * rounds. */
static void settle(sal_heap *h)
{
    sal_heap_stats st;
    for (int i = 0; i < 1000; i++) {
        BENCH_CHECK(W, sal_heap_stats_get(h, &st));
        if (st.segments_ready >= SAL_DEFAULT_READY_SEGMENTS && st.ids_pending == 0)
            return;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
}

int w6_sync_main(int argc, char **argv)
{
    const char *dir = NULL, *list = "1,100,10000,100000";
    int fresh = 0;
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"fresh", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': list = optarg; break;
        case 'd': dir = optarg; break;
        case 'f': fresh = 1; break;
        case 'h': w6_sync_usage(stdout); return 0;
        default: w6_sync_usage(stderr); return 2;
        }
    }
    uint64_t counts[16];
    int ncounts = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && ncounts < 16;
         tok = strtok_r(NULL, ",", &save))
        if (bench_parse_count(tok, &counts[ncounts++]) != 0 || counts[ncounts - 1] == 0) {
            fprintf(stderr, "salbench sync: bad count '%s'\n", tok);
            free(copy);
            return 2;
        }
    free(copy);
    if (ncounts == 0) {
        fprintf(stderr, "salbench sync: -o wants a list of counts, such as 1,100,10000\n");
        return 2;
    }

    bench_dir d;
    bench_dir_setup(&d, dir);
    sal_options o;
    sal_options_init(&o);
    o.reserve_bytes = 4 * HEAP_BYTES;
    o.max_objects = 32u << 20;
    sal_heap *h;
    sal_session *s;
    BENCH_CHECK(W, sal_heap_create(d.path, &o, &h));
    BENCH_CHECK(W, sal_session_open(h, &s));
    if (!fresh)
        prewrite(h, s);
    settle(h);
    /* The setup ends with a durable commit, as the peer's timed commits
     * follow its own msyncs: on this virtual disk a flush after a quiet
     * spell of 10-20 ms costs 0.2-0.3 ms more than one right after other
     * I/O (docs/benchmarks.md), and the peer never meets that. */
    BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));

    printf("bench=sync heap_mib=%llu object_bytes=%u fresh=%d",
           (unsigned long long)(HEAP_BYTES >> 20), OBJECT_BYTES, fresh);
    uint64_t check = 0;
    for (int k = 0; k < ncounts; k++) {
        uint64_t p = counts[k];
        sal_id *ids = malloc(p * sizeof *ids);
        if (!ids)
            bench_die(W, "malloc", SAL_ENOMEM);
        sal_heap_stats st0, st1;
        BENCH_CHECK(W, sal_heap_stats_get(h, &st0));
        long long before = dev_sectors_written(d.path);
        double t0 = bench_now();
        BENCH_CHECK(W, sal_write_begin(s));
        for (uint64_t i = 0; i < p; i++) {
            void *ptr;
            BENCH_CHECK(W, sal_alloc(s, OBJECT_BYTES, 0, 2, &ids[i], &ptr));
            memset(ptr, (int)(i + k), OBJECT_BYTES);
            check += ids[i];
        }
        BENCH_CHECK(W, sal_write_end(s));
        double t1 = bench_now();
        BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));
        double t2 = bench_now();
        long long after = dev_sectors_written(d.path);
        BENCH_CHECK(W, sal_heap_stats_get(h, &st1));
        printf(" sync_us_%llu=%.1f sync_only_us_%llu=%.1f dev_write_kib_%llu=%lld"
               " alloc_waits_%llu=%llu",
               (unsigned long long)p, (t2 - t0) * 1e6, (unsigned long long)p,
               (t2 - t1) * 1e6, (unsigned long long)p,
               before >= 0 && after >= 0 ? (after - before) / 2 : -1,
               (unsigned long long)p,
               (unsigned long long)(st1.alloc_waits - st0.alloc_waits));
        /* The objects were committed (everything allocated before the cut
         * is); release them so that the heap closes with nothing leaked. */
        for (uint64_t i = 0; i < p; i++)
            BENCH_CHECK(W, sal_release(s, ids[i]));
        free(ids);
    }
    printf(" checksum=%llu\n", (unsigned long long)check);
    BENCH_CHECK(W, sal_session_close(s));
    BENCH_CHECK(W, sal_heap_close(h));
    bench_dir_done(&d);
    return 0;
}
