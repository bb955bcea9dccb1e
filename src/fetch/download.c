/* SPDX-License-Identifier: Apache-2.0 */
/*
 * download.c owns one image download in krtiot-fetch: the .part file
 * descriptor, the running SHA-256/MD5 of its content, one libcurl easy
 * handle driven by curl_easy_perform() (a blocking program needs no event
 * loop; the handle lives as long as the download, so a retry may reuse the
 * connection), the retry policy with its waits, the rate limit, and the
 * translation of libcurl/HTTP codes into -errno and reasons.
 *
 * Invariants:
 *  - The first d->offset bytes of the part file are written, and were hashed
 *    into d->sha256 (and d->md5) in order from byte 0. Nothing of the body
 *    is kept in memory. d->offset never exceeds SIZE, max_image_size, or the
 *    total the current response declared.
 *  - Every body byte received counts in d->bytes_fetched; together with
 *    what earlier runs fetched it never exceeds download_fetch_cap().
 *  - The callbacks run from within libcurl's (header, write) and from the
 *    loop of download_run(); they cannot free the Download (only
 *    download_run()'s caller does, after it returned), so nothing needs a
 *    reference count. What stops a transfer is recorded in d->abort and
 *    translated after curl_easy_perform() returned.
 *  - Every wait (for a retry, for the rate limit) wakes on download_cancel():
 *    it polls an eventfd that the cancel makes readable for good, so a
 *    cancel that comes just before a wait is not lost.
 */

#include <ctype.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "backoff.h"
#include "download.h"
#include "log.h"
#include "util/macro.h"
#include "util/strings.h"

#define REHASH_CHUNK_SIZE ((size_t)1024 * 1024)
#define PROGRESS_INTERVAL_USEC USEC_PER_SEC
#define CHECKPOINT_INTERVAL_USEC (5 * USEC_PER_SEC)
#define CHECKPOINT_INTERVAL_BYTES ((uint64_t)32 * 1024 * 1024)
/* Room left for everyone else on the filesystem (journal, logs) when the image is in. */
#define FREE_SPACE_MARGIN ((uint64_t)1024 * 1024)
/* Longer validators are ignored: they only exist to be echoed back in If-Range. */
#define VALIDATOR_MAX 256
#define REASON_MAX 256
/*
 * An attempt that took the file this far past the best offset any attempt
 * reached renews the retry budget: a server dripping a few bytes per try
 * does not, nor one that cuts every attempt at the same place.
 */
#define RETRY_RENEW_BYTES ((uint64_t)1024 * 1024)
/*
 * The bytes one job may fetch: FACTOR times the image's size plus SLACK. A
 * download that resumes fetches about 1x; one resumed piece found bad and
 * fetched whole again, 2x; beyond 3x the server is not letting us finish.
 */
#define FETCH_CAP_FACTOR 3
#define FETCH_CAP_SLACK ((uint64_t)1024 * 1024)

#define DEFAULT_STALL_TIMEOUT_SEC 60U
#define DEFAULT_CONNECT_TIMEOUT_SEC 30U
#define DEFAULT_RETRY_INITIAL_USEC (1 * USEC_PER_SEC)
#define DEFAULT_RETRY_MAX_USEC (60 * USEC_PER_SEC)
#define RECV_BUFFER_SIZE (64L * 1024)

/* What an attempt, or the check of a complete file, leads to; negative: a final -errno. */
enum {
        STEP_COMPLETE = 1, /* the whole body is in: verify it */
        STEP_AGAIN,        /* another attempt at once (from byte 0, or to carry on) */
        STEP_RETRY,        /* another attempt after d->retry_delay_usec */
};

/* Headers of the response being received; reset at each status line (interim, redirect). */
typedef struct DownloadResponse {
        long status;
        int64_t content_length; /* -1: not sent */
        bool bad_content_length;         /* one did not parse, or overflowed */
        bool conflicting_content_length; /* two that differ */
        bool has_content_range;          /* "bytes START-END/..." parsed whole */
        uint64_t range_start;
        uint64_t range_end;
        int64_t range_total; /* -1: "*", or not sent */
        char *etag;
        char *last_modified;
        uint64_t retry_after_sec;
        bool location_elsewhere; /* a Location with a scheme other than http(s) */
} DownloadResponse;

/*
 * Why a libcurl callback stopped the transfer (libcurl then reports
 * CURLE_WRITE_ERROR); read by download_translate() only. HTTP says the cause
 * is the response status, which is translated there with everything else.
 */
typedef struct DownloadAbort {
        int error; /* -errno, 0: none */
        bool http;
        bool retry;
        char reason[REASON_MAX];
} DownloadAbort;

struct Download {
        volatile sig_atomic_t cancelled; /* set by download_cancel(), maybe from a signal handler */
        int wake_fd;                     /* eventfd, readable once cancelled: ends every wait */
        bool ran;
        bool transferring;               /* inside an attempt or waiting for the next: checkpoints are due */
        DownloadCallbacks cb;
        void *userdata;
        char reason[REASON_MAX];
        bool have_reason;

        /* Parameters, copied. */
        char *url;
        char *url_log; /* URL with its password hidden: the only form a log line shows */
        char *part_path;
        uint64_t resume_offset;
        char *expected_md5;
        char *expected_sha256;
        char *ca_file;
        char *user_agent;
        uint64_t expected_size;
        uint64_t max_image_size;
        uint64_t rate_limit;
        unsigned stall_timeout_sec;
        unsigned connect_timeout_sec;
        unsigned retries;
        unsigned max_redirects;
        uint64_t retry_max_usec;
        uint64_t fetched_before; /* bytes fetched for this job by earlier runs */

        /* Validators of the file we are assembling (strong ETag only). */
        char *etag;
        char *last_modified;

        CURL *easy;
        struct curl_slist *headers;
        char range[32];
        char errbuf[CURL_ERROR_SIZE];

        int fd; /* the part file, once it is known to be a regular file */
        uint64_t offset;
        EVP_MD_CTX *sha256;
        EVP_MD_CTX *md5;
        bool pieced;    /* assembled from more than one response */
        bool refetched; /* after a mismatch of a pieced file, once */
        bool restarted; /* after 416 or a wrong Content-Range, once */
        bool have_sha256;
        char sha256_hex[65];

        /* The current attempt. */
        DownloadResponse resp;
        DownloadAbort abort;
        bool range_sent;
        bool accepted; /* a 2xx response's headers were taken: the body is ours */
        bool restart_from_zero;
        bool connected;
        uint64_t total; /* size of the whole file as this response declares it, 0: unknown */
        uint64_t activity_usec; /* last byte from the server, or the connection */
        double rate_tokens;     /* bytes we may take now; negative: owed */
        uint64_t rate_usec;     /* when rate_tokens was last refilled */

        /* Across attempts. */
        uint64_t known_total; /* size of the whole file: SIZE, else as last declared; 0: unknown */
        uint64_t high_water;  /* the best offset any attempt reached */
        Backoff backoff;
        uint64_t retry_delay_usec; /* before the next attempt (STEP_RETRY) */
        unsigned attempts; /* started, in all */
        unsigned failures; /* in a row without progress past high_water */
        uint64_t bytes_fetched; /* by this object; the cap counts fetched_before too */

        bool checkpoint_pending;
        uint64_t checkpoint_offset;
        uint64_t checkpoint_fetched;
        uint64_t checkpoint_usec;
        uint64_t progress_offset;
        uint64_t progress_usec;
};

Download *download_free(Download *d)
{
        if (!d)
                return NULL;

        if (d->easy)
                curl_easy_cleanup(d->easy);
        curl_slist_free_all(d->headers);
        if (d->fd >= 0)
                close(d->fd);
        if (d->wake_fd >= 0)
                close(d->wake_fd);
        EVP_MD_CTX_free(d->sha256);
        EVP_MD_CTX_free(d->md5);
        free(d->resp.etag);
        free(d->resp.last_modified);
        free(d->url);
        free(d->url_log);
        free(d->part_path);
        free(d->expected_md5);
        free(d->expected_sha256);
        free(d->ca_file);
        free(d->user_agent);
        free(d->etag);
        free(d->last_modified);
        free(d);
        return NULL;
}

void download_cancel(Download *d)
{
        static const uint64_t one = 1;
        int saved_errno = errno;

        if (!d)
                return;
        d->cancelled = 1;
        (void)!write(d->wake_fd, &one, sizeof(one));
        errno = saved_errno;
}

const char *download_get_reason(const Download *d)
{
        return d && d->have_reason ? d->reason : NULL;
}

const char *download_get_sha256(const Download *d)
{
        return d && d->have_sha256 ? d->sha256_hex : NULL;
}

uint64_t download_get_bytes_fetched(const Download *d)
{
        return d ? d->bytes_fetched : 0;
}

unsigned download_get_attempts(const Download *d)
{
        return d ? d->attempts : 0;
}

/* Records why the download ends; returns ERROR, so that a caller can write return download_failf(...). */
_printf_(3, 4) static int download_failf(Download *d, int error, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(d->reason, sizeof(d->reason), format, ap);
        va_end(ap);
        d->have_reason = true;
        return error;
}

static int download_emit(Download *d);

_printf_(4, 5) static void download_set_abort(Download *d, int error, bool retry, const char *format, ...)
{
        va_list ap;

        d->abort.error = error;
        d->abort.retry = retry;
        d->abort.http = false;
        va_start(ap, format);
        (void)vsnprintf(d->abort.reason, sizeof(d->abort.reason), format, ap);
        va_end(ap);
}

static bool download_request_sent(Download *d)
{
        long n = 0;

        return d->easy && curl_easy_getinfo(d->easy, CURLINFO_REQUEST_SIZE, &n) == CURLE_OK && n > 0;
}

/*
 * The one place where libcurl's codes, HTTP statuses and the reasons our own
 * callbacks stopped a transfer become -errno, a reason, and whether another
 * attempt could help. Must run before the easy handle is released.
 */
static int download_translate(Download *d, CURLcode code, char *reason, size_t size, bool *ret_retry)
{
        long status = d->resp.status;
        curl_off_t connect_time = 0;

        if (d->abort.error != 0 && !d->abort.http) {
                *ret_retry = d->abort.retry;
                (void)snprintf(reason, size, "%s", d->abort.reason);
                return d->abort.error;
        }

        /*
         * libcurl checks CURLOPT_MAXFILESIZE_LARGE against any response's
         * Content-Length, an error page's too: that one is about the status.
         */
        if (code == CURLE_FILESIZE_EXCEEDED && status >= 300)
                code = CURLE_OK;

        if (code == CURLE_OK || d->abort.http) {
                (void)snprintf(reason, size, "HTTP %ld", status);
                *ret_retry = status >= 500 || status == 408 || status == 429;
                if (status == 404 || status == 410)
                        return -ENOENT;
                if (status == 401 || status == 403)
                        return -EACCES;
                if (status == 408)
                        return -ETIMEDOUT;
                if (status == 429)
                        return -EBUSY;
                if (status >= 500)
                        return -EREMOTEIO;
                return -EPROTO;
        }

        *ret_retry = false;
        switch (code) {
        case CURLE_UNSUPPORTED_PROTOCOL:
                /*
                 * The initial URL's scheme was checked before, so this is
                 * either a 3xx whose Location names another scheme, or an
                 * answer (maybe the one to a redirect) without a valid HTTP
                 * status line ("Received HTTP/0.9 when not allowed": an SSH
                 * banner, random bytes; "Unsupported HTTP version"), which
                 * never reached our header callback.
                 */
                if (status >= 300 && status < 400 && d->resp.location_elsewhere) {
                        (void)snprintf(reason, size, "redirect to a forbidden protocol");
                        return -EPROTONOSUPPORT;
                }
                (void)snprintf(reason, size, "the server's response is not HTTP");
                return -EPROTO;
        case CURLE_WEIRD_SERVER_REPLY:
                /* Not a network accident: whatever answers there will answer the same again. */
                (void)snprintf(reason, size, "the server's response is not HTTP");
                return -EPROTO;
        case CURLE_FILESIZE_EXCEEDED:
                (void)snprintf(reason, size, "image larger than max_image_size (%" PRIu64 " bytes)",
                               d->max_image_size);
                return -EFBIG;
        case CURLE_TOO_MANY_REDIRECTS:
                (void)snprintf(reason, size, "too many redirects");
                return -ELOOP;
        case CURLE_URL_MALFORMAT:
                (void)snprintf(reason, size, "malformed URL");
                return -EINVAL;
#if LIBCURL_VERSION_NUM >= 0x080600
        case CURLE_TOO_LARGE: /* what libcurl 8.6 and later say instead */
#endif
        case CURLE_OUT_OF_MEMORY:
                /*
                 * libcurl 7.88 also says this, without a message, when it
                 * refuses a response header line over 100 KiB (or headers
                 * over 300 KiB in all); such a line never reaches our header
                 * callback. Between our request going out and the response
                 * being accepted, that is what it means: the server's doing.
                 */
                if (!d->accepted && (strstr(d->errbuf, "header") || download_request_sent(d))) {
                        (void)snprintf(reason, size, "response header too large");
                        return -EPROTO;
                }
                (void)snprintf(reason, size, "out of memory");
                return -ENOMEM;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
                (void)snprintf(reason, size, "TLS verification failed: %.200s",
                               d->errbuf[0] ? d->errbuf : curl_easy_strerror(code));
                return -EPERM;
        case CURLE_OPERATION_TIMEDOUT:
                *ret_retry = true;
                if (d->easy)
                        (void)curl_easy_getinfo(d->easy, CURLINFO_CONNECT_TIME_T, &connect_time);
                (void)snprintf(reason, size, connect_time > 0 ? "download stalled" : "connection timed out");
                return -ETIMEDOUT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                *ret_retry = true;
                (void)snprintf(reason, size, "cannot resolve host");
                return -EHOSTUNREACH;
        case CURLE_COULDNT_CONNECT:
                *ret_retry = true;
                (void)snprintf(reason, size, "cannot connect");
                return -ECONNREFUSED;
        case CURLE_SSL_CONNECT_ERROR:
                *ret_retry = true;
                (void)snprintf(reason, size, "TLS handshake failed");
                return -ECONNABORTED;
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_HTTP3:
                *ret_retry = true;
                (void)snprintf(reason, size, "connection lost");
                return -ECONNRESET;
        default:
                (void)snprintf(reason, size, "libcurl: %.200s",
                               d->errbuf[0] ? d->errbuf : curl_easy_strerror(code));
                return -EIO;
        }
}

static uint64_t now_usec(void)
{
        struct timespec ts;

        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * CURLOPT_XFERINFOFUNCTION, called at least once a second because a low
 * speed limit is set, and as soon as a signal interrupts libcurl's wait. It
 * is the stall watchdog: libcurl's own low-speed check averages over about
 * five seconds, so after a burst it would fire up to five seconds late; this
 * one fires stall_timeout after the last byte. And it is where a cancel
 * stops a transfer.
 */
static int download_on_xferinfo(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                                curl_off_t ulnow)
{
        Download *d = userdata;
        uint64_t now = now_usec();
        curl_off_t connect_time = 0;

        if (d->cancelled) {
                download_set_abort(d, -ECANCELED, false, "cancelled");
                return 1;
        }
        if (!d->connected) {
                /* The connect timeout covers the time before. */
                if (curl_easy_getinfo(d->easy, CURLINFO_CONNECT_TIME_T, &connect_time) != CURLE_OK ||
                    connect_time <= 0)
                        return 0;
                d->connected = true;
                d->activity_usec = now;
        }
        if (now - d->activity_usec < (uint64_t)d->stall_timeout_sec * USEC_PER_SEC)
                return 0;
        download_set_abort(d, -ETIMEDOUT, true, "download stalled");
        return 1;
}

static int download_hash_init(Download *d)
{
        if (EVP_DigestInit_ex(d->sha256, EVP_sha256(), NULL) != 1)
                return -EIO;
        if (d->expected_md5 && EVP_DigestInit_ex(d->md5, EVP_md5(), NULL) != 1)
                return -EIO;
        return 0;
}

static int download_hash_update(Download *d, const void *buf, size_t len)
{
        if (EVP_DigestUpdate(d->sha256, buf, len) != 1)
                return -EIO;
        if (d->expected_md5 && EVP_DigestUpdate(d->md5, buf, len) != 1)
                return -EIO;
        return 0;
}

/* Starts the file over from byte 0. */
static int download_reset_file(Download *d)
{
        if (ftruncate(d->fd, 0) < 0)
                return -errno;
        d->offset = 0;
        d->pieced = false;
        d->checkpoint_offset = 0;
        d->checkpoint_pending = true;
        return download_hash_init(d);
}

static bool hex_valid(const char *s, size_t len)
{
        if (strlen(s) != len)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!isxdigit((unsigned char)s[i]))
                        return false;
        return true;
}

/* Weak ETags cannot be used in If-Range (RFC 9110 13.1.5); header values never hold control characters. */
static bool validator_usable(const char *v, bool etag)
{
        if (!v || !*v || strlen(v) > VALIDATOR_MAX)
                return false;
        if (etag && strncmp(v, "W/", 2) == 0)
                return false;
        for (const char *p = v; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static const char *download_validator(const Download *d)
{
        return d->etag ?: d->last_modified;
}

/*
 * Whether the piece we have may be continued (SPEC 5.3). A validator lets
 * the server decide (If-Range). Without one, nothing proves that the server
 * still has the file our piece came from, so a plain Range is only sent when
 * an expected hash will judge the assembled file; it is then "pieced", and a
 * mismatch earns one fetch from byte 0 (download_complete()).
 */
static bool download_can_resume(const Download *d)
{
        return download_validator(d) || d->expected_sha256 || d->expected_md5;
}

static uint64_t download_fetched_total(const Download *d)
{
        return d->fetched_before + d->bytes_fetched;
}

/*
 * The bytes this job may fetch, in all runs: FETCH_CAP_FACTOR times the
 * image's size (SIZE, else what the server declared, else at most
 * max_image_size) plus FETCH_CAP_SLACK; UINT64_MAX when nothing bounds it.
 * *RET_SIZE is the size it is based on.
 */
static uint64_t download_fetch_cap(const Download *d, uint64_t *ret_size)
{
        uint64_t size = d->expected_size ?: d->known_total ?: d->max_image_size;

        *ret_size = size;
        if (size == 0 || size > (UINT64_MAX - FETCH_CAP_SLACK) / FETCH_CAP_FACTOR)
                return UINT64_MAX;
        return size * FETCH_CAP_FACTOR + FETCH_CAP_SLACK;
}

/* Whether fetching LEN more bytes would pass the cap; if so, REASON says so. */
static bool download_over_cap(const Download *d, uint64_t len, char *reason, size_t size)
{
        uint64_t image, cap = download_fetch_cap(d, &image);
        uint64_t fetched = download_fetched_total(d);

        if (fetched <= cap && len <= cap - fetched)
                return false;
        (void)snprintf(reason, size, "gave up: fetched %.1f MiB for an image of %s%.1f MiB",
                       (double)fetched / (1024 * 1024), d->expected_size || d->known_total ? "" : "at most ",
                       (double)image / (1024 * 1024));
        return true;
}

static int download_check_space(Download *d, uint64_t size, char *reason, size_t reason_size)
{
        struct statvfs sv;
        uint64_t need, avail;

        if (size <= d->offset)
                return 0;
        /* Not knowing is no reason to refuse: a full disk still fails cleanly when written. */
        if (fstatvfs(d->fd, &sv) < 0)
                return 0;
        need = size - d->offset;
        avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        if (need > avail || avail - need < FREE_SPACE_MARGIN) {
                (void)snprintf(reason, reason_size, "no space left: need %" PRIu64 ", have %" PRIu64, need,
                               avail);
                return -ENOSPC;
        }
        return 0;
}

static int download_hex_digest(EVP_MD_CTX *ctx, char *hex, size_t hex_size)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (EVP_DigestFinal_ex(ctx, md, &len) != 1 || hex_size < 2 * len + 1)
                return -EIO;
        for (unsigned i = 0; i < len; i++)
                (void)snprintf(hex + 2 * i, 3, "%02x", md[i]);
        return 0;
}

/* The whole body is in: check it against every expectation, make it durable, report. */
/*
 * The whole body is in: check it against every expectation and make it
 * durable. Returns 0, -errno (with the reason), or STEP_AGAIN when a pieced
 * file failed and is to be fetched whole once more.
 */
static int download_complete(Download *d)
{
        char md5_hex[33] = "";
        const char *mismatch = NULL;
        char reason[REASON_MAX];

        if (download_hex_digest(d->sha256, d->sha256_hex, sizeof(d->sha256_hex)) < 0 ||
            (d->expected_md5 && download_hex_digest(d->md5, md5_hex, sizeof(md5_hex)) < 0))
                return download_failf(d, -EIO, "cannot compute the image's hash");
        d->have_sha256 = true;

        if (d->expected_size > 0 && d->offset != d->expected_size) {
                (void)snprintf(reason, sizeof(reason),
                               "SIZE mismatch: got %" PRIu64 " bytes, expected %" PRIu64, d->offset,
                               d->expected_size);
                mismatch = reason;
        } else if (d->expected_sha256 && strcasecmp(d->sha256_hex, d->expected_sha256) != 0)
                mismatch = "SHA-256 mismatch";
        else if (d->expected_md5 && strcasecmp(md5_hex, d->expected_md5) != 0)
                mismatch = "MD5 mismatch";

        if (mismatch) {
                int r;

                /*
                 * A file assembled from several responses may be our fault
                 * (a prefix gone bad on disk, a server that lied about its
                 * validators): it earns one clean fetch from byte 0.
                 */
                if (!d->pieced || d->refetched)
                        return download_failf(d, -EBADMSG, "%s", mismatch);
                log_info("Resumed download of %s failed verification (%s), fetching it whole again.",
                         d->url_log, mismatch);
                d->refetched = true;
                d->have_sha256 = false;
                r = download_reset_file(d);
                if (r < 0)
                        return download_failf(d, r, "cannot truncate %s: %s", d->part_path, strerror(-r));
                return STEP_AGAIN;
        }

        if (fsync(d->fd) < 0)
                return download_failf(d, -errno, "cannot sync %s: %m", d->part_path);
        return 0;
}

static void download_response_reset(DownloadResponse *r)
{
        free(r->etag);
        free(r->last_modified);
        *r = (DownloadResponse){
                .content_length = -1,
                .range_total = -1,
        };
}

/* Parses the decimal number starting P (LEN bytes at most); returns the bytes used, 0 if none or too big. */
static size_t parse_u64(const char *p, size_t len, uint64_t *ret)
{
        uint64_t v = 0;
        size_t i;

        for (i = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
                if (v > (UINT64_MAX - 9) / 10)
                        return 0;
                v = v * 10 + (uint64_t)(p[i] - '0');
        }
        if (i > 0)
                *ret = v;
        return i;
}

/*
 * "bytes START-END/TOTAL" (TOTAL may be an asterisk: unknown) in a 206,
 * "bytes <asterisk>/TOTAL" in a 416. Only a value that parses whole is
 * taken: a 206 without one is refused (download_check_range()).
 */
static void parse_content_range(DownloadResponse *r, const char *p, size_t len)
{
        uint64_t start = 0, end = 0, total = 0;
        bool has_range = false;
        size_t n;

        if (len < 6 || strncasecmp(p, "bytes ", 6) != 0)
                return;
        p += 6, len -= 6;
        if (len > 0 && *p == '*') {
                p++, len--;
        } else {
                n = parse_u64(p, len, &start);
                if (n == 0 || n >= len || p[n] != '-')
                        return;
                p += n + 1, len -= n + 1;
                n = parse_u64(p, len, &end);
                if (n == 0 || end < start)
                        return;
                p += n, len -= n;
                has_range = true;
        }
        if (len < 2 || *p != '/')
                return;
        if (len == 2 && p[1] == '*') {
                if (!has_range)
                        return; /* "bytes * / *" says nothing */
                total = UINT64_MAX;
        } else {
                n = parse_u64(p + 1, len - 1, &total);
                if (n != len - 1 || total > INT64_MAX)
                        return;
        }
        r->has_content_range = has_range;
        r->range_start = start;
        r->range_end = end;
        r->range_total = total == UINT64_MAX ? -1 : (int64_t)total;
}

/* If the header line BUF starts with NAME ':', returns its value without surrounding blanks. */
static const char *header_value(const char *buf, size_t len, const char *name, size_t *ret_len)
{
        size_t n = strlen(name);

        if (len <= n || strncasecmp(buf, name, n) != 0 || buf[n] != ':')
                return NULL;
        buf += n + 1, len -= n + 1;
        while (len > 0 && (*buf == ' ' || *buf == '\t'))
                buf++, len--;
        while (len > 0 && isspace((unsigned char)buf[len - 1]))
                len--;
        *ret_len = len;
        return buf;
}

/* Whether a Location value is an absolute URL whose scheme is not http or https (RFC 3986 3.1). */
static bool location_elsewhere(const char *v, size_t len)
{
        size_t i = 0;

        if (len == 0 || !isalpha((unsigned char)v[0]))
                return false;
        while (i < len && (isalnum((unsigned char)v[i]) || v[i] == '+' || v[i] == '-' || v[i] == '.'))
                i++;
        if (i == len || v[i] != ':')
                return false; /* a relative reference: same scheme */
        return !((i == 4 && strncasecmp(v, "http", 4) == 0) || (i == 5 && strncasecmp(v, "https", 5) == 0));
}

static void take_validator(char **dst, const char *v, size_t len)
{
        if (len == 0 || len > VALIDATOR_MAX || memchr(v, 0, len))
                return;
        free(*dst);
        *dst = strndup(v, len); /* on ENOMEM we merely lose the ability to resume */
}

/*
 * A 206 must answer the Range we sent, and agree with itself and with what
 * we knew: its Content-Range starts at our offset, covers as many bytes as
 * its Content-Length says, ends inside its total, and that total is the size
 * we knew (SIZE, or what an earlier response declared). Otherwise its bytes
 * may not belong where we would put them: we start over from byte 0 (once;
 * after that it is retried like any protocol hiccup). Returns 0 or -1 (abort).
 */
static int download_check_range(Download *d)
{
        const DownloadResponse *resp = &d->resp;
        uint64_t total = resp->range_total >= 0 ? (uint64_t)resp->range_total : 0;

        if (!resp->has_content_range)
                download_set_abort(d, -EPROTO, true, "206 without a valid Content-Range");
        else if (resp->range_start != d->offset)
                download_set_abort(d, -EPROTO, true, "Content-Range does not start at %" PRIu64, d->offset);
        else if (resp->content_length >= 0 &&
                 (resp->content_length == 0 ||
                  resp->range_end - resp->range_start != (uint64_t)resp->content_length - 1))
                download_set_abort(d, -EPROTO, true, "Content-Range does not match Content-Length");
        else if (resp->range_total >= 0 && resp->range_end >= total)
                download_set_abort(d, -EPROTO, true, "Content-Range ends past its total");
        else if (resp->range_total >= 0 && d->known_total > 0 && total != d->known_total)
                download_set_abort(d, -EPROTO, true,
                                   "Content-Range total %" PRIu64 " is not the file's size %" PRIu64, total,
                                   d->known_total);
        else
                return 0;
        d->restart_from_zero = true;
        return -1;
}

/* The headers of a 2xx response are in: decide what its body means for the file. Returns 0 or -1 (abort). */
static int download_accept(Download *d)
{
        DownloadResponse *resp = &d->resp;
        char reason[REASON_MAX];
        int r;

        /* A 204, 202, 203...: whatever their body, it is not the file we asked for. */
        if (resp->status != 200 && resp->status != 206) {
                download_set_abort(d, -EPROTO, false, "HTTP %ld: not an image", resp->status);
                return -1;
        }
        if (resp->bad_content_length) {
                download_set_abort(d, -EPROTO, false, "invalid Content-Length");
                return -1;
        }
        if (resp->conflicting_content_length) {
                download_set_abort(d, -EPROTO, false, "conflicting Content-Length headers");
                return -1;
        }

        if (resp->status == 206) {
                if (!d->range_sent) {
                        download_set_abort(d, -EPROTO, false, "partial content to a request without Range");
                        return -1;
                }
                if (download_check_range(d) < 0)
                        return -1;
                d->total = resp->range_total > 0 ? (uint64_t)resp->range_total : 0;
                d->pieced = d->offset > 0;
        } else {
                /* The server sent the whole file: Range ignored, or If-Range says it changed. */
                if (d->offset > 0) {
                        r = download_reset_file(d);
                        if (r < 0) {
                                download_set_abort(d, r, false, "cannot truncate %s: %s", d->part_path,
                                                   strerror(-r));
                                return -1;
                        }
                }
                d->total = resp->content_length > 0 ? (uint64_t)resp->content_length : 0;
        }

        d->accepted = true;
        free(d->etag);
        free(d->last_modified);
        d->etag = validator_usable(resp->etag, true) ? TAKE_PTR(resp->etag) : NULL;
        d->last_modified =
                validator_usable(resp->last_modified, false) ? TAKE_PTR(resp->last_modified) : NULL;
        d->checkpoint_pending = true;

        if (d->total > 0) {
                if (d->expected_size > 0 && d->total != d->expected_size) {
                        download_set_abort(d, -EBADMSG, false,
                                           "SIZE mismatch: server has %" PRIu64 " bytes, expected %" PRIu64,
                                           d->total, d->expected_size);
                        return -1;
                }
                if (d->max_image_size > 0 && d->total > d->max_image_size) {
                        download_set_abort(d, -EFBIG, false,
                                           "image larger than max_image_size (%" PRIu64 " > %" PRIu64
                                           " bytes)",
                                           d->total, d->max_image_size);
                        return -1;
                }
                r = download_check_space(d, d->total, reason, sizeof(reason));
                if (r < 0) {
                        download_set_abort(d, r, false, "%s", reason);
                        return -1;
                }
                d->known_total = d->total;
        }
        return 0;
}


static int download_on_headers_end(Download *d)
{
        long status = d->resp.status;

        /* Interim (1xx) and redirects (which libcurl follows, or refuses) say nothing about the file. */
        if (status < 200 || (status >= 300 && status < 400))
                return 0;
        if (status >= 400) {
                /* No need to read an error page. */
                d->abort.error = -EIO;
                d->abort.http = true;
                return -1;
        }
        if (download_accept(d) < 0)
                return -1;
        /* The checkpoint that carries this response's validators (and maybe offset 0), before its body. */
        return download_emit(d);
}

static size_t download_on_header(char *buf, size_t size, size_t n, void *userdata)
{
        Download *d = userdata;
        DownloadResponse *resp = &d->resp;
        size_t len = size * n, vlen;
        const char *v;
        uint64_t u = 0;

        d->activity_usec = now_usec();
        /* After the final response's headers, only trailers can come: not ours. */
        if (d->accepted)
                return len;

        if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
                const char *sp = memchr(buf, ' ', len);

                download_response_reset(resp);
                if (sp && parse_u64(sp + 1, len - (size_t)(sp + 1 - buf), &u) == 3)
                        resp->status = (long)u;
                return len;
        }
        if ((len == 2 && buf[0] == '\r' && buf[1] == '\n') || (len == 1 && buf[0] == '\n'))
                return download_on_headers_end(d) < 0 ? 0 : len;

        if ((v = header_value(buf, len, "Content-Length", &vlen))) {
                /*
                 * Checked here, not left to libcurl: 7.88 takes a value that
                 * overflows as "no length" and the last of two that differ,
                 * either of which can turn a cut body into a "complete" one.
                 */
                if (vlen == 0 || parse_u64(v, vlen, &u) != vlen || u > INT64_MAX)
                        resp->bad_content_length = true;
                else if (resp->content_length >= 0 && (uint64_t)resp->content_length != u)
                        resp->conflicting_content_length = true;
                else
                        resp->content_length = (int64_t)u;
        } else if ((v = header_value(buf, len, "Content-Range", &vlen)))
                parse_content_range(resp, v, vlen);
        else if ((v = header_value(buf, len, "ETag", &vlen)))
                take_validator(&resp->etag, v, vlen);
        else if ((v = header_value(buf, len, "Last-Modified", &vlen)))
                take_validator(&resp->last_modified, v, vlen);
        else if ((v = header_value(buf, len, "Location", &vlen)))
                resp->location_elsewhere = location_elsewhere(v, vlen);
        else if ((v = header_value(buf, len, "Retry-After", &vlen))) {
                if (vlen > 0 && parse_u64(v, vlen, &u) == vlen)
                        resp->retry_after_sec = u;
        }
        return len;
}
/*
 * Waits USEC, or less when download_cancel() comes first. Returns 0, or
 * -ECANCELED. poll() on the eventfd rather than a sleep: a cancel made just
 * before the wait leaves the eventfd readable, so it cannot be lost.
 */
static int download_wait(Download *d, uint64_t usec)
{
        uint64_t end = now_usec() + usec, now;
        struct pollfd pfd = { .fd = d->wake_fd, .events = POLLIN };

        while (!d->cancelled && (now = now_usec()) < end) {
                uint64_t ms = (end - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;

                (void)poll(&pfd, 1, (int)MIN(ms, (uint64_t)INT_MAX));
        }
        return d->cancelled ? -ECANCELED : 0;
}

/*
 * The rate limit: a token bucket in the write callback that simply sleeps
 * when the bytes taken are ahead of the rate. While we sleep inside the
 * callback, libcurl reads nothing, the socket's receive buffer fills, and
 * TCP's flow control slows the server down: nothing else in this process
 * needs to run meanwhile, so no pausing and unpausing of the transfer is
 * needed. Not CURLOPT_MAX_RECV_SPEED_LARGE: libcurl 7.88 paces on the speed
 * of the last few seconds, so the first seconds of a transfer (a whole small
 * image) arrive unthrottled (measured: 2 MB at 1 MB/s took 0.01 s with it).
 * Returns how long to wait, 0 for none.
 */
static uint64_t download_rate_delay(Download *d, uint64_t now)
{
        double rate = (double)d->rate_limit;
        double burst = MAX(rate / 4, 1024.0);

        d->rate_tokens = MIN(burst, d->rate_tokens + (double)(now - d->rate_usec) * rate / 1e6);
        d->rate_usec = now;
        if (d->rate_tokens >= 0)
                return 0;
        return (uint64_t)(-d->rate_tokens * 1e6 / rate) + 1;
}

static int pwrite_all(int fd, const char *buf, size_t len, uint64_t offset)
{
        while (len > 0) {
                ssize_t k = pwrite(fd, buf, len, (off_t)offset);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                buf += k, len -= (size_t)k, offset += (uint64_t)k;
        }
        return 0;
}


static size_t download_on_write(char *buf, size_t size, size_t n, void *userdata)
{
        Download *d = userdata;
        char reason[REASON_MAX];
        size_t len = size * n;
        int r;

        if (d->cancelled) {
                download_set_abort(d, -ECANCELED, false, "cancelled");
                return 0;
        }
        if (!d->accepted) {
                /* The body of a final non-2xx response (a 3xx without Location, say). */
                d->abort.error = -EIO;
                d->abort.http = true;
                return 0;
        }
        if (d->rate_limit > 0) {
                uint64_t delay = download_rate_delay(d, now_usec());

                if (delay > 0) {
                        if (download_wait(d, delay) < 0) {
                                download_set_abort(d, -ECANCELED, false, "cancelled");
                                return 0;
                        }
                        (void)download_rate_delay(d, now_usec());
                }
        }
        /* d->offset never exceeds any of these limits, so the subtractions cannot wrap. */
        if (d->max_image_size > 0 && len > d->max_image_size - d->offset) {
                download_set_abort(d, -EFBIG, false, "image larger than max_image_size (%" PRIu64 " bytes)",
                                   d->max_image_size);
                return 0;
        }
        if (d->expected_size > 0 && len > d->expected_size - d->offset) {
                download_set_abort(d, -EBADMSG, false, "SIZE mismatch: more than %" PRIu64 " bytes",
                                   d->expected_size);
                return 0;
        }
        /* A 206 without Content-Length is read until the server closes: not past its own total. */
        if (d->total > 0 && len > d->total - d->offset) {
                download_set_abort(d, -EPROTO, false, "more bytes than the server declared (%" PRIu64 ")",
                                   d->total);
                return 0;
        }
        if (download_over_cap(d, len, reason, sizeof(reason))) {
                download_set_abort(d, -EDQUOT, false, "%s", reason);
                return 0;
        }

        r = pwrite_all(d->fd, buf, len, d->offset);
        if (r < 0) {
                download_set_abort(d, r, false, "cannot write %s: %s", d->part_path, strerror(-r));
                return 0;
        }
        if (download_hash_update(d, buf, len) < 0) {
                download_set_abort(d, -EIO, false, "cannot hash the image");
                return 0;
        }
        d->offset += len;
        d->bytes_fetched += len;
        d->rate_tokens -= (double)len;
        /* Our own wait for the rate limit is no stall either. */
        d->activity_usec = now_usec();
        return download_emit(d) < 0 ? 0 : len;
}

/* Returns the first failing code, for download_translate(). */
static CURLcode download_setup_easy(Download *d, CURL *c)
{
        const char *validator = download_validator(d);
        CURLcode code;

#define SETOPT(opt, val)                                                                                    \
        do {                                                                                                \
                code = curl_easy_setopt(c, opt, val);                                                       \
                if (code != CURLE_OK)                                                                       \
                        return code;                                                                        \
        } while (0)

        SETOPT(CURLOPT_URL, d->url);
        SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
        SETOPT(CURLOPT_MAXREDIRS, (long)d->max_redirects);
        SETOPT(CURLOPT_NOSIGNAL, 1L);
        SETOPT(CURLOPT_ERRORBUFFER, d->errbuf);
        SETOPT(CURLOPT_USERAGENT, d->user_agent ?: "krtiot");
        SETOPT(CURLOPT_WRITEFUNCTION, download_on_write);
        SETOPT(CURLOPT_WRITEDATA, d);
        SETOPT(CURLOPT_HEADERFUNCTION, download_on_header);
        SETOPT(CURLOPT_HEADERDATA, d);
        /* A proxy's "200 Connection established" is not the server's answer. */
        SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
        /* The bytes on disk must be the bytes the hashes are about. */
        SETOPT(CURLOPT_HTTP_CONTENT_DECODING, 0L);
        /* Small chunks when rate-limited, so that each wait stays short. */
        SETOPT(CURLOPT_BUFFERSIZE,
               d->rate_limit > 0
                       ? (long)MAX(MIN(d->rate_limit / 8, (uint64_t)RECV_BUFFER_SIZE), (uint64_t)1024)
                       : RECV_BUFFER_SIZE);
        SETOPT(CURLOPT_CONNECTTIMEOUT, (long)d->connect_timeout_sec);
        /* Kept as a backstop; it also makes libcurl call download_on_xferinfo() every second. */
        SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(CURLOPT_LOW_SPEED_TIME, (long)d->stall_timeout_sec);
        SETOPT(CURLOPT_XFERINFOFUNCTION, download_on_xferinfo);
        SETOPT(CURLOPT_XFERINFODATA, d);
        SETOPT(CURLOPT_NOPROGRESS, 0L);
        SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
        /* Also refused by download_accept(); libcurl's check stops even a response we never see the end of. */
        if (d->max_image_size > 0 && d->max_image_size <= INT64_MAX)
                SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)d->max_image_size);
        SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
        if (d->ca_file)
                SETOPT(CURLOPT_CAINFO, d->ca_file);

        if (d->range_sent) {
                (void)snprintf(d->range, sizeof(d->range), "%" PRIu64 "-", d->offset);
                SETOPT(CURLOPT_RANGE, d->range);
        }
        if (d->range_sent && validator) {
                char h[sizeof("If-Range: ") + VALIDATOR_MAX];
                struct curl_slist *l;

                /* The server sends the whole file instead if its file is not the one we have a piece of. */
                (void)snprintf(h, sizeof(h), "If-Range: %s", validator);
                l = curl_slist_append(d->headers, h);
                if (!l)
                        return CURLE_OUT_OF_MEMORY;
                d->headers = l;
                SETOPT(CURLOPT_HTTPHEADER, d->headers);
        }
#undef SETOPT
        return CURLE_OK;
}


/* Writes a checkpoint now. Returns 0, or -errno with REASON filled in. */
static int download_checkpoint(Download *d, uint64_t now, char *reason, size_t size)
{
        DownloadCheckpoint c = {
                .offset = d->offset,
                .etag = d->etag,
                .last_modified = d->last_modified,
                .bytes_fetched = download_fetched_total(d),
        };
        int r;

        /* A checkpoint promises bytes that survive a power cut. */
        if (fdatasync(d->fd) < 0) {
                r = -errno;
                (void)snprintf(reason, size, "cannot sync %s: %s", d->part_path, strerror(-r));
                return r;
        }
        d->checkpoint_pending = false;
        d->checkpoint_offset = d->offset;
        d->checkpoint_fetched = c.bytes_fetched;
        d->checkpoint_usec = now;
        if (d->cb.checkpoint) {
                r = d->cb.checkpoint(d, &c, d->userdata);
                if (r < 0) {
                        (void)snprintf(reason, size, "cannot report: %s", strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* Reports progress and checkpoints when due. Returns 0, or -errno with REASON filled in. */
static int download_emit_due(Download *d, char *reason, size_t size)
{
        uint64_t now = now_usec();
        int r;

        if (!d->transferring)
                return 0;

        if (d->checkpoint_pending || (d->offset > d->checkpoint_offset &&
                                      (d->offset - d->checkpoint_offset >= CHECKPOINT_INTERVAL_BYTES ||
                                       now >= d->checkpoint_usec + CHECKPOINT_INTERVAL_USEC))) {
                r = download_checkpoint(d, now, reason, size);
                if (r < 0)
                        return r;
        }

        if (d->cb.progress && d->offset != d->progress_offset &&
            now >= d->progress_usec + PROGRESS_INTERVAL_USEC) {
                d->progress_offset = d->offset;
                d->progress_usec = now;
                r = d->cb.progress(d, d->offset, d->total ?: d->expected_size, d->userdata);
                if (r < 0) {
                        (void)snprintf(reason, size, "cannot report: %s", strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* download_emit_due() for libcurl's callbacks: returns 0, or -1 with the cause in d->abort. */
static int download_emit(Download *d)
{
        char reason[REASON_MAX];
        int r;

        r = download_emit_due(d, reason, sizeof(reason));
        if (r < 0) {
                download_set_abort(d, r, false, "%s", reason);
                return -1;
        }
        return 0;
}

/* After curl_easy_perform(): what the attempt leads to. Returns STEP_*, or a final -errno with its reason. */
static int download_transfer_done(Download *d, CURLcode code)
{
        char reason[REASON_MAX];
        uint64_t delay;
        bool retry, progressed;
        int r;

        if (code == CURLE_OK && d->accepted) {
                if (d->total == 0 || d->offset == d->total)
                        return STEP_COMPLETE;
                /*
                 * Complete by its own length, yet short of the file it
                 * declared (a 206 of less than we asked for): not an image
                 * yet; carry on from here as after a cut connection.
                 */
                download_set_abort(d, -ECONNRESET, true, "connection lost at %" PRIu64 " of %" PRIu64 " bytes",
                                   d->offset, d->total);
        }
        if (d->cancelled)
                return download_failf(d, -ECANCELED, "cancelled");

        if (d->resp.status == 416 && d->range_sent) {
                /* Nothing after our offset: when that is the whole size, we have the whole file. */
                if (d->resp.range_total >= 0 && (uint64_t)d->resp.range_total == d->offset) {
                        d->pieced = true;
                        return STEP_COMPLETE;
                }
                d->restart_from_zero = true;
        }

        r = download_translate(d, code, reason, sizeof(reason), &retry);

        /*
         * Only progress past the best offset any attempt reached proves that
         * retrying gets somewhere: a server that cuts every attempt at the
         * same place, making us start over each time, never renews them.
         */
        progressed = d->offset >= d->high_water + RETRY_RENEW_BYTES;
        d->high_water = MAX(d->high_water, d->offset);

        if (d->restart_from_zero && !d->restarted) {
                d->restarted = true;
                r = download_reset_file(d);
                if (r < 0)
                        return download_failf(d, r, "cannot truncate %s: %s", d->part_path, strerror(-r));
                return STEP_AGAIN;
        }

        if (!retry)
                return download_failf(d, r, "%s", reason);

        /* The retry budget is for failures in a row. */
        if (progressed) {
                d->failures = 0;
                backoff_reset(&d->backoff);
        }
        if (++d->failures > d->retries) {
                if (d->attempts == 1)
                        return download_failf(d, r, "%s", reason);
                return download_failf(d, r, "gave up after %u attempts: %s", d->attempts, reason);
        }
        /* No waiting for an attempt that could not fetch a byte. */
        if (download_over_cap(d, 1, reason, sizeof(reason)))
                return download_failf(d, -EDQUOT, "%s", reason);

        delay = backoff_next(&d->backoff);
        if (d->resp.retry_after_sec > 0)
                delay = MAX(delay, MIN(d->resp.retry_after_sec * USEC_PER_SEC, d->retry_max_usec));
        d->retry_delay_usec = delay;

        log_info("Download attempt %u of %s failed (%s), retrying in %" PRIu64 " ms.", d->attempts,
                 d->url_log, reason, delay / USEC_PER_MSEC);
        /* Whatever arrived is worth keeping, and counting, if we are stopped while we wait. */
        if (d->offset != d->checkpoint_offset || download_fetched_total(d) != d->checkpoint_fetched)
                d->checkpoint_pending = true;
        return STEP_RETRY;
}

/* One attempt: a request and its response. Returns STEP_*, or a final -errno with its reason. */
static int download_attempt(Download *d)
{
        char reason[REASON_MAX];
        CURLcode code;
        bool retry;
        int r;

        /* Fetched enough for this job in earlier runs, or before a restart from byte 0. */
        if (download_over_cap(d, 1, reason, sizeof(reason)))
                return download_failf(d, -EDQUOT, "%s", reason);

        d->attempts++;
        download_response_reset(&d->resp);
        d->abort = (DownloadAbort){};
        d->errbuf[0] = 0;
        d->accepted = false;
        d->restart_from_zero = false;
        d->connected = false;
        d->total = 0;
        d->rate_tokens = 0;
        d->rate_usec = now_usec();

        /* Neither a validator nor a hash could prove that the piece belongs to the server's current file. */
        if (d->offset > 0 && !download_can_resume(d)) {
                r = download_reset_file(d);
                if (r < 0)
                        return download_failf(d, r, "cannot truncate %s: %s", d->part_path, strerror(-r));
        }
        d->range_sent = d->offset > 0;

        /* Options back to their defaults; the connection, DNS and TLS session caches stay. */
        curl_easy_reset(d->easy);
        curl_slist_free_all(d->headers);
        d->headers = NULL;
        code = download_setup_easy(d, d->easy);
        if (code != CURLE_OK) {
                r = download_translate(d, code, reason, sizeof(reason), &retry);
                return download_failf(d, r, "%s", reason);
        }
        code = curl_easy_perform(d->easy);
        return download_transfer_done(d, code);
}

/* Runs attempts, waits and verification from STEP until the download ends. Returns 0 or -errno. */
static int download_loop(Download *d, int step)
{
        char reason[REASON_MAX];
        int r;

        for (;;) {
                if (d->cancelled)
                        return download_failf(d, -ECANCELED, "cancelled");
                switch (step) {
                case STEP_COMPLETE:
                        step = download_complete(d);
                        if (step == 0)
                                return 0;
                        break;
                case STEP_RETRY:
                        r = download_emit_due(d, reason, sizeof(reason));
                        if (r < 0)
                                return download_failf(d, r, "%s", reason);
                        if (download_wait(d, d->retry_delay_usec) < 0)
                                return download_failf(d, -ECANCELED, "cancelled");
                        step = download_attempt(d);
                        break;
                case STEP_AGAIN:
                        step = download_attempt(d);
                        break;
                default:
                        return step;
                }
        }
}

/* Hashes the prefix a resume starts from. Returns 0 or -errno with its reason. */
static int download_rehash(Download *d)
{
        _cleanup_free_ uint8_t *buf = malloc(REHASH_CHUNK_SIZE);
        uint64_t pos = 0;
        ssize_t k;
        int r;

        if (!buf)
                return download_failf(d, -ENOMEM, "out of memory");
        while (pos < d->offset) {
                if (d->cancelled)
                        return download_failf(d, -ECANCELED, "cancelled");
                k = pread(d->fd, buf, (size_t)MIN((uint64_t)REHASH_CHUNK_SIZE, d->offset - pos), (off_t)pos);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return download_failf(d, -errno, "cannot read %s: %m", d->part_path);
                }
                if (k == 0) {
                        /* Shorter than fstat() said a moment ago: someone else is at it; start over. */
                        r = download_reset_file(d);
                        if (r < 0)
                                return download_failf(d, r, "cannot truncate %s: %s", d->part_path,
                                                      strerror(-r));
                        return 0;
                }
                if (download_hash_update(d, buf, (size_t)k) < 0)
                        return download_failf(d, -EIO, "cannot hash the image");
                pos += (uint64_t)k;
        }
        return 0;
}

/* Checks the parameters, opens the part file, re-hashes what is kept of it. Returns 0 or -errno with its reason. */
static int download_prepare(Download *d)
{
        char reason[REASON_MAX];
        struct stat st;
        int fd, r;

        if (strncasecmp(d->url, "http://", 7) != 0 && strncasecmp(d->url, "https://", 8) != 0)
                return download_failf(d, -EINVAL, "URL is not http:// or https://");
        if (d->expected_md5 && !hex_valid(d->expected_md5, 32))
                return download_failf(d, -EINVAL, "malformed expected MD5");
        if (d->expected_sha256 && !hex_valid(d->expected_sha256, 64))
                return download_failf(d, -EINVAL, "malformed expected SHA-256");
        if (d->expected_size > 0 && d->max_image_size > 0 && d->expected_size > d->max_image_size)
                return download_failf(d, -EFBIG,
                                      "image larger than max_image_size (%" PRIu64 " > %" PRIu64 " bytes)",
                                      d->expected_size, d->max_image_size);

        r = download_hash_init(d);
        if (r < 0)
                return download_failf(d, r, "cannot initialize hashing");

        /*
         * Whoever can write the download directory must not make us write
         * elsewhere (a symbolic link planted as the .part) nor hang us (a
         * FIFO, whose open() may wait for a peer: POSIX leaves O_RDWR on a
         * FIFO undefined). O_NONBLOCK changes nothing for a regular file.
         */
        fd = open(d->part_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK, 0600);
        if (fd < 0 && errno == ELOOP)
                return download_failf(d, -EIO, "%s is a symbolic link, not a regular file", d->part_path);
        if (fd < 0)
                return download_failf(d, -errno, "cannot open %s: %m", d->part_path);
        if (fstat(fd, &st) < 0) {
                r = -errno;
                close(fd);
                return download_failf(d, r, "cannot stat %s: %s", d->part_path, strerror(-r));
        }
        if (!S_ISREG(st.st_mode)) {
                close(fd);
                return download_failf(d, -EIO, "%s is not a regular file", d->part_path);
        }
        d->fd = fd;

        d->offset = d->resume_offset;
        if (d->offset > (uint64_t)st.st_size || !download_can_resume(d) ||
            (d->expected_size > 0 && d->offset > d->expected_size) ||
            (d->max_image_size > 0 && d->offset > d->max_image_size))
                d->offset = 0;
        /* Bytes past the checkpoint were never promised durable: drop them. */
        if (ftruncate(d->fd, (off_t)d->offset) < 0)
                return download_failf(d, -errno, "cannot truncate %s: %m", d->part_path);
        d->checkpoint_offset = d->offset;
        d->checkpoint_fetched = d->fetched_before;
        d->high_water = d->offset;

        if (d->expected_size > 0) {
                r = download_check_space(d, d->expected_size, reason, sizeof(reason));
                if (r < 0)
                        return download_failf(d, r, "%s", reason);
        }
        return download_rehash(d);
}

/* The last checkpoint, whatever the result, then the result itself. */
static int download_end(Download *d, int r)
{
        char reason[REASON_MAX];

        /* Best effort: a failure here must not hide the result, which is what the caller needs most. */
        if (d->transferring && (d->checkpoint_pending || d->offset != d->checkpoint_offset ||
                                download_fetched_total(d) != d->checkpoint_fetched))
                (void)download_checkpoint(d, now_usec(), reason, sizeof(reason));
        d->transferring = false;
        if (d->fd >= 0) {
                close(d->fd);
                d->fd = -1;
        }
        if (r >= 0) {
                d->have_reason = false;
                return 0;
        }
        if (!d->have_reason)
                (void)download_failf(d, r, "download failed: %s", strerror(-r));
        return r;
}

int download_run(Download *d)
{
        int r;

        if (!d)
                return -EINVAL;
        if (d->ran)
                return -EALREADY;
        d->ran = true;

        r = download_prepare(d);
        if (r >= 0) {
                d->transferring = true;
                /* Everything is already here (a crash between the last byte and the report): just verify. */
                if (d->offset > 0 && d->offset == d->expected_size) {
                        d->pieced = true;
                        r = download_loop(d, STEP_COMPLETE);
                } else
                        r = download_loop(d, STEP_AGAIN);
        }
        return download_end(d, r);
}

static int strdup_or_null(const char *s, char **ret)
{
        if (!s || !*s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int download_new(const DownloadParams *p, const DownloadCallbacks *callbacks, void *userdata, Download **ret)
{
        _cleanup_(download_freep) Download *d = NULL;

        if (!p || !p->url || !p->part_path || !ret)
                return -EINVAL;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->fd = -1;
        d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (d->wake_fd < 0)
                return -errno;
        if (callbacks)
                d->cb = *callbacks;
        d->userdata = userdata;

        if (strdup_or_null(p->url, &d->url) < 0 || !(d->url_log = url_redact(p->url)) ||
            strdup_or_null(p->part_path, &d->part_path) < 0 ||
            strdup_or_null(p->expected_md5, &d->expected_md5) < 0 ||
            strdup_or_null(p->expected_sha256, &d->expected_sha256) < 0 ||
            strdup_or_null(p->ca_file, &d->ca_file) < 0 || strdup_or_null(p->user_agent, &d->user_agent) < 0)
                return -ENOMEM;
        if (validator_usable(p->etag, true) && strdup_or_null(p->etag, &d->etag) < 0)
                return -ENOMEM;
        if (validator_usable(p->last_modified, false) &&
            strdup_or_null(p->last_modified, &d->last_modified) < 0)
                return -ENOMEM;

        d->resume_offset = p->resume_offset;
        d->fetched_before = p->bytes_fetched;
        d->expected_size = p->expected_size;
        d->known_total = p->expected_size;
        d->max_image_size = p->max_image_size;
        d->rate_limit = p->rate_limit;
        d->stall_timeout_sec = p->stall_timeout_sec ?: DEFAULT_STALL_TIMEOUT_SEC;
        d->connect_timeout_sec = p->connect_timeout_sec ?: DEFAULT_CONNECT_TIMEOUT_SEC;
        d->retries = p->retries;
        d->max_redirects = p->max_redirects;
        d->retry_max_usec = p->retry_max_usec ?: DEFAULT_RETRY_MAX_USEC;
        backoff_init(&d->backoff, p->retry_initial_usec ?: DEFAULT_RETRY_INITIAL_USEC, d->retry_max_usec);
        download_response_reset(&d->resp);

        d->sha256 = EVP_MD_CTX_new();
        d->md5 = EVP_MD_CTX_new();
        d->easy = curl_easy_init();
        if (!d->sha256 || !d->md5 || !d->easy)
                return -ENOMEM;

        *ret = TAKE_PTR(d);
        return 0;
}
