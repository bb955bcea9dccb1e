/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What systemd is told: READY=1, STATUS=…, RELOADING=1, STOPPING=1.
 * WATCHDOG=1 is sent by sd-event itself (sd_event_set_watchdog). STATUS is
 * sent only when it changes, and is also logged at debug level.
 */
#pragma once

#include <stdbool.h>

#include "util/macro.h"

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);

/* Sets the one-line status a person sees in `systemctl status` (status.c renders it). */
void notify_status(const char *text);
