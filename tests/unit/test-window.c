/* SPDX-License-Identifier: Apache-2.0 */
/*
 * window.c: entries that parse (and what they mean), entries that do not
 * (and the exact words), and the time arithmetic at fixed instants under
 * TZ=UTC, Europe/Berlin (both DST changes of 2026), America/New_York and
 * Pacific/Apia (which skipped 2011-12-30 whole). Expected instants are
 * written in UTC; the comments give the local time. A sweep then checks,
 * for many instants and windows, that every answer holds up: the instant
 * named is the first one on the other side.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* strptime, timegm */
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "util/macro.h"
#include "window.h"

#define ALL 0x7f
#define SUN (1 << 0)
#define MON (1 << 1)
#define TUE (1 << 2)
#define WED (1 << 3)
#define THU (1 << 4)
#define FRI (1 << 5)
#define SAT (1 << 6)
#define H(h) ((h)*3600)

/* "YYYY-MM-DD HH:MM:SS" read as UTC. */
static time_t utc(const char *s)
{
        struct tm tm = { 0 };
        const char *end = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);

        if (!end || *end)
                abort();
        return timegm(&tm);
}

static void use_zone(const char *tz)
{
        char path[256];

        /* Without its file glibc quietly uses UTC: every DST case would fail for the wrong reason. */
        snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
        if (strcmp(tz, "UTC") != 0 && access(path, R_OK) < 0)
                printf("# %s is missing: apt-get install tzdata\n", path);
        if (setenv("TZ", tz, 1) < 0)
                abort();
        printf("# TZ=%s\n", tz);
}

/* A Window of the entries in the NULL-terminated TEXTS; aborts on a bad one (a bug in the test). */
static Window *make(const char *const *texts)
{
        WindowEntry entries[WINDOW_ENTRIES_MAX];
        char error[WINDOW_ERROR_MAX];
        Window *w = NULL;
        size_t n = 0;

        for (; texts[n]; n++)
                if (window_entry_parse(texts[n], &entries[n], error, sizeof(error)) < 0) {
                        printf("# %s: %s\n", texts[n], error);
                        abort();
                }
        if (window_new(entries, n, &w) < 0)
                abort();
        return w;
}

#define WINDOW(...) make((const char *const[]){ __VA_ARGS__, NULL })

/* ---- parsing ---- */

static const struct {
        const char *text;
        uint8_t days;
        uint32_t start, end;
} good[] = {
        { "02:00-05:00", ALL, H(2), H(5) },
        { "Mon..Fri 02:00-05:00", MON | TUE | WED | THU | FRI, H(2), H(5) },
        { "Sat,Sun 00:00-24:00", SAT | SUN, 0, H(24) },
        { "Sun 22:00-02:00", SUN, H(22), H(24) + H(2) },
        { "22:00-04:00", ALL, H(22), H(28) },
        { "02:00:30-05:00:59", ALL, H(2) + 30, H(5) + 59 },
        { "Fri..Mon 01:00-02:00", FRI | SAT | SUN | MON, H(1), H(2) },
        { "Sat..Sun 01:00-02:00", SAT | SUN, H(1), H(2) },
        { "Sun..Sat 01:00-02:00", ALL, H(1), H(2) },
        { "Mon..Sun 00:00-24:00", ALL, 0, H(24) },
        { "Mon,Wed..Fri 02:00-03:00", MON | WED | THU | FRI, H(2), H(3) },
        { "Wed..Fri,Mon 02:00-03:00", MON | WED | THU | FRI, H(2), H(3) },
        { "Mon,Mon,Mon..Tue 02:00-03:00", MON | TUE, H(2), H(3) },
        { "mon..FRI 2:00-5:00", MON | TUE | WED | THU | FRI, H(2), H(5) },
        { " \tMon , Wed .. Fri\t 02:00 - 03:00 ", MON | WED | THU | FRI, H(2), H(3) },
        { "22:00-00:00", ALL, H(22), H(24) },
        { "22:00-24:00", ALL, H(22), H(24) },
        { "00:00:01-00:00", ALL, 1, H(24) },
        { "23:59:59-23:59:58", ALL, H(24) - 1, H(48) - 2 },
        { "00:00-23:59:59", ALL, 0, H(24) - 1 },
};

static void test_parse_good(void)
{
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                WindowEntry e = { 0 };
                char error[WINDOW_ERROR_MAX] = "";
                int r = window_entry_parse(good[i].text, &e, error, sizeof(error));

                printf("# \"%s\"\n", good[i].text);
                is_int(r, 0, "parses");
                is_str(error, "", "  no error text");
                is_int(e.days, good[i].days, "  days");
                is_int(e.start, good[i].start, "  start");
                is_int(e.end, good[i].end, "  end");
        }
}

#define DAYS_ARE "(days are Mon Tue Wed Thu Fri Sat Sun)"
#define HOUR_RANGE "hour out of range 00..23 (and 24:00 as an end)"
#define SAME_TIME "starts and ends at the same time: an empty window (00:00-24:00 is a whole day)"
#define HHMM "a time is HH:MM or HH:MM:SS"
#define EXPECTED_DAY "expected a day (Mon Tue Wed Thu Fri Sat Sun)"

static const struct {
        const char *text, *error;
} bad[] = {
        { "Mon..Fry 02:00-05:00", "unknown day \"Fry\" " DAYS_ARE },
        { "Fry 02:00-05:00", "unknown day \"Fry\" " DAYS_ARE },
        { "Monday 02:00-05:00", "unknown day \"Monday\" " DAYS_ARE },
        { "25:00-26:00", "\"25:00\": " HOUR_RANGE },
        { "02:00-25:00", "\"25:00\": " HOUR_RANGE },
        { "123:00-02:00", "\"123:00\": " HOUR_RANGE },
        { "02:60-03:00", "\"02:60\": minute out of range 00..59" },
        { "02:00:60-03:00", "\"02:00:60\": second out of range 00..59" },
        { "", "is empty: an entry is [DAYS ]HH:MM-HH:MM" },
        { " \t ", "is empty: an entry is [DAYS ]HH:MM-HH:MM" },
        { "Mon..Fri", "no times after the days: write \"Mon..Fri 00:00-24:00\" for whole days" },
        { "Sat,Sun  ", "no times after the days: write \"Sat,Sun 00:00-24:00\" for whole days" },
        { "02:00-02:00", SAME_TIME },
        { "00:00-00:00", SAME_TIME },
        { "Sun 22:00:00-22:00", SAME_TIME },
        { "24:00-02:00", "\"24:00\": 24:00 can only be an end (write 00:00)" },
        { "02:00-24:30", "\"24:30\": past 24:00" },
        { "02:00-24:00:01", "\"24:00:01\": past 24:00" },
        { "Mon-Fri 02:00-05:00", "\"-\" after a day: a range of days is written Mon..Fri" },
        { "Mon..Mon 02:00-05:00",
          "Mon..Mon is a range of one day: write Mon, or a range of two different days" },
        { "Mon...Fri 02:00-05:00", EXPECTED_DAY " at \".Fri 02:00-05:00\"" },
        { "Mon, 02:00-05:00", EXPECTED_DAY " at \"02:00-05:00\"" },
        { "Mon02:00-05:00", "unexpected \"02:00-05:00\" after a day" },
        { "*/2 02:00-05:00", "unexpected \"*/2 02:00-05:00\": " EXPECTED_DAY " or a time (HH:MM)" },
        { "\x01Mon 02:00-05:00", "unexpected \"\\x01Mon 02:00-05:00\": " EXPECTED_DAY " or a time (HH:MM)" },
        { "02:00", "expected \"-\" and an end time after the start time" },
        { "02:00 05:00", "expected \"-\" and an end time after the start time, not \"05:00\"" },
        { "02:00-", "expected a time (HH:MM) at \"\"" },
        { "02:00-x", "expected a time (HH:MM) at \"x\"" },
        { "2-5", "\"2-5\": " HHMM },
        { "02:0-03:00", "\"02:0-03:00\": " HHMM },
        { "02:000-03:00", "\"02:000-03:00\": " HHMM },
        { "02:00-05:00 CET", "unexpected \"CET\" after the end time" },
        { "02:00-05:00 Mon", "unexpected \"Mon\" after the end time" },
        { "02:00-05:00 0123456789012345678901234567890",
          "unexpected \"012345678901234567890123...\" after the end time" },
};

static void test_parse_bad(void)
{
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                WindowEntry e = { .days = 0x55, .start = 1, .end = 2 };
                char error[WINDOW_ERROR_MAX] = "";
                int r = window_entry_parse(bad[i].text, &e, error, sizeof(error));

                printf("# \"%s\"\n", bad[i].text);
                is_int(r, -EINVAL, "refused");
                is_str(error, bad[i].error, "  the words");
                ok(e.days == 0x55 && e.start == 1 && e.end == 2, "  *ret untouched");
        }
}

static void test_parse_edges(void)
{
        WindowEntry e;
        char small[8];

        is_int(window_entry_parse(NULL, &e, NULL, 0), -EINVAL, "NULL entry: -EINVAL, no buffer needed");
        is_int(window_entry_parse("Fry 01:00-02:00", &e, small, sizeof(small)), -EINVAL, "small buffer");
        is_str(small, "unknown", "  the message is cut to fit, NUL-terminated");
}

/* ---- window_new ---- */

static void test_new(void)
{
        WindowEntry e[WINDOW_ENTRIES_MAX + 1], bogus;
        Window *w = NULL;
        char error[WINDOW_ERROR_MAX];

        for (size_t i = 0; i < ELEMENTSOF(e); i++)
                if (window_entry_parse("01:00-02:00", &e[i], error, sizeof(error)) < 0)
                        abort();

        is_int(window_new(e, 0, &w), -EINVAL, "window_new: no entries is refused");
        is_int(window_new(e, WINDOW_ENTRIES_MAX + 1, &w), -EINVAL, "window_new: too many entries");
        ok(!w, "  *ret untouched");
        is_int(window_new(e, WINDOW_ENTRIES_MAX, &w), 0, "window_new: the most entries");
        ok(w && w->n_entries == WINDOW_ENTRIES_MAX, "  all kept");
        w = window_free(w);
        ok(!w, "window_free returns NULL");

        bogus = (WindowEntry){ .days = 0, .start = 0, .end = 1 };
        is_int(window_new(&bogus, 1, &w), -EINVAL, "window_new: no days");
        bogus = (WindowEntry){ .days = ALL, .start = H(2), .end = H(2) };
        is_int(window_new(&bogus, 1, &w), -EINVAL, "window_new: empty entry");
        bogus = (WindowEntry){ .days = ALL, .start = H(2), .end = H(26) + 1 };
        is_int(window_new(&bogus, 1, &w), -EINVAL, "window_new: longer than a day");
        bogus = (WindowEntry){ .days = ALL, .start = H(24), .end = H(25) };
        is_int(window_new(&bogus, 1, &w), -EINVAL, "window_new: start at 24:00");
}

/* Whether the entries are seen to cover the whole week. */
static void test_always(void)
{
        static const struct {
                const char *entries[5];
                bool always;
        } cases[] = {
                { { "00:00-24:00" }, true },
                { { "Mon..Sun 00:00-24:00" }, true },
                { { "Mon..Fri 00:00-24:00", "Sat,Sun 00:00-24:00" }, true },
                { { "22:00-24:00", "00:00-22:00" }, true },
                { { "12:00-06:00", "06:00-12:00" }, true },
                /* Saturday's entry runs into Sunday across the week's end. */
                { { "Sun..Fri 00:00-24:00", "Sat 00:00-12:00", "Sat 12:00-00:00" }, true },
                { { "Sun 00:01-24:00", "Mon..Fri 00:00-24:00", "Sat 00:00-12:00", "Sat 12:00-00:01" },
                  true },
                { { "00:00-23:59:59" }, false },
                { { "Mon..Sat 00:00-24:00" }, false },
                { { "Sun..Fri 00:00-24:00", "Sat 00:00-12:00", "Sat 12:00:01-00:00" }, false },
                { { "Sun 00:01-24:00", "Mon..Sat 00:00-24:00" }, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_window_ Window *w = make(cases[i].entries);
                time_t when = 0;
                int r;

                printf("# %s, %s, %s\n", cases[i].entries[0], cases[i].entries[1] ?: "-",
                       cases[i].entries[2] ?: "-");
                is_int(w->always, cases[i].always, "always: whole week or not");
                use_zone("UTC");
                r = window_check(w, utc("2026-11-28 23:00:00"), &when);
                is_int(r, WINDOW_INSIDE, "  inside at Sat 23:00");
                ok(cases[i].always == (when == WINDOW_NEVER), "  closing never exactly when always");
        }
}

/* ---- the arithmetic at fixed instants ---- */

typedef struct Case {
        const char *now; /* UTC */
        int want;
        const char *when; /* UTC; NULL: WINDOW_NEVER */
        const char *what;
} Case;

static void check_cases(const Window *w, const Case *cases, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                time_t when = 0, want = cases[i].when ? utc(cases[i].when) : WINDOW_NEVER;
                char a[WINDOW_TIME_MAX], b[WINDOW_TIME_MAX];
                int r = window_check(w, utc(cases[i].now), &when);

                is_int(r, cases[i].want, cases[i].what);
                is_int(when, want, cases[i].what);
                if (when != want)
                        printf("#   got %s, want %s\n", window_format_time(when, a, sizeof(a)),
                               window_format_time(want, b, sizeof(b)));
        }
}

#define CHECK(w, ...)                                                                                       \
        check_cases(w, (const Case[]){ __VA_ARGS__ }, ELEMENTSOF(((const Case[]){ __VA_ARGS__ })))

static void test_utc(void)
{
        _cleanup_window_ Window *weekdays = WINDOW("Mon..Fri 02:00-05:00");
        _cleanup_window_ Window *sunday_night = WINDOW("Sun 22:00-02:00");
        _cleanup_window_ Window *nightly = WINDOW("22:00-04:00");
        _cleanup_window_ Window *touching = WINDOW("22:00-24:00", "00:00-04:00");
        _cleanup_window_ Window *apart = WINDOW("22:00-23:59:59", "00:00-04:00");
        _cleanup_window_ Window *overlapping = WINDOW("01:00-03:00", "02:00-05:00", "04:00-04:30");
        _cleanup_window_ Window *weekend = WINDOW("Sat,Sun 00:00-24:00");
        _cleanup_window_ Window *long_weekend =
                WINDOW("Fri 18:00-24:00", "Sat,Sun 00:00-24:00", "Mon 00:00-06:00");
        _cleanup_window_ Window *whole = WINDOW("00:00-24:00");
        time_t when = 12345;

        use_zone("UTC");
        /* 2026-11-27 is a Friday, 2026-11-28 a Saturday, 2026-11-30 a Monday. */
        CHECK(weekdays,
              { "2026-11-28 23:00:00", WINDOW_OUTSIDE, "2026-11-30 02:00:00",
                "week wrap: Sat 23:00 -> Mon 02:00" },
              { "2026-11-30 01:59:59", WINDOW_OUTSIDE, "2026-11-30 02:00:00", "a second before it opens" },
              { "2026-11-30 02:00:00", WINDOW_INSIDE, "2026-11-30 05:00:00",
                "the instant it opens is inside" },
              { "2026-11-30 04:59:59", WINDOW_INSIDE, "2026-11-30 05:00:00", "its last second" },
              { "2026-11-30 05:00:00", WINDOW_OUTSIDE, "2026-12-01 02:00:00",
                "the instant it closes is outside" },
              { "2026-11-27 03:00:00", WINDOW_INSIDE, "2026-11-27 05:00:00", "Friday: inside" },
              { "2026-11-27 05:00:00", WINDOW_OUTSIDE, "2026-11-30 02:00:00", "Friday after: Monday" });
        CHECK(sunday_night,
              { "2026-11-29 23:30:00", WINDOW_INSIDE, "2026-11-30 02:00:00",
                "Sun 22:00-02:00 at Sun 23:30" },
              { "2026-11-30 01:00:00", WINDOW_INSIDE, "2026-11-30 02:00:00",
                "  and at Mon 01:00 (Sunday's)" },
              { "2026-11-30 00:00:00", WINDOW_INSIDE, "2026-11-30 02:00:00", "  and at Mon 00:00" },
              { "2026-11-30 22:30:00", WINDOW_OUTSIDE, "2026-12-06 22:00:00", "  Mon 22:30: next Sunday" },
              { "2026-11-29 02:00:00", WINDOW_OUTSIDE, "2026-11-29 22:00:00",
                "  Sun 02:00: tonight (Saturday has none)" });
        CHECK(nightly,
              { "2026-11-30 03:00:00", WINDOW_INSIDE, "2026-11-30 04:00:00", "22:00-04:00 at 03:00" },
              { "2026-11-30 12:00:00", WINDOW_OUTSIDE, "2026-11-30 22:00:00", "22:00-04:00 at noon" });
        CHECK(touching, { "2026-11-30 23:00:00", WINDOW_INSIDE, "2026-12-01 04:00:00",
                          "22:00-24:00 + 00:00-04:00 is one stretch" });
        CHECK(apart,
              { "2026-11-30 23:00:00", WINDOW_INSIDE, "2026-11-30 23:59:59",
                "22:00-23:59:59 + 00:00-04:00 is two (control)" },
              { "2026-11-30 23:59:59", WINDOW_OUTSIDE, "2026-12-01 00:00:00", "  the second between them" });
        CHECK(overlapping, { "2026-11-30 01:30:00", WINDOW_INSIDE, "2026-11-30 05:00:00",
                             "overlapping entries merge (one inside another too)" });
        CHECK(weekend,
              { "2026-11-28 10:00:00", WINDOW_INSIDE, "2026-11-30 00:00:00",
                "Sat,Sun whole days: till Mon 00:00" },
              { "2026-11-30 00:00:00", WINDOW_OUTSIDE, "2026-12-05 00:00:00",
                "  Mon 00:00: next Saturday" });
        CHECK(long_weekend,
              { "2026-11-27 19:00:00", WINDOW_INSIDE, "2026-11-30 06:00:00", "a stretch over four days" },
              { "2026-11-27 17:59:59", WINDOW_OUTSIDE, "2026-11-27 18:00:00", "  a second before it" });
        CHECK(whole, { "2026-11-30 12:00:00", WINDOW_INSIDE, NULL, "00:00-24:00: inside, never closes" });

        is_int(window_check(NULL, utc("2026-11-30 12:00:00"), &when), WINDOW_INSIDE, "no window: any time");
        is_int(when, WINDOW_NEVER, "  never closes");

        when = 12345;
        is_int(window_check(weekdays, WINDOW_NEVER, &when), -EOVERFLOW, "the end of time_t: -EOVERFLOW");
        is_int(when, 12345, "  *ret_when untouched");
        is_int(window_check(weekdays, 0, NULL), -EINVAL, "no ret_when: -EINVAL");
}

/* Europe/Berlin, 2026: CET -> CEST Sun 03-29 at 01:00 UTC (02:00 -> 03:00); back Sun 10-25 at 01:00 UTC
 * (03:00 -> 02:00). */
static void test_berlin(void)
{
        _cleanup_window_ Window *skipped_start = WINDOW("Sun 02:30-04:00");
        _cleanup_window_ Window *skipped_end = WINDOW("Sun 01:00-02:30");
        _cleanup_window_ Window *wholly_skipped = WINDOW("Sun 02:00-02:30");
        _cleanup_window_ Window *daily_two = WINDOW("02:00-03:00");
        _cleanup_window_ Window *ambiguous = WINDOW("Sun 02:30-03:30");
        _cleanup_window_ Window *weekdays = WINDOW("Mon..Fri 02:00-05:00");

        use_zone("Europe/Berlin");
        CHECK(weekdays,
              { "2026-11-28 22:00:00", WINDOW_OUTSIDE, "2026-11-30 01:00:00",
                "Sat 23:00 CET -> Mon 02:00 CET" },
              { "2026-07-04 21:00:00", WINDOW_OUTSIDE, "2026-07-06 00:00:00",
                "Sat 23:00 CEST -> Mon 02:00 CEST" });

        /* Spring: 02:00-03:00 does not exist on 2026-03-29. */
        CHECK(skipped_start,
              { "2026-03-28 11:00:00", WINDOW_OUTSIDE, "2026-03-29 01:00:00",
                "02:30 skipped: opens at the jump, 03:00 CEST" },
              { "2026-03-29 01:00:00", WINDOW_INSIDE, "2026-03-29 02:00:00", "  closes 04:00 CEST" });
        CHECK(skipped_end,
              { "2026-03-29 00:30:00", WINDOW_INSIDE, "2026-03-29 01:00:00",
                "01:00-02:30 at 01:30 CET: closes at the jump" },
              { "2026-03-28 23:00:00", WINDOW_OUTSIDE, "2026-03-29 00:00:00", "  opens 01:00 CET" });
        CHECK(wholly_skipped,
              { "2026-03-28 11:00:00", WINDOW_OUTSIDE, "2026-04-05 00:00:00",
                "Sun 02:00-02:30 wholly skipped: next Sunday, 02:00 CEST" },
              { "2026-03-29 01:00:00", WINDOW_OUTSIDE, "2026-04-05 00:00:00",
                "  and not open at the jump" });
        CHECK(daily_two,
              { "2026-03-29 00:30:00", WINDOW_OUTSIDE, "2026-03-30 00:00:00",
                "02:00-03:00 is empty on the spring day: Monday 02:00 CEST" },
              { "2026-03-28 01:30:00", WINDOW_INSIDE, "2026-03-28 02:00:00", "  the day before, in CET" });

        /* Autumn: 02:00-03:00 happens twice on 2026-10-25, first in CEST, then in CET. */
        CHECK(ambiguous,
              { "2026-10-24 12:00:00", WINDOW_OUTSIDE, "2026-10-25 00:30:00",
                "02:30 twice: opens at the first, 02:30 CEST" },
              { "2026-10-25 01:45:00", WINDOW_INSIDE, "2026-10-25 02:30:00",
                "  at 02:45 CET (the second pass): till 03:30 CET" });
        CHECK(skipped_end,
              { "2026-10-24 23:30:00", WINDOW_INSIDE, "2026-10-25 00:30:00",
                "01:00-02:30 on the autumn day: closes at the first 02:30 (CEST)" },
              { "2026-10-25 01:15:00", WINDOW_OUTSIDE, "2026-11-01 00:00:00",
                "  02:15 CET, the second pass, is outside: next Sunday 01:00 CET" });
        CHECK(daily_two,
              { "2026-10-24 23:00:00", WINDOW_OUTSIDE, "2026-10-25 00:00:00",
                "02:00-03:00 on the autumn day opens at 02:00 CEST" },
              { "2026-10-25 00:00:00", WINDOW_INSIDE, "2026-10-25 02:00:00",
                "  and lasts two hours, till 03:00 CET" });
}

static void test_other_zones(void)
{
        _cleanup_window_ Window *friday = WINDOW("Fri 10:00-12:00");
        _cleanup_window_ Window *early = WINDOW("Sun 01:30-01:45");
        _cleanup_window_ Window *weekdays = WINDOW("Mon..Fri 02:00-05:00");

        /* New York: EDT -> EST Sun 2026-11-01 at 06:00 UTC (02:00 -> 01:00). */
        use_zone("America/New_York");
        CHECK(early, { "2026-10-31 12:00:00", WINDOW_OUTSIDE, "2026-11-01 05:30:00",
                       "New York: 01:30 twice, the first is EDT" });
        CHECK(weekdays, { "2026-11-28 12:00:00", WINDOW_OUTSIDE, "2026-11-30 07:00:00",
                          "New York: Sat -> Mon 02:00 EST" });

        /* Samoa went from -10 to +14 at 2011-12-30 10:00 UTC: Friday 2011-12-30 never was. */
        use_zone("Pacific/Apia");
        CHECK(friday, { "2011-12-29 12:00:00", WINDOW_OUTSIDE, "2012-01-05 20:00:00",
                        "Apia: the day that was skipped has no window; the next Friday 10:00 +14 has" });
}

/* The time zone is read at every call. */
static void test_zone_change(void)
{
        _cleanup_window_ Window *w = WINDOW("Mon..Fri 02:00-05:00");
        time_t when = 0;

        use_zone("UTC");
        is_int(window_check(w, utc("2026-11-30 01:30:00"), &when), WINDOW_OUTSIDE, "UTC: 01:30 is outside");
        use_zone("Europe/Berlin");
        is_int(window_check(w, utc("2026-11-30 01:30:00"), &when), WINDOW_INSIDE,
               "then Berlin: 02:30 is inside");
        is_int(when, utc("2026-11-30 04:00:00"), "  till 05:00 CET");
}

/*
 * For instants every 29 min 13 s over three weeks around each DST change,
 * and each window: the answer names an instant after NOW; the second
 * before it gives the same answer, and the instant itself the other one
 * (unless never); samples in between agree.
 */
static void sweep(const char *tz, const char *from, const Window *const *windows, size_t n_windows)
{
        unsigned checked = 0, failed = 0;
        time_t start = utc(from);

        use_zone(tz);
        for (size_t i = 0; i < n_windows; i++)
                for (time_t now = start; now < start + 21 * 86400; now += 1753) {
                        time_t when = 0, again = 0, mid = 0;
                        int r = window_check(windows[i], now, &when), before, after = -1, middle;

                        checked++;
                        if (r < 0 || when <= now) {
                                failed++;
                                printf("#   window %zu at %jd: r=%d when=%jd\n", i, (intmax_t)now, r,
                                       (intmax_t)when);
                                continue;
                        }
                        before = window_check(windows[i], when - 1, &again);
                        middle = window_check(windows[i], now + (when - now) / 2, &mid);
                        if (when != WINDOW_NEVER)
                                after = window_check(windows[i], when, &again);
                        if (before != r || middle != r || (when != WINDOW_NEVER && after != !r)) {
                                failed++;
                                printf("#   window %zu at %jd (%d until %jd): before %d, middle %d, at %d\n",
                                       i, (intmax_t)now, r, (intmax_t)when, before, middle, after);
                        }
                }
        printf("# %u instants checked in %s\n", checked, tz);
        is_int(failed, 0, "sweep: every answer is the first change");
}

static void test_sweep(void)
{
        Window *w[] = {
                WINDOW("Mon..Fri 02:00-05:00", "Sat,Sun 00:00-24:00"),
                WINDOW("Sun 22:00-02:00"),
                WINDOW("02:00-03:00"),
                WINDOW("02:30-02:45"),
                WINDOW("22:00-24:00", "00:00-04:00"),
                WINDOW("Fri..Mon 01:59:59-03:00:01", "Wed 12:00-11:00"),
                WINDOW("00:00-02:00", "03:00-24:00"),
        };

        sweep("UTC", "2026-03-18 00:00:00", (const Window *const *)w, ELEMENTSOF(w));
        sweep("Europe/Berlin", "2026-03-18 00:00:00", (const Window *const *)w, ELEMENTSOF(w));
        sweep("Europe/Berlin", "2026-10-14 00:00:00", (const Window *const *)w, ELEMENTSOF(w));
        sweep("America/New_York", "2026-10-21 00:00:00", (const Window *const *)w, ELEMENTSOF(w));
        sweep("Australia/Lord_Howe", "2026-03-25 00:00:00", (const Window *const *)w, ELEMENTSOF(w));
        for (size_t i = 0; i < ELEMENTSOF(w); i++)
                window_free(w[i]);
}

static void test_format(void)
{
        char buf[WINDOW_TIME_MAX], small[8];

        use_zone("Europe/Berlin");
        is_str(window_format_time(utc("2026-11-30 01:00:00"), buf, sizeof(buf)),
               "Mon 2026-11-30 02:00:00 CET", "format: winter in Berlin");
        is_str(window_format_time(utc("2026-03-29 01:00:00"), buf, sizeof(buf)),
               "Sun 2026-03-29 03:00:00 CEST", "format: the spring jump");
        is_str(window_format_time(WINDOW_NEVER, buf, sizeof(buf)), "never", "format: never");
        use_zone("UTC");
        is_str(window_format_time(utc("2026-11-30 01:00:00"), buf, sizeof(buf)),
               "Mon 2026-11-30 01:00:00 UTC", "format: UTC");
        is_str(window_format_time(utc("2026-11-30 01:00:00"), small, sizeof(small)), "@179600",
               "format: a buffer too small gets the seconds (1796000400), cut");
}

int main(void)
{
        test_parse_good();
        test_parse_bad();
        test_parse_edges();
        test_new();
        test_always();
        test_utc();
        test_berlin();
        test_other_zones();
        test_zone_change();
        test_sweep();
        test_format();
        return tap_done();
}
