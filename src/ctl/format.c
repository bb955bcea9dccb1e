/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Text for people (format.h). Sizes are computed in integers and rounded
 * down, so that a figure never claims more than is there ("99.9 MiB" of
 * 100 MiB is not "100.0 MiB") and the tests can expect exact strings.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format.h"
#include "util/macro.h"
#include "util/strings.h"

/* The longest key of the status summary, "Last job result". */
#define STATUS_KEY_WIDTH 15
/* The bar of the progress line: narrower is useless, wider says no more. */
#define BAR_MIN 10
#define BAR_MAX 30

char *format_escape(const char *s)
{
        size_t len, size;
        char *out;

        if (!s)
                s = "";
        len = strlen(s);
        /* An escape is 4 characters per byte at most. */
        if (len > (SIZE_MAX - 1) / 4)
                return NULL;
        size = len * 4 + 1;
        out = malloc(size);
        if (!out)
                return NULL;
        escape_control(s, len, out, size);
        return out;
}

/* BYTES / BASE in tenths, rounded down, without overflowing. */
static uint64_t tenths(uint64_t bytes, uint64_t base)
{
        return bytes / base * 10 + bytes % base * 10 / base;
}

const char *format_bytes(char *buf, size_t size, uint64_t bytes)
{
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        uint64_t base = 1024;
        size_t i = 0;

        if (bytes < 1024) {
                snprintf(buf, size, "%" PRIu64 " B", bytes);
                return buf;
        }
        while (i + 1 < ELEMENTSOF(units) && bytes / base >= 1024) {
                base *= 1024;
                i++;
        }
        uint64_t t = tenths(bytes, base);
        snprintf(buf, size, "%" PRIu64 ".%" PRIu64 " %s", t / 10, t % 10, units[i]);
        return buf;
}

const char *format_mib(char *buf, size_t size, uint64_t bytes)
{
        uint64_t t = tenths(bytes, 1024 * 1024);

        snprintf(buf, size, "%" PRIu64 ".%" PRIu64 " MiB", t / 10, t % 10);
        return buf;
}

const char *format_rate(char *buf, size_t size, uint64_t bytes_per_sec)
{
        char b[FORMAT_SHORT_MAX];

        snprintf(buf, size, "%s/s", format_bytes(b, sizeof(b), bytes_per_sec));
        return buf;
}

const char *format_timespan(char *buf, size_t size, uint64_t usec)
{
        uint64_t s = usec / USEC_PER_SEC, m = s / 60, h = m / 60, d = h / 24;

        if (s < 60)
                snprintf(buf, size, "%" PRIu64 " s", s);
        else if (m < 60)
                snprintf(buf, size, "%" PRIu64 " min", m);
        else if (h < 24 && m % 60 == 0)
                snprintf(buf, size, "%" PRIu64 " h", h);
        else if (h < 24)
                snprintf(buf, size, "%" PRIu64 " h %" PRIu64 " min", h, m % 60);
        else
                snprintf(buf, size, "%" PRIu64 " day%s", d, d == 1 ? "" : "s");
        return buf;
}

const char *format_date(char *buf, size_t size, uint64_t then)
{
        time_t t = (time_t)(then / USEC_PER_SEC);
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(buf, size, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(buf, size, "@%" PRIu64, then / USEC_PER_SEC);
        return buf;
}

const char *format_timestamp(char *buf, size_t size, uint64_t then, uint64_t now)
{
        char date[FORMAT_TIMESTAMP_MAX], span[FORMAT_SHORT_MAX];

        if (then == 0) {
                snprintf(buf, size, "never");
                return buf;
        }
        format_date(date, sizeof(date), then);
        if (then <= now)
                snprintf(buf, size, "%s; %s ago", date, format_timespan(span, sizeof(span), now - then));
        else
                snprintf(buf, size, "%s; in %s", date, format_timespan(span, sizeof(span), then - now));
        return buf;
}

/* How a wait is told: what (WaitingFor in words, escaped when not known) and, for a window, that it opens. */
typedef struct WaitWords {
        char what[64];  /* "install window", "the download's random delay" */
        bool window;
} WaitWords;

/* Returns false when P does not wait. */
static bool wait_words(WaitWords *w, const Properties *p)
{
        const char *f = p->waiting_for;

        if (!f || !*f)
                return false;
        w->window = strcmp(f, "install") == 0 || strcmp(f, "reboot") == 0;
        if (w->window)
                snprintf(w->what, sizeof(w->what), "%s window", f);
        else if (strcmp(f, "download") == 0)
                snprintf(w->what, sizeof(w->what), "the download's random delay");
        else
                /* A word newer than this client: as it is. */
                escape_control(f, strlen(f), w->what, sizeof(w->what));
        return true;
}

/* "in 3 h 12 min", or "now" when THEN is not after NOW. Returns BUF. */
static const char *time_left(char *buf, size_t size, uint64_t then, uint64_t now)
{
        char span[FORMAT_SHORT_MAX];

        if (then <= now)
                snprintf(buf, size, "now");
        else
                snprintf(buf, size, "in %s", format_timespan(span, sizeof(span), then - now));
        return buf;
}

#define CLOCK_NOT_SYNCED "the clock is not synchronised yet"

const char *format_waiting(char *buf, size_t size, const Properties *p, uint64_t now)
{
        char date[FORMAT_TIMESTAMP_MAX], left[FORMAT_SHORT_MAX];
        WaitWords w;

        if (!wait_words(&w, p))
                snprintf(buf, size, "%s", "");
        else if (p->waiting_until == 0)
                snprintf(buf, size, "%s%s", w.what, w.window ? " (" CLOCK_NOT_SYNCED ")" : "");
        else
                snprintf(buf, size, "%s, %s %s (%s)", w.what, w.window ? "opens" : "until",
                         format_date(date, sizeof(date), p->waiting_until),
                         time_left(left, sizeof(left), p->waiting_until, now));
        return buf;
}

/* "waiting for the install window until ..."; LEFT: and " (in 3 h)". */
static const char *waiting_line(char *buf, size_t size, const Properties *p, bool left, uint64_t now)
{
        char date[FORMAT_TIMESTAMP_MAX], span[FORMAT_SHORT_MAX + 3] = "";
        WaitWords w;

        if (!wait_words(&w, p))
                snprintf(buf, size, "%s", "");
        else if (p->waiting_until == 0)
                snprintf(buf, size, "waiting for %s%s%s", w.window ? "the " : "", w.what,
                         w.window ? " (" CLOCK_NOT_SYNCED ")" : "");
        else {
                if (left) {
                        char t[FORMAT_SHORT_MAX];

                        snprintf(span, sizeof(span), " (%s)", time_left(t, sizeof(t), p->waiting_until, now));
                }
                snprintf(buf, size, "waiting for %s%s until %s%s", w.window ? "the " : "", w.what,
                         format_date(date, sizeof(date), p->waiting_until), span);
        }
        return buf;
}

const char *format_waiting_line(char *buf, size_t size, const Properties *p, size_t width, uint64_t now)
{
        waiting_line(buf, size, p, true, now);
        if (width < size)
                buf[width] = '\0';
        return buf;
}

bool format_phase_is_final(const char *phase)
{
        return phase && (strcmp(phase, "done") == 0 || strcmp(phase, "failed") == 0);
}

static bool is_empty(const char *s)
{
        return !s || !*s;
}

/* "downloading, 45%, 12.0 of 26.0 MiB"; the phase escaped by the caller. */
static void job_progress(char *buf, size_t size, const char *phase, const Properties *p)
{
        char done[FORMAT_SHORT_MAX];
        uint64_t d = tenths(p->job_bytes_done, 1024 * 1024), t = tenths(p->job_bytes_total, 1024 * 1024);

        if (format_phase_is_final(p->job_phase) || (p->job_bytes_total == 0 && p->job_bytes_done == 0))
                snprintf(buf, size, "%s", phase);
        else if (p->job_bytes_total == 0)
                snprintf(buf, size, "%s, %s so far", phase, format_mib(done, sizeof(done), p->job_bytes_done));
        else
                snprintf(buf, size,
                         "%s, %" PRIu32 "%%, %" PRIu64 ".%" PRIu64 " of %" PRIu64 ".%" PRIu64 " MiB", phase,
                         MIN(p->job_progress, 100u), d / 10, d % 10, t / 10, t % 10);
}

/* The value of the Job line, e.g. "42 (target 2.0.1): downloading, 45%, 12.0 of 26.0 MiB". */
static char *job_describe(const Properties *p)
{
        _cleanup_free_ char *id = NULL, *target = NULL, *phase = NULL;
        char progress[256];
        char *s;

        if (is_empty(p->job_id))
                return strdup("none");
        id = format_escape(p->job_id);
        target = format_escape(p->job_target_version);
        phase = format_escape(is_empty(p->job_phase) ? "unknown" : p->job_phase);
        if (!id || !target || !phase)
                return NULL;
        job_progress(progress, sizeof(progress), phase, p);
        if (asprintf(&s, "%s%s%s%s: %s", id, *target ? " (target " : "", target, *target ? ")" : "",
                     progress) < 0)
                return NULL;
        return s;
}

static int status_line(FILE *f, const char *key, const char *value)
{
        return fprintf(f, "%*s: %s\n", STATUS_KEY_WIDTH, key, value) < 0 ? -EIO : 0;
}

/* A line for a string from the bus: escaped, EMPTY when empty. */
static int status_line_escaped(FILE *f, const char *key, const char *raw, const char *empty)
{
        _cleanup_free_ char *v = NULL;

        if (is_empty(raw))
                return status_line(f, key, empty);
        v = format_escape(raw);
        if (!v)
                return -ENOMEM;
        return status_line(f, key, v);
}

int format_status(FILE *f, const Properties *p, uint64_t now)
{
        _cleanup_free_ char *job = NULL;
        char when[FORMAT_TIMESTAMP_MAX + FORMAT_SHORT_MAX + 8];
        char waiting[256];
        int r = 0;

        job = job_describe(p);
        if (!job)
                return -ENOMEM;

        /* Each line is written even after an error, and the first error is returned. */
#define LINE(expr)                                                                                           \
        do {                                                                                                 \
                int _r = (expr);                                                                             \
                if (_r < 0 && r == 0)                                                                        \
                        r = _r;                                                                              \
        } while (0)
        LINE(status_line_escaped(f, "State", p->state, "n/a"));
        LINE(status_line(f, "Registered", p->registered ? "yes" : "no"));
        LINE(status_line(f, "Connected", p->connected ? "yes" : "no"));
        LINE(status_line_escaped(f, "Broker", p->broker, "n/a"));
        LINE(status_line_escaped(f, "Product", p->product_id, "n/a"));
        LINE(status_line_escaped(f, "Device", p->device_id, "n/a"));
        LINE(status_line_escaped(f, "Hardware", p->hardware_version, "n/a"));
        LINE(status_line_escaped(f, "Firmware", p->firmware_version, "n/a"));
        LINE(status_line(f, "Last report", format_timestamp(when, sizeof(when), p->last_report, now)));
        LINE(status_line(f, "Job", job));
        if (!is_empty(p->waiting_for))
                LINE(status_line(f, "Waiting", format_waiting(waiting, sizeof(waiting), p, now)));
        LINE(status_line_escaped(f, "Last error", p->last_error, "none"));
        LINE(status_line_escaped(f, "Last job result", p->last_job_result, "none"));
#undef LINE
        return r;
}

/* The phase of P escaped, cut to SIZE; "waiting" when there is none. */
static const char *phase_escaped(char *buf, size_t size, const Properties *p)
{
        const char *phase = is_empty(p->job_phase) ? "waiting" : p->job_phase;

        escape_control(phase, strlen(phase), buf, size);
        return buf;
}

static bool is_downloading(const Properties *p)
{
        return p->job_phase && strcmp(p->job_phase, "downloading") == 0;
}

const char *format_progress_line(char *buf, size_t size, const Properties *p, int64_t rate, size_t width)
{
        char phase[48], text[192], bytes[2 * FORMAT_SHORT_MAX + 1], speed[FORMAT_SHORT_MAX] = "";
        char done[FORMAT_SHORT_MAX], total[FORMAT_SHORT_MAX], bar[BAR_MAX + 1];
        unsigned progress = MIN(p->job_progress, 100u);
        size_t n, inner;

        phase_escaped(phase, sizeof(phase), p);
        if (p->job_bytes_total > 0)
                snprintf(bytes, sizeof(bytes), "%s/%s", format_bytes(done, sizeof(done), p->job_bytes_done),
                         format_bytes(total, sizeof(total), p->job_bytes_total));
        else if (p->job_bytes_done > 0)
                format_bytes(bytes, sizeof(bytes), p->job_bytes_done);
        else
                bytes[0] = '\0';
        if (is_downloading(p) && rate >= 0)
                format_rate(speed, sizeof(speed), (uint64_t)rate);

        if (is_downloading(p) && p->job_bytes_total == 0)
                /* The size is not known: no percentage to give. */
                n = (size_t)snprintf(text, sizeof(text), "%s  %s%s%s", phase, bytes, *speed ? "  " : "", speed);
        else
                n = (size_t)snprintf(text, sizeof(text), "%s  %3u%%%s%s%s%s", phase, progress,
                                     *bytes ? "  " : "", bytes, *speed ? "  " : "", speed);
        n = MIN(n, sizeof(text) - 1);

        /* "[" bar "]  " text: the bar only where it fits at its narrowest. */
        inner = width > n + 4 ? MIN(width - n - 4, (size_t)BAR_MAX) : 0;
        if (inner >= BAR_MIN) {
                size_t fill = inner * progress / 100;

                memset(bar, '#', fill);
                memset(bar + fill, '.', inner - fill);
                bar[inner] = '\0';
                snprintf(buf, size, "[%s]  %s", bar, text);
        } else
                snprintf(buf, size, "%s", text);

        if (width < size)
                buf[width] = '\0';
        return buf;
}

const char *format_plain_line(char *buf, size_t size, const Properties *p)
{
        char phase[48];

        if (!is_empty(p->waiting_for))
                return waiting_line(buf, size, p, false, 0);
        phase_escaped(phase, sizeof(phase), p);
        if (!is_downloading(p))
                snprintf(buf, size, "%s", phase);
        else if (p->job_bytes_total == 0)
                snprintf(buf, size, "%s %" PRIu64 " bytes", phase, p->job_bytes_done);
        else
                snprintf(buf, size, "%s %u%% %" PRIu64 "/%" PRIu64 " bytes", phase, MIN(p->job_progress, 100u),
                         p->job_bytes_done, p->job_bytes_total);
        return buf;
}
