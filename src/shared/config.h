/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration: /etc/krtiot.conf (libconfig syntax) parsed, validated
 * and resolved into one immutable Config. This is the only file that touches
 * libconfig. Sources named by the file (product.secret_file, device.id_from,
 * hw_version_file) are read here, at load time, so the rest of the daemon
 * never sees a half-valid configuration. Versions from files are NOT read
 * here: they are re-read at every report (version.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "window.h"

#define CONFIG_MAX_FILE_SIZE (64 * 1024)
#define CONFIG_MAX_ID 64 /* product and device IDs */
#define CONFIG_DEFAULT_INSTALLER_SOCKET "/run/krtiot/install.sock"
#define CONFIG_SOCKET_PATH_MAX 107 /* sizeof(sun_path) - 1 */

typedef enum IdSource {
        ID_SOURCE_CONFIG,     /* device.id */
        ID_SOURCE_MACHINE_ID, /* /etc/machine-id */
        ID_SOURCE_FILE,       /* file:PATH, trimmed */
        ID_SOURCE_MAC,        /* mac:IFACE, 12 upper-case hex digits, no separators */
} IdSource;

typedef struct Config {
        unsigned n_ref;
        char *path; /* the file this came from */
        int log_level; /* LOG_ERR … LOG_DEBUG; "log_level" key, default info */
        char *state_dir; /* absolute; default /var/lib/krtiot */

        /* mqtt */
        char *mqtt_uri;  /* as written */
        bool mqtt_tls;   /* ssl:// */
        char *mqtt_host; /* from the URI; IPv6 literals without brackets */
        unsigned mqtt_port;
        char *mqtt_client_id; /* template expanded */
        unsigned mqtt_keepalive;     /* s, 5..65535, default 60 */
        unsigned mqtt_reconnect_max; /* s, 1..86400, default 60 */
        char *mqtt_ca_file;          /* NULL: the system's CA directory */

        /* product */
        char *product_id;
        char *product_secret; /* from secret or secret_file (trimmed); erased on free */

        /* device */
        char *device_id; /* resolved from id or id_from */
        IdSource device_id_source;
        char *device_id_source_arg; /* PATH or IFACE, else NULL */
        char *hw_version;      /* exactly one of hw_version / hw_version_file is set */
        char *hw_version_file;
        char *fw_version; /* exactly one of fw_version / fw_version_file / fw_version_from_hook */
        char *fw_version_file;
        bool fw_version_from_hook;

        unsigned report_interval;       /* s, 1..604800, default 3600 */
        unsigned registration_timeout;  /* s, 1..3600, default 30 */

        /* ota */
        char *ota_hook;          /* absolute; default HOOKS_DIR "/swupdate" */
        char *ota_download_dir;  /* absolute; default {state_dir}/download */
        char **ota_reboot_argv;  /* NULL-terminated; NULL when reboot_command = "" */
        bool ota_report_progress;
        unsigned ota_hook_timeout;      /* s, default 1800 */
        uint64_t ota_max_image_size;    /* bytes, default 4 GiB */
        uint64_t ota_rate_limit;        /* bytes/s, 0 = none (default) */
        unsigned ota_stall_timeout;     /* s without progress, default 60 */
        unsigned ota_connect_timeout;   /* s, default 30 */
        unsigned ota_retries;           /* download attempts after the first, default 10 */
        unsigned ota_max_redirects;     /* default 5 */
        char *ota_ca_file;              /* for https downloads; NULL: system default */
        char *ota_installer_socket;     /* krtiot-install's socket; absolute, <= CONFIG_SOCKET_PATH_MAX */
        Window *ota_install_window;     /* when an install may start; NULL = any time (the default) */
        Window *ota_reboot_window;      /* when the reboot after hook exit 10 may happen; NULL = any time */
        unsigned ota_download_delay_max; /* s, 0..86400: a download starts after a random delay up to this */
} Config;

/*
 * Loads and validates PATH. Every problem found is written to ERRORS as one
 * line "PATH:LINE: KEY: what is wrong\n" (":LINE" only where libconfig knows
 * the line); all of them, not only the first. Returns 0 and a new Config, or
 * a negative errno (-ENOENT missing file, -EINVAL invalid) with *ret
 * untouched.
 */
int config_load(const char *path, FILE *errors, Config **ret);

/*
 * The lifetime rule: a Config is reference-counted. config_load() hands out
 * one reference; every object that keeps a Config beyond a call (the Agent,
 * Registration, Ota) takes its own with config_ref() and drops it with
 * config_unref() when it lets go of it or is freed. So a reload, which
 * replaces the Agent's Config, can never leave a holder pointing at freed
 * memory: the old one lives until its last holder is re-pointed or freed.
 * A Config never changes once loaded.
 */
Config *config_ref(Config *c);
/* Drops a reference; frees C (erasing the secret) with the last one. Returns NULL. */
Config *config_unref(Config *c);
static inline void config_unrefp(Config **c)
{
        config_unref(*c);
}
#define _cleanup_config_ __attribute__((cleanup(config_unrefp)))

/* Whether the MQTT session parameters (and the identity) differ. */
bool config_session_equal(const Config *a, const Config *b);

/* For --help and the man page test: every key path the parser accepts, NULL-terminated. */
extern const char *const config_known_keys[];
