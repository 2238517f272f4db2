#ifndef TOKEND_CLINUXSHIMS_H
#define TOKEND_CLINUXSHIMS_H
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* Linux's `struct ucred` (SO_PEERCRED), which glibc declares only under _GNU_SOURCE. */
struct tokend_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

/* SO_PEERGROUPS (Linux 4.13): the supplementary groups a Unix socket's peer had when it connected, read into a
   buffer of 256 (a peer with more gets ERANGE, and the daemon reads /proc instead). */
struct tokend_peer_groups {
    gid_t groups[256];
};
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
static inline int tokend_so_peergroups(void) { return SO_PEERGROUPS; }

/* syncfs(2), which glibc also declares only under _GNU_SOURCE: the token cache flushes a batch of files with one. */
int syncfs(int fd);
static inline int tokend_syncfs(int fd) { return syncfs(fd); }

/* prctl(2) is variadic, which Swift cannot call. A process that is not dumpable leaves no core dump, and its memory
   and /proc/<pid> files are closed to its own user (the kernel gives /proc/<pid> to root): the daemon holds client
   secrets, keys and tokens, and the watchdog and TimeoutAbortSec= send it SIGABRT. */
static inline int tokend_set_dumpable(int dumpable) { return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL); }

/* O_PATH and AT_EMPTY_PATH, which glibc declares only under _GNU_SOURCE: the socket file's group and mode are set
   through a descriptor of the file itself, opened without following a symlink. (Values from linux/fcntl.h and
   asm-generic/fcntl.h, the same on every Linux architecture Swift runs on.) */
static inline int tokend_o_path(void) { return 010000000; }
static inline int tokend_at_empty_path(void) { return 0x1000; }

/* malloc_trim(3): after a config load the daemon hands the freed pages back. */
static inline int tokend_malloc_trim(void) { return malloc_trim(0); }

/* How many CPUs this process may run on (sched_getaffinity(2), through syscall(2): glibc's wrapper and CPU_COUNT are
   _GNU_SOURCE too); 0 when unknown. */
static inline int tokend_allowed_cpus(void) {
    unsigned long mask[64] = {0};
    long size = syscall(SYS_sched_getaffinity, 0, sizeof mask, mask);
    if (size <= 0) return 0;
    int count = 0;
    for (long i = 0; i < size / (long)sizeof(unsigned long); i++) count += __builtin_popcountl(mask[i]);
    return count;
}
#endif
