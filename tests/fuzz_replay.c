/*
 * fuzz_replay.c - a main() for fuzz targets without libFuzzer: runs every
 * input file given (or every file in a directory given), then, with
 * --mutations N, N deterministic mutations of each (random bytes
 * overwritten, checksums resealed or not).  It runs in the ordinary test
 * suite (ctest -L gc, also under ASan + UBSan), so that the corpus and a
 * few thousand mutants are exercised on every CI run; tests/run_fuzz.sh
 * does the real, coverage-guided fuzzing.
 *
 *   fuzz_heap_replay [--mutations N] [--seed S] FILE|DIR...
 *
 * FUZZ_REPLAY_SAVE=PATH writes each input to PATH before running it, so
 * that the one that crashed is left there.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

static unsigned long inputs;
static const char *save_path; /* FUZZ_REPLAY_SAVE: each input, before it runs */

static void run_one(const uint8_t *data, size_t len)
{
    if (save_path) {
        FILE *f = fopen(save_path, "wb");
        if (f) {
            fwrite(data, 1, len, f);
            fclose(f);
        }
    }
    LLVMFuzzerTestOneInput(data, len);
    inputs++;
}

static void run_file(const char *path, unsigned mutations, uint64_t *rng)
{
    size_t len;
    uint8_t *buf = slurp(path, &len);
    if (!buf) {
        fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
        exit(1);
    }
    run_one(buf, len);
    uint8_t *m = malloc(len ? len : 1);
    for (unsigned i = 0; i < mutations && len > 5; i++) {
        memcpy(m, buf, len);
        /* Reseal flags at random, then a few byte changes anywhere. */
        m[0] = (uint8_t)(rng_next(rng) & 7);
        unsigned changes = 1 + (unsigned)(rng_next(rng) % 8);
        for (unsigned k = 0; k < changes; k++) {
            size_t at = 5 + (size_t)(rng_next(rng) % (len - 5));
            switch (rng_next(rng) % 4) {
            case 0: m[at] ^= (uint8_t)(1u << (rng_next(rng) % 8)); break;
            case 1: m[at] = (uint8_t)rng_next(rng); break;
            case 2: m[at] = 0; break;
            default: m[at] = 0xff; break;
            }
        }
        run_one(m, len);
    }
    free(m);
    free(buf);
}

int main(int argc, char **argv)
{
    unsigned mutations = 0;
    uint64_t seed = (uint64_t)time(NULL);
    int first = 1;
    LLVMFuzzerInitialize(&argc, &argv);
    save_path = getenv("FUZZ_REPLAY_SAVE");
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--mutations") && first + 1 < argc)
            mutations = (unsigned)strtoul(argv[++first], NULL, 10);
        else if (!strcmp(argv[first], "--seed") && first + 1 < argc)
            seed = strtoull(argv[++first], NULL, 0);
        else {
            fprintf(stderr, "usage: %s [--mutations N] [--seed S] FILE|DIR...\n", argv[0]);
            return 2;
        }
    }
    printf("fuzz_replay: seed %" PRIu64 " (replay with --seed %" PRIu64 ")\n", seed, seed);
    fflush(stdout);
    uint64_t rng = seed;
    for (int i = first; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "fuzz_replay: %s: not found\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            run_file(argv[i], mutations, &rng);
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            fprintf(stderr, "fuzz_replay: %s: cannot list it\n", argv[i]);
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (names[k]->d_name[0] != '.') {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
                run_file(path, mutations, &rng);
            }
            free(names[k]);
        }
        free(names);
    }
    if (inputs == 0) {
        fprintf(stderr, "fuzz_replay: no input found: nothing was tested\n");
        return 1;
    }
    printf("fuzz_replay: %lu inputs, no crash\n", inputs);
    return 0;
}
