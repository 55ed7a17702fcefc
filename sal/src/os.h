/*
 * os.h - the one seam between sal and the operating system.
 *
 * Every call to mmap, munmap, mprotect, msync, madvise, mlock,
 * sync_file_range, fallocate, ftruncate and flock in the library goes
 * through os.c, and nowhere else.  That gives the tests one place to inject
 * faults (sal_os_fault_set) and, later, to record durable flushes for the
 * power-loss simulation.
 *
 * Every function returns 0 or a positive errno value; none sets errno for
 * the caller to read.
 */
#ifndef SAL_OS_H
#define SAL_OS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Operations that can be made to fail on purpose (test builds). */
typedef enum sal_os_op {
    SAL_OS_OPEN,
    SAL_OS_MMAP,
    SAL_OS_MPROTECT,
    SAL_OS_MSYNC,
    SAL_OS_MADVISE,
    SAL_OS_FALLOCATE,
    SAL_OS_FTRUNCATE,
    SAL_OS_SYNC_FILE_RANGE,
    SAL_OS_FSYNC,
    SAL_OS_PWRITE, /* sal_os_rewrite */
    SAL_OS_DROP_CACHE, /* the write-back wait of sal_os_drop_cache */
    SAL_OS_OP_COUNT
} sal_os_op;

/* Make the next `after` calls of `op` succeed and the ones after fail with
 * `err` (a positive errno), `count` times (count < 0: forever).  err == 0
 * clears the fault.  Compiled in only with SAL_TEST_HOOKS; otherwise it
 * returns ENOSYS. */
int sal_os_fault_set(sal_os_op op, int err, long after, long count);
void sal_os_fault_clear_all(void);
/* Calls of `op` since its fault was set (test builds; -1 otherwise). */
long sal_os_fault_calls(sal_os_op op);

/* Power-loss simulation (test builds; ENOSYS otherwise).  Arm with the
 * path of a shadow file that holds a copy of the heap as it is on "disk";
 * from then on every durable flush (msync MS_SYNC) of the heap's writable
 * mapping is copied into it, until `cut_after` flushes have been recorded
 * (negative: no cut).  A power cut is the shadow plus any subset of the
 * pages written since.  NULL disarms. */
int sal_os_powercut_arm(const char *shadow_path, long cut_after);
/* Durable flushes seen since arming (recorded or past the cut). */
long sal_os_powercut_flushes(void);
/* The model of a failed write-back, which every injected failure of a
 * write-back call (msync, sync_file_range) applies to its range: Linux
 * marks the pages clean without their having reached the disk, so later
 * flushes skip them until they are written again (through the mapping, a
 * change of contents; through the file, sal_os_rewrite).  This call
 * applies it to a range of the mapping directly: a write-back the kernel
 * started on its own that failed.  EINVAL if not armed. */
int sal_os_powercut_lose(const void *addr, uint64_t length);

/* File */
int sal_os_open(const char *path, int flags, unsigned mode, int *fd_out);
int sal_os_close(int fd);
/* A second open file description of the file `fd` is open on, read-write
 * (through /proc/self/fd).  The kernel reports a write-back error once to
 * each file description: waits on this one do not take the reports meant
 * for waits on `fd`. */
int sal_os_reopen(int fd, int *fd_out);
int sal_os_file_size(int fd, uint64_t *size_out);
int sal_os_file_kind_ok(int fd); /* 0 if a regular file, else EINVAL-ish */
int sal_os_lock(int fd, int exclusive); /* EWOULDBLOCK when held */
int sal_os_fallocate(int fd, uint64_t offset, uint64_t length);
int sal_os_ftruncate(int fd, uint64_t length);
int sal_os_fsync(int fd);
int sal_os_pread(int fd, void *buf, size_t len, uint64_t offset);
int sal_os_pwrite(int fd, const void *buf, size_t len, uint64_t offset);
int sal_os_unlink(const char *path);

/* Mapping */
/* private_copy: MAP_PRIVATE, writes stay in this process (a read-only look
 * that recovers in memory). */
int sal_os_map_file(int fd, uint64_t length, int writable, int private_copy,
                    void **addr_out);
int sal_os_unmap(void *addr, uint64_t length);
int sal_os_protect_readonly(void *addr, uint64_t length);
int sal_os_protect_readwrite(void *addr, uint64_t length);
int sal_os_msync(void *addr, uint64_t length, int synchronous);
int sal_os_populate_write(void *addr, uint64_t length);
/* Write a mapped range of the file over itself through the file (pwrite
 * from the mapping), which makes its pages dirty again: after a failed
 * write-back, Linux keeps the contents in the page cache but marks the
 * pages clean, and only a write makes a later flush write them.  For
 * ranges nobody writes meanwhile (read-only or owned by the caller): a
 * concurrent store could be overwritten with the old bytes. */
int sal_os_rewrite(int fd, const void *addr, uint64_t offset, uint64_t length);

int sal_os_sync_file_range(int fd, uint64_t offset, uint64_t length);
/* Write a range to the device and wait for it (sync_file_range with both
 * waits): on the device, but durable only after the next flush (an msync
 * with MS_SYNC of any range of the file), which the power-cut simulation
 * models. */
int sal_os_write_and_wait(int fd, const void *addr, uint64_t offset, uint64_t length);
/* Ask for large (2 MiB) or small (4 KiB) page-cache folios for a range
 * faulted in from now on. */
int sal_os_advise_folios(void *addr, uint64_t length, int large);
/* Unmap a range, write its dirty pages back and drop its page-cache pages
 * (the blocks keep their contents), so that the cache can be built again
 * with folios of another size.  Dead data only. */
int sal_os_drop_cache(int fd, void *addr, uint64_t offset, uint64_t length);
/* Write zeros over a range through the file, `chunk` bytes (a multiple of
 * 4 KiB, at most 2 MiB) per write: the page cache then holds folios of
 * that size, built without reading the disk.  Dead data only. */
int sal_os_fill_cache(int fd, uint64_t offset, uint64_t length, uint64_t chunk);
/* Whether every block of a file range is allocated and written (1), not
 * (0: a hole, or unwritten or delayed extents), or unknown (-1: the file
 * system cannot say).  The first write-back into an unwritten extent on
 * ext4 converts it, a journal commit that a durable sync then waits for. */
int sal_os_range_written(int fd, uint64_t offset, uint64_t length);

uint64_t sal_os_page_size(void);
int sal_os_random(void *buf, size_t len);
/* The kernel's boot id (changes at every boot): a volatile commit is
 * trusted only in the boot that wrote it.  Test builds can pretend a
 * reboot with sal_os_boot_id_override (NULL: back to the real one). */
int sal_os_boot_id(uint8_t out[16]); /* out: zeros if it fails */
void sal_os_boot_id_override(const uint8_t *id);

#endif
