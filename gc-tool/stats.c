/*
 * stats.c - `sal-gc stats`: what a heap holds, from the same walk as the
 * check (so the numbers are the committed state, not the table's say-so).
 *
 * Live means reachable from the committed roots; dead bytes are the rest
 * of the committed ranges (released objects, copies left by copy-on-write,
 * padding), which only compaction will give back.
 */
#include <inttypes.h>
#include <string.h>

#include "gc.h"

static const char *state_name(uint32_t s)
{
    return s == SAL_SEGREC_FREE ? "free" : s == SAL_SEGREC_USED ? "used" : "invalid";
}

#define OLDEST_READER_NOTE                                                                   \
    "not knowable offline: readers and sections live in the memory of the process "          \
    "that has the heap open (sal_heap_stats_get(): oldest_section_epoch there)"
#define HOT_COLD_NOTE "not built yet: there is no compaction or hot/cold placement"

static uint64_t used_total(const gc_report *r)
{
    uint64_t n = 0;
    for (uint64_t s = 0; s < r->nseg; s++)
        if (r->segs && r->segs[s].state == SAL_SEGREC_USED)
            n += r->segs[s].used_bytes;
    return n;
}

void gc_print_stats(FILE *out, const gc_report *r)
{
    char b1[32], b2[32], b3[32];
    fprintf(out, "sal-gc stats: %s\n", r->path);
    if (r->op_error || !r->have_slot) {
        fprintf(out, "  error: %s\n",
                r->op_error ? r->op_message : "no usable commit: run `sal-gc check`");
        fprintf(out, r->op_error ? "  exit 8: operational error\n"
                                 : "  exit 4: no statistics without a usable commit\n");
        return;
    }
    const sal_superblock *sb = &r->sb;
    char t[64];
    gc_format_time(r->slot.time_unix_ns, t, sizeof t);
    fprintf(out, "file\n");
    fprintf(out, "  size                 %s (%" PRIu64 " bytes), %s allocated on disk\n",
            gc_bytes_human(r->file_size, b1, sizeof b1), r->file_size,
            gc_bytes_human(r->file_disk_bytes, b2, sizeof b2));
    fprintf(out, "  reserve              %s\n", gc_bytes_human(sb->reserve_bytes, b1, sizeof b1));
    fprintf(out, "  segment size         %s; %" PRIu64 " segments in the commit, %" PRIu64
                 " possible\n",
            gc_bytes_human(sb->segment_bytes, b1, sizeof b1), r->nseg, sb->segment_count);
    fprintf(out, "  ids                  %" PRIu64 " of %" PRIu64 " below the high-water mark\n",
            r->hwm ? r->hwm - 1 : 0, sb->max_objects - 1);
    fprintf(out, "commit\n");
    fprintf(out, "  last commit          epoch %" PRIu64 ", %s (slot %u, %s)\n", r->slot.epoch,
            t, r->slot_index, r->slot.durable ? "durable" : "protect/async");
    fprintf(out, "  durable epoch        %" PRIu64 "\n", r->slot.durable_epoch);
    fprintf(out, "  closed cleanly       %s\n",
            r->live_writer ? "no (open for writing now)" : r->slot.clean ? "yes" : "no");
    fprintf(out, "  oldest reader        %s\n", OLDEST_READER_NOTE);
    fprintf(out, "  hot/cold split       %s\n", HOT_COLD_NOTE);
    uint64_t used = used_total(r);
    uint64_t live = r->reachable_bytes;
    fprintf(out, "objects\n");
    fprintf(out, "  live (reachable)     %" PRIu64 " objects, %s\n", r->reachable_objects,
            gc_bytes_human(live, b1, sizeof b1));
    fprintf(out, "  table                %" PRIu64 " live, %" PRIu64 " free, %" PRIu64
                 " never used entries\n",
            r->table_live, r->table_free, r->table_never_used);
    fprintf(out, "  committed headers    %" PRIu64 "\n", r->headers_walked);
    fprintf(out, "  dead bytes           %s in committed ranges\n",
            gc_bytes_human(used > live ? used - live : 0, b1, sizeof b1));
    if (live)
        fprintf(out, "  space amplification  %.2fx (file size / live bytes); %.2fx (committed "
                     "bytes / live bytes)\n",
                (double)r->file_size / (double)live, (double)used / (double)live);
    else
        fprintf(out, "  space amplification  undefined (no live bytes)\n");
    fprintf(out, "roots\n");
    unsigned nroots = 0;
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        const gc_root_info *ri = &r->roots[k];
        if (ri->id == SAL_NULL_ID)
            continue;
        nroots++;
        if (ri->resolved)
            fprintf(out, "  root %-2u  id %" PRIu32 "/%" PRIu32 "  type %u, %" PRIu64
                         " bytes, %u children\n",
                    k, sal_id_index(ri->id), sal_id_gen(ri->id), ri->type, ri->size_bytes,
                    ri->nrefs);
        else
            fprintf(out, "  root %-2u  id %" PRIu32 "/%" PRIu32 "  names no committed object\n",
                    k, sal_id_index(ri->id), sal_id_gen(ri->id));
    }
    if (!nroots)
        fprintf(out, "  (all %u roots empty)\n", SAL_ROOT_COUNT);
    fprintf(out, "segments (live = reachable from the roots)\n");
    fprintf(out, "  %6s  %-5s  %10s  %10s  %10s  %9s  %9s\n", "seg", "state", "used", "live",
            "dead", "objects", "headers");
    for (uint64_t s = 0; s < r->nseg && r->segs; s++) {
        const gc_segment_stats *g = &r->segs[s];
        if (g->state != SAL_SEGREC_USED && g->used_bytes == 0 && g->headers == 0)
            continue;
        uint64_t dead = g->used_bytes > g->reachable_bytes ? g->used_bytes - g->reachable_bytes : 0;
        fprintf(out, "  %6" PRIu64 "  %-5s  %10s  %10s  %10s  %9" PRIu64 "  %9" PRIu64 "\n", s,
                state_name(g->state), gc_bytes_human(g->used_bytes, b1, sizeof b1),
                gc_bytes_human(g->reachable_bytes, b2, sizeof b2),
                gc_bytes_human(dead, b3, sizeof b3), g->reachable_objects, g->headers);
    }
    uint64_t dmg = gc_damage_total(r);
    if (dmg)
        fprintf(out, "note: the walk found %" PRIu64 " problem(s)%s: run `sal-gc check %s`\n",
                dmg, r->unclean ? " (the heap was not closed cleanly)" : "", r->path);
}

void gc_print_stats_json(FILE *out, const gc_report *r)
{
    fprintf(out, "{\n  \"tool\": \"sal-gc\", \"version\": \"%s\", \"command\": \"stats\",\n",
            GC_VERSION);
    fprintf(out, "  \"path\": ");
    gc_json_string(out, r->path);
    fprintf(out, ",\n  \"error\": ");
    if (r->op_error || !r->have_slot)
        gc_json_string(out, r->op_error ? r->op_message : "no usable commit");
    else
        fputs("null", out);
    if (r->op_error || !r->have_slot) {
        fprintf(out, "\n}\n");
        return;
    }
    const sal_superblock *sb = &r->sb;
    uint64_t used = used_total(r);
    uint64_t live = r->reachable_bytes;
    char t[64];
    gc_format_time(r->slot.time_unix_ns, t, sizeof t);
    fprintf(out, ",\n  \"file_bytes\": %" PRIu64 ", \"disk_bytes\": %" PRIu64
                 ", \"reserve_bytes\": %" PRIu64 ", \"segment_bytes\": %" PRIu64
                 ", \"segments_committed\": %" PRIu64 ", \"segment_count\": %" PRIu64
                 ", \"ids_used\": %" PRIu64 ", \"max_objects\": %" PRIu64 ",\n",
            r->file_size, r->file_disk_bytes, sb->reserve_bytes, sb->segment_bytes, r->nseg,
            sb->segment_count, r->hwm ? r->hwm - 1 : 0, sb->max_objects - 1);
    fprintf(out, "  \"commit_epoch\": %" PRIu64 ", \"commit_time_unix_ns\": %" PRIu64
                 ", \"commit_time\": \"%s\", \"commit_slot\": %u, \"commit_durable\": %s, "
                 "\"durable_epoch\": %" PRIu64 ", \"clean\": %s, \"live_writer\": %s,\n",
            r->slot.epoch, r->slot.time_unix_ns, t, r->slot_index,
            r->slot.durable ? "true" : "false", r->slot.durable_epoch,
            (r->slot.clean && !r->live_writer) ? "true" : "false",
            r->live_writer ? "true" : "false");
    fprintf(out, "  \"oldest_reader\": null, \"oldest_reader_note\": \"%s\",\n",
            OLDEST_READER_NOTE);
    fprintf(out, "  \"hot_cold\": null, \"hot_cold_note\": \"%s\",\n", HOT_COLD_NOTE);
    fprintf(out, "  \"live_objects\": %" PRIu64 ", \"live_bytes\": %" PRIu64
                 ", \"committed_bytes\": %" PRIu64 ", \"dead_bytes\": %" PRIu64
                 ", \"table_live\": %" PRIu64 ", \"table_free\": %" PRIu64
                 ", \"table_never_used\": %" PRIu64 ", \"headers\": %" PRIu64 ",\n",
            r->reachable_objects, live, used, used > live ? used - live : 0, r->table_live,
            r->table_free, r->table_never_used, r->headers_walked);
    if (live)
        fprintf(out, "  \"space_amplification\": %.4f, \"committed_amplification\": %.4f,\n",
                (double)r->file_size / (double)live, (double)used / (double)live);
    else
        fprintf(out, "  \"space_amplification\": null, \"committed_amplification\": null,\n");
    fprintf(out, "  \"roots\": [");
    int first = 1;
    for (unsigned k = 0; k < SAL_ROOT_COUNT; k++) {
        const gc_root_info *ri = &r->roots[k];
        if (ri->id == SAL_NULL_ID)
            continue;
        fprintf(out, "%s\n    {\"root\": %u, \"id\": %" PRIu64 ", \"index\": %" PRIu32
                     ", \"generation\": %" PRIu32 ", \"resolved\": %s",
                first ? "" : ",", k, ri->id, sal_id_index(ri->id), sal_id_gen(ri->id),
                ri->resolved ? "true" : "false");
        if (ri->resolved)
            fprintf(out, ", \"type\": %u, \"size_bytes\": %" PRIu64 ", \"nrefs\": %u", ri->type,
                    ri->size_bytes, ri->nrefs);
        fputc('}', out);
        first = 0;
    }
    fprintf(out, "%s],\n  \"segments\": [", first ? "" : "\n  ");
    first = 1;
    for (uint64_t s = 0; s < r->nseg && r->segs; s++) {
        const gc_segment_stats *g = &r->segs[s];
        uint64_t dead = g->used_bytes > g->reachable_bytes ? g->used_bytes - g->reachable_bytes : 0;
        fprintf(out, "%s\n    {\"segment\": %" PRIu64 ", \"state\": \"%s\", \"used_bytes\": %"
                     PRIu64 ", \"live_bytes\": %" PRIu64 ", \"dead_bytes\": %" PRIu64
                     ", \"live_objects\": %" PRIu64 ", \"headers\": %" PRIu64
                     ", \"recorded_live_bytes\": %" PRIu64 "}",
                first ? "" : ",", s, state_name(g->state), g->used_bytes, g->reachable_bytes,
                dead, g->reachable_objects, g->headers, g->recorded_live_bytes);
        first = 0;
    }
    fprintf(out, "%s],\n  \"problems_found\": %" PRIu64 "\n}\n", first ? "" : "\n  ",
            gc_damage_total(r));
}
