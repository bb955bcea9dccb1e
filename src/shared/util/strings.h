/* SPDX-License-Identifier: Apache-2.0 */
/*
 * String helpers for text that came from outside (the network, a hook, a
 * file): escaping it for a log line or STATUS=, hiding the password of a
 * URL, and the one rule every version obeys.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * Copies the LEN bytes at IN to OUT (SIZE bytes, SIZE > 0), NUL-terminated,
 * with every control character written as "\xNN": C0 (0x00-0x1f), DEL
 * (0x7f) and the UTF-8 encoded C1 controls (U+0080-U+009F, which terminals
 * also obey). An escape is never cut in half: output that does not fit is
 * dropped whole. Returns the length written (< SIZE).
 */
size_t escape_control(const char *in, size_t len, char *out, size_t size);

/*
 * escape_control(), and also every byte that is not part of valid UTF-8: the
 * result is valid UTF-8 without control characters (what D-Bus strings and a
 * terminal need). Never cuts a character in two.
 */
size_t escape_text(const char *in, size_t len, char *out, size_t size);

/* Whether the NUL-terminated S holds a character that escape_control() escapes. */
bool has_control(const char *s);

/*
 * A copy of URL fit for a log: a password in its user info
 * ("http://user:secret@host/...") is replaced by "***". Anything that does
 * not parse as scheme://authority is copied unchanged. Returns NULL on ENOMEM.
 */
char *url_redact(const char *url);

/*
 * The version rule (SPEC 5.1), for every version source: a command's
 * target, a file, the hook, a literal in the configuration. 1-64 characters
 * of [0-9A-Za-z._+~-], and not "." or "..", because a version may end up as
 * a path component.
 */
#define VERSION_MAX_LEN 64
#define VERSION_RULE "1-64 characters of 0-9A-Za-z._+~-"
bool version_is_valid(const char *v);
