/* format.c - sealing and checking the superblock and the commit slots.
 *
 * The checks here are what stands between a hostile file and the rest of
 * the library: every geometry field is range-checked and cross-checked, so
 * that later code may compute offsets from them without overflow. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "os.h"

void sal_superblock_seal(sal_superblock *sb)
{
    sb->checksum = sal_crc32c(0, sb, offsetof(sal_superblock, checksum));
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

int sal_superblock_check(const sal_superblock *sb, uint64_t file_bytes)
{
    if (memcmp(sb->magic, SAL_SUPERBLOCK_MAGIC, 8) != 0)
        return SAL_ENOTHEAP;
    if (sb->checksum != sal_crc32c(0, sb, offsetof(sal_superblock, checksum)))
        return SAL_ECORRUPT;
    if (sb->format_version != SAL_FORMAT_VERSION)
        return SAL_EVERSION;
    if (sb->superblock_bytes != sizeof(sal_superblock) ||
        sb->page_bytes != SAL_PAGE_BYTES ||
        sb->object_header_bytes != sizeof(sal_object_header) ||
        sb->root_count != SAL_ROOT_COUNT ||
        sb->segment_record_bytes != sizeof(sal_segment_record))
        return SAL_EVERSION;
    /* Geometry: each value in range, each region where it must be. */
    if (!is_pow2(sb->segment_bytes) || sb->segment_bytes < SAL_MIN_SEGMENT_BYTES ||
        sb->segment_bytes > SAL_MAX_SEGMENT_BYTES)
        return SAL_ECORRUPT;
    if (sb->reserve_bytes > SAL_MAX_RESERVE_BYTES || sb->max_objects < 2 ||
        sb->max_objects > SAL_MAX_OBJECTS_LIMIT + 1)
        return SAL_ECORRUPT;
    /* Bound every field by the reservation (at most 2^41) first, so that
     * the sums below cannot overflow. */
    uint64_t r = sb->reserve_bytes;
    if (sb->segtab_bytes >= r || sb->table_offset >= r || sb->table_bytes >= r ||
        sb->data_offset >= r || sb->segment_count >= r)
        return SAL_ECORRUPT;
    if (sb->segtab_offset != SAL_SEGTAB_OFFSET || sb->segtab_bytes % SAL_PAGE_BYTES != 0 ||
        sb->segtab_bytes < sb->segment_count * sizeof(sal_segment_record) ||
        sb->table_offset < sb->segtab_offset + SAL_SLOT_COUNT * sb->segtab_bytes ||
        sb->table_offset % SAL_REGION_ALIGN != 0 ||
        sb->table_bytes < sb->max_objects * 8 ||
        sb->table_bytes % SAL_TABLE_CHUNK_BYTES != 0 ||
        sb->data_offset < sb->table_offset + sb->table_bytes ||
        sb->data_offset % sb->segment_bytes != 0 || sb->segment_count == 0 ||
        sb->segment_count > (r - sb->data_offset) / sb->segment_bytes)
        return SAL_ECORRUPT;
    if (file_bytes < SAL_SEGTAB_OFFSET)
        return SAL_ETRUNCATED;
    return 0;
}

void sal_slot_seal(sal_commit_slot *slot)
{
    slot->checksum = sal_crc32c(0, slot, offsetof(sal_commit_slot, checksum));
}

int sal_slot_valid(const sal_commit_slot *slot, const sal_superblock *sb)
{
    if (memcmp(slot->magic, SAL_SLOT_MAGIC, 8) != 0)
        return 0;
    if (slot->checksum != sal_crc32c(0, slot, offsetof(sal_commit_slot, checksum)))
        return 0;
    if (slot->heap_uid[0] != sb->heap_uid[0] || slot->heap_uid[1] != sb->heap_uid[1])
        return 0;
    if (slot->ids_high_water < 1 || slot->ids_high_water > sb->max_objects ||
        slot->segments_high_water > sb->segment_count || slot->clean > 1 ||
        slot->durable > 1 || slot->durable_epoch > slot->epoch)
        return 0;
    /* The file never grows past the data region (which the superblock
     * check keeps inside the reservation): a larger length would make
     * locations beyond the mapping look valid. */
    if (slot->file_bytes > sb->data_offset + sb->segment_count * sb->segment_bytes)
        return 0;
    for (unsigned i = 0; i < SAL_ROOT_COUNT; i++) {
        uint64_t idx = slot->roots[i] & SAL_ID_INDEX_MASK;
        if (slot->roots[i] != SAL_NULL_ID &&
            (idx == 0 || idx >= slot->ids_high_water || (slot->roots[i] >> 56)))
            return 0;
    }
    return 1;
}

unsigned sal_slot_order(const sal_commit_slot s[SAL_SLOT_COUNT], const int valid[SAL_SLOT_COUNT],
                        const uint8_t *boot, unsigned order[SAL_SLOT_COUNT])
{
    unsigned n = 0;
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++)
        if (valid[i] && (i < 2 || (boot && !memcmp(s[i].boot_id, boot, 16))))
            order[n++] = i;
    /* Insertion sort, stable: of equal epochs the lower slot comes first. */
    for (unsigned a = 1; a < n; a++)
        for (unsigned k = a; k > 0 && s[order[k]].epoch > s[order[k - 1]].epoch; k--) {
            unsigned t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    return n;
}

int sal_slot_pick(int fd, const sal_superblock *sb, const sal_commit_slot s[SAL_SLOT_COUNT],
                  const int valid[SAL_SLOT_COUNT], const uint8_t *boot,
                  int skip[SAL_SLOT_COUNT], int *pick, int *durable_pick,
                  sal_segment_record **records_out)
{
    unsigned order[SAL_SLOT_COUNT], norder = sal_slot_order(s, valid, boot, order);
    sal_segment_record *rec = NULL;
    *pick = *durable_pick = -1;
    *records_out = NULL;
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++)
        skip[i] = SAL_SLOT_KEPT;
    for (unsigned k = 0; k < norder && (*pick < 0 || *durable_pick < 0); k++) {
        unsigned i = order[k];
        uint64_t n = s[i].segments_high_water;
        if (s[i].file_bytes < sb->data_offset + n * sb->segment_bytes) {
            skip[i] = SAL_SLOT_SHORT_FILE;
            continue;
        }
        sal_segment_record *r = calloc(n ? n : 1, sizeof *r);
        if (!r) {
            free(rec);
            return SAL_ENOMEM;
        }
        uint64_t segtab = sb->segtab_offset + i * sb->segtab_bytes;
        if (n && sal_os_pread(fd, r, n * sizeof *r, segtab) != 0)
            skip[i] = SAL_SLOT_COPY_UNREADABLE;
        else if (sal_crc32c(0, r, n * sizeof *r) != s[i].segtab_checksum)
            skip[i] = SAL_SLOT_COPY_MISMATCH;
        if (skip[i] != SAL_SLOT_KEPT) {
            free(r);
            continue;
        }
        if (*pick < 0) {
            *pick = (int)i;
            rec = r;
        } else {
            free(r);
        }
        if (i < 2 && *durable_pick < 0)
            *durable_pick = (int)i;
    }
    if (*pick < 0 || *durable_pick < 0) {
        free(rec);
        return SAL_ECORRUPT;
    }
    *records_out = rec;
    return 0;
}
