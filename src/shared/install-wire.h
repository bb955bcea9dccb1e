/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire between krtiotd (unprivileged) and krtiot-install (root), SPEC 9:
 * a SOCK_SEQPACKET Unix socket (ota.installer_socket), one request per
 * connection, one line each way (util/wire.h framing), then the installer
 * closes. Everything the agent sends is data about a job; a path, a program
 * or an argument never crosses: the hook, the reboot command, the timeouts
 * and the download directory are the installer's own configuration.
 *
 * Requests (agent -> installer):
 *   install key=K id=ID target=V url=U
 *       Run `HOOK install IMAGE` on {download_dir}/K.img (opened by the
 *       installer without following links; a regular file owned by the
 *       agent's user). ID, V and U reach the hook as KRTIOT_JOB_ID,
 *       KRTIOT_TARGET_VERSION and KRTIOT_URL. Answered when the hook ends; if
 *       the agent goes away meanwhile the hook goes on, and its outcome is
 *       kept for `outcome`.
 *   outcome key=K
 *       The outcome of K's install: answered at once when known, when the
 *       hook ends when it is still running, "unknown" when there is no
 *       record (an installer that never ran it, or a reboot since).
 *   commit key=K id=ID target=V
 *       Run `HOOK commit` (the first start after the reboot, when the
 *       running version is the target).
 *   version
 *       Run `HOOK version`: the running firmware version.
 *   reboot key=K
 *       Run the reboot command; only after K's install ended "reboot", and
 *       once for that install. done outcome=reboot: the command succeeded.
 *
 * Answers (installer -> agent):
 *   done outcome=installed|reboot|failed [reason=S]   install, outcome, commit, reboot;
 *                                                      version, failed: the hook gave none
 *   unknown                                            outcome: no record of K
 *   version value=V                                    version (V follows the version rule)
 *   refused reason=S                                   a request the installer will not run
 *
 * Keys are RANDOM_ID_LEN characters of [0-9A-Z] (the agent's local job key,
 * never anything the network sent); IDs are 1-64 bytes without control
 * characters; versions follow the version rule; URLs are 1-4096
 * characters without spaces or controls. The installer refuses anything
 * else whole.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util/wire.h"

#define INSTALL_ID_MAX 64
#define INSTALL_URL_MAX 4096
#define INSTALL_REASON_MAX 512

typedef enum InstallOp {
        INSTALL_OP_INSTALL,
        INSTALL_OP_OUTCOME,
        INSTALL_OP_COMMIT,
        INSTALL_OP_VERSION,
        INSTALL_OP_REBOOT,
        _INSTALL_OP_MAX,
} InstallOp;

typedef struct InstallRequest {
        InstallOp op;
        const char *key;    /* install, outcome, commit, reboot */
        const char *id;     /* install, commit */
        const char *target; /* install, commit */
        const char *url;    /* install */
} InstallRequest;

typedef enum InstallOutcome {
        INSTALL_OUTCOME_INSTALLED, /* the hook exited 0: installed and running */
        INSTALL_OUTCOME_REBOOT,    /* the hook exited 10: a reboot activates it */
        INSTALL_OUTCOME_FAILED,
        _INSTALL_OUTCOME_MAX,
} InstallOutcome;

typedef enum InstallAnswerType {
        INSTALL_ANSWER_DONE,
        INSTALL_ANSWER_UNKNOWN,
        INSTALL_ANSWER_VERSION,
        INSTALL_ANSWER_REFUSED,
} InstallAnswerType;

typedef struct InstallAnswer {
        InstallAnswerType type;
        InstallOutcome outcome; /* done */
        const char *reason;     /* done (failed), refused; may be NULL */
        const char *version;    /* version */
} InstallAnswer;

const char *install_op_to_string(InstallOp op);
const char *install_outcome_to_string(InstallOutcome o);

/*
 * Decode one line. Return 0 and fill *ret (strings valid while *msg is), or
 * -EBADMSG: unknown verb, a field missing, extra or malformed (see above).
 * *msg must be freed with wire_message_done() whatever the result.
 */
int install_wire_parse_request(const char *line, size_t len, WireMessage *msg, InstallRequest *ret);
int install_wire_parse_answer(const char *line, size_t len, WireMessage *msg, InstallAnswer *ret);

/* Encoders into BUF (WIRE_LINE_MAX bytes): 0 and the length, or -EINVAL (a field the parser would refuse), -E2BIG. */
int install_wire_request(char *buf, const InstallRequest *req, size_t *ret_len);
int install_wire_answer(char *buf, const InstallAnswer *a, size_t *ret_len);

/* The checks the parsers apply, for callers that build requests. */
bool install_key_valid(const char *key);
bool install_id_valid(const char *id);
bool install_url_valid(const char *url);
