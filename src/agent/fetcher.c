/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fetcher.c owns one krtiot-fetch child (through process.c) and what its
 * status lines said: the result line, and whether a line was malformed.
 *
 * Invariants:
 *  - DONE is called exactly once, from process.c's DONE, after the child has
 *    ended and every status line it wrote was read: the result is what the
 *    result line said only when the exit status agrees; otherwise how the
 *    child ended.
 *  - After a malformed status line (or one after the result) nothing more is
 *    believed: the child is killed and the download fails with -EPROTO.
 *  - Nothing touches F after a user callback returns, because the callback
 *    may have freed it (process.c lets a line callback free the Process).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "fetch-wire.h"
#include "fetcher.h"
#include "log.h"
#include "process.h"
#include "util/macro.h"

/* krtiot-fetch's log lines in krtiotd's log: a download with many retries stays far under this. */
#define FETCHER_LOG_MAX (256 * 1024)
/* How long fetcher_free() lets krtiot-fetch stop on its own before SIGKILL. */
#define FETCHER_STOP_GRACE_USEC (500 * USEC_PER_MSEC)
#define FETCHER_STOP_POLL_USEC (5 * USEC_PER_MSEC)
#define FETCHER_ARGS_MAX 48

/* What a downloader may need from our environment; everything else stays out (process.c's clean env). */
static const char *const fetcher_env_names[] = {
        "http_proxy",    "https_proxy",  "HTTPS_PROXY",  "all_proxy",     "ALL_PROXY",    "no_proxy",
        "NO_PROXY",      "SSL_CERT_FILE", "SSL_CERT_DIR", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
};

struct Fetcher {
        Process *process;
        FetcherCallbacks cb;
        void *userdata;

        bool have_result;
        bool malformed;
        int result;
        char *reason;
        char sha256[65];
        bool have_sha256;
};

const char *fetcher_program(void)
{
        const char *p = secure_getenv("KRTIOT_FETCH_PROGRAM");

        return p && *p ? p : FETCH_PROGRAM;
}

const char *fetcher_get_sha256(const Fetcher *f)
{
        return f && f->have_sha256 ? f->sha256 : NULL;
}

/*
 * SIGTERM, then up to FETCHER_STOP_GRACE_USEC for krtiot-fetch to stop on
 * its own: it finishes the write it is in, syncs what it has, and closes
 * its connection in order (the server sees a close, not a reset). It stops
 * within milliseconds (it checks between chunks, and its waits wake on the
 * signal), so the loop is held that briefly, and only when a download is
 * replaced or the daemon stops. Its last checkpoint is not read: the caller
 * is done with the job, or stopping with a journal at most 5 s behind.
 * process_free() then SIGKILLs whatever is left and reaps it.
 */
static void fetcher_stop(Fetcher *f)
{
        pid_t pid = process_pid(f->process);

        if (pid <= 0 || kill(pid, SIGTERM) < 0)
                return;
        for (uint64_t waited = 0; waited < FETCHER_STOP_GRACE_USEC; waited += FETCHER_STOP_POLL_USEC) {
                siginfo_t si = {};

                /* WNOWAIT: process_free() reaps it. */
                if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == pid)
                        return;
                (void)nanosleep(&(struct timespec){ .tv_nsec = FETCHER_STOP_POLL_USEC * 1000 }, NULL);
        }
}

Fetcher *fetcher_free(Fetcher *f)
{
        if (!f)
                return NULL;
        if (f->process) {
                fetcher_stop(f);
                f->process = process_free(f->process);
        }
        free(f->reason);
        free(f);
        return NULL;
}

/* Nothing more is believed; the child goes, and DONE says why. */
static void fetcher_garbled(Fetcher *f)
{
        pid_t pid = process_pid(f->process);

        f->malformed = true;
        if (pid > 0)
                (void)kill(pid, SIGKILL);
}

static void fetcher_take_result(Fetcher *f, const FetchEvent *e)
{
        f->have_result = true;
        f->result = e->error;
        if (e->reason) {
                free(f->reason);
                f->reason = strdup(e->reason); /* on ENOMEM, DONE says strerror() instead */
        }
        if (e->sha256) {
                memcpy(f->sha256, e->sha256, sizeof(f->sha256));
                f->have_sha256 = true;
        }
}

static void fetcher_on_line(Process *p, const char *line, size_t len, bool dropped, void *userdata)
{
        Fetcher *f = userdata;
        WireMessage msg = {};
        FetchEvent e = {};
        int r;

        if (f->malformed)
                return;
        r = dropped ? -EMSGSIZE : fetch_wire_parse(line, len, &msg, &e);
        if (r < 0 || f->have_result) {
                wire_message_done(&msg);
                fetcher_garbled(f);
                return;
        }

        switch (e.type) {
        case FETCH_EVENT_PROGRESS:
                if (f->cb.progress)
                        f->cb.progress(f, e.done, e.total, f->userdata);
                break;
        case FETCH_EVENT_CHECKPOINT:
                if (f->cb.checkpoint)
                        f->cb.checkpoint(f,
                                         &(FetcherCheckpoint){
                                                 .offset = e.offset,
                                                 .etag = e.etag,
                                                 .last_modified = e.last_modified,
                                                 .bytes_fetched = e.fetched,
                                         },
                                         f->userdata);
                break;
        case FETCH_EVENT_RESULT:
                fetcher_take_result(f, &e);
                break;
        }
        /* F may be gone: only what belongs to this call from here. */
        wire_message_done(&msg);
}

static void fetcher_on_exit(Process *p, const ProcessResult *res, void *userdata)
{
        Fetcher *f = userdata;
        char how[128], reason[256];
        int result;

        /* Freed here, where process.c allows it; RES stays valid. */
        f->process = process_free(f->process);

        if (f->malformed) {
                result = -EPROTO;
                (void)snprintf(reason, sizeof(reason), "krtiot-fetch sent a malformed status line");
        } else if (f->have_result && f->result < 0) {
                result = f->result;
                (void)snprintf(reason, sizeof(reason), "%s", f->reason ? f->reason : strerror(-f->result));
        } else if (f->have_result && res->status == FETCH_EXIT_OK) {
                result = 0;
        } else {
                result = -EIO;
                (void)process_result_to_string(res, how, sizeof(how));
                if (res->status < 0 && res->signal == 0 && res->status != -ETIMEDOUT)
                        (void)snprintf(reason, sizeof(reason), "could not run krtiot-fetch (%s): %s",
                                       fetcher_program(), strerror(-res->status));
                else if (f->have_result)
                        (void)snprintf(reason, sizeof(reason), "krtiot-fetch reported success but %s", how);
                else if (res->signal > 0)
                        (void)snprintf(reason, sizeof(reason), "krtiot-fetch %s", how);
                else
                        (void)snprintf(reason, sizeof(reason), "krtiot-fetch ended without a result (%s)", how);
        }
        if (result == 0)
                f->cb.done(f, 0, NULL, f->userdata);
        else
                f->cb.done(f, result, reason, f->userdata);
}

/* The argument list (strings owned by ARGS, at most FETCHER_ARGS_MAX). Returns 0 or -ENOMEM. */
typedef struct FetcherArgs {
        char *v[FETCHER_ARGS_MAX + 1];
        size_t n;
        bool oom;
} FetcherArgs;

static void args_add(FetcherArgs *a, const char *s)
{
        char *c;

        if (a->oom || a->n >= FETCHER_ARGS_MAX || !(c = strdup(s))) {
                a->oom = true;
                return;
        }
        a->v[a->n++] = c;
}

static void args_add_str(FetcherArgs *a, const char *opt, const char *value)
{
        if (!value || !*value)
                return;
        args_add(a, opt);
        args_add(a, value);
}

static void args_add_u64(FetcherArgs *a, const char *opt, uint64_t value, bool always)
{
        char buf[32];

        if (value == 0 && !always)
                return;
        (void)snprintf(buf, sizeof(buf), "%" PRIu64, value);
        args_add(a, opt);
        args_add(a, buf);
}

static void args_done(FetcherArgs *a)
{
        for (size_t i = 0; i < a->n; i++)
                free(a->v[i]);
}

static int fetcher_args(const FetcherParams *p, FetcherArgs *a)
{
        int level = log_get_max_level();

        args_add(a, fetcher_program());
        args_add(a, "--status-fd");
        args_add(a, "1");
        if (level >= LOG_DEBUG)
                args_add(a, "--verbose");
        else if (level < LOG_INFO)
                args_add(a, "--quiet");
        args_add_str(a, "--sha256", p->expected_sha256);
        args_add_str(a, "--md5", p->expected_md5);
        args_add_u64(a, "--size", p->expected_size, false);
        args_add_u64(a, "--resume-offset", p->resume_offset, false);
        args_add_str(a, "--etag", p->etag);
        args_add_str(a, "--last-modified", p->last_modified);
        args_add_u64(a, "--bytes-fetched", p->bytes_fetched, false);
        args_add_u64(a, "--max-size", p->max_image_size, false);
        args_add_u64(a, "--rate-limit", p->rate_limit, false);
        args_add_u64(a, "--stall-timeout", p->stall_timeout_sec, false);
        args_add_u64(a, "--connect-timeout", p->connect_timeout_sec, false);
        args_add_u64(a, "--retries", p->retries, true);
        args_add_u64(a, "--max-redirects", p->max_redirects, true);
        args_add_str(a, "--ca-file", p->ca_file);
        args_add_str(a, "--user-agent", p->user_agent);
        /* "--": a part path can never be taken for an option. */
        args_add(a, "--");
        args_add(a, "-"); /* the URL comes on stdin */
        args_add(a, p->part_path);
        return a->oom ? -ENOMEM : 0;
}

static int fetcher_env(char **env, size_t size)
{
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(fetcher_env_names) && n + 1 < size; i++) {
                const char *v = getenv(fetcher_env_names[i]);

                if (!v)
                        continue;
                if (asprintf(&env[n], "%s=%s", fetcher_env_names[i], v) < 0) {
                        env[n] = NULL;
                        return -ENOMEM;
                }
                n++;
        }
        return 0;
}

int fetcher_new(sd_event *event, const FetcherParams *params, const FetcherCallbacks *callbacks, void *userdata,
                Fetcher **ret)
{
        char *env[ELEMENTSOF(fetcher_env_names) + 1] = {};
        _cleanup_free_ char *url_line = NULL;
        FetcherArgs args = {};
        Fetcher *f = NULL;
        size_t url_len;
        int r;

        if (!event || !params || !params->url || !params->part_path || !*params->part_path || !callbacks ||
            !callbacks->done || !ret)
                return -EINVAL;
        url_len = strlen(params->url);
        if (url_len == 0 || url_len > FETCHER_URL_MAX || strpbrk(params->url, "\r\n"))
                return -EINVAL;
        if (asprintf(&url_line, "%s\n", params->url) < 0)
                return -ENOMEM;

        r = fetcher_args(params, &args);
        if (r >= 0)
                r = fetcher_env(env, ELEMENTSOF(env));
        if (r >= 0) {
                f = calloc(1, sizeof(*f));
                r = f ? 0 : -ENOMEM;
        }
        if (r >= 0) {
                ProcessParams pp = {
                        .argv = args.v,
                        .env = env,
                        .log_prefix = "krtiot-fetch",
                        .log_max = FETCHER_LOG_MAX,
                        .stdin_data = url_line,
                        .stdin_len = url_len + 1,
                        .stdout_line = fetcher_on_line,
                        .stdout_line_max = WIRE_LINE_MAX,
                        .die_with_parent = true,
                };

                f->cb = *callbacks;
                f->userdata = userdata;
                r = process_spawn(event, &pp, fetcher_on_exit, f, &f->process);
        }

        args_done(&args);
        for (size_t i = 0; i < ELEMENTSOF(env); i++)
                free(env[i]);
        if (r < 0) {
                free(f);
                return r;
        }
        log_debug("Started krtiot-fetch (PID %d).", process_pid(f->process));
        *ret = f;
        return 0;
}
