/*
 * disk_idle.c - does the disk answer slower after a quiet spell?
 *
 *     disk_idle [--dir DIR] [-r ROUNDS] [-i MS1,MS2,...]
 *
 * A durable commit is a chain of device round trips (write, flush, write,
 * flush), so its time depends on how fast the device answers the first
 * one.  On some virtual disks that depends on how long the device was
 * idle before: a host thread that polls for requests for a while and then
 * sleeps answers a request after a long pause slower.  A benchmark that
 * compares commits measured right after other I/O with commits measured
 * after a pause compares the disk's two states, not the programs.
 *
 * This program measures it without sal: a 64 MiB file written in 4 KiB
 * writes (4 KiB page-cache folios, as the peer's `-c 4`) and fsync'd, then
 * for each idle time: ROUNDS times, spin (the CPU stays busy, so the
 * processor's own idle states play no part) for that many milliseconds
 * with no I/O, then the peer's W6 commit of one object: 128 bytes written
 * and msync'd, one header page written and msync'd.  Prints one line:
 * idle_ms_N_us=MEDIAN for each N.  The file is removed at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_common.h" /* bench_now */

#define FILE_BYTES (64u << 20)
#define PAGE 4096u

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: disk_idle [--dir DIR] [-r ROUNDS] [-i MS1,MS2,...]\n"
                 "  durable one-object commits (the W6 peer's sequence) after a\n"
                 "  quiet spell of each given length (default 0,1,5,10,20,50 ms),\n"
                 "  ROUNDS each (default 30); --dir: where the 64 MiB scratch file\n"
                 "  goes (default /tmp)\n");
}

static int fail(const char *what)
{
    fprintf(stderr, "disk_idle: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    char list[256] = "0,1,5,10,20,50";
    int rounds = 30, c;
    static const struct option longopts[] = {{"dir", required_argument, NULL, 'd'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    while ((c = getopt_long(argc, argv, "r:i:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'r': rounds = atoi(optarg); break;
        case 'i': snprintf(list, sizeof list, "%s", optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (rounds < 1 || rounds > 10000) {
        usage(stderr);
        return 2;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/disk_idle.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return fail(path);
    static char page[PAGE];
    memset(page, 0xA5, sizeof page);
    for (uint64_t off = 0; off < FILE_BYTES; off += PAGE)
        if (pwrite(fd, page, PAGE, (off_t)off) != PAGE) {
            unlink(path);
            return fail("pwrite");
        }
    char *m = fsync(fd) == 0 ? mmap(NULL, FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                             : MAP_FAILED;
    unlink(path);
    if (m == MAP_FAILED)
        return fail("fsync or mmap");
    for (uint64_t off = 0; off < FILE_BYTES; off += PAGE)
        (void)*(volatile char *)(m + off);

    double *t = malloc((size_t)rounds * sizeof *t);
    if (!t)
        return fail("malloc");
    uint64_t next = PAGE; /* page 0 is the header page */
    printf("bench=disk_idle rounds=%d", rounds);
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double idle_s = atof(tok) * 1e-3;
        for (int r = 0; r < rounds; r++) {
            double a = bench_now();
            while (bench_now() - a < idle_s)
                ; /* busy: only the disk is idle */
            if (next + PAGE > FILE_BYTES)
                next = PAGE;
            a = bench_now();
            memset(m + next, r, 128);
            if (msync(m + next, PAGE, MS_SYNC) != 0)
                return fail("msync");
            *(volatile uint64_t *)m = (uint64_t)r;
            if (msync(m, PAGE, MS_SYNC) != 0)
                return fail("msync");
            t[r] = (bench_now() - a) * 1e6;
            next += PAGE;
        }
        qsort(t, (size_t)rounds, sizeof *t, cmp_double);
        printf(" idle_ms_%s_us=%.1f", tok, t[rounds / 2]);
    }
    printf("\n");
    free(t);
    munmap(m, FILE_BYTES);
    close(fd);
    return 0;
}
