/*
 * session.c - sessions, readers, and read/write sections.
 *
 * Slots: 64 allocating sessions and SAL_MAX_READERS readers, each claimed
 * with a compare-and-swap on a bitmap, so that open and close never take a
 * lock and a closed slot is reused at once.
 *
 * Sections are epochs.  Entering one publishes the current section epoch in
 * the thread's slot; leaving clears it.  Memory that became unreachable at
 * epoch E is reused only when every slot is empty or newer than E
 * (provider.c), so a pointer taken inside a section stays readable until
 * the section ends.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if SAL_TEST_HOOKS
static _Atomic int id_vec_fail;
int sal_test_id_vec_fail(int on)
{
    atomic_store(&id_vec_fail, on);
    return 0;
}
#else
int sal_test_id_vec_fail(int on)
{
    (void)on;
    return ENOSYS;
}
#endif

int sal_id_vec_reserve(sal_id_vec *v, size_t more)
{
    if (v->len + more <= v->cap)
        return 0;
#if SAL_TEST_HOOKS
    if (atomic_load(&id_vec_fail))
        return SAL_ENOMEM;
#endif
    size_t cap = v->cap ? v->cap : 256;
    while (cap < v->len + more)
        cap *= 2;
    sal_id *p = realloc(v->ids, cap * sizeof *p);
    if (!p)
        return SAL_ENOMEM;
    v->ids = p;
    v->cap = cap;
    return 0;
}

int sal_id_vec_append(sal_id_vec *v, const sal_id *ids, size_t n)
{
    int err = sal_id_vec_reserve(v, n);
    if (err)
        return err;
    memcpy(v->ids + v->len, ids, n * sizeof *ids);
    v->len += n;
    return 0;
}

int sal_id_vec_push(sal_id_vec *v, sal_id id)
{
    int err = sal_id_vec_reserve(v, 1);
    if (err)
        return err;
    v->ids[v->len++] = id;
    return 0;
}

void sal_id_vec_free(sal_id_vec *v)
{
    free(v->ids);
    v->ids = NULL;
    v->len = v->cap = 0;
}

void sal_section_enter(sal_section_slot *slot, sal_heap *h)
{
    /* seq_cst store: the slot is visible before any read this section
     * makes (see the argument in provider.c). */
    atomic_store(&slot->epoch, atomic_load(&h->section_epoch));
}

void sal_section_leave(sal_section_slot *slot)
{
    atomic_store_explicit(&slot->epoch, 0, memory_order_release);
}

uint64_t sal_oldest_section_epoch(sal_heap *h)
{
    return sal_oldest_section_epoch_except(h, NULL);
}

uint64_t sal_oldest_section_epoch_except(sal_heap *h, const sal_section_slot *own)
{
    uint64_t oldest = 0;
    for (unsigned i = 0; i < SAL_SECTION_SLOTS; i++) {
        if (&h->slots[i] == own)
            continue;
        uint64_t e = atomic_load(&h->slots[i].epoch);
        if (e && (oldest == 0 || e < oldest))
            oldest = e;
    }
    return oldest;
}

static int claim_bit(_Atomic uint64_t *mask, unsigned *bit_out)
{
    uint64_t m = atomic_load(mask);
    while (~m) {
        unsigned bit = (unsigned)__builtin_ctzll(~m);
        if (atomic_compare_exchange_weak(mask, &m, m | (1ull << bit))) {
            *bit_out = bit;
            return 1;
        }
    }
    return 0;
}

static sal_session *session_new(sal_heap *h, sal_session_kind kind, unsigned slot)
{
    sal_session *s = aligned_alloc(SAL_CACHE_LINE,
                                   sal_round_up(sizeof *s, SAL_CACHE_LINE));
    if (!s)
        return NULL;
    memset(s, 0, sizeof *s);
    s->heap = h;
    s->kind = kind;
    s->slot = slot;
    s->arena_segment = -1;
    s->owner = pthread_self();
    s->section = &h->slots[kind == SAL_KIND_WRITER ? slot : SAL_MAX_SESSIONS + slot];
    s->birth_epoch = (uint32_t)atomic_load(&h->commit_epoch);
    s->free_cap = SAL_ID_LOCAL_MAX;
    s->free_ids = malloc(s->free_cap * sizeof *s->free_ids);
    if (!s->free_ids) {
        free(s);
        return NULL;
    }
    pthread_mutex_lock(&h->sessions_lock);
    h->open_sessions[kind == SAL_KIND_WRITER ? slot : SAL_MAX_SESSIONS + slot] = s;
    pthread_mutex_unlock(&h->sessions_lock);
    return s;
}

int sal_session_open(sal_heap *h, sal_session **out)
{
    if (!out)
        return SAL_EINVAL;
    *out = NULL;
    if (!h)
        return SAL_EINVAL;
    if (h->readonly)
        return SAL_EREADONLY;
    unsigned slot;
    if (!claim_bit(&h->writer_mask, &slot))
        return SAL_ESESSIONS;
    sal_session *s = session_new(h, SAL_KIND_WRITER, slot);
    if (!s) {
        atomic_fetch_and(&h->writer_mask, ~(1ull << slot));
        return SAL_ENOMEM;
    }
    atomic_fetch_add(&h->sessions_open, 1);
    *out = s;
    return 0;
}

int sal_reader_open(sal_heap *h, sal_session **out)
{
    if (!out)
        return SAL_EINVAL;
    *out = NULL;
    if (!h)
        return SAL_EINVAL;
    for (unsigned w = 0; w < SAL_MAX_READERS / 64; w++) {
        unsigned bit;
        if (claim_bit(&h->reader_mask[w], &bit)) {
            sal_session *s = session_new(h, SAL_KIND_READER, w * 64 + bit);
            if (!s) {
                atomic_fetch_and(&h->reader_mask[w], ~(1ull << bit));
                return SAL_ENOMEM;
            }
            atomic_fetch_add(&h->readers_open, 1);
            *out = s;
            return 0;
        }
    }
    return SAL_EREADERS;
}

int sal_session_close(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->read_depth || s->write_token)
        return SAL_EBUSY;
    sal_heap *h = s->heap;
    /* Under sessions_lock: a commit's cut reads the arenas of open
     * sessions. */
    pthread_mutex_lock(&h->sessions_lock);
    sal_session_arena_release(s, 1);
    pthread_mutex_unlock(&h->sessions_lock);
    sal_session_flush_ids(s);
    sal_pending_ids_handover(s);
    pthread_mutex_lock(&h->sessions_lock);
    atomic_fetch_add(&h->closed_live_objects, atomic_load(&s->live_objects));
    atomic_fetch_add(&h->closed_live_bytes, atomic_load(&s->live_bytes));
    h->open_sessions[s->kind == SAL_KIND_WRITER ? s->slot : SAL_MAX_SESSIONS + s->slot] = NULL;
    pthread_mutex_unlock(&h->sessions_lock);
    sal_id_vec_free(&s->pending_ids);
    sal_id_vec_free(&s->work);
    free(s->free_ids);
    if (s->kind == SAL_KIND_WRITER) {
        atomic_fetch_and(&h->writer_mask, ~(1ull << s->slot));
        atomic_fetch_sub(&h->sessions_open, 1);
    } else {
        atomic_fetch_and(&h->reader_mask[s->slot / 64], ~(1ull << (s->slot % 64)));
        atomic_fetch_sub(&h->readers_open, 1);
    }
    free(s);
    return 0;
}

int sal_read_begin(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->read_depth++ == 0 && !s->write_token)
        sal_section_enter(s->section, s->heap);
    return 0;
}

int sal_read_end(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->read_depth == 0)
        return SAL_ENOSECTION;
    if (--s->read_depth == 0 && !s->write_token)
        sal_section_leave(s->section);
    return 0;
}

/* A token no other section has: objects sealed with it are the ones the
 * section holding it may write in place.  (0 means "no section".) */
static uint32_t take_write_token(sal_heap *h)
{
    uint32_t t;
    do
        t = atomic_fetch_add(&h->write_token_next, 1);
    while (t == 0);
    return t;
}

static void write_grants_end(sal_session *s)
{
    s->write_token = take_write_token(s->heap);
}

void sal_publication_ends_grants(sal_session *s)
{
    write_grants_end(s);
    if (sal_thread_write_sections() <= 1)
        return; /* the thread's only write section */
    /* The thread's other sessions are its own to change; the lock guards
     * the table of open sessions. */
    sal_heap *h = s->heap;
    pthread_t self = pthread_self();
    pthread_mutex_lock(&h->sessions_lock);
    for (unsigned i = 0; i < SAL_MAX_SESSIONS; i++) {
        sal_session *o = h->open_sessions[i];
        if (o && o != s && pthread_equal(o->owner, self) && o->write_token)
            write_grants_end(o);
    }
    pthread_mutex_unlock(&h->sessions_lock);
}

int sal_write_begin(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->kind != SAL_KIND_WRITER)
        return SAL_EREADONLY;
    if (s->write_token)
        return SAL_EBUSY;
    uint32_t token = take_write_token(s->heap);
    /* The door of the cut: announce, then look.  A commit sets cut_pending
     * and then looks at `writing`; with both sides sequentially consistent
     * at least one sees the other, so no section slips into a cut. */
    sal_heap *h = s->heap;
    for (;;) {
        atomic_store(&s->section->writing, 1);
        if (!atomic_load(&h->cut_pending))
            break;
        atomic_store(&s->section->writing, 0);
        /* This thread inside a write section of another of its sessions:
         * the cut waits for that one, and waiting here would never end.
         * Inside a section of another heap: a sync of that heap may be
         * waiting for it while a writer of this heap waits at that heap's
         * door (four threads, two heaps: a cycle).  A thread that holds a
         * write section never waits at a cut. */
        if (sal_thread_write_sections() > 0)
            return SAL_EBUSY;
        sal_cut_wait(h);
    }
    if (s->read_depth == 0)
        sal_section_enter(s->section, h);
    s->write_token = token;
    /* Objects allocated from now on are in the commits after this cut. */
    s->birth_epoch = (uint32_t)atomic_load(&h->cut_epoch);
    sal_thread_write_sections_add(1);
    return 0;
}

int sal_write_end(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (!s->write_token)
        return SAL_ENOSECTION;
    s->write_token = 0;
    if (s->read_depth == 0)
        sal_section_leave(s->section);
    atomic_store_explicit(&s->section->writing, 0, memory_order_release);
    sal_thread_write_sections_add(-1);
    return 0;
}
