/*
 * recycle.c - reusing the dead space inside sparse segments.
 *
 * Sessions only bump forward, so the space of a dead object comes back
 * when its whole segment empties.  Under random replacement (a cache, a
 * map being updated) segments empty slowly, and the heap would spread its
 * live set over many times its size: more memory touched, more cache and
 * TLB misses on every access.  This file reuses the dead space of mostly
 * dead segments without changing the allocation fast path:
 *
 *  1. A retired segment that no commit has covered, and whose live bytes
 *     fall below half of its used bytes, is queued as sparse
 *     (sal_recycle_note, on the releasing thread: one compare per release
 *     unless the segment just crossed the line).
 *  2. The provider thread walks it (sal_recycle_sweep_one): every header,
 *     its table entry read to tell live from dead, and lists the runs of
 *     dead space (holes) of at least SAL_HOLE_MIN_BYTES.
 *  3. A session that needs an arena takes it (sal_recycle_take) and bumps
 *     through its holes one after another: bump and arena_end span the
 *     current hole, so sal_alloc's fast path is the same.  When it leaves a
 *     hole it has written into, the rest becomes padding (a pad word,
 *     format.h), so that a linear walk of the segment stays possible.
 *
 * Only never-committed segments are reused.  Their dead objects were never
 * part of a commit (crash rule 2 does not hold them back), no page of them
 * is read-only, and no flush has covered them.  A cut that covers such a
 * segment ends its reuse: a session's recycled arena pads its current hole
 * and is retired (sync.c), a queued segment is dropped when next looked
 * at.  Sparse committed segments wait for whole-segment reclaim.
 *
 * Readers.  A dead object may still be seen by a thread inside a section
 * that began before it died, so holes are listed under a fresh section
 * epoch and reused only once every section open at that epoch has ended
 * (the rule provider.c applies to whole segments), except the taker's own
 * section: a session's pointers to objects it no longer references are
 * invalid at once (sal.h, "Caveats").  An object whose count reached zero
 * but whose entry is not free yet is still being reclaimed by the thread
 * that released it, which reads its children: it counts as live.
 */
#include <stdlib.h>

#include "internal.h"

/* Holes shorter than this are left as they are: a hole holds at least one
 * object of the smallest usual sizes, or it is not worth a slow path. */
#define SAL_HOLE_MIN_BYTES 64u
/* Swept segments kept waiting for a session; the provider sweeps more as
 * they are taken. */
#define SAL_RECYCLE_READY 2u
/* Headers read ahead while their table entries are prefetched. */
#define SWEEP_BATCH 32u

typedef struct hole_list {
    sal_hole *v;
    uint32_t len, cap;
    int oom;
} hole_list;

static void hole_push(hole_list *l, uint64_t start, uint64_t end)
{
    if (end - start < SAL_HOLE_MIN_BYTES || l->oom)
        return;
    if (l->len == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 256;
        sal_hole *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = 1; /* the holes found so far are still right */
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->len++] = (sal_hole){(uint32_t)start, (uint32_t)end};
}

typedef struct swept {
    uint64_t off, next;
    uint32_t index; /* 0: padding */
} swept;

/* Walk [0, used) of a full segment nobody writes and list its holes.  A
 * header that makes no sense ends the walk: the rest counts as live. */
static void sweep(sal_heap *h, uint64_t seg, uint64_t used, hole_list *out)
{
    uint64_t seg_start = sal_segment_start(h, seg);
    const char *base = h->base + seg_start;
    uint64_t hwm = atomic_load(&h->ids_high_water);
    uint64_t max_size = sal_max_object_bytes(h);
    uint64_t run = UINT64_MAX; /* start of the dead run being extended */
    uint64_t off = 0;
    int stop = 0;
    swept batch[SWEEP_BATCH];
    while (off < used && !stop) {
        unsigned n = 0;
        while (n < SWEEP_BATCH && off + 8 <= used) {
            uint64_t word = *(const uint64_t *)(base + off);
            uint64_t next = sal_padding_end(off, word);
            uint32_t index = 0;
            if (!next) {
                /* A whole header below `used` before reading it: the last
                 * segment of the file may end right after the word read. */
                if (off + sizeof(sal_object_header) > used) {
                    stop = 1;
                    break;
                }
                const sal_object_header *hdr = (const sal_object_header *)(base + off);
                uint64_t span = sal_object_span(hdr->size_bytes);
                index = sal_id_index(hdr->id);
                if (index == 0 || index >= hwm || (hdr->id >> 56) ||
                    hdr->size_bytes > max_size || span > used - off) {
                    stop = 1;
                    break;
                }
                next = off + span;
                __builtin_prefetch(&h->table[index]);
            }
            batch[n++] = (swept){off, next < used ? next : used, index};
            off = next < used ? next : used;
        }
        for (unsigned i = 0; i < n; i++) {
            int dead = 1;
            if (batch[i].index) {
                uint64_t e = atomic_load_explicit(&h->table[batch[i].index],
                                                  memory_order_acquire);
                dead = (e & SAL_ENTRY_FREE) ||
                       sal_entry_loc(e) != ((seg_start + batch[i].off) >> 3);
            }
            if (dead && run == UINT64_MAX) {
                run = batch[i].off;
            } else if (!dead && run != UINT64_MAX) {
                hole_push(out, run, batch[i].off);
                run = UINT64_MAX;
            }
        }
    }
    if (run != UINT64_MAX)
        hole_push(out, run, off);
}

void sal_recycle_queue(sal_heap *h, uint64_t seg)
{
    sal_segment *g = &h->segments[seg];
    if (atomic_load(&g->state) != SEG_FULL || atomic_load(&g->protect_mark) != 0)
        return;
    pthread_mutex_lock(&h->seg_lock);
    if (!g->sparse_queued) {
        g->sparse_queued = 1;
        h->sparse_segs[h->sparse_len++] = (uint32_t)seg;
        pthread_cond_broadcast(&h->seg_cond);
    }
    pthread_mutex_unlock(&h->seg_lock);
}

/* The queued segment with the smallest live share: its holes are the
 * largest.  Removes it from the queue. */
static uint32_t sparsest_locked(sal_heap *h)
{
    size_t best = 0;
    uint64_t best_share = UINT64_MAX;
    for (size_t i = 0; i < h->sparse_len; i++) {
        const sal_segment *g = &h->segments[h->sparse_segs[i]];
        int64_t live = atomic_load(&g->live_bytes);
        uint64_t used = atomic_load(&g->used_bytes);
        uint64_t share = used ? (uint64_t)(live > 0 ? live : 0) * 1024 / used : 0;
        if (share < best_share) {
            best_share = share;
            best = i;
        }
    }
    uint32_t seg = h->sparse_segs[best];
    h->sparse_segs[best] = h->sparse_segs[--h->sparse_len];
    h->segments[seg].sparse_queued = 0;
    return seg;
}

/* Recyclable segments with a hole of `span` bytes or more. */
static size_t recyclable_holding_locked(const sal_heap *h, uint64_t span)
{
    size_t n = 0;
    for (size_t i = 0; i < h->recyclable_len; i++)
        n += h->segments[h->recyclable_segs[i]].hole_max >= span;
    return n;
}

int sal_recycle_sweep_one(sal_heap *h)
{
    /* Enough swept segments are waiting, counting only those whose holes
     * hold what sessions last asked for: segments of holes too short for
     * it would otherwise fill the places and stop the sweeping for good. */
    if (h->sparse_len == 0 ||
        recyclable_holding_locked(h, h->recycle_span_wanted) >= SAL_RECYCLE_READY)
        return 0;
    uint32_t seg = sparsest_locked(h);
    sal_segment *g = &h->segments[seg];
    uint64_t used = atomic_load(&g->used_bytes);
    int64_t live = atomic_load(&g->live_bytes);
    int expected = SEG_FULL;
    if (atomic_load(&g->protect_mark) != 0 || live <= 0 || (uint64_t)live * 2 >= used ||
        !atomic_compare_exchange_strong(&g->state, &expected, SEG_SWEEPING))
        return 1; /* committed, emptied or refilled meanwhile */

    pthread_mutex_unlock(&h->seg_lock);
    hole_list holes = {0};
    sweep(h, seg, used, &holes);
    pthread_mutex_lock(&h->seg_lock);

    if (holes.len == 0 || atomic_load(&g->protect_mark) != 0 ||
        atomic_load(&g->live_bytes) <= 0) {
        /* Nothing worth reusing, a cut covered it during the walk, or its
         * last object died meanwhile (then it goes to the free pool). */
        free(holes.v);
        sal_recycle_forget_locked(h, seg);
        return 1;
    }
    g->holes = holes.v;
    g->nholes = holes.len;
    g->hole_max = 0;
    for (uint32_t i = 0; i < holes.len; i++)
        if (holes.v[i].end - holes.v[i].start > g->hole_max)
            g->hole_max = holes.v[i].end - holes.v[i].start;
    /* Sections open now may still see the dead objects just listed. */
    g->recycle_epoch = atomic_fetch_add(&h->section_epoch, 1);
    atomic_store(&g->state, SEG_RECYCLABLE);
    h->recyclable_segs[h->recyclable_len++] = seg;
    return 1;
}

void sal_recycle_emptied(sal_heap *h, uint64_t seg)
{
    pthread_mutex_lock(&h->seg_lock);
    if (atomic_load(&h->segments[seg].state) == SEG_RECYCLABLE) {
        for (size_t i = 0; i < h->recyclable_len; i++)
            if (h->recyclable_segs[i] == seg) {
                h->recyclable_segs[i] = h->recyclable_segs[--h->recyclable_len];
                break;
            }
        sal_recycle_forget_locked(h, seg);
    }
    pthread_mutex_unlock(&h->seg_lock);
}

void sal_hole_close(sal_session *s)
{
    /* An untouched hole still holds its dead objects, which a walk steps
     * over; a used one is padded from the bump pointer to its end. */
    if (!s->holes || s->bump == s->hole_start || s->bump >= s->arena_end)
        return;
    *(uint64_t *)s->bump = sal_pad_word((uint64_t)(s->arena_end - s->bump));
}

int sal_hole_advance(sal_session *s, uint64_t span)
{
    sal_heap *h = s->heap;
    char *seg_base = h->base + sal_segment_start(h, (uint64_t)s->arena_segment);
    sal_hole_close(s);
    while (s->hole_next < s->nholes) {
        const sal_hole *next = &s->holes[s->hole_next++];
        char *start = seg_base + next->start;
        /* Live objects and padding between holes are not this session's. */
        s->arena_skipped += start - s->bump;
        s->bump = s->hole_start = start;
        s->arena_end = seg_base + next->end;
        if (span <= (uint64_t)(next->end - next->start))
            return 1;
    }
    return 0;
}

int sal_recycle_take(sal_session *s, uint64_t span)
{
    sal_heap *h = s->heap;
    for (;;) {
        uint32_t seg = UINT32_MAX;
        pthread_mutex_lock(&h->seg_lock);
        int have_oldest = 0, skipped_short = 0;
        uint64_t oldest = 0;
        for (size_t i = h->recyclable_len; i-- > 0;) {
            uint32_t cand = h->recyclable_segs[i];
            sal_segment *g = &h->segments[cand];
            if (atomic_load(&g->protect_mark) != 0 || atomic_load(&g->live_bytes) <= 0) {
                /* A cut covered it (no reuse), or everything in it died
                 * since the walk: it goes back to full, and from there to
                 * the free pool as a whole when empty. */
                h->recyclable_segs[i] = h->recyclable_segs[--h->recyclable_len];
                sal_recycle_forget_locked(h, cand);
                continue;
            }
            /* No hole holds `span`: left for smaller objects.  (Taken and
             * given back, it was queued and swept again at once, and a
             * session could go round with the provider many times.) */
            if (g->hole_max < span) {
                skipped_short = 1;
                continue;
            }
            if (!have_oldest) {
                oldest = sal_oldest_section_epoch_except(h, s->section);
                have_oldest = 1;
            }
            if (oldest != 0 && oldest <= g->recycle_epoch)
                continue; /* another section may still see its dead objects */
            h->recyclable_segs[i] = h->recyclable_segs[--h->recyclable_len];
            seg = cand;
            break;
        }
        if (seg != UINT32_MAX) {
            sal_segment *g = &h->segments[seg];
            s->holes = g->holes;
            s->nholes = g->nholes;
            g->holes = NULL;
            g->nholes = 0;
            atomic_store(&g->state, SEG_ACTIVE);
            h->recycle_span_wanted = 0;
            pthread_cond_broadcast(&h->seg_cond); /* the provider sweeps on */
        } else if (skipped_short && h->recycle_span_wanted != span) {
            /* Holes too short for us: the provider sweeps more segments. */
            h->recycle_span_wanted = span;
            pthread_cond_broadcast(&h->seg_cond);
        }
        pthread_mutex_unlock(&h->seg_lock);
        if (seg == UINT32_MAX)
            return 0;

        sal_segment *g = &h->segments[seg];
        char *first = h->base + sal_segment_start(h, seg) + s->holes[0].start;
        s->arena_segment = (int64_t)seg;
        s->arena_used = atomic_load(&g->used_bytes);
        s->hole_next = 0;
        s->arena_start = s->bump = s->hole_start = s->arena_end = first;
        s->arena_skipped = 0;
        if (sal_hole_advance(s, span)) {
            atomic_fetch_add(&h->segments_recycled, 1);
            return 1;
        }
        sal_session_arena_release(s, 0); /* no hole holds `span` */
    }
}
