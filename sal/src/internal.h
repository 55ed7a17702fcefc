/*
 * internal.h - the heap's in-memory state, shared by the library's files.
 *
 * Invariants worth knowing before reading any .c file:
 *
 *  - The whole reservation [0, reserve_bytes) of the file is mapped once at
 *    `base`.  File offset == address - base.  Only pages below the file's
 *    current size are ever touched, and every page is allocated on disk
 *    (fallocate) before it is first written.
 *  - Segment i lives at data_offset + i * segment_bytes.  A segment is owned
 *    by at most one session at a time (its arena); only that session bumps
 *    it.  Objects in it may be released by any thread (atomics only).
 *  - An object is committed iff its offset is below its segment's
 *    protect_mark.  Committed objects are never written in place, their ids
 *    and bytes are not reused before the next commit (crash rule 2).
 *  - Memory freed while readers might see it (whole empty segments) is
 *    reused only after every section that began before it was freed ended
 *    (epoch-based reclamation, see provider.c).
 */
#ifndef SAL_INTERNAL_H
#define SAL_INTERNAL_H

#include <errno.h> /* ENOSYS: SAL_TEST_HOOK */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "format.h"
#include "sal.h"

#define SAL_CACHE_LINE 64

/* How many ids a session takes at once from the table's high-water mark or
 * from the shared pool of free ids. */
#define SAL_ID_BATCH 1024u
/* A session's private free-id stack spills half to the shared pool above
 * this many entries, so ids released by one thread reach the others. */
#define SAL_ID_LOCAL_MAX 8192u
/* A session hands its released committed ids (reusable after the next
 * commit) to the heap when the cut changes, or when it holds this many. */
#define SAL_ID_HANDOVER_BATCH 65536u

/* Internal threads (provider, and later the compactor) have their own
 * section slots after the users'. */
#define SAL_INTERNAL_SLOTS 2u
#define SAL_SECTION_SLOTS (SAL_MAX_SESSIONS + SAL_MAX_READERS + SAL_INTERNAL_SLOTS)
#define SAL_PROVIDER_SLOT (SAL_MAX_SESSIONS + SAL_MAX_READERS)

typedef enum sal_segment_state {
    SEG_UNUSED = 0, /* beyond the file's end: not allocated on disk yet */
    SEG_FREE,       /* in the file, empty, in the free pool */
    SEG_READY,      /* prepared (allocated, pre-faulted), in the ready queue */
    SEG_ACTIVE,     /* a session's arena */
    SEG_PARTIAL,    /* a closed session's unfinished arena, to be continued */
    SEG_FULL,       /* retired: holds objects, nobody bumps it */
    SEG_PENDING,    /* all its objects died; waiting for readers/commit */
    SEG_SWEEPING,   /* full, never committed, sparse: the provider is
                       listing its holes (recycle.c) */
    SEG_RECYCLABLE, /* its holes are listed: the next arena to reuse */
} sal_segment_state;

/* A run of dead space inside a segment, [start, end) from its start. */
typedef struct sal_hole {
    uint32_t start, end;
} sal_hole;

typedef struct sal_segment {
    _Atomic int64_t live_bytes;   /* allocated - freed; exact once retired */
    _Atomic int state;            /* sal_segment_state */
    _Atomic int retired;          /* 1 once no session bumps it */
    _Atomic uint64_t used_bytes;  /* bump end, relative to segment start */
    _Atomic uint64_t protect_mark;/* committed below this (relative) */
    uint64_t readonly_mark;       /* mprotected read-only below this: lags
                                     protect_mark only after a failed
                                     mprotect, which the next sync retries */
    uint64_t pending_epoch;       /* section epoch when it became pending */
    uint64_t pending_commit;      /* cut it emptied after: reusable once a
                                     later commit is written; 0: never
                                     committed, no wait */
    int folios;                   /* page-cache folios it was prepared
                                     with: 0 unknown, 1 small, 2 large */
    int disk_written;             /* 1: every block written on disk (it
                                     stays so); 0: unknown or not */
    uint64_t written_checked;     /* commit epoch + 1 of the last check
                                     that found it not written */
    uint64_t durable_mark;        /* protect mark as of the last durable
                                     commit: nonzero means a power loss
                                     would bring these bytes back, so the
                                     segment waits for a durable commit */
    int durable_listed;           /* a durable commit listed it, even one
                                     that failed: its slot may still reach
                                     the disk, so the same wait applies */
    /* recycle.c (guarded by seg_lock) */
    sal_hole *holes;              /* SEG_RECYCLABLE: its holes, in order */
    uint32_t nholes;
    uint32_t hole_max;            /* the length of its longest hole */
    int sparse_queued;            /* in sparse_segs */
    uint64_t recycle_epoch;       /* section epoch when its holes were
                                     listed: reusable once every other
                                     section open then has ended */
} sal_segment;

/* A growable array of ids (DRAM). */
typedef struct sal_id_vec {
    sal_id *ids;
    size_t len, cap;
} sal_id_vec;

/* Room for `more` ids (capacity doubles from 256); SAL_ENOMEM if none. */
int sal_id_vec_reserve(sal_id_vec *v, size_t more);
int sal_id_vec_push(sal_id_vec *v, sal_id id);
/* All `n` ids, or none (SAL_ENOMEM). */
int sal_id_vec_append(sal_id_vec *v, const sal_id *ids, size_t n);
void sal_id_vec_free(sal_id_vec *v);

/* One section slot: the epoch a thread entered its section at, 0 if none. */
typedef struct sal_section_slot {
    _Atomic uint64_t epoch;
    _Atomic int writing;         /* inside a write section (the cut waits) */
    _Atomic uint32_t root_get;   /* odd while a sal_root_get() is in flight:
                                    it may hold a count for an instant on an
                                    object that is no longer the root */
    char pad[SAL_CACHE_LINE - sizeof(uint64_t) - sizeof(int) - sizeof(uint32_t)];
} sal_section_slot;

/* A committed id released after cut `tag`: reusable once commit tag+1 is
 * written. */
typedef struct sal_pending_id {
    sal_id next_id;
    uint64_t tag;
} sal_pending_id;

typedef enum { SAL_KIND_WRITER = 1, SAL_KIND_READER = 2 } sal_session_kind;

struct sal_session {
    /* --- hot: the allocation fast path touches only these --- */
    char *bump;                  /* next free byte of the arena */
    char *arena_end;             /* end of the arena */
    uint64_t id_next, id_end;    /* fresh ids [id_next, id_end) (64 bits:
                                    the last block ends at 2^32) */
    uint32_t write_token;        /* nonzero inside a write section */
    uint32_t birth_epoch;        /* commit epoch stamped on new objects */
    sal_id *free_ids;            /* private stack of reusable ids */
    uint32_t free_len, free_cap;
    _Atomic int64_t live_objects;/* allocated - freed by this session */
    _Atomic int64_t live_bytes;
    /* --- the rest --- */
    struct sal_heap *heap;
    sal_session_kind kind;
    unsigned slot;               /* index in its kind's table */
    sal_section_slot *section;   /* this thread's section slot */
    unsigned read_depth;         /* nested read sections */
    int64_t arena_segment;       /* index, -1 when none */
    char *arena_start;           /* where this session started bumping */
    sal_id_vec pending_ids;      /* committed ids freed after cut
                                    pending_cut: reusable after the next
                                    commit */
    uint64_t pending_cut;
    int64_t arena_skipped;       /* bytes of the arena not allocated by
                                    this session: skipped by cuts, or live
                                    objects and padding between holes */
    /* A recycled arena (recycle.c): bump and arena_end span one hole. */
    sal_hole *holes;             /* NULL for a plain arena */
    uint32_t nholes, hole_next;  /* holes[hole_next] is the next one */
    char *hole_start;            /* start of the current hole */
    uint64_t arena_used;         /* the segment's used_bytes, kept */
    int park_arena;              /* a cut parked the arena: keep it as
                                    partial when it is given back */
    char *bump_at_cut;           /* the bump pointer at the last cut, or
                                    where this arena began after it */
    sal_id_vec work;             /* release worklist */
    pthread_t owner;
};

struct sal_heap {
    /* geometry (from the superblock) */
    char *base;                  /* mapping of [0, reserve_bytes) */
    uint64_t reserve_bytes;
    uint64_t segment_bytes;
    unsigned segment_shift;
    uint64_t segment_count;
    uint64_t data_offset;
    uint64_t table_offset;
    uint64_t max_objects;
    _Atomic uint64_t *table;     /* base + table_offset */
    sal_superblock sb;
    int fd;
    int drop_fd;                       /* the heap file again, its own file
                                          description, for the waits of
                                          cache drops (provider.c); -1:
                                          none, and no drops */
    int readonly;
    unsigned ready_target;

    /* commit state */
    uint8_t boot_id[16];         /* this boot's, read once at open */
    int have_boot_id;            /* 0: unreadable, boot_id is zeros */
    sal_commit_slot committed;   /* the current slot's contents */
    unsigned durable_slot;       /* newest durable slot: 0 or 1 */
    unsigned volatile_slot;      /* newest volatile slot: 2 or 3 */
    _Atomic uint64_t commit_epoch;     /* last commit written */
    _Atomic uint64_t durable_epoch;    /* last commit written durably */
    _Atomic uint64_t cut_epoch;        /* last cut taken (>= commit_epoch) */
    pthread_mutex_t sync_lock;         /* one commit at a time */
    _Atomic int cut_pending;           /* new write sections wait */
    pthread_mutex_t cut_lock;
    pthread_cond_t cut_cond;
    pthread_mutex_t pending_lock;
    sal_pending_id *pending_ids;       /* committed ids awaiting a commit */
    size_t pending_ids_len, pending_ids_cap;
    _Atomic size_t pending_ids_moving; /* taken by a release, not moved yet */

    /* roots (the live table; committed copies live in the commit slot) */
    _Atomic sal_id roots[SAL_ROOT_COUNT];
    /* One more than the highest root ever non-null while open (raised
     * before a root is set): the roots a check for an id only a root holds
     * must look at (sal_root_holds_only; most programs use a few). */
    _Atomic unsigned roots_used;

    /* ids */
    _Atomic uint64_t ids_high_water;   /* next never-used index */
    _Atomic uint64_t table_ready_bytes;/* table bytes allocated on disk */
    pthread_mutex_t table_lock;        /* growing the table */
    pthread_mutex_t free_ids_lock;
    sal_id_vec free_ids;               /* shared pool of reusable ids */

    /* segments */
    sal_segment *segments;             /* segment_count entries */
    pthread_mutex_t seg_lock;          /* the lists below */
    pthread_cond_t seg_cond;           /* provider <-> takers */
    uint64_t segments_high_water;      /* segments that exist in the file */
    _Atomic uint64_t file_bytes;
    uint32_t *free_segs;   size_t free_segs_len;     /* stack */
    uint32_t *ready_segs;  size_t ready_len;         /* queue (as a stack) */
    uint32_t *partial_segs; size_t partial_len;      /* stack */
    uint32_t *pending_segs; size_t pending_len;      /* list */
    uint32_t *sparse_segs; size_t sparse_len;        /* to sweep */
    uint32_t *recyclable_segs; size_t recyclable_len;/* swept, stack */
    uint64_t recycle_span_wanted;      /* a span no recyclable segment's
                                          holes held when a session last
                                          looked (0: none); the provider
                                          sweeps until enough hold it */
    _Atomic uint64_t segments_recycled;              /* handed out */
    int provider_error;                /* last preparation failure (errno) */
    int provider_preparing;            /* the provider prepares a segment it
                                          took, not ready yet (seg_lock) */
    _Atomic int provider_waiters;      /* sessions waiting for the provider's
                                          work (the segment it prepares, the
                                          ids it moves): it does not wait for
                                          commits meanwhile */
    int commit_in_flight;              /* between a cut and its commit's end:
                                          no segment is reclaimed */
    int rewrites_in_flight;            /* the same, while a rewrite after a
                                          write-back error writes what it
                                          listed (sync.c) */
    uint64_t last_take_ns;             /* CLOCK_MONOTONIC when a session
                                          last took a ready segment */
    _Atomic uint64_t alloc_waits;
    /* A free ran out of memory and left dying objects (count 0, entry not
     * free, bytes counted): the close is not clean, so the next open
     * recounts and frees them. */
    _Atomic int counts_unsure;
    /* A write-back of the file failed (a flush of a commit, or one the
     * provider waited for).  Linux then marks the pages clean although
     * the disk does not have them, and reports the error once: a later
     * flush would skip them and a later commit claim them durable.  From
     * then on every commit writes what it commits through the file again
     * before flushing it (sync.c, "Write-back errors").  Counts the
     * errors (0: none), by anyone, for the life of the heap handle: each
     * one may have left other pages clean. */
    _Atomic int writeback_failed;
    int writeback_redirtied;           /* the count at which everything
                                          committed and not durable was
                                          last written again (sync_lock) */
    /* Folio policy for segments prepared from now on (see provider.c):
     * 0 large (2 MiB) folios, 1 small (32 KiB). */
    _Atomic int small_folios;
    _Atomic int commit_running;        /* a commit is between its start
                                          and its end (sync.c) */

    /* sessions and sections */
    _Atomic uint64_t writer_mask;                  /* 64 allocating slots */
    _Atomic uint64_t reader_mask[SAL_MAX_READERS / 64];
    _Atomic uint64_t sessions_open, readers_open;
    _Atomic uint64_t section_epoch;                /* starts at 1 */
    _Atomic uint32_t write_token_next;
    sal_section_slot *slots;                       /* SAL_SECTION_SLOTS */
    /* counts of sessions that have closed, folded in */
    _Atomic int64_t closed_live_objects, closed_live_bytes;
    int64_t opened_live_objects;                   /* at open */
    int64_t opened_live_bytes;
    /* open sessions, for statistics (guarded by sessions_lock) */
    pthread_mutex_t sessions_lock;
    struct sal_session *open_sessions[SAL_MAX_SESSIONS + SAL_MAX_READERS];

    sal_recovery_report recovery;      /* what open's recovery found */

    /* provider thread */
    pthread_t provider;
    int provider_running;
    int provider_stop;
};

typedef struct sal_heap sal_heap;

/* heap.c */
static inline uint64_t sal_heap_offset(const sal_heap *h, const void *p)
{
    return (uint64_t)((const char *)p - h->base);
}
static inline uint64_t sal_segment_of(const sal_heap *h, uint64_t offset)
{
    return (offset - h->data_offset) >> h->segment_shift;
}
static inline uint64_t sal_segment_start(const sal_heap *h, uint64_t seg)
{
    return h->data_offset + (seg << h->segment_shift);
}

/* provider.c: segments */
int sal_provider_start(sal_heap *h);
void sal_provider_stop(sal_heap *h);
/* Take a segment for an arena: a partial one, a ready one, or prepare one
 * now (counted in alloc_waits).  `own`: the taking session's section, which
 * does not hold back the reuse of segments it emptied itself.  Returns 0
 * and the index, or an error. */
int sal_segment_take(sal_heap *h, const sal_section_slot *own, uint64_t span,
                     uint64_t *seg_out, uint64_t *start_used);
/* A session stops bumping `seg` at `used` bytes: keep it as partial (the
 * session closed) or retire it (it is full). */
void sal_segment_release_arena(sal_heap *h, uint64_t seg, uint64_t used,
                               int64_t allocated_bytes, int keep_partial);
/* `seg`'s last live bytes died (sal_segment_free_bytes). */
void sal_segment_emptied(sal_heap *h, uint64_t seg);
/* Make sure table entries [0, index] are allocated on disk. */
int sal_table_ensure(sal_heap *h, uint64_t index);
/* Make sure `seg`'s page cache matches the folio policy, then fault it in.
 * by_provider: the provider thread, which pauses while a commit runs. */
void sal_segment_prepare(sal_heap *h, uint64_t seg, int by_provider);
/* Background work pauses here while a commit runs: it would compete with
 * the commit's flush for the page cache, the CPU and memory. */
void sal_provider_wait_for_commit(sal_heap *h);
/* Reclaim pending segments whose readers and commits are past. */
void sal_segments_reclaim(sal_heap *h);
/* Test hooks.  SAL_TEST_HOOK(name, type) in the file that runs the hook
 * defines sal_test_<name>(fn, arg), which installs fn (NULL removes it),
 * and <name>_run(v), which calls fn(arg, v) if one is installed.  Without
 * SAL_TEST_HOOKS the installer returns ENOSYS and the run does nothing. */
#ifdef SAL_TEST_HOOKS
#define SAL_TEST_HOOK(name, type)                                              \
    static void (*_Atomic name##_fn)(void *, type);                             \
    static void *_Atomic name##_arg;                                            \
    int sal_test_##name(void (*fn)(void *, type), void *arg)                    \
    {                                                                           \
        atomic_store(&name##_arg, arg);                                         \
        atomic_store(&name##_fn, fn);                                           \
        return 0;                                                               \
    }                                                                           \
    static void name##_run(type v)                                              \
    {                                                                           \
        void (*fn)(void *, type) = atomic_load(&name##_fn);                     \
        if (fn)                                                                 \
            fn(atomic_load(&name##_arg), v);                                    \
    }
#else
#define SAL_TEST_HOOK(name, type)                                              \
    int sal_test_##name(void (*fn)(void *, type), void *arg)                    \
    {                                                                           \
        (void)fn;                                                               \
        (void)arg;                                                              \
        return ENOSYS;                                                          \
    }                                                                           \
    static void name##_run(type v) { (void)v; }
#endif
/* sync.c, test builds (SAL_TEST_HOOKS; ENOSYS otherwise): call fn(arg,
 * where) in every commit at two points: SAL_TEST_HOOK_IN_CUT inside the
 * cut, with seg_lock held, after the segment records are taken and before
 * the cut epoch advances; SAL_TEST_HOOK_FLUSH after the cut (the epoch
 * advanced, writers let in), before anything is flushed or the slot
 * written.  NULL removes it. */
enum { SAL_TEST_HOOK_IN_CUT, SAL_TEST_HOOK_FLUSH };
int sal_test_cut_hook(void (*fn)(void *, int), void *arg);
/* session.c, test builds (ENOSYS otherwise): while `on`, every id vector
 * that must grow fails with SAL_ENOMEM. */
int sal_test_id_vec_fail(int on);
/* sync.c, test builds (ENOSYS otherwise): call fn(arg, by_provider) in
 * sal_pending_ids_release right after it took a non-empty list, before
 * any of it is moved to the pool.  NULL removes it. */
int sal_test_ids_release_hook(void (*fn)(void *, int), void *arg);
/* object.c, test builds (ENOSYS otherwise): call fn(arg, id) in
 * sal_retain_unheld between the check of `id` and its count's increment
 * (where the object may die and its entry and block be reused).  NULL
 * removes it. */
int sal_test_retain_unheld_hook(void (*fn)(void *, sal_id), void *arg);
/* recover.c, test builds (ENOSYS otherwise): call fn(arg, where) inside
 * sal_recover: SAL_TEST_RECOVER_FORGOTTEN once the table is forgotten,
 * before the marking (a kill there is a recovery killed part-way).  NULL
 * removes it. */
enum { SAL_TEST_RECOVER_FORGOTTEN };
int sal_test_recover_hook(void (*fn)(void *, int), void *arg);
/* A retired segment whose live bytes are zero becomes pending. */
void sal_segment_claim_if_empty(sal_heap *h, uint64_t seg);
/* The session gives its arena back: kept as partial (keep_partial, a
 * closing session) or retired. */
void sal_session_arena_release(sal_session *s, int keep_partial);

/* recycle.c: reuse of dead space in segments no commit has covered */
/* Queue a full, never committed segment for a sweep. */
void sal_recycle_queue(sal_heap *h, uint64_t seg);
/* `seg`'s live bytes fell from `before` to `after`: queue it for a sweep
 * if it just became sparse (below half of its used bytes).  Inline: it
 * runs on every release, and almost always does nothing. */
static inline void sal_recycle_note(sal_heap *h, uint64_t seg, int64_t before, int64_t after)
{
    int64_t used = (int64_t)atomic_load_explicit(&h->segments[seg].used_bytes,
                                                 memory_order_relaxed);
    if (after > 0 && after * 2 < used && before * 2 >= used)
        sal_recycle_queue(h, seg);
}
/* `bytes` of objects in `seg` died.  Inline: it runs on every release. */
static inline void sal_segment_free_bytes(sal_heap *h, uint64_t seg, uint64_t bytes)
{
    int64_t before = atomic_fetch_sub(&h->segments[seg].live_bytes, (int64_t)bytes);
    if (__builtin_expect(before == (int64_t)bytes, 0))
        sal_segment_emptied(h, seg);
    else
        sal_recycle_note(h, seg, before, before - (int64_t)bytes);
}
/* Provider: sweep one queued sparse segment.  Returns 1 if it did work.
 * Called and returns with seg_lock held (drops it while sweeping). */
int sal_recycle_sweep_one(sal_heap *h);
/* Session (without an arena): take a recycled segment as the arena if one
 * may be reused.  Returns 1 if the arena now holds `span` bytes. */
int sal_recycle_take(sal_session *s, uint64_t span);
/* Session: the current hole is too short; pad it and move to the next
 * hole holding `span` bytes.  Returns 1 on success, 0 if none is left. */
int sal_hole_advance(sal_session *s, uint64_t span);
/* Session: pad the rest of the current hole (before a cut or a release). */
void sal_hole_close(sal_session *s);
/* The last object of a recyclable segment died: it leaves the recyclable
 * list for the free pool, as a whole. */
void sal_recycle_emptied(sal_heap *h, uint64_t seg);
/* A cut or close ends reuse: segments waiting to be swept or reused go
 * back to full, and their hole lists are freed.  Called with seg_lock. */
void sal_recycle_forget_locked(sal_heap *h, uint64_t seg);

/* session.c: sections */
uint64_t sal_oldest_section_epoch(sal_heap *h);
/* The same, ignoring `own` (a session's own section). */
uint64_t sal_oldest_section_epoch_except(sal_heap *h, const sal_section_slot *own);
void sal_section_enter(sal_section_slot *slot, sal_heap *h);
void sal_section_leave(sal_section_slot *slot);
/* A usable session (and, in debug builds, its owner thread).  Inline: every
 * call on a session starts with it. */
static inline int sal_session_check(sal_session *s)
{
    if (!s)
        return SAL_EINVAL;
#ifndef NDEBUG
    if (!pthread_equal(s->owner, pthread_self()))
        return SAL_EWRONGTHREAD;
#endif
    return 0;
}

/* session.c: a publication by `s`: what was granted may be reachable
 * from a root now.  The grants of every write section of the calling
 * thread end (another session of the thread may have granted what `s`
 * publishes); each goes on with a new token, under which nothing is
 * granted yet. */
void sal_publication_ends_grants(sal_session *s);

/* roots.c: is `id`, whose entry `e` a caller just resolved, held by a root
 * alone?  A root's reference is never the caller's: with a count of 1 the
 * caller holds none, and going on (writing, copying, handing the id to a
 * slot or a root) would free the object the root still names.  Reads the
 * 64 roots, only when the count is 1. */
int sal_root_holds_only(sal_heap *h, sal_id id, uint64_t e);

/* roots.c: wait for every sal_root_get() in flight now to end.  A get
 * that read a root before it was replaced may land its count on the old
 * object after its other holder was granted it in place, and gives it back
 * at once: a writer that sees a count above 1 on an object it made
 * writable waits for those gets before taking it for shared.  (Gets that
 * begin later cannot read the object from a root.) */
void sal_root_gets_wait(sal_heap *h);

/* alloc.c */
int sal_ids_refill(sal_session *s);
void sal_id_recycle_slow(sal_session *s, sal_id next, int committed);
/* Give a dead object's id back (its next generation): to the session's
 * stack, or held back until the next commit if the last commit references
 * it (crash rule 2).  Inline: it runs on every release. */
static inline void sal_id_recycle(sal_session *s, sal_id id, int committed)
{
    sal_id next = sal_id_make(sal_id_index(id), sal_id_gen(id) + 1);
#ifdef SAL_MUTANT_REUSE_ID /* mutant: a committed id reused at once */
    committed = 0;
#endif
    if (__builtin_expect(!committed && s->free_len < s->free_cap, 1))
        s->free_ids[s->free_len++] = next;
    else
        sal_id_recycle_slow(s, next, committed);
}
void sal_session_flush_ids(sal_session *s);
int sal_alloc_slow(sal_session *s, uint64_t span);
int sal_alloc_raw(sal_session *s, uint64_t size_bytes, unsigned nrefs,
                  unsigned type, sal_id *id_out, sal_object_header **hdr_out);

/* object.c */
int sal_resolve(sal_heap *h, sal_id id, uint64_t *entry_out,
                sal_object_header **hdr_out);
int sal_object_committed(const sal_heap *h, uint64_t offset);
/* The same, for an offset already known to lie in segment `seg`. */
static inline int sal_committed_in(const sal_heap *h, uint64_t seg, uint64_t offset)
{
    return offset - sal_segment_start(h, seg) <
           atomic_load_explicit(&h->segments[seg].protect_mark, memory_order_acquire);
}
int sal_retain_internal(sal_heap *h, sal_id id);
/* Retain an id the caller holds no reference to (a root being read while
 * writers replace it): detects the entry having been reused meanwhile. */
int sal_retain_unheld(sal_session *s, sal_id id);
int sal_release_internal(sal_session *s, sal_id id);
/* Free an object whose count just reached zero, and what dies with it.
 * keep_children: its children were taken over by a copy; do not release. */
int sal_object_die(sal_session *s, sal_id id, uint64_t entry, int keep_children);

/* recover.c: rebuild the table and the segment records `rec` (the picked
 * slot's copy) from the last commit. */
int sal_recover(sal_heap *h, sal_segment_record *rec, int same_boot,
                sal_recovery_report *rep);

/* heap.c: wall-clock time for commit slots. */
uint64_t sal_now_unix_ns(void);

/* sync.c */
/* Cut, flush per mode, write the next commit slot.  Caller holds
 * sync_lock.  clean = 1 only at close. */
int sal_commit(sal_heap *h, int mode, int clean, sal_id *roots_out);
/* A write-back wait outside a commit (the provider's) took an error. */
void sal_writeback_error_taken(sal_heap *h);
/* Move the ids whose commit has been written to the free pool, in chunks
 * (by_provider: pausing between them while a commit runs). */
void sal_pending_ids_release(sal_heap *h, int by_provider);
/* Hand a session's batch of pending ids to the heap. */
void sal_pending_ids_handover(sal_session *s);
/* Wait while a cut is in progress (write_begin). */
void sal_cut_wait(sal_heap *h);
void sal_thread_write_sections_add(int delta);
/* How many write sections (of any heap) the calling thread holds. */
int sal_thread_write_sections(void);
/* Is the calling thread inside a write section of `h` (through any of its
 * sessions)?  A commit's cut waits for it, so this thread must not wait for
 * that cut. */
int sal_thread_writing(sal_heap *h);

/* One step of a wait for another thread's short work: yield a few times,
 * then sleep 50 us a step. */
static inline void sal_backoff(unsigned *spins)
{
    if (++*spins < 64)
        sched_yield();
    else
        nanosleep(&(struct timespec){0, 50000}, NULL);
}

static inline uint64_t sal_round_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}

#endif
