/*
 * test_error.c - error codes: every code has its own text, and detectable
 * API misuse returns the code the manual names (never a crash, never an
 * abort).
 */
#include "test_util.h"

static const int all_codes[] = {
    SAL_ENOTHEAP,  SAL_EVERSION,     SAL_ECORRUPT,  SAL_ETRUNCATED,   SAL_ELOCKED,
    SAL_EUNCLEAN,  SAL_EINVAL,       SAL_EBADID,    SAL_ESTALE,       SAL_ETOOBIG,
    SAL_ESESSIONS, SAL_EREADERS,     SAL_EREADONLY, SAL_ENOSECTION,   SAL_ENOTWRITABLE,
    SAL_ECONFLICT, SAL_EBUSY,        SAL_EWRONGTHREAD, SAL_EFULL,     SAL_ENOIDS,
    SAL_ENOMEM,
};
#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void strerror_distinct(void **state)
{
    (void)state;
    const char *texts[NCODES + 1];
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(all_codes[i] < 0);
        const char *t = sal_strerror(all_codes[i]);
        assert_non_null(t);
        if (strlen(t) < 4)
            fail_msg("sal_strerror(%d) = \"%s\" is not a message", all_codes[i], t);
        texts[i] = t;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(texts[j], t))
                fail_msg("codes %d and %d share the text \"%s\"", all_codes[j], all_codes[i],
                         t);
    }
    texts[NCODES] = sal_strerror(0);
    assert_non_null(texts[NCODES]);
    assert_true(strlen(texts[NCODES]) > 0);
    for (size_t j = 0; j < NCODES; j++)
        assert_string_not_equal(texts[j], texts[NCODES]);
    /* errno values get strerror()'s text. */
    int errnos[] = {ENOSPC, EACCES, ENOENT, EEXIST, EIO};
    for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
        const char *t = sal_strerror(errnos[i]);
        assert_non_null(t);
        assert_string_equal(t, strerror(errnos[i]));
    }
    /* Unknown codes: still a string, never NULL. */
    int unknown[] = {-1, -30699, -30799, -100000, INT_MIN, INT_MAX, 100000};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        const char *t = sal_strerror(unknown[i]);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
    }
}

/* ---------------------------------------------------------------------
 * Misuse
 * --------------------------------------------------------------------- */

typedef struct env {
    sal_heap *h;
    sal_session *s, *r;
    sal_id a; /* a live object: 32 bytes, nrefs 2, slot 0 = child */
    sal_id child;
} env;

static void env_open(tu_ctx *c, env *e)
{
    sal_options o = tu_small_options();
    o.max_objects = 1ull << 16;
    TU_OK(sal_heap_create(c->path, &o, &e->h));
    TU_OK(sal_session_open(e->h, &e->s));
    TU_OK(sal_reader_open(e->h, &e->r));
    void *p;
    TU_OK(sal_write_begin(e->s));
    TU_OK(sal_alloc(e->s, 32, 2, 1, &e->a, &p));
    TU_OK(sal_alloc(e->s, 8, 0, 1, &e->child, &p));
    TU_OK(sal_set_child(e->s, e->a, 0, e->child));
    TU_OK(sal_write_end(e->s));
}

static void env_close(env *e)
{
    TU_OK(sal_release(e->s, e->a));
    assert_int_equal(tu_stats(e->h).live_objects, 0);
    TU_OK(sal_session_close(e->r));
    TU_OK(sal_session_close(e->s));
    TU_OK(sal_heap_close(e->h));
}

static void bad_ids(void **state)
{
    tu_ctx *c = *state;
    env e;
    env_open(c, &e);
    sal_id bad[] = {
        SAL_NULL_ID,
        (sal_id)0xffffffffu | (1ull << 32),  /* index beyond the table */
        (sal_id)(1u << 16) | (1ull << 32),   /* index == max_objects */
        (sal_id)((1u << 16) + 5) | (7ull << 32),
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        sal_object_info info;
        const void *p;
        void *wp;
        sal_id w = bad[k];
        TU_ERR(sal_info(e.s, bad[k], &info), SAL_EBADID);
        TU_ERR(sal_retain(e.s, bad[k]), SAL_EBADID);
        TU_ERR(sal_release(e.s, bad[k]), SAL_EBADID);
        TU_OK(sal_read_begin(e.s));
        TU_ERR(sal_read(e.s, bad[k], &p), SAL_EBADID);
        TU_OK(sal_read_end(e.s));
        TU_OK(sal_write_begin(e.s));
        TU_ERR(sal_write(e.s, &w, &wp), SAL_EBADID);
        assert_int_equal(w, bad[k]);
        TU_OK(sal_write_end(e.s));
        /* through a reader as well */
        TU_ERR(sal_info(e.r, bad[k], &info), SAL_EBADID);
        TU_ERR(sal_retain(e.r, bad[k]), SAL_EBADID);
    }
    /* Bits 56..63 must be zero: such an id names nothing. */
    sal_id high = e.a | (1ull << 60);
    sal_object_info info;
    int rc = sal_info(e.s, high, &info);
    if (rc != SAL_EBADID && rc != SAL_ESTALE)
        fail_msg("id with bit 60 set: sal_info = %d (%s)", rc, sal_strerror(rc));
    rc = sal_retain(e.s, high);
    if (rc != SAL_EBADID && rc != SAL_ESTALE)
        fail_msg("id with bit 60 set: sal_retain = %d (%s)", rc, sal_strerror(rc));
    /* An older generation of a live index is stale (released); a newer
     * one was never handed out. */
    sal_id older = (sal_id)tu_index(e.a) | (sal_id)((tu_gen(e.a) - 1) & 0xffffffu) << 32;
    TU_ERR(sal_info(e.s, older, &info), SAL_ESTALE);
    TU_ERR(sal_retain(e.s, older), SAL_ESTALE);
    TU_ERR(sal_release(e.s, older), SAL_ESTALE);
    sal_id newer = e.a ^ (1ull << 33);
    TU_ERR(sal_info(e.s, newer, &info), SAL_EBADID);
    TU_ERR(sal_retain(e.s, newer), SAL_EBADID);
    TU_ERR(sal_release(e.s, newer), SAL_EBADID);
    /* an index inside the table but never handed out */
    sal_id never = (sal_id)(tu_index(e.a) + 1000) | (1ull << 32);
    TU_ERR(sal_info(e.s, never, &info), SAL_EBADID); /* not "released" */
    TU_ERR(sal_retain(e.s, never), SAL_EBADID);
    TU_OK(sal_info(e.s, e.a, &info));
    assert_int_equal(info.refcount, 1); /* nothing above touched it */
    env_close(&e);
}

static void no_section(void **state)
{
    tu_ctx *c = *state;
    env e;
    env_open(c, &e);
    sal_id id;
    void *wp;
    const void *p;
    TU_ERR(sal_alloc(e.s, 8, 0, 0, &id, &wp), SAL_ENOSECTION);
    TU_ERR(sal_read(e.s, e.a, &p), SAL_ENOSECTION);
    TU_ERR(sal_read(e.r, e.a, &p), SAL_ENOSECTION);
    sal_id w = e.a;
    TU_ERR(sal_write(e.s, &w, &wp), SAL_ENOSECTION);
    assert_int_equal(w, e.a);
    TU_ERR(sal_write_child(e.s, e.a, 0, NULL, &wp), SAL_ENOSECTION);
    /* A read section is not a write section. */
    TU_OK(sal_read_begin(e.s));
    TU_ERR(sal_alloc(e.s, 8, 0, 0, &id, &wp), SAL_ENOSECTION);
    TU_ERR(sal_write(e.s, &w, &wp), SAL_ENOSECTION);
    TU_OK(sal_read(e.s, e.a, &p));
    TU_OK(sal_read_end(e.s));
    /* Ending what was not begun. */
    TU_ERR(sal_write_end(e.s), SAL_ENOSECTION);
    TU_ERR(sal_read_end(e.s), SAL_ENOSECTION);
    TU_ERR(sal_read_end(e.r), SAL_ENOSECTION);
    /* No leak from the refused calls. */
    assert_int_equal(tu_stats(e.h).live_objects, 2);
    env_close(&e);
}

static void alloc_arguments(void **state)
{
    tu_ctx *c = *state;
    env e;
    env_open(c, &e);
    uint64_t max = sal_max_object_bytes(e.h);
    sal_id id = 0;
    void *p;
    TU_OK(sal_write_begin(e.s));
    TU_ERR(sal_alloc(e.s, max + 1, 0, 0, &id, &p), SAL_ETOOBIG);
    TU_ERR(sal_alloc(e.s, (size_t)1 << 40, 0, 0, &id, &p), SAL_ETOOBIG);
    TU_ERR(sal_alloc(e.s, SIZE_MAX, 0, 0, &id, &p), SAL_ETOOBIG);
    /* nrefs * 8 > size */
    TU_ERR(sal_alloc(e.s, 7, 1, 0, &id, &p), SAL_EINVAL);
    TU_ERR(sal_alloc(e.s, 0, 1, 0, &id, &p), SAL_EINVAL);
    TU_ERR(sal_alloc(e.s, 8 * 10 - 1, 10, 0, &id, &p), SAL_EINVAL);
    /* nrefs and type beyond their limits */
    TU_ERR(sal_alloc(e.s, 8ull * (SAL_MAX_REFS + 1), SAL_MAX_REFS + 1, 0, &id, &p), SAL_EINVAL);
    TU_ERR(sal_alloc(e.s, 8, 0, SAL_MAX_TYPE + 1, &id, &p), SAL_EINVAL);
    /* NULL outputs */
    TU_ERR(sal_alloc(e.s, 8, 0, 0, NULL, &p), SAL_EINVAL);
    TU_ERR(sal_alloc(e.s, 8, 0, 0, &id, NULL), SAL_EINVAL);
    /* the limits themselves are fine */
    TU_OK(sal_alloc(e.s, max, 0, SAL_MAX_TYPE, &id, &p));
    TU_OK(sal_release(e.s, id));
    TU_OK(sal_alloc(e.s, 8, 1, 0, &id, &p));
    TU_OK(sal_release(e.s, id));
    TU_OK(sal_write_end(e.s));
    /* Through a reader. */
    TU_ERR(sal_write_begin(e.r), SAL_EREADONLY);
    TU_ERR(sal_alloc(e.r, 8, 0, 0, &id, &p), SAL_EREADONLY);
    assert_int_equal(tu_stats(e.h).live_objects, 2);
    env_close(&e);
}

static void null_arguments(void **state)
{
    tu_ctx *c = *state;
    env e;
    env_open(c, &e);
    /* NULL heap/session/out pointers are refused with SAL_EINVAL (an argument
     * out of its range), not dereferenced. */
    sal_heap *h;
    TU_ERR(sal_heap_open(NULL, NULL, &h), SAL_EINVAL);
    TU_ERR(sal_heap_create(NULL, NULL, &h), SAL_EINVAL);
    TU_ERR(sal_heap_open(c->path, NULL, NULL), SAL_EINVAL);
    sal_session *tmp = NULL;
    TU_ERR(sal_session_open(NULL, &tmp), SAL_EINVAL);
    TU_ERR(sal_session_open(e.h, NULL), SAL_EINVAL);
    TU_ERR(sal_reader_open(e.h, NULL), SAL_EINVAL);
    TU_ERR(sal_session_close(NULL), SAL_EINVAL);
    TU_ERR(sal_heap_close(NULL), SAL_EINVAL);
    TU_ERR(sal_heap_stats_get(e.h, NULL), SAL_EINVAL);
    TU_ERR(sal_heap_stats_get(NULL, &(sal_heap_stats){0}), SAL_EINVAL);
    TU_ERR(sal_info(e.s, e.a, NULL), SAL_EINVAL);
    TU_ERR(sal_root_get(e.s, 0, NULL), SAL_EINVAL);
    TU_OK(sal_read_begin(e.s));
    TU_ERR(sal_read(e.s, e.a, NULL), SAL_EINVAL);
    TU_OK(sal_read_end(e.s));
    TU_OK(sal_write_begin(e.s));
    void *p;
    TU_ERR(sal_write(e.s, NULL, &p), SAL_EINVAL);
    TU_OK(sal_write_end(e.s));
    TU_ERR(sal_read_begin(NULL), SAL_EINVAL);
    TU_ERR(sal_write_begin(NULL), SAL_EINVAL);
    /* The two calls that return no error code. */
    sal_options_init(NULL);
    assert_int_equal(sal_max_object_bytes(NULL), 0);
    env_close(&e);
}

static void misc_misuse(void **state)
{
    tu_ctx *c = *state;
    env e;
    env_open(c, &e);
    /* root index out of range */
    sal_id id;
    TU_ERR(sal_root_get(e.s, SAL_ROOT_COUNT, &id), SAL_EINVAL);
    TU_ERR(tu_root_set(e.s, SAL_ROOT_COUNT, SAL_NULL_ID), SAL_EINVAL);
    /* cas with the wrong expected */
    TU_OK(sal_retain(e.s, e.a));
    TU_ERR(tu_root_cas(e.s, 0, e.child, e.a), SAL_ECONFLICT);
    TU_OK(tu_root_cas(e.s, 0, SAL_NULL_ID, e.a));
    TU_ERR(tu_root_cas(e.s, 0, SAL_NULL_ID, SAL_NULL_ID), SAL_ECONFLICT);
    /* heap close with a session open */
    TU_ERR(sal_heap_close(e.h), SAL_EBUSY);
    /* session close inside a section */
    TU_OK(sal_write_begin(e.s));
    TU_ERR(sal_session_close(e.s), SAL_EBUSY);
    /* write_child on a parent not writable in this section */
    void *p;
    TU_ERR(sal_write_child(e.s, e.a, 0, NULL, &p), SAL_ENOTWRITABLE);
    /* an object as its own child */
    TU_ERR(sal_set_child(e.s, e.a, 0, e.a), SAL_EINVAL);
    TU_OK(sal_write_end(e.s));
    TU_OK(sal_read_begin(e.r));
    TU_ERR(sal_session_close(e.r), SAL_EBUSY);
    TU_OK(sal_read_end(e.r));
    TU_OK(tu_root_set(e.s, 0, SAL_NULL_ID));
    env_close(&e);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strerror_distinct),
        TU_TEST(bad_ids),
        TU_TEST(no_section),
        TU_TEST(alloc_arguments),
        TU_TEST(null_arguments),
        TU_TEST(misc_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
