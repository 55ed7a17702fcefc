/*
 * main.c - the sal-gc command line.
 *
 *   sal-gc check  [--readonly-look] [--json] HEAP
 *   sal-gc repair [--dry-run] [--force] [--check-first] [--progress|--no-progress] HEAP
 *   sal-gc stats  [--json] [--readonly-look] HEAP
 *
 * Exit codes follow fsck(8): 0 clean, 1 errors corrected, 4 errors left
 * uncorrected, 8 operational error, 16 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gc.h"

#define GC_EXIT_USAGE 16

static const char *prog = "sal-gc";

static void usage_main(FILE *out)
{
    fprintf(out,
            "usage: %s COMMAND [OPTIONS] HEAP\n"
            "       %s --help | --version\n"
            "\n"
            "Check, repair and describe a sal heap file (stop the world: the heap must not\n"
            "be open for writing).\n"
            "\n"
            "commands:\n"
            "  check    read-only: walk the heap from its committed roots and report damage\n"
            "           by class (unclean-shutdown, unreachable-object, refcount-mismatch,\n"
            "           out-of-range, overlapping-objects, header-damage,\n"
            "           segment-accounting, dangling-child)\n"
            "  repair   rebuild counts, free what nothing reaches, rebuild segment records,\n"
            "           and commit atomically (the library's SAL_OPEN_REPAIR), then fix what\n"
            "           the library leaves (dangling child slots, dead damaged ranges)\n"
            "  stats    objects, live and dead bytes per segment, space amplification,\n"
            "           roots, the last commit\n"
            "  help CMD the options of one command\n"
            "\n"
            "exit status: 0 clean, 1 errors corrected, 4 errors left uncorrected,\n"
            "             8 operational error (not a heap, unreadable, refused), 16 usage\n"
            "\n"
            "Ids are printed as INDEX/GENERATION.  The manual is docs/sal-gc.md.\n",
            prog, prog);
}

static void usage_check(FILE *out)
{
    fprintf(out,
            "usage: %s check [--readonly-look] [--json] [--progress|--no-progress]\n"
            "                [--examples N] HEAP\n"
            "\n"
            "Read-only.  Checks the superblock, the four commit slots, the current slot's\n"
            "segment table, every committed range header by header in address order, and\n"
            "the object table against the references found from the committed roots.\n"
            "\n"
            "  --readonly-look  go on even if a live process holds the heap for writing\n"
            "                   (normally refused): only the last commit is checked, not\n"
            "                   the object table, and the result cannot be exact\n"
            "  --json           one JSON object on stdout\n"
            "  --progress       progress on stderr (default: when stderr is a terminal)\n"
            "  --no-progress    no progress\n"
            "  --examples N     examples kept per damage class (default 5, at most 16)\n"
            "\n"
            "exit: 0 clean, 4 damage found (including an unclean shutdown), 8 error\n",
            prog);
}

static void usage_repair(FILE *out)
{
    fprintf(out,
            "usage: %s repair [--dry-run] [--force] [--check-first] [--progress|--no-progress]\n"
            "       HEAP\n"
            "\n"
            "Stop-the-world repair with the library's own recovery (SAL_OPEN_REPAIR):\n"
            "every location rebuilt from the committed segments, every count from the\n"
            "committed roots, what nothing reaches freed, segment records rebuilt, and\n"
            "the result committed atomically.  Then sal-gc clears child slots that name\n"
            "no object, turns dead damaged ranges into padding, empties invalid volatile\n"
            "commit slots, and checks the result.  A crash during a repair leaves a heap\n"
            "that another repair fixes.\n"
            "\n"
            "A clean heap is checked first and left untouched if nothing is wrong.  A heap\n"
            "that was not closed cleanly is repaired at once (it must be recovered anyway).\n"
            "\n"
            "  --dry-run      check, say what repair would do, and run the library's repair\n"
            "                 in private memory to compare; write nothing (exit 0 or 4)\n"
            "  --check-first  check an unclean heap before repairing it too\n"
            "  --force        repair even when reachable objects that only the object table\n"
            "                 still locates would be lost (the library's sweep stops at a\n"
            "                 damaged header), or when the object table could not be read\n"
            "                 before the repair (its free entries' generations), or when an\n"
            "                 unclean heap's repair would empty a root (the library's\n"
            "                 repair, tried first in private memory, cuts what it\n"
            "                 reaches); refused otherwise\n"
            "  --progress     progress on stderr (default: when stderr is a terminal)\n"
            "  --no-progress  no progress\n"
            "\n"
            "exit: 0 nothing to repair, 1 corrected, 4 damage left (or refused), 8 error\n",
            prog);
}

static void usage_stats(FILE *out)
{
    fprintf(out,
            "usage: %s stats [--json] [--readonly-look] [--progress|--no-progress] HEAP\n"
            "\n"
            "Objects and bytes live (reachable from the committed roots) and dead per\n"
            "segment, space amplification (file bytes / live bytes), the roots, the last\n"
            "commit's epoch and time, the durable epoch and the clean flag.  The oldest\n"
            "reader is not knowable offline; the hot/cold split does not exist yet.\n"
            "\n"
            "  --json           one JSON object on stdout\n"
            "  --readonly-look  go on even if a live process holds the heap for writing\n"
            "  --progress       progress on stderr (default: when stderr is a terminal)\n"
            "  --no-progress    no progress\n"
            "\n"
            "exit: 0, 4 if the heap could not be walked, 8 error\n",
            prog);
}

typedef struct cli {
    gc_options o;
    gc_repair_options ro;
    const char *heap;
} cli;

/* Parse the options of `cmd`; returns 0 or an exit code (help: 0 via -1). */
static int parse(int argc, char **argv, const char *cmd, cli *c, void (*usage)(FILE *))
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int is_check = !strcmp(cmd, "check"), is_repair = !strcmp(cmd, "repair"),
            is_stats = !strcmp(cmd, "stats");
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--json") && (is_check || is_stats)) {
            c->o.json = 1;
        } else if (!strcmp(a, "--readonly-look") && (is_check || is_stats)) {
            c->o.readonly_look = 1;
        } else if (!strcmp(a, "--progress")) {
            c->o.progress = 1;
        } else if (!strcmp(a, "--no-progress")) {
            c->o.progress = -1;
        } else if (!strcmp(a, "--examples") && is_check) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s check: --examples needs a value (1..%d)\n", prog,
                        GC_MAX_EXAMPLES);
                return GC_EXIT_USAGE;
            }
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > GC_MAX_EXAMPLES) {
                fprintf(stderr, "%s check: --examples takes 1..%d\n", prog, GC_MAX_EXAMPLES);
                return GC_EXIT_USAGE;
            }
            c->o.max_examples = (unsigned)n;
        } else if (!strcmp(a, "--dry-run") && is_repair) {
            c->ro.dry_run = 1;
        } else if (!strcmp(a, "--force") && is_repair) {
            c->ro.force = 1;
        } else if (!strcmp(a, "--check-first") && is_repair) {
            c->ro.check_first = 1;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !c->heap)
                c->heap = argv[++i];
            if (i + 1 < argc)
                goto bad;
            break;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "%s %s: unknown option %s\n", prog, cmd, a);
            usage(stderr);
            return GC_EXIT_USAGE;
        } else if (!c->heap) {
            c->heap = a;
        } else {
            goto bad;
        }
    }
    if (!c->heap) {
        fprintf(stderr, "%s %s: no HEAP given\n", prog, cmd);
        usage(stderr);
        return GC_EXIT_USAGE;
    }
    return 0;
bad:
    fprintf(stderr, "%s %s: one HEAP only\n", prog, cmd);
    usage(stderr);
    return GC_EXIT_USAGE;
}

/* An operational error goes to stderr too, unless the report, which says
 * it already, is on the same terminal (it was printed twice there). */
static void error_to_stderr(const gc_options *o, const char *message)
{
    if (o->json || !isatty(1) || !isatty(2))
        fprintf(stderr, "%s: %s\n", prog, message);
}

static int cmd_check(cli *c)
{
    gc_report r;
    gc_report_init(&r, &c->o);
    int code = gc_check_path(c->heap, &c->o, &r);
    if (c->o.json)
        gc_print_check_json(stdout, &r);
    else
        gc_print_check(stdout, &r, &c->o);
    if (r.op_error)
        error_to_stderr(&c->o, r.op_message);
    gc_report_free(&r);
    return code;
}

static int cmd_stats(cli *c)
{
    gc_report r;
    gc_report_init(&r, &c->o);
    (void)gc_check_path(c->heap, &c->o, &r);
    if (c->o.json)
        gc_print_stats_json(stdout, &r);
    else
        gc_print_stats(stdout, &r);
    int code = GC_EXIT_CLEAN;
    if (r.op_error) {
        error_to_stderr(&c->o, r.op_message);
        code = GC_EXIT_OPERATIONAL;
    } else if (r.stopped || !r.have_slot) {
        code = GC_EXIT_UNCORRECTED;
    }
    gc_report_free(&r);
    return code;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        usage_main(stderr);
        return GC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("sal-gc %s (sal %d.%d.%d, heap format %u)\n", GC_VERSION, SAL_VERSION_MAJOR,
               SAL_VERSION_MINOR, SAL_VERSION_PATCH, SAL_FORMAT_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help")) {
        const char *what = argc > 2 ? argv[2] : "";
        if (!strcmp(what, "check"))
            usage_check(stdout);
        else if (!strcmp(what, "repair"))
            usage_repair(stdout);
        else if (!strcmp(what, "stats"))
            usage_stats(stdout);
        else if (!*what)
            usage_main(stdout);
        else {
            fprintf(stderr, "%s help: unknown command '%s'\n", prog, what);
            usage_main(stderr);
            return GC_EXIT_USAGE;
        }
        return 0;
    }
    cli c;
    memset(&c, 0, sizeof c);
    gc_options_init(&c.o);
    void (*usage)(FILE *) = !strcmp(cmd, "check")    ? usage_check
                            : !strcmp(cmd, "repair") ? usage_repair
                            : !strcmp(cmd, "stats")  ? usage_stats
                                                     : NULL;
    if (!usage) {
        fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
        usage_main(stderr);
        return GC_EXIT_USAGE;
    }
    int rc = parse(argc - 2, argv + 2, cmd, &c, usage);
    if (rc < 0)
        return 0;
    if (rc)
        return rc;
    if (!strcmp(cmd, "check"))
        return cmd_check(&c);
    if (!strcmp(cmd, "stats"))
        return cmd_stats(&c);
    int code = gc_repair_path(c.heap, &c.o, &c.ro, stdout);
    printf("  exit %d: %s\n", code,
           code == GC_EXIT_CLEAN         ? "nothing to repair"
           : code == GC_EXIT_CORRECTED   ? "errors corrected"
           : code == GC_EXIT_UNCORRECTED ? "errors left uncorrected"
                                         : "operational error");
    return code;
}
