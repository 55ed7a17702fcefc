/*
 * test_gc_util.h - helpers for the sal-gc tests (test_gc_*.c).
 *
 *  - gc_run(): run the sal-gc binary (SAL_GC_PATH, given by CMake) as a
 *    subprocess, capture its output, enforce a deadline;
 *  - gc_count(): a damage class's count in `sal-gc check --json` output;
 *  - the file layout (superblock, current slot, table entries, object
 *    headers, segment records) read and patched with pread/pwrite at
 *    offsets from format.h, resealing checksums where asked;
 *  - a sound heap with several roots and shared children (gc_build);
 *  - snapshots of every reachable object's contents, compared after a
 *    repair.
 */
#ifndef SAL_TEST_GC_UTIL_H
#define SAL_TEST_GC_UTIL_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>

#include "format.h"
#include "test_util.h"

#ifndef SAL_GC_PATH
#error "SAL_GC_PATH (the sal-gc binary) must be defined by the build"
#endif

/* ---------------------------------------------------------------------
 * Running sal-gc.
 * --------------------------------------------------------------------- */

#define GC_OUT_BYTES (256 * 1024)
#define GC_TIMED_OUT (-1)

/* Run `sal-gc ARGS... NULL` with SAL_GC_TEST_KILL=kill_point if given.
 * Output (stdout and stderr) goes to `out`.  Returns the exit code,
 * 128 + signal if killed by one, or GC_TIMED_OUT (the child is killed) if
 * it runs longer than `timeout_s`. */
static inline int gc_runv(char *out, size_t cap, double timeout_s, const char *kill_point,
                          const char *const *args)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = SAL_GC_PATH;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int fds[2];
    if (pipe(fds) != 0)
        return -2;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -2;
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        if (kill_point)
            setenv("SAL_GC_TEST_KILL", kill_point, 1);
        else
            unsetenv("SAL_GC_TEST_KILL");
        execv(SAL_GC_PATH, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    double deadline = tu_now() + timeout_s;
    int timed_out = 0;
    for (;;) {
        double left = deadline - tu_now();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        char buf[4096];
        ssize_t got = read(fds[0], buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        size_t take = (size_t)got;
        if (len + take >= cap)
            take = cap - 1 - len;
        memcpy(out + len, buf, take);
        len += take;
    }
    out[len] = 0;
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        return GC_TIMED_OUT;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

#define gc_run(out, cap, ...)                                                        \
    gc_runv((out), (cap), 120.0, NULL, (const char *const[]){__VA_ARGS__, NULL})
#define gc_run_kill(out, cap, point, ...)                                            \
    gc_runv((out), (cap), 120.0, (point), (const char *const[]){__VA_ARGS__, NULL})

/* A class's count from `check --json` output; -1 if absent. */
static inline long gc_count(const char *json, const char *cls)
{
    char key[96];
    snprintf(key, sizeof key, "\"%s\": {\"count\": ", cls);
    const char *p = strstr(json, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static const char *const gc_classes[] = {
    "unclean-shutdown", "unreachable-object", "refcount-mismatch", "out-of-range",
    "overlapping-objects", "header-damage", "segment-accounting", "dangling-child"};

/* Print the output on failure. */
#define GC_EXPECT(code, want, out)                                                   \
    do {                                                                             \
        int gc_c_ = (code);                                                          \
        if (gc_c_ != (want)) {                                                       \
            fprintf(stderr, "---- sal-gc output ----\n%s\n-----------------------\n", \
                    (out));                                                          \
            fail_msg("sal-gc exited %d, expected %d", gc_c_, (want));                \
        }                                                                            \
    } while (0)

/* check --json: exit 4 with `cls` named, and (only_cls) no other class. */
static inline void gc_expect_damage(const char *path, const char *cls, int only_cls)
{
    char *out = malloc(GC_OUT_BYTES);
    assert_non_null(out);
    int code = gc_run(out, GC_OUT_BYTES, "check", "--json", "--examples", "16", path);
    GC_EXPECT(code, 4, out);
    long n = gc_count(out, cls);
    if (n <= 0) {
        fprintf(stderr, "%s\n", out);
        fail_msg("sal-gc check did not name %s", cls);
    }
    for (size_t i = 0; only_cls && i < sizeof gc_classes / sizeof *gc_classes; i++) {
        if (!strcmp(gc_classes[i], cls))
            continue;
        if (gc_count(out, gc_classes[i]) != 0) {
            fprintf(stderr, "%s\n", out);
            fail_msg("sal-gc check named %s besides %s", gc_classes[i], cls);
        }
    }
    /* The human-readable form names it too (SAL_GC_TEST_VERBOSE=1 shows it). */
    code = gc_run(out, GC_OUT_BYTES, "check", path);
    GC_EXPECT(code, 4, out);
    if (getenv("SAL_GC_TEST_VERBOSE"))
        printf("%s", out);
    if (!strstr(out, cls)) {
        fprintf(stderr, "%s\n", out);
        fail_msg("the human output does not name %s", cls);
    }
    free(out);
}

static inline void gc_expect_clean(const char *path)
{
    char *out = malloc(GC_OUT_BYTES);
    assert_non_null(out);
    int code = gc_run(out, GC_OUT_BYTES, "check", path);
    GC_EXPECT(code, 0, out);
    free(out);
}

static inline void gc_expect_repair(const char *path, int want)
{
    char *out = malloc(GC_OUT_BYTES);
    assert_non_null(out);
    int code = gc_run(out, GC_OUT_BYTES, "repair", path);
    GC_EXPECT(code, want, out);
    if (getenv("SAL_GC_TEST_VERBOSE"))
        printf("%s", out);
    free(out);
}

/* ---------------------------------------------------------------------
 * The file layout.
 * --------------------------------------------------------------------- */

typedef struct gc_layout {
    sal_superblock sb;
    sal_commit_slot slot; /* the current durable slot */
    unsigned slot_index;
} gc_layout;

static inline void lay_read(const char *path, gc_layout *l)
{
    memset(l, 0, sizeof *l);
    TU_OK(tu_peek(path, 0, &l->sb, sizeof l->sb));
    int pick = -1;
    sal_commit_slot s[2];
    for (unsigned i = 0; i < 2; i++) {
        TU_OK(tu_peek(path, SAL_SLOT_OFFSET(i), &s[i], sizeof s[i]));
        if (sal_slot_valid(&s[i], &l->sb) && (pick < 0 || s[i].epoch > s[pick].epoch))
            pick = (int)i;
    }
    assert_true(pick >= 0);
    l->slot = s[pick];
    l->slot_index = (unsigned)pick;
}

static inline uint64_t lay_entry_off(const gc_layout *l, sal_id id)
{
    return l->sb.table_offset + 8ull * (id & 0xffffffffu);
}

static inline uint64_t lay_entry(const char *path, const gc_layout *l, sal_id id)
{
    uint64_t e;
    TU_OK(tu_peek(path, lay_entry_off(l, id), &e, 8));
    return e;
}

static inline void lay_set_entry(const char *path, const gc_layout *l, sal_id id, uint64_t e)
{
    TU_OK(tu_patch(path, lay_entry_off(l, id), &e, 8));
}

/* File offset of a live object's header. */
static inline uint64_t lay_header_off(const char *path, const gc_layout *l, sal_id id)
{
    return sal_entry_loc(lay_entry(path, l, id)) << 3;
}

static inline void lay_header(const char *path, const gc_layout *l, sal_id id,
                              sal_object_header *h)
{
    TU_OK(tu_peek(path, lay_header_off(path, l, id), h, sizeof *h));
    assert_true(h->id == id);
}

static inline uint64_t lay_segment_of(const gc_layout *l, uint64_t off)
{
    return (off - l->sb.data_offset) / l->sb.segment_bytes;
}

static inline uint64_t lay_record_off(const gc_layout *l, uint64_t seg)
{
    return l->sb.segtab_offset + (uint64_t)l->slot_index * l->sb.segtab_bytes +
           seg * sizeof(sal_segment_record);
}

/* Rewrite segment record `seg` of the current slot, then its segment-table
 * checksum and the slot's checksum, so that only the accounting is wrong. */
static inline void lay_set_record(const char *path, gc_layout *l, uint64_t seg,
                                  const sal_segment_record *rec)
{
    TU_OK(tu_patch(path, lay_record_off(l, seg), rec, sizeof *rec));
    uint64_t n = l->slot.segments_high_water;
    sal_segment_record *all = calloc(n ? n : 1, sizeof *all);
    assert_non_null(all);
    TU_OK(tu_peek(path, lay_record_off(l, 0), all, n * sizeof *all));
    l->slot.segtab_checksum = sal_crc32c(0, all, n * sizeof *all);
    free(all);
    sal_slot_seal(&l->slot);
    TU_OK(tu_patch(path, SAL_SLOT_OFFSET(l->slot_index), &l->slot, sizeof l->slot));
}

static inline sal_segment_record lay_record(const char *path, const gc_layout *l, uint64_t seg)
{
    sal_segment_record rec;
    TU_OK(tu_peek(path, lay_record_off(l, seg), &rec, sizeof rec));
    return rec;
}

/* ---------------------------------------------------------------------
 * A sound heap: several roots, trees with shared children, a chain, and a
 * committed object that was released afterwards (its bytes stay).
 *
 *   root 0 -> A [B, C, D, null]      B [E, F]     C [E, G]
 *   root 1 -> C                      (E: count 2; C: count 2)
 *   root 2 -> chain of 24 nodes -> leaf
 *   root 5 -> H [A, null]            (A: count 2)
 *   U: committed under root 3, then released (a free entry, bytes intact)
 * --------------------------------------------------------------------- */

typedef struct gc_sound {
    sal_id a, b, c, d, e, f, g, h, chain, u;
    uint64_t hwm;
} gc_sound;

static inline sal_id gc_alloc_filled(sal_session *s, size_t size, unsigned nrefs,
                                     unsigned type, uint64_t key, void **p_out)
{
    sal_id id;
    void *p;
    TU_OK(sal_alloc(s, size, nrefs, type, &id, &p));
    tu_fill(p, size, 8u * nrefs, key);
    if (p_out)
        *p_out = p;
    return id;
}

static inline void gc_build(const char *path, gc_sound *g)
{
    sal_options o = tu_small_options();
    o.ready_segments = 0;
    sal_heap *h;
    TU_OK(sal_heap_create(path, &o, &h));
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_write_begin(s));
    g->e = gc_alloc_filled(s, 72, 0, 5, 105, NULL);
    g->f = gc_alloc_filled(s, 130, 0, 6, 106, NULL);
    g->g = gc_alloc_filled(s, 40, 0, 7, 107, NULL);
    g->d = gc_alloc_filled(s, 200, 0, 4, 104, NULL);
    g->b = gc_alloc_filled(s, 48, 2, 2, 102, NULL);
    g->c = gc_alloc_filled(s, 64, 2, 3, 103, NULL);
    g->a = gc_alloc_filled(s, 96, 4, 1, 101, NULL);
    g->h = gc_alloc_filled(s, 16, 2, 8, 108, NULL);
    TU_OK(sal_set_child(s, g->b, 0, g->e));
    TU_OK(sal_retain(s, g->e));
    TU_OK(sal_set_child(s, g->b, 1, g->f));
    TU_OK(sal_set_child(s, g->c, 0, g->e));
    TU_OK(sal_set_child(s, g->c, 1, g->g));
    TU_OK(sal_set_child(s, g->a, 0, g->b));
    TU_OK(sal_retain(s, g->c));
    TU_OK(sal_set_child(s, g->a, 1, g->c));
    TU_OK(sal_set_child(s, g->a, 2, g->d));
    TU_OK(sal_retain(s, g->a));
    TU_OK(sal_set_child(s, g->h, 0, g->a));
    TU_OK(sal_root_set(s, 0, g->a));
    TU_OK(sal_root_set(s, 1, g->c));
    TU_OK(sal_root_set(s, 5, g->h));
    /* A chain, built from the tail. */
    sal_id next = gc_alloc_filled(s, 24, 0, 9, 200, NULL);
    for (unsigned i = 0; i < 24; i++) {
        sal_id n = gc_alloc_filled(s, 32, 1, 10, 300 + i, NULL);
        TU_OK(sal_set_child(s, n, 0, next));
        next = n;
    }
    g->chain = next;
    TU_OK(sal_root_set(s, 2, next));
    g->u = gc_alloc_filled(s, 56, 0, 11, 111, NULL);
    TU_OK(sal_root_set(s, 3, g->u));
    TU_OK(sal_write_end(s));
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
    TU_OK(tu_root_set(s, 3, SAL_NULL_ID)); /* U dies; its bytes stay */
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    gc_layout l;
    lay_read(path, &l);
    g->hwm = l.slot.ids_high_water;
}

/* ---------------------------------------------------------------------
 * Snapshots of every reachable object.
 * --------------------------------------------------------------------- */

typedef struct gc_obj {
    sal_id id;
    sal_object_info info;
    uint8_t *bytes;
} gc_obj;

typedef struct gc_snap {
    gc_obj *v;
    size_t n, cap;
    sal_id roots[SAL_ROOT_COUNT];
} gc_snap;

static inline gc_obj *snap_find(const gc_snap *s, sal_id id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].id == id)
            return &s->v[i];
    return NULL;
}

/* Every object reachable from the roots, read through the library (a
 * read-only open: it recovers in private memory if the heap is unclean). */
static inline void snap_take(const char *path, gc_snap *snap)
{
    memset(snap, 0, sizeof *snap);
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_READONLY;
    sal_heap *h;
    TU_OK(sal_heap_open(path, &o, &h));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_read_begin(r));
    sal_id stack[4096];
    size_t top = 0;
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        TU_OK(sal_root_get(r, k, &snap->roots[k]));
        if (snap->roots[k])
            stack[top++] = snap->roots[k];
    }
    while (top > 0) {
        sal_id id = stack[--top];
        if (snap_find(snap, id))
            continue;
        if (snap->n == snap->cap) {
            snap->cap = snap->cap ? snap->cap * 2 : 64;
            snap->v = realloc(snap->v, snap->cap * sizeof *snap->v);
            assert_non_null(snap->v);
        }
        gc_obj *ob = &snap->v[snap->n++];
        ob->id = id;
        TU_OK(sal_info(r, id, &ob->info));
        const void *p;
        TU_OK(sal_read(r, id, &p));
        ob->bytes = malloc(ob->info.size_bytes + 1);
        memcpy(ob->bytes, p, ob->info.size_bytes);
        const sal_id *child = p;
        for (unsigned k = 0; k < ob->info.nrefs; k++)
            if (child[k] != SAL_NULL_ID && top < 4096)
                stack[top++] = child[k];
    }
    TU_OK(sal_read_end(r));
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
}

static inline void snap_free(gc_snap *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].bytes);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Every object of `after` was in `before` with the same contents (child
 * slot `skip_slot` of `skip_id` excepted: a slot the test damaged); returns
 * how many objects of `before` are missing from `after`. */
static inline size_t snap_compare(const gc_snap *before, const gc_snap *after, sal_id skip_id,
                                  unsigned skip_slot)
{
    for (size_t i = 0; i < after->n; i++) {
        const gc_obj *a = &after->v[i];
        const gc_obj *b = snap_find(before, a->id);
        if (!b)
            continue; /* brought back by the repair: checked by the caller */
        assert_int_equal(a->info.size_bytes, b->info.size_bytes);
        assert_int_equal(a->info.nrefs, b->info.nrefs);
        assert_int_equal(a->info.type, b->info.type);
        for (size_t k = 0; k < a->info.size_bytes; k++) {
            if (a->id == skip_id && k / 8 == skip_slot)
                continue;
            if (a->bytes[k] != b->bytes[k])
                fail_msg("object %u/%u byte %zu changed: %u -> %u", tu_index(a->id),
                         tu_gen(a->id), k, b->bytes[k], a->bytes[k]);
        }
        /* Counts equal the references the walk found. */
        assert_true(a->info.refcount > 0);
    }
    size_t missing = 0;
    for (size_t i = 0; i < before->n; i++)
        missing += snap_find(after, before->v[i].id) == NULL;
    return missing;
}

#endif
