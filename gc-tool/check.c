/*
 * check.c - the checker: what the committed state of a heap is, and how
 * the object table and the segment records differ from it.
 *
 * Truth is the current commit: its slot (roots, high-water marks), its
 * copy of the segment table, and the committed ranges [0, used_bytes) of
 * the used segments, which are never written in place.  The object table
 * and the records' live_bytes are derived state: on a heap that was closed
 * cleanly they must agree with the commit exactly; after an unclean stop
 * they legitimately differ, and recovery rebuilds them.
 *
 * Passes, none recursive, memory per id below the high-water mark only
 * (a packed sweep location, a true count, a status byte, a bit):
 *
 *  1. Walk: every used segment's committed range in address order, header
 *     by header (an id of 0 is padding to the next 4 KiB page).  For each
 *     index remember the location of its newest generation, as the
 *     library's repair sweep does.  A header that does not parse stops the
 *     walk of its segment (its layout is lost from there on).
 *  2. Table (clean heaps, and unclean ones in the boot that wrote them):
 *     every live entry must locate, inside a committed range, the header
 *     the walk found for its index.  Entries that do not are classified
 *     by where they point (outside the segments, padding, another
 *     object's header or bytes) with a second, merged walk over a sorted
 *     list of the suspects.
 *  3. Mark: from the committed roots with an explicit worklist, count the
 *     references to every object (true counts) and note references that
 *     name nothing.
 *  4. Compare the table's counts with the true counts; the records'
 *     live_bytes with the objects in each segment.
 *  5. Predict what the library's repair (SAL_OPEN_REPAIR) would give: the
 *     same mark using only what its sweep can find.  Objects that only the
 *     table still locates (after a damaged header, outside a recorded
 *     range) would be lost by it: repair refuses to lose them unless
 *     forced.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "heapfile.h"

/* Sweep result per index: location / 8 (38 bits), generation (24 bits),
 * found. */
#define SW_LOC_MASK ((1ull << 38) - 1)
#define SW_GEN_SHIFT 38
#define SW_FOUND (1ull << 62)

/* Table status per index (pass 2). */
enum { T_NONE = 0, T_OK, T_UNCOVERED, T_UNCOMMITTED, T_BAD, T_SUSPECT };

typedef struct suspect {
    uint64_t offset; /* where the entry points */
    uint32_t index;
} suspect;

typedef struct checker {
    gc_report *r;
    const gc_options *o;
    gc_heapfile *hf;
    uint64_t hwm, nseg, segbytes, data_offset;
    unsigned segshift;
    const uint64_t *table;
    uint64_t *sw;
    uint8_t *tstat;
    uint8_t *tonly;     /* bitmap: the table locates what the sweep cannot */
    uint32_t *tc;       /* true counts (the check's view) */
    uint32_t *pc;       /* counts in the repair's view (NULL: same as tc) */
    uint64_t *rep_bytes;/* per segment: live bytes after the repair */
    uint8_t *by_table[2]; /* the two views' bitmaps (mark_view.by_table) */
    uint64_t *past[2];    /* the two views' mark_view.past_damage */
    uint64_t *work;     /* header offsets of reached objects with children */
    size_t wlen, wcap;
    suspect *sus;
    size_t nsus, capsus;
    gc_progress prog;
    uint64_t ticks;
    uint64_t cut_located; /* live entries locating a damaged header */
    int check_table;    /* the table is held to the commit */
    int clean;          /* closed cleanly, no live writer */
    int oom;
} checker;

static void fmt_id(char *buf, size_t cap, sal_id id)
{
    snprintf(buf, cap, "%" PRIu32 "/%" PRIu32, sal_id_index(id), sal_id_gen(id));
}

static void tick(checker *c)
{
    if ((++c->ticks & 0xFFFF) == 0)
        gc_progress_tick(&c->prog, c->ticks);
}

static int seg_of(const checker *c, uint64_t off, uint64_t *seg, uint64_t *rel)
{
    if (off < c->data_offset)
        return 0;
    uint64_t s = (off - c->data_offset) >> c->segshift; /* a power of two */
    if (s >= c->hf->sb.segment_count)
        return 0;
    *seg = s;
    *rel = (off - c->data_offset) & (c->segbytes - 1);
    return 1;
}

/* A header copied out of the mapping: what is checked is what is used,
 * even if the file changes under a read-only look.  0 if `off` is not
 * inside the file. */
static int read_header(const checker *c, uint64_t off, sal_object_header *out)
{
    const void *p = gc_at(c->hf, off, sizeof *out);
    if (!p)
        return 0;
    memcpy(out, p, sizeof *out);
    return 1;
}

/* Does a header with index `index` lie at `off`, parse, and fit below
 * `limit` (a file offset)?  Copies it to *hdr_out. */
static int header_fits(const checker *c, uint64_t off, uint64_t limit, uint32_t index,
                       sal_object_header *hdr_out)
{
    sal_object_header h;
    if (off > limit || limit - off < sizeof h || !read_header(c, off, &h))
        return 0;
    if (sal_id_index(h.id) != index || (h.id >> 56) ||
        h.size_bytes > c->hf->max_object_bytes || (uint64_t)h.nrefs * 8 > h.size_bytes)
        return 0;
    uint64_t span = sal_object_span(h.size_bytes);
    if (span > limit - off || !gc_at(c->hf, off, span))
        return 0;
    *hdr_out = h;
    return 1;
}

/* The library's test of a location (recover.c, locate): does `off` hold,
 * inside the committed range of a used segment as its record says, the
 * header of exactly `id`, with its bytes inside that range too? */
static int library_locates(const checker *c, uint64_t off, sal_id id)
{
    uint64_t s, rel;
    sal_object_header h;
    if (!seg_of(c, off, &s, &rel) || s >= c->nseg)
        return 0;
    const sal_segment_record *g = &c->hf->rec_raw[s];
    if (g->state != SAL_SEGREC_USED || rel + sizeof h > g->used_bytes ||
        !read_header(c, off, &h) || h.id != id)
        return 0;
    return rel + sal_object_span(h.size_bytes) <= g->used_bytes &&
           (uint64_t)h.nrefs * 8 <= h.size_bytes;
}

/* ------------------------------------------------------------------------
 * Pass 1: walk the committed ranges.
 * ------------------------------------------------------------------------ */

static void walk_segments(checker *c)
{
    gc_report *r = c->r;
    for (uint64_t s = 0; s < c->nseg; s++) {
        const sal_segment_record *g = &c->hf->rec[s];
        const sal_segment_record *raw = &c->hf->rec_raw[s];
        gc_segment_stats *st = &r->segs[s];
        st->state = raw->state;
        st->used_bytes = raw->used_bytes;
        st->recorded_live_bytes = raw->live_bytes;
        st->damaged_at = UINT64_MAX;
        if (raw->state == SAL_SEGREC_FREE && (raw->used_bytes || raw->live_bytes))
            gc_damage(r, GC_SEGMENT_ACCOUNTING, "segment %" PRIu64 " is recorded free but "
                      "with used_bytes %" PRIu64 " and live_bytes %" PRIu64 " (a free "
                      "record is all zero)",
                      s, raw->used_bytes, raw->live_bytes);
        if (g->state != SAL_SEGREC_USED)
            continue;
        if (g->used_bytes == 0 && raw->state == SAL_SEGREC_USED) {
            gc_damage(r, GC_SEGMENT_ACCOUNTING, "segment %" PRIu64 " is recorded used "
                      "with used_bytes 0", s);
            continue;
        }
        uint64_t start = gc_segment_start(c->hf, s);
        uint64_t used = g->used_bytes;
        uint64_t off = 0;
        while (off < used) {
            const uint64_t *word = gc_at(c->hf, start + off, 8);
            if (!word)
                break; /* cannot happen: the file holds every segment */
            uint64_t next = sal_padding_end(off, *word);
            if (next && (*word == SAL_NULL_ID || next <= used)) {
                /* Padding left by a commit's cut (the rest of the page),
                 * or the unused end of a hole whose dead space was reused.
                 * Ticks too: a long run of zero words is a long walk. */
                off = next;
                tick(c);
                continue;
            }
            const char *bad = NULL;
            sal_object_header hd;
            const sal_object_header *h = NULL;
            uint64_t span = 0;
            if (used - off < sizeof(sal_object_header) || !read_header(c, start + off, &hd)) {
                bad = "a header cut short by the end of the committed range";
            } else {
                h = &hd;
                uint32_t idx = sal_id_index(h->id);
                span = sal_object_span(h->size_bytes);
                if (h->id >> 56)
                    bad = "bits 56..63 of its id are set";
                else if (idx == 0)
                    bad = "its id has index 0 (the null id)";
                else if (idx >= c->hwm)
                    bad = "its id's index is at or above the commit's ids_high_water";
                else if (h->size_bytes > c->hf->max_object_bytes)
                    bad = "size_bytes is larger than the largest object";
                else if ((uint64_t)h->nrefs * 8 > h->size_bytes)
                    bad = "nrefs child ids do not fit in size_bytes";
                else if (span > used - off)
                    bad = "the object runs past the end of the committed range";
            }
            if (bad) {
                char idb[32] = "?";
                if (h)
                    fmt_id(idb, sizeof idb, h->id);
                gc_damage(r, GC_HEADER_DAMAGE, "object header at 0x%" PRIx64 " (segment %"
                          PRIu64 " +%" PRIu64 ", id %s, size %" PRIu32 ", nrefs %u): %s; "
                          "the rest of the segment (%" PRIu64 " bytes) cannot be walked",
                          start + off, s, off, idb, h ? h->size_bytes : 0,
                          h ? h->nrefs : 0u, bad, used - off);
                st->damaged_at = off;
                break;
            }
            uint32_t idx = sal_id_index(h->id);
            uint32_t gen = sal_id_gen(h->id);
            uint64_t cur = c->sw[idx];
            uint64_t loc = (start + off) >> 3;
            uint64_t val = SW_FOUND | loc | ((uint64_t)gen << SW_GEN_SHIFT);
            if (!(cur & SW_FOUND)) {
                c->sw[idx] = val;
            } else {
                uint32_t cgen = (uint32_t)((cur >> SW_GEN_SHIFT) & SAL_ID_GEN_MASK);
                if (cgen == gen) {
                    char idb[32];
                    fmt_id(idb, sizeof idb, h->id);
                    gc_note(r, "id %s has two headers, at 0x%" PRIx64 " and 0x%" PRIx64
                               ": the later wins, as in the library's sweep",
                            idb, (uint64_t)((cur & SW_LOC_MASK) << 3), start + off);
                    c->sw[idx] = val;
                } else if (sal_gen_newer(gen, cgen)) {
                    c->sw[idx] = val;
                }
            }
            st->headers++;
            r->headers_walked++;
            off += span;
            tick(c);
        }
    }
}

/* ------------------------------------------------------------------------
 * Pass 2: the table against the walk.
 * ------------------------------------------------------------------------ */

static void add_table_bytes(checker *c, uint64_t off, uint64_t span)
{
    uint64_t s, rel;
    if (seg_of(c, off, &s, &rel) && s < c->nseg) {
        c->r->segs[s].table_objects++;
        c->r->segs[s].table_bytes += span;
    }
}

static void suspect_push(checker *c, uint64_t off, uint32_t index)
{
    if (c->nsus == c->capsus) {
        size_t cap = c->capsus ? c->capsus * 2 : 256;
        suspect *p = realloc(c->sus, cap * sizeof *p);
        if (!p) {
            c->oom = 1;
            return;
        }
        c->sus = p;
        c->capsus = cap;
    }
    c->sus[c->nsus++] = (suspect){off, index};
    c->tstat[index] = T_SUSPECT;
}

static void check_entry(checker *c, uint32_t i, uint64_t e)
{
    gc_report *r = c->r;
    uint64_t off = sal_entry_loc(e) << 3;
    uint64_t s, rel;
    sal_object_header h;
    if (!seg_of(c, off, &s, &rel) || off >= c->hf->size) {
        gc_damage(r, GC_OUT_OF_RANGE, "table entry %" PRIu32 " (count %" PRIu64 ") locates "
                  "offset 0x%" PRIx64 ", outside the segments of the file",
                  i, e >> SAL_ENTRY_RC_SHIFT, off);
        c->tstat[i] = T_BAD;
        return;
    }
    uint64_t start = gc_segment_start(c->hf, s);
    uint64_t seg_end = start + c->segbytes;
    if (seg_end > c->hf->size)
        seg_end = c->hf->size;
    int committed = s < c->nseg && c->hf->rec[s].state == SAL_SEGREC_USED &&
                    rel < c->hf->rec[s].used_bytes;
    if (committed && rel == r->segs[s].damaged_at) {
        /* It locates the damaged header itself: reported as header-damage.
         * The object may be whole and only cut by a record that lies: the
         * library's sweep stops there and would lose it, and what only it
         * reaches (counted as lost, so repair asks for --force). */
        c->tstat[i] = T_BAD;
        /* Whole: its own header, fitting its segment (not the record). */
        if (sal_entry_rc(e) > 0 && header_fits(c, off, seg_end, i, &h))
            c->cut_located++;
        return;
    }
    if (committed) {
        uint64_t used_end = start + c->hf->rec[s].used_bytes;
        if (header_fits(c, off, used_end, i, &h)) {
            uint64_t sw = c->sw[i];
            uint64_t damaged = r->segs[s].damaged_at;
            uint64_t span = sal_object_span(h.size_bytes);
            if (damaged != UINT64_MAX && rel < damaged && rel + span > damaged)
                r->segs[s].live_after_damage++; /* its bytes cross the damage */
            if ((sw & SW_FOUND) && (sw & SW_LOC_MASK) == (off >> 3)) {
                c->tstat[i] = T_OK;
                add_table_bytes(c, off, sal_object_span(h.size_bytes));
                return;
            }
            if (damaged != UINT64_MAX && rel >= damaged) {
                /* Past a damaged header: the walk could not get here, the
                 * table still can. */
                c->tstat[i] = T_OK;
                c->tonly[i >> 3] |= (uint8_t)(1u << (i & 7));
                r->segs[s].live_after_damage++;
                add_table_bytes(c, off, sal_object_span(h.size_bytes));
                return;
            }
        }
        if (r->segs[s].damaged_at != UINT64_MAX && rel >= r->segs[s].damaged_at)
            r->segs[s].live_after_damage++;
        suspect_push(c, off, i);
        return;
    }
    /* Outside every committed range. */
    if (header_fits(c, off, seg_end, i, &h)) {
        uint64_t span = sal_object_span(h.size_bytes);
        if (!c->clean) {
            /* After an unclean stop: an object allocated after the commit. */
            c->tstat[i] = T_UNCOMMITTED;
            return;
        }
        char idb[32];
        fmt_id(idb, sizeof idb, h.id);
        if (s >= c->nseg) {
            gc_damage(r, GC_OUT_OF_RANGE, "table entry %" PRIu32 " locates object %s at "
                      "0x%" PRIx64 " in segment %" PRIu64 ", beyond the commit's %" PRIu64
                      " segments", i, idb, off, s, c->nseg);
            c->tstat[i] = T_BAD;
            return;
        }
        gc_damage(r, GC_SEGMENT_ACCOUNTING, "segment %" PRIu64 "'s record (state %u, "
                  "used_bytes %" PRIu64 ") does not cover live object %s at +%" PRIu64
                  " (%" PRIu64 " bytes), which the table locates there",
                  s, c->hf->rec_raw[s].state, c->hf->rec_raw[s].used_bytes, idb, rel, span);
        c->tstat[i] = T_UNCOVERED;
        c->tonly[i >> 3] |= (uint8_t)(1u << (i & 7));
        add_table_bytes(c, off, span);
        return;
    }
    gc_damage(r, GC_OUT_OF_RANGE, "table entry %" PRIu32 " (count %" PRIu64 ") locates "
              "0x%" PRIx64 " (segment %" PRIu64 " +%" PRIu64 "), outside the committed "
              "ranges, where no object of its index lies",
              i, e >> SAL_ENTRY_RC_SHIFT, off, s, rel);
    c->tstat[i] = T_BAD;
}

static int suspect_cmp(const void *a, const void *b)
{
    const suspect *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void classify_suspect(checker *c, const suspect *sp, const char *what, uint64_t at,
                             sal_id other, uint64_t other_span, int overlapping)
{
    char idb[32];
    fmt_id(idb, sizeof idb, other);
    uint64_t e = c->table[sp->index];
    if (overlapping)
        gc_damage(c->r, GC_OVERLAPPING_OBJECTS, "table entry %" PRIu32 " (count %" PRIu64
                  ") locates 0x%" PRIx64 ", %s object %s (%" PRIu64 " bytes at 0x%" PRIx64 ")",
                  sp->index, e >> SAL_ENTRY_RC_SHIFT, sp->offset, what, idb, other_span, at);
    else
        gc_damage(c->r, GC_OUT_OF_RANGE, "table entry %" PRIu32 " (count %" PRIu64
                  ") locates 0x%" PRIx64 ", %s", sp->index, e >> SAL_ENTRY_RC_SHIFT,
                  sp->offset, what);
    c->tstat[sp->index] = T_BAD;
}

/* The suspects, sorted by offset, merged with a second walk of their
 * segments: where does each one point? */
static void classify_suspects(checker *c)
{
    if (c->nsus == 0)
        return;
    qsort(c->sus, c->nsus, sizeof *c->sus, suspect_cmp);
    size_t k = 0;
    while (k < c->nsus) {
        uint64_t s, rel;
        if (!seg_of(c, c->sus[k].offset, &s, &rel) || s >= c->nseg) {
            k++; /* cannot happen: suspects lie in committed ranges */
            continue;
        }
        uint64_t start = gc_segment_start(c->hf, s);
        uint64_t used = c->hf->rec[s].used_bytes;
        uint64_t limit = c->r->segs[s].damaged_at < used ? c->r->segs[s].damaged_at : used;
        uint64_t off = 0;
        while (k < c->nsus && c->sus[k].offset < start + used) {
            const suspect *sp = &c->sus[k];
            uint64_t target = sp->offset - start;
            /* Advance the walk to the extent that holds `target`. */
            int placed = 0;
            while (off < limit) {
                const uint64_t *word = gc_at(c->hf, start + off, 8);
                uint64_t next;
                if (!word)
                    break;
                if ((next = sal_padding_end(off, *word)) != 0) {
                    if (target < next) {
                        classify_suspect(c, sp, "in padding between objects", 0, 0, 0, 0);
                        placed = 1;
                        break;
                    }
                } else {
                    sal_object_header hd;
                    const sal_object_header *h = &hd;
                    if (!read_header(c, start + off, &hd))
                        break;
                    next = off + sal_object_span(h->size_bytes);
                    if (target < next) {
                        uint64_t span = next - off;
                        if (target == off && sal_id_index(h->id) == sp->index)
                            classify_suspect(c, sp, "the header of an older or superseded "
                                             "copy of its own index (the walk finds the "
                                             "newest elsewhere)", start + off, h->id,
                                             span, 0);
                        else if (target == off)
                            classify_suspect(c, sp, "the header of", start + off, h->id, span,
                                             1);
                        else
                            classify_suspect(c, sp, "inside the bytes of", start + off, h->id,
                                             span, 1);
                        placed = 1;
                        break;
                    }
                }
                off = next;
            }
            if (!placed)
                classify_suspect(c, sp, "in the part of its segment that a damaged header "
                                 "makes unwalkable, where no object of its index lies",
                                 0, 0, 0, 0);
            k++;
        }
    }
}

static void check_table(checker *c)
{
    gc_report *r = c->r;
    for (uint64_t i = 1; i < c->hwm; i++) {
        uint64_t e = c->table[i];
        tick(c);
        if (e == 0) {
            r->table_never_used++;
            continue;
        }
        if (e & SAL_ENTRY_FREE) {
            r->table_free++;
            continue;
        }
        if (sal_entry_rc(e) == 0)
            continue; /* dying: compared with the true count in pass 4 */
        r->table_live++;
        if (c->check_table)
            check_entry(c, (uint32_t)i, e);
    }
    classify_suspects(c);
    /* An entry whose location is wrong still names a live object: if the
     * walk found it, its bytes count where they really are (so that one
     * bad location is not also reported as segment accounting). */
    for (uint64_t i = 1; c->check_table && i < c->hwm; i++) {
        if (c->tstat[i] != T_BAD && c->tstat[i] != T_SUSPECT)
            continue;
        uint64_t sw = c->sw[i];
        sal_object_header h;
        uint64_t at = sal_entry_loc(c->table[i]) << 3;
        if (read_header(c, at, &h) && sal_id_index(h.id) == i &&
            library_locates(c, at, h.id)) {
            /* A header of its own the library's repair finds there (by
             * the table): its bytes count there. */
            add_table_bytes(c, at, sal_object_span(h.size_bytes));
            continue;
        }
        if (!(sw & SW_FOUND))
            continue;
        if (read_header(c, (sw & SW_LOC_MASK) << 3, &h))
            add_table_bytes(c, (sw & SW_LOC_MASK) << 3, sal_object_span(h.size_bytes));
    }
}

/* ------------------------------------------------------------------------
 * Pass 3: mark from the committed roots.
 * ------------------------------------------------------------------------ */

typedef struct mark_view {
    int repair_view;        /* 1: exactly what the library's repair keeps */
    uint32_t *counts;
    uint8_t *by_table;      /* bitmap: marked where the table locates it */
    uint64_t *past_damage;  /* per segment: reached objects that reach or
                               cross its damaged header (NULL: not kept) */
    uint64_t objects, bytes, refs, dangling, roots_cleared;
    uint64_t tonly_reached;   /* reached only by the check's extra rule */
    uint64_t refs_to_damaged; /* references naming a damaged header */
    int record_damage;      /* report dangling and out-of-range references */
    int record_fixes;       /* record the child slots repair clears */
} mark_view;

static int bit_get(const uint8_t *b, uint32_t i) { return (b[i >> 3] >> (i & 7)) & 1; }
static void bit_set(uint8_t *b, uint32_t i) { b[i >> 3] |= (uint8_t)(1u << (i & 7)); }

/* Where the object `id` is, in this view; 0 if nowhere.  *by_table says
 * whether the table's location was taken rather than the sweep's.
 *
 * Both views follow the library's repair (recover.c, mark_ref): the
 * location its sweep found for the index (newest generation) if the
 * header there carries exactly `id`; otherwise the location of a live
 * entry of the table as it stands, if the header there carries exactly
 * `id` inside a committed range.  The check's own view also takes what
 * only the table locates outside the records' ranges (T_UNCOVERED), which
 * the library's repair loses: that difference is `objects_lost`. */
static uint64_t locate(const checker *c, mark_view *v, sal_id id, int *by_table)
{
    uint32_t idx = sal_id_index(id);
    uint64_t sw = c->sw[idx];
    *by_table = 0;
    if ((sw & SW_FOUND) && ((sw >> SW_GEN_SHIFT) & SAL_ID_GEN_MASK) == sal_id_gen(id))
        return (sw & SW_LOC_MASK) << 3;
    uint64_t e = c->table[idx];
    uint64_t off = sal_entry_loc(e) << 3;
    *by_table = 1;
    /* A live entry, or a free one that a same-boot recovery killed
     * part-way left marked as having been live (bit 38, recover.c). */
    int was_live = (!(e & SAL_ENTRY_FREE) && sal_entry_rc(e) != 0) ||
                   ((e & SAL_ENTRY_FREE) && (e & SAL_ENTRY_ACCESSED));
    if (was_live && library_locates(c, off, id))
        return off;
    sal_object_header h;
    if (!v->repair_view && bit_get(c->tonly, idx) && read_header(c, off, &h) && h.id == id) {
        v->tonly_reached++;
        return off;
    }
    return 0;
}

/* Where index `idx`, already marked in this view, was marked. */
static uint64_t marked_at(const checker *c, const mark_view *v, uint32_t idx)
{
    if (bit_get(v->by_table, idx))
        return sal_entry_loc(c->table[idx]) << 3;
    return (c->sw[idx] & SW_LOC_MASK) << 3;
}

static void push_work(checker *c, uint64_t off)
{
    if (c->wlen == c->wcap) {
        size_t cap = c->wcap ? c->wcap * 2 : 4096;
        uint64_t *p = realloc(c->work, cap * sizeof *p);
        if (!p) {
            c->oom = 1;
            return;
        }
        c->work = p;
        c->wcap = cap;
    }
    c->work[c->wlen++] = off;
}

/* Does table entry `idx` locate a header that the walk found damaged?  A
 * reference to it is then part of that header damage, not a dangling id. */
static int at_damaged_header(const checker *c, uint32_t idx)
{
    uint64_t s, rel;
    uint64_t off = sal_entry_loc(c->table[idx]) << 3;
    return seg_of(c, off, &s, &rel) && s < c->nseg && c->r->segs[s].damaged_at == rel;
}

static void why_dangling(const checker *c, sal_id id, char *buf, size_t cap)
{
    uint32_t idx = sal_id_index(id);
    uint64_t e = c->table[idx];
    uint64_t sw = c->sw[idx];
    if (sw & SW_FOUND)
        snprintf(buf, cap, "a stale id: the committed object with index %" PRIu32
                 " is generation %" PRIu64, idx, (uint64_t)((sw >> SW_GEN_SHIFT) & SAL_ID_GEN_MASK));
    else if (e == 0)
        snprintf(buf, cap, "its table entry was never used and no committed object carries it");
    else if (e & SAL_ENTRY_FREE)
        snprintf(buf, cap, "its table entry is free (generation %" PRIu64 ") and no "
                 "committed object carries it", e >> SAL_ENTRY_RC_SHIFT);
    else
        snprintf(buf, cap, "no committed object carries it (its table entry says count %"
                 PRIu64 ")", e >> SAL_ENTRY_RC_SHIFT);
}

/* One reference to `id`, from root `root` (parent 0) or from child slot
 * `slot` of `parent`, whose header is at `parent_off`. */
static void mark_ref(checker *c, mark_view *v, sal_id id, int root, sal_id parent,
                     uint64_t parent_off, unsigned slot)
{
    gc_report *r = c->r;
    v->refs++;
    uint32_t idx = sal_id_index(id);
    int out_of_range = (id >> 56) || idx == 0 || idx >= c->hwm;
    int by_table = 0;
    uint64_t off = 0;
    if (out_of_range) {
        off = 0;
    } else if (v->counts[idx] > 0) {
        /* Already marked: one more reference only if it names exactly the
         * object marked (the library's rule); another generation of the
         * index dangles. */
        sal_object_header hd;
        off = marked_at(c, v, idx);
        if (!read_header(c, off, &hd) || hd.id != id)
            off = 0;
    } else {
        off = locate(c, v, id, &by_table);
    }
    if (!off) {
        v->dangling++;
        if (root >= 0)
            v->roots_cleared++;
        if (root < 0 && v->record_fixes) {
            gc_fix f = {.kind = GC_FIX_CHILD_SLOT,
                        .offset = parent_off + sizeof(sal_object_header) + 8ull * slot,
                        .length = 8, .old_value = id, .parent = parent, .slot = slot};
            if (gc_add_fix(r, &f))
                c->oom = 1;
        }
        if (!v->record_damage)
            return;
        char where[96], idb[32], pb[32];
        fmt_id(idb, sizeof idb, id);
        if (root >= 0) {
            snprintf(where, sizeof where, "root %d", root);
        } else {
            fmt_id(pb, sizeof pb, parent);
            snprintf(where, sizeof where, "child slot %u of %s", slot, pb);
        }
        if (out_of_range) {
            gc_damage(r, GC_OUT_OF_RANGE, "%s names id %s (0x%" PRIx64 "): %s", where, idb,
                      id, (id >> 56) ? "bits 56..63 are set"
                          : idx == 0 ? "index 0 with a nonzero generation"
                                     : "index at or above ids_high_water");
        } else if (at_damaged_header(c, idx)) {
            v->refs_to_damaged++;
        } else {
            char why[160];
            why_dangling(c, id, why, sizeof why);
            gc_damage(r, GC_DANGLING_CHILD, "%s names %s: %s", where, idb, why);
        }
        return;
    }
    uint32_t n = v->counts[idx];
    if (n < UINT32_MAX)
        v->counts[idx] = n + 1;
    if (n > 0)
        return;
    /* First reference: the object is reachable. */
    sal_object_header hd;
    const sal_object_header *h = &hd;
    if (!read_header(c, off, &hd))
        return;
    if (by_table)
        bit_set(v->by_table, idx);
    uint64_t span = sal_object_span(h->size_bytes);
    v->objects++;
    v->bytes += span;
    uint64_t s, rel;
    if (seg_of(c, off, &s, &rel) && s < c->nseg) {
        /* Kept at or across a damaged header: that header cannot become
         * padding. */
        uint64_t damaged = r->segs[s].damaged_at;
        if (v->past_damage && damaged != UINT64_MAX && rel + span > damaged)
            v->past_damage[s]++;
        if (!v->repair_view) {
            r->segs[s].reachable_objects++;
            r->segs[s].reachable_bytes += span;
        } else if (c->rep_bytes) {
            c->rep_bytes[s] += span;
        }
    }
    if (h->nrefs > 0)
        push_work(c, off);
    tick(c);
}

static void mark(checker *c, mark_view *v)
{
    c->wlen = 0;
    for (unsigned k = 0; k < SAL_ROOT_COUNT && !c->oom; k++) {
        sal_id root = c->hf->slot.roots[k];
        if (root != SAL_NULL_ID)
            mark_ref(c, v, root, (int)k, 0, 0, 0);
    }
    while (c->wlen > 0 && !c->oom) {
        uint64_t off = c->work[--c->wlen];
        sal_object_header h;
        if (!read_header(c, off, &h) || (uint64_t)h.nrefs * 8 > h.size_bytes)
            continue;
        /* Bounded again: the walk checked this object, but a file that a
         * live writer changes under a look may say otherwise now. */
        const uint8_t *child = gc_at(c->hf, off + sizeof h, (uint64_t)h.nrefs * 8);
        for (unsigned k = 0; child && k < h.nrefs && !c->oom; k++) {
            sal_id id;
            memcpy(&id, child + 8ull * k, sizeof id);
            if (id != SAL_NULL_ID)
                mark_ref(c, v, id, -1, h.id, off, k);
        }
    }
}

/* ------------------------------------------------------------------------
 * Pass 4: compare.
 * ------------------------------------------------------------------------ */

static void compare_counts(checker *c)
{
    gc_report *r = c->r;
    for (uint64_t i = 1; i < c->hwm; i++) {
        uint64_t e = c->table[i];
        uint32_t t = c->tc[i];
        int free_ = e == 0 || (e & SAL_ENTRY_FREE);
        uint64_t rc = free_ ? 0 : e >> SAL_ENTRY_RC_SHIFT;
        int live = !free_ && rc > 0;
        if (!c->clean) {
            if (live && t > 0 && rc != t && !(rc == SAL_ENTRY_RC_MAX && t >= rc))
                r->unclean_counts_differ++;
            if (!free_ && t == 0)
                r->unclean_would_free++;
            if (!live && t > 0)
                r->unclean_would_revive++;
            continue;
        }
        if (c->tstat[i] == T_BAD || c->tstat[i] == T_SUSPECT)
            continue; /* its location is wrong: reported already */
        char idb[32];
        if (t > 0) {
            if (live && (rc == t || (rc == SAL_ENTRY_RC_MAX && t >= rc)))
                continue; /* the common case: right */
            uint64_t sw = c->sw[i];
            uint64_t off = (sw & SW_FOUND) ? (sw & SW_LOC_MASK) << 3 : 0;
            if (c->tonly[i >> 3] & (1u << (i & 7)))
                off = sal_entry_loc(e) << 3;
            sal_object_header hd;
            const sal_object_header *h = read_header(c, off, &hd) ? &hd : NULL;
            fmt_id(idb, sizeof idb, h ? h->id : sal_id_make((uint32_t)i, 0));
            if (e == 0 || (e & SAL_ENTRY_FREE))
                gc_damage(r, GC_DANGLING_CHILD, "%s is referenced %" PRIu32 " time(s) but "
                          "its table entry is %s; the object is intact at 0x%" PRIx64
                          " (repair brings it back)",
                          idb, t, e == 0 ? "unused" : "free", off);
            else if (rc == 0)
                gc_damage(r, GC_REFCOUNT_MISMATCH, "%s: the table entry is neither free "
                          "nor counted (count 0), %" PRIu32 " reference(s) found", idb, t);
            else if (rc != t && !(rc == SAL_ENTRY_RC_MAX && t >= rc))
                gc_damage(r, GC_REFCOUNT_MISMATCH, "%s: the table counts %" PRIu64
                          ", %" PRIu32 " reference(s) found", idb, rc, t);
        } else if (!free_) {
            if (c->r->cls[GC_UNREACHABLE_OBJECT].nexamples >= c->r->max_examples &&
                rc > 0) {
                if (c->tstat[i] == T_OK || c->tstat[i] == T_UNCOVERED)
                    gc_damage_count(r, GC_UNREACHABLE_OBJECT, 1);
                continue;
            }
            uint64_t off = sal_entry_loc(e) << 3;
            sal_object_header hd;
            const sal_object_header *h = read_header(c, off, &hd) ? &hd : NULL;
            if (rc == 0) {
                gc_damage(r, GC_REFCOUNT_MISMATCH, "table entry %" PRIu64 " is neither free "
                          "nor counted (count 0) and nothing references it", i);
            } else if (h && (c->tstat[i] == T_OK || c->tstat[i] == T_UNCOVERED)) {
                fmt_id(idb, sizeof idb, h->id);
                gc_damage(r, GC_UNREACHABLE_OBJECT, "%s (type %u, %" PRIu32 " bytes, at 0x%"
                          PRIx64 "): count %" PRIu64 " in the table, not reachable from the "
                          "committed roots", idb, h->type, h->size_bytes, off, rc);
            }
        }
    }
}

static void compare_segments(checker *c)
{
    gc_report *r = c->r;
    for (uint64_t s = 0; s < c->nseg; s++) {
        const sal_segment_record *raw = &c->hf->rec_raw[s];
        const gc_segment_stats *st = &r->segs[s];
        if (raw->state != SAL_SEGREC_USED)
            continue;
        if (st->damaged_at != UINT64_MAX) {
            gc_note(r, "segment %" PRIu64 "'s live_bytes cannot be checked: a damaged header "
                       "hides the size of what lies behind it", s);
            continue;
        }
        if (raw->live_bytes != st->table_bytes)
            gc_damage(r, GC_SEGMENT_ACCOUNTING, "segment %" PRIu64 " records live_bytes %"
                      PRIu64 ", its %" PRIu64 " live objects hold %" PRIu64 " bytes",
                      s, raw->live_bytes, st->table_objects, st->table_bytes);
    }
}

/* ------------------------------------------------------------------------
 * Pass 5: what the library's repair would give, and sal-gc's own fixes.
 * ------------------------------------------------------------------------ */

static void predict(checker *c, const mark_view *ref, const mark_view *rep)
{
    gc_report *r = c->r;
    gc_prediction *p = &r->predict;
    const uint32_t *counts = rep->counts;
    p->library_opens = !c->hf->library_refuses;
    if (!p->library_opens && !p->library_refusal[0])
        snprintf(p->library_refusal, sizeof p->library_refusal,
                 "the library refuses to open this heap (see header-damage and "
                 "segment-accounting above)");
    p->objects_live = rep->objects;
    p->bytes_live = rep->bytes;
    p->dangling_refs = rep->dangling;
    p->roots_cleared = rep->roots_cleared;
    p->objects_lost = ref->objects > rep->objects ? ref->objects - rep->objects : 0;
    p->objects_lost += c->cut_located;
    for (uint64_t i = 1; i < c->hwm; i++) {
        uint64_t e = c->table[i];
        int free_ = e == 0 || (e & SAL_ENTRY_FREE);
        uint64_t rc = free_ ? 0 : e >> SAL_ENTRY_RC_SHIFT;
        uint64_t want = counts[i] > SAL_ENTRY_RC_MAX ? SAL_ENTRY_RC_MAX : counts[i];
        if (counts[i] > 0 && !free_ && !bit_get(rep->by_table, (uint32_t)i) &&
            (c->sw[i] & SW_FOUND) && (c->sw[i] & SW_LOC_MASK) != sal_entry_loc(e))
            p->locations_set++;
        if (counts[i] == 0 && !free_)
            p->ids_freed++;
        else if (counts[i] > 0 && (free_ || rc == 0))
            p->ids_revived++;
        else if (counts[i] > 0 && rc != want)
            p->counts_set++;
    }
    for (uint64_t s = 0; s < c->nseg; s++) {
        const sal_segment_record *raw = &c->hf->rec_raw[s];
        uint64_t live = c->rep_bytes ? c->rep_bytes[s] : r->segs[s].reachable_bytes;
        sal_segment_record want;
        if (live > 0) {
            want = *raw;
            want.state = SAL_SEGREC_USED;
            /* A commit writes at most used_bytes (sync.c): objects that
             * overlap through a damaged size count more. */
            want.live_bytes = live < raw->used_bytes ? live : raw->used_bytes;
        } else {
            memset(&want, 0, sizeof want);
        }
        if (memcmp(&want, raw, sizeof want) != 0)
            p->records_rewritten++;
        /* A damaged tail inside a used segment's committed range: if the
         * repair keeps nothing at or across the damaged header, sal-gc
         * turns the tail into padding; otherwise the damage stays. */
        if (live > 0 && r->segs[s].damaged_at != UINT64_MAX) {
            if (rep->past_damage && rep->past_damage[s] > 0) {
                p->damage_kept++;
                continue;
            }
            p->ranges_padded++;
            /* The fix itself only once the table locates nothing there
             * either (after the library's repair has freed the rest). */
            if (c->check_table && r->segs[s].live_after_damage == 0) {
                uint64_t start = gc_segment_start(c->hf, s);
                gc_fix f = {.kind = GC_FIX_PAD, .offset = start + r->segs[s].damaged_at,
                            .length = start + c->hf->rec[s].used_bytes};
                const uint64_t *word = gc_at(c->hf, f.offset, 8);
                f.old_value = word ? *word : 0;
                if (gc_add_fix(r, &f))
                    c->oom = 1;
            }
        }
    }
    /* Invalid commit slots: the repair's two durable commits rewrite slots
     * 0 and 1; sal-gc empties an invalid volatile slot (open ignores it
     * already, so emptying it changes nothing that counts). */
    for (unsigned i = 2; i < SAL_SLOT_COUNT; i++) {
        if (r->slot_status[i] == GC_SLOT_INVALID) {
            gc_fix f = {.kind = GC_FIX_SLOT, .offset = SAL_SLOT_OFFSET(i),
                        .length = sizeof(sal_commit_slot), .slot = i,
                        .old_value = r->slot_digest[i]};
            if (gc_add_fix(r, &f))
                c->oom = 1;
        }
    }
    for (size_t k = 0; k < r->nfixes; k++) {
        if (r->fixes[k].kind == GC_FIX_CHILD_SLOT)
            p->child_slots_cleared++;
        else if (r->fixes[k].kind == GC_FIX_SLOT)
            p->slots_cleared++;
    }
}

/* ------------------------------------------------------------------------ */

static void fill_roots(checker *c)
{
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        gc_root_info *ri = &c->r->roots[k];
        sal_id id = c->hf->slot.roots[k];
        ri->id = id;
        if (id == SAL_NULL_ID)
            continue;
        mark_view v = {0};
        uint32_t idx = sal_id_index(id);
        int by_table;
        uint64_t off = (idx && idx < c->hwm && !(id >> 56)) ? locate(c, &v, id, &by_table) : 0;
        if (!off)
            continue;
        sal_object_header h;
        if (!read_header(c, off, &h))
            continue;
        ri->resolved = 1;
        ri->type = h.type;
        ri->nrefs = h.nrefs;
        ri->size_bytes = h.size_bytes;
    }
}

int gc_check_path(const char *path, const gc_options *o, gc_report *r)
{
    gc_options defaults;
    if (!o) {
        gc_options_init(&defaults);
        o = &defaults;
    }
    double t0 = gc_now();
    gc_heapfile hf;
    checker c;
    memset(&c, 0, sizeof c);
    if (gc_heapfile_open(path, o, r, &hf) != 0)
        goto done;
    c.r = r;
    c.o = o;
    c.hf = &hf;
    c.hwm = hf.hwm;
    c.nseg = hf.nseg;
    c.segbytes = hf.sb.segment_bytes;
    c.segshift = (unsigned)__builtin_ctzll(hf.sb.segment_bytes);
    c.data_offset = hf.sb.data_offset;
    c.table = (const uint64_t *)gc_at(&hf, hf.sb.table_offset, hf.hwm * 8);
    if (!c.table) {
        gc_op_error(r, "internal: the table lies outside the file"); /* checked at open */
        goto done;
    }
    c.clean = !r->unclean && !r->live_writer;
    /* Hold the table to the commit when its locations can be trusted: on a
     * clean heap, and after a kill in the same boot (ids released after the
     * commit keep their location).  Not after a reboot (the table's pages on
     * disk are of mixed ages: recovery sweeps), not under a live writer. */
    c.check_table = !r->live_writer && (c.clean || r->same_boot);
    r->table_checked = c.check_table;
    r->segs = calloc(c.nseg ? c.nseg : 1, sizeof *r->segs);
    c.sw = calloc(c.hwm, sizeof *c.sw);
    c.tc = calloc(c.hwm, sizeof *c.tc);
    c.tstat = calloc(c.hwm, 1);
    c.tonly = calloc(c.hwm / 8 + 1, 1);
    if (!r->segs || !c.sw || !c.tc || !c.tstat || !c.tonly) {
        gc_op_error(r, "out of memory for %" PRIu64 " ids (about %" PRIu64 " MiB)", c.hwm,
                    (c.hwm * 14) >> 20);
        goto done;
    }
    if (r->unclean && !r->live_writer)
        gc_damage(r, GC_UNCLEAN_SHUTDOWN, "commit %" PRIu64 " (slot %u, written %s) is the "
                  "newest, and the process that wrote it did not close the heap; recovery "
                  "(sal-gc repair, or an open with SAL_OPEN_RECOVER) returns to exactly it",
                  r->slot.epoch, r->slot_index,
                  r->same_boot ? "in this boot" : "in an earlier boot");

    gc_progress_start(&c.prog, o, "walking the committed ranges: object headers");
    walk_segments(&c);
    r->walked = 1;
    c.ticks = 0;
    gc_progress_phase(&c.prog, "checking the object table: entries");
    check_table(&c);
    c.ticks = 0;
    gc_progress_phase(&c.prog, "marking from the roots: objects");

    mark_view ref = {.counts = c.tc, .record_damage = 1, .record_fixes = 1};
    c.by_table[0] = ref.by_table = calloc(c.hwm / 8 + 1, 1);
    c.past[0] = ref.past_damage = calloc(c.nseg ? c.nseg : 1, sizeof *c.past[0]);
    if (!ref.by_table || !ref.past_damage)
        c.oom = 1;
    else
        mark(&c, &ref);
    mark_view rep = ref;
    if (!c.oom && ref.tonly_reached > 0) {
        /* Some reachable objects are located only by the table outside
         * the records' ranges: the library's repair would not find them.
         * Mark again its way, for the prediction and for the child slots
         * left dangling.  Otherwise both views took the same steps. */
        c.pc = calloc(c.hwm, sizeof *c.pc);
        c.rep_bytes = calloc(c.nseg ? c.nseg : 1, sizeof *c.rep_bytes);
        c.by_table[1] = calloc(c.hwm / 8 + 1, 1);
        c.past[1] = calloc(c.nseg ? c.nseg : 1, sizeof *c.past[1]);
        if (!c.pc || !c.rep_bytes || !c.by_table[1] || !c.past[1]) {
            c.oom = 1;
        } else {
            r->nfixes = 0;
            memset(&rep, 0, sizeof rep);
            rep.repair_view = 1;
            rep.counts = c.pc;
            rep.by_table = c.by_table[1];
            rep.past_damage = c.past[1];
            rep.record_fixes = 1;
            mark(&c, &rep);
        }
    }
    if (c.oom) {
        gc_op_error(r, "out of memory during the walk");
        gc_progress_end(&c.prog);
        goto done;
    }
    r->reachable_objects = ref.objects;
    r->reachable_bytes = ref.bytes;
    r->references = ref.refs;
    r->table_only = ref.tonly_reached;
    if (ref.refs_to_damaged)
        gc_note(r, "%" PRIu64 " reference(s) name objects whose header is damaged: their "
                   "child ids cannot be read, so the counts of what they referenced read "
                   "low (refcount-mismatch), and what only they reached reads unreachable",
                ref.refs_to_damaged);
    if (c.check_table) {
        compare_counts(&c);
        if (c.clean)
            compare_segments(&c);
    }
    if (!c.clean && !r->live_writer)
        gc_note(r, "after an unclean stop the table's counts and the segments' live_bytes "
                   "reflect the uncommitted work of the process that stopped; they are "
                   "not reported as damage: recovery rebuilds them from the commit");
    if (!c.check_table && r->unclean && !r->live_writer)
        gc_note(r, "the commit was written in an earlier boot: the object table's locations "
                   "are not trusted (recovery rebuilds them from the segments), so the "
                   "table is not checked");
    predict(&c, &ref, &rep);
    fill_roots(&c);
    gc_progress_end(&c.prog);

done:
    free(c.sw);
    free(c.tc);
    free(c.pc);
    free(c.tstat);
    free(c.tonly);
    free(c.work);
    free(c.sus);
    free(c.rep_bytes);
    for (int k = 0; k < 2; k++) {
        free(c.by_table[k]);
        free(c.past[k]);
    }
    if (hf.fd >= 0 || hf.map)
        gc_heapfile_close(&hf);
    r->seconds = gc_now() - t0;
    return gc_report_exit_code(r);
}
