/*
 * sal.h - a persistent, copy-on-write object heap in a memory-mapped file.
 *
 * This header is the manual. Every call is documented where it is declared;
 * the "Caveats" section at the end says plainly what sal does not do.
 *
 * ------------------------------------------------------------------------
 * THE MODEL IN ONE PAGE
 * ------------------------------------------------------------------------
 *
 * A heap is one file, mapped at one address range that is reserved when the
 * heap is opened and never moves while it is open.  The file grows by fixed
 * size segments that are allocated on disk before they are used, so a full
 * disk is an error code from the allocating call, never a SIGBUS.
 *
 * Objects are named by ids (sal_id).  An id stays the same for the whole
 * life of its object, even when the object moves inside the file.  An id
 * carries a generation: once an object is released, its id is dead, and
 * using it is an error (SAL_ESTALE), also after the id's slot has been given
 * to a new object.
 *
 * Every object starts with a small header that the library owns and that
 * records the object's size, a type tag of yours, and how many child ids it
 * holds.  THE FIRST `nrefs` 8-BYTE WORDS OF AN OBJECT'S PAYLOAD ARE ITS CHILD
 * IDS.  The library walks them to release children, to copy on write, and
 * (gc-tool) to rebuild reference counts after a crash.
 *
 *     !!! AN ID STORED ANYWHERE ELSE IN AN OBJECT IS INVISIBLE TO SAL. !!!
 *     It holds no reference, it is not copied, and after a crash the object
 *     it names may be freed.  Keep every id that must keep an object alive
 *     in the leading child slots.
 *
 * Objects are reference counted.  Every holder of an id holds a reference:
 * sal_alloc() hands you one, sal_retain() makes another, sal_release() drops
 * one, a child slot owns the reference stored in it, and a root owns the
 * reference given to it.  When the count reaches zero the object's children
 * are released (iteratively: a chain of any length is freed in constant
 * stack) and its id and space are reclaimed.
 *
 * Objects are copy-on-write.  You never write an object you found; you ask
 * for write access and sal either grants it in place (the object is unique,
 * not yet committed, and reached through a writable parent) or gives you a
 * fresh copy under a new id and stores that id where the old one was.  Ask
 * for a root object with sal_write(), for a child with sal_write_child() on
 * its writable parent: that path copies the spine from the root down to the
 * object you change, and every reader holding the old root keeps seeing the
 * old tree, unchanged, without a lock.
 *
 * Threads work through sessions.  An allocating session (sal_session_open)
 * owns a bump arena; at most SAL_MAX_SESSIONS are open at once.  A thread
 * that only reads opens a reader (sal_reader_open) from a larger table.  A
 * session or reader belongs to the thread that opened it.
 *
 * Raw pointers are valid only inside a SECTION.  sal_read_begin() /
 * sal_read_end() bracket a read section; sal_write_begin() / sal_write_end()
 * a write section (which is also a read section).  Memory that another
 * thread in a section might still see is never reused until it leaves (your
 * own session may reuse what you no longer reference at once).  A thread
 * that never leaves its section holds back the reuse of freed space by the
 * others (see sal_heap_stats_get(): oldest_section_epoch).
 *
 * The heap has SAL_ROOT_COUNT numbered roots.  Setting a root publishes a
 * version; getting a root gives you a retained id: a snapshot that no writer
 * will disturb, for as long as you hold it.
 *
 * ------------------------------------------------------------------------
 * ERRORS
 * ------------------------------------------------------------------------
 *
 * Every call that can fail returns an int: 0 on success, a negative SAL_E*
 * code for a condition sal detected, or a positive errno value passed up
 * from the operating system (ENOSPC, EACCES, ...).  sal_strerror() names
 * every one.  No call aborts or exits on a caller's mistake.
 */
#ifndef SAL_H
#define SAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SAL_BUILDING_LIBRARY)
#define SAL_API __attribute__((visibility("default")))
#else
#define SAL_API
#endif

#define SAL_VERSION_MAJOR 0
#define SAL_VERSION_MINOR 1
#define SAL_VERSION_PATCH 0

/* ------------------------------------------------------------------------
 * Ids
 * ------------------------------------------------------------------------ */

/* An object id: the object-table index in the low 32 bits, a generation in
 * bits 32..55, bits 56..63 zero.  0 is the null id: it names no object, and
 * a child slot holding it is empty.  Treat ids as opaque. */
typedef uint64_t sal_id;
#define SAL_NULL_ID ((sal_id)0)

/* ------------------------------------------------------------------------
 * Limits (docs/limits.md says what happens at each one)
 * ------------------------------------------------------------------------ */

/* Allocating sessions open at once on one heap.  The next one gets
 * SAL_ESESSIONS.  The library's own threads never use one of these. */
#define SAL_MAX_SESSIONS 64
/* Readers (read-only sessions) open at once.  The next gets SAL_EREADERS. */
#define SAL_MAX_READERS 1024
/* Numbered roots, 0 .. SAL_ROOT_COUNT-1. */
#define SAL_ROOT_COUNT 64
/* Child ids one object may hold. */
#define SAL_MAX_REFS 65535u
/* Type tags are 0..255; the library gives them no meaning. */
#define SAL_MAX_TYPE 255u

/* Defaults for sal_options (see there). */
#define SAL_DEFAULT_RESERVE_BYTES (64ull << 30)   /* 64 GiB */
#define SAL_DEFAULT_SEGMENT_BYTES (8ull << 20)    /* 8 MiB */
#define SAL_DEFAULT_MAX_OBJECTS (256ull << 20)    /* 268,435,456 ids */
#define SAL_DEFAULT_READY_SEGMENTS 4u
#define SAL_MAX_READY_SEGMENTS 64u
#define SAL_MIN_SEGMENT_BYTES (1ull << 20)
#define SAL_MAX_SEGMENT_BYTES (1ull << 30)
/* The object table is indexed by 32 bits, and index 0 is the null id. */
#define SAL_MAX_OBJECTS_LIMIT ((1ull << 32) - 1)
/* Addresses are stored in units of 8 bytes in 38 bits: 2 TiB. */
#define SAL_MAX_RESERVE_BYTES (1ull << 41)

/* ------------------------------------------------------------------------
 * Error codes
 * ------------------------------------------------------------------------ */

enum sal_error {
    SAL_OK = 0,
    /* Opening a file */
    SAL_ENOTHEAP = -30700,  /* not a sal heap: empty, foreign, bad magic */
    SAL_EVERSION = -30701,  /* a sal heap of a format version this build
                               does not read */
    SAL_ECORRUPT = -30702,  /* damaged: a checksum or a cross-check failed;
                               the message of the failing call names what */
    SAL_ETRUNCATED = -30703,/* the file is shorter than its header says */
    SAL_ELOCKED = -30704,   /* another writer has the heap open */
    SAL_EUNCLEAN = -30705,  /* the heap was not closed cleanly; it must be
                               recovered before it is opened for writing */
    /* Using the API */
    SAL_EINVAL = -30710,    /* an argument is out of its documented range */
    SAL_EBADID = -30711,    /* null id, an index outside the table, or
                               one never handed out (a generation up
                               to 65536 ahead of its entry's) */
    SAL_ESTALE = -30712,    /* the id was released (its object is gone) */
    SAL_ETOOBIG = -30713,   /* object larger than the largest object */
    SAL_ESESSIONS = -30714, /* SAL_MAX_SESSIONS sessions already open */
    SAL_EREADERS = -30715,  /* SAL_MAX_READERS readers already open */
    SAL_EREADONLY = -30716, /* a write through a reader or a read-only heap */
    SAL_ENOSECTION = -30717,/* the call needs an open read/write section */
    SAL_ENOTWRITABLE = -30718, /* sal_write_child() on a parent that is not
                                  writable in this write section */
    SAL_ECONFLICT = -30719, /* sal_root_cas(): the root was not `expected` */
    SAL_EBUSY = -30720,     /* sessions are still open on the heap, or a
                               section is still open on the session */
    SAL_EWRONGTHREAD = -30721, /* a session used from a thread that did not
                                  open it (checked in debug builds) */
    /* Running out */
    SAL_EFULL = -30730,     /* the heap reached reserve_bytes */
    SAL_ENOIDS = -30731,    /* the object table is full (max_objects) */
    SAL_ENOMEM = -30732,    /* process memory for bookkeeping ran out */
};

/* A static string naming the error; never NULL.  Positive values are
 * errno values and get strerror()'s text. */
SAL_API const char *sal_strerror(int err);

/* ------------------------------------------------------------------------
 * Opening and closing a heap
 * ------------------------------------------------------------------------ */

typedef struct sal_heap sal_heap;
typedef struct sal_session sal_session;

/* Flags for sal_options.flags. */
#define SAL_OPEN_RECOVER 0x2u  /* if the heap was not closed cleanly,
                                  recover it (see sal_heap_open) instead
                                  of failing with SAL_EUNCLEAN */
#define SAL_OPEN_REPAIR 0x4u   /* recover even if the heap was closed
                                  cleanly, and rebuild every object's
                                  location from the committed segments
                                  instead of trusting the object table (the
                                  gc-tool's repair) */
#define SAL_OPEN_READONLY 0x1u /* map read-only; no sessions, readers only.
                                  Works on a heap that was not closed
                                  cleanly.  Nothing can change or die in a
                                  read-only heap, so sal_retain() and
                                  sal_release() only check the id there and
                                  root ids come back unretained. */

typedef struct sal_options {
    /* At create: the largest size the heap file may reach, which is also
     * the address range reserved at every open.  Rounded up to a whole
     * number of segments.  Default SAL_DEFAULT_RESERVE_BYTES, at most
     * SAL_MAX_RESERVE_BYTES.  Ignored by sal_heap_open(). */
    uint64_t reserve_bytes;
    /* At create: the size of a segment, the unit by which the file grows
     * and in which sessions bump-allocate.  A power of two between
     * SAL_MIN_SEGMENT_BYTES and SAL_MAX_SEGMENT_BYTES.  The largest object
     * is a segment less its header (sal_max_object_bytes()).  Ignored by
     * sal_heap_open(). */
    uint64_t segment_bytes;
    /* At create: how many ids the object table can hold (8 bytes each of
     * file, allocated as ids are used).  Default SAL_DEFAULT_MAX_OBJECTS,
     * at most SAL_MAX_OBJECTS_LIMIT.  The whole table (max_objects * 8
     * bytes, 2 GiB by default) is laid out inside reserve_bytes: a small
     * reservation needs a smaller max_objects (else SAL_EINVAL).  Ignored
     * by sal_heap_open(). */
    uint64_t max_objects;
    /* At create: permission bits of the new file (at most 0777: no setuid,
     * setgid or sticky bit).  Default 0600. */
    unsigned file_mode;
    /* How many empty, pre-faulted segments the background provider keeps
     * ready.  Default SAL_DEFAULT_READY_SEGMENTS, at most
     * SAL_MAX_READY_SEGMENTS (each is a segment of file allocated ahead);
     * 0 turns the provider thread off (sessions then prepare segments
     * themselves). */
    unsigned ready_segments;
    /* SAL_OPEN_* flags; other bits are SAL_EINVAL.  sal_heap_create()
     * takes none of them but SAL_OPEN_RECOVER and SAL_OPEN_REPAIR, which
     * mean nothing for a new heap and are ignored. */
    unsigned flags;
} sal_options;

/* Fill `opt` with the defaults above (nothing if `opt` is NULL). */
SAL_API void sal_options_init(sal_options *opt);

/* Create a new heap file at `path` (it must not exist: EEXIST) and open it
 * for writing.  `opt` may be NULL for the defaults.  On success *heap_out
 * is the open heap; on failure it is NULL and no file is left behind. */
SAL_API int sal_heap_create(const char *path, const sal_options *opt,
                            sal_heap **heap_out);

/* Open an existing heap.  The file is checked before anything is written:
 *   SAL_ENOTHEAP    empty file, not a sal heap;
 *   SAL_EVERSION    a format this build does not read;
 *   SAL_ECORRUPT    superblock, commit slots or segment table damaged;
 *   SAL_ETRUNCATED  the file is shorter than the committed heap;
 *   SAL_ELOCKED     another handle holds it: a writable open needs it to
 *                   itself, a read-only open shares it with other
 *                   read-only opens but not with a writer;
 *   SAL_EUNCLEAN    it was not closed cleanly and SAL_OPEN_RECOVER was not
 *                   given.
 * `opt` may be NULL; only ready_segments and flags are read from it.
 *
 * Recovery.  After an unclean stop (a killed process, a power loss), the
 * heap is brought back to exactly its last commit: the newest durable one
 * after a reboot, the newest of any mode otherwise.  Recovery rebuilds the
 * object table from the committed segments, walks from the committed
 * roots, sets every reference count to the number of references, and
 * frees every id and byte that nothing committed reaches (cycles too).
 * With SAL_OPEN_RECOVER it writes the result as a new commit; with
 * SAL_OPEN_READONLY it recovers in private memory and writes nothing, so a
 * read-only open of an unclean heap works (unless a writer holds it) and
 * shows the last commit.
 * sal_heap_recovery_report() says what recovery found. */
SAL_API int sal_heap_open(const char *path, const sal_options *opt,
                          sal_heap **heap_out);

typedef struct sal_recovery_report {
    int recovered;              /* 1 if this open recovered the heap */
    uint64_t objects_live;      /* objects the committed roots reach */
    uint64_t bytes_live;        /* their headers and payloads */
    uint64_t ids_live_before;   /* table entries live before recovery */
    int swept;                  /* 1: locations rebuilt from the segments
                                   (after a reboot); 0: the table's
                                   locations were used (same boot) */
    uint64_t headers_swept;     /* object headers in committed ranges */
    uint64_t damaged_headers;   /* segments whose committed range stopped
                                   parsing (damage: see the gc-tool) */
    uint64_t dangling_refs;     /* child ids naming no committed object */
    uint64_t located_by_table;  /* objects a sweep could not reach (behind
                                   a damaged header) found where the table
                                   said, their header checked */
    uint64_t roots_cleared;     /* roots naming no committed object */
    double seconds;             /* time the recovery took */
} sal_recovery_report;

/* What the recovery at open found (recovered = 0 if there was none). */
SAL_API int sal_heap_recovery_report(const sal_heap *heap, sal_recovery_report *out);

/* Close the heap: the roots and every object reachable from them are made
 * durable, then the heap is marked cleanly closed.  All sessions and readers
 * must be closed first (else SAL_EBUSY and the heap stays open).  On an I/O
 * error the heap is still closed and released, the error is returned, and
 * the file keeps its previous clean state or is left unclean (never
 * half-written). */
SAL_API int sal_heap_close(sal_heap *heap);

/* The largest payload one object may have on this heap (0 for NULL). */
SAL_API uint64_t sal_max_object_bytes(const sal_heap *heap);

/* ------------------------------------------------------------------------
 * Sessions, readers and sections
 * ------------------------------------------------------------------------ */

/* Open an allocating session for the calling thread.  SAL_ESESSIONS when
 * SAL_MAX_SESSIONS are open; SAL_EREADONLY on a read-only heap; SAL_ENOMEM.
 * A closed session's slot is reused. */
SAL_API int sal_session_open(sal_heap *heap, sal_session **session_out);

/* Open a reader: a session that can read, retain and release, but not
 * allocate or write.  SAL_EREADERS when SAL_MAX_READERS are open;
 * SAL_ENOMEM. */
SAL_API int sal_reader_open(sal_heap *heap, sal_session **reader_out);

/* Close a session or reader.  SAL_EBUSY if it is inside a section.  The
 * rest of its arena is kept for the next session. */
SAL_API int sal_session_close(sal_session *session);

/* Read sections.  Between begin and end, pointers from sal_read() stay
 * valid.  Sections nest (a counter).  Keep them short: a thread inside a
 * section holds back the reuse of freed segments. */
SAL_API int sal_read_begin(sal_session *session);
SAL_API int sal_read_end(sal_session *session);

/* Write sections (allocating sessions only).  A write section is also a
 * read section.  Pointers from sal_alloc(), sal_write() and
 * sal_write_child() are valid until sal_write_end(), and writable until
 * then or until the section publishes a root (sal_root_set()).  Write
 * sections do not nest; a read section may be opened inside one.  A thread
 * with two sessions of one heap may hold a write section on each, but while
 * a sync of that heap waits for the first to end, beginning the second
 * returns SAL_EBUSY instead of waiting for that sync (which would wait for
 * ever).  The same holds across heaps: a thread inside a write section of
 * any heap never waits for a sync; beginning a write section of a heap
 * whose sync is under way returns SAL_EBUSY (two writers crossing into
 * each other's heap while both heaps sync would wait for each other for
 * ever).  End the section you hold, or begin again later. */
SAL_API int sal_write_begin(sal_session *session);
SAL_API int sal_write_end(sal_session *session);

/* ------------------------------------------------------------------------
 * Objects
 * ------------------------------------------------------------------------ */

/* Allocate an object of `size_bytes` payload bytes (0 allowed) whose first
 * `nrefs` words are child ids, with type tag `type`.  Needs a write
 * section.  The child slots come zeroed (SAL_NULL_ID); the rest of the
 * payload is uninitialised.  `size_bytes` must be at least 8 * nrefs.
 * You get the only reference (*id_out) and a writable pointer (*ptr_out,
 * 8-byte aligned) valid until the end of the write section (writable until
 * then, or until the section publishes a root: see sal_root_set()).
 *
 * Errors: SAL_ETOOBIG, SAL_EINVAL, SAL_ENOSECTION, SAL_EREADONLY,
 * SAL_EFULL, SAL_ENOIDS, ENOSPC (disk full) or another errno. */
SAL_API int sal_alloc(sal_session *session, size_t size_bytes, unsigned nrefs,
                      unsigned type, sal_id *id_out, void **ptr_out);

/* Resolve `id` to a read-only pointer to its payload.  Needs a read (or
 * write) section; the pointer is valid until that section ends, and only
 * while the object is alive: hold a reference to it (or to a parent that
 * holds it) for as long as you use the pointer.  Never write through it:
 * committed memory is mapped read-only.  Errors: SAL_EBADID, SAL_ESTALE,
 * SAL_ENOSECTION, SAL_ECORRUPT (the table entry points at a header that is
 * not this object's). */
SAL_API int sal_read(sal_session *session, sal_id id, const void **ptr_out);

typedef struct sal_object_info {
    uint64_t size_bytes; /* payload bytes */
    uint32_t nrefs;      /* leading child ids */
    uint32_t type;       /* the tag given at allocation */
    uint32_t refcount;   /* references at this instant (saturated counts
                            read as SAL_REFCOUNT_SATURATED) */
    int committed;       /* 1 if the object lies in committed memory (and
                            so is immutable: it was allocated before the
                            last commit, reachable or not), 0 if it is new
                            since the last one */
} sal_object_info;
#define SAL_REFCOUNT_SATURATED 16777215u

/* Size, child count, type and state of an object.  No section needed. */
SAL_API int sal_info(sal_session *session, sal_id id, sal_object_info *out);

/* Take another reference.  Reference counts are 24 bits wide: a count that
 * reaches SAL_REFCOUNT_SATURATED stays there, and the object is never freed
 * by counting (recovery recounts it).  Errors: SAL_EBADID, SAL_ESTALE,
 * SAL_ECORRUPT (the id's entry or header is damaged), SAL_EINVAL (no
 * session), SAL_EWRONGTHREAD (debug builds). */
SAL_API int sal_retain(sal_session *session, sal_id id);

/* Drop a reference.  At zero the object's children are released in turn
 * (iteratively) and the ids and space of everything that died are
 * reclaimed: ids of objects that were never committed are reusable at once,
 * committed ones only after the next commit no longer references them.
 * Errors: SAL_EBADID, SAL_ESTALE, SAL_ENOMEM (bookkeeping memory for a very
 * wide free ran out: what was not freed is left for recovery to find; the
 * heap's close is then not clean, and the next open needs SAL_OPEN_RECOVER,
 * whose recovery frees it), SAL_ECORRUPT (a child id of a dying object
 * named no object: the rest was freed). */
SAL_API int sal_release(sal_session *session, sal_id id);

/* ------------------------------------------------------------------------
 * Copy-on-write
 * ------------------------------------------------------------------------ */

/* Get write access to an object you hold a reference to that no parent
 * object holds (typically the working copy of a root).  Needs a write
 * section.  If the object is unique (your reference is its only one) and
 * not committed, you write it in place: *id_inout is unchanged.  Otherwise
 * a copy is made under a new id (children retained by the copy), your
 * reference to the old object is released, and *id_inout becomes the new
 * id, which you now hold.  *ptr_out is writable until the write section
 * ends or publishes a root; the object is then "writable in this section",
 * which is what sal_write_child() asks of a parent.
 *
 * If a child of the object to copy cannot be retained (its id is dangling:
 * damage, or a count released once too often), the error is the one that
 * child's id gets (SAL_ESTALE, SAL_EBADID, SAL_ECORRUPT) and nothing
 * changed: no copy, *id_inout and your reference as they were.
 *
 * Do not pass an id that you read out of a parent's child slot: that
 * reference belongs to the parent; use sal_write_child() (see Caveats:
 * not detected, and it loses committed data).  An id whose only reference
 * a root holds is refused: SAL_EINVAL, nothing changed. */
SAL_API int sal_write(sal_session *session, sal_id *id_inout, void **ptr_out);

/* Get write access to the child in slot `slot` of `parent`, which must be
 * writable in this write section (SAL_ENOTWRITABLE otherwise).  If the
 * child is unique and not committed it is written in place; otherwise it is
 * copied, the copy's id is stored in the parent's slot, and the parent's
 * reference to the old child is released.  *child_id_out (may be NULL)
 * gets the child's id as it now stands in the slot; *ptr_out is writable
 * until the section ends, and the child is now writable in this section.
 * Errors also: SAL_EINVAL (slot >= parent's nrefs, or the slot is null);
 * a dangling grandchild fails the copy as in sal_write(), and the slot
 * keeps the old child. */
SAL_API int sal_write_child(sal_session *session, sal_id parent, unsigned slot,
                            sal_id *child_id_out, void **ptr_out);

/* Store `child` (a reference you hold, which the parent now owns; or
 * SAL_NULL_ID) in slot `slot` of the writable `parent`, releasing the
 * reference the slot held before.  SAL_EINVAL if `child` is `parent`
 * itself (it would own itself and never be freed; longer cycles are not
 * detected: recovery frees them), and if `child` has a count of 1 that
 * this slot or a root holds (not yours to give: storing it again would
 * free what they name).  On any error nothing changed and
 * `child` is still yours.  Once stored, a trouble freeing the previous
 * child (out of memory, a dangling id under it) is not the call's: it is
 * left for recovery as in sal_release(), and the call returns 0. */
SAL_API int sal_set_child(sal_session *session, sal_id parent, unsigned slot,
                          sal_id child);

/* ------------------------------------------------------------------------
 * Roots
 * ------------------------------------------------------------------------ */

/* A retained id of root `root` (SAL_NULL_ID if it is empty): a snapshot.
 * Release it when you are done.  Lock-free; safe against concurrent sets. */
SAL_API int sal_root_get(sal_session *session, unsigned root, sal_id *id_out);

/* Publish `id` as root `root`.  Needs a write section (SAL_ENOSECTION) of
 * an allocating session (SAL_EREADONLY for a reader).  Your reference to
 * `id` passes to the root (retain first if you want to keep using it); the
 * root's previous object is released.  `id` may be SAL_NULL_ID to empty
 * the root.  SAL_EINVAL if a root holds `id`'s only reference (you hold
 * none to give; setting a root to it again would free what it names).
 * On any error nothing changed and `id` is still yours; a trouble freeing
 * the previous object is not the call's (see sal_set_child()).
 *
 * Publishing ends the write access granted so far in this write section:
 * readers may reach `id` and everything below it from now on, so nothing
 * granted before is written in place any more (sal_write_child() and
 * sal_set_child() on it return SAL_ENOTWRITABLE; an object no one else
 * reaches is granted again, in place, by sal_write()).  Do not write
 * through pointers obtained before the publication.  This holds for the
 * write sections of all sessions of the calling thread.  If you hand an id
 * to another thread yourself, do it after the write section that wrote the
 * object, or write nothing under it afterwards: sal does not see it. */
SAL_API int sal_root_set(sal_session *session, unsigned root, sal_id id);

/* Publish `desired` only if root `root` is `expected`: otherwise
 * SAL_ECONFLICT and nothing changes (you keep your reference to desired).
 * Needs a write section, like sal_root_set(); SAL_EINVAL as there.
 * On success your reference to `desired` passes to the root and the
 * root's reference to `expected` is released, and, as with
 * sal_root_set(), the write access granted so far in the section ends.
 * As for sal_root_set(), any error means nothing changed. */
SAL_API int sal_root_cas(sal_session *session, unsigned root, sal_id expected,
                         sal_id desired);

/* ------------------------------------------------------------------------
 * Commits
 * ------------------------------------------------------------------------ */

/* Sync modes, from cheapest to safest. */
#define SAL_SYNC_PROTECT 0 /* commit and make the committed memory read-only:
                              survives a killed process (the page cache
                              survives), not a power loss */
#define SAL_SYNC_ASYNC 1   /* also start writing the new data to disk
                              (sync_file_range); durable soon, not yet */
#define SAL_SYNC_DURABLE 2 /* data flushed, then the commit slot, then the
                              slot flushed: survives a power loss */

/* Commit a snapshot: the roots as they are now and every object reachable
 * from them.  Safe from any thread while other sessions allocate and
 * write: it waits for the write sections open when it starts to end,
 * holds new ones back for the moment it takes to mark what is committed
 * (a walk over the segments), then lets them go and flushes by `mode`
 * while they run.  After it returns, every committed object is immutable
 * (writes go to copies) and its pages are read-only: a write through an
 * old pointer faults.  A sync writes only what changed since the last
 * one: the new objects' bytes, back to back, and a few metadata pages.
 *
 * The calling thread must not be inside a write section of this heap
 * (SAL_EBUSY).  A thread inside a write section of another heap does not
 * wait either: if a write section of this heap is open at that moment, or
 * another sync of this heap is under way, SAL_EBUSY (threads syncing each
 * other's heap from write sections would otherwise wait for each other
 * for ever); end the section and sync again.
 * Errors: SAL_EREADONLY, SAL_EINVAL (mode), or the errno of a failed
 * mprotect/msync/sync_file_range; the previous commit stays intact and the
 * next sync flushes what this one could not.  SAL_ENOMEM if the commit's
 * bookkeeping cannot be allocated (nothing was done).
 *
 * After a failed write-back (EIO, ENOSPC), retrying is safe.  Linux keeps
 * the pages of a failed write-back in memory but marks them clean and
 * reports the error once, so a plain retry would flush nothing of them
 * and succeed; sal writes everything committed since the last durable
 * commit again through the file at the failure, and from then on, for the
 * life of this heap handle, every commit writes what it commits again
 * before flushing it (a copy in memory of the committed bytes, besides
 * the flush).  A durable sync succeeds only when the device took every
 * byte it promises. */
SAL_API int sal_sync(sal_heap *heap, int mode);

/* As sal_sync(), and hands out the committed roots, each retained: a
 * snapshot of exactly what this commit holds, readable while writers go on.
 * `roots_out` must hold SAL_ROOT_COUNT ids; release the nonzero ones with
 * any session.  They are filled whenever the cut was taken, even if the
 * flush then failed; otherwise they are all SAL_NULL_ID. */
SAL_API int sal_sync_snapshot(sal_heap *heap, int mode, sal_id *roots_out);

/* ------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------ */

typedef struct sal_heap_stats {
    uint64_t file_bytes;         /* current size of the heap file */
    uint64_t reserve_bytes;      /* address range reserved (largest file) */
    uint64_t segment_bytes;
    uint64_t segments_total;     /* segments the reservation can hold */
    uint64_t segments_in_use;    /* holding objects or an arena */
    uint64_t segments_ready;     /* pre-faulted, waiting in the queue */
    uint64_t segments_free;      /* empty: reusable, or waiting for the
                                    sections or the commit that hold
                                    them back */
    uint64_t live_objects;       /* ids currently naming objects */
    uint64_t live_bytes;         /* their headers and payloads */
    uint64_t ids_high_water;     /* highest table index ever handed out */
    uint64_t max_objects;
    uint64_t alloc_waits;        /* times an allocation found no ready
                                    segment and prepared one itself */
    uint64_t sessions_open;
    uint64_t readers_open;
    uint64_t section_epoch;      /* the current section epoch */
    uint64_t oldest_section_epoch; /* epoch of the oldest open section, or 0
                                      if none: it holds back reclamation */
    uint64_t commit_epoch;       /* epoch of the last commit */
    uint64_t segments_recyclable;/* sparse, never committed segments whose
                                    dead space is listed, waiting for a
                                    session to reuse it (counted in use) */
    uint64_t segments_recycled;  /* times a session took one of them and
                                    filled its holes: dead space reused in
                                    place instead of growing the file */
    uint64_t ids_pending;        /* released ids the heap holds back until
                                    a commit makes their reuse safe, or
                                    that the background thread is moving
                                    to the free pool (ids still in a
                                    session's own batch are not counted) */
} sal_heap_stats;

SAL_API int sal_heap_stats_get(sal_heap *heap, sal_heap_stats *out);

/* ------------------------------------------------------------------------
 * Caveats
 * ------------------------------------------------------------------------
 *
 * - Ids stored outside an object's leading child slots are not references
 *   (see the top of this file).
 * - A heap file truncated or overwritten by another process while the heap
 *   is open cannot be defended against: the kernel raises SIGBUS on access
 *   to a page beyond the end of a mapped file.  A truncated file is
 *   rejected at the next open (SAL_ETRUNCATED).
 * - One writer process per heap (an advisory flock(2) lock).  Processes
 *   that ignore advisory locks are not stopped.
 * - Pointers are valid only inside a section and only while the object is
 *   referenced; sal cannot detect a pointer kept longer.  Dead space in a
 *   segment that no commit has covered yet is reused in place: by the
 *   session that reuses it even inside its own section, by the others only
 *   once the sections that might still see the dead objects have ended.
 * - Generations are 24 bits: a released id is detected (SAL_ESTALE) until
 *   its table entry has been reused 16,777,216 times; after that an id
 *   kept that long may name the entry's new object.  Do not keep ids of
 *   released objects for ever.
 * - Ids handed out after the last commit belong to a future that a crash
 *   loses.  After a killed process (the same boot) its recovery or repair
 *   (SAL_OPEN_REPAIR, sal-gc repair) keeps them stale (SAL_ESTALE), also
 *   once their entries are reused.  After a reboot the object table's
 *   pages on the disk are of any age, and such an id may be handed out
 *   again, naming a new object.  Keep an id outside the heap only once a
 *   commit that holds its object is durable.
 * - sal_write() trusts that you hold the reference you pass in.  An id
 *   that only a root holds is refused (SAL_EINVAL), as sal_set_child(),
 *   sal_root_set() and sal_root_cas() refuse to be handed a reference only
 *   a root or that very slot holds.  An id that only a parent's child slot
 *   holds is not detected: sal_write() writes it in place under a snapshot
 *   (uncommitted) or hands out a copy and frees the original under its
 *   parent (committed), which then names a dead id: committed data lost.
 * - The address range is reserved at open: reserve_bytes of virtual memory
 *   per open heap (MAP_NORESERVE; it costs no RAM until used).
 * - Objects larger than a segment are refused (SAL_ETOOBIG); choose
 *   segment_bytes at create for the largest object you need.
 * - A closed heap, session or reader is freed memory, like a freed
 *   pointer: calls on it (a second close included) are not detected.
 * - Ids carry no mark of their heap: an id of one heap used on another
 *   names whatever object has that index and generation there, if any.
 * - The mark that makes an object writable in a write section is 32 bits:
 *   2^32 write sections later it comes round again, and an object still
 *   uncommitted and unshared that carries it would pass as a writable
 *   parent in a section that never granted it.  A program that asks for
 *   write access before it writes through a parent, as documented, is not
 *   affected; only such a misuse could then go undetected.
 * - An allocating session keeps up to 8192 freed ids for itself, and the
 *   ids of committed objects it released (up to 65 535) until its next
 *   release after a commit or its close: on a full table another session
 *   may get SAL_ENOIDS while they wait.  Close sessions you no longer use.
 */

#ifdef __cplusplus
}
#endif

#endif /* SAL_H */
