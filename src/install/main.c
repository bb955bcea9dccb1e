/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-install: the command line and the exit codes; nothing else.
 *   0   stopped by SIGTERM/SIGINT or the idle timeout, or --version/--help
 *   1   a runtime failure
 *   64  bad command line (EX_USAGE)
 *   78  configuration error (EX_CONFIG)
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "build-config.h"
#include "installer.h"
#include "log.h"
#include "util/macro.h"

#define DEFAULT_RUNTIME_DIR "/run/krtiot-install"
/* Socket-activated: inactive again soon after the last request. */
#define DEFAULT_IDLE_TIMEOUT_SEC 30
#define IDLE_TIMEOUT_MAX_SEC 86400

static const char *arg_config = DEFAULT_CONFIG_FILE;
static const char *arg_listen;
static const char *arg_runtime_dir = DEFAULT_RUNTIME_DIR;
static long arg_idle_timeout = -1; /* -1: the default of the mode */
static bool arg_verbose;

static void help(void)
{
        printf("Usage: krtiot-install [OPTIONS]\n"
               "\n"
               "The root installer of krtiotd: runs the install hook and the reboot command\n"
               "for the agent, which asks on a Unix socket. Started by krtiot-install.socket;\n"
               "logs to stderr.\n"
               "\n"
               "  -c, --config FILE        configuration file (default: %s)\n"
               "      --listen PATH        bind this socket instead of taking systemd's\n"
               "      --runtime-dir DIR    where install outcomes are kept (default: %s)\n"
               "      --idle-timeout SEC   exit after SEC seconds with nothing to do; 0 never\n"
               "                           (default: %d with systemd's socket, 0 with --listen)\n"
               "  -v, --verbose            log at debug level (overrides log_level)\n"
               "      --version            print the version and exit\n"
               "  -h, --help               print this help and exit\n"
               "\n"
               "Exit status: 0 stopped, 1 runtime failure, 64 usage, 78 configuration error.\n"
               "See krtiot-install(8) and krtiot-hooks(7).\n",
               DEFAULT_CONFIG_FILE, DEFAULT_RUNTIME_DIR, DEFAULT_IDLE_TIMEOUT_SEC);
}

static int parse_seconds(const char *s, long *ret)
{
        char *end;
        long v;

        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end || v < 0 || v > IDLE_TIMEOUT_MAX_SEC)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Returns 1 to go on, 0 to exit successfully, or a negative EX_* code. */
static int parse_argv(int argc, char *argv[])
{
        enum { ARG_LISTEN = 0x100, ARG_RUNTIME_DIR, ARG_IDLE_TIMEOUT, ARG_VERSION };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"listen", required_argument, NULL, ARG_LISTEN},
                {"runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR},
                {"idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT},
                {"verbose", no_argument, NULL, 'v'},
                {"version", no_argument, NULL, ARG_VERSION},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_LISTEN:
                        if (optarg[0] != '/') {
                                fprintf(stderr, "--listen needs an absolute path ('%s').\n", optarg);
                                return -EX_USAGE;
                        }
                        arg_listen = optarg;
                        break;
                case ARG_RUNTIME_DIR:
                        if (optarg[0] != '/') {
                                fprintf(stderr, "--runtime-dir needs an absolute path ('%s').\n", optarg);
                                return -EX_USAGE;
                        }
                        arg_runtime_dir = optarg;
                        break;
                case ARG_IDLE_TIMEOUT:
                        if (parse_seconds(optarg, &arg_idle_timeout) < 0) {
                                fprintf(stderr, "--idle-timeout needs seconds, 0..%d ('%s').\n",
                                        IDLE_TIMEOUT_MAX_SEC, optarg);
                                return -EX_USAGE;
                        }
                        break;
                case 'v':
                        arg_verbose = true;
                        break;
                case ARG_VERSION:
                        printf("krtiot-install %s\n", PACKAGE_VERSION);
                        return 0;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'krtiot-install --help'.\n");
                        return -EX_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "krtiot-install takes no arguments ('%s'). Try 'krtiot-install --help'.\n",
                        argv[optind]);
                return -EX_USAGE;
        }
        return 1;
}

int main(int argc, char *argv[])
{
        _cleanup_(installer_freep) Installer *installer = NULL;
        InstallerParams params;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return -r;
        if (arg_verbose)
                log_set_max_level(LOG_DEBUG);

        /* With --listen nothing would start us again: the default is to stay. */
        if (arg_idle_timeout < 0)
                arg_idle_timeout = arg_listen ? 0 : DEFAULT_IDLE_TIMEOUT_SEC;
        params = (InstallerParams){
                .config_path = arg_config,
                .listen_path = arg_listen,
                .runtime_dir = arg_runtime_dir,
                .idle_usec = (uint64_t)arg_idle_timeout * USEC_PER_SEC,
                .verbose = arg_verbose,
        };

        r = installer_new(&params, &installer);
        if (r == -EINVAL) {
                log_error("%s: configuration refused.", arg_config);
                return EX_CONFIG;
        }
        if (r < 0)
                return EXIT_FAILURE;

        r = installer_run(installer);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
