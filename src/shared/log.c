/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging: one line per call on stderr, prefixed "<N>" so that journald (and
 * systemd's StandardError=journal) files it at priority N. Lines are written
 * with a single write() so concurrent children's output does not interleave
 * mid-line. Control characters inside a message (newlines included) are
 * escaped as \xNN: one call, one journal entry, and nothing from the network
 * reaches a terminal raw.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "util/strings.h"

#define LOG_LINE_MAX 2048

static int log_max_level = LOG_INFO;

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

int log_level_from_string(const char *s)
{
        static const struct {
                const char *name;
                int level;
        } table[] = {
                { "emerg", LOG_EMERG },     { "alert", LOG_ALERT }, { "crit", LOG_CRIT },
                { "err", LOG_ERR },         { "error", LOG_ERR },   { "warning", LOG_WARNING },
                { "notice", LOG_NOTICE },   { "info", LOG_INFO },   { "debug", LOG_DEBUG },
        };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcasecmp(s, table[i].name) == 0)
                        return table[i].level;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == 0)
                return s[0] - '0';
        return -EINVAL;
}

int log_internal(int level, int error, const char *format, ...)
{
        char msg[LOG_LINE_MAX], line[LOG_LINE_MAX];
        int saved_errno = errno;
        size_t n;

        if (error < 0)
                error = -error;

        if (level <= log_max_level) {
                va_list ap;

                errno = error; /* for %m */
                va_start(ap, format);
                (void)vsnprintf(msg, sizeof(msg), format, ap);
                va_end(ap);

                /* Whatever the arguments held (IDs, URLs, reasons from the network), the line holds no
                 * control character: no terminal escapes, and one call is one journal entry. */
                n = (size_t)snprintf(line, sizeof(line), "<%d>", level & LOG_PRIMASK);
                n += escape_control(msg, strlen(msg), line + n, sizeof(line) - n - 1);
                line[n++] = '\n';
                (void)!write(STDERR_FILENO, line, n);
        }

        errno = saved_errno;
        return error > 0 ? -error : -EIO;
}
