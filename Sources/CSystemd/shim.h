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
#endif
