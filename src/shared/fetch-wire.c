/* SPDX-License-Identifier: Apache-2.0 */
/* The status lines of krtiot-fetch (fetch-wire.h): both ends use these. */
#include <errno.h>
#include <string.h>

#include "fetch-wire.h"
#include "util/macro.h"

static bool sha256_valid(const char *s)
{
        return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

static bool text_ok(const char *s, size_t max)
{
        return !s || strlen(s) <= max;
}

int fetch_wire_parse(const char *line, size_t len, WireMessage *msg, FetchEvent *ret)
{
        FetchEvent e = {};
        int r;

        r = wire_parse(line, len, msg);
        if (r < 0)
                return -EBADMSG;

        if (strcmp(msg->verb, "progress") == 0) {
                e.type = FETCH_EVENT_PROGRESS;
                if (wire_get_u64(msg, "done", &e.done) < 0 || wire_get_u64(msg, "total", &e.total) < 0)
                        return -EBADMSG;
        } else if (strcmp(msg->verb, "checkpoint") == 0) {
                e.type = FETCH_EVENT_CHECKPOINT;
                if (wire_get_u64(msg, "offset", &e.offset) < 0 || wire_get_u64(msg, "fetched", &e.fetched) < 0)
                        return -EBADMSG;
                e.etag = wire_get(msg, "etag");
                e.last_modified = wire_get(msg, "last_modified");
                if (!text_ok(e.etag, FETCH_VALIDATOR_MAX) || !text_ok(e.last_modified, FETCH_VALIDATOR_MAX))
                        return -EBADMSG;
        } else if (strcmp(msg->verb, "result") == 0) {
                e.type = FETCH_EVENT_RESULT;
                if (wire_get_int(msg, "error", &e.error) < 0 || e.error > 0)
                        return -EBADMSG;
                e.reason = wire_get(msg, "reason");
                e.sha256 = wire_get(msg, "sha256");
                if (!text_ok(e.reason, FETCH_REASON_MAX) || (e.sha256 && !sha256_valid(e.sha256)))
                        return -EBADMSG;
        } else
                return -EBADMSG;

        *ret = e;
        return 0;
}

int fetch_wire_progress(char *buf, uint64_t done, uint64_t total, size_t *ret_len)
{
        WireBuilder b;

        wire_begin(&b, buf, "progress");
        wire_add_u64(&b, "done", done);
        wire_add_u64(&b, "total", total);
        return wire_end(&b, ret_len);
}

int fetch_wire_checkpoint(char *buf, uint64_t offset, uint64_t fetched, const char *etag, const char *last_modified,
                          size_t *ret_len)
{
        WireBuilder b;

        wire_begin(&b, buf, "checkpoint");
        wire_add_u64(&b, "offset", offset);
        wire_add_u64(&b, "fetched", fetched);
        wire_add(&b, "etag", etag);
        wire_add(&b, "last_modified", last_modified);
        return wire_end(&b, ret_len);
}

int fetch_wire_result(char *buf, int error, const char *reason, const char *sha256, size_t *ret_len)
{
        WireBuilder b;

        if (error > 0)
                return -EINVAL;
        wire_begin(&b, buf, "result");
        wire_add_int(&b, "error", error);
        wire_add(&b, "reason", reason);
        wire_add(&b, "sha256", sha256);
        return wire_end(&b, ret_len);
}
