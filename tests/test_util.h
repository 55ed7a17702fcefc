/*
 * test_util.h - helpers shared by the sal CMocka tests.
 *
 * Every test file includes this (it includes <cmocka.h>).  It gives:
 *   - a fresh mkdtemp() directory per test (tu_fixture_setup/teardown),
 *     removed afterwards;
 *   - a replayable seed: `test_x --seed N` or SAL_TEST_SEED=N, printed at
 *     start; `--filter PATTERN` / `--skip PATTERN` select cmocka tests;
 *   - a size scale: TSan builds run the biggest tests smaller
 *     (SAL_TEST_SCALE=1 forces the full sizes);
 *   - deterministic fill/check patterns for object payloads;
 *   - a failure latch for worker threads (cmocka's assert_* must only be
 *     called on the thread that runs the test: it longjmps).
 */
#ifndef SAL_TEST_UTIL_H
#define SAL_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sal.h"

/* ---------------------------------------------------------------------
 * Sanitizer detection (the build also passes SAL_TEST_SANITIZER=1).
 * --------------------------------------------------------------------- */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#if !defined(TU_SANITIZED) && defined(SAL_TEST_SANITIZER) && SAL_TEST_SANITIZER
#define TU_SANITIZED 1
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

/* ---------------------------------------------------------------------
 * Assertions on sal return codes, with the error's name in the message.
 * --------------------------------------------------------------------- */
#define TU_OK(expr)                                                          \
    do {                                                                     \
        int tu_rc_ = (expr);                                                 \
        if (tu_rc_ != 0)                                                     \
            fail_msg("%s returned %d (%s)", #expr, tu_rc_,                   \
                     sal_strerror(tu_rc_));                                  \
    } while (0)

#define TU_ERR(expr, want)                                                   \
    do {                                                                     \
        int tu_rc_ = (expr);                                                 \
        int tu_want_ = (want);                                               \
        if (tu_rc_ != tu_want_)                                              \
            fail_msg("%s returned %d (%s), expected %d (%s)", #expr, tu_rc_, \
                     sal_strerror(tu_rc_), tu_want_,                         \
                     sal_strerror(tu_want_));                                \
    } while (0)

/* ---------------------------------------------------------------------
 * Seed, scale, command line.
 * --------------------------------------------------------------------- */
static uint64_t tu_seed_value;
static int tu_seed_given;

static inline uint64_t tu_seed(void) { return tu_seed_value; }

/* The big tests run their full sizes everywhere except under
 * ThreadSanitizer (5-15x slower, and more with 64 threads on 2 cores),
 * where a size is divided by `tsan_div`.  SAL_TEST_SCALE=D divides every
 * big size by D instead (SAL_TEST_SCALE=1: full sizes under TSan too). */
static inline uint64_t tu_scale_div(uint64_t tsan_div)
{
    const char *s = getenv("SAL_TEST_SCALE");
    if (s && *s) {
        unsigned long long v = strtoull(s, NULL, 10);
        return v ? v : 1;
    }
    return TU_TSAN ? tsan_div : 1;
}

static inline uint64_t tu_scaled(uint64_t n, uint64_t tsan_div)
{
    uint64_t d = tu_scale_div(tsan_div);
    uint64_t r = n / d;
    return r ? r : 1;
}

static inline void tu_init(int argc, char **argv)
{
    const char *env = getenv("SAL_TEST_SEED");
    if (env && *env) {
        tu_seed_value = strtoull(env, NULL, 0);
        tu_seed_given = 1;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            tu_seed_value = strtoull(argv[++i], NULL, 0);
            tu_seed_given = 1;
        } else if (!strcmp(argv[i], "--filter") && i + 1 < argc) {
            cmocka_set_test_filter(argv[++i]);
        } else if (!strcmp(argv[i], "--skip") && i + 1 < argc) {
            cmocka_set_skip_filter(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: %s [--seed N] [--filter PATTERN] [--skip PATTERN]\n"
                    "  (SAL_TEST_SEED=N also sets the seed; SAL_TEST_SCALE=D "
                    "divides the big sizes)\n",
                    argv[0]);
            exit(2);
        }
    }
    if (!tu_seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        tu_seed_value = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^
                        ((uint64_t)getpid() << 20);
    }
    printf("[ SEED     ] %s: seed %" PRIu64 " (replay: SAL_TEST_SEED=%" PRIu64
           " or --seed %" PRIu64 ")%s\n",
           argv[0], tu_seed_value, tu_seed_value, tu_seed_value,
           tu_scale_div(2) > 1 ? " [scaled: the biggest tests run smaller (SAL_TEST_SCALE=1: "
                                 "full sizes)]"
                               : "");
    fflush(stdout);
}

/* splitmix64: small, good, and every thread can have its own state. */
static inline uint64_t tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t tu_rand_below(uint64_t *state, uint64_t n)
{
    return n ? tu_rand(state) % n : 0;
}

/* ---------------------------------------------------------------------
 * Payload patterns: bytes derived from a key, so any object can be checked
 * knowing only its key.  `skip_bytes` leaves the leading child slots alone.
 * --------------------------------------------------------------------- */
static inline uint8_t tu_pattern_byte(uint64_t key, size_t i)
{
    uint64_t z = key * 0x9e3779b97f4a7c15ull + (uint64_t)(i >> 3) * 0xff51afd7ed558ccdull;
    z ^= z >> 29;
    return (uint8_t)(z >> ((i & 7) * 8));
}

static inline void tu_fill(void *p, size_t len, size_t skip_bytes, uint64_t key)
{
    uint8_t *b = (uint8_t *)p;
    for (size_t i = skip_bytes; i < len; i++)
        b[i] = tu_pattern_byte(key, i);
}

/* Returns the index of the first wrong byte, or (size_t)-1 if all match. */
static inline size_t tu_check(const void *p, size_t len, size_t skip_bytes, uint64_t key)
{
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = skip_bytes; i < len; i++)
        if (b[i] != tu_pattern_byte(key, i))
            return i;
    return (size_t)-1;
}

#define TU_CHECK_OK ((size_t)-1)

/* ---------------------------------------------------------------------
 * Temporary directories and files.
 * --------------------------------------------------------------------- */
typedef struct tu_ctx {
    char dir[PATH_MAX];
    char path[PATH_MAX]; /* dir/heap */
} tu_ctx;

static inline int tu_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void tu_rm_rf(const char *dir)
{
    nftw(dir, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static inline int tu_mkdtemp(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(out, cap, "%s/sal-test-XXXXXX", base);
    return mkdtemp(out) ? 0 : errno;
}

static inline int tu_fixture_setup(void **state)
{
    tu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    if (tu_mkdtemp(c->dir, sizeof(c->dir)) != 0) {
        free(c);
        return -1;
    }
    snprintf(c->path, sizeof(c->path), "%s/heap", c->dir);
    *state = c;
    return 0;
}

static inline int tu_fixture_teardown(void **state)
{
    tu_ctx *c = (tu_ctx *)*state;
    if (c) {
        tu_rm_rf(c->dir);
        free(c);
    }
    return 0;
}

#define TU_TEST(f) cmocka_unit_test_setup_teardown(f, tu_fixture_setup, tu_fixture_teardown)

static inline void tu_join(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Whole file into memory (NULL on error; *len_out = size). */
static inline uint8_t *tu_read_file(const char *path, size_t *len_out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (buf)
        *len_out = len;
    return buf;
}

static inline int tu_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return errno;
    size_t put = 0;
    while (put < len) {
        ssize_t w = pwrite(fd, (const uint8_t *)data + put, len - put, (off_t)put);
        if (w <= 0) {
            int e = errno;
            close(fd);
            return e ? e : EIO;
        }
        put += (size_t)w;
    }
    close(fd);
    return 0;
}

/* A 64-bit hash of a whole file (FNV-style over 8-byte words), plus its
 * size.  Returns 0 on success. */
static inline int tu_hash_file(const char *path, uint64_t *hash_out, uint64_t *size_out)
{
    *hash_out = 0;
    *size_out = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;
    uint64_t h = 0xcbf29ce484222325ull, n = 0;
    static _Thread_local uint64_t buf[1 << 14];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0) {
            int e = errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        size_t words = (size_t)r / 8;
        for (size_t i = 0; i < words; i++) {
            h ^= buf[i];
            h *= 0x100000001b3ull;
            h ^= h >> 32;
        }
        for (size_t i = words * 8; i < (size_t)r; i++) {
            h ^= ((uint8_t *)buf)[i];
            h *= 0x100000001b3ull;
        }
        n += (uint64_t)r;
    }
    close(fd);
    *hash_out = h ^ n;
    *size_out = n;
    return 0;
}

/* Patch bytes of a file in place. */
static inline int tu_patch(const char *path, uint64_t offset, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return errno;
    ssize_t w = pwrite(fd, data, len, (off_t)offset);
    int e = (w == (ssize_t)len) ? 0 : (errno ? errno : EIO);
    close(fd);
    return e;
}

static inline int tu_peek(const char *path, uint64_t offset, void *data, size_t len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;
    ssize_t r = pread(fd, data, len, (off_t)offset);
    int e = (r == (ssize_t)len) ? 0 : (errno ? errno : EIO);
    close(fd);
    return e;
}

static inline int tu_xor_byte(const char *path, uint64_t offset, uint8_t mask)
{
    uint8_t b;
    int e = tu_peek(path, offset, &b, 1);
    if (e)
        return e;
    b ^= mask;
    return tu_patch(path, offset, &b, 1);
}

static inline int tu_copy_file(const char *from, const char *to)
{
    size_t len = 0;
    uint8_t *buf = tu_read_file(from, &len);
    if (!buf)
        return errno ? errno : EIO;
    int e = tu_write_file(to, buf, len);
    free(buf);
    return e;
}

/* ---------------------------------------------------------------------
 * Heaps.
 * --------------------------------------------------------------------- */

/* Small, deterministic options for tests: 1 MiB segments, 1 GiB range. */
static inline sal_options tu_small_options(void)
{
    sal_options o;
    sal_options_init(&o);
    o.segment_bytes = SAL_MIN_SEGMENT_BYTES;
    o.reserve_bytes = 1ull << 30;
    o.max_objects = 1ull << 20;
    return o;
}

/* A new heap with options `o` at the context's path, and an allocating
 * session on it. */
static inline sal_heap *tu_create_with(tu_ctx *c, const sal_options *o, sal_session **s)
{
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, o, &h));
    TU_OK(sal_session_open(h, s));
    return h;
}

/* The same with tu_small_options(). */
static inline sal_heap *tu_open_small(tu_ctx *c, sal_session **s)
{
    sal_options o = tu_small_options();
    return tu_create_with(c, &o, s);
}

static inline void tu_close_all(sal_heap *h, sal_session *s)
{
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
}

/* A test that needs a hook of test builds (`hook_call` is ENOSYS without
 * them) closes its heap and is skipped in a build without. */
#define TU_SKIP_WITHOUT_HOOK(hook_call, h, s)                                 \
    do {                                                                      \
        if ((hook_call) == ENOSYS) {                                          \
            tu_close_all(h, s);                                               \
            skip(); /* a build without test hooks */                          \
        }                                                                     \
    } while (0)

static inline sal_heap_stats tu_stats(sal_heap *h)
{
    sal_heap_stats s;
    memset(&s, 0xab, sizeof(s));
    int rc = sal_heap_stats_get(h, &s);
    if (rc != 0)
        fail_msg("sal_heap_stats_get: %d (%s)", rc, sal_strerror(rc));
    return s;
}

static inline uint32_t tu_index(sal_id id) { return (uint32_t)(id & 0xffffffffu); }
static inline uint32_t tu_gen(sal_id id) { return (uint32_t)((id >> 32) & 0xffffffu); }
/* qsort/bsearch order of uint64_t values (ids among them). */
static inline int tu_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Publishing a root needs a write section: these open one around the call
 * (use sal_root_set/sal_root_cas directly inside a section). */
static inline int tu_root_set(sal_session *s, unsigned root, sal_id id)
{
    int rc = sal_write_begin(s);
    if (rc)
        return rc;
    rc = sal_root_set(s, root, id);
    int rc2 = sal_write_end(s);
    return rc ? rc : rc2;
}

static inline int tu_root_cas(sal_session *s, unsigned root, sal_id expected, sal_id desired)
{
    int rc = sal_write_begin(s);
    if (rc)
        return rc;
    rc = sal_root_cas(s, root, expected, desired);
    int rc2 = sal_write_end(s);
    return rc ? rc : rc2;
}

/* ---------------------------------------------------------------------
 * Failure latch for worker threads.
 * --------------------------------------------------------------------- */
typedef struct tu_latch {
    atomic_int failed;
    char msg[1024];
} tu_latch;

static inline void tu_latch_fail(tu_latch *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void tu_latch_fail(tu_latch *l, const char *fmt, ...)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&l->failed, &expected, 1)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->msg, sizeof(l->msg), fmt, ap);
        va_end(ap);
    }
}

static inline int tu_latch_failed(tu_latch *l)
{
    return atomic_load_explicit(&l->failed, memory_order_acquire);
}

/* In a worker: on failure record the message and `return ret`. */
#define TU_W_CHECK(latch, cond, ret, ...)                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            tu_latch_fail((latch), __VA_ARGS__);                             \
            return ret;                                                      \
        }                                                                    \
    } while (0)

#define TU_W_OK(latch, expr, ret)                                            \
    do {                                                                     \
        int tu_rc_ = (expr);                                                 \
        if (tu_rc_ != 0) {                                                   \
            tu_latch_fail((latch), "%s:%d: %s returned %d (%s)", __FILE__,   \
                          __LINE__, #expr, tu_rc_, sal_strerror(tu_rc_));    \
            return ret;                                                      \
        }                                                                    \
    } while (0)

/* Main thread: turn a latched worker failure into a cmocka failure. */
#define TU_LATCH_ASSERT(latch)                                               \
    do {                                                                     \
        if (tu_latch_failed(latch))                                          \
            fail_msg("worker failed: %s", (latch)->msg);                     \
    } while (0)

/* ---------------------------------------------------------------------
 * Run a function in a forked child, so that a crash (SIGSEGV, SIGBUS) is a
 * test failure with a message instead of the end of the test binary.
 * Returns the wait status.  The child exits with fn's return value.
 * --------------------------------------------------------------------- */
static inline int tu_in_child(int (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(fn(arg) & 0xff);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
