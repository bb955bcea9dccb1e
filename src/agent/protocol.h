/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire: topics, CMD numbers, and the JSON of every message (SPEC
 * sections 2 and 3). This is the only file that knows them; a platform with
 * a different layout is a change here and nowhere else.
 *
 * The device writes strict, compact JSON. It reads the platform's messages
 * leniently (trailing commas, CMD as number or digit string, VERSION for
 * FW_VERSION, unknown keys ignored) because the platform's own guide does.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#define PROTOCOL_MAX_PAYLOAD (16 * 1024)
#define PROTOCOL_MAX_ID 64         /* longest ID accepted from the platform */
#define PROTOCOL_MAX_FIELD 4096    /* longest string field (URL) accepted */
#define PROTOCOL_MAX_VERSION 64

typedef enum ProtocolCmd {
        CMD_NONE = -1, /* decoded: CMD was missing or not a CMD (the message's `invalid` says which) */
        CMD_VERSION_REPORT = 10,
        CMD_OTA = 11, /* platform: upgrade command; device: its receipt */
        CMD_PROGRESS = 12,
        CMD_REGISTER_REQUEST = 20,
        CMD_REGISTER_SECRET = 21, /* platform: the secret; device: its receipt */
} ProtocolCmd;

typedef enum TopicKind {
        TOPIC_OTA_POST,
        TOPIC_OTA_SET,
        TOPIC_REGISTER_POST,
        TOPIC_REGISTER_SET,
        _TOPIC_MAX,
        _TOPIC_INVALID = -EINVAL,
} TopicKind;

/* "/sys/{p}/{d}/thing/ota/post" and friends, malloc()ed. Returns 0 or -ENOMEM. */
int protocol_topic(TopicKind kind, const char *product_id, const char *device_id, char **ret);

/* Which of our topics TOPIC is, or -EINVAL when it is none of them. */
TopicKind protocol_topic_kind(const char *topic, const char *product_id, const char *device_id);

/*
 * A message from the platform, decoded. Strings are malloc()ed and owned by
 * the struct; platform_message_clear() frees them and erases the secret.
 *
 * When `invalid` is set the message is to be refused with that REASON (a
 * static string, e.g. "URL must be a string"): it then holds its CMD
 * (CMD_NONE when that was the problem) and ID, and nothing else.
 */
typedef struct PlatformMessage {
        int cmd;  /* >= 0, or CMD_NONE with `invalid` set */
        char *id; /* 1-PROTOCOL_MAX_ID bytes, longer only with `invalid` set */
        const char *invalid;
        /* CMD 11 */
        char *url;
        char *fw_version; /* FW_VERSION, or VERSION */
        char *md5;        /* lower-case hex as received, not validated here */
        char *sha256;
        uint64_t size;
        bool has_size;
        /* CMD 21 */
        char *device_secret;
} PlatformMessage;

/*
 * Decodes PAYLOAD. Every message with an ID that can be echoed decodes, so
 * that it can be answered (SPEC 5.1). Returns 0 and fills *ret (check
 * ret->invalid: set when CMD is missing or bad, the ID is longer than
 * PROTOCOL_MAX_ID, or a known field has the wrong type, is too long or holds
 * a NUL), or, when there is nobody to answer:
 *   -EMSGSIZE  payload over PROTOCOL_MAX_PAYLOAD
 *   -EBADMSG   not strict UTF-8, not JSON, not one object; or an ID that is
 *              empty, holds a NUL, or is neither a string nor an integer
 *   -ERANGE    an integer ID at or beyond the 64-bit limits (UINT64_MAX,
 *              INT64_MIN), which json-c saturates: it cannot be echoed exactly
 *   -ENOMSG    no ID
 *   -ENOMEM
 * On failure *ret is zeroed and owns nothing. Which command numbers are
 * meaningful is the caller's business: any integer CMD decodes. What the
 * daemon does with each case: an unknown CMD is dropped with a warning; on
 * ota/set, CMD_NONE is answered as CMD 11 FAIL with the reason; on
 * register/set, an invalid message is dropped with a warning.
 */
int protocol_parse(const void *payload, size_t len, PlatformMessage *ret);
void platform_message_clear(PlatformMessage *m);

/* Encoders: compact JSON, malloc()ed, NUL-terminated. Return 0 or -ENOMEM. */
int protocol_version_report(const char *id, const char *hw_version, const char *fw_version, char **ret);
/* REASON may be NULL; only written when !ok. */
int protocol_ota_receipt(const char *id, bool ok, const char *reason, char **ret);
/* STATE e.g. "DOWNLOADING"; REASON may be NULL. */
int protocol_progress(const char *id, const char *state, unsigned progress, const char *reason, char **ret);
int protocol_register_request(const char *id, const char *product_id, const char *device_id, char **ret);
int protocol_register_receipt(const char *id, char **ret);

