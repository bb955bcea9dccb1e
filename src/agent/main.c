/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotd: the command line and the exit codes; nothing else.
 *   0   stopped by SIGTERM/SIGINT, or --check-config/--version/--help
 *   1   a runtime failure (systemd restarts the unit)
 *   64  bad command line (EX_USAGE)
 *   78  configuration error (EX_CONFIG; the unit does not restart on it)
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <mosquitto.h>

#include "agent.h"
#include "build-config.h"
#include "config.h"
#include "log.h"
#include "util/macro.h"

static const char *arg_config = DEFAULT_CONFIG_FILE;
static bool arg_check_config;
static bool arg_verbose;

static void help(void)
{
        printf("Usage: krtiotd [OPTIONS]\n"
               "\n"
               "The device agent of the KRT IoT platform: registers the device, reports its\n"
               "hardware and firmware versions, and installs firmware updates (OTA).\n"
               "Runs in the foreground and logs to stderr; systemd runs it as krtiot.service.\n"
               "\n"
               "  -c, --config FILE   configuration file (default: %s)\n"
               "      --check-config  validate the configuration, print a summary, and exit\n"
               "  -v, --verbose       log at debug level (overrides log_level)\n"
               "      --version       print the version and exit\n"
               "  -h, --help          print this help and exit\n"
               "\n"
               "Signals: SIGHUP reloads the configuration; SIGTERM and SIGINT stop cleanly.\n"
               "Exit status: 0 stopped cleanly, 1 runtime failure, 64 usage, 78 configuration error.\n"
               "See krtiotd(8) and krtiot.conf(5).\n",
               DEFAULT_CONFIG_FILE);
}

/* Returns 1 to go on, 0 to exit successfully, or a negative EX_* code. */
static int parse_argv(int argc, char *argv[])
{
        enum { ARG_CHECK_CONFIG = 0x100, ARG_VERSION };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "verbose", no_argument, NULL, 'v' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case 'v':
                        arg_verbose = true;
                        break;
                case ARG_VERSION:
                        printf("krtiotd %s\n", PACKAGE_VERSION);
                        return 0;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'krtiotd --help'.\n");
                        return -EX_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "krtiotd takes no arguments ('%s'). Try 'krtiotd --help'.\n", argv[optind]);
                return -EX_USAGE;
        }
        return 1;
}

static const char *id_source_name(const Config *c)
{
        switch (c->device_id_source) {
        case ID_SOURCE_MACHINE_ID:
                return "machine-id";
        case ID_SOURCE_FILE:
                return "file";
        case ID_SOURCE_MAC:
                return "MAC address";
        default:
                return "configuration";
        }
}

int main(int argc, char *argv[])
{
        Config *config = NULL;
        Agent *agent = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return -r;
        if (arg_verbose)
                log_set_max_level(LOG_DEBUG);

        r = agent_load_config(arg_config, &config);
        if (r < 0) {
                log_error("%s: configuration refused.", arg_config);
                return EX_CONFIG;
        }

        if (arg_check_config) {
                printf("%s: configuration OK\n"
                       "  broker    %s (client id %s)\n"
                       "  product   %s\n"
                       "  device    %s (from the %s)\n"
                       "  state dir %s\n"
                       "  OTA hook  %s\n",
                       arg_config, config->mqtt_uri, config->mqtt_client_id, config->product_id,
                       config->device_id, id_source_name(config), config->state_dir, config->ota_hook);
                config_unref(config);
                return 0;
        }
        if (!arg_verbose)
                log_set_max_level(config->log_level);

        mosquitto_lib_init();

        r = agent_new(arg_config, config, &agent);
        config = config_unref(config); /* the Agent holds its own reference */
        if (r < 0)
                log_error_errno(r, "Cannot start: %m");
        else
                r = agent_run(agent);

        agent_free(agent);
        mosquitto_lib_cleanup();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
