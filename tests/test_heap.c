/*
 * test_heap.c - creating, opening and closing a heap; options; statistics;
 * reopen after a clean close preserves every root and every object.
 */
#include "test_util.h"

#include <fcntl.h>

#include "format.h"

/* ---------------------------------------------------------------------
 * Create
 * --------------------------------------------------------------------- */

static void create_defaults(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = (sal_heap *)0x1;
    mode_t old = umask(022);
    TU_OK(sal_heap_create(c->path, NULL, &h));
    umask(old);
    assert_non_null(h);

    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    sal_heap_stats s = tu_stats(h);
    assert_int_equal(s.segment_bytes, SAL_DEFAULT_SEGMENT_BYTES);
    assert_int_equal(s.reserve_bytes, SAL_DEFAULT_RESERVE_BYTES);
    assert_int_equal(s.max_objects, SAL_DEFAULT_MAX_OBJECTS);
    /* The reservation holds the metadata (superblock, slots, segment table,
     * object table) and then the segments. */
    assert_true(s.segments_total <= SAL_DEFAULT_RESERVE_BYTES / SAL_DEFAULT_SEGMENT_BYTES);
    assert_true(s.segments_total * SAL_DEFAULT_SEGMENT_BYTES + SAL_DEFAULT_MAX_OBJECTS * 8 <=
                SAL_DEFAULT_RESERVE_BYTES);
    assert_true(s.segments_total * SAL_DEFAULT_SEGMENT_BYTES + SAL_DEFAULT_MAX_OBJECTS * 8 +
                    (64ull << 20) >= SAL_DEFAULT_RESERVE_BYTES);
    assert_int_equal(s.live_objects, 0);
    assert_int_equal(s.live_bytes, 0);
    assert_int_equal(s.sessions_open, 0);
    assert_int_equal(s.readers_open, 0);
    assert_int_equal(s.oldest_section_epoch, 0);
    /* The provider thread may be growing the file meanwhile: it only
     * grows, and the statistics never run ahead of the file. */
    assert_int_equal(stat(c->path, &st), 0);
    assert_true(s.file_bytes <= (uint64_t)st.st_size);
    assert_true(s.file_bytes > 0);
    assert_true(s.file_bytes <= s.reserve_bytes);

    uint64_t max = sal_max_object_bytes(h);
    assert_true(max > 0);
    assert_true(max < SAL_DEFAULT_SEGMENT_BYTES);
    assert_true(max > SAL_DEFAULT_SEGMENT_BYTES - 65536);
    TU_OK(sal_heap_close(h));
}

static void create_options_and_mode(void **state)
{
    tu_ctx *c = *state;
    sal_options o;
    memset(&o, 0x5a, sizeof(o));
    sal_options_init(&o);
    assert_int_equal(o.reserve_bytes, SAL_DEFAULT_RESERVE_BYTES);
    assert_int_equal(o.segment_bytes, SAL_DEFAULT_SEGMENT_BYTES);
    assert_int_equal(o.max_objects, SAL_DEFAULT_MAX_OBJECTS);
    assert_int_equal(o.ready_segments, SAL_DEFAULT_READY_SEGMENTS);
    assert_int_equal(o.file_mode, 0600);
    assert_int_equal(o.flags, 0);

    o.segment_bytes = 2ull << 20;
    o.reserve_bytes = (64ull << 20) + 1; /* rounded up to whole segments */
    o.max_objects = 100000;
    o.file_mode = 0640;
    sal_heap *h = NULL;
    mode_t old = umask(022);
    TU_OK(sal_heap_create(c->path, &o, &h));
    umask(old);
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    sal_heap_stats s = tu_stats(h);
    assert_int_equal(s.segment_bytes, 2ull << 20);
    assert_int_equal(s.reserve_bytes % s.segment_bytes, 0);
    assert_true(s.reserve_bytes >= (64ull << 20) + 1);
    assert_true(s.reserve_bytes <= (66ull << 20));
    assert_int_equal(s.max_objects, 100000);
    assert_true(sal_max_object_bytes(h) < (2ull << 20));
    assert_true(sal_max_object_bytes(h) > (2ull << 20) - 65536);
    TU_OK(sal_heap_close(h));

    /* The geometry is a property of the file: open ignores it. */
    sal_options o2;
    sal_options_init(&o2);
    o2.segment_bytes = 4ull << 20;
    o2.max_objects = 7;
    TU_OK(sal_heap_open(c->path, &o2, &h));
    s = tu_stats(h);
    assert_int_equal(s.segment_bytes, 2ull << 20);
    assert_int_equal(s.max_objects, 100000);
    TU_OK(sal_heap_close(h));
}

/* SAL_OPEN_RECOVER and SAL_OPEN_REPAIR mean nothing for a new heap and are
 * ignored by create (sal.h): a repair flag made the open inside create
 * run a sweep and report a recovery. */
static void create_ignores_recovery_flags(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.flags = SAL_OPEN_RECOVER | SAL_OPEN_REPAIR;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_recovery_report rr;
    TU_OK(sal_heap_recovery_report(h, &rr));
    assert_int_equal(rr.recovered, 0);
    TU_OK(sal_heap_close(h));
}

/* A heap whose object table filled up exactly to a chunk's end (max_objects
 * 2^18 - 1: 2^18 entries with the null one, 2 MiB) reopens for writing.
 * Open asked for the entry of the next fresh id, which a full table does
 * not have, and said SAL_ENOIDS: the heap could only be opened read-only,
 * and sal-gc repair failed the same way. */
static void full_table_reopens(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.max_objects = (1u << 18) - 1;
    o.ready_segments = 0;
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    TU_OK(sal_write_begin(s));
    sal_id id;
    void *p;
    int rc;
    uint64_t n = 0;
    while ((rc = sal_alloc(s, 8, 0, 0, &id, &p)) == 0)
        n++;
    TU_ERR(rc, SAL_ENOIDS);
    assert_int_equal(n, o.max_objects);
    TU_OK(sal_root_set(s, 0, id)); /* the last one */
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    TU_OK(sal_heap_open(c->path, &o, &h));
    assert_int_equal(tu_stats(h).live_objects, n);
    TU_OK(sal_heap_close(h));
}

/* Free segments and unused metadata pages of a copy made sparse (holes)
 * are allocated on disk again at a writable open: a write into a hole of a
 * full disk is a SIGBUS, not ENOSPC.  (Seen with cp --sparse=always on a
 * nearly full ext4.)  Checked by the blocks the file holds. */
static void sparse_copy_allocated_at_open(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    TU_OK(sal_write_begin(s));
    sal_id id;
    void *p;
    for (int i = 0; i < 3; i++) { /* three segments, then the first two freed */
        TU_OK(sal_alloc(s, (size_t)sal_max_object_bytes(h), 0, 0, &id, &p));
        if (i < 2)
            TU_OK(sal_release(s, id));
        else
            TU_OK(sal_root_set(s, 0, id));
    }
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s));
    sal_heap_stats st = tu_stats(h);
    TU_OK(sal_heap_close(h));
    sal_superblock sb;
    TU_OK(tu_peek(c->path, 0, &sb, sizeof sb));
    int fd = open(c->path, O_RDWR);
    assert_true(fd >= 0);
    struct stat before, holed, after;
    assert_int_equal(fstat(fd, &before), 0);
    /* Holes: a free segment (the first), and the second slot's page. */
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)sb.data_offset,
                  (off_t)st.segment_bytes) != 0 ||
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SAL_SLOT1_OFFSET, 4096) != 0) {
        close(fd);
        skip(); /* the file system cannot punch holes */
    }
    assert_int_equal(fstat(fd, &holed), 0);
    assert_true(holed.st_blocks < before.st_blocks);
    TU_OK(sal_heap_open(c->path, &o, &h));
    assert_int_equal(fstat(fd, &after), 0);
    close(fd);
    TU_OK(sal_heap_close(h));
    if (after.st_blocks < before.st_blocks)
        fail_msg("%lld blocks after the open, %lld before the holes: the holes stay",
                 (long long)after.st_blocks, (long long)before.st_blocks);
}

static void create_rejects_bad_options(void **state)
{
    tu_ctx *c = *state;
    struct {
        const char *what;
        uint64_t segment_bytes, reserve_bytes, max_objects;
    } cases[] = {
        {"segment not a power of two", 3ull << 20, 1ull << 30, 1000},
        {"segment below the minimum", SAL_MIN_SEGMENT_BYTES / 2, 1ull << 30, 1000},
        {"segment above the maximum", SAL_MAX_SEGMENT_BYTES * 2, 1ull << 40, 1000},
        {"reserve above the maximum", SAL_MIN_SEGMENT_BYTES, SAL_MAX_RESERVE_BYTES * 2, 1000},
        {"max_objects above the limit", SAL_MIN_SEGMENT_BYTES, 1ull << 30,
         SAL_MAX_OBJECTS_LIMIT + 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sal_options o;
        sal_options_init(&o);
        o.segment_bytes = cases[i].segment_bytes;
        o.reserve_bytes = cases[i].reserve_bytes;
        o.max_objects = cases[i].max_objects;
        sal_heap *h = (sal_heap *)0x1;
        int rc = sal_heap_create(c->path, &o, &h);
        if (rc != SAL_EINVAL)
            fail_msg("%s: sal_heap_create returned %d (%s), expected SAL_EINVAL",
                     cases[i].what, rc, sal_strerror(rc));
        assert_null(h);
        /* "on failure ... no file is left behind" */
        assert_int_equal(access(c->path, F_OK), -1);
        assert_int_equal(errno, ENOENT);
    }
    /* Options both create and open read. */
    struct {
        const char *what;
        unsigned flags, ready_segments, file_mode;
    } more[] = {
        {"an unknown flag", 0x100, SAL_DEFAULT_READY_SEGMENTS, 0600},
        {"ready_segments above SAL_MAX_READY_SEGMENTS", 0, SAL_MAX_READY_SEGMENTS + 1, 0600},
        {"a setuid file mode", 0, SAL_DEFAULT_READY_SEGMENTS, 04777},
    };
    sal_options o;
    sal_options_init(&o);
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    TU_OK(sal_heap_close(h));
    char other[PATH_MAX + 8];
    snprintf(other, sizeof other, "%s/other.sal", c->dir);
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        sal_options_init(&o);
        o.flags = more[i].flags;
        o.ready_segments = more[i].ready_segments;
        o.file_mode = more[i].file_mode;
        h = (sal_heap *)0x1;
        int rc = sal_heap_create(other, &o, &h);
        if (rc != SAL_EINVAL)
            fail_msg("%s: sal_heap_create returned %d (%s), expected SAL_EINVAL",
                     more[i].what, rc, sal_strerror(rc));
        assert_null(h);
        assert_int_equal(access(other, F_OK), -1);
        if (more[i].file_mode != 0600)
            continue; /* open ignores the mode */
        rc = sal_heap_open(c->path, &o, &h);
        if (rc != SAL_EINVAL)
            fail_msg("%s: sal_heap_open returned %d (%s), expected SAL_EINVAL",
                     more[i].what, rc, sal_strerror(rc));
    }
    TU_OK(unlink(c->path));
}

static void create_existing_is_eexist(void **state)
{
    tu_ctx *c = *state;
    const char text[] = "precious data, not a heap\n";
    assert_int_equal(tu_write_file(c->path, text, sizeof(text)), 0);
    sal_heap *h = (sal_heap *)0x1;
    TU_ERR(sal_heap_create(c->path, NULL, &h), EEXIST);
    assert_null(h);
    size_t len = 0;
    uint8_t *buf = tu_read_file(c->path, &len);
    assert_non_null(buf);
    assert_int_equal(len, sizeof(text));
    assert_memory_equal(buf, text, sizeof(text));
    free(buf);

    /* An existing heap is not overwritten either. */
    char p2[PATH_MAX];
    tu_join(p2, sizeof(p2), c->dir, "heap2");
    sal_options o = tu_small_options(); /* a small file to hash */
    TU_OK(sal_heap_create(p2, &o, &h));
    TU_OK(sal_heap_close(h));
    uint64_t h1, n1, h2, n2;
    assert_int_equal(tu_hash_file(p2, &h1, &n1), 0);
    TU_ERR(sal_heap_create(p2, &o, &h), EEXIST);
    assert_null(h);
    assert_int_equal(tu_hash_file(p2, &h2, &n2), 0);
    assert_int_equal(h1, h2);
    assert_int_equal(n1, n2);
}

static void create_in_missing_directory(void **state)
{
    tu_ctx *c = *state;
    char p[PATH_MAX];
    tu_join(p, sizeof(p), c->dir, "no/such/dir/heap");
    sal_heap *h = (sal_heap *)0x1;
    TU_ERR(sal_heap_create(p, NULL, &h), ENOENT);
    assert_null(h);
}

/* ---------------------------------------------------------------------
 * Growth and statistics
 * --------------------------------------------------------------------- */

static void file_grows_by_segments(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_heap_stats s0 = tu_stats(h);
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal(s0.file_bytes, (uint64_t)st.st_size);

    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    enum { N = 6 * 16, SZ = 64 * 1024 }; /* 6 MiB in 64 KiB objects */
    sal_id ids[N];
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < N; i++) {
        void *p;
        TU_OK(sal_alloc(s, SZ, 0, 7, &ids[i], &p));
        assert_int_equal((uintptr_t)p % 8, 0);
        tu_fill(p, SZ, 0, (uint64_t)i + 1);
    }
    TU_OK(sal_write_end(s));
    sal_heap_stats s1 = tu_stats(h);
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal(s1.file_bytes, (uint64_t)st.st_size);
    assert_true(s1.file_bytes >= s0.file_bytes + 5 * SAL_MIN_SEGMENT_BYTES);
    assert_true(s1.segments_in_use >= 6);
    assert_int_equal(s1.live_objects, N);
    assert_true(s1.live_bytes >= (uint64_t)N * SZ);
    assert_true(s1.live_bytes <= (uint64_t)N * (SZ + 64));
    assert_true(s1.ids_high_water >= N);

    TU_OK(sal_read_begin(s));
    for (int i = 0; i < N; i++) {
        const void *p;
        TU_OK(sal_read(s, ids[i], &p));
        assert_int_equal(tu_check(p, SZ, 0, (uint64_t)i + 1), TU_CHECK_OK);
    }
    TU_OK(sal_read_end(s));
    for (int i = 0; i < N; i++)
        TU_OK(sal_release(s, ids[i]));
    sal_heap_stats s2 = tu_stats(h);
    assert_int_equal(s2.live_objects, 0);
    assert_int_equal(s2.live_bytes, 0);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

static void largest_object(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    uint64_t max = sal_max_object_bytes(h);
    assert_true(max <= SAL_MIN_SEGMENT_BYTES);
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    sal_id a, b;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 100, 0, 1, &a, &p)); /* a partly used arena first */
    TU_OK(sal_alloc(s, max, 0, 2, &b, &p));
    tu_fill(p, max, 0, 99);
    TU_ERR(sal_alloc(s, max + 1, 0, 2, &b, &p), SAL_ETOOBIG);
    TU_OK(sal_write_end(s));
    sal_object_info info;
    TU_OK(sal_info(s, b, &info));
    assert_int_equal(info.size_bytes, max);
    TU_OK(tu_root_set(s, 0, b));
    TU_OK(sal_release(s, a));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_reader_open(h, &s));
    sal_id r;
    TU_OK(sal_root_get(s, 0, &r));
    assert_int_equal(r, b);
    const void *q;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, r, &q));
    assert_int_equal(tu_check(q, max, 0, 99), TU_CHECK_OK);
    TU_OK(sal_read_end(s));
    TU_OK(sal_release(s, r));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* ---------------------------------------------------------------------
 * Reopen after a clean close preserves every root and every object.
 *
 * A random DAG: object i has up to 5 child slots (some left null) naming
 * earlier objects, so objects are shared by several parents; some objects
 * are put in roots.  Everything else is released, so what is not reachable
 * from a root dies.  Expected refcount = slots + roots naming it.
 * --------------------------------------------------------------------- */

typedef struct dag_obj {
    sal_id id;
    uint32_t size, nrefs, type;
    uint32_t child[5]; /* indexes + 1; 0 = null slot */
    int reachable;
    uint32_t refs; /* from reachable parents and roots */
} dag_obj;

typedef struct dag {
    uint32_t n;
    dag_obj *o;
    int32_t root[SAL_ROOT_COUNT]; /* object index or -1 */
} dag;

static uint64_t dag_key(uint32_t i) { return 0x1000 + i; }

static void dag_build(sal_session *s, dag *d, uint32_t n, uint64_t *rng)
{
    d->n = n;
    d->o = calloc(n, sizeof(dag_obj));
    assert_non_null(d->o);
    TU_OK(sal_write_begin(s));
    for (uint32_t i = 0; i < n; i++) {
        dag_obj *x = &d->o[i];
        x->nrefs = i == 0 ? 0 : (uint32_t)tu_rand_below(rng, 6);
        uint32_t extra = (uint32_t)tu_rand_below(rng, 4) == 0 ? (uint32_t)tu_rand_below(rng, 5000)
                                                              : (uint32_t)tu_rand_below(rng, 200);
        x->size = x->nrefs * 8 + extra;
        x->type = (uint32_t)tu_rand_below(rng, 256);
        void *p;
        TU_OK(sal_alloc(s, x->size, x->nrefs, x->type, &x->id, &p));
        for (uint32_t k = 0; k < x->nrefs; k++)
            assert_int_equal(((sal_id *)p)[k], SAL_NULL_ID);
        tu_fill(p, x->size, x->nrefs * 8, dag_key(i));
        for (uint32_t k = 0; k < x->nrefs; k++) {
            if (tu_rand_below(rng, 5) == 0)
                continue; /* leave a null slot */
            uint32_t ci = (uint32_t)tu_rand_below(rng, i);
            TU_OK(sal_retain(s, d->o[ci].id));
            TU_OK(sal_set_child(s, x->id, k, d->o[ci].id));
            x->child[k] = ci + 1;
        }
        if ((i & 255) == 255) { /* keep sections short */
            TU_OK(sal_write_end(s));
            TU_OK(sal_write_begin(s));
        }
    }
    TU_OK(sal_write_end(s));
    for (int r = 0; r < SAL_ROOT_COUNT; r++)
        d->root[r] = -1;
    /* Roots: the last object, a few random ones, and root 63. */
    int rootsel[] = {0, 1, 2, 5, 17, SAL_ROOT_COUNT - 1};
    for (size_t k = 0; k < sizeof(rootsel) / sizeof(rootsel[0]); k++) {
        uint32_t oi = k == 0 ? n - 1 : (uint32_t)tu_rand_below(rng, n);
        TU_OK(sal_retain(s, d->o[oi].id));
        TU_OK(tu_root_set(s, (unsigned)rootsel[k], d->o[oi].id));
        d->root[rootsel[k]] = (int32_t)oi;
    }
    /* Drop our own references: only what the roots reach survives. */
    for (uint32_t i = 0; i < n; i++)
        TU_OK(sal_release(s, d->o[i].id));

    /* Expected reachability and counts (children have smaller indexes, so
     * one pass from the top down suffices). */
    for (int r = 0; r < SAL_ROOT_COUNT; r++)
        if (d->root[r] >= 0)
            d->o[d->root[r]].reachable = 1;
    for (uint32_t i = n; i-- > 0;) {
        if (!d->o[i].reachable)
            continue;
        for (uint32_t k = 0; k < d->o[i].nrefs; k++)
            if (d->o[i].child[k])
                d->o[d->o[i].child[k] - 1].reachable = 1;
    }
    for (int r = 0; r < SAL_ROOT_COUNT; r++)
        if (d->root[r] >= 0)
            d->o[d->root[r]].refs++;
    for (uint32_t i = 0; i < n; i++)
        if (d->o[i].reachable)
            for (uint32_t k = 0; k < d->o[i].nrefs; k++)
                if (d->o[i].child[k])
                    d->o[d->o[i].child[k] - 1].refs++;
}

static uint64_t dag_reachable(const dag *d)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < d->n; i++)
        n += d->o[i].reachable != 0;
    return n;
}

/* Check every object of the dag through session s (reader or session). */
static void dag_verify(sal_session *s, const dag *d, int committed)
{
    for (int r = 0; r < SAL_ROOT_COUNT; r++) {
        sal_id id;
        TU_OK(sal_root_get(s, (unsigned)r, &id));
        if (d->root[r] < 0) {
            assert_int_equal(id, SAL_NULL_ID);
            continue;
        }
        if (id != d->o[d->root[r]].id)
            fail_msg("root %d is %#" PRIx64 ", expected %#" PRIx64, r, id,
                     d->o[d->root[r]].id);
        TU_OK(sal_release(s, id));
    }
    TU_OK(sal_read_begin(s));
    for (uint32_t i = 0; i < d->n; i++) {
        const dag_obj *x = &d->o[i];
        sal_object_info info;
        if (!x->reachable) {
            int rc = sal_info(s, x->id, &info);
            if (rc != SAL_ESTALE)
                fail_msg("unreachable object %u (%#" PRIx64 "): sal_info gave %d (%s), "
                         "expected SAL_ESTALE",
                         i, x->id, rc, sal_strerror(rc));
            continue;
        }
        TU_OK(sal_info(s, x->id, &info));
        if (info.size_bytes != x->size || info.nrefs != x->nrefs || info.type != x->type ||
            info.refcount != x->refs || info.committed != committed)
            fail_msg("object %u (%#" PRIx64 "): info size %" PRIu64 " nrefs %u type %u "
                     "refcount %u committed %d; expected %u %u %u %u %d",
                     i, x->id, info.size_bytes, info.nrefs, info.type, info.refcount,
                     info.committed, x->size, x->nrefs, x->type, x->refs, committed);
        const void *p;
        TU_OK(sal_read(s, x->id, &p));
        assert_int_equal((uintptr_t)p % 8, 0);
        const sal_id *slots = p;
        for (uint32_t k = 0; k < x->nrefs; k++) {
            sal_id want = x->child[k] ? d->o[x->child[k] - 1].id : SAL_NULL_ID;
            if (slots[k] != want)
                fail_msg("object %u slot %u is %#" PRIx64 ", expected %#" PRIx64, i, k,
                         slots[k], want);
        }
        size_t bad = tu_check(p, x->size, x->nrefs * 8, dag_key(i));
        if (bad != TU_CHECK_OK)
            fail_msg("object %u: payload byte %zu of %u differs", i, bad, x->size);
    }
    TU_OK(sal_read_end(s));
}

static void reopen_preserves_everything(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0x6a09e667f3bcc908ull;
    sal_options o = tu_small_options();
    o.reserve_bytes = 4ull << 30;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    dag d;
    dag_build(s, &d, 4000, &rng);
    uint64_t reach = dag_reachable(&d);
    assert_true(reach > 10);
    assert_true(reach < d.n); /* some objects died with our references */
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, reach);
    dag_verify(s, &d, 0);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));

    for (int round = 0; round < 2; round++) {
        TU_OK(sal_heap_open(c->path, NULL, &h));
        st = tu_stats(h);
        assert_int_equal(st.live_objects, reach);
        assert_int_equal(st.segment_bytes, SAL_MIN_SEGMENT_BYTES);
        assert_int_equal(st.reserve_bytes, 4ull << 30);
        assert_int_equal(st.max_objects, 1ull << 20);
        TU_OK(sal_session_open(h, &s));
        dag_verify(s, &d, 1);
        TU_OK(sal_session_close(s));
        /* Also through a reader. */
        TU_OK(sal_reader_open(h, &s));
        dag_verify(s, &d, 1);
        TU_OK(sal_session_close(s));
        TU_OK(sal_heap_close(h));
    }

    /* Read-only open shows the same. */
    sal_options ro;
    sal_options_init(&ro);
    ro.flags = SAL_OPEN_READONLY;
    TU_OK(sal_heap_open(c->path, &ro, &h));
    TU_OK(sal_reader_open(h, &s));
    dag_verify(s, &d, 1);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    free(d.o);
}

/* Changes made after a reopen are preserved by the next close too, and the
 * objects that were released after the reopen are gone. */
static void reopen_modify_reopen(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    sal_id a, b;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 64, 0, 1, &a, &p));
    tu_fill(p, 64, 0, 1);
    TU_OK(sal_alloc(s, 64, 0, 2, &b, &p));
    tu_fill(p, 64, 0, 2);
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, a));
    TU_OK(tu_root_set(s, 1, b));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id c2;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 80, 1, 3, &c2, &p));
    tu_fill(p, 80, 8, 3);
    sal_id a2;
    TU_OK(sal_root_get(s, 0, &a2));
    assert_int_equal(a2, a);
    TU_OK(sal_set_child(s, c2, 0, a2)); /* c2 now owns that reference */
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 2, c2));
    TU_OK(tu_root_set(s, 1, SAL_NULL_ID)); /* b dies */
    TU_ERR(sal_info(s, b, &(sal_object_info){0}), SAL_ESTALE);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));

    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_reader_open(h, &s));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, 2);
    sal_id r0, r1, r2;
    TU_OK(sal_root_get(s, 0, &r0));
    TU_OK(sal_root_get(s, 1, &r1));
    TU_OK(sal_root_get(s, 2, &r2));
    assert_int_equal(r0, a);
    assert_int_equal(r1, SAL_NULL_ID);
    assert_int_equal(r2, c2);
    sal_object_info info;
    TU_OK(sal_info(s, a, &info));
    assert_int_equal(info.refcount, 3); /* root 0, c2's slot, our r0 */
    assert_int_equal(info.committed, 1);
    TU_ERR(sal_info(s, b, &info), SAL_ESTALE);
    const void *q;
    TU_OK(sal_read_begin(s));
    TU_OK(sal_read(s, c2, &q));
    assert_int_equal(((const sal_id *)q)[0], a);
    assert_int_equal(tu_check(q, 80, 8, 3), TU_CHECK_OK);
    TU_OK(sal_read(s, a, &q));
    assert_int_equal(tu_check(q, 64, 0, 1), TU_CHECK_OK);
    TU_OK(sal_read_end(s));
    TU_OK(sal_release(s, r0));
    TU_OK(sal_release(s, r2));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* A created heap that is closed at once reopens, empty. */
static void create_close_open_empty(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, NULL, &h));
    TU_OK(sal_heap_close(h));
    TU_OK(sal_heap_open(c->path, NULL, &h));
    sal_heap_stats s = tu_stats(h);
    assert_int_equal(s.live_objects, 0);
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    for (unsigned i = 0; i < SAL_ROOT_COUNT; i++) {
        sal_id id = 1;
        TU_OK(sal_root_get(r, i, &id));
        assert_int_equal(id, SAL_NULL_ID);
    }
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

/* Two heaps open at once in one process are independent. */
static void two_heaps_at_once(void **state)
{
    tu_ctx *c = *state;
    char p2[PATH_MAX];
    tu_join(p2, sizeof(p2), c->dir, "other");
    sal_options o = tu_small_options();
    sal_heap *h1, *h2;
    TU_OK(sal_heap_create(c->path, &o, &h1));
    TU_OK(sal_heap_create(p2, &o, &h2));
    sal_session *s1, *s2;
    TU_OK(sal_session_open(h1, &s1));
    TU_OK(sal_session_open(h2, &s2));
    sal_id a, b;
    void *p;
    TU_OK(sal_write_begin(s1));
    TU_OK(sal_alloc(s1, 16, 0, 0, &a, &p));
    tu_fill(p, 16, 0, 11);
    TU_OK(sal_write_end(s1));
    TU_OK(sal_write_begin(s2));
    TU_OK(sal_alloc(s2, 16, 0, 0, &b, &p));
    tu_fill(p, 16, 0, 22);
    TU_OK(sal_write_end(s2));
    TU_OK(tu_root_set(s1, 0, a));
    TU_OK(tu_root_set(s2, 0, b));
    assert_int_equal(tu_stats(h1).live_objects, 1);
    assert_int_equal(tu_stats(h2).live_objects, 1);
    TU_OK(sal_session_close(s1));
    TU_OK(sal_session_close(s2));
    TU_OK(sal_heap_close(h1));
    TU_OK(sal_heap_close(h2));
    TU_OK(sal_heap_open(p2, NULL, &h2));
    TU_OK(sal_reader_open(h2, &s2));
    sal_id r;
    TU_OK(sal_root_get(s2, 0, &r));
    assert_int_equal(r, b);
    const void *q;
    TU_OK(sal_read_begin(s2));
    TU_OK(sal_read(s2, r, &q));
    assert_int_equal(tu_check(q, 16, 0, 22), TU_CHECK_OK);
    TU_OK(sal_read_end(s2));
    TU_OK(sal_release(s2, r));
    TU_OK(sal_session_close(s2));
    TU_OK(sal_heap_close(h2));
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(create_defaults),
        TU_TEST(create_options_and_mode),
        TU_TEST(create_ignores_recovery_flags),
        TU_TEST(full_table_reopens),
        TU_TEST(sparse_copy_allocated_at_open),
        TU_TEST(create_rejects_bad_options),
        TU_TEST(create_existing_is_eexist),
        TU_TEST(create_in_missing_directory),
        TU_TEST(create_close_open_empty),
        TU_TEST(file_grows_by_segments),
        TU_TEST(largest_object),
        TU_TEST(reopen_preserves_everything),
        TU_TEST(reopen_modify_reopen),
        TU_TEST(two_heaps_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
