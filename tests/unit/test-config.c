/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.c against files: good ones and every field they resolve to, bad
 * ones and the exact lines they must produce, the secret never printed, and
 * the documentation (man page, shipped example) naming every accepted key.
 * Data files may say @DATA@ for the data directory (their absolute paths
 * depend on the checkout); each is copied to a temporary directory with it
 * replaced and loaded from there. Expected output says @F@ for the file
 * passed to config_load() and @D@ for the data directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* asprintf, open_memstream */
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "build-config.h"
#include "config.h"
#include "tap.h"
#include "util/fileio.h"
#include "util/macro.h"

#define DATA TEST_DATA_DIR "/config"
#define MAN_PAGE TEST_DATA_DIR "/../../../man/krtiot.conf.5.scd"
#define EXAMPLE TEST_DATA_DIR "/../../../conf/krtiot.conf"
#define SECRET "NeverPrintMe-7f3a" /* the product.secret of the bad files */
#define VERSION_MUST                                                                                        \
        "must be 1-64 characters of 0-9A-Za-z._+~- other than \".\" and \"..\", as OTA targets are"
#define USERINFO_MUST_NOT                                                                                   \
        "must not hold a user name or password (USER:PASSWORD@): the device logs in with its device ID "    \
        "and secret"

static char tmpdir[] = "/tmp/test-config.XXXXXX";

static char *xstrdup(const char *s)
{
        char *p = strdup(s);

        if (!p)
                abort();
        return p;
}

/* S with every FROM replaced by TO. */
static char *replace_all(const char *s, const char *from, const char *to)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        const char *p;

        if (!f)
                abort();
        while ((p = strstr(s, from))) {
                fwrite(s, 1, (size_t)(p - s), f);
                fputs(to, f);
                s = p + strlen(from);
        }
        fputs(s, f);
        fclose(f);
        return buf;
}

static char *read_text(const char *path)
{
        char *text = NULL;

        if (read_file_limited(path, 1024 * 1024, &text, NULL) < 0)
                return NULL;
        return text;
}

/* Writes CONTENT as tmpdir/NAME; returns that path. */
static char *put(const char *name, const char *content, size_t len)
{
        char *path;

        if (write_file_atomic(tmpdir, name, content, len, 0644) < 0 ||
            asprintf(&path, "%s/%s", tmpdir, name) < 0)
                abort();
        return path;
}

/* Copies DATA/NAME to the temporary directory with @DATA@ replaced. */
static char *stage(const char *name)
{
        _cleanup_free_ char *src = NULL, *text = NULL, *path = NULL;

        if (asprintf(&src, "%s/%s", DATA, name) < 0)
                abort();
        text = read_text(src);
        if (!text) {
                printf("# cannot read %s\n", src);
                return xstrdup("/nonexistent/staging-failed");
        }
        path = replace_all(text, "@DATA@", DATA);
        return put(name, path, strlen(path));
}

/* Loads PATH; returns config_load()'s result and everything it wrote. */
static int load(const char *path, char **ret_errors, Config **ret)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        int r;

        if (!f)
                abort();
        r = config_load(path, f, ret);
        fclose(f);
        *ret_errors = buf;
        return r;
}

static size_t argv_length(char **argv)
{
        size_t n = 0;

        while (argv && argv[n])
                n++;
        return n;
}

/* ARGV equals WANT, a NULL-terminated list, or NULL for no argv at all. */
static void is_argv(char **argv, const char *const *want, const char *name)
{
        size_t n = 0;

        if (!want) {
                ok(!argv, name);
                return;
        }
        while (want[n])
                n++;
        is_int(argv_length(argv), n, name);
        for (size_t i = 0; i < n && i < argv_length(argv); i++)
                is_str(argv[i], want[i], name);
}

/* ---- good files ---- */

static void check_minimal(const Config *c)
{
        is_int(c->log_level, LOG_INFO, "minimal: log_level defaults to info");
        is_str(c->state_dir, DATA, "minimal: state_dir (its default is test_defaults' business)");
        is_str(c->mqtt_uri, "tcp://broker.example.com:1883", "minimal: uri as written");
        ok(!c->mqtt_tls, "minimal: tcp:// is not TLS");
        is_str(c->mqtt_host, "broker.example.com", "minimal: host");
        is_int(c->mqtt_port, 1883, "minimal: port");
        is_str(c->mqtt_client_id, "P1", "minimal: client_id defaults to the product ID");
        is_int(c->mqtt_keepalive, 60, "minimal: keepalive default");
        is_int(c->mqtt_reconnect_max, 60, "minimal: reconnect_max default");
        ok(!c->mqtt_ca_file, "minimal: no mqtt ca_file");
        is_str(c->product_id, "P1", "minimal: product id");
        is_str(c->product_secret, "product-secret", "minimal: product secret");
        is_str(c->device_id, "D1", "minimal: device id");
        is_int(c->device_id_source, ID_SOURCE_CONFIG, "minimal: device id from the config");
        ok(!c->device_id_source_arg, "minimal: no id source argument");
        is_str(c->hw_version, "1.0.0", "minimal: hw_version");
        ok(!c->hw_version_file, "minimal: no hw_version_file");
        ok(!c->fw_version, "minimal: no fw_version");
        is_str(c->fw_version_file, "/etc/krtiot/fw_version", "minimal: fw_version_file");
        ok(!c->fw_version_from_hook, "minimal: fw_version not from the hook");
        is_int(c->report_interval, 3600, "minimal: report.interval default");
        is_int(c->registration_timeout, 30, "minimal: registration.timeout default");
        is_str(c->ota_hook, DATA "/hook", "minimal: ota.hook (its default: test_defaults)");
        is_str(c->ota_download_dir, DATA "/download", "minimal: download_dir under state_dir");
        is_argv(c->ota_reboot_argv, (const char *const[]){ "/bin/systemctl", "reboot", NULL },
                "minimal: default reboot command is two words");
        ok(!c->ota_report_progress, "minimal: report_progress default off");
        is_int(c->ota_hook_timeout, 1800, "minimal: hook_timeout default");
        is_int(c->ota_max_image_size, 4ULL << 30, "minimal: max_image_size default 4 GiB");
        is_int(c->ota_rate_limit, 0, "minimal: no rate limit");
        is_int(c->ota_stall_timeout, 60, "minimal: stall_timeout default");
        is_int(c->ota_connect_timeout, 30, "minimal: connect_timeout default");
        is_int(c->ota_retries, 10, "minimal: retries default");
        is_int(c->ota_max_redirects, 5, "minimal: max_redirects default");
        ok(!c->ota_ca_file, "minimal: no ota ca_file");
        is_str(c->ota_installer_socket, "/run/krtiot/install.sock", "minimal: installer_socket default");
        ok(!c->ota_install_window, "minimal: no install_window: any time");
        ok(!c->ota_reboot_window, "minimal: no reboot_window: any time");
        is_int(c->ota_download_delay_max, 0, "minimal: no download delay");
}

static void check_full(const Config *c)
{
        is_int(c->log_level, LOG_DEBUG, "full: log_level");
        is_str(c->state_dir, DATA, "full: state_dir");
        is_str(c->mqtt_host, "10.0.0.1", "full: host");
        is_int(c->mqtt_port, 16007, "full: port");
        is_str(c->mqtt_client_id, "Prod-1.a_b:c:Dev-9", "full: client_id template expanded");
        is_int(c->mqtt_keepalive, 120, "full: keepalive");
        is_int(c->mqtt_reconnect_max, 600, "full: reconnect_max");
        is_str(c->mqtt_ca_file, "/etc/ssl/mqtt-ca.pem", "full: mqtt ca_file");
        is_str(c->product_id, "Prod-1.a_b:c", "full: product id with every allowed punctuation");
        is_str(c->product_secret, "full-secret", "full: secret");
        is_str(c->device_id, "Dev-9", "full: device id");
        ok(!c->hw_version, "full: no literal hw_version");
        is_str(c->hw_version_file, "/etc/krtiot/hw_version", "full: hw_version_file");
        is_str(c->fw_version_file, "/etc/krtiot/fw_version", "full: fw_version_file");
        is_int(c->report_interval, 600, "full: report.interval");
        is_int(c->registration_timeout, 45, "full: registration.timeout");
        is_str(c->ota_hook, DATA "/hook", "full: ota.hook");
        is_str(c->ota_download_dir, "/data/download", "full: download_dir");
        is_argv(c->ota_reboot_argv, (const char *const[]){ "/sbin/reboot", "-f", NULL },
                "full: reboot command split on runs of spaces");
        ok(c->ota_report_progress, "full: report_progress");
        is_int(c->ota_hook_timeout, 900, "full: hook_timeout");
        is_int(c->ota_max_image_size, 1000000, "full: max_image_size");
        is_int(c->ota_rate_limit, 65536, "full: rate_limit");
        is_int(c->ota_stall_timeout, 120, "full: stall_timeout");
        is_int(c->ota_connect_timeout, 10, "full: connect_timeout");
        is_int(c->ota_retries, 0, "full: retries");
        is_int(c->ota_max_redirects, 0, "full: max_redirects");
        is_str(c->ota_ca_file, "/etc/ssl/ota-ca.pem", "full: ota ca_file");
        is_str(c->ota_installer_socket, "/run/krtiot-test/install.sock", "full: installer_socket");
}

static void check_ssl(const Config *c)
{
        ok(c->mqtt_tls, "ssl: ssl:// is TLS");
        is_str(c->mqtt_host, "iot.krtyun.com", "ssl: host");
        is_int(c->mqtt_port, 8883, "ssl: port");
        is_str(c->mqtt_ca_file, "/etc/ssl/certs/ca-certificates.crt", "ssl: ca_file");
        is_str(c->fw_version, "2.0.0", "ssl: literal fw_version");
}

static void check_ipv6(const Config *c)
{
        is_str(c->mqtt_host, "::1", "ipv6: host without brackets");
        is_int(c->mqtt_port, 65535, "ipv6: highest port");
        is_str(c->mqtt_client_id, "krt-D1-P1", "ipv6: both placeholders, in any order");
        ok(c->fw_version_from_hook, "ipv6: fw_version_from_hook");
        ok(!c->fw_version && !c->fw_version_file, "ipv6: no other fw_version source");
}

static void check_id_file(const Config *c)
{
        is_str(c->device_id, "SN-0042:rev.B", "id_from file: content trimmed");
        is_int(c->device_id_source, ID_SOURCE_FILE, "id_from file: source");
        is_str(c->device_id_source_arg, DATA "/device-id", "id_from file: source argument is the path");
        is_int(c->mqtt_port, 1, "id_from file: lowest port");
}

static void check_id_mac(const Config *c)
{
        is_str(c->device_id, "000000000000", "id_from mac:lo: 12 hex digits");
        is_int(c->device_id_source, ID_SOURCE_MAC, "id_from mac: source");
        is_str(c->device_id_source_arg, "lo", "id_from mac: source argument is the interface");
        is_str(c->mqtt_client_id, "000000000000", "id_from mac: {device_id} sees the resolved ID");
}

static void check_machine_id(const Config *c)
{
        is_str(c->device_id, "0123456789abcdef0123456789abcdef", "machine-id: from KRTIOT_MACHINE_ID_FILE");
        is_int(c->device_id_source, ID_SOURCE_MACHINE_ID, "machine-id: source");
        ok(!c->device_id_source_arg, "machine-id: no source argument");
}

static void check_secret_file(const Config *c)
{
        is_str(c->product_secret, "s3cr3t-from-file", "secret_file: trailing newline trimmed");
}

static void check_int64(const Config *c)
{
        is_int(c->ota_max_image_size, 8589934592ULL, "int64: 8 GiB with the L suffix");
        is_int(c->ota_rate_limit, 5000000000ULL, "int64: 5e9 without L is not wrapped to 32 bits");
        is_int(c->ota_hook_timeout, 16, "int64: hex integer");
        is_int(c->ota_retries, 1000, "int64: upper bound included");
}

/* W has exactly the entries WANT (N of them). */
static void is_window(const Window *w, const WindowEntry *want, size_t n, const char *name)
{
        ok(w, name);
        if (!w)
                return;
        is_int(w->n_entries, n, name);
        for (size_t i = 0; i < n && i < w->n_entries; i++) {
                is_int(w->entries[i].days, want[i].days, name);
                is_int(w->entries[i].start, want[i].start, name);
                is_int(w->entries[i].end, want[i].end, name);
        }
}

static void check_window(const Config *c)
{
        /* days: bit N is tm_wday N, 0 = Sunday */
        static const WindowEntry install[] = { { 0x3e, 2 * 3600, 5 * 3600 }, { 0x41, 0, 24 * 3600 } };
        static const WindowEntry reboot[] = { { 0x01, 22 * 3600, 26 * 3600 },
                                              { 0x7f, 3 * 3600 + 30, 4 * 3600 } };

        is_window(c->ota_install_window, install, ELEMENTSOF(install), "window: install_window, an array");
        ok(c->ota_install_window && !c->ota_install_window->always,
           "window: install_window is not always open");
        is_window(c->ota_reboot_window, reboot, ELEMENTSOF(reboot), "window: reboot_window, a list");
        is_int(c->ota_download_delay_max, 86400, "window: download_delay_max upper bound included");
}

static void check_reboot_none(const Config *c)
{
        is_argv(c->ota_reboot_argv, NULL, "reboot_command \"\" gives no argv");
}

static const struct {
        const char *file;
        void (*check)(const Config *c);
} good[] = {
        { "good-minimal.conf", check_minimal },
        { "good-full.conf", check_full },
        { "good-ssl.conf", check_ssl },
        { "good-ipv6.conf", check_ipv6 },
        { "good-id-file.conf", check_id_file },
        { "good-id-mac.conf", check_id_mac },
        { "good-machine-id.conf", check_machine_id },
        { "good-secret-file.conf", check_secret_file },
        { "good-int64.conf", check_int64 },
        { "good-reboot-none.conf", check_reboot_none },
        { "good-window.conf", check_window },
};

static void test_good(void)
{
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *path = stage(good[i].file), *errors = NULL;
                _cleanup_config_ Config *c = NULL;
                int r;

                if (good[i].check == check_id_mac && access("/sys/class/net/lo/address", R_OK) < 0) {
                        /* A build chroot without /sys mounted. */
                        tap_count++;
                        printf("ok %u - %s # SKIP /sys/class/net/lo/address is not readable (no sysfs?)\n",
                               tap_count, good[i].file);
                        continue;
                }
                r = load(path, &errors, &c);
                printf("# %s\n", good[i].file);
                is_int(r, 0, "good file loads");
                is_str(errors, "", "good file: no error output");
                if (!c)
                        continue;
                is_str(c->path, path, "Config.path is the file loaded");
                good[i].check(c);
        }
}

/* ---- bad files: the exact output ---- */

static const struct {
        const char *file; /* NULL: a file that does not exist */
        int ret;
        const char *want;
        const char *machine_id; /* KRTIOT_MACHINE_ID_FILE, under DATA */
} bad[] = {
        { NULL, -ENOENT, "@F@: cannot read: No such file or directory\n" },
        { "bad-syntax.conf", -EINVAL, "@F@:3: syntax error: syntax error\n" },
        /* Found by fuzzing: libconfig exit()ed on an @include of a directory. */
        { "bad-include.conf", -EINVAL, "@F@:2: @include: not supported: put everything in this file\n" },
        { "bad-duplicate.conf", -EINVAL, "@F@:4: syntax error: duplicate setting name\n" },
        { "bad-unknown.conf", -EINVAL,
          "@F@:1: colour: unknown key\n"
          "@F@:4: mqtt.keep_alive: unknown key\n"
          "@F@:15: extras: unknown key\n" },
        { "bad-type.conf", -EINVAL,
          "@F@:1: state_dir: expected a string, got an integer\n"
          "@F@:4: mqtt.keepalive: expected an integer, got a string\n"
          "@F@:5: mqtt.reconnect_max: expected an integer, got a float\n"
          "@F@:9: product.secret: expected a string, got an integer\n"
          "@F@:17: report.interval: expected an integer, got a group\n"
          "@F@:20: ota.report_progress: expected a boolean, got a string\n"
          "@F@:21: ota.retries: expected an integer, got an array\n"
          "@F@:24: registration: expected a group, got an integer\n" },
        { "bad-range.conf", -EINVAL,
          "@F@:3: mqtt.keepalive: 4 is out of range 5..65535\n"
          "@F@:4: mqtt.reconnect_max: 86401 is out of range 1..86400\n"
          "@F@:15: report.interval: 0 is out of range 1..604800\n"
          "@F@:16: registration.timeout: -1 is out of range 1..3600\n"
          "@F@:18: ota.max_image_size: 1125899906842625 is out of range 1..1125899906842624\n"
          "@F@:19: ota.stall_timeout: 5000000000 is out of range 5..3600\n"
          "@F@:20: ota.max_redirects: 21 is out of range 0..20\n" },
        { "bad-missing.conf", -EINVAL,
          "@F@:1: mqtt.uri: required key is missing\n"
          "@F@:4: product.id: required key is missing\n"
          "@F@:7: device.id: required key is missing (or device.id_from)\n"
          "@F@:7: device.hw_version: required key is missing (or device.hw_version_file)\n"
          "@F@:7: device.fw_version: required key is missing (or device.fw_version_file, or "
          "device.fw_version_from_hook = true)\n" },
        { "bad-missing-groups.conf", -EINVAL,
          "@F@: mqtt: required group is missing\n"
          "@F@: product: required group is missing\n"
          "@F@: device: required group is missing\n" },
        { "bad-both.conf", -EINVAL,
          "@F@:7: product.secret_file: cannot be set together with product.secret\n"
          "@F@:11: device.id_from: cannot be set together with device.id\n"
          "@F@:13: device.hw_version_file: cannot be set together with device.hw_version\n"
          "@F@:15: device.fw_version_file: cannot be set together with device.fw_version\n"
          "@F@:16: device.fw_version_from_hook: cannot be set together with device.fw_version\n" },
        { "bad-id-from.conf", -EINVAL,
          "@F@:9: device.id_from: must be \"machine-id\", \"file:/ABSOLUTE/PATH\" or \"mac:IFACE\"\n" },
        { "bad-id-from-unreadable.conf", -EINVAL,
          "@F@:9: device.id_from: cannot read @D@/no-such-device-id: No such file or directory\n" },
        { "bad-id-from-mac.conf", -EINVAL,
          "@F@:9: device.id_from: mac: needs an interface name (1..15 characters, no /)\n" },
        { "bad-id-from-no-iface.conf", -EINVAL,
          "@F@:9: device.id_from: cannot read /sys/class/net/nosuchif0/address: "
          "No such file or directory\n" },
        { "bad-machine-id.conf", -EINVAL,
          "@F@:9: device.id_from: @D@/machine-id-uninitialized does not hold a machine ID (32 hex digits)\n",
          "machine-id-uninitialized" },
        { "bad-scheme.conf", -EINVAL, "@F@:2: mqtt.uri: must start with tcp:// or ssl://\n" },
        { "bad-no-port.conf", -EINVAL, "@F@:2: mqtt.uri: port is missing\n" },
        { "bad-port.conf", -EINVAL, "@F@:2: mqtt.uri: port must be a number 1..65535\n" },
        { "bad-placeholder.conf", -EINVAL, "@F@:3: mqtt.client_id: unknown placeholder {serial}\n" },
        { "bad-relative.conf", -EINVAL,
          "@F@:1: state_dir: must be an absolute path\n"
          "@F@:4: mqtt.ca_file: must be an absolute path\n"
          "@F@:8: product.secret_file: must be an absolute path\n"
          "@F@:11: device.id_from: file: needs an absolute path\n"
          "@F@:13: device.fw_version_file: must be an absolute path\n"
          "@F@:16: ota.hook: must be an absolute path\n"
          "@F@:17: ota.reboot_command: must start with the absolute path of a program\n"
          "@F@:18: ota.installer_socket: must be an absolute path\n" },
        { "bad-device-id.conf", -EINVAL,
          "@F@:5: product.id: must be 1..64 characters of A-Z a-z 0-9 . _ : -\n"
          "@F@:9: device.id: must be 1..64 characters of A-Z a-z 0-9 . _ : -\n"
          "@F@:10: device.hw_version: " VERSION_MUST "\n"
          "@F@:11: device.fw_version: " VERSION_MUST "\n" },
        { "bad-version.conf", -EINVAL,
          "@F@:11: device.hw_version: " VERSION_MUST "\n"
          "@F@:12: device.fw_version: " VERSION_MUST "\n" },
        /* Found by review: libconfig 1.5 took the rest of the file for a comment, silently. */
        { "bad-comment.conf", -EINVAL,
          "@F@:12: syntax error: /* comment is never closed: the rest of the file would be ignored\n" },
        { "bad-uri-userinfo.conf", -EINVAL, "@F@:4: mqtt.uri: " USERINFO_MUST_NOT "\n" },
        /* Found by review: a hook that cannot run was only found when an update came. */
        { "bad-hook.conf", -EINVAL,
          "@F@:2: state_dir: @D@/no-such-state-dir does not exist\n"
          "@F@:5: mqtt.keepalive: 1 is out of range 5..65535\n"
          "@F@:17: ota.hook: @D@/no-such-hook does not exist\n" },
        { "bad-hook-not-executable.conf", -EINVAL,
          "@F@:2: state_dir: @D@/device-id is not a directory\n"
          "@F@:16: ota.hook: @D@/device-id is not executable\n" },
        { "bad-hook-directory.conf", -EINVAL, "@F@:16: ota.hook: @D@ is a directory, not a program\n" },
        { "bad-secret-empty.conf", -EINVAL, "@F@:6: product.secret_file: @D@/empty.secret is empty\n" },
        { "bad-window.conf", -EINVAL,
          "@F@:16: ota.install_window: \"Mon..Fry 02:00-05:00\": unknown day \"Fry\" (days are Mon Tue Wed "
          "Thu Fri Sat Sun)\n"
          "@F@:17: ota.install_window: \"25:00-26:00\": \"25:00\": hour out of range 00..23 (and 24:00 as "
          "an end)\n"
          "@F@:19: ota.install_window: \"\": is empty: an entry is [DAYS ]HH:MM-HH:MM\n"
          "@F@:20: ota.install_window: \"Mon..Fri\": no times after the days: write \"Mon..Fri "
          "00:00-24:00\" for whole days\n"
          "@F@:21: ota.install_window: \"02:00-02:00\": starts and ends at the same time: an empty window "
          "(00:00-24:00 is a whole day)\n"
          "@F@:22: ota.install_window: entry 7: expected a string, got an integer\n"
          "@F@:23: ota.install_window: entry 8: expected a string, got a group\n"
          "@F@:24: ota.install_window: entry 9: expected a string, got an array\n"
          "@F@:26: ota.reboot_window: an empty list would never allow a reboot; leave the key out for any "
          "time\n"
          "@F@:27: ota.download_delay_max: 86401 is out of range 0..86400\n" },
        { "bad-three.conf", -EINVAL,
          "@F@:4: mqtt.keepalive: 1 is out of range 5..65535\n"
          "@F@:14: device.colour: unknown key\n"
          "@F@:16: log_level: must be one of err, warning, notice, info, debug\n" },
};

/* Loads PATH, expecting failure RET with exactly WANT (placeholders expanded) as output. */
static void check_bad(const char *path, int ret, const char *want, const char *name)
{
        _cleanup_free_ char *errors = NULL, *w1 = replace_all(want, "@F@", path),
                            *w2 = replace_all(w1, "@D@", DATA);
        _cleanup_config_ Config *c = NULL;
        int r;

        r = load(path, &errors, &c);
        printf("# %s\n", name);
        is_int(r, ret, "bad file fails with the expected error");
        ok(!c, "bad file: no Config");
        is_str(errors, w2, "bad file: exact error lines");
}

static void test_bad(void)
{
        unsigned with_secret = 0;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *path = NULL, *text = NULL, *errors = NULL, *md = NULL;
                _cleanup_config_ Config *c = NULL;

                if (bad[i].file)
                        path = stage(bad[i].file);
                else if (asprintf(&path, "%s/does-not-exist.conf", tmpdir) < 0)
                        abort();

                if (bad[i].machine_id && (asprintf(&md, "%s/%s", DATA, bad[i].machine_id) < 0 ||
                                          setenv("KRTIOT_MACHINE_ID_FILE", md, 1) < 0))
                        abort();

                check_bad(path, bad[i].ret, bad[i].want, bad[i].file ?: "missing file");
                setenv("KRTIOT_MACHINE_ID_FILE", DATA "/machine-id", 1);

                /* The secret check only means something for files that hold it. */
                text = read_text(path);
                if (!text || !strstr(text, SECRET))
                        continue;
                with_secret++;
                load(path, &errors, &c);
                ok(errors && !strstr(errors, SECRET), "error output never contains product.secret");
        }
        ok(with_secret >= 15, "the secret check ran on most bad files");
}

/* Files a data directory cannot hold well: too big, binary, a directory, a FIFO, a link. */
static void test_unreadable(void)
{
        _cleanup_free_ char *big = malloc(CONFIG_MAX_FILE_SIZE + 1), *big_path = NULL, *nul_path = NULL,
                            *fifo = NULL, *target = NULL, *link = NULL, *errors = NULL;
        _cleanup_config_ Config *c = NULL;
        static const char nul[] = "mqtt = {\0};\n";

        if (!big)
                abort();
        memset(big, '#', CONFIG_MAX_FILE_SIZE);
        big[CONFIG_MAX_FILE_SIZE] = '\n';
        big_path = put("big.conf", big, CONFIG_MAX_FILE_SIZE + 1);
        check_bad(big_path, -EFBIG, "@F@: cannot read: larger than 65536 bytes\n", "file over 64 KiB");

        nul_path = put("nul.conf", nul, sizeof(nul) - 1);
        check_bad(nul_path, -EINVAL, "@F@: cannot read: not a text file (contains a NUL byte)\n",
                  "NUL byte");

        check_bad(tmpdir, -EISDIR, "@F@: cannot read: Is a directory\n", "a directory");

        /* Nobody writes to it: opened blocking, this would hang (and the daemon with it). */
        if (asprintf(&fifo, "%s/fifo.conf", tmpdir) < 0 || mkfifo(fifo, 0600) < 0)
                abort();
        check_bad(fifo, -EBADFD, "@F@: cannot read: not a regular file\n", "a FIFO");

        /* Integrators link the file from elsewhere: followed. */
        target = stage("good-minimal.conf");
        if (asprintf(&link, "%s/link.conf", tmpdir) < 0 || symlink(target, link) < 0)
                abort();
        is_int(load(link, &errors, &c), 0, "a symbolic link to a good file loads");
        is_str(errors, "", "  without a word");
}

/* ---- generated: URIs, client id templates, integer literals ---- */

#define X16 "xxxxxxxxxxxxxxxx"
#define X128 X16 X16 X16 X16 X16 X16 X16 X16

/* Line 2 is the mqtt group's body, line 6 the ota group's. */
static const char template[] = "mqtt = {\n"
                               "        @MQTT@\n"
                               "};\n"
                               "product = { id = \"P1\"; secret = \"" SECRET "\"; };\n"
                               "device = { id = \"D1\"; hw_version = \"1\"; fw_version = \"2\"; };\n"
                               "ota = { hook = \"" DATA "/hook\"; @OTA@ };\n"
                               "state_dir = \"" DATA "\";\n";

static const struct {
        const char *mqtt, *ota;
        const char *want; /* "" for a valid file */
        const char *host, *client_id;
        unsigned port;
        uint64_t rate_limit;
} generated[] = {
        { "uri = \"ssl://[fe80::1:2]:8883\";", "", "", "fe80::1:2", "P1", 8883 },
        { "uri = \"tcp://[::1]x:1\";", "", "@F@:2: mqtt.uri: has text between the address and :PORT\n" },
        { "uri = \"tcp://[::1:1883\";", "", "@F@:2: mqtt.uri: has an unterminated [\n" },
        { "uri = \"tcp://[host]:1883\";", "", "@F@:2: mqtt.uri: has an invalid IPv6 address\n" },
        { "uri = \"tcp://user@host:1883\";", "", "@F@:2: mqtt.uri: " USERINFO_MUST_NOT "\n" },
        /* Found by review: this was "port must be a number 1..65535". */
        { "uri = \"tcp://user:pass@host:1883\";", "", "@F@:2: mqtt.uri: " USERINFO_MUST_NOT "\n" },
        { "uri = \"ssl://user:pass@[::1]:8883\";", "", "@F@:2: mqtt.uri: " USERINFO_MUST_NOT "\n" },
        { "uri = \"tcp://:1883\";", "", "@F@:2: mqtt.uri: host is missing\n" },
        { "uri = \"tcp://host:\";", "", "@F@:2: mqtt.uri: port is missing\n" },
        { "uri = \"tcp://host:0\";", "", "@F@:2: mqtt.uri: port must be a number 1..65535\n" },
        { "uri = \"tcp://host:1883/\";", "", "@F@:2: mqtt.uri: port must be a number 1..65535\n" },
        { "uri = \"TCP://host:1883\";", "", "@F@:2: mqtt.uri: must start with tcp:// or ssl://\n" },
        { "uri = \"tcp://h:1\"; client_id = \"{product_id\";", "",
          "@F@:2: mqtt.client_id: has an unterminated {\n" },
        { "uri = \"tcp://h:1\"; client_id = \"{}\";", "",
          "@F@:2: mqtt.client_id: unknown placeholder {}\n" },
        { "uri = \"tcp://h:1\"; client_id = \"\";", "",
          "@F@:2: mqtt.client_id: must expand to 1..128 characters\n" },
        { "uri = \"tcp://h:1\"; client_id = \"" X128 "\";", "", "", "h", X128, 1 },
        { "uri = \"tcp://h:1\"; client_id = \"" X128 "{device_id}\";", "",
          "@F@:2: mqtt.client_id: must expand to 1..128 characters\n" },
        /* Digits inside strings and comments are not integer literals. */
        { "uri = \"tcp://h:1\"; client_id = \"5000000000\"; /* 5000000000 */", "rate_limit = 1;", "", "h",
          "5000000000", 1, 1 },
        /* libconfig reads a leading 0 as decimal: so must the promotion. */
        { "uri = \"tcp://h:1\";", "rate_limit = 05000000000;", "", "h", "P1", 1, 5000000000ULL },
        { "uri = \"tcp://h:1\";", "rate_limit = 0x100000000;", "", "h", "P1", 1, 4294967296ULL },
        { "uri = \"tcp://h:1\";", "rate_limit = 1.5e10;",
          "@F@:6: ota.rate_limit: expected an integer, got a float\n" },
        { "uri = \"tcp://h:1\";", "max_image_size = -5000000000;",
          "@F@:6: ota.max_image_size: -5000000000 is out of range 1..1125899906842624\n" },
        /* sun_path holds 107 bytes and a NUL: a longer path could never be connected to. */
        { "uri = \"tcp://h:1\";", "installer_socket = \"/" X16 X16 X16 X16 X16 X16 "xxxxxxxxxx\";", "", "h",
          "P1", 1 },
        { "uri = \"tcp://h:1\";", "installer_socket = \"/" X16 X16 X16 X16 X16 X16 "xxxxxxxxxxx\";",
          "@F@:6: ota.installer_socket: must be at most 107 bytes (a Unix socket's path)\n" },
};

static void test_generated(void)
{
        for (size_t i = 0; i < ELEMENTSOF(generated); i++) {
                _cleanup_free_ char *t1 = replace_all(template, "@MQTT@", generated[i].mqtt),
                                    *t2 = replace_all(t1, "@OTA@", generated[i].ota),
                                    *path = put("generated.conf", t2, strlen(t2)), *errors = NULL;
                _cleanup_config_ Config *c = NULL;

                if (*generated[i].want) {
                        check_bad(path, -EINVAL, generated[i].want, generated[i].mqtt);
                        continue;
                }

                printf("# %s %s\n", generated[i].mqtt, generated[i].ota);
                is_int(load(path, &errors, &c), 0, "generated: loads");
                is_str(errors, "", "generated: no error output");
                if (!c)
                        continue;
                is_str(c->mqtt_host, generated[i].host, "generated: host");
                is_int(c->mqtt_port, generated[i].port, "generated: port");
                is_str(c->mqtt_client_id, generated[i].client_id, "generated: client_id");
                is_int(c->ota_rate_limit, generated[i].rate_limit, "generated: rate_limit");
        }
}

/* ---- generated: update windows and the download delay (the ota group is line 6) ---- */

#define ENTRY "\"01:00-02:00\", "
#define ENTRY8 ENTRY ENTRY ENTRY ENTRY ENTRY ENTRY ENTRY ENTRY
#define ENTRY63 ENTRY8 ENTRY8 ENTRY8 ENTRY8 ENTRY8 ENTRY8 ENTRY8 ENTRY ENTRY ENTRY ENTRY ENTRY ENTRY ENTRY
#define LIST_OF "@F@:6: ota.install_window: expected a list of strings, got "

static const struct {
        const char *ota;
        const char *want; /* "" for a valid file */
        size_t n_install, n_reboot;
        unsigned delay;
} windows[] = {
        { "install_window = [ \"02:00-05:00\" ];", "", 1, 0, 0 },
        { "reboot_window = ( \"Sun 22:00-02:00\" ); download_delay_max = 0;", "", 0, 1, 0 },
        { "install_window = [ " ENTRY63 "\"01:00-02:00\" ]; download_delay_max = 1;", "", 64, 0, 1 },
        { "install_window = [ " ENTRY63 ENTRY "\"01:00-02:00\" ];",
          "@F@:6: ota.install_window: has 65 entries, at most 64 are allowed\n" },
        { "install_window = 5;", LIST_OF "an integer\n" },
        { "install_window = \"Mon 02:00-05:00\";",
          LIST_OF "a string (write [ \"...\" ], even for one entry)\n" },
        { "install_window = { from = \"02:00\"; };", LIST_OF "a group\n" },
        { "install_window = true;", LIST_OF "a boolean\n" },
        { "install_window = ();",
          "@F@:6: ota.install_window: an empty list would never allow an install; leave the key out for any "
          "time\n" },
        { "reboot_window = [ 1, 2 ];",
          "@F@:6: ota.reboot_window: entry 1: expected a string, got an integer\n"
          "@F@:6: ota.reboot_window: entry 2: expected a string, got an integer\n" },
        { "install_window = [ \"Mon\\x01 02:00-05:00\" ];",
          "@F@:6: ota.install_window: \"Mon\\x01 02:00-05:00\": unexpected \"\\x01 02:00-05:00\" after a "
          "day\n" },
        { "install_window = [ \"02:00-05:00 " X16 X16 X16 "\" ];",
          "@F@:6: ota.install_window: \"02:00-05:00 " X16 X16 X16 "\": unexpected "
          "\"xxxxxxxxxxxxxxxxxxxxxxxx...\" after the end time\n" },
        { "install_window = [ \"02:00-05:00 " X16 X16 X16 X16 "\" ];",
          "@F@:6: ota.install_window: \"02:00-05:00 " X16 X16 X16 "xxxx...\": unexpected "
          "\"xxxxxxxxxxxxxxxxxxxxxxxx...\" after the end time\n" },
        { "install_window = [ \"02:00-05:00\" ]; reboot_window = [ \"Mon-Fri 01:00-02:00\" ];",
          "@F@:6: ota.reboot_window: \"Mon-Fri 01:00-02:00\": \"-\" after a day: a range of days is written "
          "Mon..Fri\n" },
        { "download_delay_max = -1;", "@F@:6: ota.download_delay_max: -1 is out of range 0..86400\n" },
        { "download_delay_max = 1.5;", "@F@:6: ota.download_delay_max: expected an integer, got a float\n" },
        { "download_delay_max = \"60\";",
          "@F@:6: ota.download_delay_max: expected an integer, got a string\n" },
};

static void test_windows(void)
{
        for (size_t i = 0; i < ELEMENTSOF(windows); i++) {
                _cleanup_free_ char *t1 = replace_all(template, "@MQTT@", "uri = \"tcp://h:1\";"),
                                    *t2 = replace_all(t1, "@OTA@", windows[i].ota),
                                    *path = put("generated.conf", t2, strlen(t2)), *errors = NULL;
                _cleanup_config_ Config *c = NULL;

                if (*windows[i].want) {
                        check_bad(path, -EINVAL, windows[i].want, windows[i].ota);
                        continue;
                }

                printf("# %.100s\n", windows[i].ota);
                is_int(load(path, &errors, &c), 0, "windows: loads");
                is_str(errors, "", "windows: no error output");
                if (!c)
                        continue;
                is_int(c->ota_install_window ? c->ota_install_window->n_entries : 0, windows[i].n_install,
                       "windows: install_window entries (0: unset)");
                is_int(c->ota_reboot_window ? c->ota_reboot_window->n_entries : 0, windows[i].n_reboot,
                       "windows: reboot_window entries (0: unset)");
                is_int(c->ota_download_delay_max, windows[i].delay, "windows: download_delay_max");
        }
}

/* ---- the rest of the interface ---- */

static Config *load_good(const char *file)
{
        _cleanup_free_ char *path = stage(file), *errors = NULL;
        Config *c = NULL;

        if (load(path, &errors, &c) < 0)
                printf("# %s: %s", file, errors ?: "");
        return c;
}

static void test_session_equal(void)
{
        _cleanup_config_ Config *a = load_good("good-minimal.conf");
        _cleanup_config_ Config *b = load_good("good-minimal-other.conf");
        _cleanup_config_ Config *s = load_good("good-ssl.conf");
        _cleanup_config_ Config *f = load_good("good-full.conf");

        ok(a && b && s && f, "session_equal: inputs load");
        if (!a || !b || !s || !f)
                return;
        ok(config_session_equal(a, a), "session_equal: a config equals itself");
        ok(config_session_equal(a, b), "session_equal: reconnect_max, versions, report, ota do not count");
        ok(!config_session_equal(a, s), "session_equal: another broker URI counts");
        ok(!config_session_equal(a, f), "session_equal: other IDs count");
        free(b->product_secret);
        b->product_secret = xstrdup("another-secret");
        ok(!config_session_equal(a, b), "session_equal: the product secret counts");
        ok(!config_session_equal(a, NULL) && config_session_equal(NULL, NULL), "session_equal: NULL");
        ok(config_unref(NULL) == NULL, "config_unref(NULL) returns NULL");
}

static void test_known_keys(void)
{
        _cleanup_free_ char *man = read_text(MAN_PAGE), *example = read_text(EXAMPLE);
        size_t n = 0;

        ok(man, "man page readable: " MAN_PAGE);
        ok(example, "example config readable: " EXAMPLE);
        for (; config_known_keys[n]; n++) {
                const char *key = config_known_keys[n], *dot = strrchr(key, '.');
                const char *leaf = dot ? dot + 1 : key;
                _cleanup_free_ char *bold = NULL, *assign = NULL, *msg = NULL;

                if (asprintf(&bold, "*%s*", key) < 0 || asprintf(&assign, "%s = ", leaf) < 0 ||
                    asprintf(&msg, "%s is documented in krtiot.conf(5) and the example", key) < 0)
                        abort();
                ok(man && strstr(man, bold) && example && strstr(example, assign), msg);
        }
        is_int(n, 35, "config_known_keys lists every key");
}

/* ---- the defaults of state_dir and ota.hook: there on a device, maybe not here ---- */

#define DEFAULT_STATE_DIR "/var/lib/krtiot"
#define DEFAULT_HOOK HOOKS_DIR "/swupdate"
#define STATE_DIR_MISSING                                                                                   \
        "@F@: state_dir: " DEFAULT_STATE_DIR " (the default) does not exist (krtiot.service's "             \
        "StateDirectory= creates it)\n"
#define HOOK_MISSING "@F@@L@: ota.hook: " DEFAULT_HOOK " (the default) does not exist\n"

/* 1: PATH is there as it should be, 0: it does not exist, -1: something else (the test cannot say). */
static int default_path_state(const char *path, bool dir)
{
        struct stat st;

        if (stat(path, &st) < 0)
                return errno == ENOENT ? 0 : -1;
        if (dir)
                return S_ISDIR(st.st_mode) ? 1 : -1;
        return S_ISREG(st.st_mode) && access(path, X_OK) == 0 ? 1 : -1;
}

static const char *path_state_name(int state)
{
        return state > 0 ? "exists" : state == 0 ? "is missing" : "is odd";
}

/*
 * What config_load() must say about the defaults on this host ("" when both
 * are there; "@L@" stands for the line of the ota group), or NULL when one
 * is there but unusable, which the test cannot predict.
 */
static const char *default_path_errors(void)
{
        static const char *const table[2][2] = {
                /* [state dir there][hook there] */
                [0][0] = STATE_DIR_MISSING HOOK_MISSING,
                [0][1] = STATE_DIR_MISSING,
                [1][0] = HOOK_MISSING,
                [1][1] = "",
        };
        int state = default_path_state(DEFAULT_STATE_DIR, true);
        int hook = default_path_state(DEFAULT_HOOK, false);

        printf("# here %s %s, %s %s\n", DEFAULT_STATE_DIR, path_state_name(state), DEFAULT_HOOK,
               path_state_name(hook));
        return state < 0 || hook < 0 ? NULL : table[state][hook];
}

/* Loads PATH, which leaves state_dir and ota.hook at their defaults (the ota group, if any, on OTA_LINE). */
static void check_defaults(const char *path, unsigned ota_line, const char *name)
{
        _cleanup_free_ char *errors = NULL, *line = NULL, *want = NULL;
        _cleanup_config_ Config *c = NULL;
        const char *expect = default_path_errors();

        if (!expect) {
                tap_count++;
                printf("ok %u - %s # SKIP a default path is there but not usable\n", tap_count, name);
                return;
        }
        if (*expect) {
                if ((ota_line ? asprintf(&line, ":%u", ota_line) : asprintf(&line, "%s", "")) < 0)
                        abort();
                want = replace_all(expect, "@L@", line);
                check_bad(path, -EINVAL, want, name);
                return;
        }

        printf("# %s\n", name);
        is_int(load(path, &errors, &c), 0, "defaults: loads where both defaults exist");
        is_str(errors, "", "defaults: no error output");
        if (!c)
                return;
        is_str(c->state_dir, DEFAULT_STATE_DIR, "defaults: state_dir");
        is_str(c->ota_hook, DEFAULT_HOOK, "defaults: ota.hook");
        is_str(c->ota_download_dir, DEFAULT_STATE_DIR "/download", "defaults: download_dir under state_dir");
}

/*
 * The defaults are checked like values that are written: they are what the
 * daemon will use. On a device the package and systemd's StateDirectory=
 * provide them; where the tests run they may be missing, and then the exact
 * messages are checked instead.
 */
static void test_defaults(void)
{
        static const char base[] = "mqtt = { uri = \"tcp://h:1\"; };\n"
                                   "product = { id = \"P1\"; secret = \"s\"; };\n"
                                   "device = { id = \"D1\"; hw_version = \"1\"; fw_version = \"2\"; };\n";
        static const char with_ota[] = "mqtt = { uri = \"tcp://h:1\"; };\n"
                                       "product = { id = \"P1\"; secret = \"s\"; };\n"
                                       "device = { id = \"D1\"; hw_version = \"1\"; fw_version = \"2\"; };\n"
                                       "ota = { retries = 1; };\n";
        _cleanup_free_ char *p1 = put("defaults.conf", base, strlen(base)),
                            *p2 = put("defaults-ota.conf", with_ota, strlen(with_ota));

        check_defaults(p1, 0, "defaults, no ota group");
        check_defaults(p2, 4, "defaults, an ota group (ota.hook reported at its line)");
}

/* The shipped file leaves state_dir and ota.hook at their defaults. */
static void test_example(void)
{
        check_defaults(EXAMPLE, 0, "the shipped example config is valid (but for defaults missing here)");
}

/* The staging directory holds only files. */
static void remove_tmpdir(void)
{
        DIR *d = opendir(tmpdir);
        struct dirent *de;

        while (d && (de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        (void)unlinkat(dirfd(d), de->d_name, 0);
        if (d)
                closedir(d);
        (void)rmdir(tmpdir);
}

int main(void)
{
        if (!mkdtemp(tmpdir))
                abort();
        /* Every machine-id case reads this, never the host's /etc/machine-id. */
        setenv("KRTIOT_MACHINE_ID_FILE", DATA "/machine-id", 1);

        test_good();
        test_bad();
        test_unreadable();
        test_generated();
        test_windows();
        test_session_equal();
        test_known_keys();
        test_defaults();
        test_example();

        remove_tmpdir();
        return tap_done();
}
