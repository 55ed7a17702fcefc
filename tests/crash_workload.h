/*
 * crash_workload.h - the random multi-session workload and the state digest
 * shared by the crash harnesses (test_kill.c, test_powercut.c) and the
 * fault tests (test_sync_faults.c).
 *
 * The workload.  `threads` worker threads, each with its own session, own
 * disjoint roots: worker t owns roots CW_ROOTS_PER_THREAD*t .. +7.  Each
 * operation is one write section: build a small random tree and publish it,
 * path-copy a random path of one of its trees (sal_write, sal_write_child,
 * sal_set_child, then sal_root_set), share a tree between two of its roots,
 * embed a snapshot of any root (its own or another worker's) as a child,
 * empty a root, or allocate and drop temporary objects.  Every replaced
 * version is released, so committed objects die and new ones are allocated
 * between two syncs all the time.  The calling thread of cw_run() syncs
 * (sal_sync_snapshot) in a loop with random modes and pauses, and digests
 * each commit from the roots the sync hands out.
 *
 * Versions.  Before it publishes, inside its write section, a worker
 * computes the digest of all its roots as they will be once the section
 * ends, and reports it (hooks->version).  A commit's cut waits for open
 * write sections, so a commit holds, for every worker, one of the versions
 * it reported (the one current at the cut): that is how a harness checks a
 * commit whose digest it never received (a kill inside a sync).
 *
 * The digest.  A Merkle hash: an object's hash covers its size, type, nrefs,
 * its child ids and the hashes of its children (in slot order), and its
 * payload bytes after the child slots; a root's hash covers its index and
 * its object's hash.  Objects reachable from several places are hashed once
 * (a walk with an explicit stack and a map), so shared subtrees cost
 * nothing extra.  sub[t] folds worker t's roots; sub[CW_MAX_THREADS] folds
 * every other root (which the workload never sets); digest folds the subs.
 *
 * Deterministic: every random choice comes from the seed (per worker and
 * for the sync loop); only the interleaving of the threads is not.
 */
#ifndef SAL_CRASH_WORKLOAD_H
#define SAL_CRASH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "sal.h"

#define CW_MAX_THREADS 4
#define CW_ROOTS_PER_THREAD 8
#define CW_GROUPS (CW_MAX_THREADS + 1)
#define CW_OTHER CW_MAX_THREADS /* sub[] index of the roots no worker owns */

/* A committed (or current) state, digested. */
typedef struct cw_state {
    uint64_t digest;
    uint64_t sub[CW_GROUPS];
    uint64_t objects; /* distinct objects reachable from the roots */
    uint64_t bytes;   /* their spans: 24-byte header + size rounded up to 8 */
} cw_state;

/* What the sync loop reports after each sal_sync_snapshot(). */
typedef struct cw_sync_info {
    uint64_t n;      /* 1, 2, ...: the sync's number in this run */
    int mode;        /* SAL_SYNC_* */
    int rc;          /* what sal_sync_snapshot() returned */
    int cut_taken;   /* the snapshot roots were handed out */
    cw_state state;  /* digest of the snapshot roots (if cut_taken) */
} cw_sync_info;

typedef struct cw_hooks {
    void *arg;
    /* Worker `t` is about to publish its version `k` (0: its state at the
     * start), whose digest is `sub`.  Called inside the write section
     * (k > 0), from the worker's thread.  May be NULL. */
    void (*version)(void *arg, int t, uint64_t k, uint64_t sub);
    /* Sync `n` in mode `mode` is about to start.  May be NULL. */
    void (*sync_start)(void *arg, uint64_t n, int mode);
    /* Sync done (even if it failed).  Return nonzero to stop the run.
     * May be NULL. */
    int (*sync_done)(void *arg, const cw_sync_info *info);
    /* Right after version(): the ids worker `t` is about to store in its
     * roots (n <= CW_ROOTS_PER_THREAD, none null), so that a harness can
     * check that no id handed out is ever handed out again, also after a
     * crash loses it.  May be NULL. */
    void (*published)(void *arg, int t, const sal_id *ids, int n);
} cw_hooks;

typedef struct cw_config {
    uint64_t seed;
    int threads;              /* workers, 1..CW_MAX_THREADS (default 3) */
    int durable_percent;      /* chance of a durable sync (default 34) */
    int async_percent;        /* of an async sync (default 33); the rest
                                 protect */
    uint64_t max_syncs;       /* stop after this many syncs (0: no limit) */
    double max_seconds;       /* stop after this long (0: no limit) */
    unsigned sync_gap_us;     /* random pause before each sync, 0..this
                                 (default 1500) */
    unsigned op_pause_us;     /* random pause between a worker's
                                 operations, 0..this (default 40) */
    int stop_on_sync_error;   /* stop at the first failed sync */
    int quiet;                /* do not print errors to stderr */
} cw_config;

/* Defaults (seed 0). */
void cw_config_init(cw_config *cfg);

/* Run the workload on an open, writable heap until a limit or a hook stops
 * it; the workers are joined and their sessions closed on return.  Returns
 * 0, or nonzero after an unexpected error of the library (message in
 * `err`).  A failed sync is not an error of the run: it is reported to
 * hooks->sync_done. */
int cw_run(sal_heap *h, const cw_config *cfg, const cw_hooks *hooks, char *err,
           size_t errlen);

/* The digest of the state whose roots are `roots` (SAL_ROOT_COUNT ids, held
 * by the caller), for a workload of `threads` workers.  `s` is a session or
 * reader of the heap (it may be NULL if every root is null).  With
 * `expect_committed`, every reachable object must be committed.  0 or an
 * error (message in `err`). */
int cw_digest(sal_session *s, const sal_id *roots, int threads, int expect_committed,
              cw_state *out, char *err, size_t errlen);

/* The digest of a state with every root empty. */
void cw_empty_state(int threads, cw_state *out);

/* Open a reader on `h`, take every root and check the heap as recovery
 * must leave it: the digest (into *out), every reachable object committed
 * (unless CW_CHECK_LIVE: a heap in use holds objects newer than its last
 * commit), every reference count equal to the number of references to the
 * object (roots and child slots of reachable objects; plus the reader's
 * own retains of the roots unless CW_CHECK_READONLY: a read-only heap
 * hands root ids out unretained), and the heap's live objects and live
 * bytes equal to what the roots reach (no leaked id or byte).  No session
 * may be open on the heap and no snapshot held.  0 or nonzero with a
 * message. */
#define CW_CHECK_READONLY 1u
#define CW_CHECK_LIVE 2u
int cw_check_heap(sal_heap *h, int threads, unsigned flags, cw_state *out, char *err,
                  size_t errlen);

/* Run `sal-gc check HEAP` (the gc-tool, when the build gives its path as
 * SAL_GC_PATH) on a closed heap: 0 if it reports no damage, -1 with its
 * first lines of output in `err` otherwise, 1 if the tool is not built. */
int cw_gc_check(const char *heap_path, char *err, size_t errlen);

/* Pretty-print a state in one line (for failure messages). */
void cw_state_format(const cw_state *st, int threads, char *buf, size_t len);
/* Two states are the same commit: digest, object count and bytes. */
static inline int cw_state_same(const cw_state *a, const cw_state *b)
{
    return a->digest == b->digest && a->objects == b->objects && a->bytes == b->bytes;
}

/* The harnesses' command line: --rounds N (or the variable `rounds_env`),
 * --seed S (or SAL_TEST_SEED; else one drawn from the clock), --max-failures
 * F, --verbose.  Returns 0, or 2 after printing the usage. */
typedef struct cw_args {
    long rounds, max_failures;
    uint64_t seed;
    int verbose;
} cw_args;
int cw_parse_args(int argc, char **argv, const char *rounds_env, cw_args *out);

#endif
