/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `krtiotctl watch`: follows a job of krtiotd live, in an sd-event loop on
 * the bus, until it ends. follow.h decides which job and how it ended;
 * format.h writes the lines; this file owns the subscriptions, the order of
 * events, and the terminal.
 *
 * No change is lost at the start: the matches (PropertiesChanged,
 * JobFinished, NameOwnerChanged) are asked for before GetAll, and all of it
 * asynchronously, so the bus handles AddMatch first and everything arrives
 * in the order it happened: signals sent before the GetAll reply are applied
 * first and then overwritten by the whole record.
 */
#pragma once

#include <stdbool.h>

#include <systemd/sd-bus.h>

/*
 * Follows the job JOB_ID (NULL: the running one, else the next one) on BUS
 * until it ends. TTY: standard output is a terminal (one redrawn line)
 * rather than a pipe or a file (a line per change). Returns the exit
 * status: CTL_EXIT_SUCCESS, CTL_EXIT_FAILURE (the job failed), or another
 * CTL_EXIT_* (client.h) for a failure on the bus; 128 + the signal for
 * SIGINT and SIGTERM.
 */
int watch_run(sd_bus *bus, const char *job_id, bool tty);
