/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for process.c: real children (/bin/sh, coreutils) run inside a real
 * sd-event loop. Exit statuses, signals by name, the last line of stderr
 * (escaped, cut), exec errors, capture and its limit, the
 * clean environment, closed fds, reset signal state, timeout with the
 * SIGKILL grace, bounded memory under a flood, grandchildren holding the
 * pipes, process_free() on a running child, stdin data, stdout handed over
 * line by line (and a free from that callback), children that die with
 * their parent, and the priorities of prefixed log lines. The log goes to stderr, so
 * the tests that check it point fd 2 at a temporary file meanwhile.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "process.h"
#include "tap.h"
#include "util/macro.h"

#define SH "/bin/sh"
#define ENV_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define FLOOD_BYTES "52428800" /* 50 MiB */
#define RUN_MAX_USEC (30 * USEC_PER_SEC)

typedef struct Run {
        Process *p;
        int pid;
        unsigned calls;
        int result;
        int signal;
        char *output;
        size_t output_len;
        char *last_line;
        char how[128]; /* process_result_to_string() */
        bool free_in_callback;
        int kill_signal; /* sent to the child after kill_after_usec, if set */
        uint64_t kill_after_usec;
        uint64_t elapsed_usec;
} Run;

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static void on_done(Process *p, const ProcessResult *result, void *userdata)
{
        Run *run = userdata;

        run->calls++;
        run->result = result->status;
        run->signal = result->signal;
        /* Freed first, read after: ASan proves RESULT outlives a free inside the callback. */
        if (run->free_in_callback)
                run->p = process_free(p);
        free(run->output);
        run->output = malloc(result->output_len + 1);
        memcpy(run->output, result->output, result->output_len + 1);
        run->output_len = result->output_len;
        free(run->last_line);
        run->last_line = strdup(result->last_line);
        process_result_to_string(result, run->how, sizeof(run->how));
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Run *run = userdata;

        kill(run->pid, run->kill_signal);
        return 0;
}

/* Spawns and runs the loop until DONE (or RUN_MAX_USEC). Returns process_spawn()'s result. */
static int run_process(const ProcessParams *params, Run *run)
{
        sd_event *e = NULL;
        sd_event_source *kill_timer = NULL;
        uint64_t start;
        int r;

        if (sd_event_new(&e) < 0)
                return -EIO;

        start = now_usec();
        r = process_spawn(e, params, on_done, run, &run->p);
        if (r < 0) {
                sd_event_unref(e);
                return r;
        }
        run->pid = process_pid(run->p);

        if (run->kill_signal)
                sd_event_add_time_relative(e, &kill_timer, CLOCK_MONOTONIC, run->kill_after_usec, 0,
                                           on_kill_timer, run);

        while (run->calls == 0 && now_usec() - start < RUN_MAX_USEC)
                sd_event_run(e, 100 * USEC_PER_MSEC);
        run->elapsed_usec = now_usec() - start;

        /* A few more turns of the loop: a second DONE would show up here. */
        for (int i = 0; i < 3; i++)
                sd_event_run(e, 0);

        if (run->calls == 0)
                printf("# child %d did not finish in time\n", run->pid);
        run->p = process_free(run->p);
        sd_event_source_disable_unref(kill_timer);
        sd_event_unref(e);
        return 0;
}

static void run_done(Run *run)
{
        free(run->output);
        free(run->last_line);
        *run = (Run){};
}

/* fd 2 to a temporary file while a test runs, to read what was logged. */
static int stderr_begin(int *ret_saved)
{
        char path[] = "/tmp/test-process-log.XXXXXX";
        int fd;

        fflush(stderr);
        fd = mkstemp(path);
        if (fd < 0)
                return -errno;
        unlink(path);
        *ret_saved = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        return fd;
}

static char *stderr_end(int fd, int saved)
{
        struct stat st;
        char *buf;

        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        if (fstat(fd, &st) < 0 || !(buf = calloc(1, st.st_size + 1))) {
                close(fd);
                return NULL;
        }
        if (pread(fd, buf, st.st_size, 0) != st.st_size)
                buf[0] = 0;
        close(fd);
        return buf;
}

static long rss_kib(void)
{
        char line[256];
        long kib = -1;
        FILE *f = fopen("/proc/self/status", "re");

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* Live (non-zombie) processes in process group PGID. */
static int group_members(pid_t pgid)
{
        _cleanup_(closedirp) DIR *d = opendir("/proc");
        struct dirent *de;
        int n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char path[300], buf[512], state;
                const char *rp;
                int pgrp, ppid;
                ssize_t len;
                int fd;

                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                len = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (len <= 0)
                        continue;
                buf[len] = 0;
                rp = strrchr(buf, ')');
                if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
                    state != 'Z')
                        n++;
        }
        return n;
}

static bool group_gone_within(pid_t pgid, uint64_t usec)
{
        uint64_t start = now_usec();

        do {
                if (group_members(pgid) == 0)
                        return true;
                usleep(20 * 1000);
        } while (now_usec() - start < usec);
        return false;
}

static void test_exit_status(void)
{
        static const struct {
                const char *script;
                int want, signal;
                const char *how;
        } cases[] = {
                { "exit 0", 0, 0, "exited with status 0" },
                { "exit 10", 10, 0, "failed with exit status 10" },
                { "exit 3", 3, 0, "failed with exit status 3" },
                { "kill -KILL $$", -EINTR, SIGKILL, "was killed by signal KILL" },
                /* No core file: the test must not leave one in the working directory. */
                { "ulimit -c 0; kill -SEGV $$", -EINTR, SIGSEGV, "was killed by signal SEGV" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *argv[] = { SH, "-c", (char *)cases[i].script, NULL };
                ProcessParams params = { .argv = argv, .log_prefix = "exit", .log_max = 4096 };
                Run run = {};
                siginfo_t si = {};

                is_int(run_process(&params, &run), 0, "spawn");
                is_int(run.result, cases[i].want, cases[i].script);
                is_int(run.signal, cases[i].signal, "  the signal that ended it, or 0");
                is_str(run.how, cases[i].how, "  in words");
                is_str(run.last_line, "", "  no stderr: no last line");
                is_int(run.calls, 1, "done called exactly once");
                /* sd-event reaped it: no zombie left behind. */
                errno = 0;
                ok(waitid(P_PID, run.pid, &si, WEXITED | WNOHANG) < 0 && errno == ECHILD, "child reaped");
                run_done(&run);
        }
}

static void test_capture(void)
{
        char *argv[] = { SH, "-c", "echo 1.2.3", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 64, .log_max = 4096 };
        Run run = {};

        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, 0, "capture: exit 0");
        is_str(run.output, "1.2.3\n", "capture: stdout");
        is_int(run.output_len, 6, "capture: length");
        run_done(&run);

        /* Exactly capture_max is fine, one more byte is not. */
        argv[2] = "echo 123";
        params.capture_max = 4;
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, 0, "capture of exactly capture_max bytes");
        is_str(run.output, "123\n", "capture at the limit: stdout");
        run_done(&run);

        argv[2] = "echo 1234";
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, -EFBIG, "capture over capture_max: -EFBIG");
        is_int(run.output_len, 0, "capture over capture_max: no partial output");
        is_str(run.output, "", "capture over capture_max: empty output");
        run_done(&run);

        /* The limit wins over a good exit status, and a failing status too. */
        argv[2] = "echo 1234; exit 7";
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, -EFBIG, "capture over capture_max with exit 7: -EFBIG");
        run_done(&run);

        /* Not capturing: OUTPUT is "" whatever the child printed. */
        argv[2] = "echo not captured";
        params.capture_stdout = false;
        params.log_prefix = "nocap";
        {
                int saved, fd = stderr_begin(&saved);
                _cleanup_free_ char *log = NULL;

                is_int(run_process(&params, &run), 0, "spawn");
                log = stderr_end(fd, saved);
                is_str(run.output, "", "not capturing: empty output");
                ok(log && strstr(log, "<6>nocap: not captured\n"), "not capturing: stdout logged");
                run_done(&run);
        }
}

static void test_free_in_callback(void)
{
        char *argv[] = { SH, "-c", "echo 1.2.3", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 64 };
        Run run = { .free_in_callback = true };

        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.calls, 1, "free in callback: done once");
        ok(run.p == NULL, "free in callback: freed");
        is_str(run.output, "1.2.3\n", "free in callback: output still valid after the free");
        run_done(&run);
}

static void test_exec_errors(void)
{
        char dir[] = "/tmp/test-process.XXXXXX", path[64];
        char *argv[] = { "/nonexistent/krtiot-hook", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 64 };
        Run run = {};
        int fd;

        is_int(run_process(&params, &run), 0, "missing executable: spawn succeeds");
        is_int(run.result, -ENOENT, "missing executable: -ENOENT through DONE");
        is_int(run.signal, 0, "missing executable: no signal (the child's _exit)");
        is_str(run.how, "could not run: No such file or directory", "missing executable: in words");
        is_int(run.calls, 1, "missing executable: done once");
        run_done(&run);

        ok(mkdtemp(dir) != NULL, "temp dir");
        snprintf(path, sizeof(path), "%s/hook", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        (void)!write(fd, "#!/bin/sh\nexit 0\n", 17);
        close(fd);
        argv[0] = path;
        is_int(run_process(&params, &run), 0, "non-executable file: spawn succeeds");
        is_int(run.result, -EACCES, "non-executable file: -EACCES");
        run_done(&run);

        /* A directory is not executable either. */
        argv[0] = dir;
        is_int(run_process(&params, &run), 0, "directory: spawn succeeds");
        is_int(run.result, -EACCES, "directory: -EACCES");
        run_done(&run);

        unlink(path);
        rmdir(dir);
}

static void test_invalid_params(void)
{
        char *relative[] = { "bin/sh", "-c", "exit 0", NULL };
        char *argv[] = { SH, "-c", "exit 0", NULL };
        char *bad_env[] = { "NOEQUALS", NULL };
        char *empty_key[] = { "=x", NULL };
        Process *sentinel = (Process *)&sentinel, *p = sentinel;
        sd_event *e = NULL;
        ProcessParams params = { .argv = relative };

        sd_event_new(&e);
        is_int(process_spawn(e, &params, on_done, NULL, &p), -EINVAL, "relative argv[0]: -EINVAL");
        params.argv = argv;
        params.env = bad_env;
        is_int(process_spawn(e, &params, on_done, NULL, &p), -EINVAL, "env entry without '=': -EINVAL");
        params.env = empty_key;
        is_int(process_spawn(e, &params, on_done, NULL, &p), -EINVAL, "env entry with empty key: -EINVAL");
        params.env = NULL;
        is_int(process_spawn(e, &params, NULL, NULL, &p), -EINVAL, "no callback: -EINVAL");
        ok(p == sentinel, "ret untouched on failure");
        ok(process_free(NULL) == NULL, "process_free(NULL)");
        sd_event_unref(e);
}

static void test_environment(void)
{
        char *argv[] = { "/usr/bin/env", NULL };
        char *env[] = { "FOO=bar", "KRTIOT_JOB_ID=42", NULL };
        char *env_path[] = { "PATH=/opt/bin", NULL };
        ProcessParams params = { .argv = argv, .env = env, .capture_stdout = true, .capture_max = 4096 };
        Run run = {};

        setenv("KRTIOT_SECRET_LEAK", "hunter2", 1);
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, 0, "env: exit 0");
        is_str(run.output, ENV_PATH "\nLANG=C\nFOO=bar\nKRTIOT_JOB_ID=42\n",
               "env: exactly PATH, LANG and params->env");
        ok(run.output && !strstr(run.output, "KRTIOT_SECRET_LEAK"), "env: parent's variable not inherited");
        run_done(&run);
        unsetenv("KRTIOT_SECRET_LEAK");

        params.env = env_path;
        is_int(run_process(&params, &run), 0, "spawn");
        is_str(run.output, "LANG=C\nPATH=/opt/bin\n", "env: params->env overrides the default PATH");
        run_done(&run);
}

static void test_no_fixed_limits(void)
{
        enum { N_ARGS = 20000, N_ENV = 5000 };
        char **argv = calloc(N_ARGS + 5, sizeof(char *));
        char **env = calloc(N_ENV + 1, sizeof(char *));
        char (*names)[32] = calloc(N_ENV, 32);
        ProcessParams params = { .capture_stdout = true, .capture_max = 1024 * 1024 };
        Run run = {};
        size_t lines = 0;

        argv[0] = SH;
        argv[1] = "-c";
        argv[2] = "echo $#";
        argv[3] = "sh";
        for (int i = 0; i < N_ARGS; i++)
                argv[4 + i] = "x";
        params.argv = argv;
        is_int(run_process(&params, &run), 0, "spawn");
        is_str(run.output, "20000\n", "20000 arguments all reach the child");
        run_done(&run);

        for (int i = 0; i < N_ENV; i++) {
                snprintf(names[i], 32, "KRTIOT_V%d=%d", i, i);
                env[i] = names[i];
        }
        argv[0] = "/usr/bin/env";
        argv[1] = NULL;
        params.env = env;
        is_int(run_process(&params, &run), 0, "spawn");
        for (size_t i = 0; run.output && i < run.output_len; i++)
                lines += run.output[i] == '\n';
        is_int(lines, N_ENV + 2, "5000 environment entries all reach the child");
        ok(run.output && strstr(run.output, "\nKRTIOT_V4999=4999\n"), "the last one too");
        run_done(&run);

        free(names);
        free(env);
        free(argv);
}

static void test_fds(void)
{
        char *argv[] = { "/bin/ls", "/proc/self/fd", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 4096 };
        Run run = {};
        int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */
        int high = dup2(leak, 200);

        ok(leak >= 0 && high == 200, "parent holds non-CLOEXEC fds");
        is_int(run_process(&params, &run), 0, "spawn");
        /* 3 is the directory ls itself opened. */
        is_str(run.output, "0\n1\n2\n3\n", "child has only 0, 1, 2");
        run_done(&run);

        argv[0] = "/bin/readlink";
        argv[1] = "/proc/self/fd/0";
        is_int(run_process(&params, &run), 0, "spawn");
        is_str(run.output, "/dev/null\n", "child's stdin is /dev/null");
        run_done(&run);

        close(leak);
        close(high);
}

/* A daemon started with stdin and stdout closed: our pipes land on 0 and 1 unless moved away. */
static void test_stdio_closed(void)
{
        char *argv[] = { SH, "-c", "echo out; /bin/readlink /proc/self/fd/0", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 4096 };
        Run run = {};
        int saved0, saved1, r;

        fflush(stdout);
        saved0 = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        saved1 = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        close(STDIN_FILENO);
        close(STDOUT_FILENO);
        r = run_process(&params, &run);
        dup2(saved0, STDIN_FILENO);
        dup2(saved1, STDOUT_FILENO);
        close(saved0);
        close(saved1);

        is_int(r, 0, "spawn with stdin and stdout closed");
        is_str(run.output, "out\n/dev/null\n", "stdio closed in the parent: child's stdio still right");
        run_done(&run);
}

static void test_signals(void)
{
        char *argv[] = { "/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status", NULL };
        char *sleep_argv[] = { "/bin/sleep", "100", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 4096 };
        sigset_t ss, old;
        struct sigaction ign = { .sa_handler = SIG_IGN }, old_usr2;
        Run run = {};

        /* What a daemon on sd-event does: signals blocked (SIGCHLD already is), some ignored. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigprocmask(SIG_BLOCK, &ss, &old);
        sigaction(SIGUSR2, &ign, &old_usr2);
        /* What a parent started by posix_spawn() (GNU make: dpkg-buildpackage) has: glibc's two
         * reserved signals ignored, which its sigaction() cannot undo. The raw syscall sets them. */
        {
                const uint64_t ignore[8] = { (uint64_t)(uintptr_t)SIG_IGN };

                (void)syscall(SYS_rt_sigaction, 32, ignore, NULL, _NSIG / 8);
                (void)syscall(SYS_rt_sigaction, 33, ignore, NULL, _NSIG / 8);
        }

        is_int(run_process(&params, &run), 0, "spawn");
        is_str(run.output, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
               "child: nothing blocked, nothing ignored");
        run_done(&run);

        params.argv = sleep_argv;
        params.capture_stdout = false;
        run.kill_signal = SIGTERM;
        run.kill_after_usec = 100 * USEC_PER_MSEC;
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, -EINTR, "SIGTERM kills the child although the parent blocks it: -EINTR");
        is_int(run.signal, SIGTERM, "  and says SIGTERM did");
        is_str(run.how, "was killed by signal TERM", "  in words (not \"Interrupted system call\")");
        ok(run.elapsed_usec < 3 * USEC_PER_SEC, "and promptly");
        run_done(&run);

        sigaction(SIGUSR2, &old_usr2, NULL);
        sigprocmask(SIG_SETMASK, &old, NULL);
}

static void test_timeout(void)
{
        char *argv[] = { "/bin/sleep", "100", NULL };
        char *stubborn[] = { SH, "-c", "trap '' TERM; /bin/sleep 100; exit 0", NULL };
        ProcessParams params = { .argv = argv, .timeout_usec = 200 * USEC_PER_MSEC };
        Run run = {};

        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, -ETIMEDOUT, "timeout: -ETIMEDOUT");
        is_int(run.signal, SIGTERM, "timeout: ended by our SIGTERM");
        is_str(run.how, "timed out", "timeout: in words");
        ok(run.elapsed_usec >= 200 * USEC_PER_MSEC && run.elapsed_usec < 2 * USEC_PER_SEC,
           "timeout: SIGTERM at 200 ms is enough for a child that obeys it");
        run_done(&run);

        /* Ignores SIGTERM, and so does its own child (SIG_IGN is inherited): only SIGKILL helps. */
        params.argv = stubborn;
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, -ETIMEDOUT, "stubborn: -ETIMEDOUT despite exit 0 in the script");
        printf("# stubborn child took %llu ms\n", (unsigned long long)(run.elapsed_usec / 1000));
        ok(run.elapsed_usec >= 5 * USEC_PER_SEC, "stubborn: SIGKILL waits for the 5 s grace");
        ok(run.elapsed_usec < 10 * USEC_PER_SEC, "stubborn: and comes within 10 s");
        ok(group_gone_within(run.pid, 2 * USEC_PER_SEC), "stubborn: its child (the sleep) was killed too");
        run_done(&run);
}

static void test_output_lines(void)
{
        char *argv[] = { SH, "-c",
                         "printf 'a\\001b\\033c\\td\\n'; printf 'dos\\r\\n'; printf '\\n\\n';"
                         "/usr/bin/head -c 2000 /dev/zero | /usr/bin/tr '\\0' x; printf '\\ntail'",
                         NULL };
        ProcessParams params = { .argv = argv, .log_prefix = "t", .log_max = 1024 * 1024 };
        char want[4096], xs[1025];
        Run run = {};
        int saved, fd;
        _cleanup_free_ char *log = NULL;

        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        log = stderr_end(fd, saved);
        is_int(run.result, 0, "lines: exit 0");

        memset(xs, 'x', 1024);
        xs[1024] = 0;
        snprintf(want, sizeof(want), "<6>t: a?b?c?d\n<6>t: dos\n<6>t: %s\n<6>t: %.976s\n<6>t: tail\n", xs,
                 xs);
        is_str(log, want, "lines: control characters replaced, long lines split, last partial line logged");
        run_done(&run);

        argv[2] = "echo to stderr >&2; exit 2";
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(log);
        log = stderr_end(fd, saved);
        is_int(run.result, 2, "stderr: exit 2");
        is_str(log, "<6>t: to stderr\n", "stderr: logged");
        run_done(&run);

        /* log_max counts whole records ("<6>t: hello world foo\n" is 22 bytes), not the text only. */
        argv[2] = "echo 'hello world foo'; echo more; echo >&2 still more";
        params.log_max = 30;
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(log);
        log = stderr_end(fd, saved);
        is_str(log, "<6>t: hello world foo\n<4>t: output truncated after 22 bytes in 1 lines\n",
               "log_max: records up to the limit, one truncation line, the rest dropped");
        is_int(run.result, 0, "log_max: the result is not affected");
        run_done(&run);

        /* Short lines: the number of records is capped too (journald's rate limit). */
        argv[2] = "/usr/bin/yes | /usr/bin/head -n 5000";
        params.log_max = 1024 * 1024;
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(log);
        log = stderr_end(fd, saved);
        {
                size_t records = 0;

                for (const char *l = log; l && (l = strstr(l, "<6>t: y\n")); l++)
                        records++;
                is_int(records, 2000, "short lines: at most 2000 records");
                ok(log && strstr(log, "<4>t: output truncated after 16000 bytes in 2000 lines\n"),
                   "short lines: one truncation line");
        }
        is_int(run.result, 0, "short lines: the result is not affected");
        run_done(&run);
}

/* The last non-blank line of stderr: what a hook says about why it failed, ready for a REASON. */
static void test_last_line(void)
{
        static const struct {
                const char *script;
                const char *want;
                const char *name;
        } cases[] = {
                { "echo first >&2; echo 'not stdout'; printf '  the reason \\n \\t \\n\\n' >&2; echo after", "the reason",
                  "the last non-blank stderr line, trimmed; stdout does not count" },
                { "printf 'no newline at the end' >&2", "no newline at the end", "a last line without newline" },
                { "printf 'dos line\\r\\n' >&2", "dos line", "CR LF" },
                { "printf 'a\\033[31mb\\001c\\177d\\n' >&2", "a\\x1b[31mb\\x01c\\x7fd",
                  "control characters escaped as \\xNN" },
                { "printf 'x\\377y\\302\\205z \\303\\251 \\355\\240\\200\\n' >&2",
                  "x\\xffy\\xc2\\x85z \xc3\xa9 \\xed\\xa0\\x80",
                  "bytes that are not UTF-8 and C1 controls escaped, UTF-8 kept" },
                { "echo 'the line'; echo >&2", "", "no non-blank stderr line: empty" },
        };
        char *argv[] = { SH, "-c", NULL, NULL };
        ProcessParams params = { .argv = argv, .log_prefix = "t", .log_max = 1024 * 1024 };
        char want[PROCESS_LAST_LINE_MAX + 1];
        Run run = {};
        int saved, fd;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                argv[2] = (char *)cases[i].script;
                fd = stderr_begin(&saved);
                is_int(run_process(&params, &run), 0, "spawn");
                free(stderr_end(fd, saved));
                is_str(run.last_line, cases[i].want, cases[i].name);
                run_done(&run);
        }

        /* Cut to PROCESS_LAST_LINE_MAX bytes, never inside a character or an escape. */
        argv[2] = "/usr/bin/head -c 300 /dev/zero | /usr/bin/tr '\\0' x >&2; exit 1";
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(stderr_end(fd, saved));
        memset(want, 'x', PROCESS_LAST_LINE_MAX);
        want[PROCESS_LAST_LINE_MAX] = 0;
        is_str(run.last_line, want, "a 300-byte line is cut to 200 bytes");
        is_int(run.result, 1, "  and the status is kept");
        run_done(&run);

        argv[2] = "{ printf a; for i in $(/usr/bin/seq 60); do printf '\\033'; done; echo; } >&2";
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(stderr_end(fd, saved));
        ok(run.last_line && strlen(run.last_line) == 1 + 49 * 4 && run.last_line[0] == 'a' &&
                   strcmp(run.last_line + strlen(run.last_line) - 4, "\\x1b") == 0,
           "escapes are cut whole: 'a' and 49 of 60 \\x1b (197 bytes)");
        run_done(&run);

        argv[2] = "for i in $(/usr/bin/seq 150); do printf '\\303\\251'; done >&2";
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        free(stderr_end(fd, saved));
        ok(run.last_line && strlen(run.last_line) == 200 &&
                   strcmp(run.last_line + 198, "\xc3\xa9") == 0,
           "UTF-8 is cut between characters: 100 of 150 two-byte characters");
        run_done(&run);

        /* The log's limit does not hide the last line: a hook's reason comes after its chatter. */
        argv[2] = "/usr/bin/yes chatter | /usr/bin/head -n 5000 >&2; echo 'the real reason' >&2; exit 2";
        params.log_max = 100;
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        {
                _cleanup_free_ char *log = stderr_end(fd, saved);

                ok(log && strstr(log, "output truncated") && !strstr(log, "the real reason"),
                   "the log was truncated before the last line");
        }
        is_str(run.last_line, "the real reason", "  the last line is still the result's");
        run_done(&run);
}

static void test_flood(void)
{
        char *argv[] = { "/usr/bin/head", "-c", FLOOD_BYTES, "/dev/zero", NULL };
        ProcessParams params = { .argv = argv, .log_prefix = "flood", .log_max = 64 * 1024 };
        _cleanup_free_ char *log = NULL;
        size_t logged = 0, lines = 0, truncations = 0;
        /* Lines of 1024 '?': records of 1024 + 6 + strlen("flood") = 1035 bytes; 63 fit in 64 KiB. */
        const char *trunc = "<4>flood: output truncated after 65205 bytes in 63 lines\n";
        long before, after;
        Run run = {};
        int saved, fd;

        before = rss_kib();
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        log = stderr_end(fd, saved);
        after = rss_kib();

        is_int(run.result, 0, "flood: completes with exit 0");
        printf("# flood: RSS %ld -> %ld KiB, %llu ms\n", before, after,
               (unsigned long long)(run.elapsed_usec / 1000));
        ok(before > 0 && after - before < 4 * 1024, "flood: RSS grew by less than 4 MiB");
        for (char *l = log, *nl; l && (nl = strchr(l, '\n')); l = nl + 1) {
                if (strncmp(l, "<6>flood: ", 10) == 0) {
                        logged += nl - l + 1;
                        lines++;
                } else if (strncmp(l, trunc, strlen(trunc)) == 0)
                        truncations++;
        }
        is_int(logged, 65205, "flood: log records up to log_max (64 KiB), whole records only");
        is_int(lines, 63, "flood: in 1024-byte lines");
        is_int(truncations, 1, "flood: one truncation line");
        ok(log && strlen(log) >= strlen(trunc) && strcmp(log + strlen(log) - strlen(trunc), trunc) == 0,
           "flood: the truncation line is the last");
        run_done(&run);

        /* Captured: the limit holds memory down the same way. */
        params.capture_stdout = true;
        params.capture_max = 1000;
        before = rss_kib();
        is_int(run_process(&params, &run), 0, "spawn");
        after = rss_kib();
        is_int(run.result, -EFBIG, "captured flood: -EFBIG");
        ok(after - before < 4 * 1024, "captured flood: RSS grew by less than 4 MiB");
        run_done(&run);
}

static void test_grandchild(void)
{
        char *argv[] = { SH, "-c", "/bin/sleep 30 & echo hi", NULL };
        char *flooder[] = { SH, "-c", "(/usr/bin/yes &); (/usr/bin/yes >&2 &); echo bye", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 64, .log_max = 1024 };
        Run run = {};
        int saved, fd;
        _cleanup_free_ char *log = NULL;

        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, 0, "grandchild holding stdout: exit 0");
        is_str(run.output, "hi\n", "grandchild holding stdout: output");
        ok(run.elapsed_usec < 3 * USEC_PER_SEC, "grandchild holding stdout: completes promptly");
        ok(group_members(run.pid) == 1, "the grandchild is still there (not our job to kill it)");
        kill(-run.pid, SIGKILL);
        ok(group_gone_within(run.pid, 2 * USEC_PER_SEC), "grandchild cleaned up");
        run_done(&run);

        /* Grandchildren writing without end on both pipes: the drain at exit is bounded. */
        params.argv = flooder;
        params.capture_max = 16 * 1024 * 1024;
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        log = stderr_end(fd, saved);
        ok(run.calls == 1 && run.elapsed_usec < 10 * USEC_PER_SEC,
           "grandchildren flooding both pipes: completes");
        kill(-run.pid, SIGKILL);
        ok(group_gone_within(run.pid, 2 * USEC_PER_SEC), "flooding grandchildren cleaned up");
        run_done(&run);
}

static void test_free_running(void)
{
        char *argv[] = { SH, "-c", "/bin/sleep 100 & /bin/sleep 100 & wait", NULL };
        ProcessParams params = { .argv = argv };
        sd_event *e = NULL;
        Run run = {};
        Process *p;
        uint64_t start;
        int pid;

        sd_event_new(&e);
        is_int(process_spawn(e, &params, on_done, &run, &p), 0, "spawn");
        pid = process_pid(p);
        ok(pid > 0, "process_pid");
        /* Let the shell start its background child. */
        start = now_usec();
        while (group_members(pid) < 3 && now_usec() - start < 5 * USEC_PER_SEC)
                sd_event_run(e, 10 * USEC_PER_MSEC);
        is_int(group_members(pid), 3, "the shell and its two children running");

        ok(process_free(p) == NULL, "process_free returns NULL");
        errno = 0;
        ok(kill(pid, 0) < 0 && errno == ESRCH, "process_free killed and reaped the child");
        ok(group_gone_within(pid, 2 * USEC_PER_SEC), "and its process group");
        for (int i = 0; i < 3; i++)
                sd_event_run(e, 10 * USEC_PER_MSEC);
        is_int(run.calls, 0, "process_free never calls DONE");

        /* Freed before the child ran at all: the parent's setpgid() makes the group kill work. */
        is_int(process_spawn(e, &params, on_done, &run, &p), 0, "spawn");
        pid = process_pid(p);
        process_free(p);
        errno = 0;
        ok(kill(pid, 0) < 0 && errno == ESRCH, "freed right after spawn: child gone");
        ok(group_gone_within(pid, 2 * USEC_PER_SEC), "freed right after spawn: group gone");
        is_int(run.calls, 0, "freed right after spawn: no DONE");

        sd_event_unref(e);
}

/* ---- stdin_data, stdout_line, die_with_parent, priorities ---- */

static void test_stdin(void)
{
        char *argv[] = { "/bin/cat", NULL };
        ProcessParams params = { .argv = argv, .capture_stdout = true, .capture_max = 64 * 1024,
                                 .stdin_data = "http://u:secret@host/x\n", .stdin_len = 23 };
        static char big[PROCESS_STDIN_MAX + 1];
        Run run = {};
        sd_event *e = NULL;
        Process *p = NULL;

        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.result, 0, "stdin: cat exits 0 (it saw EOF after the data)");
        is_str(run.output, "http://u:secret@host/x\n", "stdin: the child read the data");
        run_done(&run);

        /* More than PIPE_BUF: the pipe is enlarged, nothing blocks. */
        memset(big, 'u', sizeof(big));
        params.stdin_data = big;
        params.stdin_len = PROCESS_STDIN_MAX;
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.output_len, PROCESS_STDIN_MAX, "stdin: PROCESS_STDIN_MAX bytes arrive whole");
        run_done(&run);

        sd_event_new(&e);
        params.stdin_len = PROCESS_STDIN_MAX + 1;
        is_int(process_spawn(e, &params, on_done, &run, &p), -E2BIG, "stdin: one byte more is -E2BIG");
        ok(p == NULL, "stdin: nothing started");
        params.stdin_data = NULL;
        params.stdin_len = 1;
        is_int(process_spawn(e, &params, on_done, &run, &p), -EINVAL, "stdin: a length without data is -EINVAL");
        sd_event_unref(e);

        /* Without stdin_data, stdin is /dev/null as before. */
        params = (ProcessParams){ .argv = argv, .capture_stdout = true, .capture_max = 64 };
        is_int(run_process(&params, &run), 0, "spawn");
        is_int(run.output_len, 0, "no stdin_data: empty stdin");
        run_done(&run);
}

typedef struct Lines {
        Run run;
        char got[4096];
        unsigned n, dropped;
        unsigned free_at; /* process_free() from the callback at this line (1-based); 0: never */
} Lines;

static void on_line(Process *p, const char *line, size_t len, bool dropped, void *userdata)
{
        Lines *l = userdata;
        size_t n = strlen(l->got);

        l->n++;
        if (dropped)
                l->dropped++;
        ok(line[len] == 0, "a line is NUL-terminated");
        snprintf(l->got + n, sizeof(l->got) - n, "%s[%zu]%s|", dropped ? "!" : "", len, line);
        if (l->free_at && l->n == l->free_at)
                l->run.p = process_free(p);
}

static void on_lines_done(Process *p, const ProcessResult *result, void *userdata)
{
        on_done(p, result, &((Lines *)userdata)->run);
}

static void run_lines(const ProcessParams *params, Lines *l)
{
        sd_event *e = NULL;
        uint64_t start = now_usec();

        sd_event_new(&e);
        is_int(process_spawn(e, params, on_lines_done, l, &l->run.p), 0, "spawn");
        l->run.pid = process_pid(l->run.p);
        while (l->run.calls == 0 && l->run.p && now_usec() - start < RUN_MAX_USEC)
                sd_event_run(e, 100 * USEC_PER_MSEC);
        for (int i = 0; i < 3; i++)
                sd_event_run(e, 10 * USEC_PER_MSEC);
        l->run.p = process_free(l->run.p);
        sd_event_unref(e);
}

static void test_stdout_line(void)
{
        char *argv[] = { SH, "-c",
                         "printf 'a\\nbb\\n\\n'; printf '%0300d\\n' 0; printf '0123456789\\nnul\\000x\\n';"
                         "echo to stderr >&2; printf 'cut'",
                         NULL };
        ProcessParams params = { .argv = argv, .log_prefix = "t", .log_max = 4096, .stdout_line = on_line,
                                 .stdout_line_max = 10 };
        Lines l = {};
        int saved, fd;
        _cleanup_free_ char *log = NULL;

        fd = stderr_begin(&saved);
        run_lines(&params, &l);
        log = stderr_end(fd, saved);
        is_int(l.run.calls, 1, "lines: done once");
        is_int(l.run.result, 0, "lines: exit 0");
        is_str(l.got, "[1]a|[2]bb|[0]|![0]|[10]0123456789|[5]nul|![0]|",
               "lines: in order, empty ones too, over the limit and the unterminated last one dropped");
        is_int(l.dropped, 2, "lines: two dropped");
        is_str(log, "<6>t: to stderr\n", "lines: stdout not logged, stderr still is");
        run_done(&l.run);

        /* capture and lines at once make no sense. */
        {
                sd_event *e = NULL;
                Process *p = NULL;

                sd_event_new(&e);
                params.capture_stdout = true;
                is_int(process_spawn(e, &params, on_lines_done, &l, &p), -EINVAL, "lines and capture: -EINVAL");
                params.capture_stdout = false;
                params.stdout_line_max = 1024 * 1024;
                is_int(process_spawn(e, &params, on_lines_done, &l, &p), -EINVAL, "lines over 64 KiB: -EINVAL");
                sd_event_unref(e);
        }

        /* Freed from the line callback: no further line, no DONE, the child is gone. */
        argv[2] = "echo one; echo two; echo three; exec /bin/sleep 100";
        params.stdout_line_max = 100;
        l = (Lines){ .free_at = 2 };
        run_lines(&params, &l);
        is_str(l.got, "[3]one|[3]two|", "free in line callback: nothing after it");
        is_int(l.run.calls, 0, "free in line callback: no DONE");
        ok(l.run.p == NULL, "free in line callback: freed");
        errno = 0;
        ok(kill(l.run.pid, 0) < 0 && errno == ESRCH, "free in line callback: child killed and reaped");
        run_done(&l.run);

        /* The same while draining at exit (the lines are read after the child ended). */
        argv[2] = "echo one; echo two; echo three";
        l = (Lines){ .free_at = 1 };
        {
                sd_event *e = NULL;

                sd_event_new(&e);
                is_int(process_spawn(e, &params, on_lines_done, &l, &l.run.p), 0, "spawn");
                l.run.pid = process_pid(l.run.p);
                usleep(300 * 1000); /* the child has exited: all three lines wait in the pipe */
                for (int i = 0; i < 20 && l.run.p; i++)
                        sd_event_run(e, 50 * USEC_PER_MSEC);
                sd_event_unref(e);
        }
        is_str(l.got, "[3]one|", "free in line callback at exit: nothing after it");
        is_int(l.run.calls, 0, "free in line callback at exit: no DONE");
        errno = 0;
        ok(kill(l.run.pid, 0) < 0 && errno == ESRCH, "free in line callback at exit: child reaped");
        run_done(&l.run);
}

/* Spawns `sleep 100` from a forked helper with its own loop, kills the helper, says whether the sleep died. */
static bool sleeper_dies_with_helper(bool die_with_parent)
{
        int fds[2];
        pid_t helper, sleeper = 0;
        bool gone;

        if (pipe(fds) < 0)
                return false;
        helper = fork();
        if (helper == 0) {
                char *argv[] = { "/bin/sleep", "100", NULL };
                ProcessParams params = { .argv = argv, .die_with_parent = die_with_parent };
                sd_event *e = NULL;
                Process *p = NULL;
                pid_t pid;

                close(fds[0]);
                sd_event_new(&e);
                if (process_spawn(e, &params, on_done, &(Run){}, &p) < 0)
                        _exit(1);
                pid = process_pid(p);
                (void)!write(fds[1], &pid, sizeof(pid));
                for (;;)
                        sd_event_run(e, UINT64_MAX);
        }
        close(fds[1]);
        if (read(fds[0], &sleeper, sizeof(sleeper)) != sizeof(sleeper) || sleeper <= 0) {
                close(fds[0]);
                kill(helper, SIGKILL);
                waitpid(helper, NULL, 0);
                return false;
        }
        close(fds[0]);
        usleep(100 * 1000); /* past its prctl() */
        kill(helper, SIGKILL);
        waitpid(helper, NULL, 0);
        /* Reparented to init (or a subreaper), which reaps it: gone, or at most a zombie. */
        gone = group_gone_within(sleeper, 2 * USEC_PER_SEC);
        if (!gone)
                kill(-sleeper, SIGKILL);
        return gone;
}

static void test_die_with_parent(void)
{
        ok(sleeper_dies_with_helper(true), "die_with_parent: the child dies when its parent is SIGKILLed");
        ok(!sleeper_dies_with_helper(false), "without it the child outlives its parent (positive control)");
}

static void test_priorities(void)
{
        char *argv[] = { SH, "-c",
                         "printf '<3>err\\n<7>dbg\\n<0>emerg\\n<1>\\nplain\\n<8>eight\\n<4>warn' >&2;"
                         "echo '<5>to stdout'",
                         NULL };
        ProcessParams params = { .argv = argv, .log_prefix = "t", .log_max = 4096 };
        int saved, fd, level = log_get_max_level();
        Run run = {};
        _cleanup_free_ char *log = NULL;

        log_set_max_level(LOG_DEBUG);
        fd = stderr_begin(&saved);
        is_int(run_process(&params, &run), 0, "spawn");
        log = stderr_end(fd, saved);
        log_set_max_level(level);
        ok(log && strstr(log, "<3>t: err\n") && strstr(log, "<7>t: dbg\n") && strstr(log, "<4>t: warn\n") &&
                   strstr(log, "<5>t: to stdout\n"),
           "priorities: a prefixed line is logged at its priority, without the prefix");
        ok(log && strstr(log, "<3>t: emerg\n") && !strstr(log, "<0>"), "priorities: never above LOG_ERR");
        ok(log && !strstr(log, "<1>") && !strstr(log, "t: \n"), "priorities: a bare prefix logs nothing");
        ok(log && strstr(log, "<6>t: plain\n") && strstr(log, "<6>t: <8>eight\n"),
           "priorities: no prefix, or not a priority: LOG_INFO, line unchanged");
        is_str(run.last_line, "warn", "priorities: the last line without its prefix");
        run_done(&run);
}

int main(void)
{
        sigset_t ss;

        /* As the daemon does: sd_event_add_child() needs SIGCHLD blocked. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigprocmask(SIG_BLOCK, &ss, NULL);

        test_exit_status();
        test_capture();
        test_free_in_callback();
        test_exec_errors();
        test_invalid_params();
        test_environment();
        test_no_fixed_limits();
        test_fds();
        test_stdio_closed();
        test_signals();
        test_output_lines();
        test_last_line();
        test_flood();
        test_grandchild();
        test_free_running();
        test_timeout();
        test_stdin();
        test_stdout_line();
        test_die_with_parent();
        test_priorities();

        return tap_done();
}
