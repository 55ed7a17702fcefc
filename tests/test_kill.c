/*
 * test_kill.c - the kill harness: real SIGKILLs, then recovery.
 *
 * Each round forks a child that creates a fresh heap and runs the random
 * multi-session workload of crash_workload.c (3 workers with disjoint
 * roots, a sync loop with protect, async and durable syncs).  Through a
 * pipe the child reports every version a worker is about to publish,
 * every sync it starts, and every sync that returned, with the digest of
 * the commit (from the roots sal_sync_snapshot hands out).  The parent
 * kills it with SIGKILL at a random moment: after a random delay of up to
 * 45 ms, or a few microseconds after a chosen sync started (so that many
 * kills land inside a sync), or shortly after a chosen commit was reported
 * (one round in three each).  Then, in the same boot:
 *
 *   - a plain open must fail with SAL_EUNCLEAN;
 *   - a read-only open (recovery in private memory) shows a state;
 *   - an open with SAL_OPEN_RECOVER recovers, and shows the same state;
 *   - that state is the last reported commit, or, if the kill landed
 *     inside a sync (the child announced the sync and not its end), a
 *     commit holding for every worker one of the versions it reported
 *     since the last commit (the commit in flight);
 *   - every reachable object is committed and its reference count equals
 *     the number of references to it; the heap's live objects and live
 *     bytes are exactly what the roots reach (no leaked id or byte); the
 *     recovery report found no dangling reference or damaged header;
 *   - the heap then closes cleanly and reopens with the same state, and
 *     `sal-gc check` (when the gc-tool is built) reports no damage.
 *
 * Every commit the child reports is also checked: each worker's part of it
 * must be a version that worker reported (the cut is consistent).
 *
 *     test_kill [--rounds N] [--seed S] [--max-failures F] [--verbose]
 *
 * (or SAL_KILL_ROUNDS=N, SAL_TEST_SEED=S).  Round i uses seed S+i (the
 * workload's and the kill's random choices replay; the interleaving of
 * the threads does not).  The last line of output is always
 *
 *     kill-rounds: N passed, F failed; mid-sync K; median commits before kill M; seeds A-B
 *
 * and the exit status is nonzero if F > 0 or, with N >= 200 (CI), if no
 * kill landed inside a sync (K == 0) or M < 3.  SAL_CRASH_KEEP=1 keeps the
 * heap files of failed rounds (their paths are printed).
 */
#include "test_util.h"

#include <poll.h>
#include <signal.h>

#include "crash_workload.h"

enum { REC_READY = 1, REC_VERSION, REC_START, REC_DONE, REC_ERROR, REC_IDS };

/* One message from the child; 256 bytes, so that a write is atomic. */
typedef struct rec {
    uint32_t type;
    int32_t t;  /* worker (VERSION) */
    uint64_t n; /* version number (VERSION), sync number (START, DONE) or
                   how many ids (IDS, in msg) */
    int32_t mode, rc;
    cw_state state;
    char msg[256 - 24 - sizeof(cw_state)];
} rec;
_Static_assert(sizeof(rec) == 256, "a record is 256 bytes");

enum { THREADS = 3 };

/* ---------------------------------------------------------------------
 * The child
 * --------------------------------------------------------------------- */

static int child_fd = -1;

static void send_rec(const rec *r)
{
    const char *p = (const char *)r;
    size_t left = sizeof *r;
    while (left > 0) {
        ssize_t w = write(child_fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(4); /* the parent is gone */
        }
        p += w, left -= (size_t)w;
    }
}

static void send_error(const char *fmt_, ...) __attribute__((format(printf, 1, 2)));
static void send_error(const char *fmt_, ...)
{
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_ERROR;
    va_list ap;
    va_start(ap, fmt_);
    vsnprintf(r.msg, sizeof r.msg, fmt_, ap);
    va_end(ap);
    send_rec(&r);
}

static void hook_version(void *arg, int t, uint64_t k, uint64_t sub)
{
    (void)arg;
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_VERSION;
    r.t = t;
    r.n = k;
    r.state.digest = sub;
    send_rec(&r);
}

static void hook_published(void *arg, int t, const sal_id *ids, int n)
{
    (void)arg;
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_IDS;
    r.t = t;
    r.n = (uint64_t)n;
    memcpy(r.msg, ids, (size_t)n * sizeof *ids);
    send_rec(&r);
}

static void hook_sync_start(void *arg, uint64_t n, int mode)
{
    (void)arg;
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_START;
    r.n = n;
    r.mode = mode;
    send_rec(&r);
}

static int hook_sync_done(void *arg, const cw_sync_info *info)
{
    (void)arg;
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_DONE;
    r.n = info->n;
    r.mode = info->mode;
    r.rc = info->rc;
    r.state = info->state;
    send_rec(&r);
    return 0;
}

static sal_options heap_options(void)
{
    sal_options o;
    sal_options_init(&o);
    o.segment_bytes = SAL_MIN_SEGMENT_BYTES;
    o.reserve_bytes = 256ull << 20;
    o.max_objects = 1ull << 20;
    o.ready_segments = 2;
    return o;
}

static void child_main(const char *path, uint64_t seed)
{
    sal_options o = heap_options();
    /* With and without the provider thread. */
    o.ready_segments = (seed >> 1) & 1 ? 0 : 2;
    sal_heap *h;
    int rc = sal_heap_create(path, &o, &h);
    if (rc) {
        send_error("sal_heap_create: %d (%s)", rc, sal_strerror(rc));
        _exit(3);
    }
    rec r;
    memset(&r, 0, sizeof r);
    r.type = REC_READY;
    cw_empty_state(THREADS, &r.state);
    send_rec(&r);

    cw_config cfg;
    cw_config_init(&cfg);
    cfg.seed = seed;
    cfg.threads = THREADS;
    cfg.max_seconds = 20; /* the parent kills long before */
    /* Durable syncs take milliseconds (a real flush): fewer of them, so
     * that most rounds see several commits before the kill. */
    cfg.durable_percent = 20;
    cfg.async_percent = 40;
    cfg.quiet = 1;
    cw_hooks hooks = {NULL, hook_version, hook_sync_start, hook_sync_done, hook_published};
    char err[512];
    if (cw_run(h, &cfg, &hooks, err, sizeof err)) {
        send_error("%s", err);
        _exit(3);
    }
    send_error("the workload ended before the kill");
    _exit(3);
}

/* ---------------------------------------------------------------------
 * The parent: what the child said
 * --------------------------------------------------------------------- */

/* A growing array of values. */
typedef struct u64_vec {
    uint64_t *v;
    size_t len, cap;
} u64_vec;

typedef struct round_state {
    int ready;
    cw_state empty;
    u64_vec hist[THREADS];   /* hist[t].v[k]: the digest of worker t's version k */
    size_t matched[THREADS]; /* the version each worker has in the last commit */
    rec last_done;           /* the last commit reported (or the initial state) */
    u64_vec ids;             /* every id a worker published, committed or not */
    uint64_t commits;        /* syncs reported done */
    uint64_t last_start;     /* the last sync announced */
    int last_start_mode;
    char error[512];
    /* partial record carried over between reads */
    char buf[sizeof(rec) * 64];
    size_t buf_len;
} round_state;

static void rs_fail(round_state *rs, const char *fmt_, ...) __attribute__((format(printf, 2, 3)));
static void rs_fail(round_state *rs, const char *fmt_, ...)
{
    if (rs->error[0])
        return;
    va_list ap;
    va_start(ap, fmt_);
    vsnprintf(rs->error, sizeof rs->error, fmt_, ap);
    va_end(ap);
}

static void vec_push(u64_vec *h, uint64_t v)
{
    if (h->len == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = realloc(h->v, h->cap * sizeof *h->v);
        if (!h->v) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    h->v[h->len++] = v;
}

/* The first index >= from at which worker t reported `sub`, or -1. */
static long hist_find(const u64_vec *h, size_t from, uint64_t sub)
{
    for (size_t k = from; k < h->len; k++)
        if (h->v[k] == sub)
            return (long)k;
    return -1;
}

static void on_rec(round_state *rs, const rec *r)
{
    switch (r->type) {
    case REC_READY:
        rs->ready = 1;
        rs->last_done = *r;
        break;
    case REC_VERSION:
        if (r->t < 0 || r->t >= THREADS) {
            rs_fail(rs, "a version record for worker %d", r->t);
            break;
        }
        if (r->n != rs->hist[r->t].len)
            rs_fail(rs, "worker %d reported version %llu after %zu versions", r->t,
                    (unsigned long long)r->n, rs->hist[r->t].len);
        vec_push(&rs->hist[r->t], r->state.digest);
        break;
    case REC_START:
        rs->last_start = r->n;
        rs->last_start_mode = r->mode;
        break;
    case REC_DONE:
        if (r->rc != 0) {
            rs_fail(rs, "sync %llu (mode %d) failed: %d (%s)", (unsigned long long)r->n, r->mode,
                    r->rc, sal_strerror(r->rc));
            break;
        }
        /* The commit must hold, for every worker, a version it reported
         * (no later than the last one, no earlier than the last commit's). */
        for (int t = 0; t < THREADS; t++) {
            long k = hist_find(&rs->hist[t], rs->matched[t], r->state.sub[t]);
            if (k < 0) {
                rs_fail(rs,
                        "sync %llu committed a state of worker %d (sub %016llx) that is none of "
                        "its versions %zu..%zu",
                        (unsigned long long)r->n, t, (unsigned long long)r->state.sub[t],
                        rs->matched[t], rs->hist[t].len);
                break;
            }
            rs->matched[t] = (size_t)k;
        }
        if (r->state.sub[CW_OTHER] != rs->empty.sub[CW_OTHER])
            rs_fail(rs, "sync %llu committed roots that no worker owns", (unsigned long long)r->n);
        rs->last_done = *r;
        rs->commits++;
        break;
    case REC_IDS:
        if (r->n == 0 || r->n > sizeof r->msg / sizeof(sal_id)) {
            rs_fail(rs, "an ids record of %llu ids", (unsigned long long)r->n);
            break;
        }
        for (uint64_t k = 0; k < r->n; k++) {
            sal_id id;
            memcpy(&id, r->msg + k * sizeof id, sizeof id);
            vec_push(&rs->ids, id);
        }
        break;
    case REC_ERROR:
        rs_fail(rs, "child: %s", r->msg);
        break;
    default:
        rs_fail(rs, "unknown record type %u", r->type);
    }
}

/* Read what is there (nonblocking); returns 0 on EOF, 1 otherwise. */
static int read_some(int fd, round_state *rs)
{
    for (;;) {
        ssize_t n = read(fd, rs->buf + rs->buf_len, sizeof rs->buf - rs->buf_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            rs_fail(rs, "reading the pipe: %s", strerror(errno));
            return 0;
        }
        if (n == 0)
            return 0;
        rs->buf_len += (size_t)n;
        size_t off = 0;
        while (rs->buf_len - off >= sizeof(rec)) {
            rec r;
            memcpy(&r, rs->buf + off, sizeof r);
            on_rec(rs, &r);
            off += sizeof r;
        }
        memmove(rs->buf, rs->buf + off, rs->buf_len - off);
        rs->buf_len -= off;
    }
}

/* ---------------------------------------------------------------------
 * The parent: the checks after the kill
 * --------------------------------------------------------------------- */

/* Recover and check; returns 0 or fills rs->error.  *mid_match: the
 * recovered state is the commit in flight, not the last reported one. */
static int check_heap_after_kill(const char *path, round_state *rs, int mid, int *mid_match)
{
    char err[512], a[256], b[256];
    sal_options o = heap_options();
    o.ready_segments = 0;
    sal_heap *h = NULL;

    int rc = sal_heap_open(path, &o, &h);
    if (rc != SAL_EUNCLEAN) {
        if (rc == 0)
            sal_heap_close(h);
        rs_fail(rs, "a plain open of the killed heap gave %d (%s), not SAL_EUNCLEAN", rc,
                sal_strerror(rc));
        return -1;
    }

    /* Read-only: recovers in private memory, writes nothing. */
    cw_state ro;
    o.flags = SAL_OPEN_READONLY;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rs_fail(rs, "read-only open of the killed heap: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    if (cw_check_heap(h, THREADS, CW_CHECK_READONLY, &ro, err, sizeof err)) {
        sal_heap_close(h);
        rs_fail(rs, "read-only open: %s", err);
        return -1;
    }
    sal_recovery_report rep;
    sal_heap_recovery_report(h, &rep);
    sal_heap_close(h);
    if (!rep.recovered) {
        rs_fail(rs, "the read-only open did not recover");
        return -1;
    }

    /* Recover for real. */
    cw_state st;
    o.flags = SAL_OPEN_RECOVER;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rs_fail(rs, "open with SAL_OPEN_RECOVER: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    sal_heap_recovery_report(h, &rep);
    int bad = cw_check_heap(h, THREADS, 0, &st, err, sizeof err);
    rc = sal_heap_close(h);
    if (bad) {
        rs_fail(rs, "after recovery: %s", err);
        return -1;
    }
    if (rc) {
        rs_fail(rs, "closing the recovered heap: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    if (!rep.recovered || rep.swept || rep.dangling_refs || rep.damaged_headers ||
        rep.roots_cleared || rep.objects_live != st.objects || rep.bytes_live != st.bytes) {
        rs_fail(rs,
                "recovery report: recovered %d swept %d dangling %llu damaged %llu roots "
                "cleared %llu, objects %llu bytes %llu (the roots reach %llu objects of %llu "
                "bytes)",
                rep.recovered, rep.swept, (unsigned long long)rep.dangling_refs,
                (unsigned long long)rep.damaged_headers, (unsigned long long)rep.roots_cleared,
                (unsigned long long)rep.objects_live, (unsigned long long)rep.bytes_live,
                (unsigned long long)st.objects, (unsigned long long)st.bytes);
        return -1;
    }
    if (!cw_state_same(&ro, &st)) {
        cw_state_format(&ro, THREADS, a, sizeof a);
        cw_state_format(&st, THREADS, b, sizeof b);
        rs_fail(rs, "the read-only open showed %s, the recovery %s", a, b);
        return -1;
    }

    /* The state: the last commit, or the one in flight. */
    *mid_match = 0;
    if (!cw_state_same(&st, &rs->last_done.state)) {
        int ok = mid;
        for (int t = 0; ok && t < THREADS; t++)
            if (hist_find(&rs->hist[t], rs->matched[t], st.sub[t]) < 0)
                ok = 0;
        if (ok && st.sub[CW_OTHER] != rs->empty.sub[CW_OTHER])
            ok = 0;
        if (!ok) {
            cw_state_format(&st, THREADS, a, sizeof a);
            cw_state_format(&rs->last_done.state, THREADS, b, sizeof b);
            rs_fail(rs,
                    "recovered %s; the last commit (sync %llu, mode %d) was %s%s", a,
                    (unsigned long long)rs->last_done.n, rs->last_done.mode, b,
                    mid ? "; nor is it a commit of versions reported since (killed inside "
                          "a sync)"
                        : "");
            return -1;
        }
        *mid_match = 1;
    }

    /* Recovery wrote a commit: a plain open now works and shows it. */
    o.flags = 0;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rs_fail(rs, "plain open after recovery: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    cw_state again;
    bad = cw_check_heap(h, THREADS, 0, &again, err, sizeof err);
    sal_heap_close(h);
    if (bad) {
        rs_fail(rs, "reopened after recovery: %s", err);
        return -1;
    }
    if (!cw_state_same(&again, &st)) {
        rs_fail(rs, "reopened after recovery: the state changed");
        return -1;
    }
    /* The checker of the gc-tool finds nothing wrong either. */
    if (cw_gc_check(path, err, sizeof err) < 0) {
        rs_fail(rs, "after recovery: %s", err);
        return -1;
    }
    return 0;
}

/* Is every published id a committed object or stale (SAL_ESTALE: never
 * SAL_EBADID, which would mean its generation went back)?  1 or 0. */
static int published_live_or_stale(round_state *rs, sal_session *s, const char *when)
{
    for (size_t i = 0; i < rs->ids.len; i++) {
        int rc = sal_info(s, rs->ids.v[i], &(sal_object_info){0});
        if (rc != 0 && rc != SAL_ESTALE) {
            rs_fail(rs, "published id %#llx %s: %d (%s), not live or SAL_ESTALE",
                    (unsigned long long)rs->ids.v[i], when, rc, sal_strerror(rc));
            return 0;
        }
    }
    return 1;
}

/* Allocate `n` objects (more than the heap has free ids, so that every free
 * entry is taken): does none carry a published id?  1 or 0; all released
 * again. */
static int fresh_ids_unpublished(round_state *rs, sal_session *s, uint64_t n)
{
    sal_id *fresh = calloc(n, sizeof *fresh);
    if (!fresh) {
        rs_fail(rs, "out of memory for the id check");
        return 0;
    }
    int ok = 1, rc = sal_write_begin(s);
    uint64_t got = 0;
    for (void *p; rc == 0 && ok && got < n; got++) {
        if ((rc = sal_alloc(s, 8, 0, 0, &fresh[got], &p)))
            break;
        if (bsearch(&fresh[got], rs->ids.v, rs->ids.len, sizeof *rs->ids.v, tu_cmp_u64)) {
            rs_fail(rs, "id %#llx, published before the kill, handed out again",
                    (unsigned long long)fresh[got]);
            ok = 0;
        }
    }
    if (rc) {
        rs_fail(rs, "allocating for the id check: %d (%s)", rc, sal_strerror(rc));
        ok = 0;
    }
    sal_write_end(s);
    for (uint64_t i = 0; i < got; i++)
        sal_release(s, fresh[i]);
    free(fresh);
    return ok;
}

/* No id a worker published, before or after the last commit, is handed out
 * again by the recovered heap, reopened. */
static int check_ids_not_reissued(const char *path, round_state *rs)
{
    if (rs->ids.len == 0)
        return 0;
    qsort(rs->ids.v, rs->ids.len, sizeof *rs->ids.v, tu_cmp_u64);
    sal_options o = heap_options();
    o.ready_segments = 0;
    sal_heap *h;
    sal_session *s;
    int rc = sal_heap_open(path, &o, &h);
    if (rc) {
        rs_fail(rs, "reopen for the id check: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    if ((rc = sal_session_open(h, &s))) {
        sal_heap_close(h);
        rs_fail(rs, "session for the id check: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    sal_heap_stats st;
    sal_heap_stats_get(h, &st);
    int ok = published_live_or_stale(rs, s, "after the recovery") &&
             fresh_ids_unpublished(rs, s, st.ids_high_water + 2 * 1024) &&
             published_live_or_stale(rs, s, "after the free ids were taken");
    sal_session_close(s);
    sal_heap_close(h);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------
 * A round
 * --------------------------------------------------------------------- */

enum { KILL_DELAY, KILL_IN_SYNC, KILL_AFTER_COMMIT };

typedef struct round_result {
    int pass, mid, mid_match, how;
    uint64_t commits;
    double seconds;
} round_result;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int verbose;
static int kept_files; /* SAL_CRASH_KEEP kept a failed round's files */

static round_result run_round(const char *dir, uint64_t seed, int index)
{
    round_result res;
    memset(&res, 0, sizeof res);
    double t0 = now_s();
    round_state *rs = calloc(1, sizeof *rs);
    if (!rs) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    cw_empty_state(THREADS, &rs->empty);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/heap-%d", dir, index);
    unlink(path);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("pipe2");
        exit(2);
    }
    (void)fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        close(fds[0]);
        child_fd = fds[1];
        child_main(path, seed);
        _exit(3);
    }
    close(fds[1]);
    int fd = fds[0];
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    /* How to kill, one round in three each: after a random delay; a few
     * microseconds after sync number `target` started (inside it, often);
     * a little after commit number `target` was reported.  The last two
     * do not depend on the machine's speed, so that most rounds see
     * several commits even on a loaded machine or under a sanitizer. */
    uint64_t krng = seed ^ 0x6b696c6cull;
    (void)tu_rand(&krng);
    int how = (int)tu_rand_below(&krng, 3);
    uint64_t target = 4 + tu_rand_below(&krng, 5);
    double delay = (3.0 + (double)tu_rand_below(&krng, 42000) / 1000.0) / 1000.0;
    if (how != KILL_DELAY)
        delay = 1.5; /* the cap: kill anyway if the target is not reached */
    double after_event = how == KILL_IN_SYNC ? (double)tu_rand_below(&krng, 400) * 1e-6
                                             : (double)tu_rand_below(&krng, 2000) * 1e-6;
    res.how = how;

    int alive = 1;
    double deadline = 0;
    double ready_limit = now_s() + 10.0;
    while (alive) {
        double now = now_s();
        if (!rs->ready && now > ready_limit) {
            rs_fail(rs, "the child did not get ready in 10 s");
            break;
        }
        if (rs->ready && deadline == 0)
            deadline = now + delay;
        if (((how == KILL_IN_SYNC && rs->last_start >= target) ||
             (how == KILL_AFTER_COMMIT && rs->commits >= target)) &&
            deadline > now + after_event)
            deadline = now + after_event;
        if (deadline != 0 && now >= deadline)
            break;
        double wait = deadline != 0 ? deadline - now : 0.05;
        if (wait > 0.05)
            wait = 0.05;
        struct timespec ts = {0, (long)(wait * 1e9)};
        struct pollfd p = {fd, POLLIN, 0};
        int pr = ppoll(&p, 1, &ts, NULL);
        if (pr > 0)
            alive = read_some(fd, rs);
        if (rs->error[0])
            break;
    }
    kill(pid, SIGKILL);
    /* Everything the child wrote before it died. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    while (read_some(fd, rs)) {
    }
    close(fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!rs->error[0] && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
        rs_fail(rs, "the child ended by itself (status %#x) before the kill", status);
    if (!rs->error[0] && !rs->ready)
        rs_fail(rs, "the child never got ready");

    res.commits = rs->commits;
    res.mid = rs->last_start > rs->last_done.n;
    if (!rs->error[0] && check_heap_after_kill(path, rs, res.mid, &res.mid_match) == 0 &&
        check_ids_not_reissued(path, rs) == 0)
        res.pass = 1;
    res.seconds = now_s() - t0;

    if (!res.pass) {
        printf("round %d seed %llu: FAILED: %s\n", index, (unsigned long long)seed, rs->error);
        printf("    killed %s; %llu commits reported; last sync started %llu (mode %d); "
               "versions reported %zu/%zu/%zu\n",
               how == KILL_DELAY ? "after a delay"
               : how == KILL_IN_SYNC ? "just after a sync started"
                                     : "just after a commit",
               (unsigned long long)rs->commits, (unsigned long long)rs->last_start,
               rs->last_start_mode, rs->hist[0].len, rs->hist[1].len, rs->hist[2].len);
        const char *keep = getenv("SAL_CRASH_KEEP");
        if (keep && *keep && strcmp(keep, "0") != 0)
        {
            printf("    heap kept: %s\n", path);
            kept_files = 1;
        }
        else
            unlink(path);
    } else {
        if (verbose)
            printf("round %d seed %llu: ok, %llu commits, %s%s, %.0f ms\n", index,
                   (unsigned long long)seed, (unsigned long long)rs->commits,
                   res.mid ? "killed inside a sync" : "killed between syncs",
                   res.mid_match ? " (recovered the commit in flight)" : "",
                   res.seconds * 1e3);
        unlink(path);
    }
    fflush(stdout);
    for (int t = 0; t < THREADS; t++)
        free(rs->hist[t].v);
    free(rs->ids.v);
    free(rs);
    return res;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    cw_args args;
    if (cw_parse_args(argc, argv, "SAL_KILL_ROUNDS", &args) != 0)
        return 2;
    long rounds = args.rounds, max_failures = args.max_failures;
    uint64_t seed = args.seed;
    verbose = args.verbose;
    char dir[PATH_MAX];
    if (tu_mkdtemp(dir, sizeof dir) != 0) {
        perror("mkdtemp");
        return 2;
    }
    printf("kill harness: %ld rounds from seed %llu (replay a round: --rounds 1 --seed S)\n",
           rounds, (unsigned long long)seed);
    fflush(stdout);

    long passed = 0, failed = 0, mid = 0, mid_match = 0, done = 0, how[3] = {0, 0, 0};
    uint64_t *commits = calloc((size_t)rounds, sizeof *commits);
    double *times = calloc((size_t)rounds, sizeof *times);
    if (!commits || !times)
        return 2;
    for (long i = 0; i < rounds; i++) {
        round_result r = run_round(dir, seed + (uint64_t)i, (int)i);
        commits[i] = r.commits;
        times[i] = r.seconds;
        done++;
        if (r.pass)
            passed++;
        else
            failed++;
        mid += r.mid;
        mid_match += r.mid_match;
        how[r.how]++;
        if (max_failures > 0 && failed >= max_failures)
            break;
    }
    if (kept_files)
        printf("files of the failed rounds kept in %s\n", dir);
    else
        tu_rm_rf(dir);
    qsort(commits, (size_t)done, sizeof *commits, tu_cmp_u64);
    qsort(times, (size_t)done, sizeof *times, cmp_dbl);
    uint64_t median = commits[done / 2];
    printf("kill: round time median %.0f ms, max %.0f ms; killed %ld after a delay, %ld just "
           "after a sync started, %ld just after a commit; %ld of the kills inside a sync "
           "recovered the commit in flight\n",
           times[done / 2] * 1e3, times[done - 1] * 1e3, how[KILL_DELAY], how[KILL_IN_SYNC],
           how[KILL_AFTER_COMMIT], mid_match);
    int status = failed > 0;
    if (done >= 200 && (mid == 0 || median < 3)) {
        printf("kill: too weak for CI: %ld kills inside a sync (need > 0), median %llu commits "
               "before a kill (need >= 3)\n",
               mid, (unsigned long long)median);
        status = 1;
    }
    printf("kill-rounds: %ld passed, %ld failed; mid-sync %ld; median commits before kill %llu; "
           "seeds %llu-%llu\n",
           passed, failed, mid, (unsigned long long)median, (unsigned long long)seed,
           (unsigned long long)(seed + (uint64_t)done - 1));
    free(commits);
    free(times);
    return status;
}
