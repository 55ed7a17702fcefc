/*
 * heapfile.c - open a heap file for checking, read and check its metadata.
 *
 * Order matters: nothing is trusted before it is checked.  The file must
 * be a regular file (a fifo, a directory or a device is refused at once:
 * O_NONBLOCK means even a fifo with no writer cannot hang the open).  The
 * superblock is checked field by field (the same rules as the library's
 * sal_superblock_check, with a message per rule), then each commit slot,
 * then the current slot's copy of the segment table.  Only then is the
 * file mapped, read-only and never past its size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "heapfile.h"
#include "os.h"

int gc_boot_id(uint8_t out[16])
{
    /* The library's own reading, so that both pick the same slots. */
    return sal_os_boot_id(out);
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* The superblock's rules, one message each.  Returns NULL if it is sound. */
static const char *superblock_problem(const sal_superblock *sb, int *version_problem)
{
    *version_problem = 0;
    if (sb->format_version != SAL_FORMAT_VERSION) {
        *version_problem = 1;
        return "format version";
    }
    if (sb->superblock_bytes != sizeof(sal_superblock) ||
        sb->page_bytes != SAL_PAGE_BYTES ||
        sb->object_header_bytes != sizeof(sal_object_header) ||
        sb->root_count != SAL_ROOT_COUNT ||
        sb->segment_record_bytes != sizeof(sal_segment_record)) {
        *version_problem = 1;
        return "structure sizes (superblock, page, header, roots, segment record)";
    }
    if (!is_pow2(sb->segment_bytes) || sb->segment_bytes < SAL_MIN_SEGMENT_BYTES ||
        sb->segment_bytes > SAL_MAX_SEGMENT_BYTES)
        return "segment_bytes is not a power of two between 1 MiB and 1 GiB";
    if (sb->reserve_bytes > SAL_MAX_RESERVE_BYTES)
        return "reserve_bytes is above 2 TiB";
    if (sb->max_objects < 2 || sb->max_objects > SAL_MAX_OBJECTS_LIMIT + 1)
        return "max_objects is out of range";
    uint64_t r = sb->reserve_bytes;
    if (sb->segtab_bytes >= r || sb->table_offset >= r || sb->table_bytes >= r ||
        sb->data_offset >= r || sb->segment_count >= r)
        return "a region lies outside reserve_bytes";
    if (sb->segtab_offset != SAL_SEGTAB_OFFSET)
        return "segtab_offset is not 20480";
    if (sb->segtab_bytes < sb->segment_count * sizeof(sal_segment_record))
        return "segtab_bytes cannot hold segment_count records";
    if (sb->segtab_bytes % SAL_PAGE_BYTES != 0)
        return "segtab_bytes is not a multiple of the page size";
    if (sb->table_offset < sb->segtab_offset + SAL_SLOT_COUNT * sb->segtab_bytes ||
        sb->table_offset % SAL_REGION_ALIGN != 0)
        return "table_offset overlaps the segment tables or is not 2 MiB aligned";
    if (sb->table_bytes < sb->max_objects * 8 || sb->table_bytes % SAL_TABLE_CHUNK_BYTES != 0)
        return "table_bytes cannot hold max_objects entries or is not 2 MiB aligned";
    if (sb->data_offset < sb->table_offset + sb->table_bytes ||
        sb->data_offset % sb->segment_bytes != 0)
        return "data_offset overlaps the table or is not segment aligned";
    if (sb->segment_count == 0 ||
        sb->segment_count > (r - sb->data_offset) / sb->segment_bytes)
        return "segment_count does not fit the reservation";
    return NULL;
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* The slot's rules (sal_slot_valid, plus its position).  NULL if valid. */
static const char *slot_problem(const sal_commit_slot *s, const sal_superblock *sb, unsigned i)
{
    if (memcmp(s->magic, SAL_SLOT_MAGIC, 8) != 0)
        return "bad magic";
    if (s->checksum != sal_crc32c(0, s, offsetof(sal_commit_slot, checksum)))
        return "checksum mismatch";
    if (s->heap_uid[0] != sb->heap_uid[0] || s->heap_uid[1] != sb->heap_uid[1])
        return "heap uid differs from the superblock's (a slot of another heap)";
    if (s->ids_high_water < 1 || s->ids_high_water > sb->max_objects)
        return "ids_high_water out of range";
    if (s->segments_high_water > sb->segment_count)
        return "segments_high_water out of range";
    if (s->clean > 1 || s->durable > 1)
        return "clean or durable flag is not 0 or 1";
    if (s->durable_epoch > s->epoch)
        return "durable_epoch is newer than the slot's epoch";
    if (s->durable != (i < 2))
        return "durable flag does not match the slot's position";
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        uint64_t idx = s->roots[k] & SAL_ID_INDEX_MASK;
        if (s->roots[k] != SAL_NULL_ID &&
            (idx == 0 || idx >= s->ids_high_water || (s->roots[k] >> 56)))
            return "a root id is out of range";
    }
    return NULL;
}

/* Notes the volatile slots of another boot, newer than the newest valid
 * durable slot, that the library's choice passes over (there is a valid
 * durable slot: the library opened the heap). */
static void note_other_boot_slots(const sal_commit_slot *s, const int *valid, int boot_known,
                                  const uint8_t boot[16], gc_report *r)
{
    unsigned durable = valid[0] && (!valid[1] || s[0].epoch >= s[1].epoch) ? 0 : 1;
    for (unsigned i = 2; i < SAL_SLOT_COUNT; i++) {
        if (!valid[i] || s[i].epoch <= s[durable].epoch ||
            (boot_known && memcmp(s[i].boot_id, boot, 16) == 0))
            continue;
        r->slot_status[i] = GC_SLOT_OTHER_BOOT;
        gc_note(r, "commit slot %u holds a protect/async commit (epoch %llu) written "
                   "in another boot: not trusted after a reboot, its changes are "
                   "lost (the crash contract); the durable commit is used",
                i, (unsigned long long)s[i].epoch);
    }
}

/*
 * The slot the library's open takes: sal_slot_pick, the library's own
 * choice (sal/src/format.c), which sal/src/heap.c's check_file calls too.
 * Slots it passed over are marked invalid here with their problem.
 * Returns the slot, -1 if the library refuses (*refusal says why), -2 out
 * of memory (reported).
 */
static int pick_slot(int fd, const sal_superblock *sb, const sal_commit_slot *s, int *valid,
                     const char **problem, const uint8_t *boot, gc_report *r,
                     sal_segment_record **rec_out, const char **refusal)
{
    int skip[SAL_SLOT_COUNT], pick, durable_pick;
    int err = sal_slot_pick(fd, sb, s, valid, boot, skip, &pick, &durable_pick, rec_out);
    if (err == SAL_ENOMEM) {
        gc_op_error(r, "out of memory for the segment records of a commit slot");
        return -2;
    }
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++) {
        if (skip[i] == SAL_SLOT_KEPT)
            continue;
        problem[i] = skip[i] == SAL_SLOT_SHORT_FILE
                         ? "its file_bytes is less than its segments need (the library "
                           "passes over it)"
                     : skip[i] == SAL_SLOT_COPY_MISMATCH
                         ? "its segment-table copy does not match it (a commit that did "
                           "not complete)"
                         : "its segment-table copy cannot be read";
        valid[i] = 0;
        r->slot_status[i] = GC_SLOT_INVALID;
    }
    if (err) {
        *refusal = pick < 0 ? "no valid durable commit slot (none with an intact "
                              "segment-table copy either)"
                            : "no valid durable commit slot with an intact segment-table "
                              "copy (the newer protect/async slot needs one below it)";
        return -1;
    }
    return pick;
}

static const char *kind_name(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a fifo";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISLNK(m))
        return "a symbolic link";
    return "not a regular file";
}

/* The library refuses this heap: remember why, for the prediction. */
static void refuse(gc_report *r, gc_heapfile *hf, const char *why)
{
    if (!hf->library_refuses)
        snprintf(r->predict.library_refusal, sizeof r->predict.library_refusal,
                 "the library refuses this heap: %s", why);
    hf->library_refuses = 1;
}

int gc_heapfile_open(const char *path, const gc_options *o, gc_report *r, gc_heapfile *hf)
{
    memset(hf, 0, sizeof *hf);
    hf->fd = -1;
    snprintf(r->path, sizeof r->path, "%s", path);

    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        gc_op_error(r, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    hf->fd = fd;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        gc_op_error(r, "cannot stat %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        gc_op_error(r, "%s is %s, not a heap file: refused", path, kind_name(st.st_mode));
        return -1;
    }
    hf->size = (uint64_t)st.st_size;
    r->file_size = hf->size;
    r->file_disk_bytes = (uint64_t)st.st_blocks * 512u;

    /* A writer holds an exclusive flock for as long as the heap is open. */
    int lr;
    do
        lr = flock(fd, LOCK_SH | LOCK_NB);
    while (lr != 0 && errno == EINTR);
    if (lr != 0) {
        if (errno == EWOULDBLOCK) {
            if (!o->readonly_look) {
                gc_op_error(r,
                            "%s is open for writing by a live process: refused (stop it "
                            "first; check and stats can take a read-only look with "
                            "--readonly-look)",
                            path);
                return -1;
            }
            r->live_writer = 1;
            gc_note(r, "a live process has the heap open for writing: this is a read-only "
                       "look at its last commit; the object table is changing under it and "
                       "is not checked, and segments the writer reuses after that commit "
                       "may show as damage");
        } else {
            gc_note(r, "could not take a shared lock (%s): going on without it",
                    strerror(errno));
        }
    }

    if (hf->size == 0) {
        gc_op_error(r, "%s is empty: not a sal heap", path);
        return -1;
    }
    sal_superblock *sb = &hf->sb;
    memset(sb, 0, sizeof *sb);
    uint64_t head = hf->size < sizeof *sb ? hf->size : sizeof *sb;
    int err = sal_os_pread(fd, sb, (size_t)head, 0);
    if (err) {
        gc_op_error(r, "cannot read %s: %s", path, strerror(err));
        return -1;
    }
    if (memcmp(sb->magic, SAL_SUPERBLOCK_MAGIC, 8) != 0) {
        gc_op_error(r, "%s is not a sal heap (no \"SALHEAP\" magic)", path);
        return -1;
    }
    hf->library_refuses = 0;
    if (hf->size < sizeof *sb) {
        gc_damage(r, GC_HEADER_DAMAGE, "superblock: the file is %llu bytes, shorter than "
                  "the superblock: nothing more can be checked",
                  (unsigned long long)hf->size);
        r->stopped = 1;
        return -1;
    }
    if (sb->checksum != sal_crc32c(0, sb, offsetof(sal_superblock, checksum))) {
        gc_damage(r, GC_HEADER_DAMAGE, "superblock: checksum mismatch (the geometry "
                  "cannot be trusted: nothing more can be checked)");
        r->stopped = 1;
        return -1;
    }
    int version_problem;
    const char *why = superblock_problem(sb, &version_problem);
    if (why && version_problem) {
        if (sb->format_version != SAL_FORMAT_VERSION)
            gc_op_error(r, "%s is a sal heap of another format (format version %u; this "
                           "sal-gc reads version %u)",
                        path, sb->format_version, SAL_FORMAT_VERSION);
        else
            gc_op_error(r, "%s is a sal heap of another format: its %s differ from this "
                           "build's, although it says format version %u",
                        path, why, sb->format_version);
        return -1;
    }
    if (why || sal_superblock_check(sb, hf->size) == SAL_ECORRUPT) {
        gc_damage(r, GC_HEADER_DAMAGE, "superblock: %s (the checksum is right: a forged "
                  "or miswritten superblock; nothing more can be checked)",
                  why ? why : "the library rejects its geometry");
        r->stopped = 1;
        return -1;
    }
    r->have_superblock = 1;
    r->sb = *sb;
    uint64_t max_obj = sb->segment_bytes - sizeof(sal_object_header);
    hf->max_object_bytes = max_obj > UINT32_MAX ? UINT32_MAX : max_obj;

    /* The commit slots. */
    sal_commit_slot s[SAL_SLOT_COUNT];
    int valid[SAL_SLOT_COUNT];
    const char *problem[SAL_SLOT_COUNT];
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++) {
        valid[i] = 0;
        problem[i] = NULL;
        memset(&s[i], 0, sizeof s[i]);
        if (hf->size < SAL_SLOT_OFFSET(i) + sizeof s[i]) {
            r->slot_status[i] = GC_SLOT_UNREADABLE;
            continue;
        }
        if ((err = sal_os_pread(fd, &s[i], sizeof s[i], SAL_SLOT_OFFSET(i)))) {
            gc_op_error(r, "cannot read commit slot %u: %s", i, strerror(err));
            return -1;
        }
        if (all_zero(&s[i], sizeof s[i])) {
            r->slot_status[i] = GC_SLOT_EMPTY;
            continue;
        }
        r->slot_digest[i] = sal_crc32c(0, &s[i], sizeof s[i]);
        problem[i] = slot_problem(&s[i], sb, i);
        /* The library's own verdict must agree with ours. */
        int lib_valid = sal_slot_valid(&s[i], sb) && s[i].durable == (i < 2);
        if (!problem[i] && !lib_valid)
            problem[i] = "the library rejects it";
        valid[i] = !problem[i];
        r->slot_status[i] = valid[i] ? GC_SLOT_VALID : GC_SLOT_INVALID;
        r->slot_epoch[i] = s[i].epoch;
    }
    uint8_t boot[16];
    r->boot_known = gc_boot_id(boot) == 0;
    const char *refusal = NULL;
    int pick = pick_slot(fd, sb, s, valid, problem, r->boot_known ? boot : NULL, r, &hf->rec,
                         &refusal);
    if (pick == -2)
        return -1;
    if (pick >= 0)
        note_other_boot_slots(s, valid, r->boot_known, boot, r);
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++) {
        if (r->slot_status[i] == GC_SLOT_INVALID)
            gc_damage(r, GC_HEADER_DAMAGE, "commit slot %u (%s, at offset %u): %s; the "
                      "library ignores it",
                      i, i < 2 ? "durable" : "volatile", SAL_SLOT_OFFSET(i), problem[i]);
        else if (r->slot_status[i] == GC_SLOT_UNREADABLE)
            gc_damage(r, GC_HEADER_DAMAGE, "commit slot %u lies past the end of the file "
                      "(%llu bytes): the file is truncated",
                      i, (unsigned long long)hf->size);
    }
    if (pick < 0) {
        gc_damage(r, GC_HEADER_DAMAGE, "%s: the library cannot open this heap and nothing "
                  "more can be checked", refusal);
        refuse(r, hf, refusal);
        r->stopped = 1;
        return -1;
    }
    /* A valid durable slot that is not the newest is a fallback; on a heap
     * that was closed cleanly both durable slots are valid. */
    hf->slot = s[pick];
    hf->slot_index = (unsigned)pick;
    r->have_slot = 1;
    r->slot = s[pick];
    r->slot_index = (unsigned)pick;
    r->unclean = !s[pick].clean;
    r->same_boot = r->boot_known && memcmp(s[pick].boot_id, boot, sizeof boot) == 0;
    hf->nseg = s[pick].segments_high_water;
    hf->hwm = s[pick].ids_high_water;
    r->nseg = hf->nseg;
    r->hwm = hf->hwm;

    /* The file must hold what the commit covers (pick_slot checked that
     * file_bytes covers the segments). */
    uint64_t need = sb->data_offset + hf->nseg * sb->segment_bytes;
    if (hf->size < s[pick].file_bytes || hf->size < sb->data_offset) {
        gc_damage(r, GC_HEADER_DAMAGE, "the file is truncated: %llu bytes, the commit "
                  "needs %llu (the library refuses it)",
                  (unsigned long long)hf->size,
                  (unsigned long long)(s[pick].file_bytes > sb->data_offset
                                           ? s[pick].file_bytes
                                           : sb->data_offset));
        refuse(r, hf, "the file is truncated");
    }
    if (hf->size < need || hf->size < sb->data_offset) {
        r->stopped = 1;
        return -1;
    }

    /* The current slot's copy of the segment table: read and found intact
     * when the slot was picked. */
    uint64_t n = hf->nseg;
    hf->rec_raw = calloc(n ? n : 1, sizeof *hf->rec_raw);
    if (!hf->rec_raw) {
        gc_op_error(r, "out of memory for %llu segment records", (unsigned long long)n);
        return -1;
    }
    memcpy(hf->rec_raw, hf->rec, (n ? n : 1) * sizeof *hf->rec);
    for (uint64_t i = 0; i < n; i++) {
        sal_segment_record *g = &hf->rec[i];
        const char *bad = NULL;
        if (g->state > SAL_SEGREC_USED)
            bad = "state is neither free (0) nor used (1)";
        else if (g->used_bytes > sb->segment_bytes)
            bad = "used_bytes is larger than a segment";
        else if (g->used_bytes % 8)
            bad = "used_bytes is not a multiple of 8";
        else if (g->live_bytes > g->used_bytes)
            bad = "live_bytes is larger than used_bytes";
        if (bad) {
            gc_damage(r, GC_SEGMENT_ACCOUNTING, "segment %llu: %s (state %u, used %llu, "
                      "live %llu): the library refuses this heap",
                      (unsigned long long)i, bad, g->state,
                      (unsigned long long)g->used_bytes, (unsigned long long)g->live_bytes);
            refuse(r, hf, "a record of the current segment table is out of range");
        }
        /* Sanitise for the walk. */
        if (g->used_bytes > sb->segment_bytes)
            g->used_bytes = sb->segment_bytes;
        g->used_bytes &= ~7ull;
        if (g->state > SAL_SEGREC_USED)
            g->state = g->used_bytes ? SAL_SEGREC_USED : SAL_SEGREC_FREE;
    }

    void *map = mmap(NULL, (size_t)hf->size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        gc_op_error(r, "cannot map %s (%llu bytes): %s", path, (unsigned long long)hf->size,
                    strerror(errno));
        return -1;
    }
    hf->map = map;
    return 0;
}

void gc_heapfile_close(gc_heapfile *hf)
{
    if (hf->map)
        munmap((void *)hf->map, (size_t)hf->size);
    if (hf->fd >= 0)
        close(hf->fd);
    free(hf->rec);
    free(hf->rec_raw);
    memset(hf, 0, sizeof *hf);
    hf->fd = -1;
}
