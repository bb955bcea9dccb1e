/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The download rate `krtiotctl watch` shows: bytes per second averaged over
 * the samples of the last RATE_WINDOW_USEC (krtiotd sends the progress
 * about once a second), and 0 once no sample came for RATE_STALL_USEC, so
 * that a stalled download does not go on showing its last speed. Times are
 * CLOCK_MONOTONIC µs, passed in. Fixed size; no allocation.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define RATE_SAMPLES 16
#define RATE_WINDOW_USEC (5 * 1000000ULL)
#define RATE_STALL_USEC (3 * 1000000ULL)

typedef struct RateSample {
        uint64_t time;
        uint64_t bytes;
} RateSample;

typedef struct Rate {
        RateSample samples[RATE_SAMPLES]; /* a ring, oldest at first */
        size_t first, n;
} Rate;

/* Forgets every sample (a new download, krtiotd restarted). */
void rate_reset(Rate *r);

/*
 * Adds that BYTES were done at NOW. The same count as the last sample adds
 * nothing: the time of the last change is what tells a stall. Fewer bytes
 * than the last sample (the download started over) or a clock going back
 * start a new series.
 */
void rate_add(Rate *r, uint64_t now, uint64_t bytes);

/* Bytes per second at NOW: >= 0, or -1 while not known (fewer than two samples in the window). */
int64_t rate_get(const Rate *r, uint64_t now);
