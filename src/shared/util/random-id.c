/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Random numbers and message IDs from the kernel's random source. Both are
 * exactly uniform: values that would make a modulo biased are thrown away and
 * drawn again (rejection sampling), never folded in.
 */
#include <fcntl.h>
#include <sys/random.h>

#include "util/macro.h"
#include "util/random-id.h"

static const char random_id_symbols[] = RANDOM_ID_SYMBOLS;
#define RANDOM_ID_NSYMBOLS (sizeof(random_id_symbols) - 1)

/*
 * Device kernels can be old (vendor 3.x trees): without getrandom() (ENOSYS)
 * fall back to /dev/urandom rather than failing.
 */
static int urandom_bytes(void *p, size_t n)
{
        _cleanup_close_ int fd = -1;
        uint8_t *b = p;

        fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();

        while (n > 0) {
                ssize_t k = read(fd, b, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        return -EIO;
                b += k;
                n -= (size_t)k;
        }
        return 0;
}

/* Fills P with N random bytes. Returns 0 or -errno. */
static int random_bytes(void *p, size_t n)
{
        uint8_t *b = p;

        while (n > 0) {
                /* getrandom() may return fewer bytes than asked (above 256, or on a signal). */
                ssize_t k = getrandom(b, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == ENOSYS)
                                return urandom_bytes(b, n);
                        return negative_errno();
                }
                b += k;
                n -= (size_t)k;
        }
        return 0;
}

int random_id(char ret[RANDOM_ID_LEN + 1])
{
        /* 252 = 7 * 36 is the largest multiple of 36 that fits in a byte: bytes above it are dropped. */
        const unsigned limit = 256 - 256 % RANDOM_ID_NSYMBOLS;
        char id[RANDOM_ID_LEN + 1];
        size_t n = 0;

        while (n < RANDOM_ID_LEN) {
                uint8_t buf[2 * RANDOM_ID_LEN];
                int r;

                r = random_bytes(buf, sizeof(buf));
                if (r < 0)
                        return r;

                for (size_t i = 0; i < sizeof(buf) && n < RANDOM_ID_LEN; i++)
                        if (buf[i] < limit)
                                id[n++] = random_id_symbols[buf[i] % RANDOM_ID_NSYMBOLS];
        }
        id[n] = '\0';

        memcpy(ret, id, sizeof(id));
        return 0;
}

uint64_t random_below(uint64_t n)
{
        /*
         * (2^64 - n) % n == 2^64 % n: the number of values at the bottom of the
         * 64-bit range that would give the low residues one extra chance.
         */
        uint64_t threshold, x;

        if (n <= 1)
                return 0;

        threshold = -n % n;
        for (;;) {
                /*
                 * getrandom() with flags 0 can only fail on a kernel without it and
                 * without /dev/urandom; there is no sane number to return then, and
                 * the signature has no room for an error.
                 */
                if (random_bytes(&x, sizeof(x)) < 0)
                        abort();
                if (x >= threshold)
                        return x % n;
        }
}
