/*
 * object.c - resolving ids, reference counts, and freeing what dies.
 *
 * Resolution checks, in this order: the id is well formed and below the
 * table's high-water mark (else SAL_EBADID); its entry has a nonzero count
 * (else SAL_ESTALE, or SAL_EBADID for a generation the entry has not
 * handed out yet: sal_gen_unissued); the entry's location lies inside the
 * file's data region (else SAL_ECORRUPT); and the header there carries
 * exactly this id, generation included (else, with the same index,
 * SAL_ESTALE: the entry now names a newer object, or SAL_EBADID for an
 * unissued generation; SAL_ECORRUPT if it carries another index).
 *
 * Freeing is iterative: a dying object's children are released one by one,
 * and those that die too are pushed on the session's worklist, so a chain
 * of any length is freed with constant stack.
 */
#include <string.h>

#include "internal.h"

int sal_object_committed(const sal_heap *h, uint64_t offset)
{
    return sal_committed_in(h, sal_segment_of(h, offset), offset);
}

/* The read and release paths run these per object: they are inlined, so
 * that a loop over random objects keeps several misses in flight (a call
 * chain of 280 instructions per release let one miss out at a time;
 * docs/benchmarks.md, W1). */
#define SAL_HOT static inline __attribute__((always_inline))

SAL_HOT int id_check(const sal_heap *h, sal_id id)
{
    uint32_t idx = sal_id_index(id);
    if (idx == 0 || (id >> 56) != 0 ||
        idx >= atomic_load_explicit(&h->ids_high_water, memory_order_relaxed))
        return SAL_EBADID;
    return 0;
}

/* Header of the object an entry points at, or NULL if the location is not
 * inside the data region (damage). */
SAL_HOT sal_object_header *entry_header(sal_heap *h, uint64_t e)
{
    uint64_t off = sal_entry_loc(e) << 3;
    if (off < h->data_offset ||
        off + sizeof(sal_object_header) >
            atomic_load_explicit(&h->file_bytes, memory_order_relaxed))
        return NULL;
    return (sal_object_header *)(h->base + off);
}

SAL_HOT int resolve(sal_heap *h, sal_id id, uint64_t *entry_out, sal_object_header **hdr_out)
{
    int err = id_check(h, id);
    if (err)
        return err;
    uint64_t e = atomic_load_explicit(&h->table[sal_id_index(id)], memory_order_acquire);
    if (sal_entry_rc(e) == 0) {
        /* Never used; released (a free entry keeps the generation of its
         * last id, a dying one is about to); or a generation the entry
         * has not handed out yet. */
        if (e == 0 ||
            ((e & SAL_ENTRY_FREE) && sal_gen_unissued(sal_id_gen(id), sal_entry_gen(e))))
            return SAL_EBADID;
        return SAL_ESTALE;
    }
    sal_object_header *hdr = entry_header(h, e);
    if (!hdr)
        return SAL_ECORRUPT;
    if (hdr->id != id) {
        /* Same entry, other generation: the id was released and its entry
         * reused, or (newer) was never handed out.  Another entry's
         * object, or no header at all: damage. */
        if (sal_id_index(hdr->id) != sal_id_index(id))
            return SAL_ECORRUPT;
        return sal_gen_unissued(sal_id_gen(id), sal_id_gen(hdr->id)) ? SAL_EBADID : SAL_ESTALE;
    }
    /* The object must fit its segment: a damaged size never sends a reader
     * past the end of the file. */
    uint64_t off = sal_entry_loc(e) << 3;
    uint64_t rel = off - sal_segment_start(h, sal_segment_of(h, off));
    if (__builtin_expect(rel + sal_object_span(hdr->size_bytes) > h->segment_bytes ||
                             (uint64_t)hdr->nrefs * 8 > hdr->size_bytes,
                         0))
        return SAL_ECORRUPT;
    *entry_out = e;
    *hdr_out = hdr;
    return 0;
}

int sal_resolve(sal_heap *h, sal_id id, uint64_t *entry_out, sal_object_header **hdr_out)
{
    return resolve(h, id, entry_out, hdr_out);
}

int sal_read(sal_session *s, sal_id id, const void **ptr_out)
{
    int err = sal_session_check(s);
    if (__builtin_expect(err != 0, 0))
        return err;
    if (__builtin_expect(!ptr_out, 0))
        return SAL_EINVAL;
    if (__builtin_expect(!s->read_depth && !s->write_token, 0))
        return SAL_ENOSECTION;
    uint64_t e;
    sal_object_header *hdr;
    if ((err = resolve(s->heap, id, &e, &hdr)))
        return err;
    *ptr_out = hdr + 1;
    return 0;
}

int sal_info(sal_session *s, sal_id id, sal_object_info *out)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (!out)
        return SAL_EINVAL;
    uint64_t e;
    sal_object_header *hdr;
    if ((err = resolve(s->heap, id, &e, &hdr)))
        return err;
    out->size_bytes = hdr->size_bytes;
    out->nrefs = hdr->nrefs;
    out->type = hdr->type;
    out->refcount = (uint32_t)sal_entry_rc(e);
    out->committed = sal_object_committed(s->heap, sal_heap_offset(s->heap, hdr));
    return 0;
}

/* Add one count to the entry of `id`, resolved to (e, hdr). */
SAL_HOT int retain_resolved(sal_heap *h, sal_id id, uint64_t e, sal_object_header *hdr)
{
    _Atomic uint64_t *slot = &h->table[sal_id_index(id)];
    for (;;) {
        if (sal_entry_rc(e) == SAL_ENTRY_RC_MAX)
            return 0; /* saturated: stays, recovery recounts */
        if (atomic_compare_exchange_weak_explicit(slot, &e, e + SAL_ENTRY_RC_ONE,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return 0;
        if (sal_entry_rc(e) == 0)
            return SAL_ESTALE;
        int err;
        if (sal_entry_loc(e) != sal_heap_offset(h, hdr) >> 3 &&
            (err = resolve(h, id, &e, &hdr)))
            return err;
    }
}

int sal_retain_internal(sal_heap *h, sal_id id)
{
    uint64_t e;
    sal_object_header *hdr;
    int err = resolve(h, id, &e, &hdr);
    return err ? err : retain_resolved(h, id, e, hdr);
}

SAL_TEST_HOOK(retain_unheld_hook, sal_id)

int sal_retain_unheld(sal_session *s, sal_id id)
{
    sal_heap *h = s->heap;
    uint64_t e;
    sal_object_header *hdr;
    int err = resolve(h, id, &e, &hdr);
    if (err)
        return err;
    retain_unheld_hook_run(id); /* test builds: between the check and the count */
    if ((err = retain_resolved(h, id, e, hdr)))
        return err;
    /* Holding no reference, we may have seen the object die, and its entry
     * and its block be reused by a new object, between the check and the
     * increment: same entry value, another id.  Then the count we added is
     * the new object's: give it back. */
    e = atomic_load_explicit(&h->table[sal_id_index(id)], memory_order_acquire);
    hdr = (sal_object_header *)(h->base + (sal_entry_loc(e) << 3));
    if (__builtin_expect(hdr->id != id, 0)) {
        if (sal_id_index(hdr->id) == sal_id_index(id))
            (void)sal_release_internal(s, hdr->id);
        return SAL_ESTALE;
    }
    return 0;
}

/* Drop one count of an entry known to be live.  Returns 1 if it reached
 * zero (the caller now owns the dying object, whose header is *hdr_out),
 * 0 if not, or an error. */
SAL_HOT int entry_decrement(sal_heap *h, sal_id id, sal_object_header **hdr_out)
{
    uint64_t e;
    int err = resolve(h, id, &e, hdr_out);
    if (err)
        return err;
    _Atomic uint64_t *slot = &h->table[sal_id_index(id)];
    for (;;) {
        uint64_t rc = sal_entry_rc(e);
        if (rc == SAL_ENTRY_RC_MAX)
            return 0;
        if (rc == 0)
            return SAL_ESTALE;
        if (atomic_compare_exchange_weak_explicit(slot, &e, e - SAL_ENTRY_RC_ONE,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return rc == 1;
    }
}

/* Reclaim one dead object: its entry, its id, its bytes. */
SAL_HOT void object_reclaim(sal_session *s, sal_id id, sal_object_header *hdr)
{
    sal_heap *h = s->heap;
    uint64_t off = sal_heap_offset(h, hdr);
    uint64_t span = sal_object_span(hdr->size_bytes);
    uint64_t seg = sal_segment_of(h, off);
    int committed = sal_committed_in(h, seg, off);
    atomic_store_explicit(&h->table[sal_id_index(id)],
                          sal_entry_make_free(off >> 3, sal_id_gen(id)),
                          memory_order_release);
    sal_id_recycle(s, id, committed);
    atomic_store_explicit(&s->live_objects,
                          atomic_load_explicit(&s->live_objects, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->live_bytes,
                          atomic_load_explicit(&s->live_bytes, memory_order_relaxed) - (int64_t)span,
                          memory_order_relaxed);
    sal_segment_free_bytes(h, seg, span);
}

/* A dying object with children: they are released one by one, and those
 * that die too go on the session's worklist (constant stack). */
static __attribute__((noinline)) int object_die_tree(sal_session *s, sal_id id)
{
    sal_heap *h = s->heap;
    int result = 0;
    s->work.len = 0;
    if (sal_id_vec_push(&s->work, id)) {
        atomic_store(&h->counts_unsure, 1);
        return SAL_ENOMEM;
    }
    while (s->work.len > 0) {
        sal_id victim = s->work.ids[--s->work.len];
        uint64_t e = atomic_load_explicit(&h->table[sal_id_index(victim)],
                                          memory_order_acquire);
        sal_object_header *vh = entry_header(h, e);
        if (!vh) {
            result = SAL_ECORRUPT;
            continue;
        }
        const sal_id *child = (const sal_id *)(vh + 1);
        for (unsigned i = 0; i < vh->nrefs; i++) {
            if (child[i] == SAL_NULL_ID)
                continue;
            sal_object_header *ch;
            int died = entry_decrement(h, child[i], &ch);
            if (died == 1) {
                if (sal_id_vec_push(&s->work, child[i])) {
                    /* Left for recovery to free: the close says so. */
                    atomic_store(&h->counts_unsure, 1);
                    result = SAL_ENOMEM;
                }
            } else if (died < 0) {
                result = SAL_ECORRUPT; /* a dangling child id */
            }
        }
        object_reclaim(s, victim, vh);
    }
    return result;
}

/* An object whose count reached zero, at `hdr`: reclaimed at once when it
 * has no children to release (or they were taken over), else with its
 * tree. */
SAL_HOT int object_die(sal_session *s, sal_id id, sal_object_header *hdr, int keep_children)
{
    if (keep_children || hdr->nrefs == 0) {
        object_reclaim(s, id, hdr);
        return 0;
    }
    return object_die_tree(s, id);
}

int sal_object_die(sal_session *s, sal_id id, uint64_t entry, int keep_children)
{
    sal_object_header *hdr = entry_header(s->heap, entry);
    return hdr ? object_die(s, id, hdr, keep_children) : SAL_ECORRUPT;
}

SAL_HOT int release(sal_session *s, sal_id id)
{
    sal_object_header *hdr = NULL;
    int died = entry_decrement(s->heap, id, &hdr);
    return died <= 0 ? died : object_die(s, id, hdr, 0);
}

/* A reader never allocates: the ids of what died in its hands go to the
 * heap at once (a whole tree's in one go), not to a private stack where
 * allocating sessions would never find them (SAL_ENOIDS on a full table
 * with nothing alive). */
static void reader_ids_to_heap(sal_session *s)
{
    if (s->kind == SAL_KIND_READER && (s->free_len || s->pending_ids.len)) {
        sal_session_flush_ids(s);
        sal_pending_ids_handover(s);
    }
}

int sal_release_internal(sal_session *s, sal_id id)
{
    int err = release(s, id);
    reader_ids_to_heap(s); /* a reader's sal_root_get gives counts back */
    return err;
}

/* A read-only heap is mapped read-only and nothing in it can die, so
 * retain and release only check the id there. */
static int readonly_check(sal_heap *h, sal_id id)
{
    uint64_t e;
    sal_object_header *hdr;
    return resolve(h, id, &e, &hdr);
}

int sal_retain(sal_session *s, sal_id id)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->heap->readonly)
        return readonly_check(s->heap, id);
    return sal_retain_internal(s->heap, id);
}

int sal_release(sal_session *s, sal_id id)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->heap->readonly)
        return readonly_check(s->heap, id);
    err = release(s, id);
    reader_ids_to_heap(s);
    return err;
}
