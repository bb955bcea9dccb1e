/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for credentials_load(): any bytes as
 * {state_dir}/credentials.json. An accepted store has three non-empty
 * fields; storing them again and loading gives the same three back (or
 * -E2BIG when the escaped text would exceed CREDENTIALS_MAX_SIZE, which
 * credentials_store documents). The files live on tmpfs when there is one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credentials.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], path[128], dir2[64], path2[128];

static void cleanup(void)
{
        (void)unlink(path);
        (void)unlink(path2);
        (void)rmdir(dir);
        (void)rmdir(dir2);
}

static void setup(void)
{
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

        snprintf(dir, sizeof(dir), "%s/fuzz-credentials.XXXXXX", base);
        snprintf(dir2, sizeof(dir2), "%s/fuzz-credentials.XXXXXX", base);
        if (!mkdtemp(dir) || !mkdtemp(dir2))
                abort();
        snprintf(path, sizeof(path), "%s/%s", dir, CREDENTIALS_FILE);
        snprintf(path2, sizeof(path2), "%s/%s", dir2, CREDENTIALS_FILE);
        atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Credentials *c = NULL, *back = NULL;
        int fd, r;

        if (!dir[0])
                setup();

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
                abort();

        r = credentials_load(dir, &c);
        if (r < 0) {
                if ((r != -EBADMSG && r != -EFBIG && r != -ENOMEM) || c)
                        abort();
                if (r == -EFBIG && size <= CREDENTIALS_MAX_SIZE)
                        abort();
                return 0;
        }
        if (!c || !c->product_id || !*c->product_id || !c->device_id || !*c->device_id ||
            !c->device_secret || !*c->device_secret || !credentials_match(c, c->product_id, c->device_id))
                abort();

        r = credentials_store(dir2, c->product_id, c->device_id, c->device_secret);
        if (r == 0) {
                if (credentials_load(dir2, &back) != 0 || strcmp(back->product_id, c->product_id) != 0 ||
                    strcmp(back->device_id, c->device_id) != 0 ||
                    strcmp(back->device_secret, c->device_secret) != 0)
                        abort(); /* a secret we accepted did not survive store and load */
                credentials_free(back);
        } else if (r != -E2BIG)
                abort();
        credentials_free(c);
        return 0;
}
