/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of a download: one Fetcher runs one krtiot-fetch (SPEC
 * 9, fetch-wire.h) inside the caller's sd-event loop and turns its status
 * lines into callbacks, so that the agent itself never knows libcurl and
 * no downloader process exists while no download runs.
 *
 * The child runs as krtiotd's user, in its sandbox, without a shell, with a
 * clean environment, and dies with krtiotd (PR_SET_PDEATHSIG). The URL goes
 * to its standard input, never on its command line (ps would show a
 * password); its log lines go to krtiotd's log at their own priorities.
 *
 * Where the program is: FETCH_PROGRAM (build-config.h, BINDIR/krtiot-fetch),
 * or the absolute path in $KRTIOT_FETCH_PROGRAM (read with secure_getenv(),
 * for the tests, which run the build tree's program).
 */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct Fetcher Fetcher;

/* What krtiot-fetch's options take; see krtiot-fetch(1) and download.h for their meaning. */
typedef struct FetcherParams {
        const char *url;       /* http:// or https://; at most FETCHER_URL_MAX bytes */
        const char *part_path; /* the partial file */

        /* Resume state from the last checkpoint: offset, validators (NULL or "": none), bytes fetched. */
        uint64_t resume_offset;
        const char *etag;
        const char *last_modified;
        uint64_t bytes_fetched;

        /* Expectations. 0/NULL = not given. */
        uint64_t expected_size;
        const char *expected_md5;
        const char *expected_sha256;

        /* Limits. 0 = krtiot-fetch's default (no limit for max_image_size and rate_limit). */
        uint64_t max_image_size;
        uint64_t rate_limit;
        unsigned stall_timeout_sec;
        unsigned connect_timeout_sec;
        unsigned retries;       /* 0: none */
        unsigned max_redirects; /* 0: redirects refused */
        const char *ca_file;    /* NULL = the system's CA store */
        const char *user_agent; /* NULL = krtiot-fetch's */
} FetcherParams;

#define FETCHER_URL_MAX 8191

/* What a checkpoint line says. Pointers are valid during the call only. */
typedef struct FetcherCheckpoint {
        uint64_t offset;           /* this many bytes of the .part file survive a crash */
        const char *etag;          /* NULL: none usable */
        const char *last_modified; /* NULL: none */
        uint64_t bytes_fetched;    /* for this job in all */
} FetcherCheckpoint;

typedef struct FetcherCallbacks {
        /* At most about once per second while bytes arrive. TOTAL is 0 when unknown. */
        void (*progress)(Fetcher *f, uint64_t done, uint64_t total, void *userdata);

        /* Each checkpoint krtiot-fetch makes (after each response's headers, every 5 s or 32 MiB, ...). */
        void (*checkpoint)(Fetcher *f, const FetcherCheckpoint *c, void *userdata);

        /*
         * Exactly once, after krtiot-fetch has ended. RESULT is 0 when the
         * file is complete, verified and fsync()ed (fetcher_get_sha256() is
         * its hash), otherwise -errno, and REASON (NULL on success) says why:
         * the result line's error and reason (download.h lists them), or,
         * without one, -EIO and "krtiot-fetch was killed by signal KILL" /
         * "krtiot-fetch ended without a result (exit status N)" / "could not
         * run krtiot-fetch (/path): ...". A malformed status line is -EPROTO,
         * "krtiot-fetch sent a malformed status line" (and krtiot-fetch is
         * killed): the program is ours, so a garbled line means something is
         * badly wrong. REASON is valid during the call only.
         */
        void (*done)(Fetcher *f, int result, const char *reason, void *userdata);
} FetcherCallbacks;

/*
 * Starts krtiot-fetch. CALLBACKS are never invoked from within this call.
 * Returns 0, or -errno (nothing started, no callback): -EINVAL (bad
 * parameters, a URL over FETCHER_URL_MAX bytes or with a newline, an
 * override that is not an absolute path), -ENOMEM, or process_spawn()'s.
 * *ret is untouched on failure.
 */
int fetcher_new(sd_event *event, const FetcherParams *params, const FetcherCallbacks *callbacks, void *userdata,
                Fetcher **ret);

/*
 * Cancels a running download (SIGTERM, a moment for krtiot-fetch to stop
 * on its own, then SIGKILL; the child is reaped) and frees it; no callback
 * is invoked afterwards. Safe from within any of its callbacks, and on NULL.
 * Returns NULL.
 */
Fetcher *fetcher_free(Fetcher *f);

static inline void fetcher_freep(Fetcher **f)
{
        *f = fetcher_free(*f);
}

/* The SHA-256 (64 lowercase hex digits) of the complete file, from the result line; else NULL. */
const char *fetcher_get_sha256(const Fetcher *f);

/* The program run: $KRTIOT_FETCH_PROGRAM or FETCH_PROGRAM. */
const char *fetcher_program(void);
