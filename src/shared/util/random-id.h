/* SPDX-License-Identifier: Apache-2.0 */
/* Message IDs the device makes: 12 characters of 0-9A-Z from getrandom(). */
#pragma once

#include <stdint.h>

#define RANDOM_ID_LEN 12
#define RANDOM_ID_SYMBOLS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

/* Fills RET with RANDOM_ID_LEN characters and a NUL. Returns 0 or -errno. */
int random_id(char ret[RANDOM_ID_LEN + 1]);

/* A uniformly distributed number in [0, n) from getrandom(); n > 0. */
uint64_t random_below(uint64_t n);
