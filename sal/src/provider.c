/*
 * provider.c - segments: where arenas come from and where empty ones go.
 *
 * A background thread (the provider) keeps `ready_target` segments
 * allocated on disk (fallocate) and pre-faulted (MADV_POPULATE_WRITE), so
 * that a session whose arena runs out takes the next one without touching
 * the file system.  When none is ready the session prepares one itself and
 * the heap counts an alloc_wait.  A failure to allocate (ENOSPC) reaches the
 * session that needed the segment as an error code; since every page is
 * allocated before it is touched, a full disk never raises SIGBUS.
 *
 * Segment life:   UNUSED/FREE -> READY -> ACTIVE <-> PARTIAL
 *                                          |     ^
 *                                          |     RECYCLABLE <- SWEEPING
 *                                          v                     ^
 *                                        FULL -------------------'
 *                                          |   (sparse, never committed:
 *                                          |    recycle.c)
 *                                          v
 *                                        PENDING -> FREE
 *
 * A FULL segment whose live bytes reach zero becomes PENDING, and FREE once
 * (a) every section that was open when it emptied has ended (a reader may
 * still be looking at it) and (b) if it held committed objects, a later
 * commit has been written (crash rule 2).
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "os.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Choose a segment to prepare and allocate it on disk.  Called with
 * seg_lock held, which serialises the growth of the file. */
static int segment_pick_locked(sal_heap *h, uint64_t *seg_out)
{
    if (h->free_segs_len > 0) {
        *seg_out = h->free_segs[--h->free_segs_len];
        return 0;
    }
    if (h->segments_high_water >= h->segment_count)
        return SAL_EFULL;
    uint64_t seg = h->segments_high_water;
    int err = sal_os_fallocate(h->fd, sal_segment_start(h, seg), h->segment_bytes);
    if (err)
        return err;
    h->segments_high_water = seg + 1;
    atomic_store(&h->file_bytes, sal_segment_start(h, seg + 1));
    h->segments[seg].disk_written = 0; /* fallocate: unwritten extents */
    h->segments[seg].written_checked = 0;
    *seg_out = seg;
    return 0;
}

/* The folios the policy wants for segments prepared now: 1 small, 2
 * large (see "Folios" below). */
static int wanted_folios(sal_heap *h)
{
    return atomic_load(&h->small_folios) ? 1 : 2;
}

/* Whether a segment whose cache holds `folios` (0: nothing known) can be
 * used under the policy without being converted. */
static int folios_suit(int folios, int want)
{
    return folios == want || folios == 0;
}

/* Whether every block of a free segment is written on disk.  Asked of the
 * file system (one ioctl) at most once per commit while the answer is no:
 * write-back changes it, and once yes it stays yes. */
static int segment_written_locked(sal_heap *h, uint64_t seg)
{
    sal_segment *g = &h->segments[seg];
    uint64_t epoch = atomic_load(&h->commit_epoch) + 1;
    if (g->disk_written || g->written_checked == epoch)
        return g->disk_written;
    if (sal_os_range_written(h->fd, sal_segment_start(h, seg), h->segment_bytes) == 1)
        g->disk_written = 1;
    else
        g->written_checked = epoch;
    return g->disk_written;
}

/*
 * How cheap a free segment is to prepare under the policy:
 *   3  its blocks are written and its cache suits (or is unknown): at most
 *      a cache to build by writing zeros through the file (no reads), and
 *      its first write-back changes no file-system metadata;
 *   2  written, cache of the other kind: dropped first, then as above;
 *   1  cache suits, blocks not written (fresh from fallocate): their first
 *      write-back converts the extents, a journal commit that a durable
 *      sync waits for;
 *   0  cache of the other kind and blocks not written: dropping the cache
 *      writes its dirty pages back first.
 */
static int segment_score_locked(sal_heap *h, uint64_t seg, int want)
{
    int suit = folios_suit(h->segments[seg].folios, want);
    if (segment_written_locked(h, seg))
        return suit ? 3 : 2;
    return suit ? 1 : 0;
}

/* The free segment to prepare next: the best by segment_score_locked, or a
 * new one when none is free.  A segment scored below `min_score` is left
 * for later (returns 1): the provider leaves conversions that write back
 * to a session that finds nothing ready, so that their I/O does not
 * compete with the commits that made the policy change.  Called with
 * seg_lock held. */
static int segment_pick_best_locked(sal_heap *h, int min_score, uint64_t *seg_out)
{
    if (h->free_segs_len == 0)
        return segment_pick_locked(h, seg_out);
    int want = wanted_folios(h), best_score = -1;
    size_t best = 0;
    for (size_t i = h->free_segs_len; i-- > 0 && best_score < 3;) {
        int score = segment_score_locked(h, h->free_segs[i], want);
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    if (best_score < min_score)
        return 1;
    *seg_out = h->free_segs[best];
    h->free_segs[best] = h->free_segs[--h->free_segs_len];
    return 0;
}

static void segment_reset(sal_segment *g, int state)
{
    g->durable_mark = 0; /* (g->folios stays: it describes the page cache) */
    g->durable_listed = 0;
    g->readonly_mark = 0;
    atomic_store(&g->live_bytes, 0);
    atomic_store(&g->retired, 0);
    atomic_store(&g->used_bytes, 0);
    atomic_store(&g->protect_mark, 0);
    atomic_store(&g->state, state);
}

/* Preparing a segment competes with a commit in progress: dropping a
 * cache writes dirty pages back (I/O the commit's flush would queue
 * behind), writing and faulting folios is page-cache work on the same
 * file, and a fault holds the mapping's lock for reading, which the
 * commit's mprotect waits for (a 64 KiB step made one wait 0.33 ms).
 * So each step of a preparation starts only while no commit runs. */
void sal_provider_wait_for_commit(sal_heap *h)
{
    while (atomic_load(&h->commit_running) && !atomic_load(&h->provider_waiters))
        nanosleep(&(struct timespec){0, 200000}, NULL);
}

static void wait_for_commit(sal_heap *h, int by_provider)
{
    if (by_provider)
        sal_provider_wait_for_commit(h);
}

#define SAL_PREPARE_STEP_BYTES (2ull << 20)
#define SAL_PREPARE_SMALL_STEP_BYTES (64ull << 10)
/* The small folio: the dirty unit of a commit under the small policy.
 * 4 KiB folios made a commit of 15 MB spend twice as long in write-back
 * as 2 MiB ones (about 4 us per folio); 32 KiB ones cost a small commit
 * 28 KiB more to write and a large one little more than 2 MiB folios
 * (W6: P = 100 000 went from 1.9-2.4x to 1.3x the peer's time; 64 KiB
 * measured the same within the noise, with twice the bytes for P = 1). */
#define SAL_SMALL_FOLIO_BYTES (32ull << 10)

/*
 * Folios.  On this kernel a file range faulted in with MADV_HUGEPAGE gets
 * 2 MiB page-cache folios: preparing a segment is several times faster
 * (about 1.8 ms per 8 MiB against 7-14 ms for 4 KiB pages) and the
 * session takes fewer TLB misses.  But the dirty unit is the folio: one new
 * object in a 2 MiB folio makes a durable sync write 2 MiB.  So the policy
 * follows the workload (h->small_folios): large folios from open, small
 * (32 KiB) ones after every commit that writes (sync.c; the arenas with
 * large folios are parked on the partial list then), large again as soon
 * as a session fills half an arena between two commits (alloc.c).  A small
 * commit then writes 32 KiB folios, and bulk data still goes to large
 * folios after the first segment.
 *
 * Where the new objects land matters as much for small commits: in a
 * segment whose blocks were written before (as a file overwritten in
 * place), a durable sync writes the data and a journal commit with no
 * block of its own; in one fresh from fallocate, every first write-back
 * also converts extents.  So segments whose blocks are written come first
 * (segment_score_locked).  The cache of a segment is built by writing
 * zeros through the file, in writes of the folio size wanted (the page
 * cache sizes a folio by the write that creates it), which reads nothing:
 * always for small folios, and for large ones in written segments.  Large
 * folios for unwritten segments are faulted in (zeros, no reads either),
 * after dropping a cache of the other kind (its content is dead).
 *
 * Preparing = the advice, then a fault of every page now, in this thread,
 * so that the session bumping through it does not take the faults.
 * Failure is not fatal: the pages are allocated on disk, the session will
 * fault them itself.
 */

void sal_segment_prepare(sal_heap *h, uint64_t seg, int by_provider)
{
    sal_segment *g = &h->segments[seg];
    int want = wanted_folios(h);
    uint64_t start = sal_segment_start(h, seg);
    char *addr = h->base + start;
    /* Small folios, and written blocks not known to be cached as wanted:
     * build the cache by writing, which reads nothing and sets the folio
     * size.  Else fault the segment in, after dropping a cache of the
     * other kind (large folios for an unwritten segment). */
    int fill = (want == 1 && g->folios != 1) || (g->disk_written && g->folios != want);
    int convert = g->folios != want && g->folios != 0;
    if (g->folios != want)
        (void)sal_os_advise_folios(addr, h->segment_bytes, want == 2);
    g->folios = want;
    /* In steps of one large folio, small folios in smaller steps, each
     * after any commit in progress when the provider prepares (a session
     * needs the segment now, and may hold a write section that the
     * commit's cut waits for): writing small folios
     * is CPU work in the file's page cache that a concurrent flush was
     * measured to wait for (a 1.5 MB write-back took 5.5 ms instead of 1). */
    uint64_t step = want == 2 ? SAL_PREPARE_STEP_BYTES : SAL_PREPARE_SMALL_STEP_BYTES;
    uint64_t chunk = want == 2 ? SAL_PREPARE_STEP_BYTES : SAL_SMALL_FOLIO_BYTES;
    for (uint64_t off = 0; off < h->segment_bytes; off += SAL_PREPARE_STEP_BYTES) {
        uint64_t len = h->segment_bytes - off < SAL_PREPARE_STEP_BYTES
                           ? h->segment_bytes - off
                           : SAL_PREPARE_STEP_BYTES;
        if ((convert || fill) && h->drop_fd >= 0) {
            wait_for_commit(h, by_provider);
            /* On a file description of its own, so that its wait does not
             * take the report a commit's flush must see (the kernel
             * reports an error once to each).  An error it meets may
             * still concern committed pages, and once reported here no
             * process that opens the heap later hears of it: they are
             * written again at once (sync.c). */
            if (sal_os_drop_cache(h->drop_fd, addr + off, start + off, len))
                sal_writeback_error_taken(h);
        }
        for (uint64_t o = off; o < off + len; o += step) {
            uint64_t n = off + len - o < step ? off + len - o : step;
            wait_for_commit(h, by_provider);
            if (fill)
                (void)sal_os_fill_cache(h->fd, start + o, n, n < chunk ? n : chunk);
            (void)sal_os_populate_write(addr + o, n);
        }
    }
}

static int pending_reusable(sal_heap *h, const sal_segment *g, uint64_t oldest)
{
    if (oldest != 0 && oldest <= g->pending_epoch)
        return 0; /* a section that may still see it is open */
    if (g->pending_commit && atomic_load(&h->commit_epoch) <= g->pending_commit)
        return 0; /* the last commit may reference it (crash rule 2) */
    if (g->pending_commit && (g->durable_mark || g->durable_listed) &&
        atomic_load(&h->durable_epoch) <= g->pending_commit)
        return 0; /* the last durable commit may: a power loss would need it */
    return 1;
}

/* Pending segments that no section but `own`'s (NULL: none) may still see
 * go to the free pool.  A session that needs a segment passes its own
 * section, as it does for holes (sal_recycle_take): by the API's rules a
 * pointer to an object nothing of yours references is invalid at once, so
 * its own section holds nothing back for anyone. */
static void reclaim_except_locked(sal_heap *h, const sal_section_slot *own)
{
    /* Not while a commit is between its cut and its end: it set marks for
     * every segment at the cut (protect, and durable ones after its flush)
     * that a reset of a reused segment must not meet.  (The power-cut
     * harness found a segment reused during a flush that got the durable
     * mark of its previous life; the next durable commit skipped it.) */
    if (h->pending_len == 0 || h->commit_in_flight || h->rewrites_in_flight)
        return;
    uint64_t oldest = own ? sal_oldest_section_epoch_except(h, own)
                          : sal_oldest_section_epoch(h);
    size_t kept = 0;
    for (size_t i = 0; i < h->pending_len; i++) {
        uint32_t seg = h->pending_segs[i];
        sal_segment *g = &h->segments[seg];
        if (pending_reusable(h, g, oldest)) {
            /* Committed pages were made read-only; writable again now. */
            if (g->readonly_mark &&
                sal_os_protect_readwrite(h->base + sal_segment_start(h, seg),
                                         h->segment_bytes) != 0) {
                h->pending_segs[kept++] = seg; /* try again later */
                continue;
            }
            segment_reset(g, SEG_FREE);
            h->free_segs[h->free_segs_len++] = seg;
        } else {
            h->pending_segs[kept++] = seg;
        }
    }
    h->pending_len = kept;
}

static void reclaim_locked(sal_heap *h)
{
    reclaim_except_locked(h, NULL);
}

void sal_segments_reclaim(sal_heap *h)
{
    pthread_mutex_lock(&h->seg_lock);
    reclaim_locked(h);
    pthread_mutex_unlock(&h->seg_lock);
}

/* Whether a prepared segment can be used under the policy: one with small
 * folios always can (it only costs a bulk writer some speed), one with
 * large folios only under the large policy (each small commit in it
 * would write 2 MiB). */
static int ready_usable(int folios, int want)
{
    return folios == want || folios == 1;
}

/* The ready segment to take: one prepared for the policy in force, else
 * one usable under it; ready_len if none. */
static size_t ready_pick_locked(sal_heap *h, int want)
{
    size_t usable = h->ready_len;
    for (size_t i = h->ready_len; i-- > 0;) {
        int folios = h->segments[h->ready_segs[i]].folios;
        if (folios == want)
            return i;
        if (usable == h->ready_len && ready_usable(folios, want))
            usable = i;
    }
    return usable;
}

/* Ready segments that the policy cannot use go back to the free pool
 * (they hold nothing): the best one is chosen again. */
static void ready_return_stale_locked(sal_heap *h)
{
    int want = wanted_folios(h);
    for (size_t i = h->ready_len; i-- > 0;) {
        uint32_t seg = h->ready_segs[i];
        if (ready_usable(h->segments[seg].folios, want))
            continue;
        h->ready_segs[i] = h->ready_segs[--h->ready_len];
        segment_reset(&h->segments[seg], SEG_FREE);
        h->free_segs[h->free_segs_len++] = seg;
    }
}

/* Take partial arena `k` of the list for a session; seg_lock held, and
 * released here. */
static int partial_take_unlock(sal_heap *h, size_t k, uint64_t *seg_out, uint64_t *start_used)
{
    uint64_t seg = h->partial_segs[k];
    h->partial_segs[k] = h->partial_segs[--h->partial_len];
    atomic_store(&h->segments[seg].state, SEG_ACTIVE);
    *start_used = atomic_load(&h->segments[seg].used_bytes);
    pthread_mutex_unlock(&h->seg_lock);
    *seg_out = seg;
    return 0;
}

int sal_segment_take(sal_heap *h, const sal_section_slot *own, uint64_t span,
                     uint64_t *seg_out, uint64_t *start_used)
{
    uint64_t seg;
    int err = 0;
    pthread_mutex_lock(&h->seg_lock);
again:;
    /* A partial arena whose folios suit the policy (a parked large one
     * waits while small folios are wanted).  One with large folios comes
     * after the ready segments: a commit since it was parked wrote back
     * the folio it ended in, and making a clean 2 MiB folio writable again
     * costs a fault per 4 KiB page, each over the whole folio (ext4's
     * page_mkwrite): measured 5.7 ms for a session resuming such an
     * arena. */
    int want = wanted_folios(h);
    size_t pick = h->partial_len;
    for (size_t i = h->partial_len; i-- > 0;) {
        int folios = h->segments[h->partial_segs[i]].folios;
        if (folios_suit(folios, want) &&
            (folios != 2 || ready_pick_locked(h, want) == h->ready_len)) {
            pick = i;
            break;
        }
    }
    if (pick < h->partial_len)
        return partial_take_unlock(h, pick, seg_out, start_used);
    /* A segment the provider prepared. */
    size_t i = ready_pick_locked(h, want);
    if (i < h->ready_len) {
        seg = h->ready_segs[i];
        h->ready_segs[i] = h->ready_segs[--h->ready_len];
        atomic_store(&h->segments[seg].state, SEG_ACTIVE);
        h->last_take_ns = mono_ns();
        pthread_cond_broadcast(&h->seg_cond); /* the provider refills */
        pthread_mutex_unlock(&h->seg_lock);
        *seg_out = seg;
        *start_used = 0;
        return 0;
    }
    /* Nothing ready: prepare one here. */
    ready_return_stale_locked(h);
    reclaim_except_locked(h, own);
    err = segment_pick_best_locked(h, 0, &seg);
    if (err && h->pending_len > 0 && (h->commit_in_flight || h->rewrites_in_flight)) {
        /* Nothing to be had while a commit (or a rewrite) in flight holds
         * back the reuse of emptied segments: an error now would be
         * spurious, gone when it ends.  Its end is waited for, once.  No
         * deadlock with a session's write section: a commit is in flight
         * only after its cut, which no longer waits for writers. */
        while (h->commit_in_flight || h->rewrites_in_flight)
            pthread_cond_wait(&h->seg_cond, &h->seg_lock);
        reclaim_except_locked(h, own);
        err = segment_pick_best_locked(h, 0, &seg);
    }
    if (err && h->provider_preparing) {
        /* The provider holds the last free segment, preparing it: wait
         * until it is ready rather than fail.  Meanwhile the provider does
         * not wait for commits (a commit's cut may be waiting for this
         * session's write section). */
        atomic_fetch_add(&h->provider_waiters, 1);
        while (h->provider_preparing)
            pthread_cond_wait(&h->seg_cond, &h->seg_lock);
        atomic_fetch_sub(&h->provider_waiters, 1);
        goto again;
    }
    /* No segment to be had (a full disk, the reservation used up): a
     * parked arena of the other folio size may still have room.  Only one
     * with room for `span`: one too short would be retired by the caller,
     * and smaller objects could no longer use it. */
    for (size_t k = h->partial_len; err && k-- > 0;)
        if (h->segment_bytes - atomic_load(&h->segments[h->partial_segs[k]].used_bytes) >= span)
            return partial_take_unlock(h, k, seg_out, start_used);
    if (!err) {
        segment_reset(&h->segments[seg], SEG_ACTIVE);
        atomic_fetch_add(&h->alloc_waits, 1); /* (a failure is no wait) */
    }
    pthread_cond_broadcast(&h->seg_cond);
    pthread_mutex_unlock(&h->seg_lock);
    if (err)
        return err;
    sal_segment_prepare(h, seg, 0);
    *seg_out = seg;
    *start_used = 0;
    return 0;
}

static int segment_empty(const sal_segment *g)
{
    return atomic_load(&g->retired) && atomic_load(&g->live_bytes) == 0;
}

/* A retired segment with no live bytes becomes pending, and is queued.
 * The state moves by compare-and-swap, so that only one of the threads
 * that see it empty queues it.  Called with seg_lock held: a commit's cut
 * lists the full segments as used and then advances the cut epoch, under
 * that lock, and a claim in between would tag the segment with the commit
 * before: it would be reused once the commit ends, while that commit still
 * lists it (crash rule 2). */
static void claim_empty_locked(sal_heap *h, uint64_t seg)
{
    sal_segment *g = &h->segments[seg];
    int expected = SEG_FULL;
    if (!segment_empty(g) ||
        !atomic_compare_exchange_strong(&g->state, &expected, SEG_PENDING))
        return;
    /* Tag with the epoch as it was when the segment emptied, and open a new
     * epoch, so that sections that begin from now on do not hold it. */
    g->pending_epoch = atomic_fetch_add(&h->section_epoch, 1);
    g->pending_commit = atomic_load(&g->protect_mark) ? atomic_load(&h->cut_epoch) : 0;
    h->pending_segs[h->pending_len++] = (uint32_t)seg;
    pthread_cond_broadcast(&h->seg_cond);
}

void sal_segment_claim_if_empty(sal_heap *h, uint64_t seg)
{
    if (!segment_empty(&h->segments[seg]))
        return; /* the common case, without the lock */
    pthread_mutex_lock(&h->seg_lock);
    claim_empty_locked(h, seg);
    pthread_mutex_unlock(&h->seg_lock);
}

void sal_recycle_forget_locked(sal_heap *h, uint64_t seg)
{
    sal_segment *g = &h->segments[seg];
    free(g->holes);
    g->holes = NULL;
    g->nholes = 0;
    atomic_store(&g->state, SEG_FULL);
    claim_empty_locked(h, seg);
}

void sal_segment_release_arena(sal_heap *h, uint64_t seg, uint64_t used,
                               int64_t allocated_bytes, int keep_partial)
{
    sal_segment *g = &h->segments[seg];
    atomic_store(&g->used_bytes, used);
    atomic_fetch_add(&g->live_bytes, allocated_bytes);
    /* A closing session leaves its unfinished arena for the next one,
     * unless too little is left to be worth it. */
    if (keep_partial && h->segment_bytes - used >= (h->segment_bytes >> 4)) {
        pthread_mutex_lock(&h->seg_lock);
        atomic_store(&g->state, SEG_PARTIAL);
        h->partial_segs[h->partial_len++] = (uint32_t)seg;
        pthread_mutex_unlock(&h->seg_lock);
        return;
    }
    atomic_store(&g->state, SEG_FULL);
    atomic_store(&g->retired, 1);
    sal_segment_claim_if_empty(h, seg);
    /* Retired already sparse (a recycled segment that was little used). */
    sal_recycle_note(h, seg, (int64_t)used, atomic_load(&g->live_bytes));
}

void sal_segment_emptied(sal_heap *h, uint64_t seg)
{
    sal_segment_claim_if_empty(h, seg);
    /* Not claimed if the provider is listing its holes or they wait for a
     * session: under seg_lock, one of the two ends that. */
    int st = atomic_load(&h->segments[seg].state);
    if (st == SEG_RECYCLABLE || st == SEG_SWEEPING)
        sal_recycle_emptied(h, seg);
}

int sal_table_ensure(sal_heap *h, uint64_t index)
{
    uint64_t need = (index + 1) * 8;
    if (need <= atomic_load_explicit(&h->table_ready_bytes, memory_order_acquire))
        return 0;
    if (index >= h->max_objects)
        return SAL_ENOIDS;
    int err = 0;
    pthread_mutex_lock(&h->table_lock);
    uint64_t ready = atomic_load(&h->table_ready_bytes);
    while (ready < need) {
        uint64_t off = h->table_offset + ready;
        if ((err = sal_os_fallocate(h->fd, off, SAL_TABLE_CHUNK_BYTES)))
            break;
        (void)sal_os_populate_write(h->base + off, SAL_TABLE_CHUNK_BYTES);
        ready += SAL_TABLE_CHUNK_BYTES;
        atomic_store_explicit(&h->table_ready_bytes, ready, memory_order_release);
    }
    pthread_mutex_unlock(&h->table_lock);
    return err;
}

/* How long the provider should wait before refilling the ready queue.
 * Preparing a segment is CPU work and page-cache traffic on the heap's
 * file, and under the small folio policy (commits that write are
 * frequent) a commit often follows the allocation that took a segment:
 * a conversion running during a durable sync was measured to add 0.3 to
 * 1 ms to it.  So then, while at most one segment is missing from the
 * queue, the provider waits until no session has taken one for
 * SAL_REFILL_QUIET_NS; a queue that runs lower is refilled at once, and
 * bulk writing (large folios) is never made to wait. */
#define SAL_REFILL_QUIET_NS 5000000ull

static uint64_t refill_delay_ns_locked(const sal_heap *h)
{
    if (!atomic_load(&h->small_folios) || h->ready_len == 0 ||
        h->ready_len + 1 < h->ready_target)
        return 0;
    uint64_t since = mono_ns() - h->last_take_ns;
    return since < SAL_REFILL_QUIET_NS ? SAL_REFILL_QUIET_NS - since : 0;
}

/* Sleep on seg_cond (held) for at most `ns`: a take, a commit or a stop
 * wakes the provider earlier. */
static void provider_wait_locked(sal_heap *h, uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec += (long)(ns % 1000000000ull);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&h->seg_cond, &h->seg_lock, &ts);
}

static void *provider_main(void *arg)
{
    sal_heap *h = arg;
    uint64_t released_at = 0; /* commit epoch of the last id release */
    pthread_mutex_lock(&h->seg_lock);
    while (!h->provider_stop) {
        reclaim_locked(h);
        ready_return_stale_locked(h);
        uint64_t written = atomic_load(&h->commit_epoch);
        if (written != released_at) {
            released_at = written;
            pthread_mutex_unlock(&h->seg_lock);
            sal_pending_ids_release(h, 1);
            pthread_mutex_lock(&h->seg_lock);
        }
        uint64_t seg, delay = refill_delay_ns_locked(h);
        int err;
        if (h->ready_len < h->ready_target && !h->provider_error && delay == 0 &&
            (err = segment_pick_best_locked(h, 1, &seg)) != 1) {
            if (err) {
                /* Out of space or full: sessions will get the error when
                 * they need a segment; retry after a pause. */
                h->provider_error = err;
                continue;
            }
            segment_reset(&h->segments[seg], SEG_READY);
            h->provider_preparing = 1;
            pthread_mutex_unlock(&h->seg_lock);
            sal_segment_prepare(h, seg, 1);
            pthread_mutex_lock(&h->seg_lock);
            h->provider_preparing = 0;
            h->ready_segs[h->ready_len++] = (uint32_t)seg;
            pthread_cond_broadcast(&h->seg_cond);
            continue;
        }
        /* List the holes of a sparse segment (drops the lock meanwhile). */
        if (sal_recycle_sweep_one(h))
            continue;
        /* Keep the object table a chunk ahead of the ids in use. */
        uint64_t hwm = atomic_load(&h->ids_high_water);
        uint64_t ahead = hwm + SAL_TABLE_CHUNK_BYTES / 8;
        if (ahead < h->max_objects &&
            (ahead + 1) * 8 > atomic_load(&h->table_ready_bytes)) {
            pthread_mutex_unlock(&h->seg_lock);
            int table_err = sal_table_ensure(h, ahead);
            pthread_mutex_lock(&h->seg_lock);
            if (!table_err)
                continue;
            /* Out of space: try again after the pause below, as for a
             * segment (going on at once spun a core on a full disk). */
        }
        provider_wait_locked(h, delay > 0 && h->ready_len < h->ready_target ? delay
                                                                           : 20000000ull);
        h->provider_error = 0;
    }
    pthread_mutex_unlock(&h->seg_lock);
    return NULL;
}

int sal_provider_start(sal_heap *h)
{
    if (h->ready_target == 0)
        return 0;
    h->provider_stop = 0;
    int err = pthread_create(&h->provider, NULL, provider_main, h);
    if (err)
        return err;
    h->provider_running = 1;
    return 0;
}

void sal_provider_stop(sal_heap *h)
{
    if (h->provider_running) {
        pthread_mutex_lock(&h->seg_lock);
        h->provider_stop = 1;
        pthread_cond_broadcast(&h->seg_cond);
        pthread_mutex_unlock(&h->seg_lock);
        pthread_join(h->provider, NULL);
        h->provider_running = 0;
    }
    /* Ready segments go back to the free pool: they hold nothing.  Sparse
     * segments waiting to be reused go back to full. */
    pthread_mutex_lock(&h->seg_lock);
    while (h->ready_len > 0) {
        uint32_t seg = h->ready_segs[--h->ready_len];
        segment_reset(&h->segments[seg], SEG_FREE);
        h->free_segs[h->free_segs_len++] = seg;
    }
    while (h->recyclable_len > 0)
        sal_recycle_forget_locked(h, h->recyclable_segs[--h->recyclable_len]);
    while (h->sparse_len > 0)
        h->segments[h->sparse_segs[--h->sparse_len]].sparse_queued = 0;
    pthread_mutex_unlock(&h->seg_lock);
}
