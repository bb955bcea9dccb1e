/* SPDX-License-Identifier: Apache-2.0 */
/* `krtiotctl status`, `report`, `install-now` and `reboot-now` (ctl.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "ctl.h"
#include "format.h"
#include "properties.h"
#include "util/macro.h"

static uint64_t now_realtime(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

int ctl_status(sd_bus *bus, bool json)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *text = NULL;
        Properties p = {};
        int r;

        r = client_get_properties(bus, &p, &error);
        if (r < 0)
                return client_fail(&error, r, "read krtiotd's properties");

        if (json) {
                r = properties_to_json(&p, &text);
                if (r >= 0 && printf("%s\n", text) < 0)
                        r = -EIO;
        } else
                r = format_status(stdout, &p, now_realtime());
        properties_clear(&p);
        if (r >= 0 && fflush(stdout) != 0)
                r = negative_errno();
        if (r < 0) {
                fprintf(stderr, "Failed to print the status: %s\n", strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        return CTL_EXIT_SUCCESS;
}

int ctl_report(sd_bus *bus)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        r = client_report_now(bus, &error);
        if (r >= 0)
                return CTL_EXIT_SUCCESS;
        if (sd_bus_error_has_name(&error, KRTIOT_ERROR_NOT_CONNECTED)) {
                message = format_escape(error.message ? error.message : error.name);
                fprintf(stderr, "krtiotd cannot report now: %s\n", message ? message : error.name);
                return CTL_EXIT_FAILURE;
        }
        return client_fail(&error, r, "ask krtiotd for a version report");
}

int ctl_release(sd_bus *bus, bool install)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        r = client_call(bus, install ? "InstallNow" : "RebootNow", &error);
        if (r >= 0)
                return CTL_EXIT_SUCCESS;
        if (sd_bus_error_has_name(&error, KRTIOT_ERROR_NOT_WAITING)) {
                message = format_escape(error.message ? error.message : error.name);
                fprintf(stderr, "%s\n", message ? message : error.name);
                return CTL_EXIT_FAILURE;
        }
        return client_fail(&error, r, install ? "release the update that waits" : "ask for the reboot now");
}
