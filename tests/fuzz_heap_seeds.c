/*
 * fuzz_heap_seeds.c - make the seed corpus of fuzz_heap: small real heaps
 * written as sparse images (fuzz_heap_image.h), a few KiB each.
 *
 *   fuzz_heap_seeds DIR
 *
 * The heaps use the smallest geometry the format allows: 1 MiB segments,
 * an 8 MiB reservation, a table of a few hundred ids (one 2 MiB chunk), so
 * the file is 5 to 8 MiB of which a few pages are not zero.
 *
 *   empty       created and closed
 *   tree        roots, shared children, a chain, a released object
 *   unclean     a writer killed after a durable commit and more changes
 *   protect     a writer killed after a protect-mode commit (volatile slot)
 *   segments    objects in three segments, one of them large
 *   resealed    `tree` with the flags that reseal every checksum
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz_heap_image.h"
#include "sal.h"

#define CHECK(expr)                                                                          \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_) {                                                                           \
            fprintf(stderr, "fuzz_heap_seeds: %s: %s\n", #expr, sal_strerror(rc_));          \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static sal_options small_options(void)
{
    sal_options o;
    sal_options_init(&o);
    o.segment_bytes = SAL_MIN_SEGMENT_BYTES;
    o.reserve_bytes = 8u << 20;
    o.max_objects = 500;
    o.ready_segments = 0;
    return o;
}

static sal_id leaf(sal_session *s, size_t size, unsigned type, int fill)
{
    sal_id id;
    void *p;
    CHECK(sal_alloc(s, size, 0, type, &id, &p));
    memset(p, fill, size);
    return id;
}

/* root 0 -> A [B, C, null]; B [E]; C [E]; root 1 -> C; root 2 -> a
 * chain of 12; U committed and released. */
static void populate(sal_heap *h, sal_session *s)
{
    CHECK(sal_write_begin(s));
    sal_id e = leaf(s, 40, 5, 0x55);
    sal_id b, c, a;
    void *p;
    CHECK(sal_alloc(s, 16, 1, 2, &b, &p));
    CHECK(sal_alloc(s, 24, 1, 3, &c, &p));
    CHECK(sal_alloc(s, 40, 3, 1, &a, &p));
    CHECK(sal_set_child(s, b, 0, e));
    CHECK(sal_retain(s, e));
    CHECK(sal_set_child(s, c, 0, e));
    CHECK(sal_set_child(s, a, 0, b));
    CHECK(sal_retain(s, c));
    CHECK(sal_set_child(s, a, 1, c));
    CHECK(sal_root_set(s, 0, a));
    CHECK(sal_root_set(s, 1, c));
    sal_id next = leaf(s, 8, 9, 0x11);
    for (int i = 0; i < 12; i++) {
        sal_id n;
        CHECK(sal_alloc(s, 16, 1, 10, &n, &p));
        memset((char *)p + 8, i, 8);
        CHECK(sal_set_child(s, n, 0, next));
        next = n;
    }
    CHECK(sal_root_set(s, 2, next));
    CHECK(sal_root_set(s, 3, leaf(s, 32, 11, 0x77)));
    CHECK(sal_write_end(s));
    CHECK(sal_sync(h, SAL_SYNC_DURABLE));
    CHECK(sal_write_begin(s));
    CHECK(sal_root_set(s, 3, SAL_NULL_ID));
    CHECK(sal_write_end(s));
    CHECK(sal_sync(h, SAL_SYNC_DURABLE));
}

static void emit(const char *heap, const char *dir, const char *name, unsigned flags)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (fz_file_to_image(heap, path, flags) != 0) {
        fprintf(stderr, "fuzz_heap_seeds: cannot write %s\n", path);
        exit(1);
    }
    unlink(heap);
}

static void make_empty(const char *heap)
{
    sal_options o = small_options();
    sal_heap *h;
    CHECK(sal_heap_create(heap, &o, &h));
    CHECK(sal_heap_close(h));
}

static void make_tree(const char *heap)
{
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    CHECK(sal_heap_create(heap, &o, &h));
    CHECK(sal_session_open(h, &s));
    populate(h, s);
    CHECK(sal_session_close(s));
    CHECK(sal_heap_close(h));
}

static void make_killed(const char *heap, int mode)
{
    int fds[2];
    if (pipe(fds) != 0)
        exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        sal_options o = small_options();
        sal_heap *h;
        sal_session *s;
        CHECK(sal_heap_create(heap, &o, &h));
        CHECK(sal_session_open(h, &s));
        populate(h, s);
        CHECK(sal_write_begin(s));
        CHECK(sal_root_set(s, 4, leaf(s, 48, 12, 0x33)));
        CHECK(sal_root_set(s, 1, SAL_NULL_ID));
        CHECK(sal_write_end(s));
        CHECK(sal_sync(h, mode));
        CHECK(sal_write_begin(s));
        CHECK(sal_root_set(s, 5, leaf(s, 64, 13, 0x44))); /* not committed */
        CHECK(sal_root_set(s, 0, SAL_NULL_ID));
        CHECK(sal_write_end(s));
        char c = 'k';
        if (write(fds[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c;
    if (read(fds[0], &c, 1) != 1)
        exit(1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(fds[1]);
}

static void make_segments(const char *heap)
{
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    CHECK(sal_heap_create(heap, &o, &h));
    CHECK(sal_session_open(h, &s));
    CHECK(sal_write_begin(s));
    sal_id top;
    void *p;
    CHECK(sal_alloc(s, 24, 3, 1, &top, &p));
    for (unsigned k = 0; k < 3; k++) {
        /* Mostly zero payloads: the image stays small. */
        sal_id big;
        CHECK(sal_alloc(s, 700000, 0, 2, &big, &p));
        memset(p, 0, 700000);
        memset(p, 0xab, 64);
        CHECK(sal_set_child(s, top, k, big));
    }
    CHECK(sal_root_set(s, 0, top));
    CHECK(sal_write_end(s));
    CHECK(sal_session_close(s));
    CHECK(sal_heap_close(h));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_heap_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    /* The heaps themselves are made outside the corpus directory. */
    const char *tmp = getenv("TMPDIR");
    char work[4096], heap[4200];
    snprintf(work, sizeof work, "%s/sal-seeds-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(work)) {
        perror("fuzz_heap_seeds: mkdtemp");
        return 1;
    }
    snprintf(heap, sizeof heap, "%s/heap", work);
    make_empty(heap);
    emit(heap, dir, "empty", 0);
    make_tree(heap);
    emit(heap, dir, "tree", 0);
    make_tree(heap);
    emit(heap, dir, "resealed",
         FUZZ_RESEAL_SUPERBLOCK | FUZZ_RESEAL_SLOTS | FUZZ_RESEAL_SEGTAB);
    make_killed(heap, SAL_SYNC_DURABLE);
    emit(heap, dir, "unclean", 0);
    make_killed(heap, SAL_SYNC_PROTECT);
    emit(heap, dir, "protect", FUZZ_RESEAL_SEGTAB);
    make_segments(heap);
    emit(heap, dir, "segments", 0);
    rmdir(work);
    return 0;
}
