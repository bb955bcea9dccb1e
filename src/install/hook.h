/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hook contract (SPEC 6, krtiot-hooks(7)), and the only place that
 * knows it: which verbs a hook is run with, its arguments and KRTIOT_*
 * environment, what its exit status means (0, 10, other), the REASON of a
 * failure, and the reboot command. Everything it runs comes from the
 * installer's own Config; the agent's request only brings a job's key
 * (which names the image inside the download directory), ID, target and
 * URL, as data.
 *
 *   HOOK install IMAGE  0: installed and running; 10 (HOOK_EXIT_REBOOT): a
 *                       reboot activates it; other: failed
 *   HOOK commit         0: committed
 *   HOOK version        prints the running version (its first line) on stdout
 *   reboot command      ota.reboot_command, after an install that ended 10
 *
 * IMAGE is "/proc/PID/fd/N": the installer's own descriptor of the image,
 * opened and checked before the hook starts and kept open until it ends, so
 * what the hook reads is what was checked, whatever happens to the name
 * {download_dir}/KEY.img meanwhile.
 */
#pragma once

#include <sys/types.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "install-wire.h"

#define HOOK_EXIT_REBOOT 10
#define HOOK_IMAGE_SUFFIX ".img"

typedef struct Hook Hook;

/*
 * Called once when what hook_start() started has ended, with the answer
 * for the agent: `done` (install, commit, reboot; a failure carries its
 * REASON) or `version`, or `done outcome=failed` when `HOOK version` gave
 * no version. ANSWER's strings are valid during the call only. The Hook may
 * be freed from the callback.
 */
typedef void (*HookDone)(Hook *h, const InstallAnswer *answer, void *userdata);

/*
 * Opens {download_dir}/KEY.img for a hook: the directory is followed (it is
 * configured), the image itself must not be a symbolic link, must be a
 * regular file (never a FIFO or a device: opening one never blocks and is
 * refused), and must belong to OWNER, the agent's user (or to root with a
 * single link: a bundle RAUC took over). Returns the fd (O_CLOEXEC), or
 * -errno with REASON (SIZE bytes) saying why in words: -ENOENT no such
 * image, -ELOOP a symbolic link, -EBADFD not a regular file, -EISDIR a
 * directory, -EPERM another owner, or what open() said.
 */
int hook_open_image(const char *download_dir, const char *key, uid_t owner, char *reason, size_t size);

/*
 * Starts what REQ asks for: INSTALL_OP_INSTALL (`HOOK install`, IMAGE_FD
 * from hook_open_image(), taken on success), INSTALL_OP_COMMIT,
 * INSTALL_OP_VERSION, INSTALL_OP_REBOOT (the reboot command; whether the
 * job asked for one is the caller's business). Hooks and the reboot command
 * are run by process.c (no shell, a clean environment, output to the log
 * line by line, bounded, with a timeout).
 *
 * Returns 0 and a running Hook (DONE follows), 1 with *RET_NOW filled when
 * the answer is known without running anything (a reboot with no
 * ota.reboot_command; its reason is a static string), or -errno (nothing
 * runs, IMAGE_FD is still the caller's).
 */
int hook_start(sd_event *event, const Config *c, const InstallRequest *req, int image_fd, HookDone done,
               void *userdata, Hook **ret, InstallAnswer *ret_now);

/* The PID of the process it runs, for logs. */
int hook_pid(const Hook *h);

/* Kills (SIGKILL) what still runs, closes the image, never calls DONE. Returns NULL. */
Hook *hook_free(Hook *h);
