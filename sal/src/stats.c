/* stats.c - a snapshot of the heap's counters.  Counters are read one by
 * one without a lock: each is exact, their sum may mix instants. */
#include <string.h>

#include "internal.h"

int sal_heap_stats_get(sal_heap *h, sal_heap_stats *out)
{
    if (!h || !out)
        return SAL_EINVAL;
    memset(out, 0, sizeof *out);
    out->file_bytes = atomic_load(&h->file_bytes);
    out->reserve_bytes = h->reserve_bytes;
    out->segment_bytes = h->segment_bytes;
    out->segments_total = h->segment_count;
    out->max_objects = h->max_objects - 1;
    out->ids_high_water = atomic_load(&h->ids_high_water) - 1;
    out->alloc_waits = atomic_load(&h->alloc_waits);
    out->sessions_open = atomic_load(&h->sessions_open);
    out->readers_open = atomic_load(&h->readers_open);
    out->section_epoch = atomic_load(&h->section_epoch);
    out->oldest_section_epoch = h->slots ? sal_oldest_section_epoch(h) : 0;
    out->commit_epoch = atomic_load(&h->commit_epoch);
    out->segments_recycled = atomic_load(&h->segments_recycled);

    pthread_mutex_lock(&h->pending_lock);
    out->ids_pending = h->pending_ids_len + atomic_load(&h->pending_ids_moving);
    pthread_mutex_unlock(&h->pending_lock);

    pthread_mutex_lock(&h->seg_lock);
    for (uint64_t i = 0; i < h->segments_high_water; i++) {
        int st = atomic_load(&h->segments[i].state);
        if (st == SEG_FREE || st == SEG_PENDING)
            out->segments_free++;
        else if (st == SEG_READY)
            out->segments_ready++;
        else if (st != SEG_UNUSED)
            out->segments_in_use++;
        if (st == SEG_RECYCLABLE)
            out->segments_recyclable++;
    }
    pthread_mutex_unlock(&h->seg_lock);

    /* Objects: counted at open, plus what sessions allocated minus what
     * they freed.  Open sessions' counters are read as they are. */
    int64_t objects = h->opened_live_objects + atomic_load(&h->closed_live_objects);
    int64_t live_bytes = h->opened_live_bytes + atomic_load(&h->closed_live_bytes);
    pthread_mutex_lock(&h->sessions_lock);
    for (unsigned i = 0; i < SAL_MAX_SESSIONS + SAL_MAX_READERS; i++) {
        sal_session *s = h->open_sessions[i];
        if (s) {
            objects += atomic_load_explicit(&s->live_objects, memory_order_relaxed);
            live_bytes += atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&h->sessions_lock);
    out->live_objects = objects > 0 ? (uint64_t)objects : 0;
    out->live_bytes = live_bytes > 0 ? (uint64_t)live_bytes : 0;
    return 0;
}
