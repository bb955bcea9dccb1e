/* SPDX-License-Identifier: Apache-2.0 */
/*
 * String helpers for outside text. None of them allocates more than its
 * input's size plus a constant, and escape_control() never allocates.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util/macro.h"
#include "util/strings.h"

static bool is_c0_or_del(unsigned char c)
{
        return c < 0x20 || c == 0x7f;
}

/* U+0080..U+009F in UTF-8: C2 80..C2 9F. */
static bool is_c1(const unsigned char *p, size_t left)
{
        return left >= 2 && p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
}

/* The length of the valid UTF-8 sequence at P (1-4; no overlong form, surrogate or value past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
        size_t n;
        uint32_t c;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2, c = p[0] & 0x1f;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                n = 3, c = p[0] & 0x0f;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                n = 4, c = p[0] & 0x07;
        else
                return 0;
        if (left < n)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (p[i] & 0x3f);
        }
        if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        return n;
}

static size_t escape(const char *in, size_t len, char *out, size_t size, bool utf8)
{
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = (const unsigned char *)in;
        size_t n = 0;

        if (size == 0)
                return 0;

        for (size_t i = 0; i < len; i++) {
                size_t k = is_c1(p + i, len - i) ? 2 : is_c0_or_del(p[i]) ? 1 : 0, keep = 1;

                if (k == 0 && utf8 && p[i] >= 0x80) {
                        keep = utf8_len(p + i, len - i);
                        if (keep == 0)
                                k = 1;
                }
                if (k == 0) {
                        if (n + keep >= size)
                                break;
                        memcpy(out + n, p + i, keep);
                        n += keep;
                        i += keep - 1;
                        continue;
                }
                if (n + 4 * k >= size)
                        break;
                for (size_t j = 0; j < k; j++) {
                        out[n++] = '\\';
                        out[n++] = 'x';
                        out[n++] = hex[p[i + j] >> 4];
                        out[n++] = hex[p[i + j] & 0xf];
                }
                i += k - 1;
        }
        out[n] = '\0';
        return n;
}

size_t escape_control(const char *in, size_t len, char *out, size_t size)
{
        return escape(in, len, out, size, false);
}

size_t escape_text(const char *in, size_t len, char *out, size_t size)
{
        return escape(in, len, out, size, true);
}

bool has_control(const char *s)
{
        size_t len = strlen(s);

        for (size_t i = 0; i < len; i++)
                if (is_c0_or_del((unsigned char)s[i]) || is_c1((const unsigned char *)s + i, len - i))
                        return true;
        return false;
}

char *url_redact(const char *url)
{
        const char *authority, *end, *at, *colon;
        size_t head, n;
        char *r;

        if (!url)
                return NULL;

        authority = strstr(url, "://");
        if (!authority)
                return strdup(url);
        authority += 3;
        end = authority + strcspn(authority, "/?#");

        /* The user info ends at the last '@' of the authority (a password may hold '@' unencoded). */
        at = NULL;
        for (const char *p = authority; p < end; p++)
                if (*p == '@')
                        at = p;
        if (!at)
                return strdup(url);
        colon = memchr(authority, ':', (size_t)(at - authority));
        if (!colon)
                return strdup(url); /* a user name alone is no secret */

        head = (size_t)(colon + 1 - url); /* up to the ':' that starts the password */
        if (head > INT_MAX)
                return NULL;
        n = head + strlen("***") + strlen(at) + 1;
        r = malloc(n);
        if (!r)
                return NULL;
        (void)snprintf(r, n, "%.*s***%s", (int)head, url, at);
        return r;
}

bool version_is_valid(const char *v)
{
        size_t len;

        if (!v)
                return false;

        len = strlen(v);
        if (len == 0 || len > VERSION_MAX_LEN)
                return false;
        if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
                return false;

        return strspn(v, "0123456789"
                         "abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "._+~-") == len;
}
