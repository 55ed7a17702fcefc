/*
 * gc.h - sal-gc, the stop-the-world checker and repairer of sal heaps.
 *
 * The tool is a small library (check, stats, repair) plus a command line
 * (main.c), so that the fuzz target links the very checker the program
 * runs.  Source map:
 *
 *   heapfile.c  open the file (regular, never a fifo or a device), lock it,
 *               read and check the superblock and the four commit slots
 *               with pread, pick the current slot as the library does, map
 *               the file read-only
 *   check.c     the walk: committed ranges in address order, the object
 *               table, reachability and true counts from the committed
 *               roots (a worklist, no recursion), per-class damage, and a
 *               prediction of what the library's repair would produce
 *   report.c    damage classes, examples, notes; human and JSON output
 *   stats.c     `sal-gc stats`
 *   repair.c    `sal-gc repair`: the library's SAL_OPEN_REPAIR, then
 *               sal-gc's own residual fixes, then a check
 *   progress.c  progress lines on stderr
 *   main.c      the command line
 *
 * Everything read from the file is hostile: every offset, size, id and
 * count is checked against the geometry (itself cross-checked) before it
 * is used, and the mapping never extends past the file's size.
 *
 * Memory is proportional to the number of ids below the high-water mark
 * (about 13 bytes each, 17 when objects only the table locates need a
 * second marking), never to the size of the heap.
 */
#ifndef SAL_GC_H
#define SAL_GC_H

#include <stdint.h>
#include <stdio.h>

#include "format.h"

#define GC_VERSION "0.1.0"

/* fsck's exit codes. */
#define GC_EXIT_CLEAN 0       /* no damage found (or nothing needed) */
#define GC_EXIT_CORRECTED 1   /* damage found and corrected */
#define GC_EXIT_UNCORRECTED 4 /* damage left uncorrected */
#define GC_EXIT_OPERATIONAL 8 /* operational error: not a heap, unreadable,
                                 refused, out of memory, usage */

/* Damage classes, in the order they are reported. */
enum gc_class {
    GC_UNCLEAN_SHUTDOWN = 0,  /* the newest commit was not closed */
    GC_UNREACHABLE_OBJECT,    /* live in the table, not reachable */
    GC_REFCOUNT_MISMATCH,     /* table count != references found */
    GC_OUT_OF_RANGE,          /* ids, locations, sizes, counts out of bounds */
    GC_OVERLAPPING_OBJECTS,   /* an entry locates another object's bytes */
    GC_HEADER_DAMAGE,         /* superblock, slots, object headers, checksums */
    GC_SEGMENT_ACCOUNTING,    /* segment records vs the objects in them */
    GC_DANGLING_CHILD,        /* a child id (or root) naming a free or stale id */
    GC_CLASS_COUNT
};

const char *gc_class_name(enum gc_class c);
const char *gc_class_summary(enum gc_class c);

#define GC_MAX_EXAMPLES 16
#define GC_DEFAULT_EXAMPLES 5
#define GC_EXAMPLE_BYTES 320

typedef struct gc_options {
    int readonly_look;     /* go on when a live writer holds the heap */
    int json;              /* JSON output */
    int progress;          /* 1: always; 0: when stderr is a tty; -1: never */
    unsigned max_examples; /* per class (0: GC_DEFAULT_EXAMPLES) */
    int quiet;             /* no output from the library functions */
} gc_options;

void gc_options_init(gc_options *o);

typedef struct gc_class_report {
    uint64_t count;
    unsigned nexamples;
    char examples[GC_MAX_EXAMPLES][GC_EXAMPLE_BYTES];
} gc_class_report;

/* One segment as the check saw it. */
typedef struct gc_segment_stats {
    uint32_t state;              /* recorded state (SAL_SEGREC_*) */
    uint64_t used_bytes;         /* recorded committed range */
    uint64_t recorded_live_bytes;
    uint64_t headers;            /* headers parsed in the committed range */
    uint64_t table_objects;      /* live table entries located here */
    uint64_t table_bytes;        /* their spans */
    uint64_t reachable_objects;  /* reachable from the committed roots */
    uint64_t reachable_bytes;
    uint64_t damaged_at;         /* first damaged header's offset in the
                                    segment, or UINT64_MAX */
    uint64_t live_after_damage;  /* live table entries located past it */
} gc_segment_stats;

/* A fix that repair makes itself after the library's repair (the library
 * leaves these in place).  Each is one write that leaves a consistent heap
 * before and after it, so a crash between two of them is harmless. */
enum gc_fix_kind {
    GC_FIX_CHILD_SLOT = 1, /* a child slot naming nothing -> the null id */
    GC_FIX_PAD,            /* a dead, damaged tail of a committed range ->
                              padding (a zero word per 4 KiB page) */
    GC_FIX_SLOT,           /* an invalid commit slot -> zeros (empty) */
};

typedef struct gc_fix {
    enum gc_fix_kind kind;
    uint64_t offset;       /* file offset of the first byte to write */
    uint64_t length;       /* GC_FIX_PAD: end of the range (offset) */
    uint64_t old_value;    /* GC_FIX_CHILD_SLOT: the id it held;
                              GC_FIX_PAD: the word at offset;
                              GC_FIX_SLOT: the digest of its bytes */
    uint64_t parent;       /* GC_FIX_CHILD_SLOT: the object holding it */
    uint32_t slot;         /* GC_FIX_CHILD_SLOT: child slot number;
                              GC_FIX_SLOT: commit slot number */
} gc_fix;

/* What the library's SAL_OPEN_REPAIR would produce, computed by the check
 * with the library's own rules (locations from an address-order sweep of
 * the committed ranges, newest generation wins; counts from the roots),
 * plus the fixes sal-gc makes afterwards. */
typedef struct gc_prediction {
    int library_opens;            /* 0: the library refuses this file */
    char library_refusal[160];
    uint64_t objects_live;        /* objects reachable after the repair */
    uint64_t bytes_live;
    uint64_t ids_freed;           /* live entries the repair frees */
    uint64_t counts_set;          /* live entries whose count changes */
    uint64_t ids_revived;         /* free entries a reference brings back */
    uint64_t locations_set;       /* live entries whose location is wrong */
    uint64_t records_rewritten;   /* segment records that change */
    uint64_t roots_cleared;       /* roots naming no committed object */
    uint64_t dangling_refs;       /* references naming no committed object */
    uint64_t objects_lost;        /* reachable objects with intact headers
                                     that only the table can still locate
                                     (after a damaged header, or outside the
                                     recorded range): the library's sweep
                                     does not find them */
    uint64_t damage_kept;         /* damaged headers that stay: the repair
                                     keeps objects at or behind them, so
                                     their tails cannot become padding */
    uint64_t child_slots_cleared; /* sal-gc's fixes, by kind */
    uint64_t ranges_padded;
    uint64_t slots_cleared;
} gc_prediction;

typedef struct gc_root_info {
    sal_id id;
    int resolved;                 /* 1: names a committed object */
    uint32_t type, nrefs;
    uint64_t size_bytes;
} gc_root_info;

typedef struct gc_report {
    /* Outcome. */
    int op_error;                 /* nonzero: operational error (exit 8) */
    char op_message[512];
    int stopped;                  /* damage stopped the check early */
    gc_class_report cls[GC_CLASS_COUNT];
    char **notes;
    size_t nnotes, capnotes;
    unsigned max_examples;

    /* The file. */
    char path[4096];
    uint64_t file_size;
    uint64_t file_disk_bytes;     /* blocks allocated on disk */
    int have_superblock;
    sal_superblock sb;
    int have_slot;                /* a current commit slot was picked */
    sal_commit_slot slot;
    unsigned slot_index;
    int slot_status[SAL_SLOT_COUNT]; /* GC_SLOT_* */
    uint64_t slot_epoch[SAL_SLOT_COUNT];
    uint32_t slot_digest[SAL_SLOT_COUNT]; /* crc32c of the slot's bytes as read */
    int boot_known;               /* the running kernel's boot id was read */
    int same_boot;                /* the current slot was written in this boot */
    int live_writer;              /* a process holds the heap for writing */
    int unclean;                  /* the current slot says not closed */
    int table_checked;            /* the table was checked against the walk */
    int walked;                   /* the committed ranges were walked */

    /* The walk. */
    uint64_t hwm;                 /* ids_high_water */
    uint64_t nseg;                /* segments_high_water */
    uint64_t headers_walked;
    uint64_t table_live;          /* live entries */
    uint64_t table_free;          /* free entries (released ids) */
    uint64_t table_never_used;
    uint64_t reachable_objects;
    uint64_t reachable_bytes;
    uint64_t references;          /* non-null references followed */
    uint64_t table_only;          /* reachable objects only the table locates */
    gc_segment_stats *segs;       /* nseg of them */
    gc_root_info roots[SAL_ROOT_COUNT];

    /* After an unclean shutdown: differences that recovery explains. */
    uint64_t unclean_counts_differ;
    uint64_t unclean_would_free;
    uint64_t unclean_would_revive;

    gc_prediction predict;
    gc_fix *fixes;                /* what sal-gc fixes after the library */
    size_t nfixes, capfixes;

    double seconds;
} gc_report;

enum { GC_SLOT_EMPTY = 0, GC_SLOT_VALID, GC_SLOT_INVALID, GC_SLOT_OTHER_BOOT,
       GC_SLOT_UNREADABLE };

void gc_report_init(gc_report *r, const gc_options *o);
void gc_report_free(gc_report *r);
/* Count one instance of `c`, and keep its description if fewer than the
 * example limit are kept. */
void gc_damage(gc_report *r, enum gc_class c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Count `n` instances without an example. */
void gc_damage_count(gc_report *r, enum gc_class c, uint64_t n);
void gc_note(gc_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gc_op_error(gc_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int gc_add_fix(gc_report *r, const gc_fix *f);
uint64_t gc_damage_total(const gc_report *r);
/* The exit code a check with this report gives: 8, 4 or 0. */
int gc_report_exit_code(const gc_report *r);

/* Would the library's repair change anything a check looks at (a clean
 * heap whose prediction has nothing for it: no)?  Would repair as a whole,
 * sal-gc's own fixes included? */
int gc_library_would_change(const gc_report *r);
int gc_repair_would_change(const gc_report *r);

/* Output. */
void gc_print_check(FILE *out, const gc_report *r, const gc_options *o);
void gc_print_check_json(FILE *out, const gc_report *r);
void gc_print_prediction(FILE *out, const gc_report *r);
void gc_print_stats(FILE *out, const gc_report *r);
void gc_print_stats_json(FILE *out, const gc_report *r);
/* Helpers shared by the printers. */
void gc_json_string(FILE *out, const char *s);
const char *gc_bytes_human(uint64_t bytes, char *buf, size_t cap);
void gc_format_time(uint64_t unix_ns, char *buf, size_t cap);

/*
 * The checker.  Opens `path` read-only, checks it and fills `r` (call
 * gc_report_free afterwards).  Returns the exit code: GC_EXIT_CLEAN,
 * GC_EXIT_UNCORRECTED or GC_EXIT_OPERATIONAL.  Prints nothing.
 */
int gc_check_path(const char *path, const gc_options *o, gc_report *r);

/* `sal-gc repair`. */
typedef struct gc_repair_options {
    int dry_run;      /* say what repair would do, write nothing */
    int force;        /* repair even if objects only the table locates
                         would be lost */
    int check_first;  /* check an unclean heap before repairing it (the
                         default repairs an unclean heap at once) */
} gc_repair_options;

int gc_repair_path(const char *path, const gc_options *o, const gc_repair_options *ro,
                   FILE *out);

/* Progress on stderr: at most once a second, only when enabled. */
typedef struct gc_progress {
    int enabled;
    int printed;
    double start, last, phase_start;
    const char *what; /* the phase: "walking the committed ranges: headers" */
} gc_progress;

void gc_progress_start(gc_progress *p, const gc_options *o, const char *what);
/* A new phase; `done` counts from 0 again. */
void gc_progress_phase(gc_progress *p, const char *what);
void gc_progress_tick(gc_progress *p, uint64_t done);
void gc_progress_end(gc_progress *p);
double gc_now(void);

/* The running kernel's boot id, as the library reads it.  0 on success. */
int gc_boot_id(uint8_t out[16]);

#endif
