/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whether the wall clock can be trusted, and when it changes: what update
 * windows (ota.install_window, ota.reboot_window) are judged by. A device
 * without an RTC boots in 1970 or at its last shutdown; a window judged by
 * that clock would open at the wrong hour.
 *
 * The clock is synchronised when systemd-timesyncd says so (the file
 * /run/systemd/timesync/synchronized exists), or, on a system without
 * timesyncd (no /run/systemd/timesync), when it is no more than a week
 * earlier than this build (SOURCE_DATE_EPOCH).
 * The watcher calls back when that changes (inotify) and whenever the clock
 * is set (a timerfd with TFD_TIMER_CANCEL_ON_SET): NTP moving the clock by
 * hours re-evaluates every wait at once. It costs no wakeup while nothing
 * happens.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct ClockWatch ClockWatch;

/* The clock was set, or its synchronisation changed. */
typedef void (*ClockChanged)(ClockWatch *w, void *userdata);

/* $KRTIOT_TIMESYNC_DIR (secure_getenv) replaces /run/systemd/timesync: for the tests. */
int clock_watch_new(sd_event *event, ClockChanged changed, void *userdata, ClockWatch **ret);
ClockWatch *clock_watch_free(ClockWatch *w);

/* Whether windows can be judged now; if not, *RET_WHY (static) says why in words. */
bool clock_watch_synchronized(ClockWatch *w, const char **ret_why);
