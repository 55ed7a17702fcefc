/*
 * test_cow.c - copy-on-write: in place only when unique, uncommitted and
 * reached through a writable parent; otherwise a copy under a new id with
 * the children retained, stored where the old id was; path copying under a
 * snapshot leaves the snapshot untouched.
 */
#include "test_util.h"

#include "internal.h" /* sal_test_id_vec_fail */

static sal_object_info info_of(sal_session *s, sal_id id)
{
    sal_object_info info;
    TU_OK(sal_info(s, id, &info));
    return info;
}

static uint32_t rc_of(sal_session *s, sal_id id) { return info_of(s, id).refcount; }

static void expect_stale(sal_session *s, sal_id id)
{
    sal_object_info info;
    TU_ERR(sal_info(s, id, &info), SAL_ESTALE);
}

/* Check an object's payload (after its child slots) against a key. */
static void expect_payload(sal_session *s, sal_id id, size_t size, unsigned nrefs, uint64_t key)
{
    const void *p;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, id, &p));
    size_t bad = tu_check(p, size, nrefs * 8, key);
    TU_OK(sal_read_end(s));
    if (bad != TU_CHECK_OK)
        fail_msg("object %#" PRIx64 ": byte %zu differs from key %" PRIu64, id, bad, key);
}

static sal_id slot_of(sal_session *s, sal_id id, unsigned slot)
{
    const void *p;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, id, &p));
    sal_id v = ((const sal_id *)p)[slot];
    TU_OK(sal_read_end(s));
    return v;
}

/* ---------------------------------------------------------------------
 * sal_write
 * --------------------------------------------------------------------- */

static void write_unique_in_place(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a;
    void *p, *w;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 64, 0, 1, &a, &p));
    tu_fill(p, 64, 0, 1);
    /* In the section that allocated it. */
    sal_id w_id = a;
    TU_OK(sal_write(s, &w_id, &w));
    assert_int_equal(w_id, a);
    assert_ptr_equal(w, p);
    TU_OK(sal_write_end(s));

    /* In a later section: still unique and uncommitted, so in place. */
    TU_OK(sal_write_begin(s));
    w_id = a;
    TU_OK(sal_write(s, &w_id, &w));
    assert_int_equal(w_id, a);
    assert_int_equal(tu_check(w, 64, 0, 1), TU_CHECK_OK);
    tu_fill(w, 64, 0, 2);
    /* Twice in one section: same again. */
    void *w2;
    TU_OK(sal_write(s, &w_id, &w2));
    assert_int_equal(w_id, a);
    assert_ptr_equal(w2, w);
    TU_OK(sal_write_end(s));
    expect_payload(s, a, 64, 0, 2);
    sal_object_info info = info_of(s, a);
    assert_int_equal(info.refcount, 1);
    assert_int_equal(info.committed, 0);
    assert_int_equal(tu_stats(h).live_objects, 1);
    TU_OK(sal_release(s, a));
    tu_close_all(h, s);
}

static void write_shared_copies(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a, c1, c2;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &c1, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &c2, &p));
    TU_OK(sal_alloc(s, 100, 3, 42, &a, &p));
    TU_OK(sal_set_child(s, a, 0, c1));
    TU_OK(sal_set_child(s, a, 2, c2));
    tu_fill(p, 100, 24, 7);
    TU_OK(sal_write_end(s));

    TU_OK(sal_retain(s, a)); /* a is shared: refcount 2 */
    assert_int_equal(rc_of(s, a), 2);
    assert_int_equal(tu_stats(h).live_objects, 3);

    TU_OK(sal_write_begin(s));
    sal_id w_id = a;
    void *w;
    TU_OK(sal_write(s, &w_id, &w));
    assert_int_not_equal(w_id, a);
    /* The copy: same size, type, children, payload. */
    const sal_id *ws = w;
    assert_int_equal(ws[0], c1);
    assert_int_equal(ws[1], SAL_NULL_ID);
    assert_int_equal(ws[2], c2);
    assert_int_equal(tu_check(w, 100, 24, 7), TU_CHECK_OK);
    tu_fill(w, 100, 24, 8); /* change the copy */
    TU_OK(sal_write_end(s));

    sal_object_info ci = info_of(s, w_id);
    assert_int_equal(ci.size_bytes, 100);
    assert_int_equal(ci.nrefs, 3);
    assert_int_equal(ci.type, 42);
    assert_int_equal(ci.refcount, 1);
    assert_int_equal(ci.committed, 0);
    /* The old object lost our reference (passed in) but kept the other. */
    assert_int_equal(rc_of(s, a), 1);
    expect_payload(s, a, 100, 3, 7);
    expect_payload(s, w_id, 100, 3, 8);
    /* Children are retained by the copy. */
    assert_int_equal(rc_of(s, c1), 2);
    assert_int_equal(rc_of(s, c2), 2);
    assert_int_equal(tu_stats(h).live_objects, 4);

    /* Dropping the old one: children back to 1, owned by the copy. */
    TU_OK(sal_release(s, a));
    expect_stale(s, a);
    assert_int_equal(rc_of(s, c1), 1);
    assert_int_equal(rc_of(s, c2), 1);
    /* The copy is now written in place. */
    TU_OK(sal_write_begin(s));
    sal_id w2 = w_id;
    TU_OK(sal_write(s, &w2, &w));
    assert_int_equal(w2, w_id);
    TU_OK(sal_write_end(s));
    TU_OK(sal_release(s, w_id));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.live_bytes, 0);
    tu_close_all(h, s);
}

/* After a reopen every object is committed: sal_write copies even at
 * refcount 1.  The original is dying (our reference was its only one), so
 * the copy takes its children over: their counts stay 1. */
static void write_committed_copies(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a, ch;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &ch, &p));
    tu_fill(p, 8, 0, 99);
    TU_OK(sal_alloc(s, 48, 1, 3, &a, &p));
    TU_OK(sal_set_child(s, a, 0, ch));
    tu_fill(p, 48, 8, 5);
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, a));
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id r;
    TU_OK(sal_root_get(s, 0, &r));
    assert_int_equal(r, a);
    TU_OK(tu_root_set(s, 0, SAL_NULL_ID)); /* now we hold the only reference */
    sal_object_info info = info_of(s, a);
    assert_int_equal(info.refcount, 1);
    assert_int_equal(info.committed, 1);
    assert_int_equal(info_of(s, ch).committed, 1);

    TU_OK(sal_write_begin(s));
    void *w;
    TU_OK(sal_write(s, &r, &w));
    assert_int_not_equal(r, a);
    assert_int_equal(((sal_id *)w)[0], ch);
    assert_int_equal(tu_check(w, 48, 8, 5), TU_CHECK_OK);
    tu_fill(w, 48, 8, 6);
    TU_OK(sal_write_end(s));
    /* The original died: its only reference was passed to sal_write. */
    expect_stale(s, a);
    assert_int_equal(rc_of(s, ch), 1);
    info = info_of(s, r);
    assert_int_equal(info.committed, 0);
    assert_int_equal(info.refcount, 1);
    assert_int_equal(tu_stats(h).live_objects, 2);
    TU_OK(tu_root_set(s, 0, r));
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id r2;
    TU_OK(sal_root_get(s, 0, &r2));
    assert_int_equal(r2, r);
    expect_payload(s, r2, 48, 1, 6);
    assert_int_equal(slot_of(s, r2, 0), ch);
    expect_payload(s, ch, 8, 0, 99);
    assert_int_equal(tu_stats(h).live_objects, 2);
    TU_OK(sal_release(s, r2));
    tu_close_all(h, s);
}

/* ---------------------------------------------------------------------
 * sal_write_child and sal_set_child
 * --------------------------------------------------------------------- */

static void write_child_unique_in_place(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, child;
    void *p, *cp;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 2, 0, &parent, &p));
    TU_OK(sal_alloc(s, 32, 0, 0, &child, &cp));
    tu_fill(cp, 32, 0, 1);
    TU_OK(sal_set_child(s, parent, 1, child));
    sal_id got = 0;
    void *w;
    TU_OK(sal_write_child(s, parent, 1, &got, &w));
    assert_int_equal(got, child);
    assert_ptr_equal(w, cp);
    TU_OK(sal_write_end(s));

    /* Next section: parent made writable through sal_write (in place),
     * then the unique child in place too. */
    TU_OK(sal_write_begin(s));
    sal_id pw = parent;
    TU_OK(sal_write(s, &pw, &p));
    assert_int_equal(pw, parent);
    TU_OK(sal_write_child(s, parent, 1, &got, &w));
    assert_int_equal(got, child);
    tu_fill(w, 32, 0, 2);
    /* child_id_out may be NULL */
    TU_OK(sal_write_child(s, parent, 1, NULL, &w));
    TU_OK(sal_write_end(s));
    expect_payload(s, child, 32, 0, 2);
    assert_int_equal(slot_of(s, parent, 1), child);
    assert_int_equal(rc_of(s, child), 1);
    assert_int_equal(tu_stats(h).live_objects, 2);
    TU_OK(sal_release(s, parent));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

static void write_child_shared_copies(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, child, grand;
    void *p, *cp;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 24, 3, 0, &parent, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &grand, &cp));
    TU_OK(sal_alloc(s, 40, 1, 6, &child, &cp));
    tu_fill(cp, 40, 8, 10);
    TU_OK(sal_set_child(s, child, 0, grand));
    TU_OK(sal_set_child(s, parent, 2, child));
    TU_OK(sal_retain(s, child)); /* we share the child with the parent */
    sal_id got;
    void *w;
    TU_OK(sal_write_child(s, parent, 2, &got, &w));
    assert_int_not_equal(got, child);
    assert_int_equal(((sal_id *)w)[0], grand);
    assert_int_equal(tu_check(w, 40, 8, 10), TU_CHECK_OK);
    tu_fill(w, 40, 8, 11);
    /* The new id is in the parent's slot. */
    assert_int_equal(((sal_id *)p)[2], got);
    /* Writing it again in this section: in place now. */
    sal_id got2;
    void *w2;
    TU_OK(sal_write_child(s, parent, 2, &got2, &w2));
    assert_int_equal(got2, got);
    assert_ptr_equal(w2, w);
    TU_OK(sal_write_end(s));

    assert_int_equal(slot_of(s, parent, 2), got);
    /* The parent's reference to the old child was released; ours stays. */
    assert_int_equal(rc_of(s, child), 1);
    assert_int_equal(rc_of(s, got), 1);
    assert_int_equal(rc_of(s, grand), 2); /* old child and its copy */
    expect_payload(s, child, 40, 1, 10);  /* the old child unchanged */
    expect_payload(s, got, 40, 1, 11);
    sal_object_info ci = info_of(s, got);
    assert_int_equal(ci.type, 6);
    assert_int_equal(ci.size_bytes, 40);
    assert_int_equal(ci.nrefs, 1);
    TU_OK(sal_release(s, child));
    expect_stale(s, child);
    assert_int_equal(rc_of(s, grand), 1);
    TU_OK(sal_release(s, parent));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

static void write_child_committed_copies(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, child;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 1, 0, &parent, &p));
    tu_fill(p, 16, 8, 1);
    TU_OK(sal_alloc(s, 16, 0, 0, &child, &p));
    tu_fill(p, 16, 0, 2);
    TU_OK(sal_set_child(s, parent, 0, child));
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, parent));
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id r;
    TU_OK(sal_root_get(s, 0, &r));
    TU_OK(sal_write_begin(s));
    /* A committed parent is not writable until sal_write made it so. */
    void *w;
    TU_ERR(sal_write_child(s, r, 0, NULL, &w), SAL_ENOTWRITABLE);
    TU_OK(sal_write(s, &r, &w));
    assert_int_not_equal(r, parent);
    /* The child is committed (refcount 2 now: old parent + copy): copied. */
    sal_id got;
    TU_OK(sal_write_child(s, r, 0, &got, &w));
    assert_int_not_equal(got, child);
    assert_int_equal(tu_check(w, 16, 0, 2), TU_CHECK_OK);
    tu_fill(w, 16, 0, 3);
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, r)); /* the old parent dies, and its child */
    expect_stale(s, parent);
    expect_stale(s, child);
    assert_int_equal(tu_stats(h).live_objects, 2);
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id r2;
    TU_OK(sal_root_get(s, 0, &r2));
    assert_int_equal(r2, r);
    assert_int_equal(slot_of(s, r2, 0), got);
    expect_payload(s, got, 16, 0, 3);
    expect_payload(s, r2, 16, 1, 1);

    /* Committed child whose refcount is 1 (its parent is a fresh,
     * dying-original copy that took it over): still copied. */
    TU_OK(tu_root_set(s, 0, SAL_NULL_ID)); /* we hold the only reference */
    TU_OK(sal_write_begin(s));
    TU_OK(sal_write(s, &r2, &w));
    assert_int_not_equal(r2, r);
    assert_int_equal(rc_of(s, got), 1);
    assert_int_equal(info_of(s, got).committed, 1);
    sal_id got3;
    TU_OK(sal_write_child(s, r2, 0, &got3, &w));
    assert_int_not_equal(got3, got);
    TU_OK(sal_write_end(s));
    expect_stale(s, got);
    TU_OK(sal_release(s, r2));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

static void set_child_releases_old(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, a, b, keep;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 2, 0, &parent, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &a, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &b, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &keep, &p));
    TU_OK(sal_set_child(s, parent, 0, a));
    TU_OK(sal_set_child(s, parent, 0, b)); /* a dies */
    expect_stale(s, a);
    TU_OK(sal_retain(s, keep));
    TU_OK(sal_set_child(s, parent, 1, keep));
    assert_int_equal(rc_of(s, keep), 2);
    TU_OK(sal_set_child(s, parent, 1, SAL_NULL_ID)); /* keep survives */
    assert_int_equal(rc_of(s, keep), 1);
    TU_OK(sal_set_child(s, parent, 0, SAL_NULL_ID)); /* b dies */
    expect_stale(s, b);
    TU_OK(sal_set_child(s, parent, 0, SAL_NULL_ID)); /* null over null */
    TU_OK(sal_write_end(s));
    assert_int_equal(slot_of(s, parent, 0), SAL_NULL_ID);
    assert_int_equal(slot_of(s, parent, 1), SAL_NULL_ID);
    assert_int_equal(tu_stats(h).live_objects, 2);
    TU_OK(sal_release(s, parent));
    TU_OK(sal_release(s, keep));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

/* sal_set_child passes the caller's reference to the parent; an error must
 * mean that it did not (the caller then still owns `child` and releases
 * it).  A free of the slot's previous child that runs out of worklist
 * memory (a test build's hook) happens after the store: it must not be
 * reported as the store's failure. */
static void set_child_when_old_free_fails(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    TU_SKIP_WITHOUT_HOOK(sal_test_id_vec_fail(0), h, s);
    sal_id parent, old, kid, b;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 1, 0, &parent, &p));
    TU_OK(sal_alloc(s, 8, 1, 0, &old, &p)); /* a child: its free needs the worklist */
    TU_OK(sal_alloc(s, 8, 0, 0, &kid, &p));
    TU_OK(sal_set_child(s, old, 0, kid));
    TU_OK(sal_set_child(s, parent, 0, old));
    TU_OK(sal_alloc(s, 8, 0, 0, &b, &p));
    TU_OK(sal_test_id_vec_fail(1));
    int rc = sal_set_child(s, parent, 0, b);
    TU_OK(sal_test_id_vec_fail(0));
    TU_OK(sal_write_end(s));
    sal_id now = slot_of(s, parent, 0);
    if (rc != 0 && now != old)
        fail_msg("sal_set_child returned %d (%s) but the slot holds the new child: the "
                 "caller, told it failed, still counts the reference as its own",
                 rc, sal_strerror(rc));
    TU_OK(rc);
    assert_int_equal(now, b);
    assert_int_equal(rc_of(s, b), 1); /* the parent's */
    TU_OK(sal_release(s, parent));
    expect_stale(s, b);
    tu_close_all(h, s);
}

/* Write access to a child is asked of its writable parent: a parent that
 * is shared, committed, or only writable in an earlier section is not. */
/* The same when another session of the thread publishes: session A
 * builds W -> C, session B (same thread, its own write section) publishes
 * W.  A's grant on C must end too. */
static void publish_by_other_session_ends_grants(void **state)
{
    tu_ctx *c = *state;
    sal_session *a, *b, *r;
    sal_heap *h = tu_open_small(c, &a);
    TU_OK(sal_session_open(h, &b));
    TU_OK(sal_reader_open(h, &r));
    sal_id w, ch, snap, x;
    void *p;
    const void *q;
    TU_OK(sal_write_begin(a));
    TU_OK(sal_alloc(a, 8, 1, 0, &w, &p));
    TU_OK(sal_alloc(a, 8, 1, 0, &ch, &p));
    TU_OK(sal_set_child(a, w, 0, ch));
    TU_OK(sal_write_begin(b));
    TU_OK(sal_root_set(b, 0, w)); /* a's reference to w goes to the root */
    TU_OK(sal_write_end(b));
    TU_OK(sal_root_get(r, 0, &snap));
    assert_true(snap == w);
    TU_OK(sal_alloc(a, 8, 0, 0, &x, &p));
    TU_ERR(sal_set_child(a, ch, 0, x), SAL_ENOTWRITABLE);
    TU_ERR(sal_write_child(a, ch, 0, NULL, &p), SAL_ENOTWRITABLE);
    TU_OK(sal_release(a, x));
    TU_OK(sal_write_end(a));
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read(r, ch, &q));
    assert_true(*(const sal_id *)q == SAL_NULL_ID);
    TU_OK(sal_read_end(r));
    TU_OK(sal_release(r, snap));
    TU_OK(sal_session_close(r));
    TU_OK(sal_session_close(b));
    tu_close_all(h, a);
}

/* Publishing ends the section's grants.  W -> C, both allocated in the
 * section; W is published and a reader takes it.  W itself is refused
 * (shared), and C, whose own count is 1, must be refused too: readers
 * reach it through W.  Before, C passed on its own and a reader's
 * snapshot changed in place. */
static void publish_ends_grants(void **state)
{
    tu_ctx *c = *state;
    sal_session *s, *r;
    sal_heap *h = tu_open_small(c, &s);
    TU_OK(sal_reader_open(h, &r));
    for (int cas = 0; cas < 2; cas++) {
        sal_id w, ch, x, snap, kept;
        void *p;
        const void *q;
        TU_OK(sal_write_begin(s));
        TU_OK(sal_alloc(s, 8, 1, 0, &w, &p));
        TU_OK(sal_alloc(s, 8, 1, 0, &ch, &p));
        TU_OK(sal_set_child(s, w, 0, ch));
        TU_OK(sal_retain(s, w));
        if (cas) {
            TU_OK(sal_root_get(s, 0, &kept));
            TU_OK(sal_root_cas(s, 0, kept, w));
            assert_true(kept == SAL_NULL_ID); /* emptied by the first round */
        } else {
            TU_OK(sal_root_set(s, 0, w));
        }
        TU_OK(sal_root_get(r, 0, &snap));
        assert_true(snap == w);
        TU_ERR(sal_set_child(s, w, 0, SAL_NULL_ID), SAL_ENOTWRITABLE);
        TU_OK(sal_alloc(s, 8, 0, 0, &x, &p));
        TU_ERR(sal_set_child(s, ch, 0, x), SAL_ENOTWRITABLE);
        TU_ERR(sal_write_child(s, ch, 0, NULL, &p), SAL_ENOTWRITABLE);
        /* x, allocated after the publication, is granted; and the path
         * from the root is copied as usual. */
        TU_OK(sal_write(s, &x, &p));
        sal_id w2 = w;
        TU_OK(sal_write(s, &w2, &p));
        assert_true(w2 != w);
        sal_id c2;
        TU_OK(sal_write_child(s, w2, 0, &c2, &p));
        assert_true(c2 != ch);
        TU_OK(sal_set_child(s, c2, 0, x));
        TU_OK(sal_write_end(s));
        /* The reader's snapshot is as published: C's slot is empty. */
        TU_OK(sal_read_begin(r));
        TU_OK(sal_read(r, snap, &q));
        assert_true(*(const sal_id *)q == ch);
        TU_OK(sal_read(r, ch, &q));
        assert_true(*(const sal_id *)q == SAL_NULL_ID);
        TU_OK(sal_read_end(r));
        TU_OK(sal_release(r, snap));
        TU_OK(sal_write_begin(s));
        TU_OK(sal_root_set(s, 0, SAL_NULL_ID));
        TU_OK(sal_write_end(s));
        TU_OK(sal_release(s, w2));
    }
    assert_int_equal(tu_stats(h).live_objects, 0);
    TU_OK(sal_session_close(r));
    tu_close_all(h, s);
}

static void parent_not_writable(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, child;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 2, 0, &parent, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &child, &p));
    TU_OK(sal_set_child(s, parent, 0, child));
    /* slot out of range, and an empty slot */
    TU_ERR(sal_write_child(s, parent, 2, NULL, &p), SAL_EINVAL);
    TU_ERR(sal_write_child(s, parent, 1, NULL, &p), SAL_EINVAL);
    TU_ERR(sal_set_child(s, parent, 2, SAL_NULL_ID), SAL_EINVAL);
    TU_OK(sal_write_end(s));

    /* An earlier section's write access has ended. */
    TU_OK(sal_write_begin(s));
    TU_ERR(sal_write_child(s, parent, 0, NULL, &p), SAL_ENOTWRITABLE);
    TU_ERR(sal_set_child(s, parent, 1, SAL_NULL_ID), SAL_ENOTWRITABLE);
    TU_OK(sal_write_end(s));

    /* A shared parent is not writable. */
    TU_OK(sal_retain(s, parent));
    TU_OK(sal_write_begin(s));
    TU_ERR(sal_write_child(s, parent, 0, NULL, &p), SAL_ENOTWRITABLE);
    TU_ERR(sal_set_child(s, parent, 1, SAL_NULL_ID), SAL_ENOTWRITABLE);
    TU_OK(sal_write_end(s));
    TU_OK(sal_release(s, parent));

    /* Outside a section: no write access at all. */
    TU_ERR(sal_write_child(s, parent, 0, NULL, &p), SAL_ENOSECTION);

    /* Another session's write section does not make it writable here. */
    sal_session *s2;
    TU_OK(sal_session_open(h, &s2));
    TU_OK(sal_write_begin(s));
    sal_id pw = parent;
    TU_OK(sal_write(s, &pw, &p));
    assert_int_equal(pw, parent);
    TU_OK(sal_write_begin(s2));
    TU_ERR(sal_write_child(s2, parent, 0, NULL, &p), SAL_ENOTWRITABLE);
    TU_OK(sal_write_end(s2));
    TU_OK(sal_write_child(s, parent, 0, NULL, &p));
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s2));
    assert_int_equal(tu_stats(h).live_objects, 2);
    TU_OK(sal_release(s, parent));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

/* ---------------------------------------------------------------------
 * Path copying under a snapshot
 * --------------------------------------------------------------------- */

enum { DEPTH = 8, FAN = 4 };

/* A complete FAN-ary tree of DEPTH levels; node payload: FAN child slots
 * (leaves: none) + a u64 value. */
static sal_id build_tree(sal_session *s, int depth, uint64_t *counter)
{
    unsigned nrefs = depth > 1 ? FAN : 0;
    sal_id id;
    void *p;
    TU_OK(sal_alloc(s, nrefs * 8 + 8, nrefs, (unsigned)depth, &id, &p));
    ((uint64_t *)p)[nrefs] = (*counter)++;
    for (unsigned k = 0; k < nrefs; k++) {
        sal_id ch = build_tree(s, depth - 1, counter);
        TU_OK(sal_set_child(s, id, k, ch));
    }
    return id;
}

static uint64_t tree_nodes(int depth)
{
    uint64_t n = 0, level = 1;
    for (int d = 0; d < depth; d++, level *= FAN)
        n += level;
    return n;
}

static void path_copy_under_snapshot(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    uint64_t counter = 0;
    TU_OK(sal_write_begin(s));
    sal_id root = build_tree(s, DEPTH, &counter);
    TU_OK(sal_write_end(s));
    const uint64_t nodes = tree_nodes(DEPTH);
    assert_int_equal(counter, nodes);
    TU_OK(tu_root_set(s, 0, root));
    assert_int_equal(tu_stats(h).live_objects, nodes);

    sal_id snap;
    TU_OK(sal_root_get(s, 0, &snap));
    assert_int_equal(snap, root);

    /* Record the path of old ids: always slot 1. */
    sal_id old_path[DEPTH];
    old_path[0] = snap;
    for (int d = 1; d < DEPTH; d++)
        old_path[d] = slot_of(s, old_path[d - 1], 1);
    const void *lp;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, old_path[DEPTH - 1], &lp));
    const uint64_t old_leaf = ((const uint64_t *)lp)[0];
    TU_OK(sal_read_end(s));
    assert_true(old_leaf < nodes);

    sal_id work;
    TU_OK(sal_root_get(s, 0, &work));
    TU_OK(sal_write_begin(s));
    void *w;
    TU_OK(sal_write(s, &work, &w));
    assert_int_not_equal(work, snap);
    sal_id cur = work;
    sal_id new_path[DEPTH];
    new_path[0] = work;
    for (int d = 1; d < DEPTH; d++) {
        sal_id got;
        TU_OK(sal_write_child(s, cur, 1, &got, &w));
        if (got == old_path[d])
            fail_msg("depth %d: the node under a snapshot was written in place", d);
        new_path[d] = got;
        cur = got;
    }
    unsigned leaf_nrefs = 0;
    ((uint64_t *)w)[leaf_nrefs] = 1000000;
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, work));

    /* The snapshot is unchanged: same ids along the path, same values. */
    for (int d = 1; d < DEPTH; d++)
        assert_int_equal(slot_of(s, old_path[d - 1], 1), old_path[d]);
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, old_path[DEPTH - 1], &lp));
    assert_int_equal(((const uint64_t *)lp)[0], old_leaf);
    TU_OK(sal_read(s, new_path[DEPTH - 1], &lp));
    assert_int_equal(((const uint64_t *)lp)[0], 1000000);
    TU_OK(sal_read_end(s));
    /* Off-path subtrees are shared by both versions. */
    for (int d = 0; d < DEPTH - 1; d++) {
        sal_id sib_old = slot_of(s, old_path[d], 0);
        sal_id sib_new = slot_of(s, new_path[d], 0);
        assert_int_equal(sib_old, sib_new);
        assert_int_equal(rc_of(s, sib_old), 2);
    }
    for (int d = 0; d < DEPTH; d++) {
        assert_int_equal(rc_of(s, old_path[d]), 1);
        assert_int_equal(rc_of(s, new_path[d]), 1);
    }
    assert_int_equal(tu_stats(h).live_objects, nodes + DEPTH);

    /* Releasing the snapshot frees exactly the old path. */
    TU_OK(sal_release(s, snap));
    assert_int_equal(tu_stats(h).live_objects, nodes);
    for (int d = 0; d < DEPTH; d++)
        expect_stale(s, old_path[d]);
    for (int d = 0; d < DEPTH - 1; d++)
        assert_int_equal(rc_of(s, slot_of(s, new_path[d], 0)), 1);
    TU_OK(tu_root_set(s, 0, SAL_NULL_ID));
    assert_int_equal(tu_stats(h).live_objects, 0);
    assert_int_equal(tu_stats(h).live_bytes, 0);
    tu_close_all(h, s);
}

/* A copy whose children cannot all be retained is taken back: here a
 * child was released once too often (its parent still lists it), and the
 * error leaves the object, its counts and its parent's slot as they were. */
static void write_shared_dangling_child(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a, c1, c2, c3, parent;
    void *p, *pp;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &c1, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &c2, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &c3, &p));
    TU_OK(sal_alloc(s, 64, 3, 0, &a, &p));
    tu_fill(p, 64, 24, 5);
    TU_OK(sal_set_child(s, a, 0, c1));
    TU_OK(sal_set_child(s, a, 1, c2));
    TU_OK(sal_set_child(s, a, 2, c3));
    TU_OK(sal_alloc(s, 8, 1, 0, &parent, &pp));
    TU_OK(sal_retain(s, a));
    TU_OK(sal_set_child(s, parent, 0, a)); /* a: ours and the parent's */
    TU_OK(sal_release(s, c2));             /* the misuse: a still lists c2 */
    TU_OK(sal_write_end(s));
    assert_int_equal(rc_of(s, a), 2);
    sal_heap_stats before = tu_stats(h);

    TU_OK(sal_write_begin(s));
    sal_id w_id = a;
    void *w = NULL;
    TU_ERR(sal_write(s, &w_id, &w), SAL_ESTALE);
    assert_int_equal(w_id, a);
    sal_id pid = parent;
    TU_OK(sal_write(s, &pid, &pp)); /* the parent, writable in this section */
    assert_int_equal(pid, parent);
    sal_id got = SAL_NULL_ID;
    TU_ERR(sal_write_child(s, parent, 0, &got, &w), SAL_ESTALE);
    assert_int_equal(((const sal_id *)pp)[0], a);
    TU_OK(sal_write_end(s));

    /* Nothing changed: no copy left behind, no count taken or lost. */
    assert_int_equal(rc_of(s, a), 2);
    assert_int_equal(rc_of(s, c1), 1);
    assert_int_equal(rc_of(s, c3), 1);
    expect_stale(s, c2);
    expect_payload(s, a, 64, 3, 5);
    sal_heap_stats after = tu_stats(h);
    assert_int_equal(after.live_objects, before.live_objects);
    assert_int_equal(after.live_bytes, before.live_bytes);

    /* Freeing a reports the dangling child and frees the rest. */
    TU_OK(sal_release(s, parent));
    TU_ERR(sal_release(s, a), SAL_ECORRUPT);
    expect_stale(s, c1);
    expect_stale(s, c3);
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(write_unique_in_place),
        TU_TEST(write_shared_copies),
        TU_TEST(write_shared_dangling_child),
        TU_TEST(write_committed_copies),
        TU_TEST(write_child_unique_in_place),
        TU_TEST(write_child_shared_copies),
        TU_TEST(write_child_committed_copies),
        TU_TEST(set_child_releases_old),
        TU_TEST(set_child_when_old_free_fails),
        TU_TEST(parent_not_writable),
        TU_TEST(publish_ends_grants),
        TU_TEST(publish_by_other_session_ends_grants),
        TU_TEST(path_copy_under_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
