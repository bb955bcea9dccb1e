/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Update windows (ota.install_window, ota.reboot_window): when, in local
 * time, something may happen. A Window is a non-empty set of entries such as
 * "Mon..Fri 02:00-05:00" or "Sun 22:00-02:00"; it is open whenever one of
 * them is. This file parses one entry and does the time arithmetic the
 * daemon needs: is a time_t inside, and when does the window next open, or
 * close. It knows nothing of libconfig (config.c builds Windows from the
 * file) and nothing of timers (the agent arms them).
 *
 * Entry syntax: [DAYS ]START-END. DAYS is a comma-separated list of days
 * (Mon Tue Wed Thu Fri Sat Sun, any case) and ranges of days (Mon..Fri; a
 * range may wrap: Fri..Mon is Fri Sat Sun Mon); without DAYS, every day.
 * START and END are H:MM or HH:MM, optionally :SS, 00:00 to 23:59:59; END
 * may also be 24:00. An END not after START crosses midnight: the entry
 * belongs to the day it starts on (Sun 22:00-02:00 ends Monday 02:00).
 * START == END is an error; 00:00-24:00 is a whole day. Blanks may
 * surround the separators; one is needed between DAYS and START.
 *
 * Local time is the process's time zone (TZ, else /etc/localtime), read
 * again at every call. A wall-clock time skipped by a DST change stands for
 * the first instant after the change; one that happens twice, for the
 * first of the two. So an entry's start and end each become one instant,
 * and an entry lying wholly in a skipped hour is empty that day.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define WINDOW_ENTRIES_MAX 64 /* entries in one Window */
#define WINDOW_ERROR_MAX 256  /* room for any message of window_entry_parse() */
#define WINDOW_TIME_MAX 64    /* room for any text of window_format_time() */

/* The largest time_t (time_t is 32 bits on some devices): "never". */
#define WINDOW_NEVER ((time_t)((UINTMAX_C(1) << (sizeof(time_t) * 8 - 1)) - 1))

/* What window_check() found, on success. */
#define WINDOW_OUTSIDE 0
#define WINDOW_INSIDE 1

typedef struct WindowEntry {
        uint8_t days;   /* bit N: open on days whose tm_wday is N (0 Sunday .. 6 Saturday); never 0 */
        uint32_t start; /* seconds after the local midnight of such a day, 0..86399 */
        uint32_t end;   /* seconds after that same midnight: start < end <= start + 86400; over
                         * 86400 when the entry crosses midnight; start + 86400 only for 00:00-24:00 */
} WindowEntry;

/* Immutable; made only by window_new(). */
typedef struct Window {
        bool always; /* the entries cover the whole week without a gap: never closes */
        size_t n_entries;
        WindowEntry entries[];
} Window;

/*
 * Parses one entry S. Returns 0 with *RET set; or -EINVAL with *RET
 * untouched and, in ERROR (ERROR_SIZE bytes, WINDOW_ERROR_MAX is enough),
 * why in words, without S itself: 'unknown day "Fry" (...)', '"25:00": hour
 * out of range ...'. Never allocates.
 */
int window_entry_parse(const char *s, WindowEntry *ret, char *error, size_t error_size);

/*
 * A Window of copies of the N_ENTRIES ENTRIES (1..WINDOW_ENTRIES_MAX, each
 * as window_entry_parse() makes them). Returns 0, -EINVAL for a count or an
 * entry out of bounds, or -ENOMEM; *RET is untouched on failure.
 */
int window_new(const WindowEntry *entries, size_t n_entries, Window **ret);

/* Frees W (NULL allowed). Returns NULL. */
Window *window_free(Window *w);
static inline void window_freep(Window **w)
{
        window_free(*w);
}
#define _cleanup_window_ __attribute__((cleanup(window_freep)))

/*
 * Where NOW falls in W, in the process's local time (tzset() is called).
 * W NULL means any time.
 *
 * Returns WINDOW_INSIDE with *RET_WHEN the instant the window closes: the
 * end of the continuous open stretch NOW is in, entries that overlap or
 * touch merged (22:00-24:00 and 00:00-04:00 close at 04:00); WINDOW_NEVER
 * when W covers the whole week (or W is NULL).
 * Returns WINDOW_OUTSIDE with *RET_WHEN the instant it next opens (> NOW).
 * A stretch is [open, close): the instant it closes is outside, the instant
 * it opens inside, so that window_check(w, *RET_WHEN) says the other thing.
 *
 * Failures, with *RET_WHEN untouched: -EOVERFLOW when NOW or an answer is
 * beyond what time_t and localtime_r() can hold; -ENOMEM; -ERANGE if the
 * time zone does what no zone in the tz database does (two UTC offset
 * changes within 60 hours).
 */
int window_check(const Window *w, time_t now, time_t *ret_when);

/*
 * T for humans, in local time: "Mon 2026-11-30 02:00:00 CET" (C locale day
 * names as long as nobody calls setlocale()), "never" for WINDOW_NEVER, and
 * "@SECONDS" if localtime_r() cannot convert T. Writes BUF (SIZE bytes,
 * WINDOW_TIME_MAX is enough; cut to fit) and returns it.
 */
const char *window_format_time(time_t t, char *buf, size_t size);
