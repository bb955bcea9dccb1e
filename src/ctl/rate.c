/* SPDX-License-Identifier: Apache-2.0 */
/* The download rate over a window of samples (rate.h). */
#include <string.h>

#include "rate.h"
#include "util/macro.h"

void rate_reset(Rate *r)
{
        *r = (Rate){};
}

static const RateSample *rate_sample(const Rate *r, size_t i)
{
        return &r->samples[(r->first + i) % RATE_SAMPLES];
}

void rate_add(Rate *r, uint64_t now, uint64_t bytes)
{
        if (r->n > 0) {
                const RateSample *last = rate_sample(r, r->n - 1);

                if (bytes == last->bytes && now >= last->time)
                        return;
                if (bytes < last->bytes || now < last->time)
                        rate_reset(r);
        }
        /* Samples the window has left behind, and the oldest when the ring is full. */
        while (r->n > 0 && (r->n == RATE_SAMPLES || now - rate_sample(r, 0)->time > RATE_WINDOW_USEC)) {
                r->first = (r->first + 1) % RATE_SAMPLES;
                r->n--;
        }
        r->samples[(r->first + r->n) % RATE_SAMPLES] = (RateSample){ .time = now, .bytes = bytes };
        r->n++;
}

int64_t rate_get(const Rate *r, uint64_t now)
{
        const RateSample *base, *last;
        uint64_t bytes, usec, rate;

        if (r->n == 0)
                return -1;
        last = rate_sample(r, r->n - 1);
        if (now > last->time && now - last->time > RATE_STALL_USEC)
                return 0;
        if (r->n < 2)
                return -1;
        base = rate_sample(r, 0);
        usec = last->time - base->time;
        if (usec == 0)
                return -1;
        bytes = last->bytes - base->bytes;
        /* bytes * 10^6 / usec, without overflowing for any byte count. */
        if (bytes / usec > (uint64_t)INT64_MAX / USEC_PER_SEC)
                return INT64_MAX;
        rate = bytes / usec * USEC_PER_SEC + bytes % usec * USEC_PER_SEC / usec;
        return rate > INT64_MAX ? INT64_MAX : (int64_t)rate;
}
