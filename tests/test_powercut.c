/*
 * test_powercut.c - the power-cut harness: what the disk holds after a
 * power loss, then recovery after a (simulated) reboot.
 *
 * The OS layer of a test build copies every durable flush (msync MS_SYNC)
 * of the heap's mapping into a shadow file once armed
 * (sal_os_powercut_arm): the shadow is what the disk is known to hold.  A
 * round:
 *
 *   1. creates a heap, fills it with a short run of the workload, records
 *      its state and closes it cleanly; copies the file to the shadow;
 *   2. picks the cut: `cut` durable flushes complete, and none after.  The
 *      recorder is armed with `cut`, and msync is made to fail (EIO) from
 *      flush cut+1 on, so that the library never goes past a flush that in
 *      this simulation did not reach the disk (a real process would be
 *      stuck in it when the power goes);
 *   3. reopens the heap (the open's own commit may be cut) and runs the
 *      random multi-session workload of crash_workload.c with mostly
 *      durable syncs until the cut fails a sync or a random number of
 *      syncs, every commit digested from the roots sal_sync_snapshot hands
 *      out.  In half of the rounds one write-back (sync_file_range) fails
 *      before the cut, once: the model leaves its pages clean and off the
 *      disk, as Linux does (os.h), the sync returns EIO and the workload
 *      goes on, so the syncs after it must put those pages on disk again;
 *   4. builds the disk after the power cut: the shadow (extended with zeros
 *      to the file's size) plus a random subset of the 4 KiB pages in which
 *      the file differs from the shadow (none, all, or each page with a
 *      random probability: the kernel may have written any of them back);
 *   5. with a different boot id (a reboot: the workload ran with a pretend
 *      boot id, sal_os_boot_id_override, the recovery runs with the real
 *      one, like `sal-gc check`, which also checks the result), opens that
 *      image: a plain open must say SAL_EUNCLEAN, a read-only open and
 *      a SAL_OPEN_RECOVER open must show the same state, and that state
 *      must be the last durable commit whose sync returned before the cut
 *      (or, if the cut fell inside a durable sync, that sync's commit);
 *      every refcount exact, no leaked id or byte, no dangling reference
 *      or damaged header in the recovery report; a clean reopen shows the
 *      same state.
 *
 *     test_powercut [--rounds N] [--seed S] [--max-failures F] [--verbose]
 *
 * (or SAL_POWERCUT_ROUNDS=N, SAL_TEST_SEED=S).  Round i uses seed S+i and
 * replays from it (the cut and the page subset depend only on the seed;
 * the threads' interleaving does not).  The last line of output is always
 *
 *     power-cuts: N passed, F failed; seeds A-B
 *
 * and the exit status is nonzero if F > 0.  SAL_CRASH_KEEP=1 keeps the
 * files of failed rounds.
 */
#include "test_util.h"

#include "crash_workload.h"
#include "os.h"

enum { THREADS = 3, MAX_SYNCS = 64, PAGE = 4096 };


static int verbose;
static struct {
    long open_cut, cut_short, got_interrupted, no_cut, subset[3];
    long writeback_failed, durable_after_writeback_failure;
} stats;
static int kept_files; /* SAL_CRASH_KEEP kept a failed round's files */

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

typedef struct round_ctx {
    cw_sync_info syncs[MAX_SYNCS];
    long flushes_after[MAX_SYNCS];
    int nsyncs;
    long cut; /* durable flushes that reach the disk */
    char error[768];
} round_ctx;

static void rfail(round_ctx *c, const char *fmt_, ...) __attribute__((format(printf, 2, 3)));
static void rfail(round_ctx *c, const char *fmt_, ...)
{
    if (c->error[0])
        return;
    va_list ap;
    va_start(ap, fmt_);
    vsnprintf(c->error, sizeof c->error, fmt_, ap);
    va_end(ap);
}

static int hook_done(void *arg, const cw_sync_info *info)
{
    round_ctx *c = arg;
    long flushes = sal_os_powercut_flushes();
    if (c->nsyncs < MAX_SYNCS) {
        c->flushes_after[c->nsyncs] = flushes;
        c->syncs[c->nsyncs++] = *info;
    }
    /* A failure with the cut reached is the cut: every flush fails from
     * now on.  One before it was the transient write-back failure. */
    return c->nsyncs >= MAX_SYNCS || (info->rc != 0 && flushes >= c->cut);
}

/* Write `len` bytes to a new file, leaving the all-zero pages as holes
 * (they read as zeros): the heap's object table is mostly zeros, and
 * writing it out in full would make every round several times slower. */
static int write_sparse(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    int err = ftruncate(fd, (off_t)len) == 0 ? 0 : errno;
    size_t off = 0;
    while (!err && off < len) {
        /* a run of pages that are not all zero */
        size_t end = off;
        for (;;) {
            size_t n = len - end < PAGE ? len - end : PAGE;
            if (n == 0)
                break;
            int zero = 1;
            for (size_t i = 0; i + 8 <= n && zero; i += 8) {
                uint64_t v;
                memcpy(&v, buf + end + i, 8);
                zero = v == 0;
            }
            for (size_t i = n & ~(size_t)7; i < n && zero; i++)
                zero = buf[end + i] == 0;
            if (zero)
                break;
            end += n;
        }
        if (end == off) {
            off += len - off < PAGE ? len - off : PAGE;
            continue;
        }
        for (size_t put = off; put < end;) {
            ssize_t w = pwrite(fd, buf + put, end - put, (off_t)put);
            if (w <= 0) {
                err = errno ? errno : EIO;
                break;
            }
            put += (size_t)w;
        }
        off = end;
    }
    if (close(fd) != 0 && !err)
        err = errno;
    return err;
}

static int copy_sparse(const char *from, const char *to)
{
    size_t len = 0;
    uint8_t *buf = tu_read_file(from, &len);
    if (!buf)
        return EIO;
    int err = write_sparse(to, buf, len);
    free(buf);
    return err;
}

/* The disk after the cut: shadow + a subset of the pages that differ. */
static int build_image(const char *real_path, const char *shadow_path, const char *image_path,
                       uint64_t *rng, int *subset_kind, size_t *differ, size_t *taken)
{
    size_t real_len = 0, shadow_len = 0;
    uint8_t *real = tu_read_file(real_path, &real_len);
    uint8_t *shadow = tu_read_file(shadow_path, &shadow_len);
    if (!real || !shadow) {
        free(real);
        free(shadow);
        return -1;
    }
    size_t len = real_len > shadow_len ? real_len : shadow_len;
    uint8_t *img = calloc(1, len ? len : 1);
    if (!img) {
        free(real);
        free(shadow);
        return -1;
    }
    memcpy(img, shadow, shadow_len);
    /* none, all, or each page with probability p */
    uint64_t k = tu_rand_below(rng, 10);
    *subset_kind = k < 2 ? 0 : k < 4 ? 1 : 2;
    uint64_t p = 1 + tu_rand_below(rng, 99);
    *differ = *taken = 0;
    for (size_t off = 0; off < real_len; off += PAGE) {
        size_t n = real_len - off < PAGE ? real_len - off : PAGE;
        int same = off + n <= shadow_len && memcmp(real + off, shadow + off, n) == 0;
        if (same)
            continue;
        (*differ)++;
        int take = *subset_kind == 1 || (*subset_kind == 2 && tu_rand_below(rng, 100) < p);
        if (take) {
            memcpy(img + off, real + off, n);
            (*taken)++;
        }
    }
    int rc = write_sparse(image_path, img, real_len);
    free(real);
    free(shadow);
    free(img);
    return rc ? -1 : 0;
}

/* Open the image after a "reboot" and check it; *got is what it shows. */
static int check_image(round_ctx *c, const char *path, int may_be_clean, cw_state *got)
{
    char err[512];
    sal_options o = heap_options();
    o.ready_segments = 0;
    sal_heap *h = NULL;
    int rc = sal_heap_open(path, &o, &h);
    int clean = 0;
    if (rc == 0 && may_be_clean) {
        clean = 1;
        sal_heap_close(h);
    } else if (rc != SAL_EUNCLEAN) {
        if (rc == 0)
            sal_heap_close(h);
        rfail(c, "a plain open of the image gave %d (%s), not SAL_EUNCLEAN", rc, sal_strerror(rc));
        return -1;
    }

    cw_state ro;
    o.flags = SAL_OPEN_READONLY;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rfail(c, "read-only open of the image: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    sal_recovery_report rep;
    sal_heap_recovery_report(h, &rep);
    if (cw_check_heap(h, THREADS, CW_CHECK_READONLY, &ro, err, sizeof err)) {
        sal_heap_close(h);
        rfail(c, "read-only open of the image: %s (recovery report: dangling %llu, damaged "
                "%llu, roots cleared %llu)",
             err, (unsigned long long)rep.dangling_refs, (unsigned long long)rep.damaged_headers,
             (unsigned long long)rep.roots_cleared);
        return -1;
    }
    sal_heap_close(h);

    o.flags = SAL_OPEN_RECOVER;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rfail(c, "open of the image with SAL_OPEN_RECOVER: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    sal_heap_recovery_report(h, &rep);
    int bad = cw_check_heap(h, THREADS, 0, got, err, sizeof err);
    rc = sal_heap_close(h);
    if (bad) {
        rfail(c, "after recovery: %s (recovery report: dangling %llu, damaged %llu, roots "
                "cleared %llu)",
             err, (unsigned long long)rep.dangling_refs, (unsigned long long)rep.damaged_headers,
             (unsigned long long)rep.roots_cleared);
        return -1;
    }
    if (rc) {
        rfail(c, "closing the recovered image: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    if (!clean && (!rep.recovered || !rep.swept || rep.dangling_refs || rep.damaged_headers ||
                   rep.roots_cleared || rep.objects_live != got->objects ||
                   rep.bytes_live != got->bytes)) {
        rfail(c,
             "recovery report: recovered %d swept %d dangling %llu damaged %llu roots cleared "
             "%llu, objects %llu bytes %llu (the roots reach %llu objects of %llu bytes)",
             rep.recovered, rep.swept, (unsigned long long)rep.dangling_refs,
             (unsigned long long)rep.damaged_headers, (unsigned long long)rep.roots_cleared,
             (unsigned long long)rep.objects_live, (unsigned long long)rep.bytes_live,
             (unsigned long long)got->objects, (unsigned long long)got->bytes);
        return -1;
    }
    if (!cw_state_same(&ro, got)) {
        rfail(c, "the read-only open and the recovery show different states");
        return -1;
    }

    o.flags = 0;
    if ((rc = sal_heap_open(path, &o, &h))) {
        rfail(c, "plain open after recovery: %d (%s)", rc, sal_strerror(rc));
        return -1;
    }
    cw_state again;
    bad = cw_check_heap(h, THREADS, 0, &again, err, sizeof err);
    sal_heap_close(h);
    if (bad || !cw_state_same(&again, got)) {
        rfail(c, "reopened after recovery: %s", bad ? err : "the state changed");
        return -1;
    }
    /* The checker of the gc-tool finds nothing wrong either. */
    if (cw_gc_check(path, err, sizeof err) < 0) {
        rfail(c, "after recovery: %s", err);
        return -1;
    }
    return 0;
}

static int run_round(const char *dir, uint64_t seed, int index)
{
    round_ctx *c = calloc(1, sizeof *c);
    if (!c)
        exit(2);
    char path[PATH_MAX], shadow[PATH_MAX], image[PATH_MAX], before[PATH_MAX];
    snprintf(path, sizeof path, "%s/heap-%d", dir, index);
    snprintf(shadow, sizeof shadow, "%s/shadow-%d", dir, index);
    snprintf(image, sizeof image, "%s/image-%d", dir, index);
    snprintf(before, sizeof before, "%s/image-%d.before", dir, index);
    unlink(path);
    uint64_t rng = seed ^ 0x706f776572ull;
    (void)tu_rand(&rng);
    /* 3..12 syncs, 70% of them durable.  A durable commit makes two
     * flushes (the data are written and waited for, the segment records'
     * msync makes them durable, then the slot's msync), the open one more:
     * a cut after 0..2+2*syncs flushes falls in the open, in a sync, or
     * (a third of the rounds) after the last flush. */
    int max_syncs = 3 + (int)tu_rand_below(&rng, 10);
    long cut = (long)tu_rand_below(&rng, 3 + 2 * (uint64_t)max_syncs);
    char err[512];
    int subset_kind = -1;
    size_t differ = 0, taken = 0;
    int open_cut = 0, heap_open = 0;
    long flushes = 0;
    cw_state init, got, crossing;
    int have_crossing = 0;
    const cw_state *expect = &init;
    sal_heap *h = NULL;

    /* The workload runs in a pretend boot (its own boot id); the recovery
     * in the real one, as does `sal-gc check`, a separate process: after
     * the "reboot" neither trusts a commit of the workload's boot that was
     * not durable. */
    uint8_t boot[16];
    for (int i = 0; i < 16; i++)
        boot[i] = (uint8_t)tu_rand(&rng);
    boot[0] ^= 0x5a;
    sal_os_boot_id_override(boot);

    /* 1. A heap with something committed in it, closed cleanly. */
    sal_options o = heap_options();
    /* With and without the provider thread (sessions then prepare their
     * segments themselves). */
    o.ready_segments = tu_rand_below(&rng, 2) ? 2 : 0;
    int rc = sal_heap_create(path, &o, &h);
    if (rc) {
        rfail(c, "sal_heap_create: %d (%s)", rc, sal_strerror(rc));
        goto out;
    }
    cw_config cfg;
    cw_config_init(&cfg);
    cfg.seed = seed ^ 0xf111;
    cfg.threads = THREADS;
    cfg.max_syncs = 2;
    cfg.durable_percent = 100;
    cfg.sync_gap_us = 1000;
    if (cw_run(h, &cfg, NULL, err, sizeof err)) {
        rfail(c, "filling the heap: %s", err);
        sal_heap_close(h);
        goto out;
    }
    if (cw_check_heap(h, THREADS, CW_CHECK_LIVE, &init, err, sizeof err)) {
        rfail(c, "the live heap before the cut: %s", err);
        sal_heap_close(h);
        goto out;
    }
    if ((rc = sal_heap_close(h))) {
        rfail(c, "sal_heap_close: %d (%s)", rc, sal_strerror(rc));
        goto out;
    }
    h = NULL;
    if (copy_sparse(path, shadow)) {
        rfail(c, "copying the heap to the shadow failed");
        goto out;
    }

    /* 2. Arm: `cut` flushes reach the disk, the next fails and every one
     * after it. */
    if ((rc = sal_os_powercut_arm(shadow, cut))) {
        rfail(c, "sal_os_powercut_arm: %s", strerror(rc));
        goto out;
    }
    sal_os_fault_set(SAL_OS_MSYNC, EIO, cut, -1);
    c->cut = cut;
    /* The transient write-back failure: a durable commit starts two or
     * more (the records', the data's), an async one one per range. */
    int transient = tu_rand_below(&rng, 2) == 0;
    if (transient)
        sal_os_fault_set(SAL_OS_SYNC_FILE_RANGE, EIO, (long)tu_rand_below(&rng, 2 * (uint64_t)max_syncs), 1);

    /* 3. Reopen and work. */
    rc = sal_heap_open(path, &o, &h);
    if (rc == EIO) {
        open_cut = 1; /* the cut fell in the open's own commit */
        h = NULL;
    } else if (rc) {
        rfail(c, "reopening: %d (%s)", rc, sal_strerror(rc));
        goto disarm;
    } else {
        heap_open = 1;
        cw_config_init(&cfg);
        cfg.seed = seed;
        cfg.threads = THREADS;
        cfg.max_syncs = (uint64_t)max_syncs;
        cfg.durable_percent = 70;
        cfg.async_percent = 15;
        cfg.sync_gap_us = 1000;
        cfg.stop_on_sync_error = 0; /* hook_done stops at the cut */
        cfg.quiet = 1;
        cw_hooks hooks = {c, NULL, NULL, hook_done, NULL};
        if (cw_run(h, &cfg, &hooks, err, sizeof err)) {
            rfail(c, "the workload: %s", err);
            goto disarm;
        }
    }
    flushes = sal_os_powercut_flushes();

    /* 4. The disk after the cut, taken while the heap is still open. */
    if (build_image(path, shadow, image, &rng, &subset_kind, &differ, &taken)) {
        rfail(c, "building the image failed");
        goto disarm;
    }

disarm:
    sal_os_fault_clear_all();
    sal_os_powercut_arm(NULL, -1);
    if (h) {
        rc = sal_heap_close(h);
        if (rc && !c->error[0])
            rfail(c, "closing the heap once the disk works again: %d (%s)", rc, sal_strerror(rc));
        h = NULL;
    }
    if (c->error[0])
        goto out;

    /* What the disk must give back: the last durable commit whose sync
     * returned, or the one whose sync the cut interrupted.  A sync failed
     * by the transient write-back failure wrote no slot: the search goes
     * on past it. */
    int transient_hit = 0, durable_after = 0;
    for (int i = 0; i < c->nsyncs; i++) {
        const cw_sync_info *s = &c->syncs[i];
        if (s->rc == 0) {
            if (s->mode == SAL_SYNC_DURABLE) {
                expect = &s->state;
                durable_after += transient_hit;
            }
            continue;
        }
        if (s->rc != EIO) {
            rfail(c, "sync %llu (mode %d) failed with %d (%s), not an injected EIO",
                 (unsigned long long)s->n, s->mode, s->rc, sal_strerror(s->rc));
            goto out;
        }
        if (c->flushes_after[i] < cut) {
            transient_hit = 1;
            continue;
        }
        if (s->mode == SAL_SYNC_DURABLE && s->cut_taken) {
            crossing = s->state;
            have_crossing = 1;
        }
        break;
    }

    /* 5. Reboot (back to the real boot id) and recover. */
    sal_os_boot_id_override(NULL);
    /* The recovery below rewrites the image: keep it as the cut left it
     * too, for a failed round's post-mortem (SAL_CRASH_KEEP). */
    const char *keep_env = getenv("SAL_CRASH_KEEP");
    if (keep_env && *keep_env && strcmp(keep_env, "0") != 0)
        (void)copy_sparse(image, before);
    if (check_image(c, image, open_cut, &got))
        goto out;
    if (!cw_state_same(&got, expect) && !(have_crossing && cw_state_same(&got, &crossing))) {
        char a[256], b[256], x[256] = "";
        cw_state_format(&got, THREADS, a, sizeof a);
        cw_state_format(expect, THREADS, b, sizeof b);
        if (have_crossing)
            cw_state_format(&crossing, THREADS, x, sizeof x);
        rfail(c, "recovered %s; expected the last durable commit %s%s%s", a, b,
             have_crossing ? " or the one the cut interrupted " : "", x);
    } else {
        stats.open_cut += open_cut;
        stats.cut_short += have_crossing;
        int cut_hit = open_cut;
        for (int i = 0; i < c->nsyncs; i++)
            cut_hit |= c->syncs[i].rc != 0 && c->flushes_after[i] >= cut;
        stats.writeback_failed += transient_hit;
        stats.durable_after_writeback_failure += durable_after;
        stats.no_cut += !cut_hit;
        stats.got_interrupted += have_crossing && !cw_state_same(&got, expect) &&
                                 cw_state_same(&got, &crossing);
        if (subset_kind >= 0)
            stats.subset[subset_kind]++;
    }

out:
    sal_os_boot_id_override(NULL);
    if (c->error[0] || verbose) {
        int durable_ok = 0, protect_ok = 0;
        for (int i = 0; i < c->nsyncs; i++) {
            if (c->syncs[i].rc == 0 && c->syncs[i].mode == SAL_SYNC_DURABLE)
                durable_ok++;
            else if (c->syncs[i].rc == 0)
                protect_ok++;
        }
        printf("round %d seed %llu: %s%s\n", index, (unsigned long long)seed,
               c->error[0] ? "FAILED: " : "ok", c->error);
        printf("    cut after %ld of %ld durable flushes%s; %d syncs (%d durable, %d protect/async "
               "ok%s); pages differing %zu, taken %zu (%s)\n",
               cut, flushes, open_cut ? " (inside the open)" : "", c->nsyncs, durable_ok,
               protect_ok, have_crossing ? ", one durable cut short" : "", differ, taken,
               subset_kind == 0 ? "none" : subset_kind == 1 ? "all" : "random");
        fflush(stdout);
    }
    int pass = !c->error[0];
    const char *keep = getenv("SAL_CRASH_KEEP");
    if (!pass && keep && *keep && strcmp(keep, "0") != 0) {
        printf("    files kept: %s %s %s %s\n", path, shadow, image, before);
        kept_files = 1;
    } else {
        unlink(path);
        unlink(shadow);
        unlink(image);
        unlink(before);
    }
    (void)heap_open;
    free(c);
    return pass;
}

int main(int argc, char **argv)
{
    cw_args args;
    if (cw_parse_args(argc, argv, "SAL_POWERCUT_ROUNDS", &args) != 0)
        return 2;
    long rounds = args.rounds, max_failures = args.max_failures;
    uint64_t seed = args.seed;
    verbose = args.verbose;
    if (sal_os_powercut_arm(NULL, -1) == ENOSYS) {
        printf("power-cut hooks not compiled in (SAL_TEST_HOOKS=OFF)\n");
        printf("power-cuts: 0 passed, 0 failed; seeds %llu-%llu\n", (unsigned long long)seed,
               (unsigned long long)seed);
        return 77;
    }
    char dir[PATH_MAX];
    if (tu_mkdtemp(dir, sizeof dir) != 0) {
        perror("mkdtemp");
        return 2;
    }
    printf("power-cut harness: %ld rounds from seed %llu (replay a round: --rounds 1 --seed S)\n",
           rounds, (unsigned long long)seed);
    fflush(stdout);
    long passed = 0, failed = 0, done = 0;
    double t0 = tu_now(), worst = 0;
    for (long i = 0; i < rounds; i++) {
        double r0 = tu_now();
        if (run_round(dir, seed + (uint64_t)i, (int)i))
            passed++;
        else
            failed++;
        done++;
        if (tu_now() - r0 > worst)
            worst = tu_now() - r0;
        if (max_failures > 0 && failed >= max_failures)
            break;
    }
    if (kept_files)
        printf("files of the failed rounds kept in %s\n", dir);
    else
        tu_rm_rf(dir);
    printf("power-cut: %.1f s, round time mean %.0f ms, max %.0f ms\n", tu_now() - t0,
           (tu_now() - t0) / (double)done * 1e3, worst * 1e3);
    printf("power-cut: of the rounds that passed, %ld cut inside the open, %ld inside a durable "
           "sync (%ld of them recovered that sync's commit), %ld after the last flush; page "
           "subsets: %ld none, %ld all, %ld random; %ld with a write-back failure before the "
           "cut, %ld durable syncs succeeded after one\n",
           stats.open_cut, stats.cut_short, stats.got_interrupted, stats.no_cut, stats.subset[0],
           stats.subset[1], stats.subset[2], stats.writeback_failed,
           stats.durable_after_writeback_failure);
    printf("power-cuts: %ld passed, %ld failed; seeds %llu-%llu\n", passed, failed,
           (unsigned long long)seed, (unsigned long long)(seed + (uint64_t)done - 1));
    return failed > 0;
}
