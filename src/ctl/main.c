/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotctl: the command line and the exit codes; nothing else (ctl.c and
 * watch.c run the commands against krtiotd's D-Bus interface,
 * krtiot-dbus(7)). Exit status (CTL_EXIT_*, client.h):
 *   0   done; for watch, the job succeeded
 *   1   the job failed, or krtiotd refused or failed the call (install-now,
 *       reboot-now: nothing waits for that)
 *   64  bad command line (EX_USAGE)
 *   69  no system bus, or krtiotd is not running (EX_UNAVAILABLE)
 *   77  not allowed (EX_NOPERM)
 *   130, 143  watch interrupted by SIGINT, SIGTERM
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "client.h"
#include "ctl.h"
#include "util/macro.h"
#include "watch.h"

typedef enum Verb {
        VERB_STATUS,
        VERB_WATCH,
        VERB_REPORT,
        VERB_INSTALL_NOW,
        VERB_REBOOT_NOW,
} Verb;

typedef struct Args {
        Verb verb;
        bool json;
        const char *job_id;
} Args;

static void help(void)
{
        printf("Usage: krtiotctl [OPTIONS] [COMMAND]\n"
               "\n"
               "Asks krtiotd, the device agent, what it is doing, over D-Bus (krtiot-dbus(7)).\n"
               "\n"
               "Commands:\n"
               "  status             summary of the agent and its update job (the default)\n"
               "  watch              follow the running update job, or the next one, until it\n"
               "                     ends; exit 0 when it succeeded, 1 when it failed\n"
               "  report             send a version report now (root only)\n"
               "  install-now        the update that waits for its download delay or the\n"
               "                     install window goes on now (root only)\n"
               "  reboot-now         the update that waits for the reboot window reboots\n"
               "                     now (root only)\n"
               "\n"
               "Options:\n"
               "      --json         status: one JSON object, keyed by the D-Bus property names\n"
               "      --job ID       watch: follow the job ID (already ended: its result at once)\n"
               "  -h, --help         print this help and exit\n"
               "      --version      print the version and exit\n"
               "\n"
               "Exit status: 0 ok, 1 failed, 64 usage, 69 no bus or krtiotd not running,\n"
               "77 not allowed; install-now and reboot-now 1 when nothing waits.\n"
               "See krtiotctl(1).\n");
}

_printf_(1, 2) static int usage_error(const char *format, ...)
{
        va_list ap;

        fprintf(stderr, "krtiotctl: ");
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'krtiotctl --help'.\n");
        return -CTL_EXIT_USAGE;
}

static int verb_from_string(const char *s, Verb *ret)
{
        static const char *const names[] = {
                [VERB_STATUS] = "status",
                [VERB_WATCH] = "watch",
                [VERB_REPORT] = "report",
                [VERB_INSTALL_NOW] = "install-now",
                [VERB_REBOOT_NOW] = "reboot-now",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(s, names[i]) == 0) {
                        *ret = (Verb)i;
                        return 0;
                }
        return -EINVAL;
}

/* Returns 1 to go on, 0 to exit successfully, or -CTL_EXIT_USAGE. */
static int parse_argv(int argc, char *argv[], Args *a)
{
        enum {
                ARG_JSON = 0x100,
                ARG_JOB,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "json", no_argument, NULL, ARG_JSON },
                { "job", required_argument, NULL, ARG_JOB },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c;

        /* Options may follow the command (krtiotctl watch --job 42): getopt permutes. */
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case ARG_JSON:
                        a->json = true;
                        break;
                case ARG_JOB:
                        if (!*optarg)
                                return usage_error("--job needs a job ID");
                        a->job_id = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("krtiotctl %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'krtiotctl --help'.\n");
                        return -CTL_EXIT_USAGE;
                }
        }

        if (argc - optind > 1)
                return usage_error("one command at a time: %s %s", argv[optind], argv[optind + 1]);
        a->verb = VERB_STATUS;
        if (optind < argc && verb_from_string(argv[optind], &a->verb) < 0)
                return usage_error("unknown command '%s' (status, watch, report, install-now or reboot-now)", argv[optind]);
        if (a->json && a->verb != VERB_STATUS)
                return usage_error("--json goes with status only");
        if (a->job_id && a->verb != VERB_WATCH)
                return usage_error("--job goes with watch only");
        return 1;
}

int main(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Args a = {};
        int r;

        r = parse_argv(argc, argv, &a);
        if (r <= 0)
                return -r;

        r = client_open(&bus);
        if (r < 0) {
                fprintf(stderr, "Cannot connect to the system bus: %s\n", strerror(-r));
                return CTL_EXIT_UNAVAILABLE;
        }

        switch (a.verb) {
        case VERB_STATUS:
                return ctl_status(bus, a.json);
        case VERB_WATCH:
                return watch_run(bus, a.job_id, isatty(STDOUT_FILENO));
        case VERB_REPORT:
                return ctl_report(bus);
        case VERB_INSTALL_NOW:
        case VERB_REBOOT_NOW:
                return ctl_release(bus, a.verb == VERB_INSTALL_NOW);
        }
        return CTL_EXIT_FAILURE;
}
