/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Text for people: sizes, rates, times, the summary of `krtiotctl status`,
 * and the two kinds of lines `krtiotctl watch` prints for a job (the
 * redrawn progress line of a terminal, the plain line per change
 * otherwise). Pure functions: the clock, the terminal's width and the rate
 * come in as arguments, so that the tests can pin them.
 *
 * Every string that came from the bus goes through escape_control() on its
 * way out here: nothing krtiotd (or whoever owns its name) says can move a
 * terminal's cursor or start a second line.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "properties.h"

/* Big enough for any output of format_bytes(), format_rate(), format_timespan(). */
#define FORMAT_SHORT_MAX 32
/* Big enough for format_timestamp(). */
#define FORMAT_TIMESTAMP_MAX 64

/* An escaped copy of S (NULL reads as ""): control characters as \xNN. NULL on ENOMEM. */
char *format_escape(const char *s);

/* BYTES with a binary unit, one decimal from KiB on: "512 B", "1.5 KiB", "12.0 MiB", "3.2 GiB". Returns BUF. */
const char *format_bytes(char *buf, size_t size, uint64_t bytes);

/* BYTES in MiB with one decimal, whatever the size: "0.0 MiB", "26.0 MiB". Returns BUF. */
const char *format_mib(char *buf, size_t size, uint64_t bytes);

/* BYTES_PER_SEC as format_bytes() does, and "/s": "1.2 MiB/s". Returns BUF. */
const char *format_rate(char *buf, size_t size, uint64_t bytes_per_sec);

/* A duration in words, rounded down: "42 s", "3 min", "2 h 5 min", "1 day", "12 days". Returns BUF. */
const char *format_timespan(char *buf, size_t size, uint64_t usec);

/*
 * THEN (µs since the epoch) in local time, and how long before NOW it was:
 * "Sun 2026-11-29 12:19:50 CET; 3 min ago" ("in 2 min" when THEN is after
 * NOW, a clock set back). THEN 0 is "never". Returns BUF.
 */
const char *format_timestamp(char *buf, size_t size, uint64_t then, uint64_t now);

/* THEN (µs since the epoch) in local time alone: "Mon 2026-11-30 02:00:00 CET". Returns BUF. */
const char *format_date(char *buf, size_t size, uint64_t then);

/*
 * What a waiting job waits for (P's WaitingFor and WaitingUntil), for the
 * Waiting line of `krtiotctl status`: "install window, opens Mon
 * 2026-11-30 02:00:00 CET (in 3 h 12 min)", "reboot window, opens ...",
 * "the download's random delay, until ... (in 42 s)"; a window without
 * WaitingUntil "install window (the clock is not synchronised yet)". NOW
 * (µs since the epoch) is for "in 3 h". Empty when P does not wait.
 * Returns BUF.
 */
const char *format_waiting(char *buf, size_t size, const Properties *p, uint64_t now);

/* Whether PHASE (a JobPhase) is one a job ends in: "done" or "failed". */
bool format_phase_is_final(const char *phase);

/*
 * The summary of `krtiotctl status`: one "Key: value" line per item, the
 * keys right-aligned as timedatectl does. NOW (µs since the epoch) is for
 * "n min ago". Returns 0, or -ENOMEM, or -EIO when writing to F failed.
 */
int format_status(FILE *f, const Properties *p, uint64_t now);

/*
 * The progress line of a terminal, at most WIDTH characters (no newline,
 * no carriage return): a bar when there is room, the phase, the percentage,
 * the bytes, and while downloading RATE (bytes/s; negative: not known yet).
 * "[##########..........]  downloading  45%  12.0 MiB/26.0 MiB  1.2 MiB/s".
 * Returns BUF.
 */
const char *format_progress_line(char *buf, size_t size, const Properties *p, int64_t rate, size_t width);

/*
 * The line of a terminal while the job waits (P's WaitingFor set), at most
 * WIDTH characters, with the time left: "waiting for the install window
 * until Mon 2026-11-30 02:00:00 CET (in 3 h 12 min)". NOW (µs since the
 * epoch) is for that. Returns BUF.
 */
const char *format_waiting_line(char *buf, size_t size, const Properties *p, size_t width, uint64_t now);

/*
 * The line printed for each change when standard output is not a terminal:
 * the phase, and while downloading the percentage and bytes:
 * "downloading 45% 12582912/27262976 bytes" ("downloading 1024 bytes" while
 * the size is not known), "verifying", "installing"; a job that waits
 * "waiting for the install window until Mon 2026-11-30 02:00:00 CET",
 * "waiting for the download's random delay until ...", "waiting for the
 * install window (the clock is not synchronised yet)": no time left, so
 * that the line changes only when the wait does. Returns BUF.
 */
const char *format_plain_line(char *buf, size_t size, const Properties *p);
