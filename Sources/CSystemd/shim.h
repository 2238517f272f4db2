#ifndef TOKEND_CSYSTEMD_SHIM_H
#define TOKEND_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#endif
