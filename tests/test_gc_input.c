/*
 * test_gc_input.c - sal-gc on what is not a sound, closed heap:
 *   - things that are not heaps (a fifo, a directory, /dev/null, an empty
 *     file, random bytes, a missing path) give exit 8 at once, never a hang;
 *   - damaged metadata the library cannot open (superblock, truncation)
 *     gives exit 4 and a repair that says it cannot run;
 *   - a heap held by a live writer is refused, unless --readonly-look;
 *   - a heap left by a killed writer: check names unclean-shutdown (4),
 *     repair corrects it (1), check is clean (0), and the contents are the
 *     last commit's, every count equal to the references to it;
 *   - a repair killed half way is finished by a second repair;
 *   - the command line: --help, --version, usage errors (16).
 */
#include "test_gc_util.h"

/* `sal-gc CMD path` exits `want` (no hang: gc_runv kills it after 20 s),
 * saying `what`. */
static void expect_quick(const char *cmd, const char *path, int want, const char *what)
{
    char *out = malloc(GC_OUT_BYTES);
    int code = gc_runv(out, GC_OUT_BYTES, 20.0, NULL, (const char *const[]){cmd, path, NULL});
    GC_EXPECT(code, want, out);
    if (what && !strstr(out, what)) {
        fprintf(stderr, "%s\n", out);
        fail_msg("sal-gc %s %s does not say \"%s\"", cmd, path, what);
    }
    free(out);
}

static void expect_all_commands(const char *path, int want, const char *what)
{
    expect_quick("check", path, want, what);
    expect_quick("stats", path, want, what);
    expect_quick("repair", path, want, what);
}

static void test_fifo(void **state)
{
    tu_ctx *c = *state;
    char path[PATH_MAX];
    tu_join(path, sizeof path, c->dir, "fifo");
    assert_int_equal(mkfifo(path, 0600), 0);
    expect_all_commands(path, 8, "fifo");
    /* The report says what the exit means, stats' too. */
    expect_quick("check", path, 8, "exit 8: operational error");
    expect_quick("stats", path, 8, "exit 8: operational error");
}

static void test_directory(void **state)
{
    tu_ctx *c = *state;
    expect_all_commands(c->dir, 8, "directory");
}

static void test_dev_null(void **state)
{
    (void)state;
    expect_all_commands("/dev/null", 8, "device");
}

static void test_empty_file(void **state)
{
    tu_ctx *c = *state;
    TU_OK(tu_write_file(c->path, "", 0));
    expect_all_commands(c->path, 8, "empty");
}

static void test_random_bytes(void **state)
{
    tu_ctx *c = *state;
    size_t n = 256 * 1024;
    uint8_t *buf = malloc(n);
    uint64_t rng = tu_seed();
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)tu_rand(&rng);
    TU_OK(tu_write_file(c->path, buf, n));
    free(buf);
    expect_all_commands(c->path, 8, "not a sal heap");
}

static void test_missing_path(void **state)
{
    tu_ctx *c = *state;
    char path[PATH_MAX];
    tu_join(path, sizeof path, c->dir, "no-such-heap");
    expect_all_commands(path, 8, "cannot open");
}

static void test_other_version(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    sal_superblock sb;
    TU_OK(tu_peek(c->path, 0, &sb, sizeof sb));
    sb.format_version = 2;
    sal_superblock_seal(&sb);
    TU_OK(tu_patch(c->path, 0, &sb, sizeof sb));
    expect_all_commands(c->path, 8, "another format");
}

/* Damage the library refuses to open: check reports it, repair cannot run. */
static void test_superblock_checksum(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    TU_OK(tu_xor_byte(c->path, offsetof(sal_superblock, segment_bytes) + 1, 0x01));
    expect_quick("check", c->path, 4, "superblock: checksum mismatch");
    expect_quick("repair", c->path, 4, "repair cannot run");
}

static void test_truncated(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    assert_int_equal(truncate(c->path, 3u << 20), 0);
    expect_quick("check", c->path, 4, "truncated");
    expect_quick("repair", c->path, 4, "repair cannot run");
}

/* No valid durable slot. */
static void test_no_slot(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    TU_OK(tu_xor_byte(c->path, SAL_SLOT_OFFSET(0) + 20, 0xff));
    TU_OK(tu_xor_byte(c->path, SAL_SLOT_OFFSET(1) + 20, 0xff));
    expect_quick("check", c->path, 4, "no valid durable commit slot");
}

/* A live writer holds the heap: refused, unless a read-only look. */
static void test_live_writer(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    sal_options o = tu_small_options();
    sal_heap *h;
    TU_OK(sal_heap_open(c->path, &o, &h));
    expect_quick("check", c->path, 8, "open for writing by a live process");
    expect_quick("repair", c->path, 8, "open for writing");
    /* The way round it is an option of check and stats only: repair's
     * refusal must not offer it as its own. */
    expect_quick("repair", c->path, 8,
                 "check and stats can take a read-only look");
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", "--readonly-look", c->path), 0, out);
    assert_non_null(strstr(out, "live process"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "stats", "--json", "--readonly-look", c->path), 0, out);
    assert_non_null(strstr(out, "\"live_writer\": true"));
    free(out);
    TU_OK(sal_heap_close(h));
    gc_expect_clean(c->path);
}

/* ---------------------------------------------------------------------
 * Killed writers.
 * --------------------------------------------------------------------- */

/* A digest of everything reachable from the roots (types, sizes, payloads
 * without the child ids, the shape), and a check that every count equals
 * the number of references found (the crash contract). */
static uint64_t digest_heap(sal_heap *h, int check_counts)
{
    sal_session *r;
    TU_OK(sal_reader_open(h, &r));
    TU_OK(sal_read_begin(r));
    uint64_t d = 0xcbf29ce484222325ull;
#define MIX(v) (d = (d ^ (uint64_t)(v)) * 0x100000001b3ull)
    size_t cap = 1 << 16, top = 0;
    sal_id *stack = malloc(cap * sizeof *stack);
    /* Distinct objects and their references, for the counts. */
    size_t nseen = 0, capseen = 1024;
    sal_id *seen = malloc(capseen * sizeof *seen);
    uint32_t *refs = calloc(capseen, sizeof *refs);
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        sal_id root;
        TU_OK(sal_root_get(r, k, &root));
        MIX(k);
        MIX(root != 0);
        if (!root)
            continue;
        stack[top++] = root;
        while (top > 0) {
            sal_id id = stack[--top];
            size_t j = 0;
            while (j < nseen && seen[j] != id)
                j++;
            if (j == nseen) {
                if (nseen == capseen) {
                    capseen *= 2;
                    seen = realloc(seen, capseen * sizeof *seen);
                    refs = realloc(refs, capseen * sizeof *refs);
                    memset(refs + nseen, 0, (capseen - nseen) * sizeof *refs);
                }
                seen[nseen++] = id;
            }
            refs[j]++;
            sal_object_info info;
            TU_OK(sal_info(r, id, &info));
            const uint8_t *p;
            TU_OK(sal_read(r, id, (const void **)&p));
            MIX(info.type);
            MIX(info.size_bytes);
            MIX(info.nrefs);
            for (size_t b = 8u * info.nrefs; b < info.size_bytes; b++)
                MIX(p[b]);
            const sal_id *child = (const sal_id *)p;
            for (unsigned s = info.nrefs; s-- > 0;) {
                MIX(child[s] != 0);
                if (child[s] && top < cap)
                    stack[top++] = child[s];
            }
        }
        (void)sal_release(r, root);
    }
    /* A DAG is walked once per path: count each object's references as its
     * parents' distinct occurrences.  Recount precisely: roots + slots of
     * each distinct object. */
    if (check_counts) {
        uint32_t *want = calloc(nseen ? nseen : 1, sizeof *want);
        for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
            sal_id root;
            TU_OK(sal_root_get(r, k, &root));
            for (size_t j = 0; root && j < nseen; j++)
                if (seen[j] == root)
                    want[j]++;
            if (root)
                (void)sal_release(r, root);
        }
        for (size_t i = 0; i < nseen; i++) {
            sal_object_info info;
            TU_OK(sal_info(r, seen[i], &info));
            const sal_id *child;
            TU_OK(sal_read(r, seen[i], (const void **)&child));
            for (unsigned s = 0; s < info.nrefs; s++)
                for (size_t j = 0; child[s] && j < nseen; j++)
                    if (seen[j] == child[s])
                        want[j]++;
        }
        for (size_t i = 0; i < nseen; i++) {
            sal_object_info info;
            TU_OK(sal_info(r, seen[i], &info));
            if (info.refcount != want[i])
                fail_msg("object %u/%u: count %u, %u references", tu_index(seen[i]),
                         tu_gen(seen[i]), info.refcount, want[i]);
        }
        free(want);
    }
#undef MIX
    free(stack);
    free(seen);
    free(refs);
    TU_OK(sal_read_end(r));
    TU_OK(sal_session_close(r));
    return d;
}

static uint64_t digest_path(const char *path)
{
    sal_options o;
    sal_options_init(&o);
    o.flags = SAL_OPEN_READONLY;
    sal_heap *h;
    TU_OK(sal_heap_open(path, &o, &h));
    uint64_t d = digest_heap(h, 0);
    TU_OK(sal_heap_close(h));
    /* Counts too: a writable open (the heap is clean after repair). */
    sal_options w = tu_small_options();
    w.ready_segments = 0;
    TU_OK(sal_heap_open(path, &w, &h));
    (void)digest_heap(h, 1);
    TU_OK(sal_heap_close(h));
    return d;
}

/* Random work in a session: new trees under some roots, released roots,
 * copies of committed objects. */
static void churn(sal_session *s, uint64_t *rng, unsigned rounds)
{
    for (unsigned i = 0; i < rounds; i++) {
        TU_OK(sal_write_begin(s));
        unsigned root = (unsigned)tu_rand_below(rng, 8);
        switch (tu_rand_below(rng, 3)) {
        case 0: { /* a new small tree */
            sal_id top;
            void *p;
            TU_OK(sal_alloc(s, 64, 3, 1, &top, &p));
            tu_fill(p, 64, 24, tu_rand(rng));
            for (unsigned k = 0; k < 3; k++) {
                sal_id leaf;
                void *q;
                size_t size = 8 + (size_t)tu_rand_below(rng, 300);
                TU_OK(sal_alloc(s, size, 0, 2, &leaf, &q));
                tu_fill(q, size, 0, tu_rand(rng));
                TU_OK(sal_set_child(s, top, k, leaf));
            }
            TU_OK(sal_root_set(s, root, top));
            break;
        }
        case 1: /* drop a root */
            TU_OK(sal_root_set(s, root, SAL_NULL_ID));
            break;
        default: { /* change a root's object: a copy if committed */
            sal_id id;
            TU_OK(sal_root_get(s, root, &id));
            if (id) {
                void *p;
                TU_OK(sal_write(s, &id, &p));
                sal_object_info info;
                TU_OK(sal_info(s, id, &info));
                if (info.size_bytes > 8u * info.nrefs)
                    ((uint8_t *)p)[8u * info.nrefs] ^= 0x5a;
                TU_OK(sal_root_set(s, root, id));
            }
            break;
        }
        }
        TU_OK(sal_write_end(s));
    }
}

/* The writer: work, commit (mode), send the digest of the commit, more
 * work without committing, then wait to be killed. */
static int writer_child(const char *path, int fd, int mode, uint64_t seed)
{
    sal_options o = tu_small_options();
    sal_heap *h;
    if (sal_heap_create(path, &o, &h))
        return 1;
    sal_session *s;
    if (sal_session_open(h, &s))
        return 1;
    uint64_t rng = seed;
    churn(s, &rng, 200);
    if (sal_sync(h, SAL_SYNC_DURABLE))
        return 1;
    churn(s, &rng, 200);
    if (sal_sync(h, mode))
        return 1;
    uint64_t d = digest_heap(h, 0);
    if (write(fd, &d, sizeof d) != sizeof d)
        return 1;
    churn(s, &rng, 300); /* uncommitted */
    char ok = 'k';
    if (write(fd, &ok, 1) != 1)
        return 1;
    for (;;)
        pause();
}

/* The current slot made to look written in an earlier boot (after a power
 * loss): recovery then trusts no table location and sweeps. */
static void pretend_other_boot(const char *path)
{
    gc_layout l;
    lay_read(path, &l);
    for (unsigned i = 0; i < 16; i++)
        l.slot.boot_id[i] ^= 0x5a;
    sal_slot_seal(&l.slot);
    TU_OK(tu_patch(path, SAL_SLOT_OFFSET(l.slot_index), &l.slot, sizeof l.slot));
}

static void killed_writer_boot(tu_ctx *c, int mode, int other_boot)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        _exit(writer_child(c->path, fds[1], mode, tu_seed()));
    }
    close(fds[1]);
    uint64_t want = 0;
    char ok = 0;
    ssize_t got = read(fds[0], &want, sizeof want);
    ssize_t got2 = read(fds[0], &ok, 1);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_int_equal(got, (ssize_t)sizeof want);
    assert_int_equal(got2, 1);
    if (other_boot)
        pretend_other_boot(c->path);

    gc_expect_damage(c->path, "unclean-shutdown", 1);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", c->path), 4, out);
    assert_non_null(strstr(out, other_boot ? "earlier boot" : "recovery would"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", "--dry-run", c->path), 4, out);
    assert_non_null(strstr(out, "agrees with sal-gc's prediction"));
    free(out);
    gc_expect_repair(c->path, 1);
    gc_expect_clean(c->path);
    assert_true(digest_path(c->path) == want);
    gc_expect_repair(c->path, 0);
}

static void test_killed_writer_durable(void **state)
{
    killed_writer_boot(*state, SAL_SYNC_DURABLE, 0);
}
static void test_killed_writer_protect(void **state)
{
    killed_writer_boot(*state, SAL_SYNC_PROTECT, 0);
}
/* After a "reboot" the last durable commit counts (the writer's last
 * commit here was durable). */
static void test_killed_writer_other_boot(void **state)
{
    killed_writer_boot(*state, SAL_SYNC_DURABLE, 1);
}

/* The same through --check-first. */
static void test_killed_writer_check_first(void **state)
{
    tu_ctx *c = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        _exit(writer_child(c->path, fds[1], SAL_SYNC_ASYNC, tu_seed() + 1));
    }
    close(fds[1]);
    uint64_t want = 0;
    char ok = 0;
    assert_int_equal(read(fds[0], &want, sizeof want), (ssize_t)sizeof want);
    assert_int_equal(read(fds[0], &ok, 1), 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "repair", "--check-first", c->path), 1, out);
    assert_non_null(strstr(out, "unclean-shutdown"));
    free(out);
    gc_expect_clean(c->path);
    assert_true(digest_path(c->path) == want);
}

/* ---------------------------------------------------------------------
 * A repair killed half way.
 * --------------------------------------------------------------------- */

static void test_repair_killed_after_open(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    gc_snap before;
    snap_take(c->path, &before);
    gc_layout l;
    lay_read(c->path, &l);
    uint64_t e = lay_entry(c->path, &l, g.e);
    lay_set_entry(c->path, &l, g.e, sal_entry_loc(e) | (5ull << SAL_ENTRY_RC_SHIFT));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run_kill(out, GC_OUT_BYTES, "after-open", "repair", c->path), 128 + SIGKILL,
              out);
    /* The repair's first commit (clean = 0) is on disk: the heap is unclean. */
    gc_expect_damage(c->path, "unclean-shutdown", 0);
    gc_expect_repair(c->path, 1);
    gc_expect_clean(c->path);
    gc_snap after;
    snap_take(c->path, &after);
    assert_int_equal(snap_compare(&before, &after, 0, 0), 0);
    snap_free(&after);
    snap_free(&before);
    free(out);
}

static void test_repair_killed_between_fixes(void **state)
{
    tu_ctx *c = *state;
    gc_sound g;
    gc_build(c->path, &g);
    gc_snap before;
    snap_take(c->path, &before);
    gc_layout l;
    lay_read(c->path, &l);
    sal_id ghost = sal_id_make((uint32_t)g.hwm - 1, 0);
    TU_OK(tu_patch(c->path, lay_header_off(c->path, &l, g.a) + sizeof(sal_object_header) + 24,
                   &ghost, 8));
    TU_OK(tu_patch(c->path, lay_header_off(c->path, &l, g.h) + sizeof(sal_object_header) + 8,
                   &ghost, 8));
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run_kill(out, GC_OUT_BYTES, "after-first-fix", "repair", c->path),
              128 + SIGKILL, out);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "check", "--json", c->path), 4, out);
    assert_int_equal(gc_count(out, "dangling-child"), 1);
    gc_expect_repair(c->path, 1);
    gc_expect_clean(c->path);
    gc_snap after;
    snap_take(c->path, &after);
    assert_int_equal(snap_compare(&before, &after, 0, 0), 0);
    snap_free(&after);
    snap_free(&before);
    free(out);
}

/* ---------------------------------------------------------------------
 * The command line.
 * --------------------------------------------------------------------- */

static void test_command_line(void **state)
{
    tu_ctx *c = *state;
    char *out = malloc(GC_OUT_BYTES);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "--version"), 0, out);
    assert_non_null(strstr(out, "sal-gc"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "--help"), 0, out);
    assert_non_null(strstr(out, "exit status"));
    const char *cmds[] = {"check", "repair", "stats"};
    for (unsigned i = 0; i < 3; i++) {
        GC_EXPECT(gc_run(out, GC_OUT_BYTES, cmds[i], "--help"), 0, out);
        assert_non_null(strstr(out, "usage"));
        GC_EXPECT(gc_run(out, GC_OUT_BYTES, "help", cmds[i]), 0, out);
        /* Every command takes --progress and --no-progress: its help
         * describes them. */
        assert_non_null(strstr(out, "  --progress "));
        assert_non_null(strstr(out, "  --no-progress "));
        GC_EXPECT(gc_run(out, GC_OUT_BYTES, cmds[i]), 16, out);
        GC_EXPECT(gc_run(out, GC_OUT_BYTES, cmds[i], "--bogus", c->path), 16, out);
        GC_EXPECT(gc_run(out, GC_OUT_BYTES, cmds[i], c->path, c->path), 16, out);
    }
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "frobnicate", c->path), 16, out);
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "help", "frobnicate"), 16, out);
    assert_non_null(strstr(out, "unknown command 'frobnicate'"));
    GC_EXPECT(gc_run(out, GC_OUT_BYTES, "help"), 0, out);
    GC_EXPECT(gc_runv(out, GC_OUT_BYTES, 20.0, NULL, (const char *const[]){NULL}), 16, out);
    free(out);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv);
    const struct CMUnitTest tests[] = {
        TU_TEST(test_fifo),
        TU_TEST(test_directory),
        TU_TEST(test_dev_null),
        TU_TEST(test_empty_file),
        TU_TEST(test_random_bytes),
        TU_TEST(test_missing_path),
        TU_TEST(test_other_version),
        TU_TEST(test_superblock_checksum),
        TU_TEST(test_truncated),
        TU_TEST(test_no_slot),
        TU_TEST(test_live_writer),
        TU_TEST(test_killed_writer_durable),
        TU_TEST(test_killed_writer_protect),
        TU_TEST(test_killed_writer_other_boot),
        TU_TEST(test_killed_writer_check_first),
        TU_TEST(test_repair_killed_after_open),
        TU_TEST(test_repair_killed_between_fixes),
        TU_TEST(test_command_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
