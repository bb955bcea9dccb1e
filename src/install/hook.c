/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hook contract (hook.h): the arguments, the environment and the exit
 * statuses of `HOOK install|commit|version` and of the reboot command, turned
 * into answers for the agent.
 *
 * Invariants:
 *  - argv[0] is always the installer's configured hook or reboot command;
 *    what came from the agent (the job's ID, target, URL) only ever travels
 *    as the value of a KRTIOT_* variable, and the image as a path of ours;
 *  - the image's descriptor stays open, in this process, until the hook has
 *    ended (hook_free() closes it), so the /proc path the hook got never
 *    names another file;
 *  - DONE is called exactly once, after the process has ended.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hook.h"
#include "process.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/random-id.h"
#include "util/strings.h"

/* What the log gets of one run (process.c cuts the rest). */
#define HOOK_LOG_MAX (256 * 1024)
#define HOOK_COMMIT_TIMEOUT_SEC 300
#define HOOK_VERSION_TIMEOUT_SEC 60
#define HOOK_VERSION_OUTPUT_MAX 4096
#define HOOK_REBOOT_TIMEOUT_SEC 120
/* "/proc/" + a pid + "/fd/" + an fd */
#define HOOK_IMAGE_PATH_MAX 64

struct Hook {
        InstallOp op;
        unsigned timeout_sec;
        Process *process;
        int image_fd;
        HookDone done;
        void *userdata;
};

int hook_open_image(const char *download_dir, const char *key, uid_t owner, char *reason, size_t size)
{
        _cleanup_close_ int fd = -1;
        char name[RANDOM_ID_LEN + sizeof(HOOK_IMAGE_SUFFIX)];
        struct stat st;

        /* The wire's parser refuses any other key; checked again because a path is made of it. */
        if (!install_key_valid(key)) {
                (void)snprintf(reason, size, "invalid job key");
                return -EINVAL;
        }
        (void)snprintf(name, sizeof(name), "%s" HOOK_IMAGE_SUFFIX, key);

        /* Not a symbolic link, a regular file (checked before and after the open), never blocking. */
        fd = open_state_file(download_dir, name);
        if (fd < 0) {
                if (fd == -ENOENT)
                        (void)snprintf(reason, size, "no image %s in the download directory %s", name,
                                       download_dir);
                else if (fd == -ELOOP)
                        (void)snprintf(reason, size, "%s/%s is a symbolic link", download_dir, name);
                else
                        (void)snprintf(reason, size, "cannot open %s/%s: %s", download_dir, name,
                                       read_error_message(fd));
                return fd;
        }
        if (fstat(fd, &st) < 0) {
                int r = negative_errno();

                (void)snprintf(reason, size, "cannot stat %s/%s: %s", download_dir, name, strerror(-r));
                return r;
        }
        /*
         * Only the agent writes the download directory: a file of anyone else was not downloaded by
         * it. Root's, with one link, is the exception: RAUC's service takes a plain bundle over
         * (fchown to root) when it installs it, and the same image is installed again after a power
         * loss. Only root makes or takes over such a file here; a hard link the agent made to a file
         * of root's elsewhere has two links (and protected_hardlinks forbids it anyway).
         */
        if (st.st_uid == owner || (st.st_uid == 0 && st.st_nlink == 1))
                return TAKE_FD(fd);
        if (st.st_uid == 0)
                (void)snprintf(reason, size, "%s/%s belongs to root and has %ju links: a link to a file of "
                               "root's, not a download", download_dir, name, (uintmax_t)st.st_nlink);
        else
                (void)snprintf(reason, size, "%s/%s belongs to uid %u, not to the agent's user (uid %u)",
                               download_dir, name, (unsigned)st.st_uid, (unsigned)owner);
        return -EPERM;
}

/*
 * The REASON of a run that failed, for the platform and the log: what
 * happened to WHAT ("the install hook"), then the last line it wrote on
 * stderr (escaped and cut by process.c), where a hook - and the shipped ones
 * for RAUC and SWUpdate - says why in its installer's words.
 */
static void hook_reason(const ProcessResult *r, const char *what, unsigned timeout_sec, char *buf,
                        size_t size)
{
        char how[64];

        if (r->status == -ETIMEDOUT)
                (void)snprintf(how, sizeof(how), "timed out after %u s", timeout_sec);
        else
                (void)process_result_to_string(r, how, sizeof(how));
        (void)snprintf(buf, size, "%s %s%s%s", what, how, r->last_line[0] ? ": " : "", r->last_line);
}

static const char *hook_what(InstallOp op)
{
        switch (op) {
        case INSTALL_OP_INSTALL:
                return "the install hook";
        case INSTALL_OP_COMMIT:
                return "the hook's commit";
        case INSTALL_OP_VERSION:
                return "the hook's version";
        default:
                return "the reboot command";
        }
}

/* The first line of OUTPUT, trimmed, if it is a version (the version rule); else NULL. */
static char *hook_parse_version(const char *output, size_t len)
{
        _cleanup_free_ char *v = strndup(output, len);

        if (!v)
                return NULL;
        v[strcspn(v, "\n")] = 0;
        strstrip(v);
        return version_is_valid(v) ? TAKE_PTR(v) : NULL;
}

static void on_process_done(Process *p, const ProcessResult *result, void *userdata)
{
        Hook *h = userdata;
        char reason[128 + PROCESS_LAST_LINE_MAX];
        _cleanup_free_ char *version = NULL;
        InstallAnswer a = { .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_FAILED };
        HookDone done = h->done;

        h->process = process_free(h->process);

        if (result->status == 0 && h->op == INSTALL_OP_VERSION) {
                version = hook_parse_version(result->output, result->output_len);
                if (version)
                        a = (InstallAnswer){ .type = INSTALL_ANSWER_VERSION, .version = version };
                else
                        a.reason = "the hook's version printed no version (" VERSION_RULE ")";
        } else if (result->status == 0)
                a.outcome = h->op == INSTALL_OP_REBOOT ? INSTALL_OUTCOME_REBOOT : INSTALL_OUTCOME_INSTALLED;
        else if (result->status == HOOK_EXIT_REBOOT && h->op == INSTALL_OP_INSTALL)
                a.outcome = INSTALL_OUTCOME_REBOOT;
        else {
                hook_reason(result, hook_what(h->op), h->timeout_sec, reason, sizeof(reason));
                a.reason = reason;
        }

        h->done = NULL;
        done(h, &a, h->userdata);
}

/* "KEY=VALUE" into *RET; VALUE NULL is "". */
static int env_entry(char **ret, const char *key, const char *value)
{
        return asprintf(ret, "%s=%s", key, value ? value : "") < 0 ? -ENOMEM : 0;
}

static void strv_free_contents(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
}

/*
 * Runs the hook with VERB (and IMAGE for an install). The job's data goes
 * in the environment, as strings: install and commit get the KRTIOT_* job
 * variables (KRTIOT_IMAGE and KRTIOT_URL empty for a commit, which has
 * neither), version nothing but PATH and LANG.
 */
static int hook_spawn(Hook *h, sd_event *event, const Config *c, const InstallRequest *req,
                      const char *image)
{
        char *env[6] = {};
        char *argv[] = { c->ota_hook, (char *)install_op_to_string(req->op), (char *)image, NULL };
        ProcessParams params = {
                .argv = argv,
                .env = env,
                .log_prefix = req->op == INSTALL_OP_VERSION ? "hook version" : "hook",
                .capture_stdout = req->op == INSTALL_OP_VERSION,
                .capture_max = HOOK_VERSION_OUTPUT_MAX,
                .log_max = req->op == INSTALL_OP_VERSION ? HOOK_VERSION_OUTPUT_MAX : HOOK_LOG_MAX,
                .timeout_usec = (uint64_t)h->timeout_sec * USEC_PER_SEC,
        };
        int r = 0;

        if (req->op != INSTALL_OP_VERSION &&
            ((r = env_entry(&env[0], "KRTIOT_JOB_ID", req->id)) < 0 ||
             (r = env_entry(&env[1], "KRTIOT_TARGET_VERSION", req->target)) < 0 ||
             (r = env_entry(&env[2], "KRTIOT_IMAGE", image)) < 0 ||
             (r = env_entry(&env[3], "KRTIOT_URL", req->url)) < 0 ||
             (r = env_entry(&env[4], "KRTIOT_STATE_DIR", c->state_dir)) < 0))
                goto finish;
        r = process_spawn(event, &params, on_process_done, h, &h->process);
finish:
        strv_free_contents(env, ELEMENTSOF(env));
        return r;
}

int hook_start(sd_event *event, const Config *c, const InstallRequest *req, int image_fd, HookDone done,
               void *userdata, Hook **ret, InstallAnswer *ret_now)
{
        _cleanup_free_ Hook *h = NULL;
        char image[HOOK_IMAGE_PATH_MAX];
        int r;

        if (!event || !c || !req || !done || !ret || !ret_now)
                return -EINVAL;
        if (req->op == INSTALL_OP_INSTALL ? image_fd < 0 : image_fd >= 0)
                return -EINVAL;

        if (req->op == INSTALL_OP_REBOOT && !c->ota_reboot_argv) {
                *ret_now = (InstallAnswer){
                        .type = INSTALL_ANSWER_DONE,
                        .outcome = INSTALL_OUTCOME_FAILED,
                        .reason = "no reboot command is configured (ota.reboot_command): the new firmware "
                                  "is active after the next reboot",
                };
                return 1;
        }

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        *h = (Hook){ .op = req->op, .image_fd = -1, .done = done, .userdata = userdata };

        switch (req->op) {
        case INSTALL_OP_INSTALL:
                h->timeout_sec = c->ota_hook_timeout;
                /* Our fd, seen through our /proc entry: the hook (and RAUC's or SWUpdate's own
                 * processes, all root) open the very file that was checked. */
                (void)snprintf(image, sizeof(image), "/proc/%d/fd/%d", (int)getpid(), image_fd);
                r = hook_spawn(h, event, c, req, image);
                break;
        case INSTALL_OP_COMMIT:
                h->timeout_sec = HOOK_COMMIT_TIMEOUT_SEC;
                r = hook_spawn(h, event, c, req, NULL);
                break;
        case INSTALL_OP_VERSION:
                h->timeout_sec = HOOK_VERSION_TIMEOUT_SEC;
                r = hook_spawn(h, event, c, req, NULL);
                break;
        case INSTALL_OP_REBOOT: {
                ProcessParams params = {
                        .argv = c->ota_reboot_argv,
                        .log_prefix = "reboot",
                        .log_max = HOOK_LOG_MAX,
                        .timeout_usec = HOOK_REBOOT_TIMEOUT_SEC * USEC_PER_SEC,
                };

                h->timeout_sec = HOOK_REBOOT_TIMEOUT_SEC;
                r = process_spawn(event, &params, on_process_done, h, &h->process);
                break;
        }
        default:
                r = -EINVAL;
        }
        if (r < 0)
                return r;

        h->image_fd = image_fd;
        *ret = TAKE_PTR(h);
        return 0;
}

int hook_pid(const Hook *h)
{
        return h ? process_pid(h->process) : -EINVAL;
}

Hook *hook_free(Hook *h)
{
        if (!h)
                return NULL;
        process_free(h->process);
        if (h->image_fd >= 0)
                close(h->image_fd);
        free(h);
        return NULL;
}
