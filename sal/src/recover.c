/*
 * recover.c - rebuild the object table from the last commit after an
 * unclean stop.
 *
 * What can be trusted after a crash is the commit slot that open picked,
 * its copy of the segment table, and the committed ranges [0, used_bytes)
 * of the segments that copy lists: committed objects are never written in
 * place, and their bytes are not reused before a later commit (crash rules
 * 1 and 2).  The object table's counts cannot be trusted, and its
 * locations only in the boot that wrote them:
 *
 *  - after a killed process (same boot: the page cache survived) every
 *    entry still locates its object: ids released after the commit keep
 *    their location in the free entry and are not reused before the next
 *    commit (crash rule 2), so the table only needs recounting;
 *  - after a reboot (a power loss) the table's pages on disk are a mix of
 *    any ages, so the locations are rebuilt from the committed segments.
 *
 * In passes, with no recursion and no memory beyond a worklist:
 *
 *  1. Forget: every entry below the high-water mark becomes free.  After a
 *     kill it keeps its location; after a reboot only a free entry's
 *     generation is kept.
 *  2. Sweep (after a reboot only): walk every committed range in address
 *     order, header by header, and record in each header's entry its
 *     location (the newest generation wins: an older one is a dead object
 *     whose entry was reused).
 *  3. Mark and count: from the committed roots, follow child ids with a
 *     worklist.  A reference is good if its entry locates, inside a
 *     committed range, a header carrying exactly that id.  The first good
 *     reference marks the object live with count 1, every further one adds
 *     1; a bad one is counted as dangling.
 *
 * Entries left free are the ids nothing committed reaches: cycles included,
 * which counting alone could never free.  Segments get their live bytes
 * recounted; a segment with none left is free.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "os.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sweep one committed range; returns the number of damaged headers (the
 * rest of the segment after one is skipped: its layout is lost). */
static uint64_t sweep_segment(sal_heap *h, _Atomic uint64_t *table, uint64_t seg,
                              uint64_t used, uint64_t hwm, uint64_t *headers)
{
    uint64_t start = sal_segment_start(h, seg);
    uint64_t max_size = sal_max_object_bytes(h);
    uint64_t off = 0;
    while (off < used) {
        const sal_object_header *hdr = (const sal_object_header *)(h->base + start + off);
        uint64_t next = sal_padding_end(off, hdr->id);
        if (next) {
            /* Padding: left by a commit's cut (the rest of the page), or
             * the unused end of a reused hole (recycle.c), which must end
             * inside the range. */
            if (hdr->id != SAL_NULL_ID && next > used)
                return 1;
            off = next;
            continue;
        }
        /* A tail too short for a header is damage (no commit leaves one:
         * objects and padding cover the range), as sal-gc's check says. */
        if (off + sizeof(sal_object_header) > used)
            return 1;
        uint32_t idx = sal_id_index(hdr->id);
        uint64_t span = sal_object_span(hdr->size_bytes);
        if (idx == 0 || idx >= hwm || (hdr->id >> 56) || hdr->size_bytes > max_size ||
            (uint64_t)hdr->nrefs * 8 > hdr->size_bytes || off + span > used)
            return 1;
        uint64_t e = atomic_load_explicit(&table[idx], memory_order_relaxed);
        uint32_t gen = sal_id_gen(hdr->id);
        if (sal_entry_loc(e) == 0 || sal_gen_newer(gen, sal_entry_gen(e)) || gen == sal_entry_gen(e))
            atomic_store_explicit(&table[idx],
                                  sal_entry_make_free((start + off) >> 3, gen),
                                  memory_order_relaxed);
        (*headers)++;
        off += span;
    }
    return 0;
}

typedef struct marker {
    sal_heap *h;
    const sal_segment_record *rec;
    uint64_t nseg;
    uint64_t hwm;
    sal_id_vec stack;
    int64_t *seg_live;
    sal_recovery_report *rep;
    _Atomic uint64_t *table;     /* the table being rebuilt */
    /* The table as it was (sweep mode: the heap's, untouched until the
     * end), or NULL. */
    const _Atomic uint64_t *old_entries;
    uint64_t was_live_left;      /* WAS_LIVE entries not marked yet */
    int oom;
} marker;

/* Does `off` hold, inside a committed range, the header of exactly `id`?
 * Returns its segment, or UINT64_MAX. */
static uint64_t locate(const marker *m, uint64_t off, sal_id id)
{
    sal_heap *h = m->h;
    uint64_t seg = off >= h->data_offset ? sal_segment_of(h, off) : UINT64_MAX;
    if (seg >= m->nseg || m->rec[seg].state != SAL_SEGREC_USED ||
        off - sal_segment_start(h, seg) + sizeof(sal_object_header) > m->rec[seg].used_bytes)
        return UINT64_MAX;
    const sal_object_header *hdr = (const sal_object_header *)(h->base + off);
    if (hdr->id != id ||
        off - sal_segment_start(h, seg) + sal_object_span(hdr->size_bytes) >
            m->rec[seg].used_bytes ||
        (uint64_t)hdr->nrefs * 8 > hdr->size_bytes)
        return UINT64_MAX;
    return seg;
}

SAL_TEST_HOOK(recover_hook, int)

/* In a same-boot recovery, a live entry is forgotten as a free one that
 * keeps its location and this mark (bit 38, zero outside a recovery: the
 * format reserves it), until the marking makes it live again or the last
 * pass gives it its generation back.  Kept in the table, not in memory, so
 * that a recovery killed part-way leaves the next one knowing which
 * entries were live. */
#define WAS_LIVE SAL_ENTRY_ACCESSED

/* The mark the id refill kept in entry 0 (alloc.c), if it is above
 * the committed one, inside the table, and ids below it were handed out
 * (else 0). */
static uint64_t lost_high_water(const sal_heap *h)
{
    uint64_t noted = atomic_load_explicit(&h->table[0], memory_order_relaxed);
    uint64_t hwm = h->committed.ids_high_water;
    if (noted <= hwm || noted > h->max_objects)
        return 0;
    /* An id handed out leaves its entry nonzero for good (live, or free
     * with its generation).  A session takes ids only once it has used
     * all it held, and a fresh batch only when the heap's free list is
     * empty, so at most one unused fresh batch per open session: if every
     * entry of the last SAL_MAX_SESSIONS + 1 batches is zero, no id above
     * the committed mark was handed out, or the mark is a stray value (a
     * stray write into the mapping) that would make every later open
     * carry a table that large.  Either way it is not used. */
    uint64_t window = (uint64_t)(SAL_MAX_SESSIONS + 1) * SAL_ID_BATCH;
    uint64_t from = noted - hwm > window ? noted - window : hwm;
    for (uint64_t i = noted; i-- > from;)
        if (atomic_load_explicit(&h->table[i], memory_order_relaxed) != 0)
            return noted;
    return 0;
}

static int entry_was_live(uint64_t e)
{
    return (e & SAL_ENTRY_FREE) ? (e & WAS_LIVE) != 0 : e != 0;
}

/* Free entry `e` of `index`, whose object lived at `loc` before the
 * recovery and which nothing committed reaches: the generation of the
 * header there if that header is still its own and newer, so that the
 * next id for the entry is newer than an id handed out after the last
 * commit.  The header may lie past the committed length (an object of the
 * lost future, in a segment taken after the last commit), not past
 * `file_bytes`. */
static uint64_t generation_from_header(const sal_heap *h, uint64_t index, uint64_t e,
                                       uint64_t loc, uint64_t file_bytes)
{
    uint64_t off = loc << 3;
    if (off < h->data_offset || off + sizeof(sal_object_header) > file_bytes)
        return e;
    const sal_object_header *hdr = (const sal_object_header *)(h->base + off);
    if (sal_id_index(hdr->id) == index && (hdr->id >> 56) == 0 &&
        sal_gen_newer(sal_id_gen(hdr->id), sal_entry_gen(e)))
        return sal_entry_make_free(sal_entry_loc(e), sal_id_gen(hdr->id));
    return e;
}

/* Same boot: entry `index` was live before the recovery (WAS_LIVE) and the
 * marking left it free. */
static void restore_generation(sal_heap *h, uint64_t index, uint64_t file_bytes)
{
    uint64_t e = atomic_load_explicit(&h->table[index], memory_order_relaxed);
    if (!(e & SAL_ENTRY_FREE) || !(e & WAS_LIVE))
        return;
    e &= ~WAS_LIVE;
    atomic_store_explicit(&h->table[index],
                          generation_from_header(h, index, e, sal_entry_loc(e), file_bytes),
                          memory_order_relaxed);
}

/* One reference to `id` from a live parent or a root.  Returns 1 if the
 * reference names a committed object (counted), 0 if it dangles. */
static int mark_ref(marker *m, sal_id id)
{
    sal_heap *h = m->h;
    uint32_t idx = sal_id_index(id);
    if (idx == 0 || idx >= m->hwm || (id >> 56)) {
        m->rep->dangling_refs++;
        return 0;
    }
    _Atomic uint64_t *slot = &m->table[idx];
    uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
    if (!(e & SAL_ENTRY_FREE)) {
        /* Already marked: one more reference, if it names that object and
         * not another generation of its entry (then it dangles). */
        const sal_object_header *marked =
            (const sal_object_header *)(h->base + (sal_entry_loc(e) << 3));
        if (marked->id != id) {
            m->rep->dangling_refs++;
            return 0;
        }
        if (sal_entry_rc(e) < SAL_ENTRY_RC_MAX)
            atomic_store_explicit(slot, e + SAL_ENTRY_RC_ONE, memory_order_relaxed);
        return 1;
    }
    /* The entry must locate, inside a committed range, this very object.
     * After a sweep, an object the sweep could not reach (behind a damaged
     * header) is still found where the old table located it, if the
     * header there carries exactly this id. */
    uint64_t off = sal_entry_loc(e) << 3;
    uint64_t seg = locate(m, off, id);
    if (seg == UINT64_MAX && m->old_entries) {
        /* A live entry, or one a same-boot recovery killed part-way left
         * WAS_LIVE: it was live too, its location kept. */
        uint64_t old = atomic_load_explicit(&m->old_entries[idx], memory_order_relaxed);
        if ((!(old & SAL_ENTRY_FREE) && sal_entry_rc(old) != 0) ||
            ((old & SAL_ENTRY_FREE) && (old & WAS_LIVE))) {
            off = sal_entry_loc(old) << 3;
            seg = locate(m, off, id);
            if (seg != UINT64_MAX)
                m->rep->located_by_table++;
        }
    }
    if (seg == UINT64_MAX) {
        m->rep->dangling_refs++;
        return 0;
    }
    const sal_object_header *hdr = (const sal_object_header *)(h->base + off);
    uint64_t loc = off >> 3;
    m->was_live_left -= (e & WAS_LIVE) != 0;
    atomic_store_explicit(slot, loc | SAL_ENTRY_RC_ONE, memory_order_relaxed);
    uint64_t span = sal_object_span(hdr->size_bytes);
    m->seg_live[seg] += (int64_t)span;
    m->rep->objects_live++;
    m->rep->bytes_live += span;
    if (hdr->nrefs > 0 && sal_id_vec_push(&m->stack, id) != 0)
        m->oom = 1;
    return 1;
}

/* Recovery failed after it forgot the table (out of memory for its
 * worklist): put the table back as the next open needs it, since a repair
 * of a cleanly closed heap leaves its slot saying clean, and the next open
 * would trust a table whose every entry is free.  In sweep mode the old
 * entries were kept whole.  In the same boot (a killed process: the slot
 * is unclean and the next open recovers again) the forget kept each
 * entry's location: the live ones are live again, with a count of one
 * that the next recovery recounts. */
static void undo_forget(_Atomic uint64_t *table, uint64_t hwm)
{
    for (uint64_t i = 1; i < hwm; i++) {
        uint64_t e = atomic_load_explicit(&table[i], memory_order_relaxed);
        if ((e & SAL_ENTRY_FREE) && (e & WAS_LIVE))
            atomic_store_explicit(&table[i], sal_entry_loc(e) | SAL_ENTRY_RC_ONE,
                                  memory_order_relaxed);
    }
}

int sal_recover(sal_heap *h, sal_segment_record *rec, int same_boot,
                sal_recovery_report *rep)
{
    double t0 = now_seconds();
    memset(rep, 0, sizeof *rep);
    uint64_t hwm = h->committed.ids_high_water;
    uint64_t nseg = h->committed.segments_high_water;
    /* The ids the stopped process handed out after its last commit, past
     * the committed mark too (entry 0 kept how far it went), are taken into
     * the table, their generations kept: a program may have kept such an
     * id, and it must be stale from now on, not name a new object.  In the
     * same boot the table is exact (the page cache survived); after a
     * reboot its pages are of any age, the mark too, and such ids may come
     * back (sal.h, Caveats). */
    uint64_t lost_hwm = lost_high_water(h);
    uint64_t file_bytes;
    int err = lost_hwm && !h->readonly ? sal_table_ensure(h, lost_hwm - 1) : 0;
    if (!err)
        err = sal_os_file_size(h->fd, &file_bytes);
    if (err)
        return err;
    /* Only the data region, inside the mapping: a file made longer than
     * the reservation (nothing the library does) would let a damaged
     * location past it (open bounds a slot's file_bytes the same way). */
    uint64_t data_end = h->data_offset + h->segment_count * h->segment_bytes;
    if (file_bytes > data_end)
        file_bytes = data_end;
    if (lost_hwm)
        hwm = lost_hwm;

    /* In sweep mode the new table is built apart and written over the
     * heap's at the end, which stays as it was until then: free entries'
     * generations (an id must never come back with an older one) and live
     * entries' locations (a fallback the header check validates) are read
     * there.  A repair killed before the end (the table is the file's,
     * shared) left every entry free at location 0: the slot of a clean heap
     * still said clean, and the next open lost every committed object; of
     * an unclean one the next same-boot recovery trusted those locations
     * and cleared the roots (killed_repair_of_clean_heap, _unclean_). */
    _Atomic uint64_t *work = NULL;
    if (!same_boot && !(work = calloc(hwm, sizeof *work)))
        return SAL_ENOMEM;
    _Atomic uint64_t *table = work ? work : h->table;
    const _Atomic uint64_t *old_entries = work ? h->table : NULL;
    /* Allocated before the table is touched: see undo_forget. */
    int64_t *seg_live = calloc(nseg ? nseg : 1, sizeof *seg_live);
    if (!seg_live) {
        free(work);
        return SAL_ENOMEM;
    }

    /* 1. Forget.  In the same boot, the entries that were live are marked
     * (WAS_LIVE): those the marking leaves free get their generation back
     * from the header they located (a live entry holds none), so that no
     * id comes back older than a header that may still be on the disk, or
     * than an id of the lost future. */
    uint64_t was_live = 0;
    for (uint64_t i = 1; i < hwm; i++) {
        uint64_t e = atomic_load_explicit(&h->table[i], memory_order_relaxed);
        uint32_t gen = 0;
        if ((e & SAL_ENTRY_FREE) && !(e & WAS_LIVE))
            gen = sal_entry_gen(e);
        else if (sal_entry_rc(e) != 0)
            rep->ids_live_before++;
        uint64_t forgotten = sal_entry_make_free(same_boot ? sal_entry_loc(e) : 0, gen);
        if (same_boot && entry_was_live(e)) {
            forgotten |= WAS_LIVE;
            was_live++;
        }
        atomic_store_explicit(&table[i], forgotten, memory_order_relaxed);
    }
    recover_hook_run(SAL_TEST_RECOVER_FORGOTTEN);

    /* 2. Sweep, in address order, when the locations are not to be trusted. */
    rep->swept = !same_boot;
    for (uint64_t s = 0; !same_boot && s < nseg; s++)
        if (rec[s].state == SAL_SEGREC_USED)
            rep->damaged_headers += sweep_segment(h, table, s, rec[s].used_bytes, hwm,
                                                  &rep->headers_swept);

    /* 3. Mark and count from the roots. */
    marker m = {.h = h, .rec = rec, .nseg = nseg, .hwm = hwm, .rep = rep, .table = table,
                .old_entries = old_entries, .seg_live = seg_live, .was_live_left = was_live};
    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++) {
        sal_id root = h->committed.roots[r];
        if (root != SAL_NULL_ID && !mark_ref(&m, root)) {
            /* The root names nothing that was committed: empty it rather
             * than leave a heap that points nowhere. */
            h->committed.roots[r] = SAL_NULL_ID;
            rep->roots_cleared++;
        }
    }
    while (m.stack.len > 0 && !m.oom) {
        sal_id id = m.stack.ids[--m.stack.len];
        uint64_t e = atomic_load_explicit(&table[sal_id_index(id)], memory_order_relaxed);
        const sal_object_header *hdr =
            (const sal_object_header *)(h->base + (sal_entry_loc(e) << 3));
        const sal_id *child = (const sal_id *)(hdr + 1);
        for (unsigned i = 0; i < hdr->nrefs; i++)
            if (child[i] != SAL_NULL_ID)
                (void)mark_ref(&m, child[i]);
    }
    sal_id_vec_free(&m.stack);
    if (m.oom) {
        if (!work)
            undo_forget(table, hwm);
        free(m.seg_live);
        free(work);
        return SAL_ENOMEM;
    }
    /* Sweep mode: entries left free keep the newer of the remembered and
     * swept generations, and one that was live in the old table the
     * generation of the header it located, if that header is its own (the
     * old table may be of any age after a reboot: a generation only ever
     * goes up, so a stale location at worst gives nothing). */
    for (uint64_t i = 1; old_entries && i < hwm; i++) {
        uint64_t e = atomic_load_explicit(&table[i], memory_order_relaxed);
        uint64_t old = atomic_load_explicit(&old_entries[i], memory_order_relaxed);
        if (!(e & SAL_ENTRY_FREE))
            continue;
        uint64_t kept = e;
        if ((old & SAL_ENTRY_FREE) && !(old & WAS_LIVE)) {
            if (sal_gen_newer(sal_entry_gen(old), sal_entry_gen(e)))
                kept = sal_entry_make_free(sal_entry_loc(e), sal_entry_gen(old));
        } else if (old != 0) {
            kept = generation_from_header(h, i, e, sal_entry_loc(old), file_bytes);
        }
        if (kept != e)
            atomic_store_explicit(&table[i], kept, memory_order_relaxed);
    }
    /* The new table over the heap's.  Killed while this runs, the heap
     * holds old entries and new ones, each locating the same committed
     * object (the repair of a clean heap is then partial; an unclean heap
     * is recovered again). */
    for (uint64_t i = 1; work && i < hwm; i++)
        atomic_store_explicit(&h->table[i], atomic_load_explicit(&work[i], memory_order_relaxed),
                              memory_order_relaxed);
    free(work);
    /* The entries that were live and that nothing committed reaches (none
     * after a kill between commits of a program that only grows). */
    for (uint64_t i = 1; m.was_live_left && i < hwm; i++)
        restore_generation(h, i, file_bytes);

    /* Segments: live bytes recounted; empty ones are free. */
    for (uint64_t s = 0; s < nseg; s++) {
        if (m.seg_live[s] > 0) {
            rec[s].state = SAL_SEGREC_USED;
            rec[s].live_bytes = (uint64_t)m.seg_live[s];
        } else {
            memset(&rec[s], 0, sizeof rec[s]);
        }
    }
    free(m.seg_live);
    if (lost_hwm)
        h->committed.ids_high_water = lost_hwm;
    rep->recovered = 1;
    rep->seconds = now_seconds() - t0;
    return 0;
}
