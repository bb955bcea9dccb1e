/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for protocol_parse(): any MQTT payload. Beyond "no crash,
 * no leak, no undefined behaviour" it checks the contract of protocol.h: on
 * failure *ret owns nothing; on success the message holds an ID within its
 * limits (longer only when refused), a refused message holds nothing but its
 * CMD and ID, and a receipt the device builds from that ID is strict UTF-8
 * JSON that parses back to the same command and ID (the device must never
 * write something its own reader refuses).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_echo(const char *id, int (*build)(const char *, char **), int cmd)
{
        PlatformMessage back;
        char *text = NULL;

        if (build(id, &text) < 0)
                abort();
        /* A refused over-long ID full of escapes can make a receipt larger than anything we read. */
        if (strlen(text) > PROTOCOL_MAX_PAYLOAD && strlen(id) > PROTOCOL_MAX_ID) {
                free(text);
                return;
        }
        if (protocol_parse(text, strlen(text), &back) != 0 || back.cmd != cmd || !back.id ||
            strcmp(back.id, id) != 0)
                abort(); /* the device wrote a receipt it cannot read back */
        platform_message_clear(&back);
        free(text);
}

static int ota_ok_receipt(const char *id, char **ret)
{
        return protocol_ota_receipt(id, true, NULL, ret);
}

static int ota_fail_receipt(const char *id, char **ret)
{
        return protocol_ota_receipt(id, false, "URL must be a string", ret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        PlatformMessage m;
        int r;

        memset(&m, 0x5a, sizeof(m)); /* protocol_parse must overwrite all of it */
        r = protocol_parse(data, size, &m);
        if (r < 0) {
                if (r != -EMSGSIZE && r != -EBADMSG && r != -ENOMSG && r != -ERANGE && r != -ENOMEM)
                        abort();
                if (m.id || m.url || m.fw_version || m.md5 || m.sha256 || m.device_secret || m.has_size ||
                    m.invalid)
                        abort(); /* "On failure *ret is zeroed and owns nothing" */
                return 0;
        }
        if (r != 0 || size > PROTOCOL_MAX_PAYLOAD || !m.id || !*m.id)
                abort();
        if (m.invalid) {
                /* Refused: its CMD (or CMD_NONE) and its ID, to answer, and nothing else. */
                if (!*m.invalid || (m.cmd < 0 && m.cmd != CMD_NONE) || m.url || m.fw_version || m.md5 ||
                    m.sha256 || m.device_secret || m.has_size || m.size != 0)
                        abort();
                check_echo(m.id, ota_fail_receipt, CMD_OTA);
                platform_message_clear(&m);
                return 0;
        }
        if (m.cmd < 0 || strlen(m.id) > PROTOCOL_MAX_ID)
                abort(); /* only a refused message may have these */
        if ((m.url && strlen(m.url) > PROTOCOL_MAX_FIELD) ||
            (m.fw_version && strlen(m.fw_version) > PROTOCOL_MAX_FIELD) ||
            (m.device_secret && !*m.device_secret) || (!m.has_size && m.size != 0))
                abort();

        check_echo(m.id, ota_ok_receipt, CMD_OTA);
        check_echo(m.id, protocol_register_receipt, CMD_REGISTER_SECRET);

        platform_message_clear(&m);
        if (m.id || m.device_secret)
                abort();
        return 0;
}
