/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Update windows: one entry's parser, and the arithmetic from a time_t to
 * "inside until T" or "outside until T".
 *
 * The arithmetic works on two clocks. Instants are seconds since the epoch
 * (int64_t here, time_t at the edges). Wall-clock times are what the local
 * clock reads, counted the same way as if that clock were UTC ("wall
 * seconds": day D of the calendar starts at wall second D * 86400). An
 * entry is a set of wall intervals; each end is turned into an instant by
 * instant_from_wall(): the earliest instant whose wall clock reads that time
 * or later. That one rule gives both DST answers: a time skipped by a jump
 * forward becomes the instant of the jump, the first that exists after it;
 * a time that happens twice (a jump back) becomes the first of the two. It
 * is nondecreasing in the wall time, so a stretch that is continuous on the
 * wall clock stays continuous in real time.
 *
 * Not mktime() with tm_isdst = -1: POSIX leaves its answer for a time in a
 * gap or an overlap open, and glibc's is not the rule above (measured: in
 * Europe/Berlin, a skipped 02:30 gives 03:30, not 03:00; a repeated 02:30
 * gives the first or the second depending on the time of the previous
 * call). The UTC offsets around a time are asked from localtime_r(), and
 * the wall clock is taken from its fields (not tm_gmtoff), so nothing
 * depends on how the offset is reported.
 *
 * Invariants: a Window holds 1..WINDOW_ENTRIES_MAX entries, each with days
 * != 0 and start < end <= start + 86400; nothing here loops without a
 * bound; no answer is given that window_check() would not give again for
 * the instant it names.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/macro.h"
#include "util/strings.h"
#include "window.h"

#define DAY 86400
#define WEEK (7 * DAY)
#define QUOTE_MAX 24 /* bytes of the input quoted in a message */

/* Indexed by tm_wday. */
static const char *const day_names[7] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
#define DAY_LIST "Mon Tue Wed Thu Fri Sat Sun"

/*
 * UTC offsets stay within 15 hours of UTC, and no zone changes its offset
 * twice within 60 hours: in the tz database (2025b) since 1970 the closest
 * two changes of one zone are 166 hours apart. So the offsets found 30
 * hours either side of a wall time are the only ones an instant showing it
 * can have (instant_from_wall()).
 */
#define OFFSET_REACH (30 * 3600)

/* ---- parsing ---- */

static int parse_error(char *error, size_t size, const char *format, ...) _printf_(3, 4);

static int parse_error(char *error, size_t size, const char *format, ...)
{
        va_list ap;

        if (size > 0) {
                va_start(ap, format);
                vsnprintf(error, size, format, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* Up to QUOTE_MAX bytes at P, control characters escaped, "..." when cut: for a message. */
static const char *quote(const char *p, char buf[static 4 * QUOTE_MAX + 4])
{
        size_t len = strnlen(p, QUOTE_MAX + 1), n;

        n = escape_control(p, MIN(len, (size_t)QUOTE_MAX), buf, 4 * QUOTE_MAX + 1);
        if (len > QUOTE_MAX)
                memcpy(buf + n, "...", sizeof("..."));
        return buf;
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

static const char *skip_blanks(const char *p)
{
        while (is_blank(*p))
                p++;
        return p;
}

static bool is_letter(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

/* One day name at *P; advances *P past it. */
static int parse_day(const char **p, unsigned *ret, char *error, size_t size)
{
        char q[4 * QUOTE_MAX + 4];
        size_t n = 0;

        while (is_letter((*p)[n]))
                n++;
        if (n == 0)
                return parse_error(error, size, "expected a day (" DAY_LIST ") at \"%s\"", quote(*p, q));

        for (unsigned d = 0; d < 7; d++)
                if (n == 3 && strncasecmp(*p, day_names[d], 3) == 0) {
                        *p += n;
                        *ret = d;
                        return 0;
                }
        return parse_error(error, size, "unknown day \"%.*s\" (days are " DAY_LIST ")",
                           (int)MIN(n, QUOTE_MAX), *p);
}

/* DAYS at *P ("Mon,Wed..Fri"); advances *P to just after the last day. */
static int parse_days(const char **p, uint8_t *ret, char *error, size_t size)
{
        uint8_t days = 0;
        unsigned a, b;
        const char *q;
        int r;

        for (;;) {
                r = parse_day(p, &a, error, size);
                if (r < 0)
                        return r;
                b = a;
                q = skip_blanks(*p);
                if (q[0] == '.' && q[1] == '.') {
                        *p = skip_blanks(q + 2);
                        r = parse_day(p, &b, error, size);
                        if (r < 0)
                                return r;
                        if (a == b)
                                return parse_error(error, size,
                                                   "%s..%s is a range of one day: write %s, or a range of "
                                                   "two different days",
                                                   day_names[a], day_names[b], day_names[a]);
                }
                /* Mon..Sun and Fri..Mon alike: forward through the week, wrapping after Sunday. */
                for (unsigned d = a;; d = (d + 1) % 7) {
                        days |= (uint8_t)(1u << d);
                        if (d == b)
                                break;
                }

                q = skip_blanks(*p);
                if (*q != ',')
                        break;
                *p = skip_blanks(q + 1);
        }

        *ret = days;
        return 0;
}

/*
 * A time at *P: H:MM or HH:MM, optionally :SS. 24:00 only if AS_END.
 * Returns seconds after midnight (86400 for 24:00); advances *P.
 */
static int parse_time(const char **p, bool as_end, uint32_t *ret, char *error, size_t size)
{
        const char *s = *p, *t = s;
        unsigned h = 0, m = 0, sec = 0;
        char q[4 * QUOTE_MAX + 4];
        size_t n;

        for (n = 0; is_digit(t[n]); n++)
                h = n < 3 ? h * 10 + (unsigned)(t[n] - '0') : h;
        if (n == 0)
                return parse_error(error, size, "expected a time (HH:MM) at \"%s\"", quote(s, q));
        t += n;
        if (*t != ':' || !is_digit(t[1]) || !is_digit(t[2]) || is_digit(t[3]))
                return parse_error(error, size, "\"%s\": a time is HH:MM or HH:MM:SS", quote(s, q));
        m = (unsigned)(t[1] - '0') * 10 + (unsigned)(t[2] - '0');
        t += 3;
        if (*t == ':') {
                if (!is_digit(t[1]) || !is_digit(t[2]) || is_digit(t[3]))
                        return parse_error(error, size, "\"%s\": a time is HH:MM or HH:MM:SS", quote(s, q));
                sec = (unsigned)(t[1] - '0') * 10 + (unsigned)(t[2] - '0');
                t += 3;
        }

        /* The token is digits and colons only: safe to quote as it is. */
        if (n > 2 || h > 24)
                return parse_error(error, size, "\"%.*s\": hour out of range 00..23 (and 24:00 as an end)",
                                   (int)MIN((size_t)(t - s), QUOTE_MAX), s);
        if (m > 59)
                return parse_error(error, size, "\"%.*s\": minute out of range 00..59", (int)(t - s), s);
        if (sec > 59)
                return parse_error(error, size, "\"%.*s\": second out of range 00..59", (int)(t - s), s);
        if (h == 24 && (m > 0 || sec > 0))
                return parse_error(error, size, "\"%.*s\": past 24:00", (int)(t - s), s);
        if (h == 24 && !as_end)
                return parse_error(error, size, "\"%.*s\": 24:00 can only be an end (write 00:00)",
                                   (int)(t - s), s);

        *p = t;
        *ret = h * 3600 + m * 60 + sec;
        return 0;
}

int window_entry_parse(const char *s, WindowEntry *ret, char *error, size_t error_size)
{
        char q[4 * QUOTE_MAX + 4];
        uint32_t start = 0, end = 0; /* set by parse_time() unless it fails */
        uint8_t days = 0x7f;
        const char *p;
        int r;

        if (!s || !ret)
                return parse_error(error, error_size, "no entry");

        p = skip_blanks(s);
        if (*p == '\0')
                return parse_error(error, error_size, "is empty: an entry is [DAYS ]HH:MM-HH:MM");

        if (is_letter(*p)) {
                const char *days_start = p;

                r = parse_days(&p, &days, error, error_size);
                if (r < 0)
                        return r;
                if (*skip_blanks(p) == '\0')
                        return parse_error(
                                error, error_size,
                                "no times after the days: write \"%.*s 00:00-24:00\" for whole days",
                                (int)MIN((size_t)(p - days_start), QUOTE_MAX), days_start);
                if (*p == '-')
                        return parse_error(error, error_size,
                                           "\"-\" after a day: a range of days is written Mon..Fri");
                if (!is_blank(*p))
                        return parse_error(error, error_size, "unexpected \"%s\" after a day", quote(p, q));
                p = skip_blanks(p);
        } else if (!is_digit(*p))
                return parse_error(error, error_size,
                                   "unexpected \"%s\": expected a day (" DAY_LIST ") or a time (HH:MM)",
                                   quote(p, q));

        r = parse_time(&p, false, &start, error, error_size);
        if (r < 0)
                return r;
        p = skip_blanks(p);
        if (*p != '-')
                return parse_error(error, error_size,
                                   "expected \"-\" and an end time after the start time%s%s%s",
                                   *p ? ", not \"" : "", *p ? quote(p, q) : "", *p ? "\"" : "");
        p = skip_blanks(p + 1);
        r = parse_time(&p, true, &end, error, error_size);
        if (r < 0)
                return r;
        p = skip_blanks(p);
        if (*p != '\0')
                return parse_error(error, error_size, "unexpected \"%s\" after the end time", quote(p, q));

        if (end == start)
                return parse_error(error, error_size,
                                   "starts and ends at the same time: an empty window (00:00-24:00 is a "
                                   "whole day)");

        *ret = (WindowEntry){
                .days = days,
                .start = start,
                /* Not after the start: it crosses midnight and ends on the next day. */
                .end = end > start ? end : end + DAY,
        };
        return 0;
}

/* ---- the Window ---- */

typedef struct Span {
        int64_t start, end; /* [start, end) */
} Span;

static int span_compare(const void *a, const void *b)
{
        const Span *x = a, *y = b;

        if (x->start != y->start)
                return x->start < y->start ? -1 : 1;
        return (x->end > y->end) - (x->end < y->end);
}

static bool entry_valid(const WindowEntry *e)
{
        return e->days != 0 && e->days < 0x80 && e->start < DAY && e->end > e->start &&
               e->end <= e->start + DAY;
}

/*
 * Whether the entries cover the week's wall clock without a gap, in wall
 * seconds from Sunday 00:00, wrapping after Saturday. Such a window is
 * open for good, whatever DST does (an instant is never between two wall
 * times it cannot show).
 */
static int window_covers_week(const WindowEntry *entries, size_t n, bool *ret)
{
        _cleanup_free_ Span *spans = NULL;
        size_t k = 0;
        int64_t reach = 0;

        spans = calloc(n * 7 * 2, sizeof(Span));
        if (!spans)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++)
                for (unsigned d = 0; d < 7; d++) {
                        int64_t start = (int64_t)d * DAY + entries[i].start;
                        int64_t end = (int64_t)d * DAY + entries[i].end;

                        if (!(entries[i].days & (1u << d)))
                                continue;
                        spans[k++] = (Span){ start, MIN(end, (int64_t)WEEK) };
                        if (end > WEEK) /* Saturday night into Sunday morning */
                                spans[k++] = (Span){ 0, end - WEEK };
                }

        qsort(spans, k, sizeof(Span), span_compare);
        for (size_t i = 0; i < k && spans[i].start <= reach; i++)
                reach = MAX(reach, spans[i].end);

        *ret = reach >= WEEK;
        return 0;
}

int window_new(const WindowEntry *entries, size_t n_entries, Window **ret)
{
        _cleanup_window_ Window *w = NULL;
        int r;

        if (!entries || !ret || n_entries == 0 || n_entries > WINDOW_ENTRIES_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n_entries; i++)
                if (!entry_valid(&entries[i]))
                        return -EINVAL;

        w = malloc(sizeof(Window) + n_entries * sizeof(WindowEntry));
        if (!w)
                return -ENOMEM;
        w->n_entries = n_entries;
        memcpy(w->entries, entries, n_entries * sizeof(WindowEntry));

        r = window_covers_week(entries, n_entries, &w->always);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

Window *window_free(Window *w)
{
        free(w);
        return NULL;
}

/* ---- time arithmetic ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
        return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days from 1970-01-01 to Y-M-D of the proleptic Gregorian calendar (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
        int64_t era, yoe, doy;

        y -= m <= 2;
        era = floor_div(y, 400);
        yoe = y - era * 400;
        doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* The wall clock at instant T, in wall seconds. */
static int wall_at(int64_t t, int64_t *ret)
{
        time_t tt = (time_t)t;
        struct tm tm;

        if ((int64_t)tt != t || !localtime_r(&tt, &tm))
                return -EOVERFLOW;

        *ret = days_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday) *
                       DAY +
               tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
        return 0;
}

/* The wall clock's offset from UTC at instant T, in seconds. */
static int offset_at(int64_t t, int64_t *ret)
{
        int64_t wall;
        int r;

        r = wall_at(t, &wall);
        if (r < 0)
                return r;
        *ret = wall - t;
        return 0;
}

/*
 * The earliest instant whose wall clock reads WALL or later: WALL's instant;
 * the first of two; or, for a time skipped by a jump forward, the jump.
 */
static int instant_from_wall(int64_t wall, int64_t *ret)
{
        int64_t before, after, lo, hi, w;
        int r;

        r = offset_at(wall - OFFSET_REACH, &before);
        if (r < 0)
                return r;
        r = offset_at(wall + OFFSET_REACH, &after);
        if (r < 0)
                return r;

        /* An instant showing WALL has one of the two offsets; the larger offset gives the earlier one. */
        for (int i = 0; i < 2; i++) {
                int64_t candidate = wall - (i == 0 ? MAX(before, after) : MIN(before, after));

                r = wall_at(candidate, &w);
                if (r < 0)
                        return r;
                if (w == wall) {
                        *ret = candidate;
                        return 0;
                }
        }

        /* No instant shows WALL: the clock jumped over it, from offset BEFORE to AFTER. Find the jump. */
        if (after <= before)
                return -ERANGE; /* two changes within reach: no zone does that */
        lo = wall - after;      /* shows wall - after + before < WALL */
        hi = wall - before;     /* shows WALL or later */
        while (hi - lo > 1) {
                int64_t mid = lo + (hi - lo) / 2;

                r = wall_at(mid, &w);
                if (r < 0)
                        return r;
                if (w >= wall)
                        hi = mid;
                else
                        lo = mid;
        }
        *ret = hi;
        return 0;
}

/*
 * The entries' intervals in real time, for the days whose wall clock dates
 * are FIRST..LAST (day numbers since 1970-01-01), sorted; those a DST jump
 * empties are left out. *ret is the caller's to free.
 */
static int window_spans(const Window *w, int64_t first, int64_t last, Span **ret, size_t *ret_n)
{
        _cleanup_free_ Span *spans = NULL;
        size_t n = 0;
        int r;

        spans = calloc((size_t)(last - first + 1) * w->n_entries, sizeof(Span));
        if (!spans)
                return -ENOMEM;

        for (int64_t d = first; d <= last; d++) {
                unsigned wday = (unsigned)(((d + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */

                for (size_t i = 0; i < w->n_entries; i++) {
                        const WindowEntry *e = &w->entries[i];
                        Span s;

                        if (!(e->days & (1u << wday)))
                                continue;
                        r = instant_from_wall(d * DAY + e->start, &s.start);
                        if (r < 0)
                                return r;
                        r = instant_from_wall(d * DAY + e->end, &s.end);
                        if (r < 0)
                                return r;
                        if (s.start < s.end)
                                spans[n++] = s;
                }
        }

        qsort(spans, n, sizeof(Span), span_compare);
        *ret = TAKE_PTR(spans);
        *ret_n = n;
        return 0;
}

int window_check(const Window *w, time_t now, time_t *ret_when)
{
        _cleanup_free_ Span *spans = NULL;
        int64_t wall, today;
        size_t n;
        int r;

        if (!ret_when)
                return -EINVAL;
        tzset(); /* localtime_r() need not: a changed TZ would go unseen */

        if (!w || w->always) {
                *ret_when = WINDOW_NEVER;
                return WINDOW_INSIDE;
        }

        r = wall_at(now, &wall);
        if (r < 0)
                return r;
        today = floor_div(wall, DAY);

        /*
         * An entry ends less than two days after the midnight of its day, so
         * nothing from before yesterday reaches NOW. Ahead: the week repeats,
         * and a DST jump can empty at most one occurrence of an entry, or of
         * a gap between entries, in two weeks; so the next opening, and the
         * end of the stretch NOW is in (the window is not "always"), lie
         * within 15 days.
         */
        r = window_spans(w, today - 2, today + 15, &spans, &n);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n;) {
                int64_t start = spans[i].start, end = spans[i].end;

                /* Merge what overlaps or touches: one stretch. */
                for (i++; i < n && spans[i].start <= end; i++)
                        end = MAX(end, spans[i].end);

                if (now < start || now < end) {
                        int64_t when = now < start ? start : end;

                        if ((int64_t)(time_t)when != when)
                                return -EOVERFLOW;
                        *ret_when = (time_t)when;
                        return now < start ? WINDOW_OUTSIDE : WINDOW_INSIDE;
                }
        }
        return -ERANGE;
}

const char *window_format_time(time_t t, char *buf, size_t size)
{
        struct tm tm;

        if (size == 0)
                return buf;
        tzset();

        if (t == WINDOW_NEVER)
                snprintf(buf, size, "never");
        else if (!localtime_r(&t, &tm) || strftime(buf, size, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(buf, size, "@%jd", (intmax_t)t);
        return buf;
}
