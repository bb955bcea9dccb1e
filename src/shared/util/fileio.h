/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File helpers: the crash-safe atomic write that the credentials store and
 * the OTA journal share, and bounded reads of small files.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * Writes DATA to DIR/NAME so that after a crash or power loss the file holds
 * either its old content or the new one, never a mix: a temporary file in DIR
 * created with MODE (never wider, whatever the umask), written, fsync()ed,
 * renamed over NAME, then DIR fsync()ed. Returns 0 or -errno; on failure the
 * temporary file is removed and NAME is untouched.
 */
int write_file_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode);

/*
 * Removes what write_file_atomic(DIR, NAME, ...) leaves behind when it is
 * killed before its rename: DIR/NAME.tmp.XXXXXXXXXXXX (RANDOM_ID_LEN
 * characters of RANDOM_ID_SYMBOLS), which may hold a secret. Nothing else
 * is touched. For the start of the daemon, when no write can be under way.
 * Returns the number removed, or -errno (-EINVAL for a NAME that is not one
 * path component); after a failed unlink the others are still tried.
 */
int remove_stale_tmpfiles(const char *dir, const char *name);

/*
 * Opens DIR/NAME read-only, as read_state_file() does: NAME must be a
 * regular file, not a symbolic link (-ELOOP), not a FIFO or device
 * (-EBADFD), not a directory (-EISDIR); the open() never blocks. Returns
 * the fd (O_CLOEXEC), or -errno.
 */
int open_state_file(const char *dir, const char *name);

/*
 * Reads a whole regular file of at most MAX bytes into a NUL-terminated
 * buffer. Symbolic links are followed (integrators link configuration,
 * version and ID files), but what they lead to must be a regular file too:
 * a FIFO, a device or a socket where a file should be is refused without
 * being opened, and the open() never blocks (O_NONBLOCK) should one appear
 * meanwhile. /proc and /sys files are regular (of size 0) and work.
 *
 * Returns 0, or -errno: -ENOENT when missing, -EISDIR for a directory,
 * -EBADFD for anything else that is not a regular file, -ELOOP for a loop
 * of symbolic links, -EFBIG when larger than MAX. *ret_len may be NULL. On
 * failure *ret is untouched. read_error_message() puts these in words.
 */
int read_file_limited(const char *path, size_t max, char **ret, size_t *ret_len);

/*
 * Reads DIR/NAME as read_file_limited() does, for the files of the state
 * directory that only the daemon writes (credentials.json,
 * ota-journal.json): NAME itself must not be a symbolic link (-ELOOP), so
 * that a link planted there cannot make the daemon read, and trust,
 * another file. DIR is followed: it is configured, not planted. NAME is one
 * path component (-EINVAL otherwise).
 */
int read_state_file(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len);

/*
 * Words for an error of the readers above, for "cannot read PATH: %s":
 * strerror() says "File descriptor in bad state" for -EBADFD and "Too many
 * levels of symbolic links" for a single refused link. ERROR may have
 * either sign. The string is static (or strerror()'s).
 */
const char *read_error_message(int error);

/* Reads a small file (at most 4 KiB, as read_file_limited()) and strips surrounding whitespace. */
int read_one_line_file(const char *path, char **ret);

/* Strips leading and trailing whitespace in place; returns S. */
char *strstrip(char *s);
