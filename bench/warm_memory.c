/*
 * warm_memory.c - touch G GiB of anonymous memory, then exit.
 *
 *     warm_memory G
 *
 * The benchmark scripts run this right before each measured command.  On a
 * virtual machine whose balloon device reports free pages to the host
 * (virtio-balloon free page reporting), memory that has been free for a
 * couple of seconds goes back to the host, and the next program to touch
 * it pays a host fault per page: on the development machine 0.27 GB/s
 * against 5-20 GB/s for memory the host still backs.  Which of two
 * programs gets such memory then depends on the order they run in, not on
 * the programs.  Touching G GiB first and freeing it at exit hands the next
 * command memory that is backed, whichever it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    if (argc != 2 || atof(argv[1]) < 0) {
        fprintf(stderr, "usage: warm_memory GIB\n");
        return 2;
    }
    size_t bytes = (size_t)(atof(argv[1]) * (1u << 30));
    if (bytes == 0)
        return 0;
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("warm_memory: mmap");
        return 1;
    }
    memset(p, 1, bytes);
    return 0;
}
