/*
 * test_gc_review.c - sal-gc against the bugs a review found, one test each.
 *
 *  table_located_inside     a live object's size made larger, so that the
 *                           walk passes over two live objects inside it:
 *                           the library's repair finds them where the
 *                           table says, and sal-gc must not cut them
 *  table_located_stale_dead a dead header rewritten to a newer generation
 *                           of a live, twice referenced object: the
 *                           library keeps the object, sal-gc must too
 *  unclean_stale_reference  an unclean heap with a stale id in a child
 *                           slot: repair's fast path must check after it
 *                           and exit 1 only with a sound heap (needs the
 *                           library's recover.c fix: skipped without it)
 *  slot_short_file_bytes    the newest durable slot's file_bytes too small
 *                           (resealed): the library takes the other one,
 *                           and so must sal-gc
 *  slot_protect_no_durable  the newest slot a protect commit, both durable
 *                           slots' segment-table copies damaged: the
 *                           library refuses, and so must sal-gc
 *  live_behind_damage       a damaged header with live objects behind it:
 *                           the prediction says it stays, and a second
 *                           repair writes nothing
 *  invalid_volatile_slot_emptied  a volatile slot whose durable flag
 *                           does not match its place: repair empties it
 *  unclean_short_tail       an unclean heap with a committed tail too
 *                           short for a header: the repair at once pads it
 *  refused_message          repair on a refused heap says why, with no
 *                           summary of a walk that did not happen
 *  examples_missing_value   `check --examples` as the last argument
 */
#include "test_gc_util.h"

static void build(void **state, gc_sound *g, gc_layout *l, gc_snap *before)
{
    tu_ctx *c = *state;
    gc_build(c->path, g);
    gc_expect_clean(c->path);
    lay_read(c->path, l);
    snap_take(c->path, before);
}

/* Every object of `before` but `skip` is in the heap now, with the same
 * bytes (child slots included: nothing was cut). */
static void expect_kept(const char *path, const gc_snap *before, sal_id skip)
{
    gc_snap after;
    snap_take(path, &after);
    for (size_t i = 0; i < before->n; i++) {
        const gc_obj *b = &before->v[i];
        if (b->id == skip)
            continue;
        const gc_obj *a = snap_find(&after, b->id);
        if (!a)
            fail_msg("object %u/%u lost", tu_index(b->id), tu_gen(b->id));
        assert_int_equal(a->info.size_bytes, b->info.size_bytes);
        assert_memory_equal(a->bytes, b->bytes, b->info.size_bytes);
    }
    snap_free(&after);
}

static void test_table_located_inside(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    /* D, then B and C, then A in address order: D's size made to span B
     * and C, so the walk goes from D straight to A. */
    uint64_t d = lay_header_off(c->path, &l, g.d), a = lay_header_off(c->path, &l, g.a);
    uint64_t b = lay_header_off(c->path, &l, g.b), cc = lay_header_off(c->path, &l, g.c);
    assert_true(d < b && b < cc && cc < a);
    uint32_t size = (uint32_t)(a - d - sizeof(sal_object_header));
    TU_OK(tu_patch(c->path, d + offsetof(sal_object_header, size_bytes), &size, 4));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", "--dry-run", c->path), 4, out);
    assert_non_null(strstr(out, "agrees with sal-gc's prediction"));
    assert_null(strstr(out, "child slot(s) naming no object"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    assert_null(strstr(out, "cleared child slot"));
    expect_kept(c->path, &before, g.d);
    /* Nothing left for a second repair: no commit, nothing lost. */
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    assert_non_null(strstr(out, "would change nothing here: not run"));
    expect_kept(c->path, &before, g.d);
    free(out);
    snap_free(&before);
}

static void test_table_located_stale_dead(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    /* U is dead (its entry free, its header still there): give its header
     * E's index, one generation newer.  E is referenced by B and C. */
    uint64_t u = sal_entry_loc(lay_entry(c->path, &l, g.u)) << 3;
    sal_id newer = sal_id_make(tu_index(g.e), tu_gen(g.e) + 1);
    TU_OK(tu_patch(c->path, u, &newer, 8));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", c->path), 4, out);
    assert_null(strstr(out, "elsewhere): not")); /* the damage line, whole */
    assert_non_null(strstr(out, "cannot correct them"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", "--dry-run", c->path), 4, out);
    assert_non_null(strstr(out, "agrees with sal-gc's prediction"));
    uint64_t h1, s1, h2, s2;
    TU_OK(tu_hash_file(c->path, &h1, &s1));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    assert_null(strstr(out, "cleared child slot"));
    TU_OK(tu_hash_file(c->path, &h2, &s2));
    assert_true(h1 == h2 && s1 == s2); /* nothing to do: nothing written */
    expect_kept(c->path, &before, 0);
    free(out);
    snap_free(&before);
}

/* Segment `seg`'s record ends at `used` bytes (its live bytes no more). */
static void cut_record(const char *path, gc_layout *l, uint64_t seg, uint64_t used)
{
    sal_segment_record rec = lay_record(path, l, seg);
    rec.used_bytes = used;
    if (rec.live_bytes > rec.used_bytes)
        rec.live_bytes = rec.used_bytes;
    lay_set_record(path, l, seg, &rec);
}

/* `sal-gc repair` refuses (exit 4) and writes nothing. */
static void expect_repair_refused(const char *path)
{
    uint64_t h0, s0, h1, s1;
    TU_OK(tu_hash_file(path, &h0, &s0));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", path), 4, out);
    assert_non_null(strstr(out, "REFUSED"));
    TU_OK(tu_hash_file(path, &h1, &s1));
    assert_true(h0 == h1 && s0 == s1); /* nothing written */
    free(out);
}

/* The current slot says "not closed". */
static void make_unclean(const char *path)
{
    gc_layout l;
    lay_read(path, &l);
    l.slot.clean = 0;
    sal_slot_seal(&l.slot);
    TU_OK(tu_patch(path, SAL_SLOT_OFFSET(l.slot_index), &l.slot, sizeof l.slot));
}

/* Does the library's repair report a stale id to a marked object as
 * dangling (recover.c, mark_ref)? */
static int library_reports_stale(const char *path)
{
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_READONLY | SAL_OPEN_REPAIR;
    sal_heap *h;
    TU_OK(sal_heap_open(path, &o, &h));
    sal_recovery_report rr;
    TU_OK(sal_heap_recovery_report(h, &rr));
    TU_OK(sal_heap_close(h));
    return rr.dangling_refs > 0;
}

static void test_unclean_stale_reference(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    /* A's slot 3 (null) names E one generation newer: a stale id. */
    sal_id stale = sal_id_make(tu_index(g.e), tu_gen(g.e) + 1);
    TU_OK(tu_patch(c->path, lay_header_off(c->path, &l, g.a) + sizeof(sal_object_header) + 24,
                   &stale, 8));
    make_unclean(c->path);
    /* The library reports the stale reference (recover.c, mark_ref): else
     * the tool's fast path would have no damage to act on. */
    assert_true(library_reports_stale(c->path));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 1, out);
    assert_non_null(strstr(out, "check after repair: clean"));
    gc_expect_clean(c->path);
    free(out);
    gc_snap after;
    snap_take(c->path, &after);
    gc_obj *e = snap_find(&after, g.e);
    assert_non_null(e);
    assert_int_equal(e->info.refcount, 2);
    snap_free(&after);
    snap_free(&before);
}

/* An unclean heap whose segment record no longer covers reachable
 * objects: the repair at once would cut them off; it must refuse, as on a
 * clean heap, and leave the file as it was. */
static void test_unclean_damage_refused(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    cut_record(c->path, &l, 0, 0x800);
    make_unclean(c->path);
    expect_repair_refused(c->path);
    snap_free(&before);
}

/* A segment record that cuts a whole object in half (its used bytes end
 * inside it; the object's header and bytes intact): the library's sweep
 * stops there and would lose it and the chain it heads (root 2).  The
 * check counted nothing as lost, and repair emptied the root without
 * --force on a clean heap; it must refuse, and write nothing. */
static void record_cuts_whole_object(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    uint64_t off = lay_header_off(c->path, &l, g.chain);
    uint64_t seg = lay_segment_of(&l, off);
    uint64_t rel = off - (l.sb.data_offset + seg * l.sb.segment_bytes);
    cut_record(c->path, &l, seg, rel + 32); /* through the header and 8 bytes */
    expect_repair_refused(c->path);
    snap_free(&before);
}

/* The repair at once of an unclean heap: if the table cannot be read
 * before the library's repair, it refuses and writes nothing; if the
 * generations cannot be checked after it, it says so and exits 8, not
 * "corrected". */
static void test_unclean_generations_failures(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    uint64_t eu = lay_entry(c->path, &l, g.u);
    assert_true(eu & SAL_ENTRY_FREE);
    lay_set_entry(c->path, &l, g.u, sal_entry_make_free(sal_entry_loc(eu), 7));
    make_unclean(c->path);
    uint64_t h0, s0, h1, s1;
    TU_OK(tu_hash_file(c->path, &h0, &s0));
    char *out = malloc(GC_OUT_BYTES);
    setenv("SAL_GC_TEST_FAIL", "remember-table", 1);
    int code = gc_run(out, GC_OUT_BYTES, "repair", c->path);
    unsetenv("SAL_GC_TEST_FAIL");
    GC_EXPECT(code, 8, out);
    assert_non_null(strstr(out, "REFUSED: could not read the object table"));
    TU_OK(tu_hash_file(c->path, &h1, &s1));
    assert_true(h0 == h1 && s0 == s1);
    setenv("SAL_GC_TEST_FAIL", "restore-generations", 1);
    code = gc_run(out, GC_OUT_BYTES, "repair", c->path);
    unsetenv("SAL_GC_TEST_FAIL");
    GC_EXPECT(code, 8, out);
    assert_non_null(strstr(out, "repairing it at once"));
    assert_non_null(strstr(out, "FAILED to check the generations"));
    assert_null(strstr(out, "corrected:"));
    gc_expect_clean(c->path);
    expect_kept(c->path, &before, 0);
    free(out);
    snap_free(&before);
}

static void test_slot_short_file_bytes(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    sal_commit_slot other;
    TU_OK(tu_peek(c->path, SAL_SLOT_OFFSET(1 - l.slot_index), &other, sizeof other));
    assert_true(sal_slot_valid(&other, &l.sb));
    l.slot.file_bytes = l.sb.data_offset; /* below what its segments need */
    sal_slot_seal(&l.slot);
    TU_OK(tu_patch(c->path, SAL_SLOT_OFFSET(l.slot_index), &l.slot, sizeof l.slot));
    /* The library opens it, through the other slot. */
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_READONLY;
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_heap_close(h));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", "--json", c->path), 4, out);
    char want[64];
    snprintf(want, sizeof want, "\"commit\": {\"slot\": %u,", 1 - l.slot_index);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "\"library_opens\": true"));
    free(out);
    gc_expect_repair(c->path, 1);
    gc_expect_clean(c->path);
    expect_kept(c->path, &before, 0);
    snap_free(&before);
}

static void test_slot_protect_no_durable(void **state)
{
    tu_ctx *c = *state;
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s.copy", c->path);
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_write_begin(s));
    TU_OK(sal_root_set(s, 0, gc_alloc_filled(s, 64, 0, 1, 1, NULL)));
    TU_OK(sal_write_end(s));
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE)); /* both durable slots list a segment */
    TU_OK(sal_write_begin(s));
    TU_OK(sal_root_set(s, 1, gc_alloc_filled(s, 64, 0, 1, 2, NULL)));
    TU_OK(sal_write_end(s));
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    /* The file as a kill would leave it (read past the writer's lock). */
    char cmd[2 * PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "cp --sparse=always '%s' '%s'", c->path, copy);
    assert_int_equal(system(cmd), 0);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    sal_superblock sb;
    TU_OK(tu_peek(copy, 0, &sb, sizeof sb));
    for (unsigned i = 0; i < 2; i++)
        TU_OK(tu_xor_byte(copy, sb.segtab_offset + i * sb.segtab_bytes + 8, 0x10));
    sal_options ro;
    sal_options_init(&ro);
    ro.flags = SAL_OPEN_READONLY;
    assert_int_equal(sal_heap_open(copy, &ro, &h), SAL_ECORRUPT);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", copy), 4, out);
    assert_non_null(strstr(out, "no valid durable commit slot"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", copy), 4, out);
    assert_non_null(strstr(out, "repair cannot run"));
    free(out);
    unlink(copy);
}

static void test_live_behind_damage(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    /* H's size made impossible; the chain lies behind it. */
    uint32_t size = 0x7fffffff;
    TU_OK(tu_patch(c->path, lay_header_off(c->path, &l, g.h) +
                   offsetof(sal_object_header, size_bytes), &size, 4));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", c->path), 4, out);
    assert_null(strstr(out, "into padding"));
    assert_non_null(strstr(out, "damaged header(s) remain"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    uint64_t h1, s1, h2, s2;
    TU_OK(tu_hash_file(c->path, &h1, &s1));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    assert_non_null(strstr(out, "would change nothing here: not run"));
    TU_OK(tu_hash_file(c->path, &h2, &s2));
    assert_true(h1 == h2 && s1 == s2);
    gc_snap after;
    snap_take(c->path, &after);
    assert_non_null(snap_find(&after, g.chain));
    assert_null(snap_find(&after, g.h));
    snap_free(&after);
    free(out);
    snap_free(&before);
}

/* A volatile commit slot with a valid checksum and a durable flag that
 * does not match its position (open ignores it): check predicts that
 * repair empties it, and repair must (its re-test used to ask only for
 * the library's validity, which does not look at the flag, so it left
 * the slot and the heap never checked clean). */
static void test_invalid_volatile_slot_emptied(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    sal_commit_slot forged = l.slot; /* durable = 1, in a volatile place */
    forged.epoch++;
    sal_slot_seal(&forged);
    assert_true(sal_slot_valid(&forged, &l.sb));
    TU_OK(tu_patch(c->path, SAL_SLOT_OFFSET(2), &forged, sizeof forged));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", c->path), 4, out);
    assert_non_null(strstr(out, "durable flag does not match"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 1, out);
    assert_non_null(strstr(out, "emptied invalid commit slot 2"));
    free(out);
    gc_expect_clean(c->path);
    sal_commit_slot now;
    TU_OK(tu_peek(c->path, SAL_SLOT_OFFSET(2), &now, sizeof now));
    sal_commit_slot zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&now, &zero, sizeof now);
    expect_kept(c->path, &before, 0);
    snap_free(&before);
}

/* An unclean heap whose segment record ends 16 bytes into a word that is
 * neither padding nor room for a header: the check calls it a header cut
 * short; the repair at once must see it too (the library's sweep stopped
 * there silently, repair said "corrected" and the check after it still
 * found the damage; only a second repair padded it). */
static void test_unclean_short_tail(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_layout l;
    gc_snap before;
    build(state, &g, &l, &before);
    uint64_t seg = lay_segment_of(&l, lay_header_off(c->path, &l, g.a));
    sal_segment_record rec = lay_record(c->path, &l, seg);
    uint64_t end = l.sb.data_offset + seg * l.sb.segment_bytes + rec.used_bytes;
    uint64_t zeros[2] = {0, 0}, junk = 0x00000000deadbeefull;
    TU_OK(tu_peek(c->path, end, zeros, sizeof zeros));
    assert_true(zeros[0] == 0 && zeros[1] == 0); /* past the committed range */
    TU_OK(tu_patch(c->path, end, &junk, 8));
    rec.used_bytes += 16;
    lay_set_record(c->path, &l, seg, &rec);
    make_unclean(c->path);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", "--dry-run", c->path), 4, out);
    assert_non_null(strstr(out, "cut short by the end of the committed range"));
    assert_non_null(strstr(out, "agrees with sal-gc's prediction"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 1, out);
    assert_non_null(strstr(out, "repairing it at once"));
    assert_non_null(strstr(out, "into padding"));
    free(out);
    gc_expect_clean(c->path);
    expect_kept(c->path, &before, 0);
    snap_free(&before);
}

static void test_refused_message(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    gc_layout l;
    lay_read(c->path, &l);
    /* A record out of range in the current segment table, resealed: the
     * library refuses the heap. */
    sal_segment_record rec = lay_record(c->path, &l, 0);
    rec.live_bytes = rec.used_bytes + 8;
    lay_set_record(c->path, &l, 0, &rec);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", c->path), 4, out);
    assert_null(strstr(out, "repair cannot run: \n"));
    assert_non_null(strstr(out, "repair cannot run: the library refuses this heap: "));
    assert_null(strstr(out, "walked: 0 object headers"));
    free(out);
}

static void test_examples_missing_value(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", c->path, "--examples"), 16, out);
    assert_non_null(strstr(out, "--examples needs a value"));
    free(out);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(test_table_located_inside),
        TU_TEST(test_table_located_stale_dead),
        TU_TEST(test_unclean_stale_reference),
        TU_TEST(test_unclean_damage_refused),
        TU_TEST(test_unclean_generations_failures),
        TU_TEST(record_cuts_whole_object),
        TU_TEST(test_slot_short_file_bytes),
        TU_TEST(test_slot_protect_no_durable),
        TU_TEST(test_live_behind_damage),
        TU_TEST(test_invalid_volatile_slot_emptied),
        TU_TEST(test_unclean_short_tail),
        TU_TEST(test_refused_message),
        TU_TEST(test_examples_missing_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
