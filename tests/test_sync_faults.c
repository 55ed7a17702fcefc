/*
 * test_sync_faults.c - failures injected into a sync (msync,
 * sync_file_range, mprotect) and into allocation (fallocate, ftruncate),
 * and stray writes to committed memory.
 *
 * A scenario runs in a forked child on a fresh heap: it builds a state,
 * commits it durably (state A), then goes through phases, each: more
 * changes, then a sync in a given mode with, maybe, one OS operation made
 * to fail.  The child digests every commit from the roots
 * sal_sync_snapshot hands out (crash_workload.c), sends the results
 * through a pipe and then "crashes" (_exit without closing).  The parent
 * checks that the failing call returned the error (and that the child
 * neither crashed nor got a SIGBUS), then opens the heap as a killed
 * process (same boot) or a power loss (a different boot id) would find it,
 * read-only and with SAL_OPEN_RECOVER: the state must be the last commit
 * that the mode promises survives, every refcount exact, nothing leaked.
 *
 * Stray writes: a write through a pointer obtained before a sync, to an
 * object that sync committed, must die of SIGSEGV (forked child).
 *
 * Write-back errors (writeback_*): the pages of a failed write-back stay
 * in memory, clean, and not on disk (the power-cut model, os.h); a retry,
 * a later commit, the next process or a clean close must still put on
 * disk everything it promises.
 *
 * Found by a review, each failing before its fix: a failed durable slot
 * flush followed by a protect commit (epochs), a power loss after a
 * recovering open (what a volatile slot's bytes are), a failed durable
 * slot that reaches the disk (its segments wait for a durable commit), a
 * stale generation met by recovery's marking, and generations kept by a
 * same-boot recovery.
 */
#include "test_util.h"

#include <signal.h>

#include "crash_workload.h"
#include "internal.h" /* the cut hook, a session's bump pointer */
#include "os.h"

enum { THREADS = 1, MAX_PHASES = 4 };

static int hooks_available(void)
{
    return sal_os_fault_set(SAL_OS_FSYNC, 0, 0, 0) != ENOSYS;
}

#define NEED_HOOKS()                                                                     \
    do {                                                                                 \
        if (!hooks_available()) {                                                        \
            print_message("fault hooks not compiled in (SAL_TEST_HOOKS=OFF): skipped\n"); \
            skip();                                                                      \
        }                                                                                \
    } while (0)

static int faults_teardown(void **state)
{
    sal_os_fault_clear_all();
    sal_os_boot_id_override(NULL);
    return tu_fixture_teardown(state);
}

#define FAULT_TEST(f) cmocka_unit_test_setup_teardown(f, tu_fixture_setup, faults_teardown)

static sal_options small_options(void)
{
    sal_options o = tu_small_options();
    o.reserve_bytes = 256ull << 20;
    o.ready_segments = 0; /* no provider thread: every run is the same */
    return o;
}

/* ---------------------------------------------------------------------
 * A deterministic state: the 8 roots of "worker 0", each a list of
 * nodes (slot 0: the previous version, slot 1: a fresh leaf), sometimes
 * emptied, so that committed objects die and new ones are born.
 * --------------------------------------------------------------------- */
static int build(sal_session *s, uint64_t *rng, int ops)
{
    for (int k = 0; k < ops; k++) {
        unsigned r = (unsigned)tu_rand_below(rng, CW_ROOTS_PER_THREAD);
        int rc;
        if ((rc = sal_write_begin(s)))
            return rc;
        sal_id old, node, leaf;
        void *p;
        if ((rc = sal_root_get(s, r, &old)))
            return rc;
        if (old != SAL_NULL_ID && tu_rand_below(rng, 4) == 0) {
            /* empty the root: the list dies */
            if ((rc = sal_release(s, old)) || (rc = sal_root_set(s, r, SAL_NULL_ID)))
                return rc;
        } else {
            size_t size = 16 + 8 * (size_t)tu_rand_below(rng, 40);
            if ((rc = sal_alloc(s, size, 2, 7, &node, &p)))
                return rc;
            tu_fill(p, size, 16, tu_rand(rng));
            if ((rc = sal_alloc(s, 24, 0, 9, &leaf, &p)))
                return rc;
            tu_fill(p, 24, 0, tu_rand(rng));
            if ((rc = sal_set_child(s, node, 0, old)) || (rc = sal_set_child(s, node, 1, leaf)) ||
                (rc = sal_root_set(s, r, node)))
                return rc;
        }
        if ((rc = sal_write_end(s)))
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Scenarios in a child
 * --------------------------------------------------------------------- */

typedef struct phase {
    int ops;       /* changes before the sync */
    int mode;      /* SAL_SYNC_* */
    int fault;     /* make `op` fail during this sync */
    sal_os_op op;
    int err;
    long after;    /* calls of `op` that still succeed */
} phase;

typedef struct scenario {
    const char *path;
    phase ph[MAX_PHASES];
    int nph;
    int wfd;
} scenario;

typedef struct phase_out {
    int rc;
    int cut_taken;
    long msyncs; /* durable flushes this sync made (successful ones) */
    cw_state state;
} phase_out;

typedef struct scenario_out {
    int step; /* 0, or where the child failed */
    int rc;
    char msg[200];
    cw_state a; /* the first commit, durable */
    long msyncs_a;
    phase_out ph[MAX_PHASES];
} scenario_out;

static int do_sync(sal_heap *h, sal_session *reader, int mode, phase_out *po)
{
    sal_id roots[SAL_ROOT_COUNT];
    long f0 = sal_os_powercut_flushes();
    po->rc = sal_sync_snapshot(h, mode, roots);
    po->msyncs = sal_os_powercut_flushes() - f0;
    po->cut_taken = po->rc >= 0;
    for (unsigned i = 0; i < SAL_ROOT_COUNT; i++)
        po->cut_taken |= roots[i] != SAL_NULL_ID;
    int err = 0;
    if (po->cut_taken) {
        char msg[256];
        if (cw_digest(reader, roots, THREADS, 1, &po->state, msg, sizeof msg))
            err = -1;
    }
    for (unsigned i = 0; i < SAL_ROOT_COUNT; i++)
        if (roots[i] != SAL_NULL_ID)
            sal_release(reader, roots[i]);
    return err;
}

static int scenario_child(void *arg)
{
    scenario *sc = arg;
    scenario_out out;
    memset(&out, 0, sizeof out);
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng = 0x5eed;
    int rc;
    if ((rc = sal_heap_create(sc->path, &o, &h))) {
        out.step = 1, out.rc = rc;
        goto send;
    }
    if ((rc = sal_session_open(h, &s)) || (rc = sal_reader_open(h, &reader))) {
        out.step = 2, out.rc = rc;
        goto send;
    }
    if ((rc = build(s, &rng, 40))) {
        out.step = 3, out.rc = rc;
        goto send;
    }
    phase_out pa;
    if (do_sync(h, reader, SAL_SYNC_DURABLE, &pa) || pa.rc) {
        out.step = 4, out.rc = pa.rc;
        goto send;
    }
    out.a = pa.state;
    out.msyncs_a = pa.msyncs;
    for (int i = 0; i < sc->nph; i++) {
        const phase *ph = &sc->ph[i];
        if ((rc = build(s, &rng, ph->ops))) {
            out.step = 10 + i, out.rc = rc;
            goto send;
        }
        if (ph->fault)
            sal_os_fault_set(ph->op, ph->err, ph->after, 1);
        int bad = do_sync(h, reader, ph->mode, &out.ph[i]);
        sal_os_fault_clear_all();
        if (bad) {
            out.step = 20 + i;
            snprintf(out.msg, sizeof out.msg, "digest of the snapshot of phase %d failed", i);
            goto send;
        }
    }
send:
    if (write(sc->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    /* The crash: no close. */
    return 0;
}

static scenario_out run_scenario(tu_ctx *c, const phase *ph, int nph)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    scenario sc;
    memset(&sc, 0, sizeof sc);
    sc.path = c->path;
    memcpy(sc.ph, ph, (size_t)nph * sizeof *ph);
    sc.nph = nph;
    sc.wfd = fds[1];
    unlink(c->path);
    int status = tu_in_child(scenario_child, &sc);
    close(fds[1]);
    scenario_out out;
    ssize_t n = read(fds[0], &out, sizeof out);
    close(fds[0]);
    if (WIFSIGNALED(status))
        fail_msg("the scenario child died of signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n != (ssize_t)sizeof out)
        fail_msg("the scenario child failed (status %#x)", status);
    if (out.step)
        fail_msg("the scenario child failed at step %d: %d (%s) %s", out.step, out.rc,
                 sal_strerror(out.rc), out.msg);
    return out;
}

/* ---------------------------------------------------------------------
 * Opening the "crashed" heap
 * --------------------------------------------------------------------- */

static const uint8_t other_boot[16] = {0xb0, 0x07, 0xed, 0xa9, 0xa1, 0x40, 0x00, 0x01,
                                       0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09};

/* A read-only open (nothing is written): with `rep` what its recovery
 * reported, with `st` the state it shows (checked: every count exact,
 * nothing leaked). */
static void look_at(tu_ctx *c, int reboot, sal_recovery_report *rep, cw_state *st)
{
    sal_options o = small_options();
    o.flags = SAL_OPEN_READONLY;
    sal_os_boot_id_override(reboot ? other_boot : NULL);
    sal_heap *h;
    int rc = sal_heap_open(c->path, &o, &h);
    sal_os_boot_id_override(NULL);
    if (rc)
        fail_msg("read-only open (%s): %d (%s)", reboot ? "after a reboot" : "same boot", rc,
                 sal_strerror(rc));
    if (rep)
        TU_OK(sal_heap_recovery_report(h, rep));
    char err[512];
    if (st && cw_check_heap(h, THREADS, CW_CHECK_READONLY, st, err, sizeof err)) {
        sal_heap_close(h);
        fail_msg("read-only open (%s): %s", reboot ? "after a reboot" : "same boot", err);
    }
    TU_OK(sal_heap_close(h));
}

/* What a read-only open shows. */
static cw_state look(tu_ctx *c, int reboot)
{
    cw_state st;
    look_at(c, reboot, NULL, &st);
    return st;
}

/* Run `child` in a forked process that sends `len` bytes of results into
 * the pipe end *wfd is set to, then dies without closing anything (a kill
 * for the heap); the results go to `out`. */
static void run_child(int (*child)(void *), void *arg, int *wfd, void *out, size_t len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    *wfd = fds[1];
    int status = tu_in_child(child, arg);
    close(fds[1]);
    assert_int_equal(read(fds[0], out, len), (ssize_t)len);
    close(fds[0]);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A power cut now, with the OS layer copying durable flushes into
 * `shadow`: the disk holds the shadow, the file keeps its length.  Taken
 * as an image first (closing the heap flushes more), written by
 * power_cut_write. */
static uint8_t *power_cut_image(const char *path, const char *shadow, size_t *len_out)
{
    size_t len = 0, shadow_len = 0;
    uint8_t *real = tu_read_file(path, &len);
    uint8_t *buf = tu_read_file(shadow, &shadow_len);
    assert_non_null(real);
    assert_non_null(buf);
    uint8_t *img = calloc(1, len);
    assert_non_null(img);
    memcpy(img, buf, shadow_len < len ? shadow_len : len);
    free(buf);
    free(real);
    *len_out = len;
    return img;
}

static void power_cut_write(const char *path, uint8_t *img, size_t len)
{
    sal_os_powercut_arm(NULL, -1);
    TU_OK(tu_write_file(path, img, len));
    free(img);
}

/* Recover for real (writes a commit), check, and reopen cleanly. */
static cw_state recover(tu_ctx *c, int reboot)
{
    sal_options o = small_options();
    sal_heap *h;
    TU_ERR(sal_heap_open(c->path, &o, &h), SAL_EUNCLEAN);
    o.flags = SAL_OPEN_RECOVER;
    sal_os_boot_id_override(reboot ? other_boot : NULL);
    int rc = sal_heap_open(c->path, &o, &h);
    sal_os_boot_id_override(NULL);
    if (rc)
        fail_msg("open with SAL_OPEN_RECOVER (%s): %d (%s)", reboot ? "after a reboot" : "same boot",
                 rc, sal_strerror(rc));
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    assert_int_equal(rep.recovered, 1);
    assert_int_equal(rep.swept, reboot);
    assert_int_equal(rep.dangling_refs, 0);
    assert_int_equal(rep.damaged_headers, 0);
    assert_int_equal(rep.roots_cleared, 0);
    cw_state st, again;
    char err[512];
    if (cw_check_heap(h, THREADS, 0, &st, err, sizeof err)) {
        sal_heap_close(h);
        fail_msg("after recovery: %s", err);
    }
    TU_OK(sal_heap_close(h));
    o.flags = 0;
    TU_OK(sal_heap_open(c->path, &o, &h));
    if (cw_check_heap(h, THREADS, 0, &again, err, sizeof err)) {
        sal_heap_close(h);
        fail_msg("reopened after recovery: %s", err);
    }
    TU_OK(sal_heap_close(h));
    assert_true(again.digest == st.digest);
    return st;
}

#define EXPECT_STATE(got, want, what)                                                   \
    do {                                                                                \
        if (!cw_state_same(&(got), &(want)))                                                     \
            fail_msg("%s: recovered digest %016" PRIx64 " (%" PRIu64 " objects), "      \
                     "expected %016" PRIx64 " (%" PRIu64 " objects)",                   \
                     what, (got).digest, (got).objects, (want).digest, (want).objects); \
    } while (0)

#define EXPECT_EITHER(got, w1, w2, what)                                                \
    do {                                                                                \
        if (!cw_state_same(&(got), &(w1)) && !cw_state_same(&(got), &(w2)))                               \
            fail_msg("%s: recovered digest %016" PRIx64 ", expected %016" PRIx64        \
                     " or %016" PRIx64,                                                 \
                     what, (got).digest, (w1).digest, (w2).digest);                     \
    } while (0)

/* ---------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------- */

/* A durable sync whose k-th call of `op` fails, for every k: the sync
 * returns EIO; nothing crashes; after a kill or a power loss the heap
 * holds the previous commit (or, if only the flush of the commit slot
 * itself failed, possibly the new one); and a later durable sync commits
 * everything, including what the failed one could not write.  Returns how
 * many calls of `op` the sync makes. */
static long durable_fails_at_each_call(tu_ctx *c, sal_os_op op, const char *what)
{
    long calls = -1;
    for (long k = 0; k < 64 && calls < 0; k++) {
        phase ph = {30, SAL_SYNC_DURABLE, 1, op, EIO, k};
        scenario_out out = run_scenario(c, &ph, 1);
        if (out.ph[0].rc == 0) {
            calls = k; /* the fault never fired: the sync makes k calls */
            break;
        }
        if (out.ph[0].rc != EIO)
            fail_msg("%s %ld failing: the sync returned %d (%s), not EIO", what, k,
                     out.ph[0].rc, sal_strerror(out.ph[0].rc));
        assert_true(out.ph[0].cut_taken);
        /* Killed right after the failed sync (same boot), and after a power
         * loss: the previous commit, or the failed one if everything but
         * the flush of its slot went through. */
        cw_state same_boot = look(c, 0), rebooted = look(c, 1);
        EXPECT_EITHER(same_boot, out.a, out.ph[0].state, "killed after a failed durable sync");
        EXPECT_EITHER(rebooted, out.a, out.ph[0].state, "power loss after a failed durable sync");
        if (!cw_state_same(&rebooted, &out.a))
            print_message("%s %ld failing: the commit slot was written, only its flush "
                          "failed: the new commit is there\n",
                          what, k);
        cw_state got = recover(c, 1);
        EXPECT_EITHER(got, out.a, out.ph[0].state, "recovered after a failed durable sync");

        /* The same, then a durable sync that works: it holds everything. */
        phase ph2[2] = {ph, {5, SAL_SYNC_DURABLE, 0, 0, 0, 0}};
        out = run_scenario(c, ph2, 2);
        assert_int_equal(out.ph[0].rc, EIO);
        assert_int_equal(out.ph[1].rc, 0);
        got = look(c, 1);
        EXPECT_STATE(got, out.ph[1].state, "power loss after a failed and a good durable sync");
        got = recover(c, 1);
        EXPECT_STATE(got, out.ph[1].state, "recovered after a failed and a good durable sync");
    }
    print_message("a durable sync of this scenario makes %ld %s calls; each one failed in turn\n",
                  calls, what);
    return calls;
}

static void durable_msync_fails_at_each_flush(void **state)
{
    NEED_HOOKS();
    /* At least the flush that makes the data durable and the slot's. */
    if (durable_fails_at_each_call(*state, SAL_OS_MSYNC, "msync") < 2)
        fail_msg("a durable sync made fewer than 2 flushes");
}

/* The data of a durable commit are written (and waited for) with
 * sync_file_range before the flush: each write failing in turn. */
static void durable_data_write_fails(void **state)
{
    NEED_HOOKS();
    if (durable_fails_at_each_call(*state, SAL_OS_SYNC_FILE_RANGE, "sync_file_range") < 1)
        print_message("(this build does not write data with sync_file_range)\n");
}

/* An async sync whose sync_file_range fails: EIO, the previous commit is
 * what a kill finds, and a later async sync commits everything. */
static void async_sync_file_range_fails(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    phase ph[2] = {{30, SAL_SYNC_ASYNC, 1, SAL_OS_SYNC_FILE_RANGE, EIO, 0},
                   {5, SAL_SYNC_ASYNC, 0, 0, 0, 0}};
    scenario_out out = run_scenario(c, ph, 1);
    TU_ERR(out.ph[0].rc, EIO);
    cw_state got = look(c, 0);
    EXPECT_STATE(got, out.a, "killed after a failed async sync");
    got = recover(c, 0);
    EXPECT_STATE(got, out.a, "recovered after a failed async sync");

    out = run_scenario(c, ph, 2);
    TU_ERR(out.ph[0].rc, EIO);
    TU_OK(out.ph[1].rc);
    got = look(c, 0);
    EXPECT_STATE(got, out.ph[1].state, "killed after a failed and a good async sync");
    /* after a reboot only the durable commit counts */
    got = look(c, 1);
    EXPECT_STATE(got, out.a, "power loss after async syncs");
    got = recover(c, 0);
    EXPECT_STATE(got, out.ph[1].state, "recovered after a failed and a good async sync");
}

/* mprotect failing in a protect sync, and in a durable one. */
static void mprotect_fails(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    for (int mode = SAL_SYNC_PROTECT; mode <= SAL_SYNC_DURABLE; mode += 2) {
        phase ph[2] = {{30, mode, 1, SAL_OS_MPROTECT, ENOMEM, 0}, {5, mode, 0, 0, 0, 0}};
        scenario_out out = run_scenario(c, ph, 1);
        TU_ERR(out.ph[0].rc, ENOMEM);
        cw_state got = look(c, 0);
        EXPECT_STATE(got, out.a, "killed after a sync whose mprotect failed");
        got = recover(c, 1);
        EXPECT_STATE(got, out.a, "recovered after a sync whose mprotect failed");

        out = run_scenario(c, ph, 2);
        TU_ERR(out.ph[0].rc, ENOMEM);
        TU_OK(out.ph[1].rc);
        got = look(c, 0);
        EXPECT_STATE(got, out.ph[1].state, "killed after a failed and a good sync");
        got = recover(c, 0);
        EXPECT_STATE(got, out.ph[1].state, "recovered after a failed and a good sync");
    }
}

/* Allocation under a failing fallocate (ENOSPC, no provider thread): the
 * allocating call fails, what was allocated before is committed by a
 * durable sync as usual, and the commit survives a power loss. */
typedef struct alloc_arg {
    const char *path;
    sal_os_op op;
    int wfd;
} alloc_arg;

typedef struct alloc_out {
    int step, rc;
    int alloc_rc;    /* what the failing allocation returned */
    int allocated;   /* objects allocated before it */
    int sync_rc;
    cw_state committed;
    int later_rc;    /* allocation and sync after the fault is gone */
    cw_state later;
} alloc_out;

static int alloc_child(void *argp)
{
    alloc_arg *a = argp;
    alloc_out out;
    memset(&out, 0, sizeof out);
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng = 77;
    int rc;
    if ((rc = sal_heap_create(a->path, &o, &h)) || (rc = sal_session_open(h, &s)) ||
        (rc = sal_reader_open(h, &reader))) {
        out.step = 1, out.rc = rc;
        goto send;
    }
    if ((rc = build(s, &rng, 20))) {
        out.step = 2, out.rc = rc;
        goto send;
    }
    sal_os_fault_set(a->op, ENOSPC, 0, -1);
    /* A list under root 9, 8 KiB per node, until the disk is "full". */
    if ((rc = sal_write_begin(s))) {
        out.step = 3, out.rc = rc;
        goto send;
    }
    for (int i = 0; i < 2000; i++) {
        sal_id node, prev;
        void *p;
        rc = sal_alloc(s, 8192, 1, 3, &node, &p);
        if (rc) {
            out.alloc_rc = rc;
            break;
        }
        tu_fill(p, 8192, 8, (uint64_t)i);
        if ((rc = sal_root_get(s, 9, &prev)) || (rc = sal_set_child(s, node, 0, prev)) ||
            (rc = sal_root_set(s, 9, node))) {
            out.step = 4, out.rc = rc;
            goto send;
        }
        out.allocated++;
    }
    if ((rc = sal_write_end(s))) {
        out.step = 5, out.rc = rc;
        goto send;
    }
    phase_out po;
    if (do_sync(h, reader, SAL_SYNC_DURABLE, &po)) {
        out.step = 6;
        goto send;
    }
    out.sync_rc = po.rc;
    out.committed = po.state;
    sal_os_fault_clear_all();
    if ((rc = build(s, &rng, 20))) {
        out.later_rc = rc;
        goto send;
    }
    if (do_sync(h, reader, SAL_SYNC_DURABLE, &po)) {
        out.step = 7;
        goto send;
    }
    out.later_rc = po.rc;
    out.later = po.state;
send:
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0;
}

static alloc_out run_alloc(tu_ctx *c, sal_os_op op)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    alloc_arg a = {c->path, op, fds[1]};
    unlink(c->path);
    int status = tu_in_child(alloc_child, &a);
    close(fds[1]);
    alloc_out out;
    ssize_t n = read(fds[0], &out, sizeof out);
    close(fds[0]);
    if (WIFSIGNALED(status))
        fail_msg("the allocating child died of signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n != (ssize_t)sizeof out)
        fail_msg("the allocating child failed (status %#x)", status);
    if (out.step)
        fail_msg("the allocating child failed at step %d: %d (%s)", out.step, out.rc,
                 sal_strerror(out.rc));
    return out;
}

static void fallocate_enospc_then_sync(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    alloc_out out = run_alloc(c, SAL_OS_FALLOCATE);
    if (out.alloc_rc != ENOSPC)
        fail_msg("allocating under a failing fallocate: %d (%s) after %d objects, expected ENOSPC",
                 out.alloc_rc, sal_strerror(out.alloc_rc), out.allocated);
    TU_OK(out.sync_rc);
    TU_OK(out.later_rc);
    print_message("%d objects of 8 KiB allocated before ENOSPC; they were committed\n",
                  out.allocated);
    cw_state got = look(c, 1);
    EXPECT_STATE(got, out.later, "power loss after ENOSPC and two syncs");
    got = recover(c, 1);
    EXPECT_STATE(got, out.later, "recovered after ENOSPC and two syncs");
}

/* ftruncate is only called when a heap is created: a failing one makes
 * sal_heap_create fail cleanly (no file left), and does not disturb a heap
 * that is already open (allocation and syncs go on). */
static void ftruncate_enospc(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    sal_options o = small_options();
    sal_heap *h = NULL;
    TU_OK(sal_os_fault_set(SAL_OS_FTRUNCATE, ENOSPC, 0, -1));
    TU_ERR(sal_heap_create(c->path, &o, &h), ENOSPC);
    assert_null(h);
    assert_int_not_equal(access(c->path, F_OK), 0);
    sal_os_fault_clear_all();

    alloc_out out = run_alloc(c, SAL_OS_FTRUNCATE);
    TU_OK(out.alloc_rc);
    assert_int_equal(out.allocated, 2000);
    TU_OK(out.sync_rc);
    TU_OK(out.later_rc);
    cw_state got = recover(c, 1);
    EXPECT_STATE(got, out.later, "recovered after syncs under a failing ftruncate");
}

/* A durable sync whose commit-slot flush fails, then a durable sync whose
 * segment-table flush fails, then a crash.  The first sync's slot may be
 * on disk (it was written; only its flush failed) while the second sync
 * has rewritten the segment-table copy that slot vouches for: open must
 * fall back to the other durable slot, not refuse the heap. */
static void slot_flush_then_table_flush_fail(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    /* How many flushes each sync makes, measured on identical runs. */
    phase ph[2] = {{30, SAL_SYNC_DURABLE, 0, SAL_OS_MSYNC, EIO, 0},
                   {5, SAL_SYNC_DURABLE, 0, SAL_OS_MSYNC, EIO, 0}};
    scenario_out out = run_scenario(c, ph, 1);
    long n1 = out.ph[0].msyncs;
    assert_true(n1 >= 2);
    ph[0].fault = 1;
    ph[0].after = n1 - 1; /* the slot flush fails */
    out = run_scenario(c, ph, 2);
    TU_ERR(out.ph[0].rc, EIO);
    long n2 = out.ph[1].msyncs;
    assert_true(n2 >= 2);
    ph[1].fault = 1;
    ph[1].after = n2 - 2; /* the segment-table flush fails */
    out = run_scenario(c, ph, 2);
    TU_ERR(out.ph[0].rc, EIO);
    TU_ERR(out.ph[1].rc, EIO);
    for (int reboot = 0; reboot <= 1; reboot++) {
        cw_state got = look(c, reboot);
        EXPECT_EITHER(got, out.a, out.ph[0].state,
                      reboot ? "power loss after two failed syncs" : "killed after two failed syncs");
    }
    cw_state got = recover(c, 0);
    EXPECT_EITHER(got, out.a, out.ph[0].state, "recovered after two failed syncs");
}

/* ---------------------------------------------------------------------
 * Stray writes
 * --------------------------------------------------------------------- */

typedef struct stray_arg {
    const char *path;
    int mode;
    int via_read;       /* the pointer comes from sal_read of a snapshot */
    int mprotect_fails; /* the sync that commits it fails in mprotect, a
                           later one succeeds */
} stray_arg;

static int stray_child(void *argp)
{
    stray_arg *a = argp;
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    if (sal_heap_create(a->path, &o, &h) || sal_session_open(h, &s))
        return 10;
    sal_id id;
    void *p;
    if (sal_write_begin(s) || sal_alloc(s, 256, 0, 1, &id, &p))
        return 11;
    memset(p, 0x11, 256);
    if (sal_root_set(s, 0, id) || sal_write_end(s))
        return 12;
    /* Before any sync the object is writable (it is new). */
    ((volatile uint8_t *)p)[8] = 0x22;
    if (a->mprotect_fails) {
        sal_os_fault_set(SAL_OS_MPROTECT, ENOMEM, 0, 1);
        if (sal_sync(h, a->mode) != ENOMEM)
            return 13;
        sal_os_fault_clear_all();
    }
    if (sal_sync(h, a->mode))
        return 14;
    volatile uint8_t *target = p;
    if (a->via_read) {
        sal_id snap;
        const void *q;
        if (sal_root_get(s, 0, &snap) || sal_read_begin(s) || sal_read(s, snap, &q))
            return 15;
        target = (volatile uint8_t *)(uintptr_t)q;
    }
    /* Die of the real signal, not of a sanitizer's report. */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    target[16] = 0x33; /* must fault */
    return 20;         /* the write went through */
}

static void stray_write_faults(void **state)
{
    tu_ctx *c = *state;
    static const char *modes[] = {"protect", "async", "durable"};
    for (int via_read = 0; via_read <= 1; via_read++) {
        for (int mode = SAL_SYNC_PROTECT; mode <= SAL_SYNC_DURABLE; mode++) {
            unlink(c->path);
            stray_arg a = {c->path, mode, via_read, 0};
            int status = tu_in_child(stray_child, &a);
            if (WIFEXITED(status))
                fail_msg("a write to a committed object (%s sync, pointer from %s) did not "
                         "fault: the child exited with %d",
                         modes[mode], via_read ? "sal_read" : "sal_alloc", WEXITSTATUS(status));
            if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
                fail_msg("a write to a committed object (%s sync): status %#x, expected SIGSEGV",
                         modes[mode], status);
        }
    }
}

/* A sync whose mprotect failed, then one that worked: the object the first
 * committed must be read-only by then. */
static void stray_write_after_failed_mprotect(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    unlink(c->path);
    stray_arg a = {c->path, SAL_SYNC_PROTECT, 0, 1};
    int status = tu_in_child(stray_child, &a);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 20)
        fail_msg("a sync failed in mprotect and the next one succeeded, but the object the "
                 "first committed is still writable (a stray write did not fault)");
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
        fail_msg("status %#x, expected SIGSEGV", status);
}

/* A durable sync whose slot flush fails (the slot is in the page cache and
 * may reach the disk), then a protect sync that succeeds, then a kill: open
 * must find the protect commit.  It once got the failed commit's epoch
 * again, and the tie went to the failed durable slot. */
static void failed_durable_slot_then_protect(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    phase ph[2] = {{30, SAL_SYNC_DURABLE, 0, SAL_OS_MSYNC, EIO, 0},
                   {5, SAL_SYNC_PROTECT, 0, 0, 0, 0}};
    scenario_out out = run_scenario(c, ph, 1);
    long n1 = out.ph[0].msyncs;
    assert_true(n1 >= 2);
    ph[0].fault = 1;
    ph[0].after = n1 - 1; /* the slot flush fails */
    out = run_scenario(c, ph, 2);
    TU_ERR(out.ph[0].rc, EIO);
    TU_OK(out.ph[1].rc);
    cw_state got = look(c, 0);
    print_message("failed_durable_slot_then_protect: a=%016" PRIx64 " failed=%016" PRIx64 " protect=%016" PRIx64 " got=%016" PRIx64 "\n",
                  out.a.digest, out.ph[0].state.digest, out.ph[1].state.digest, got.digest);
    EXPECT_STATE(got, out.ph[1].state, "killed after a failed durable and a good protect sync");
}

/* ---------------------------------------------------------------------
 * A process killed with the power-cut model armed, then the next process
 * of the same boot.  The child gets a child_arg: the heap and its shadow,
 * a variant, and the pipe for its results.
 * --------------------------------------------------------------------- */
typedef struct child_arg {
    const char *path, *shadow;
    int variant;
    int wfd;
} child_arg;

/* A new, empty heap at c->path and its shadow, the disk as it is now. */
static void heap_and_shadow(tu_ctx *c, char *shadow, size_t cap)
{
    snprintf(shadow, cap, "%s/shadow", c->dir);
    sal_options o = small_options();
    sal_heap *h;
    TU_OK(sal_heap_create(c->path, &o, &h));
    TU_OK(sal_heap_close(h));
    TU_OK(tu_copy_file(c->path, shadow));
}

/* The next process, same boot: the model armed again (the pages a failed
 * write-back left clean are still lost), the heap opened with
 * SAL_OPEN_RECOVER (its open writes a durable commit). */
static sal_heap *next_process_open(tu_ctx *c, const char *shadow)
{
    TU_OK(sal_os_powercut_arm(shadow, -1));
    sal_options o = small_options();
    o.flags = SAL_OPEN_RECOVER;
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, &o, &h));
    return h;
}

/* The pages committed since the last durable commit, lost by a write-back
 * the kernel started on its own (an async commit's). */
static void wb_lose_since_durable(sal_heap *h)
{
    for (uint64_t i = 0; i < h->segments_high_water; i++) {
        const sal_segment *g = &h->segments[i];
        if (g->readonly_mark > g->durable_mark)
            TU_OK(sal_os_powercut_lose(h->base + sal_segment_start(h, i) + g->durable_mark,
                                       g->readonly_mark - g->durable_mark));
    }
}

/* The child's start: the model armed, the heap opened with a session and
 * a reader, changes committed durably (their state in *first).  0, or the
 * step that failed, with its code in *rc. */
static int child_start(const child_arg *a, uint64_t *rng, sal_heap **h, sal_session **s,
                       sal_session **reader, cw_state *first, int *rc)
{
    sal_options o = small_options();
    phase_out po;
    if ((*rc = sal_os_powercut_arm(a->shadow, -1)))
        return 1;
    if ((*rc = sal_heap_open(a->path, &o, h)) || (*rc = sal_session_open(*h, s)) ||
        (*rc = sal_reader_open(*h, reader)))
        return 2;
    if ((*rc = build(*s, rng, 30)) || do_sync(*h, *reader, SAL_SYNC_DURABLE, &po) ||
        (*rc = po.rc))
        return 3;
    *first = po.state;
    return 0;
}

/* A durable commit, a protect commit, a kill, a same-boot SAL_OPEN_RECOVER
 * open (whose own commit is durable), then a power loss with no page
 * written back beyond the durable flushes: the protect commit's state must
 * survive.  The open's durable commit once flushed nothing, taking the
 * opened volatile slot's bytes for durable ones.
 *
 * Variants: PCB_FAILED_DURABLE, a durable sync whose write-back fails
 * comes before the kill; PCB_PROVIDER_ERROR, the commit is async, its
 * write-back fails, and the error goes to a segment preparation's wait
 * (the kernel reports it once, there).  The page cache outlives the
 * process, and so do the pages the failure left clean without writing
 * them (the model keeps them beside the shadow): the failing process must
 * have made them dirty again, or the next process's durable commit skips
 * them. */
enum { PCB_PLAIN, PCB_FAILED_DURABLE, PCB_PROVIDER_ERROR };
typedef struct pcb_out { int step, rc, fired; cw_state a, p; } pcb_out;

static int pcb_child(void *argp)
{
    child_arg *a = argp; /* variant: PCB_* */
    pcb_out out;
    memset(&out, 0, sizeof out);
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng = 4242;
    int rc;
    phase_out po;
    if ((out.step = child_start(a, &rng, &h, &s, &reader, &out.a, &out.rc)))
        goto send;
    int mode = a->variant == PCB_PROVIDER_ERROR ? SAL_SYNC_ASYNC : SAL_SYNC_PROTECT;
    if ((rc = build(s, &rng, 30)) || do_sync(h, reader, mode, &po) || po.rc) {
        out.step = 4, out.rc = rc ? rc : po.rc; goto send; }
    out.p = po.state;
    if (a->variant == PCB_FAILED_DURABLE) {
        sal_os_fault_set(SAL_OS_SYNC_FILE_RANGE, EIO, 1, 1); /* the data's */
        if (do_sync(h, reader, SAL_SYNC_DURABLE, &po) || po.rc != EIO) {
            out.step = 5, out.rc = po.rc; goto send; }
    } else if (a->variant == PCB_PROVIDER_ERROR) {
        /* The async commit's write-back fails; a segment preparation's
         * wait takes the error (no provider thread here: the session
         * prepares its segments itself). */
        wb_lose_since_durable(h);
        sal_os_fault_set(SAL_OS_DROP_CACHE, EIO, 0, 1);
        if ((rc = sal_write_begin(s))) { out.step = 6, out.rc = rc; goto send; }
        for (int i = 0; i < 8000 && !atomic_load(&h->writeback_failed); i++) {
            sal_id id;
            void *p;
            /* Small folios stay wanted (as under frequent commits, which
             * the bulk-writing test of alloc.c counts from): a fresh
             * segment's cache is then built after dropping what it held. */
            atomic_store(&h->small_folios, 1);
            s->bump_at_cut = s->bump;
            if ((rc = sal_alloc(s, 4000, 0, 3, &id, &p))) { out.step = 7, out.rc = rc; goto send; }
            memset(p, 0x5a, 4000);
        }
        out.fired = atomic_load(&h->writeback_failed) != 0;
        if ((rc = sal_write_end(s))) { out.step = 8, out.rc = rc; goto send; }
    }
send:
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0; /* killed: no close */
}

static void recovering_open_then_power_cut(tu_ctx *c, int variant, const char *what)
{
    char shadow[600];
    heap_and_shadow(c, shadow, sizeof shadow);
    child_arg a = {c->path, shadow, variant, -1};
    pcb_out out;
    run_child(pcb_child, &a, &a.wfd, &out, sizeof out);
    if (out.step) fail_msg("child step %d rc %d (%s)", out.step, out.rc, sal_strerror(out.rc));
    if (variant == PCB_PROVIDER_ERROR && !out.fired)
        fail_msg("no segment preparation took the error: the test proves nothing");

    sal_heap *h = next_process_open(c, shadow);
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    assert_int_equal(rep.recovered, 1);
    /* Power cut now: the disk is the shadow (no page written back). */
    size_t len;
    uint8_t *img = power_cut_image(c->path, shadow, &len);
    TU_OK(sal_heap_close(h));
    power_cut_write(c->path, img, len);

    cw_state st;
    look_at(c, 1, &rep, &st);
    print_message("%s: after power cut: recovered=%d swept=%d dangling=%" PRIu64 " damaged=%" PRIu64
                  " roots_cleared=%" PRIu64 " live=%" PRIu64 "\n", what, rep.recovered, rep.swept,
                  (uint64_t)rep.dangling_refs, (uint64_t)rep.damaged_headers,
                  (uint64_t)rep.roots_cleared, (uint64_t)rep.objects_live);
    print_message("%s: a=%016" PRIx64 " p=%016" PRIx64 " got=%016" PRIx64 "\n", what, out.a.digest, out.p.digest, st.digest);
    EXPECT_STATE(st, out.p, what);
}

static void powercut_after_recovering_open(void **state)
{
    NEED_HOOKS();
    recovering_open_then_power_cut(*state, PCB_PLAIN, "power loss after a recovering open's durable commit");
}

static void writeback_lost_pages_outlive_process(void **state)
{
    NEED_HOOKS();
    recovering_open_then_power_cut(*state, PCB_FAILED_DURABLE, "power loss after the next process's durable commit, "
                                              "a failed write-back before the kill");
}

/* A child slot holding another generation of an object that recovery has
 * already marked: reported dangling, not counted as one more reference. */
static void recovery_stale_generation_dangles(void **state)
{
    tu_ctx *c = *state;
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_create(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_write_begin(s));
    sal_id x, par;
    void *p;
    TU_OK(sal_alloc(s, 16, 0, 1, &x, &p));
    memset(p, 0x5a, 16);
    TU_OK(sal_alloc(s, 32, 2, 2, &par, &p));
    uint64_t *w = p;
    w[2] = 0xDEADBEEFCAFEF00Dull;
    w[3] = 0x1122334455667788ull;
    TU_OK(sal_set_child(s, par, 0, x));
    TU_OK(sal_root_set(s, 0, par));
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    size_t len = 0;
    uint8_t *buf = tu_read_file(c->path, &len);
    assert_non_null(buf);
    const uint64_t marker[2] = {0xDEADBEEFCAFEF00Dull, 0x1122334455667788ull};
    uint8_t *m = memmem(buf, len, marker, sizeof marker);
    assert_non_null(m);
    uint64_t off = (uint64_t)((uintptr_t)m - (uintptr_t)buf) - 8; /* child slot 1 */
    free(buf);
    sal_id stale = x + (1ull << 32); /* same index, next generation */
    TU_OK(tu_patch(c->path, off, &stale, 8));
    o.flags = SAL_OPEN_REPAIR;
    TU_OK(sal_heap_open(c->path, &o, &h));
    sal_recovery_report rep;
    TU_OK(sal_heap_recovery_report(h, &rep));
    TU_OK(sal_session_open(h, &s));
    sal_object_info info;
    TU_OK(sal_info(s, x, &info));
    print_message("recovery_stale_generation_dangles: dangling=%" PRIu64 " objects_live=%" PRIu64 " refcount(x)=%u (true: 1)\n",
                  (uint64_t)rep.dangling_refs, (uint64_t)rep.objects_live, info.refcount);
    sal_session_close(s);
    sal_heap_close(h);
    assert_int_equal(rep.dangling_refs, 1);
    assert_int_equal(info.refcount, 1);
}

/* A durable sync whose slot flush fails (the slot may still reach the disk),
 * a segment first committed by it emptied, two protect syncs, the segment's
 * space wanted again; a power loss with every page written back.  Open may
 * take the failed slot: its segment must not have been reused (it waits for
 * a durable commit that succeeds, as for one listed by a durable commit). */
typedef struct d_out { int step, rc; cw_state a, f; } d_out;
typedef struct d_arg { const char *path; int wfd; } d_arg;

static int make_list(sal_session *s, unsigned root, int n, uint64_t seed)
{
    int rc;
    if ((rc = sal_write_begin(s)))
        return rc;
    for (int i = 0; i < n; i++) {
        sal_id node, prev;
        void *p;
        if ((rc = sal_alloc(s, 8192, 1, 3, &node, &p)))
            return rc;
        tu_fill(p, 8192, 8, seed + (uint64_t)i);
        if ((rc = sal_root_get(s, root, &prev)) || (rc = sal_set_child(s, node, 0, prev)) ||
            (rc = sal_root_set(s, root, node)))
            return rc;
    }
    return sal_write_end(s);
}

static int d_child(void *argp)
{
    d_arg *a = argp;
    d_out out;
    memset(&out, 0, sizeof out);
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng = 99;
    int rc;
    phase_out po;
    if ((rc = sal_heap_create(a->path, &o, &h)) || (rc = sal_session_open(h, &s)) ||
        (rc = sal_reader_open(h, &reader))) { out.step = 1, out.rc = rc; goto send; }
    if ((rc = build(s, &rng, 20)) || do_sync(h, reader, SAL_SYNC_DURABLE, &po) || po.rc) {
        out.step = 2, out.rc = rc; goto send; }
    out.a = po.state;
    if ((rc = make_list(s, 9, 300, 1000))) { out.step = 3, out.rc = rc; goto send; }
    sal_os_fault_set(SAL_OS_MSYNC, EIO, 1, 1); /* records flush ok, slot flush fails */
    if (do_sync(h, reader, SAL_SYNC_DURABLE, &po) || po.rc != EIO) {
        out.step = 4, out.rc = po.rc; goto send; }
    sal_os_fault_clear_all();
    out.f = po.state;
    /* the list dies */
    sal_id old;
    if ((rc = sal_write_begin(s)) || (rc = sal_root_get(s, 9, &old)) ||
        (rc = sal_release(s, old)) || (rc = sal_root_set(s, 9, SAL_NULL_ID)) ||
        (rc = sal_write_end(s))) { out.step = 5, out.rc = rc; goto send; }
    if (do_sync(h, reader, SAL_SYNC_PROTECT, &po) || po.rc ||
        do_sync(h, reader, SAL_SYNC_PROTECT, &po) || po.rc) { out.step = 6, out.rc = po.rc; goto send; }
    /* new data into the freed segments */
    if ((rc = make_list(s, 10, 300, 555555))) { out.step = 7, out.rc = rc; goto send; }
    if (do_sync(h, reader, SAL_SYNC_PROTECT, &po) || po.rc) { out.step = 8, out.rc = po.rc; goto send; }
send:
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0;
}

static void failed_slot_on_disk_keeps_segment(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    d_arg a = {c->path, -1};
    d_out out;
    run_child(d_child, &a, &a.wfd, &out, sizeof out);
    if (out.step) fail_msg("child step %d rc %d (%s)", out.step, out.rc, sal_strerror(out.rc));
    /* Power loss with every page on disk (the kernel wrote all back). */
    sal_recovery_report rep;
    cw_state st;
    look_at(c, 1, &rep, &st);
    print_message("failed_slot_on_disk_keeps_segment: dangling=%" PRIu64 " damaged=%" PRIu64 " roots_cleared=%" PRIu64
                  " live=%" PRIu64 "\n", (uint64_t)rep.dangling_refs, (uint64_t)rep.damaged_headers,
                  (uint64_t)rep.roots_cleared, (uint64_t)rep.objects_live);
    EXPECT_EITHER(st, out.a, out.f, "power loss after a failed durable slot flush");
}

/* A committed object reachable from no root, only held by a session, then a
 * kill: the same-boot recovery frees its entry, which must keep the
 * generation of its header.  It once fell back to 0: the entry's next id was
 * older than the dead header still in a committed range, and after a later
 * power loss the sweep took the dead header for the newer object. */
typedef struct e_arg { const char *path; int wfd; } e_arg;
typedef struct e_out { int step, rc; sal_id x; } e_out;

static int e_child(void *argp)
{
    e_arg *a = argp;
    e_out out;
    memset(&out, 0, sizeof out);
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    int rc;
    void *p;
    sal_id z, t, x = 0;
    if ((rc = sal_heap_create(a->path, &o, &h)) || (rc = sal_session_open(h, &s))) {
        out.step = 1, out.rc = rc; goto send; }
    if ((rc = sal_write_begin(s)) || (rc = sal_alloc(s, 64, 0, 1, &z, &p)) ||
        (rc = sal_root_set(s, 0, z))) { out.step = 2, out.rc = rc; goto send; }
    /* the same entry, several generations: allocate and release at once */
    for (int k = 0; k < 3; k++) {
        if ((rc = sal_alloc(s, 64, 0, 1, &t, &p)) || (rc = sal_release(s, t))) {
            out.step = 3, out.rc = rc; goto send; }
    }
    if ((rc = sal_alloc(s, 64, 0, 1, &x, &p))) { out.step = 4, out.rc = rc; goto send; }
    memset(p, 0x77, 64);
    if ((rc = sal_write_end(s))) { out.step = 5, out.rc = rc; goto send; }
    /* x: held by this session only, committed, unreachable from the roots */
    if ((rc = sal_sync(h, SAL_SYNC_DURABLE))) { out.step = 6, out.rc = rc; goto send; }
    out.x = x;
send:
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0; /* killed */
}

static void same_boot_recovery_keeps_generations(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    char shadow[600];
    snprintf(shadow, sizeof shadow, "%s/shadow", c->dir);
    e_arg a = {c->path, -1};
    e_out out;
    run_child(e_child, &a, &a.wfd, &out, sizeof out);
    if (out.step) fail_msg("child step %d rc %d (%s)", out.step, out.rc, sal_strerror(out.rc));
    print_message("same_boot_recovery_keeps_generations: x = index %u gen %u\n", (unsigned)(out.x & 0xffffffffu), (unsigned)(out.x >> 32));
    /* the disk holds everything the child wrote */
    TU_OK(tu_copy_file(c->path, shadow));
    TU_OK(sal_os_powercut_arm(shadow, -1));
    sal_options o = small_options();
    o.flags = SAL_OPEN_RECOVER;
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_write_begin(s));
    sal_id reused = 0;
    for (int i = 0; i < 1100; i++) {
        sal_id node, prev;
        void *p;
        TU_OK(sal_alloc(s, 16, 1, 2, &node, &p));
        if ((node & 0xffffffffu) == (out.x & 0xffffffffu))
            reused = node;
        TU_OK(sal_root_get(s, 1, &prev));
        TU_OK(sal_set_child(s, node, 0, prev));
        TU_OK(sal_root_set(s, 1, node));
    }
    TU_OK(sal_write_end(s));
    print_message("same_boot_recovery_keeps_generations: entry reused as gen %u\n", (unsigned)(reused >> 32));
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
    /* power cut now: the disk is the shadow */
    size_t len;
    uint8_t *img = power_cut_image(c->path, shadow, &len);
    sal_os_powercut_arm(NULL, -1); /* the close below must not reach the shadow */
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    power_cut_write(c->path, img, len);

    sal_recovery_report rep;
    look_at(c, 1, &rep, NULL);
    print_message("same_boot_recovery_keeps_generations: after power cut: swept=%d dangling=%" PRIu64 " damaged=%" PRIu64
                  " roots_cleared=%" PRIu64 " live=%" PRIu64 " (expect 1101)\n", rep.swept,
                  (uint64_t)rep.dangling_refs, (uint64_t)rep.damaged_headers,
                  (uint64_t)rep.roots_cleared, (uint64_t)rep.objects_live);
    assert_int_equal(rep.dangling_refs, 0);
    assert_int_equal(rep.objects_live, 1101);
}

/* ---------------------------------------------------------------------
 * Write-back errors.  Linux keeps the pages of a failed write-back in the
 * cache but marks them clean, and reports the error once: a retried
 * flush skips them.  The OS layer's power-cut model does the same with
 * every injected write-back failure (os.h, sal_os_powercut_lose).  Each
 * test: a durable commit (state A), changes, a durable sync that fails,
 * a retry that succeeds, then a power cut with nothing on disk but what
 * was flushed: the retry's state must be there.  A clean close follows
 * the retry (the heap then opens without recovery).
 * --------------------------------------------------------------------- */

typedef struct wb_ctx {
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng;
    char shadow[600];
    cw_state a, retry;
} wb_ctx;

static void wb_start(tu_ctx *c, wb_ctx *w)
{
    memset(w, 0, sizeof *w);
    sal_options o = small_options();
    snprintf(w->shadow, sizeof w->shadow, "%s/shadow", c->dir);
    TU_OK(sal_heap_create(c->path, &o, &w->h));
    TU_OK(sal_heap_close(w->h));
    TU_OK(tu_copy_file(c->path, w->shadow));
    TU_OK(sal_os_powercut_arm(w->shadow, -1));
    TU_OK(sal_heap_open(c->path, &o, &w->h));
    TU_OK(sal_session_open(w->h, &w->s));
    TU_OK(sal_reader_open(w->h, &w->reader));
    w->rng = 0xfa11ed;
    phase_out po;
    TU_OK(build(w->s, &w->rng, 30));
    assert_int_equal(do_sync(w->h, w->reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(po.rc);
    w->a = po.state;
    TU_OK(build(w->s, &w->rng, 30));
}

/* The failing sync (its fault set by the caller), then the retry. */
static void wb_fail_then_retry(wb_ctx *w)
{
    phase_out po;
    assert_int_equal(do_sync(w->h, w->reader, SAL_SYNC_DURABLE, &po), 0);
    sal_os_fault_clear_all();
    TU_ERR(po.rc, EIO);
    assert_int_equal(do_sync(w->h, w->reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(po.rc);
    w->retry = po.state;
}

/* The power cut: the disk holds what was flushed, nothing else.  The heap
 * is closed in between (cleanly: it opens again without recovery). */
static void wb_power_cut(tu_ctx *c, wb_ctx *w, const char *what)
{
    size_t len;
    uint8_t *img = power_cut_image(c->path, w->shadow, &len);
    TU_OK(sal_session_close(w->reader));
    TU_OK(sal_session_close(w->s));
    TU_OK(sal_heap_close(w->h));
    sal_options o = small_options();
    TU_OK(sal_heap_open(c->path, &o, &w->h));
    TU_OK(sal_heap_close(w->h));
    power_cut_write(c->path, img, len);
    sal_recovery_report rep;
    cw_state st;
    look_at(c, 1, &rep, &st);
    print_message("%s: a=%016" PRIx64 " retry=%016" PRIx64 " after the power cut=%016" PRIx64
                  " (damaged headers %" PRIu64 ", dangling %" PRIu64 ")\n",
                  what, w->a.digest, w->retry.digest, st.digest,
                  (uint64_t)rep.damaged_headers, (uint64_t)rep.dangling_refs);
    EXPECT_STATE(st, w->retry, what);
}

/* What a cut hook of these tests gets. */
typedef struct wb_hook {
    wb_ctx *w;
    int done, rc;
} wb_hook;

/* State A, changes, a durable sync that fails (by `op` failing after
 * `after` calls, or by what `hook` does), the retry, the power cut. */
static void wb_run(tu_ctx *c, sal_os_op op, long after, void (*hook)(void *, int),
                   const char *what)
{
    NEED_HOOKS();
    wb_ctx w;
    wb_start(c, &w);
    wb_hook k = {&w, 0, 0};
    if (hook)
        TU_OK(sal_test_cut_hook(hook, &k));
    else
        sal_os_fault_set(op, EIO, after, 1);
    wb_fail_then_retry(&w);
    TU_OK(sal_test_cut_hook(NULL, NULL));
    if (hook) {
        assert_true(k.done);
        TU_OK(k.rc);
    }
    wb_power_cut(c, &w, what);
}

/* The data's write-back fails; the retry must write it again.  (The
 * records' write-back starts first, then the data's: one range.) */
static void writeback_data_fails_then_retry(void **state)
{
    wb_run(*state, SAL_OS_SYNC_FILE_RANGE, 1, NULL, "data write-back failed, then a retry");
}

/* The records' flush fails; the retry writes the same records, which
 * leaves their page untouched unless it is written again on purpose. */
static void writeback_records_fail_then_retry(void **state)
{
    wb_run(*state, SAL_OS_MSYNC, 0, NULL, "records flush failed, then a retry");
}

/* A page written back by the kernel before it was committed, the
 * write-back failed, the error reported to a commit that does not cover
 * the page: the commit that covers it later must write it again.  The
 * hook makes the changes after the failing commit's cut, and loses their
 * pages. */
static void wb_late_changes(void *arg, int where)
{
    wb_hook *k = arg;
    if (where != SAL_TEST_HOOK_FLUSH || k->done)
        return;
    k->done = 1;
    char *from = k->w->s->bump;
    if ((k->rc = build(k->w->s, &k->w->rng, 20)))
        return;
    char *to = k->w->s->bump;
    if (to > from)
        k->rc = sal_os_powercut_lose(from, (uint64_t)(to - from));
    else
        k->rc = -1; /* the changes went elsewhere: the test proves nothing */
    /* The error comes to this commit's data write-back. */
    sal_os_fault_set(SAL_OS_SYNC_FILE_RANGE, EIO, 1, 1);
}

static void writeback_lost_before_commit(void **state)
{
    wb_run(*state, 0, 0, wb_late_changes, "pages lost before their commit");
}

/* The provider's wait on the file (dropping a dead segment's cache) takes
 * a write-back error during a commit's flush: that commit may not say
 * durable.  The hook sets the flag as the provider would. */
static void wb_provider_error(void *arg, int where)
{
    wb_hook *k = arg;
    if (where == SAL_TEST_HOOK_FLUSH && !k->done) {
        k->done = 1;
        atomic_store(&k->w->h->writeback_failed, 1);
    }
}

static void writeback_error_taken_by_provider(void **state)
{
    wb_run(*state, 0, 0, wb_provider_error, "an error taken by the provider's wait");
}

/* Object-table pages lost by a write-back the kernel started on its own,
 * the error reported to a sync: the clean close that follows vouches for
 * the reference counts, so it must write the table again.  The power cut
 * comes after the close. */
static void writeback_table_lost_before_clean_close(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    wb_ctx w;
    wb_start(c, &w);
    sal_heap *h = w.h;
    TU_OK(sal_os_powercut_lose(h->base + h->table_offset, atomic_load(&h->table_ready_bytes)));
    sal_os_fault_set(SAL_OS_SYNC_FILE_RANGE, EIO, 1, 1);
    wb_fail_then_retry(&w);
    TU_OK(sal_session_close(w.reader));
    TU_OK(sal_session_close(w.s));
    TU_OK(sal_heap_close(h));
    size_t len;
    uint8_t *img = power_cut_image(c->path, w.shadow, &len);
    power_cut_write(c->path, img, len);
    sal_recovery_report rep;
    cw_state st;
    look_at(c, 1, &rep, &st); /* checks every count against the table */
    assert_int_equal(rep.recovered, 0); /* closed cleanly: the table is trusted */
    EXPECT_STATE(st, w.retry, "table lost before a clean close");
}

/* A second write-back error, taken by the provider's wait (as the first
 * error's tests do, by the flag), after a first one that a commit took and
 * handled: the pages of an async commit made after the first error were
 * written again before their flush was started, and that write-back
 * failed.  The next durable commit must write them again (or fail), not
 * say durable what the disk does not have.  With `during`, the provider's
 * wait takes the error during that durable commit's flush. */
static void wb_second_error(void *arg, int where)
{
    wb_hook *k = arg;
    if (where == SAL_TEST_HOOK_FLUSH && !k->done) {
        k->done = 1;
        wb_lose_since_durable(k->w->h);
        atomic_fetch_add(&k->w->h->writeback_failed, 1);
    }
}

static void second_error_taken_by_provider(tu_ctx *c, int during, const char *what)
{
    NEED_HOOKS();
    wb_ctx w;
    wb_start(c, &w);
    /* The first error, a commit's own: it fails, the retry succeeds. */
    sal_os_fault_set(SAL_OS_SYNC_FILE_RANGE, EIO, 1, 1);
    wb_fail_then_retry(&w);
    /* Changes, an async commit (its write-back started). */
    phase_out po;
    TU_OK(build(w.s, &w.rng, 30));
    assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_ASYNC, &po), 0);
    TU_OK(po.rc);
    wb_hook k = {&w, 0, 0};
    if (during) {
        TU_OK(sal_test_cut_hook(wb_second_error, &k));
    } else {
        /* Its write-back fails; the provider's wait takes the error. */
        wb_lose_since_durable(w.h);
        atomic_fetch_add(&w.h->writeback_failed, 1);
    }
    /* A durable commit: it may fail (EIO), then a retry must succeed. */
    assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(sal_test_cut_hook(NULL, NULL));
    assert_true(!during || k.done);
    if (po.rc == EIO)
        assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(po.rc);
    w.retry = po.state;
    wb_power_cut(c, &w, what);
}

static void writeback_second_error_taken_by_provider(void **state)
{
    second_error_taken_by_provider(*state, 0, "a second write-back error taken by the provider "
                                              "between commits");
}

static void writeback_second_error_during_durable(void **state)
{
    second_error_taken_by_provider(*state, 1, "a second write-back error taken by the provider "
                                              "during a durable commit");
}

static void writeback_error_taken_by_provider_then_kill(void **state)
{
    NEED_HOOKS();
    recovering_open_then_power_cut(*state, PCB_PROVIDER_ERROR,
                                   "an error taken by a segment preparation, a kill, the next "
                                   "process's durable commit, a power cut");
}

/* A durable commit whose records flush fails: the pages of its segment
 * table copy are clean and not on disk, and the process is killed.  The
 * next process (same boot) finds the failed commit's records in that copy
 * in the page cache; a commit of its own writes only the records that
 * differ, so when they are the same the copy on disk stays stale, and
 * that commit's slot is worth nothing after a power loss (open skips a
 * slot whose copy does not match: back to the durable commit before).
 * Here the failed commit changes nothing (its records equal the ones
 * before it, which its copy did not hold), the next process swaps roots
 * (no record changes) and commits durably twice: the second commit
 * writes the same copy and must survive a power cut. */
typedef struct rf_out { int step, rc; cw_state d0; } rf_out;

static int rf_child(void *argp)
{
    child_arg *a = argp;
    rf_out out;
    memset(&out, 0, sizeof out);
    sal_heap *h;
    sal_session *s, *reader;
    uint64_t rng = 99;
    int rc;
    phase_out po;
    cw_state first;
    if ((out.step = child_start(a, &rng, &h, &s, &reader, &first, &out.rc)))
        goto send;
    /* The session returns its arena: the records count its live bytes
     * (as recovery will). */
    if ((rc = build(s, &rng, 30)) || (rc = sal_session_close(s)) ||
        do_sync(h, reader, SAL_SYNC_DURABLE, &po) || po.rc) {
        out.step = 4, out.rc = rc ? rc : po.rc; goto send; }
    out.d0 = po.state;
    /* Nothing new; its records go to the copy two commits old. */
    sal_os_fault_set(SAL_OS_MSYNC, EIO, 0, 1); /* the records' flush */
    if (do_sync(h, reader, SAL_SYNC_DURABLE, &po) || po.rc != EIO) {
        out.step = 5, out.rc = po.rc; goto send; }
send:
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0; /* killed: no close */
}

/* Swap two non-empty, different roots of worker 0: no object dies, no
 * record changes, the state does. */
static unsigned swap_roots(sal_session *s, unsigned skip)
{
    sal_id id[CW_ROOTS_PER_THREAD];
    unsigned r1 = CW_ROOTS_PER_THREAD, r2 = CW_ROOTS_PER_THREAD;
    TU_OK(sal_write_begin(s));
    for (unsigned r = 0; r < CW_ROOTS_PER_THREAD; r++) {
        TU_OK(sal_root_get(s, r, &id[r]));
        if (id[r] != SAL_NULL_ID && r >= skip && r1 == CW_ROOTS_PER_THREAD)
            r1 = r;
        else if (id[r] != SAL_NULL_ID && r1 < CW_ROOTS_PER_THREAD && r2 == CW_ROOTS_PER_THREAD &&
                 id[r] != id[r1])
            r2 = r;
    }
    assert_true(r2 < CW_ROOTS_PER_THREAD);
    TU_OK(sal_root_set(s, r1, id[r2]));
    TU_OK(sal_root_set(s, r2, id[r1]));
    id[r1] = id[r2] = SAL_NULL_ID;
    for (unsigned r = 0; r < CW_ROOTS_PER_THREAD; r++)
        if (id[r] != SAL_NULL_ID)
            TU_OK(sal_release(s, id[r]));
    TU_OK(sal_write_end(s));
    return r1;
}

static void writeback_records_lost_then_kill(void **state)
{
    NEED_HOOKS();
    tu_ctx *c = *state;
    char shadow[600];
    heap_and_shadow(c, shadow, sizeof shadow);
    child_arg a = {c->path, shadow, 0, -1};
    rf_out out;
    run_child(rf_child, &a, &a.wfd, &out, sizeof out);
    if (out.step) fail_msg("child step %d rc %d (%s)", out.step, out.rc, sal_strerror(out.rc));

    sal_heap *h = next_process_open(c, shadow);
    sal_session *s, *reader;
    TU_OK(sal_session_open(h, &s));
    TU_OK(sal_reader_open(h, &reader));
    phase_out p3, p4;
    unsigned first = swap_roots(s, 0);
    assert_int_equal(do_sync(h, reader, SAL_SYNC_DURABLE, &p3), 0);
    TU_OK(p3.rc);
    swap_roots(s, first + 1);
    assert_int_equal(do_sync(h, reader, SAL_SYNC_DURABLE, &p4), 0);
    TU_OK(p4.rc);
    assert_false(cw_state_same(&p3.state, &p4.state));
    size_t len;
    uint8_t *img = power_cut_image(c->path, shadow, &len);
    TU_OK(sal_session_close(reader));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    power_cut_write(c->path, img, len);
    cw_state st;
    look_at(c, 1, NULL, &st);
    print_message("records lost, a kill, the next process: d0=%016" PRIx64 " p3=%016" PRIx64
                  " p4=%016" PRIx64 " got=%016" PRIx64 "\n",
                  out.d0.digest, p3.state.digest, p4.state.digest, st.digest);
    EXPECT_STATE(st, p4.state, "a records flush failed, a kill, the next process's durable "
                               "commits, a power cut");
}

/* A killed process allocated objects with fresh ids (above the committed
 * high-water mark) and never committed them.  The next process takes
 * fresh ids from the same mark; the ids of its block that it does not use
 * must not keep the dead process's entries: after its clean close the
 * table is trusted, and such an entry would be a live id nothing
 * reaches, forever. */
static int fi_child(void *argp)
{
    const char *path = argp;
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    if (sal_heap_open(path, &o, &h) || sal_session_open(h, &s) || sal_write_begin(s))
        return 10;
    for (int i = 0; i < 100; i++) {
        sal_id id;
        void *p;
        if (sal_alloc(s, 32, 0, 1, &id, &p))
            return 11;
    }
    if (sal_write_end(s))
        return 12;
    return 0; /* killed: no close, no commit */
}

static void fresh_ids_after_kill_not_leaked(void **state)
{
    tu_ctx *c = *state;
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    TU_OK(sal_heap_create(c->path, &o, &h));
    TU_OK(sal_heap_close(h));
    int status = tu_in_child(fi_child, (void *)c->path);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    o.flags = SAL_OPEN_RECOVER;
    TU_OK(sal_heap_open(c->path, &o, &h));
    TU_OK(sal_session_open(h, &s));
    sal_id id;
    void *p;
    TU_OK(sal_write_begin(s));
    TU_OK(sal_alloc(s, 32, 0, 1, &id, &p));
    TU_OK(sal_root_set(s, 0, id));
    TU_OK(sal_write_end(s));
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    o.flags = 0;
    TU_OK(sal_heap_open(c->path, &o, &h));
    sal_heap_stats st = tu_stats(h);
    TU_OK(sal_heap_close(h));
    if (st.live_objects != 1)
        fail_msg("after a clean reopen: %" PRIu64 " live ids, 1 object reachable", st.live_objects);
}

/* The same as writeback_records_lost_then_kill, with a segment-table copy
 * of more than one page (more than 128 segments).  The failing process's
 * rewrite makes the copy's pages dirty again; the next process's durable
 * commits flushed only the records that differed from the page cache, so
 * a dirty page outside them was not flushed before the slot, and after a
 * power cut the slot's copy did not match: open fell back to the commit
 * before one that had returned 0.  Every durable commit now flushes its
 * whole copy.  (_narrow: the same with one page of records.) */
enum { WIDE_BIG = 140 };
typedef struct wide_out {
    int step, rc;
    sal_id m, hold;
} wide_out;

static int wide_child(void *argp)
{
    child_arg *a = argp;
    wide_out out;
    memset(&out, 0, sizeof out);
    sal_options o = small_options();
    sal_heap *h;
    sal_session *s;
    sal_id x = SAL_NULL_ID, id;
    void *p;
    int rc = 0, nbig = a->variant;
    if ((rc = sal_os_powercut_arm(a->shadow, -1))) {
        out.step = 1;
        goto send;
    }
    if ((rc = sal_heap_open(a->path, &o, &h)) ||
        (rc = sal_session_open(h, &s)) || (rc = sal_write_begin(s))) {
        out.step = 2;
        goto send;
    }
    if ((rc = sal_alloc(s, 8, 0, 1, &out.m, &p))) {
        out.step = 3;
        goto send;
    }
    *(uint64_t *)p = 0x6d61726b;
    if ((rc = sal_alloc(s, 8u * (unsigned)nbig, (unsigned)nbig, 2, &out.hold,
                        &p))) {
        out.step = 4;
        goto send;
    }
    for (int i = 0; i < nbig; i++) {
        /* One per 1 MiB segment.  The second to last is X, alone in a full
         * segment past the first page of records. */
        if ((rc = sal_alloc(s, 600u << 10, 0, 3, &id, &p))) {
            out.step = 5;
            goto send;
        }
        if (i == nbig - 2)
            x = id; /* published below: publishing ends the section's grants */
        else if ((rc = sal_set_child(s, out.hold, (unsigned)i, id))) {
            out.step = 6;
            goto send;
        }
    }
    sal_id hold = out.hold;
    if ((rc = sal_root_set(s, 2, x)) || (rc = sal_root_set(s, 0, out.m)) ||
        (rc = sal_root_set(s, 1, hold)) ||
        (rc = sal_write_end(s)) || (rc = sal_session_close(s))) {
        out.step = 7;
        goto send;
    }
    if ((rc = sal_sync(h, SAL_SYNC_DURABLE))) {
        out.step = 8;
        goto send;
    } /* D1: copy 0 */
    /* X dies: its segment's record changes (copy 1 gets it at D2). */
    if ((rc = sal_session_open(h, &s)) || (rc = sal_write_begin(s)) ||
        (rc = sal_root_set(s, 2, SAL_NULL_ID)) || (rc = sal_write_end(s)) ||
        (rc = sal_session_close(s))) {
        out.step = 9;
        goto send;
    }
    if ((rc = sal_sync(h, SAL_SYNC_DURABLE))) {
        out.step = 10;
        goto send;
    } /* D2: copy 1 */
    /* Nothing new; its records go to copy 0, which holds D1's: the record
     * of X's segment changes on the copy's second page.  The flush fails. */
    sal_os_fault_set(SAL_OS_MSYNC, EIO, 0, 1);
    rc = sal_sync(h, SAL_SYNC_DURABLE);
    sal_os_fault_clear_all();
    if (rc != EIO) {
        out.step = 11;
        goto send;
    }
    rc = 0;
send:
    out.rc = rc;
    if (write(a->wfd, &out, sizeof out) != (ssize_t)sizeof out)
        return 3;
    return 0; /* killed: no close */
}

static void set_root3(sal_heap *h, sal_session *s, int to_hold)
{
    sal_id id = SAL_NULL_ID;
    TU_OK(sal_write_begin(s));
    if (to_hold)
        TU_OK(sal_root_get(s, 1, &id));
    TU_OK(sal_root_set(s, 3, id));
    TU_OK(sal_write_end(s));
    TU_OK(sal_sync(h, SAL_SYNC_DURABLE));
}

static void wide_records_run(tu_ctx *c, int nbig)
{
    NEED_HOOKS();
    char shadow[600];
    heap_and_shadow(c, shadow, sizeof shadow);
    child_arg a = {c->path, shadow, nbig, -1};
    wide_out out;
    run_child(wide_child, &a, &a.wfd, &out, sizeof out);
    if (out.step)
        fail_msg("child step %d rc %d (%s)", out.step, out.rc,
                 sal_strerror(out.rc));

    sal_heap *h = next_process_open(c, shadow); /* its durable commit: copy 0 */
    sal_session *s;
    TU_OK(sal_session_open(h, &s));
    set_root3(h, s, 1); /* p3, copy 1: root 3 = the holder */
    set_root3(h, s, 0); /* p4, copy 0: root 3 empty again; returned 0 */
    size_t len;
    uint8_t *img = power_cut_image(c->path, shadow, &len);
    TU_OK(sal_session_close(s));
    TU_OK(sal_heap_close(h));
    power_cut_write(c->path, img, len);

    sal_options o = small_options();
    o.flags = SAL_OPEN_READONLY;
    sal_os_boot_id_override(other_boot);
    int rc = sal_heap_open(c->path, &o, &h);
    sal_os_boot_id_override(NULL);
    if (rc)
        fail_msg("open after the power cut: %d (%s)", rc, sal_strerror(rc));
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    sal_id r0, r3;
    TU_OK(sal_root_get(r, 0, &r0));
    TU_OK(sal_root_get(r, 3, &r3));
    print_message(
        "wide records (%d big objects): after the power cut root0=%#" PRIx64
        " (marker %#" PRIx64 ") root3=%#" PRIx64 " (want 0: p4 returned 0)\n",
        nbig, r0, out.m, r3);
    if (r0)
        sal_release(r, r0);
    if (r3)
        sal_release(r, r3);
    TU_OK(sal_session_close(r));
    TU_OK(sal_heap_close(h));
    if (r3 != SAL_NULL_ID)
        fail_msg("the last durable commit (root 3 emptied) is lost after the "
                 "power cut: "
                 "the one before it was opened");
}

static void writeback_records_lost_then_kill_wide(void **state)
{
    wide_records_run(*state, WIDE_BIG);
}

static void writeback_records_lost_then_kill_narrow(void **state)
{
    wide_records_run(*state, 100);
}

/* Pages lost before their commit (as writeback_lost_before_commit), the
 * error taken and handled by the failing commit; the retry's rewrite of
 * what it makes read-only fails (pwrite), so the retry fails.  The next
 * durable commit used to write again only its own new ranges, flush the
 * lost pages (clean: nothing written) and return 0.  A commit that fails
 * after write-back errors now makes the next one write again everything
 * since the last durable commit. */
/* The shared course: pages lost before their commit, whose durable commit
 * fails with EIO; its retry fails too (fault `op` with `err` on its call
 * number `nth`); then a durable commit returns 0, and a power cut must
 * keep it. */
static void retry_fails_then_durable(tu_ctx *c, void (*hook)(void *, int), int op, int err,
                                     int nth, const char *what)
{
    NEED_HOOKS();
    wb_ctx w;
    wb_start(c, &w);
    wb_hook k = {&w, 0, 0};
    TU_OK(sal_test_cut_hook(hook, &k));
    phase_out po;
    assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(sal_test_cut_hook(NULL, NULL));
    sal_os_fault_clear_all();
    assert_true(k.done);
    TU_OK(k.rc);
    TU_ERR(po.rc, EIO);
    sal_os_fault_set(op, err, nth, 1);
    assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_DURABLE, &po), 0);
    sal_os_fault_clear_all();
    print_message("retry: %s: %d (%s)\n", what, po.rc, sal_strerror(po.rc));
    assert_int_not_equal(po.rc, 0);
    assert_int_equal(do_sync(w.h, w.reader, SAL_SYNC_DURABLE, &po), 0);
    TU_OK(po.rc);
    w.retry = po.state;
    wb_power_cut(c, &w, what);
}

static void writeback_rewrite_fails_then_durable(void **state)
{
    retry_fails_then_durable(*state, wb_late_changes, SAL_OS_PWRITE, EIO, 0,
                             "its rewrite failed, then a durable commit");
}

/* As writeback_rewrite_fails_then_durable, but the retry fails in its
 * mprotect step after protecting the lost pages' range (a second range, in
 * the next segment, fails). */
static void wb_late_changes_spill(void *arg, int where)
{
    wb_hook *k = arg;
    if (where != SAL_TEST_HOOK_FLUSH || k->done)
        return;
    /* First move the arena to another segment (garbage), then the late
     * changes there, their pages lost: that segment comes first in the
     * protect list, the old arena's tail second. */
    sal_session *s = k->w->s;
    int64_t seg = s->arena_segment;
    if ((k->rc = sal_write_begin(s)))
        return;
    for (int i = 0; i < 8 && s->arena_segment == seg && !k->rc; i++) {
        sal_id id;
        void *p;
        if (!(k->rc = sal_alloc(s, 300u << 10, 0, 9, &id, &p)))
            k->rc = sal_release(s, id);
    }
    if (!k->rc)
        k->rc = sal_write_end(s);
    if (k->rc)
        return;
    if (s->arena_segment == seg || s->arena_segment > seg) {
        k->rc = -2; /* not the order wanted: proves nothing */
        return;
    }
    wb_late_changes(arg, where);
}

static void writeback_mprotect_fails_then_durable(void **state)
{
    /* The second range's mprotect. */
    retry_fails_then_durable(*state, wb_late_changes_spill, SAL_OS_MPROTECT, ENOMEM, 1,
                             "an mprotect failed after the first range, then a durable "
                             "commit");
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        FAULT_TEST(recovery_stale_generation_dangles),
        FAULT_TEST(same_boot_recovery_keeps_generations),
        FAULT_TEST(failed_slot_on_disk_keeps_segment),
        FAULT_TEST(failed_durable_slot_then_protect),
        FAULT_TEST(powercut_after_recovering_open),
        FAULT_TEST(durable_msync_fails_at_each_flush),
        FAULT_TEST(durable_data_write_fails),
        FAULT_TEST(async_sync_file_range_fails),
        FAULT_TEST(mprotect_fails),
        FAULT_TEST(fallocate_enospc_then_sync),
        FAULT_TEST(ftruncate_enospc),
        FAULT_TEST(slot_flush_then_table_flush_fail),
        FAULT_TEST(stray_write_faults),
        FAULT_TEST(stray_write_after_failed_mprotect),
        FAULT_TEST(writeback_data_fails_then_retry),
        FAULT_TEST(writeback_records_fail_then_retry),
        FAULT_TEST(writeback_lost_before_commit),
        FAULT_TEST(writeback_error_taken_by_provider),
        FAULT_TEST(writeback_lost_pages_outlive_process),
        FAULT_TEST(writeback_table_lost_before_clean_close),
        FAULT_TEST(writeback_second_error_taken_by_provider),
        FAULT_TEST(writeback_second_error_during_durable),
        FAULT_TEST(writeback_error_taken_by_provider_then_kill),
        FAULT_TEST(writeback_records_lost_then_kill),
        FAULT_TEST(fresh_ids_after_kill_not_leaked),
        FAULT_TEST(writeback_records_lost_then_kill_narrow),
        FAULT_TEST(writeback_records_lost_then_kill_wide),
        FAULT_TEST(writeback_rewrite_fails_then_durable),
        FAULT_TEST(writeback_mprotect_fails_then_durable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
