/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotd on the system bus (client.h). The calls are synchronous with
 * sd-bus's default timeout (25 s); `watch` runs its own loop (watch.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "format.h"
#include "util/macro.h"

int client_open(sd_bus **ret)
{
        sd_bus *bus = NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        *ret = bus;
        return 0;
}

int client_get_properties(sd_bus *bus, Properties *p, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Properties fresh = {};
        int r;

        r = sd_bus_call_method(bus, KRTIOT_BUS_NAME, KRTIOT_OBJECT_PATH, "org.freedesktop.DBus.Properties",
                               "GetAll", error, &reply, "s", KRTIOT_INTERFACE);
        if (r < 0)
                return r;
        r = properties_read(&fresh, reply);
        if (r < 0) {
                properties_clear(&fresh);
                return r;
        }
        properties_clear(p);
        *p = fresh;
        return 0;
}

int client_call(sd_bus *bus, const char *method, sd_bus_error *error)
{
        int r;

        r = sd_bus_call_method(bus, KRTIOT_BUS_NAME, KRTIOT_OBJECT_PATH, KRTIOT_INTERFACE, method, error, NULL, "");
        return r < 0 ? r : 0;
}

int client_report_now(sd_bus *bus, sd_bus_error *error)
{
        return client_call(bus, "ReportNow", error);
}

bool client_error_is_absent(const sd_bus_error *error)
{
        return sd_bus_error_has_names(error, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

static bool errno_is_disconnect(int r)
{
        return r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE || r == -ESHUTDOWN;
}

int client_fail(const sd_bus_error *error, int r, const char *action)
{
        _cleanup_free_ char *message = NULL;

        if (client_error_is_absent(error)) {
                fprintf(stderr, "krtiotd is not running (nobody owns %s).\n", KRTIOT_BUS_NAME);
                return CTL_EXIT_UNAVAILABLE;
        }
        if (sd_bus_error_is_set(error)) {
                message = format_escape(error->message ? error->message : error->name);
                if (!message) {
                        fprintf(stderr, "Failed to %s: %s\n", action, strerror(ENOMEM));
                        return CTL_EXIT_FAILURE;
                }
        }
        if (sd_bus_error_has_name(error, SD_BUS_ERROR_ACCESS_DENIED)) {
                /* The contract opens methods to root alone; a bus policy may close more. */
                if (geteuid() != 0)
                        fprintf(stderr, "Only root may %s (%s).\n", action, message);
                else
                        fprintf(stderr, "Not allowed to %s: %s\n", action, message);
                return CTL_EXIT_NOPERM;
        }
        if (message) {
                fprintf(stderr, "Failed to %s: %s\n", action, message);
                return CTL_EXIT_FAILURE;
        }
        /* No answer at all: the connection broke. */
        if (errno_is_disconnect(r)) {
                fprintf(stderr, "Lost the connection to the system bus: %s\n", strerror(-r));
                return CTL_EXIT_UNAVAILABLE;
        }
        fprintf(stderr, "Failed to %s: %s\n", action, strerror(r < 0 ? -r : r));
        return CTL_EXIT_FAILURE;
}
