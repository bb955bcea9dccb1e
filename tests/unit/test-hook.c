/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for hook.c, the hook contract, with real hooks (/bin/sh scripts) in
 * a real sd-event loop: the image opened only when it is a regular file of
 * the agent's user (not a link, a FIFO, a directory, another owner's file,
 * or a key that is not a job key); the IMAGE path the hook gets reads the
 * bytes that were checked, even after the name was replaced; the KRTIOT_*
 * environment of each verb; exit 0, 10 and others, a signal and the
 * timeout in words; the version's first line; the reboot command.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hook.h"
#include "tap.h"
#include "util/macro.h"

#define KEY "ABCDEFGHIJ01"
#define RUN_MAX_USEC (30 * USEC_PER_SEC)

static char tmpdir[] = "/tmp/krtiot-test-hook-XXXXXX";

typedef struct Run {
        unsigned calls;
        InstallAnswer answer;
        char reason[1024], version[128];
} Run;

static char *path_in(const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", tmpdir, name) < 0)
                abort();
        return p;
}

static void put(const char *name, const char *text, mode_t mode)
{
        _cleanup_free_ char *p = path_in(name);
        FILE *f = fopen(p, "w");

        if (!f || fputs(text, f) < 0 || fclose(f) != 0 || chmod(p, mode) < 0)
                abort();
}

static char *slurp(const char *name)
{
        _cleanup_free_ char *p = path_in(name);
        char *buf = calloc(1, 65536);
        FILE *f = fopen(p, "r");

        if (!buf)
                abort();
        if (f) {
                (void)!fread(buf, 1, 65535, f);
                fclose(f);
        }
        return buf;
}

/* The hook of the tests: records its argv and environment, reads the image, then does what $ACTION says. */
static const char HOOK[] = "#!/bin/sh\n"
                           "d=$(dirname \"$0\")\n"
                           "printf '%s|' \"$@\" > \"$d/argv\"\n"
                           "env | grep '^KRTIOT_' | sort > \"$d/env\"\n"
                           "[ \"$1\" = install ] && cat \"$2\" > \"$d/read\"\n"
                           "a=$(cat \"$d/action\")\n"
                           "eval \"$a\"\n";

static void set_action(const char *action)
{
        put("action", action, 0644);
}

static void on_done(Hook *h, const InstallAnswer *a, void *userdata)
{
        Run *run = userdata;

        run->calls++;
        run->answer = *a;
        if (a->reason) {
                (void)snprintf(run->reason, sizeof(run->reason), "%s", a->reason);
                run->answer.reason = run->reason;
        }
        if (a->version) {
                (void)snprintf(run->version, sizeof(run->version), "%s", a->version);
                run->answer.version = run->version;
        }
        hook_free(h); /* from the callback: allowed */
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
        return sd_event_exit(sd_event_source_get_event(s), 1);
}

/* Runs REQ with CONFIG until it ends; returns hook_start()'s result. */
static int run_hook(const Config *config, const InstallRequest *req, int image_fd, Run *run)
{
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        InstallAnswer now = {};
        Hook *h = NULL;
        int r;

        *run = (Run){};
        if (sd_event_new(&e) < 0 ||
            sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, RUN_MAX_USEC, 0, on_deadline, NULL) < 0)
                abort();
        r = hook_start(e, config, req, image_fd, on_done, run, &h, &now);
        if (r == 1) {
                run->calls++;
                run->answer = now;
                return r;
        }
        if (r < 0)
                return r;
        while (run->calls == 0 && sd_event_get_state(e) != SD_EVENT_FINISHED)
                if (sd_event_run(e, UINT64_MAX) < 0)
                        break;
        if (run->calls == 0)
                hook_free(h);
        return r;
}

static Config *config_for_tests(void)
{
        Config *c = calloc(1, sizeof(*c));

        if (!c)
                abort();
        c->n_ref = 1;
        c->ota_hook = path_in("hook");
        c->state_dir = path_in("state");
        c->ota_download_dir = path_in("download");
        c->ota_hook_timeout = 30;
        return c;
}

static void config_done(Config *c)
{
        free(c->ota_hook);
        free(c->state_dir);
        free(c->ota_download_dir);
        free(c);
}

static void test_open_image(const Config *c)
{
        char reason[512];
        _cleanup_free_ char *img = path_in("download/" KEY ".img"), *target = path_in("secret");
        int fd;

        unlink(img);
        is_int(hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason)), -ENOENT,
               "image: missing");
        ok(strstr(reason, "no image " KEY ".img in the download directory"), "  says so");

        put("secret", "root's", 0600);
        if (symlink(target, img) < 0)
                abort();
        is_int(hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason)), -ELOOP,
               "image: a symbolic link is refused");
        ok(strstr(reason, "is a symbolic link"), "  says so");
        unlink(img);

        if (mkfifo(img, 0600) < 0)
                abort();
        /* Nobody writes it: a blocking open would hang here. */
        is_int(hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason)), -EBADFD,
               "image: a FIFO is refused, at once");
        ok(strstr(reason, "not a regular file"), "  says so");
        unlink(img);

        if (mkdir(img, 0700) < 0)
                abort();
        is_int(hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason)), -EISDIR,
               "image: a directory is refused");
        rmdir(img);

        put("download/" KEY ".img", "image bytes", 0600);
        if (getuid() == 0) {
                _cleanup_free_ char *other = path_in("download/elsewhere");

                if (chown(img, 4243, 4243) < 0)
                        abort();
                is_int(hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason)), -EPERM,
                       "image: a file of another user is refused");
                ok(strstr(reason, "belongs to uid 4243, not to the agent's user (uid 0)"), "  says so");
                if (chown(img, 0, 0) < 0)
                        abort();

                /* Root's, one link: what RAUC leaves when it took a bundle over (the agent: uid 4242). */
                fd = hook_open_image(c->ota_download_dir, KEY, 4242, reason, sizeof(reason));
                ok(fd >= 0, "image: root's with one link is taken (a bundle RAUC took over)");
                if (fd >= 0)
                        close(fd);
                if (link(img, other) < 0)
                        abort();
                is_int(hook_open_image(c->ota_download_dir, KEY, 4242, reason, sizeof(reason)), -EPERM,
                       "image: root's with two links is refused (a link to a file of root's)");
                ok(strstr(reason, "belongs to root and has 2 links"), "  says so");
                unlink(other);
        } else {
                is_int(hook_open_image(c->ota_download_dir, KEY, getuid() + 1, reason, sizeof(reason)),
                       -EPERM, "image: a file of another user is refused");
                ok(strstr(reason, "not to the agent's user"), "  says so");
        }

        is_int(hook_open_image(c->ota_download_dir, "../secret000", getuid(), reason, sizeof(reason)),
               -EINVAL, "image: a key that is not a job key never makes a path");

        fd = hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason));
        ok(fd >= 0, "image: a regular file of the agent's user opens");
        if (fd >= 0)
                close(fd);
}

static void test_install(const Config *c)
{
        InstallRequest req = { .op = INSTALL_OP_INSTALL,
                              .key = KEY,
                              .id = "job id with spaces",
                              .target = "2.0.1",
                              .url = "http://127.0.0.1/fw.img?$(touch${IFS}/tmp/krtiot-pwned)" };
        _cleanup_free_ char *img = path_in("download/" KEY ".img"), *argv = NULL, *env = NULL, *read = NULL,
                            *want_argv = NULL, *want_env = NULL, *state = path_in("state");
        char reason[512];
        Run run;
        int fd;

        put("download/" KEY ".img", "the checked image", 0600);
        fd = hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason));
        if (fd < 0)
                abort();
        /* Whatever replaces the name now, the hook reads what was checked. */
        unlink(img);
        put("download/" KEY ".img", "swapped in later", 0600);

        set_action("exit 0");
        is_int(run_hook(c, &req, fd, &run), 0, "install: starts");
        ok(run.calls == 1 && run.answer.type == INSTALL_ANSWER_DONE &&
                   run.answer.outcome == INSTALL_OUTCOME_INSTALLED,
           "install: exit 0 is done outcome=installed");
        read = slurp("read");
        is_str(read, "the checked image", "install: IMAGE reads the bytes that were checked");
        argv = slurp("argv");
        if (asprintf(&want_argv, "install|/proc/%d/fd/%d|", (int)getpid(), fd) < 0)
                abort();
        is_str(argv, want_argv, "install: argv is install and /proc/OURPID/fd/N");
        env = slurp("env");
        if (asprintf(&want_env,
                     "KRTIOT_IMAGE=/proc/%d/fd/%d\nKRTIOT_JOB_ID=job id with spaces\nKRTIOT_STATE_DIR=%s\n"
                     "KRTIOT_TARGET_VERSION=2.0.1\nKRTIOT_URL=%s\n",
                     (int)getpid(), fd, state, req.url) < 0)
                abort();
        is_str(env, want_env, "install: the job's environment, as strings");
        ok(access("/tmp/krtiot-pwned", F_OK) < 0, "install: nothing in the URL was run");
        ok(fcntl(fd, F_GETFD) < 0, "install: the image is closed once the hook has ended");

#define INSTALL_WITH(action, what)                                                                          \
        do {                                                                                                \
                fd = hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason));           \
                set_action(action);                                                                         \
                is_int(run_hook(c, &req, fd, &run), 0, what ": starts");                                    \
        } while (0)

        INSTALL_WITH("exit 10", "install exit 10");
        ok(run.answer.outcome == INSTALL_OUTCOME_REBOOT && !run.answer.reason, "install: exit 10 is reboot");

        INSTALL_WITH("echo progress; echo 'the installer says: bad signature' >&2; exit 3",
                     "install exit 3");
        ok(run.answer.outcome == INSTALL_OUTCOME_FAILED, "install: exit 3 failed");
        is_str(run.answer.reason,
               "the install hook failed with exit status 3: the installer says: bad signature",
               "install: the reason, with the last line of stderr");

        INSTALL_WITH("echo crashing >&2; ulimit -c 0; kill -SEGV $$", "install SEGV");
        is_str(run.answer.reason, "the install hook was killed by signal SEGV: crashing",
               "install: a signal by its name");

        {
                Config slow = *c;

                slow.ota_hook_timeout = 1;
                fd = hook_open_image(c->ota_download_dir, KEY, getuid(), reason, sizeof(reason));
                set_action("exec sleep 20");
                is_int(run_hook(&slow, &req, fd, &run), 0, "install timeout: starts");
                is_str(run.answer.reason, "the install hook timed out after 1 s",
                       "install: the timeout, from the installer's configuration");
        }

        is_int(run_hook(c, &req, -1, &run), -EINVAL, "install: without an image, nothing runs");
}

static void test_commit_version(const Config *c)
{
        InstallRequest commit = { .op = INSTALL_OP_COMMIT, .key = KEY, .id = "J7", .target = "2.0.1" };
        InstallRequest version = { .op = INSTALL_OP_VERSION };
        _cleanup_free_ char *env = NULL, *argv = NULL, *want_env = NULL, *state = path_in("state");
        Run run;

        set_action("exit 0");
        is_int(run_hook(c, &commit, -1, &run), 0, "commit: starts");
        ok(run.answer.type == INSTALL_ANSWER_DONE && run.answer.outcome == INSTALL_OUTCOME_INSTALLED,
           "commit: exit 0 is done");
        argv = slurp("argv");
        is_str(argv, "commit|", "commit: argv");
        env = slurp("env");
        if (asprintf(&want_env,
                     "KRTIOT_IMAGE=\nKRTIOT_JOB_ID=J7\nKRTIOT_STATE_DIR=%s\nKRTIOT_TARGET_VERSION=2.0.1\n"
                     "KRTIOT_URL=\n",
                     state) < 0)
                abort();
        is_str(env, want_env, "commit: the job's environment, no image, no URL");
        set_action("echo 'mark-good failed' >&2; exit 1");
        run_hook(c, &commit, -1, &run);
        is_str(run.answer.reason, "the hook's commit failed with exit status 1: mark-good failed",
               "commit: a failure in words");

        set_action("printf '  2.0.1+b7 \\nsecond line\\n'");
        is_int(run_hook(c, &version, -1, &run), 0, "version: starts");
        ok(run.answer.type == INSTALL_ANSWER_VERSION, "version: a version answer");
        is_str(run.answer.version, "2.0.1+b7", "version: the first line, trimmed");
        free(env);
        env = slurp("env");
        is_str(env, "", "version: no KRTIOT_* variables");

        set_action("echo 'not a version'");
        run_hook(c, &version, -1, &run);
        ok(run.answer.type == INSTALL_ANSWER_DONE && run.answer.outcome == INSTALL_OUTCOME_FAILED,
           "version: no version is a failure");
        ok(run.answer.reason && strstr(run.answer.reason, "printed no version"), "  that says so");
        set_action("echo 'no status file' >&2; exit 2");
        run_hook(c, &version, -1, &run);
        is_str(run.answer.reason, "the hook's version failed with exit status 2: no status file",
               "version: a failing hook in words");
}

static void test_reboot(Config *c)
{
        InstallRequest reboot = { .op = INSTALL_OP_REBOOT, .key = KEY };
        char *ok_argv[] = { (char *)"/bin/sh", (char *)"-c", (char *)"echo rebooting", NULL };
        char *bad_argv[] = { (char *)"/bin/sh", (char *)"-c", (char *)"echo 'not now' >&2; exit 1", NULL };
        Run run;

        c->ota_reboot_argv = NULL;
        is_int(run_hook(c, &reboot, -1, &run), 1, "reboot: no reboot command answers at once");
        ok(run.answer.outcome == INSTALL_OUTCOME_FAILED && strstr(run.answer.reason, "no reboot command"),
           "  failed, and says why");

        c->ota_reboot_argv = ok_argv;
        is_int(run_hook(c, &reboot, -1, &run), 0, "reboot: runs the configured command");
        ok(run.answer.outcome == INSTALL_OUTCOME_REBOOT, "reboot: exit 0 is done outcome=reboot");
        c->ota_reboot_argv = bad_argv;
        run_hook(c, &reboot, -1, &run);
        is_str(run.answer.reason, "the reboot command failed with exit status 1: not now",
               "reboot: a failure in words");
        c->ota_reboot_argv = NULL;
}

int main(void)
{
        _cleanup_free_ char *cmd = NULL;
        Config *c;
        sigset_t mask;

        /* process.c needs SIGCHLD blocked before the loop is made. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 || !mkdtemp(tmpdir))
                abort();
        c = config_for_tests();
        put("hook", HOOK, 0755);
        if (mkdir(c->state_dir, 0700) < 0 || mkdir(c->ota_download_dir, 0700) < 0)
                abort();

        test_open_image(c);
        test_install(c);
        test_commit_version(c);
        test_reboot(c);

        config_done(c);
        if (asprintf(&cmd, "rm -rf '%s'", tmpdir) >= 0)
                (void)!system(cmd);
        return tap_done();
}
