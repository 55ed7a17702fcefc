/*
 * test_recycle.c - dead space in sparse, never committed segments is reused
 * in place (sal/src/recycle.c), and nothing live or committed is touched.
 *
 * Each test builds a heap of 1 MiB segments, fills several of them with
 * objects of random sizes whose payloads carry a pattern keyed by the
 * object's number, releases a random share of them, and allocates again.
 * Then it checks:
 *   - that the new objects went into the holes (segments_recycled grows,
 *     the file does not);
 *   - every surviving and every new object, byte for byte, in the session,
 *     after a clean reopen, after a repair (which rebuilds the table by
 *     walking the segments over the padding the holes leave), after a
 *     killed writer, and by sal-gc check;
 *   - that a cut in the middle of a hole ends reuse of that segment;
 *   - that another thread's open section holds reuse back until it ends.
 *
 * Randomized: prints its seed; `--seed N` replays.
 */
#include "test_gc_util.h"

#include "internal.h" /* to see whether a session's arena is a recycled one */

#define SEGS_FILLED 10u   /* segments filled before the releases */
#define DIR_FANOUT 1024u  /* children per directory chunk */

typedef struct population {
    sal_id *ids;      /* object k, or SAL_NULL_ID once released */
    uint32_t *sizes;  /* payload bytes of object k */
    size_t n, cap;
} population;

static void pop_free(population *p)
{
    free(p->ids);
    free(p->sizes);
    memset(p, 0, sizeof *p);
}

/* Allocate `count` objects of 16..256 bytes: word 0 is k, the rest the
 * pattern of key k. */
static void pop_alloc(sal_session *s, population *p, size_t count, uint64_t *rng)
{
    if (p->n + count > p->cap) {
        size_t cap = (p->n + count) * 2;
        p->ids = realloc(p->ids, cap * sizeof *p->ids);
        p->sizes = realloc(p->sizes, cap * sizeof *p->sizes);
        assert_non_null(p->ids);
        assert_non_null(p->sizes);
        p->cap = cap;
    }
    TU_OK(sal_write_begin(s));
    for (size_t i = 0; i < count; i++) {
        uint64_t k = p->n;
        uint32_t size = 16 + (uint32_t)tu_rand_below(rng, 241);
        void *ptr;
        TU_OK(sal_alloc(s, size, 0, 7, &p->ids[k], &ptr));
        memcpy(ptr, &k, 8);
        tu_fill(ptr, size, 8, k);
        p->sizes[k] = size;
        p->n++;
    }
    TU_OK(sal_write_end(s));
}

/* Release each live object with probability pct/100. */
static size_t pop_release(sal_session *s, population *p, unsigned pct, uint64_t *rng)
{
    size_t released = 0;
    TU_OK(sal_write_begin(s));
    for (size_t k = 0; k < p->n; k++)
        if (p->ids[k] != SAL_NULL_ID && tu_rand_below(rng, 100) < pct) {
            TU_OK(sal_release(s, p->ids[k]));
            p->ids[k] = SAL_NULL_ID;
            released++;
        }
    TU_OK(sal_write_end(s));
    return released;
}

static void pop_verify(sal_session *s, const population *p, const char *when)
{
    size_t live = 0;
    TU_OK(sal_read_begin(s));
    for (size_t k = 0; k < p->n; k++) {
        if (p->ids[k] == SAL_NULL_ID)
            continue;
        const void *ptr;
        int rc = sal_read(s, p->ids[k], &ptr);
        if (rc)
            fail_msg("%s: object %zu (id %" PRIu32 "/%" PRIu32 "): %s", when, k,
                     tu_index(p->ids[k]), tu_gen(p->ids[k]), sal_strerror(rc));
        uint64_t key;
        memcpy(&key, ptr, 8);
        size_t bad = tu_check(ptr, p->sizes[k], 8, k);
        if (key != k || bad != TU_CHECK_OK)
            fail_msg("%s: object %zu reads back wrong (key %" PRIu64 ", first bad byte %zu)",
                     when, k, key, bad);
        live++;
    }
    TU_OK(sal_read_end(s));
    printf("  %s: %zu objects verified\n", when, live);
}

/* Publish every live object under root 0: chunks of DIR_FANOUT children
 * under a top object, so that recovery and sal-gc see them reachable. */
static void pop_publish(sal_session *s, const population *p)
{
    size_t live = 0;
    for (size_t k = 0; k < p->n; k++)
        live += p->ids[k] != SAL_NULL_ID;
    unsigned chunks = (unsigned)((live + DIR_FANOUT - 1) / DIR_FANOUT);
    assert_true(chunks > 0 && chunks <= DIR_FANOUT);
    TU_OK(sal_write_begin(s));
    sal_id top;
    void *ptr;
    TU_OK(sal_alloc(s, chunks * 8, chunks, 1, &top, &ptr));
    size_t k = 0;
    for (unsigned c = 0; c < chunks; c++) {
        unsigned here = (unsigned)(live - (size_t)c * DIR_FANOUT < DIR_FANOUT
                                       ? live - (size_t)c * DIR_FANOUT
                                       : DIR_FANOUT);
        sal_id chunk;
        TU_OK(sal_alloc(s, here * 8, here, 2, &chunk, &ptr));
        for (unsigned i = 0; i < here; i++) {
            while (p->ids[k] == SAL_NULL_ID)
                k++;
            TU_OK(sal_retain(s, p->ids[k])); /* the chunk's reference */
            TU_OK(sal_set_child(s, chunk, i, p->ids[k]));
            k++;
        }
        TU_OK(sal_set_child(s, top, c, chunk));
    }
    TU_OK(sal_root_set(s, 0, top)); /* takes our reference to top */
    TU_OK(sal_write_end(s));
}

static sal_options recycle_options(void)
{
    sal_options o = tu_small_options();
    o.reserve_bytes = 256ull << 20;
    return o;
}

/* A new heap with recycle_options() at `path`, and a session on it. */
static sal_heap *create_heap(const char *path, const sal_options *o, sal_session **s)
{
    sal_heap *h;
    TU_OK(sal_heap_create(path, o, &h));
    TU_OK(sal_session_open(h, s));
    return h;
}

/* Open with SAL_OPEN_REPAIR, which rebuilds the table from a walk of the
 * committed segments, across the pad words that reused holes end with:
 * nothing damaged, every object intact; then sal-gc check agrees. */
static void repair_verify_check(const char *path, const population *p)
{
    sal_options o = recycle_options();
    o.flags = SAL_OPEN_REPAIR;
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_open(path, &o, &h));
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    assert_int_equal(rep.damaged_headers, 0);
    TU_OK(sal_session_open(h, &s));
    pop_verify(s, p, "after a repair");
    tu_close_all(h, s);
    gc_expect_clean(path);
}

/* Bytes that SEGS_FILLED segments hold, in objects of 16..256 B (152 B of
 * payload on average, plus the 24-byte header). */
static size_t objects_for_segments(unsigned segs)
{
    return (size_t)segs * SAL_MIN_SEGMENT_BYTES / 176;
}

/* Wait (up to 10 s) until the provider has listed some sparse segment. */
static void wait_recyclable(sal_heap *h)
{
    double until = tu_now() + 10;
    while (tu_stats(h).segments_recyclable == 0) {
        if (tu_now() > until)
            fail_msg("no sparse segment was listed for reuse within 10 s");
        usleep(1000);
    }
}

/* Fill, release 70 %, and refill about half of the dead bytes. */
static void fill_release_refill(sal_heap *h, sal_session *s, population *p, uint64_t *rng,
                                sal_heap_stats *before_refill)
{
    pop_alloc(s, p, objects_for_segments(SEGS_FILLED), rng);
    size_t released = pop_release(s, p, 70, rng);
    printf("  %zu objects, %zu released\n", p->n, released);
    wait_recyclable(h);
    *before_refill = tu_stats(h);
    /* In small steps, so that the provider keeps sweeping meanwhile. */
    for (size_t done = 0; done < released / 2; done += 500) {
        pop_alloc(s, p, 500, rng);
        usleep(200);
    }
}

static void recycle_reuses_dead_space(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0x5ec1c1e;
    sal_options o = recycle_options();
    sal_session *s;
    sal_heap *h = create_heap(c->path, &o, &s);
    population p = {0};
    sal_heap_stats before;
    fill_release_refill(h, s, &p, &rng, &before);
    sal_heap_stats after = tu_stats(h);
    printf("  segments recycled %" PRIu64 ", file %" PRIu64 " -> %" PRIu64 " bytes\n",
           after.segments_recycled, before.file_bytes, after.file_bytes);
    assert_true(after.segments_recycled > before.segments_recycled);
    /* About 0.35 of SEGS_FILLED segments were allocated again: without
     * reuse the file would grow by that much (the provider keeps a few
     * segments ready, which may add one or two). */
    assert_true(after.file_bytes - before.file_bytes <= 2 * SAL_MIN_SEGMENT_BYTES);
    pop_verify(s, &p, "in the session");

    pop_publish(s, &p);
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
    tu_close_all(h, s);

    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    pop_verify(s, &p, "after a clean reopen");
    tu_close_all(h, s);

    repair_verify_check(c->path, &p);
    pop_free(&p);
}

/* A sync while the session is inside a reused hole: the commit takes the
 * whole segment, and no later allocation may write into it. */
static void recycle_cut_ends_reuse(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0xc07;
    sal_options o = recycle_options();
    sal_session *s;
    sal_heap *h = create_heap(c->path, &o, &s);
    population p = {0};
    sal_heap_stats before;
    fill_release_refill(h, s, &p, &rng, &before);
    assert_true(tu_stats(h).segments_recycled > 0);
    pop_publish(s, &p);
    /* Allocate scratch objects until the session's arena is a recycled
     * one, then drop them (the bump pointer stays), so that the cut below
     * lands inside a hole. */
    enum { SCRATCH_MAX = 200000 };
    sal_id *scratch = malloc(SCRATCH_MAX * sizeof *scratch);
    assert_non_null(scratch);
    size_t nscratch = 0;
    for (int tries = 0; tries < 4 && !s->holes && nscratch < SCRATCH_MAX; tries++) {
        /* The refill may have used up every sparse segment: make more (the
         * survivors are published with the rest at the end). */
        if (tu_stats(h).segments_recyclable == 0) {
            pop_alloc(s, &p, objects_for_segments(2), &rng);
            pop_release(s, &p, 80, &rng);
            wait_recyclable(h);
        }
        TU_OK(sal_write_begin(s));
        while (!s->holes && nscratch < SCRATCH_MAX) {
            void *ptr;
            TU_OK(sal_alloc(s, 64, 0, 0, &scratch[nscratch++], &ptr));
            if (nscratch % 4096 == 0 && tu_stats(h).segments_recyclable == 0)
                break; /* none left to reach: make more */
        }
        TU_OK(sal_write_end(s));
    }
    TU_OK(sal_write_begin(s));
    for (size_t k = 0; k < nscratch; k++)
        TU_OK(sal_release(s, scratch[k]));
    TU_OK(sal_write_end(s));
    free(scratch);
    assert_non_null(s->holes);
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE)); /* the cut lands inside a hole */
    /* Every later sync protects from the old high-water mark of that
     * segment on, which need not be a page boundary. */
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    size_t committed = p.n;
    /* Churn on: release and allocate more; committed objects stay. */
    for (int round = 0; round < 4; round++) {
        pop_alloc(s, &p, objects_for_segments(2), &rng);
        TU_OK(sal_write_begin(s));
        for (size_t k = committed; k < p.n; k++)
            if (p.ids[k] != SAL_NULL_ID && tu_rand_below(&rng, 100) < 70) {
                TU_OK(sal_release(s, p.ids[k]));
                p.ids[k] = SAL_NULL_ID;
            }
        TU_OK(sal_write_end(s));
        pop_verify(s, &p, "after more reuse");
    }
    pop_publish(s, &p);
    TU_OK(sal_sync(h, SAL_SYNC_PROTECT));
    tu_close_all(h, s);

    repair_verify_check(c->path, &p);
    pop_free(&p);
}

/* A section open in another session since before the releases holds the
 * dead space back; once it ends, the space is reused. */
static void recycle_waits_for_other_sections(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0x5ec7;
    sal_options o = recycle_options();
    sal_session *s, *reader;
    sal_heap *h = create_heap(c->path, &o, &s);
    TU_OK(sal_reader_open(h, &reader));
    population p = {0};
    pop_alloc(s, &p, objects_for_segments(SEGS_FILLED), &rng);
    TU_OK(sal_read_begin(reader));
    pop_release(s, &p, 70, &rng);
    wait_recyclable(h);
    pop_alloc(s, &p, objects_for_segments(2), &rng);
    assert_int_equal(tu_stats(h).segments_recycled, 0);
    TU_OK(sal_read_end(reader));
    pop_alloc(s, &p, objects_for_segments(1), &rng);
    assert_true(tu_stats(h).segments_recycled > 0);
    pop_verify(s, &p, "after the reader left");
    TU_OK(sal_session_close(reader));
    tu_close_all(h, s);
    pop_free(&p);
}

/* An object larger than every hole reuses no dead space: the sparse
 * segments a session looks at for it are not counted as recycled
 * (segments_recycled: "times a session took one of them and filled its
 * holes"), and the file grows by the segment the object needs. */
static void recycle_too_large_counts_nothing(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0xb16;
    sal_options o = recycle_options();
    sal_session *s;
    sal_heap *h = create_heap(c->path, &o, &s);
    population p = {0};
    pop_alloc(s, &p, objects_for_segments(SEGS_FILLED), &rng);
    pop_release(s, &p, 70, &rng);
    wait_recyclable(h);
    sal_heap_stats before = tu_stats(h);
    assert_int_equal(before.segments_recycled, 0);
    /* A whole segment: it fits no arena in use and no hole. */
    sal_id big;
    void *ptr;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, sal_max_object_bytes(h), 0, 0, &big, &ptr));
    TU_OK(sal_write_end(s));
    sal_heap_stats after = tu_stats(h);
    printf("  segments_recycled %" PRIu64 " -> %" PRIu64 " for one object of a segment\n",
           before.segments_recycled, after.segments_recycled);
    assert_null(s->holes);
    assert_int_equal(after.segments_recycled, before.segments_recycled);
    TU_OK(sal_release(s, big));
    pop_verify(s, &p, "after the large object");
    tu_close_all(h, s);
    pop_free(&p);
}

/* A writer killed after a durable commit that holds reused holes: the
 * recovery (table locations in the same boot) gives back every object. */
typedef struct kill_arg {
    const char *path;
    population *p;
    uint64_t seed;
} kill_arg;

static int killed_writer(void *arg)
{
    kill_arg *a = arg;
    uint64_t rng = a->seed;
    sal_options o = recycle_options();
    sal_heap *h;
    sal_session *s;
    if (sal_heap_create(a->path, &o, &h) || sal_session_open(h, &s))
        return 10;
    sal_heap_stats before;
    fill_release_refill(h, s, a->p, &rng, &before);
    pop_publish(s, a->p);
    if (sal_sync(h, SAL_SYNC_DURABLE))
        return 11;
    /* Uncommitted work after the commit, then the kill. */
    population extra = {0};
    pop_alloc(s, &extra, 2000, &rng);
    pop_release(s, a->p, 50, &rng);
    raise(SIGKILL);
    return 12;
}

static void recycle_survives_a_kill(void **state)
{
    tu_ctx *c = *state;
    population p = {0}; /* the child's: the parent walks root 0 instead */
    kill_arg a = {c->path, &p, tu_seed() ^ 0x4b111};
    int status = tu_in_child(killed_writer, &a);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    sal_options o = recycle_options();
    o.flags = SAL_OPEN_RECOVER;
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    /* Walk root 0: every object carries its number and its pattern. */
    sal_id top;
    size_t seen = 0;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_root_get(s, 0, &top));
    assert_true(top != SAL_NULL_ID);
    sal_object_info ti;
    TU_OK(sal_info(s, top, &ti));
    const sal_id *chunks;
    TU_OK(sal_read(s, top, (const void **)&chunks));
    for (unsigned ci = 0; ci < ti.nrefs; ci++) {
        sal_object_info info;
        const sal_id *kids;
        TU_OK(sal_info(s, chunks[ci], &info));
        TU_OK(sal_read(s, chunks[ci], (const void **)&kids));
        for (unsigned i = 0; i < info.nrefs; i++) {
            sal_object_info oi;
            const void *ptr;
            TU_OK(sal_info(s, kids[i], &oi));
            TU_OK(sal_read(s, kids[i], &ptr));
            uint64_t key;
            memcpy(&key, ptr, 8);
            if (tu_check(ptr, oi.size_bytes, 8, key) != TU_CHECK_OK)
                fail_msg("object %" PRIu64 " reads back wrong after the kill", key);
            seen++;
        }
    }
    TU_OK(sal_release(s, top));
    TU_OK(sal_read_end(s));
    printf("  after the kill: %zu objects under root 0 verified\n", seen);
    assert_true(seen > objects_for_segments(SEGS_FILLED) / 4);
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    assert_int_equal(rep.damaged_headers, 0);
    tu_close_all(h, s);
    gc_expect_clean(c->path);
}

/* A session's own section held back whole segments it emptied itself
 * (the reclaim counted every section), while its holes were reused despite
 * it (sal_recycle_take leaves the taker's section out).  In one write
 * section, batches that die completely left empty segments that could not
 * be had: a reservation of 24 segments said SAL_EFULL with nothing live. */
static void own_section_reuses_emptied_segments(void **state)
{
    tu_ctx *c = *state;
    sal_options o = recycle_options();
    o.reserve_bytes = 24ull << 20;
    o.max_objects = 1u << 16;
    sal_session *s;
    sal_heap *h = create_heap(c->path, &o, &s);
    enum { N = 4000 };
    sal_id *ids = calloc(N, sizeof *ids);
    TU_OK(sal_write_begin(s));
    for (int r = 0; r < 40; r++) {
        for (int i = 0; i < N; i++) {
            void *p;
            int err = sal_alloc(s, 232, 0, 0, &ids[i], &p);
            if (err)
                fail_msg("round %d, object %d: %s (segments free or pending: %llu)", r, i,
                         sal_strerror(err), (unsigned long long)tu_stats(h).segments_free);
        }
        for (int i = 0; i < N; i++)
            TU_OK(sal_release(s, ids[i]));
    }
    TU_OK(sal_write_end(s));
    free(ids);
    tu_close_all(h, s);
}

/* Two swept segments whose holes are all too short for what is allocated
 * now (64-byte holes, 1 KiB objects) filled both places of swept segments,
 * and the provider swept no more: sparse segments with large holes queued
 * behind them were never reused, and the file grew instead.  It now sweeps
 * on until enough swept segments hold what sessions ask for. */
static void short_holes_do_not_stop_sweeping(void **state)
{
    tu_ctx *c = *state;
    sal_options o = recycle_options();
    sal_session *s;
    sal_heap *h = create_heap(c->path, &o, &s);
    enum { SMALL = 3 * 16384, LARGE = 2500, NEW = 5000 };
    sal_id *ids = calloc(SMALL + LARGE + NEW, sizeof *ids);
    assert_non_null(ids);
    void *p;
    int n = 0;
    TU_OK(sal_write_begin(s));
    /* About three segments of 64-byte spans, two in three dying: short
     * holes, swept first. */
    for (int i = 0; i < SMALL; i++)
        TU_OK(sal_alloc(s, 40, 0, 0, &ids[n++], &p));
    for (int i = 0; i < SMALL; i++)
        if (i % 3)
            TU_OK(sal_release(s, ids[i]));
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    /* About ten segments of 4 KiB objects, 70 % dying: long holes. */
    for (int i = 0; i < LARGE; i++)
        TU_OK(sal_alloc(s, 4000, 0, 0, &ids[n++], &p));
    for (int i = SMALL; i < n; i++)
        if (i % 10 < 7)
            TU_OK(sal_release(s, ids[i]));
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    uint64_t before = tu_stats(h).segments_recycled;
    /* 5 MB of 1 KiB objects, with pauses for the provider. */
    for (int i = 0; i < NEW; i++) {
        TU_OK(sal_alloc(s, 1000, 0, 0, &ids[n++], &p));
        if (i % 500 == 0)
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    uint64_t recycled = tu_stats(h).segments_recycled - before;
    TU_OK(sal_write_end(s));
    free(ids);
    tu_close_all(h, s);
    if (recycled == 0)
        fail_msg("no swept segment was reused for the 1 KiB objects");
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(recycle_reuses_dead_space),
        TU_TEST(recycle_cut_ends_reuse),
        TU_TEST(recycle_waits_for_other_sections),
        TU_TEST(recycle_too_large_counts_nothing),
        TU_TEST(recycle_survives_a_kill),
        TU_TEST(own_section_reuses_emptied_segments),
        TU_TEST(short_holes_do_not_stop_sweeping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
