/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for fetcher.c against fake krtiot-fetch programs (shell scripts named
 * by KRTIOT_FETCH_PROGRAM) in a real sd-event loop: the URL on stdin and not
 * in argv, status lines turned into callbacks, exactly one DONE whatever the
 * child does (a result, none, a signal, a malformed or over-long line, a line
 * after the result, a missing program), and a free from a callback.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetcher.h"
#include "tap.h"
#include "util/macro.h"

#define URL "http://user:pw-9x@127.0.0.1:1/fw.img"
#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static char dir[] = "/tmp/test-fetcher.XXXXXX";

typedef struct Got {
        Fetcher *f;
        unsigned done, progress, checkpoints;
        int result;
        char reason[256];
        char sha256[65];
        uint64_t done_bytes, total, offset, fetched;
        char etag[64];
        bool free_at_checkpoint;
} Got;

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static void on_progress(Fetcher *f, uint64_t done, uint64_t total, void *userdata)
{
        Got *g = userdata;

        g->progress++;
        g->done_bytes = done;
        g->total = total;
}

static void on_checkpoint(Fetcher *f, const FetcherCheckpoint *c, void *userdata)
{
        Got *g = userdata;

        g->checkpoints++;
        g->offset = c->offset;
        g->fetched = c->bytes_fetched;
        snprintf(g->etag, sizeof(g->etag), "%s", c->etag ? c->etag : "(none)");
        if (g->free_at_checkpoint)
                g->f = fetcher_free(f);
}

static void on_done(Fetcher *f, int result, const char *reason, void *userdata)
{
        Got *g = userdata;

        g->done++;
        g->result = result;
        snprintf(g->reason, sizeof(g->reason), "%s", reason ? reason : "(null)");
        snprintf(g->sha256, sizeof(g->sha256), "%s", fetcher_get_sha256(f) ?: "(null)");
        g->f = fetcher_free(f);
}

static const FetcherCallbacks callbacks = {
        .progress = on_progress,
        .checkpoint = on_checkpoint,
        .done = on_done,
};

/* A fake krtiot-fetch: records its argv and stdin in DIR, then runs BODY. Returns its path. */
static const char *fake(const char *name, const char *body)
{
        static char path[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        if (!f)
                return NULL;
        fprintf(f, "#!/bin/sh\necho \"$@\" > %s/argv\nhead -n 1 > %s/stdin\n%s\n", dir, dir, body);
        fclose(f);
        chmod(path, 0755);
        return path;
}

/* Runs one fetcher with PROGRAM until DONE or 10 s (or until it is freed from a callback). */
static int run(const char *program, Got *g)
{
        FetcherParams p = {
                .url = URL,
                .part_path = "/tmp/x.part",
                .expected_sha256 = SHA,
                .resume_offset = 5,
                .retries = 2,
        };
        sd_event *e = NULL;
        uint64_t start = now_usec();
        int r;

        setenv("KRTIOT_FETCH_PROGRAM", program, 1);
        sd_event_new(&e);
        r = fetcher_new(e, &p, &callbacks, g, &g->f);
        if (r < 0) {
                sd_event_unref(e);
                return r;
        }
        while (g->done == 0 && g->f && now_usec() - start < 10 * USEC_PER_SEC)
                sd_event_run(e, 100 * USEC_PER_MSEC);
        for (int i = 0; i < 3; i++)
                sd_event_run(e, 10 * USEC_PER_MSEC);
        g->f = fetcher_free(g->f);
        sd_event_unref(e);
        return 0;
}

static char *slurp(const char *name)
{
        char path[256], *buf = calloc(1, 4096);
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "re");
        if (f && buf)
                (void)!fread(buf, 1, 4095, f);
        if (f)
                fclose(f);
        return buf;
}

static void test_success(void)
{
        Got g = {};
        _cleanup_free_ char *argv = NULL, *in = NULL;

        is_int(run(fake("ok", "echo 'checkpoint offset=0 fetched=7 etag=%22v1%22'\n"
                              "echo 'progress done=10 total=20'\n"
                              "echo 'checkpoint offset=20 fetched=27 etag=%22v1%22'\n"
                              "echo 'result error=0 sha256=" SHA "'"),
                   &g),
               0, "success: started");
        is_int(g.done, 1, "success: done once");
        is_int(g.result, 0, "success: result 0");
        is_str(g.reason, "(null)", "success: no reason");
        is_str(g.sha256, SHA, "success: the hash from the result line");
        is_int(g.checkpoints, 2, "success: both checkpoints");
        ok(g.offset == 20 && g.fetched == 27, "success: the last checkpoint's offset and bytes fetched");
        is_str(g.etag, "\"v1\"", "success: the validator, decoded");
        ok(g.progress == 1 && g.done_bytes == 10 && g.total == 20, "success: progress");

        argv = slurp("argv");
        in = slurp("stdin");
        is_str(in, URL "\n", "the URL arrives on stdin");
        ok(argv && !strstr(argv, "pw-9x") && !strstr(argv, "127.0.0.1"), "the URL is not in argv");
        ok(argv && strstr(argv, "--status-fd 1 ") && strstr(argv, "--sha256 " SHA) &&
                   strstr(argv, "--resume-offset 5") && strstr(argv, "--retries 2") &&
                   strstr(argv, "-- - /tmp/x.part"),
           "argv: status on stdout, the parameters, '-' for the URL, the part path after --");
}

static void test_failures(void)
{
        static const struct {
                const char *body;
                int result;
                const char *reason;
        } cases[] = {
                { "echo 'result error=-2 reason=HTTP%20404'; exit 1", -ENOENT, "HTTP 404" },
                { "echo 'result error=-5'; exit 1", -EIO, "Input/output error" },
                { "exit 1", -EIO, "krtiot-fetch ended without a result (failed with exit status 1)" },
                { "echo 'checkpoint offset=0 fetched=0'; kill -KILL $$", -EIO,
                  "krtiot-fetch was killed by signal KILL" },
                { "echo 'result error=0 sha256=" SHA "'; exit 3", -EIO,
                  "krtiot-fetch reported success but failed with exit status 3" },
                /* Malformed: the child is killed at once (it would sleep 100 s) and the download fails. */
                { "echo 'progress done=x total=1'; exec sleep 100", -EPROTO,
                  "krtiot-fetch sent a malformed status line" },
                { "echo 'hello world'; exec sleep 100", -EPROTO, "krtiot-fetch sent a malformed status line" },
                { "echo 'result error=5'; exit 1", -EPROTO, "krtiot-fetch sent a malformed status line" },
                { "echo 'result error=0 sha256=abc'; exit 0", -EPROTO, "krtiot-fetch sent a malformed status line" },
                { "echo 'result error=-2'; echo 'progress done=1 total=1'; exit 1", -EPROTO,
                  "krtiot-fetch sent a malformed status line" },
                { "head -c 9000 /dev/zero | tr '\\0' x; echo; exec sleep 100", -EPROTO,
                  "krtiot-fetch sent a malformed status line" },
                { "printf 'result error=0 sha256=" SHA "'; exit 0", -EPROTO,
                  "krtiot-fetch sent a malformed status line" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char name[32];
                Got g = {};
                uint64_t start = now_usec();

                snprintf(name, sizeof(name), "case%zu", i);
                is_int(run(fake(name, cases[i].body), &g), 0, cases[i].body);
                is_int(g.done, 1, "  done exactly once");
                is_int(g.result, cases[i].result, "  result");
                is_str(g.reason, cases[i].reason, "  reason");
                ok(now_usec() - start < 5 * USEC_PER_SEC, "  promptly");
        }
}

static void test_missing_program(void)
{
        Got g = {};

        is_int(run("/nonexistent/krtiot-fetch", &g), 0, "missing program: started (exec fails in the child)");
        is_int(g.done, 1, "missing program: done once");
        is_str(g.reason, "could not run krtiot-fetch (/nonexistent/krtiot-fetch): No such file or directory",
               "missing program: says so");
}

static void test_free_from_callback(void)
{
        Got g = { .free_at_checkpoint = true };
        uint64_t start = now_usec();

        is_int(run(fake("hang", "echo 'checkpoint offset=0 fetched=0'; trap '' TERM; exec sleep 100"), &g), 0,
               "free from a checkpoint: started");
        ok(g.f == NULL && g.checkpoints == 1, "free from a checkpoint: freed");
        is_int(g.done, 0, "free from a checkpoint: no DONE");
        /* The 0.5 s grace for SIGTERM (ignored here), then SIGKILL. */
        ok(now_usec() - start < 3 * USEC_PER_SEC, "free from a checkpoint: a child ignoring SIGTERM is killed");
}

static void test_bad_params(void)
{
        FetcherParams p = { .url = "http://h/a\nb", .part_path = "/tmp/x.part" };
        sd_event *e = NULL;
        Fetcher *f = NULL;
        Got g = {};

        sd_event_new(&e);
        is_int(fetcher_new(e, &p, &callbacks, &g, &f), -EINVAL, "a URL with a newline: -EINVAL");
        p.url = "";
        is_int(fetcher_new(e, &p, &callbacks, &g, &f), -EINVAL, "an empty URL: -EINVAL");
        p.url = "http://h/";
        p.part_path = NULL;
        is_int(fetcher_new(e, &p, &callbacks, &g, &f), -EINVAL, "no part path: -EINVAL");
        ok(f == NULL && g.done == 0, "nothing started, no callback");
        sd_event_unref(e);
}

int main(void)
{
        sigset_t ss;
        char cmd[300];

        /* As the daemon does: sd_event_add_child() needs SIGCHLD blocked. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        if (!mkdtemp(dir))
                return 1;

        test_success();
        test_failures();
        test_missing_program();
        test_free_from_callback();
        test_bad_params();

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        (void)!system(cmd);
        return tap_done();
}
