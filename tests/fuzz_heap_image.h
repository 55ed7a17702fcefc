/*
 * fuzz_heap_image.h - a heap file as a compact "sparse image", the input
 * format of fuzz_heap.c and of the seeds in tests/corpus/heap/.
 *
 * A valid heap is megabytes long (the object table and the data start on
 * 2 MiB boundaries) but mostly holes.  The image keeps only what is not
 * zero:
 *
 *   u8   flags        bit 0: reseal the superblock's checksum after the
 *                            records are written; bit 1: reseal each commit
 *                            slot that has the magic; bit 2: recompute each
 *                            such slot's segment-table checksum first (so
 *                            the fuzzer gets past the checksums and reaches
 *                            the geometry and the walk)
 *   u32  file_bytes   the file's size (little-endian), at most
 *                     FUZZ_MAX_FILE_BYTES
 *   then records to the end: u32 offset, u16 length, `length` bytes (a
 *   record past the end of the input or of the file is cut short)
 *
 * A seed of a few KiB describes a whole valid heap.
 */
#ifndef SAL_FUZZ_HEAP_IMAGE_H
#define SAL_FUZZ_HEAP_IMAGE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"

#define FUZZ_MAX_FILE_BYTES (16u << 20)
#define FUZZ_RESEAL_SUPERBLOCK 0x1u
#define FUZZ_RESEAL_SLOTS 0x2u
#define FUZZ_RESEAL_SEGTAB 0x4u

static inline uint32_t fz_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int fz_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Bytes read, zero-filled past the end of the file. */
static inline void fz_pread_zero(int fd, void *buf, size_t len, uint64_t off, uint64_t fsize)
{
    memset(buf, 0, len);
    if (off >= fsize)
        return;
    if (len > fsize - off)
        len = (size_t)(fsize - off);
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
}

/* Checksums fixed up as the flags ask, every field bounded first. */
static inline void fz_reseal(int fd, unsigned flags, uint64_t fsize)
{
    if (fsize < sizeof(sal_superblock))
        return;
    sal_superblock sb;
    fz_pread_zero(fd, &sb, sizeof sb, 0, fsize);
    if (flags & FUZZ_RESEAL_SUPERBLOCK) {
        sal_superblock_seal(&sb);
        (void)fz_pwrite_all(fd, &sb, sizeof sb, 0);
    }
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++) {
        uint64_t off = SAL_SLOT_OFFSET(i);
        if (fsize < off + sizeof(sal_commit_slot))
            break;
        sal_commit_slot s;
        fz_pread_zero(fd, &s, sizeof s, off, fsize);
        if (memcmp(s.magic, SAL_SLOT_MAGIC, 8) != 0)
            continue;
        if ((flags & FUZZ_RESEAL_SEGTAB) && s.segments_high_water <= 4096 &&
            sb.segtab_offset < fsize && sb.segtab_bytes < fsize) {
            size_t n = (size_t)s.segments_high_water;
            sal_segment_record *rec = calloc(n ? n : 1, sizeof *rec);
            if (rec) {
                fz_pread_zero(fd, rec, n * sizeof *rec, sb.segtab_offset + i * sb.segtab_bytes,
                              fsize);
                s.segtab_checksum = sal_crc32c(0, rec, n * sizeof *rec);
                free(rec);
            }
        }
        if (flags & (FUZZ_RESEAL_SLOTS | FUZZ_RESEAL_SEGTAB)) {
            sal_slot_seal(&s);
            (void)fz_pwrite_all(fd, &s, sizeof s, off);
        }
    }
}

/* Build the file described by an image in `fd` (emptied first).  Returns
 * the file's size. */
static inline uint64_t fz_image_to_file(int fd, const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) != 0)
        return 0;
    if (size < 5)
        return 0;
    unsigned flags = data[0];
    uint64_t fsize = fz_u32(data + 1);
    if (fsize > FUZZ_MAX_FILE_BYTES)
        fsize = FUZZ_MAX_FILE_BYTES;
    if (ftruncate(fd, (off_t)fsize) != 0)
        return 0;
    size_t pos = 5;
    while (pos + 6 <= size) {
        uint64_t off = fz_u32(data + pos);
        size_t len = (size_t)data[pos + 4] | (size_t)data[pos + 5] << 8;
        pos += 6;
        if (len > size - pos)
            len = size - pos;
        if (off < fsize) {
            size_t put = len;
            if (put > fsize - off)
                put = (size_t)(fsize - off);
            (void)fz_pwrite_all(fd, data + pos, put, off);
        }
        pos += len;
    }
    fz_reseal(fd, flags, fsize);
    return fsize;
}

/* Write the image of a heap file: its nonzero bytes, page by page. */
static inline int fz_file_to_image(const char *heap, const char *image, unsigned flags)
{
    FILE *in = fopen(heap, "rb");
    if (!in)
        return -1;
    FILE *out = fopen(image, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    fseek(in, 0, SEEK_END);
    long fsize = ftell(in);
    fseek(in, 0, SEEK_SET);
    uint8_t head[5] = {(uint8_t)flags, (uint8_t)fsize, (uint8_t)(fsize >> 8),
                       (uint8_t)(fsize >> 16), (uint8_t)(fsize >> 24)};
    fwrite(head, 1, sizeof head, out);
    uint8_t page[4096];
    for (long off = 0; off < fsize; off += 4096) {
        size_t n = fread(page, 1, sizeof page, in);
        size_t lo = 0, hi = n;
        while (lo < hi && page[lo] == 0)
            lo++;
        while (hi > lo && page[hi - 1] == 0)
            hi--;
        if (lo == hi)
            continue;
        uint32_t at = (uint32_t)(off + (long)lo);
        uint16_t len = (uint16_t)(hi - lo);
        uint8_t rh[6] = {(uint8_t)at, (uint8_t)(at >> 8), (uint8_t)(at >> 16),
                         (uint8_t)(at >> 24), (uint8_t)len, (uint8_t)(len >> 8)};
        fwrite(rh, 1, sizeof rh, out);
        fwrite(page + lo, 1, len, out);
    }
    fclose(in);
    return fclose(out);
}

#endif
