/*
 * w7_recover.c - W7: recovery after a killed writer.
 *
 *     salbench recover [-n N] [--sweep] [--dir DIR]
 *
 * A child process builds a tree of N objects (default 10M) with fan-out 16
 * and 64-byte leaves, publishes it as root 0, commits it durably, and is
 * killed with SIGKILL.  Then a fresh process (this program, exec'd again)
 * times sal_heap_open(SAL_OPEN_RECOVER): the page cache is warm, as it is
 * after a crash of the process alone.  The timer starts before the open.
 * --sweep times SAL_OPEN_REPAIR instead, which rebuilds every location
 * from the segments (what recovery does after a reboot, and the gc-tool's
 * repair).
 *
 * Output keys: recover_s objects_per_s, and the recovery report's counts
 * (which must show N live objects: the run fails otherwise).
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "workloads.h"

#define W "recover"
#define FANOUT 16u
#define LEAF_BYTES 64u

void w7_recover_usage(FILE *out)
{
    fprintf(out,
            "salbench recover [-n N] [--sweep] [--dir DIR]\n"
            "  W7: recovery of an N-object tree (fan-out 16, 64-byte leaves)\n"
            "      durably committed by a child process killed with SIGKILL\n"
            "  -n N      objects (default 10M)\n"
            "  --sweep   time a repair (locations rebuilt from the segments)\n"
            "  --dir DIR keep the heap in DIR (default: a temporary directory)\n");
}

/* Build the tree level by level, bottom up: `level` holds the ids of the
 * current level; each parent takes up to 16 of them as children.  Returns
 * the number of objects made. */
static uint64_t build_tree(sal_session *s, uint64_t n, sal_id *root_out)
{
    /* Leaves L and internal nodes I with L + I = n, I ~ L / 15. */
    uint64_t leaves = n - n / FANOUT;
    sal_id *level = malloc(leaves * sizeof *level);
    if (!level)
        bench_die(W, "malloc", SAL_ENOMEM);
    uint64_t made = 0;
    BENCH_CHECK(W, sal_write_begin(s));
    for (uint64_t i = 0; i < leaves; i++) {
        void *p;
        BENCH_CHECK(W, sal_alloc(s, LEAF_BYTES, 0, 1, &level[i], &p));
        memset(p, (int)i, LEAF_BYTES);
        made++;
    }
    uint64_t count = leaves;
    while (count > 1) {
        uint64_t parents = (count + FANOUT - 1) / FANOUT;
        for (uint64_t j = 0; j < parents; j++) {
            unsigned kids = (unsigned)(count - j * FANOUT < FANOUT ? count - j * FANOUT : FANOUT);
            sal_id id;
            void *p;
            BENCH_CHECK(W, sal_alloc(s, FANOUT * 8, FANOUT, 2, &id, &p));
            sal_id *slot = p;
            for (unsigned k = 0; k < kids; k++)
                slot[k] = level[j * FANOUT + k]; /* our reference passes on */
            level[j] = id;
            made++;
        }
        count = parents;
    }
    BENCH_CHECK(W, sal_write_end(s));
    *root_out = level[0];
    free(level);
    return made;
}

static int child_build(const char *path, uint64_t n, int ready_fd)
{
    sal_options o;
    sal_options_init(&o);
    o.max_objects = n + n / 4 + 1024;
    sal_heap *h;
    sal_session *s;
    BENCH_CHECK(W, sal_heap_create(path, &o, &h));
    BENCH_CHECK(W, sal_session_open(h, &s));
    sal_id root;
    uint64_t made = build_tree(s, n, &root);
    BENCH_CHECK(W, sal_write_begin(s));
    BENCH_CHECK(W, sal_root_set(s, 0, root));
    BENCH_CHECK(W, sal_write_end(s));
    BENCH_CHECK(W, sal_sync(h, SAL_SYNC_DURABLE));
    if (write(ready_fd, &made, sizeof made) != (ssize_t)sizeof made)
        _exit(1);
    for (;;)
        pause(); /* until the SIGKILL */
}

/* The timed part, in a fresh process: recover, check, close. */
static int time_recovery(const char *path, uint64_t expect, int sweep)
{
    double t0 = bench_now();
    sal_options o;
    sal_options_init(&o);
    o.flags = sweep ? SAL_OPEN_REPAIR : SAL_OPEN_RECOVER;
    sal_heap *h;
    BENCH_CHECK(W, sal_heap_open(path, &o, &h));
    double t1 = bench_now();
    sal_recovery_report r;
    BENCH_CHECK(W, sal_heap_recovery_report(h, &r));
    if (!r.recovered || r.objects_live != expect || r.dangling_refs || r.damaged_headers) {
        fprintf(stderr,
                "salbench recover: recovery found %llu live objects (expected %llu), "
                "%llu dangling, %llu damaged\n",
                (unsigned long long)r.objects_live, (unsigned long long)expect,
                (unsigned long long)r.dangling_refs, (unsigned long long)r.damaged_headers);
        return 1;
    }
    printf("bench=recover n=%llu sweep=%d recover_s=%.4f objects_per_s=%.0f "
           "recover_core_s=%.4f live_bytes=%llu ids_live_before=%llu\n",
           (unsigned long long)expect, sweep, t1 - t0, (double)expect / (t1 - t0),
           r.seconds, (unsigned long long)r.bytes_live,
           (unsigned long long)r.ids_live_before);
    BENCH_CHECK(W, sal_heap_close(h));
    return 0;
}

int w7_recover_main(int argc, char **argv)
{
    const char *dir = NULL, *phase_path = NULL;
    uint64_t n = 10000000, expect = 0;
    int sweep = 0;
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"sweep", no_argument, NULL, 's'},
        {"time-recovery", required_argument, NULL, 'T'}, /* internal */
        {"expect", required_argument, NULL, 'E'},        /* internal */
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (bench_parse_count(optarg, &n) != 0 || n < FANOUT + 1) {
                fprintf(stderr, "salbench recover: bad -n '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd': dir = optarg; break;
        case 's': sweep = 1; break;
        case 'T': phase_path = optarg; break;
        case 'E': (void)bench_parse_count(optarg, &expect); break;
        case 'h': w7_recover_usage(stdout); return 0;
        default: w7_recover_usage(stderr); return 2;
        }
    }
    if (phase_path)
        return time_recovery(phase_path, expect, sweep);

    bench_dir d;
    bench_dir_setup(&d, dir);
    unlink(d.path);
    int fds[2];
    if (pipe(fds) != 0)
        bench_die(W, "pipe", SAL_ENOMEM);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        _exit(child_build(d.path, n, fds[1]));
    }
    close(fds[1]);
    uint64_t made = 0;
    ssize_t got = read(fds[0], &made, sizeof made);
    close(fds[0]);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof made) {
        fprintf(stderr, "salbench recover: the writer failed before committing\n");
        bench_dir_done(&d);
        return 1;
    }

    /* A fresh process times the recovery. */
    char expect_s[32];
    snprintf(expect_s, sizeof expect_s, "%llu", (unsigned long long)made);
    pid = fork();
    if (pid == 0) {
        char *args[] = {"salbench", "recover", "--time-recovery", d.path, "--expect",
                        expect_s, sweep ? "--sweep" : NULL, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    bench_dir_done(&d);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
