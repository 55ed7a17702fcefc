/*
 * cow.c - copy-on-write: granting write access in place or by copy.
 *
 * In place requires all three: the object is unique (count 1), it is not
 * committed, and it is reached through something writable in this section
 * (the caller's own reference for sal_write(), a writable parent for
 * sal_write_child()).  Writability in a section is recorded in the header's
 * `seal` field: the section's token, which no other section has.  A parent
 * that was made writable but has since been shared (count > 1) is no longer
 * writable.
 */
#include <string.h>

#include "internal.h"

static int writer_check(sal_session *s)
{
    int err = sal_session_check(s);
    if (err)
        return err;
    if (s->kind != SAL_KIND_WRITER)
        return SAL_EREADONLY;
    if (!s->write_token)
        return SAL_ENOSECTION;
    return 0;
}

static int writable_in_place(sal_heap *h, uint64_t e, sal_object_header *hdr)
{
    return sal_entry_rc(e) == 1 && !sal_object_committed(h, sal_heap_offset(h, hdr));
}

/* Take back a copy that nobody has seen: its first `retained` children
 * lose the count the copy gave them, and it dies without touching the
 * others (it holds no count of theirs). */
static void cow_discard(sal_session *s, sal_id copy, sal_object_header *nh, unsigned retained)
{
    const sal_id *child = (const sal_id *)(nh + 1);
    for (unsigned i = 0; i < retained; i++)
        if (child[i] != SAL_NULL_ID)
            (void)sal_release_internal(s, child[i]);
    _Atomic uint64_t *slot = &s->heap->table[sal_id_index(copy)];
    uint64_t dead = atomic_load(slot) - SAL_ENTRY_RC_ONE; /* its one count */
    atomic_store(slot, dead);
    (void)sal_object_die(s, copy, dead, 1);
}

/* Copy `old` (entry e, header hdr) to a new object that the caller will
 * own, and drop the caller's reference to `old`.  When that reference was
 * the only one, the copy takes the children over; otherwise it retains
 * them.  If a child cannot be retained (a dangling id: damage, or a count
 * released once too often), the copy is taken back and `old` stays as it
 * was, with the caller's reference: *new_id is SAL_NULL_ID. */
static int cow_copy(sal_session *s, sal_id old, uint64_t e, sal_object_header *hdr,
                    sal_id *new_id, sal_object_header **new_hdr)
{
    sal_heap *h = s->heap;
    sal_id id;
    sal_object_header *nh;
    *new_id = SAL_NULL_ID;
    int err = sal_alloc_raw(s, hdr->size_bytes, hdr->nrefs, hdr->type, &id, &nh);
    if (err)
        return err;
    memcpy(nh + 1, hdr + 1, hdr->size_bytes);
    _Atomic uint64_t *slot = &h->table[sal_id_index(old)];
    uint64_t expect = e;
    if (sal_entry_rc(e) == 1 &&
        atomic_compare_exchange_strong(slot, &expect, e - SAL_ENTRY_RC_ONE)) {
        /* We held the only reference: the old object dies and its
         * children's references move to the copy unchanged. */
        err = sal_object_die(s, old, e, 1);
    } else {
        const sal_id *child = (const sal_id *)(nh + 1);
        for (unsigned i = 0; i < nh->nrefs; i++) {
            if (child[i] != SAL_NULL_ID && (err = sal_retain_internal(h, child[i]))) {
                cow_discard(s, id, nh, i);
                return err;
            }
        }
        err = sal_release_internal(s, old);
    }
    *new_id = id;
    *new_hdr = nh;
    return err;
}

int sal_write(sal_session *s, sal_id *id_inout, void **ptr_out)
{
    int err = writer_check(s);
    if (err)
        return err;
    if (!id_inout || !ptr_out)
        return SAL_EINVAL;
    uint64_t e;
    sal_object_header *hdr;
    if ((err = sal_resolve(s->heap, *id_inout, &e, &hdr)))
        return err;
    if (sal_root_holds_only(s->heap, *id_inout, e))
        return SAL_EINVAL; /* the root's reference, not the caller's */
    if (!writable_in_place(s->heap, e, hdr)) {
        sal_id nid;
        err = cow_copy(s, *id_inout, e, hdr, &nid, &hdr);
        if (nid != SAL_NULL_ID)
            *id_inout = nid; /* the copy is yours even if a later step failed */
        if (err)
            return err;
    }
    hdr->seal = s->write_token;
    *ptr_out = hdr + 1;
    return 0;
}

/* Resolve a parent that must be writable in this section. */
static int writable_parent(sal_session *s, sal_id parent, unsigned slot,
                           sal_object_header **hdr_out)
{
    uint64_t e;
    sal_object_header *hdr;
    int err = sal_resolve(s->heap, parent, &e, &hdr);
    if (err)
        return err;
    if (hdr->seal != s->write_token)
        return SAL_ENOTWRITABLE;
    if (!writable_in_place(s->heap, e, hdr)) {
        /* A second count may be a sal_root_get()'s that read this object
         * as a root before it was replaced, landed after our grant, and is
         * being given back: not a share.  Wait for the gets in flight. */
        if (sal_object_committed(s->heap, sal_heap_offset(s->heap, hdr)))
            return SAL_ENOTWRITABLE; /* (with a count of 1, that is why) */
        sal_root_gets_wait(s->heap);
        e = atomic_load_explicit(&s->heap->table[sal_id_index(parent)], memory_order_acquire);
        if (!writable_in_place(s->heap, e, hdr))
            return SAL_ENOTWRITABLE;
    }
    if (slot >= hdr->nrefs)
        return SAL_EINVAL;
    *hdr_out = hdr;
    return 0;
}

int sal_write_child(sal_session *s, sal_id parent, unsigned slot,
                    sal_id *child_id_out, void **ptr_out)
{
    int err = writer_check(s);
    if (err)
        return err;
    if (!ptr_out)
        return SAL_EINVAL;
    sal_object_header *ph;
    if ((err = writable_parent(s, parent, slot, &ph)))
        return err;
    sal_id *slots = (sal_id *)(ph + 1);
    sal_id child = slots[slot];
    if (child == SAL_NULL_ID)
        return SAL_EINVAL;
    uint64_t e;
    sal_object_header *ch;
    if ((err = sal_resolve(s->heap, child, &e, &ch)))
        return err;
    if (!writable_in_place(s->heap, e, ch)) {
        sal_id nid;
        /* The parent's reference is the one the copy replaces. */
        err = cow_copy(s, child, e, ch, &nid, &ch);
        if (nid != SAL_NULL_ID)
            slots[slot] = nid;
        if (err)
            return err;
        child = nid;
    }
    ch->seal = s->write_token;
    if (child_id_out)
        *child_id_out = child;
    *ptr_out = ch + 1;
    return 0;
}

int sal_set_child(sal_session *s, sal_id parent, unsigned slot, sal_id child)
{
    int err = writer_check(s);
    if (err)
        return err;
    if (child == parent && child != SAL_NULL_ID)
        return SAL_EINVAL; /* an object that owns itself is never freed */
    sal_object_header *ph;
    if ((err = writable_parent(s, parent, slot, &ph)))
        return err;
    sal_id *slots = (sal_id *)(ph + 1);
    if (child != SAL_NULL_ID) {
        uint64_t e;
        sal_object_header *ch;
        if ((err = sal_resolve(s->heap, child, &e, &ch)))
            return err;
        /* A count of 1 that this slot or a root holds is not the
         * caller's to give: storing it would free what they name. */
        if ((slots[slot] == child && sal_entry_rc(e) == 1) ||
            sal_root_holds_only(s->heap, child, e))
            return SAL_EINVAL;
    }
    sal_id old = slots[slot];
    slots[slot] = child;
    /* The parent owns `child` now: an error would tell the caller it still
     * does.  A free of the old child that runs out of memory or meets a
     * dangling id leaves the rest for recovery, as sal_release() does. */
    if (old != SAL_NULL_ID)
        (void)sal_release_internal(s, old);
    return 0;
}
