/*
 * test_object.c - objects: allocation, reading, info, retain/release,
 * iterative freeing (a 10-million-long chain on a 64 KiB stack), stale ids
 * (also after their slot is reused), id and space reuse.
 *
 * ctest runs this file twice: `object` (everything but chain_*) and
 * `object_chain` (the big chain tests).
 */
#include "test_util.h"

#include "test_hooks.h" /* internal.h: sal_test_id_vec_fail and the recovery hook */

static uint32_t refcount_of(sal_session *s, sal_id id)
{
    sal_object_info info;
    TU_OK(sal_info(s, id, &info));
    return info.refcount;
}

static void expect_stale(sal_session *s, sal_id id, const char *what)
{
    sal_object_info info;
    const void *p;
    int rc;
    if ((rc = sal_info(s, id, &info)) != SAL_ESTALE)
        fail_msg("%s: sal_info(%#" PRIx64 ") = %d (%s), expected SAL_ESTALE", what, id, rc,
                 sal_strerror(rc));
    TU_OK(sal_read_begin(s));
    rc = sal_read(s, id, &p);
    TU_OK(sal_read_end(s));
    if (rc != SAL_ESTALE)
        fail_msg("%s: sal_read(%#" PRIx64 ") = %d (%s), expected SAL_ESTALE", what, id, rc,
                 sal_strerror(rc));
    if ((rc = sal_retain(s, id)) != SAL_ESTALE)
        fail_msg("%s: sal_retain(%#" PRIx64 ") = %d (%s), expected SAL_ESTALE", what, id, rc,
                 sal_strerror(rc));
    if ((rc = sal_release(s, id)) != SAL_ESTALE)
        fail_msg("%s: sal_release(%#" PRIx64 ") = %d (%s), expected SAL_ESTALE", what, id, rc,
                 sal_strerror(rc));
}

/* ---------------------------------------------------------------------
 * Basics
 * --------------------------------------------------------------------- */

static void alloc_read_info(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    struct {
        size_t size;
        unsigned nrefs, type;
    } cases[] = {{0, 0, 0},     {1, 0, 1},       {7, 0, 2},      {8, 1, 3},   {9, 1, 4},
                 {100, 3, 255}, {4096, 0, 128},  {4096, 512, 9}, {65536, 0, 7},
                 {8 * SAL_MAX_REFS, SAL_MAX_REFS, 77}};
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    sal_id ids[N];
    sal_heap_stats st0 = tu_stats(h);
    uint64_t live_bytes = st0.live_bytes;
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < N; i++) {
        void *p = NULL;
        ids[i] = SAL_NULL_ID;
        TU_OK(sal_alloc(s, cases[i].size, cases[i].nrefs, cases[i].type, &ids[i], &p));
        assert_int_not_equal(ids[i], SAL_NULL_ID);
        assert_int_equal(ids[i] >> 56, 0); /* bits 56..63 are zero */
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 8, 0);
        for (unsigned k = 0; k < cases[i].nrefs; k++)
            assert_int_equal(((sal_id *)p)[k], SAL_NULL_ID);
        tu_fill(p, cases[i].size, cases[i].nrefs * 8, (uint64_t)i);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(ids[i], ids[j]);
        /* The pointer from sal_read is the same object. */
        const void *q;
        TU_OK(sal_read(s, ids[i], &q));
        assert_ptr_equal(q, p);
        sal_heap_stats st = tu_stats(h);
        assert_int_equal(st.live_objects, st0.live_objects + (uint64_t)i + 1);
        assert_true(st.live_bytes >= live_bytes + cases[i].size);
        assert_true(st.live_bytes <= live_bytes + cases[i].size + 64);
        live_bytes = st.live_bytes;
    }
    TU_OK(sal_write_end(s));
    TU_OK(sal_read_begin(s));
    for (int i = 0; i < N; i++) {
        sal_object_info info;
        memset(&info, 0xee, sizeof(info));
        TU_OK(sal_info(s, ids[i], &info));
        assert_int_equal(info.size_bytes, cases[i].size);
        assert_int_equal(info.nrefs, cases[i].nrefs);
        assert_int_equal(info.type, cases[i].type);
        assert_int_equal(info.refcount, 1);
        assert_int_equal(info.committed, 0);
        const void *q;
        TU_OK(sal_read(s, ids[i], &q));
        assert_int_equal(tu_check(q, cases[i].size, cases[i].nrefs * 8, (uint64_t)i),
                         TU_CHECK_OK);
    }
    TU_OK(sal_read_end(s));
    /* sal_info needs no section. */
    sal_object_info info;
    TU_OK(sal_info(s, ids[5], &info));
    for (int i = 0; i < N; i++)
        TU_OK(sal_release(s, ids[i]));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, st0.live_objects);
    assert_int_equal(st.live_bytes, st0.live_bytes);
    tu_close_all(h, s);
}

static void retain_release_counts(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 32, 0, 5, &a, &p));
    tu_fill(p, 32, 0, 5);
    TU_OK(sal_write_end(s));
    assert_int_equal(refcount_of(s, a), 1);
    for (uint32_t k = 2; k <= 1000; k++) {
        TU_OK(sal_retain(s, a));
        assert_int_equal(refcount_of(s, a), k);
    }
    for (uint32_t k = 999; k >= 1; k--) {
        TU_OK(sal_release(s, a));
        assert_int_equal(refcount_of(s, a), k);
    }
    const void *q;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, a, &q));
    assert_int_equal(tu_check(q, 32, 0, 5), TU_CHECK_OK);
    TU_OK(sal_read_end(s));
    assert_int_equal(tu_stats(h).live_objects, 1);
    TU_OK(sal_release(s, a));
    assert_int_equal(tu_stats(h).live_objects, 0);
    expect_stale(s, a, "released object");
    tu_close_all(h, s);
}

/* Releasing a parent releases its children; shared children survive as
 * long as another parent holds them. */
static void release_frees_children(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id p1, p2, shared, own1, own2, grand;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &grand, &p));
    TU_OK(sal_alloc(s, 16, 1, 0, &shared, &p));
    TU_OK(sal_set_child(s, shared, 0, grand));
    TU_OK(sal_alloc(s, 8, 0, 0, &own1, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &own2, &p));
    TU_OK(sal_alloc(s, 24, 3, 0, &p1, &p));
    TU_OK(sal_alloc(s, 24, 3, 0, &p2, &p));
    TU_OK(sal_retain(s, shared));
    TU_OK(sal_set_child(s, p1, 0, shared));
    TU_OK(sal_set_child(s, p1, 2, own1)); /* slot 1 stays null */
    TU_OK(sal_set_child(s, p2, 1, shared));
    TU_OK(sal_set_child(s, p2, 2, own2));
    TU_OK(sal_write_end(s));
    assert_int_equal(refcount_of(s, shared), 2);
    assert_int_equal(refcount_of(s, grand), 1);
    assert_int_equal(tu_stats(h).live_objects, 6);

    TU_OK(sal_release(s, p1));
    expect_stale(s, p1, "released parent");
    expect_stale(s, own1, "child of a released parent");
    assert_int_equal(refcount_of(s, shared), 1);
    assert_int_equal(refcount_of(s, grand), 1);
    assert_int_equal(tu_stats(h).live_objects, 4);

    TU_OK(sal_release(s, p2));
    expect_stale(s, p2, "second parent");
    expect_stale(s, own2, "its own child");
    expect_stale(s, shared, "shared child, now unreferenced");
    expect_stale(s, grand, "grandchild");
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.live_bytes, 0);
    tu_close_all(h, s);
}

/* A free that runs out of memory for its worklist leaves the objects it
 * could not reach dying (SAL_ENOMEM).  The close is then not clean, and the
 * next open's recovery frees them: nothing stays counted that nothing
 * reaches. */
static void release_out_of_memory(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    TU_SKIP_WITHOUT_HOOK(sal_test_id_vec_fail(0), h, s);
    enum { WIDE = 600 }; /* more children than the worklist's first 256 */
    sal_id keep, parent, warm, child;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 40, 0, 0, &keep, &p));
    TU_OK(sal_root_set(s, 0, keep));
    TU_OK(sal_write_end(s));
    sal_heap_stats kept = tu_stats(h);
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, WIDE * 8, WIDE, 0, &parent, &p));
    for (unsigned i = 0; i < WIDE; i++) {
        TU_OK(sal_alloc(s, 8, 0, 0, &child, &p));
        TU_OK(sal_set_child(s, parent, i, child));
    }
    /* A first free with children gives the worklist its first block. */
    TU_OK(sal_alloc(s, 8, 1, 0, &warm, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &child, &p));
    TU_OK(sal_set_child(s, warm, 0, child));
    TU_OK(sal_release(s, warm));
    TU_OK(sal_write_end(s));

    TU_OK(sal_test_id_vec_fail(1));
    int rc = sal_release(s, parent);
    TU_OK(sal_test_id_vec_fail(0)); /* before any assertion: later tests need it off */
    TU_ERR(rc, SAL_ENOMEM);
    expect_stale(s, parent, "the parent, reclaimed");
    sal_heap_stats left = tu_stats(h);
    assert_true(left.live_objects > kept.live_objects);
    tu_close_all(h, s);

    TU_ERR(sal_heap_open(c->path, NULL, &h), SAL_EUNCLEAN);
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_RECOVER;
    TU_OK(sal_heap_open(c->path, &o, &h));
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    assert_int_equal(rep.recovered, 1);
    assert_int_equal(rep.objects_live, 1);
    TU_OK(sal_session_open(h, &s));
    sal_heap_stats after = tu_stats(h);
    assert_int_equal(after.live_objects, kept.live_objects);
    assert_int_equal(after.live_bytes, kept.live_bytes);
    assert_int_equal(refcount_of(s, keep), 1);
    tu_close_all(h, s);
    print_message("release_out_of_memory: %" PRIu64 " objects left by the free, "
                  "freed by the recovery\n",
                  left.live_objects - kept.live_objects);
}

/* An object may hold the same child twice, and null slots anywhere. */
static void same_child_twice(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id parent, child;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &child, &p));
    TU_OK(sal_alloc(s, 40, 5, 0, &parent, &p));
    TU_OK(sal_retain(s, child));
    TU_OK(sal_retain(s, child));
    TU_OK(sal_set_child(s, parent, 1, child));
    TU_OK(sal_set_child(s, parent, 4, child));
    TU_OK(sal_write_end(s));
    assert_int_equal(refcount_of(s, child), 3);
    TU_OK(sal_release(s, parent));
    assert_int_equal(refcount_of(s, child), 1);
    TU_OK(sal_release(s, child));
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

/* A count that reaches SAL_REFCOUNT_SATURATED stays there and the object
 * is never freed by counting. */
static void refcount_saturates(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 0, 0, &a, &p));
    tu_fill(p, 16, 0, 16);
    TU_OK(sal_write_end(s));
    for (uint32_t k = 1; k < SAL_REFCOUNT_SATURATED - 1; k++)
        TU_OK(sal_retain(s, a));
    assert_int_equal(refcount_of(s, a), SAL_REFCOUNT_SATURATED - 1);
    TU_OK(sal_release(s, a));
    assert_int_equal(refcount_of(s, a), SAL_REFCOUNT_SATURATED - 2);
    TU_OK(sal_retain(s, a));
    TU_OK(sal_retain(s, a));
    assert_int_equal(refcount_of(s, a), SAL_REFCOUNT_SATURATED);
    for (int k = 0; k < 100; k++)
        TU_OK(sal_retain(s, a));
    assert_int_equal(refcount_of(s, a), SAL_REFCOUNT_SATURATED);
    for (int k = 0; k < 1000; k++)
        TU_OK(sal_release(s, a));
    assert_int_equal(refcount_of(s, a), SAL_REFCOUNT_SATURATED);
    const void *q;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, a, &q));
    assert_int_equal(tu_check(q, 16, 0, 16), TU_CHECK_OK);
    TU_OK(sal_read_end(s));
    assert_int_equal(tu_stats(h).live_objects, 1);
    tu_close_all(h, s);
}

/* ---------------------------------------------------------------------
 * Stale ids
 * --------------------------------------------------------------------- */

/* A released id is SAL_ESTALE from read/retain/release/info, also after
 * its table slot was given to a new object (same index, new generation),
 * which works normally.  Repeated for many reuses of one slot. */
static void stale_after_reuse(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    enum { REUSES = 300, MAX_TRIES = 200000 };
    sal_id *old = calloc(REUSES + 1, sizeof(sal_id));
    sal_id *hold = calloc(MAX_TRIES, sizeof(sal_id));
    assert_non_null(old);
    assert_non_null(hold);
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 24, 0, 1, &old[0], &p));
    tu_fill(p, 24, 0, 0);
    TU_OK(sal_write_end(s));
    uint32_t index = tu_index(old[0]);
    uint64_t max_tries_used = 0;
    for (int r = 1; r <= REUSES; r++) {
        TU_OK(sal_release(s, old[r - 1]));
        expect_stale(s, old[r - 1], "just released");
        /* Allocate until the slot comes back (hold the others so that the
         * library must eventually hand out the freed index). */
        sal_id got = SAL_NULL_ID;
        uint64_t n = 0;
        TU_OK(sal_write_begin(s));
        while (n < MAX_TRIES) {
            sal_id id;
            TU_OK(sal_alloc(s, 24, 0, 1, &id, &p));
            tu_fill(p, 24, 0, (uint64_t)r);
            if (tu_index(id) == index) {
                got = id;
                break;
            }
            hold[n++] = id;
        }
        TU_OK(sal_write_end(s));
        if (got == SAL_NULL_ID)
            fail_msg("reuse %d: the released index %u did not come back in %d allocations", r,
                     index, MAX_TRIES);
        if (n > max_tries_used)
            max_tries_used = n;
        for (uint64_t k = 0; k < n; k++)
            TU_OK(sal_release(s, hold[k]));
        old[r] = got;
        /* New generation: differs from every earlier id of this slot. */
        for (int k = 0; k < r; k++) {
            if (old[k] == got)
                fail_msg("reuse %d handed out id %#" PRIx64 " again", r, got);
            expect_stale(s, old[k], "an older id of a reused slot");
        }
        assert_int_not_equal(tu_gen(got), tu_gen(old[r - 1]));
        /* The new one works. */
        assert_int_equal(refcount_of(s, got), 1);
        TU_OK(sal_retain(s, got));
        assert_int_equal(refcount_of(s, got), 2);
        TU_OK(sal_release(s, got));
        const void *q;
        TU_OK(sal_read_begin(s));
        TU_OK(sal_read(s, got, &q));
        assert_int_equal(tu_check(q, 24, 0, (uint64_t)r), TU_CHECK_OK);
        TU_OK(sal_read_end(s));
    }
    print_message("stale_after_reuse: the freed index came back after at most %" PRIu64
                  " other allocations\n",
                  max_tries_used);
    TU_OK(sal_release(s, old[REUSES]));
    assert_int_equal(tu_stats(h).live_objects, 0);
    free(old);
    free(hold);
    tu_close_all(h, s);
}

/* Ids handed out after the last commit by a process that was then killed
 * are stale after the recovery, also once their entries are reused: a
 * program may have kept one outside the heap, and it must not name a new
 * object.  The killed process reused its entries a few times (newer
 * generations), kept objects in segments past the committed file length
 * and took ids past the committed high-water mark.  The recovery zeroed
 * those entries (the next id of each was generation 0 again) and could
 * not find the generation of a live entry whose header lay past the
 * committed length. */
enum { LOST_IDS = 3000, LOST_ROUNDS = 4, LOST_BYTES = 1000 };

static int child_lose_ids(void *arg)
{
    tu_ctx *c = arg;
    sal_heap *h;
    sal_session *s;
    sal_id ids[LOST_IDS];
    void *p;
    if (sal_heap_open(c->path, NULL, &h) || sal_session_open(h, &s) || sal_write_begin(s))
        return 10;
    for (int round = 0; round < LOST_ROUNDS; round++) {
        for (int i = 0; i < LOST_IDS; i++)
            if (sal_alloc(s, LOST_BYTES, 0, 0, &ids[i], &p))
                return 11;
        if (round + 1 == LOST_ROUNDS)
            break; /* the last round's objects are live at the kill */
        for (int i = 0; i < LOST_IDS; i++)
            if (sal_release(s, ids[i]))
                return 12;
    }
    char path[PATH_MAX];
    tu_join(path, sizeof path, c->dir, "lost-ids");
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(ids, sizeof ids, 1, f) != 1 || fclose(f))
        return 13;
    raise(SIGKILL); /* no sync, no close: the ids' future is lost */
    return 14;
}

/* A recovery killed right after it forgot the table: the next one must
 * still know which entries were live (their generations are in their
 * headers only). */
static int child_recover_killed(void *path)
{
    return tu_open_killed_at_forgotten(path, SAL_OPEN_RECOVER);
}

enum { RECOVER_PLAIN, RECOVER_KILLED_FIRST, RECOVER_BY_REPAIR };

static void lost_ids_stale(tu_ctx *c, int how)
{
    int recovery_killed = how == RECOVER_KILLED_FIRST;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id kept;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 0, 0, &kept, &p));
    TU_OK(sal_root_set(s, 0, kept));
    TU_OK(sal_write_end(s));
    tu_close_all(h, s);

    int st = tu_in_child(child_lose_ids, c);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
        fail_msg("the child did not get to its kill (exit %d)", WEXITSTATUS(st));
    sal_id lost[LOST_IDS];
    char path[PATH_MAX];
    tu_join(path, sizeof path, c->dir, "lost-ids");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(lost, sizeof lost, 1, f), 1);
    fclose(f);
    if (recovery_killed) {
        st = tu_in_child(child_recover_killed, (void *)c->path);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fail_msg("the recovery was not killed (exit %d)", WEXITSTATUS(st));
    }

    sal_options o;
    sal_options_init(&o);
    o.flags = how == RECOVER_BY_REPAIR ? SAL_OPEN_REPAIR : SAL_OPEN_RECOVER;
    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    for (int i = 0; i < LOST_IDS; i++)
        expect_stale(s, lost[i], "an id of the lost future, before any allocation");
    /* Enough new objects to take every entry the lost ids used. */
    uint64_t n = LOST_IDS + 4 * 1024, reissued = 0;
    sal_id *fresh = calloc(n, sizeof *fresh);
    assert_non_null(fresh);
    TU_OK(sal_write_begin(s));
    for (uint64_t i = 0; i < n; i++)
        TU_OK(sal_alloc(s, 16, 0, 0, &fresh[i], &p));
    TU_OK(sal_write_end(s));
    qsort(lost, LOST_IDS, sizeof *lost, tu_cmp_u64);
    uint64_t reused_entries = 0;
    for (uint64_t i = 0; i < n; i++) {
        sal_id *hit = bsearch(&fresh[i], lost, LOST_IDS, sizeof *lost, tu_cmp_u64);
        reissued += hit != NULL;
        for (int k = 0; k < LOST_IDS && !hit; k++)
            if (tu_index(lost[k]) == tu_index(fresh[i])) {
                reused_entries++;
                break;
            }
    }
    if (reissued)
        fail_msg("%" PRIu64 " ids of the lost future were handed out again", reissued);
    /* The check above means something only if the entries came back. */
    assert_int_equal(reused_entries, LOST_IDS);
    for (int i = 0; i < LOST_IDS; i++)
        expect_stale(s, lost[i], "an id of the lost future, its entry reused");
    for (uint64_t i = 0; i < n; i++)
        TU_OK(sal_release(s, fresh[i]));
    free(fresh);
    tu_close_all(h, s);
}

static void lost_ids_stale_after_kill(void **state) { lost_ids_stale(*state, RECOVER_PLAIN); }

static void lost_ids_stale_after_killed_recovery(void **state)
{
    tu_ctx *c = *state;
    if (sal_test_recover_hook(NULL, NULL) == ENOSYS)
        skip(); /* a build without test hooks */
    lost_ids_stale(c, RECOVER_KILLED_FIRST);
}

/* The repair (SAL_OPEN_REPAIR, sal-gc repair) sweeps instead of trusting
 * the table's locations; in the same boot the table it remembers is still
 * exact, and the lost future's ids must stay stale there too. */
static void lost_ids_stale_after_repair(void **state)
{
    lost_ids_stale(*state, RECOVER_BY_REPAIR);
}

/* Ids of committed objects: released after a reopen, the id is stale at
 * once (even though the slot is not reused before the next commit), and
 * stays stale across another close/reopen. */
static void stale_committed(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    sal_id a, b;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 32, 0, 1, &a, &p));
    TU_OK(sal_alloc(s, 32, 1, 1, &b, &p));
    TU_OK(sal_retain(s, a));
    TU_OK(sal_set_child(s, b, 0, a));
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, a));
    TU_OK(tu_root_set(s, 1, b));
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_object_info info;
    TU_OK(sal_info(s, a, &info));
    assert_int_equal(info.committed, 1);
    assert_int_equal(info.refcount, 2);
    TU_OK(tu_root_set(s, 0, SAL_NULL_ID));
    assert_int_equal(refcount_of(s, a), 1);
    TU_OK(tu_root_set(s, 1, SAL_NULL_ID)); /* b dies, and with it a */
    expect_stale(s, b, "released committed object");
    expect_stale(s, a, "child of a released committed object");
    assert_int_equal(tu_stats(h).live_objects, 0);
    /* New objects do not bring the ids back. */
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < 1000; i++) {
        sal_id x;
        TU_OK(sal_alloc(s, 8, 0, 0, &x, &p));
        /* crash rule 2: an index the last commit references is not reused
         * before a later commit */
        assert_int_not_equal(tu_index(x), tu_index(a));
        assert_int_not_equal(tu_index(x), tu_index(b));
        TU_OK(sal_release(s, x));
    }
    TU_OK(sal_write_end(s));
    expect_stale(s, a, "after allocations");
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    expect_stale(s, a, "after reopen");
    expect_stale(s, b, "after reopen");
    assert_int_equal(tu_stats(h).live_objects, 0);
    tu_close_all(h, s);
}

/* ---------------------------------------------------------------------
 * Id and space reuse
 * --------------------------------------------------------------------- */

/* Rounds of allocating and releasing the same number of objects keep
 * ids_high_water bounded, whatever the release order, and space is
 * reused (the file does not grow round after round). */
static void ids_bounded_rounds(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0xbb67ae8584caa73bull;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s);
    const uint32_t n = (uint32_t)tu_scaled(50000, 4);
    const int rounds = 30;
    sal_id *ids = calloc(n, sizeof(sal_id));
    assert_non_null(ids);
    uint64_t hw1 = 0, file1 = 0;
    for (int r = 0; r < rounds; r++) {
        TU_OK(sal_write_begin(s));
        for (uint32_t i = 0; i < n; i++) {
            void *p;
            unsigned nrefs = (i % 3 == 0) ? 1 : 0;
            TU_OK(sal_alloc(s, 8 + (i % 7) * 8, nrefs, 0, &ids[i], &p));
            if ((i & 4095) == 4095) {
                TU_OK(sal_write_end(s));
                TU_OK(sal_write_begin(s));
            }
        }
        TU_OK(sal_write_end(s));
        assert_int_equal(tu_stats(h).live_objects, n);
        switch (r % 3) {
        case 0: /* FIFO */
            for (uint32_t i = 0; i < n; i++)
                TU_OK(sal_release(s, ids[i]));
            break;
        case 1: /* LIFO */
            for (uint32_t i = n; i-- > 0;)
                TU_OK(sal_release(s, ids[i]));
            break;
        default: /* random */
            for (uint32_t i = n - 1; i > 0; i--) {
                uint32_t j = (uint32_t)tu_rand_below(&rng, i + 1);
                sal_id t = ids[i];
                ids[i] = ids[j];
                ids[j] = t;
            }
            for (uint32_t i = 0; i < n; i++)
                TU_OK(sal_release(s, ids[i]));
        }
        sal_heap_stats st = tu_stats(h);
        assert_int_equal(st.live_objects, 0);
        assert_int_equal(st.live_bytes, 0);
        if (r == 0) {
            hw1 = st.ids_high_water;
            file1 = st.file_bytes;
            assert_true(hw1 >= n);
        } else if (st.ids_high_water > hw1 + SAL_ID_BATCH) {
            /* Every id comes back each round: what round 0 took, plus at
             * most one batch a session takes at once, is all there is.
             * (A slack of n/8 let a leak of 0.4 % of the ids a round pass
             * all 30 rounds.) */
            fail_msg("round %d: ids_high_water %" PRIu64 " grew from %" PRIu64
                     " after round 0 (%u objects a round)",
                     r, st.ids_high_water, hw1, n);
        }
        /* Space too: the file stays within a few segments of round 0's. */
        if (r > 0 && st.file_bytes > file1 + 8 * SAL_MIN_SEGMENT_BYTES)
            fail_msg("round %d: the file grew from %" PRIu64 " to %" PRIu64
                     " bytes although every object of every round was released",
                     r, file1, st.file_bytes);
        if (r == rounds - 1)
            print_message("ids_bounded_rounds: %u objects a round, ids_high_water %" PRIu64
                          " after round 0, %" PRIu64 " after round %d; file %" PRIu64
                          " -> %" PRIu64 " bytes\n",
                          n, hw1, st.ids_high_water, r, file1, st.file_bytes);
    }
    free(ids);
    tu_close_all(h, s);
}

/* Allocated by one session, released by another: the ids still come back
 * (no id leaks into a per-session cache that the allocator never sees). */
static void ids_bounded_cross_session(void **state)
{
    tu_ctx *c = *state;
    sal_session *a;
    sal_heap *h = tu_open_small(c, &a);
    sal_session *b;
    TU_OK(sal_session_open(h, &b));
    const uint32_t n = (uint32_t)tu_scaled(20000, 4);
    sal_id *ids = calloc(n, sizeof(sal_id));
    assert_non_null(ids);
    uint64_t hw1 = 0;
    for (int r = 0; r < 20; r++) {
        sal_session *alloc_s = (r & 1) ? b : a, *free_s = (r & 1) ? a : b;
        if (r % 4 >= 2) /* sometimes the same session frees */
            free_s = alloc_s;
        TU_OK(sal_write_begin(alloc_s));
        for (uint32_t i = 0; i < n; i++) {
            void *p;
            TU_OK(sal_alloc(alloc_s, 16, 0, 0, &ids[i], &p));
        }
        TU_OK(sal_write_end(alloc_s));
        for (uint32_t i = 0; i < n; i++)
            TU_OK(sal_release(free_s, ids[i]));
        sal_heap_stats st = tu_stats(h);
        assert_int_equal(st.live_objects, 0);
        if (r == 0)
            hw1 = st.ids_high_water;
        else if (st.ids_high_water > 2 * hw1 + 1024)
            fail_msg("round %d: ids_high_water %" PRIu64 " (round 0: %" PRIu64
                     ") keeps growing when another session frees",
                     r, st.ids_high_water, hw1);
    }
    /* And after the freeing session closes, its ids are not lost either. */
    TU_OK(sal_session_close(b));
    TU_OK(sal_write_begin(a));
    for (uint32_t i = 0; i < n; i++) {
        void *p;
        TU_OK(sal_alloc(a, 16, 0, 0, &ids[i], &p));
    }
    TU_OK(sal_write_end(a));
    sal_heap_stats st = tu_stats(h);
    if (st.ids_high_water > 2 * hw1 + 1024)
        fail_msg("ids_high_water %" PRIu64 " (round 0: %" PRIu64 ")", st.ids_high_water, hw1);
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_release(a, ids[i]));
    free(ids);
    tu_close_all(h, a);
}

/* A mass release of committed objects.  Its ids are not handed out again
 * before a commit that no longer names them (crash rule 2), and after that
 * commit all of them come back, moved to the free pool in chunks by the
 * background thread (ready_segments > 0) or by the commit itself (0).
 * The release is larger than a session's hand-over batch and than one
 * chunk of the move, so that both paths run more than once. */
static void mass_release_committed(tu_ctx *c, unsigned ready_segments)
{
    sal_options o = tu_small_options();
    o.ready_segments = ready_segments;
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    const uint32_t n = 200000;
    sal_id *ids = calloc(n, sizeof *ids), *more = calloc(n, sizeof *more);
    uint8_t *released = calloc(o.max_objects, 1); /* by table index */
    assert_true(ids && more && released);
    void *p;

    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_alloc(s, 16, 0, 0, &ids[i], &p));
    TU_OK(sal_write_end(s));
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    for (uint32_t i = 0; i < n; i++) {
        TU_OK(sal_release(s, ids[i]));
        released[tu_index(ids[i])] = 1;
    }
    sal_heap_stats st = tu_stats(h);
    if (st.ids_pending < n / 2)
        fail_msg("ids_pending %" PRIu64 " after releasing %u committed objects",
                 st.ids_pending, n);

    /* No commit since the release: every new id is a fresh one. */
    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++) {
        TU_OK(sal_alloc(s, 16, 0, 0, &more[i], &p));
        if (released[tu_index(more[i])])
            fail_msg("id index %u handed out again before a commit", tu_index(more[i]));
    }
    TU_OK(sal_write_end(s));

    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    for (int waited_ms = 0; (st = tu_stats(h)).ids_pending > 0; waited_ms++) {
        if (waited_ms == 10000)
            fail_msg("ids_pending still %" PRIu64 " 10 s after the commit", st.ids_pending);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    /* Now the released ids come back: n more objects grow the table by
     * at most what the session still held (its last batch). */
    uint64_t hw = st.ids_high_water, reused = 0;
    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++) {
        TU_OK(sal_alloc(s, 16, 0, 0, &ids[i], &p));
        *(uint64_t *)p = i;
        reused += released[tu_index(ids[i])];
    }
    TU_OK(sal_write_end(s));
    st = tu_stats(h);
    print_message("mass_release_committed (ready_segments %u): %" PRIu64 " of %u ids reused, "
                  "ids_high_water %" PRIu64 " -> %" PRIu64 "\n",
                  ready_segments, reused, n, hw, st.ids_high_water);
    if (reused < n / 2 || st.ids_high_water > hw + n / 2)
        fail_msg("%" PRIu64 " of %u released ids reused, ids_high_water %" PRIu64 " -> %" PRIu64,
                 reused, n, hw, st.ids_high_water);
    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++) {
        const void *q;
        TU_OK(sal_read(s, ids[i], &q));
        assert_int_equal(*(const uint64_t *)q, i);
        TU_OK(sal_release(s, ids[i]));
        TU_OK(sal_release(s, more[i]));
    }
    TU_OK(sal_write_end(s));
    assert_int_equal(tu_stats(h).live_objects, 0);
    free(ids);
    free(more);
    free(released);
    tu_close_all(h, s);
}

static void mass_release_by_provider(void **state) { mass_release_committed(*state, 4); }
static void mass_release_by_commit(void **state) { mass_release_committed(*state, 0); }

/* Allocate up to `max` 16-byte objects into `ids`, in one write section;
 * returns how many, and in *rc the error that stopped it (0: none). */
static uint32_t alloc_up_to(sal_session *s, sal_id *ids, uint32_t max, int *rc)
{
    void *p;
    uint32_t n = 0;
    *rc = 0;
    TU_OK(sal_write_begin(s));
    while (n < max && (*rc = sal_alloc(s, 16, 0, 0, &ids[n], &p)) == 0)
        n++;
    TU_OK(sal_write_end(s));
    return n;
}

/* Release `n` objects of `ids`, in one write section. */
static void release_all(sal_session *s, const sal_id *ids, uint32_t n)
{
    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_release(s, ids[i]));
    TU_OK(sal_write_end(s));
}

/* Allocate 16-byte objects into `ids` until the table is full (the
 * allocation that fails must say SAL_ENOIDS); returns how many. */
static uint32_t fill_table(sal_session *s, sal_id *ids)
{
    int rc;
    uint32_t n = alloc_up_to(s, ids, UINT32_MAX, &rc);
    TU_ERR(rc, SAL_ENOIDS);
    return n;
}

/* A full table, every object committed, released, and a commit after the
 * release: the ids are reusable (sal.h, sal_release), so the same number
 * of objects fits again.  The releasing session still holds them in its
 * batch when the commit is written; they must not wait for one more. */
static void full_table_reused_after_commit(tu_ctx *c, unsigned ready_segments)
{
    sal_options o = tu_small_options();
    o.ready_segments = ready_segments;
    o.max_objects = 4096;
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    sal_id *ids = calloc(o.max_objects + 1, sizeof *ids);
    assert_non_null(ids);
    int rc;
    uint32_t n = fill_table(s, ids);
    assert_int_equal(n, o.max_objects);
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_release(s, ids[i]));
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT)); /* the commit after the release */
    uint32_t again = alloc_up_to(s, ids, n, &rc);
    if (again < n)
        fail_msg("ready_segments %u: %u objects released and committed over, then %d (%s) "
                 "after %u new ones (ids_pending %" PRIu64 ")",
                 ready_segments, n, rc, sal_strerror(rc), again, tu_stats(h).ids_pending);
    release_all(s, ids, again);
    free(ids);
    tu_close_all(h, s);
}

static void full_table_by_provider(void **state) { full_table_reused_after_commit(*state, 4); }
static void full_table_by_commit(void **state) { full_table_reused_after_commit(*state, 0); }

/* A reader that releases the last reference: the ids must reach the
 * allocating sessions.  They went to the reader's private stack (or its
 * batch of committed ids), which only the reader could spend, and a full
 * table said SAL_ENOIDS with nothing alive until the reader closed.  Both
 * kinds: uncommitted objects (free at once) and committed ones (free
 * after the next commit). */
static void full_table_released_by_reader(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.max_objects = 1024;
    sal_session *s, *r;
    sal_heap *h = tu_create_with(c, &o, &s);
    TU_OK(sal_reader_open(h, &r));
    sal_id *ids = calloc(o.max_objects + 1, sizeof *ids);
    assert_non_null(ids);
    for (int committed = 0; committed < 2; committed++) {
        int rc;
        uint32_t n = fill_table(s, ids);
        if (committed)
            TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
        for (uint32_t i = 0; i < n; i++)
            TU_OK(sal_release(r, ids[i]));
        assert_int_equal(tu_stats(h).live_objects, 0);
        if (committed)
            TU_OK(sal_sync(h, SAL_SYNC_PROTECT)); /* the commit after */
        uint32_t again = alloc_up_to(s, ids, n, &rc);
        if (again < n)
            fail_msg("committed %d: %u objects released by a reader, then %d (%s) after "
                     "%u new ones", committed, n, rc, sal_strerror(rc), again);
        release_all(s, ids, again);
        TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    }
    free(ids);
    TU_OK(sal_session_close(r));
    tu_close_all(h, s);
}

/* The same for the counts a reader's sal_root_get gives back: when a
 * writer replaced and released the root between the get's retain and its
 * look at the root again, the count given back is the last one, and the
 * object dies in the reader's hands.  Its ids must not stay with the
 * reader.  (A writer publishes and empties root 0 in a loop for a second;
 * the reader looks after each get.) */
typedef struct root_flipper {
    sal_heap *h;
    _Atomic int stop;
    tu_latch latch; /* cmocka's asserts belong to the test's thread */
} root_flipper;

static void *flip_root(void *arg)
{
    root_flipper *t = arg;
    tu_latch *l = &t->latch;
    sal_session *s;
    TU_W_OK(l, sal_session_open(t->h, &s), NULL);
    while (!atomic_load(&t->stop)) {
        sal_id n;
        void *p;
        TU_W_OK(l, sal_write_begin(s), NULL);
        TU_W_OK(l, sal_alloc(s, 8, 0, 0, &n, &p), NULL);
        TU_W_OK(l, sal_root_set(s, 0, n), NULL);
        TU_W_OK(l, sal_write_end(s), NULL);
        TU_W_OK(l, sal_write_begin(s), NULL);
        TU_W_OK(l, sal_root_set(s, 0, SAL_NULL_ID), NULL);
        TU_W_OK(l, sal_write_end(s), NULL);
    }
    TU_W_OK(l, sal_session_close(s), NULL);
    return NULL;
}

static void root_get_give_back_hands_ids(void **state)
{
    tu_ctx *c = *state;
    sal_session *s, *r;
    sal_heap *h = tu_open_small(c, &s);
    TU_OK(sal_reader_open(h, &r));
    root_flipper t = {.h = h};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flip_root, &t), 0);
    unsigned long gets = 0, kept = 0;
    double end = tu_now() + 1;
    while (tu_now() < end) {
        sal_id id;
        TU_OK(sal_root_get(r, 0, &id));
        gets++;
        kept += r->free_len + r->pending_ids.len != 0;
        if (id != SAL_NULL_ID)
            TU_OK(sal_release(r, id));
    }
    atomic_store(&t.stop, 1);
    pthread_join(th, NULL);
    TU_LATCH_ASSERT(&t.latch);
    TU_OK(sal_session_close(r));
    tu_close_all(h, s);
    if (kept)
        fail_msg("%lu of %lu gets left ids with the reader", kept, gets);
}

/* The race sal_retain_unheld guards against, made to happen: between
 * sal_root_get's check of the root's object X and its count's increment,
 * X dies and a new object Y takes its entry and its block and becomes the
 * root (same entry bits: location and count).  The hook puts the heap in
 * that state: Y's header written over X's, the root set to Y.  The count
 * landed on Y must be given back, and the get hand out Y retained once. */
typedef struct reuse_forge {
    sal_heap *h;
    sal_object_header *hdr; /* X's header */
    sal_id y;
    int runs;
} reuse_forge;

static void forge_reuse(void *arg, sal_id id)
{
    reuse_forge *f = arg;
    if (f->runs++ || f->hdr->id != id)
        return; /* once, for X */
    f->hdr->id = f->y;
    atomic_store(&f->h->roots[0], f->y);
}

static void root_get_gives_back_reused_entry(void **state)
{
    tu_ctx *c = *state;
    sal_session *s, *r;
    sal_heap *h = tu_open_small(c, &s);
    TU_SKIP_WITHOUT_HOOK(sal_test_retain_unheld_hook(NULL, NULL), h, s);
    TU_OK(sal_reader_open(h, &r));
    sal_id x;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 24, 0, 0, &x, &p));
    TU_OK(sal_root_set(s, 0, x)); /* the root holds X's only reference */
    TU_OK(sal_write_end(s));
    reuse_forge f = {.h = h, .hdr = (sal_object_header *)p - 1,
                     .y = x + (1ull << 32)}; /* X's index, next generation */
    assert_int_equal(f.hdr->id, x);
    TU_OK(sal_test_retain_unheld_hook(forge_reuse, &f));
    sal_id got = SAL_NULL_ID;
    int rc = sal_root_get(r, 0, &got);
    TU_OK(sal_test_retain_unheld_hook(NULL, NULL)); /* before any assertion */
    TU_OK(rc);
    assert_int_equal(f.runs, 2); /* X, then Y */
    assert_int_equal(got, f.y);
    /* The root's reference and the get's: not a third from X's attempt. */
    assert_int_equal(refcount_of(s, f.y), 2);
    expect_stale(s, x, "X, its entry taken by Y");
    TU_OK(sal_release(r, got));
    assert_int_equal(refcount_of(s, f.y), 1);
    TU_OK(sal_session_close(r));
    tu_close_all(h, s);
}

/* The provider's id release: it tells the test when it has taken the
 * heap's list, then holds it for a while before moving any of it. */
typedef struct held_release {
    _Atomic int taken;
} held_release;

static void hold_provider_release(void *arg, int by_provider)
{
    held_release *hr = arg;
    if (!by_provider || atomic_exchange(&hr->taken, 1))
        return;
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
}

/* A full table whose released ids a closed session handed to the heap's
 * list: after the next commit the provider takes the whole list to move
 * it to the pool.  A session out of ids meanwhile found the pool empty
 * and its own move found no list: SAL_ENOIDS, although every id was about
 * to be free.  It must wait for the provider's move. */
static void full_table_while_provider_moves(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.max_objects = 4096;
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    held_release hr = {0};
    TU_SKIP_WITHOUT_HOOK(sal_test_ids_release_hook(NULL, NULL), h, s);
    sal_id *ids = calloc(o.max_objects + 1, sizeof *ids);
    assert_non_null(ids);
    void *p;
    int rc;
    uint32_t n = fill_table(s, ids);
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_release(s, ids[i]));
    TU_OK(sal_session_close(s)); /* its released ids go to the heap's list */
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_test_ids_release_hook(hold_provider_release, &hr));
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT)); /* the commit after the release */
    double deadline = tu_now() + 10;
    while (!atomic_load(&hr.taken) && tu_now() < deadline)
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    int taken = atomic_load(&hr.taken);
    if (taken) {
        TU_OK(sal_write_begin(s));
        rc = sal_alloc(s, 16, 0, 0, &ids[0], &p);
        TU_OK(sal_write_end(s));
    }
    TU_OK(sal_test_ids_release_hook(NULL, NULL)); /* before `hr` goes away */
    assert_true(taken); /* the provider took the list */
    if (rc)
        fail_msg("%u ids released and committed over, the provider moving them: "
                 "sal_alloc said %d (%s)", n, rc, sal_strerror(rc));
    TU_OK(sal_write_begin(s));
    TU_OK(sal_release(s, ids[0]));
    TU_OK(sal_write_end(s));
    free(ids);
    tu_close_all(h, s);
}

/* The last block of fresh ids of the largest table ends at index 2^32:
 * a session that closes with ids of it unused gives them back to the
 * pool (they once wrapped to an empty block and stayed lost until the
 * next open).  The high-water mark is moved near the end by hand: four
 * billion allocations are not a test. */
static void last_id_block_given_back(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    o.max_objects = SAL_MAX_OBJECTS_LIMIT;
    o.reserve_bytes = 40ull << 30; /* the table's 32 GiB, sparse, and data */
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    atomic_store(&h->ids_high_water, h->max_objects - 10);
    sal_id ids[5];
    void *p;
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < 5; i++)
        TU_OK(sal_alloc(s, 16, 0, 0, &ids[i], &p));
    TU_OK(sal_write_end(s));
    assert_int_equal(tu_index(ids[4]), h->max_objects - 6);
    TU_OK(sal_session_close(s)); /* the other 5 of its block go to the pool */
    pthread_mutex_lock(&h->free_ids_lock);
    size_t pooled = h->free_ids.len;
    pthread_mutex_unlock(&h->free_ids_lock);
    if (pooled != 5)
        fail_msg("%zu ids in the pool after a session closed with 5 of the last block unused",
                 pooled);
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < 5; i++)
        TU_OK(sal_release(s, ids[i]));
    TU_OK(sal_write_end(s));
    tu_close_all(h, s);
}

/* Space of released (never committed) objects is reused: whole segments
 * whose objects all died go back to the pool, so rounds of allocating and
 * freeing several segments' worth do not grow the file. */
static void space_reused_after_release(void **state)
{
    tu_ctx *c = *state;
    sal_session *s;
    sal_heap *h = tu_open_small(c, &s); /* 1 MiB segments */
    const uint32_t n = 40000;        /* ~5 MiB a round in 128-byte objects */
    sal_id *ids = calloc(n, sizeof(sal_id));
    assert_non_null(ids);
    uint64_t file1 = 0, seg1 = 0;
    for (int r = 0; r < 12; r++) {
        TU_OK(sal_write_begin(s));
        for (uint32_t i = 0; i < n; i++) {
            void *p;
            TU_OK(sal_alloc(s, 104, 0, 0, &ids[i], &p));
        }
        TU_OK(sal_write_end(s));
        for (uint32_t i = 0; i < n; i++)
            TU_OK(sal_release(s, ids[i]));
        sal_heap_stats st = tu_stats(h);
        assert_int_equal(st.live_objects, 0);
        assert_int_equal(st.live_bytes, 0);
        if (r == 0) {
            file1 = st.file_bytes;
            seg1 = st.segments_in_use;
            assert_true(file1 >= 5 * SAL_MIN_SEGMENT_BYTES);
        } else if (st.file_bytes > file1 + 8 * SAL_MIN_SEGMENT_BYTES) {
            fail_msg("round %d: the file grew from %" PRIu64 " to %" PRIu64
                     " bytes although every object of every round was released "
                     "(segments in use %" PRIu64 ", free %" PRIu64 ", ready %" PRIu64 ")",
                     r, file1, st.file_bytes, st.segments_in_use, st.segments_free,
                     st.segments_ready);
        }
        if (st.segments_in_use > 4)
            fail_msg("round %d: %" PRIu64 " segments in use with no live object "
                     "(round 0: %" PRIu64 ")",
                     r, st.segments_in_use, seg1);
    }
    free(ids);
    tu_close_all(h, s);
}

/* ---------------------------------------------------------------------
 * Iterative release: 10 million objects in a chain, released from the head
 * on a thread with a 64 KiB stack.
 * --------------------------------------------------------------------- */

typedef struct release_job {
    sal_heap *heap;
    sal_id id;
    int rc;
    double seconds;
} release_job;

static void *release_on_small_stack(void *arg)
{
    release_job *j = arg;
    sal_session *s;
    j->rc = sal_session_open(j->heap, &s);
    if (j->rc)
        return NULL;
    double t0 = tu_now();
    j->rc = sal_release(s, j->id);
    j->seconds = tu_now() - t0;
    int rc = sal_session_close(s);
    if (!j->rc)
        j->rc = rc;
    return NULL;
}

static void release_with_stack(sal_heap *h, sal_id id, size_t stack_bytes, double *seconds)
{
    pthread_attr_t attr;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, stack_bytes), 0);
    release_job j = {h, id, -1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, &attr, release_on_small_stack, &j), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_attr_destroy(&attr);
    TU_OK(j.rc);
    if (seconds)
        *seconds = j.seconds;
}

/* Builds a chain of n objects (nrefs 1, slot 0 = next, slot 1 = the
 * node's position from the tail), returns the head. */
static sal_id build_chain(sal_session *s, uint64_t n)
{
    sal_id prev = SAL_NULL_ID;
    TU_OK(sal_write_begin(s));
    for (uint64_t i = 0; i < n; i++) {
        sal_id id;
        void *p;
        TU_OK(sal_alloc(s, 16, 1, 1, &id, &p));
        ((uint64_t *)p)[1] = i;
        if (prev)
            TU_OK(sal_set_child(s, id, 0, prev));
        prev = id;
        if ((i & 65535) == 65535) {
            TU_OK(sal_write_end(s));
            TU_OK(sal_write_begin(s));
        }
    }
    TU_OK(sal_write_end(s));
    return prev;
}

/* sal_info of each of the n ids is SAL_ESTALE. */
static void expect_all_stale(sal_session *s, const sal_id *ids, uint64_t n, const char *when)
{
    for (uint64_t i = 0; i < n; i++) {
        sal_object_info info;
        int rc = sal_info(s, ids[i], &info);
        if (rc != SAL_ESTALE)
            fail_msg("%s: node %" PRIu64 " (id %#" PRIx64 ") of the first chain: sal_info = %d "
                     "(%s), expected SAL_ESTALE",
                     when, i, ids[i], rc, sal_strerror(rc));
    }
}

/* The heap's figures once at most `in_use` segments are in use, or after
 * 20 s.  A segment emptied while the provider walks its holes (a sparse
 * one, recycle.c) stays in use until that walk ends and hands it to the
 * free pool: under load that came after the release had returned. */
static sal_heap_stats stats_once_segments_settle(sal_heap *h, uint64_t in_use)
{
    sal_heap_stats st = tu_stats(h);
    int ms = 0;
    for (; ms < 20000 && st.segments_in_use > in_use; ms += 10) {
        usleep(10 * 1000);
        st = tu_stats(h);
    }
    if (ms)
        print_message("(%" PRIu64 " segments in use %d ms after the release)\n",
                      st.segments_in_use, ms);
    return st;
}

static void chain_10m(void **state)
{
    tu_ctx *c = *state;
    const uint64_t n = tu_scaled(10000000, 5);
    sal_options o;
    sal_options_init(&o);
    o.reserve_bytes = 8ull << 30;
    /* Exactly the ids the chain and `keep` need: the second round fits
     * only if every id of the first came back. */
    o.max_objects = n + 1;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    sal_id *chain = malloc(n * sizeof *chain); /* round 0's ids, head first */
    assert_non_null(chain);
    /* One unrelated live object, so that "back to before" is not just 0. */
    sal_id keep;
    void *kp;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 100, 0, 3, &keep, &kp));
    tu_fill(kp, 100, 0, 42);
    TU_OK(sal_write_end(s));
    sal_heap_stats before = tu_stats(h);
    uint64_t hw_round1 = 0, file_round1 = 0;

    for (int round = 0; round < 2; round++) {
        double t0 = tu_now();
        sal_id head = build_chain(s, n);
        double t_build = tu_now() - t0;
        sal_heap_stats built = tu_stats(h);
        assert_int_equal(built.live_objects, before.live_objects + n);
        /* Round 1's chain has every index of round 0's (the table has no
         * other): the old ids stay released, also after their reuse. */
        if (round == 1)
            expect_all_stale(s, chain, n, "with their indexes reused");
        assert_true(built.live_bytes >= before.live_bytes + n * 16);
        if (round == 0) {
            /* Walk it once: every link and position. */
            TU_OK(sal_read_begin(s));
            sal_id cur = head;
            uint64_t count = 0;
            while (cur) {
                const uint64_t *p;
                int rc = sal_read(s, cur, (const void **)&p);
                if (rc)
                    fail_msg("node %" PRIu64 ": sal_read %d (%s)", count, rc, sal_strerror(rc));
                if (p[1] != n - 1 - count)
                    fail_msg("node %" PRIu64 " holds position %" PRIu64, count, p[1]);
                if (count < n)
                    chain[count] = cur;
                cur = p[0];
                count++;
                if ((count & 65535) == 0) {
                    TU_OK(sal_read_end(s));
                    TU_OK(sal_read_begin(s));
                }
            }
            TU_OK(sal_read_end(s));
            assert_int_equal(count, n);
            assert_int_equal(refcount_of(s, head), 1);
        }
        double rel = 0;
        release_with_stack(h, head, 64 * 1024, &rel);
        sal_heap_stats after = stats_once_segments_settle(h, before.segments_in_use + 1);
        print_message("chain_10m round %d: %" PRIu64 " objects built in %.2f s, released on a "
                      "64 KiB stack in %.2f s; ids_high_water %" PRIu64 ", file %" PRIu64
                      " MiB, segments in use %" PRIu64 " (%" PRIu64 " before) free %" PRIu64
                      "\n",
                      round, n, t_build, rel, after.ids_high_water, after.file_bytes >> 20,
                      after.segments_in_use, before.segments_in_use, after.segments_free);
        assert_int_equal(after.live_objects, before.live_objects);
        assert_int_equal(after.live_bytes, before.live_bytes);
        expect_stale(s, head, "head of the released chain");
        /* Every id of round 0's chain is released. */
        expect_all_stale(s, chain, n, round ? "after round 1's release" : "after the release");
        /* Every byte: the emptied segments are free again. */
        if (after.segments_in_use > before.segments_in_use + 1)
            fail_msg("round %d: %" PRIu64 " segments in use after the release, %" PRIu64
                     " before the chain",
                     round, after.segments_in_use, before.segments_in_use);
        if (round == 0) {
            hw_round1 = after.ids_high_water;
            file_round1 = after.file_bytes;
            assert_true(hw_round1 >= n);
        } else {
            if (after.ids_high_water > hw_round1)
                fail_msg("round 2: ids_high_water grew from %" PRIu64 " to %" PRIu64
                         ": released ids were not reused",
                         hw_round1, after.ids_high_water);
            if (after.file_bytes > file_round1 + 2 * after.segment_bytes)
                fail_msg("round 2: the file grew from %" PRIu64 " to %" PRIu64
                         " bytes: the first chain's segments were not reused",
                         file_round1, after.file_bytes);
        }
    }
    free(chain);
    /* The unrelated object is intact. */
    const void *q;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, keep, &q));
    assert_int_equal(tu_check(q, 100, 0, 42), TU_CHECK_OK);
    TU_OK(sal_read_end(s));
    TU_OK(sal_release(s, keep));
    tu_close_all(h, s);
}

/* A deep and wide shape: a spine of nodes each holding a leaf and the next
 * node, plus a node with SAL_MAX_REFS children each heading a short chain;
 * released on a 64 KiB stack. */
static void chain_spine_and_fan(void **state)
{
    tu_ctx *c = *state;
    const uint64_t n = tu_scaled(1000000, 4);
    sal_options o;
    sal_options_init(&o);
    o.reserve_bytes = 4ull << 30;
    o.max_objects = 1ull << 23;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    sal_id prev = SAL_NULL_ID;
    TU_OK(sal_write_begin(s));
    for (uint64_t i = 0; i < n; i++) {
        sal_id node, leaf;
        void *p;
        TU_OK(sal_alloc(s, 16, 2, 1, &node, &p));
        TU_OK(sal_alloc(s, 8, 0, 2, &leaf, &p));
        TU_OK(sal_set_child(s, node, 1, leaf));
        if (prev)
            TU_OK(sal_set_child(s, node, 0, prev));
        prev = node;
        if ((i & 32767) == 32767) {
            TU_OK(sal_write_end(s));
            TU_OK(sal_write_begin(s));
        }
    }
    sal_id fan;
    void *fp;
    TU_OK(sal_alloc(s, 8 * SAL_MAX_REFS, SAL_MAX_REFS, 3, &fan, &fp));
    for (unsigned k = 0; k < SAL_MAX_REFS; k++) {
        sal_id a, b;
        void *p;
        TU_OK(sal_alloc(s, 8, 1, 4, &a, &p));
        TU_OK(sal_alloc(s, 8, 0, 4, &b, &p));
        TU_OK(sal_set_child(s, a, 0, b));
        TU_OK(sal_set_child(s, fan, k, a));
    }
    sal_id top;
    void *tp;
    TU_OK(sal_alloc(s, 16, 2, 5, &top, &tp));
    TU_OK(sal_set_child(s, top, 0, prev));
    TU_OK(sal_set_child(s, top, 1, fan));
    TU_OK(sal_write_end(s));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, 2 * n + 1 + 2ull * SAL_MAX_REFS + 1);
    release_with_stack(h, top, 64 * 1024, NULL);
    st = tu_stats(h);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.live_bytes, 0);
    tu_close_all(h, s);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(alloc_read_info),
        TU_TEST(retain_release_counts),
        TU_TEST(release_frees_children),
        TU_TEST(release_out_of_memory),
        TU_TEST(same_child_twice),
        TU_TEST(refcount_saturates),
        TU_TEST(stale_after_reuse),
        TU_TEST(stale_committed),
        TU_TEST(lost_ids_stale_after_kill),
        TU_TEST(lost_ids_stale_after_killed_recovery),
        TU_TEST(lost_ids_stale_after_repair),
        TU_TEST(ids_bounded_rounds),
        TU_TEST(ids_bounded_cross_session),
        TU_TEST(mass_release_by_provider),
        TU_TEST(mass_release_by_commit),
        TU_TEST(full_table_by_provider),
        TU_TEST(full_table_by_commit),
        TU_TEST(full_table_while_provider_moves),
        TU_TEST(full_table_released_by_reader),
        TU_TEST(root_get_give_back_hands_ids),
        TU_TEST(root_get_gives_back_reused_entry),
        TU_TEST(last_id_block_given_back),
        TU_TEST(space_reused_after_release),
        TU_TEST(chain_10m),
        TU_TEST(chain_spine_and_fan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
