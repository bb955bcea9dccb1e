/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-fetch: runs one Download (src/agent/download.c) in an sd-event loop and
 * prints what happens as JSON lines on stdout, for the integration tests and
 * benchmarks. Exit status: 0 success, 1 failure, 2 cancelled (--cancel-after,
 * SIGINT, SIGTERM), 64 usage.
 */

#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <time.h>

#include "download.h"
#include "log.h"
#include "util/macro.h"

typedef struct Fetch {
        sd_event *event;
        Download *download;
        uint64_t cancel_after; /* UINT64_MAX: never */
        uint64_t start_usec;
        int exit_status;
} Fetch;

static void print_json_string(const char *s)
{
        if (!s) {
                fputs("null", stdout);
                return;
        }
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c < 0x20 || c == 0x7f)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}

static uint64_t now_usec(void)
{
        struct timespec ts;

        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static long ru_maxrss_kib(void)
{
        struct rusage ru = {};

        (void)getrusage(RUSAGE_SELF, &ru);
        return ru.ru_maxrss;
}

/*
 * Peak RSS of this program: VmHWM. ru_maxrss survives execve(), so when we
 * are started by a big process (pytest) it reports the parent's size before
 * exec and hides ours; it is printed too, but only VmHWM means anything.
 */
static long peak_rss_kib(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long kib;

        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
                        return kib;
        return ru_maxrss_kib();
}

/* Frees the download from inside one of its callbacks: what a caller replacing a job does. */
static void fetch_cancel(Fetch *f, const char *why)
{
        uint64_t fetched = download_get_bytes_fetched(f->download);

        f->download = download_free(f->download);
        printf("{\"event\":\"cancelled\",\"why\":");
        print_json_string(why);
        printf(",\"bytes_fetched\":%" PRIu64 ",\"peak_rss_kib\":%ld}\n", fetched, peak_rss_kib());
        fflush(stdout);
        f->exit_status = 2;
        (void)sd_event_exit(f->event, 0);
}

static void on_progress(Download *d, uint64_t done, uint64_t total, void *userdata)
{
        Fetch *f = userdata;

        printf("{\"event\":\"progress\",\"done\":%" PRIu64 ",\"total\":%" PRIu64 "}\n", done, total);
        fflush(stdout);
        if (done >= f->cancel_after)
                fetch_cancel(f, "progress");
}

static void on_checkpoint(Download *d, const DownloadCheckpoint *c, void *userdata)
{
        Fetch *f = userdata;

        printf("{\"event\":\"checkpoint\",\"offset\":%" PRIu64 ",\"etag\":", c->offset);
        print_json_string(c->etag);
        printf(",\"last_modified\":");
        print_json_string(c->last_modified);
        printf(",\"bytes_fetched\":%" PRIu64 "}\n", c->bytes_fetched);
        fflush(stdout);
        if (c->offset >= f->cancel_after)
                fetch_cancel(f, "checkpoint");
}

static void on_done(Download *d, int result, const char *reason, void *userdata)
{
        Fetch *f = userdata;
        double secs = (double)(now_usec() - f->start_usec) / 1e6;
        uint64_t fetched = download_get_bytes_fetched(d);

        printf("{\"event\":\"done\",\"result\":%d,\"reason\":", result);
        print_json_string(reason);
        printf(",\"sha256\":");
        print_json_string(download_get_sha256(d));
        printf(",\"bytes_fetched\":%" PRIu64 ",\"attempts\":%u,\"elapsed_s\":%.3f,\"mib_per_s\":%.1f,"
               "\"peak_rss_kib\":%ld,\"ru_maxrss_kib\":%ld}\n",
               fetched, download_get_attempts(d), secs,
               secs > 0 ? (double)fetched / secs / (1024 * 1024) : 0.0, peak_rss_kib(), ru_maxrss_kib());
        fflush(stdout);
        f->exit_status = result < 0 ? 1 : 0;
        f->download = download_free(f->download);
        (void)sd_event_exit(f->event, 0);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        fetch_cancel(userdata, "signal");
        return 0;
}

static void help(void)
{
        printf("Usage: krtiot-fetch [OPTIONS] URL PARTFILE\n"
               "  --offset N --etag E --last-modified L   resume state\n"
               "  --bytes-fetched N     bytes fetched for this job by earlier runs\n"
               "  --size N --md5 HEX --sha256 HEX          expectations\n"
               "  --max-size N --rate-limit BYTES/S --stall-timeout S --connect-timeout S\n"
               "  --retries N --retry-delay-ms N --retry-max-ms N --max-redirects N --ca-file F\n"
               "  --cancel-after N      free the download from the first progress/checkpoint\n"
               "                        callback that sees N bytes (tests cancellation)\n"
               "  --verbose             debug logging on stderr\n");
}

static int parse_u64_arg(const char *s, uint64_t *ret)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end || *s == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

int main(int argc, char *argv[])
{
        enum {
                ARG_OFFSET = 0x100,
                ARG_ETAG,
                ARG_LAST_MODIFIED,
                ARG_BYTES_FETCHED,
                ARG_SIZE,
                ARG_MD5,
                ARG_SHA256,
                ARG_MAX_SIZE,
                ARG_RATE_LIMIT,
                ARG_STALL_TIMEOUT,
                ARG_CONNECT_TIMEOUT,
                ARG_RETRIES,
                ARG_RETRY_DELAY_MS,
                ARG_RETRY_MAX_MS,
                ARG_MAX_REDIRECTS,
                ARG_CA_FILE,
                ARG_CANCEL_AFTER,
                ARG_VERBOSE,
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"offset", required_argument, NULL, ARG_OFFSET},
                {"etag", required_argument, NULL, ARG_ETAG},
                {"last-modified", required_argument, NULL, ARG_LAST_MODIFIED},
                {"bytes-fetched", required_argument, NULL, ARG_BYTES_FETCHED},
                {"size", required_argument, NULL, ARG_SIZE},
                {"md5", required_argument, NULL, ARG_MD5},
                {"sha256", required_argument, NULL, ARG_SHA256},
                {"max-size", required_argument, NULL, ARG_MAX_SIZE},
                {"rate-limit", required_argument, NULL, ARG_RATE_LIMIT},
                {"stall-timeout", required_argument, NULL, ARG_STALL_TIMEOUT},
                {"connect-timeout", required_argument, NULL, ARG_CONNECT_TIMEOUT},
                {"retries", required_argument, NULL, ARG_RETRIES},
                {"retry-delay-ms", required_argument, NULL, ARG_RETRY_DELAY_MS},
                {"retry-max-ms", required_argument, NULL, ARG_RETRY_MAX_MS},
                {"max-redirects", required_argument, NULL, ARG_MAX_REDIRECTS},
                {"ca-file", required_argument, NULL, ARG_CA_FILE},
                {"cancel-after", required_argument, NULL, ARG_CANCEL_AFTER},
                {"verbose", no_argument, NULL, ARG_VERBOSE},
                {},
        };
        DownloadParams p = {
                .retries = 3,
                .max_redirects = 5,
        };
        static const DownloadCallbacks callbacks = {
                .progress = on_progress,
                .checkpoint = on_checkpoint,
                .done = on_done,
        };
        Fetch f = {
                .cancel_after = UINT64_MAX,
                .exit_status = 1,
        };
        sigset_t mask;
        uint64_t v;
        int c, r, idx = 0;

        log_set_max_level(LOG_INFO);
        while ((c = getopt_long(argc, argv, "h", options, &idx)) >= 0) {
                if (c == 'h') {
                        help();
                        return 0;
                }
                if (c == ARG_ETAG)
                        p.etag = optarg;
                else if (c == ARG_LAST_MODIFIED)
                        p.last_modified = optarg;
                else if (c == ARG_MD5)
                        p.expected_md5 = optarg;
                else if (c == ARG_SHA256)
                        p.expected_sha256 = optarg;
                else if (c == ARG_CA_FILE)
                        p.ca_file = optarg;
                else if (c == ARG_VERBOSE)
                        log_set_max_level(LOG_DEBUG);
                else if (c >= ARG_OFFSET && c <= ARG_CANCEL_AFTER) {
                        if (parse_u64_arg(optarg, &v) < 0) {
                                fprintf(stderr, "Invalid number for --%s: %s\n", options[idx].name, optarg);
                                return 64;
                        }
                        switch (c) {
                        case ARG_OFFSET:
                                p.resume_offset = v;
                                break;
                        case ARG_BYTES_FETCHED:
                                p.bytes_fetched = v;
                                break;
                        case ARG_SIZE:
                                p.expected_size = v;
                                break;
                        case ARG_MAX_SIZE:
                                p.max_image_size = v;
                                break;
                        case ARG_RATE_LIMIT:
                                p.rate_limit = v;
                                break;
                        case ARG_STALL_TIMEOUT:
                                p.stall_timeout_sec = (unsigned)MIN(v, (uint64_t)UINT32_MAX);
                                break;
                        case ARG_CONNECT_TIMEOUT:
                                p.connect_timeout_sec = (unsigned)MIN(v, (uint64_t)UINT32_MAX);
                                break;
                        case ARG_RETRIES:
                                p.retries = (unsigned)MIN(v, (uint64_t)UINT32_MAX);
                                break;
                        case ARG_RETRY_DELAY_MS:
                                p.retry_initial_usec = v * USEC_PER_MSEC;
                                break;
                        case ARG_RETRY_MAX_MS:
                                p.retry_max_usec = v * USEC_PER_MSEC;
                                break;
                        case ARG_MAX_REDIRECTS:
                                p.max_redirects = (unsigned)MIN(v, (uint64_t)UINT32_MAX);
                                break;
                        case ARG_CANCEL_AFTER:
                                f.cancel_after = v;
                                break;
                        }
                } else {
                        help();
                        return 64;
                }
        }
        if (argc - optind != 2) {
                help();
                return 64;
        }
        p.url = argv[optind];
        p.part_path = argv[optind + 1];
        p.user_agent = "krtiot-fetch";

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_error("Failed to initialize libcurl.");
                return 1;
        }

        r = sd_event_default(&f.event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate event loop: %m");
                return 1;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        (void)sigprocmask(SIG_BLOCK, &mask, NULL);
        if (sd_event_add_signal(f.event, NULL, SIGINT, on_signal, &f) < 0 ||
            sd_event_add_signal(f.event, NULL, SIGTERM, on_signal, &f) < 0) {
                log_error("Failed to watch signals.");
                return 1;
        }

        f.start_usec = now_usec();
        r = download_new(f.event, &p, &callbacks, &f, &f.download);
        if (r < 0) {
                log_error_errno(r, "Failed to start the download: %m");
                return 1;
        }
        r = sd_event_loop(f.event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");

        f.download = download_free(f.download);
        f.event = sd_event_unref(f.event);
        curl_global_cleanup();
        return r < 0 ? 1 : f.exit_status;
}
