/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The outcomes of installs, kept so that an agent that went away during an
 * install (a restart of krtiot.service, an OTA of the krtiot package
 * itself) and an installer started again learn how it ended: one small file
 * per job key in the runtime directory (--runtime-dir; systemd's
 * RuntimeDirectory= with RuntimeDirectoryPreserve=yes), KEY.outcome, holding
 * the `done` answer line itself, written atomically. The runtime directory
 * is on tmpfs: a reboot forgets every outcome, which is what "unknown"
 * means then. At most OUTCOMES_MAX are kept, the oldest go first.
 */
#pragma once

#include "install-wire.h"

#define OUTCOMES_MAX 32

/*
 * Makes DIR ready: created (0700) when missing; it must be a directory of
 * ours that nobody else may write (-EPERM otherwise: a planted outcome
 * could ask for a reboot). Removes what a kill during a write left. Returns
 * 0 or -errno.
 */
int outcomes_prepare(const char *dir);

/* Records A (a `done` answer) as KEY's outcome. Returns 0 or -errno (-EINVAL for another answer). */
int outcomes_save(const char *dir, const char *key, const InstallAnswer *a);

/*
 * KEY's outcome: 0 and *RET (its strings valid until wire_message_done(MSG),
 * which the caller owes whatever the result), -ENOENT when there is none,
 * -EBADMSG for a record that is not a `done` answer, or -errno.
 */
int outcomes_load(const char *dir, const char *key, WireMessage *msg, InstallAnswer *ret);

/* Forgets KEY's outcome. Returns 0, -ENOENT, or -errno. */
int outcomes_remove(const char *dir, const char *key);
