/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The requests and answers between krtiotd and krtiot-install
 * (install-wire.h). The installer runs as root and parses what the
 * unprivileged agent wrote: every field is checked here, and a request with
 * a field too many is refused as much as one with a field too few.
 */
#include <errno.h>
#include <string.h>

#include "install-wire.h"
#include "util/macro.h"
#include "util/random-id.h"
#include "util/strings.h"

static const char *const op_names[_INSTALL_OP_MAX] = {
        [INSTALL_OP_INSTALL] = "install",
        [INSTALL_OP_OUTCOME] = "outcome",
        [INSTALL_OP_COMMIT] = "commit",
        [INSTALL_OP_VERSION] = "version",
        [INSTALL_OP_REBOOT] = "reboot",
};

static const char *const outcome_names[_INSTALL_OUTCOME_MAX] = {
        [INSTALL_OUTCOME_INSTALLED] = "installed",
        [INSTALL_OUTCOME_REBOOT] = "reboot",
        [INSTALL_OUTCOME_FAILED] = "failed",
};

/* Which fields each request carries, in this order: key, id, target, url. */
static const bool op_fields[_INSTALL_OP_MAX][4] = {
        [INSTALL_OP_INSTALL] = { true, true, true, true },
        [INSTALL_OP_OUTCOME] = { true, false, false, false },
        [INSTALL_OP_COMMIT] = { true, true, true, false },
        [INSTALL_OP_VERSION] = { false, false, false, false },
        [INSTALL_OP_REBOOT] = { true, false, false, false },
};
static const char *const field_names[4] = { "key", "id", "target", "url" };

const char *install_op_to_string(InstallOp op)
{
        return op >= 0 && op < _INSTALL_OP_MAX ? op_names[op] : NULL;
}

const char *install_outcome_to_string(InstallOutcome o)
{
        return o >= 0 && o < _INSTALL_OUTCOME_MAX ? outcome_names[o] : NULL;
}

bool install_key_valid(const char *key)
{
        return key && strlen(key) == RANDOM_ID_LEN && strspn(key, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == RANDOM_ID_LEN;
}

bool install_id_valid(const char *id)
{
        size_t n = id ? strlen(id) : 0;

        return n >= 1 && n <= INSTALL_ID_MAX && !has_control(id);
}

bool install_url_valid(const char *url)
{
        size_t n = url ? strlen(url) : 0;

        if (n < 1 || n > INSTALL_URL_MAX)
                return false;
        for (const char *p = url; *p; p++)
                if ((unsigned char)*p <= ' ' || *p == 0x7f)
                        return false;
        return true;
}

static bool reason_valid(const char *r)
{
        return !r || strlen(r) <= INSTALL_REASON_MAX;
}

static bool field_valid(size_t i, const char *v)
{
        switch (i) {
        case 0:
                return install_key_valid(v);
        case 1:
                return install_id_valid(v);
        case 2:
                return version_is_valid(v);
        default:
                return install_url_valid(v);
        }
}

int install_wire_parse_request(const char *line, size_t len, WireMessage *msg, InstallRequest *ret)
{
        const char *v[4];
        InstallOp op;
        size_t want = 0;

        if (wire_parse(line, len, msg) < 0)
                return -EBADMSG;
        for (op = 0; op < _INSTALL_OP_MAX; op++)
                if (strcmp(msg->verb, op_names[op]) == 0)
                        break;
        if (op == _INSTALL_OP_MAX)
                return -EBADMSG;

        for (size_t i = 0; i < ELEMENTSOF(field_names); i++) {
                v[i] = wire_get(msg, field_names[i]);
                if (!op_fields[op][i]) {
                        if (v[i])
                                return -EBADMSG;
                        continue;
                }
                if (!field_valid(i, v[i]))
                        return -EBADMSG;
                want++;
        }
        if (msg->n_fields != want)
                return -EBADMSG; /* a field nobody asked for */

        *ret = (InstallRequest){ .op = op, .key = v[0], .id = v[1], .target = v[2], .url = v[3] };
        return 0;
}

int install_wire_request(char *buf, const InstallRequest *req, size_t *ret_len)
{
        const char *v[4];
        WireBuilder b;

        if (!req || req->op < 0 || req->op >= _INSTALL_OP_MAX)
                return -EINVAL;
        v[0] = req->key, v[1] = req->id, v[2] = req->target, v[3] = req->url;

        wire_begin(&b, buf, op_names[req->op]);
        for (size_t i = 0; i < ELEMENTSOF(field_names); i++) {
                if (!op_fields[req->op][i])
                        continue;
                if (!field_valid(i, v[i]))
                        return -EINVAL;
                wire_add(&b, field_names[i], v[i]);
        }
        return wire_end(&b, ret_len);
}

int install_wire_parse_answer(const char *line, size_t len, WireMessage *msg, InstallAnswer *ret)
{
        InstallAnswer a = {};
        const char *o;
        size_t want = 0;

        if (wire_parse(line, len, msg) < 0)
                return -EBADMSG;

        a.reason = wire_get(msg, "reason");
        if (!reason_valid(a.reason))
                return -EBADMSG;
        want += a.reason != NULL;

        if (strcmp(msg->verb, "done") == 0) {
                a.type = INSTALL_ANSWER_DONE;
                o = wire_get(msg, "outcome");
                for (a.outcome = 0; a.outcome < _INSTALL_OUTCOME_MAX; a.outcome++)
                        if (o && strcmp(o, outcome_names[a.outcome]) == 0)
                                break;
                if (a.outcome == _INSTALL_OUTCOME_MAX)
                        return -EBADMSG;
                want++;
        } else if (strcmp(msg->verb, "unknown") == 0)
                a.type = INSTALL_ANSWER_UNKNOWN;
        else if (strcmp(msg->verb, "version") == 0) {
                a.type = INSTALL_ANSWER_VERSION;
                a.version = wire_get(msg, "value");
                if (!version_is_valid(a.version))
                        return -EBADMSG;
                want++;
        } else if (strcmp(msg->verb, "refused") == 0)
                a.type = INSTALL_ANSWER_REFUSED;
        else
                return -EBADMSG;

        if (msg->n_fields != want)
                return -EBADMSG;
        *ret = a;
        return 0;
}

int install_wire_answer(char *buf, const InstallAnswer *a, size_t *ret_len)
{
        WireBuilder b;

        if (!a || !reason_valid(a->reason))
                return -EINVAL;
        switch (a->type) {
        case INSTALL_ANSWER_DONE:
                if (!install_outcome_to_string(a->outcome))
                        return -EINVAL;
                wire_begin(&b, buf, "done");
                wire_add(&b, "outcome", outcome_names[a->outcome]);
                break;
        case INSTALL_ANSWER_UNKNOWN:
                wire_begin(&b, buf, "unknown");
                break;
        case INSTALL_ANSWER_VERSION:
                if (!version_is_valid(a->version))
                        return -EINVAL;
                wire_begin(&b, buf, "version");
                wire_add(&b, "value", a->version);
                break;
        case INSTALL_ANSWER_REFUSED:
                wire_begin(&b, buf, "refused");
                break;
        default:
                return -EINVAL;
        }
        wire_add(&b, "reason", a->reason);
        return wire_end(&b, ret_len);
}
