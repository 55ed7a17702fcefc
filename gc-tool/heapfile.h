/*
 * heapfile.h - a heap file opened for checking: the metadata read with
 * pread and checked, the current commit slot picked, the file mapped
 * read-only (never past its size).
 */
#ifndef SAL_GC_HEAPFILE_H
#define SAL_GC_HEAPFILE_H

#include <stdint.h>

#include "gc.h"

typedef struct gc_heapfile {
    int fd;
    const uint8_t *map;       /* [0, size) of the file, read-only */
    uint64_t size;            /* the file's size when it was opened */
    sal_superblock sb;
    sal_commit_slot slot;     /* the current slot */
    unsigned slot_index;
    uint64_t nseg;            /* slot.segments_high_water */
    uint64_t hwm;             /* slot.ids_high_water */
    uint64_t max_object_bytes;
    /* The current slot's segment records, sanitised so that the walk can
     * use them: state 0 or 1, used_bytes a multiple of 8 within a segment.
     * What was wrong with them is in the report. */
    sal_segment_record *rec;
    sal_segment_record *rec_raw; /* as read */
    /* Damage found so far that makes the library refuse the file. */
    int library_refuses;
} gc_heapfile;

/* Open `path` for a check: a regular file, locked shared (a live writer is
 * refused unless o->readonly_look), metadata checked, mapped read-only.
 * Returns 0 to go on; otherwise the check stops (r->op_error, or
 * r->stopped for damage that leaves nothing to walk). */
int gc_heapfile_open(const char *path, const gc_options *o, gc_report *r, gc_heapfile *hf);
void gc_heapfile_close(gc_heapfile *hf);

/* Bounds-checked views into the mapping: NULL when [off, off+len) is not
 * inside the file. */
static inline const void *gc_at(const gc_heapfile *hf, uint64_t off, uint64_t len)
{
    if (off > hf->size || len > hf->size - off)
        return 0;
    return hf->map + off;
}

static inline uint64_t gc_segment_start(const gc_heapfile *hf, uint64_t seg)
{
    return hf->sb.data_offset + seg * hf->sb.segment_bytes;
}

#endif
