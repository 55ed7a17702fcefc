/* error.c - names for every error code. */
#include <string.h>

#include "sal.h"

const char *sal_strerror(int err)
{
    switch (err) {
    case SAL_OK: return "success";
    case SAL_ENOTHEAP: return "not a sal heap (empty file or bad magic)";
    case SAL_EVERSION: return "sal heap of an unsupported format version";
    case SAL_ECORRUPT: return "sal heap is damaged (checksum or cross-check failed)";
    case SAL_ETRUNCATED: return "sal heap file is shorter than its header says (truncated)";
    case SAL_ELOCKED: return "sal heap is open in another handle or process (a writer needs it alone; read-only opens share it)";
    case SAL_EUNCLEAN: return "sal heap was not closed cleanly and must be recovered first (open it with SAL_OPEN_RECOVER, or run sal-gc repair)";
    case SAL_EINVAL: return "invalid argument";
    case SAL_EBADID: return "invalid id (null, outside the object table, or never handed out)";
    case SAL_ESTALE: return "stale id (its object was released)";
    case SAL_ETOOBIG: return "object larger than the largest object of this heap";
    case SAL_ESESSIONS: return "too many allocating sessions open (64)";
    case SAL_EREADERS: return "too many readers open";
    case SAL_EREADONLY: return "write attempted through a reader or a read-only heap";
    case SAL_ENOSECTION: return "call needs an open read or write section";
    case SAL_ENOTWRITABLE: return "parent is not writable in this write section";
    case SAL_ECONFLICT: return "root compare-and-set failed: the root changed";
    case SAL_EBUSY: return "sessions or sections are still open";
    case SAL_EWRONGTHREAD: return "session used from a thread that did not open it";
    case SAL_EFULL: return "sal heap is full (reserve_bytes reached)";
    case SAL_ENOIDS: return "object table is full (max_objects reached)";
    case SAL_ENOMEM: return "out of memory for sal bookkeeping";
    default:
        if (err > 0)
            return strerror(err);
        return "unknown sal error";
    }
}
