/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire (SPEC sections 2 and 3): topic names, CMD numbers and the JSON of
 * every message. Nothing else in the daemon knows a key name or a topic
 * layout.
 *
 * Reading is lenient where the platform's guide is sloppy and strict
 * everywhere else:
 *  - json-c's tokener in its default (non-strict) mode takes the guide's
 *    trailing commas and stray spaces; this was checked against json-c 0.16,
 *    and a unit test keeps checking it. Input must be strict UTF-8 (checked
 *    here: json-c's check lets overlong forms through), hold one object and
 *    nothing after it but whitespace, and nest at most PROTOCOL_MAX_DEPTH
 *    deep.
 *  - ID is a string of 1-PROTOCOL_MAX_ID bytes. A JSON integer is taken too,
 *    as its decimal text: a platform that numbers its commands still gets an
 *    answer (the receipt echoes the ID as a string; dropping the command
 *    would leave it unanswered for good). json-c saturates integers beyond
 *    64 bits without telling (UINT64_MAX above, INT64_MIN below; checked
 *    against json-c 0.16 by a unit test), so those two values are refused:
 *    the ID they stand for cannot be echoed exactly, and an answer with
 *    another ID would answer a command that was never sent.
 *  - CMD is a non-negative integer or a string of 1-9 digits.
 *  - A null value counts as an absent key.
 *  - Every command with an ID gets an answer (SPEC 5.1): once the ID
 *    decodes, a missing or bad CMD, an over-long ID, or a known key with
 *    another type, an over-long string or a string with an embedded NUL
 *    gives the message with `invalid` saying what is wrong, and nothing but
 *    its CMD and ID; the caller refuses it with that reason. Nothing is
 *    ever half-used.
 *  - Without an ID, or with one that cannot be echoed, there is nothing to
 *    answer: the message is dropped (-ENOMSG, -EBADMSG, -ERANGE).
 * The payload buffer belongs to the caller (libmosquitto); the copies of
 * DEVICE_SECRET made here, json-c's parse buffer and string included, are
 * erased before they are freed. (Not reachable: a block json-c's printbuf
 * left behind when realloc() moved it.)
 */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include <json-c/json.h>

#include "protocol.h"
#include "util/macro.h"

#define PROTOCOL_MAX_DEPTH 8
#define PROTOCOL_MAX_SECRET 1024
#define PROTOCOL_MAX_CMD_DIGITS 9   /* fits an int */
#define PROTOCOL_MAX_SIZE_DIGITS 20 /* UINT64_MAX; strtoull() tells overflow */
#define JSON_FORMAT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *const topic_suffix[_TOPIC_MAX] = {
        [TOPIC_OTA_POST] = "ota/post",
        [TOPIC_OTA_SET] = "ota/set",
        [TOPIC_REGISTER_POST] = "register/post",
        [TOPIC_REGISTER_SET] = "register/set",
};

/* A topic level: neither empty nor a separator or an MQTT wildcard, which would widen a subscription. */
static bool topic_level_valid(const char *s)
{
        return s && *s && !strpbrk(s, "/+#");
}

int protocol_topic(TopicKind kind, const char *product_id, const char *device_id, char **ret)
{
        char *t;
        size_t n;

        if (kind < 0 || kind >= _TOPIC_MAX || !topic_level_valid(product_id) ||
            !topic_level_valid(device_id) || !ret)
                return -EINVAL;

        n = strlen("/sys///thing/") + strlen(product_id) + strlen(device_id) + strlen(topic_suffix[kind]) +
            1;
        t = malloc(n);
        if (!t)
                return -ENOMEM;
        (void)snprintf(t, n, "/sys/%s/%s/thing/%s", product_id, device_id, topic_suffix[kind]);

        *ret = t;
        return 0;
}

/* Returns the rest of S after PREFIX, or NULL. */
static const char *skip_prefix(const char *s, const char *prefix)
{
        size_t n = strlen(prefix);

        return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

TopicKind protocol_topic_kind(const char *topic, const char *product_id, const char *device_id)
{
        const char *p;

        if (!topic || !topic_level_valid(product_id) || !topic_level_valid(device_id))
                return _TOPIC_INVALID;

        /* Compared level by level; IDs without '/' make the split unambiguous. */
        p = skip_prefix(topic, "/sys/");
        if (p)
                p = skip_prefix(p, product_id);
        if (p)
                p = skip_prefix(p, "/");
        if (p)
                p = skip_prefix(p, device_id);
        if (p)
                p = skip_prefix(p, "/thing/");
        if (!p)
                return _TOPIC_INVALID;

        for (TopicKind k = 0; k < _TOPIC_MAX; k++)
                if (strcmp(p, topic_suffix[k]) == 0)
                        return k;

        return _TOPIC_INVALID;
}

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. json-c's own JSON_TOKENER_VALIDATE_UTF8 (0.16) lets overlong
 * forms such as C0 AF ("/") through.
 */
static bool utf8_valid(const uint8_t *s, size_t len)
{
        size_t i = 0;

        while (i < len) {
                uint8_t c = s[i];
                uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
                size_t n;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1;
                else if (c >= 0xe0 && c <= 0xef) {
                        n = 2;
                        if (c == 0xe0)
                                lo = 0xa0; /* overlong */
                        else if (c == 0xed)
                                hi = 0x9f; /* surrogates */
                } else if (c >= 0xf0 && c <= 0xf4) {
                        n = 3;
                        if (c == 0xf0)
                                lo = 0x90; /* overlong */
                        else if (c == 0xf4)
                                hi = 0x8f; /* above U+10FFFF */
                } else
                        return false;

                if (len - i - 1 < n || s[i + 1] < lo || s[i + 1] > hi)
                        return false;
                for (size_t k = 2; k <= n; k++)
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                i += n + 1;
        }
        return true;
}

static void json_object_putp(json_object **o)
{
        json_object_put(*o);
}

/*
 * json-c copies every string it parses through the tokener's printbuf and
 * does not clear it. Its struct is public in 0.16 (json_tokener.h,
 * printbuf.h), so the text of a secret can be wiped before it is freed.
 */
static void json_tokener_erase_and_freep(json_tokener **t)
{
        if (!*t)
                return;
        if ((*t)->pb && (*t)->pb->buf && (*t)->pb->size > 0)
                explicit_bzero((*t)->pb->buf, (size_t)(*t)->pb->size);
        json_tokener_free(*t);
}

/* Frees a parsed message after overwriting its secret, whatever the parse found wrong with it. */
static void json_message_erase_and_putp(json_object **o)
{
        json_object *v;

        if (*o && json_object_is_type(*o, json_type_object) &&
            json_object_object_get_ex(*o, "DEVICE_SECRET", &v) && json_object_is_type(v, json_type_string))
                /* The storage belongs to V, which we own; get_string only hands it out as const. */
                explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
        json_object_put(*o);
}

/* The value of KEY, or NULL when it is absent or null. */
static json_object *json_get(json_object *o, const char *key)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return NULL;
        return v; /* NULL for a JSON null */
}

#define STRINGIFY(x) #x
#define XSTRINGIFY(x) STRINGIFY(x)

/* A string field of a platform message, and the REASONs a command is refused with when it is bad. */
typedef struct StringField {
        const char *key;
        size_t max;
        const char *not_string, *too_long, *has_nul;
} StringField;

/* clang-format off */
#define STRING_FIELD(k, max) { (k), (max), k " must be a string", k " longer than " XSTRINGIFY(max) " bytes", \
                               k " contains a NUL character" }
#define REASON_BAD_CMD \
        "CMD must be a non-negative integer or a string of 1-" XSTRINGIFY(PROTOCOL_MAX_CMD_DIGITS) " digits"
#define REASON_BAD_SIZE \
        "SIZE must be a non-negative integer or a string of 1-" XSTRINGIFY(PROTOCOL_MAX_SIZE_DIGITS) " digits"
/* clang-format on */

static const StringField field_url = STRING_FIELD("URL", PROTOCOL_MAX_FIELD);
/* Versions are only length-limited here: a bad one must reach the caller, which refuses it (SPEC 5.1). */
static const StringField field_fw_version = STRING_FIELD("FW_VERSION", PROTOCOL_MAX_FIELD);
static const StringField field_version = STRING_FIELD("VERSION", PROTOCOL_MAX_FIELD);
static const StringField field_md5 = STRING_FIELD("MD5", PROTOCOL_MAX_FIELD);
static const StringField field_sha256 = STRING_FIELD("SHA256", PROTOCOL_MAX_FIELD);
static const StringField field_secret = STRING_FIELD("DEVICE_SECRET", PROTOCOL_MAX_SECRET);

/*
 * Returns 0 with *ret = NULL when absent, 1 with a copy when present,
 * -EBADMSG with *reason set when it is not a string of at most F->max bytes
 * without NUL, or -ENOMEM.
 */
static int json_get_string(json_object *o, const StringField *f, char **ret, const char **reason)
{
        json_object *v = json_get(o, f->key);
        const char *s;
        size_t len;

        *ret = NULL;
        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_string)) {
                *reason = f->not_string;
                return -EBADMSG;
        }

        s = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        if (len > f->max) {
                *reason = f->too_long;
                return -EBADMSG;
        }
        if (strlen(s) != len) { /* "\u0000" would silently cut the string */
                *reason = f->has_nul;
                return -EBADMSG;
        }

        *ret = strndup(s, len);
        return *ret ? 1 : -ENOMEM;
}

static bool all_digits(const char *s, size_t max)
{
        size_t n = strspn(s, "0123456789");

        return n > 0 && n <= max && s[n] == '\0';
}

/* Returns 0, or -ENOMSG (absent) or -EBADMSG (not a CMD). */
static int parse_cmd(json_object *o, int *ret)
{
        json_object *v = json_get(o, "CMD");
        int64_t i;

        if (!v)
                return -ENOMSG;

        if (json_object_is_type(v, json_type_int)) {
                i = json_object_get_int64(v);
                if (i < 0 || i > INT_MAX)
                        return -EBADMSG;
                *ret = (int)i;
                return 0;
        }

        if (json_object_is_type(v, json_type_string) &&
            all_digits(json_object_get_string(v), PROTOCOL_MAX_CMD_DIGITS)) {
                *ret = (int)strtol(json_object_get_string(v), NULL, 10); /* at most 9 digits: no overflow */
                return 0;
        }

        return -EBADMSG;
}

/* An integer ID as its decimal text, or -ERANGE when json-c may have saturated it. */
static int parse_int_id(json_object *v, char **ret)
{
        int64_t i = json_object_get_int64(v);
        uint64_t u = json_object_get_uint64(v);
        char buf[sizeof("-9223372036854775808")];

        /* json-c 0.16 reads numbers above UINT64_MAX as UINT64_MAX and below INT64_MIN as INT64_MIN,
         * with no error: those two cannot be told from what they stand for. */
        if (i == INT64_MIN || u == UINT64_MAX)
                return -ERANGE;
        /* get_int64() clamps to INT64_MAX what json-c holds as a uint64: read those unsigned. */
        if (i == INT64_MAX)
                (void)snprintf(buf, sizeof(buf), "%" PRIu64, u);
        else
                (void)snprintf(buf, sizeof(buf), "%" PRId64, i);
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

/*
 * Returns 0 with the ID (and *reason set when it is longer than
 * PROTOCOL_MAX_ID: answered, but not remembered), or -ENOMSG (absent),
 * -EBADMSG (empty, with a NUL, neither a string nor an integer), -ERANGE
 * (an integer json-c may have altered), -ENOMEM.
 */
static int parse_id(json_object *o, char **ret, const char **reason)
{
        json_object *v = json_get(o, "ID");
        const char *s;
        size_t len;

        if (!v)
                return -ENOMSG;
        if (json_object_is_type(v, json_type_int))
                return parse_int_id(v, ret);
        if (!json_object_is_type(v, json_type_string))
                return -EBADMSG;

        s = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        if (len == 0 || strlen(s) != len)
                return -EBADMSG;
        /* Echoed whatever its length (the payload limit bounds it), so that the platform learns why. */
        if (len > PROTOCOL_MAX_ID)
                *reason = "ID longer than " XSTRINGIFY(PROTOCOL_MAX_ID) " bytes";

        *ret = strndup(s, len);
        return *ret ? 0 : -ENOMEM;
}

/* Returns 0, or -EBADMSG with *reason set, or -ENOMEM. */
static int parse_size(json_object *o, PlatformMessage *m, const char **reason)
{
        json_object *v = json_get(o, "SIZE");

        if (!v)
                return 0;

        if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0)
                /* Beyond UINT64_MAX json-c saturates, which is larger than any image we take anyway. */
                m->size = json_object_get_uint64(v);
        else if (json_object_is_type(v, json_type_string) &&
                 all_digits(json_object_get_string(v), PROTOCOL_MAX_SIZE_DIGITS)) {
                unsigned long long u;

                errno = 0;
                u = strtoull(json_object_get_string(v), NULL, 10);
                if (errno == ERANGE) {
                        *reason = "SIZE larger than 18446744073709551615";
                        return -EBADMSG;
                }
                m->size = (uint64_t)u;
        } else {
                *reason = REASON_BAD_SIZE;
                return -EBADMSG;
        }

        m->has_size = true;
        return 0;
}

/* The fields after CMD and ID. Returns 0, or -EBADMSG with *reason set, or -ENOMEM. */
static int message_fields_from_json(json_object *o, PlatformMessage *m, const char **reason)
{
        int r;

        r = json_get_string(o, &field_url, &m->url, reason);
        if (r < 0)
                return r;

        /* The guide's text names the field VERSION, its sample FW_VERSION. */
        r = json_get_string(o, &field_fw_version, &m->fw_version, reason);
        if (r == 0)
                r = json_get_string(o, &field_version, &m->fw_version, reason);
        if (r < 0)
                return r;

        r = json_get_string(o, &field_md5, &m->md5, reason);
        if (r < 0)
                return r;

        r = json_get_string(o, &field_sha256, &m->sha256, reason);
        if (r < 0)
                return r;

        r = parse_size(o, m, reason);
        if (r < 0)
                return r;

        r = json_get_string(o, &field_secret, &m->device_secret, reason);
        if (r < 0)
                return r;
        if (m->device_secret && *m->device_secret == '\0') { /* nothing to log in with */
                *reason = "DEVICE_SECRET must not be empty";
                return -EBADMSG;
        }

        return 0;
}

/* Drops every field but CMD and ID, the secret erased: a refused message is never half-used. */
static void message_keep_header(PlatformMessage *m, const char *invalid)
{
        PlatformMessage header = {.cmd = m->cmd, .id = m->id, .invalid = invalid};

        m->id = NULL; /* moved into HEADER */
        platform_message_clear(m);
        *m = header;
}

static int message_from_json(json_object *o, PlatformMessage *m)
{
        const char *invalid = NULL;
        int r;

        /* The ID first: without one there is nobody to answer. */
        r = parse_id(o, &m->id, &invalid);
        if (r < 0)
                return r;

        r = parse_cmd(o, &m->cmd);
        if (r < 0) {
                m->cmd = CMD_NONE;
                if (!invalid)
                        invalid = r == -ENOMSG ? "CMD missing" : REASON_BAD_CMD;
        }

        if (!invalid) {
                r = message_fields_from_json(o, m, &invalid);
                if (r < 0 && r != -EBADMSG)
                        return r;
        }

        if (invalid)
                message_keep_header(m, invalid);
        return 0;
}

int protocol_parse(const void *payload, size_t len, PlatformMessage *ret)
{
        _cleanup_(json_tokener_erase_and_freep) json_tokener *tok = NULL;
        _cleanup_(json_message_erase_and_putp) json_object *root = NULL;
        PlatformMessage m = {};
        const char *end;
        int r;

        if (!ret)
                return -EINVAL;
        *ret = (PlatformMessage){};

        /* Before anything looks at the bytes: json-c would allocate for all of them. */
        if (len > PROTOCOL_MAX_PAYLOAD)
                return -EMSGSIZE;
        if (!payload || len == 0 || !utf8_valid(payload, len))
                return -EBADMSG;

        tok = json_tokener_new_ex(PROTOCOL_MAX_DEPTH);
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, payload, (int)len);
        /* NULL also for truncated input (json_tokener_continue) and for a bare "null". */
        if (!root || !json_object_is_type(root, json_type_object))
                return -EBADMSG;

        /* The tokener stops after the first value; anything but whitespace after it is garbage. */
        end = (const char *)payload + json_tokener_get_parse_end(tok);
        while (end < (const char *)payload + len && *end != '\0' && strchr(" \t\r\n", *end))
                end++;
        if (end != (const char *)payload + len)
                return -EBADMSG;

        r = message_from_json(root, &m);
        if (r < 0) {
                platform_message_clear(&m);
                return r;
        }

        *ret = m;
        return 0;
}

void platform_message_clear(PlatformMessage *m)
{
        if (!m)
                return;

        free(m->id);
        free(m->url);
        free(m->fw_version);
        free(m->md5);
        free(m->sha256);
        erase_and_free(m->device_secret);
        *m = (PlatformMessage){};
}

/* One key of an outgoing message: a number (is_num) or a string. */
typedef struct Field {
        const char *key;
        const char *str;
        int64_t num;
        bool is_num;
        bool optional; /* skipped when str is NULL */
} Field;

/* clang-format off */
#define STR(k, v) { .key = (k), .str = (v) }
#define OPT_STR(k, v) { .key = (k), .str = (v), .optional = true }
#define NUM(k, v) { .key = (k), .num = (v), .is_num = true }
#define ENCODE(ret, ...) encode((const Field[]){ __VA_ARGS__ }, ELEMENTSOF(((const Field[]){ __VA_ARGS__ })), ret)
/* clang-format on */

/* Keys come out in FIELDS order: json-c keeps objects in insertion order. */
static int encode(const Field *fields, size_t n, char **ret)
{
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *s;
        char *copy;

        if (!ret)
                return -EINVAL;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                json_object *v;

                if (!fields[i].is_num && !fields[i].str) {
                        if (fields[i].optional)
                                continue;
                        return -EINVAL;
                }

                v = fields[i].is_num ? json_object_new_int64(fields[i].num)
                                     : json_object_new_string(fields[i].str);
                if (!v)
                        return -ENOMEM;
                if (json_object_object_add(o, fields[i].key, v) < 0) {
                        json_object_put(v); /* json-c leaves it to us on failure */
                        return -ENOMEM;
                }
        }

        s = json_object_to_json_string_ext(o, JSON_FORMAT);
        if (!s)
                return -ENOMEM;

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;

        *ret = copy;
        return 0;
}

int protocol_version_report(const char *id, const char *hw_version, const char *fw_version, char **ret)
{
        return ENCODE(ret, NUM("CMD", CMD_VERSION_REPORT), STR("ID", id), STR("HW_VERSION", hw_version),
                      STR("FW_VERSION", fw_version));
}

int protocol_ota_receipt(const char *id, bool ok, const char *reason, char **ret)
{
        return ENCODE(ret, NUM("CMD", CMD_OTA), STR("ID", id), STR("BACK", ok ? "OK" : "FAIL"),
                      OPT_STR("REASON", ok ? NULL : reason));
}

int protocol_progress(const char *id, const char *state, unsigned progress, const char *reason, char **ret)
{
        return ENCODE(ret, NUM("CMD", CMD_PROGRESS), STR("ID", id), STR("STATE", state),
                      NUM("PROGRESS", MIN(progress, 100u)), OPT_STR("REASON", reason));
}

int protocol_register_request(const char *id, const char *product_id, const char *device_id, char **ret)
{
        return ENCODE(ret, NUM("CMD", CMD_REGISTER_REQUEST), STR("ID", id), STR("PRODUCT_ID", product_id),
                      STR("DEVICE_ID", device_id));
}

int protocol_register_receipt(const char *id, char **ret)
{
        return ENCODE(ret, NUM("CMD", CMD_REGISTER_SECRET), STR("ID", id), STR("BACK", "OK"));
}
