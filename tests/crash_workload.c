/*
 * crash_workload.c - see crash_workload.h.
 */
#include "crash_workload.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------
 * Small helpers
 * --------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return n ? rng_next(state) % n : 0;
}

static int rng_percent(uint64_t *state, unsigned pct)
{
    return rng_below(state, 100) < pct;
}

/* Fold one 64-bit value into a hash. */
static uint64_t hmix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_us(unsigned us)
{
    if (us == 0)
        return;
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *f, ...)
{
    if (!buf || !len)
        return;
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, len, f, ap);
    va_end(ap);
}

static uint64_t span_of(uint64_t size_bytes)
{
    return (24 + size_bytes + 7) & ~7ull;
}

/* ---------------------------------------------------------------------
 * The id map (open addressing) and the digest walk
 * --------------------------------------------------------------------- */

enum { ENT_SEEN = 1, ENT_DONE = 2 };

typedef struct map_ent {
    sal_id id; /* 0: empty */
    uint64_t hash;
    uint32_t refs;  /* child slots of reachable objects and roots naming it */
    uint32_t roots; /* roots naming it */
    uint32_t state;
} map_ent;

typedef struct id_map {
    map_ent *e;
    size_t cap, len; /* cap: a power of two */
} id_map;

static void map_clear(id_map *m)
{
    if (m->e && m->len)
        memset(m->e, 0, m->cap * sizeof *m->e);
    m->len = 0;
}

static void map_free(id_map *m)
{
    free(m->e);
    memset(m, 0, sizeof *m);
}

static size_t map_slot(const id_map *m, sal_id id)
{
    return (size_t)(hmix(0x1d, id) & (m->cap - 1));
}

static map_ent *map_find(id_map *m, sal_id id)
{
    if (!m->e)
        return NULL;
    for (size_t i = map_slot(m, id);; i = (i + 1) & (m->cap - 1)) {
        if (m->e[i].id == id)
            return &m->e[i];
        if (m->e[i].id == 0)
            return NULL;
    }
}

static int map_grow(id_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    map_ent *ne = calloc(ncap, sizeof *ne);
    if (!ne)
        return ENOMEM;
    id_map n = {ne, ncap, 0};
    for (size_t i = 0; i < m->cap; i++) {
        if (m->e[i].id) {
            size_t j = map_slot(&n, m->e[i].id);
            while (n.e[j].id)
                j = (j + 1) & (n.cap - 1);
            n.e[j] = m->e[i];
            n.len++;
        }
    }
    free(m->e);
    *m = n;
    return 0;
}

/* Find or add. */
static map_ent *map_get(id_map *m, sal_id id)
{
    map_ent *f = map_find(m, id);
    if (f)
        return f;
    if ((m->len + 1) * 2 > m->cap && map_grow(m) != 0)
        return NULL;
    size_t i = map_slot(m, id);
    while (m->e[i].id)
        i = (i + 1) & (m->cap - 1);
    memset(&m->e[i], 0, sizeof m->e[i]);
    m->e[i].id = id;
    m->len++;
    return &m->e[i];
}

typedef struct frame {
    sal_id id;
    int phase;
} frame;

typedef struct walk {
    id_map map;
    frame *stack;
    size_t len, cap;
    uint64_t objects, bytes;
} walk;

static void walk_free(walk *w)
{
    map_free(&w->map);
    free(w->stack);
    memset(w, 0, sizeof *w);
}

static void walk_reset(walk *w)
{
    map_clear(&w->map);
    w->len = 0;
    w->objects = w->bytes = 0;
}

static int walk_push(walk *w, sal_id id, int phase)
{
    if (w->len == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 256;
        frame *ns = realloc(w->stack, ncap * sizeof *ns);
        if (!ns)
            return ENOMEM;
        w->stack = ns;
        w->cap = ncap;
    }
    w->stack[w->len++] = (frame){id, phase};
    return 0;
}

/* Hash the object graph under `root` into w->map (objects already in the
 * map are not walked again).  Needs a read section on `s`. */
static int walk_object(walk *w, sal_session *s, sal_id root, int expect_committed,
                       char *err, size_t errlen)
{
    int rc;
    if ((rc = walk_push(w, root, 0)))
        goto oom;
    while (w->len > 0) {
        frame f = w->stack[--w->len];
        map_ent *e = map_get(&w->map, f.id);
        if (!e)
            goto oom;
        if (f.phase == 0) {
            if (e->state == ENT_DONE)
                continue;
            if (e->state == ENT_SEEN) {
                fmt(err, errlen, "cycle through object %#llx", (unsigned long long)f.id);
                return -1;
            }
            e->state = ENT_SEEN;
            sal_object_info info;
            if ((rc = sal_info(s, f.id, &info))) {
                fmt(err, errlen, "sal_info(%#llx): %d (%s)", (unsigned long long)f.id, rc,
                    sal_strerror(rc));
                return -1;
            }
            if (expect_committed && !info.committed) {
                fmt(err, errlen, "object %#llx is reachable from the commit but not committed",
                    (unsigned long long)f.id);
                return -1;
            }
            const sal_id *slots;
            if ((rc = sal_read(s, f.id, (const void **)&slots))) {
                fmt(err, errlen, "sal_read(%#llx): %d (%s)", (unsigned long long)f.id, rc,
                    sal_strerror(rc));
                return -1;
            }
            if ((rc = walk_push(w, f.id, 1)))
                goto oom;
            for (unsigned i = info.nrefs; i-- > 0;) {
                sal_id c = slots[i];
                if (c == SAL_NULL_ID)
                    continue;
                map_ent *ce = map_find(&w->map, c);
                if (ce && ce->state == ENT_DONE)
                    continue;
                if (ce && ce->state == ENT_SEEN) {
                    fmt(err, errlen, "cycle: %#llx slot %u names its ancestor %#llx",
                        (unsigned long long)f.id, i, (unsigned long long)c);
                    return -1;
                }
                if ((rc = walk_push(w, c, 0)))
                    goto oom;
            }
        } else {
            sal_object_info info;
            const uint8_t *p;
            if ((rc = sal_info(s, f.id, &info)) || (rc = sal_read(s, f.id, (const void **)&p))) {
                fmt(err, errlen, "reading %#llx again: %d (%s)", (unsigned long long)f.id, rc,
                    sal_strerror(rc));
                return -1;
            }
            uint64_t hsh = hmix(0x0b1ec7, info.size_bytes);
            hsh = hmix(hsh, ((uint64_t)info.type << 32) | info.nrefs);
            const sal_id *slots = (const sal_id *)p;
            for (unsigned i = 0; i < info.nrefs; i++) {
                hsh = hmix(hsh, slots[i]);
                if (slots[i] == SAL_NULL_ID)
                    continue;
                map_ent *ce = map_find(&w->map, slots[i]);
                if (!ce || ce->state != ENT_DONE) {
                    fmt(err, errlen, "child %#llx of %#llx was not walked",
                        (unsigned long long)slots[i], (unsigned long long)f.id);
                    return -1;
                }
                hsh = hmix(hsh, ce->hash);
                ce->refs++;
            }
            uint64_t off = (uint64_t)info.nrefs * 8;
            for (; off + 8 <= info.size_bytes; off += 8) {
                uint64_t v;
                memcpy(&v, p + off, 8);
                hsh = hmix(hsh, v);
            }
            for (; off < info.size_bytes; off++)
                hsh = hmix(hsh, 0x100u | p[off]);
            /* The map may have grown while the children were added. */
            e = map_find(&w->map, f.id);
            e->hash = hsh;
            e->state = ENT_DONE;
            w->objects++;
            w->bytes += span_of(info.size_bytes);
        }
    }
    return 0;
oom:
    fmt(err, errlen, "out of memory in the digest walk");
    return -1;
}

static uint64_t root_digest(unsigned r, sal_id id, uint64_t obj_hash)
{
    uint64_t d = hmix(0x5eedull, r);
    d = hmix(d, id);
    return hmix(d, id ? obj_hash : 0x0e11);
}

static int group_of(unsigned r, int threads)
{
    int g = (int)(r / CW_ROOTS_PER_THREAD);
    return g < threads ? g : CW_OTHER;
}

static void fold_groups(const uint64_t *d, int threads, cw_state *out)
{
    for (int g = 0; g < CW_GROUPS; g++)
        out->sub[g] = hmix(0x6a09e667ull, (uint64_t)g);
    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++) {
        int g = group_of(r, threads);
        out->sub[g] = hmix(out->sub[g], d[r]);
    }
    uint64_t t = hmix(0xbb67ae85ull, (uint64_t)threads);
    for (int g = 0; g < CW_GROUPS; g++)
        t = hmix(t, out->sub[g]);
    out->digest = t;
}

/* Digest every root into `out`, leaving the walk's map filled. */
static int digest_roots(walk *w, sal_session *s, const sal_id *roots, int threads,
                        int expect_committed, cw_state *out, char *err, size_t errlen)
{
    uint64_t d[SAL_ROOT_COUNT];
    walk_reset(w);
    int entered = 0;
    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++) {
        if (roots[r] == SAL_NULL_ID) {
            d[r] = root_digest(r, 0, 0);
            continue;
        }
        if (!s) {
            fmt(err, errlen, "root %u is set but no session was given", r);
            return -1;
        }
        if (!entered) {
            int rc = sal_read_begin(s);
            if (rc) {
                fmt(err, errlen, "sal_read_begin: %d (%s)", rc, sal_strerror(rc));
                return -1;
            }
            entered = 1;
        }
        if (walk_object(w, s, roots[r], expect_committed, err, errlen)) {
            sal_read_end(s);
            return -1;
        }
        map_ent *e = map_find(&w->map, roots[r]);
        e->refs++;
        e->roots++;
        d[r] = root_digest(r, roots[r], e->hash);
    }
    if (entered)
        sal_read_end(s);
    memset(out, 0, sizeof *out);
    fold_groups(d, threads, out);
    out->objects = w->objects;
    out->bytes = w->bytes;
    return 0;
}

int cw_digest(sal_session *s, const sal_id *roots, int threads, int expect_committed,
              cw_state *out, char *err, size_t errlen)
{
    walk w;
    memset(&w, 0, sizeof w);
    int rc = digest_roots(&w, s, roots, threads, expect_committed, out, err, errlen);
    walk_free(&w);
    return rc;
}

void cw_empty_state(int threads, cw_state *out)
{
    sal_id roots[SAL_ROOT_COUNT];
    memset(roots, 0, sizeof roots);
    (void)cw_digest(NULL, roots, threads, 0, out, NULL, 0);
}

void cw_state_format(const cw_state *st, int threads, char *buf, size_t len)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, len - n, "digest %016llx objects %llu bytes %llu subs",
                          (unsigned long long)st->digest, (unsigned long long)st->objects,
                          (unsigned long long)st->bytes);
    for (int t = 0; t < threads && n < len; t++)
        n += (size_t)snprintf(buf + n, len - n, " %016llx", (unsigned long long)st->sub[t]);
}

int cw_check_heap(sal_heap *h, int threads, unsigned flags, cw_state *out, char *err,
                  size_t errlen)
{
    int readonly = (flags & CW_CHECK_READONLY) != 0;
    sal_session *s;
    int rc = sal_reader_open(h, &s);
    if (rc) {
        fmt(err, errlen, "sal_reader_open: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    sal_id roots[SAL_ROOT_COUNT];
    memset(roots, 0, sizeof roots);
    int bad = 0;
    for (unsigned r = 0; r < SAL_ROOT_COUNT && !bad; r++) {
        if ((rc = sal_root_get(s, r, &roots[r]))) {
            fmt(err, errlen, "sal_root_get(%u): %d (%s)", r, rc, sal_strerror(rc));
            bad = 1;
        }
    }
    walk w;
    memset(&w, 0, sizeof w);
    if (!bad && digest_roots(&w, s, roots, threads, !(flags & CW_CHECK_LIVE), out, err, errlen))
        bad = 1;
    /* Every reachable object: count == references (+ our retains). */
    for (size_t i = 0; !bad && i < w.map.cap; i++) {
        map_ent *e = &w.map.e[i];
        if (!e->id)
            continue;
        sal_object_info info;
        if ((rc = sal_info(s, e->id, &info))) {
            fmt(err, errlen, "sal_info(%#llx): %d (%s)", (unsigned long long)e->id, rc,
                sal_strerror(rc));
            bad = 1;
            break;
        }
        uint64_t want = (uint64_t)e->refs + (readonly ? 0 : e->roots);
        if (info.refcount != want) {
            fmt(err, errlen,
                "object %#llx: refcount %u, but %u references (%u of them roots)%s",
                (unsigned long long)e->id, info.refcount, e->refs, e->roots,
                readonly ? "" : " + the reader's retains of the roots");
            bad = 1;
        }
    }
    if (!bad) {
        sal_heap_stats st;
        if ((rc = sal_heap_stats_get(h, &st))) {
            fmt(err, errlen, "sal_heap_stats_get: %d (%s)", rc, sal_strerror(rc));
            bad = 1;
        } else if (st.live_objects != out->objects || st.live_bytes != out->bytes) {
            fmt(err, errlen,
                "leak: the heap has %llu live objects and %llu live bytes, the roots reach "
                "%llu objects of %llu bytes",
                (unsigned long long)st.live_objects, (unsigned long long)st.live_bytes,
                (unsigned long long)out->objects, (unsigned long long)out->bytes);
            bad = 1;
        }
    }
    walk_free(&w);
    for (unsigned r = 0; r < SAL_ROOT_COUNT; r++)
        if (roots[r] != SAL_NULL_ID && (rc = sal_release(s, roots[r])) && !bad) {
            fmt(err, errlen, "sal_release(root %u): %d (%s)", r, rc, sal_strerror(rc));
            bad = 1;
        }
    if ((rc = sal_session_close(s)) && !bad) {
        fmt(err, errlen, "sal_session_close: %d (%s)", rc, sal_strerror(rc));
        bad = 1;
    }
    return bad ? -1 : 0;
}

int cw_gc_check(const char *heap_path, char *err, size_t errlen)
{
#ifdef SAL_GC_PATH
    int fds[2];
    if (pipe(fds) != 0) {
        fmt(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fmt(err, errlen, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(SAL_GC_PATH, "sal-gc", "check", "--no-progress", heap_path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char out[2048];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fds[0], out + len, sizeof out - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof out - 1) {
            char sink[512];
            while (read(fds[0], sink, sizeof sink) > 0) {
            }
            break;
        }
    }
    out[len] = 0;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    for (char *c = out; *c; c++)
        if (*c == '\n')
            *c = ' ';
    fmt(err, errlen, "sal-gc check %s: status %#x: %.400s", heap_path, status, out);
    return -1;
#else
    (void)heap_path;
    fmt(err, errlen, "sal-gc is not built");
    return 1;
#endif
}

/* ---------------------------------------------------------------------
 * The workload
 * --------------------------------------------------------------------- */

void cw_config_init(cw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = 3;
    cfg->durable_percent = 34;
    cfg->async_percent = 33;
    cfg->sync_gap_us = 1500;
    cfg->op_pause_us = 40;
}

typedef struct run_ctx {
    sal_heap *h;
    const cw_config *cfg;
    const cw_hooks *hooks;
    atomic_int stop;
    atomic_int failed;
    atomic_int ready; /* workers that reported version 0 */
    pthread_mutex_t err_lock;
    char err[512];
} run_ctx;

static void run_fail(run_ctx *r, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(run_ctx *r, const char *f, ...)
{
    pthread_mutex_lock(&r->err_lock);
    if (!atomic_load(&r->failed)) {
        va_list ap;
        va_start(ap, f);
        vsnprintf(r->err, sizeof r->err, f, ap);
        va_end(ap);
        atomic_store(&r->failed, 1);
    }
    pthread_mutex_unlock(&r->err_lock);
    atomic_store(&r->stop, 1);
}

enum { MAX_TREE_OBJECTS = 400 }; /* a root over this is emptied or replaced */

typedef struct worker {
    run_ctx *run;
    int t;
    uint64_t rng;
    sal_session *s;
    uint64_t d[CW_ROOTS_PER_THREAD];       /* digest of each root as published */
    uint64_t objs[CW_ROOTS_PER_THREAD];    /* objects under each root */
    uint64_t version;
    sal_id draft; /* a private tree kept across sections, written in place */
    walk w;
    pthread_t thread;
} worker;

#define WK_OK(wk, expr)                                                              \
    do {                                                                            \
        int w_rc_ = (expr);                                                         \
        if (w_rc_ != 0) {                                                           \
            run_fail((wk)->run, "worker %d: %s:%d: %s returned %d (%s)", (wk)->t,   \
                     __FILE__, __LINE__, #expr, w_rc_, sal_strerror(w_rc_));        \
            return -1;                                                              \
        }                                                                           \
    } while (0)

static unsigned root_of(const worker *w, unsigned i)
{
    return (unsigned)w->t * CW_ROOTS_PER_THREAD + i;
}

/* The digest of one of this worker's roots if it named `id`. */
static int tree_digest(worker *w, unsigned i, sal_id id, uint64_t *d, uint64_t *objs)
{
    if (id == SAL_NULL_ID) {
        *d = root_digest(root_of(w, i), 0, 0);
        *objs = 0;
        return 0;
    }
    char err[256];
    walk_reset(&w->w);
    WK_OK(w, sal_read_begin(w->s));
    int rc = walk_object(&w->w, w->s, id, 0, err, sizeof err);
    sal_read_end(w->s);
    if (rc) {
        run_fail(w->run, "worker %d: digest of root %u: %s", w->t, root_of(w, i), err);
        return -1;
    }
    *d = root_digest(root_of(w, i), id, map_find(&w->w.map, id)->hash);
    *objs = w->w.objects;
    return 0;
}

static uint64_t worker_sub(const worker *w, const uint64_t *d)
{
    /* The same fold as fold_groups() for one group. */
    uint64_t sub = hmix(0x6a09e667ull, (uint64_t)w->t);
    for (unsigned i = 0; i < CW_ROOTS_PER_THREAD; i++)
        sub = hmix(sub, d[i]);
    return sub;
}

typedef struct change {
    unsigned i; /* which of the worker's roots */
    sal_id id;  /* the new value (a reference the root takes over) */
} change;

/* Publish: digest the new version, report it, then set the roots.  Inside
 * the write section, so that no cut falls between the report and the
 * sets. */
static int publish(worker *w, const change *ch, int n)
{
    uint64_t d[CW_ROOTS_PER_THREAD], objs[CW_ROOTS_PER_THREAD];
    memcpy(d, w->d, sizeof d);
    memcpy(objs, w->objs, sizeof objs);
    for (int k = 0; k < n; k++)
        if (tree_digest(w, ch[k].i, ch[k].id, &d[ch[k].i], &objs[ch[k].i]))
            return -1;
    w->version++;
    if (w->run->hooks && w->run->hooks->version)
        w->run->hooks->version(w->run->hooks->arg, w->t, w->version, worker_sub(w, d));
    if (w->run->hooks && w->run->hooks->published) {
        sal_id ids[CW_ROOTS_PER_THREAD];
        int m = 0;
        for (int k = 0; k < n && m < CW_ROOTS_PER_THREAD; k++)
            if (ch[k].id != SAL_NULL_ID)
                ids[m++] = ch[k].id;
        if (m)
            w->run->hooks->published(w->run->hooks->arg, w->t, ids, m);
    }
    for (int k = 0; k < n; k++)
        WK_OK(w, sal_root_set(w->s, root_of(w, ch[k].i), ch[k].id));
    memcpy(w->d, d, sizeof d);
    memcpy(w->objs, objs, sizeof objs);
    return 0;
}

static void fill_random(worker *w, uint8_t *p, uint64_t len)
{
    for (uint64_t off = 0; off < len; off += 8) {
        uint64_t v = rng_next(&w->rng);
        memcpy(p + off, &v, len - off < 8 ? len - off : 8);
    }
}

/* A new random tree of at most `depth` more levels; *id_out is yours. */
static int build_tree(worker *w, int depth, sal_id *id_out)
{
    unsigned nrefs = depth > 0 ? (unsigned)rng_below(&w->rng, 5) : 0;
    uint64_t size = 8 * nrefs + 8 * rng_below(&w->rng, 13);
    if (rng_percent(&w->rng, 25))
        size += rng_below(&w->rng, 8);
    unsigned type = (unsigned)rng_below(&w->rng, SAL_MAX_TYPE + 1);
    void *p;
    sal_id id;
    WK_OK(w, sal_alloc(w->s, size, nrefs, type, &id, &p));
    fill_random(w, (uint8_t *)p + 8 * nrefs, size - 8 * nrefs);
    for (unsigned i = 0; i < nrefs; i++) {
        if (!rng_percent(&w->rng, 65))
            continue;
        sal_id c;
        if (build_tree(w, depth - 1 - (int)rng_below(&w->rng, 2), &c))
            return -1;
        WK_OK(w, sal_set_child(w->s, id, i, c));
    }
    *id_out = id;
    return 0;
}

static int random_nonempty_root(worker *w, unsigned *i_out)
{
    unsigned start = (unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD);
    for (unsigned k = 0; k < CW_ROOTS_PER_THREAD; k++) {
        unsigned i = (start + k) % CW_ROOTS_PER_THREAD;
        if (w->objs[i] > 0) {
            *i_out = i;
            return 1;
        }
    }
    return 0;
}

/* Change a writable object in place: flip payload bytes after its child
 * slots, and maybe replace a child. */
static int mutate_node(worker *w, sal_id node, void *p)
{
    sal_object_info info;
    WK_OK(w, sal_info(w->s, node, &info));
    uint8_t *b = p;
    uint64_t data = info.size_bytes - 8ull * info.nrefs;
    if (data > 0) {
        unsigned flips = 1 + (unsigned)rng_below(&w->rng, 4);
        for (unsigned k = 0; k < flips; k++)
            b[8ull * info.nrefs + rng_below(&w->rng, data)] ^=
                (uint8_t)(1 + rng_below(&w->rng, 255));
    }
    if (info.nrefs == 0 || !rng_percent(&w->rng, 45))
        return 0;
    unsigned slot = (unsigned)rng_below(&w->rng, info.nrefs);
    unsigned pick = (unsigned)rng_below(&w->rng, 100);
    sal_id c = SAL_NULL_ID;
    if (pick < 45) {
        if (build_tree(w, (int)rng_below(&w->rng, 3), &c))
            return -1;
    } else if (pick < 75) {
        c = SAL_NULL_ID;
    } else if (pick < 88) {
        /* A snapshot of any worker's root (maybe this one's, maybe empty). */
        int threads = w->run->cfg->threads;
        unsigned r = (unsigned)rng_below(&w->rng, (uint64_t)threads * CW_ROOTS_PER_THREAD);
        WK_OK(w, sal_root_get(w->s, r, &c));
    } else {
        /* Share a sibling: the same child in two slots. */
        const sal_id *slots = p;
        sal_id sib = slots[rng_below(&w->rng, info.nrefs)];
        if (sib != SAL_NULL_ID)
            WK_OK(w, sal_retain(w->s, sib));
        c = sib;
    }
    WK_OK(w, sal_set_child(w->s, node, slot, c));
    return 0;
}

/* Path-copy from root i down a random path, change the last node. */
static int modify_root(worker *w, unsigned i, sal_id *id_out)
{
    sal_id id;
    void *p;
    WK_OK(w, sal_root_get(w->s, root_of(w, i), &id));
    if (id == SAL_NULL_ID) {
        run_fail(w->run, "worker %d: root %u is empty but should not be", w->t, root_of(w, i));
        return -1;
    }
    WK_OK(w, sal_write(w->s, &id, &p)); /* the root holds it too: a copy */
    sal_id cur = id;
    unsigned depth = 0;
    while (depth < 6 && rng_percent(&w->rng, 60)) {
        sal_object_info info;
        WK_OK(w, sal_info(w->s, cur, &info));
        if (info.nrefs == 0)
            break;
        const sal_id *slots = p;
        unsigned start = (unsigned)rng_below(&w->rng, info.nrefs), slot = info.nrefs;
        for (unsigned k = 0; k < info.nrefs; k++)
            if (slots[(start + k) % info.nrefs] != SAL_NULL_ID) {
                slot = (start + k) % info.nrefs;
                break;
            }
        if (slot == info.nrefs)
            break;
        sal_id child;
        WK_OK(w, sal_write_child(w->s, cur, slot, &child, &p));
        cur = child;
        depth++;
    }
    if (mutate_node(w, cur, p))
        return -1;
    *id_out = id;
    return 0;
}

static int op_new(worker *w)
{
    change c = {(unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD), SAL_NULL_ID};
    if (build_tree(w, 1 + (int)rng_below(&w->rng, 3), &c.id))
        return -1;
    return publish(w, &c, 1);
}

static int op_modify(worker *w, int two)
{
    change c[2];
    int n = 0;
    unsigned i;
    if (!random_nonempty_root(w, &i))
        return op_new(w);
    if (w->objs[i] > MAX_TREE_OBJECTS) {
        c[0] = (change){i, SAL_NULL_ID};
        return publish(w, c, 1);
    }
    c[n].i = i;
    if (modify_root(w, i, &c[n].id))
        return -1;
    n++;
    if (two) {
        unsigned j = (i + 1 + (unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD - 1)) %
                     CW_ROOTS_PER_THREAD;
        c[n].i = j;
        if (w->objs[j] > 0 && w->objs[j] <= MAX_TREE_OBJECTS) {
            if (modify_root(w, j, &c[n].id))
                return -1;
        } else if (build_tree(w, 1 + (int)rng_below(&w->rng, 2), &c[n].id)) {
            return -1;
        }
        n++;
    }
    return publish(w, c, n);
}

static int op_clear(worker *w)
{
    unsigned i;
    if (!random_nonempty_root(w, &i))
        return op_new(w);
    change c = {i, SAL_NULL_ID};
    return publish(w, &c, 1);
}

/* The same tree under two roots. */
static int op_share(worker *w)
{
    unsigned i;
    if (!random_nonempty_root(w, &i))
        return op_new(w);
    unsigned j = (i + 1 + (unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD - 1)) %
                 CW_ROOTS_PER_THREAD;
    change c = {j, SAL_NULL_ID};
    WK_OK(w, sal_root_get(w->s, root_of(w, i), &c.id));
    return publish(w, &c, 1);
}

/* Objects born and dead between two syncs (their ids come back at once),
 * and a snapshot taken and dropped. */
static int op_temp(worker *w)
{
    sal_id top;
    if (build_tree(w, (int)rng_below(&w->rng, 3), &top))
        return -1;
    WK_OK(w, sal_release(w->s, top));
    sal_id snap;
    unsigned r = (unsigned)rng_below(&w->rng, (uint64_t)w->run->cfg->threads *
                                                   CW_ROOTS_PER_THREAD);
    WK_OK(w, sal_root_get(w->s, r, &snap));
    if (snap != SAL_NULL_ID)
        WK_OK(w, sal_release(w->s, snap));
    return 0;
}

/* Objects born and mostly dead again inside one write section, so that no
 * cut falls in between: a segment no commit has covered turns sparse, the
 * provider lists its dead space, and the second batch reuses it in place
 * (sal/src/recycle.c).  Each batch is more than a segment's worth; the
 * survivors of both are published under one parent. */
static size_t sparse_batch(worker *w, sal_id *ids, size_t n, int *rc)
{
    size_t keep = 0;
    for (size_t i = 0; i < n && !*rc; i++) {
        uint64_t size = 64 + rng_below(&w->rng, 961);
        void *p;
        *rc = sal_alloc(w->s, size, 0, (unsigned)rng_below(&w->rng, SAL_MAX_TYPE + 1), &ids[i], &p);
        if (*rc)
            n = i;
        else
            fill_random(w, p, size);
    }
    for (size_t i = 0; i < n; i++) {
        if (!*rc && rng_percent(&w->rng, 15))
            ids[keep++] = ids[i];
        else
            (void)sal_release(w->s, ids[i]);
    }
    return keep;
}

static int op_sparse(worker *w)
{
    /* 1 MiB segments (the harnesses' heaps), objects of 64..1024 bytes. */
    const size_t per_batch = 2600;
    sal_id *ids = malloc(2 * per_batch * sizeof *ids);
    if (!ids) {
        run_fail(w->run, "worker %d: out of memory", w->t);
        return -1;
    }
    int rc = 0;
    size_t keep = sparse_batch(w, ids, per_batch, &rc);
    /* Give the provider a moment to list the dead space (a few ms at
     * most: the cut waits for this section). */
    sal_heap_stats st;
    for (int k = 0; k < 50 && !rc; k++) {
        if (sal_heap_stats_get(w->run->h, &st) == 0 && st.segments_recyclable > 0)
            break;
        sleep_us(100);
    }
    if (!rc)
        keep += sparse_batch(w, ids + keep, per_batch, &rc);
    sal_id parent = SAL_NULL_ID;
    void *p;
    if (!rc && keep > 0)
        rc = sal_alloc(w->s, 8ull * keep, (unsigned)keep, 1, &parent, &p);
    for (size_t i = 0; i < keep; i++) {
        if (!rc)
            rc = sal_set_child(w->s, parent, (unsigned)i, ids[i]);
        else
            (void)sal_release(w->s, ids[i]);
    }
    free(ids);
    if (rc) {
        run_fail(w->run, "worker %d: sparse batches: %d (%s)", w->t, rc, sal_strerror(rc));
        return -1;
    }
    if (parent == SAL_NULL_ID)
        return 0;
    change c = {(unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD), parent};
    return publish(w, &c, 1);
}

/* A private tree written in place across sections (until a sync commits
 * it: then writes go to copies), sometimes published. */
static int op_draft(worker *w)
{
    if (w->draft == SAL_NULL_ID)
        return build_tree(w, 1 + (int)rng_below(&w->rng, 2), &w->draft);
    void *p;
    WK_OK(w, sal_write(w->s, &w->draft, &p));
    if (mutate_node(w, w->draft, p))
        return -1;
    if (rng_percent(&w->rng, 30)) {
        change c = {(unsigned)rng_below(&w->rng, CW_ROOTS_PER_THREAD), w->draft};
        w->draft = SAL_NULL_ID;
        return publish(w, &c, 1);
    }
    return 0;
}

static int worker_op(worker *w)
{
    WK_OK(w, sal_write_begin(w->s));
    unsigned pick = (unsigned)rng_below(&w->rng, 100);
    int rc;
    if (pick < 18)
        rc = op_new(w);
    else if (pick < 58)
        rc = op_modify(w, 0);
    else if (pick < 66)
        rc = op_modify(w, 1);
    else if (pick < 74)
        rc = op_clear(w);
    else if (pick < 82)
        rc = op_share(w);
    else if (pick < 89)
        rc = op_temp(w);
    else if (pick < 90)
        rc = op_sparse(w);
    else
        rc = op_draft(w);
    int rc2 = sal_write_end(w->s);
    if (rc)
        return rc;
    if (rc2) {
        run_fail(w->run, "worker %d: sal_write_end: %d (%s)", w->t, rc2, sal_strerror(rc2));
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run_ctx *r = w->run;
    int rc = sal_session_open(r->h, &w->s);
    if (rc) {
        run_fail(r, "worker %d: sal_session_open: %d (%s)", w->t, rc, sal_strerror(rc));
        return NULL;
    }
    /* Version 0: the roots as they are. */
    for (unsigned i = 0; i < CW_ROOTS_PER_THREAD; i++) {
        sal_id id;
        if ((rc = sal_root_get(w->s, root_of(w, i), &id))) {
            run_fail(r, "worker %d: sal_root_get: %d (%s)", w->t, rc, sal_strerror(rc));
            goto out;
        }
        int bad = tree_digest(w, i, id, &w->d[i], &w->objs[i]);
        if (id != SAL_NULL_ID)
            sal_release(w->s, id);
        if (bad)
            goto out;
    }
    if (r->hooks && r->hooks->version)
        r->hooks->version(r->hooks->arg, w->t, 0, worker_sub(w, w->d));
    atomic_fetch_add(&r->ready, 1);
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        if (worker_op(w))
            break;
        if (r->cfg->op_pause_us)
            sleep_us((unsigned)rng_below(&w->rng, r->cfg->op_pause_us + 1));
    }
out:
    if (w->draft != SAL_NULL_ID && !atomic_load(&r->failed)) {
        if ((rc = sal_release(w->s, w->draft)))
            run_fail(r, "worker %d: releasing the draft: %d (%s)", w->t, rc, sal_strerror(rc));
        w->draft = SAL_NULL_ID;
    }
    if ((rc = sal_session_close(w->s)))
        run_fail(r, "worker %d: sal_session_close: %d (%s)", w->t, rc, sal_strerror(rc));
    return NULL;
}

static int pick_mode(const cw_config *cfg, uint64_t *rng)
{
    uint64_t p = rng_below(rng, 100);
    if (p < (uint64_t)cfg->durable_percent)
        return SAL_SYNC_DURABLE;
    if (p < (uint64_t)(cfg->durable_percent + cfg->async_percent))
        return SAL_SYNC_ASYNC;
    return SAL_SYNC_PROTECT;
}

int cw_run(sal_heap *h, const cw_config *cfg, const cw_hooks *hooks, char *err,
           size_t errlen)
{
    if (cfg->threads < 1 || cfg->threads > CW_MAX_THREADS) {
        fmt(err, errlen, "threads must be 1..%d", CW_MAX_THREADS);
        return -1;
    }
    run_ctx r;
    memset(&r, 0, sizeof r);
    r.h = h;
    r.cfg = cfg;
    r.hooks = hooks;
    pthread_mutex_init(&r.err_lock, NULL);
    worker wk[CW_MAX_THREADS];
    memset(wk, 0, sizeof wk);
    int started = 0;
    for (int t = 0; t < cfg->threads; t++) {
        wk[t].run = &r;
        wk[t].t = t;
        wk[t].rng = cfg->seed * 0x2545f4914f6cdd1dull + 0x1000u * (uint64_t)(t + 1);
        if (pthread_create(&wk[t].thread, NULL, worker_main, &wk[t]) != 0) {
            run_fail(&r, "pthread_create failed");
            break;
        }
        started++;
    }

    sal_session *reader = NULL;
    int rc = sal_reader_open(h, &reader);
    if (rc)
        run_fail(&r, "sync loop: sal_reader_open: %d (%s)", rc, sal_strerror(rc));
    /* Every worker reports its version 0 before the first sync. */
    while (atomic_load(&r.ready) < started && !atomic_load(&r.stop))
        sleep_us(50);
    uint64_t rng = cfg->seed * 0x9e3779b97f4a7c15ull + 0x5f5f;
    double t0 = now_seconds();
    for (uint64_t n = 1; !atomic_load(&r.stop); n++) {
        if (cfg->sync_gap_us)
            sleep_us((unsigned)rng_below(&rng, cfg->sync_gap_us + 1));
        if (atomic_load(&r.stop))
            break;
        cw_sync_info info;
        memset(&info, 0, sizeof info);
        info.n = n;
        info.mode = pick_mode(cfg, &rng);
        if (hooks && hooks->sync_start)
            hooks->sync_start(hooks->arg, n, info.mode);
        sal_id roots[SAL_ROOT_COUNT];
        info.rc = sal_sync_snapshot(h, info.mode, roots);
        /* The roots are handed out whenever the cut was taken; the cut
         * fails only for lack of memory (a negative code): an errno (a
         * failed mprotect or flush) comes after it. */
        info.cut_taken = info.rc >= 0;
        for (unsigned i = 0; i < SAL_ROOT_COUNT; i++)
            if (roots[i] != SAL_NULL_ID)
                info.cut_taken = 1;
        if (info.cut_taken) {
            char msg[384];
            if (cw_digest(reader, roots, cfg->threads, 1, &info.state, msg, sizeof msg))
                run_fail(&r, "sync %llu (mode %d): digest of the snapshot: %s",
                         (unsigned long long)n, info.mode, msg);
        }
        for (unsigned i = 0; i < SAL_ROOT_COUNT; i++)
            if (roots[i] != SAL_NULL_ID && (rc = sal_release(reader, roots[i])))
                run_fail(&r, "sync %llu: releasing snapshot root %u: %d (%s)",
                         (unsigned long long)n, i, rc, sal_strerror(rc));
        if (atomic_load(&r.failed))
            break;
        int stop = hooks && hooks->sync_done ? hooks->sync_done(hooks->arg, &info) : 0;
        if (stop || (info.rc && cfg->stop_on_sync_error) ||
            (cfg->max_syncs && n >= cfg->max_syncs) ||
            (cfg->max_seconds > 0 && now_seconds() - t0 >= cfg->max_seconds))
            break;
    }
    atomic_store(&r.stop, 1);
    for (int t = 0; t < started; t++)
        pthread_join(wk[t].thread, NULL);
    for (int t = 0; t < cfg->threads; t++)
        walk_free(&wk[t].w);
    if (reader && (rc = sal_session_close(reader)))
        run_fail(&r, "sync loop: closing the reader: %d (%s)", rc, sal_strerror(rc));
    pthread_mutex_destroy(&r.err_lock);
    if (atomic_load(&r.failed)) {
        fmt(err, errlen, "%s", r.err);
        if (!cfg->quiet)
            fprintf(stderr, "crash workload: %s\n", r.err);
        return -1;
    }
    return 0;
}

int cw_parse_args(int argc, char **argv, const char *rounds_env, cw_args *out)
{
    out->rounds = 200;
    out->max_failures = 0;
    out->seed = 0;
    out->verbose = 0;
    const char *env = getenv(rounds_env);
    if (env && *env)
        out->rounds = strtol(env, NULL, 0);
    int seed_given = 0;
    env = getenv("SAL_TEST_SEED");
    if (env && *env) {
        out->seed = strtoull(env, NULL, 0);
        seed_given = 1;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            out->rounds = strtol(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            out->seed = strtoull(argv[++i], NULL, 0);
            seed_given = 1;
        } else if (!strcmp(argv[i], "--max-failures") && i + 1 < argc) {
            out->max_failures = strtol(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--verbose")) {
            out->verbose = 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--rounds N] [--seed S] [--max-failures F] [--verbose]\n"
                    "  (%s=N, SAL_TEST_SEED=S; round i uses seed S+i;\n"
                    "   --max-failures F stops after F failed rounds)\n",
                    argv[0], rounds_env);
            return 2;
        }
    }
    if (out->rounds < 1)
        out->rounds = 1;
    if (!seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        out->seed = ((uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec) % 1000000000u;
    }
    return 0;
}
