/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration file: the only place that touches libconfig. A load is
 * one Loader: the file is read (bounded, a regular file), scanned for what
 * libconfig gets wrong (@include, an unclosed comment), parsed, walked once
 * in file order (every setting must be a known key of the right type and
 * range, stored through the key table below), then resolved (URI, secret,
 * device ID, client id, reboot command) and checked against the system (the
 * state directory and the hook exist, defaults included). Every problem is
 * collected, not only the first, and printed sorted by line. A Config is
 * only handed out when there was none: the rest of the daemon never sees a
 * half-valid one.
 *
 * No message ever quotes the value of product.secret, nor mqtt.uri (which
 * may hold a password), and the copies of the secret that pass through here
 * (file text, parse tree) are erased.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* asprintf, vasprintf, secure_getenv */
#endif

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "build-config.h"
#include "config.h"
#include "log.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/strings.h"

#define CLIENT_ID_MAX 128
#define SECRET_MAX 4096
#define IFNAME_MAX 15 /* IFNAMSIZ - 1 */
#define MACHINE_ID_FILE "/etc/machine-id"
#define ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
#define ID_RULE "1..64 characters of A-Z a-z 0-9 . _ : -"
#define HEX_DIGITS "0123456789abcdefABCDEF"

typedef enum KeyId {
        K_STATE_DIR,
        K_LOG_LEVEL,
        K_MQTT_URI,
        K_MQTT_CLIENT_ID,
        K_MQTT_KEEPALIVE,
        K_MQTT_RECONNECT_MAX,
        K_MQTT_CA_FILE,
        K_PRODUCT_ID,
        K_PRODUCT_SECRET,
        K_PRODUCT_SECRET_FILE,
        K_DEVICE_ID,
        K_DEVICE_ID_FROM,
        K_DEVICE_HW_VERSION,
        K_DEVICE_HW_VERSION_FILE,
        K_DEVICE_FW_VERSION,
        K_DEVICE_FW_VERSION_FILE,
        K_DEVICE_FW_VERSION_FROM_HOOK,
        K_REPORT_INTERVAL,
        K_REGISTRATION_TIMEOUT,
        K_OTA_HOOK,
        K_OTA_DOWNLOAD_DIR,
        K_OTA_REBOOT_COMMAND,
        K_OTA_REPORT_PROGRESS,
        K_OTA_HOOK_TIMEOUT,
        K_OTA_MAX_IMAGE_SIZE,
        K_OTA_RATE_LIMIT,
        K_OTA_STALL_TIMEOUT,
        K_OTA_CONNECT_TIMEOUT,
        K_OTA_RETRIES,
        K_OTA_MAX_REDIRECTS,
        K_OTA_CA_FILE,
        K_OTA_INSTALLER_SOCKET,
        K_OTA_INSTALL_WINDOW,
        K_OTA_REBOOT_WINDOW,
        K_OTA_DOWNLOAD_DELAY_MAX,
        _K_MAX,
} KeyId;

/* Indexed by KeyId; the names of the keys table below. */
const char *const config_known_keys[] = {
        [K_STATE_DIR] = "state_dir",
        [K_LOG_LEVEL] = "log_level",
        [K_MQTT_URI] = "mqtt.uri",
        [K_MQTT_CLIENT_ID] = "mqtt.client_id",
        [K_MQTT_KEEPALIVE] = "mqtt.keepalive",
        [K_MQTT_RECONNECT_MAX] = "mqtt.reconnect_max",
        [K_MQTT_CA_FILE] = "mqtt.ca_file",
        [K_PRODUCT_ID] = "product.id",
        [K_PRODUCT_SECRET] = "product.secret",
        [K_PRODUCT_SECRET_FILE] = "product.secret_file",
        [K_DEVICE_ID] = "device.id",
        [K_DEVICE_ID_FROM] = "device.id_from",
        [K_DEVICE_HW_VERSION] = "device.hw_version",
        [K_DEVICE_HW_VERSION_FILE] = "device.hw_version_file",
        [K_DEVICE_FW_VERSION] = "device.fw_version",
        [K_DEVICE_FW_VERSION_FILE] = "device.fw_version_file",
        [K_DEVICE_FW_VERSION_FROM_HOOK] = "device.fw_version_from_hook",
        [K_REPORT_INTERVAL] = "report.interval",
        [K_REGISTRATION_TIMEOUT] = "registration.timeout",
        [K_OTA_HOOK] = "ota.hook",
        [K_OTA_DOWNLOAD_DIR] = "ota.download_dir",
        [K_OTA_REBOOT_COMMAND] = "ota.reboot_command",
        [K_OTA_REPORT_PROGRESS] = "ota.report_progress",
        [K_OTA_HOOK_TIMEOUT] = "ota.hook_timeout",
        [K_OTA_MAX_IMAGE_SIZE] = "ota.max_image_size",
        [K_OTA_RATE_LIMIT] = "ota.rate_limit",
        [K_OTA_STALL_TIMEOUT] = "ota.stall_timeout",
        [K_OTA_CONNECT_TIMEOUT] = "ota.connect_timeout",
        [K_OTA_RETRIES] = "ota.retries",
        [K_OTA_MAX_REDIRECTS] = "ota.max_redirects",
        [K_OTA_CA_FILE] = "ota.ca_file",
        [K_OTA_INSTALLER_SOCKET] = "ota.installer_socket",
        [K_OTA_INSTALL_WINDOW] = "ota.install_window",
        [K_OTA_REBOOT_WINDOW] = "ota.reboot_window",
        [K_OTA_DOWNLOAD_DELAY_MAX] = "ota.download_delay_max",
        [_K_MAX] = NULL,
};
_Static_assert(ELEMENTSOF(config_known_keys) == _K_MAX + 1, "config_known_keys out of step with KeyId");

typedef enum KeyType {
        KEY_UNDEFINED, /* a hole in the table: a bug */
        KEY_STRING,
        KEY_PATH, /* a string that must be an absolute path */
        KEY_BOOL,
        KEY_INT, /* libconfig int or int64, stored as unsigned or uint64_t */
        KEY_WINDOW, /* an array or list of window entries (window.h), stored as a Window * */
} KeyType;

#define NO_FIELD SIZE_MAX /* checked here, interpreted by a resolver below */

typedef struct Key {
        KeyType type;
        size_t offset; /* into Config, or NO_FIELD */
        size_t size;
        long long min, max;
} Key;

#define FIELD(f) offsetof(Config, f), sizeof(((Config *)NULL)->f)
#define STRING(f) { KEY_STRING, FIELD(f) }
#define PATH(f) { KEY_PATH, FIELD(f) }
#define BOOL(f) { KEY_BOOL, FIELD(f) }
#define INT(f, lo, hi) { KEY_INT, FIELD(f), lo, hi }
#define WINDOW(f) { KEY_WINDOW, offsetof(Config, f) } /* a Window *: no size needed */

static const Key keys[_K_MAX] = {
        [K_STATE_DIR] = PATH(state_dir),
        [K_LOG_LEVEL] = { KEY_STRING, NO_FIELD },
        [K_MQTT_URI] = STRING(mqtt_uri),
        [K_MQTT_CLIENT_ID] = { KEY_STRING, NO_FIELD },
        [K_MQTT_KEEPALIVE] = INT(mqtt_keepalive, 5, 65535),
        [K_MQTT_RECONNECT_MAX] = INT(mqtt_reconnect_max, 1, 86400),
        [K_MQTT_CA_FILE] = PATH(mqtt_ca_file),
        [K_PRODUCT_ID] = STRING(product_id),
        [K_PRODUCT_SECRET] = STRING(product_secret),
        [K_PRODUCT_SECRET_FILE] = { KEY_PATH, NO_FIELD },
        [K_DEVICE_ID] = STRING(device_id),
        [K_DEVICE_ID_FROM] = { KEY_STRING, NO_FIELD },
        [K_DEVICE_HW_VERSION] = STRING(hw_version),
        [K_DEVICE_HW_VERSION_FILE] = PATH(hw_version_file),
        [K_DEVICE_FW_VERSION] = STRING(fw_version),
        [K_DEVICE_FW_VERSION_FILE] = PATH(fw_version_file),
        [K_DEVICE_FW_VERSION_FROM_HOOK] = BOOL(fw_version_from_hook),
        [K_REPORT_INTERVAL] = INT(report_interval, 1, 604800),
        [K_REGISTRATION_TIMEOUT] = INT(registration_timeout, 1, 3600),
        [K_OTA_HOOK] = PATH(ota_hook),
        [K_OTA_DOWNLOAD_DIR] = PATH(ota_download_dir),
        [K_OTA_REBOOT_COMMAND] = { KEY_STRING, NO_FIELD },
        [K_OTA_REPORT_PROGRESS] = BOOL(ota_report_progress),
        [K_OTA_HOOK_TIMEOUT] = INT(ota_hook_timeout, 1, 86400),
        [K_OTA_MAX_IMAGE_SIZE] = INT(ota_max_image_size, 1, 1LL << 50),
        [K_OTA_RATE_LIMIT] = INT(ota_rate_limit, 0, 1LL << 50),
        [K_OTA_STALL_TIMEOUT] = INT(ota_stall_timeout, 5, 3600),
        [K_OTA_CONNECT_TIMEOUT] = INT(ota_connect_timeout, 1, 600),
        [K_OTA_RETRIES] = INT(ota_retries, 0, 1000),
        [K_OTA_MAX_REDIRECTS] = INT(ota_max_redirects, 0, 20),
        [K_OTA_CA_FILE] = PATH(ota_ca_file),
        [K_OTA_INSTALLER_SOCKET] = PATH(ota_installer_socket),
        [K_OTA_INSTALL_WINDOW] = WINDOW(ota_install_window),
        [K_OTA_REBOOT_WINDOW] = WINDOW(ota_reboot_window),
        [K_OTA_DOWNLOAD_DELAY_MAX] = INT(ota_download_delay_max, 0, 86400),
};

static const char *const required_groups[] = { "mqtt", "product", "device" };

typedef struct Problem {
        const char *file; /* the config path, or an @include'd file named by the parse tree */
        unsigned line;    /* 0: none known */
        size_t seq;       /* keeps the report order among problems on one line */
        char *text;       /* "KEY: what is wrong" */
} Problem;

typedef struct Loader {
        const char *path;
        config_t cfg;
        bool cfg_initialized;
        const config_setting_t *settings[_K_MAX]; /* present in the file, whatever its value */
        bool valid[_K_MAX];                        /* … and of the right type and range */
        Config *config;
        Problem *problems;
        size_t n_problems;
        bool oom;
} Loader;

static void loader_done(Loader *l)
{
        const config_setting_t *s = l->settings[K_PRODUCT_SECRET];

        for (size_t i = 0; i < l->n_problems; i++)
                free(l->problems[i].text);
        free(l->problems);

        if (l->cfg_initialized) {
                /* libconfig frees without erasing; the tree's copy of the secret is ours to wipe. */
                if (s && config_setting_type(s) == CONFIG_TYPE_STRING)
                        explicit_bzero(s->value.sval, strlen(s->value.sval));
                config_destroy(&l->cfg);
        }
        config_unref(l->config);
}

static void loader_error(Loader *l, const config_setting_t *s, const char *key, const char *format, ...)
        _printf_(4, 5);

static void loader_error(Loader *l, const config_setting_t *s, const char *key, const char *format, ...)
{
        _cleanup_free_ char *what = NULL;
        Problem *p;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&what, format, ap);
        va_end(ap);
        if (r < 0) {
                what = NULL;
                l->oom = true;
                return;
        }

        p = reallocarray(l->problems, l->n_problems + 1, sizeof(Problem));
        if (!p) {
                l->oom = true;
                return;
        }
        l->problems = p;
        p = &l->problems[l->n_problems];
        *p = (Problem){
                .file = s && config_setting_source_file(s) ? config_setting_source_file(s) : l->path,
                .line = s ? config_setting_source_line(s) : 0,
                .seq = l->n_problems,
        };
        if (asprintf(&p->text, "%s: %s", key, what) < 0) {
                l->oom = true;
                return;
        }
        l->n_problems++;
}

static int problem_compare(const void *a, const void *b)
{
        const Problem *x = a, *y = b;

        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void loader_flush(Loader *l, FILE *errors)
{
        if (!errors || l->n_problems == 0)
                return;

        qsort(l->problems, l->n_problems, sizeof(Problem), problem_compare);
        for (size_t i = 0; i < l->n_problems; i++) {
                const Problem *p = &l->problems[i];

                if (p->line > 0)
                        fprintf(errors, "%s:%u: %s\n", p->file, p->line, p->text);
                else
                        fprintf(errors, "%s: %s\n", p->file, p->text);
        }
        fflush(errors);
}

static const char *type_name(int type)
{
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "nothing";
        }
}

static const char *startswith(const char *s, const char *prefix)
{
        size_t n = strlen(prefix);

        return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

static bool streq_ptr(const char *a, const char *b)
{
        return a && b ? strcmp(a, b) == 0 : a == b;
}

static char **strv_free(char **v)
{
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
        return NULL;
}

static void strv_freep(char ***v)
{
        strv_free(*v);
}

static bool id_valid(const char *s)
{
        size_t n = strlen(s);

        return n >= 1 && n <= CONFIG_MAX_ID && strspn(s, ID_CHARS) == n;
}

/* What the kernel accepts as an interface name, and nothing that could leave /sys/class/net. */
static bool ifname_valid(const char *s)
{
        size_t n = strlen(s);

        return n >= 1 && n <= IFNAME_MAX && strcspn(s, "/: \t\n") == n && strcmp(s, ".") != 0 &&
               strcmp(s, "..") != 0;
}

/* "aa:bb:cc:dd:ee:ff" → "AABBCCDDEEFF", in place. */
static bool mac_to_id(char *s)
{
        size_t j = 0;

        if (strlen(s) != 17)
                return false;
        for (size_t i = 0; i < 17; i++)
                if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
                        return false;
        for (size_t i = 0; i < 17; i++)
                if (i % 3 != 2)
                        s[j++] = (char)toupper((unsigned char)s[i]);
        s[j] = '\0';
        return true;
}

/* Length of the number at P; *ret_base is 10 or 16 for a bare integer literal, else 0. */
static size_t lex_number(const char *p, int *ret_base)
{
        bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
        size_t n = 0;

        while (isalnum((unsigned char)p[n]) || p[n] == '.' ||
               (!hex && n > 0 && (p[n] == '+' || p[n] == '-') && (p[n - 1] == 'e' || p[n - 1] == 'E')))
                n++;

        if (hex)
                *ret_base = n > 2 && strspn(p + 2, HEX_DIGITS) == n - 2 ? 16 : 0;
        else /* libconfig reads "0123" as decimal, not octal */
                *ret_base = strspn(p, "0123456789") == n ? 10 : 0;
        return n;
}

/* Length of the token at P: strings and comments whole, names, numbers; else one character. */
static size_t lex_token(const char *p, int *ret_base)
{
        const char *q;

        *ret_base = 0;
        if (*p == '"') {
                for (q = p + 1; *q && *q != '"'; q += q[0] == '\\' && q[1] ? 2 : 1)
                        ;
                return (size_t)(q - p) + (*q == '"');
        }
        if (*p == '#' || startswith(p, "//"))
                return strcspn(p, "\n");
        if (startswith(p, "/*")) {
                q = strstr(p + 2, "*/");
                return q ? (size_t)(q + 2 - p) : strlen(p);
        }
        if (isalpha((unsigned char)*p) || *p == '*') {
                for (q = p + 1; isalnum((unsigned char)*q) || (*q && strchr("-_*", *q)); q++)
                        ;
                return (size_t)(q - p);
        }
        if (isdigit((unsigned char)*p) || *p == '.')
                return lex_number(p, ret_base);
        return 1;
}

/*
 * libconfig 1.5 (Debian 12) reads an integer literal without the L suffix
 * into an int and silently wraps it: "max_image_size = 5000000000;" would
 * become 705032704. libconfig 1.7 reads such literals as int64 by itself; this
 * gives 1.5 the same behaviour by appending the L before parsing. Nothing
 * else changes and no line moves, so libconfig's line numbers stay right.
 */
static char *promote_large_integers(const char *text)
{
        size_t n = strlen(text);
        char *out, *o;

        /* A literal that gets an L has at least 10 digits: the result is well under 2n. */
        out = malloc(2 * n + 1);
        if (!out)
                return NULL;

        o = out;
        for (const char *p = text; *p;) {
                int base;
                size_t len = lex_token(p, &base);

                memcpy(o, p, len);
                o += len;
                if (base != 0) {
                        errno = 0;
                        if (strtoull(p, NULL, base) > INT_MAX || errno == ERANGE)
                                *o++ = 'L';
                }
                p += len;
        }
        *o = '\0';
        return out;
}

/* Reads PATH (bounded) into text for libconfig. Returns 0 or -errno; -EBADMSG for a NUL byte. */
static int config_read_text(const char *path, char **ret)
{
        char *raw = NULL, *text = NULL;
        size_t len;
        int r;

        r = read_file_limited(path, CONFIG_MAX_FILE_SIZE, &raw, &len);
        if (r < 0)
                return r;

        if (strlen(raw) != len)
                r = -EBADMSG;
        else {
                text = promote_large_integers(raw);
                r = text ? 0 : -ENOMEM;
        }

        /* It may hold product.secret. */
        explicit_bzero(raw, len);
        free(raw);
        if (r < 0)
                return r;
        *ret = text;
        return 0;
}

static void config_report_read_error(const char *path, int r, FILE *errors)
{
        if (!errors)
                return;
        if (r == -EFBIG)
                fprintf(errors, "%s: cannot read: larger than %d bytes\n", path, CONFIG_MAX_FILE_SIZE);
        else if (r == -EBADMSG)
                fprintf(errors, "%s: cannot read: not a text file (contains a NUL byte)\n", path);
        else
                fprintf(errors, "%s: cannot read: %s\n", path, read_error_message(r));
        fflush(errors);
}

static Config *config_new(const char *path)
{
        _cleanup_config_ Config *c = NULL;

        c = calloc(1, sizeof(Config));
        if (!c)
                return NULL;

        *c = (Config){
                .n_ref = 1,
                .log_level = LOG_INFO,
                .mqtt_keepalive = 60,
                .mqtt_reconnect_max = 60,
                .report_interval = 3600,
                .registration_timeout = 30,
                .ota_hook_timeout = 1800,
                .ota_max_image_size = UINT64_C(4) << 30,
                .ota_stall_timeout = 60,
                .ota_connect_timeout = 30,
                .ota_retries = 10,
                .ota_max_redirects = 5,
        };
        c->path = strdup(path);
        c->state_dir = strdup("/var/lib/krtiot");
        c->ota_hook = strdup(HOOKS_DIR "/swupdate");
        c->ota_installer_socket = strdup(CONFIG_DEFAULT_INSTALLER_SOCKET);
        if (!c->path || !c->state_dir || !c->ota_hook || !c->ota_installer_socket)
                return NULL;

        return TAKE_PTR(c);
}

static Config *config_free(Config *c)
{
        if (!c)
                return NULL;

        free(c->path);
        free(c->state_dir);
        free(c->mqtt_uri);
        free(c->mqtt_host);
        free(c->mqtt_client_id);
        free(c->mqtt_ca_file);
        free(c->product_id);
        erase_and_free(c->product_secret);
        free(c->device_id);
        free(c->device_id_source_arg);
        free(c->hw_version);
        free(c->hw_version_file);
        free(c->fw_version);
        free(c->fw_version_file);
        free(c->ota_hook);
        free(c->ota_download_dir);
        strv_free(c->ota_reboot_argv);
        free(c->ota_ca_file);
        free(c->ota_installer_socket);
        window_free(c->ota_install_window);
        window_free(c->ota_reboot_window);
        free(c);
        return NULL;
}

/* ---- the walk: every setting in the file is a known key of the right type ---- */

static void *loader_field(Loader *l, KeyId k)
{
        return (uint8_t *)l->config + keys[k].offset;
}

/* The string value of K if the file has a valid one, else NULL. */
static const char *loader_string(Loader *l, KeyId k)
{
        return l->valid[k] ? config_setting_get_string(l->settings[k]) : NULL;
}

static void loader_wrong_type(Loader *l, KeyId k, const config_setting_t *s, const char *expected)
{
        loader_error(l, s, config_known_keys[k], "expected %s, got %s", expected,
                     type_name(config_setting_type(s)));
}

static void loader_take_string(Loader *l, KeyId k, const config_setting_t *s)
{
        const char *v = config_setting_get_string(s);
        char **dst;

        if (!v) {
                loader_wrong_type(l, k, s, "a string");
                return;
        }
        if (keys[k].type == KEY_PATH && v[0] != '/') {
                loader_error(l, s, config_known_keys[k], "must be an absolute path");
                return;
        }

        l->valid[k] = true;
        if (keys[k].offset == NO_FIELD)
                return;
        dst = loader_field(l, k);
        free(*dst); /* a default */
        *dst = strdup(v);
        if (!*dst)
                l->oom = true;
}

_Static_assert(sizeof(unsigned) != sizeof(uint64_t), "KEY_INT tells its fields apart by size");

static void loader_take_int(Loader *l, KeyId k, const config_setting_t *s)
{
        const Key *key = &keys[k];
        long long v;

        if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64) {
                loader_wrong_type(l, k, s, "an integer");
                return;
        }

        v = config_setting_get_int64(s);
        if (v < key->min || v > key->max) {
                loader_error(l, s, config_known_keys[k], "%lld is out of range %lld..%lld", v, key->min,
                             key->max);
                return;
        }

        l->valid[k] = true;
        if (key->size == sizeof(uint64_t))
                *(uint64_t *)loader_field(l, k) = (uint64_t)v;
        else
                *(unsigned *)loader_field(l, k) = (unsigned)v;
}

static void loader_take_bool(Loader *l, KeyId k, const config_setting_t *s)
{
        if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
                loader_wrong_type(l, k, s, "a boolean");
                return;
        }

        l->valid[k] = true;
        *(bool *)loader_field(l, k) = config_setting_get_bool(s);
}

#define QUOTE_MAX 64 /* bytes of a value quoted in a message */

/* V for a message: at most QUOTE_MAX bytes, control characters escaped, "..." when cut. */
static const char *quote_value(const char *v, char buf[static 4 * QUOTE_MAX + 4])
{
        size_t len = strnlen(v, QUOTE_MAX + 1), n;

        n = escape_control(v, MIN(len, (size_t)QUOTE_MAX), buf, 4 * QUOTE_MAX + 1);
        if (len > QUOTE_MAX)
                memcpy(buf + n, "...", sizeof("..."));
        return buf;
}

/* What a window lets happen, for the message about an empty list. */
static const char *window_allows(KeyId k)
{
        return k == K_OTA_INSTALL_WINDOW ? "an install" : "a reboot";
}

/*
 * An array or list of strings, each a window entry. Every bad entry is
 * reported, at its own line. An empty list is refused rather than taken to
 * mean "never": a device that can never install would look broken, not
 * configured.
 */
static void loader_take_window(Loader *l, KeyId k, const config_setting_t *s)
{
        const char *key = config_known_keys[k];
        _cleanup_free_ WindowEntry *entries = NULL;
        int type = config_setting_type(s), n;
        bool bad = false;

        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
                loader_error(l, s, key, "expected a list of strings, got %s%s", type_name(type),
                             type == CONFIG_TYPE_STRING ? " (write [ \"...\" ], even for one entry)" : "");
                return;
        }
        n = config_setting_length(s);
        if (n == 0) {
                loader_error(l, s, key, "an empty list would never allow %s; leave the key out for any time",
                             window_allows(k));
                return;
        }
        if (n > WINDOW_ENTRIES_MAX) {
                loader_error(l, s, key, "has %d entries, at most %d are allowed", n, WINDOW_ENTRIES_MAX);
                return;
        }

        entries = calloc((size_t)n, sizeof(WindowEntry));
        if (!entries) {
                l->oom = true;
                return;
        }
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                char why[WINDOW_ERROR_MAX], quoted[4 * QUOTE_MAX + 4];
                const char *v = config_setting_get_string(e);

                if (!v) {
                        loader_error(l, e, key, "entry %d: expected a string, got %s", i + 1,
                                     type_name(config_setting_type(e)));
                        bad = true;
                } else if (window_entry_parse(v, &entries[i], why, sizeof(why)) < 0) {
                        loader_error(l, e, key, "\"%s\": %s", quote_value(v, quoted), why);
                        bad = true;
                }
        }
        if (bad)
                return;

        if (window_new(entries, (size_t)n, loader_field(l, k)) < 0) {
                l->oom = true; /* the entries are window_entry_parse()'s: only memory can fail */
                return;
        }
        l->valid[k] = true;
}

static void loader_take(Loader *l, KeyId k, const config_setting_t *s)
{
        l->settings[k] = s;

        switch (keys[k].type) {
        case KEY_STRING:
        case KEY_PATH:
                loader_take_string(l, k, s);
                break;
        case KEY_INT:
                loader_take_int(l, k, s);
                break;
        case KEY_BOOL:
                loader_take_bool(l, k, s);
                break;
        case KEY_WINDOW:
                loader_take_window(l, k, s);
                break;
        case KEY_UNDEFINED:
                assert(!"key missing from the keys table");
        }
}

static int key_lookup(const char *path)
{
        for (int k = 0; k < _K_MAX; k++)
                if (strcmp(config_known_keys[k], path) == 0)
                        return k;
        return -1;
}

/* Whether PATH names a group: a known key lies under it. */
static bool key_is_group(const char *path)
{
        size_t n = strlen(path);

        for (int k = 0; k < _K_MAX; k++)
                if (strncmp(config_known_keys[k], path, n) == 0 && config_known_keys[k][n] == '.')
                        return true;
        return false;
}

static void loader_walk(Loader *l, const config_setting_t *group, const char *prefix)
{
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
                _cleanup_free_ char *path = NULL;
                int k;

                if (asprintf(&path, "%s%s%s", prefix ?: "", prefix ? "." : "", config_setting_name(s)) < 0) {
                        path = NULL;
                        l->oom = true;
                        return;
                }

                k = key_lookup(path);
                if (k >= 0)
                        loader_take(l, (KeyId)k, s);
                else if (!key_is_group(path))
                        loader_error(l, s, path, "unknown key");
                else if (!config_setting_is_group(s))
                        loader_error(l, s, path, "expected a group, got %s",
                                     type_name(config_setting_type(s)));
                else
                        loader_walk(l, s, path);
        }
}

/* ---- resolution: what single keys cannot say on their own ---- */

/* The group holding K if the file has it as a group (the root for top-level keys), else NULL. */
static const config_setting_t *loader_parent(Loader *l, KeyId k)
{
        const char *name = config_known_keys[k], *dot = strchr(name, '.');
        const config_setting_t *s;
        char group[32];

        if (!dot)
                return config_root_setting(&l->cfg);

        snprintf(group, sizeof(group), "%.*s", (int)(dot - name), name);
        s = config_lookup(&l->cfg, group);
        return s && config_setting_is_group(s) ? s : NULL;
}

static bool loader_is_set(Loader *l, KeyId k)
{
        if (!l->settings[k])
                return false;
        /* "fw_version_from_hook = false" says the same as saying nothing. */
        if (keys[k].type == KEY_BOOL && l->valid[k])
                return *(bool *)loader_field(l, k);
        return true;
}

/*
 * Exactly one of ALTS must be set; HINT names the others for the "missing"
 * message. Returns the one that is set if its value is valid, else _K_MAX
 * (with the problem reported, unless it was reported already).
 */
static KeyId loader_one_of_array(Loader *l, const char *hint, const KeyId *alts, size_t n)
{
        const config_setting_t *parent;
        KeyId found = _K_MAX;
        bool conflict = false;

        for (size_t i = 0; i < n; i++) {
                if (!loader_is_set(l, alts[i]))
                        continue;
                if (found == _K_MAX) {
                        found = alts[i];
                        continue;
                }
                loader_error(l, l->settings[alts[i]], config_known_keys[alts[i]],
                             "cannot be set together with %s", config_known_keys[found]);
                conflict = true;
        }

        if (found != _K_MAX)
                return conflict || !l->valid[found] ? _K_MAX : found;

        /* A missing or mistyped group was reported already: don't list everything it lacks. */
        parent = loader_parent(l, alts[0]);
        if (parent)
                loader_error(l, parent, config_known_keys[alts[0]], "required key is missing%s", hint);
        return _K_MAX;
}

#define loader_one_of(l, hint, ...)                                                                         \
        loader_one_of_array(l, hint, (const KeyId[]){ __VA_ARGS__ },                                        \
                            sizeof((const KeyId[]){ __VA_ARGS__ }) / sizeof(KeyId))

static void loader_check_groups(Loader *l)
{
        for (size_t i = 0; i < ELEMENTSOF(required_groups); i++)
                if (!config_lookup(&l->cfg, required_groups[i]))
                        loader_error(l, NULL, required_groups[i], "required group is missing");
}

/* Checks the ID in K's field; an invalid one is dropped so nothing is built from it. */
static void loader_check_id(Loader *l, KeyId k)
{
        char **id = loader_field(l, k);

        if (id_valid(*id))
                return;
        loader_error(l, l->settings[k], config_known_keys[k], "must be %s", ID_RULE);
        free(*id);
        *id = NULL;
}

/*
 * Splits "tcp://HOST:PORT" or "ssl://[IPV6]:PORT". Returns NULL, or why URI
 * is not one. *ret_host points into URI, *ret_host_len bytes, no brackets.
 */
static const char *uri_parse(const char *uri, bool *ret_tls, const char **ret_host, size_t *ret_host_len,
                             unsigned *ret_port)
{
        char v6[INET6_ADDRSTRLEN];
        const char *p, *host;
        struct in6_addr a6;
        unsigned long port;
        size_t n;

        if ((p = startswith(uri, "ssl://")))
                *ret_tls = true;
        else if ((p = startswith(uri, "tcp://")))
                *ret_tls = false;
        else
                return "must start with tcp:// or ssl://";

        /* No '@' can be part of a host, an IPv6 literal or a port: it ends user info. */
        if (strchr(p, '@'))
                return "must not hold a user name or password (USER:PASSWORD@): the device logs in "
                       "with its device ID and secret";

        if (*p == '[') {
                host = p + 1;
                n = strcspn(host, "]");
                if (!host[n])
                        return "has an unterminated [";
                if (n >= sizeof(v6))
                        return "has an invalid IPv6 address";
                memcpy(v6, host, n);
                v6[n] = '\0';
                if (inet_pton(AF_INET6, v6, &a6) != 1)
                        return "has an invalid IPv6 address";
                p = host + n + 1;
        } else {
                host = p;
                n = strcspn(host, ":");
                if (n == 0)
                        return "host is missing";
                if (strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_") != n)
                        return "has an invalid host name";
                p = host + n;
        }
        *ret_host = host;
        *ret_host_len = n;

        if (*p == '\0' || strcmp(p, ":") == 0)
                return "port is missing";
        if (*p != ':')
                return "has text between the address and :PORT";
        p++;
        n = strspn(p, "0123456789");
        if (n == 0 || n > 5 || p[n] != '\0')
                return "port must be a number 1..65535";
        port = strtoul(p, NULL, 10); /* at most 5 digits: no overflow */
        if (port < 1 || port > 65535)
                return "port must be a number 1..65535";
        *ret_port = (unsigned)port;
        return NULL;
}

static void loader_parse_uri(Loader *l)
{
        Config *c = l->config;
        const char *why, *host;
        size_t host_len;

        if (loader_one_of(l, "", K_MQTT_URI) != K_MQTT_URI)
                return;

        why = uri_parse(c->mqtt_uri, &c->mqtt_tls, &host, &host_len, &c->mqtt_port);
        if (why) {
                loader_error(l, l->settings[K_MQTT_URI], config_known_keys[K_MQTT_URI], "%s", why);
                return;
        }
        c->mqtt_host = strndup(host, host_len);
        if (!c->mqtt_host)
                l->oom = true;
}

static void loader_read_secret_file(Loader *l)
{
        const config_setting_t *s = l->settings[K_PRODUCT_SECRET_FILE];
        const char *path = config_setting_get_string(s), *key = config_known_keys[K_PRODUCT_SECRET_FILE];
        char *secret = NULL;
        int r;

        r = read_one_line_file(path, &secret);
        if (r < 0) {
                loader_error(l, s, key, "cannot read %s: %s", path, read_error_message(r));
                return;
        }
        if (!*secret) {
                loader_error(l, s, key, "%s is empty", path);
                erase_and_free(secret);
                return;
        }
        l->config->product_secret = secret;
}

static void loader_resolve_secret(Loader *l)
{
        const char *secret = l->config->product_secret;

        switch (loader_one_of(l, " (or product.secret_file)", K_PRODUCT_SECRET, K_PRODUCT_SECRET_FILE)) {
        case K_PRODUCT_SECRET:
                /* Never the value itself in a message. */
                if (!*secret || strlen(secret) > SECRET_MAX)
                        loader_error(l, l->settings[K_PRODUCT_SECRET], config_known_keys[K_PRODUCT_SECRET],
                                     "must be 1..%d bytes long", SECRET_MAX);
                break;
        case K_PRODUCT_SECRET_FILE:
                loader_read_secret_file(l);
                break;
        default:
                break;
        }
}

/* Parses device.id_from. Returns NULL, or why SPEC is not valid. *ret_arg points into SPEC. */
static const char *id_from_parse(const char *spec, IdSource *ret_source, const char **ret_arg)
{
        const char *arg;

        if (strcmp(spec, "machine-id") == 0) {
                *ret_source = ID_SOURCE_MACHINE_ID;
                *ret_arg = NULL;
        } else if ((arg = startswith(spec, "file:"))) {
                if (arg[0] != '/')
                        return "file: needs an absolute path";
                *ret_source = ID_SOURCE_FILE;
                *ret_arg = arg;
        } else if ((arg = startswith(spec, "mac:"))) {
                if (!ifname_valid(arg))
                        return "mac: needs an interface name (1..15 characters, no /)";
                *ret_source = ID_SOURCE_MAC;
                *ret_arg = arg;
        } else
                return "must be \"machine-id\", \"file:/ABSOLUTE/PATH\" or \"mac:IFACE\"";
        return NULL;
}

static char *id_source_path(IdSource source, const char *arg)
{
        const char *p;
        char *path;

        switch (source) {
        case ID_SOURCE_MACHINE_ID:
                /* For the tests only: they cannot depend on the build host's machine-id. */
                p = secure_getenv("KRTIOT_MACHINE_ID_FILE");
                return strdup(p ?: MACHINE_ID_FILE);
        case ID_SOURCE_MAC:
                return asprintf(&path, "/sys/class/net/%s/address", arg) < 0 ? NULL : path;
        default:
                return strdup(arg);
        }
}

/* Turns what the source holds into a device ID, in place; false if it does not hold one. */
static bool id_normalize(IdSource source, char *id)
{
        switch (source) {
        case ID_SOURCE_MACHINE_ID:
                /* Also refuses the empty or "uninitialized" machine-id of a first boot. */
                return strlen(id) == 32 && strspn(id, HEX_DIGITS) == 32;
        case ID_SOURCE_MAC:
                return mac_to_id(id);
        default:
                return id_valid(id);
        }
}

static const char *id_source_expectation(IdSource source)
{
        switch (source) {
        case ID_SOURCE_MACHINE_ID:
                return "a machine ID (32 hex digits)";
        case ID_SOURCE_MAC:
                return "a MAC address (xx:xx:xx:xx:xx:xx)";
        default:
                return "a device ID (" ID_RULE ")";
        }
}

static void loader_device_id_from(Loader *l)
{
        const config_setting_t *s = l->settings[K_DEVICE_ID_FROM];
        const char *key = config_known_keys[K_DEVICE_ID_FROM], *arg = NULL, *why;
        _cleanup_free_ char *path = NULL, *id = NULL;
        IdSource source;
        int r;

        why = id_from_parse(config_setting_get_string(s), &source, &arg);
        if (why) {
                loader_error(l, s, key, "%s", why);
                return;
        }

        path = id_source_path(source, arg);
        if (!path) {
                l->oom = true;
                return;
        }

        r = read_one_line_file(path, &id);
        if (r < 0) {
                loader_error(l, s, key, "cannot read %s: %s", path, read_error_message(r));
                return;
        }
        if (!id_normalize(source, id)) {
                loader_error(l, s, key, "%s does not hold %s", path, id_source_expectation(source));
                return;
        }

        l->config->device_id = TAKE_PTR(id);
        l->config->device_id_source = source;
        if (arg && !(l->config->device_id_source_arg = strdup(arg)))
                l->oom = true;
}

static void loader_resolve_device_id(Loader *l)
{
        Config *c = l->config;

        switch (loader_one_of(l, " (or device.id_from)", K_DEVICE_ID, K_DEVICE_ID_FROM)) {
        case K_DEVICE_ID:
                c->device_id_source = ID_SOURCE_CONFIG;
                loader_check_id(l, K_DEVICE_ID);
                break;
        case K_DEVICE_ID_FROM:
                loader_device_id_from(l);
                break;
        default:
                /* Conflicting sources: no device ID, so nothing is built from one. */
                free(c->device_id);
                c->device_id = NULL;
                break;
        }
}

/*
 * A literal version obeys the rule every other version source does: one
 * that breaks it could never equal an OTA command's target (which is held
 * to it), so every update would look failed.
 */
static void loader_check_version(Loader *l, KeyId k)
{
        if (!version_is_valid(*(char **)loader_field(l, k)))
                loader_error(l, l->settings[k], config_known_keys[k],
                             "must be " VERSION_RULE " other than \".\" and \"..\", as OTA targets are");
}

static void loader_check_versions(Loader *l)
{
        if (loader_one_of(l, " (or device.hw_version_file)", K_DEVICE_HW_VERSION,
                          K_DEVICE_HW_VERSION_FILE) == K_DEVICE_HW_VERSION)
                loader_check_version(l, K_DEVICE_HW_VERSION);

        if (loader_one_of(l, " (or device.fw_version_file, or device.fw_version_from_hook = true)",
                          K_DEVICE_FW_VERSION, K_DEVICE_FW_VERSION_FILE,
                          K_DEVICE_FW_VERSION_FROM_HOOK) == K_DEVICE_FW_VERSION)
                loader_check_version(l, K_DEVICE_FW_VERSION);
}

/* Whether the LEN bytes at P are a known placeholder; its value (NULL if unresolved) in *ret. */
static bool client_id_placeholder(const Config *c, const char *p, size_t len, const char **ret)
{
        if (len == strlen("{product_id}") && memcmp(p, "{product_id}", len) == 0)
                *ret = c->product_id;
        else if (len == strlen("{device_id}") && memcmp(p, "{device_id}", len) == 0)
                *ret = c->device_id;
        else
                return false;
        return true;
}

/*
 * Expands the client id template. Its placeholders are checked even when an
 * ID is missing; its length only when both IDs are known.
 */
static void loader_expand_client_id(Loader *l)
{
        const config_setting_t *s = l->settings[K_MQTT_CLIENT_ID];
        const char *tpl = s ? loader_string(l, K_MQTT_CLIENT_ID) : "{product_id}";
        const char *key = config_known_keys[K_MQTT_CLIENT_ID];
        char out[CLIENT_ID_MAX + 1];
        bool complete = true;
        size_t n = 0, len;

        if (!tpl)
                return; /* of the wrong type: reported */

        for (const char *p = tpl; *p; p += len) {
                const char *add = p;
                size_t add_len = 1;

                len = 1;
                if (*p == '{') {
                        len = strcspn(p, "}") + 1;
                        if (p[len - 1] != '}') {
                                loader_error(l, s, key, "has an unterminated {");
                                return;
                        }
                        if (!client_id_placeholder(l->config, p, len, &add)) {
                                loader_error(l, s, key, "unknown placeholder %.*s", (int)len, p);
                                return;
                        }
                        complete = complete && add;
                        add_len = add ? strlen(add) : 0;
                }
                if (add && n + add_len <= CLIENT_ID_MAX)
                        memcpy(out + n, add, add_len);
                n += add_len;
        }

        if (!complete)
                return; /* an ID is invalid or missing: reported */
        if (n < 1 || n > CLIENT_ID_MAX) {
                loader_error(l, s ?: loader_parent(l, K_MQTT_CLIENT_ID), key,
                             "must expand to 1..%d characters", CLIENT_ID_MAX);
                return;
        }
        l->config->mqtt_client_id = strndup(out, n);
        if (!l->config->mqtt_client_id)
                l->oom = true;
}

static void loader_parse_log_level(Loader *l)
{
        const char *v = loader_string(l, K_LOG_LEVEL);
        int level;

        if (!v)
                return;

        /* Below "err" the daemon would hide its own errors. */
        level = log_level_from_string(v);
        if (level < LOG_ERR || level > LOG_DEBUG)
                loader_error(l, l->settings[K_LOG_LEVEL], config_known_keys[K_LOG_LEVEL],
                             "must be one of err, warning, notice, info, debug");
        else
                l->config->log_level = level;
}

/* Splits S on runs of blanks. Returns the number of words, with *ret NULL for none; or -ENOMEM. */
static int argv_split(const char *s, char ***ret)
{
        _cleanup_(strv_freep) char **argv = NULL;
        size_t n = 0;

        for (const char *p = s + strspn(s, " \t"); *p; p += strspn(p, " \t")) {
                size_t len = strcspn(p, " \t");
                char **a;

                a = reallocarray(argv, n + 2, sizeof(char *));
                if (!a)
                        return -ENOMEM;
                argv = a;
                argv[n] = strndup(p, len);
                if (!argv[n])
                        return -ENOMEM;
                argv[++n] = NULL;
                p += len;
        }

        *ret = TAKE_PTR(argv);
        return (int)n;
}

static void loader_parse_reboot_command(Loader *l)
{
        const config_setting_t *s = l->settings[K_OTA_REBOOT_COMMAND];
        const char *v = s ? loader_string(l, K_OTA_REBOOT_COMMAND) : "/bin/systemctl reboot";
        char **argv = NULL;
        int r;

        if (!v)
                return;

        r = argv_split(v, &argv);
        if (r < 0) {
                l->oom = true;
                return;
        }
        /* It is run without a shell, so no PATH lookup either. */
        if (r > 0 && argv[0][0] != '/') {
                loader_error(l, s, config_known_keys[K_OTA_REBOOT_COMMAND],
                             "must start with the absolute path of a program");
                strv_free(argv);
                return;
        }
        l->config->ota_reboot_argv = argv;
}

/*
 * Where a problem with K's value is reported: at K's line, or, when K is
 * left at its default, at its group's (no line for a top-level key or a
 * missing group). *ret_default says which, for the message.
 */
static const config_setting_t *loader_where(Loader *l, KeyId k, const char **ret_default)
{
        if (l->settings[k]) {
                *ret_default = "";
                return l->settings[k];
        }
        *ret_default = " (the default)";
        return strchr(config_known_keys[k], '.') ? loader_parent(l, k) : NULL;
}

/*
 * The hook must be there to run when an update comes, maybe months later:
 * found now, a missing one is a configuration error, not a failed update.
 * It is looked at (stat, access), never run. The default is checked too:
 * it is what will be run.
 */
static void loader_check_hook(Loader *l)
{
        const char *hook = l->config->ota_hook, *key = config_known_keys[K_OTA_HOOK], *dflt;
        const config_setting_t *s = loader_where(l, K_OTA_HOOK, &dflt);
        struct stat st;

        if (l->settings[K_OTA_HOOK] && !l->valid[K_OTA_HOOK])
                return; /* not a string, or relative: reported */

        if (stat(hook, &st) < 0) {
                if (errno == ENOENT)
                        loader_error(l, s, key, "%s%s does not exist", hook, dflt);
                else
                        loader_error(l, s, key, "%s%s: %s", hook, dflt, strerror(errno));
        } else if (S_ISDIR(st.st_mode))
                loader_error(l, s, key, "%s%s is a directory, not a program", hook, dflt);
        else if (!S_ISREG(st.st_mode))
                loader_error(l, s, key, "%s%s is not a regular file", hook, dflt);
        else if (faccessat(AT_FDCWD, hook, X_OK, AT_EACCESS) < 0)
                loader_error(l, s, key, "%s%s is not executable", hook, dflt);
}

/*
 * The state directory must exist: the device secret is stored there, and
 * finding it missing only when the platform issues the secret is too late.
 * It is not created here: systemd's StateDirectory= makes it, with its mode.
 */
static void loader_check_state_dir(Loader *l)
{
        const char *dir = l->config->state_dir, *key = config_known_keys[K_STATE_DIR], *dflt;
        const config_setting_t *s = loader_where(l, K_STATE_DIR, &dflt);
        struct stat st;

        if (l->settings[K_STATE_DIR] && !l->valid[K_STATE_DIR])
                return; /* reported */

        if (stat(dir, &st) < 0) {
                if (errno == ENOENT)
                        loader_error(l, s, key, "%s%s does not exist%s", dir, dflt,
                                     *dflt ? " (krtiot.service's StateDirectory= creates it)" : "");
                else
                        loader_error(l, s, key, "%s%s: %s", dir, dflt, strerror(errno));
        } else if (!S_ISDIR(st.st_mode))
                loader_error(l, s, key, "%s%s is not a directory", dir, dflt);
}

/*
 * A Unix socket's path lives in sun_path (108 bytes with its NUL): a longer
 * one could never be connected to, which the agent would only find when an
 * update came.
 */
static void loader_check_installer_socket(Loader *l)
{
        const char *path = l->config->ota_installer_socket;

        if (l->valid[K_OTA_INSTALLER_SOCKET] && strlen(path) > CONFIG_SOCKET_PATH_MAX)
                loader_error(l, l->settings[K_OTA_INSTALLER_SOCKET],
                             config_known_keys[K_OTA_INSTALLER_SOCKET],
                             "must be at most %d bytes (a Unix socket's path)", CONFIG_SOCKET_PATH_MAX);
}

static void loader_default_download_dir(Loader *l)
{
        Config *c = l->config;

        if (c->ota_download_dir)
                return;
        if (asprintf(&c->ota_download_dir, "%s/download", c->state_dir) < 0) {
                c->ota_download_dir = NULL;
                l->oom = true;
        }
}

static void loader_resolve(Loader *l)
{
        loader_check_groups(l);
        loader_parse_uri(l);
        if (loader_one_of(l, "", K_PRODUCT_ID) == K_PRODUCT_ID)
                loader_check_id(l, K_PRODUCT_ID);
        loader_resolve_secret(l);
        loader_resolve_device_id(l);
        loader_check_versions(l);
        loader_expand_client_id(l);
        loader_parse_log_level(l);
        loader_parse_reboot_command(l);
        loader_check_state_dir(l);
        loader_check_hook(l);
        loader_check_installer_socket(l);
        loader_default_download_dir(l);
}

/* The line (1-based) of the first @include directive outside strings and comments, or 0. */
static int config_find_include(const char *text)
{
        int line = 1;
        char quote = 0;

        for (const char *p = text; *p; p++) {
                if (*p == '\n')
                        line++;
                if (quote) {
                        if (*p == '\\' && p[1])
                                p++;
                        else if (*p == quote)
                                quote = 0;
                } else if (*p == '"')
                        quote = *p;
                else if (*p == '#' || (*p == '/' && p[1] == '/'))
                        p += strcspn(p, "\n") - 1;
                else if (*p == '/' && p[1] == '*') {
                        const char *end = strstr(p + 2, "*/");

                        for (const char *q = p; q < (end ? end : p + strlen(p)); q++)
                                line += *q == '\n';
                        if (!end)
                                break;
                        p = end + 1;
                } else if (strncmp(p, "@include", 8) == 0)
                        return line;
        }
        return 0;
}

/*
 * The line (1-based) where a block comment opens that is never closed, or 0.
 * libconfig 1.5 (Debian 12) takes such a comment to run to the end of the
 * file without a word: everything after it would be silently ignored.
 */
static int config_find_unterminated_comment(const char *text)
{
        int line = 1;

        for (const char *p = text; *p;) {
                int base;
                size_t len = lex_token(p, &base);

                /* lex_token() runs an unclosed comment to the end of the text; a slash, a star and a
                 * slash are three characters, not a closed comment. */
                if (startswith(p, "/*") && (len < 4 || memcmp(p + len - 2, "*/", 2) != 0))
                        return line;
                for (size_t i = 0; i < len; i++)
                        line += p[i] == '\n';
                p += len;
        }
        return 0;
}

int config_load(const char *path, FILE *errors, Config **ret)
{
        _cleanup_(loader_done) Loader l = { .path = path };
        _cleanup_erase_ char *text = NULL;
        int r;

        if (!path || !ret)
                return -EINVAL;

        r = config_read_text(path, &text);
        if (r < 0) {
                config_report_read_error(path, r, errors);
                return r == -EBADMSG ? -EINVAL : r;
        }

        /* libconfig's @include reads any path it is given and exit()s on some (a directory): not
         * supported, so that one file is the whole configuration and a SIGHUP can never kill us. */
        r = config_find_include(text);
        if (r > 0) {
                if (errors) {
                        fprintf(errors, "%s:%d: @include: not supported: put everything in this file\n", path, r);
                        fflush(errors);
                }
                return -EINVAL;
        }

        r = config_find_unterminated_comment(text);
        if (r > 0) {
                if (errors) {
                        fprintf(errors,
                                "%s:%d: syntax error: /* comment is never closed: the rest of the file "
                                "would be ignored\n",
                                path, r);
                        fflush(errors);
                }
                return -EINVAL;
        }

        config_init(&l.cfg);
        l.cfg_initialized = true;
        if (!config_read_string(&l.cfg, text)) {
                if (errors) {
                        fprintf(errors, "%s:%d: syntax error: %s\n", config_error_file(&l.cfg) ?: path,
                                config_error_line(&l.cfg), config_error_text(&l.cfg));
                        fflush(errors);
                }
                return -EINVAL;
        }

        l.config = config_new(path);
        if (!l.config)
                return -ENOMEM;

        loader_walk(&l, config_root_setting(&l.cfg), NULL);
        loader_resolve(&l);
        loader_flush(&l, errors);

        if (l.oom)
                return -ENOMEM;
        if (l.n_problems > 0)
                return -EINVAL;

        *ret = TAKE_PTR(l.config);
        return 0;
}

bool config_session_equal(const Config *a, const Config *b)
{
        if (!a || !b)
                return a == b;

        return streq_ptr(a->mqtt_uri, b->mqtt_uri) && streq_ptr(a->mqtt_host, b->mqtt_host) &&
               a->mqtt_port == b->mqtt_port && a->mqtt_tls == b->mqtt_tls &&
               streq_ptr(a->mqtt_client_id, b->mqtt_client_id) && a->mqtt_keepalive == b->mqtt_keepalive &&
               streq_ptr(a->mqtt_ca_file, b->mqtt_ca_file) && streq_ptr(a->product_id, b->product_id) &&
               streq_ptr(a->product_secret, b->product_secret) && streq_ptr(a->device_id, b->device_id);
}

Config *config_ref(Config *c)
{
        if (c) {
                assert(c->n_ref > 0);
                c->n_ref++;
        }
        return c;
}

Config *config_unref(Config *c)
{
        if (!c)
                return NULL;
        assert(c->n_ref > 0);
        if (--c->n_ref > 0)
                return NULL;
        return config_free(c);
}
