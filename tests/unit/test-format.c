/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for src/ctl/format.c, krtiotctl's text: sizes, rates and times
 * rounded down, the status summary (aligned keys, "n/a", "never", the job
 * line, local time), the terminal's progress line (bar, width, unknown
 * size, rate), the plain line per change, a job that waits (the Waiting
 * line, the terminal's line, the plain line), and that nothing from the bus
 * reaches the output with a control character in it.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format.h"
#include "tap.h"
#include "util/macro.h"

#define MIB (1024ULL * 1024ULL)
/* 2026-11-29 11:19:50 UTC */
#define T0 (1795951190ULL * USEC_PER_SEC)

static void test_bytes(void)
{
        char b[FORMAT_SHORT_MAX];

        is_str(format_bytes(b, sizeof(b), 0), "0 B", "0 bytes");
        is_str(format_bytes(b, sizeof(b), 1023), "1023 B", "below 1 KiB in bytes");
        is_str(format_bytes(b, sizeof(b), 1024), "1.0 KiB", "1 KiB");
        is_str(format_bytes(b, sizeof(b), 1536), "1.5 KiB", "1.5 KiB");
        is_str(format_bytes(b, sizeof(b), 12582912), "12.0 MiB", "12 MiB");
        is_str(format_bytes(b, sizeof(b), 100 * MIB - 1), "99.9 MiB", "rounded down, never up");
        is_str(format_bytes(b, sizeof(b), 1024 * MIB - 1), "1023.9 MiB", "just below 1 GiB stays in MiB");
        is_str(format_bytes(b, sizeof(b), 3 * 1024 * MIB + 300 * MIB), "3.2 GiB", "GiB");
        is_str(format_bytes(b, sizeof(b), UINT64_MAX), "15.9 EiB", "the largest count does not overflow");

        is_str(format_mib(b, sizeof(b), 0), "0.0 MiB", "MiB: 0");
        is_str(format_mib(b, sizeof(b), 27262976), "26.0 MiB", "MiB: 26");
        is_str(format_mib(b, sizeof(b), 512 * 1024), "0.5 MiB", "MiB: half");
        is_str(format_mib(b, sizeof(b), 3 * 1024 * MIB), "3072.0 MiB", "MiB whatever the size");

        is_str(format_rate(b, sizeof(b), 1258291), "1.1 MiB/s", "rate");
        is_str(format_rate(b, sizeof(b), 0), "0 B/s", "rate 0");
}

static void test_timespan(void)
{
        char b[FORMAT_SHORT_MAX], t[FORMAT_TIMESTAMP_MAX + FORMAT_SHORT_MAX + 8];

        is_str(format_timespan(b, sizeof(b), 0), "0 s", "0 s");
        is_str(format_timespan(b, sizeof(b), 59 * USEC_PER_SEC + 999999), "59 s", "seconds, rounded down");
        is_str(format_timespan(b, sizeof(b), 60 * USEC_PER_SEC), "1 min", "1 min");
        is_str(format_timespan(b, sizeof(b), 3599 * USEC_PER_SEC), "59 min", "59 min");
        is_str(format_timespan(b, sizeof(b), 3600 * USEC_PER_SEC), "1 h", "whole hours");
        is_str(format_timespan(b, sizeof(b), 7500 * USEC_PER_SEC), "2 h 5 min", "hours and minutes");
        is_str(format_timespan(b, sizeof(b), 86400 * USEC_PER_SEC), "1 day", "one day");
        is_str(format_timespan(b, sizeof(b), 3 * 86400 * USEC_PER_SEC + 5), "3 days", "days");

        setenv("TZ", "UTC", 1);
        tzset();
        is_str(format_timestamp(t, sizeof(t), 0, T0), "never", "LastReport 0 is never");
        is_str(format_timestamp(t, sizeof(t), T0 - 180 * USEC_PER_SEC, T0), "Sun 2026-11-29 11:16:50 UTC; 3 min ago",
               "UTC, 3 min ago");
        is_str(format_timestamp(t, sizeof(t), T0 + 120 * USEC_PER_SEC, T0), "Sun 2026-11-29 11:21:50 UTC; in 2 min",
               "a time after now (a clock set back)");
        setenv("TZ", "Asia/Tokyo", 1);
        tzset();
        is_str(format_timestamp(t, sizeof(t), T0, T0), "Sun 2026-11-29 20:19:50 JST; 0 s ago", "in local time");
        setenv("TZ", "UTC", 1);
        tzset();
}

static void test_escape(void)
{
        char *s;

        s = format_escape("a\x1b[2Jb\nc");
        is_str(s, "a\\x1b[2Jb\\x0ac", "escape: ESC and newline");
        free(s);
        s = format_escape(NULL);
        is_str(s, "", "escape: NULL reads as empty");
        free(s);
        s = format_escape("\x1b\x1b\x1b");
        is_str(s, "\\x1b\\x1b\\x1b", "escape: never cut, whatever the number of escapes");
        free(s);
}

/* format_status() into a string. */
static char *status_text(const Properties *p, uint64_t now)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        if (format_status(f, p, now) < 0) {
                fclose(f);
                free(buf);
                return NULL;
        }
        fclose(f);
        return buf;
}

static void test_status(void)
{
        Properties p = {
                .state = (char *)"downloading",
                .registered = true,
                .connected = true,
                .broker = (char *)"tcp://iot.krtyun.com:16007",
                .product_id = (char *)"P1",
                .device_id = (char *)"dev-1",
                .hardware_version = (char *)"1.0.0",
                .firmware_version = (char *)"1.0.0",
                .last_report = T0 - 180 * USEC_PER_SEC,
                .job_id = (char *)"42",
                .job_target_version = (char *)"2.0.1",
                .job_phase = (char *)"downloading",
                .job_progress = 45,
                .job_bytes_done = 12582912,
                .job_bytes_total = 27262976,
                .last_job_result = (char *)"failed: hash mismatch",
        };
        char *s;

        s = status_text(&p, T0);
        is_str(s,
               "          State: downloading\n"
               "     Registered: yes\n"
               "      Connected: yes\n"
               "         Broker: tcp://iot.krtyun.com:16007\n"
               "        Product: P1\n"
               "         Device: dev-1\n"
               "       Hardware: 1.0.0\n"
               "       Firmware: 1.0.0\n"
               "    Last report: Sun 2026-11-29 11:16:50 UTC; 3 min ago\n"
               "            Job: 42 (target 2.0.1): downloading, 45%, 12.0 of 26.0 MiB\n"
               "     Last error: none\n"
               "Last job result: failed: hash mismatch\n",
               "status: every line, keys aligned, the job with its progress in MiB");
        free(s);

        p.job_bytes_total = 0;
        p.job_progress = 0;
        s = status_text(&p, T0);
        ok(s && strstr(s, "            Job: 42 (target 2.0.1): downloading, 12.0 MiB so far\n"),
           "status: a download of unknown size");
        free(s);

        p.job_phase = (char *)"done";
        p.job_target_version = NULL;
        s = status_text(&p, T0);
        ok(s && strstr(s, "            Job: 42: done\n"), "status: an ended job, no target, no progress");
        free(s);

        p = (Properties){};
        s = status_text(&p, T0);
        is_str(s,
               "          State: n/a\n"
               "     Registered: no\n"
               "      Connected: no\n"
               "         Broker: n/a\n"
               "        Product: n/a\n"
               "         Device: n/a\n"
               "       Hardware: n/a\n"
               "       Firmware: n/a\n"
               "    Last report: never\n"
               "            Job: none\n"
               "     Last error: none\n"
               "Last job result: none\n",
               "status: an empty record");
        free(s);

        p.state = (char *)"some-new-word\x1b]0;owned\x07";
        p.device_id = (char *)"d\r\nState: fake";
        p.job_id = (char *)"\x1b[2J";
        p.job_target_version = (char *)"2\n";
        p.job_phase = (char *)"install\xc2\x9b" "1m"; /* CSI as UTF-8: the bus carries only UTF-8 */
        p.last_error = (char *)"\x7f";
        s = status_text(&p, T0);
        ok(s && !strchr(s, '\x1b') && !strchr(s, '\r') && !strchr(s, '\x07') && !strchr(s, '\x7f') &&
                   !strstr(s, "\xc2\x9b"),
           "status: no control character from the bus gets through");
        ok(s && strstr(s, "          State: some-new-word\\x1b]0;owned\\x07\n"), "status: an unknown state shown as it is, escaped");
        ok(s && strstr(s, "         Device: d\\x0d\\x0aState: fake\n"), "status: a newline cannot forge a line");
        ok(s && strstr(s, "            Job: \\x1b[2J (target 2\\x0a): install\\xc2\\x9b1m\n"), "status: the job line escaped");
        free(s);
}

static void test_progress_line(void)
{
        Properties p = {
                .job_id = (char *)"42",
                .job_phase = (char *)"downloading",
                .job_progress = 45,
                .job_bytes_done = 12582912,
                .job_bytes_total = 27262976,
        };
        char b[512];

        /* The text is 47 columns; the bar takes what is left of the width, at most 30. */
        is_str(format_progress_line(b, sizeof(b), &p, 1258291, 79),
               "[############................]  downloading   45%  12.0 MiB/26.0 MiB  1.1 MiB/s",
               "progress: bar, phase, percentage, bytes, rate in 79 columns");
        is_str(format_progress_line(b, sizeof(b), &p, -1, 79),
               "[#############.................]  downloading   45%  12.0 MiB/26.0 MiB",
               "progress: no rate while it is not known, the widest bar");
        is_str(format_progress_line(b, sizeof(b), &p, 1258291, 62),
               "[####.......]  downloading   45%  12.0 MiB/26.0 MiB  1.1 MiB/s",
               "progress: the bar narrows to fill 62 columns exactly");
        is_int(strlen(format_progress_line(b, sizeof(b), &p, 1258291, 61)), 61, "progress: 61 columns, bar of 10");
        is_str(format_progress_line(b, sizeof(b), &p, 1258291, 60), "downloading   45%  12.0 MiB/26.0 MiB  1.1 MiB/s",
               "progress: no bar where one of 10 does not fit");
        is_str(format_progress_line(b, sizeof(b), &p, 1258291, 20), "downloading   45%  1",
               "progress: cut to a very narrow terminal");

        p.job_bytes_total = 0;
        p.job_progress = 0;
        is_str(format_progress_line(b, sizeof(b), &p, 2048, 79),
               "[..............................]  downloading  12.0 MiB  2.0 KiB/s",
               "progress: unknown size, no percentage");

        p.job_phase = (char *)"installing";
        p.job_progress = 100;
        p.job_bytes_total = 27262976;
        p.job_bytes_done = 27262976;
        is_str(format_progress_line(b, sizeof(b), &p, 1258291, 79),
               "[##############################]  installing  100%  26.0 MiB/26.0 MiB",
               "progress: no rate but while downloading");

        p.job_progress = 250;
        ok(strncmp(format_progress_line(b, sizeof(b), &p, -1, 79), "[##############################]  installing  100%",
                   50) == 0,
           "progress: a percentage above 100 is shown as 100");

        p.job_phase = (char *)"\x1b[31mred";
        ok(!strchr(format_progress_line(b, sizeof(b), &p, -1, 79), '\x1b'), "progress: the phase escaped");
}

static void test_plain_line(void)
{
        Properties p = {
                .job_phase = (char *)"downloading",
                .job_progress = 45,
                .job_bytes_done = 12582912,
                .job_bytes_total = 27262976,
        };
        char b[256];

        is_str(format_plain_line(b, sizeof(b), &p), "downloading 45% 12582912/27262976 bytes", "plain: downloading");
        p.job_bytes_total = 0;
        is_str(format_plain_line(b, sizeof(b), &p), "downloading 12582912 bytes", "plain: size not known");
        p.job_phase = (char *)"installing";
        is_str(format_plain_line(b, sizeof(b), &p), "installing", "plain: installing");
        p.job_phase = (char *)"verifying\nfake 100%";
        is_str(format_plain_line(b, sizeof(b), &p), "verifying\\x0afake 100%", "plain: one line, whatever the phase");
        p.job_phase = NULL;
        is_str(format_plain_line(b, sizeof(b), &p), "waiting", "plain: no phase");

        ok(format_phase_is_final("done") && format_phase_is_final("failed"), "done and failed are final");
        ok(!format_phase_is_final("reboot-pending") && !format_phase_is_final("") && !format_phase_is_final(NULL),
           "reboot-pending, empty and NULL are not");
}

static void test_waiting(void)
{
        /* Opens at 2026-11-30 02:00:00 CET, 13 h 40 min 10 s after T0. */
        const uint64_t opens = 1796000400ULL * USEC_PER_SEC;
        Properties p = {
                .state = (char *)"waiting",
                .connected = true,
                .job_id = (char *)"42",
                .job_target_version = (char *)"2.0.1",
                .job_phase = (char *)"verifying",
                .job_progress = 100,
                .waiting_for = (char *)"install",
                .waiting_until = opens,
        };
        char b[256], *s;

        setenv("TZ", "Europe/Berlin", 1);
        tzset();
        is_str(format_date(b, sizeof(b), opens), "Mon 2026-11-30 02:00:00 CET", "date alone, local time");
        is_str(format_waiting(b, sizeof(b), &p, opens - (3 * 60 + 12) * 60 * USEC_PER_SEC),
               "install window, opens Mon 2026-11-30 02:00:00 CET (in 3 h 12 min)", "waiting: the install window");
        s = status_text(&p, opens - (3 * 60 + 12) * 60 * USEC_PER_SEC);
        ok(s && strstr(s, "            Job: 42 (target 2.0.1): verifying\n"
                          "        Waiting: install window, opens Mon 2026-11-30 02:00:00 CET (in 3 h 12 min)\n"
                          "     Last error: none\n"),
           "status: the Waiting line after the Job line");
        free(s);
        is_str(format_plain_line(b, sizeof(b), &p), "waiting for the install window until Mon 2026-11-30 02:00:00 CET",
               "plain: waiting for the install window, no time left");
        is_str(format_waiting_line(b, sizeof(b), &p, 79, opens - 90 * USEC_PER_SEC),
               "waiting for the install window until Mon 2026-11-30 02:00:00 CET (in 1 min)",
               "terminal: waiting, with the time left");
        is_int(strlen(format_waiting_line(b, sizeof(b), &p, 30, opens - 90 * USEC_PER_SEC)), 30,
               "terminal: cut to the width");
        is_str(format_waiting(b, sizeof(b), &p, opens + USEC_PER_SEC),
               "install window, opens Mon 2026-11-30 02:00:00 CET (now)", "waiting: a window due");

        p.waiting_for = (char *)"reboot";
        p.job_phase = (char *)"reboot-pending";
        is_str(format_waiting(b, sizeof(b), &p, opens - 3600 * USEC_PER_SEC),
               "reboot window, opens Mon 2026-11-30 02:00:00 CET (in 1 h)", "waiting: the reboot window");
        is_str(format_plain_line(b, sizeof(b), &p), "waiting for the reboot window until Mon 2026-11-30 02:00:00 CET",
               "plain: the reboot window");

        p.waiting_until = 0;
        is_str(format_waiting(b, sizeof(b), &p, T0), "reboot window (the clock is not synchronised yet)",
               "waiting: a window, the clock not synchronised");
        is_str(format_plain_line(b, sizeof(b), &p), "waiting for the reboot window (the clock is not synchronised yet)",
               "plain: the clock not synchronised");
        is_str(format_waiting_line(b, sizeof(b), &p, 79, T0),
               "waiting for the reboot window (the clock is not synchronised yet)", "terminal: the clock not synchronised");

        p.waiting_for = (char *)"download";
        p.job_phase = (char *)"accepted";
        p.waiting_until = T0 + 42 * USEC_PER_SEC;
        is_str(format_waiting(b, sizeof(b), &p, T0),
               "the download's random delay, until Sun 2026-11-29 12:20:32 CET (in 42 s)", "waiting: the download delay");
        is_str(format_plain_line(b, sizeof(b), &p),
               "waiting for the download's random delay until Sun 2026-11-29 12:20:32 CET", "plain: the download delay");

        p.waiting_for = (char *)"moon\x1b[2J";
        s = status_text(&p, T0);
        ok(s && strstr(s, "        Waiting: moon\\x1b[2J, until Sun 2026-11-29 12:20:32 CET (in 42 s)\n"),
           "status: an unknown wait as it is, escaped");
        free(s);

        p.waiting_for = (char *)"";
        s = status_text(&p, T0);
        ok(s && !strstr(s, "Waiting:"), "status: no Waiting line when nothing waits");
        free(s);
        is_str(format_plain_line(b, sizeof(b), &p), "accepted", "plain: the phase when nothing waits");
        setenv("TZ", "UTC", 1);
        tzset();
}

int main(void)
{
        test_bytes();
        test_timespan();
        test_escape();
        test_status();
        test_progress_line();
        test_plain_line();
        test_waiting();
        return tap_done();
}
