/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The D-Bus interface (krtiot-dbus(7)): the name com.krtyun.Krtiot1 on the
 * system bus, one object whose properties are the Status record (status.h),
 * the JobFinished signal, and the ReportNow() method, for root only.
 *
 * A missing bus, or one that goes away, is not an error: one notice in the
 * log, and the connection is made again when the bus socket appears (watched
 * with inotify) or after a backoff of at most BUS_RETRY_MAX_USEC. Nothing
 * else in the daemon waits for the bus.
 */
#pragma once

#include <systemd/sd-event.h>

#include "status.h"

#define BUS_NAME "com.krtyun.Krtiot1"
#define BUS_PATH "/com/krtyun/Krtiot1"
#define BUS_INTERFACE "com.krtyun.Krtiot1"

typedef struct Bus Bus;

typedef struct BusCallbacks {
        /* ReportNow(): 0 once a report is on its way, or -ENOTCONN when not logged in with the device secret. */
        int (*report_now)(void *userdata);
        /* InstallNow(), RebootNow(): 0 once the waiting job goes on, or -ENOENT when none waits for that. */
        int (*install_now)(void *userdata);
        int (*reboot_now)(void *userdata);
} BusCallbacks;

/*
 * Serves STATUS (borrowed; it must outlive the Bus, whose listener it
 * becomes) on the system bus ($DBUS_SYSTEM_BUS_ADDRESS, or the standard
 * socket), now or once the bus is there. Returns 0, or -errno (-ENOMEM)
 * with nothing kept; never fails for want of a bus.
 */
int bus_new(sd_event *event, Status *status, const BusCallbacks *callbacks, void *userdata, Bus **ret);
Bus *bus_free(Bus *b);
