/* SPDX-License-Identifier: Apache-2.0 */
/* util/strings.c: control-character escaping, URL redaction, the version rule. */
#include <stdlib.h>

#include "tap.h"
#include "util/macro.h"
#include "util/strings.h"

static void check_escape(const char *in, size_t len, size_t size, const char *want, const char *name)
{
        char out[256];

        escape_control(in, len, out, size);
        is_str(out, want, name);
}

static void test_escape(void)
{
        char out[8];

        check_escape("plain text", 10, 256, "plain text", "printable text is copied");
        check_escape("a\x1b[2Jb", 6, 256, "a\\x1b[2Jb", "ESC is escaped");
        check_escape("x\ny\rz", 5, 256, "x\\x0ay\\x0dz", "newline and CR are escaped");
        check_escape("\x01\x1f\x7f", 3, 256, "\\x01\\x1f\\x7f", "0x01, 0x1f and DEL are escaped");
        check_escape("a\0b", 3, 256, "a\\x00b", "an embedded NUL is escaped");
        check_escape("\xc2\x9b" "1m", 4, 256, "\\xc2\\x9b1m", "a UTF-8 C1 control (CSI) is escaped");
        check_escape("caf\xc3\xa9", 5, 256, "caf\xc3\xa9", "other UTF-8 is kept");
        check_escape("\xc2\xa0", 2, 256, "\xc2\xa0", "U+00A0 is not a control");
        check_escape("abcdefghij", 10, 5, "abcd", "output is cut to the buffer");
        check_escape("ab\x1b", 3, 6, "ab", "an escape that does not fit is dropped whole");
        is_int(escape_control("\x1b", 1, out, sizeof(out)), 4, "returns the length written");
        is_int(escape_control("x", 1, out, 0), 0, "a zero-size buffer is left alone");

        ok(has_control("a\tb"), "has_control: a tab");
        ok(has_control("a\xc2\x85"), "has_control: NEL (C1)");
        ok(!has_control("version 1.0 \xc3\xa9"), "has_control: none");
}

static void check_text(const char *in, size_t size, const char *want, const char *name)
{
        char out[256];

        escape_text(in, strlen(in), out, size);
        is_str(out, want, name);
}

static void test_escape_text(void)
{
        check_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                   "escape_text keeps valid UTF-8 of 2, 3 and 4 bytes");
        check_text("a\x1b" "b", 256, "a\\x1bb", "escape_text escapes controls");
        check_text("\xc2\x85", 256, "\\xc2\\x85", "escape_text escapes C1 controls");
        check_text("a\xff" "b", 256, "a\\xffb", "escape_text escapes a byte that is never UTF-8");
        check_text("\xc3" "x", 256, "\\xc3x", "escape_text escapes a lead byte without its continuation");
        check_text("\x80", 256, "\\x80", "escape_text escapes a lone continuation byte");
        check_text("\xc0\xaf", 256, "\\xc0\\xaf", "escape_text escapes an overlong form");
        check_text("\xed\xa0\x80", 256, "\\xed\\xa0\\x80", "escape_text escapes a UTF-16 surrogate");
        check_text("\xf4\x90\x80\x80", 256, "\\xf4\\x90\\x80\\x80", "escape_text escapes a value past U+10FFFF");
        check_text("\xe2\x82", 256, "\\xe2\\x82", "escape_text escapes a sequence cut at the end");
        check_text("ab\xe2\x82\xac", 5, "ab", "escape_text never cuts a character in two");
        check_text("\xc3\xa9\xc3\xa9", 4, "\xc3\xa9", "escape_text drops a whole character that does not fit");
}

static void check_redact(const char *url, const char *want, const char *name)
{
        char *r = url_redact(url);

        is_str(r, want, name);
        free(r);
}

static void test_redact(void)
{
        check_redact("http://host/fw.swu", "http://host/fw.swu", "no user info: unchanged");
        check_redact("http://user:pass@host/fw.swu", "http://user:***@host/fw.swu", "password hidden");
        check_redact("https://u:p%40ss@h:8443/a?b=c", "https://u:***@h:8443/a?b=c", "port and query kept");
        check_redact("http://u:p@ss@host/x", "http://u:***@host/x", "an unencoded @ in the password");
        check_redact("http://user@host/x", "http://user@host/x", "a user name alone is kept");
        check_redact("http://:secret@host", "http://:***@host", "empty user name");
        check_redact("http://host/a@b:c", "http://host/a@b:c", "an @ in the path is not user info");
        check_redact("http://host?q=a:b@c", "http://host?q=a:b@c", "an @ in the query is not user info");
        check_redact("not a url", "not a url", "not a URL: unchanged");
        ok(url_redact(NULL) == NULL, "NULL gives NULL");
}

static void test_version(void)
{
        ok(version_is_valid("2.0.1"), "2.0.1");
        ok(version_is_valid("1.0.0-rc1+build.5~x_y"), "every allowed character");
        ok(!version_is_valid(""), "empty");
        ok(!version_is_valid("."), ".");
        ok(!version_is_valid(".."), "..");
        ok(!version_is_valid("1.0 beta"), "a space");
        ok(!version_is_valid("1/2"), "a slash");
        ok(!version_is_valid("v\xc3\xa9"), "non-ASCII");
        ok(version_is_valid("0123456789012345678901234567890123456789012345678901234567890123"), "64 characters");
        ok(!version_is_valid("01234567890123456789012345678901234567890123456789012345678901234"), "65 characters");
        ok(!version_is_valid(NULL), "NULL");
}

int main(void)
{
        test_escape();
        test_escape_text();
        test_redact();
        test_version();
        return tap_done();
}
