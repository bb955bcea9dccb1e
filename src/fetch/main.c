/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-fetch: the command line, the status lines and the exit codes of one
 * download (download.c does the work). krtiotd starts it for the length of a
 * download (SPEC 9, fetch-wire.h); by hand it is a way to debug a URL on a
 * device. Exit status (FETCH_EXIT_*):
 *   0   the file is complete and verified
 *   1   the download failed (the reason is logged, and in the result line)
 *   2   cancelled by SIGTERM or SIGINT (after a last checkpoint)
 *   64  bad command line (EX_USAGE)
 * Status lines go to --status-fd only; human-readable lines to stderr, with
 * sd-daemon priority prefixes, never with a URL's password.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "download.h"
#include "fetch-wire.h"
#include "log.h"
#include "util/macro.h"
#include "util/strings.h"

/* The URL read from standard input ("-"): a line of at most this many bytes. */
#define URL_MAX 8192

typedef struct Args {
        DownloadParams params;
        const char *url_arg;
        int status_fd; /* -1: none */
        int log_level;
} Args;

/* The download a signal cancels; set while download_run() may run. */
static Download *volatile running_download;
static volatile sig_atomic_t cancel_requested;

static void help(void)
{
        printf("Usage: krtiot-fetch [OPTIONS] URL FILE\n"
               "\n"
               "Downloads one firmware image over HTTP(S) into FILE (a .part file), the way\n"
               "krtiotd does it for an update: resumes with Range/If-Range, retries with\n"
               "backoff, verifies size and hashes, and syncs the file to disk. URL \"-\" reads\n"
               "the URL from the first line of standard input, out of sight of ps.\n"
               "\n"
               "Expectations:\n"
               "      --sha256 HEX           the image's SHA-256 (64 hex digits)\n"
               "      --md5 HEX              the image's MD5 (32 hex digits)\n"
               "      --size BYTES           the image's size\n"
               "Resuming (from a checkpoint of an earlier run):\n"
               "      --resume-offset BYTES  bytes of FILE known good\n"
               "      --etag ETAG            the validators of the response they came from\n"
               "      --last-modified DATE\n"
               "      --bytes-fetched BYTES  bytes earlier runs fetched for this image\n"
               "Limits:\n"
               "      --max-size BYTES       largest image accepted (default: none)\n"
               "      --rate-limit BYTES/S   download speed limit (default: none)\n"
               "      --stall-timeout SEC    no byte for this long = stalled (default: 60)\n"
               "      --connect-timeout SEC  (default: 30)\n"
               "      --retries N            further attempts after failures in a row (default: 3)\n"
               "      --retry-delay-ms MS    first backoff ceiling (default: 1000)\n"
               "      --retry-max-ms MS      largest backoff (default: 60000)\n"
               "      --max-redirects N      (default: 5; 0 refuses redirects)\n"
               "      --ca-file FILE         CA certificates for HTTPS (default: the system's)\n"
               "      --user-agent STRING    (default: krtiot-fetch/%s)\n"
               "Output:\n"
               "      --status-fd N          write status lines (progress, checkpoint, result)\n"
               "                             on file descriptor N\n"
               "  -q, --quiet                log warnings and errors only\n"
               "  -v, --verbose              log at debug level, progress every second\n"
               "      --version              print the version and exit\n"
               "  -h, --help                 print this help and exit\n"
               "\n"
               "Proxies: http_proxy, https_proxy, all_proxy, no_proxy (not HTTP_PROXY).\n"
               "SIGTERM and SIGINT stop the download after a last checkpoint.\n"
               "Exit status: 0 done, 1 failed, 2 cancelled, 64 usage. See krtiot-fetch(1).\n",
               PACKAGE_VERSION);
}

_printf_(1, 2) static int usage_error(const char *format, ...)
{
        va_list ap;

        fprintf(stderr, "krtiot-fetch: ");
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'krtiot-fetch --help'.\n");
        return -FETCH_EXIT_USAGE;
}

/* A decimal number without sign. */
static int parse_u64_arg(const char *s, uint64_t *ret)
{
        unsigned long long v;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_unsigned_arg(const char *s, unsigned *ret)
{
        uint64_t v;

        if (parse_u64_arg(s, &v) < 0 || v > UINT32_MAX)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

/* Returns 1 to go on, 0 to exit successfully, or -FETCH_EXIT_USAGE. */
static int parse_argv(int argc, char *argv[], Args *a)
{
        enum {
                ARG_SHA256 = 0x100,
                ARG_MD5,
                ARG_SIZE,
                ARG_RESUME_OFFSET,
                ARG_ETAG,
                ARG_LAST_MODIFIED,
                ARG_BYTES_FETCHED,
                ARG_MAX_SIZE,
                ARG_RATE_LIMIT,
                ARG_STALL_TIMEOUT,
                ARG_CONNECT_TIMEOUT,
                ARG_RETRIES,
                ARG_RETRY_DELAY_MS,
                ARG_RETRY_MAX_MS,
                ARG_MAX_REDIRECTS,
                ARG_CA_FILE,
                ARG_USER_AGENT,
                ARG_STATUS_FD,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "sha256", required_argument, NULL, ARG_SHA256 },
                { "md5", required_argument, NULL, ARG_MD5 },
                { "size", required_argument, NULL, ARG_SIZE },
                { "resume-offset", required_argument, NULL, ARG_RESUME_OFFSET },
                { "etag", required_argument, NULL, ARG_ETAG },
                { "last-modified", required_argument, NULL, ARG_LAST_MODIFIED },
                { "bytes-fetched", required_argument, NULL, ARG_BYTES_FETCHED },
                { "max-size", required_argument, NULL, ARG_MAX_SIZE },
                { "rate-limit", required_argument, NULL, ARG_RATE_LIMIT },
                { "stall-timeout", required_argument, NULL, ARG_STALL_TIMEOUT },
                { "connect-timeout", required_argument, NULL, ARG_CONNECT_TIMEOUT },
                { "retries", required_argument, NULL, ARG_RETRIES },
                { "retry-delay-ms", required_argument, NULL, ARG_RETRY_DELAY_MS },
                { "retry-max-ms", required_argument, NULL, ARG_RETRY_MAX_MS },
                { "max-redirects", required_argument, NULL, ARG_MAX_REDIRECTS },
                { "ca-file", required_argument, NULL, ARG_CA_FILE },
                { "user-agent", required_argument, NULL, ARG_USER_AGENT },
                { "status-fd", required_argument, NULL, ARG_STATUS_FD },
                { "quiet", no_argument, NULL, 'q' },
                { "verbose", no_argument, NULL, 'v' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        DownloadParams *p = &a->params;
        uint64_t ms;
        int c, idx = -1, r = 0;

        while ((c = getopt_long(argc, argv, "qvh", options, &idx)) >= 0) {
                switch (c) {
                case ARG_SHA256:
                        p->expected_sha256 = optarg;
                        break;
                case ARG_MD5:
                        p->expected_md5 = optarg;
                        break;
                case ARG_ETAG:
                        p->etag = optarg;
                        break;
                case ARG_LAST_MODIFIED:
                        p->last_modified = optarg;
                        break;
                case ARG_CA_FILE:
                        p->ca_file = optarg;
                        break;
                case ARG_USER_AGENT:
                        p->user_agent = optarg;
                        break;
                case ARG_SIZE:
                        r = parse_u64_arg(optarg, &p->expected_size);
                        break;
                case ARG_RESUME_OFFSET:
                        r = parse_u64_arg(optarg, &p->resume_offset);
                        break;
                case ARG_BYTES_FETCHED:
                        r = parse_u64_arg(optarg, &p->bytes_fetched);
                        break;
                case ARG_MAX_SIZE:
                        r = parse_u64_arg(optarg, &p->max_image_size);
                        break;
                case ARG_RATE_LIMIT:
                        r = parse_u64_arg(optarg, &p->rate_limit);
                        break;
                case ARG_STALL_TIMEOUT:
                        r = parse_unsigned_arg(optarg, &p->stall_timeout_sec);
                        break;
                case ARG_CONNECT_TIMEOUT:
                        r = parse_unsigned_arg(optarg, &p->connect_timeout_sec);
                        break;
                case ARG_RETRIES:
                        r = parse_unsigned_arg(optarg, &p->retries);
                        break;
                case ARG_MAX_REDIRECTS:
                        r = parse_unsigned_arg(optarg, &p->max_redirects);
                        break;
                case ARG_RETRY_DELAY_MS:
                case ARG_RETRY_MAX_MS:
                        r = parse_u64_arg(optarg, &ms);
                        if (r >= 0 && ms > UINT64_MAX / USEC_PER_MSEC)
                                r = -EINVAL;
                        if (r >= 0 && c == ARG_RETRY_DELAY_MS)
                                p->retry_initial_usec = ms * USEC_PER_MSEC;
                        else if (r >= 0)
                                p->retry_max_usec = ms * USEC_PER_MSEC;
                        break;
                case ARG_STATUS_FD: {
                        unsigned fd = 0;

                        r = parse_unsigned_arg(optarg, &fd);
                        if (r < 0)
                                break;
                        if (fd > INT32_MAX || fcntl((int)fd, F_GETFD) < 0)
                                return usage_error("--status-fd %s is not an open file descriptor", optarg);
                        a->status_fd = (int)fd;
                        break;
                }
                case 'q':
                        a->log_level = LOG_WARNING;
                        break;
                case 'v':
                        a->log_level = LOG_DEBUG;
                        break;
                case ARG_VERSION:
                        printf("krtiot-fetch %s\n", PACKAGE_VERSION);
                        return 0;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'krtiot-fetch --help'.\n");
                        return -FETCH_EXIT_USAGE;
                }
                if (r < 0)
                        return usage_error("invalid number: %s", optarg);
                idx = -1;
        }
        if (argc - optind != 2) {
                fprintf(stderr, "krtiot-fetch takes a URL and a FILE. Try 'krtiot-fetch --help'.\n");
                return -FETCH_EXIT_USAGE;
        }
        a->url_arg = argv[optind];
        p->part_path = argv[optind + 1];
        if (!*p->part_path)
                return usage_error("the FILE is empty");
        return 1;
}

/*
 * The first line of standard input, without its newline, into BUF (URL_MAX
 * bytes). Byte by byte: nothing past the newline is consumed. Returns 0,
 * -ECANCELED (a signal), -E2BIG, -ENODATA (empty), or -errno.
 */
static int read_url(char *buf)
{
        size_t len = 0;

        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf + len, 1);

                if (n < 0 && errno == EINTR) {
                        if (cancel_requested)
                                return -ECANCELED;
                        continue;
                }
                if (n < 0)
                        return -errno;
                if (n == 0 || buf[len] == '\n')
                        break;
                if (++len == URL_MAX)
                        return -E2BIG;
        }
        if (len > 0 && buf[len - 1] == '\r')
                len--;
        buf[len] = 0;
        return len > 0 ? 0 : -ENODATA;
}

static void on_signal(int sig)
{
        cancel_requested = 1;
        download_cancel(running_download);
}

/*
 * SIGTERM and SIGINT cancel; without SA_RESTART, so that they also cut
 * libcurl's wait short. SIGPIPE ignored: a closed status pipe is an error
 * to report (EPIPE), not a death.
 */
static int setup_signals(void)
{
        struct sigaction sa = { .sa_handler = on_signal };

        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
            signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                return -errno;
        return 0;
}

/* A status line (LEN bytes) in one write(): under PIPE_BUF, a pipe's reader sees it whole or not at all. */
static int status_write(const Args *a, const char *line, size_t len)
{
        while (len > 0) {
                ssize_t n = write(a->status_fd, line, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                line += n;
                len -= (size_t)n;
        }
        return 0;
}

static int on_progress(Download *d, uint64_t done, uint64_t total, void *userdata)
{
        const Args *a = userdata;
        char line[WIRE_LINE_MAX];
        size_t len;
        int r;

        if (total > 0)
                log_debug("%.1f of %.1f MiB (%u%%).", done / 1048576.0, total / 1048576.0,
                          (unsigned)(done * 100 / total));
        else
                log_debug("%.1f MiB.", done / 1048576.0);
        if (a->status_fd < 0)
                return 0;
        r = fetch_wire_progress(line, done, total, &len);
        return r < 0 ? r : status_write(a, line, len);
}

static int on_checkpoint(Download *d, const DownloadCheckpoint *c, void *userdata)
{
        const Args *a = userdata;
        char line[WIRE_LINE_MAX];
        size_t len;
        int r;

        log_debug("Checkpoint: %" PRIu64 " bytes on disk, %" PRIu64 " fetched in all.", c->offset,
                  c->bytes_fetched);
        if (a->status_fd < 0)
                return 0;
        r = fetch_wire_checkpoint(line, c->offset, c->bytes_fetched, c->etag, c->last_modified, &len);
        return r < 0 ? r : status_write(a, line, len);
}

static uint64_t now_usec(void)
{
        struct timespec ts;

        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/* The result line, then the log line a person reads. Returns the exit status. */
static int report_result(const Args *a, Download *d, int result, uint64_t start_usec)
{
        const char *reason = download_get_reason(d), *sha256 = download_get_sha256(d);
        _cleanup_free_ char *shown = url_redact(a->params.url);
        double secs = (double)(now_usec() - start_usec) / 1e6;
        double mib = (double)download_get_bytes_fetched(d) / 1048576.0;
        unsigned attempts = download_get_attempts(d);
        char line[WIRE_LINE_MAX], cut[FETCH_REASON_MAX + 1];
        size_t len;

        if (result < 0) {
                /* The wire keeps a reason short; the log line has it whole. */
                (void)snprintf(cut, sizeof(cut), "%s", reason ? reason : strerror(-result));
                if (a->status_fd >= 0 && (fetch_wire_result(line, result, cut, sha256, &len) < 0 ||
                                          status_write(a, line, len) < 0))
                        log_warning_errno(errno, "Cannot write the result on fd %d.", a->status_fd);
        } else if (a->status_fd >= 0 &&
                   (fetch_wire_result(line, 0, NULL, sha256, &len) < 0 || status_write(a, line, len) < 0))
                log_warning_errno(errno, "Cannot write the result on fd %d.", a->status_fd);

        if (result == -ECANCELED) {
                log_info("Download of %s cancelled after %.1f MiB.", shown ? shown : "the image", mib);
                return FETCH_EXIT_CANCELLED;
        }
        if (result < 0) {
                log_error("Download of %s failed: %s", shown ? shown : "the image", reason);
                return FETCH_EXIT_FAILED;
        }
        log_info("Downloaded %s: %.1f MiB in %.2f s (%.1f MiB/s), %u attempt%s, SHA-256 %s.",
                 shown ? shown : "the image", mib, secs, secs > 0 ? mib / secs : 0.0, attempts,
                 attempts == 1 ? "" : "s", sha256 ? sha256 : "?");
        return FETCH_EXIT_OK;
}

int main(int argc, char *argv[])
{
        Args a = {
                .params = {
                        .retries = 3,
                        .max_redirects = 5,
                        .user_agent = "krtiot-fetch/" PACKAGE_VERSION,
                },
                .status_fd = -1,
                .log_level = LOG_INFO,
        };
        static const DownloadCallbacks callbacks = {
                .progress = on_progress,
                .checkpoint = on_checkpoint,
        };
        _cleanup_(download_freep) Download *d = NULL;
        char url[URL_MAX];
        uint64_t start;
        int r;

        r = parse_argv(argc, argv, &a);
        if (r <= 0)
                return -r;
        if (!a.url_arg || !a.params.part_path) /* parse_argv() returned 1: both are set */
                return FETCH_EXIT_USAGE;
        log_set_max_level(a.log_level);
        /* The status lines must not leak into whatever libcurl (a resolver helper?) might run. */
        if (a.status_fd >= 0)
                (void)fcntl(a.status_fd, F_SETFD, FD_CLOEXEC);

        r = setup_signals();
        if (r < 0) {
                log_error_errno(r, "Cannot set up signal handlers: %m");
                return FETCH_EXIT_FAILED;
        }

        if (strcmp(a.url_arg, "-") == 0) {
                r = read_url(url);
                if (r == -ECANCELED)
                        return FETCH_EXIT_CANCELLED;
                if (r < 0) {
                        fprintf(stderr, "krtiot-fetch: cannot read the URL from standard input: %s\n",
                                r == -E2BIG ? "longer than 8191 bytes" :
                                r == -ENODATA ? "empty" : strerror(-r));
                        return FETCH_EXIT_USAGE;
                }
                a.params.url = url;
        } else
                a.params.url = a.url_arg;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_error("Cannot initialize libcurl.");
                return FETCH_EXIT_FAILED;
        }
        r = download_new(&a.params, &callbacks, &a, &d);
        if (r < 0) {
                log_error_errno(r, "Cannot start the download: %m");
                curl_global_cleanup();
                return FETCH_EXIT_FAILED;
        }

        running_download = d;
        /* A signal that came before the line above has no download to cancel: pass it on. */
        if (cancel_requested)
                download_cancel(d);
        start = now_usec();
        r = download_run(d);
        running_download = NULL;

        r = report_result(&a, d, r, start);
        d = download_free(d);
        curl_global_cleanup();
        return r;
}
