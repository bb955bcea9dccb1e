/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The download engine of krtiot-fetch: one Download fetches one firmware
 * image over HTTP(S) into a ".part" file, blocking (libcurl's easy
 * interface: this program does nothing else meanwhile), streaming to disk
 * and hashing as it goes, in constant memory whatever the image size.
 *
 * It resumes with Range (after a dropped connection within one run, and
 * across daemon restarts from the offset, validators and byte count the
 * caller persisted from a checkpoint; see DownloadParams for when), retries
 * transient failures with jittered backoff, within bounds no server can
 * stretch (see retries, and a cap of about 3 times the image's size on the
 * bytes one job fetches), and ends with one result, download_run()'s: 0
 * when the file is complete (a 200, or a 206 answering our Range, whose body
 * has the length the server declared), matches every expectation given
 * (SIZE, MD5, SHA-256) and has been fsync()ed; or -errno with a short human
 * reason.
 *
 * Only http:// and https:// are ever fetched, also after redirects; HTTPS
 * verifies the peer and its host name. Proxies: libcurl's defaults apply, so
 * the standard environment variables http_proxy, https_proxy (or HTTPS_PROXY),
 * all_proxy (ALL_PROXY) and no_proxy (NO_PROXY) are honored; the uppercase
 * HTTP_PROXY is deliberately ignored by libcurl (CGI "httpoxy").
 *
 * The caller should call curl_global_init(CURL_GLOBAL_DEFAULT) once at
 * startup; libcurl otherwise does it lazily on first use.
 */
#pragma once

#include <stdint.h>

typedef struct Download Download;

typedef struct DownloadParams {
        const char *url;       /* http:// or https:// */
        const char *part_path; /* the partial file, e.g. "{download_dir}/<job>.part" */

        /*
         * Resume state from the caller's journal (from the last checkpoint):
         * bytes of PART_PATH known good, and the validators of the response
         * they came from. NULL or "" = none. The same rule holds for a
         * resume within one run (after a dropped connection): with a strong
         * ETag or a Last-Modified the request carries If-Range, so that the
         * server itself tells whether its file is still the same; without
         * either, a plain Range is sent only when an expected SHA-256 or MD5
         * will check the assembled file (a mismatch then starts over from
         * byte 0, once); otherwise the download starts over from byte 0.
         */
        uint64_t resume_offset;
        const char *etag;
        const char *last_modified;

        /*
         * Body bytes already fetched for this job by earlier runs (the last
         * checkpoint's bytes_fetched), so that the cap on the bytes one job
         * may fetch holds across daemon restarts. 0 for a new job.
         */
        uint64_t bytes_fetched;

        /* Expectations, checked before success is reported. 0/NULL = not given. */
        uint64_t expected_size;
        const char *expected_md5;    /* 32 hex digits, either case */
        const char *expected_sha256; /* 64 hex digits, either case */

        /* Limits. 0 = no limit, except where said. */
        uint64_t max_image_size;      /* enforced from Content-Length and as bytes arrive */
        uint64_t rate_limit;          /* bytes per second (a token bucket; see download.c) */
        unsigned stall_timeout_sec;   /* no byte for this long once connected = stalled; 0 = 60 s */
        unsigned connect_timeout_sec; /* 0 = 30 s */
        unsigned retries;             /* further attempts after transient failures in a row; only
                                       * an attempt that took the file 1 MiB or more past the best
                                       * offset any attempt reached renews them */
        unsigned max_redirects;       /* 0 = redirects are refused */
        uint64_t retry_initial_usec;  /* backoff ceilings (full jitter); 0 = 1 s */
        uint64_t retry_max_usec;      /* 0 = 60 s */
        const char *ca_file;          /* NULL = the system's CA store */
        const char *user_agent;       /* NULL = "krtiot" */
} DownloadParams;

/*
 * What the caller persists so that a restarted daemon can resume. OFFSET
 * counts bytes that are written and fdatasync()ed, not merely written: a
 * journal promising bytes that a power cut then lost would make the resume
 * append after a hole, and without an expected hash nothing would notice.
 * (The cost is one fdatasync() per checkpoint, every 5 s or 32 MiB.)
 */
typedef struct DownloadCheckpoint {
        uint64_t offset;           /* this many bytes of the .part file survive a crash */
        const char *etag;          /* NULL when the server sent none (or a weak one) */
        const char *last_modified; /* NULL when the server sent none */
        uint64_t bytes_fetched;    /* for this job in all: DownloadParams.bytes_fetched + this run's */
} DownloadCheckpoint;

/*
 * Called from within download_run(). Each returns 0, or -errno to end the
 * download with that error (the caller can no longer report, say), which
 * download_get_reason() then puts as "cannot report: ...".
 */
typedef struct DownloadCallbacks {
        /* At most about once per second while bytes arrive. TOTAL is 0 when unknown. */
        int (*progress)(Download *d, uint64_t done, uint64_t total, void *userdata);

        /*
         * Soon after each response's headers are accepted (carrying its
         * validators; when the server sent the whole file anew, the piece
         * we had is gone and OFFSET starts again from 0), then at most
         * every 5 s or 32 MiB, before waiting to retry, and at the end
         * (whatever the result, cancelled too) when anything changed since
         * the last one. Pointers are valid during the call only.
         */
        int (*checkpoint)(Download *d, const DownloadCheckpoint *c, void *userdata);
} DownloadCallbacks;

/*
 * Creates a download. PARAMS' strings are copied; CALLBACKS may be NULL.
 * Nothing happens before download_run(): malformed parameters are among
 * its results. Returns 0, or -ENOMEM; *ret is untouched on failure.
 */
int download_new(const DownloadParams *params, const DownloadCallbacks *callbacks, void *userdata,
                 Download **ret);

/*
 * Runs the download to its end, blocking; once per Download (-EALREADY
 * after). The part file is created (0600) or reused; it is never deleted:
 * that is the caller's decision.
 *
 * Returns 0 when the file is complete, verified and fsync()ed, otherwise
 * -errno, and download_get_reason() says why in a few words, e.g. "HTTP
 * 404", "SHA-256 mismatch", "download stalled", "gave up after 4 attempts:
 * HTTP 503". Codes: -ENOENT (HTTP 404, 410), -EACCES
         * (401, 403), -EPROTO (other 4xx; protocol errors: a 2xx other than
         * 200 and a 206 answering our Range, an invalid or conflicting
         * Content-Length, a response that is not HTTP, a response header
         * too large), -EREMOTEIO (5xx), -EBUSY (429), -ETIMEDOUT (408,
         * stall, connect timeout), -ECONNREFUSED, -ECONNRESET (network,
         * including a body shorter than the server declared),
         * -EHOSTUNREACH, -ECONNABORTED (TLS handshake), -EPERM (TLS
         * verification), -ELOOP (too many redirects), -EPROTONOSUPPORT
         * (redirect to another protocol), -EBADMSG (SIZE or hash mismatch),
         * -EFBIG (max_image_size), -EDQUOT (the job fetched about 3 times
         * the image's size and gave up: "gave up: fetched N MiB for an image
         * of M MiB"), -ENOSPC (no room), -EINVAL (URL not http/https,
         * malformed expected hash), -ENOMEM, -EIO (disk; PART_PATH not a
         * regular file, e.g. a symbolic link or a FIFO; other). A failing
         * system call on PART_PATH ends with its own errno (e.g. -EACCES,
 * -EROFS), and REASON names the path. -ECANCELED: download_cancel()
 * ("cancelled"). A callback's own -errno ("cannot report: ...").
 * Retried first: network errors, timeouts, stalls, 5xx, 408, 429
 * (honoring a Retry-After in seconds, up to retry_max_usec); the rest is
 * final at once. After retries, REASON says "gave up after N attempts: "
 * and the last attempt's reason.
 */
int download_run(Download *d);

/* Why download_run() failed (valid until download_free()); NULL before it ends, or after a success. */
const char *download_get_reason(const Download *d);

/*
 * Makes a running download_run() stop soon: within a second during a
 * transfer (at once when a signal interrupted libcurl's wait), at once
 * while it waits to retry or for the rate limit. It writes a last checkpoint
 * and returns -ECANCELED. Async-signal-safe: meant for a SIGTERM handler.
 */
void download_cancel(Download *d);

/* Frees the download (not while download_run() runs); NULL is fine. Returns NULL. */
Download *download_free(Download *d);

static inline void download_freep(Download **d)
{
        *d = download_free(*d);
}

/* The SHA-256 (64 lowercase hex digits) of the whole file, once it was fully received; else NULL. */
const char *download_get_sha256(const Download *d);

/* Bytes of body received from the network by this object (across attempts); for statistics. */
uint64_t download_get_bytes_fetched(const Download *d);

/* Attempts started so far (the first one included). */
unsigned download_get_attempts(const Download *d);
