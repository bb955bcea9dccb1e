/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where the versions come from (SPEC 7, device.*): a literal in the config,
 * a file (re-read at every report, so a change is seen without a restart),
 * or for the firmware the hook's `version` call, which runs as a child
 * process and so answers asynchronously.
 */
#pragma once

#include <systemd/sd-event.h>

#include "config.h"
#include "process.h"

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
 * Runs `HOOK version` with its stdout captured; DONE gets the ProcessResult,
 * whose output the caller passes to version_parse() when its status is 0.
 * Returns 0 and the running Process (free it to cancel), or -errno.
 */
int version_query_hook(sd_event *event, const Config *c, ProcessDone done, void *userdata, Process **ret);

/* Trims TEXT (a file's content or the hook's output: its first line) in place and validates it. */
int version_parse(char *text);
