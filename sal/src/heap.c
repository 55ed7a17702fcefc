/*
 * heap.c - creating, opening, checking and closing a heap file.
 *
 * Open reads and checks everything it relies on (superblock, both commit
 * slots, the segment table) with pread before it maps or writes anything,
 * so that a damaged or foreign file is rejected untouched.  Close commits:
 * it flushes the data, then writes the other commit slot, then flushes that
 * slot (crash rule 4: the slot is written last).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

uint64_t sal_now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sal_options_init(sal_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->reserve_bytes = SAL_DEFAULT_RESERVE_BYTES;
    opt->segment_bytes = SAL_DEFAULT_SEGMENT_BYTES;
    opt->max_objects = SAL_DEFAULT_MAX_OBJECTS;
    opt->file_mode = 0600;
    opt->ready_segments = SAL_DEFAULT_READY_SEGMENTS;
}

uint64_t sal_max_object_bytes(const sal_heap *h)
{
    if (!h)
        return 0;
    uint64_t max = h->segment_bytes - sizeof(sal_object_header);
    return max > UINT32_MAX ? UINT32_MAX : max;
}

/* What both create and open read from the options. */
static int options_check(const sal_options *o)
{
    if (o->flags & ~(SAL_OPEN_READONLY | SAL_OPEN_RECOVER | SAL_OPEN_REPAIR))
        return SAL_EINVAL;
    return o->ready_segments > SAL_MAX_READY_SEGMENTS ? SAL_EINVAL : 0;
}

/* Lay out a new heap from validated options. */
static int geometry(const sal_options *o, sal_superblock *sb)
{
    if (o->segment_bytes < SAL_MIN_SEGMENT_BYTES ||
        o->segment_bytes > SAL_MAX_SEGMENT_BYTES ||
        (o->segment_bytes & (o->segment_bytes - 1)))
        return SAL_EINVAL;
    if (o->max_objects < 1 || o->max_objects > SAL_MAX_OBJECTS_LIMIT)
        return SAL_EINVAL;
    if (o->reserve_bytes > SAL_MAX_RESERVE_BYTES || o->file_mode > 0777)
        return SAL_EINVAL;
    memset(sb, 0, sizeof *sb);
    memcpy(sb->magic, SAL_SUPERBLOCK_MAGIC, 8);
    sb->format_version = SAL_FORMAT_VERSION;
    sb->superblock_bytes = sizeof(sal_superblock);
    sb->page_bytes = SAL_PAGE_BYTES;
    sb->object_header_bytes = sizeof(sal_object_header);
    sb->root_count = SAL_ROOT_COUNT;
    sb->segment_record_bytes = sizeof(sal_segment_record);
    sb->segment_bytes = o->segment_bytes;
    sb->max_objects = o->max_objects + 1; /* entry 0 is the null id */
    sb->table_bytes = sal_round_up(sb->max_objects * 8, SAL_TABLE_CHUNK_BYTES);
    /* The segment table must describe every segment, and the number of
     * segments depends on where the data starts: size it for the upper
     * bound reserve / segment_bytes. */
    uint64_t reserve = sal_round_up(o->reserve_bytes, o->segment_bytes);
    uint64_t max_segments = reserve / o->segment_bytes;
    sb->segtab_offset = SAL_SEGTAB_OFFSET;
    sb->segtab_bytes = sal_round_up(max_segments * sizeof(sal_segment_record),
                                    SAL_PAGE_BYTES);
    if (sb->segtab_bytes == 0)
        sb->segtab_bytes = SAL_PAGE_BYTES;
    /* One copy of the segment table per commit slot, so that writing one
     * never damages what another slot vouches for. */
    sb->table_offset = sal_round_up(sb->segtab_offset + SAL_SLOT_COUNT * sb->segtab_bytes,
                                    SAL_REGION_ALIGN);
    sb->data_offset = sal_round_up(sb->table_offset + sb->table_bytes,
                                   o->segment_bytes);
    if (reserve <= sb->data_offset)
        return SAL_EINVAL; /* no room for a single segment */
    sb->reserve_bytes = reserve;
    sb->segment_count = (reserve - sb->data_offset) / o->segment_bytes;
    sb->created_unix_ns = sal_now_unix_ns();
    uint64_t uid[2];
    if (sal_os_random(uid, sizeof uid) != 0) {
        uid[0] = sb->created_unix_ns;
        uid[1] = (uint64_t)(uintptr_t)sb ^ ((uint64_t)getpid() << 32);
    }
    sb->heap_uid[0] = uid[0];
    sb->heap_uid[1] = uid[1];
    sal_superblock_seal(sb);
    return 0;
}

/* Read the superblock, pick the newest valid slot (volatile ones only if
 * they carry `boot`, this boot's id; NULL: unknown), check the file size
 * and the segment table.  Reads only. */
static int check_file(int fd, const uint8_t *boot, sal_superblock *sb, sal_commit_slot *slot,
                      unsigned *slot_index, unsigned *durable_index,
                      uint64_t *max_epoch, sal_segment_record **records_out)
{
    uint64_t size;
    int err = sal_os_file_size(fd, &size);
    if (err)
        return err;
    if (size == 0)
        return SAL_ENOTHEAP;
    memset(sb, 0, sizeof *sb);
    uint64_t head = size < sizeof *sb ? size : sizeof *sb;
    if ((err = sal_os_pread(fd, sb, (size_t)head, 0)))
        return err;
    if (memcmp(sb->magic, SAL_SUPERBLOCK_MAGIC, 8) != 0)
        return SAL_ENOTHEAP;
    if (size < sizeof *sb)
        return SAL_ETRUNCATED;
    if ((err = sal_superblock_check(sb, size)))
        return err;

    /* The newest valid durable slot; a volatile slot (protect and async
     * commits) only if it is newer and was written in this boot: after a
     * reboot the page cache is gone, and with it whatever a volatile
     * commit did not flush.  A slot counts only with its segment-table copy
     * intact: a commit whose slot reached the disk although its flush
     * failed can have its copy rewritten by the next commit, and then the
     * slot before it is the current one. */
    sal_commit_slot s[SAL_SLOT_COUNT];
    int valid[SAL_SLOT_COUNT];
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++) {
        if ((err = sal_os_pread(fd, &s[i], sizeof s[i], SAL_SLOT_OFFSET(i))))
            return err;
        valid[i] = sal_slot_valid(&s[i], sb) && s[i].durable == (i < 2);
    }
    /* Epochs go on above every valid slot, including volatile slots of an
     * earlier boot that are ignored now. */
    *max_epoch = 0;
    for (unsigned i = 0; i < SAL_SLOT_COUNT; i++)
        if (valid[i] && s[i].epoch > *max_epoch)
            *max_epoch = s[i].epoch;
    sal_segment_record *rec;
    int skip[SAL_SLOT_COUNT], pick, durable_pick;
    if ((err = sal_slot_pick(fd, sb, s, valid, boot, skip, &pick, &durable_pick, &rec)))
        return err;
    *slot = s[pick];
    *slot_index = (unsigned)pick;
    *durable_index = (unsigned)durable_pick;
    if (size < slot->file_bytes || size < sb->data_offset) {
        free(rec);
        return SAL_ETRUNCATED;
    }
    uint64_t n = slot->segments_high_water;
    for (uint64_t i = 0; i < n; i++) {
        if (rec[i].state > SAL_SEGREC_USED || rec[i].used_bytes > sb->segment_bytes ||
            rec[i].live_bytes > rec[i].used_bytes || rec[i].used_bytes % 8) {
            free(rec);
            return SAL_ECORRUPT;
        }
    }
    *records_out = rec;
    return 0;
}

static void heap_free(sal_heap *h)
{
    if (!h)
        return;
    if (h->base)
        sal_os_unmap(h->base, h->reserve_bytes);
    if (h->fd >= 0)
        sal_os_close(h->fd);
    if (h->drop_fd >= 0)
        sal_os_close(h->drop_fd);
    if (h->segments)
        for (uint64_t i = 0; i < h->segment_count; i++)
            free(h->segments[i].holes);
    free(h->segments);
    free(h->free_segs);
    free(h->ready_segs);
    free(h->partial_segs);
    free(h->pending_segs);
    free(h->sparse_segs);
    free(h->recyclable_segs);
    free(h->slots);
    sal_id_vec_free(&h->free_ids);
    pthread_mutex_destroy(&h->table_lock);
    pthread_mutex_destroy(&h->free_ids_lock);
    pthread_mutex_destroy(&h->seg_lock);
    pthread_mutex_destroy(&h->sessions_lock);
    pthread_mutex_destroy(&h->sync_lock);
    pthread_mutex_destroy(&h->cut_lock);
    pthread_cond_destroy(&h->cut_cond);
    pthread_mutex_destroy(&h->pending_lock);
    free(h->pending_ids);
    pthread_cond_destroy(&h->seg_cond);
    free(h);
}

/* Rebuild the in-memory state from a checked file: segments, free ids,
 * roots. */
static int load_state(sal_heap *h, const sal_segment_record *rec)
{
    uint64_t n = h->segment_count;
    h->segments = calloc(n, sizeof *h->segments);
    h->free_segs = malloc(n * sizeof *h->free_segs);
    h->ready_segs = malloc(n * sizeof *h->ready_segs);
    h->partial_segs = malloc(n * sizeof *h->partial_segs);
    h->pending_segs = malloc(n * sizeof *h->pending_segs);
    h->sparse_segs = malloc(n * sizeof *h->sparse_segs);
    h->recyclable_segs = malloc(n * sizeof *h->recyclable_segs);
    h->slots = aligned_alloc(SAL_CACHE_LINE, SAL_SECTION_SLOTS * sizeof *h->slots);
    if (!h->segments || !h->free_segs || !h->ready_segs || !h->partial_segs ||
        !h->pending_segs || !h->sparse_segs || !h->recyclable_segs || !h->slots)
        return SAL_ENOMEM;
    memset(h->slots, 0, SAL_SECTION_SLOTS * sizeof *h->slots);

    h->segments_high_water = h->committed.segments_high_water;
    /* Push free segments highest first so the lowest is taken first. */
    for (uint64_t i = h->segments_high_water; i-- > 0;) {
        sal_segment *g = &h->segments[i];
        if (rec[i].state == SAL_SEGREC_USED && rec[i].live_bytes > 0) {
            atomic_store(&g->state, SEG_FULL);
            atomic_store(&g->retired, 1);
            atomic_store(&g->live_bytes, (int64_t)rec[i].live_bytes);
            atomic_store(&g->used_bytes, rec[i].used_bytes);
            /* Committed and finished: nobody bumps it again. */
            atomic_store(&g->protect_mark, h->segment_bytes);
            /* Opened from a volatile slot (a protect or async commit, same
             * boot), the bytes need not be on the disk: the next durable
             * commit writes them all. */
            g->durable_mark = h->committed.durable ? h->segment_bytes : 0;
            g->readonly_mark = h->readonly ? 0 : h->segment_bytes; /* protected below */
            h->opened_live_bytes += (int64_t)rec[i].live_bytes;
        } else {
            atomic_store(&g->state, SEG_FREE);
            h->free_segs[h->free_segs_len++] = (uint32_t)i;
        }
    }
    atomic_store(&h->file_bytes, h->committed.file_bytes);

    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++) {
        atomic_store(&h->roots[r], h->committed.roots[r]);
        if (h->committed.roots[r] != SAL_NULL_ID)
            atomic_store(&h->roots_used, r + 1);
    }
    atomic_store(&h->ids_high_water, h->committed.ids_high_water);
    atomic_store(&h->section_epoch, 1);
    atomic_store(&h->write_token_next, 1);
    atomic_store(&h->commit_epoch, h->committed.epoch);
    atomic_store(&h->durable_epoch, h->committed.epoch);
    atomic_store(&h->cut_epoch, h->committed.epoch);

    /* Free ids: every entry below the high-water mark with a zero count.
     * The table pages below the high-water mark exist in the file (they
     * were allocated before use); past the end of a short file we never
     * read, since the file was checked to hold the data region. */
    uint64_t hwm = h->committed.ids_high_water;
    int64_t live = 0;
    for (uint64_t i = 1; i < hwm; i++) {
        uint64_t e = atomic_load_explicit(&h->table[i], memory_order_relaxed);
        if (sal_entry_rc(e) == 0) {
            if (sal_id_vec_push(&h->free_ids, sal_entry_next_id((uint32_t)i, e)))
                return SAL_ENOMEM;
        } else {
            live++;
        }
    }
    h->opened_live_objects = live;
    return 0;
}

static int heap_open_fd(int fd, const sal_options *opt, int writable,
                        sal_heap **heap_out)
{
    sal_superblock sb;
    sal_commit_slot slot;
    unsigned slot_index, durable_index;
    uint64_t max_epoch;
    sal_segment_record *rec = NULL;
    /* This boot's id, read once: open picks its slot by it, every commit
     * carries it (a read per commit cost a one-object durable sync about
     * 10% of its time). */
    uint8_t boot[16];
    int have_boot = sal_os_boot_id(boot) == 0;
    int err = check_file(fd, have_boot ? boot : NULL, &sb, &slot, &slot_index, &durable_index,
                         &max_epoch, &rec);
    if (err)
        return err;
    unsigned flags = opt ? opt->flags : 0;
    int repair = (flags & SAL_OPEN_REPAIR) != 0;
    int recover = !slot.clean || repair;
    if (recover && writable && !(flags & (SAL_OPEN_RECOVER | SAL_OPEN_REPAIR))) {
        free(rec);
        return SAL_EUNCLEAN;
    }

    sal_heap *h = calloc(1, sizeof *h);
    if (!h) {
        free(rec);
        return SAL_ENOMEM;
    }
    h->fd = -1;
    h->drop_fd = -1;
    memcpy(h->boot_id, boot, sizeof h->boot_id);
    h->have_boot_id = have_boot;
    pthread_mutex_init(&h->table_lock, NULL);
    pthread_mutex_init(&h->free_ids_lock, NULL);
    pthread_mutex_init(&h->seg_lock, NULL);
    pthread_mutex_init(&h->sessions_lock, NULL);
    pthread_mutex_init(&h->sync_lock, NULL);
    pthread_mutex_init(&h->cut_lock, NULL);
    pthread_cond_init(&h->cut_cond, NULL);
    pthread_mutex_init(&h->pending_lock, NULL);
    pthread_cond_init(&h->seg_cond, NULL);
    h->sb = sb;
    h->committed = slot;
    h->durable_slot = durable_index;
    h->volatile_slot = slot_index >= 2 ? slot_index : 2;
    h->readonly = !writable;
    h->reserve_bytes = sb.reserve_bytes;
    h->segment_bytes = sb.segment_bytes;
    h->segment_shift = (unsigned)__builtin_ctzll(sb.segment_bytes);
    h->segment_count = sb.segment_count;
    h->data_offset = sb.data_offset;
    h->table_offset = sb.table_offset;
    h->max_objects = sb.max_objects;
    h->ready_target = opt ? opt->ready_segments : SAL_DEFAULT_READY_SEGMENTS;

    /* A read-only look at an unclean heap recovers in a private mapping:
     * the rebuilt table lives in this process's memory only. */
    void *base;
    if ((err = sal_os_map_file(fd, sb.reserve_bytes, writable || recover,
                               !writable && recover, &base)))
        goto fail;
    h->base = base;
    h->fd = fd;
    /* The provider's cache drops wait for write-back on a file
     * description of their own: on this one, a wait of theirs would take
     * the one report of an error that a commit's flush must see.  Without
     * it (no /proc) segments keep the folios they have. */
    if (writable && sal_os_reopen(fd, &h->drop_fd) != 0)
        h->drop_fd = -1;
    /* Metadata and the object table get small folios: they are written a
     * few bytes at a time (slots, records, reference counts). */
    (void)sal_os_advise_folios(h->base, sb.data_offset, 0);
    h->table = (_Atomic uint64_t *)(h->base + sb.table_offset);
    /* Everything a writer may write is allocated on disk here, not
     * assumed: a write into a hole of a full disk is a SIGBUS, not ENOSPC.
     * The metadata and the table up to the chunk holding the high-water
     * mark (create allocates the metadata before the table only; reviews
     * found it on a full tmpfs), and the segments up to the committed
     * length: a copy made sparse (cp --sparse, rsync -S, tar -S) turns
     * zero-filled free segments and unused slot and record pages into
     * holes.  Ranges already allocated cost a look at their extents.  The
     * rest of the table is allocated as it grows. */
    uint64_t table_ready = sal_round_up(slot.ids_high_water * 8, SAL_TABLE_CHUNK_BYTES);
    if (writable && ((err = sal_os_fallocate(fd, 0, sb.table_offset + table_ready)) ||
                     (slot.file_bytes > sb.data_offset &&
                      (err = sal_os_fallocate(fd, sb.data_offset,
                                              slot.file_bytes - sb.data_offset)))))
        goto fail;
    atomic_store(&h->table_ready_bytes, table_ready);
    /* The entry of the next fresh id, if the table has one (a full table
     * has none, and asking for it said SAL_ENOIDS: the heap could not be
     * opened for writing any more). */
    if (writable && slot.ids_high_water < h->max_objects &&
        (err = sal_table_ensure(h, slot.ids_high_water)))
        goto fail;
    if (recover) {
        int same_boot = !repair && h->have_boot_id &&
                        memcmp(h->boot_id, slot.boot_id, sizeof h->boot_id) == 0;
        if ((err = sal_recover(h, rec, same_boot, &h->recovery)))
            goto fail;
    }
    if ((err = load_state(h, rec)))
        goto fail;
    free(rec);
    rec = NULL;
    /* Committed segments are read-only in the mapping, so that a stray
     * write through an old pointer faults instead of changing history. */
    for (uint64_t i = 0; writable && i < h->segments_high_water; i++)
        if (atomic_load(&h->segments[i].state) == SEG_FULL &&
            (err = sal_os_protect_readonly(h->base + sal_segment_start(h, i),
                                           h->segment_bytes)))
            goto fail;

    if (writable) {
        /* The next commit's epoch is above every slot's (sync.c numbers
         * commits after the last cut). */
        atomic_store(&h->cut_epoch, max_epoch);
        /* From here on the file says "open": a crash leaves it unclean. */
        if ((err = sal_commit(h, SAL_SYNC_DURABLE, 0, NULL)))
            goto fail;
        if ((err = sal_provider_start(h)))
            goto fail;
    }
    *heap_out = h;
    return 0;

fail:
    free(rec);
    h->fd = -1; /* the caller closes fd */
    heap_free(h);
    return err;
}

static int open_path(const char *path, int flags, unsigned mode, int writable,
                     int *fd_out)
{
    int fd, err = sal_os_open(path, flags, mode, &fd);
    if (err)
        return err;
    if ((err = sal_os_file_kind_ok(fd)) ||
        (err = sal_os_lock(fd, writable))) {
        sal_os_close(fd);
        return err == EWOULDBLOCK ? SAL_ELOCKED : err;
    }
    *fd_out = fd;
    return 0;
}

int sal_heap_open(const char *path, const sal_options *opt, sal_heap **heap_out)
{
    if (!heap_out)
        return SAL_EINVAL;
    *heap_out = NULL;
    if (!path || (opt && options_check(opt)))
        return SAL_EINVAL;
    int writable = !(opt && (opt->flags & SAL_OPEN_READONLY));
    int fd, err;
    /* O_NONBLOCK: a fifo given as path must not hang the open. */
    if ((err = open_path(path, (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK, 0,
                         writable, &fd)))
        return err;
    if ((err = heap_open_fd(fd, opt, writable, heap_out)))
        sal_os_close(fd);
    return err;
}

int sal_heap_create(const char *path, const sal_options *opt, sal_heap **heap_out)
{
    if (!heap_out)
        return SAL_EINVAL;
    *heap_out = NULL;
    if (!path)
        return SAL_EINVAL;
    sal_options o;
    if (opt)
        o = *opt;
    else
        sal_options_init(&o);
    if ((o.flags & SAL_OPEN_READONLY) || options_check(&o))
        return SAL_EINVAL;
    /* Recovery and repair mean nothing for a new heap (sal.h): a repair
     * flag would sweep it at the open below. */
    o.flags &= ~(SAL_OPEN_RECOVER | SAL_OPEN_REPAIR);
    opt = &o;
    sal_superblock sb;
    int err = geometry(opt, &sb);
    if (err)
        return err;
    int fd;
    if ((err = open_path(path, O_RDWR | O_CREAT | O_EXCL, opt->file_mode, 1, &fd)))
        return err;

    /* The metadata pages are allocated on disk now; the object table and
     * the segments as they are used.  Slot 0 first, superblock last: a
     * crash in between leaves a file that open rejects as "not a heap". */
    sal_commit_slot slot;
    memset(&slot, 0, sizeof slot);
    memcpy(slot.magic, SAL_SLOT_MAGIC, 8);
    slot.epoch = 1;
    slot.time_unix_ns = sb.created_unix_ns;
    slot.heap_uid[0] = sb.heap_uid[0];
    slot.heap_uid[1] = sb.heap_uid[1];
    slot.clean = 1;
    slot.durable = 1;
    slot.epoch = 1;
    slot.durable_epoch = 1;
    (void)sal_os_boot_id(slot.boot_id);
    slot.ids_high_water = 1;
    slot.file_bytes = sb.data_offset;
    slot.segtab_checksum = sal_crc32c(0, NULL, 0);
    sal_slot_seal(&slot);
    if ((err = sal_os_fallocate(fd, 0, sb.table_offset)) ||
        (err = sal_os_ftruncate(fd, sb.data_offset)) ||
        (err = sal_os_pwrite(fd, &slot, sizeof slot, SAL_SLOT_OFFSET(0))) ||
        (err = sal_os_fsync(fd)) ||
        (err = sal_os_pwrite(fd, &sb, sizeof sb, 0)) ||
        (err = sal_os_fsync(fd)))
        goto fail;
    if ((err = heap_open_fd(fd, opt, 1, heap_out)))
        goto fail;
    return 0;
fail:
    sal_os_unlink(path);
    sal_os_close(fd);
    return err;
}

int sal_heap_close(sal_heap *h)
{
    if (!h)
        return SAL_EINVAL;
    if (atomic_load(&h->sessions_open) || atomic_load(&h->readers_open))
        return SAL_EBUSY;
    int err = 0;
    if (!h->readonly) {
        sal_provider_stop(h);
        pthread_mutex_lock(&h->sync_lock);
        /* Clean only if the counts are right: a free that ran out of
         * memory left objects for the next open's recovery. */
        err = sal_commit(h, SAL_SYNC_DURABLE, !atomic_load(&h->counts_unsure), NULL);
        pthread_mutex_unlock(&h->sync_lock);
    }
    heap_free(h);
    return err;
}

int sal_heap_recovery_report(const sal_heap *h, sal_recovery_report *out)
{
    if (!h || !out)
        return SAL_EINVAL;
    *out = h->recovery;
    return 0;
}
