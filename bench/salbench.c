/*
 * salbench - the project's benchmark program.
 *
 *     salbench WORKLOAD [options]
 *
 * Prints one line of key=value pairs on stdout, with the same keys as the
 * peer program of the same workload (the peer-baseline programs that live
 * beside the repository in ../shared/peers/), so that a script can divide
 * one by the other.  Every workload takes --dir DIR (the heap is
 * created as DIR/heap.sal and left there); without it a fresh temporary
 * directory is used and removed.  Timers start before the heap is created.
 */
#include <stdio.h>
#include <string.h>

#include "workloads.h"

typedef struct workload {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
    void (*usage)(FILE *out);
} workload;

static const workload workloads[] = {
    {"alloc", "W1: allocate/release churn (peer: peer_alloc_*)",
     w1_alloc_main, w1_alloc_usage},
    {"sync", "W6: durable sync of P new objects (peer: peer_msync -o)",
     w6_sync_main, w6_sync_usage},
    {"recover", "W7: recovery after a killed writer (no peer)",
     w7_recover_main, w7_recover_usage},
};
#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

/* Workloads of the benchmark protocol that are not written yet. */
static const char *const planned[] = {"map", "hot", "compact"};
#define NPLANNED (sizeof planned / sizeof planned[0])

static void usage(FILE *out)
{
    fprintf(out,
            "usage: salbench WORKLOAD [options]\n"
            "       salbench --help | salbench WORKLOAD --help\n"
            "\n"
            "Runs one workload of the benchmark protocol on a sal heap and\n"
            "prints one line of key=value pairs on stdout.\n"
            "\n"
            "workloads:\n");
    for (size_t i = 0; i < NWORKLOADS; i++)
        fprintf(out, "  %-8s %s\n", workloads[i].name, workloads[i].summary);
    fprintf(out, "  not yet implemented:");
    for (size_t i = 0; i < NPLANNED; i++)
        fprintf(out, " %s", planned[i]);
    fprintf(out, "\n");
    for (size_t i = 0; i < NWORKLOADS; i++) {
        fprintf(out, "\n");
        workloads[i].usage(out);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") ||
        !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < NWORKLOADS; i++)
        if (!strcmp(name, workloads[i].name)) {
            /* getopt names argv[0] in its messages: "salbench alloc" */
            static char prog[64];
            snprintf(prog, sizeof prog, "salbench %s", name);
            argv[1] = prog;
            return workloads[i].main(argc - 1, argv + 1);
        }
    for (size_t i = 0; i < NPLANNED; i++)
        if (!strcmp(name, planned[i])) {
            fprintf(stderr, "salbench: workload '%s' is not implemented yet\n",
                    name);
            return 2;
        }
    fprintf(stderr, "salbench: unknown workload '%s' (known:", name);
    for (size_t i = 0; i < NWORKLOADS; i++)
        fprintf(stderr, " %s", workloads[i].name);
    fprintf(stderr, "); try salbench --help\n");
    return 2;
}
