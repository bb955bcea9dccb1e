/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Exponential backoff with full jitter. Invariants: the ceiling never
 * overflows however many attempts were made (it saturates at max_usec), and
 * a delay is always within [floor_usec, max(floor_usec, ceiling)].
 */
#include <limits.h>

#include "backoff.h"
#include "util/macro.h"
#include "util/random-id.h"

#define BACKOFF_DEFAULT_FLOOR_USEC (100 * USEC_PER_MSEC)

void backoff_init(Backoff *b, uint64_t initial_usec, uint64_t max_usec)
{
        *b = (Backoff){
                .initial_usec = initial_usec,
                .max_usec = max_usec,
                .floor_usec = BACKOFF_DEFAULT_FLOOR_USEC,
        };
}

void backoff_reset(Backoff *b)
{
        b->attempt = 0;
}

void backoff_to_max(Backoff *b)
{
        b->attempt = MAX(b->attempt, 64u);
}

uint64_t backoff_ceiling(const Backoff *b)
{
        /* initial << attempt would overflow (or shift out of range): the cap is reached long before. */
        if (b->attempt >= 64 || b->initial_usec > (UINT64_MAX >> b->attempt))
                return b->max_usec;

        return MIN(b->max_usec, b->initial_usec << b->attempt);
}

static void backoff_advance(Backoff *b)
{
        /* Saturate rather than wrap back to the smallest delay after 2^32 failures. */
        if (b->attempt < UINT_MAX)
                b->attempt++;
}

uint64_t backoff_next_with(Backoff *b, uint64_t r)
{
        uint64_t ceiling = backoff_ceiling(b), span;

        backoff_advance(b);

        /* An initial or max below the floor: the floor wins, it is what keeps us from spinning. */
        if (ceiling <= b->floor_usec)
                return b->floor_usec;

        span = ceiling - b->floor_usec;
        if (span == UINT64_MAX) /* span + 1 would be 0; only possible with a floor of 0 */
                return r;

        return b->floor_usec + r % (span + 1);
}

uint64_t backoff_next(Backoff *b)
{
        uint64_t ceiling = backoff_ceiling(b), span;

        backoff_advance(b);

        if (ceiling <= b->floor_usec)
                return b->floor_usec;

        span = ceiling - b->floor_usec;
        if (span == UINT64_MAX)
                return random_below(UINT64_MAX); /* [0, 2^64 - 1): close enough to the full range */

        return b->floor_usec + random_below(span + 1);
}
