/*
 * report.c - damage classes, their examples, notes, and the check's output
 * (human-readable and JSON).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gc.h"

static const struct {
    const char *name;
    const char *summary;
} classes[GC_CLASS_COUNT] = {
    [GC_UNCLEAN_SHUTDOWN] = {"unclean-shutdown",
                             "the heap was not closed cleanly after its last commit"},
    [GC_UNREACHABLE_OBJECT] = {"unreachable-object",
                               "live in the object table, not reachable from the roots"},
    [GC_REFCOUNT_MISMATCH] = {"refcount-mismatch",
                              "the table's count differs from the references found"},
    [GC_OUT_OF_RANGE] = {"out-of-range",
                         "an id, location, size or count outside its bounds"},
    [GC_OVERLAPPING_OBJECTS] = {"overlapping-objects",
                                "a table entry locates another object's bytes"},
    [GC_HEADER_DAMAGE] = {"header-damage",
                          "superblock, commit slot, segment table or object header damaged"},
    [GC_SEGMENT_ACCOUNTING] = {"segment-accounting",
                               "a segment record does not match the objects in it"},
    [GC_DANGLING_CHILD] = {"dangling-child",
                           "a child id or root naming a free or stale id"},
};

const char *gc_class_name(enum gc_class c)
{
    return (unsigned)c < GC_CLASS_COUNT ? classes[c].name : "unknown";
}

const char *gc_class_summary(enum gc_class c)
{
    return (unsigned)c < GC_CLASS_COUNT ? classes[c].summary : "";
}

void gc_options_init(gc_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_examples = GC_DEFAULT_EXAMPLES;
}

void gc_report_init(gc_report *r, const gc_options *o)
{
    memset(r, 0, sizeof *r);
    unsigned m = o && o->max_examples ? o->max_examples : GC_DEFAULT_EXAMPLES;
    r->max_examples = m > GC_MAX_EXAMPLES ? GC_MAX_EXAMPLES : m;
}

void gc_report_free(gc_report *r)
{
    for (size_t i = 0; i < r->nnotes; i++)
        free(r->notes[i]);
    free(r->notes);
    free(r->segs);
    free(r->fixes);
    r->notes = NULL;
    r->segs = NULL;
    r->fixes = NULL;
    r->nnotes = r->capnotes = r->nfixes = r->capfixes = 0;
}

void gc_damage(gc_report *r, enum gc_class c, const char *fmt, ...)
{
    gc_class_report *cr = &r->cls[c];
    cr->count++;
    if (cr->nexamples >= r->max_examples)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cr->examples[cr->nexamples], GC_EXAMPLE_BYTES, fmt, ap);
    va_end(ap);
    cr->nexamples++;
}

void gc_damage_count(gc_report *r, enum gc_class c, uint64_t n) { r->cls[c].count += n; }

#define GC_MAX_NOTES 64

void gc_note(gc_report *r, const char *fmt, ...)
{
    if (r->nnotes >= GC_MAX_NOTES)
        return;
    if (r->nnotes == r->capnotes) {
        size_t cap = r->capnotes ? r->capnotes * 2 : 8;
        char **p = realloc(r->notes, cap * sizeof *p);
        if (!p)
            return;
        r->notes = p;
        r->capnotes = cap;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (s)
        r->notes[r->nnotes++] = s;
}

void gc_op_error(gc_report *r, const char *fmt, ...)
{
    if (r->op_error)
        return; /* keep the first */
    r->op_error = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->op_message, sizeof r->op_message, fmt, ap);
    va_end(ap);
}

/* Fixes beyond this many wait for another round of repair. */
#define GC_MAX_FIXES (1u << 20)

int gc_add_fix(gc_report *r, const gc_fix *f)
{
    if (r->nfixes >= GC_MAX_FIXES)
        return 0;
    if (r->nfixes == r->capfixes) {
        size_t cap = r->capfixes ? r->capfixes * 2 : 64;
        gc_fix *p = realloc(r->fixes, cap * sizeof *p);
        if (!p)
            return -1;
        r->fixes = p;
        r->capfixes = cap;
    }
    r->fixes[r->nfixes++] = *f;
    return 0;
}

uint64_t gc_damage_total(const gc_report *r)
{
    uint64_t n = 0;
    for (unsigned c = 0; c < GC_CLASS_COUNT; c++)
        n += r->cls[c].count;
    return n;
}

int gc_report_exit_code(const gc_report *r)
{
    if (r->op_error)
        return GC_EXIT_OPERATIONAL;
    return gc_damage_total(r) ? GC_EXIT_UNCORRECTED : GC_EXIT_CLEAN;
}

/* ------------------------------------------------------------------------
 * Formatting helpers.
 * ------------------------------------------------------------------------ */

const char *gc_bytes_human(uint64_t bytes, char *buf, size_t cap)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    unsigned u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, cap, "%.1f %s", v, unit[u]);
    return buf;
}

void gc_format_time(uint64_t unix_ns, char *buf, size_t cap)
{
    time_t t = (time_t)(unix_ns / 1000000000ull);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, cap, "%" PRIu64 " ns since 1970", unix_ns);
}

void gc_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static const char *slot_status_name(int s)
{
    switch (s) {
    case GC_SLOT_EMPTY: return "empty";
    case GC_SLOT_VALID: return "valid";
    case GC_SLOT_INVALID: return "invalid";
    case GC_SLOT_OTHER_BOOT: return "valid, other boot (ignored)";
    case GC_SLOT_UNREADABLE: return "past the end of the file";
    }
    return "?";
}

/* ------------------------------------------------------------------------
 * Human-readable check output.
 * ------------------------------------------------------------------------ */

static void print_heap_summary(FILE *out, const gc_report *r)
{
    char b1[32], b2[32];
    if (!r->have_superblock)
        return;
    const sal_superblock *sb = &r->sb;
    fprintf(out, "  heap: format %u, %s segments (%" PRIu64 " in the commit, %" PRIu64
                 " possible), file %s (%s on disk)\n",
            sb->format_version, gc_bytes_human(sb->segment_bytes, b1, sizeof b1), r->nseg,
            sb->segment_count, gc_bytes_human(r->file_size, b2, sizeof b2),
            gc_bytes_human(r->file_disk_bytes, (char[32]){0}, 32));
    if (!r->have_slot)
        return;
    char t[64];
    gc_format_time(r->slot.time_unix_ns, t, sizeof t);
    fprintf(out, "  commit: epoch %" PRIu64 " in slot %u (%s), written %s, %s; durable "
                 "epoch %" PRIu64 "\n",
            r->slot.epoch, r->slot_index, r->slot_index < 2 ? "durable" : "protect/async",
            t,
            r->live_writer ? "open for writing now"
            : r->slot.clean ? "closed cleanly"
                            : "NOT closed cleanly",
            r->slot.durable_epoch);
    if (!r->walked)
        return; /* the check stopped before the walk: no counts to show */
    fprintf(out, "  table: %" PRIu64 " of %" PRIu64 " entries below the high-water mark: %"
                 PRIu64 " live, %" PRIu64 " free, %" PRIu64 " never used\n",
            r->hwm ? r->hwm - 1 : 0, sb->max_objects - 1, r->table_live, r->table_free,
            r->table_never_used);
    unsigned roots = 0;
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++)
        roots += r->roots[k].id != SAL_NULL_ID;
    fprintf(out, "  walked: %" PRIu64 " object headers; %" PRIu64 " objects (%s) reachable "
                 "from %u root(s) through %" PRIu64 " reference(s)\n",
            r->headers_walked, r->reachable_objects,
            gc_bytes_human(r->reachable_bytes, b1, sizeof b1), roots, r->references);
}

int gc_library_would_change(const gc_report *r)
{
    const gc_prediction *p = &r->predict;
    return r->unclean || p->ids_freed || p->counts_set || p->ids_revived ||
           p->locations_set || p->records_rewritten || p->roots_cleared ||
           p->objects_lost || r->slot_status[0] != GC_SLOT_VALID ||
           r->slot_status[1] != GC_SLOT_VALID;
}

int gc_repair_would_change(const gc_report *r)
{
    const gc_prediction *p = &r->predict;
    return gc_library_would_change(r) || p->child_slots_cleared || p->ranges_padded ||
           p->slots_cleared;
}

void gc_print_prediction(FILE *out, const gc_report *r)
{
    const gc_prediction *p = &r->predict;
    if (!r->have_slot || r->op_error)
        return;
    if (!p->library_opens) {
        fprintf(out, "  repair cannot run: %s\n",
                p->library_refusal[0] ? p->library_refusal : "the library refuses this heap");
        return;
    }
    fprintf(out, "  repair would (the library's SAL_OPEN_REPAIR, then sal-gc's own fixes):\n");
    int any = 0;
#define ITEM(cond, ...)                                                                      \
    do {                                                                                     \
        if (cond) {                                                                          \
            fprintf(out, "    - ");                                                          \
            fprintf(out, __VA_ARGS__);                                                       \
            fputc('\n', out);                                                                \
            any = 1;                                                                         \
        }                                                                                    \
    } while (0)
    ITEM(r->unclean, "recover the heap to commit %" PRIu64, r->slot.epoch);
    ITEM(p->ids_freed, "free %" PRIu64 " id(s) that nothing committed reaches", p->ids_freed);
    ITEM(p->counts_set, "set %" PRIu64 " reference count(s) to the references found",
         p->counts_set);
    ITEM(p->ids_revived, "bring back %" PRIu64 " referenced object(s) whose entry is free",
         p->ids_revived);
    ITEM(p->locations_set, "set %" PRIu64 " table location(s) to where the objects are",
         p->locations_set);
    ITEM(p->records_rewritten, "rewrite %" PRIu64 " segment record(s)", p->records_rewritten);
    ITEM(p->roots_cleared, "empty %" PRIu64 " root(s) naming no committed object",
         p->roots_cleared);
    ITEM(p->objects_lost, "LOSE %" PRIu64 " reachable object(s) with intact headers that only "
         "the object table still locates (the library's sweep stops at a damaged header and "
         "ignores what a segment record does not cover); refused without --force",
         p->objects_lost);
    ITEM(p->damage_kept, "leave %" PRIu64 " damaged object header(s) in place: objects the "
         "repair keeps lie at or behind them, so the damage stays and `check` goes on naming "
         "it", p->damage_kept);
    ITEM(p->child_slots_cleared, "set %" PRIu64 " child slot(s) naming no object to the null "
         "id (sal-gc)", p->child_slots_cleared);
    ITEM(p->ranges_padded, "turn %" PRIu64 " dead, damaged tail(s) of committed ranges into "
         "padding (sal-gc)", p->ranges_padded);
    ITEM(p->slots_cleared, "empty %" PRIu64 " invalid volatile commit slot(s) (sal-gc)",
         p->slots_cleared);
    ITEM(r->cls[GC_HEADER_DAMAGE].count && r->slot_status[0] == GC_SLOT_INVALID,
         "rewrite durable commit slot 0");
    ITEM(r->cls[GC_HEADER_DAMAGE].count && r->slot_status[1] == GC_SLOT_INVALID,
         "rewrite durable commit slot 1");
#undef ITEM
    if (!any)
        fprintf(out, "    - nothing\n");
    char b[32];
    fprintf(out, "    leaving %" PRIu64 " live objects (%s)\n", p->objects_live,
            gc_bytes_human(p->bytes_live, b, sizeof b));
}

void gc_print_check(FILE *out, const gc_report *r, const gc_options *o)
{
    /* o == NULL: embedded in repair's output, which says the exit itself. */
    fprintf(out, "%s %s\n", o ? "sal-gc check:" : "  check:", r->path);
    if (r->op_error) {
        fprintf(out, "  error: %s\n", r->op_message);
        if (o)
            fprintf(out, "  exit 8: operational error\n");
        return;
    }
    print_heap_summary(out, r);
    uint64_t total = gc_damage_total(r);
    unsigned nclasses = 0;
    for (unsigned c = 0; c < GC_CLASS_COUNT; c++)
        nclasses += r->cls[c].count > 0;
    if (total == 0) {
        fprintf(out, "  no damage found\n");
    } else {
        fprintf(out, "  damage: %u class(es), %" PRIu64 " instance(s)%s\n", nclasses, total,
                r->stopped ? " (the check stopped early)" : "");
        for (unsigned c = 0; c < GC_CLASS_COUNT; c++) {
            const gc_class_report *cr = &r->cls[c];
            if (!cr->count)
                continue;
            fprintf(out, "  %s: %" PRIu64 "  (%s)\n", gc_class_name(c), cr->count,
                    gc_class_summary(c));
            for (unsigned k = 0; k < cr->nexamples; k++)
                fprintf(out, "    - %s\n", cr->examples[k]);
            if (cr->count > cr->nexamples && cr->nexamples)
                fprintf(out, "    ... and %" PRIu64 " more\n", cr->count - cr->nexamples);
        }
    }
    if (r->unclean && !r->live_writer && r->table_checked)
        fprintf(out, "  after the unclean stop, recovery would: set %" PRIu64 " count(s), "
                     "free %" PRIu64 " id(s), bring back %" PRIu64 " released object(s) the "
                     "commit still references (expected: uncommitted work is undone)\n",
                r->unclean_counts_differ, r->unclean_would_free, r->unclean_would_revive);
    if (r->nnotes) {
        fprintf(out, "  notes:\n");
        for (size_t i = 0; i < r->nnotes; i++)
            fprintf(out, "    - %s\n", r->notes[i]);
    }
    if (total)
        gc_print_prediction(out, r);
    if (!o)
        return;
    if (total == 0)
        fprintf(out, "  exit 0: clean\n");
    else if (r->have_slot && r->predict.library_opens && !gc_repair_would_change(r))
        fprintf(out, "  exit 4: errors left uncorrected; `sal-gc repair` would change nothing "
                     "here: it cannot correct them\n");
    else if (r->have_slot && r->predict.library_opens && r->predict.damage_kept)
        fprintf(out, "  exit 4: errors left uncorrected; `sal-gc repair %s` corrects what it "
                     "can, but %" PRIu64 " damaged header(s) remain\n",
                r->path, r->predict.damage_kept);
    else if (r->have_slot && r->predict.library_opens)
        fprintf(out, "  exit 4: errors left uncorrected; `sal-gc repair %s` corrects them\n",
                r->path);
    else
        fprintf(out, "  exit 4: errors left uncorrected; the library cannot open this heap, "
                     "so repair cannot run\n");
}

/* ------------------------------------------------------------------------
 * JSON check output.
 * ------------------------------------------------------------------------ */

static void json_prediction(FILE *out, const gc_report *r)
{
    /* A heap the library refuses is not repaired: nothing would change. */
    gc_prediction none = {.library_opens = 0};
    const gc_prediction *p = r->predict.library_opens ? &r->predict : &none;
    fprintf(out, "{\"library_opens\": %s, \"objects_live\": %" PRIu64 ", \"bytes_live\": %"
                 PRIu64 ", \"ids_freed\": %" PRIu64 ", \"counts_set\": %" PRIu64
                 ", \"ids_revived\": %" PRIu64 ", \"locations_set\": %" PRIu64
                 ", \"records_rewritten\": %" PRIu64
                 ", \"roots_cleared\": %" PRIu64 ", \"dangling_refs\": %" PRIu64
                 ", \"objects_lost\": %" PRIu64 ", \"damage_kept\": %" PRIu64
                 ", \"child_slots_cleared\": %" PRIu64
                 ", \"ranges_padded\": %" PRIu64 ", \"slots_cleared\": %" PRIu64 "}",
            p->library_opens ? "true" : "false", p->objects_live, p->bytes_live, p->ids_freed,
            p->counts_set, p->ids_revived, p->locations_set, p->records_rewritten,
            p->roots_cleared, p->dangling_refs, p->objects_lost, p->damage_kept,
            p->child_slots_cleared, p->ranges_padded,
            p->slots_cleared);
}

void gc_print_check_json(FILE *out, const gc_report *r)
{
    int code = gc_report_exit_code(r);
    fprintf(out, "{\n  \"tool\": \"sal-gc\", \"version\": \"%s\", \"command\": \"check\",\n",
            GC_VERSION);
    fprintf(out, "  \"path\": ");
    gc_json_string(out, r->path);
    fprintf(out, ",\n  \"exit_code\": %d,\n  \"status\": \"%s\",\n", code,
            code == GC_EXIT_OPERATIONAL ? "error"
            : code == GC_EXIT_CLEAN     ? "clean"
                                        : "damaged");
    fprintf(out, "  \"error\": ");
    if (r->op_error)
        gc_json_string(out, r->op_message);
    else
        fputs("null", out);
    fprintf(out, ",\n  \"stopped_early\": %s,\n", r->stopped ? "true" : "false");
    if (r->have_superblock) {
        const sal_superblock *sb = &r->sb;
        fprintf(out, "  \"heap\": {\"format_version\": %u, \"file_bytes\": %" PRIu64
                     ", \"disk_bytes\": %" PRIu64 ", \"reserve_bytes\": %" PRIu64
                     ", \"segment_bytes\": %" PRIu64 ", \"segment_count\": %" PRIu64
                     ", \"max_objects\": %" PRIu64 "},\n",
                sb->format_version, r->file_size, r->file_disk_bytes, sb->reserve_bytes,
                sb->segment_bytes, sb->segment_count, sb->max_objects - 1);
    }
    if (r->have_slot) {
        char t[64];
        gc_format_time(r->slot.time_unix_ns, t, sizeof t);
        fprintf(out, "  \"commit\": {\"slot\": %u, \"epoch\": %" PRIu64 ", \"time_unix_ns\": %"
                     PRIu64 ", \"time\": \"%s\", \"durable\": %s, \"durable_epoch\": %" PRIu64
                     ", \"clean\": %s, \"same_boot\": %s, \"ids_high_water\": %" PRIu64
                     ", \"segments_high_water\": %" PRIu64 "},\n",
                r->slot_index, r->slot.epoch, r->slot.time_unix_ns, t,
                r->slot.durable ? "true" : "false", r->slot.durable_epoch,
                r->slot.clean ? "true" : "false", r->same_boot ? "true" : "false", r->hwm,
                r->nseg);
        fprintf(out, "  \"slots\": [");
        for (unsigned i = 0; i < SAL_SLOT_COUNT; i++)
            fprintf(out, "%s{\"slot\": %u, \"status\": \"%s\", \"epoch\": %" PRIu64 "}",
                    i ? ", " : "", i, slot_status_name(r->slot_status[i]), r->slot_epoch[i]);
        fprintf(out, "],\n");
    }
    fprintf(out, "  \"live_writer\": %s, \"table_checked\": %s,\n",
            r->live_writer ? "true" : "false", r->table_checked ? "true" : "false");
    fprintf(out, "  \"walk\": {\"headers\": %" PRIu64 ", \"reachable_objects\": %" PRIu64
                 ", \"reachable_bytes\": %" PRIu64 ", \"references\": %" PRIu64
                 ", \"table_live\": %" PRIu64 ", \"table_free\": %" PRIu64
                 ", \"table_never_used\": %" PRIu64 ", \"table_only\": %" PRIu64 "},\n",
            r->headers_walked, r->reachable_objects, r->reachable_bytes, r->references,
            r->table_live, r->table_free, r->table_never_used, r->table_only);
    fprintf(out, "  \"damage\": {");
    for (unsigned c = 0; c < GC_CLASS_COUNT; c++) {
        const gc_class_report *cr = &r->cls[c];
        fprintf(out, "%s\n    \"%s\": {\"count\": %" PRIu64 ", \"examples\": [", c ? "," : "",
                gc_class_name(c), cr->count);
        for (unsigned k = 0; k < cr->nexamples; k++) {
            if (k)
                fputs(", ", out);
            gc_json_string(out, cr->examples[k]);
        }
        fputs("]}", out);
    }
    fprintf(out, "\n  },\n");
    if (r->unclean && r->table_checked)
        fprintf(out, "  \"unclean_expected\": {\"counts_differ\": %" PRIu64
                     ", \"would_free\": %" PRIu64 ", \"would_revive\": %" PRIu64 "},\n",
                r->unclean_counts_differ, r->unclean_would_free, r->unclean_would_revive);
    fprintf(out, "  \"notes\": [");
    for (size_t i = 0; i < r->nnotes; i++) {
        if (i)
            fputs(", ", out);
        gc_json_string(out, r->notes[i]);
    }
    fprintf(out, "],\n  \"repair_would\": ");
    json_prediction(out, r);
    fprintf(out, ",\n  \"seconds\": %.6f\n}\n", r->seconds);
}
