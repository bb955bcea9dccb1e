/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for outcomes.c: the runtime directory made ready (and refused when
 * others could write it), records written and read back, what is not a
 * record refused, the oldest dropped beyond OUTCOMES_MAX, and what a kill
 * during a write leaves removed at the next start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outcomes.h"
#include "tap.h"
#include "util/macro.h"

static char tmpdir[] = "/tmp/krtiot-test-outcomes-XXXXXX";

static const InstallAnswer done_reboot = { .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_REBOOT };
static const InstallAnswer done_installed = { .type = INSTALL_ANSWER_DONE,
                                             .outcome = INSTALL_OUTCOME_INSTALLED };
static const InstallAnswer unknown = { .type = INSTALL_ANSWER_UNKNOWN };

static char *path_in(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

static void put(const char *dir, const char *name, const char *text)
{
        _cleanup_free_ char *p = path_in(dir, name);
        FILE *f = fopen(p, "w");

        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
                abort();
}

static bool exists(const char *dir, const char *name)
{
        _cleanup_free_ char *p = path_in(dir, name);

        return access(p, F_OK) == 0;
}

static void test_prepare(void)
{
        _cleanup_free_ char *dir = path_in(tmpdir, "rt"), *open_dir = path_in(tmpdir, "open"),
                            *file = path_in(tmpdir, "file");
        struct stat st;

        is_int(outcomes_prepare(dir), 0, "prepare: creates a missing directory");
        ok(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700, "  mode 0700");
        is_int(outcomes_prepare(dir), 0, "prepare: an existing one is fine");

        put(dir, "ABCDEFGHIJKL.outcome.tmp.XXXXXXXXXXXX", "done outcome=reboot\n");
        put(dir, "ABCDEFGHIJKL.outcome", "done outcome=installed\n");
        put(dir, "other.tmp.XXXXXXXXXXXX", "not ours\n");
        is_int(outcomes_prepare(dir), 0, "prepare: again, with leftovers");
        ok(!exists(dir, "ABCDEFGHIJKL.outcome.tmp.XXXXXXXXXXXX"), "  a half-written record is removed");
        ok(exists(dir, "ABCDEFGHIJKL.outcome"), "  a record is kept");
        ok(exists(dir, "other.tmp.XXXXXXXXXXXX"), "  files that are not ours are left alone");

        /* Anyone who could write there could plant a "reboot" outcome. */
        if (mkdir(open_dir, 0700) < 0 || chmod(open_dir, 0777) < 0)
                abort();
        is_int(outcomes_prepare(open_dir), -EPERM, "prepare: refuses a directory others may write");
        put(tmpdir, "file", "x");
        is_int(outcomes_prepare(file), -ENOTDIR, "prepare: refuses a file");
}

static void test_save_load(void)
{
        _cleanup_free_ char *dir = path_in(tmpdir, "rt");
        static const char *const reason =
                "the install hook failed with exit status 1: 100% = broken \xc3\xa9";
        WireMessage msg = {};
        InstallAnswer a;

        is_int(outcomes_save(dir, "KEY000000001",
                             &(InstallAnswer){ .type = INSTALL_ANSWER_DONE,
                                              .outcome = INSTALL_OUTCOME_FAILED,
                                              .reason = reason }),
               0, "save: a failed install with its reason");
        is_int(outcomes_load(dir, "KEY000000001", &msg, &a), 0, "load: it");
        is_int(a.type, INSTALL_ANSWER_DONE, "  a done answer");
        is_int(a.outcome, INSTALL_OUTCOME_FAILED, "  failed");
        is_str(a.reason, reason, "  the reason, byte for byte");
        wire_message_done(&msg);

        is_int(outcomes_save(dir, "KEY000000001", &done_reboot), 0,
               "save: replaces the record of the same key");
        is_int(outcomes_load(dir, "KEY000000001", &msg, &a), 0, "load: the new one");
        ok(a.outcome == INSTALL_OUTCOME_REBOOT && !a.reason, "  reboot, no reason");
        wire_message_done(&msg);

        is_int(outcomes_load(dir, "KEY000000002", &msg, &a), -ENOENT, "load: none for another key");
        wire_message_done(&msg);

        is_int(outcomes_save(dir, "KEY000000001", &unknown), -EINVAL,
               "save: only a done answer is an outcome");
        is_int(outcomes_save(dir, "../../etc/xx", &done_reboot), -EINVAL,
               "save: a key that is not a job key never makes a path");
        is_int(outcomes_load(dir, "../../etc/xx", &msg, &a), -EINVAL, "load: neither does it there");
        wire_message_done(&msg);

        put(dir, "KEY000000003.outcome", "unknown\n");
        is_int(outcomes_load(dir, "KEY000000003", &msg, &a), -EBADMSG, "load: a record that is not done");
        wire_message_done(&msg);
        put(dir, "KEY000000004.outcome", "done outcome=rebooot\n");
        is_int(outcomes_load(dir, "KEY000000004", &msg, &a), -EBADMSG, "load: a record that does not parse");
        wire_message_done(&msg);

        is_int(outcomes_remove(dir, "KEY000000001"), 0, "remove: the record");
        is_int(outcomes_load(dir, "KEY000000001", &msg, &a), -ENOENT, "  then it is gone");
        wire_message_done(&msg);
        is_int(outcomes_remove(dir, "KEY000000001"), -ENOENT, "remove: again, -ENOENT");
}

static void test_prune(void)
{
        _cleanup_free_ char *dir = path_in(tmpdir, "prune");
        char name[32], key[16];
        unsigned left = 0;

        if (mkdir(dir, 0700) < 0)
                abort();
        /* OUTCOMES_MAX + 1 records with distinct times, K00 the oldest. */
        for (unsigned n = 0; n <= OUTCOMES_MAX; n++) {
                _cleanup_free_ char *p = NULL;
                struct timespec times[2] = { { .tv_sec = 1000000 + n }, { .tv_sec = 1000000 + n } };

                (void)snprintf(name, sizeof(name), "K%011u.outcome", n);
                put(dir, name, "done outcome=installed\n");
                p = path_in(dir, name);
                if (utimensat(AT_FDCWD, p, times, 0) < 0)
                        abort();
        }
        is_int(outcomes_save(dir, "NEWEST000000", &done_installed), 0,
               "prune: a save with OUTCOMES_MAX + 1 records there");
        ok(!exists(dir, "K00000000000.outcome") && !exists(dir, "K00000000001.outcome"),
           "  the two oldest are gone");
        ok(exists(dir, "K00000000002.outcome") && exists(dir, "NEWEST000000.outcome"), "  the rest stays");
        for (unsigned n = 0; n <= OUTCOMES_MAX; n++) {
                (void)snprintf(key, sizeof(key), "K%011u", n);
                (void)snprintf(name, sizeof(name), "%s.outcome", key);
                left += exists(dir, name);
        }
        is_int(left + exists(dir, "NEWEST000000.outcome"), OUTCOMES_MAX, "  OUTCOMES_MAX records are left");
}

int main(void)
{
        if (!mkdtemp(tmpdir))
                abort();
        test_prepare();
        test_save_load();
        test_prune();
        {
                _cleanup_free_ char *cmd = NULL;

                if (asprintf(&cmd, "rm -rf '%s'", tmpdir) >= 0)
                        (void)!system(cmd);
        }
        return tap_done();
}
