/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sd_notify() wrappers. Without $NOTIFY_SOCKET (run by hand) they do
 * nothing. RELOADING=1 carries MONOTONIC_USEC, which systemd 253+ wants for
 * Type=notify-reload and older versions ignore.
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "notify.h"
#include "util/strings.h"

static char last_status[256];

void notify_ready(void)
{
        sd_notifyf(false, "READY=1\nSTATUS=%s", last_status);
}

void notify_reloading(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading configuration",
                   (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
}

void notify_stopping(void)
{
        sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
}

void notify_status(const char *text)
{
        char buf[sizeof(last_status)];

        /* A newline would start another assignment (READY=1, MAINPID=...): status.c escapes, and so do we. */
        escape_control(text, strlen(text), buf, sizeof(buf));
        if (strcmp(buf, last_status) == 0)
                return;
        memcpy(last_status, buf, sizeof(buf));
        log_debug("Status: %s", last_status);
        sd_notifyf(false, "STATUS=%s", last_status);
}
