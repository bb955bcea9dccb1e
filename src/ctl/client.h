/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotd on the system bus, for krtiotctl: its names, the calls, and the
 * one place where a failure (an errno, a D-Bus error) becomes words on
 * standard error and an exit status.
 */
#pragma once

#include <systemd/sd-bus.h>

#include "properties.h"

#define KRTIOT_BUS_NAME "com.krtyun.Krtiot1"
#define KRTIOT_OBJECT_PATH "/com/krtyun/Krtiot1"
#define KRTIOT_INTERFACE "com.krtyun.Krtiot1"
#define KRTIOT_ERROR_NOT_CONNECTED "com.krtyun.Krtiot1.Error.NotConnected"
#define KRTIOT_ERROR_NOT_WAITING "com.krtyun.Krtiot1.Error.NotWaiting"

/* Exit statuses (sysexits.h where one fits); krtiotctl(1) documents them. */
enum {
        CTL_EXIT_SUCCESS = 0,
        CTL_EXIT_FAILURE = 1,      /* the job failed, or the call did */
        CTL_EXIT_USAGE = 64,       /* EX_USAGE */
        CTL_EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE: no system bus, or krtiotd not on it */
        CTL_EXIT_NOPERM = 77,      /* EX_NOPERM */
};

/* The system bus ($DBUS_SYSTEM_BUS_ADDRESS honoured). Returns 0 and *RET, or -errno. */
int client_open(sd_bus **ret);

/* GetAll: every property into *P (cleared first). Returns 0, or -errno with ERROR set when the bus said why. */
int client_get_properties(sd_bus *bus, Properties *p, sd_bus_error *error);

/* ReportNow(). Returns 0, or -errno with ERROR set when the bus said why. */
int client_report_now(sd_bus *bus, sd_bus_error *error);

/* METHOD ("InstallNow", "RebootNow"), a call without arguments or reply. Returns 0, or -errno with ERROR set when the bus said why. */
int client_call(sd_bus *bus, const char *method, sd_bus_error *error);

/* Whether ERROR means that nobody owns krtiotd's name. */
bool client_error_is_absent(const sd_bus_error *error);

/*
 * Says on standard error why ACTION ("read krtiotd's properties") failed,
 * with ERROR (may be unset) or else R, and returns the exit status:
 * krtiotd not running or the bus gone CTL_EXIT_UNAVAILABLE, access denied
 * CTL_EXIT_NOPERM, anything else CTL_EXIT_FAILURE. Bus text is escaped.
 */
int client_fail(const sd_bus_error *error, int r, const char *action);
