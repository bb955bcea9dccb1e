/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal TAP producer for the unit tests (one executable per module, run
 * by `meson test`, protocol 'tap'). Each check prints "ok N - what" or
 * "not ok N - what" with the failing expression and location; tap_done()
 * prints the plan and returns the exit status.
 */
#pragma once

#include <stdio.h>
#include <string.h>

static unsigned tap_count, tap_failed;

static inline void tap_result(int pass, const char *file, int line, const char *expr, const char *name)
{
        tap_count++;
        if (pass) {
                printf("ok %u - %s\n", tap_count, name);
        } else {
                tap_failed++;
                printf("not ok %u - %s\n#   %s:%d: %s\n", tap_count, name, file, line, expr);
        }
        fflush(stdout);
}

#define ok(expr, name) tap_result(!!(expr), __FILE__, __LINE__, #expr, name)

#define is_int(got, want, name)                                                                              \
        do {                                                                                                 \
                long long _g = (long long)(got), _w = (long long)(want);                                     \
                tap_result(_g == _w, __FILE__, __LINE__, #got " == " #want, name);                           \
                if (_g != _w)                                                                                \
                        printf("#   got %lld, want %lld\n", _g, _w);                                         \
        } while (0)

#define is_str(got, want, name)                                                                              \
        do {                                                                                                 \
                const char *_g = (got), *_w = (want);                                                        \
                int _p = (_g && _w) ? strcmp(_g, _w) == 0 : _g == _w;                                        \
                tap_result(_p, __FILE__, __LINE__, #got " == " #want, name);                                 \
                if (!_p)                                                                                     \
                        printf("#   got  '%s'\n#   want '%s'\n", _g ? _g : "(null)", _w ? _w : "(null)");    \
        } while (0)

static inline int tap_done(void)
{
        printf("1..%u\n", tap_count);
        if (tap_failed)
                printf("# %u of %u failed\n", tap_failed, tap_count);
        return tap_failed ? 1 : 0;
}
