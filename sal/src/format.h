/*
 * format.h - the on-disk format, field by field (docs/format.md mirrors it).
 *
 *   offset 0                 superblock (one page): geometry, never rewritten
 *   offset 4096, 8192        durable commit slots 0 and 1 (alternate)
 *   offset 12288, 16384      volatile commit slots 2 and 3 (alternate): the
 *                            protect and async commits, trusted only in the
 *                            boot that wrote them
 *   offset 20480             segment table, one copy per slot
 *   table_offset             object table: 8-byte entries, sparse until used
 *   data_offset              segments of segment_bytes each
 *
 * Integers are little-endian (the host's; other hosts are refused by the
 * magic check of the version field).  Checksums are CRC-32C.
 */
#ifndef SAL_FORMAT_H
#define SAL_FORMAT_H

#include <stdint.h>

#include "sal.h"

#define SAL_FORMAT_VERSION 1u
#define SAL_PAGE_BYTES 4096u
#define SAL_SUPERBLOCK_MAGIC "SALHEAP"   /* 8 bytes with the NUL */
#define SAL_SLOT_MAGIC "SALSLOT"
#define SAL_SLOT_COUNT 4u
/* Slot i (0, 1 durable; 2, 3 volatile) is at 4096 * (i + 1). */
#define SAL_SLOT_OFFSET(i) (4096u * ((unsigned)(i) + 1u))
#define SAL_SLOT0_OFFSET SAL_SLOT_OFFSET(0) /* the durable slots */
#define SAL_SLOT1_OFFSET SAL_SLOT_OFFSET(1)
#define SAL_SEGTAB_OFFSET 20480u
/* The object table and the data start on 2 MiB boundaries so that the
 * kernel can back them with large folios. */
#define SAL_REGION_ALIGN (2u << 20)
/* The table is allocated on disk in chunks of this many bytes. */
#define SAL_TABLE_CHUNK_BYTES (2u << 20)

typedef struct sal_superblock {
    char magic[8];               /* "SALHEAP\0" */
    uint32_t format_version;     /* SAL_FORMAT_VERSION */
    uint32_t superblock_bytes;   /* sizeof(sal_superblock) */
    uint32_t page_bytes;         /* SAL_PAGE_BYTES */
    uint32_t object_header_bytes;/* sizeof(sal_object_header) */
    uint32_t root_count;         /* SAL_ROOT_COUNT */
    uint32_t segment_record_bytes; /* sizeof(sal_segment_record) */
    uint64_t segment_bytes;      /* power of two */
    uint64_t reserve_bytes;      /* file may grow to this; mapped at open */
    uint64_t max_objects;        /* table capacity in entries (index 0 unused) */
    uint64_t segtab_offset;
    uint64_t segtab_bytes;
    uint64_t table_offset;
    uint64_t table_bytes;
    uint64_t data_offset;
    uint64_t segment_count;      /* segments that fit in the reservation */
    uint64_t created_unix_ns;
    uint64_t heap_uid[2];        /* random; commit slots repeat it */
    uint32_t reserved[5];
    uint32_t checksum;           /* CRC-32C of the bytes above */
} sal_superblock;
_Static_assert(sizeof(sal_superblock) == 152, "superblock layout");

typedef struct sal_commit_slot {
    char magic[8];               /* "SALSLOT\0" */
    uint64_t epoch;              /* commit number; highest valid wins */
    uint64_t time_unix_ns;       /* when it was written */
    uint64_t heap_uid[2];        /* must equal the superblock's */
    uint32_t clean;              /* 1: closed cleanly after this commit */
    uint32_t flags;              /* reserved, 0 */
    uint64_t ids_high_water;     /* table indexes 1..hwm-1 have been used */
    uint64_t segments_high_water;/* segments 0..hwm-1 exist in the file */
    uint64_t file_bytes;         /* the file is at least this long */
    uint64_t live_objects;       /* at this commit (statistics) */
    uint32_t segtab_checksum;    /* CRC-32C of records 0..segments_hwm-1 */
    uint32_t durable;            /* 1: written by a durable commit */
    uint8_t boot_id[16];         /* the kernel's boot id when written */
    uint64_t durable_epoch;      /* the last durable commit at that time */
    sal_id roots[SAL_ROOT_COUNT];
    uint32_t reserved;
    uint32_t checksum;           /* CRC-32C of the bytes above */
} sal_commit_slot;
_Static_assert(sizeof(sal_commit_slot) == 632, "commit slot layout");

enum sal_segment_record_state {
    SAL_SEGREC_FREE = 0,  /* holds nothing committed */
    SAL_SEGREC_USED = 1,  /* holds committed objects in [0, used_bytes) */
};

typedef struct sal_segment_record {
    uint32_t state;              /* sal_segment_record_state */
    uint32_t flags;              /* reserved, 0 */
    uint64_t used_bytes;         /* objects lie back to back in [0, used) */
    uint64_t live_bytes;         /* bytes of live objects (statistics;
                                    rebuilt by recovery) */
    uint64_t reserved;
} sal_segment_record;
_Static_assert(sizeof(sal_segment_record) == 32, "segment record layout");

/*
 * Every object starts with this header, 8-byte aligned.  Objects lie back to
 * back in a segment: the next header is at round_up8(header + size_bytes).
 */
typedef struct sal_object_header {
    sal_id id;                   /* index | generation << 32 */
    uint32_t size_bytes;         /* payload bytes */
    uint16_t nrefs;              /* the first nrefs payload words are ids */
    uint8_t type;                /* the user's tag */
    uint8_t flags;               /* reserved, 0 */
    uint32_t birth_epoch;        /* commit epoch current at allocation */
    uint32_t seal;               /* uncommitted: write token of the section
                                    that may write it in place (0: none) */
} sal_object_header;
_Static_assert(sizeof(sal_object_header) == 24, "object header layout");

/*
 * Filler between objects.  A linear walk of a segment meets three kinds of
 * 8-byte-aligned word where a header may start:
 *
 *   0                      the rest of the page is padding (left by a cut)
 *   SAL_PAD_TAG << 56 | n  the next n bytes are padding (n a multiple of 8,
 *                          at least 8): the unused end of a hole that dead
 *                          space was reused from (recycle.c)
 *   anything else          an object header (its id's bits 56..63 are 0)
 */
#define SAL_PAD_TAG 0xADull
static inline uint64_t sal_pad_word(uint64_t bytes) { return (SAL_PAD_TAG << 56) | bytes; }
/* The padding length a word encodes, or 0 if it is not a padding word. */
static inline uint64_t sal_pad_bytes(uint64_t word)
{
    uint64_t n = word & ((1ull << 56) - 1);
    return (word >> 56) == SAL_PAD_TAG && n >= 8 && (n & 7) == 0 ? n : 0;
}
/* For a linear walk: if `word`, at offset `off` of a segment, starts
 * padding, the offset where the walk goes on; 0 if it is a header.  (The
 * caller checks the result against the end of its range.) */
static inline uint64_t sal_padding_end(uint64_t off, uint64_t word)
{
    if (word == 0)
        return (off + SAL_PAGE_BYTES) & ~(uint64_t)(SAL_PAGE_BYTES - 1);
    uint64_t n = sal_pad_bytes(word);
    return n ? off + n : 0;
}

/*
 * Object table entry (8 bytes, changed only with atomic operations):
 *
 *   bits  0..37  location: file offset of the object header / 8
 *   bit   38     accessed (reserved for hot/cold placement)
 *   bit   39     free: the entry names no object
 *   bits 40..63  live entry: reference count, 24 bits, saturating
 *                free entry: generation of the id that last used it
 *
 * A live entry has the free bit clear and a nonzero count.  A count that
 * drops to zero leaves a dying entry for the instant it takes to reclaim
 * it.  A free entry keeps the location of the object that died there, so
 * that recovery after a killed process still finds an object that the last
 * commit references but that was released after it (crash rule 2 keeps its
 * bytes), and keeps the generation, so that the next id given for the entry
 * is new even across a reopen.  A never-used entry is all zero.
 */
#define SAL_ENTRY_LOC_MASK ((1ull << 38) - 1)
#define SAL_ENTRY_ACCESSED (1ull << 38)
#define SAL_ENTRY_FREE (1ull << 39)
#define SAL_ENTRY_RC_SHIFT 40
#define SAL_ENTRY_RC_ONE (1ull << SAL_ENTRY_RC_SHIFT)
#define SAL_ENTRY_RC_MAX 0xFFFFFFull
#define SAL_ID_INDEX_MASK 0xFFFFFFFFull
#define SAL_ID_GEN_SHIFT 32
#define SAL_ID_GEN_MASK 0xFFFFFFull

/* The count of a live entry; 0 for a free, dying or never-used one. */
static inline uint64_t sal_entry_rc(uint64_t e)
{
    return (e & SAL_ENTRY_FREE) ? 0 : e >> SAL_ENTRY_RC_SHIFT;
}
static inline uint64_t sal_entry_loc(uint64_t e) { return e & SAL_ENTRY_LOC_MASK; }
static inline uint64_t sal_entry_make_free(uint64_t loc, uint32_t gen)
{
    return loc | SAL_ENTRY_FREE | ((uint64_t)(gen & SAL_ID_GEN_MASK) << SAL_ENTRY_RC_SHIFT);
}
static inline uint32_t sal_id_index(sal_id id) { return (uint32_t)(id & SAL_ID_INDEX_MASK); }
static inline uint32_t sal_id_gen(sal_id id)
{
    return (uint32_t)((id >> SAL_ID_GEN_SHIFT) & SAL_ID_GEN_MASK);
}
static inline sal_id sal_id_make(uint32_t index, uint32_t gen)
{
    return (sal_id)index | ((sal_id)(gen & SAL_ID_GEN_MASK) << SAL_ID_GEN_SHIFT);
}
/* The generation a free entry keeps. */
static inline uint32_t sal_entry_gen(uint64_t e) { return (uint32_t)(e >> SAL_ENTRY_RC_SHIFT); }
/* Is generation a newer than b, on the 24-bit circle? */
static inline int sal_gen_newer(uint32_t a, uint32_t b)
{
    uint32_t d = (a - b) & SAL_ID_GEN_MASK;
    return d != 0 && d < (SAL_ID_GEN_MASK + 1) / 2;
}
/* Is generation `gen` one an entry whose newest is `last` has not handed
 * out yet (SAL_EBADID)?  Only up to SAL_GEN_AHEAD_WINDOW ahead: an id
 * released long ago (2^23 reuses of its entry) looks newer on the circle,
 * and that one is stale (SAL_ESTALE). */
#define SAL_GEN_AHEAD_WINDOW (1u << 16)
static inline int sal_gen_unissued(uint32_t gen, uint32_t last)
{
    return ((gen - last) & SAL_ID_GEN_MASK) - 1u < SAL_GEN_AHEAD_WINDOW;
}
/* The id to hand out next for table entry `index` holding `e` (not live). */
static inline sal_id sal_entry_next_id(uint32_t index, uint64_t e)
{
    if (!(e & SAL_ENTRY_FREE))
        return sal_id_make(index, 0);
    return sal_id_make(index, (uint32_t)(e >> SAL_ENTRY_RC_SHIFT) + 1);
}
static inline uint64_t sal_object_span(uint64_t size_bytes)
{
    return (sizeof(sal_object_header) + size_bytes + 7) & ~7ull;
}

uint32_t sal_crc32c(uint32_t crc, const void *data, size_t len);

/* Checksum helpers: fill in / verify the trailing checksum field. */
void sal_superblock_seal(sal_superblock *sb);
int sal_superblock_check(const sal_superblock *sb, uint64_t file_bytes);
void sal_slot_seal(sal_commit_slot *slot);
int sal_slot_valid(const sal_commit_slot *slot, const sal_superblock *sb);
/* The slots an open may take, newest first, into order[] (returns how
 * many): the valid durable slots (0 and 1), and the valid volatile ones
 * (2 and 3) only if they carry `boot`, this boot's id (NULL: unknown):
 * after a reboot the page cache is gone, and with it whatever a volatile
 * commit did not flush.  The library and sal-gc both choose by it. */
unsigned sal_slot_order(const sal_commit_slot s[SAL_SLOT_COUNT], const int valid[SAL_SLOT_COUNT],
                        const uint8_t *boot, unsigned order[SAL_SLOT_COUNT]);

/* Why the slot choice passed over a valid slot (skip[] of sal_slot_pick). */
enum {
    SAL_SLOT_KEPT,           /* not passed over (or not looked at) */
    SAL_SLOT_SHORT_FILE,     /* its file_bytes is less than its segments need */
    SAL_SLOT_COPY_UNREADABLE,/* its segment-table copy cannot be read */
    SAL_SLOT_COPY_MISMATCH,  /* its segment-table copy does not match it */
};
/* The slot an open takes, in sal_slot_order's order: a slot whose
 * file_bytes is less than its segments need, or whose segment-table copy
 * (read from `fd`) cannot be read or does not match it, is passed over
 * (skip[i] says why); the first left is current (*pick), and the first
 * durable one left (*durable_pick) must exist too: a commit whose slot
 * reached the disk although its flush failed can have its copy rewritten
 * by the next commit, and then the slot before it is the current one.
 * Returns 0 with *records_out, the current slot's copy (to free);
 * SAL_ECORRUPT when no slot or no durable slot is left (*pick and
 * *durable_pick say which: -1 for none); SAL_ENOMEM.  The library's open
 * and sal-gc both choose by it. */
int sal_slot_pick(int fd, const sal_superblock *sb, const sal_commit_slot s[SAL_SLOT_COUNT],
                  const int valid[SAL_SLOT_COUNT], const uint8_t *boot,
                  int skip[SAL_SLOT_COUNT], int *pick, int *durable_pick,
                  sal_segment_record **records_out);

#endif
