/* bench_common.c - salbench helpers: clocks, RSS, the heap directory. */
#include "bench_common.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

double bench_process_cpu_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long bench_rss_now_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

long bench_peak_rss_kib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

/* The temporary heap directory to remove if the run dies. */
static bench_dir *cleanup_dir;

void bench_die(const char *workload, const char *what, int err)
{
    fprintf(stderr, "salbench %s: %s: %s (%d)\n", workload, what,
            sal_strerror(err), err);
    if (cleanup_dir)
        bench_dir_done(cleanup_dir);
    exit(1);
}

void bench_dir_setup(bench_dir *d, const char *user_dir)
{
    memset(d, 0, sizeof *d);
    if (user_dir) {
        if (strlen(user_dir) >= sizeof d->dir) {
            fprintf(stderr, "salbench: --dir path too long\n");
            exit(1);
        }
        strcpy(d->dir, user_dir);
        if (mkdir(d->dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "salbench: cannot create %s: %s\n", d->dir,
                    strerror(errno));
            exit(1);
        }
        d->temporary = 0;
    } else {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        int n = snprintf(d->dir, sizeof d->dir, "%s/salbench.XXXXXX", tmp);
        if (n < 0 || (size_t)n >= sizeof d->dir || !mkdtemp(d->dir)) {
            fprintf(stderr, "salbench: cannot make a temporary directory "
                            "under %s: %s\n", tmp, strerror(errno));
            exit(1);
        }
        d->temporary = 1;
        cleanup_dir = d;
    }
    snprintf(d->path, sizeof d->path, "%s/heap.sal", d->dir);
    struct stat st;
    if (stat(d->path, &st) == 0) {
        fprintf(stderr, "salbench: %s already exists; remove it or give "
                        "another --dir\n", d->path);
        exit(1);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) != 0 ? -1 : 0;
    return unlink(path) != 0 ? -1 : 0;
}

void bench_dir_done(bench_dir *d)
{
    if (!d->temporary)
        return;
    d->temporary = 0; /* once */
    if (cleanup_dir == d)
        cleanup_dir = NULL;
    if (nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "salbench: warning: could not remove %s: %s\n",
                d->dir, strerror(errno));
}

int bench_parse_count(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1000ull, end++;
    else if (*end == 'M')
        mul = 1000000ull, end++;
    else if (*end == 'G')
        mul = 1000000000ull, end++;
    if (*end)
        return -1;
    if (mul > 1 && v > UINT64_MAX / mul)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}
