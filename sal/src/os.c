/*
 * os.c - every system call sal makes on its file and its mapping.
 *
 * Each wrapper returns 0 or a positive errno.  In builds with
 * SAL_TEST_HOOKS, each passes through fault_check() first, so that tests
 * can make a chosen operation fail (out of space, I/O error) at a chosen
 * call without touching the real file system.
 */
#include "os.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#if SAL_TEST_HOOKS
typedef struct fault {
    _Atomic int err;
    _Atomic long after; /* calls still to succeed */
    _Atomic long count; /* failures still to give; < 0: forever */
    _Atomic long set_after; /* `after` as set: calls = set_after - after */
} fault;
static fault faults[SAL_OS_OP_COUNT];

int sal_os_fault_set(sal_os_op op, int err, long after, long count)
{
    if ((unsigned)op >= SAL_OS_OP_COUNT || err < 0)
        return EINVAL;
    atomic_store(&faults[op].set_after, after);
    atomic_store(&faults[op].after, after);
    atomic_store(&faults[op].count, count);
    atomic_store(&faults[op].err, err);
    return 0;
}

void sal_os_fault_clear_all(void)
{
    for (int i = 0; i < SAL_OS_OP_COUNT; i++)
        atomic_store(&faults[i].err, 0);
}

long sal_os_fault_calls(sal_os_op op)
{
    if ((unsigned)op >= SAL_OS_OP_COUNT)
        return -1;
    return atomic_load(&faults[op].set_after) - atomic_load(&faults[op].after);
}

static int fault_check(sal_os_op op)
{
    fault *f = &faults[op];
    int err = atomic_load_explicit(&f->err, memory_order_relaxed);
    if (err == 0)
        return 0;
    if (atomic_fetch_sub(&f->after, 1) > 0)
        return 0;
    long left = atomic_load(&f->count);
    if (left == 0)
        return 0;
    if (left > 0)
        atomic_fetch_sub(&f->count, 1);
    return err;
}
#define FAULT(op)                                                          \
    do {                                                                   \
        int fault_err_ = fault_check(op);                                  \
        if (fault_err_)                                                    \
            return fault_err_;                                             \
    } while (0)
#else
int sal_os_fault_set(sal_os_op op, int err, long after, long count)
{
    (void)op, (void)err, (void)after, (void)count;
    return ENOSYS;
}
void sal_os_fault_clear_all(void) {}
long sal_os_fault_calls(sal_os_op op)
{
    (void)op;
    return -1;
}
#define FAULT(op) ((void)0)
#endif

#if SAL_TEST_HOOKS
/* Power-loss simulation.  While armed, every durable flush of the mapped
 * heap is copied into a shadow file: the shadow is what the disk is known
 * to hold.  After `cut_after` flushes the power is "cut": later flushes no
 * longer reach the shadow, although the process goes on. */
#define POWERCUT_PENDING_MAX 4096
#define POWERCUT_LOST_MAX 16384
#define SAL_OS_MODEL_PAGE 4096u /* the page cache's dirty unit, modelled */
static struct {
    pthread_mutex_t lock;
    int shadow_fd;
    char *base;
    uint64_t length;
    long flushes, cut_after;
    /* Ranges written to the device but not yet flushed from its cache
     * (sync_file_range with waits): durable at the next flush. */
    struct { const char *addr; uint64_t length; } pending[POWERCUT_PENDING_MAX];
    size_t npending;
    /* Pages a failed write-back left clean without writing them, as Linux
     * does (it keeps their contents and clears their dirty bit): a later
     * flush skips them until they are written again.  With each, a hash of
     * its contents then: a page whose contents changed since was written
     * through the mapping, which dirtied it again. */
    struct { uint64_t offset, hash; } lost[POWERCUT_LOST_MAX];
    size_t nlost;
    /* The page cache outlives the process: the lost pages are kept in a
     * file beside the shadow, which the next process to arm reads. */
    int lost_fd;
} powercut = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, 0, 0, -1, {{NULL, 0}}, 0, {{0, 0}}, 0, -1};

/* The model cannot go on (test builds only): a lost page it forgot would
 * count as written, and a test could pass that should fail. */
static void model_broken(const char *why)
{
    fprintf(stderr, "power-cut model: %s\n", why);
    abort();
}

static void lost_save_locked(void)
{
    if (powercut.lost_fd < 0)
        return;
    size_t bytes = powercut.nlost * sizeof powercut.lost[0];
    if (pwrite(powercut.lost_fd, powercut.lost, bytes, 0) != (ssize_t)bytes ||
        ftruncate(powercut.lost_fd, (off_t)bytes) != 0)
        model_broken("cannot keep the list of lost pages beside the shadow");
}

static int lost_load_locked(const char *shadow_path)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s.lost", shadow_path) >= sizeof path)
        return ENAMETOOLONG;
    powercut.lost_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (powercut.lost_fd < 0)
        return errno;
    ssize_t n = pread(powercut.lost_fd, powercut.lost, sizeof powercut.lost, 0);
    if (n < 0)
        return errno;
    powercut.nlost = (size_t)n / sizeof powercut.lost[0];
    return 0;
}

int sal_os_powercut_arm(const char *shadow_path, long cut_after)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut.shadow_fd >= 0)
        close(powercut.shadow_fd);
    powercut.shadow_fd = -1;
    if (powercut.lost_fd >= 0)
        close(powercut.lost_fd);
    powercut.lost_fd = -1;
    powercut.base = NULL;
    powercut.flushes = 0;
    powercut.npending = 0;
    powercut.nlost = 0;
    powercut.cut_after = cut_after;
    int err = 0;
    if (shadow_path) {
        powercut.shadow_fd = open(shadow_path, O_WRONLY | O_CLOEXEC);
        if (powercut.shadow_fd < 0)
            err = errno;
        else
            err = lost_load_locked(shadow_path);
    }
    pthread_mutex_unlock(&powercut.lock);
    return err;
}

long sal_os_powercut_flushes(void)
{
    pthread_mutex_lock(&powercut.lock);
    long n = powercut.flushes;
    pthread_mutex_unlock(&powercut.lock);
    return n;
}

static void powercut_mapped(void *base, uint64_t length)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut.shadow_fd >= 0) {
        powercut.base = base;
        powercut.length = length;
    }
    pthread_mutex_unlock(&powercut.lock);
}

static int powercut_covers(const char *p, uint64_t length)
{
    return powercut.shadow_fd >= 0 && powercut.base && p >= powercut.base &&
           p + length <= powercut.base + powercut.length;
}

static void shadow_write_locked(const char *p, uint64_t length)
{
    uint64_t off = (uint64_t)(p - powercut.base);
    for (uint64_t done = 0; done < length;) {
        ssize_t w = pwrite(powercut.shadow_fd, p + done, (size_t)(length - done),
                           (off_t)(off + done));
        if (w <= 0)
            break;
        done += (uint64_t)w;
    }
}

static uint64_t page_hash(const char *page)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < SAL_OS_MODEL_PAGE; i++)
        h = (h ^ (unsigned char)page[i]) * 0x100000001b3ull;
    return h;
}

static size_t lost_find_locked(uint64_t offset)
{
    for (size_t i = 0; i < powercut.nlost; i++)
        if (powercut.lost[i].offset == offset)
            return i;
    return powercut.nlost;
}

static void lost_forget_locked(size_t i)
{
    powercut.lost[i] = powercut.lost[--powercut.nlost];
}

/* The pages of a range that a flush writes: all but the lost ones whose
 * contents did not change. */
static void shadow_copy_locked(const char *p, uint64_t length)
{
    if (!powercut_covers(p, length))
        return;
    if (powercut.nlost == 0) {
        shadow_write_locked(p, length);
        return;
    }
    const char *end = p + length;
    for (const char *q = p; q < end;) {
        uint64_t page = (uint64_t)(q - powercut.base) & ~(uint64_t)(SAL_OS_MODEL_PAGE - 1);
        const char *next = powercut.base + page + SAL_OS_MODEL_PAGE;
        if (next > end)
            next = end;
        size_t i = lost_find_locked(page);
        if (i < powercut.nlost) {
            if (page_hash(powercut.base + page) == powercut.lost[i].hash) {
                q = next; /* still clean: not written */
                continue;
            }
            lost_forget_locked(i);
        }
        shadow_write_locked(q, (uint64_t)(next - q));
        q = next;
    }
}

/* A write-back of the range failed: its pages are clean, and not on disk. */
static void powercut_lose(const char *p, uint64_t length)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut_covers(p, length)) {
        uint64_t first = (uint64_t)(p - powercut.base) & ~(uint64_t)(SAL_OS_MODEL_PAGE - 1);
        uint64_t end = (uint64_t)(p - powercut.base) + length;
        for (uint64_t page = first; page < end; page += SAL_OS_MODEL_PAGE) {
            size_t i = lost_find_locked(page);
            if (i == powercut.nlost) {
                if (powercut.nlost == POWERCUT_LOST_MAX)
                    model_broken("more lost pages than POWERCUT_LOST_MAX");
                powercut.nlost++;
            }
            powercut.lost[i].offset = page;
            powercut.lost[i].hash = page_hash(powercut.base + page);
        }
        lost_save_locked();
    }
    pthread_mutex_unlock(&powercut.lock);
}

/* The range was written through the file: its pages are dirty again. */
static void powercut_redirty(const char *p, uint64_t length)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut_covers(p, length)) {
        uint64_t first = (uint64_t)(p - powercut.base) & ~(uint64_t)(SAL_OS_MODEL_PAGE - 1);
        uint64_t end = (uint64_t)(p - powercut.base) + length;
        for (size_t i = 0; i < powercut.nlost;) {
            if (powercut.lost[i].offset >= first && powercut.lost[i].offset < end)
                lost_forget_locked(i);
            else
                i++;
        }
        lost_save_locked();
    }
    pthread_mutex_unlock(&powercut.lock);
}

int sal_os_powercut_lose(const void *addr, uint64_t length)
{
    if (powercut.shadow_fd < 0)
        return EINVAL;
    powercut_lose(addr, length);
    return 0;
}

/* A failed write-back op on an offset of the file. */
static void powercut_lose_offset(uint64_t offset, uint64_t length)
{
    if (powercut.base)
        powercut_lose(powercut.base + offset, length);
}

/* A flush: the flushed range and every pending range reach the "disk",
 * unless the power was cut before. */
static void powercut_record(const void *addr, uint64_t length)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut.cut_after < 0 || powercut.flushes < powercut.cut_after) {
        for (size_t i = 0; i < powercut.npending; i++)
            shadow_copy_locked(powercut.pending[i].addr, powercut.pending[i].length);
        shadow_copy_locked(addr, length);
        lost_save_locked();
    }
    powercut.npending = 0;
    powercut.flushes++;
    pthread_mutex_unlock(&powercut.lock);
}

static void powercut_pending(const void *addr, uint64_t length)
{
    pthread_mutex_lock(&powercut.lock);
    if (powercut.npending < POWERCUT_PENDING_MAX) {
        powercut.pending[powercut.npending].addr = addr;
        powercut.pending[powercut.npending].length = length;
        powercut.npending++;
    }
    pthread_mutex_unlock(&powercut.lock);
}
/* A failed write-back loses what it was writing (the power-cut model). */
#define WRITEBACK_FAULT(op, lose)                                          \
    do {                                                                   \
        int fault_err_ = fault_check(op);                                  \
        if (fault_err_) {                                                  \
            lose;                                                          \
            return fault_err_;                                             \
        }                                                                  \
    } while (0)
#else
int sal_os_powercut_arm(const char *shadow_path, long cut_after)
{
    (void)shadow_path, (void)cut_after;
    return ENOSYS;
}
long sal_os_powercut_flushes(void) { return 0; }
int sal_os_powercut_lose(const void *addr, uint64_t length)
{
    (void)addr, (void)length;
    return ENOSYS;
}
#define powercut_mapped(base, length) ((void)0)
#define powercut_record(addr, length) ((void)0)
#define powercut_pending(addr, length) ((void)0)
#define powercut_redirty(addr, length) ((void)0)
#define WRITEBACK_FAULT(op, lose) ((void)0)
#endif

int sal_os_open(const char *path, int flags, unsigned mode, int *fd_out)
{
    FAULT(SAL_OS_OPEN);
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errno;
    *fd_out = fd;
    return 0;
}

int sal_os_reopen(int fd, int *fd_out)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int nfd;
    do
        nfd = open(path, O_RDWR | O_CLOEXEC);
    while (nfd < 0 && errno == EINTR);
    if (nfd < 0)
        return errno;
    *fd_out = nfd;
    return 0;
}

int sal_os_close(int fd)
{
    return close(fd) == 0 ? 0 : errno;
}

int sal_os_file_size(int fd, uint64_t *size_out)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    *size_out = (uint64_t)st.st_size;
    return 0;
}

int sal_os_file_kind_ok(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    if (!S_ISREG(st.st_mode))
        return EINVAL;
    return 0;
}

int sal_os_lock(int fd, int exclusive)
{
    int r;
    do
        r = flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
    while (r != 0 && errno == EINTR);
    return r == 0 ? 0 : errno;
}

int sal_os_fallocate(int fd, uint64_t offset, uint64_t length)
{
    FAULT(SAL_OS_FALLOCATE);
    int r;
    do
        r = fallocate(fd, 0, (off_t)offset, (off_t)length);
    while (r != 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno != EOPNOTSUPP)
        return errno;
    /* A file system without fallocate: posix_fallocate writes zeros, which
     * allocates the blocks all the same. */
    return posix_fallocate(fd, (off_t)offset, (off_t)length);
}

int sal_os_ftruncate(int fd, uint64_t length)
{
    FAULT(SAL_OS_FTRUNCATE);
    int r;
    do
        r = ftruncate(fd, (off_t)length);
    while (r != 0 && errno == EINTR);
    return r == 0 ? 0 : errno;
}

int sal_os_fsync(int fd)
{
    FAULT(SAL_OS_FSYNC);
    return fsync(fd) == 0 ? 0 : errno;
}

int sal_os_pread(int fd, void *buf, size_t len, uint64_t offset)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return EIO; /* short file: callers check sizes first */
        p += n, len -= (size_t)n, offset += (uint64_t)n;
    }
    return 0;
}

int sal_os_pwrite(int fd, const void *buf, size_t len, uint64_t offset)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return EIO; /* no progress: do not spin */
        p += n, len -= (size_t)n, offset += (uint64_t)n;
    }
    return 0;
}

int sal_os_rewrite(int fd, const void *addr, uint64_t offset, uint64_t length)
{
    FAULT(SAL_OS_PWRITE);
    int err = sal_os_pwrite(fd, addr, (size_t)length, offset);
    if (!err)
        powercut_redirty(addr, length);
    return err;
}

int sal_os_unlink(const char *path)
{
    return unlink(path) == 0 ? 0 : errno;
}

int sal_os_map_file(int fd, uint64_t length, int writable, int private_copy,
                    void **addr_out)
{
    FAULT(SAL_OS_MMAP);
    /* Reserve 2 MiB more than needed and map the file at a 2 MiB boundary
     * inside it, so that the kernel can map large folios with one page
     * table entry (segments and the table are 2 MiB aligned in the file). */
    const uint64_t align = 2u << 20;
    char *area = mmap(NULL, (size_t)(length + align), PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED)
        return errno;
    char *aligned = (char *)(((uintptr_t)area + align - 1) & ~(uintptr_t)(align - 1));
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    int share = private_copy ? MAP_PRIVATE : MAP_SHARED;
    void *p = mmap(aligned, (size_t)length, prot, share | MAP_NORESERVE | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        munmap(area, (size_t)(length + align));
        return err;
    }
    if (writable && !private_copy)
        powercut_mapped(p, length);
    /* Large folios where the kernel allows them (transparent huge pages
     * "madvise" or "always"); harmless where it does not. */
    (void)madvise(p, (size_t)length, MADV_HUGEPAGE);
    if (aligned > area)
        munmap(area, (size_t)(aligned - area));
    char *end = aligned + length, *area_end = area + length + align;
    if (area_end > end)
        munmap(end, (size_t)(area_end - end));
    *addr_out = p;
    return 0;
}

int sal_os_unmap(void *addr, uint64_t length)
{
    return munmap(addr, (size_t)length) == 0 ? 0 : errno;
}

int sal_os_protect_readonly(void *addr, uint64_t length)
{
    FAULT(SAL_OS_MPROTECT);
    return mprotect(addr, (size_t)length, PROT_READ) == 0 ? 0 : errno;
}

int sal_os_protect_readwrite(void *addr, uint64_t length)
{
    FAULT(SAL_OS_MPROTECT);
    return mprotect(addr, (size_t)length, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

int sal_os_msync(void *addr, uint64_t length, int synchronous)
{
    WRITEBACK_FAULT(SAL_OS_MSYNC, powercut_lose(addr, length));
    if (length == 0)
        return 0;
    if (msync(addr, (size_t)length, synchronous ? MS_SYNC : MS_ASYNC) != 0)
        return errno;
    if (synchronous)
        powercut_record(addr, length);
    return 0;
}

int sal_os_populate_write(void *addr, uint64_t length)
{
    FAULT(SAL_OS_MADVISE);
    /* Write faults only.  Under MADV_HUGEPAGE they build 2 MiB folios of
     * zeros for unwritten extents and map them whole, as a read pass
     * first would; elsewhere (the object table, segments under the small
     * folio policy) a read pass first maps every page read-only, and the
     * write pass then takes a write-protect fault per 4 KiB page: measured
     * on ext4 (6.18), 80 MiB of table at 0.6 GB/s that way against 4 GB/s
     * with write faults alone, the same folios (one dirty byte writes
     * 4 KiB either way), and W1's phase 1 at 24 ns per allocation against
     * 37. */
    if (madvise(addr, (size_t)length, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL)
        return errno;
    /* Kernels before 5.14 lack MADV_POPULATE_WRITE: touch every page.  The
     * range was just allocated on disk, so the write cannot raise SIGBUS,
     * and it holds zeros or dead objects, so rewriting a byte with itself
     * changes nothing. */
    volatile char *p = addr;
    for (uint64_t off = 0; off < length; off += sal_os_page_size())
        p[off] = p[off];
    return 0;
}

/* Write a range back and wait until the device has it (not flushed from
 * its cache). */
static int write_back_wait(int fd, uint64_t offset, uint64_t length)
{
    return sync_file_range(fd, (off_t)offset, (off_t)length,
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                               SYNC_FILE_RANGE_WAIT_AFTER) == 0
               ? 0
               : errno;
}

int sal_os_write_and_wait(int fd, const void *addr, uint64_t offset, uint64_t length)
{
    WRITEBACK_FAULT(SAL_OS_SYNC_FILE_RANGE, powercut_lose(addr, length));
    int err = write_back_wait(fd, offset, length);
    if (err)
        return err;
    powercut_pending(addr, length);
    return 0;
}

int sal_os_advise_folios(void *addr, uint64_t length, int large)
{
    return madvise(addr, (size_t)length, large ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) == 0
               ? 0
               : errno;
}

int sal_os_range_written(int fd, uint64_t offset, uint64_t length)
{
    /* FIEMAP in batches of extents: one unwritten, delayed or missing
     * block anywhere in the range is enough to say no. */
    enum { BATCH = 32 };
    union {
        struct fiemap map;
        char bytes[sizeof(struct fiemap) + BATCH * sizeof(struct fiemap_extent)];
    } buf;
    uint64_t pos = offset, end = offset + length;
    while (pos < end) {
        memset(&buf, 0, sizeof buf);
        buf.map.fm_start = pos;
        buf.map.fm_length = end - pos;
        buf.map.fm_extent_count = BATCH;
        if (ioctl(fd, FS_IOC_FIEMAP, &buf.map) != 0)
            return -1; /* not supported here: unknown */
        if (buf.map.fm_mapped_extents == 0)
            return 0; /* a hole */
        for (uint32_t i = 0; i < buf.map.fm_mapped_extents; i++) {
            const struct fiemap_extent *e = &buf.map.fm_extents[i];
            if (e->fe_logical > pos)
                return 0; /* a hole before this extent */
            if (e->fe_flags & (FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_DELALLOC |
                               FIEMAP_EXTENT_UNKNOWN))
                return 0;
            if (e->fe_logical + e->fe_length > pos)
                pos = e->fe_logical + e->fe_length;
            if (pos >= end)
                return 1;
        }
    }
    return 1;
}

int sal_os_fill_cache(int fd, uint64_t offset, uint64_t length, uint64_t chunk)
{
    /* One write per folio wanted: the page cache sizes the folios it
     * creates for a write by the length of the write.  Whole pages are
     * overwritten, so nothing is read from the disk. */
    static const char zeros[4096];
    struct iovec iov[512];
    uint64_t per_iov = sizeof zeros;
    if (chunk < per_iov || chunk % per_iov || chunk > per_iov * 512)
        return EINVAL;
    int n = (int)(chunk / per_iov);
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){(void *)zeros, sizeof zeros};
    uint64_t off = 0;
    while (off < length) {
        ssize_t w = pwritev(fd, iov, n, (off_t)(offset + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if ((uint64_t)w != chunk)
            return EIO; /* short: the caller falls back to faulting */
        off += chunk;
    }
    return 0;
}

int sal_os_drop_cache(int fd, void *addr, uint64_t offset, uint64_t length)
{
    if (madvise(addr, (size_t)length, MADV_DONTNEED) != 0)
        return errno;
    /* Only clean pages can be dropped: write the dirty ones (dead data)
     * back first.  (Its wait reports an error of any page of the file: a
     * test that injects one loses the pages it is about itself.) */
    WRITEBACK_FAULT(SAL_OS_DROP_CACHE, (void)0);
    int err = write_back_wait(fd, offset, length);
    if (err)
        return err;
    /* The blocks keep their old (dead) contents: faulting the range in
     * again reads them from the disk, unless sal_os_fill_cache writes the
     * pages first.  Zeroing the blocks instead (FALLOC_FL_ZERO_RANGE)
     * would turn the extents back into unwritten ones, whose next
     * write-back is a journal commit that a concurrent durable sync then
     * waits for. */
    return posix_fadvise(fd, (off_t)offset, (off_t)length, POSIX_FADV_DONTNEED);
}

int sal_os_sync_file_range(int fd, uint64_t offset, uint64_t length)
{
    WRITEBACK_FAULT(SAL_OS_SYNC_FILE_RANGE, powercut_lose_offset(offset, length));
    return sync_file_range(fd, (off_t)offset, (off_t)length,
                           SYNC_FILE_RANGE_WRITE) == 0
               ? 0
               : errno;
}

uint64_t sal_os_page_size(void)
{
    return (uint64_t)sysconf(_SC_PAGESIZE);
}

int sal_os_random(void *buf, size_t len)
{
    ssize_t n = getrandom(buf, len, 0);
    return n == (ssize_t)len ? 0 : (n < 0 ? errno : EIO);
}

#if SAL_TEST_HOOKS
static _Atomic int boot_id_override_set;
static uint8_t boot_id_override[16];

void sal_os_boot_id_override(const uint8_t *id)
{
    if (id) {
        memcpy(boot_id_override, id, 16);
        atomic_store(&boot_id_override_set, 1);
    } else {
        atomic_store(&boot_id_override_set, 0);
    }
}
#else
void sal_os_boot_id_override(const uint8_t *id) { (void)id; }
#endif

int sal_os_boot_id(uint8_t out[16])
{
#if SAL_TEST_HOOKS
    if (atomic_load(&boot_id_override_set)) {
        memcpy(out, boot_id_override, 16);
        return 0;
    }
#endif
    /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n": 32 hex digits. */
    memset(out, 0, 16); /* zeros on failure too */
    char text[64];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return EIO;
    unsigned digits = 0;
    for (ssize_t i = 0; i < n && digits < 32; i++) {
        char ch = text[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0'
              : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (v < 0)
            continue;
        out[digits / 2] = (uint8_t)(out[digits / 2] | (v << (digits % 2 ? 0 : 4)));
        digits++;
    }
    return digits == 32 ? 0 : EIO;
}
