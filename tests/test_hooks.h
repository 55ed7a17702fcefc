/*
 * test_hooks.h - helpers around the library's test hooks (internal.h; in
 * a build without them the hook calls return ENOSYS), shared by the test
 * files that use the same one.
 */
#ifndef SAL_TEST_HOOKS_H
#define SAL_TEST_HOOKS_H

#include <signal.h>

#include "test_util.h"

#include "internal.h"

static inline void tu_kill_at_forgotten(void *arg, int where)
{
    (void)arg;
    if (where == SAL_TEST_RECOVER_FORGOTTEN)
        raise(SIGKILL);
}

/* For a child (tu_in_child): open `path` with `flags` (SAL_OPEN_RECOVER or
 * SAL_OPEN_REPAIR), killed right after its recovery forgot the table: a
 * recovery killed part-way.  Returns 20 if the build has no test hooks,
 * 21 if the open was not killed. */
static inline int tu_open_killed_at_forgotten(const char *path, unsigned flags)
{
    if (sal_test_recover_hook(tu_kill_at_forgotten, NULL))
        return 20;
    sal_options o = tu_small_options();
    o.flags = flags;
    o.ready_segments = 0;
    sal_heap *h;
    sal_heap_open(path, &o, &h);
    return 21;
}

#endif
