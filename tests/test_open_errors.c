/*
 * test_open_errors.c - every bad file that sal_heap_open() can be given
 * gets the error it must get, never crashes, and is never written to.
 *
 * Offsets come from sal/src/format.h (the on-disk format): superblock at 0
 * (magic 0..7, format_version 8..11, checksummed fields up to 151), commit
 * slots at 4096 and 8192, the object table at superblock.table_offset.
 */
#include "test_util.h"

#include <signal.h>

#include "format.h"
#include "internal.h" /* sal_test_id_vec_fail */

#define BASE_OBJECTS 48u
#define BASE_OBJECT_BYTES (64u * 1024u)

/* ---------------------------------------------------------------------
 * A valid heap to damage: root 0 is an index object whose 48 child slots
 * name 64 KiB objects with known contents (3 MiB over several 1 MiB
 * segments); root 1 is a small object.  Closed cleanly.
 * --------------------------------------------------------------------- */
typedef struct base_heap {
    sal_id index_id;
    sal_id child[BASE_OBJECTS];
    sal_id small_id;
} base_heap;

static uint64_t base_key(unsigned i) { return 0xb000 + i; }

static void base_build(const char *path, base_heap *b)
{
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    o.max_objects = 1u << 16; /* a small table: a small file to hash */
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_create(path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, BASE_OBJECTS * 8 + 8, BASE_OBJECTS, 9, &b->index_id, &p));
    tu_fill(p, BASE_OBJECTS * 8 + 8, BASE_OBJECTS * 8, 0xabc);
    for (unsigned i = 0; i < BASE_OBJECTS; i++) {
        void *q;
        TU_OK(sal_alloc(s, BASE_OBJECT_BYTES, 0, 1, &b->child[i], &q));
        tu_fill(q, BASE_OBJECT_BYTES, 0, base_key(i));
        TU_OK(sal_set_child(s, b->index_id, i, b->child[i]));
    }
    TU_OK(sal_alloc(s, 40, 0, 2, &b->small_id, &p));
    tu_fill(p, 40, 0, 0x5a11);
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 0, b->index_id));
    TU_OK(tu_root_set(s, 1, b->small_id));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* Check root 0's tree through an open heap (any mode).  Returns nothing;
 * fails the test on a difference. */
static void base_verify_root0(sal_heap *h, const base_heap *b)
{
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    sal_id id;
    TU_OK(sal_root_get(r, 0, &id));
    assert_int_equal(id, b->index_id);
    const void *p;
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read(r, id, &p));
    const sal_id *slots = p;
    for (unsigned i = 0; i < BASE_OBJECTS; i++) {
        assert_int_equal(slots[i], b->child[i]);
        const void *q;
        TU_OK(sal_read(r, slots[i], &q));
        assert_int_equal(tu_check(q, BASE_OBJECT_BYTES, 0, base_key(i)), TU_CHECK_OK);
    }
    TU_OK(sal_read_end(r));
    TU_OK(sal_release(r, id));
    TU_OK(sal_session_close(r));
}

static sal_options ro_options(void)
{
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_READONLY;
    return o;
}

/* Open must fail with `want` (writable and read-only alike), set *out to
 * NULL, and leave the file byte-for-byte as it was. */
static void expect_open_error_ro(const char *path, int want, int want_ro, const char *what)
{
    uint64_t h0, n0, h1, n1;
    assert_int_equal(tu_hash_file(path, &h0, &n0), 0);
    sal_heap *h = (sal_heap *)0x1;
    int rc = sal_heap_open(path, NULL, &h);
    if (rc != want)
        fail_msg("%s: sal_heap_open returned %d (%s), expected %d (%s)", what, rc,
                 sal_strerror(rc), want, sal_strerror(want));
    assert_null(h);
    sal_options ro = ro_options();
    h = (sal_heap *)0x1;
    rc = sal_heap_open(path, &ro, &h);
    if (rc != want_ro)
        fail_msg("%s: read-only sal_heap_open returned %d (%s), expected %d (%s)", what, rc,
                 sal_strerror(rc), want_ro, sal_strerror(want_ro));
    assert_null(h);
    assert_int_equal(tu_hash_file(path, &h1, &n1), 0);
    if (h0 != h1 || n0 != n1)
        fail_msg("%s: the failed open changed the file (size %" PRIu64 " -> %" PRIu64 ")", what,
                 n0, n1);
}

static void expect_open_error(const char *path, int want, const char *what)
{
    expect_open_error_ro(path, want, want, what);
}

static void read_superblock(const char *path, sal_superblock *sb)
{
    assert_int_equal(tu_peek(path, 0, sb, sizeof(*sb)), 0);
}

static void read_slot(const char *path, int which, sal_commit_slot *slot)
{
    assert_int_equal(
        tu_peek(path, which ? SAL_SLOT1_OFFSET : SAL_SLOT0_OFFSET, slot, sizeof(*slot)), 0);
}

/* Reads both durable slots; returns which is the newest. */
static int read_durable_slots(const char *path, sal_commit_slot slot[2])
{
    read_slot(path, 0, &slot[0]);
    read_slot(path, 1, &slot[1]);
    return slot[1].epoch > slot[0].epoch;
}

/* ---------------------------------------------------------------------
 * Files that are not heaps
 * --------------------------------------------------------------------- */

static void empty_file(void **state)
{
    tu_ctx *c = *state;
    assert_int_equal(tu_write_file(c->path, "", 0), 0);
    expect_open_error(c->path, SAL_ENOTHEAP, "empty file");
}

static void random_bytes(void **state)
{
    tu_ctx *c = *state;
    uint64_t rng = tu_seed() ^ 0x3c6ef372fe94f82bull;
    size_t sizes[] = {1, 7, 151, 4096, 12288, 65536, 3u << 20};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        uint8_t *buf = malloc(sizes[k]);
        assert_non_null(buf);
        for (size_t i = 0; i < sizes[k]; i++)
            buf[i] = (uint8_t)tu_rand(&rng);
        assert_int_equal(tu_write_file(c->path, buf, sizes[k]), 0);
        char what[64];
        snprintf(what, sizeof(what), "%zu random bytes", sizes[k]);
        expect_open_error(c->path, SAL_ENOTHEAP, what);
        free(buf);
    }
}

static void foreign_file(void **state)
{
    tu_ctx *c = *state;
    const char *texts[] = {
        "#!/bin/sh\necho hello\n",
        "SQLite format 3\0 this is not a sal heap at all, just some bytes",
        "SALHEAX\0 nearly the magic",
    };
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        /* Pad to several pages so that size alone does not decide. */
        size_t len = 5 * 4096;
        uint8_t *buf = calloc(1, len);
        assert_non_null(buf);
        memcpy(buf, texts[k], strlen(texts[k]) + 1);
        assert_int_equal(tu_write_file(c->path, buf, len), 0);
        expect_open_error(c->path, SAL_ENOTHEAP, texts[k]);
        /* The same text without padding. */
        assert_int_equal(tu_write_file(c->path, texts[k], strlen(texts[k])), 0);
        expect_open_error(c->path, SAL_ENOTHEAP, texts[k]);
        free(buf);
    }
}

static void directory_as_path(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = (sal_heap *)0x1;
    int rc = sal_heap_open(c->dir, NULL, &h);
    if (rc != EISDIR)
        fail_msg("opening a directory: %d (%s), expected EISDIR", rc, sal_strerror(rc));
    assert_null(h);
    sal_options ro = ro_options();
    h = (sal_heap *)0x1;
    rc = sal_heap_open(c->dir, &ro, &h);
    if (rc != EISDIR)
        fail_msg("opening a directory read-only: %d (%s), expected EISDIR", rc,
                 sal_strerror(rc));
    assert_null(h);
    assert_non_null(sal_strerror(rc));
    /* Creating over a directory: it exists. */
    h = (sal_heap *)0x1;
    TU_ERR(sal_heap_create(c->dir, NULL, &h), EEXIST);
    assert_null(h);
}

static void nonexistent_path(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = (sal_heap *)0x1;
    TU_ERR(sal_heap_open(c->path, NULL, &h), ENOENT);
    assert_null(h);
    sal_options ro = ro_options();
    TU_ERR(sal_heap_open(c->path, &ro, &h), ENOENT);
    assert_null(h);
    /* and open did not create it */
    assert_int_equal(access(c->path, F_OK), -1);
}

/* ---------------------------------------------------------------------
 * Truncated heaps
 * --------------------------------------------------------------------- */

static void truncated_heap(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb;
    read_superblock(c->path, &sb);
    sal_commit_slot slot[2];
    const sal_commit_slot *cur = &slot[read_durable_slots(c->path, slot)];
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    uint64_t size = (uint64_t)st.st_size;
    assert_true(cur->segments_high_water >= 3); /* 3 MiB in 1 MiB segments */
    assert_true(cur->file_bytes <= size);
    uint64_t last_seg = sb.data_offset + (cur->segments_high_water - 1) * sb.segment_bytes;
    assert_true(last_seg < size);

    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    uint64_t cuts[] = {
        last_seg + sb.segment_bytes / 2,  /* into the last segment */
        last_seg + 4096,                  /* just one page of it */
        last_seg,                         /* without the last segment */
        sb.data_offset + sb.segment_bytes,/* only the first segment */
        sb.data_offset,                   /* no segment at all */
        cur->file_bytes - 1,              /* one byte short of the commit */
    };
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        if (cuts[k] >= cur->file_bytes)
            fail_msg("cut %zu at %" PRIu64 " is not below the committed size %" PRIu64, k,
                     cuts[k], cur->file_bytes);
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        assert_int_equal(truncate(copy, (off_t)cuts[k]), 0);
        char what[96];
        snprintf(what, sizeof(what), "heap of %" PRIu64 " bytes truncated to %" PRIu64, size,
                 cuts[k]);
        expect_open_error(copy, SAL_ETRUNCATED, what);
    }
    /* The original still opens. */
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
}

/* Cut inside the metadata, before the first segment: within the superblock
 * page, the commit slots, the segment-table copies and the object table.
 * Every such file is SAL_ETRUNCATED (the magic is intact), never another
 * error, never a crash (a child runs the opens). */
static void expect_child_ok(int status, const char *what);

typedef struct cut_arg {
    const char *path;
    uint64_t cut;
} cut_arg;

static int child_open_truncated(void *argp)
{
    cut_arg *a = argp;
    for (int ro = 0; ro < 2; ro++) {
        sal_options o = ro_options();
        sal_heap *h = (sal_heap *)0x1;
        int rc = sal_heap_open(a->path, ro ? &o : NULL, &h);
        if (rc != SAL_ETRUNCATED || h != NULL) {
            fprintf(stderr, "truncated to %" PRIu64 " bytes: %sopen returned %d (%s)\n",
                    a->cut, ro ? "read-only " : "", rc, sal_strerror(rc));
            return 20 + ro;
        }
    }
    return 0;
}

static void truncated_in_metadata(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb;
    read_superblock(c->path, &sb);
    assert_true(sb.table_offset > SAL_SEGTAB_OFFSET);
    assert_true(sb.data_offset > sb.table_offset);
    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    uint64_t cuts[] = {
        sizeof(sal_superblock),                       /* the superblock alone */
        SAL_SLOT0_OFFSET,                             /* no commit slot */
        SAL_SLOT0_OFFSET + sizeof(sal_commit_slot) / 2, /* half of slot 0 */
        SAL_SLOT1_OFFSET + sizeof(sal_commit_slot),   /* the durable slots only */
        SAL_SEGTAB_OFFSET,                            /* no segment table */
        SAL_SEGTAB_OFFSET + 100,                      /* a part of its first copy */
        sb.table_offset,                              /* no object table */
        sb.table_offset + 4096,                       /* its first page */
        sb.data_offset - 1,                           /* all but the last byte */
    };
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        assert_int_equal(truncate(copy, (off_t)cuts[k]), 0);
        uint64_t h0, n0, h1, n1;
        assert_int_equal(tu_hash_file(copy, &h0, &n0), 0);
        assert_int_equal(n0, cuts[k]);
        cut_arg a = {copy, cuts[k]};
        char what[96];
        snprintf(what, sizeof(what), "heap truncated to %" PRIu64 " bytes (metadata)", cuts[k]);
        expect_child_ok(tu_in_child(child_open_truncated, &a), what);
        assert_int_equal(tu_hash_file(copy, &h1, &n1), 0);
        if (h0 != h1 || n0 != n1)
            fail_msg("%s: the failed open changed the file", what);
    }
}

/* ---------------------------------------------------------------------
 * Damaged superblock
 * --------------------------------------------------------------------- */

static void superblock_byte_64(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    assert_int_equal(tu_xor_byte(c->path, 64, 0x01), 0);
    expect_open_error(c->path, SAL_ECORRUPT, "superblock byte 64 flipped");
    assert_int_equal(tu_xor_byte(c->path, 64, 0x01), 0);
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
}

/* Every byte of the checksummed superblock, one at a time, several bit
 * patterns.  Magic (0..7): SAL_ENOTHEAP.  format_version (8..11): a damaged
 * version field is reported as SAL_EVERSION or SAL_ECORRUPT (both name the
 * problem; which one depends on whether the version or the checksum is
 * checked first).  Every other field: SAL_ECORRUPT. */
static void superblock_every_byte(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    const uint8_t masks[] = {0x01, 0xff};
    for (uint64_t off = 0; off < sizeof(sal_superblock); off++) {
        for (size_t m = 0; m < sizeof(masks); m++) {
            assert_int_equal(tu_xor_byte(c->path, off, masks[m]), 0);
            uint64_t h0, n0, h1, n1;
            assert_int_equal(tu_hash_file(c->path, &h0, &n0), 0);
            for (int ro = 0; ro < 2; ro++) {
                sal_options o = ro_options();
                sal_heap *h = (sal_heap *)0x1;
                int rc = sal_heap_open(c->path, ro ? &o : NULL, &h);
                int ok;
                const char *want;
                if (off < 8) {
                    ok = rc == SAL_ENOTHEAP;
                    want = "SAL_ENOTHEAP";
                } else if (off < 12) {
                    ok = rc == SAL_EVERSION || rc == SAL_ECORRUPT;
                    want = "SAL_EVERSION or SAL_ECORRUPT";
                } else {
                    ok = rc == SAL_ECORRUPT;
                    want = "SAL_ECORRUPT";
                }
                if (!ok)
                    fail_msg("superblock byte %" PRIu64 " ^= %#x: %sopen returned %d (%s), "
                             "expected %s",
                             off, masks[m], ro ? "read-only " : "", rc, sal_strerror(rc), want);
                assert_null(h);
            }
            assert_int_equal(tu_hash_file(c->path, &h1, &n1), 0);
            if (h0 != h1 || n0 != n1)
                fail_msg("superblock byte %" PRIu64 ": a failed open changed the file", off);
            assert_int_equal(tu_xor_byte(c->path, off, masks[m]), 0);
        }
    }
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
}

/* A well-formed superblock of another format version (checksum valid):
 * exactly SAL_EVERSION. */
static void other_format_version(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb, orig;
    read_superblock(c->path, &orig);
    uint32_t versions[] = {0, SAL_FORMAT_VERSION + 1, 0x7fffffffu, 0xffffffffu};
    for (size_t k = 0; k < sizeof(versions) / sizeof(versions[0]); k++) {
        sb = orig;
        sb.format_version = versions[k];
        sal_superblock_seal(&sb);
        assert_int_equal(tu_patch(c->path, 0, &sb, sizeof(sb)), 0);
        char what[64];
        snprintf(what, sizeof(what), "format version %u", versions[k]);
        expect_open_error(c->path, SAL_EVERSION, what);
    }
    /* Sanity: resealing the original version opens again (so the seal
     * helper and the test agree with the library). */
    sb = orig;
    sal_superblock_seal(&sb);
    assert_memory_equal(&sb, &orig, sizeof(sb));
    assert_int_equal(tu_patch(c->path, 0, &orig, sizeof(orig)), 0);
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
}

/* A superblock whose checksum is valid but whose geometry is impossible:
 * SAL_ECORRUPT (every field is cross-checked, not only checksummed). */
static void superblock_bad_geometry(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock orig;
    read_superblock(c->path, &orig);
    sal_superblock sb;
    for (int k = 0; k < 7; k++) {
        sb = orig;
        const char *what = "";
        switch (k) {
        case 0: sb.segment_bytes = 3ull << 20; what = "segment_bytes not a power of two"; break;
        case 1: sb.segment_bytes = 4096; what = "segment_bytes below the minimum"; break;
        case 2: sb.reserve_bytes = SAL_MAX_RESERVE_BYTES * 4; what = "reserve above maximum"; break;
        case 3: sb.table_offset = 1; what = "table_offset unaligned"; break;
        case 4: sb.data_offset = sb.table_offset; what = "data overlaps the table"; break;
        case 5: sb.root_count = SAL_ROOT_COUNT + 1; what = "root_count"; break;
        case 6: sb.object_header_bytes = 8; what = "object_header_bytes"; break;
        }
        sal_superblock_seal(&sb);
        assert_int_equal(tu_patch(c->path, 0, &sb, sizeof(sb)), 0);
        if (k >= 5) {
            /* A layout constant of another build: either name fits. */
            sal_heap *h = (sal_heap *)0x1;
            int rc = sal_heap_open(c->path, NULL, &h);
            if (rc != SAL_ECORRUPT && rc != SAL_EVERSION)
                fail_msg("%s: open returned %d (%s), expected SAL_ECORRUPT or SAL_EVERSION",
                         what, rc, sal_strerror(rc));
            assert_null(h);
        } else {
            expect_open_error(c->path, SAL_ECORRUPT, what);
        }
    }
    assert_int_equal(tu_patch(c->path, 0, &orig, sizeof(orig)), 0);
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_heap_close(h));
}

/* The geometry cross-checks superblock_bad_geometry does not reach, one
 * field at a time, each value chosen so that the other checks still pass
 * (a valid checksum, a layout of this build): SAL_ECORRUPT, file unchanged.
 * Without them later code computes table and segment addresses outside
 * the regions the file reserves for them. */
static void superblock_cross_checks(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock orig;
    read_superblock(c->path, &orig);
    /* The base heap's geometry, which the values below are chosen for. */
    assert_int_equal(orig.segment_bytes, 1u << 20);
    assert_int_equal(orig.table_offset % SAL_REGION_ALIGN, 0);
    assert_true(orig.table_offset >= SAL_SEGTAB_OFFSET + SAL_SLOT_COUNT * orig.segtab_bytes);
    assert_true(orig.max_objects * 8 <= SAL_TABLE_CHUNK_BYTES / 2);
    assert_int_equal(orig.table_bytes, SAL_TABLE_CHUNK_BYTES);
    assert_true(orig.segtab_bytes > SAL_PAGE_BYTES);
    for (int k = 0; k < 12; k++) {
        sal_superblock sb = orig;
        const char *what = "";
        switch (k) {
        case 0: sb.segment_bytes = SAL_MAX_SEGMENT_BYTES * 2; what = "segment_bytes above the maximum"; break;
        case 1: sb.max_objects = 1; what = "max_objects below 2"; break;
        case 2: sb.max_objects = SAL_MAX_OBJECTS_LIMIT + 2; what = "max_objects above the limit"; break;
        case 3: sb.segtab_offset += SAL_PAGE_BYTES; what = "segtab_offset elsewhere"; break;
        case 4: sb.segtab_bytes = SAL_PAGE_BYTES; what = "segment table too short for the segments"; break;
        case 5: sb.table_offset = 0; what = "object table over the segment tables"; break;
        case 6: sb.table_bytes = 0; what = "object table shorter than max_objects entries"; break;
        case 7: sb.max_objects = orig.table_bytes / 8 + 1; what = "max_objects beyond the table"; break;
        case 8: sb.table_bytes = SAL_TABLE_CHUNK_BYTES / 2; what = "table_bytes not whole chunks"; break;
        case 9: sb.segment_count = 0; what = "no segment"; break;
        case 10: sb.segment_count += 1; what = "more segments than the reservation holds"; break;
        case 11:
            sb.data_offset += SAL_PAGE_BYTES;
            sb.segment_count -= 1; /* still inside the reservation */
            what = "data_offset not on a segment boundary";
            break;
        }
        sal_superblock_seal(&sb);
        assert_int_equal(tu_patch(c->path, 0, &sb, sizeof(sb)), 0);
        expect_open_error(c->path, SAL_ECORRUPT, what);
    }
    assert_int_equal(tu_patch(c->path, 0, &orig, sizeof(orig)), 0);
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, NULL, &h));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
}

/* ---------------------------------------------------------------------
 * Damaged commit slots
 * --------------------------------------------------------------------- */

/* A base heap opened and closed again with one more root, so that both
 * slots hold a commit (with different roots). */
static void base_build_two_commits(const char *path, base_heap *b, sal_id *extra)
{
    base_build(path, b);
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_open(path, NULL, &h));
    TU_OK(sal_session_open(h, &s));
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 24, 0, 3, extra, &p));
    tu_fill(p, 24, 0, 0xe7);
    TU_OK(sal_write_end(s));
    TU_OK(tu_root_set(s, 2, *extra));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* base_build_two_commits(), then its superblock and both durable slots;
 * returns which slot is the newest. */
static int two_commits_read(const char *path, base_heap *b, sal_id *extra, sal_superblock *sb,
                            sal_commit_slot slot[2])
{
    base_build_two_commits(path, b, extra);
    read_superblock(path, sb);
    return read_durable_slots(path, slot);
}

static void both_slots_damaged(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    sal_id extra;
    base_build_two_commits(c->path, &b, &extra);
    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    /* offsets inside each slot: magic, epoch, clean flag, a root, checksum,
     * and a byte in the page after the slot struct's end is NOT used. */
    uint64_t in_slot[] = {0, 8, offsetof(sal_commit_slot, clean),
                          offsetof(sal_commit_slot, roots) + 8,
                          offsetof(sal_commit_slot, checksum)};
    for (size_t i = 0; i < sizeof(in_slot) / sizeof(in_slot[0]); i++) {
        for (size_t j = 0; j < sizeof(in_slot) / sizeof(in_slot[0]); j++) {
            assert_int_equal(tu_copy_file(c->path, copy), 0);
            assert_int_equal(tu_xor_byte(copy, SAL_SLOT0_OFFSET + in_slot[i], 0x04), 0);
            assert_int_equal(tu_xor_byte(copy, SAL_SLOT1_OFFSET + in_slot[j], 0x04), 0);
            char what[96];
            snprintf(what, sizeof(what), "slot 0 byte %" PRIu64 " and slot 1 byte %" PRIu64
                     " damaged", in_slot[i], in_slot[j]);
            expect_open_error(copy, SAL_ECORRUPT, what);
        }
    }
    /* Bytes in the slots' pages past the slot struct are not used. */
    assert_int_equal(tu_copy_file(c->path, copy), 0);
    assert_int_equal(tu_xor_byte(copy, SAL_SLOT0_OFFSET + sizeof(sal_commit_slot) + 1, 0x04), 0);
    assert_int_equal(tu_xor_byte(copy, SAL_SLOT1_OFFSET + sizeof(sal_commit_slot) + 1, 0x04), 0);
    sal_heap *ok = NULL;
    TU_OK(sal_heap_open(copy, NULL, &ok));
    TU_OK(sal_heap_close(ok));
    /* Both slots zeroed entirely. */
    assert_int_equal(tu_copy_file(c->path, copy), 0);
    uint8_t zero[8192];
    memset(zero, 0, sizeof(zero));
    assert_int_equal(tu_patch(copy, SAL_SLOT0_OFFSET, zero, sizeof(zero)), 0);
    expect_open_error(copy, SAL_ECORRUPT, "both slots zeroed");
}

/* A read-only open of `path` shows exactly the roots of `want` (the valid
 * slot): the forged one (`what`) was not used. */
static void expect_roots_of_slot(const char *path, const sal_commit_slot *want, const char *what)
{
    sal_options ro = ro_options();
    sal_heap *h;
    int rc = sal_heap_open(path, &ro, &h);
    if (rc != 0)
        fail_msg("%s: read-only open returned %d (%s)", what, rc, sal_strerror(rc));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    for (unsigned i = 0; i < SAL_ROOT_COUNT; i++) {
        sal_id id;
        TU_OK(sal_root_get(r, i, &id));
        if (id != want->roots[i])
            fail_msg("%s: root %u is %#" PRIx64 ", the valid slot says %#" PRIx64
                     ": the forged slot was used",
                     what, i, id, want->roots[i]);
        if (id != SAL_NULL_ID)
            TU_OK(sal_release(r, id));
    }
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

/* A slot with a valid checksum whose file length runs past the data region
 * (so past the mapping): table locations beyond the reservation would look
 * valid, and recovery or a read dereferenced them (SIGSEGV).  Such a slot
 * is not valid: the heap opens from the other one. */
static void slot_file_bytes_past_data_region(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    sal_id extra;
    sal_superblock sb;
    sal_commit_slot slot[2];
    int newest = two_commits_read(c->path, &b, &extra, &sb, slot);
    uint64_t end = sb.data_offset + sb.segment_count * sb.segment_bytes;
    slot[newest].file_bytes = end + 4 * sb.segment_bytes;
    sal_slot_seal(&slot[newest]);
    TU_OK(tu_patch(c->path, newest ? SAL_SLOT1_OFFSET : SAL_SLOT0_OFFSET, &slot[newest],
                   sizeof slot[newest]));
    assert_int_equal(truncate(c->path, (off_t)slot[newest].file_bytes), 0);
    expect_roots_of_slot(c->path, &slot[!newest], "file_bytes past the data region");
}

/* The newest slot, its checksum valid, with one field out of its range:
 * the slot is not valid, and a read-only open shows exactly the other
 * slot's roots (a root beyond the table's high-water mark would name an
 * entry no commit wrote; a high-water mark beyond the table or the
 * segments would let later code index past them). */
static void forged_slot_fields(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    sal_id extra;
    sal_superblock sb;
    sal_commit_slot slot[2];
    int newest = two_commits_read(c->path, &b, &extra, &sb, slot);
    const sal_commit_slot *other = &slot[!newest];
    assert_int_not_equal(slot[newest].roots[2], other->roots[2]); /* they differ */
    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    for (int k = 0; k < 8; k++) {
        sal_commit_slot f = slot[newest];
        const char *what = "";
        switch (k) {
        case 0: f.roots[5] = sal_id_make((uint32_t)f.ids_high_water, 1); what = "a root at the high-water mark"; break;
        case 1: f.roots[5] = (sal_id)tu_index(f.roots[0]) | (1ull << 60); what = "a root with bits 56..63 set"; break;
        case 2: f.ids_high_water = sb.max_objects + 1; what = "ids_high_water beyond the table"; break;
        case 3: f.ids_high_water = 0; what = "ids_high_water 0"; break;
        case 4: f.segments_high_water = sb.segment_count + 1; what = "segments_high_water beyond the segments"; break;
        case 5: f.clean = 2; what = "clean neither 0 nor 1"; break;
        case 6: f.durable_epoch = f.epoch + 1; what = "durable_epoch after its own epoch"; break;
        case 7: f.heap_uid[1] ^= 1; what = "another heap's uid"; break;
        }
        sal_slot_seal(&f);
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        TU_OK(tu_patch(copy, newest ? SAL_SLOT1_OFFSET : SAL_SLOT0_OFFSET, &f, sizeof f));
        expect_roots_of_slot(copy, other, what);
    }
}

/* A repair (SAL_OPEN_REPAIR) of a cleanly closed heap that runs out of
 * memory halfway left the table forgotten (every entry free) in the shared
 * mapping while the slot still said clean: the next plain open trusted
 * it, the root's id was stale, and a clean close made it so.  The table
 * is put back when the recovery fails. */
static void failed_repair_leaves_table(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    sal_session *s;
    sal_heap *h = tu_create_with(c, &o, &s);
    sal_id parent, kid;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 1, 0, &parent, &p));
    TU_OK(sal_alloc(s, 8, 0, 0, &kid, &p));
    *(uint64_t *)p = 0x6b6964;
    TU_OK(sal_set_child(s, parent, 0, kid));
    TU_OK(sal_root_set(s, 0, parent));
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s));
    if (sal_test_id_vec_fail(0) == ENOSYS) {
        TU_OK(sal_heap_close(h));
        skip(); /* a build without test hooks */
    }
    TU_OK(sal_heap_close(h));

    sal_options rep = tu_small_options();
    rep.flags = SAL_OPEN_REPAIR;
    rep.ready_segments = 0;
    TU_OK(sal_test_id_vec_fail(1)); /* the recovery's worklist cannot grow */
    int rc = sal_heap_open(c->path, &rep, &h);
    TU_OK(sal_test_id_vec_fail(0));
    TU_ERR(rc, SAL_ENOMEM);

    TU_OK(sal_heap_open(c->path, &o, &h));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    sal_id root;
    TU_OK(sal_root_get(r, 0, &root));
    assert_true(root == parent);
    const void *q;
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read(r, root, &q));
    assert_true(*(const sal_id *)q == kid);
    TU_OK(sal_read(r, kid, &q));
    assert_true(*(const uint64_t *)q == 0x6b6964);
    TU_OK(sal_read_end(r));
    TU_OK(sal_release(r, root));
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

/* One slot damaged: the heap opens from the other one and shows exactly
 * that slot's roots. */
static void one_slot_damaged(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    sal_id extra;
    base_build_two_commits(c->path, &b, &extra);
    sal_commit_slot slot[2];
    int newest = read_durable_slots(c->path, slot);
    assert_int_equal(memcmp(slot[0].magic, SAL_SLOT_MAGIC, 8), 0);
    assert_int_equal(memcmp(slot[1].magic, SAL_SLOT_MAGIC, 8), 0);
    assert_true(slot[0].epoch != slot[1].epoch);
    assert_int_equal(slot[newest].clean, 1);
    assert_int_equal(slot[newest].roots[0], b.index_id);
    assert_int_equal(slot[newest].roots[2], extra);

    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    int saw_extra = 0, saw_without = 0;
    for (int damaged = 0; damaged < 2; damaged++) {
        const sal_commit_slot *other = &slot[!damaged];
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        uint64_t off = (damaged ? SAL_SLOT1_OFFSET : SAL_SLOT0_OFFSET) +
                       offsetof(sal_commit_slot, time_unix_ns);
        assert_int_equal(tu_xor_byte(copy, off, 0x10), 0);

        /* Read-only: always opens, with the other slot's roots. */
        sal_options ro = ro_options();
        sal_heap *h;
        int rc = sal_heap_open(copy, &ro, &h);
        if (rc != 0)
            fail_msg("slot %d damaged: read-only open returned %d (%s)", damaged, rc,
                     sal_strerror(rc));
        sal_session *r;
        TU_OK(sal_reader_open(h, &r));
        for (unsigned i = 0; i < SAL_ROOT_COUNT; i++) {
            sal_id id;
            TU_OK(sal_root_get(r, i, &id));
            if (id != other->roots[i])
                fail_msg("slot %d damaged: root %u is %#" PRIx64 ", the intact slot says %#" PRIx64,
                         damaged, i, id, other->roots[i]);
            if (id)
                TU_OK(sal_release(r, id));
        }
        sal_id r2;
        TU_OK(sal_root_get(r, 2, &r2));
        if (r2 == extra) {
            saw_extra++;
            const void *p;
            TU_OK(sal_read_begin(r));
            TU_OK(sal_read(r, r2, &p));
            assert_int_equal(tu_check(p, 24, 0, 0xe7), TU_CHECK_OK);
            TU_OK(sal_read_end(r));
            TU_OK(sal_release(r, r2));
        } else {
            assert_int_equal(r2, SAL_NULL_ID);
            saw_without++;
        }
        TU_OK(sal_session_close(r));
        base_verify_root0(h, &b);
        TU_OK(sal_heap_close(h));

        /* Writable: opens if the intact slot says the heap was closed
         * cleanly, else SAL_EUNCLEAN.  Either way nothing was written
         * before the decision. */
        uint64_t h0, n0, h1, n1;
        assert_int_equal(tu_hash_file(copy, &h0, &n0), 0);
        rc = sal_heap_open(copy, NULL, &h);
        if (other->clean) {
            if (rc != 0)
                fail_msg("slot %d damaged, other slot clean: open returned %d (%s)", damaged, rc,
                         sal_strerror(rc));
            base_verify_root0(h, &b);
            TU_OK(sal_heap_close(h));
        } else {
            if (rc != SAL_EUNCLEAN)
                fail_msg("slot %d damaged, other slot unclean: open returned %d (%s), "
                         "expected SAL_EUNCLEAN",
                         damaged, rc, sal_strerror(rc));
            assert_int_equal(tu_hash_file(copy, &h1, &n1), 0);
            assert_true(h0 == h1 && n0 == n1);
        }
    }
    /* One of the two runs showed the newest commit, the other the older. */
    assert_int_equal(saw_extra, 1);
    assert_int_equal(saw_without, 1);
}

/* ---------------------------------------------------------------------
 * Damaged table and segments: detected when the object is used, never a
 * crash (run in a child process so that a crash is reported as such).
 * --------------------------------------------------------------------- */

typedef struct damage_arg {
    const char *path;
    sal_id id;
    int stale_ok; /* SAL_ESTALE is also a right answer */
} damage_arg;

/* Child: open (read-only and writable), read `id`: the open or the read
 * must say SAL_ECORRUPT.  Exit 0 on success, 10+ on a wrong result. */
static int child_read_damaged(void *argp)
{
    damage_arg *a = argp;
    for (int ro = 0; ro < 2; ro++) {
        sal_options o;
        sal_options_init(&o);
        o.flags = ro ? SAL_OPEN_READONLY : 0;
        sal_heap *h;
        int rc = sal_heap_open(a->path, &o, &h);
        if (rc == SAL_ECORRUPT)
            continue;
        if (rc != 0) {
            fprintf(stderr, "open returned %d (%s)\n", rc, sal_strerror(rc));
            return 10;
        }
        sal_session *r;
        if (sal_reader_open(h, &r) != 0)
            return 11;
        sal_read_begin(r);
        const void *p = NULL;
        rc = sal_read(r, a->id, &p);
        sal_read_end(r);
        sal_object_info info;
        (void)sal_info(r, a->id, &info); /* must not crash */
        sal_session_close(r);
        sal_heap_close(h);
        if (rc != SAL_ECORRUPT && !(a->stale_ok && rc == SAL_ESTALE)) {
            fprintf(stderr, "%s: sal_read of the damaged object returned %d (%s)\n",
                    ro ? "read-only" : "writable", rc, sal_strerror(rc));
            return 12;
        }
    }
    return 0;
}

static void expect_child_ok(int status, const char *what)
{
    if (WIFSIGNALED(status))
        fail_msg("%s: the child died of signal %d (%s)", what, WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s: the child exited with status %d", what,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void damaged_table_entry(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb;
    read_superblock(c->path, &sb);
    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    sal_id victim = b.child[5];
    uint64_t entry_off = sb.table_offset + (uint64_t)tu_index(victim) * 8;
    uint64_t entry;
    assert_int_equal(tu_peek(c->path, entry_off, &entry, 8), 0);
    assert_true(sal_entry_rc(entry) >= 1);
    assert_int_equal(sal_entry_loc(entry) * 8 % 8, 0);

    uint64_t locs[] = {
        SAL_ENTRY_LOC_MASK,                          /* far beyond the file */
        (sb.reserve_bytes / 8) + 1,                  /* just beyond the reservation */
        0,                                           /* the superblock */
        (SAL_SLOT0_OFFSET / 8),                      /* a commit slot */
        sal_entry_loc(entry) + 3,                    /* inside its own payload */
        sal_entry_loc(entry) + (BASE_OBJECT_BYTES + 24) / 8, /* the next object */
    };
    for (size_t k = 0; k < sizeof(locs) / sizeof(locs[0]); k++) {
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        uint64_t bad = (entry & ~SAL_ENTRY_LOC_MASK) | (locs[k] & SAL_ENTRY_LOC_MASK);
        assert_int_equal(tu_patch(copy, entry_off, &bad, 8), 0);
        damage_arg a = {copy, victim, 0};
        char what[96];
        snprintf(what, sizeof(what), "table entry location set to %#" PRIx64 " (x8)", locs[k]);
        expect_child_ok(tu_in_child(child_read_damaged, &a), what);
    }
}

/* Child: a read-only open (which never grows the file), then sal_read and
 * sal_info of `id` must say SAL_ECORRUPT.  Exit 0 on success. */
static int child_read_damaged_ro(void *argp)
{
    damage_arg *a = argp;
    sal_options o = ro_options();
    sal_heap *h;
    int rc = sal_heap_open(a->path, &o, &h);
    if (rc != 0) {
        fprintf(stderr, "read-only open returned %d (%s)\n", rc, sal_strerror(rc));
        return 10;
    }
    sal_session *r;
    if (sal_reader_open(h, &r) != 0)
        return 11;
    const void *p = NULL;
    sal_read_begin(r);
    int rc_read = sal_read(r, a->id, &p);
    sal_read_end(r);
    sal_object_info info;
    int rc_info = sal_info(r, a->id, &info);
    sal_session_close(r);
    sal_heap_close(h);
    if (rc_read != SAL_ECORRUPT || rc_info != SAL_ECORRUPT) {
        fprintf(stderr, "sal_read %d (%s), sal_info %d (%s)\n", rc_read, sal_strerror(rc_read),
                rc_info, sal_strerror(rc_info));
        return 12;
    }
    return 0;
}

/* A table entry locating an object whose header would run past the end of
 * the committed file: the 8 bytes there hold the object's id (so the id
 * check alone passes), the rest of its header lies beyond the end.  The
 * location check must count the whole header, or the read goes past the
 * file (SIGBUS) or takes bytes that are no header for one. */
static void table_entry_at_end_of_file(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb;
    read_superblock(c->path, &sb);
    sal_commit_slot slot[2];
    const sal_commit_slot *cur = &slot[read_durable_slots(c->path, slot)];
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, cur->file_bytes);
    sal_id victim = b.child[3];
    uint64_t entry_off = sb.table_offset + (uint64_t)tu_index(victim) * 8;
    uint64_t entry;
    assert_int_equal(tu_peek(c->path, entry_off, &entry, 8), 0);
    uint64_t at = cur->file_bytes - 8;
    uint64_t bad = (entry & ~SAL_ENTRY_LOC_MASK) | ((at >> 3) & SAL_ENTRY_LOC_MASK);
    assert_int_equal(tu_patch(c->path, entry_off, &bad, 8), 0);
    assert_int_equal(tu_patch(c->path, at, &victim, 8), 0);
    damage_arg a = {c->path, victim, 0};
    expect_child_ok(tu_in_child(child_read_damaged_ro, &a),
                    "table entry locating a header that ends past the file");
}

static void damaged_object_header(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_superblock sb;
    read_superblock(c->path, &sb);
    char copy[PATH_MAX];
    tu_join(copy, sizeof(copy), c->dir, "copy");
    sal_id victim = b.child[7];
    uint64_t entry;
    assert_int_equal(
        tu_peek(c->path, sb.table_offset + (uint64_t)tu_index(victim) * 8, &entry, 8), 0);
    uint64_t hdr_off = sal_entry_loc(entry) * 8;
    sal_object_header hdr;
    assert_int_equal(tu_peek(c->path, hdr_off, &hdr, sizeof(hdr)), 0);
    assert_int_equal(hdr.id, victim);
    assert_int_equal(hdr.size_bytes, BASE_OBJECT_BYTES);

    /* Wrong generation in the header's id (the same as what a stale id
     * finds, so SAL_ESTALE is a right answer too), then a wrong index (the
     * entry points at a header that is not this object's: SAL_ECORRUPT). */
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tu_copy_file(c->path, copy), 0);
        assert_int_equal(tu_xor_byte(copy, hdr_off + (k ? 0 : 4), 0x01), 0);
        damage_arg a = {copy, victim, k == 0};
        expect_child_ok(tu_in_child(child_read_damaged, &a),
                        k ? "object header index flipped" : "object header generation flipped");
    }
}

/* ---------------------------------------------------------------------
 * Locking
 * --------------------------------------------------------------------- */

static int child_open_expect_locked(void *argp)
{
    const char *path = argp;
    sal_heap *h = (sal_heap *)0x1;
    int rc = sal_heap_open(path, NULL, &h);
    if (rc != SAL_ELOCKED) {
        fprintf(stderr, "second writer in another process: %d (%s)\n", rc, sal_strerror(rc));
        return 1;
    }
    return h == NULL ? 0 : 2;
}

static void second_writer_is_locked(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    sal_options o;
    sal_options_init(&o);
    o.ready_segments = 0;
    sal_heap *h1;
    TU_OK(sal_heap_open(c->path, &o, &h1));

    /* Same process, second open file description. */
    uint64_t h0, n0, hh, nn;
    assert_int_equal(tu_hash_file(c->path, &h0, &n0), 0);
    sal_heap *h2 = (sal_heap *)0x1;
    TU_ERR(sal_heap_open(c->path, &o, &h2), SAL_ELOCKED);
    assert_null(h2);
    TU_ERR(sal_heap_open(c->path, &o, &h2), SAL_ELOCKED); /* and again */
    assert_null(h2);
    assert_int_equal(tu_hash_file(c->path, &hh, &nn), 0);
    assert_true(h0 == hh && n0 == nn);

    /* Another process. */
    expect_child_ok(tu_in_child(child_open_expect_locked, c->path), "second writer process");

    /* The first writer is undisturbed. */
    base_verify_root0(h1, &b);
    TU_OK(sal_heap_close(h1));

    /* After the close, a writer gets in. */
    TU_OK(sal_heap_open(c->path, NULL, &h2));
    base_verify_root0(h2, &b);
    TU_OK(sal_heap_close(h2));
}

/* A freshly created (still open) heap is locked as well. */
static void created_heap_is_locked(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h1, *h2 = (sal_heap *)0x1;
    TU_OK(sal_heap_create(c->path, NULL, &h1));
    TU_ERR(sal_heap_open(c->path, NULL, &h2), SAL_ELOCKED);
    assert_null(h2);
    TU_OK(sal_heap_close(h1));
    TU_OK(sal_heap_open(c->path, NULL, &h2));
    TU_OK(sal_heap_close(h2));
}

/* ---------------------------------------------------------------------
 * Read-only open
 * --------------------------------------------------------------------- */

static void readonly_open(void **state)
{
    tu_ctx *c = *state;
    base_heap b;
    base_build(c->path, &b);
    uint64_t h0, n0, h1, n1;
    assert_int_equal(tu_hash_file(c->path, &h0, &n0), 0);
    sal_options ro = ro_options();
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, &ro, &h));
    sal_session *s = (sal_session *)0x1;
    TU_ERR(sal_session_open(h, &s), SAL_EREADONLY);
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_ERR(sal_write_begin(r), SAL_EREADONLY);
    sal_id id;
    void *wp;
    TU_ERR(sal_alloc(r, 8, 0, 0, &id, &wp), SAL_EREADONLY);
    TU_ERR(sal_root_set(r, 5, SAL_NULL_ID), SAL_EREADONLY);
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.live_objects, BASE_OBJECTS + 2);
    TU_OK(sal_session_close(r));
    base_verify_root0(h, &b);
    TU_OK(sal_heap_close(h));
    assert_int_equal(tu_hash_file(c->path, &h1, &n1), 0);
    if (h0 != h1 || n0 != n1)
        fail_msg("a read-only open and close changed the file");

    /* Two read-only opens at once are fine. */
    sal_heap *ha, *hb;
    TU_OK(sal_heap_open(c->path, &ro, &ha));
    TU_OK(sal_heap_open(c->path, &ro, &hb));
    base_verify_root0(hb, &b);
    TU_OK(sal_heap_close(hb));
    TU_OK(sal_heap_close(ha));
}

/* ---------------------------------------------------------------------
 * Not closed cleanly
 * --------------------------------------------------------------------- */

typedef struct unclean_arg {
    const char *path;
    int how;        /* 0: _exit(0), 1: SIGKILL */
    int reopened;   /* 1: close cleanly first, reopen, change root 1, die */
} unclean_arg;

static int child_die_uncleanly(void *argp)
{
    unclean_arg *a = argp;
    sal_options o = tu_small_options();
    sal_heap *h;
    sal_session *s;
    void *p;
    sal_id id;
    if (sal_heap_create(a->path, &o, &h))
        return 20;
    if (sal_session_open(h, &s) || sal_write_begin(s) || sal_alloc(s, 32, 0, 1, &id, &p))
        return 21;
    tu_fill(p, 32, 0, 0xc1ea);
    if (sal_root_set(s, 0, id) || sal_write_end(s))
        return 22;
    if (a->reopened) {
        if (sal_session_close(s) || sal_heap_close(h))
            return 23;
        if (sal_heap_open(a->path, &o, &h) || sal_session_open(h, &s))
            return 24;
        if (sal_write_begin(s) || sal_alloc(s, 48, 0, 2, &id, &p))
            return 25;
        tu_fill(p, 48, 0, 0xd1e);
        if (sal_root_set(s, 1, id) || sal_write_end(s))
            return 26;
    }
    if (a->how == 1)
        raise(SIGKILL);
    _exit(0);
}

/* After a kill, a same-boot recovery reads the header a live entry
 * locates, up to the file's end, to keep its generation: in a file longer
 * than the reservation (only the reservation is mapped) an entry locating
 * a header past the reservation was a SIGSEGV (found by the fuzzer).  The
 * open must recover, in private memory and for writing. */
static int child_open_recover_both(void *arg)
{
    const char *path = arg;
    sal_options ro = ro_options();
    sal_options rw = tu_small_options();
    rw.flags = SAL_OPEN_RECOVER;
    sal_heap *h;
    if (sal_heap_open(path, &ro, &h) || sal_heap_close(h))
        return 30;
    if (sal_heap_open(path, &rw, &h) || sal_heap_close(h))
        return 31;
    return 0;
}

/* A heap at the context's path whose writer was killed after setting an
 * uncommitted root (entry 1); its superblock in *sb. */
static void heap_killed_after_root(tu_ctx *c, sal_superblock *sb)
{
    unclean_arg a = {c->path, 1, 0};
    int st = tu_in_child(child_die_uncleanly, &a);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    read_superblock(c->path, sb);
}

static void live_entry_past_reservation(void **state)
{
    tu_ctx *c = *state;
    sal_superblock sb;
    heap_killed_after_root(c, &sb);
    /* Entry 1, the killed process's object, live; its header's place
     * moved past the reservation, inside a file made that long. */
    uint64_t entry_off = sb.table_offset + 8, entry;
    assert_int_equal(tu_peek(c->path, entry_off, &entry, 8), 0);
    assert_true(entry != 0 && !(entry & SAL_ENTRY_FREE));
    uint64_t at = sb.reserve_bytes + SAL_PAGE_BYTES;
    uint64_t bad = (entry & ~SAL_ENTRY_LOC_MASK) | ((at >> 3) & SAL_ENTRY_LOC_MASK);
    assert_int_equal(tu_patch(c->path, entry_off, &bad, 8), 0);
    assert_int_equal(truncate(c->path, (off_t)(at + SAL_PAGE_BYTES)), 0);
    expect_child_ok(tu_in_child(child_open_recover_both, (void *)c->path),
                    "a live entry locating a header past the reservation, after a kill");
}

/* Entry 0 keeps how far a killed process handed out ids; a stray value
 * there (in range, so not refused on its face) made the recovery take the
 * whole table into use: every later open built a free-id list of that
 * size (2 GiB of memory at the default max_objects).  Ids were handed out
 * below a trusted mark; none near this one. */
static void stray_high_water_mark(void **state)
{
    tu_ctx *c = *state;
    sal_superblock sb;
    heap_killed_after_root(c, &sb);
    uint64_t mark;
    assert_int_equal(tu_peek(c->path, sb.table_offset, &mark, 8), 0);
    assert_true(mark > 1 && mark <= 2 * 1024); /* the batch the child took */
    uint64_t stray = sb.max_objects;
    assert_int_equal(tu_patch(c->path, sb.table_offset, &stray, 8), 0);
    sal_options o = tu_small_options();
    o.flags = SAL_OPEN_RECOVER;
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, &o, &h));
    sal_heap_stats hs;
    TU_OK(sal_heap_stats_get(h, &hs));
    TU_OK(sal_heap_close(h));
    if (hs.ids_high_water > 2 * 1024)
        fail_msg("a stray mark %" PRIu64 " in entry 0 was trusted: ids_high_water %" PRIu64,
                 stray, hs.ids_high_water);
}

static void not_closed_cleanly(void **state)
{
    tu_ctx *c = *state;
    for (int how = 0; how < 2; how++) {
        for (int reopened = 0; reopened < 2; reopened++) {
            char path[PATH_MAX];
            char name[32];
            snprintf(name, sizeof(name), "unclean-%d-%d", how, reopened);
            tu_join(path, sizeof(path), c->dir, name);
            unclean_arg a = {path, how, reopened};
            int status = tu_in_child(child_die_uncleanly, &a);
            if (how == 0)
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            else
                assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

            uint64_t h0, n0, h1, n1;
            assert_int_equal(tu_hash_file(path, &h0, &n0), 0);
            sal_heap *h = (sal_heap *)0x1;
            int rc = sal_heap_open(path, NULL, &h);
            if (rc != SAL_EUNCLEAN)
                fail_msg("%s: writable open returned %d (%s), expected SAL_EUNCLEAN", name, rc,
                         sal_strerror(rc));
            assert_null(h);
            assert_int_equal(tu_hash_file(path, &h1, &n1), 0);
            assert_true(h0 == h1 && n0 == n1);

            sal_options ro = ro_options();
            TU_OK(sal_heap_open(path, &ro, &h));
            sal_session *r;
            TU_OK(sal_reader_open(h, &r));
            sal_id r0, r1;
            TU_OK(sal_root_get(r, 0, &r0));
            TU_OK(sal_root_get(r, 1, &r1));
            /* Root 1 was set after the last commit: not there. */
            assert_int_equal(r1, SAL_NULL_ID);
            if (reopened) {
                /* Root 0 was committed by the clean close. */
                assert_int_not_equal(r0, SAL_NULL_ID);
                const void *p;
                TU_OK(sal_read_begin(r));
                TU_OK(sal_read(r, r0, &p));
                assert_int_equal(tu_check(p, 32, 0, 0xc1ea), TU_CHECK_OK);
                TU_OK(sal_read_end(r));
            } else {
                /* Nothing was ever committed but the empty heap. */
                assert_int_equal(r0, SAL_NULL_ID);
            }
            if (r0)
                TU_OK(sal_release(r, r0));
            TU_OK(sal_session_close(r));
            TU_OK(sal_heap_close(h));
            assert_int_equal(tu_hash_file(path, &h1, &n1), 0);
            assert_true(h0 == h1 && n0 == n1);
            /* Still unclean: read-only open did not "fix" it. */
            TU_ERR(sal_heap_open(path, NULL, &h), SAL_EUNCLEAN);
        }
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(empty_file),
        TU_TEST(random_bytes),
        TU_TEST(foreign_file),
        TU_TEST(directory_as_path),
        TU_TEST(nonexistent_path),
        TU_TEST(truncated_heap),
        TU_TEST(truncated_in_metadata),
        TU_TEST(superblock_byte_64),
        TU_TEST(superblock_every_byte),
        TU_TEST(other_format_version),
        TU_TEST(superblock_bad_geometry),
        TU_TEST(superblock_cross_checks),
        TU_TEST(both_slots_damaged),
        TU_TEST(one_slot_damaged),
        TU_TEST(slot_file_bytes_past_data_region),
        TU_TEST(forged_slot_fields),
        TU_TEST(failed_repair_leaves_table),
        TU_TEST(damaged_table_entry),
        TU_TEST(table_entry_at_end_of_file),
        TU_TEST(live_entry_past_reservation),
        TU_TEST(stray_high_water_mark),
        TU_TEST(damaged_object_header),
        TU_TEST(second_writer_is_locked),
        TU_TEST(created_heap_is_locked),
        TU_TEST(readonly_open),
        TU_TEST(not_closed_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
