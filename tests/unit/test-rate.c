/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for src/ctl/rate.c, the download rate of `krtiotctl watch`: the
 * average over the window, not the last step; unknown before two samples;
 * 0 after a stall; a repeated count adds nothing; a download that starts
 * over starts a new series; old samples leave the window; no overflow.
 */
#include "rate.h"
#include "tap.h"
#include "util/macro.h"

#define S USEC_PER_SEC

int main(void)
{
        Rate r = {};

        is_int(rate_get(&r, 0), -1, "no sample: not known");
        rate_add(&r, 10 * S, 1000);
        is_int(rate_get(&r, 10 * S), -1, "one sample: not known");

        rate_add(&r, 11 * S, 2000);
        is_int(rate_get(&r, 11 * S), 1000, "two samples a second apart");
        rate_add(&r, 12 * S, 5000);
        is_int(rate_get(&r, 12 * S), 2000, "the average over the window, not the last step (3000)");

        rate_add(&r, 12 * S + S / 2, 5000);
        is_int(rate_get(&r, 12 * S + S / 2), 2000, "the same count again adds nothing");
        is_int(rate_get(&r, 12 * S + RATE_STALL_USEC), 2000, "no sample for the stall time: still the rate");
        is_int(rate_get(&r, 12 * S + RATE_STALL_USEC + 1), 0, "no sample for longer: stalled, 0");

        /* Past the window, the first samples no longer count. */
        rate_reset(&r);
        rate_add(&r, 0, 0);
        rate_add(&r, 1 * S, 100000);
        for (uint64_t t = 2; t <= 7; t++)
                rate_add(&r, t * S, 100000 + (t - 1) * 1000);
        is_int(rate_get(&r, 7 * S), 1000, "a burst older than the window is forgotten");

        rate_add(&r, 8 * S, 10);
        rate_add(&r, 9 * S, 510);
        is_int(rate_get(&r, 9 * S), 500, "fewer bytes than before: a new series");

        rate_reset(&r);
        rate_add(&r, 5 * S, 0);
        rate_add(&r, 4 * S, 100);
        is_int(rate_get(&r, 4 * S), -1, "a clock going back: a new series");

        rate_reset(&r);
        for (uint64_t i = 0; i < 3 * RATE_SAMPLES; i++)
                rate_add(&r, i * 100000, i * 100);
        is_int(r.n, RATE_SAMPLES, "the ring never holds more than RATE_SAMPLES");
        is_int(rate_get(&r, (3 * RATE_SAMPLES - 1) * 100000), 1000, "and the rate over a full ring");

        rate_reset(&r);
        rate_add(&r, 0, 0);
        rate_add(&r, 1, UINT64_MAX);
        is_int(rate_get(&r, 1), INT64_MAX, "an absurd rate saturates, no overflow");
        rate_reset(&r);
        rate_add(&r, 0, 0);
        rate_add(&r, 3 * S, UINT64_MAX / 2);
        ok(rate_get(&r, 3 * S) > 0, "a huge count over seconds does not overflow");

        return tap_done();
}
