/*
 * fuzz_heap.c - libFuzzer target: hostile heap files against sal-gc's
 * checker and the library's open.
 *
 * Each input is a sparse image of a heap file (fuzz_heap_image.h; the
 * seeds in tests/corpus/heap/ are real heaps made by fuzz_heap_seeds), so
 * that mutations land in the superblock, the commit slots, the segment
 * tables, the object table and the objects, with the checksums optionally
 * fixed up so the fuzzer gets past them.  The file is built in a memfd and
 * given by path (/proc/self/fd/N), then:
 *
 *   1. gc_check_path() (the checker sal-gc runs), and its human, JSON and
 *      stats printers;
 *   2. sal_heap_open read-only (recovers in private memory if unclean),
 *      a reader over every root, close;
 *   3. sal_heap_open writable with SAL_OPEN_RECOVER, close;
 *   4. the checker again on what the library wrote.
 *
 * Expected: no crash, no hang, no out-of-bounds access, no leak (ASan,
 * UBSan, LeakSanitizer).  Build: cmake -DSAL_BUILD_FUZZ=ON with clang;
 * run: tests/run_fuzz.sh SECONDS.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_heap_image.h"
#include "gc.h"
#include "sal.h"

static int heap_fd = -1;
static char heap_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    heap_fd = memfd_create("fuzz-heap", MFD_CLOEXEC);
    if (heap_fd < 0) {
        /* No memfd: a file under TMPDIR. */
        const char *dir = getenv("TMPDIR");
        snprintf(heap_path, sizeof heap_path, "%s/fuzz-heap-%d", dir ? dir : "/tmp",
                 (int)getpid());
        heap_fd = open(heap_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (heap_fd < 0)
            abort();
        return 0;
    }
    snprintf(heap_path, sizeof heap_path, "/proc/self/fd/%d", heap_fd);
    return 0;
}

/*
 * Library bugs this target found, reported to the library's owner.  Inputs
 * that reach them skip the library's open, so that a fuzzing run goes on
 * looking for new ones; FUZZ_ALL_BUGS=1 runs them anyway (to check a fix).
 * Remove an entry when the library is fixed.
 *
 *  1. sal_superblock_check accepts a segtab_bytes that is not a multiple of
 *     the page (format.md says it is); a commit then stores segment records
 *     at a misaligned address (sync.c write_records: UBSan "store to
 *     misaligned address").
 *  2. sal_read / sal_info do not bound an object by its segment: on a heap
 *     that opens without recovery (closed cleanly), a damaged header with a
 *     huge size_bytes resolves, and reading the payload it describes runs
 *     past the end of the file (SIGBUS), or into the next objects.  So the
 *     payloads are read only with FUZZ_ALL_BUGS=1.
 */
static int all_bugs(void)
{
    static int all = -1;
    if (all < 0)
        all = getenv("FUZZ_ALL_BUGS") != NULL;
    return all;
}
static const char *known_library_bug(void)
{
    if (all_bugs())
        return NULL;
    sal_superblock sb;
    if (pread(heap_fd, &sb, sizeof sb, 0) != (ssize_t)sizeof sb)
        return NULL;
    if (sb.segtab_bytes % SAL_PAGE_BYTES != 0)
        return "1: segtab_bytes not a page multiple";
    return NULL;
}

static void read_roots(sal_heap *h)
{
    sal_session *r;
    if (sal_reader_open(h, &r))
        return;
    if (sal_read_begin(r) == 0) {
        for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
            sal_id id;
            if (sal_root_get(r, k, &id) || !id)
                continue;
            sal_object_info info;
            const void *p;
            if (sal_info(r, id, &info) == 0 && sal_read(r, id, &p) == 0 && all_bugs()) {
                /* Touch the payload and the children. */
                volatile uint8_t sink = 0;
                const uint8_t *b = p;
                for (uint64_t i = 0; i < info.size_bytes; i += 64)
                    sink ^= b[i];
                const sal_id *child = p;
                for (unsigned c = 0; c < info.nrefs; c++)
                    if (child[c])
                        (void)sal_info(r, child[c], &info);
                (void)sink;
            }
            (void)sal_release(r, id);
        }
        (void)sal_read_end(r);
    }
    (void)sal_session_close(r);
}

static void check(void)
{
    gc_options o;
    gc_options_init(&o);
    o.quiet = 1;
    o.progress = -1;
    gc_report r;
    gc_report_init(&r, &o);
    (void)gc_check_path(heap_path, &o, &r);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (out) {
        gc_print_check(out, &r, &o);
        gc_print_check_json(out, &r);
        gc_print_stats(out, &r);
        gc_print_stats_json(out, &r);
        fclose(out);
    }
    free(buf);
    gc_report_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (heap_fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    if (fz_image_to_file(heap_fd, data, size) == 0)
        return 0;

    check();
    if (known_library_bug())
        return 0;

    sal_options o;
    sal_options_init(&o);
    o.ready_segments = 0;
    o.flags = SAL_OPEN_READONLY;
    sal_heap *h = NULL;
    if (sal_heap_open(heap_path, &o, &h) == 0) {
        sal_heap_stats st;
        (void)sal_heap_stats_get(h, &st);
        read_roots(h);
        (void)sal_heap_close(h);
    }

    o.flags = SAL_OPEN_RECOVER;
    if (sal_heap_open(heap_path, &o, &h) == 0) {
        read_roots(h);
        (void)sal_heap_close(h);
        check();
    }
    return 0;
}
