/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-fetch: the command line and the exit codes; nothing else (fetch.c
 * runs the download, download.c does the work). krtiotd starts it for the
 * length of a download (SPEC 9, fetch-wire.h); by hand it is a way to debug
 * a URL on a device. Exit status (FETCH_EXIT_*):
 *   0   the file is complete and verified
 *   1   the download failed (the reason is logged, and in the result line)
 *   2   cancelled by SIGTERM or SIGINT (after a last checkpoint)
 *   64  bad command line (EX_USAGE)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "fetch.h"
#include "fetch-wire.h"
#include "log.h"
#include "util/macro.h"

typedef struct Args {
        FetchOptions o;
        int log_level;
} Args;

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
        DownloadParams *p = &a->o.params;
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
                        a->o.status_fd = (int)fd;
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
        a->o.url_arg = argv[optind];
        p->part_path = argv[optind + 1];
        if (!*p->part_path)
                return usage_error("the FILE is empty");
        return 1;
}

int main(int argc, char *argv[])
{
        Args a = {
                .o = {
                        .params = {
                                .retries = 3,
                                .max_redirects = 5,
                                .user_agent = "krtiot-fetch/" PACKAGE_VERSION,
                        },
                        .status_fd = -1,
                },
                .log_level = LOG_INFO,
        };
        int r;

        r = parse_argv(argc, argv, &a);
        if (r <= 0)
                return -r;
        if (!a.o.url_arg || !a.o.params.part_path) /* parse_argv() returned 1: both are set */
                return FETCH_EXIT_USAGE;
        log_set_max_level(a.log_level);
        return fetch_run(&a.o);
}
