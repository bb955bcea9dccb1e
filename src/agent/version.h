/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where the versions come from (SPEC 7, device.*): a literal in the config,
 * a file (re-read at every report, so a change is seen without a restart),
 * or for the firmware the hook's `version` call, which krtiot-install runs
 * (the agent runs no hook) and so answers asynchronously.
 */
#pragma once

#include <systemd/sd-event.h>

#include "config.h"
#include "install-client.h"

#define VERSION_UNKNOWN "unknown"

/*
 * Reads the hardware version, or the firmware version when it does not come
 * from the hook. Returns 0 and a malloc()ed, validated version; -EOPNOTSUPP
 * for the firmware version when it comes from the hook; -EBADMSG when the
 * file's content is not a version (empty, too long, bad characters); or the
 * -errno of reading the file.
 */
int version_read_hw(const Config *c, char **ret);
int version_read_fw(const Config *c, char **ret);

/*
 * Asks krtiot-install at ota.installer_socket for `HOOK version`. DONE gets
 * the answer, which version_from_answer() reads. The wait covers the hook's
 * own timeout and an install the installer may be running first (it runs
 * one hook at a time). Returns 0 and the call (free it to cancel), or
 * -errno.
 */
int version_query_installer(sd_event *event, const Config *c, InstallCallDone done, void *userdata,
                            InstallCall **ret);

/*
 * The version in what an InstallCallDone of version_query_installer() got:
 * the answer's value (the wire's parser checked it against the version
 * rule), or NULL with *RET_WHY saying why, in words valid during the
 * callback.
 */
const char *version_from_answer(int error, const InstallAnswer *answer, const char *reason,
                                const char **ret_why);

/* Trims TEXT (a version file's content: its first line) in place and validates it. */
int version_parse(char *text);
