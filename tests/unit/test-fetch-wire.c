/* SPDX-License-Identifier: Apache-2.0 */
/* fetch-wire.c: krtiot-fetch's status lines, as krtiotd reads them. */
#include <errno.h>

#include "fetch-wire.h"
#include "tap.h"
#include "util/macro.h"

#define SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int parse(const char *s, FetchEvent *e)
{
        WireMessage m;
        int r = fetch_wire_parse(s, strlen(s), &m, e);

        wire_message_done(&m);
        return r;
}

int main(void)
{
        static const char *const bad[] = {
                "progress done=1",                          /* no total */
                "progress done=x total=2",                  /* not a number */
                "checkpoint offset=1",                      /* no fetched */
                "result",                                   /* no error */
                "result error=5",                           /* positive */
                "result error=0 sha256=ABC",                 /* not a hash */
                "result error=0 sha256=" SHA "0",           /* too long */
                "hello",                                    /* unknown */
        };
        char buf[WIRE_LINE_MAX];
        WireMessage m;
        FetchEvent e;
        size_t len;
        bool all = true;

        is_int(fetch_wire_progress(buf, 10, 100, &len), 0, "progress");
        is_int(fetch_wire_parse(buf, len, &m, &e), 0, "  parses");
        ok(e.type == FETCH_EVENT_PROGRESS && e.done == 10 && e.total == 100, "  done 10 of 100");
        wire_message_done(&m);

        is_int(fetch_wire_checkpoint(buf, 1 << 20, 3 << 20, "\"abc def\"", "Wed, 21 Oct 2015 07:28:00 GMT", &len), 0,
               "checkpoint");
        is_int(fetch_wire_parse(buf, len, &m, &e), 0, "  parses");
        ok(e.type == FETCH_EVENT_CHECKPOINT && e.offset == 1 << 20 && e.fetched == 3 << 20, "  offset and fetched");
        is_str(e.etag, "\"abc def\"", "  the ETag, quotes and space");
        is_str(e.last_modified, "Wed, 21 Oct 2015 07:28:00 GMT", "  Last-Modified");
        wire_message_done(&m);

        is_int(fetch_wire_checkpoint(buf, 0, 0, NULL, NULL, &len), 0, "a checkpoint without validators");
        is_int(fetch_wire_parse(buf, len, &m, &e), 0, "  parses");
        ok(!e.etag && !e.last_modified, "  none");
        wire_message_done(&m);

        is_int(fetch_wire_result(buf, 0, NULL, SHA, &len), 0, "a success");
        is_int(fetch_wire_parse(buf, len, &m, &e), 0, "  parses");
        ok(e.type == FETCH_EVENT_RESULT && e.error == 0 && !e.reason, "  error 0, no reason");
        is_str(e.sha256, SHA, "  the hash");
        wire_message_done(&m);

        is_int(fetch_wire_result(buf, -ENOENT, "HTTP 404", NULL, &len), 0, "a failure");
        is_int(fetch_wire_parse(buf, len, &m, &e), 0, "  parses");
        ok(e.error == -ENOENT, "  -ENOENT");
        is_str(e.reason, "HTTP 404", "  with its reason");
        wire_message_done(&m);
        is_int(fetch_wire_result(buf, 2, NULL, NULL, &len), -EINVAL, "a positive error is not encoded");

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (parse(bad[i], &e) != -EBADMSG) {
                        printf("#   accepted: %s\n", bad[i]);
                        all = false;
                }
        ok(all, "malformed status lines are refused");
        return tap_done();
}
