/* SPDX-License-Identifier: Apache-2.0 */
/*
 * install-wire.c: what the root installer accepts from the agent. Every
 * request round-trips; anything with a field missing, extra or malformed is
 * refused whole.
 */
#include <errno.h>

#include "install-wire.h"
#include "tap.h"
#include "util/macro.h"

#define KEY "ABCDEFGH1234"

static int parse_req(const char *s, InstallRequest *r)
{
        WireMessage m;
        int k = install_wire_parse_request(s, strlen(s), &m, r);

        wire_message_done(&m);
        return k;
}

static void test_requests(void)
{
        static const InstallRequest good[] = {
                { .op = INSTALL_OP_INSTALL, .key = KEY, .id = "2836S8F46SDR", .target = "2.0.1",
                  .url = "http://user:p%40ss@host:8080/fw/2.0.1.swu?x=1" },
                { .op = INSTALL_OP_OUTCOME, .key = KEY },
                { .op = INSTALL_OP_COMMIT, .key = KEY, .id = "an id with spaces", .target = "2.0.1" },
                { .op = INSTALL_OP_VERSION },
                { .op = INSTALL_OP_REBOOT, .key = KEY },
        };
        char buf[WIRE_LINE_MAX];

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                InstallRequest back;
                WireMessage m;
                size_t len;

                is_int(install_wire_request(buf, &good[i], &len), 0, install_op_to_string(good[i].op));
                is_int(install_wire_parse_request(buf, len, &m, &back), 0, "  parses back");
                ok(back.op == good[i].op, "  same op");
                is_str(back.key, good[i].key, "  same key");
                is_str(back.id, good[i].id, "  same id");
                is_str(back.target, good[i].target, "  same target");
                is_str(back.url, good[i].url, "  same url");
                wire_message_done(&m);
        }
}

static void test_refused_requests(void)
{
        static const char *const bad[] = {
                "install key=ABCDEFGH1234 id=X target=2.0.1",                    /* no url */
                "install key=ABCDEFGH1234 id=X target=2.0.1 url=http://h/ extra=1", /* extra field */
                "install key=abcdefgh1234 id=X target=2.0.1 url=http://h/",      /* lower-case key */
                "install key=ABCDEFGH123 id=X target=2.0.1 url=http://h/",       /* short key */
                "install key=../../etc/x id=X target=2.0.1 url=http://h/",       /* a path */
                "install key=ABCDEFGH1234 id=X target=../x url=http://h/",       /* a bad version */
                "install key=ABCDEFGH1234 id=X target=2.0.1 url=http://h/%20x",  /* a space in the URL */
                "install key=ABCDEFGH1234 id=a%0Ab target=2.0.1 url=http://h/",  /* a newline in the ID */
                "install key=ABCDEFGH1234 id= target=2.0.1 url=http://h/",       /* an empty ID */
                "outcome",                                                        /* no key */
                "outcome key=ABCDEFGH1234 id=X",                                  /* id on outcome */
                "version key=ABCDEFGH1234",                                       /* key on version */
                "reboot key=ABCDEFGH1234 now=1",                                  /* extra */
                "run program=/bin/sh",                                            /* unknown verb */
                "install hook=/bin/sh key=ABCDEFGH1234 id=X target=2.0.1 url=http://h/",
        };
        bool all = true;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                InstallRequest r;

                if (parse_req(bad[i], &r) != -EBADMSG) {
                        printf("#   accepted: %s\n", bad[i]);
                        all = false;
                }
        }
        ok(all, "malformed requests are refused");

        {
                char url[INSTALL_URL_MAX + 2], line[WIRE_LINE_MAX];
                InstallRequest r;

                memset(url, 'a', sizeof(url) - 1);
                url[sizeof(url) - 1] = 0;
                memcpy(url, "http://", 7);
                snprintf(line, sizeof(line), "install key=%s id=X target=1 url=%s", KEY, url);
                is_int(parse_req(line, &r), -EBADMSG, "a URL over 4096 bytes");
                url[INSTALL_URL_MAX] = 0;
                snprintf(line, sizeof(line), "install key=%s id=X target=1 url=%s", KEY, url);
                is_int(parse_req(line, &r), 0, "a URL of 4096 bytes");
                ok(install_wire_request(line, &(InstallRequest){ .op = INSTALL_OP_OUTCOME, .key = "x" }, NULL) ==
                           -EINVAL,
                   "the encoder refuses what the parser would");
        }
}

static void test_answers(void)
{
        static const InstallAnswer good[] = {
                { .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_INSTALLED },
                { .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_REBOOT },
                { .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_FAILED,
                  .reason = "the install hook failed with exit status 1: rauc: signature mismatch" },
                { .type = INSTALL_ANSWER_UNKNOWN },
                { .type = INSTALL_ANSWER_VERSION, .version = "2.0.1" },
                { .type = INSTALL_ANSWER_REFUSED, .reason = "busy" },
        };
        static const char *const bad[] = {
                "done", "done outcome=maybe", "version", "version value=../x", "refused x=1", "hello",
                "unknown key=ABCDEFGH1234",
        };
        char buf[WIRE_LINE_MAX];
        bool all = true;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                InstallAnswer back;
                WireMessage m;
                size_t len;

                is_int(install_wire_answer(buf, &good[i], &len), 0, "an answer is built");
                is_int(install_wire_parse_answer(buf, len, &m, &back), 0, "  and parses back");
                ok(back.type == good[i].type && back.outcome == good[i].outcome, "  same type and outcome");
                is_str(back.reason, good[i].reason, "  same reason");
                is_str(back.version, good[i].version, "  same version");
                wire_message_done(&m);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                InstallAnswer a;
                WireMessage m;

                if (install_wire_parse_answer(bad[i], strlen(bad[i]), &m, &a) != -EBADMSG) {
                        printf("#   accepted: %s\n", bad[i]);
                        all = false;
                }
                wire_message_done(&m);
        }
        ok(all, "malformed answers are refused");
}

int main(void)
{
        test_requests();
        test_refused_requests();
        test_answers();
        return tap_done();
}
