/*
 * guide_example.c - a persistent list of notes; docs/guide.md walks
 * through it.
 *
 *     sal-guide-example HEAP-FILE "a note"   add a note, then list them all
 *     sal-guide-example HEAP-FILE            list the notes
 *
 * The first run creates the heap file.  Root 0 holds the newest note; each
 * note holds the one before it in its only child slot, so the list is a
 * chain of objects that sal keeps alive, copies and frees as a whole.
 */
#include <sal.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A note: the child slot comes first (sal finds child ids there), then
 * the text, NUL-terminated. */
struct note {
    sal_id next; /* the previous note, or SAL_NULL_ID */
    char text[];
};
enum { NOTE_TYPE = 1, NOTE_ROOT = 0 };

static int add_note(sal_session *s, const char *text)
{
    size_t size = sizeof(struct note) + strlen(text) + 1;
    sal_id note, head;
    void *ptr;
    int err;

    err = sal_write_begin(s);
    if (err != 0)
        return err;
    /* A new object with 1 child slot; we hold its only reference. */
    err = sal_alloc(s, size, 1, NOTE_TYPE, &note, &ptr);
    if (err != 0)
        goto fail;
    memcpy(((struct note *)ptr)->text, text, strlen(text) + 1);
    /* The current head (a reference of our own, or SAL_NULL_ID) goes into
     * the new note's slot: the note now owns that reference. */
    err = sal_root_get(s, NOTE_ROOT, &head);
    if (err != 0) {
        sal_release(s, note);
        goto fail;
    }
    err = sal_set_child(s, note, 0, head);
    if (err != 0) {
        if (head != SAL_NULL_ID)
            sal_release(s, head);
        sal_release(s, note);
        goto fail;
    }
    /* Publish: root 0 takes our reference to the note and releases the
     * reference it held to the old head (which the note holds now). */
    err = sal_root_set(s, NOTE_ROOT, note);
    if (err != 0) {
        sal_release(s, note); /* frees the note, and drops its hold on head */
        goto fail;
    }
    return sal_write_end(s);
fail:
    sal_write_end(s);
    return err;
}

static int print_notes(sal_session *s)
{
    sal_id head;
    int err = sal_root_get(s, NOTE_ROOT, &head); /* a snapshot */
    if (err != 0)
        return err;
    err = sal_read_begin(s);
    if (err == 0) {
        /* Pointers are valid inside the read section; the notes stay alive
         * because we hold the head, which holds the rest. */
        int n = 0;
        for (sal_id id = head; id != SAL_NULL_ID && err == 0;) {
            const void *ptr;
            err = sal_read(s, id, &ptr);
            if (err == 0) {
                const struct note *note = ptr;
                printf("%d. %s\n", ++n, note->text);
                id = note->next;
            }
        }
        if (n == 0 && err == 0)
            printf("(no notes yet)\n");
        int end_err = sal_read_end(s);
        if (err == 0)
            err = end_err;
    }
    if (head != SAL_NULL_ID)
        sal_release(s, head);
    return err;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf(
            "usage: sal-guide-example HEAP-FILE [NOTE]\n"
            "Adds NOTE to the notes kept in HEAP-FILE (created if it does not\n"
            "exist), then lists them, newest first.\n");
        return 0;
    }
    if (argc < 2 || argc > 3 || argv[1][0] == '-') {
        if (argc >= 2 && argv[1][0] == '-')
            fprintf(stderr, "sal-guide-example: unknown option '%s'\n",
                    argv[1]);
        fprintf(stderr, "usage: sal-guide-example HEAP-FILE [NOTE]\n");
        return 2;
    }
    sal_heap *heap;
    sal_session *s;
    int err = sal_heap_open(argv[1], NULL, &heap);
    if (err == ENOENT)
        err = sal_heap_create(argv[1], NULL, &heap);
    if (err != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], sal_strerror(err));
        return 1;
    }
    err = sal_session_open(heap, &s);
    if (err == 0) {
        if (argc == 3)
            err = add_note(s, argv[2]);
        if (err == 0)
            err = print_notes(s);
        int close_err = sal_session_close(s);
        if (err == 0)
            err = close_err;
    }
    /* Closing makes everything reachable from the roots durable. */
    int close_err = sal_heap_close(heap);
    if (err == 0)
        err = close_err;
    if (err != 0) {
        fprintf(stderr, "sal-guide-example: %s\n", sal_strerror(err));
        return 1;
    }
    return 0;
}
