/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The durable device-secret store: {state_dir}/credentials.json,
 * {"product_id":…,"device_id":…,"device_secret":…}, mode 0600, written with
 * write_file_atomic(). The secret is erased from memory when freed.
 */
#pragma once

#include <sys/stat.h>

#define CREDENTIALS_FILE "credentials.json"
#define CREDENTIALS_MAX_SIZE 4096

typedef struct Credentials {
        char *product_id;
        char *device_id;
        char *device_secret;
} Credentials;

/*
 * Loads the store. Returns 0 and a new object, -ENOENT when there is none,
 * -EBADMSG when the file is corrupt or truncated (callers treat that as
 * absent, and say so), or another -errno when it cannot be read: -ELOOP
 * when it is a symbolic link, -EBADFD when it is not a regular file (a
 * FIFO), as read_state_file() (read_error_message() has the words). On
 * failure *ret is untouched.
 */
int credentials_load(const char *state_dir, Credentials **ret);

/* Writes the store durably; returns only once it is on disk. 0 or -errno. */
int credentials_store(const char *state_dir, const char *product_id, const char *device_id,
                      const char *device_secret);

/* What credentials_fix_permissions() found, and did. */
typedef enum CredentialsFix {
        CREDENTIALS_MODE_FIXED = 1 << 0,  /* it had more than 0600 (readable by group or others): now 0600 */
        CREDENTIALS_OWNER_FIXED = 1 << 1, /* it belonged to another user: now ours (we run as root) */
        CREDENTIALS_NOT_OURS = 1 << 2,    /* it belongs to another user and we are not root: left alone */
} CredentialsFix;

/*
 * Makes the store private again if it is not: owned by us (fchown, only
 * possible as root) and mode 0600 (fchmod). The file is opened as
 * credentials_load() reads it (no link, regular files only). Returns 0 when
 * it was already private, a positive OR of CredentialsFix, or -errno:
 * -ENOENT when there is no store (nothing to do), -ELOOP/-EBADFD as
 * credentials_load(), or what fchown()/fchmod() failed with (-EROFS...). A
 * store we may not even read is CREDENTIALS_NOT_OURS when another user owns
 * it (-EACCES otherwise).
 * *ret_before (may be NULL) gets the file's stat() from before, for the
 * message.
 */
int credentials_fix_permissions(const char *state_dir, struct stat *ret_before);

/* Whether C belongs to this product and device. */
int credentials_match(const Credentials *c, const char *product_id, const char *device_id);

Credentials *credentials_free(Credentials *c);
static inline void credentials_freep(Credentials **c)
{
        credentials_free(*c);
}
#define _cleanup_credentials_ __attribute__((cleanup(credentials_freep)))
