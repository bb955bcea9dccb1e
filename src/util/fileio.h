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
 * Reads a whole file of at most MAX bytes into a NUL-terminated buffer.
 * Returns 0, -errno (-ENOENT when missing), or -EFBIG when it is larger than
 * MAX. *ret_len may be NULL. On failure *ret is untouched.
 */
int read_file_limited(const char *path, size_t max, char **ret, size_t *ret_len);

/* Reads a small file (at most 4 KiB) and strips surrounding whitespace. */
int read_one_line_file(const char *path, char **ret);

/* Strips leading and trailing whitespace in place; returns S. */
char *strstrip(char *s);
