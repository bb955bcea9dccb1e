/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotd's properties: one table (name, D-Bus type, field), read from a{sv}
 * and written as JSON. Nothing else in krtiotctl spells a property's name.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <json-c/json.h>

#include "properties.h"
#include "util/macro.h"

typedef struct PropertyInfo {
        const char *name;
        char type; /* 's', 'b', 'u' or 't' */
        size_t offset;
} PropertyInfo;

/* krtiot-dbus(7), PROPERTIES, in its order. */
static const PropertyInfo property_table[] = {
        { "State", 's', offsetof(Properties, state) },
        { "Registered", 'b', offsetof(Properties, registered) },
        { "Connected", 'b', offsetof(Properties, connected) },
        { "Broker", 's', offsetof(Properties, broker) },
        { "ProductId", 's', offsetof(Properties, product_id) },
        { "DeviceId", 's', offsetof(Properties, device_id) },
        { "HardwareVersion", 's', offsetof(Properties, hardware_version) },
        { "FirmwareVersion", 's', offsetof(Properties, firmware_version) },
        { "LastReport", 't', offsetof(Properties, last_report) },
        { "JobId", 's', offsetof(Properties, job_id) },
        { "JobTargetVersion", 's', offsetof(Properties, job_target_version) },
        { "JobPhase", 's', offsetof(Properties, job_phase) },
        { "JobProgress", 'u', offsetof(Properties, job_progress) },
        { "JobBytesDone", 't', offsetof(Properties, job_bytes_done) },
        { "JobBytesTotal", 't', offsetof(Properties, job_bytes_total) },
        { "LastError", 's', offsetof(Properties, last_error) },
        { "LastJobResult", 's', offsetof(Properties, last_job_result) },
        { "StatusText", 's', offsetof(Properties, status_text) },
        { "WaitingFor", 's', offsetof(Properties, waiting_for) },
        { "WaitingUntil", 't', offsetof(Properties, waiting_until) },
};

const char *properties_name(size_t i)
{
        return i < ELEMENTSOF(property_table) ? property_table[i].name : NULL;
}

static const PropertyInfo *property_find(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(property_table); i++)
                if (strcmp(property_table[i].name, name) == 0)
                        return &property_table[i];
        return NULL;
}

void properties_clear(Properties *p)
{
        for (size_t i = 0; i < ELEMENTSOF(property_table); i++)
                if (property_table[i].type == 's')
                        free(*(char **)((char *)p + property_table[i].offset));
        *p = (Properties){};
}

int properties_set(Properties *p, const char *name, char type, const void *value)
{
        const PropertyInfo *info = property_find(name);
        void *field;

        if (!info || info->type != type)
                return 0;
        field = (char *)p + info->offset;
        switch (type) {
        case 's':
                if (free_and_strdup(field, *(const char *const *)value) < 0)
                        return -ENOMEM;
                break;
        case 'b':
                *(bool *)field = *(const int *)value != 0;
                break;
        case 'u':
                *(uint32_t *)field = *(const uint32_t *)value;
                break;
        case 't':
                *(uint64_t *)field = *(const uint64_t *)value;
                break;
        default:
                return 0;
        }
        return 1;
}

/* Reads one {sv} entry; M is inside the entry. Returns 1 when a property was set, 0 when skipped. */
static int property_read_entry(Properties *p, sd_bus_message *m)
{
        const PropertyInfo *info;
        const char *name, *contents;
        union {
                const char *s;
                int b;
                uint32_t u;
                uint64_t t;
        } v = {};
        const void *value;
        char type, sig[2];
        int r;

        r = sd_bus_message_read_basic(m, 's', &name);
        if (r < 0)
                return r;
        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type != SD_BUS_TYPE_VARIANT)
                return -EBADMSG;

        info = property_find(name);
        if (!info || contents[0] != info->type || contents[1] != '\0') {
                r = sd_bus_message_skip(m, "v");
                return r < 0 ? r : 0;
        }

        sig[0] = info->type;
        sig[1] = '\0';
        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, sig);
        if (r < 0)
                return r;
        switch (info->type) {
        case 's':
                r = sd_bus_message_read_basic(m, 's', &v.s);
                value = &v.s;
                break;
        case 'b':
                r = sd_bus_message_read_basic(m, 'b', &v.b);
                value = &v.b;
                break;
        case 'u':
                r = sd_bus_message_read_basic(m, 'u', &v.u);
                value = &v.u;
                break;
        default:
                r = sd_bus_message_read_basic(m, 't', &v.t);
                value = &v.t;
                break;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return properties_set(p, name, info->type, value);
}

int properties_read(Properties *p, sd_bus_message *m)
{
        int r, n = 0;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
        if (r < 0)
                return r;
        if (r == 0)
                return -EBADMSG;
        for (;;) {
                r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = property_read_entry(p, m);
                if (r < 0)
                        return r;
                n += r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return n;
}

static void json_object_putp(json_object **o)
{
        json_object_put(*o);
}

int properties_to_json(const Properties *p, char **ret)
{
        _cleanup_(json_object_putp) json_object *root = NULL;
        const char *text;
        char *s;

        root = json_object_new_object();
        if (!root)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(property_table); i++) {
                const PropertyInfo *info = &property_table[i];
                const void *field = (const char *)p + info->offset;
                json_object *v = NULL;

                switch (info->type) {
                case 's': {
                        const char *str = *(const char *const *)field;

                        v = json_object_new_string(str ? str : "");
                        break;
                }
                case 'b':
                        v = json_object_new_boolean(*(const bool *)field);
                        break;
                case 'u':
                        v = json_object_new_uint64(*(const uint32_t *)field);
                        break;
                case 't':
                        v = json_object_new_uint64(*(const uint64_t *)field);
                        break;
                }
                if (!v)
                        return -ENOMEM;
                if (json_object_object_add(root, info->name, v) < 0) {
                        json_object_put(v);
                        return -ENOMEM;
                }
        }

        text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text)
                return -ENOMEM;
        s = strdup(text);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
