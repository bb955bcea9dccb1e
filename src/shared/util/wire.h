/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The framing every message between krtiot's programs uses (the fetcher's
 * status lines, the installer's requests and answers): one line,
 *
 *     VERB KEY=VALUE KEY=VALUE...\n
 *
 * VERB and KEY are 1-31 characters of [a-z0-9_-]; VALUE is any string
 * without NUL, percent-encoded: every byte outside 0x21-0x7e, and '%', '='
 * and ' ', is written %XX. A line is at most WIRE_LINE_MAX bytes with its
 * newline, and holds at most WIRE_FIELDS_MAX fields; a key appears once.
 * The parser takes nothing else: whatever crosses between a privileged and
 * an unprivileged process is checked here, whole, before anyone uses it.
 *
 * What the verbs and keys mean is said by the header of each wire
 * (fetch/fetch-wire.h, install/install-wire.h), not here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_LINE_MAX 8192
#define WIRE_FIELDS_MAX 16
#define WIRE_NAME_MAX 31

typedef struct WireField {
        char key[WIRE_NAME_MAX + 1];
        char *value; /* decoded, NUL-terminated, malloc()ed */
} WireField;

typedef struct WireMessage {
        char verb[WIRE_NAME_MAX + 1];
        WireField fields[WIRE_FIELDS_MAX];
        size_t n_fields;
} WireMessage;

/*
 * Parses one line (LEN bytes; a trailing "\n" is allowed, nothing after it).
 * Returns 0 and fills *ret (free with wire_message_done()), -EMSGSIZE for a
 * line over WIRE_LINE_MAX or more than WIRE_FIELDS_MAX fields, -EBADMSG for
 * anything malformed (bad names, bad escapes, %00, a repeated key), or
 * -ENOMEM. On failure *ret owns nothing.
 */
int wire_parse(const char *line, size_t len, WireMessage *ret);
void wire_message_done(WireMessage *m);

/* The value of KEY, or NULL. */
const char *wire_get(const WireMessage *m, const char *key);
/* KEY as a decimal number without sign or leading zeros (but "0"): 0, -ENOENT (absent), -EBADMSG. */
int wire_get_u64(const WireMessage *m, const char *key, uint64_t *ret);
/* KEY as a decimal number with an optional '-': 0, -ENOENT, -EBADMSG (also when out of int range). */
int wire_get_int(const WireMessage *m, const char *key, int *ret);

/*
 * Building a line in a caller's buffer of WIRE_LINE_MAX bytes:
 *   WireBuilder b;
 *   wire_begin(&b, buf, "progress");
 *   wire_add(&b, "etag", etag); wire_add_u64(&b, "done", n);
 *   r = wire_end(&b, &len);    // 0 and the length with the newline, or -E2BIG, -EINVAL
 * A NULL value is skipped (an absent field). Errors are remembered and
 * returned by wire_end().
 */
typedef struct WireBuilder {
        char *buf;
        size_t len;
        int error;
} WireBuilder;

void wire_begin(WireBuilder *b, char buf[static WIRE_LINE_MAX], const char *verb);
void wire_add(WireBuilder *b, const char *key, const char *value);
void wire_add_u64(WireBuilder *b, const char *key, uint64_t value);
void wire_add_int(WireBuilder *b, const char *key, int value);
int wire_end(WireBuilder *b, size_t *ret_len);
