/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of install-wire.h: one request to krtiot-install on
 * ota.installer_socket, one answer, inside the event loop. Nothing here
 * blocks: the connect, the send and the answer are all waited for by the
 * loop, within a timeout.
 */
#pragma once

#include <stdint.h>

#include <systemd/sd-event.h>

#include "install-wire.h"

typedef struct InstallCall InstallCall;

/*
 * What the agent allows on top of a hook's own timeout (ota.hook_timeout)
 * before it gives up on an answer: the installer's grace before SIGKILL
 * (5 s), a `HOOK version` run that may be ahead in its queue (60 s), slack.
 */
#define INSTALL_CALL_MARGIN_SEC 90

static inline uint64_t install_call_timeout(unsigned hook_timeout_sec)
{
        return ((uint64_t)hook_timeout_sec + INSTALL_CALL_MARGIN_SEC) * 1000000ULL;
}

/*
 * Called once, from the loop: ERROR 0 and the ANSWER (its strings valid
 * during the call only), or a -errno and REASON in words, for a log line
 * or a job's failure:
 *   -ECONNREFUSED, -ENOENT, ...  "the installer is not reachable at PATH: ..."
 *   -ECONNRESET                  "the installer closed the connection"
 *   -ETIMEDOUT                   "no answer from the installer within N s"
 *   -EBADMSG                     "the installer's answer is malformed"
 * The call may be freed from the callback.
 */
typedef void (*InstallCallDone)(InstallCall *call, int error, const InstallAnswer *answer,
                                const char *reason, void *userdata);

/*
 * Sends REQ to the installer listening on SOCKET_PATH and waits for its
 * answer for at most TIMEOUT_USEC. Returns 0 and the call (free it to give
 * up: the installer sees the connection close), or -EINVAL for a request
 * the installer would refuse as malformed, or -ENOMEM. Every other failure
 * is reported through DONE.
 */
int install_call_new(sd_event *event, const char *socket_path, const InstallRequest *req,
                     uint64_t timeout_usec, InstallCallDone done, void *userdata, InstallCall **ret);

/* Closes the connection; DONE is never called after. Returns NULL. */
InstallCall *install_call_free(InstallCall *call);
