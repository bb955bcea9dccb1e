/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Version sources. A version read from a file or from the hook is checked
 * with the same rule the OTA command's target obeys (version_is_valid),
 * so that what the device reports can be compared with what it was told:
 * here for files, by the installer and the wire's parser for the hook.
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

#define VERSION_FILE_MAX 4096

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
                r = read_file_limited(path, VERSION_FILE_MAX, &v, NULL);
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

int version_query_installer(sd_event *event, const Config *c, InstallCallDone done, void *userdata,
                            InstallCall **ret)
{
        InstallRequest req = { .op = INSTALL_OP_VERSION };

        return install_call_new(event, c->ota_installer_socket, &req,
                                install_call_timeout(c->ota_hook_timeout), done, userdata, ret);
}

const char *version_from_answer(int error, const InstallAnswer *answer, const char *reason,
                                const char **ret_why)
{
        if (error < 0)
                *ret_why = reason;
        else if (answer->type == INSTALL_ANSWER_VERSION)
                return answer->version;
        else if (answer->type == INSTALL_ANSWER_REFUSED || answer->type == INSTALL_ANSWER_DONE)
                *ret_why = answer->reason ? answer->reason : "the installer gave no reason";
        else
                *ret_why = "the installer's answer is not a version";
        return NULL;
}
