/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The durable device-secret store, {state_dir}/credentials.json. The
 * platform issues a secret once, so the file is written with
 * write_file_atomic() (it holds the old content or the new, never a torn
 * mix) and read strictly: anything but an object of exactly the three
 * non-empty strings is -EBADMSG, which the caller treats as "no secret".
 * Every copy of the secret this file makes, json-c's included, is erased
 * before it is freed. credentials_fix_permissions() makes a store that
 * someone opened up (mode, owner) private again.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "credentials.h"
#include "util/fileio.h"
#include "util/macro.h"

#define JSON_FORMAT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *const credentials_keys[] = {"product_id", "device_id", "device_secret"};

static void json_object_putp(json_object **o)
{
        json_object_put(*o);
}

/* json-c 0.16 leaves parsed string text in the tokener's (public) printbuf: wipe it. */
static void json_tokener_erase_and_freep(json_tokener **t)
{
        if (!*t)
                return;
        if ((*t)->pb && (*t)->pb->buf && (*t)->pb->size > 0)
                explicit_bzero((*t)->pb->buf, (size_t)(*t)->pb->size);
        json_tokener_free(*t);
}

/* Frees a buffer of known length after erasing it (the file text holds the secret). */
typedef struct SecretBuf {
        char *data;
        size_t len;
} SecretBuf;

static void secret_buf_done(SecretBuf *b)
{
        if (b->data)
                explicit_bzero(b->data, b->len);
        free(b->data);
}

static void json_erase_string(json_object *o, const char *key)
{
        json_object *v;

        if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
                /* The storage belongs to V, which we own; get_string only hands it out as const. */
                explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* A non-empty string without an embedded NUL, copied; -EBADMSG otherwise. */
static int json_get_nonempty_string(json_object *o, const char *key, char **ret)
{
        json_object *v;
        const char *s;
        size_t len;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return -EBADMSG;

        s = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        if (len == 0 || strlen(s) != len)
                return -EBADMSG;

        *ret = strndup(s, len);
        return *ret ? 0 : -ENOMEM;
}

static int credentials_from_json(json_object *o, Credentials **ret)
{
        _cleanup_credentials_ Credentials *c = NULL;
        int r;

        if (!json_object_is_type(o, json_type_object) ||
            json_object_object_length(o) != (int)ELEMENTSOF(credentials_keys))
                return -EBADMSG;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;

        r = json_get_nonempty_string(o, "product_id", &c->product_id);
        if (r < 0)
                return r;
        r = json_get_nonempty_string(o, "device_id", &c->device_id);
        if (r < 0)
                return r;
        r = json_get_nonempty_string(o, "device_secret", &c->device_secret);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

int credentials_load(const char *state_dir, Credentials **ret)
{
        _cleanup_(json_tokener_erase_and_freep) json_tokener *tok = NULL;
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_(secret_buf_done) SecretBuf text = {};
        int r;

        if (!ret || !state_dir || !*state_dir)
                return -EINVAL;

        /* Not through a link: one planted here must not hand us another file's "secret". */
        r = read_state_file(state_dir, CREDENTIALS_FILE, CREDENTIALS_MAX_SIZE, &text.data, &text.len);
        if (r < 0)
                return r;

        /* We wrote this file ourselves, as strict JSON: anything else is damage. */
        tok = json_tokener_new_ex(4);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

        root = json_tokener_parse_ex(tok, text.data, (int)text.len);
        if (!root || json_tokener_get_parse_end(tok) != text.len)
                r = -EBADMSG; /* truncated (json_tokener_continue), garbage, or trailing bytes */
        else
                r = credentials_from_json(root, ret);

        if (root)
                json_erase_string(root, "device_secret");
        return r;
}

int credentials_store(const char *state_dir, const char *product_id, const char *device_id,
                      const char *device_secret)
{
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *values[] = {product_id, device_id, device_secret};
        const char *s;
        size_t len;
        int r;

        if (!state_dir)
                return -EINVAL;
        /* What credentials_load() would refuse must not be written in the first place. */
        for (size_t i = 0; i < ELEMENTSOF(values); i++)
                if (!values[i] || !*values[i])
                        return -EINVAL;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;

        for (size_t i = 0; i < ELEMENTSOF(credentials_keys); i++) {
                json_object *v = json_object_new_string(values[i]);

                if (!v)
                        return -ENOMEM;
                if (json_object_object_add(o, credentials_keys[i], v) < 0) {
                        explicit_bzero((char *)json_object_get_string(v),
                                       (size_t)json_object_get_string_len(v));
                        json_object_put(v);
                        return -ENOMEM;
                }
        }

        s = json_object_to_json_string_length(o, JSON_FORMAT, &len);
        if (!s) {
                json_erase_string(o, "device_secret");
                return -ENOMEM;
        }

        if (len > CREDENTIALS_MAX_SIZE)
                r = -E2BIG; /* credentials_load() could not read it back */
        else
                r = write_file_atomic(state_dir, CREDENTIALS_FILE, s, len, 0600);

        /*
         * The serialized text lives in O's printbuf: erase it and the secret's
         * copy before O goes. Known gap: json-c grows that printbuf with
         * realloc(), which can free an older block holding part of the text
         * without erasing it; no public json-c interface reaches it.
         */
        explicit_bzero((char *)s, len);
        json_erase_string(o, "device_secret");
        return r;
}

int credentials_fix_permissions(const char *state_dir, struct stat *ret_before)
{
        _cleanup_close_ int fd = -1;
        uid_t uid = geteuid();
        struct stat st;
        int fixed = 0;

        if (!state_dir || !*state_dir)
                return -EINVAL;

        fd = open_state_file(state_dir, CREDENTIALS_FILE);
        if (fd == -EACCES) {
                /* Not even readable for us: whose it is can still be told (and then it is not ours). */
                _cleanup_close_ int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                if (dfd < 0 || fstatat(dfd, CREDENTIALS_FILE, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_uid == uid)
                        return -EACCES;
                if (ret_before)
                        *ret_before = st;
                return CREDENTIALS_NOT_OURS;
        }
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (ret_before)
                *ret_before = st;

        if (st.st_uid != uid) {
                /* Only root can give a file away; the mode of another user's file is not ours to set. */
                if (uid != 0)
                        return CREDENTIALS_NOT_OURS;
                if (fchown(fd, uid, getegid()) < 0)
                        return negative_errno();
                fixed |= CREDENTIALS_OWNER_FIXED;
        }
        /* Anything beyond rw for the owner: group or others, but also x, setuid, sticky. */
        if ((st.st_mode & 07777 & ~(mode_t)0600) != 0) {
                if (fchmod(fd, 0600) < 0)
                        return negative_errno();
                fixed |= CREDENTIALS_MODE_FIXED;
        }
        return fixed;
}

int credentials_match(const Credentials *c, const char *product_id, const char *device_id)
{
        return c && c->product_id && c->device_id && product_id && device_id &&
               strcmp(c->product_id, product_id) == 0 && strcmp(c->device_id, device_id) == 0;
}

Credentials *credentials_free(Credentials *c)
{
        if (!c)
                return NULL;

        free(c->product_id);
        free(c->device_id);
        erase_and_free(c->device_secret);
        free(c);
        return NULL;
}
