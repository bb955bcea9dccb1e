/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for wire_parse() and the two wires on top of it: any line
 * one of krtiot's programs could send another (the root installer parses
 * what the unprivileged agent writes; the agent parses krtiot-fetch's
 * status). Beyond "no crash, no leak": a message that parses is built again
 * with the builder, and that line parses back to the same verb and fields;
 * an install request that parses is encoded again and parses back the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fetch-wire.h"
#include "install-wire.h"
#include "util/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool streq0(const char *a, const char *b)
{
        return a && b ? strcmp(a, b) == 0 : a == b;
}

static void check_wires(const uint8_t *data, size_t size)
{
        char buf[WIRE_LINE_MAX];
        InstallRequest req, back;
        InstallAnswer answer;
        FetchEvent event;
        WireMessage m, m2;
        size_t len;

        if (install_wire_parse_request((const char *)data, size, &m, &req) == 0) {
                if (install_wire_request(buf, &req, &len) != 0 || install_wire_parse_request(buf, len, &m2, &back) != 0 ||
                    back.op != req.op || !streq0(back.key, req.key) || !streq0(back.id, req.id) ||
                    !streq0(back.target, req.target) || !streq0(back.url, req.url))
                        abort();
                wire_message_done(&m2);
        }
        wire_message_done(&m);
        (void)install_wire_parse_answer((const char *)data, size, &m, &answer);
        wire_message_done(&m);
        (void)fetch_wire_parse((const char *)data, size, &m, &event);
        wire_message_done(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char buf[WIRE_LINE_MAX];
        WireMessage m, back;
        WireBuilder b;
        size_t len;

        check_wires(data, size);
        if (wire_parse((const char *)data, size, &m) < 0) {
                if (m.n_fields != 0 || m.verb[0] != 0)
                        abort(); /* a refused line must leave nothing behind */
                return 0;
        }

        wire_begin(&b, buf, m.verb);
        for (size_t i = 0; i < m.n_fields; i++)
                wire_add(&b, m.fields[i].key, m.fields[i].value);
        /* Encoding may grow a value (a raw byte never does, an escape stays 3 bytes): it fits or says so. */
        if (wire_end(&b, &len) == 0) {
                if (wire_parse(buf, len, &back) != 0 || strcmp(back.verb, m.verb) != 0 ||
                    back.n_fields != m.n_fields)
                        abort();
                for (size_t i = 0; i < m.n_fields; i++)
                        if (strcmp(back.fields[i].key, m.fields[i].key) != 0 ||
                            strcmp(back.fields[i].value, m.fields[i].value) != 0)
                                abort();
                wire_message_done(&back);
        }
        wire_message_done(&m);
        return 0;
}
