/*
 * test_session.c - sessions, readers and sections: the 64-session limit and
 * slot reuse, the reader table, section nesting and misuse, closing with
 * open sessions or sections, arenas kept for the next session.
 */
#include "test_util.h"

#include <unistd.h>

#include "internal.h" /* cut_pending: a sync waiting for a section */

static sal_heap *create_small(tu_ctx *c)
{
    sal_options o = tu_small_options();
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    return h;
}

static void sixty_four_sessions(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s[SAL_MAX_SESSIONS];
    for (int i = 0; i < SAL_MAX_SESSIONS; i++) {
        TU_OK(sal_session_open(h, &s[i]));
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(s[i], s[j]);
    }
    assert_int_equal(tu_stats(h).sessions_open, SAL_MAX_SESSIONS);
    sal_session *extra = NULL;
    TU_ERR(sal_session_open(h, &extra), SAL_ESESSIONS);
    TU_ERR(sal_session_open(h, &extra), SAL_ESESSIONS);
    assert_int_equal(tu_stats(h).sessions_open, SAL_MAX_SESSIONS);

    /* Every one of them works. */
    sal_id ids[SAL_MAX_SESSIONS];
    for (int i = 0; i < SAL_MAX_SESSIONS; i++) {
        void *p;
        TU_OK(sal_write_begin(s[i]));
        TU_OK(sal_alloc(s[i], 8, 0, 0, &ids[i], &p));
        *(uint64_t *)p = (uint64_t)i;
        TU_OK(sal_write_end(s[i]));
    }

    /* A closed slot is reused, over and over. */
    for (int round = 0; round < 200; round++) {
        int k = (round * 7) % SAL_MAX_SESSIONS;
        TU_OK(sal_release(s[k], ids[k]));
        TU_OK(sal_session_close(s[k]));
        assert_int_equal(tu_stats(h).sessions_open, SAL_MAX_SESSIONS - 1);
        TU_OK(sal_session_open(h, &s[k]));
        TU_ERR(sal_session_open(h, &extra), SAL_ESESSIONS);
        void *p;
        TU_OK(sal_write_begin(s[k]));
        TU_OK(sal_alloc(s[k], 8, 0, 0, &ids[k], &p));
        *(uint64_t *)p = (uint64_t)k;
        TU_OK(sal_write_end(s[k]));
    }
    assert_int_equal(tu_stats(h).live_objects, SAL_MAX_SESSIONS);
    /* Readers do not take the sessions' slots, nor the other way round. */
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_read_begin(r));
    for (int i = 0; i < SAL_MAX_SESSIONS; i++) {
        const void *p;
        TU_OK(sal_read(r, ids[i], &p));
        assert_int_equal(*(const uint64_t *)p, (uint64_t)i);
    }
    TU_OK(sal_read_end(r));
    TU_OK(sal_session_close(r));
    for (int i = 0; i < SAL_MAX_SESSIONS; i++) {
        TU_OK(sal_release(s[i], ids[i]));
        TU_OK(sal_session_close(s[i]));
    }
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.sessions_open, 0);
    assert_int_equal(st.live_objects, 0);
    TU_OK(sal_heap_close(h));
}

static void reader_table(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session **r = calloc(SAL_MAX_READERS, sizeof(*r));
    assert_non_null(r);
    for (int i = 0; i < SAL_MAX_READERS; i++)
        TU_OK(sal_reader_open(h, &r[i]));
    assert_int_equal(tu_stats(h).readers_open, SAL_MAX_READERS);
    sal_session *extra;
    TU_ERR(sal_reader_open(h, &extra), SAL_EREADERS);
    /* Allocating sessions are still available. */
    sal_session *s[SAL_MAX_SESSIONS];
    for (int i = 0; i < SAL_MAX_SESSIONS; i++)
        TU_OK(sal_session_open(h, &s[i]));
    TU_ERR(sal_session_open(h, &extra), SAL_ESESSIONS);
    TU_ERR(sal_reader_open(h, &extra), SAL_EREADERS);
    TU_OK(sal_session_close(r[500]));
    TU_OK(sal_reader_open(h, &r[500]));
    TU_ERR(sal_reader_open(h, &extra), SAL_EREADERS);
    for (int i = 0; i < SAL_MAX_SESSIONS; i++)
        TU_OK(sal_session_close(s[i]));
    for (int i = 0; i < SAL_MAX_READERS; i++)
        TU_OK(sal_session_close(r[i]));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.readers_open, 0);
    assert_int_equal(st.sessions_open, 0);
    free(r);
    TU_OK(sal_heap_close(h));
}

static void readers_cannot_write(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s, *r;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_reader_open(h, &r));
    sal_id a;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 16, 1, 0, &a, &p));
    TU_OK(sal_write_end(s));
    TU_ERR(sal_write_begin(r), SAL_EREADONLY);
    sal_id b;
    TU_ERR(sal_alloc(r, 8, 0, 0, &b, &p), SAL_EREADONLY);
    sal_id w = a;
    TU_ERR(sal_write(r, &w, &p), SAL_EREADONLY);
    assert_int_equal(w, a);
    /* But a reader can retain and release. */
    TU_OK(sal_retain(r, a));
    sal_object_info info;
    TU_OK(sal_info(r, a, &info));
    assert_int_equal(info.refcount, 2);
    TU_OK(sal_release(r, a));
    TU_OK(sal_release(r, a)); /* the last reference, dropped by a reader */
    TU_ERR(sal_info(s, a, &info), SAL_ESTALE);
    assert_int_equal(tu_stats(h).live_objects, 0);
    TU_OK(sal_session_close(r));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

static void sections(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s, *r;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_reader_open(h, &r));
    sal_heap_stats st = tu_stats(h);
    assert_int_equal(st.oldest_section_epoch, 0);
    assert_true(st.section_epoch > 0);

    /* Read sections nest. */
    TU_OK(sal_read_begin(r));
    st = tu_stats(h);
    assert_true(st.oldest_section_epoch > 0);
    assert_true(st.oldest_section_epoch <= st.section_epoch);
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read_end(r));
    assert_true(tu_stats(h).oldest_section_epoch > 0); /* still inside */
    TU_ERR(sal_session_close(r), SAL_EBUSY);
    TU_OK(sal_read_end(r));
    assert_int_equal(tu_stats(h).oldest_section_epoch, 0);
    /* An unmatched end is an error, not a wrap-around. */
    TU_ERR(sal_read_end(r), SAL_ENOSECTION);
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read_end(r));
    assert_int_equal(tu_stats(h).oldest_section_epoch, 0);

    /* Write sections do not nest; a read section may open inside one. */
    TU_OK(sal_write_begin(s));
    TU_ERR(sal_write_begin(s), SAL_EBUSY); /* a section is open on the session */
    sal_id a;
    void *p;
    TU_OK(sal_alloc(s, 8, 0, 0, &a, &p)); /* still in the first section */
    TU_OK(sal_read_begin(s));
    const void *q;
    TU_OK(sal_read(s, a, &q));
    assert_ptr_equal(q, p);
    TU_OK(sal_read_end(s));
    sal_id b;
    TU_OK(sal_alloc(s, 8, 0, 0, &b, &p)); /* the write section goes on */
    TU_ERR(sal_session_close(s), SAL_EBUSY);
    TU_OK(sal_write_end(s));
    TU_ERR(sal_write_end(s), SAL_ENOSECTION);
    TU_ERR(sal_alloc(s, 8, 0, 0, &b, &p), SAL_ENOSECTION);
    assert_int_equal(tu_stats(h).oldest_section_epoch, 0);

    /* A session closed while a section is open stays usable. */
    TU_OK(sal_write_begin(s));
    TU_ERR(sal_session_close(s), SAL_EBUSY);
    TU_OK(sal_alloc(s, 8, 0, 0, &b, &p));
    TU_OK(sal_write_end(s));
    TU_OK(sal_release(s, a));
    TU_OK(sal_release(s, b));
    TU_OK(sal_session_close(s));
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

static void heap_close_busy(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    sal_id a;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 24, 0, 0, &a, &p));
    tu_fill(p, 24, 0, 24);
    TU_OK(sal_write_end(s));
    TU_ERR(sal_heap_close(h), SAL_EBUSY);
    /* The heap stays open and usable. */
    TU_OK(tu_root_set(s, 0, a));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_session_close(s));
    TU_ERR(sal_heap_close(h), SAL_EBUSY); /* a reader is open */
    sal_id g;
    TU_OK(sal_root_get(r, 0, &g));
    assert_int_equal(g, a);
    TU_OK(sal_release(r, g));
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
    /* and it was closed properly */
    TU_OK(sal_heap_open(c->path, NULL, &h));
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_root_get(r, 0, &g));
    assert_int_equal(g, a);
    const void *q;
    TU_OK(sal_read_begin(r));
    TU_OK(sal_read(r, g, &q));
    assert_int_equal(tu_check(q, 24, 0, 24), TU_CHECK_OK);
    TU_OK(sal_read_end(r));
    TU_OK(sal_release(r, g));
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

/* "The rest of its arena is kept for the next session": sessions that
 * open, allocate a little and close, one after another, do not each take a
 * segment. */
static void arena_kept_for_next_session(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_id ids[100];
    for (int i = 0; i < 100; i++) {
        sal_session *s;
        TU_OK(sal_session_open(h, &s));
        void *p;
        TU_OK(sal_write_begin(s));
        TU_OK(sal_alloc(s, 200, 0, 0, &ids[i], &p));
        tu_fill(p, 200, 0, (uint64_t)i);
        TU_OK(sal_write_end(s));
        TU_OK(sal_session_close(s));
    }
    sal_heap_stats st = tu_stats(h);
    assert_true(st.segments_in_use <= 2);
    assert_true(st.file_bytes < 8 * SAL_MIN_SEGMENT_BYTES + (64ull << 20));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_read_begin(r));
    for (int i = 0; i < 100; i++) {
        const void *q;
        TU_OK(sal_read(r, ids[i], &q));
        assert_int_equal(tu_check(q, 200, 0, (uint64_t)i), TU_CHECK_OK);
    }
    TU_OK(sal_read_end(r));
    for (int i = 0; i < 100; i++)
        TU_OK(sal_release(r, ids[i]));
    TU_OK(sal_session_close(r));
    assert_int_equal(tu_stats(h).live_objects, 0);
    TU_OK(sal_heap_close(h));
}

/* "Memory that a thread in a section might still see is never reused until
 * it leaves": a reader inside a read section keeps whole dead segments from
 * being reused; once it leaves, they are. */
static void section_holds_back_reuse(void **state)
{
    tu_ctx *c = *state;
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    sal_session *s, *r;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_reader_open(h, &r));
    enum { N = 48, SZ = 64 * 1024 }; /* 3 MiB: whole 1 MiB segments */
    sal_id old[N], fresh[N];
    const uint8_t *old_p[N];
    void *p;
    TU_OK(sal_write_begin(s));
    for (int i = 0; i < N; i++) {
        TU_OK(sal_alloc(s, SZ, 0, 0, &old[i], &p));
        tu_fill(p, SZ, 0, 1000 + (uint64_t)i);
    }
    TU_OK(sal_write_end(s));

    TU_OK(sal_read_begin(r));
    for (int i = 0; i < N; i++)
        TU_OK(sal_read(r, old[i], (const void **)&old_p[i]));
    sal_heap_stats st = tu_stats(h);
    assert_true(st.oldest_section_epoch > 0);
    for (int i = 0; i < N; i++)
        TU_OK(sal_release(s, old[i])); /* their segments die */
    for (int round = 0; round < 3; round++) {
        TU_OK(sal_write_begin(s));
        for (int i = 0; i < N; i++) {
            TU_OK(sal_alloc(s, SZ, 0, 0, &fresh[i], &p));
            memset(p, 0xee, SZ);
            for (int k = 0; k < N; k++)
                if ((const uint8_t *)p < old_p[k] + SZ && old_p[k] < (uint8_t *)p + SZ)
                    fail_msg("round %d: a new object reuses the memory of object %d while "
                             "a reader is still in the section that read it",
                             round, k);
        }
        TU_OK(sal_write_end(s));
        for (int i = 0; i < N; i++)
            TU_OK(sal_release(s, fresh[i]));
    }
    for (int i = 0; i < N; i++)
        if (tu_check(old_p[i], SZ, 0, 1000 + (uint64_t)i) != TU_CHECK_OK)
            fail_msg("object %d changed under a reader's section", i);
    TU_OK(sal_read_end(r));
    uint64_t file_held = tu_stats(h).file_bytes;
    assert_int_equal(tu_stats(h).oldest_section_epoch, 0);

    /* Out of the section: rounds of the same size now reuse dead segments
     * instead of growing the file. */
    for (int round = 0; round < 4; round++) {
        TU_OK(sal_write_begin(s));
        for (int i = 0; i < N; i++)
            TU_OK(sal_alloc(s, SZ, 0, 0, &fresh[i], &p));
        TU_OK(sal_write_end(s));
        for (int i = 0; i < N; i++)
            TU_OK(sal_release(s, fresh[i]));
    }
    st = tu_stats(h);
    if (st.file_bytes > file_held)
        fail_msg("the file grew from %" PRIu64 " to %" PRIu64
                 " bytes after the reader left: dead segments were not reused",
                 file_held, st.file_bytes);
    assert_int_equal(st.live_objects, 0);
    TU_OK(sal_session_close(r));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* One thread, two sessions of a heap: with a write section open on the
 * first while another thread's sync waits for it, beginning one on the
 * second is refused (waiting would wait for ever).  And a write section on
 * one heap does not stop a sync of another. */
typedef struct sync_arg {
    sal_heap *h;
    int rc;
} sync_arg;

static void *sync_main(void *argp)
{
    sync_arg *a = argp;
    a->rc = sal_sync(a->h, SAL_SYNC_PROTECT);
    return NULL;
}

static void two_sessions_one_thread(void **state)
{
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s1, *s2;
    TU_OK(sal_session_open(h, &s1));
    TU_OK(sal_session_open(h, &s2));
    TU_OK(sal_write_begin(s1));
    TU_OK(sal_write_begin(s2)); /* no sync waiting: both may be open */
    TU_OK(sal_write_end(s2));
    sync_arg a = {h, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sync_main, &a), 0);
    /* The sync waits for s1's section: then s2 must not wait for it. */
    for (int ms = 0; !atomic_load(&h->cut_pending); ms++) {
        if (ms == 10000)
            fail_msg("the sync did not start in 10 s");
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    alarm(20); /* a library that waits here never returns */
    TU_ERR(sal_write_begin(s2), SAL_EBUSY);
    alarm(0);
    TU_OK(sal_write_end(s1));
    assert_int_equal(pthread_join(t, NULL), 0);
    TU_OK(a.rc);
    TU_OK(sal_write_begin(s2));
    TU_OK(sal_write_end(s2));

    /* A write section on this heap, a sync of another. */
    char other[PATH_MAX + 8];
    snprintf(other, sizeof other, "%s/other.sal", c->dir);
    sal_options o = tu_small_options();
    sal_heap *h2;
    TU_OK(sal_heap_create(other, &o, &h2));
    TU_OK(sal_write_begin(s1));
    TU_OK(sal_sync(h2, SAL_SYNC_PROTECT));
    TU_ERR(sal_sync(h, SAL_SYNC_PROTECT), SAL_EBUSY);
    TU_OK(sal_write_end(s1));
    TU_OK(sal_heap_close(h2));
    TU_OK(sal_session_close(s1));
    TU_OK(sal_session_close(s2));
    TU_OK(sal_heap_close(h));
}

/* Debug builds reject a session used from another thread. */
#ifndef NDEBUG
typedef struct wrong_thread_arg {
    sal_session *s;
    sal_id id; /* an object of the session's heap */
    int rc_alloc, rc_begin, rc_close, rc_read, rc_info;
} wrong_thread_arg;

static void *use_foreign_session(void *argp)
{
    wrong_thread_arg *a = argp;
    a->rc_begin = sal_write_begin(a->s);
    sal_id id;
    void *p;
    a->rc_alloc = sal_alloc(a->s, 8, 0, 0, &id, &p);
    const void *r;
    a->rc_read = sal_read(a->s, a->id, &r); /* inside the owner's section */
    sal_object_info info;
    a->rc_info = sal_info(a->s, a->id, &info);
    a->rc_close = sal_session_close(a->s);
    return NULL;
}
#endif

static void wrong_thread(void **state)
{
#ifdef NDEBUG
    (void)state;
    print_message("wrong_thread: the thread check is compiled only in debug builds "
                  "(NDEBUG is set here)\n");
    skip();
#else
    tu_ctx *c = *state;
    sal_heap *h = create_small(c);
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    wrong_thread_arg a = {.s = s};
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 8, 0, 0, &a.id, &p));
    TU_OK(sal_write_end(s));
    TU_OK(sal_read_begin(s));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, use_foreign_session, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    TU_ERR(a.rc_begin, SAL_EWRONGTHREAD);
    TU_ERR(a.rc_alloc, SAL_EWRONGTHREAD);
    TU_ERR(a.rc_read, SAL_EWRONGTHREAD);
    TU_ERR(a.rc_info, SAL_EWRONGTHREAD);
    TU_ERR(a.rc_close, SAL_EWRONGTHREAD);
    TU_OK(sal_read_end(s));
    TU_OK(sal_release(s, a.id));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
#endif
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(sixty_four_sessions),
        TU_TEST(reader_table),
        TU_TEST(readers_cannot_write),
        TU_TEST(sections),
        TU_TEST(heap_close_busy),
        TU_TEST(arena_kept_for_next_session),
        TU_TEST(section_holds_back_reuse),
        TU_TEST(wrong_thread),
        TU_TEST(two_sessions_one_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
