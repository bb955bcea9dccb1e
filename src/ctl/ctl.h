/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The commands of krtiotctl but `watch` (watch.h): each asks krtiotd on BUS,
 * prints the answer or says why not, and returns the exit status
 * (CTL_EXIT_*, client.h).
 */
#pragma once

#include <stdbool.h>

#include <systemd/sd-bus.h>

/* `krtiotctl status [--json]`. */
int ctl_status(sd_bus *bus, bool json);

/* `krtiotctl report`: ReportNow(); silent on success. */
int ctl_report(sd_bus *bus);

/*
 * `krtiotctl install-now`, `krtiotctl reboot-now`: InstallNow(), RebootNow()
 * (INSTALL false); silent on success. Nothing waiting for that is a failure
 * (CTL_EXIT_FAILURE) with krtiotd's words.
 */
int ctl_release(sd_bus *bus, bool install);
