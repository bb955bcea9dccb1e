/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backoff.c: the ceilings of SPEC 4.5 (1 s doubling up to reconnect_max),
 * the jitter bounds, reset, and arithmetic that must not overflow however
 * long a device stays offline.
 */
#include <limits.h>
#include <stdbool.h>

#include "backoff.h"
#include "tap.h"
#include "util/macro.h"

static void test_ceilings(void)
{
        static const uint64_t want[] = {1, 2, 4, 8, 16, 32, 60, 60, 60};
        Backoff b;
        bool seq = true;

        backoff_init(&b, 1 * USEC_PER_SEC, 60 * USEC_PER_SEC);
        is_int(b.floor_usec, 100 * USEC_PER_MSEC, "backoff_init sets the 100 ms floor");
        is_int(b.attempt, 0, "backoff_init starts at attempt 0");

        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                if (backoff_ceiling(&b) != want[i] * USEC_PER_SEC) {
                        printf("#   ceiling %zu is %llu usec, want %llu s\n", i,
                               (unsigned long long)backoff_ceiling(&b), (unsigned long long)want[i]);
                        seq = false;
                }
                (void)backoff_next_with(&b, 0);
        }
        ok(seq, "ceilings are 1, 2, 4, 8, 16, 32, then capped at 60 s");
        is_int(b.attempt, ELEMENTSOF(want), "each delay advances the attempt counter");

        backoff_reset(&b);
        is_int(backoff_ceiling(&b), 1 * USEC_PER_SEC, "after reset the ceiling is the initial 1 s again");
        is_int(b.attempt, 0, "  and the counter is 0");
        is_int(b.max_usec, 60 * USEC_PER_SEC, "  and the cap is kept");

        backoff_to_max(&b);
        is_int(backoff_ceiling(&b), 60 * USEC_PER_SEC, "backoff_to_max: the next ceiling is the cap");
        (void)backoff_next_with(&b, 0);
        is_int(backoff_ceiling(&b), 60 * USEC_PER_SEC, "  and stays there");
        backoff_reset(&b);
        is_int(backoff_ceiling(&b), 1 * USEC_PER_SEC, "  until a reset");
}

static void test_jitter_bounds(void)
{
        Backoff b;
        bool in_range = true, seen_low = false, seen_high = false;

        backoff_init(&b, 1 * USEC_PER_SEC, 60 * USEC_PER_SEC);
        is_int(backoff_next_with(&b, 0), 100 * USEC_PER_MSEC, "r = 0 gives the floor");
        backoff_reset(&b);
        is_int(backoff_next_with(&b, 1 * USEC_PER_SEC - 100 * USEC_PER_MSEC), 1 * USEC_PER_SEC,
               "r = ceiling - floor gives the ceiling");
        backoff_reset(&b);
        is_int(backoff_next_with(&b, 1 * USEC_PER_SEC - 100 * USEC_PER_MSEC + 1), 100 * USEC_PER_MSEC,
               "r = ceiling - floor + 1 wraps to the floor");
        backoff_reset(&b);
        ok(backoff_next_with(&b, UINT64_MAX) <= 1 * USEC_PER_SEC, "r = UINT64_MAX stays within the ceiling");
        ok(backoff_next_with(&b, UINT64_MAX) >= 100 * USEC_PER_MSEC, "  and above the floor");

        /* backoff_next() draws real random numbers: all must fall in [floor, ceiling]. */
        for (int round = 0; round < 200; round++) {
                backoff_reset(&b);
                for (int i = 0; i < 12; i++) {
                        uint64_t ceiling = backoff_ceiling(&b), d = backoff_next(&b);

                        if (d < b.floor_usec || d > ceiling)
                                in_range = false;
                        if (i == 0 && d < 300 * USEC_PER_MSEC)
                                seen_low = true;
                        if (i == 0 && d > 800 * USEC_PER_MSEC)
                                seen_high = true;
                }
        }
        ok(in_range, "2400 random delays are all within [floor, ceiling]");
        /* The first delay is uniform in [0.1, 1] s: 200 draws all missing a 0.2 s band has odds 1e-20. */
        ok(seen_low && seen_high, "the delays are spread over the range (full jitter), not fixed");
}

static void test_overflow(void)
{
        Backoff b;
        bool monotonic = true, capped = true;
        uint64_t prev = 0;

        backoff_init(&b, 1 * USEC_PER_SEC, 60 * USEC_PER_SEC);
        for (int i = 0; i < 1000; i++) {
                uint64_t c = backoff_ceiling(&b), d = backoff_next_with(&b, UINT64_MAX);

                if (c < prev)
                        monotonic = false;
                if (c > 60 * USEC_PER_SEC || d > 60 * USEC_PER_SEC || d < b.floor_usec)
                        capped = false;
                prev = c;
        }
        ok(monotonic, "the ceiling never goes down over 1000 attempts (no shift overflow)");
        ok(capped, "  and every delay stays within [floor, 60 s]");
        is_int(backoff_ceiling(&b), 60 * USEC_PER_SEC, "after 1000 attempts the ceiling is the cap");

        /* A cap near UINT64_MAX: initial << attempt itself must not wrap. */
        backoff_init(&b, 3, UINT64_MAX);
        monotonic = true;
        prev = 0;
        for (int i = 0; i < 200; i++) {
                uint64_t c = backoff_ceiling(&b);

                if (c < prev)
                        monotonic = false;
                prev = c;
                (void)backoff_next_with(&b, i);
        }
        ok(monotonic, "with an unbounded cap the ceiling saturates instead of wrapping");
        is_int(backoff_ceiling(&b) == UINT64_MAX, 1, "  at UINT64_MAX");

        b.attempt = UINT_MAX;
        (void)backoff_next_with(&b, 0);
        is_int(b.attempt, UINT_MAX, "the attempt counter saturates rather than wrapping to 0");
        is_int(backoff_ceiling(&b) == UINT64_MAX, 1, "  and the ceiling stays at the cap");

        /* Floor 0 and ceiling UINT64_MAX: the span + 1 of the formula is 2^64. */
        b.floor_usec = 0;
        is_int(backoff_next_with(&b, 12345) == 12345, 1, "a full 64-bit span does not divide by zero");
        (void)backoff_next(&b); /* nor does backoff_next(): it would trap here (SIGFPE) */
}

static void test_degenerate(void)
{
        Backoff b;

        /* A ceiling under the floor: the floor still wins, so the loop never spins. */
        backoff_init(&b, 10 * USEC_PER_MSEC, 50 * USEC_PER_MSEC);
        is_int(backoff_next_with(&b, 0), 100 * USEC_PER_MSEC, "ceiling below the floor gives the floor");
        is_int(backoff_next_with(&b, UINT64_MAX), 100 * USEC_PER_MSEC, "  whatever r is");
        is_int(backoff_next(&b), 100 * USEC_PER_MSEC, "  and with real randomness");

        backoff_init(&b, 0, 0);
        is_int(backoff_ceiling(&b), 0, "initial 0 has ceiling 0");
        is_int(backoff_next(&b), 100 * USEC_PER_MSEC, "  and still waits the floor");

        /* A cap below the initial value caps the very first delay. */
        backoff_init(&b, 10 * USEC_PER_SEC, 5 * USEC_PER_SEC);
        is_int(backoff_ceiling(&b), 5 * USEC_PER_SEC,
               "a cap below the initial value caps the first ceiling");
}

int main(void)
{
        test_ceilings();
        test_jitter_bounds();
        test_overflow();
        test_degenerate();
        return tap_done();
}
