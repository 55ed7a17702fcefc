/*
 * workloads.h - the salbench workloads.  Each lives in its own file
 * (w1_alloc.c, ...) and exports a main and a usage function; salbench.c
 * dispatches on the first argument.  To add one: write wN_name.c with
 * wN_name_main() / wN_name_usage(), declare them here, add a line to the
 * table in salbench.c and the file to bench/CMakeLists.txt.
 */
#ifndef SALBENCH_WORKLOADS_H
#define SALBENCH_WORKLOADS_H

#include <stdio.h>

/* argv[0] is the workload name; options follow.  Returns the exit status
 * (0 ok, 1 failure, 2 usage error). */
int w1_alloc_main(int argc, char **argv);
void w1_alloc_usage(FILE *out);
int w6_sync_main(int argc, char **argv);
void w6_sync_usage(FILE *out);
int w7_recover_main(int argc, char **argv);
void w7_recover_usage(FILE *out);

#endif
