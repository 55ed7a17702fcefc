/*
 * recover_time.c - sal-recover-time: time the library's own repair call on
 * a heap, for comparison with `sal-gc repair` (gc-tool/bench_repair.sh).
 *
 *   sal-recover-time HEAP
 *       sal_heap_open(SAL_OPEN_REPAIR) then sal_heap_close(); prints
 *       recover_s=... open_s=... close_s=... objects=... objects_per_s=...
 *   sal-recover-time --make N HEAP
 *       makes a W7-like heap: N objects as a tree of fan-out 16 with 64-byte
 *       leaves, durably committed by a child process that is then killed
 *       with SIGKILL (so the heap is unclean, as after a crash).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sal.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int die(const char *what, int err)
{
    fprintf(stderr, "sal-recover-time: %s: %s (%d)\n", what, sal_strerror(err), err);
    return 8;
}

/* In the child: build the tree, sync durably, tell the parent, wait. */
static int build(const char *path, uint64_t n, int ready_fd)
{
    sal_options opt;
    sal_options_init(&opt);
    uint64_t leaves = n * 15 / 16 + 1;
    sal_heap *h;
    int err = sal_heap_create(path, &opt, &h);
    if (err)
        return die("create", err);
    sal_session *s;
    if ((err = sal_session_open(h, &s)))
        return die("session", err);
    sal_id *level = malloc(leaves * sizeof *level);
    if (!level)
        return die("memory", SAL_ENOMEM);
    uint64_t count = 0, made = 0;
    if ((err = sal_write_begin(s)))
        return die("write_begin", err);
    for (uint64_t i = 0; i < leaves; i++) {
        void *p;
        if ((err = sal_alloc(s, 64, 0, 1, &level[count++], &p)))
            return die("alloc leaf", err);
        memset(p, (int)(i & 0xff), 64);
        made++;
        if ((made & 0xFFFF) == 0 && ((err = sal_write_end(s)) || (err = sal_write_begin(s))))
            return die("write section", err);
    }
    while (count > 1) {
        uint64_t parents = (count + 15) / 16;
        for (uint64_t i = 0; i < parents; i++) {
            unsigned kids = (unsigned)(count - i * 16 < 16 ? count - i * 16 : 16);
            sal_id id;
            void *p;
            if ((err = sal_alloc(s, 16 * 8, kids, 2, &id, &p)))
                return die("alloc node", err);
            memset(p, 0, 16 * 8);
            /* The slots own the references sal_alloc handed out. */
            memcpy(p, &level[i * 16], kids * sizeof(sal_id));
            level[i] = id;
            made++;
            if ((made & 0xFFFF) == 0 &&
                ((err = sal_write_end(s)) || (err = sal_write_begin(s))))
                return die("write section", err);
        }
        count = parents;
    }
    if ((err = sal_root_set(s, 0, level[0])) || (err = sal_write_end(s)))
        return die("root", err);
    if ((err = sal_sync(h, SAL_SYNC_DURABLE)))
        return die("sync", err);
    printf("made %" PRIu64 " objects\n", made);
    fflush(stdout);
    char c = 'k';
    if (write(ready_fd, &c, 1) != 1)
        return 8;
    for (;;)
        pause(); /* killed here, heap open: unclean */
}

static int make(const char *path, uint64_t n)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 8;
    pid_t pid = fork();
    if (pid < 0)
        return 8;
    if (pid == 0) {
        close(fds[0]);
        _exit(build(path, n, fds[1]));
    }
    close(fds[1]);
    char c;
    ssize_t got = read(fds[0], &c, 1);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (got != 1) {
        fprintf(stderr, "sal-recover-time: the builder failed\n");
        return 8;
    }
    printf("killed the writer: %s is unclean (W7)\n", path);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: sal-recover-time HEAP\n"
                 "       sal-recover-time --make N HEAP\n"
                 "Times the library's repair of HEAP (sal_heap_open with SAL_OPEN_REPAIR,\n"
                 "then sal_heap_close).  --make N builds HEAP first: N objects in a tree,\n"
                 "durably committed by a writer that is then killed (an unclean heap).\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "--make")) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(argv[2], &end, 10);
        if (argv[2][0] < '0' || argv[2][0] > '9' || *end || errno || n == 0) {
            fprintf(stderr, "sal-recover-time: --make wants a count above 0, not '%s'\n",
                    argv[2]);
            return 16;
        }
        return make(argv[3], n);
    }
    if (argc != 2 || argv[1][0] == '-') {
        if (argc >= 2 && argv[1][0] == '-' && strcmp(argv[1], "--make"))
            fprintf(stderr, "sal-recover-time: unknown option '%s'\n", argv[1]);
        usage(stderr);
        return 16;
    }
    sal_options opt;
    sal_options_init(&opt);
    opt.flags = SAL_OPEN_REPAIR;
    opt.ready_segments = 0;
    double t0 = now();
    sal_heap *h;
    int err = sal_heap_open(argv[1], &opt, &h);
    if (err)
        return die("open", err);
    double t1 = now();
    sal_recovery_report rr;
    (void)sal_heap_recovery_report(h, &rr);
    if ((err = sal_heap_close(h)))
        return die("close", err);
    double t2 = now();
    printf("recover_s=%.6f open_s=%.6f close_s=%.6f recovery_s=%.6f objects=%" PRIu64
           " objects_per_s=%.0f\n",
           t2 - t0, t1 - t0, t2 - t1, rr.seconds, rr.objects_live,
           (double)rr.objects_live / (t2 - t0));
    return 0;
}
