/*
 * bench_common.h - helpers shared by the salbench workloads.
 *
 * The PRNG, the seed and the clock below MIRROR ../shared/peers/peer_common.h
 * (the peer-baseline programs) exactly: same splitmix64 constants, same
 * PEER_SEED, same multiply-high reduction.  The bench must generate exactly
 * the same sequences as the peer program of the same workload, so that both
 * sides do the same work and print the same checksum.  Do not "improve"
 * them; change them only together with the peers.  (The peers' header is
 * copied rather than included so that this project builds on its own.)
 */
#ifndef SALBENCH_COMMON_H
#define SALBENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "sal.h"

/* ---- mirrors peer_common.h ---------------------------------------------- */

#define PEER_SEED 0x5EEDC0FFEEULL /* fixed seed: runs are comparable */

/* splitmix64 finalizer (peer_mix64). */
static inline uint64_t bench_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct { uint64_t s; } bench_rng; /* peer_rng */

static inline void bench_rng_init(bench_rng *r, uint64_t seed)
{
    r->s = seed;
}

static inline uint64_t bench_rng_next(bench_rng *r)
{
    r->s += 0x9E3779B97F4A7C15ULL;
    return bench_mix64(r->s);
}

/* uniform-ish in [0, n) via multiply-high (peer_rng_below) */
static inline uint64_t bench_rng_below(bench_rng *r, uint64_t n)
{
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)bench_rng_next(r) * n) >> 64);
}

/* Monotonic wall clock in seconds (peer_now). */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- salbench's own helpers (bench_common.c) ------------------------------ */

/* CPU time consumed so far by the whole process (all threads, including
 * the library's background threads), in seconds. */
double bench_process_cpu_s(void);

/* Resident set size now, in KiB (/proc/self/statm), -1 if unknown.
 * Same definition as the peers' rss_now_kib(). */
long bench_rss_now_kib(void);

/* Peak resident set size so far, in KiB (getrusage ru_maxrss). */
long bench_peak_rss_kib(void);

/* The directory a workload's heap lives in.  With `user_dir` (--dir) that
 * directory is used (created if missing) and kept; without it a fresh
 * directory is made with mkdtemp under $TMPDIR (or /tmp) and
 * bench_dir_done() removes it with everything in it.  `path` gets
 * DIR/heap.sal.  Exits with a message on error. */
typedef struct bench_dir {
    char dir[4096];
    char path[4200];
    int temporary;
} bench_dir;

void bench_dir_setup(bench_dir *d, const char *user_dir);
void bench_dir_done(bench_dir *d);

/* Print "salbench WORKLOAD: WHAT: <sal_strerror(err)>" to stderr and exit
 * with status 1. */
void bench_die(const char *workload, const char *what, int err)
    __attribute__((noreturn));

/* Check a sal call: on a non-zero result, die naming the call. */
#define BENCH_CHECK(workload, call)                                          \
    do {                                                                     \
        int bench_rc_ = (call);                                              \
        if (bench_rc_ != 0)                                                  \
            bench_die((workload), #call, bench_rc_);                         \
    } while (0)

/* Parse an unsigned decimal count (digits only, optional k/M/G suffix for
 * 10^3/10^6/10^9).  Returns 0 on success, -1 if `s` is not such a number. */
int bench_parse_count(const char *s, uint64_t *out);

#endif
