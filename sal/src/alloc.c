/*
 * alloc.c - bump allocation of objects and of ids.
 *
 * The fast path of sal_alloc() touches only the session and the memory it
 * hands out: a compare and an add on the session's bump pointer, a pop of
 * the session's free-id stack (or an increment of its block of fresh ids),
 * the 24-byte header, the zeroed child slots, and one atomic store (no
 * read-modify-write) of the new table entry, which no other thread can be
 * looking at yet.  About 40 instructions without the memset.  Everything
 * else (a new segment, a new block of ids) is the slow path, taken once
 * per segment or per SAL_ID_BATCH ids.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* How far ahead of the bump pointer an allocation prefetches. */
#define SAL_BUMP_PREFETCH_BYTES 4096u

/* ------------------------------------------------------------------ ids */

static void pool_push_locked(sal_heap *h, const sal_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sal_id_vec_push(&h->free_ids, ids[i]) != 0)
            break; /* out of memory: the ids stay free in the table and the
                      next open finds them */
}

/* Move half of the session's free ids to the shared pool. */
static void spill_half(sal_session *s)
{
    uint32_t keep = s->free_len / 2;
    pthread_mutex_lock(&s->heap->free_ids_lock);
    pool_push_locked(s->heap, s->free_ids + keep, s->free_len - keep);
    pthread_mutex_unlock(&s->heap->free_ids_lock);
    s->free_len = keep;
}

void sal_session_flush_ids(sal_session *s)
{
    sal_heap *h = s->heap;
    pthread_mutex_lock(&h->free_ids_lock);
    pool_push_locked(h, s->free_ids, s->free_len);
    /* Unused fresh ids go back too: the next id for a never-used entry
     * has generation 0. */
    for (uint64_t i = s->id_next; i < s->id_end; i++)
        if (sal_id_vec_push(&h->free_ids, sal_id_make((uint32_t)i, 0)) != 0)
            break;
    pthread_mutex_unlock(&h->free_ids_lock);
    s->free_len = 0;
    s->id_next = s->id_end = 0;
}

/* The slow part of sal_id_recycle (internal.h): an id that the last
 * commit references is held back until the next commit (crash rule 2);
 * a full private stack spills half first. */
void sal_id_recycle_slow(sal_session *s, sal_id next, int committed)
{
    if (committed) {
        /* Batched per cut: a batch goes to the heap when the cut changes. */
        uint64_t cut = atomic_load_explicit(&s->heap->cut_epoch, memory_order_acquire);
        if (s->pending_ids.len > 0 && s->pending_cut != cut)
            sal_pending_ids_handover(s);
        s->pending_cut = cut;
        /* On ENOMEM the id is only lost until the next open. */
        (void)sal_id_vec_push(&s->pending_ids, next);
        /* A mass release hands its ids over as it goes: the heap can
         * free them after the next commit while this session idles, and
         * no later call pays for moving millions at once. */
        if (s->pending_ids.len >= SAL_ID_HANDOVER_BATCH)
            sal_pending_ids_handover(s);
        return;
    }
    if (s->free_len == s->free_cap)
        spill_half(s);
    s->free_ids[s->free_len++] = next;
}

/* A session out of ids on a full table: if a release is moving ids to the
 * pool (the provider's takes the heap's whole list, so the session's own
 * found nothing), wait until the pool has some or no release moves any.
 * The provider does not pause for commits while a session waits (a
 * commit's cut may be waiting for this session's write section).
 * Returns 1 if the pool has ids now (look again), 0 if not and none are
 * on their way. */
static int wait_for_moving_ids(sal_heap *h)
{
    int waiting = 0, found;
    unsigned spins = 0;
    for (;;) {
        /* The count first: a release moves ids into the pool and lowers
         * it in the same hold of the pool's lock, so once it reads 0 the
         * pool below holds whatever was moved. */
        size_t moving = atomic_load(&h->pending_ids_moving);
        pthread_mutex_lock(&h->free_ids_lock);
        found = h->free_ids.len != 0;
        pthread_mutex_unlock(&h->free_ids_lock);
        if (found || moving == 0)
            break;
        if (!waiting) {
            waiting = 1;
            atomic_fetch_add(&h->provider_waiters, 1);
        }
        sal_backoff(&spins);
    }
    if (waiting)
        atomic_fetch_sub(&h->provider_waiters, 1);
    return found;
}

/* Entry 0 (the null id's, never resolved) keeps the highest ids high-water
 * mark handed out, commit or not: after a killed process the page cache
 * still holds it, and recovery takes the entries up to it into the table,
 * so that ids handed out after the last commit are not handed out again
 * (recover.c, lost_high_water).  Raises it to `hwm`. */
static void note_high_water(sal_heap *h, uint64_t hwm)
{
    uint64_t noted = atomic_load_explicit(&h->table[0], memory_order_relaxed);
    while (noted < hwm && !atomic_compare_exchange_weak_explicit(&h->table[0], &noted, hwm,
                                                                  memory_order_relaxed,
                                                                  memory_order_relaxed)) {
    }
}

int sal_ids_refill(sal_session *s)
{
    sal_heap *h = s->heap;
    sal_pending_ids_handover(s);
    int moved = 0;
again:
    /* Reuse before growing, so that the highest id stays bounded. */
    pthread_mutex_lock(&h->free_ids_lock);
    size_t n = h->free_ids.len < SAL_ID_BATCH ? h->free_ids.len : SAL_ID_BATCH;
    if (n > s->free_cap - s->free_len)
        n = s->free_cap - s->free_len;
    if (n)
        memcpy(s->free_ids + s->free_len, h->free_ids.ids + h->free_ids.len - n,
               n * sizeof(sal_id));
    h->free_ids.len -= n;
    pthread_mutex_unlock(&h->free_ids_lock);
    s->free_len += (uint32_t)n;
    if (n > 0)
        return 0;

    uint64_t start = atomic_load(&h->ids_high_water), end;
    do {
        if (start >= h->max_objects) {
            /* The table is full.  Ids whose commit was written may still
             * wait for the background thread to move them: move them now,
             * once, before saying so; and while another release (the
             * provider's) holds ids it has not moved yet, wait for them. */
            if (!moved) {
                moved = 1;
                sal_pending_ids_release(h, 0);
                goto again;
            }
            if (!wait_for_moving_ids(h))
                return SAL_ENOIDS;
            goto again;
        }
        end = start + SAL_ID_BATCH;
        if (end > h->max_objects)
            end = h->max_objects;
        /* The entries are allocated on disk before anyone may use them. */
        int err = sal_table_ensure(h, end - 1);
        if (err)
            return err;
    } while (!atomic_compare_exchange_weak(&h->ids_high_water, &start, end));
    /* Above the mark the table may still hold the entries of a process
     * that was killed before committing them whose recovery did not know
     * how far they went (after a reboot): never-used entries, generation
     * 0, for what this session leaves unused is counted free once the mark
     * covers it. */
    for (uint64_t i = start; i < end; i++)
        atomic_store_explicit(&h->table[i], 0, memory_order_relaxed);
    note_high_water(h, end);
    s->id_next = start;
    s->id_end = end;
    return 0;
}

/* --------------------------------------------------------------- space */

void sal_session_arena_release(sal_session *s, int keep_partial)
{
    sal_heap *h = s->heap;
    if (s->arena_segment < 0)
        return;
    uint64_t seg = (uint64_t)s->arena_segment;
    uint64_t used = (uint64_t)(s->bump - (h->base + sal_segment_start(h, seg)));
    int64_t allocated = (s->bump - s->arena_start) - s->arena_skipped;
    if (s->holes) {
        /* A recycled arena ends at its old high-water mark, holes and all;
         * it is never continued by another session. */
        sal_hole_close(s);
        used = s->arena_used;
        free(s->holes);
        s->holes = NULL;
        s->nholes = s->hole_next = 0;
        s->hole_start = NULL;
        keep_partial = 0;
    }
    sal_segment_release_arena(h, seg, used, allocated, keep_partial);
    s->arena_segment = -1;
    s->arena_skipped = 0;
    s->bump = s->arena_end = s->arena_start = NULL;
}

/* A new arena for `span` bytes for a session that holds none: dead space
 * in sparse segments first, then a segment. */
static int arena_take(sal_session *s, uint64_t span)
{
    sal_heap *h = s->heap;
    for (;;) {
        if (sal_recycle_take(s, span))
            return 0;
        uint64_t seg, used;
        int err = sal_segment_take(h, s->section, span, &seg, &used);
        if (err)
            return err;
        char *start = h->base + sal_segment_start(h, seg);
        s->arena_segment = (int64_t)seg;
        s->arena_start = s->bump = s->bump_at_cut = start + used;
        s->arena_end = start + h->segment_bytes;
        if ((uint64_t)(s->arena_end - s->bump) >= span)
            return 0;
        sal_session_arena_release(s, 0); /* a partial arena too short */
    }
}

int sal_alloc_slow(sal_session *s, uint64_t span)
{
    sal_heap *h = s->heap;
    if (span > h->segment_bytes)
        return SAL_ETOOBIG;
    /* A recycled arena continues in its next hole that is long enough. */
    if (s->holes && sal_hole_advance(s, span))
        return 0;
    /* Bulk writing: half an arena or more filled since the last commit.
     * Large folios again (provider.c, "Folios"). */
    if (s->arena_segment >= 0 && !s->holes && !s->park_arena && atomic_load(&h->small_folios) &&
        (uint64_t)(s->bump - s->bump_at_cut) >= h->segment_bytes / 2)
        atomic_store(&h->small_folios, 0);
    if (s->arena_segment < 0 || s->holes) {
        /* None, or a recycled one with no hole left that holds `span`. */
        sal_session_arena_release(s, 0);
        s->park_arena = 0;
        return arena_take(s, span);
    }
    /* A plain arena is given up only once there is a new one: when none
     * can be had (a full disk), the objects that still fit go on in it,
     * parked or not. */
    int64_t seg = s->arena_segment;
    char *bump = s->bump, *end = s->arena_end, *start = s->arena_start, *at_cut = s->bump_at_cut;
    int64_t skipped = s->arena_skipped;
    int park = s->park_arena;
    s->arena_segment = -1;
    s->bump = s->arena_end = s->arena_start = NULL;
    s->arena_skipped = 0;
    s->park_arena = 0;
    int err = arena_take(s, span);
    char *seg_start = h->base + sal_segment_start(h, (uint64_t)seg);
    if (!err) {
        sal_segment_release_arena(h, (uint64_t)seg, (uint64_t)(bump - seg_start),
                                  (bump - start) - skipped, park);
        return 0;
    }
    s->arena_segment = seg;
    s->bump = bump;
    s->arena_start = start;
    s->bump_at_cut = at_cut;
    s->arena_skipped = skipped;
    /* A parked arena (large folios while small ones are wanted) is better
     * than an error. */
    s->arena_end = park ? seg_start + h->segment_bytes : end;
    if ((uint64_t)(s->arena_end - s->bump) >= span)
        return 0;
    s->park_arena = park;
    s->arena_end = end;
    return err;
}

static int alloc_misuse(sal_session *s, uint64_t size, unsigned nrefs,
                        unsigned type, sal_id *id_out, void **ptr_out)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->kind != SAL_KIND_WRITER)
        return SAL_EREADONLY;
    if (!s->write_token)
        return SAL_ENOSECTION;
    if (size > sal_max_object_bytes(s->heap))
        return SAL_ETOOBIG;
    if (!id_out || !ptr_out || nrefs > SAL_MAX_REFS || type > SAL_MAX_TYPE ||
        (uint64_t)nrefs * 8 > size)
        return SAL_EINVAL;
    return 0;
}

static inline __attribute__((always_inline)) int
alloc_raw(sal_session *s, uint64_t size, unsigned nrefs, unsigned type, sal_id *id_out,
          sal_object_header **hdr_out)
{
    sal_heap *h = s->heap;
    uint64_t span = sal_object_span(size);
    /* The id first: when it cannot be had, no space was taken. */
    sal_id id;
    if (__builtin_expect(s->free_len == 0 && s->id_next == s->id_end, 0)) {
        int err = sal_ids_refill(s);
        if (err)
            return err;
    }
    int from_stack = s->free_len > 0;
    if (__builtin_expect(from_stack, 1))
        id = s->free_ids[--s->free_len];
    else
        id = sal_id_make((uint32_t)s->id_next++, 0);
    /* Then the space, from the bump arena.  (Free lists of dead blocks by
     * size were tried and measured: with random sizes the reused blocks
     * are scattered and cold, and filling after a mass free was 5-8x
     * slower than bumping.  Dead space comes back in whole runs instead,
     * on the slow path: recycle.c.) */
    if (__builtin_expect(s->bump == NULL || s->bump + span > s->arena_end, 0)) {
        int err = sal_alloc_slow(s, span);
        if (err) {
            if (from_stack)
                s->free_ids[s->free_len++] = id;
            else
                s->id_next--;
            return err;
        }
    }
    sal_object_header *hdr = (sal_object_header *)s->bump;
    s->bump += span;
    /* The bump pointer runs through memory that no cache holds, and each
     * header written would wait for its line: start fetching the line the
     * allocations about 25 objects on will write.  Not past the arena's
     * end: a recycled hole ends where live objects begin, which other
     * threads may be reading.  (W1, A/B: p2_fill 11.6-13.4 -> 8.4-8.7 ns,
     * p1_alloc 21 -> 19-20; 256 B to 2 KiB ahead gained less.) */
    if (__builtin_expect((uint64_t)(s->arena_end - s->bump) > SAL_BUMP_PREFETCH_BYTES, 1))
        __builtin_prefetch(s->bump + SAL_BUMP_PREFETCH_BYTES, 1, 3);
    hdr->id = id;
    hdr->size_bytes = (uint32_t)size;
    hdr->nrefs = (uint16_t)nrefs;
    hdr->type = (uint8_t)type;
    hdr->flags = 0;
    hdr->birth_epoch = s->birth_epoch;
    hdr->seal = s->write_token;
    if (nrefs)
        memset(hdr + 1, 0, (size_t)nrefs * 8);
    uint64_t loc = sal_heap_offset(h, hdr) >> 3;
    atomic_store_explicit(&h->table[sal_id_index(id)], loc | SAL_ENTRY_RC_ONE,
                          memory_order_release);
    /* Owner-only counters: a plain load and store, no bus lock. */
    atomic_store_explicit(&s->live_objects,
                          atomic_load_explicit(&s->live_objects, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->live_bytes,
                          atomic_load_explicit(&s->live_bytes, memory_order_relaxed) + (int64_t)span,
                          memory_order_relaxed);
    *id_out = id;
    *hdr_out = hdr;
    return 0;
}

int sal_alloc_raw(sal_session *s, uint64_t size, unsigned nrefs, unsigned type,
                  sal_id *id_out, sal_object_header **hdr_out)
{
    return alloc_raw(s, size, nrefs, type, id_out, hdr_out);
}

int sal_alloc(sal_session *s, size_t size_bytes, unsigned nrefs, unsigned type,
              sal_id *id_out, void **ptr_out)
{
    /* One branch covers every misuse on the fast path: a valid call has a
     * write section, which only an allocating session can open. */
    if (__builtin_expect(!s || !s->write_token || !id_out || !ptr_out ||
                             size_bytes > 0xFFFFFFFFu || nrefs > SAL_MAX_REFS ||
                             (uint64_t)nrefs * 8 > size_bytes || type > SAL_MAX_TYPE,
                         0)) {
        int err = alloc_misuse(s, size_bytes, nrefs, type, id_out, ptr_out);
        return err ? err : SAL_EINVAL;
    }
#ifndef NDEBUG
    if (!pthread_equal(s->owner, pthread_self()))
        return SAL_EWRONGTHREAD;
#endif
    if (__builtin_expect(size_bytes > s->heap->segment_bytes - sizeof(sal_object_header), 0))
        return SAL_ETOOBIG;
    sal_object_header *hdr;
    int err = alloc_raw(s, size_bytes, nrefs, type, id_out, &hdr);
    if (err)
        return err;
    *ptr_out = hdr + 1;
    return 0;
}
