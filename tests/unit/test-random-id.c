/* SPDX-License-Identifier: Apache-2.0 */
/*
 * random-id.c: shape of the IDs, no repeats, and uniformity. The statistical
 * bounds are loose enough never to fail by chance (false alarm odds below
 * 1e-7) yet tight enough to catch a modulo bias, which is the mistake they
 * are here for: byte % 36 would give the symbols 0-3 a chance of 8/256
 * instead of 7/256, a chi-square near 235 where the bound is 100.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>

#include "tap.h"
#include "util/macro.h"
#include "util/random-id.h"

#define N_IDS 10000
#define SYMBOLS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

static int cmp_id(const void *a, const void *b)
{
        return strcmp(a, b);
}

/* Pearson's chi-square of COUNTS against a uniform distribution over N cells. */
static double chi_square(const unsigned long *counts, size_t n, unsigned long total)
{
        double expected = (double)total / (double)n, chi = 0;

        for (size_t i = 0; i < n; i++) {
                double d = (double)counts[i] - expected;
                chi += d * d / expected;
        }
        return chi;
}

static void test_ids(void)
{
        static char ids[N_IDS][RANDOM_ID_LEN + 1];
        unsigned long counts[36] = {};
        bool shape = true, charset = true, distinct = true;
        unsigned long min_count = ULONG_MAX;
        char guard[RANDOM_ID_LEN + 2];
        double chi;

        memset(guard, 'x', sizeof(guard));
        is_int(random_id(guard), 0, "random_id() succeeds");
        is_int(strlen(guard), RANDOM_ID_LEN, "an ID is 12 characters");
        ok(guard[RANDOM_ID_LEN + 1] == 'x', "  and writes nothing past its NUL");

        for (size_t i = 0; i < N_IDS; i++) {
                if (random_id(ids[i]) < 0 || strlen(ids[i]) != RANDOM_ID_LEN)
                        shape = false;
                for (size_t k = 0; k < RANDOM_ID_LEN; k++) {
                        const char *p = strchr(SYMBOLS, ids[i][k]);

                        if (!p || !*p)
                                charset = false;
                        else
                                counts[p - SYMBOLS]++;
                }
        }
        ok(shape, "10000 IDs are 12 characters each");
        ok(charset, "every character is one of 0-9A-Z");

        qsort(ids, N_IDS, sizeof(ids[0]), cmp_id);
        for (size_t i = 1; i < N_IDS; i++)
                if (strcmp(ids[i - 1], ids[i]) == 0)
                        distinct = false;
        ok(distinct, "10000 IDs are all distinct");

        for (size_t i = 0; i < 36; i++)
                min_count = MIN(min_count, counts[i]);
        /* 120000 symbols: about 3333 each, sd 57. */
        ok(min_count > 2500, "each of the 36 symbols appears (at least 2500 times of ~3333)");

        chi = chi_square(counts, 36, (unsigned long)N_IDS * RANDOM_ID_LEN);
        printf("# chi-square over 36 symbols: %.1f (35 degrees of freedom)\n", chi);
        ok(chi < 100, "symbol frequencies are uniform (chi-square < 100)");
}

static void test_below(void)
{
        const uint64_t big = UINT64_C(3) << 62; /* 0xC000000000000000 */
        unsigned long counts[6] = {}, low = 0;
        bool in_range = true;
        double chi;

        for (int i = 0; i < 1000; i++)
                if (random_below(1) != 0)
                        in_range = false;
        ok(in_range, "random_below(1) is always 0");
        is_int(random_below(0), 0, "random_below(0) is 0, not a division by zero");

        in_range = true;
        for (int i = 0; i < 60000; i++) {
                uint64_t r = random_below(6);
                if (r >= 6)
                        in_range = false;
                else
                        counts[r]++;
        }
        ok(in_range, "random_below(6) is below 6");
        chi = chi_square(counts, 6, 60000);
        printf("# chi-square of random_below(6): %.1f (5 degrees of freedom)\n", chi);
        ok(chi < 50, "random_below(6) is uniform (chi-square < 50)");

        /*
         * x % n of a plain 64-bit x would land below 2^62 half the time instead
         * of a third: the bias only shows for an n this close to 2^64.
         */
        in_range = true;
        for (int i = 0; i < 30000; i++) {
                uint64_t r = random_below(big);
                if (r >= big)
                        in_range = false;
                if (r < (UINT64_C(1) << 62))
                        low++;
        }
        ok(in_range, "random_below(3 * 2^62) is below its bound");
        printf("# %lu of 30000 below 2^62 (unbiased: ~10000, sd 82; modulo bias: ~15000)\n", low);
        ok(low > 9300 && low < 10700, "random_below(3 * 2^62) has no modulo bias");

        in_range = true;
        for (int i = 0; i < 1000; i++)
                if (random_below(UINT64_MAX) == UINT64_MAX)
                        in_range = false;
        ok(in_range, "random_below(UINT64_MAX) stays below UINT64_MAX");
}

int main(void)
{
        test_ids();
        test_below();
        return tap_done();
}
