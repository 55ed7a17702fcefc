/*
 * churn_floor.c - the fastest W1 churn any heap whose objects are named
 * through a table could run on this machine, and the same without the
 * table.
 *
 *     churn_floor [-n N] [-w W] [--resolve table|pointer]
 *
 * W1's churn (peer_alloc.c, phase 2) replaces a random object of a working
 * set N times.  A pointer allocator's replacement is a chain of two
 * dependent misses: the slot of the benchmark's array, then the object.
 * A heap that names objects by ids resolved through a table (sal, and the
 * issue asks for it) adds the table entry between them: three.  Whether a
 * gate against a pointer allocator can be met at all depends on what that
 * third miss costs, and no amount of tuning sal's code tells that apart
 * from sal's own instructions.  This program does: it runs the churn with
 * the least work such a heap could do, in plain C, on anonymous memory on
 * 2 MiB pages (sal's segments are mapped with 2 MiB page-table entries),
 * touched before the clock starts (sal's provider prepares segments ahead):
 *
 *   --resolve table    ids as sal's (index, generation), an 8-byte entry
 *                      per id (location and count), a 24-byte header that
 *                      carries the id and is checked, the entry's count
 *                      dropped and the entry freed, the id's next
 *                      generation reused at once (LIFO, as sal does), the
 *                      new object bump-allocated with the same prefetch
 *                      ahead as sal's, its header written, its entry
 *                      published.  No session, no crash rules, no checks
 *                      of damage, no segment accounting beyond one add.
 *   --resolve pointer  the same objects and headers, the array holding
 *                      the header's address: no table (mimalloc's chain).
 *
 * Same sizes (16..256 B), seed and phases as W1; prints the W1 keys of the
 * phases it runs: p2_fill_ns p2_churn_ns checksum.  The checksum equals
 * salbench's and the peers' for the same n and w.  bench/run_alloc.sh
 * runs both next to salbench and the peers (docs/benchmarks.md, W1).
 * This is a measurement of the machine, not a heap: nothing here is
 * persistent or thread-safe.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench_common.h"

#define WL "churn_floor"
#define HEADER_BYTES 24u   /* sizeof(sal_object_header) */
#define PREFETCH_AHEAD 4096 /* SAL_BUMP_PREFETCH_BYTES */
#define ENTRY_LOC_MASK ((1ull << 40) - 1) /* location in 8-byte words */
#define ENTRY_RC_ONE (1ull << 40)
#define SEGMENT_SHIFT 23 /* 8 MiB segments, for the live-bytes add */

typedef struct header {
    uint64_t id;
    uint32_t size_bytes;
    uint16_t nrefs;
    uint8_t type, flags;
    uint32_t birth_epoch, seal;
} header;
_Static_assert(sizeof(header) == HEADER_BYTES, "same header as sal's");

typedef struct floor_heap {
    char *base;          /* the arena: 2 MiB pages, bump-allocated */
    char *bump;
    char *end;
    uint64_t *table;     /* table mode: entry per id index */
    uint64_t *free_ids;  /* table mode: LIFO stack of next generations */
    uint64_t free_len;
    uint64_t id_next;
    int64_t seg_live[4096];
} floor_heap;

static inline size_t pick_size(bench_rng *r)
{
    return 16 + (size_t)bench_rng_below(r, 241); /* as the peer's */
}

static inline uint64_t span_of(uint64_t size)
{
    return (HEADER_BYTES + size + 7) & ~7ull;
}

static void *map_huge(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "%s: mmap of %zu bytes failed\n", WL, bytes);
        exit(1);
    }
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* best effort: THP may be off */
    return p;
}

/* A new object of `size` payload bytes; returns its header. */
static inline header *bump_alloc(floor_heap *f, uint64_t size)
{
    uint64_t span = span_of(size);
    if ((uint64_t)(f->end - f->bump) < span + PREFETCH_AHEAD) {
        fprintf(stderr, "%s: arena exhausted (its size was miscounted)\n", WL);
        exit(1);
    }
    header *h = (header *)f->bump;
    f->bump += span;
    __builtin_prefetch(f->bump + PREFETCH_AHEAD, 1, 3);
    h->size_bytes = (uint32_t)size;
    h->nrefs = 0;
    h->type = 0;
    h->flags = 0;
    h->birth_epoch = 1;
    h->seal = 1;
    f->seg_live[(uint64_t)((char *)h - f->base) >> SEGMENT_SHIFT] += (int64_t)span;
    return h;
}

/* Table mode: allocate under a new or reused id; the slot gets the id. */
static inline uint64_t table_alloc(floor_heap *f, uint64_t size, uint64_t word)
{
    uint64_t id = f->free_len ? f->free_ids[--f->free_len] : f->id_next++;
    header *h = bump_alloc(f, size);
    h->id = id;
    *(uint64_t *)(h + 1) = word;
    f->table[(uint32_t)id] = ((uint64_t)((char *)h - f->base) >> 3) | ENTRY_RC_ONE;
    return id;
}

/* Table mode: resolve, read the first word, release (the count was 1). */
static inline uint64_t table_read_release(floor_heap *f, uint64_t id)
{
    uint64_t *slot = &f->table[(uint32_t)id];
    uint64_t e = *slot;
    header *h = (header *)(f->base + ((e & ENTRY_LOC_MASK) << 3));
    if (__builtin_expect(h->id != id || e < ENTRY_RC_ONE, 0)) {
        fprintf(stderr, "%s: id %llu does not resolve\n", WL, (unsigned long long)id);
        exit(1);
    }
    uint64_t word = *(const uint64_t *)(h + 1);
    *slot = e & ENTRY_LOC_MASK; /* count 0: free */
    f->free_ids[f->free_len++] = id + (1ull << 32); /* next generation */
    f->seg_live[(uint64_t)((char *)h - f->base) >> SEGMENT_SHIFT] -=
        (int64_t)span_of(h->size_bytes);
    return word;
}

/* Pointer mode: the slot holds the header's offset. */
static inline uint64_t pointer_alloc(floor_heap *f, uint64_t size, uint64_t word)
{
    header *h = bump_alloc(f, size);
    h->id = 0;
    *(uint64_t *)(h + 1) = word;
    return (uint64_t)((char *)h - f->base);
}

static inline uint64_t pointer_read_release(floor_heap *f, uint64_t off)
{
    header *h = (header *)(f->base + off);
    uint64_t word = *(const uint64_t *)(h + 1);
    f->seg_live[off >> SEGMENT_SHIFT] -= (int64_t)span_of(h->size_bytes);
    return word;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: churn_floor [-n N] [-w W] [--resolve table|pointer]\n"
            "  W1's fill of W objects (default 1000000) and N random\n"
            "  replacements (default 10000000) with the least work a heap\n"
            "  can do: through an id table (default) or a pointer.\n"
            "  Prints p2_fill_ns p2_churn_ns checksum (W1's keys).\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"resolve", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t n = 10000000, w = 1000000;
    int table_mode = 1, c;
    while ((c = getopt_long(argc, argv, "n:w:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
        case 'w':
            if (bench_parse_count(optarg, c == 'n' ? &n : &w) != 0 || (c == 'w' && !w)) {
                fprintf(stderr, "%s: -%c wants a count%s\n", WL, c, c == 'w' ? " above 0" : "");
                usage(stderr);
                return 2;
            }
            break;
        case 'r':
            if (strcmp(optarg, "table") != 0 && strcmp(optarg, "pointer") != 0) {
                fprintf(stderr, "%s: --resolve wants table or pointer, not '%s'\n", WL, optarg);
                usage(stderr);
                return 2;
            }
            table_mode = strcmp(optarg, "table") == 0;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || w > (1ull << 31)) {
        usage(stderr);
        return 2;
    }

    /* The peer draws phase 1's sizes first: skip them, so that phase 2
     * sees the same sizes and slots as in salbench and the peers. */
    bench_rng r;
    bench_rng_init(&r, PEER_SEED + 0x1000003ULL);
    for (uint64_t i = 0; i < n; i++)
        (void)pick_size(&r);

    /* The arena is touched before the clock starts, as sal's provider
     * prepares segments ahead: a dry run of the same draws says how much
     * of it the phases will use. */
    bench_rng dry = r;
    uint64_t used = 0;
    for (uint64_t i = 0; i < w; i++)
        used += span_of(pick_size(&dry));
    for (uint64_t i = 0; i < n; i++) {
        (void)bench_rng_below(&dry, w);
        used += span_of(pick_size(&dry));
    }
    size_t arena = (size_t)used + PREFETCH_AHEAD + (2u << 20);

    floor_heap f;
    memset(&f, 0, sizeof f);
    if ((arena >> SEGMENT_SHIFT) >= sizeof f.seg_live / sizeof f.seg_live[0]) {
        fprintf(stderr, "%s: -n and -w too large for this measurement\n", WL);
        return 2;
    }
    f.base = map_huge(arena);
    f.bump = f.base;
    f.end = f.base + arena;
    f.id_next = 1;
    if (table_mode) {
        f.table = map_huge((size_t)(w + 2) * sizeof *f.table);
        f.free_ids = map_huge((size_t)(w + 1) * sizeof *f.free_ids);
    }
    uint64_t *slots = malloc((size_t)w * sizeof *slots); /* as the peer's array */
    if (!slots) {
        fprintf(stderr, "%s: out of memory\n", WL);
        return 1;
    }
    memset(f.base, 0, arena);
    if (table_mode) {
        memset(f.table, 0, (size_t)(w + 2) * sizeof *f.table);
        memset(f.free_ids, 0, (size_t)(w + 1) * sizeof *f.free_ids);
    }

    uint64_t chk = 0;
    double t0 = bench_now();
    for (uint64_t i = 0; i < w; i++) {
        uint64_t size = pick_size(&r);
        slots[i] = table_mode ? table_alloc(&f, size, i) : pointer_alloc(&f, size, i);
    }
    double t1 = bench_now();
    if (table_mode) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = bench_rng_below(&r, w);
            chk += table_read_release(&f, slots[j]);
            slots[j] = table_alloc(&f, pick_size(&r), i);
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = bench_rng_below(&r, w);
            chk += pointer_read_release(&f, slots[j]);
            slots[j] = pointer_alloc(&f, pick_size(&r), i);
        }
    }
    double t2 = bench_now();
    for (uint64_t i = 0; i < w; i++) /* the drain, untimed: the checksum */
        chk += table_mode ? table_read_release(&f, slots[i])
                          : pointer_read_release(&f, slots[i]);
    /* Phase 1 writes 0..n-1, read back once: its part of the checksum. */
    chk += n * (n - 1) / 2;
    for (size_t k = 0; k < sizeof f.seg_live / sizeof f.seg_live[0]; k++) {
        if (f.seg_live[k] != 0) {
            fprintf(stderr, "%s: live bytes left after the drain\n", WL);
            return 1;
        }
    }
    printf("bench=alloc alloc=floor_%s threads=1 n=%llu w=%llu p2_fill_ns=%.2f "
           "p2_churn_ns=%.2f checksum=%llu\n",
           table_mode ? "table" : "pointer", (unsigned long long)n, (unsigned long long)w,
           (t1 - t0) * 1e9 / (double)w, (t2 - t1) * 1e9 / (double)n,
           (unsigned long long)chk);
    free(slots);
    return 0;
}
