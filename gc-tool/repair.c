/*
 * repair.c - `sal-gc repair`: make a heap sound with the heap's own
 * machinery, then fix the little the library leaves.
 *
 * The repair proper is the library's: sal_heap_open with SAL_OPEN_REPAIR
 * recovers even a clean heap, rebuilding every object's location from the
 * committed segments, every count from the committed roots, freeing what
 * nothing reaches and rebuilding the segment records, and writes the result
 * as a durable commit (slot last); sal_heap_close writes the clean commit.
 * A crash anywhere in between leaves the previous commit or the repaired
 * one, never a mix, and the heap is then unclean: a second repair fixes it
 * (the library builds the new table apart and writes it over the heap's at
 * the end; recover.c).
 *
 * What the library leaves in place, sal-gc fixes afterwards with single
 * 8-byte (or one-slot) writes, each of which leaves a consistent heap
 * before and after it (so a crash between two is harmless), under an
 * exclusive lock:
 *  - a child slot naming no committed object (recovery already ignores it)
 *    is set to the null id;
 *  - the dead tail of a committed range behind a damaged header (nothing
 *    lives there once the library's sweep stopped at it) becomes padding;
 *  - an invalid volatile commit slot (open ignores it) is emptied.
 *
 * Two paths:
 *  - a heap that was closed cleanly is checked first: nothing found,
 *    nothing written (exit 0);
 *  - a heap that was not closed cleanly must be recovered anyway: it is
 *    repaired at once (as fast as the library's recovery), and checked
 *    afterwards only if the library's report shows damage.  --check-first
 *    checks it before, which refuses a repair that would lose objects.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "heapfile.h"
#include "os.h"

/* Tests: SAL_GC_TEST_KILL=after-open|after-first-fix kills the repair at
 * that point, to show that a second repair finishes the job. */
static void test_kill_point(const char *point)
{
    const char *want = getenv("SAL_GC_TEST_KILL");
    if (want && strcmp(want, point) == 0) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

/* Tests: SAL_GC_TEST_FAIL=remember-table|restore-generations makes that
 * step fail as an I/O error would, to show what the user is told. */
static int test_fail_point(const char *point)
{
    const char *want = getenv("SAL_GC_TEST_FAIL");
    return want && strcmp(want, point) == 0;
}

/* The object table, mapped read-only: [0, hwm) entries.  NULL on error. */
static const uint64_t *map_table(int fd, uint64_t table_offset, uint64_t hwm)
{
    if (hwm == 0)
        return NULL;
    void *p = mmap(NULL, (size_t)(hwm * 8), PROT_READ, MAP_SHARED, fd, (off_t)table_offset);
    if (p == MAP_FAILED)
        return NULL;
    (void)madvise(p, (size_t)(hwm * 8), MADV_SEQUENTIAL);
    return p;
}

/* What repair needs to remember of the table before the library rewrites
 * it: the free entries and their generations (few, usually), and how many
 * entries were live. */
typedef struct free_gen {
    uint32_t index, gen;
} free_gen;

typedef struct table_memory {
    free_gen *v;
    size_t n, cap;
    uint64_t live;
    int ok;
    int err; /* why not ok: an errno value */
} table_memory;

static void remember_table(const char *path, uint64_t table_offset, uint64_t hwm,
                           table_memory *m)
{
    memset(m, 0, sizeof *m);
    m->err = EIO;
    if (test_fail_point("remember-table"))
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        m->err = errno;
        return;
    }
    const uint64_t *t = map_table(fd, table_offset, hwm);
    m->err = errno;
    close(fd);
    if (!t)
        return;
    m->ok = 1;
    for (uint64_t i = 1; i < hwm; i++) {
        uint64_t e = t[i];
        if (!(e & SAL_ENTRY_FREE)) {
            m->live += sal_entry_rc(e) != 0;
            continue;
        }
        if (m->n == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 1024;
            free_gen *p = realloc(m->v, cap * sizeof *p);
            if (!p) {
                m->ok = 0;
                m->err = ENOMEM;
                break;
            }
            m->v = p;
            m->cap = cap;
        }
        m->v[m->n++] = (free_gen){(uint32_t)i, sal_entry_gen(e)};
    }
    munmap((void *)t, (size_t)(hwm * 8));
}

/*
 * The library's repair forgets every entry and takes each free entry's
 * generation from the newest header its sweep finds for the index; when the
 * newest generation handed out never reached a committed range (its object
 * died before a commit, or its segment was reused), the entry goes back to
 * an older generation, and ids handed out before could be handed out
 * again (a stale id would name a new object instead of failing with
 * SAL_ESTALE).  Put back the generation a free entry had before the repair
 * where the repair lowered it.  Each is one 8-byte write of a free entry
 * (same location, newer generation): harmless if interrupted.  Returns the
 * number put back, or -1 after saying on `out` which step failed and what
 * it means (the library's repair is done by then and cannot be undone).
 */
static long restore_generations(const char *path, uint64_t table_offset, uint64_t hwm,
                                const table_memory *m, FILE *out)
{
    const char *step = "open";
    int err = 0;
    long fixed = 0;
    int fd = test_fail_point("restore-generations") ? (errno = EIO, -1)
                                                     : open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err = errno;
        goto failed;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        step = "lock (a process opened the heap since the repair)";
        err = errno;
        goto failed;
    }
    const uint64_t *t = map_table(fd, table_offset, hwm);
    if (!t) {
        step = "map the table";
        err = errno;
        goto failed;
    }
    step = "write";
    for (size_t k = 0; k < m->n && !err; k++) {
        uint32_t i = m->v[k].index;
        uint64_t e = t[i];
        if (!(e & SAL_ENTRY_FREE))
            continue;
        uint32_t now = sal_entry_gen(e);
        if (!sal_gen_newer(m->v[k].gen, now))
            continue;
        uint64_t fixed_e = sal_entry_make_free(sal_entry_loc(e), m->v[k].gen);
        err = sal_os_pwrite(fd, &fixed_e, 8, table_offset + 8ull * i);
        fixed++;
    }
    munmap((void *)t, (size_t)(hwm * 8));
    if (!err && fixed && fsync(fd) != 0) {
        step = "fsync";
        err = errno;
    }
    if (err)
        goto failed;
    close(fd);
    if (fixed)
        fprintf(out, "  restored the generation of %ld free table entries that the library's "
                     "repair had lowered (so that no released id is handed out again)\n",
                fixed);
    return fixed;
failed:
    if (fd >= 0)
        close(fd);
    fprintf(out, "  FAILED to check the generations of the free table entries after the "
                 "library's repair (%s: %s): the rest of the repair goes on, but if it "
                 "lowered any, ids released before it can be handed out again, and a stale "
                 "id kept outside the heap would then name a new object instead of failing "
                 "with SAL_ESTALE (exit 8)\n", step, strerror(err ? err : EIO));
    return -1;
}

/* Before the library's repair: the table's free entries must be known, or
 * a generation the repair lowered could not be put back.  Returns 0 (go
 * on; with --force even without them), or the exit code after saying why
 * nothing was written. */
static int refuse_unless_remembered(const table_memory *m, int force, FILE *out)
{
    if (m->ok)
        return 0;
    if (force) {
        fprintf(out, "  warning: could not read the object table before the repair (%s); "
                     "going on (--force): a generation the library's repair lowers would "
                     "stay lowered\n", strerror(m->err));
        return 0;
    }
    fprintf(out, "  REFUSED: could not read the object table before the repair (%s); "
                 "without it a generation the library's repair lowers could not be put "
                 "back.  Nothing was written; `sal-gc repair --force` repairs anyway.\n",
            strerror(m->err));
    return GC_EXIT_OPERATIONAL;
}

/* After the library's repair: put the generations back (if they were
 * read).  Returns 0, or -1 after saying what failed. */
static int generations_after_repair(const char *path, uint64_t table_offset, uint64_t hwm,
                                    const table_memory *m, FILE *out)
{
    if (!m->ok)
        return 0; /* --force without them: said before */
    return restore_generations(path, table_offset, hwm, m, out) < 0 ? -1 : 0;
}

static void print_recovery(FILE *out, const sal_recovery_report *rr)
{
    fprintf(out, "  library recovery: %s in %.3f s: %" PRIu64 " objects (%" PRIu64 " bytes) "
                 "live, %" PRIu64 " ids were live before; %" PRIu64 " headers swept, %" PRIu64
                 " damaged segment(s), %" PRIu64 " dangling reference(s), %" PRIu64
                 " root(s) emptied\n",
            rr->recovered ? "done" : "not run", rr->seconds, rr->objects_live, rr->bytes_live,
            rr->ids_live_before, rr->headers_swept, rr->damaged_headers, rr->dangling_refs,
            rr->roots_cleared);
}

/* The library's repair: open with SAL_OPEN_REPAIR, close.  Returns 0, or
 * an exit code. */
static int library_repair(const char *path, FILE *out, sal_recovery_report *rr)
{
    sal_options opt;
    sal_options_init(&opt);
    opt.flags = SAL_OPEN_REPAIR;
    opt.ready_segments = 0; /* no provider thread: nothing will allocate */
    sal_heap *h = NULL;
    int err = sal_heap_open(path, &opt, &h);
    if (err) {
        fprintf(out, "  the library's repair failed to open the heap: %s (%d)\n",
                sal_strerror(err), err);
        /* Locked, out of memory or a system error: operational (exit 8);
         * a heap the library finds damaged: uncorrected (exit 4). */
        return err == SAL_ELOCKED || err == SAL_ENOMEM || err > 0 ? GC_EXIT_OPERATIONAL
                                                                  : GC_EXIT_UNCORRECTED;
    }
    (void)sal_heap_recovery_report(h, rr);
    test_kill_point("after-open");
    err = sal_heap_close(h);
    if (err) {
        fprintf(out, "  closing the repaired heap failed: %s (%d); the repair's commit may "
                     "not be clean: run repair again\n",
                sal_strerror(err), err);
        return GC_EXIT_UNCORRECTED;
    }
    print_recovery(out, rr);
    return 0;
}

/* Apply the fixes a check recorded.  Returns the number applied, or -1
 * (message printed) when the heap could not be locked or written. */
static long apply_fixes(const char *path, const gc_report *r, FILE *out)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        fprintf(out, "  cannot open %s for writing: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(out, "  cannot lock %s: %s (another process opened it)\n", path,
                strerror(errno));
        close(fd);
        return -1;
    }
    long applied = 0;
    int err = 0;
    for (size_t k = 0; k < r->nfixes && !err; k++) {
        const gc_fix *f = &r->fixes[k];
        if (f->kind == GC_FIX_CHILD_SLOT) {
            uint64_t cur;
            if ((err = sal_os_pread(fd, &cur, 8, f->offset)))
                break;
            if (cur != f->old_value)
                continue; /* changed since the check: leave it */
            uint64_t zero = 0;
            if ((err = sal_os_pwrite(fd, &zero, 8, f->offset)))
                break;
            if (applied < 8 || k + 1 == r->nfixes)
                fprintf(out, "  cleared child slot %u of %" PRIu32 "/%" PRIu32 " (it named %"
                             PRIu32 "/%" PRIu32 ", which no committed object carries)\n",
                        f->slot, sal_id_index(f->parent), sal_id_gen(f->parent),
                        sal_id_index(f->old_value), sal_id_gen(f->old_value));
        } else if (f->kind == GC_FIX_PAD) {
            /* The damaged word as the check saw it, or a writer has been
             * there since: leave the range. */
            uint64_t cur, zero = 0;
            if ((err = sal_os_pread(fd, &cur, 8, f->offset)))
                break;
            if (cur != f->old_value)
                continue;
            if ((err = sal_os_pwrite(fd, &zero, 8, f->offset)))
                break;
            for (uint64_t p = (f->offset + SAL_PAGE_BYTES) & ~(uint64_t)(SAL_PAGE_BYTES - 1);
                 p < f->length && !err; p += SAL_PAGE_BYTES)
                err = sal_os_pwrite(fd, &zero, 8, p);
            fprintf(out, "  turned the dead, damaged range [0x%" PRIx64 ", 0x%" PRIx64 ") into "
                         "padding\n",
                    f->offset, f->length);
        } else if (f->kind == GC_FIX_SLOT) {
            /* The slot the check judged (by every rule of the library's
             * open, some of which sal_slot_valid alone does not test: its
             * place, its segment-table copy), or a writer has been there
             * since: leave it. */
            sal_commit_slot cur;
            if ((err = sal_os_pread(fd, &cur, sizeof cur, f->offset)))
                break;
            if (sal_crc32c(0, &cur, sizeof cur) != f->old_value)
                continue;
            sal_commit_slot zero;
            memset(&zero, 0, sizeof zero);
            if ((err = sal_os_pwrite(fd, &zero, sizeof zero, f->offset)))
                break;
            fprintf(out, "  emptied invalid commit slot %u\n", f->slot);
        }
        applied++;
        if (applied == 1)
            test_kill_point("after-first-fix");
    }
    if (!err && fsync(fd) != 0)
        err = errno;
    close(fd);
    if (err) {
        fprintf(out, "  writing a fix failed: %s\n", strerror(err));
        return -1;
    }
    if (applied > 8)
        fprintf(out, "  (%ld fixes in all)\n", applied);
    return applied;
}

/* A check's report, as text or (--json) as JSON. */
static void print_report(FILE *out, const gc_options *o, const gc_report *r)
{
    if (o->json)
        gc_print_check_json(out, r);
    else
        gc_print_check(out, r, NULL);
}

/* After the library's repair: check, apply sal-gc's fixes, check again.
 * Returns the exit code. */
static int finish(const char *path, const gc_options *o, FILE *out)
{
    for (int round = 0; round < 4; round++) {
        gc_report r;
        gc_report_init(&r, o);
        int code = gc_check_path(path, o, &r);
        if (code == GC_EXIT_CLEAN) {
            fprintf(out, "  check after repair: clean\n");
            gc_report_free(&r);
            return GC_EXIT_CORRECTED;
        }
        if (code == GC_EXIT_OPERATIONAL || r.nfixes == 0 ||
            r.cls[GC_UNCLEAN_SHUTDOWN].count) {
            fprintf(out, "  check after repair: damage remains\n");
            print_report(out, o, &r);
            gc_report_free(&r);
            return code == GC_EXIT_OPERATIONAL ? code : GC_EXIT_UNCORRECTED;
        }
        long n = apply_fixes(path, &r, out);
        gc_report_free(&r);
        if (n < 0)
            return GC_EXIT_OPERATIONAL;
        if (n == 0)
            break;
    }
    gc_report r;
    gc_report_init(&r, o);
    int code = gc_check_path(path, o, &r);
    if (code != GC_EXIT_CLEAN) {
        fprintf(out, "  check after repair: damage remains\n");
        print_report(out, o, &r);
    }
    gc_report_free(&r);
    return code == GC_EXIT_CLEAN ? GC_EXIT_CORRECTED
           : code == GC_EXIT_OPERATIONAL ? code
                                         : GC_EXIT_UNCORRECTED;
}

/* The library's repair in private memory (a read-only open with
 * SAL_OPEN_REPAIR): what it would find, with nothing written.  Returns 0,
 * or the open's error. */
static int library_repair_dry(const char *path, sal_recovery_report *rr)
{
    sal_options opt;
    sal_options_init(&opt);
    opt.flags = SAL_OPEN_READONLY | SAL_OPEN_REPAIR;
    opt.ready_segments = 0;
    sal_heap *h = NULL;
    memset(rr, 0, sizeof *rr);
    int err = sal_heap_open(path, &opt, &h);
    if (err)
        return err;
    (void)sal_heap_recovery_report(h, rr);
    (void)sal_heap_close(h);
    return 0;
}

/* --dry-run: that, compared with the check's prediction. */
static void library_dry_run(const char *path, const gc_report *r, FILE *out)
{
    sal_recovery_report rr;
    int err = library_repair_dry(path, &rr);
    if (err) {
        fprintf(out, "  the library's dry run (read-only open with SAL_OPEN_REPAIR) failed: "
                     "%s (%d)\n", sal_strerror(err), err);
        return;
    }
    fprintf(out, "  the library's dry run (read-only open with SAL_OPEN_REPAIR, in private "
                 "memory):\n  ");
    print_recovery(out, &rr);
    uint64_t damaged = 0;
    for (uint64_t s = 0; s < r->nseg && r->segs; s++)
        damaged += r->segs[s].damaged_at != UINT64_MAX;
    const gc_prediction *p = &r->predict;
    if (!rr.recovered)
        fprintf(out, "  NOTE: the library did not recover on a read-only open with "
                     "SAL_OPEN_REPAIR\n");
    else if (rr.objects_live == p->objects_live && rr.bytes_live == p->bytes_live &&
             rr.dangling_refs == p->dangling_refs && rr.roots_cleared == p->roots_cleared &&
             rr.damaged_headers == damaged)
        fprintf(out, "  it agrees with sal-gc's prediction (objects, bytes, dangling "
                     "references, roots, damaged segments)\n");
    else
        fprintf(out, "  it DIFFERS from sal-gc's prediction: objects %" PRIu64 " vs %" PRIu64
                     ", bytes %" PRIu64 " vs %" PRIu64 ", dangling %" PRIu64 " vs %" PRIu64
                     ", roots %" PRIu64 " vs %" PRIu64 ", damaged segments %" PRIu64
                     " vs %" PRIu64 "\n",
                rr.objects_live, p->objects_live, rr.bytes_live, p->bytes_live,
                rr.dangling_refs, p->dangling_refs, rr.roots_cleared, p->roots_cleared,
                rr.damaged_headers, damaged);
}

int gc_repair_path(const char *path, const gc_options *o, const gc_repair_options *ro,
                   FILE *out)
{
    fprintf(out, "sal-gc repair%s: %s\n", ro->dry_run ? " --dry-run" : "", path);

    /* A look at the metadata only: is it a heap, can the library open it,
     * was it closed cleanly? */
    gc_report meta;
    gc_report_init(&meta, o);
    gc_heapfile hf;
    int rc = gc_heapfile_open(path, o, &meta, &hf);
    int unclean = meta.unclean;
    uint64_t hwm = hf.hwm, table_offset = hf.sb.table_offset, epoch = hf.slot.epoch;
    int refuses = hf.library_refuses;
    gc_heapfile_close(&hf);
    if (rc != 0 || refuses) {
        /* Not a heap, unreadable, refused, or damaged past what the library
         * opens: the check says which. */
        print_report(out, o, &meta);
        int code = meta.op_error ? GC_EXIT_OPERATIONAL : GC_EXIT_UNCORRECTED;
        if (!meta.op_error)
            fprintf(out, "  repair cannot run: the library refuses this heap (sal-gc does not "
                         "rebuild a superblock, commit slots or a segment table)\n");
        gc_report_free(&meta);
        return code;
    }
    gc_report_free(&meta);

    /* An unclean heap is repaired at once, unless the library's repair
     * (tried first in private memory) would cut references: a crash alone
     * never does (recovery gives back the last commit whole); damage does.
     * A root it would empty loses all that the root reached, which needs
     * --force as on a clean heap; other dangling references go through
     * the check first, as with --check-first. */
    int at_once = unclean && !ro->dry_run && !ro->check_first;
    sal_recovery_report dry;
    if (at_once && !ro->force && library_repair_dry(path, &dry) == 0 && dry.roots_cleared) {
        fprintf(out, "  REFUSED: the heap was not closed cleanly, and is damaged too: the "
                     "library's repair would empty %" PRIu64 " root(s) (and leave %" PRIu64
                     " dangling reference(s)), losing what they reach.  `sal-gc check` shows "
                     "the damage; copy the heap first; `sal-gc repair --force` repairs "
                     "anyway.\n",
                (uint64_t)dry.roots_cleared, (uint64_t)dry.dangling_refs);
        return GC_EXIT_UNCORRECTED;
    }
    if (at_once && !ro->force && dry.dangling_refs)
        at_once = 0; /* through the check first */
    if (at_once) {
        fprintf(out, "  the heap was not closed cleanly: repairing it at once (--check-first "
                     "checks it before)\n");
        table_memory before;
        remember_table(path, table_offset, hwm, &before);
        int code = refuse_unless_remembered(&before, ro->force, out);
        if (code) {
            free(before.v);
            return code;
        }
        sal_recovery_report rr;
        memset(&rr, 0, sizeof rr);
        code = library_repair(path, out, &rr);
        int unrestored = !code && generations_after_repair(path, table_offset, hwm, &before, out);
        free(before.v);
        if (code)
            return code;
        if (unrestored) {
            /* sal-gc's own fixes still apply; the exit says what failed. */
            (void)finish(path, o, out);
            return GC_EXIT_OPERATIONAL;
        }
        fprintf(out, "  corrected: the unclean shutdown (back to commit %" PRIu64 "); "
                     "live ids %" PRIu64 " before, %" PRIu64 " after\n",
                epoch, before.live, rr.objects_live);
        /* Torn volatile slots are invisible to the library's report. */
        gc_report m2;
        gc_report_init(&m2, o);
        int torn = 0;
        if (gc_heapfile_open(path, o, &m2, &hf) == 0)
            for (unsigned i = 2; i < SAL_SLOT_COUNT; i++)
                torn |= m2.slot_status[i] == GC_SLOT_INVALID;
        gc_heapfile_close(&hf);
        gc_report_free(&m2);
        if (rr.damaged_headers || rr.dangling_refs || rr.roots_cleared ||
            rr.located_by_table || torn)
            return finish(path, o, out);
        return GC_EXIT_CORRECTED;
    }

    gc_report r;
    gc_report_init(&r, o);
    int code = gc_check_path(path, o, &r);
    if (code == GC_EXIT_OPERATIONAL) {
        print_report(out, o, &r);
        gc_report_free(&r);
        return code;
    }
    if (code == GC_EXIT_CLEAN) {
        fprintf(out, "  the heap is clean: nothing to repair\n");
        gc_report_free(&r);
        return GC_EXIT_CLEAN;
    }
    print_report(out, o, &r);
    if (ro->dry_run) {
        library_dry_run(path, &r, out);
        fprintf(out, "  dry run: nothing written (exit 4: errors left uncorrected)\n");
        gc_report_free(&r);
        return GC_EXIT_UNCORRECTED;
    }
    if (r.predict.objects_lost && !ro->force) {
        fprintf(out, "  REFUSED: the repair would lose %" PRIu64 " reachable object(s) that "
                     "the object table still locates (after a damaged header, or outside a "
                     "segment record's range); the library's repair sweeps the segments and "
                     "cannot see them.  Copy the heap first; `sal-gc repair --force` repairs "
                     "anyway.\n", r.predict.objects_lost);
        gc_report_free(&r);
        return GC_EXIT_UNCORRECTED;
    }
    if (!gc_library_would_change(&r)) {
        /* Two commits that change nothing would only age the heap: go
         * straight to sal-gc's own fixes, if any. */
        fprintf(out, "  the library's repair would change nothing here: not run\n");
        gc_report_free(&r);
        return finish(path, o, out);
    }
    gc_report_free(&r);
    table_memory before;
    remember_table(path, table_offset, hwm, &before);
    sal_recovery_report rr;
    memset(&rr, 0, sizeof rr);
    if ((code = refuse_unless_remembered(&before, ro->force, out)) ||
        (code = library_repair(path, out, &rr))) {
        free(before.v);
        return code;
    }
    int unrestored = generations_after_repair(path, table_offset, hwm, &before, out);
    free(before.v);
    code = finish(path, o, out); /* sal-gc's own fixes, either way */
    return unrestored ? GC_EXIT_OPERATIONAL : code;
}
