/*
 * miss_overlap.c - how many instructions may a loop over random objects
 * run per object before the processor stops overlapping their misses?
 *
 *     miss_overlap [--dir DIR] [-w W] [-n N] [-f F1,F2,...]
 *
 * W1's churn reads a random object through its id (the id from an array,
 * the table entry, the object header: three dependent cache misses), then
 * releases it and allocates its replacement.  The misses of one iteration
 * depend on each other, but not on those of the next one: an out-of-order
 * processor can start the next iteration's loads while this one's wait,
 * as long as the next iteration's loads enter its instruction window
 * before the oldest miss returns.  How much work an iteration may do
 * before that stops is a property of the processor, not of sal, and it
 * decides whether shortening a call pays (docs/benchmarks.md, W1).
 *
 * This program measures it: W objects of 16..256 bytes, then N
 * sal_read()s of random ids, each followed by F filler instructions
 * (independent register adds, about four per cycle, so that they cost
 * window space and little time), for each F given; and once with each
 * read's index depending on the previous read's value, where nothing can
 * overlap (the full chain of three misses).  Prints one line:
 * dependent_ns=X fill_F_ns=Y ... (per read).  When fill_F_ns reaches
 * dependent_ns, F filler instructions plus the read's own filled the
 * window.  The heap lives in a temporary directory unless --dir is given.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench_common.h"

#define WL "miss_overlap"
#define MAX_FILLS 16
#define FILL_BLOCK 32 /* filler instructions per block (plus the loop's 2) */

/* Four independent add chains, each add pinned by an empty asm so that
 * the compiler keeps every one (it would fold them otherwise). */
#define ADD4(a, b, c, d)                                                     \
    a += 1; __asm__ volatile("" : "+r"(a));                                  \
    b += 1; __asm__ volatile("" : "+r"(b));                                  \
    c += 1; __asm__ volatile("" : "+r"(c));                                  \
    d += 1; __asm__ volatile("" : "+r"(d));
#define ADD32(a, b, c, d)                                                    \
    ADD4(a, b, c, d) ADD4(a, b, c, d) ADD4(a, b, c, d) ADD4(a, b, c, d)      \
    ADD4(a, b, c, d) ADD4(a, b, c, d) ADD4(a, b, c, d) ADD4(a, b, c, d)

static uint64_t filler(unsigned blocks)
{
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (unsigned i = 0; i < blocks; i++) {
        ADD32(a, b, c, d)
    }
    return a + b + c + d;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: miss_overlap [--dir DIR] [-w W] [-n N] [-f F1,F2,...]\n"
            "  W objects of 16..256 B (default 1000000), N random reads per\n"
            "  measurement (default 3000000), each followed by F filler\n"
            "  instructions, F a multiple of %d (default 0,32,64,96,128,192,256);\n"
            "  and N reads each depending on the previous one's value.\n"
            "  --dir: where the heap goes (default: a temporary directory)\n",
            FILL_BLOCK);
}

static int parse_fills(const char *arg, unsigned *fills, int *nfills)
{
    char buf[256];
    if (strlen(arg) >= sizeof buf)
        return -1;
    strcpy(buf, arg);
    *nfills = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        uint64_t f;
        if (*nfills == MAX_FILLS || bench_parse_count(tok, &f) != 0 ||
            f % FILL_BLOCK != 0 || f > 4096)
            return -1;
        fills[(*nfills)++] = (unsigned)f;
    }
    return *nfills > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *user_dir = NULL;
    uint64_t w = 1000000, n = 3000000;
    unsigned fills[MAX_FILLS] = {0, 32, 64, 96, 128, 192, 256};
    int nfills = 7, c;
    while ((c = getopt_long(argc, argv, "w:n:f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': user_dir = optarg; break;
        case 'w':
            if (bench_parse_count(optarg, &w) != 0 || w == 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'n':
            if (bench_parse_count(optarg, &n) != 0 || n == 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'f':
            if (parse_fills(optarg, fills, &nfills) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    bench_dir dir;
    bench_dir_setup(&dir, user_dir);
    sal_options opt;
    sal_options_init(&opt);
    sal_heap *h;
    sal_session *s;
    BENCH_CHECK(WL, sal_heap_create(dir.path, &opt, &h));
    BENCH_CHECK(WL, sal_session_open(h, &s));
    sal_id *ids = mmap(NULL, w * sizeof *ids, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ids == MAP_FAILED) {
        perror("miss_overlap: mmap");
        return 1;
    }
    bench_rng r;
    bench_rng_init(&r, PEER_SEED);
    BENCH_CHECK(WL, sal_write_begin(s));
    for (uint64_t i = 0; i < w; i++) {
        void *p;
        BENCH_CHECK(WL, sal_alloc(s, 16 + bench_rng_below(&r, 241), 0, 0, &ids[i], &p));
        *(uint64_t *)p = i;
    }
    BENCH_CHECK(WL, sal_write_end(s));

    BENCH_CHECK(WL, sal_read_begin(s));
    uint64_t chk = 0, j = 0;
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        const void *p;
        /* The next index needs this read's value: no overlap at all. */
        BENCH_CHECK(WL, sal_read(s, ids[(j + bench_rng_below(&r, w)) % w], &p));
        j = *(const uint64_t *)p;
        chk += j;
    }
    printf("bench=miss_overlap w=%llu n=%llu dependent_ns=%.1f", (unsigned long long)w,
           (unsigned long long)n, (bench_now() - t0) * 1e9 / (double)n);
    for (int k = 0; k < nfills; k++) {
        t0 = bench_now();
        for (uint64_t i = 0; i < n; i++) {
            const void *p;
            BENCH_CHECK(WL, sal_read(s, ids[bench_rng_below(&r, w)], &p));
            chk += *(const uint64_t *)p + filler(fills[k] / FILL_BLOCK);
        }
        printf(" fill_%u_ns=%.1f", fills[k], (bench_now() - t0) * 1e9 / (double)n);
        fflush(stdout);
    }
    BENCH_CHECK(WL, sal_read_end(s));
    printf(" checksum=%llu\n", (unsigned long long)chk);

    BENCH_CHECK(WL, sal_session_close(s));
    BENCH_CHECK(WL, sal_heap_close(h));
    bench_dir_done(&dir);
    return 0;
}
