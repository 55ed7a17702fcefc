/*
 * progress.c - "walked N objects (R/s)" on stderr, at most once a second,
 * when stderr is a terminal or --progress asked for it.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "gc.h"

double gc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void gc_progress_start(gc_progress *p, const gc_options *o, const char *what)
{
    p->enabled = o->progress > 0 || (o->progress == 0 && !o->quiet && isatty(2));
    p->printed = 0;
    p->start = p->last = p->phase_start = gc_now();
    p->what = what;
}

void gc_progress_phase(gc_progress *p, const char *what)
{
    p->what = what;
    p->phase_start = gc_now();
}

void gc_progress_tick(gc_progress *p, uint64_t done)
{
    if (!p->enabled)
        return;
    double now = gc_now();
    if (now - p->last < 1.0)
        return;
    p->last = now;
    p->printed = 1;
    double dt = now - p->phase_start;
    fprintf(stderr, "sal-gc: %s: %llu (%.0f/s)\n", p->what, (unsigned long long)done,
            dt > 0 ? (double)done / dt : 0.0);
}

void gc_progress_end(gc_progress *p)
{
    if (!p->enabled || !p->printed)
        return; /* short runs stay silent */
    fprintf(stderr, "sal-gc: done in %.1f s\n", gc_now() - p->start);
}
