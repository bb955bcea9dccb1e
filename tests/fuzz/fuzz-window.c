/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for window.c. The input is: 8 bytes of an instant (the
 * low 35 bits, 1970 to 3058, so that it stays within what localtime_r()
 * converts), 1 byte choosing a time zone, then window entries, one a line.
 * Beyond "no crash, no leak": a refused entry says why; the entries that
 * parse make a Window; and what window_check() answers holds up: the
 * instant it names is later, the second before it gets the same answer and
 * the instant itself the other one.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "window.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const zones[] = {
        "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kolkata",
};

static void check(const Window *w, time_t now)
{
        time_t when = 0, again = 0;
        int r = window_check(w, now, &when), before, after;

        if (r == -EOVERFLOW)
                return;
        if ((r != WINDOW_INSIDE && r != WINDOW_OUTSIDE) || when <= now)
                abort();
        before = window_check(w, when - 1, &again);
        if (before != r && before != -EOVERFLOW)
                abort();
        if (when == WINDOW_NEVER) {
                if (r != WINDOW_INSIDE)
                        abort();
                return;
        }
        after = window_check(w, when, &again);
        if (after != !r && after != -EOVERFLOW)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        WindowEntry entries[WINDOW_ENTRIES_MAX];
        char line[256], error[WINDOW_ERROR_MAX];
        Window *w = NULL;
        uint64_t raw = 0;
        size_t n = 0;

        if (size < 9)
                return 0;
        memcpy(&raw, data, 8);
        setenv("TZ", zones[data[8] % (sizeof(zones) / sizeof(zones[0]))], 1);
        data += 9;
        size -= 9;

        while (size > 0 && n < WINDOW_ENTRIES_MAX) {
                const uint8_t *nl = memchr(data, '\n', size);
                size_t len = nl ? (size_t)(nl - data) : size;

                if (len < sizeof(line)) {
                        memcpy(line, data, len);
                        line[len] = '\0';
                        error[0] = '\0';
                        if (window_entry_parse(line, &entries[n], error, sizeof(error)) == 0)
                                n++;
                        else if (error[0] == '\0' || !memchr(error, '\0', sizeof(error)))
                                abort();
                }
                data += len + (nl != NULL);
                size -= len + (nl != NULL);
        }

        if (n == 0) {
                check(NULL, (time_t)(raw & ((UINT64_C(1) << 35) - 1)));
                return 0;
        }
        if (window_new(entries, n, &w) < 0)
                abort();
        check(w, (time_t)(raw & ((UINT64_C(1) << 35) - 1)));
        window_free(w);
        return 0;
}
