/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-install's server (SPEC 9): one sd-event loop around the listening
 * SOCK_SEQPACKET socket the agent asks on (install-wire.h), the hooks it
 * runs for those requests (hook.c, one at a time) and the outcomes it keeps
 * (outcomes.c). It runs as root and trusts nothing the agent sends beyond
 * what install-wire.c checked; what it runs, and with which timeout, comes
 * from its own configuration file.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct Installer Installer;

typedef struct InstallerParams {
        const char *config_path;
        const char *listen_path; /* NULL: the socket comes from systemd (sd_listen_fds) */
        const char *runtime_dir; /* the outcomes' directory */
        uint64_t idle_usec;      /* exit after this long with nothing to do; 0: never */
        bool verbose;            /* log at debug level, whatever log_level says */
} InstallerParams;

/*
 * Loads the configuration (its problems are logged) and makes the runtime
 * directory ready. Returns 0 and a new Installer, -EINVAL for a
 * configuration that was refused, or another -errno (logged).
 */
int installer_new(const InstallerParams *params, Installer **ret);
Installer *installer_free(Installer *i);
static inline void installer_freep(Installer **i)
{
        installer_free(*i);
}

/*
 * Takes the socket (systemd's, or binds listen_path: a stale socket file
 * there is replaced, a live one is an error), runs until SIGTERM/SIGINT
 * (a running hook is waited for) or the idle timeout. Returns 0 or -errno
 * (logged).
 */
int installer_run(Installer *i);
