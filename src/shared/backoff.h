/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Exponential backoff with full jitter (AWS architecture blog): the n-th
 * delay is uniform in [floor, min(cap, initial * 2^n)]. A fleet restarted at
 * once thus spreads out instead of reconnecting in one burst.
 */
#pragma once

#include <stdint.h>

typedef struct Backoff {
        uint64_t initial_usec; /* first ceiling, e.g. 1 s */
        uint64_t max_usec;     /* cap, e.g. mqtt.reconnect_max */
        uint64_t floor_usec;   /* never less than this (avoid spinning), e.g. 100 ms */
        unsigned attempt;      /* delays handed out since the last reset */
} Backoff;

void backoff_init(Backoff *b, uint64_t initial_usec, uint64_t max_usec);
void backoff_reset(Backoff *b);
/* From now on the ceiling is the cap: for a failure that retrying soon cannot help. */
void backoff_to_max(Backoff *b);

/* The ceiling of the next delay, without jitter: min(max, initial * 2^attempt). */
uint64_t backoff_ceiling(const Backoff *b);

/* The next delay, jittered with getrandom(); advances the attempt counter. */
uint64_t backoff_next(Backoff *b);

/* Same with a caller-given random number R (for tests): floor + R % (ceiling - floor + 1). */
uint64_t backoff_next_with(Backoff *b, uint64_t r);
