/*
 * showcase.c - what sal does, in about twenty lines of output.
 *
 * The program builds a small tree in a fresh heap file, publishes it as
 * root 0, keeps a snapshot of it, changes the tree through copy-on-write,
 * shows that the snapshot did not change, releases the snapshot, closes the
 * heap, opens it again and shows that the data is still there.
 *
 *     sal-showcase              use a new temporary directory, removed after
 *     sal-showcase FILE         create the heap at FILE (must not exist) and
 *                               leave it there
 *
 * Every sal call is checked; a failure prints sal_strerror() and exits 1.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, PATH_MAX */
#include <sal.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The tree: one "list" node whose leading child slots hold "item" nodes.
 * An item is a fixed-size label, so a copy can be edited in place. */
enum { TYPE_LIST = 1, TYPE_ITEM = 2 };
enum { LIST_SLOTS = 4, LABEL_BYTES = 24 };

struct list {
    sal_id items[LIST_SLOTS]; /* child slots come first: sal walks them */
    char title[8];
};

struct item {
    char label[LABEL_BYTES];
};

static void remove_temp_dir(const char *dir, int verbose);

/* The temporary directory this run made, removed at exit. */
static char temp_dir[PATH_MAX];

/* Report a failed call and exit.  CHECK keeps every call on one line. */
static void fail(const char *what, int err)
{
    fprintf(stderr, "sal-showcase: %s failed: %s (%d)\n", what,
            sal_strerror(err), err);
    if (temp_dir[0] != '\0')
        remove_temp_dir(temp_dir, 0);
    exit(1);
}
#define CHECK(call)                                                            \
    do {                                                                       \
        int check_err_ = (call);                                               \
        if (check_err_ != 0)                                                   \
            fail(#call, check_err_);                                           \
    } while (0)

/* Ids are opaque, but sal.h documents their layout: the table slot in the
 * low 32 bits and a generation above.  Printed INDEX/GENERATION, as
 * sal-gc prints them. */
static const char *id_text(sal_id id, char buf[32])
{
    snprintf(buf, 32, "%" PRIu64 "/%" PRIu64, id & 0xffffffffu,
             (id >> 32) & 0xffffffu);
    return buf;
}

static sal_id new_item(sal_session *s, const char *label)
{
    sal_id id;
    void *ptr;
    CHECK(sal_alloc(s, sizeof(struct item), 0, TYPE_ITEM, &id, &ptr));
    struct item *it = ptr;
    memset(it, 0, sizeof *it);
    snprintf(it->label, sizeof it->label, "%s", label);
    return id;
}

static void set_title(void *list_ptr, const char *title)
{
    struct list *list = list_ptr;
    memset(list->title, 0, sizeof list->title);
    snprintf(list->title, sizeof list->title, "%s", title);
}

/* One line: "title #id [label #id, label #id, ...]".  Needs a section. */
static void print_list(sal_session *s, const char *name, sal_id list_id)
{
    const void *ptr;
    char buf[32];
    CHECK(sal_read(s, list_id, &ptr));
    const struct list *list = ptr;
    printf("   %-9s %s %s [", name, list->title, id_text(list_id, buf));
    const char *sep = "";
    for (unsigned i = 0; i < LIST_SLOTS; i++) {
        if (list->items[i] == SAL_NULL_ID)
            continue;
        const void *item_ptr;
        CHECK(sal_read(s, list->items[i], &item_ptr));
        const struct item *item = item_ptr;
        printf("%s%s %s", sep, item->label, id_text(list->items[i], buf));
        sep = ", ";
    }
    printf("]\n");
}

static uint32_t refcount_of(sal_session *s, sal_id id)
{
    sal_object_info info;
    CHECK(sal_info(s, id, &info));
    return info.refcount;
}

static sal_heap_stats stats_of(sal_heap *heap)
{
    sal_heap_stats st;
    CHECK(sal_heap_stats_get(heap, &st));
    return st;
}

/* Remove the files sal left in the directory we made, then the directory. */
static void remove_temp_dir(const char *dir, int verbose)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        char path[PATH_MAX];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (n < 0 || (size_t)n >= sizeof path || unlink(path) != 0)
                perror(path);
        }
        closedir(d);
    }
    if (rmdir(dir) != 0)
        perror(dir);
    else if (verbose)
        printf("Removed %s.\n", dir);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sal-showcase [HEAP-FILE]\n"
            "Builds a small tree in a sal heap, changes it by copy-on-write\n"
            "next to a snapshot, and reopens the heap to show it persisted.\n"
            "Without HEAP-FILE the heap goes in a new temporary directory\n"
            "(under $TMPDIR or /tmp) that is removed at the end; with it,\n"
            "the file (which must not exist) is created and kept.\n");
}

int main(int argc, char **argv)
{
    char *dir = temp_dir;
    char path[PATH_MAX];
    char a[32], b[32];

    if (argc == 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        if (argc > 2)
            fprintf(stderr, "sal-showcase: one HEAP-FILE at most\n");
        else
            fprintf(stderr, "sal-showcase: unknown option '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    int n;
    if (argc == 2) {
        n = snprintf(path, sizeof path, "%s", argv[1]);
    } else {
        const char *tmp = getenv("TMPDIR");
        if (tmp == NULL || tmp[0] == '\0')
            tmp = "/tmp";
        char templ[PATH_MAX];
        n = snprintf(templ, sizeof templ, "%s/sal-showcase-XXXXXX", tmp);
        if (n > 0 && (size_t)n < sizeof templ) {
            if (mkdtemp(templ) == NULL) {
                fprintf(stderr,
                        "sal-showcase: cannot make a temporary directory in "
                        "%s: %s\n",
                        tmp, strerror(errno));
                return 1;
            }
            memcpy(dir, templ, (size_t)n + 1); /* from now on, ours */
            n = snprintf(path, sizeof path, "%s/showcase.heap", dir);
        }
    }
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "sal-showcase: path too long\n");
        if (dir[0] != '\0')
            remove_temp_dir(dir, 0);
        return 1;
    }

    printf("sal: a persistent copy-on-write object heap in one file.\n");
    sal_options opt;
    sal_options_init(&opt);
    /* A small heap for a small demo: the defaults reserve 64 GiB. */
    opt.segment_bytes = SAL_MIN_SEGMENT_BYTES; /* 1 MiB */
    opt.max_objects = 1u << 16;
    opt.reserve_bytes = 64ull << 20;
    sal_heap *heap;
    sal_session *s;
    int create_err = sal_heap_create(path, &opt, &heap);
    if (create_err != 0) {
        fprintf(stderr,
                "sal-showcase: cannot create the heap file %s: %s (%d)\n", path,
                sal_strerror(create_err), create_err);
        if (dir[0] != '\0')
            remove_temp_dir(dir, 0);
        return 1;
    }
    CHECK(sal_session_open(heap, &s));
    printf("Created the heap file %s.\n", path);
    printf("Every object has an id, printed N/G: its entry N in the object table\n"
           "and G, how many times that entry was used before (a stale id is caught).\n");

    /* 1. Build a list of three items and publish it as root 0.  The list's
     * child slots own the items; root 0 takes over our reference. */
    CHECK(sal_write_begin(s));
    sal_id v1;
    void *ptr;
    CHECK(sal_alloc(s, sizeof(struct list), LIST_SLOTS, TYPE_LIST, &v1, &ptr));
    set_title(ptr, "v1");
    const char *labels[] = {"apple", "bread", "cheese"};
    for (unsigned i = 0; i < 3; i++)
        CHECK(sal_set_child(s, v1, i, new_item(s, labels[i])));
    CHECK(sal_root_set(s, 0, v1)); /* publishing is a write, too */
    CHECK(sal_write_end(s));
    printf("1. Built a list of 3 items and published it as root 0:\n");
    CHECK(sal_read_begin(s));
    print_list(s, "root 0", v1);
    CHECK(sal_read_end(s));

    /* 2. A snapshot is just a retained root. */
    sal_id snapshot;
    CHECK(sal_root_get(s, 0, &snapshot));
    printf("2. Took a snapshot of root 0: our own reference to %s, which keeps\n"
           "   that version alive whatever happens to root 0.\n",
           id_text(snapshot, a));

    /* 3. Change the list through copy-on-write.  The working copy starts as
     * another reference to the same list, so sal_write() must copy it;
     * "bread" is shared by both lists, so sal_write_child() copies it too
     * and stores the copy's id in the new list.  Path copying: apple and
     * cheese are not copied, both versions point at them. */
    sal_id work;
    CHECK(sal_root_get(s, 0, &work));
    CHECK(sal_write_begin(s));
    CHECK(sal_write(s, &work, &ptr));
    sal_id bread;
    CHECK(sal_write_child(s, work, 1, &bread, &ptr));
    snprintf(((struct item *)ptr)->label, LABEL_BYTES, "%s", "brioche");
    printf("3. Changed bread to brioche on a working copy (copy-on-write):\n"
           "   the list was copied to %s and bread to %s;\n"
           "   apple and cheese were not copied: both lists share them.\n",
           id_text(work, a), id_text(bread, b));
    /* The copy is now unique and not committed: written in place. */
    sal_id before = work;
    CHECK(sal_write(s, &work, &ptr));
    if (work != before)
        fail("second sal_write() kept the id", SAL_EINVAL);
    set_title(ptr, "v2");
    CHECK(sal_set_child(s, work, 3, new_item(s, "dates")));
    CHECK(sal_root_set(s, 0, work)); /* publish; root 0 releases v1 */
    CHECK(sal_write_end(s));
    printf("   Retitled it v2 and added dates in place: nobody else holds the\n"
           "   copy and no commit has frozen it yet, so its id stays %s.\n"
           "   Published it as root 0.\n",
           id_text(work, a));

    /* 4. Both versions, side by side. */
    sal_id current;
    CHECK(sal_root_get(s, 0, &current));
    printf("4. The snapshot still shows the old list, root 0 the new one:\n");
    CHECK(sal_read_begin(s));
    print_list(s, "snapshot", snapshot);
    print_list(s, "root 0", current);
    CHECK(sal_read_end(s));
    const void *cptr;
    CHECK(sal_read_begin(s));
    CHECK(sal_read(s, current, &cptr));
    sal_id apple = ((const struct list *)cptr)->items[0];
    CHECK(sal_read_end(s));
    printf("   apple is held by both lists: refcount %" PRIu32 ".\n",
           refcount_of(s, apple));

    /* 5. Releasing the snapshot frees what only it held. */
    uint64_t live_before = stats_of(heap).live_objects;
    CHECK(sal_release(s, snapshot));
    uint64_t live_after = stats_of(heap).live_objects;
    printf("5. Released the snapshot: live objects %" PRIu64 " -> %" PRIu64
           " (old list and bread freed).\n",
           live_before, live_after);
    CHECK(sal_read_begin(s));
    int err = sal_read(s, snapshot, &cptr);
    CHECK(sal_read_end(s));
    if (err != SAL_ESTALE)
        fail("sal_read(s, snapshot) after release (expected SAL_ESTALE)",
             err != 0 ? err : SAL_EINVAL);
    printf("   Reading its id %s now fails cleanly: \"%s\".\n",
           id_text(snapshot, a), sal_strerror(err));
    CHECK(sal_release(s, current));
    CHECK(sal_session_close(s));
    CHECK(sal_heap_close(heap));

    /* 6. Everything published survives closing the heap. */
    CHECK(sal_heap_open(path, NULL, &heap));
    CHECK(sal_reader_open(heap, &s));
    CHECK(sal_root_get(s, 0, &current));
    printf("6. Closed the heap and opened it again; same ids, same data:\n");
    CHECK(sal_read_begin(s));
    print_list(s, "root 0", current);
    CHECK(sal_read_end(s));
    CHECK(sal_release(s, current));

    sal_heap_stats st = stats_of(heap);
    printf("7. Heap stats: %" PRIu64 " live objects, %" PRIu64
           " bytes with their headers.\n"
           "   The file holds %.1f MiB: its metadata and object table, and\n"
           "   segments of 1 MiB that sessions fill (%" PRIu64 " of %" PRIu64 " in use).\n",
           st.live_objects, st.live_bytes, st.file_bytes / 1048576.0,
           st.segments_in_use, st.segments_total);
    CHECK(sal_session_close(s));
    CHECK(sal_heap_close(heap));

    if (dir[0] != '\0')
        remove_temp_dir(dir, 1);
    else
        printf("The heap file %s was kept.\n", path);
    return 0;
}
