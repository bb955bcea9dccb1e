/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Version sources. A version read from a file or from the hook is checked
 * with the same rule the OTA command's target obeys (version_is_valid),
 * so that what the device reports can be compared with what it was told.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/strings.h"
#include "version.h"

#define VERSION_HOOK_TIMEOUT_USEC (60 * USEC_PER_SEC)
#define VERSION_HOOK_OUTPUT_MAX 4096

int version_parse(char *text)
{
        char *nl = strchr(text, '\n');

        if (nl)
                *nl = 0;
        strstrip(text);
        return version_is_valid(text) ? 0 : -EBADMSG;
}

static int version_read(const char *literal, const char *path, char **ret)
{
        _cleanup_free_ char *v = NULL;
        int r;

        if (literal) {
                v = strdup(literal);
                if (!v)
                        return -ENOMEM;
        } else {
                r = read_file_limited(path, VERSION_HOOK_OUTPUT_MAX, &v, NULL);
                if (r < 0)
                        return r;
                r = version_parse(v);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

int version_read_hw(const Config *c, char **ret)
{
        return version_read(c->hw_version, c->hw_version_file, ret);
}

int version_read_fw(const Config *c, char **ret)
{
        if (c->fw_version_from_hook)
                return -EOPNOTSUPP;
        return version_read(c->fw_version, c->fw_version_file, ret);
}

int version_query_hook(sd_event *event, const Config *c, ProcessDone done, void *userdata, Process **ret)
{
        char *argv[] = { c->ota_hook, (char *)"version", NULL };
        ProcessParams params = {
                .argv = argv,
                .log_prefix = "hook version",
                .capture_stdout = true,
                .capture_max = VERSION_HOOK_OUTPUT_MAX,
                .log_max = VERSION_HOOK_OUTPUT_MAX,
                .timeout_usec = VERSION_HOOK_TIMEOUT_USEC,
        };

        return process_spawn(event, &params, done, userdata, ret);
}
