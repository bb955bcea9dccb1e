/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for src/ctl/properties.c, the record of krtiotd's properties: read
 * from a real a{sv} message (sd-bus marshals it; the bus is a socketpair
 * that never carries it), every contract property at its type; unknown
 * properties and known ones at another type skipped; a partial update
 * keeping the rest; and the JSON of `status --json`: every contract key
 * once, in order, with its value and type, and control characters escaped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "properties.h"
#include "tap.h"
#include "util/macro.h"

static sd_bus *bus;

/* A bus object able to build messages: started on one end of a socketpair, never authenticated. */
static int bus_setup(void)
{
        int fds[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
                return -errno;
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_fd(bus, fds[0], fds[0]);
        if (r >= 0)
                r = sd_bus_start(bus);
        return r;
}

/* A signal carrying one a{sv}, built by FILL, sealed and rewound for reading. */
static sd_bus_message *message_new(int (*fill)(sd_bus_message *m))
{
        sd_bus_message *m = NULL;

        if (sd_bus_message_new_signal(bus, &m, "/com/krtyun/Krtiot1", "org.freedesktop.DBus.Properties",
                                      "PropertiesChanged") < 0 ||
            sd_bus_message_open_container(m, 'a', "{sv}") < 0 || fill(m) < 0 ||
            sd_bus_message_close_container(m) < 0 || sd_bus_message_seal(m, 1, 0) < 0 ||
            sd_bus_message_rewind(m, true) < 0)
                abort();
        return m;
}

static int fill_all(sd_bus_message *m)
{
        return sd_bus_message_append(m, "{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}",
                                     "State", "s", "downloading",
                                     "Registered", "b", 1,
                                     "Connected", "b", 0,
                                     "Broker", "s", "tcp://iot.krtyun.com:16007",
                                     "ProductId", "s", "P1",
                                     "DeviceId", "s", "dev\x1b[31m-1\n",
                                     "HardwareVersion", "s", "1.0.0",
                                     "FirmwareVersion", "s", "1.0.1",
                                     "LastReport", "t", (uint64_t)1795951190123456ULL,
                                     "JobId", "s", "42",
                                     "JobTargetVersion", "s", "2.0.1",
                                     "JobPhase", "s", "downloading",
                                     "JobProgress", "u", (uint32_t)45,
                                     "JobBytesDone", "t", (uint64_t)12582912,
                                     "JobBytesTotal", "t", (uint64_t)27262976,
                                     "LastError", "s", "",
                                     "LastJobResult", "s", "failed: hash mismatch",
                                     "StatusText", "s", "Downloading 2.0.1/url",
                                     "WaitingFor", "s", "install",
                                     "WaitingUntil", "t", (uint64_t)1795960800000000ULL);
}

static int fill_odd(sd_bus_message *m)
{
        return sd_bus_message_append(m, "{sv}{sv}{sv}{sv}{sv}",
                                     "FutureProperty", "as", 2, "a", "b",
                                     "JobProgress", "s", "45",
                                     "Registered", "u", (uint32_t)1,
                                     "JobPhase", "s", "installing",
                                     "Connected", "b", 1);
}

static void test_read(void)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *odd = NULL;
        Properties p = {};

        m = message_new(fill_all);
        is_int(properties_read(&p, m), 20, "all 20 properties read");
        is_str(p.state, "downloading", "State");
        ok(p.registered && !p.connected, "Registered, Connected");
        is_str(p.broker, "tcp://iot.krtyun.com:16007", "Broker");
        is_str(p.product_id, "P1", "ProductId");
        is_str(p.device_id, "dev\x1b[31m-1\n", "DeviceId kept as sent (escaped on output)");
        is_str(p.hardware_version, "1.0.0", "HardwareVersion");
        is_str(p.firmware_version, "1.0.1", "FirmwareVersion");
        ok(p.last_report == 1795951190123456ULL, "LastReport");
        is_str(p.job_id, "42", "JobId");
        is_str(p.job_target_version, "2.0.1", "JobTargetVersion");
        is_str(p.job_phase, "downloading", "JobPhase");
        is_int(p.job_progress, 45, "JobProgress");
        ok(p.job_bytes_done == 12582912 && p.job_bytes_total == 27262976, "JobBytesDone, JobBytesTotal");
        is_str(p.last_error, "", "LastError");
        is_str(p.last_job_result, "failed: hash mismatch", "LastJobResult");
        is_str(p.status_text, "Downloading 2.0.1/url", "StatusText");
        is_str(p.waiting_for, "install", "WaitingFor");
        ok(p.waiting_until == 1795960800000000ULL, "WaitingUntil");

        odd = message_new(fill_odd);
        is_int(properties_read(&p, odd), 2, "an update: two of five taken");
        is_str(p.job_phase, "installing", "the change applied");
        ok(p.connected, "a boolean changed");
        is_int(p.job_progress, 45, "a known property at another type is skipped");
        ok(p.registered, "a boolean sent as a number is skipped");
        is_str(p.state, "downloading", "what the update did not name is kept");

        properties_clear(&p);
        ok(!p.state && !p.job_id && p.job_bytes_total == 0, "cleared");
}

static void test_set(void)
{
        Properties p = {};
        const char *s = "x";
        uint64_t t = 7;
        int b = 1;

        is_int(properties_set(&p, "JobId", 's', &s), 1, "set a string");
        is_int(properties_set(&p, "JobId", 't', &t), 0, "a wrong type is refused");
        is_int(properties_set(&p, "Nope", 's', &s), 0, "an unknown name is refused");
        is_int(properties_set(&p, "Registered", 'b', &b), 1, "set a boolean");
        is_str(p.job_id, "x", "the string is a copy");
        properties_clear(&p);
}

static void test_json(void)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *text = NULL, *empty = NULL;
        json_object *o, *v;
        Properties p = {};
        size_t i = 0;
        int r;

        m = message_new(fill_all);
        properties_read(&p, m);
        r = properties_to_json(&p, &text);
        is_int(r, 0, "JSON rendered");
        ok(text && !strchr(text, '\n'), "one line");
        ok(text && !strchr(text, '\x1b'), "no raw control character");
        ok(text && strstr(text, "\"DeviceId\":\"dev\\u001b[31m-1\\n\""), "control characters as JSON escapes");
        ok(text && strstr(text, "\"StatusText\":\"Downloading 2.0.1/url\""), "a slash is not escaped");

        o = json_tokener_parse(text);
        ok(o && json_object_is_type(o, json_type_object), "it parses as one object");
        json_object_object_foreach(o, key, val) {
                (void)val;
                is_str(key, properties_name(i), "the keys are the contract's, in its order");
                i++;
        }
        is_int(i, 20, "20 keys, no more");
        ok(!properties_name(20), "and the contract has 20");
        is_str(properties_name(18), "WaitingFor", "WaitingFor after the 18 of the first contract");
        ok(json_object_object_get_ex(o, "WaitingFor", &v) && json_object_is_type(v, json_type_string) &&
                   strcmp(json_object_get_string(v), "install") == 0,
           "WaitingFor: a string");
        ok(json_object_object_get_ex(o, "WaitingUntil", &v) && json_object_is_type(v, json_type_int) &&
                   json_object_get_uint64(v) == 1795960800000000ULL,
           "WaitingUntil: an integer of µs");
        ok(json_object_object_get_ex(o, "LastReport", &v) && json_object_is_type(v, json_type_int) &&
                   json_object_get_uint64(v) == 1795951190123456ULL,
           "LastReport: an integer of µs");
        ok(json_object_object_get_ex(o, "Registered", &v) && json_object_is_type(v, json_type_boolean) &&
                   json_object_get_boolean(v),
           "Registered: a boolean");
        ok(json_object_object_get_ex(o, "JobProgress", &v) && json_object_get_int(v) == 45, "JobProgress: 45");
        ok(json_object_object_get_ex(o, "JobBytesTotal", &v) && json_object_get_uint64(v) == 27262976,
           "JobBytesTotal");
        json_object_put(o);
        properties_clear(&p);

        is_int(properties_to_json(&p, &empty), 0, "an empty record renders");
        is_str(empty,
               "{\"State\":\"\",\"Registered\":false,\"Connected\":false,\"Broker\":\"\",\"ProductId\":\"\","
               "\"DeviceId\":\"\",\"HardwareVersion\":\"\",\"FirmwareVersion\":\"\",\"LastReport\":0,\"JobId\":\"\","
               "\"JobTargetVersion\":\"\",\"JobPhase\":\"\",\"JobProgress\":0,\"JobBytesDone\":0,\"JobBytesTotal\":0,"
               "\"LastError\":\"\",\"LastJobResult\":\"\",\"StatusText\":\"\",\"WaitingFor\":\"\",\"WaitingUntil\":0}",
               "empty: strings empty, numbers 0, booleans false");
}

int main(void)
{
        int r = bus_setup();

        if (r < 0) {
                printf("not ok 1 - a bus object to build messages: %s\n", strerror(-r));
                return 1;
        }
        test_read();
        test_set();
        test_json();
        sd_bus_close_unref(bus);
        return tap_done();
}
