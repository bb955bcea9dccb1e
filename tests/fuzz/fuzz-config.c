/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for config_load(): any bytes as /etc/krtiot.conf. The
 * input goes to one file, created once and rewritten for each input; errors
 * go to /dev/null (their text is the unit tests' business). An accepted
 * Config must hold what config.h promises (IDs, broker host and port, the
 * exactly-one-of version sources). config_load may read files the config
 * names: the seed corpus points at small data files this target writes to
 * FUZZ_DATA_DIR at start-up (copies of tests/unit/data/config's), so that
 * those paths are covered too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define FUZZ_DATA_DIR "/tmp/krtiot-fuzz-data"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], path[128];
static FILE *devnull;

static void cleanup(void)
{
        (void)unlink(path);
        (void)rmdir(dir);
}

static void put(const char *name, const char *content)
{
        char p[256];
        int fd;

        snprintf(p, sizeof(p), "%s/%s", FUZZ_DATA_DIR, name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content) || close(fd) < 0)
                abort();
}

static void setup(void)
{
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

        snprintf(dir, sizeof(dir), "%s/fuzz-config.XXXXXX", base);
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/krtiot.conf", dir);
        atexit(cleanup);
        devnull = fopen("/dev/null", "we");
        if (!devnull)
                abort();

        /* The files tests/unit/data/config provides, at a fixed path the seeds can name. */
        if (mkdir(FUZZ_DATA_DIR, 0755) < 0 && errno != EEXIST)
                abort();
        put("product.secret", "s3cr3t-from-file\n");
        put("empty.secret", "");
        put("device-id", "  SN-0042:rev.B\n\n");
        put("machine-id", "0123456789abcdef0123456789abcdef\n");
        put("machine-id-uninitialized", "uninitialized\n");
        /* ota.hook must exist and be executable (it is never run); FUZZ_DATA_DIR is the seeds' state_dir. */
        put("hook", "#!/bin/sh\nexit 0\n");
        if (chmod(FUZZ_DATA_DIR "/hook", 0755) < 0)
                abort();
        /* As test-config does: never the host's /etc/machine-id. */
        setenv("KRTIOT_MACHINE_ID_FILE", FUZZ_DATA_DIR "/machine-id", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Config *c = NULL;
        int fd, r;

        if (!dir[0])
                setup();

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
                abort();

        r = config_load(path, devnull, &c);
        if (r < 0) {
                if (c)
                        abort(); /* "*ret untouched" */
                return 0;
        }
        if (!c || !c->path || !c->product_id || !*c->product_id || !c->product_secret || !c->device_id ||
            !*c->device_id || !c->mqtt_uri || !c->mqtt_host || !*c->mqtt_host || c->mqtt_port == 0 ||
            c->mqtt_port > 65535 || !c->mqtt_client_id || !c->state_dir || c->state_dir[0] != '/' ||
            !c->ota_hook || c->ota_hook[0] != '/' || !c->ota_download_dir || c->ota_download_dir[0] != '/')
                abort();
        if (!!c->hw_version + !!c->hw_version_file != 1 ||
            !!c->fw_version + !!c->fw_version_file + c->fw_version_from_hook != 1)
                abort();
        if (c->mqtt_keepalive < 5 || c->mqtt_keepalive > 65535 || c->mqtt_reconnect_max < 1 ||
            c->mqtt_reconnect_max > 86400 || c->ota_max_image_size < 1 ||
            c->ota_max_image_size > (1ULL << 50) || c->report_interval < 1 || c->report_interval > 604800 ||
            c->registration_timeout < 1 || c->registration_timeout > 3600)
                abort();
        if (!config_session_equal(c, c))
                abort();
        config_unref(c);
        return 0;
}
