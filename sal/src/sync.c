/*
 * sync.c - commits: the cut, the flush, the commit slot.
 *
 * A commit happens in three steps.
 *
 *  1. The cut.  New write sections are held at the door (cut_pending) and
 *     the commit waits for the open ones to end.  With no writer inside,
 *     it sets each segment's protect mark: at the bump pointer rounded up
 *     to a page for arenas (the session continues on the next page), at the
 *     end for full segments.  Everything below a mark is committed and is
 *     never written again.  It copies the roots and the segment records,
 *     and lets the writers go.  The cut is short: a walk over the segments.
 *
 *  2. The flush, outside the cut while writers go on: the newly committed
 *     ranges are made read-only (a stray write through an old pointer then
 *     faults instead of changing history), then, by mode, nothing (protect),
 *     write-back started (async) or written and waited for (durable).  Only
 *     the ranges committed since the last commit are flushed: the bytes of
 *     the new objects, back to back, plus the changed pages of the segment
 *     table copy.  The object table is never flushed by a sync: reference
 *     counts can always be rebuilt.
 *
 *  3. The slot, written last (crash rule 4) into the slot that is not
 *     current, then flushed by mode.  Only then are the ids and segments
 *     released since the previous cut handed back for reuse (crash rule 2).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "os.h"

/* How many write sections the calling thread has open (deadlock check). */
static _Thread_local int thread_write_sections;

void sal_thread_write_sections_add(int delta) { thread_write_sections += delta; }
int sal_thread_write_sections(void) { return thread_write_sections; }

int sal_thread_writing(sal_heap *h)
{
    if (thread_write_sections == 0)
        return 0;
    /* Sessions of other threads are skipped on their owner alone: their
     * write_token is theirs to change. */
    pthread_t self = pthread_self();
    int found = 0;
    pthread_mutex_lock(&h->sessions_lock);
    for (unsigned i = 0; i < SAL_MAX_SESSIONS && !found; i++) {
        const sal_session *s = h->open_sessions[i];
        found = s && pthread_equal(s->owner, self) && s->write_token != 0;
    }
    pthread_mutex_unlock(&h->sessions_lock);
    return found;
}

SAL_TEST_HOOK(cut_hook, int)
SAL_TEST_HOOK(ids_release_hook, int)

typedef struct range {
    uint64_t offset, length;
} range;

typedef struct cut {
    sal_commit_slot slot;
    sal_segment_record *records; /* segments_high_water of them */
    uint64_t *new_marks;         /* per segment, after this commit */
    range *flush;                /* committed since the last commit */
    range *protect;              /* to make read-only */
    size_t nflush, nprotect;
} cut;

void sal_cut_wait(sal_heap *h)
{
    pthread_mutex_lock(&h->cut_lock);
    while (atomic_load(&h->cut_pending))
        pthread_cond_wait(&h->cut_cond, &h->cut_lock);
    pthread_mutex_unlock(&h->cut_lock);
}

/* Retired segments: full, or sparse and on their way to reuse. */
static int seg_finished(int state)
{
    return state == SEG_FULL || state == SEG_SWEEPING || state == SEG_RECYCLABLE;
}

static int writers_inside(sal_heap *h)
{
    for (unsigned i = 0; i < SAL_MAX_SESSIONS; i++)
        if (atomic_load(&h->slots[i].writing))
            return 1;
    return 0;
}

/* Lets the write sections held at the door in (sal_cut_wait). */
static void cut_door_open(sal_heap *h)
{
    pthread_mutex_lock(&h->cut_lock);
    atomic_store(&h->cut_pending, 0);
    pthread_cond_broadcast(&h->cut_cond);
    pthread_mutex_unlock(&h->cut_lock);
}

static void wait_for_writers(sal_heap *h)
{
    for (unsigned i = 0; i < SAL_MAX_SESSIONS; i++) {
        unsigned spins = 0;
        while (atomic_load(&h->slots[i].writing))
            sal_backoff(&spins);
    }
}

/* Round an arena's bump pointer up to a page: the part below is committed.
 * A zero word at the old bump tells a linear walk that the rest of the
 * page is padding.  With `retire`, the arena is parked instead (its large
 * folios would make every small commit write 2 MiB): the session takes a
 * new segment at its next allocation, and the parked one waits on the
 * partial list until large folios are wanted again. */
static void cut_arena(sal_heap *h, sal_session *s, int retire)
{
    uint64_t seg = (uint64_t)s->arena_segment;
    if (s->holes) {
        /* A recycled arena: its holes lie below committed objects, so the
         * commit takes the whole segment and reuse ends here.  The rest of
         * the current hole becomes padding; the holes after it keep their
         * dead objects, which a walk steps over. */
        sal_hole_close(s);
        s->hole_next = s->nholes;
        s->arena_end = s->bump; /* the next allocation releases the arena */
        atomic_store(&h->segments[seg].used_bytes, s->arena_used);
        return;
    }
    char *start = h->base + sal_segment_start(h, seg);
    uint64_t used = (uint64_t)(s->bump - start);
    uint64_t mark = sal_round_up(used, SAL_PAGE_BYTES);
    if (mark > h->segment_bytes)
        mark = h->segment_bytes;
    if (mark > used) {
        *(uint64_t *)s->bump = 0;
        s->arena_skipped += (int64_t)(mark - used);
        s->bump = start + mark;
    }
    if (retire) {
        s->arena_end = s->bump; /* the next allocation takes a new segment */
        s->park_arena = 1;
    }
    s->bump_at_cut = s->bump;
    atomic_store(&h->segments[seg].used_bytes, mark);
}

static int cut_take(sal_heap *h, cut *c, int mode, sal_id *roots_out)
{
    memset(c, 0, sizeof *c);
    atomic_store(&h->cut_pending, 1);
    if (sal_thread_write_sections() > 0 && writers_inside(h)) {
        /* The caller is inside a write section of another heap, whose
         * commit may be waiting for it while one of these writers syncs
         * that heap: waiting here could be for ever. */
        cut_door_open(h);
        return SAL_EBUSY;
    }
    wait_for_writers(h);

    pthread_mutex_lock(&h->sessions_lock);
    pthread_mutex_lock(&h->seg_lock);
    h->commit_in_flight = 1;
    uint64_t n = h->segments_high_water;
    c->records = calloc(n ? n : 1, sizeof *c->records);
    c->new_marks = calloc(n ? n : 1, sizeof *c->new_marks);
    c->flush = calloc(n ? n : 1, sizeof *c->flush);
    c->protect = calloc(n ? n : 1, sizeof *c->protect);
    int err = (!c->records || !c->new_marks || !c->flush || !c->protect) ? SAL_ENOMEM : 0;

    if (!err) {
        /* The folio policy (provider.c): after a commit that writes, new
         * arenas start with small folios, and arenas with large ones are
         * parked for later (a bulk writer goes back to large ones: alloc.c).
         * A commit with nothing new (open, close, an idle sync) says
         * nothing about the workload. */
        int has_new = 0;
        for (uint64_t i = 0; i < n && !has_new; i++) {
            sal_segment *g = &h->segments[i];
            has_new = seg_finished(atomic_load(&g->state)) &&
                      atomic_load(&g->used_bytes) > atomic_load(&g->protect_mark);
        }
        for (unsigned i = 0; i < SAL_MAX_SESSIONS && !has_new; i++) {
            sal_session *s = h->open_sessions[i];
            if (s && s->arena_segment >= 0) {
                uint64_t seg = (uint64_t)s->arena_segment;
                uint64_t used = (uint64_t)(s->bump - (h->base + sal_segment_start(h, seg)));
                has_new = used > atomic_load(&h->segments[seg].protect_mark);
            }
        }
        int to_small = mode != SAL_SYNC_PROTECT && has_new;
        if (to_small)
            atomic_store(&h->small_folios, 1);
        for (unsigned i = 0; i < SAL_MAX_SESSIONS; i++) {
            sal_session *s = h->open_sessions[i];
            if (s && s->arena_segment >= 0)
                cut_arena(h, s, to_small && h->segments[s->arena_segment].folios == 2);
        }
        for (uint64_t i = 0; i < n; i++) {
            sal_segment *g = &h->segments[i];
            int st = atomic_load(&g->state);
            uint64_t start = sal_segment_start(h, i);
            uint64_t old = atomic_load(&g->protect_mark), mark = old, used = 0;
            if (st == SEG_PARTIAL) {
                /* Continue on the next page, like an arena. */
                used = sal_round_up(atomic_load(&g->used_bytes), SAL_PAGE_BYTES);
                if (used > h->segment_bytes)
                    used = h->segment_bytes;
                uint64_t u = atomic_load(&g->used_bytes);
                if (used > u) {
                    *(uint64_t *)(h->base + start + u) = 0;
                    atomic_store(&g->used_bytes, used);
                }
                mark = used;
            } else if (st == SEG_ACTIVE) {
                used = atomic_load(&g->used_bytes); /* set by cut_arena */
                /* A page boundary (mprotect works in pages): a recycled
                 * arena ends at its segment's old high-water mark, which
                 * need not be one. */
                mark = sal_round_up(used, SAL_PAGE_BYTES);
                if (mark > h->segment_bytes)
                    mark = h->segment_bytes;
            } else if (seg_finished(st)) {
                /* Nobody bumps it again, and a sparse one is no longer
                 * reused (the next take drops its holes). */
                used = atomic_load(&g->used_bytes);
                mark = h->segment_bytes;
            }
            if (used > 0 && (st == SEG_ACTIVE || st == SEG_PARTIAL || seg_finished(st))) {
                c->records[i].state = SAL_SEGREC_USED;
                c->records[i].used_bytes = used;
                if (mode == SAL_SYNC_DURABLE)
                    g->durable_listed = 1; /* whether this commit completes or not */
                int64_t live = atomic_load(&g->live_bytes);
                c->records[i].live_bytes = live > 0 ? (uint64_t)live : 0;
                if (c->records[i].live_bytes > used)
                    c->records[i].live_bytes = used;
            }
            /* A durable commit flushes everything since the last durable
             * one (protect-mode commits and failed syncs in between flushed
             * nothing); the other modes what is new since the last cut. */
            uint64_t from = mode == SAL_SYNC_DURABLE ? g->durable_mark : old;
            uint64_t end = used < mark ? used : mark;
            if (end > from)
                c->flush[c->nflush++] = (range){start + from, end - from};
            if (mark > g->readonly_mark)
                c->protect[c->nprotect++] =
                    (range){start + g->readonly_mark, mark - g->readonly_mark};
            if (mark > old)
                atomic_store_explicit(&g->protect_mark, mark, memory_order_release);
            c->new_marks[i] = mark;
        }
    }

    sal_commit_slot *s = &c->slot;
    memcpy(s->magic, SAL_SLOT_MAGIC, 8);
    /* After the last cut, not the last commit written: a commit that failed
     * after putting its slot in the page cache may still reach the disk
     * with its epoch, and a tie would let open prefer it.  (Open sets the
     * cut epoch above every slot's.) */
    s->epoch = atomic_load(&h->cut_epoch) + 1;
    s->heap_uid[0] = h->sb.heap_uid[0];
    s->heap_uid[1] = h->sb.heap_uid[1];
    s->ids_high_water = atomic_load(&h->ids_high_water);
    s->segments_high_water = n;
    s->file_bytes = atomic_load(&h->file_bytes);
    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++) {
        s->roots[r] = atomic_load(&h->roots[r]);
        /* No writer is inside: a root cannot be replaced and released
         * under this retain. */
        if (roots_out)
            roots_out[r] = (!err && s->roots[r] != SAL_NULL_ID &&
                            sal_retain_internal(h, s->roots[r]) == 0)
                               ? s->roots[r]
                               : SAL_NULL_ID;
    }
    cut_hook_run(SAL_TEST_HOOK_IN_CUT);
    if (!err)
        atomic_store(&h->cut_epoch, s->epoch);
    pthread_mutex_unlock(&h->seg_lock);
    pthread_mutex_unlock(&h->sessions_lock);

    cut_door_open(h);
    return err;
}

static void cut_free(cut *c)
{
    free(c->records);
    free(c->new_marks);
    free(c->flush);
    free(c->protect);
}

/* Start (async) or finish (durable) writing a range.  A durable commit
 * writes its data ranges and waits for them, then makes everything durable
 * with one flush (the msync of the segment records), then writes and
 * flushes the slot: two device flushes per commit, whatever the number of
 * ranges. */
static int write_range(sal_heap *h, uint64_t offset, uint64_t length, int mode)
{
    if (length == 0 || mode == SAL_SYNC_PROTECT)
        return 0;
    if (mode == SAL_SYNC_ASYNC)
        return sal_os_sync_file_range(h->fd, offset, length);
    return sal_os_write_and_wait(h->fd, h->base + offset, offset, length);
}

static int flush_range(sal_heap *h, uint64_t offset, uint64_t length, int mode)
{
    if (mode != SAL_SYNC_DURABLE)
        return write_range(h, offset, length, mode);
    /* msync wants a page-aligned start. */
    uint64_t start = offset & ~(uint64_t)(SAL_PAGE_BYTES - 1);
    return sal_os_msync(h->base + start, offset + length - start, 1);
}

/* Write the segment records into the copy that belongs to `target`,
 * touching only records that differ (an unchanged page stays clean and is
 * not written back).  *range_out gets the bytes that changed (a page of
 * them if none did: its flush is then only a barrier).  After a failed
 * write-back, the whole copy, written again through the file: a page of
 * it cleaned by the failure holds what this commit writes, unchanged, and
 * would not be flushed. */
static uint64_t segtab_copy_offset(const sal_heap *h, unsigned target)
{
    return h->sb.segtab_offset + target * h->sb.segtab_bytes;
}

static int write_records(sal_heap *h, cut *c, unsigned target, range *range_out)
{
    uint64_t n = c->slot.segments_high_water;
    uint64_t base = segtab_copy_offset(h, target);
    sal_segment_record *rec = (sal_segment_record *)(h->base + base);
    /* Only the records that changed are stored: a page that stays the same
     * stays clean. */
    for (uint64_t i = 0; i < n; i++)
        if (memcmp(&rec[i], &c->records[i], sizeof rec[i]) != 0)
            rec[i] = c->records[i];
    c->slot.segtab_checksum = sal_crc32c(0, c->records, n * sizeof *c->records);
    if (atomic_load(&h->writeback_failed) && n > 0) {
        int err = sal_os_rewrite(h->fd, rec, base, n * sizeof *rec);
        if (err)
            return err;
    }
    /* The whole copy is flushed, not only the records that differ from the
     * page cache: the cache may hold records that never reached the disk
     * (a commit that failed after writing them, a process killed before
     * its flush, a rewrite after a write-back error), and the slot vouches
     * for every record.  Flushing clean pages writes nothing: the copy is
     * 32 bytes a segment, a page per 128 segments. */
    range_out->offset = base;
    range_out->length = n > 0 ? n * sizeof *rec : SAL_PAGE_BYTES;
    return 0;
}

/*
 * Write-back errors.  When the kernel fails to write a page back, it keeps
 * the page's contents in the cache but marks it clean, and reports the
 * error once, to the first wait on the file that comes: a retried sync
 * would flush nothing of that page and succeed, a commit said durable
 * whose bytes are not on the disk.  So every error of a write-back wait
 * (a commit's, or the provider's) is counted in h->writeback_failed, and
 *  - at once, everything committed and not yet durable is written again
 *    through the file (sal_os_rewrite: its pages are dirty again), and the
 *    segment-table copy of a commit that failed: the process may end
 *    before its next commit, and the next process never hears of the
 *    error;
 *  - from then on, for the life of the handle, every commit writes again
 *    what it makes read-only, before flushing (a page cleaned before it
 *    was committed is on no list), writes its segment records whole
 *    (write_records), and a clean close writes the object table again;
 *  - a durable commit during which an error is counted fails with EIO:
 *    the error may concern the pages it flushed.  (The provider waits on
 *    a file description of its own, h->drop_fd, so that its waits do not
 *    take the report meant for the commit's: the kernel reports an error
 *    once to each file description open when it happened.)
 * Writing a range over itself races with no store: committed ranges are
 * read-only (rewrites_in_flight, like a commit in flight, holds back the
 * reset of a segment for reuse), the records and the table (at close)
 * belong to the committing thread.  A process that opens the heap later
 * in the same boot finds the pages dirty, or the error of a new failure
 * unreported.
 */
static int rewrite_range(sal_heap *h, uint64_t offset, uint64_t length)
{
    return length ? sal_os_rewrite(h->fd, h->base + offset, offset, length) : 0;
}

/* Everything committed since the last durable commit: read-only, from each
 * segment's durable mark to its read-only mark (after an open from a
 * volatile commit, every committed byte: the next durable commit flushes
 * all of it anyway).  The ranges are listed under seg_lock and written
 * outside it, which holds no session back: rewrites_in_flight (like a
 * commit's commit_in_flight) keeps every segment from being reset for
 * reuse meanwhile (a reset one would have both marks 0), so they stay
 * read-only, also when the provider calls it outside a commit. */
static int rewrite_since_durable(sal_heap *h)
{
    pthread_mutex_lock(&h->seg_lock);
    h->rewrites_in_flight++;
    uint64_t n = h->segments_high_water;
    range *todo = malloc((n ? n : 1) * sizeof *todo);
    size_t ntodo = 0;
    for (uint64_t i = 0; todo && i < n; i++) {
        const sal_segment *g = &h->segments[i];
        if (g->readonly_mark > g->durable_mark)
            todo[ntodo++] = (range){sal_segment_start(h, i) + g->durable_mark,
                                    g->readonly_mark - g->durable_mark};
    }
    pthread_mutex_unlock(&h->seg_lock);
    int err = todo ? 0 : SAL_ENOMEM;
    for (size_t i = 0; i < ntodo && !err; i++)
        err = rewrite_range(h, todo[i].offset, todo[i].length);
    free(todo);
    pthread_mutex_lock(&h->seg_lock);
    h->rewrites_in_flight--;
    pthread_cond_broadcast(&h->seg_cond);
    pthread_mutex_unlock(&h->seg_lock);
    return err;
}

/* After a commit's protect step, before its flush. */
static int rewrite_before_flush(sal_heap *h, const cut *c)
{
    /* The errors counted before the rewrite: one that comes during it may
     * concern pages it already wrote, and the next commit writes again. */
    int failed = atomic_load(&h->writeback_failed);
    if (!failed)
        return 0;
    if (h->writeback_redirtied != failed) {
        int err = rewrite_since_durable(h); /* covers this commit's ranges */
        if (!err)
            h->writeback_redirtied = failed;
        return err;
    }
    for (size_t i = 0; i < c->nprotect; i++) {
        int err = rewrite_range(h, c->protect[i].offset, c->protect[i].length);
        if (err)
            return err;
    }
    return 0;
}

/* A write-back wait of this commit failed.  Its segment-table copy
 * (`copy`, its bytes) is written again too: its pages may be among those
 * left clean, and if the process ends before the next commit, the next
 * process finds the records in the page cache, writes only those that
 * differ, and its commit's copy on the disk may not match its slot. */
static void writeback_failed(sal_heap *h, uint64_t copy, uint64_t bytes)
{
    int failed = atomic_fetch_add(&h->writeback_failed, 1) + 1;
    int err = rewrite_since_durable(h);
    if (!err)
        err = rewrite_range(h, copy, bytes);
    if (!err)
        h->writeback_redirtied = failed;
}

/* A wait outside a commit took a write-back error.  The pages it left
 * clean are written again now, not at the next commit: the process may
 * end before that, and the next process to open the heap would never
 * hear of the error (the kernel reported it once, here).  The next commit
 * writes them again too (the count changed; writeback_redirtied belongs
 * to sync_lock). */
void sal_writeback_error_taken(sal_heap *h)
{
    atomic_fetch_add(&h->writeback_failed, 1);
    (void)rewrite_since_durable(h);
}

/* Ids moved to the shared pool per hold of its lock.  Sessions refill
 * their private stacks from that pool: a mass release (millions of ids)
 * moved in one hold kept them waiting 50-80 ms, and a durable commit
 * running beside the move took twice its time.  64 Ki ids are about
 * 0.1 ms of copying. */
#define SAL_ID_RELEASE_CHUNK 65536u

/* Put `rest` entries of a taken list back, with what sessions handed over
 * meanwhile; called with pending_lock held.  The entries end up in the
 * buffer of larger capacity and the other is returned to be freed outside
 * the lock: freeing a large one (a mass release leaves one of 100 MB)
 * unmaps it, which holds the lock on the process's mappings that a
 * commit's mprotect waits for (6-9 ms were measured).  Only the other
 * side's entries are copied.  If no buffer can hold both, the taken
 * entries are dropped: their ids stay free in the table until the next
 * open finds them, as when a hand-over finds no memory. */
static sal_pending_id *pending_put_back_locked(sal_heap *h, sal_pending_id *list, size_t rest,
                                               size_t cap)
{
    sal_pending_id *other = h->pending_ids;
    size_t other_len = h->pending_ids_len, total = rest + other_len;
    if (cap >= h->pending_ids_cap && total <= cap) {
        if (other_len > 0)
            memcpy(list + rest, other, other_len * sizeof *list);
        h->pending_ids = list;
        h->pending_ids_len = total;
        h->pending_ids_cap = cap;
        return other;
    }
    if (rest == 0)
        return list;
    if (total > h->pending_ids_cap) {
        sal_pending_id *p = realloc(other, total * sizeof *p);
        if (!p)
            return list;
        h->pending_ids = other = p;
        h->pending_ids_cap = total;
    }
    memcpy(other + other_len, list, rest * sizeof *list);
    h->pending_ids_len = total;
    return list;
}

/* Ids released after cut `tag` are reusable once commit tag+1 is written.
 * Run by the provider thread (a mass release can leave millions to move),
 * or by the commit itself when there is no provider.
 *
 * The list is taken whole, so that sessions hand over into a new one
 * meanwhile.  The ready entries go to its end and move to the pool from
 * there in chunks, so that what stays (the rest) is the list's start.
 * The provider pauses between chunks while a commit runs, unless the pool
 * is short of ids: a session that finds it empty takes fresh ids from the
 * table, which then grows for good. */
void sal_pending_ids_release(sal_heap *h, int by_provider)
{
    uint64_t written = atomic_load(&h->commit_epoch);
    pthread_mutex_lock(&h->pending_lock);
    sal_pending_id *list = h->pending_ids;
    size_t len = h->pending_ids_len, cap = h->pending_ids_cap;
    h->pending_ids = NULL;
    h->pending_ids_len = h->pending_ids_cap = 0;
    /* Added, not stored: a session out of ids may move them too. */
    atomic_fetch_add(&h->pending_ids_moving, len);
    pthread_mutex_unlock(&h->pending_lock);
    if (len)
        ids_release_hook_run(by_provider);

    size_t keep = 0; /* entries not ready yet to the front */
    for (size_t i = 0; i < len; i++)
#ifdef SAL_MUTANT_READY_EARLY /* mutant: ready when the commit in flight ends */
        if (list[i].tag > written) {
#else
        if (list[i].tag >= written) {
#endif
            sal_pending_id p = list[i];
            list[i] = list[keep];
            list[keep++] = p;
        }
    size_t ready = len - keep, moved = 0;
    if (ready > 0) {
        pthread_mutex_lock(&h->free_ids_lock);
        /* One growth for the whole release: its copy is of the pool as it
         * is. */
        int err = sal_id_vec_reserve(&h->free_ids, ready);
        pthread_mutex_unlock(&h->free_ids_lock);
        while (!err && moved < ready) {
            size_t n = ready - moved < SAL_ID_RELEASE_CHUNK ? ready - moved
                                                            : SAL_ID_RELEASE_CHUNK;
            const sal_pending_id *from = list + len - moved - n;
            size_t pool_len = 0;
            pthread_mutex_lock(&h->free_ids_lock);
            /* Sessions may have pushed ids of their own meanwhile. */
            if ((err = sal_id_vec_reserve(&h->free_ids, n)) == 0) {
                sal_id_vec *pool = &h->free_ids;
                for (size_t i = 0; i < n; i++)
                    pool->ids[pool->len++] = from[i].next_id;
                pool_len = pool->len;
                moved += n;
                atomic_fetch_sub(&h->pending_ids_moving, n);
            }
            pthread_mutex_unlock(&h->free_ids_lock);
            if (by_provider && moved < ready && pool_len >= 2 * SAL_ID_RELEASE_CHUNK)
                sal_provider_wait_for_commit(h);
        }
    }

    pthread_mutex_lock(&h->pending_lock);
    atomic_fetch_sub(&h->pending_ids_moving, len - moved);
    sal_pending_id *spare = pending_put_back_locked(h, list, len - moved, cap);
    pthread_mutex_unlock(&h->pending_lock);
    free(spare);
}

void sal_pending_ids_handover(sal_session *s)
{
    sal_heap *h = s->heap;
    if (s->pending_ids.len == 0)
        return;
    /* Ready already: the commit after their release was written while the
     * session held them.  In the heap's list they would wait for the move
     * after the next commit (and a full table would say SAL_ENOIDS). */
    if (s->pending_cut < atomic_load(&h->commit_epoch)) {
        pthread_mutex_lock(&h->free_ids_lock);
        int err = sal_id_vec_append(&h->free_ids, s->pending_ids.ids, s->pending_ids.len);
        pthread_mutex_unlock(&h->free_ids_lock);
        if (!err) {
            s->pending_ids.len = 0;
            return;
        }
    }
    pthread_mutex_lock(&h->pending_lock);
    size_t need = h->pending_ids_len + s->pending_ids.len;
    if (need > h->pending_ids_cap) {
        size_t cap = h->pending_ids_cap ? h->pending_ids_cap : 1024;
        while (cap < need)
            cap *= 2;
        sal_pending_id *p = realloc(h->pending_ids, cap * sizeof *p);
        if (!p) {
            /* The ids stay free in the table; the next open finds them. */
            pthread_mutex_unlock(&h->pending_lock);
            s->pending_ids.len = 0;
            return;
        }
        h->pending_ids = p;
        h->pending_ids_cap = cap;
    }
    for (size_t i = 0; i < s->pending_ids.len; i++)
        h->pending_ids[h->pending_ids_len++] =
            (sal_pending_id){s->pending_ids.ids[i], s->pending_cut};
    pthread_mutex_unlock(&h->pending_lock);
    s->pending_ids.len = 0;
}

int sal_commit(sal_heap *h, int mode, int clean, sal_id *roots_out)
{
    cut c;
    uint64_t copy = 0, copy_bytes = 0; /* the segment-table copy written */
    /* The provider pauses its preparations meanwhile (provider.c). */
    atomic_store(&h->commit_running, 1);
    int err = cut_take(h, &c, mode, roots_out);
    if (err)
        goto done;
    /* The write-back errors counted before this commit's flushes: if a
     * wait of the provider's counts one meanwhile, the error may concern
     * pages these flushes count on. */
    int failed_before = atomic_load(&h->writeback_failed);
    cut_hook_run(SAL_TEST_HOOK_FLUSH);

    for (size_t i = 0; i < c.nprotect; i++) {
        if ((err = sal_os_protect_readonly(h->base + c.protect[i].offset,
                                           c.protect[i].length)))
            goto failed;
        /* Read-only now; a failure above leaves the mark behind, and the
         * next sync protects from there. */
        uint64_t seg = sal_segment_of(h, c.protect[i].offset);
        pthread_mutex_lock(&h->seg_lock);
        h->segments[seg].readonly_mark =
            c.protect[i].offset + c.protect[i].length - sal_segment_start(h, seg);
        pthread_mutex_unlock(&h->seg_lock);
    }
    /* Never overwrite the newest slot of either kind: it is what open falls
     * back on if this commit does not complete. */
    unsigned target = mode == SAL_SYNC_DURABLE ? h->durable_slot ^ 1u
                                               : (h->volatile_slot == 2 ? 3u : 2u);
    if ((err = rewrite_before_flush(h, &c)))
        goto failed;
    range records;
    if ((err = write_records(h, &c, target, &records)))
        goto failed;
    copy = segtab_copy_offset(h, target);
    copy_bytes = c.slot.segments_high_water * sizeof(sal_segment_record);
    /* (Mutants for testing the crash harnesses: SKIP_FLUSH never writes
     * the data, SLOT_FIRST writes it only after the slot.) */
#if !defined(SAL_MUTANT_SKIP_FLUSH) && !defined(SAL_MUTANT_SLOT_FIRST)
    /* The data and the records go to the device together: start the
     * write-back of the records and of every range, then wait for each.
     * A commit of one range starts and waits for it in one call (a small
     * commit has one range, and a system call less is measurable there).
     * Starting all but the last, as it once did, left the last range's
     * write for after the wait for the others: a 15 MB commit over two
     * segments wrote them one after the other (W6, P = 100 000).  The
     * flush of the records' pages below then makes all of it durable at
     * once, before the slot that points at it is written. */
    if (mode == SAL_SYNC_DURABLE &&
        (err = sal_os_sync_file_range(h->fd, records.offset, records.length)))
        goto flush_failed;
    size_t started = c.nflush > 1 ? c.nflush : 0;
    for (size_t i = 0; mode == SAL_SYNC_DURABLE && i < started; i++)
        if ((err = sal_os_sync_file_range(h->fd, c.flush[i].offset, c.flush[i].length)))
            goto flush_failed;
    for (size_t i = 0; i < c.nflush; i++)
        if ((err = write_range(h, c.flush[i].offset, c.flush[i].length, mode)))
            goto flush_failed;
#endif
    if ((err = flush_range(h, records.offset, records.length, mode)))
        goto flush_failed;
    if (clean) {
        /* A clean close vouches for the reference counts too. */
        uint64_t table_bytes = atomic_load(&h->table_ready_bytes);
        if (atomic_load(&h->writeback_failed) &&
            (err = rewrite_range(h, h->table_offset, table_bytes)))
            goto failed;
        if ((err = sal_os_msync(h->base + h->table_offset, table_bytes, 1)))
            goto flush_failed;
    }
    if (mode == SAL_SYNC_DURABLE) {
        /* An error the provider's waits met since the cut: its own file
         * description leaves this commit's waits their report, so this is
         * caution (the error may be of the same pages), not a need. */
        if (atomic_load(&h->writeback_failed) != failed_before) {
            err = EIO;
            goto flush_failed;
        }
    }

    sal_commit_slot *s = &c.slot;
    s->time_unix_ns = sal_now_unix_ns();
    s->clean = (uint32_t)clean;
    s->durable = mode == SAL_SYNC_DURABLE;
    s->durable_epoch = s->durable ? s->epoch : atomic_load(&h->durable_epoch);
    memcpy(s->boot_id, h->boot_id, sizeof s->boot_id);
    s->live_objects = 0;
    sal_slot_seal(s);
    char *slot_page = h->base + SAL_SLOT_OFFSET(target);
    memcpy(slot_page, s, sizeof *s);
    if ((err = flush_range(h, (uint64_t)(slot_page - h->base), SAL_PAGE_BYTES, mode)))
        goto flush_failed;
#ifdef SAL_MUTANT_SLOT_FIRST /* mutant: the slot made durable before the data */
    for (size_t i = 0; i < c.nflush; i++)
        if ((err = write_range(h, c.flush[i].offset, c.flush[i].length, mode)))
            goto done;
#endif

    h->committed = *s;
    if (mode == SAL_SYNC_DURABLE)
        h->durable_slot = target;
    else
        h->volatile_slot = target;
    atomic_store(&h->commit_epoch, s->epoch);
    if (mode == SAL_SYNC_DURABLE) {
        pthread_mutex_lock(&h->seg_lock);
        for (uint64_t i = 0; i < s->segments_high_water; i++)
            h->segments[i].durable_mark = c.new_marks[i];
        pthread_mutex_unlock(&h->seg_lock);
        atomic_store(&h->durable_epoch, s->epoch);
    }
    if (h->provider_running) {
        /* The provider moves the released ids and segments to the free
         * pools, off the committing thread. */
        pthread_mutex_lock(&h->seg_lock);
        pthread_cond_broadcast(&h->seg_cond);
        pthread_mutex_unlock(&h->seg_lock);
    } else {
        sal_pending_ids_release(h, 0); /* the segments: after `done` */
    }
    goto done;
failed:
    /* After write-back errors, a commit that failed before its flush may
     * have made ranges read-only (its marks moved) without writing them
     * again (its rewrite or a later mprotect failed): the next commit
     * writes again all since the last durable commit, not only its own
     * ranges. */
    if (atomic_load(&h->writeback_failed))
        h->writeback_redirtied = 0;
    goto done;
flush_failed:
    writeback_failed(h, copy, copy_bytes); /* writes all that again now */
done:
    atomic_store(&h->commit_running, 0);
    /* Segments may be reclaimed again (provider.c, reclaim_locked). */
    pthread_mutex_lock(&h->seg_lock);
    h->commit_in_flight = 0;
    pthread_cond_broadcast(&h->seg_cond); /* sessions waiting for its end */
    pthread_mutex_unlock(&h->seg_lock);
    /* Without a provider the committing thread reclaims what the commit
     * let go (not before: nothing is reclaimed while a commit is in
     * flight). */
    if (!err && !h->provider_running)
        sal_segments_reclaim(h);
    cut_free(&c);
    return err;
}

int sal_sync_snapshot(sal_heap *h, int mode, sal_id *roots_out)
{
    if (roots_out)
        memset(roots_out, 0, SAL_ROOT_COUNT * sizeof *roots_out);
    if (!h || mode < SAL_SYNC_PROTECT || mode > SAL_SYNC_DURABLE)
        return SAL_EINVAL;
    if (h->readonly)
        return SAL_EREADONLY;
    if (sal_thread_writing(h))
        return SAL_EBUSY; /* the cut would wait for this thread's section */
    if (sal_thread_write_sections() > 0) {
        /* Inside a write section of another heap: the sync running here
         * may be waiting for a writer that syncs that heap, whose sync
         * waits for this thread (a cycle of four threads).  Such a thread
         * never waits for a sync, not even for its lock. */
        if (pthread_mutex_trylock(&h->sync_lock))
            return SAL_EBUSY;
    } else {
        pthread_mutex_lock(&h->sync_lock);
    }
    int err = sal_commit(h, mode, 0, roots_out);
    pthread_mutex_unlock(&h->sync_lock);
    return err;
}

int sal_sync(sal_heap *h, int mode)
{
    return sal_sync_snapshot(h, mode, NULL);
}
