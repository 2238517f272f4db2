#ifndef TOKEND_CSYSTEMD_SHIM_H
#define TOKEND_CSYSTEMD_SHIM_H
#include <sys/types.h>
#include <systemd/sd-daemon.h>

/* Linux's `struct ucred` (SO_PEERCRED), which glibc declares only under _GNU_SOURCE. */
struct tokend_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

/* syncfs(2), which glibc also declares only under _GNU_SOURCE: the token cache flushes a batch of files with one. */
int syncfs(int fd);
static inline int tokend_syncfs(int fd) { return syncfs(fd); }
#endif
