/* roots.c - the numbered roots: how versions are published and snapshots
 * taken.
 *
 * The live roots are an array of atomic ids in memory; commits copy them
 * into the commit slot.  Getting a root retains it inside a short internal
 * section, so that the id read from the root cannot be freed and its slot
 * reused before the retain lands: if a writer replaced and released it in
 * between, the retain sees a dead or newer entry and the get tries again;
 * if the object is still alive but no longer the root, the count is given
 * back and the get tries again too (a writer may be writing it in place). */
#include "internal.h"

static int root_check(sal_session *s, unsigned root)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    return root < SAL_ROOT_COUNT ? 0 : SAL_EINVAL;
}

int sal_root_get(sal_session *s, unsigned root, sal_id *id_out)
{
    int err = root_check(s, root);
    if (err)
        return err;
    if (!id_out)
        return SAL_EINVAL;
    sal_heap *h = s->heap;
    int entered = !s->read_depth && !s->write_token;
    if (entered)
        sal_section_enter(s->section, h);
    /* In flight (odd) from before the root is read until any count on an
     * object that is no longer the root is given back: a writer holding
     * that object, granted it in place, waits for this (cow.c). */
    uint32_t seq = atomic_load_explicit(&s->section->root_get, memory_order_relaxed);
    atomic_store(&s->section->root_get, seq + 1);
    sal_id id;
    for (;;) {
        id = atomic_load(&h->roots[root]);
        if (id == SAL_NULL_ID || h->readonly)
            break; /* nothing changes in a read-only heap: no count needed */
        err = sal_retain_unheld(s, id);
        if (err == 0) {
            /* Still the root?  A writer may have replaced it before our
             * count landed and, holding the only other reference, been
             * granted the object in place (sal_write): that is no snapshot
             * to hand out.  Seen after our count, the root names the
             * object only if the replacement came later, and then the
             * writer's check sees our count and copies. */
            atomic_thread_fence(memory_order_seq_cst);
            if (atomic_load(&h->roots[root]) == id)
                break;
            (void)sal_release_internal(s, id);
            continue;
        }
        if (atomic_load(&h->roots[root]) == id) {
            /* The root still names an object that cannot be retained. */
            id = SAL_NULL_ID;
            break;
        }
        err = 0; /* replaced meanwhile: read it again */
    }
    atomic_store_explicit(&s->section->root_get, seq + 2, memory_order_release);
    if (entered)
        sal_section_leave(s->section);
    *id_out = id;
    return err;
}

void sal_root_gets_wait(sal_heap *h)
{
    for (unsigned i = 0; i < SAL_SECTION_SLOTS; i++) {
        _Atomic uint32_t *g = &h->slots[i].root_get;
        /* Sequentially consistent: ordered after the writer's own
         * replacement of the root, so a get that read the old root is
         * seen in flight (its mark came before its read of the root). */
        uint32_t seq = atomic_load(g);
        if (!(seq & 1))
            continue;
        for (unsigned spins = 0; atomic_load_explicit(g, memory_order_acquire) == seq;)
            sal_backoff(&spins);
    }
}

int sal_root_holds_only(sal_heap *h, sal_id id, uint64_t e)
{
    if (sal_entry_rc(e) != 1)
        return 0;
    unsigned used = atomic_load(&h->roots_used);
    for (unsigned r = 0; r < used; r++)
        if (atomic_load_explicit(&h->roots[r], memory_order_relaxed) == id)
            return 1;
    return 0;
}

/* Root `root` is about to name an object: the checks above look at it from
 * now on (before the store: a check that sees the root sees the mark). */
static void roots_used_cover(sal_heap *h, unsigned root)
{
    unsigned used = atomic_load(&h->roots_used);
    while (used <= root && !atomic_compare_exchange_weak(&h->roots_used, &used, root + 1)) {
    }
}

/* A value for a root: null, or an object the caller holds a reference to
 * (one only a root holds is not the caller's to give: setting a root to
 * it again would release the root's reference and free what it names). */
static int root_value_check(sal_session *s, sal_id id)
{
    if (id == SAL_NULL_ID)
        return 0;
    uint64_t e;
    sal_object_header *hdr;
    int err = sal_resolve(s->heap, id, &e, &hdr);
    if (!err && sal_root_holds_only(s->heap, id, e))
        err = SAL_EINVAL;
    return err;
}

/* Publishing is a write: it needs a write section, so that a commit's cut,
 * which waits for write sections, sees every root either before or after
 * a set, never in between. */
static int publish_check(sal_session *s, unsigned root)
{
    int err = root_check(s, root);
    if (err)
        return err;
    if (s->heap->readonly || s->kind != SAL_KIND_WRITER)
        return SAL_EREADONLY;
    return s->write_token ? 0 : SAL_ENOSECTION;
}

int sal_root_set(sal_session *s, unsigned root, sal_id id)
{
    int err = publish_check(s, root);
    if (err)
        return err;
    if ((err = root_value_check(s, id)))
        return err;
    if (id != SAL_NULL_ID)
        roots_used_cover(s->heap, root);
    sal_id old = atomic_exchange(&s->heap->roots[root], id);
    /* Readers may reach `id` and what lies below it from now on: nothing
     * granted before is written in place any more in this section (a
     * child granted under `id` has a count of 1 and would pass on its own). */
    sal_publication_ends_grants(s);
    /* The root owns `id` now: an error would tell the caller it still does
     * (see sal_set_child). */
    if (old != SAL_NULL_ID)
        (void)sal_release_internal(s, old);
    return 0;
}

int sal_root_cas(sal_session *s, unsigned root, sal_id expected, sal_id desired)
{
    int err = publish_check(s, root);
    if (err)
        return err;
    if ((err = root_value_check(s, desired)))
        return err;
    if (desired != SAL_NULL_ID)
        roots_used_cover(s->heap, root);
    if (!atomic_compare_exchange_strong(&s->heap->roots[root], &expected, desired))
        return SAL_ECONFLICT;
    sal_publication_ends_grants(s); /* as in sal_root_set */
    if (expected != SAL_NULL_ID)
        (void)sal_release_internal(s, expected);
    return 0;
}
