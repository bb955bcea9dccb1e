/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small macros used everywhere: cleanup attributes, array sizes, and the
 * "free and return NULL" destructors convention (xxx_free() accepts NULL and
 * half-built objects, and returns NULL so callers can write p = xxx_free(p)).
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define USEC_PER_SEC ((uint64_t)1000000ULL)
#define USEC_PER_MSEC ((uint64_t)1000ULL)

/* CLOCK_REALTIME in microseconds, as the D-Bus properties carry times. */
static inline uint64_t now_realtime_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static inline void *mfree(void *p)
{
        free(p);
        return NULL;
}

/* Replaces *P by a copy of S (NULL allowed). Returns 0, or -ENOMEM with *P untouched. */
static inline int free_and_strdup(char **p, const char *s)
{
        char *d = NULL;

        if (s && !(d = strdup(s)))
                return -ENOMEM;
        free(*p);
        *p = d;
        return 0;
}

static inline void freep(void *p)
{
        free(*(void **)p);
}

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

/* Frees a string after overwriting it: for secrets. */
static inline void erase_and_free(char *s)
{
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

static inline void erase_and_freep(char **s)
{
        erase_and_free(*s);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_erase_ _cleanup_(erase_and_freep)

/* Takes ownership out of a cleanup variable: return TAKE_PTR(p); */
#define TAKE_PTR(p)                                                                                          \
        ({                                                                                                   \
                __typeof__(p) _p_ = (p);                                                                     \
                (p) = NULL;                                                                                  \
                _p_;                                                                                         \
        })

#define TAKE_FD(fd)                                                                                          \
        ({                                                                                                   \
                int _fd_ = (fd);                                                                             \
                (fd) = -1;                                                                                   \
                _fd_;                                                                                        \
        })

static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}
