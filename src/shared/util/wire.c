/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire framing (wire.h). The parser walks the line once, left to right,
 * and allocates at most one decoded value per field, each no longer than the
 * line; a message it refuses owns nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/macro.h"
#include "util/wire.h"

static bool name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* The length of the name at P (up to END), 0 when there is none or it is too long. */
static size_t name_len(const char *p, const char *end)
{
        size_t n = 0;

        while (p + n < end && name_char(p[n]))
                n++;
        return n <= WIRE_NAME_MAX ? n : 0;
}

static int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

static bool raw_ok(unsigned char c)
{
        return c > 0x20 && c < 0x7f && c != '%' && c != '=';
}

/* Decodes the LEN bytes at P. Returns a new string, NULL with *ret_error set. */
static char *value_decode(const char *p, size_t len, int *ret_error)
{
        char *v = malloc(len + 1), *o = v;

        if (!v) {
                *ret_error = -ENOMEM;
                return NULL;
        }
        for (size_t i = 0; i < len; i++) {
                int hi, lo;

                if (raw_ok((unsigned char)p[i])) {
                        *o++ = p[i];
                        continue;
                }
                if (p[i] != '%' || len - i < 3 || (hi = hex_value(p[i + 1])) < 0 ||
                    (lo = hex_value(p[i + 2])) < 0 || (hi == 0 && lo == 0)) {
                        free(v);
                        *ret_error = -EBADMSG;
                        return NULL;
                }
                *o++ = (char)(hi << 4 | lo);
                i += 2;
        }
        *o = '\0';
        return v;
}

void wire_message_done(WireMessage *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n_fields; i++)
                free(m->fields[i].value);
        *m = (WireMessage){};
}

int wire_parse(const char *line, size_t len, WireMessage *ret)
{
        WireMessage m = {};
        const char *p = line, *end;
        size_t n;
        int r = -EBADMSG;

        if (!line || !ret)
                return -EINVAL;
        *ret = (WireMessage){};
        if (len > WIRE_LINE_MAX)
                return -EMSGSIZE;
        if (len > 0 && line[len - 1] == '\n')
                len--;
        end = line + len;
        if (memchr(line, '\n', len))
                return -EBADMSG;

        n = name_len(p, end);
        if (n == 0 || (p + n < end && p[n] != ' '))
                return -EBADMSG;
        memcpy(m.verb, p, n);
        p += n;

        while (p < end) {
                WireField *f;
                const char *v;

                if (*p++ != ' ')
                        goto fail;
                n = name_len(p, end);
                if (n == 0 || p + n >= end || p[n] != '=')
                        goto fail;
                if (m.n_fields == WIRE_FIELDS_MAX) {
                        r = -EMSGSIZE;
                        goto fail;
                }
                f = &m.fields[m.n_fields];
                memcpy(f->key, p, n);
                f->key[n] = '\0';
                if (wire_get(&m, f->key)) /* looks at the fields before this one only */
                        goto fail;
                p += n + 1;
                v = p;
                while (p < end && *p != ' ')
                        p++;
                f->value = value_decode(v, (size_t)(p - v), &r);
                if (!f->value)
                        goto fail;
                m.n_fields++;
        }

        *ret = m;
        return 0;

fail:
        wire_message_done(&m);
        return r;
}

const char *wire_get(const WireMessage *m, const char *key)
{
        for (size_t i = 0; m && key && i < m->n_fields; i++)
                if (strcmp(m->fields[i].key, key) == 0)
                        return m->fields[i].value;
        return NULL;
}

int wire_get_u64(const WireMessage *m, const char *key, uint64_t *ret)
{
        const char *v = wire_get(m, key);
        uint64_t u = 0;

        if (!v)
                return -ENOENT;
        if (!*v || (v[0] == '0' && v[1]) || strspn(v, "0123456789") != strlen(v))
                return -EBADMSG;
        for (; *v; v++) {
                uint64_t d = (uint64_t)(*v - '0');

                if (u > (UINT64_MAX - d) / 10)
                        return -EBADMSG;
                u = u * 10 + d;
        }
        *ret = u;
        return 0;
}

int wire_get_int(const WireMessage *m, const char *key, int *ret)
{
        const char *v = wire_get(m, key);
        bool neg;
        uint64_t u = 0;

        if (!v)
                return -ENOENT;
        neg = v[0] == '-';
        if (neg)
                v++;
        if (!*v || (v[0] == '0' && v[1]) || strspn(v, "0123456789") != strlen(v) || strlen(v) > 10)
                return -EBADMSG;
        for (; *v; v++)
                u = u * 10 + (uint64_t)(*v - '0');
        if (u > (neg ? (uint64_t)INT_MAX + 1 : (uint64_t)INT_MAX))
                return -EBADMSG;
        *ret = neg ? (int)(-(int64_t)u) : (int)u;
        return 0;
}

static void builder_put(WireBuilder *b, const char *s, size_t n)
{
        if (b->error)
                return;
        /* One byte stays for the newline. */
        if (n >= WIRE_LINE_MAX - b->len) {
                b->error = -E2BIG;
                return;
        }
        memcpy(b->buf + b->len, s, n);
        b->len += n;
}

static bool name_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;

        return n > 0 && name_len(s, s + n) == n;
}

void wire_begin(WireBuilder *b, char buf[static WIRE_LINE_MAX], const char *verb)
{
        *b = (WireBuilder){ .buf = buf };
        if (!name_valid(verb)) {
                b->error = -EINVAL;
                return;
        }
        builder_put(b, verb, strlen(verb));
}

void wire_add(WireBuilder *b, const char *key, const char *value)
{
        static const char hex[] = "0123456789ABCDEF";

        if (!value || b->error)
                return;
        if (!name_valid(key)) {
                b->error = -EINVAL;
                return;
        }
        builder_put(b, " ", 1);
        builder_put(b, key, strlen(key));
        builder_put(b, "=", 1);
        for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
                if (raw_ok(*p))
                        builder_put(b, (const char *)p, 1);
                else
                        builder_put(b, (const char[]){ '%', hex[*p >> 4], hex[*p & 0xf] }, 3);
        }
}

void wire_add_u64(WireBuilder *b, const char *key, uint64_t value)
{
        char s[21];

        (void)snprintf(s, sizeof(s), "%" PRIu64, value);
        wire_add(b, key, s);
}

void wire_add_int(WireBuilder *b, const char *key, int value)
{
        char s[12];

        (void)snprintf(s, sizeof(s), "%d", value);
        wire_add(b, key, s);
}

int wire_end(WireBuilder *b, size_t *ret_len)
{
        if (b->error)
                return b->error;
        b->buf[b->len++] = '\n'; /* builder_put() kept room for it */
        if (ret_len)
                *ret_len = b->len;
        return 0;
}
