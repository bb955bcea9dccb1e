/* SPDX-License-Identifier: Apache-2.0 */
/* util/wire.c: the line framing between krtiot's programs. */
#include <errno.h>
#include <stdlib.h>

#include "tap.h"
#include "util/macro.h"
#include "util/wire.h"

static int parse(const char *s, WireMessage *m)
{
        return wire_parse(s, strlen(s), m);
}

static void test_roundtrip(void)
{
        char buf[WIRE_LINE_MAX];
        const char *nasty = "a b=c%d\n\x01\x7f\xc3\xa9 end";
        WireBuilder b;
        WireMessage m;
        uint64_t u = 0;
        size_t len = 0;
        int i = 0;

        wire_begin(&b, buf, "checkpoint");
        wire_add_u64(&b, "offset", UINT64_MAX);
        wire_add(&b, "etag", nasty);
        wire_add(&b, "absent", NULL);
        wire_add_int(&b, "result", -2);
        is_int(wire_end(&b, &len), 0, "a line is built");
        ok(len > 0 && buf[len - 1] == '\n' && !memchr(buf, '\n', len - 1), "one newline, at the end");
        ok(!memchr(buf, ' ', len) || strncmp(buf, "checkpoint offset=", 18) == 0, "fields follow the verb");

        is_int(wire_parse(buf, len, &m), 0, "it parses back");
        is_str(m.verb, "checkpoint", "the verb");
        is_int(m.n_fields, 3, "three fields (NULL values are skipped)");
        is_int(wire_get_u64(&m, "offset", &u), 0, "offset is a number");
        ok(u == UINT64_MAX, "  UINT64_MAX survives");
        is_str(wire_get(&m, "etag"), nasty, "spaces, =, %, newline, controls and UTF-8 survive");
        is_int(wire_get_int(&m, "result", &i), 0, "result is an int");
        is_int(i, -2, "  negative");
        ok(wire_get(&m, "absent") == NULL, "an absent key is NULL");
        is_int(wire_get_u64(&m, "absent", &u), -ENOENT, "  and -ENOENT as a number");
        is_int(wire_get_u64(&m, "etag", &u), -EBADMSG, "a non-number is -EBADMSG");
        wire_message_done(&m);

        is_int(parse("done", &m), 0, "a verb alone");
        is_int(m.n_fields, 0, "  has no fields");
        wire_message_done(&m);
        is_int(parse("x k=\n", &m), 0, "an empty value");
        is_str(wire_get(&m, "k"), "", "  is the empty string");
        wire_message_done(&m);
}

static void test_refused(void)
{
        static const char *const bad[] = {
                "",                  /* no verb */
                "\n",                /* no verb */
                "Verb",              /* upper case */
                " verb",             /* leading space */
                "verb ",             /* trailing space */
                "verb  k=v",         /* two spaces */
                "verb k",            /* no = */
                "verb =v",           /* no key */
                "verb k=v k=w",      /* repeated key */
                "verb k=a b",        /* raw space in a value */
                "verb k=%",          /* short escape */
                "verb k=%4",         /* short escape */
                "verb k=%zz",        /* not hex */
                "verb k=%00",        /* NUL */
                "verb k=a=b",        /* raw = */
                "verb k=\x01",       /* raw control */
                "verb k=\xc3\xa9",   /* raw non-ASCII */
                "verb k=v\nmore",    /* two lines */
                "verb k=v\n\n",      /* two newlines */
                "verb\tk=v",         /* a tab */
                "verb0123456789012345678901234567890123", /* a verb too long */
        };
        WireMessage m;
        bool all = true;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = parse(bad[i], &m);

                if (r != -EBADMSG) {
                        printf("#   '%s' gave %d\n", bad[i], r);
                        all = false;
                }
                ok(m.n_fields == 0 && m.verb[0] == 0, "a refused line leaves an empty message");
        }
        ok(all, "malformed lines are -EBADMSG");
}

static void test_limits(void)
{
        char line[WIRE_LINE_MAX + 2], buf[WIRE_LINE_MAX];
        char big[WIRE_LINE_MAX];
        WireBuilder b;
        WireMessage m;
        size_t len;

        memset(line, 'a', sizeof(line));
        memcpy(line, "v k=", 4);
        is_int(wire_parse(line, WIRE_LINE_MAX + 1, &m), -EMSGSIZE, "a line over the limit");
        line[WIRE_LINE_MAX - 1] = '\n';
        is_int(wire_parse(line, WIRE_LINE_MAX, &m), 0, "a line of exactly the limit, newline included");
        wire_message_done(&m);

        strcpy(line, "v");
        for (int i = 0; i <= WIRE_FIELDS_MAX; i++)
                sprintf(line + strlen(line), " k%d=%d", i, i);
        is_int(parse(line, &m), -EMSGSIZE, "more than WIRE_FIELDS_MAX fields");

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        wire_begin(&b, buf, "v");
        wire_add(&b, "k", big);
        is_int(wire_end(&b, &len), -E2BIG, "building more than fits is -E2BIG");
        wire_begin(&b, buf, "Bad");
        is_int(wire_end(&b, &len), -EINVAL, "an invalid verb is -EINVAL");
        wire_begin(&b, buf, "v");
        wire_add(&b, "bad key", "x");
        is_int(wire_end(&b, &len), -EINVAL, "an invalid key is -EINVAL");
}

static void test_numbers(void)
{
        static const struct {
                const char *line;
                int r;
                uint64_t v;
        } u[] = {
                { "v n=0", 0, 0 },
                { "v n=18446744073709551615", 0, UINT64_MAX },
                { "v n=18446744073709551616", -EBADMSG, 0 },
                { "v n=01", -EBADMSG, 0 },
                { "v n=-1", -EBADMSG, 0 },
                { "v n=", -EBADMSG, 0 },
                { "v n=1x", -EBADMSG, 0 },
        };
        static const struct {
                const char *line;
                int r, v;
        } s[] = {
                { "v n=-2147483648", 0, -2147483647 - 1 },
                { "v n=2147483647", 0, 2147483647 },
                { "v n=2147483648", -EBADMSG, 0 },
                { "v n=-0", 0, 0 },
                { "v n=-", -EBADMSG, 0 },
                { "v n=99999999999", -EBADMSG, 0 },
        };
        WireMessage m;

        for (size_t i = 0; i < ELEMENTSOF(u); i++) {
                uint64_t v = 0;

                if (parse(u[i].line, &m) < 0) {
                        ok(0, u[i].line);
                        continue;
                }
                is_int(wire_get_u64(&m, "n", &v), u[i].r, u[i].line);
                if (u[i].r == 0)
                        ok(v == u[i].v, "  its value");
                wire_message_done(&m);
        }
        for (size_t i = 0; i < ELEMENTSOF(s); i++) {
                int v = 0;

                if (parse(s[i].line, &m) < 0) {
                        ok(0, s[i].line);
                        continue;
                }
                is_int(wire_get_int(&m, "n", &v), s[i].r, s[i].line);
                if (s[i].r == 0)
                        is_int(v, s[i].v, "  its value");
                wire_message_done(&m);
        }
}

int main(void)
{
        test_roundtrip();
        test_refused();
        test_limits();
        test_numbers();
        return tap_done();
}
