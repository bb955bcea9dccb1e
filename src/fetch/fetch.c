/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One run of krtiot-fetch (fetch.h): what happens between the command line
 * and the exit status. Status lines go to --status-fd only, each in one
 * write() (under PIPE_BUF: krtiotd's reader sees a line whole or not at all);
 * human-readable lines to stderr, with sd-daemon priority prefixes, never
 * with a URL's password.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch-wire.h"
#include "fetch.h"
#include "log.h"
#include "util/macro.h"
#include "util/strings.h"

/* The URL read from standard input ("-"): a line of at most this many bytes. */
#define URL_MAX 8192

/* The download a signal cancels; set while download_run() may run. */
static Download *volatile running_download;
static volatile sig_atomic_t cancel_requested;

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
static int status_write(const FetchOptions *a, const char *line, size_t len)
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
        const FetchOptions *a = userdata;
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
        const FetchOptions *a = userdata;
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
static int report_result(const FetchOptions *a, Download *d, int result, uint64_t start_usec)
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

int fetch_run(FetchOptions *o)
{
        static const DownloadCallbacks callbacks = {
                .progress = on_progress,
                .checkpoint = on_checkpoint,
        };
        _cleanup_(download_freep) Download *d = NULL;
        char url[URL_MAX];
        uint64_t start;
        int r;

        /* The status lines must not leak into whatever libcurl (a resolver helper?) might run. */
        if (o->status_fd >= 0)
                (void)fcntl(o->status_fd, F_SETFD, FD_CLOEXEC);

        r = setup_signals();
        if (r < 0) {
                log_error_errno(r, "Cannot set up signal handlers: %m");
                return FETCH_EXIT_FAILED;
        }

        if (strcmp(o->url_arg, "-") == 0) {
                r = read_url(url);
                if (r == -ECANCELED)
                        return FETCH_EXIT_CANCELLED;
                if (r < 0) {
                        fprintf(stderr, "krtiot-fetch: cannot read the URL from standard input: %s\n",
                                r == -E2BIG ? "longer than 8191 bytes" :
                                r == -ENODATA ? "empty" : strerror(-r));
                        return FETCH_EXIT_USAGE;
                }
                o->params.url = url;
        } else
                o->params.url = o->url_arg;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_error("Cannot initialize libcurl.");
                return FETCH_EXIT_FAILED;
        }
        r = download_new(&o->params, &callbacks, o, &d);
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

        r = report_result(o, d, r, start);
        d = download_free(d);
        curl_global_cleanup();
        return r;
}
