/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Child processes inside the event loop: the install hook, `HOOK version`,
 * the reboot command, krtiot-fetch. fork+exec directly (never a shell), a
 * clean environment, other fds closed, signals unblocked and reset, output
 * read from pipes (logged line by line, captured, or handed over line by
 * line) with a size limit, a timeout, and the exit status through sd-event's
 * child source. The loop keeps running while a child runs.
 *
 * Logged lines that start with an sd-daemon prefix ("<0>".."<7>", as log.c
 * writes them) are logged at that priority without the prefix, but never
 * above LOG_ERR: a child's "<0>" would otherwise become an emergency that
 * journald broadcasts to every terminal (ForwardToWall=), and the child, a
 * hook above all, does not get to decide that for the daemon.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct Process Process;

/*
 * One line of the child's stdout, without its newline: LEN bytes at LINE,
 * NUL-terminated. With DROPPED set, LINE is "" and says that a line was
 * dropped: it was longer than stdout_line_max, or the child ended in the
 * middle of it (no newline before EOF). The callback may free the Process
 * (no further line and no DONE follow); USERDATA is process_spawn()'s.
 */
typedef void (*ProcessLine)(Process *p, const char *line, size_t len, bool dropped, void *userdata);

/* The most stdin_data may hold: a pipe's buffer takes it whole, so nobody waits for the child to read. */
#define PROCESS_STDIN_MAX (16 * 1024)

typedef struct ProcessParams {
        char *const *argv;      /* argv[0] is the absolute path executed */
        char *const *env;       /* extra "KEY=VALUE" entries, NULL-terminated; may be NULL */
        const char *log_prefix; /* output lines are logged as "PREFIX: line" */
        bool capture_stdout;    /* stdout is captured (up to capture_max bytes) instead of logged */
        size_t capture_max;     /* bytes kept when capturing; more is an error (-EFBIG) */
        size_t log_max;         /* bytes of output logged at most; the rest is read and dropped */
        uint64_t timeout_usec;  /* 0: none. At the timeout: SIGTERM, then SIGKILL 5 s later */

        /*
         * Written to the child's stdin through a pipe that is then closed
         * (EOF after it), instead of /dev/null: a secret that must not show
         * in its argv (ps, /proc/PID/cmdline). At most PROCESS_STDIN_MAX bytes.
         */
        const void *stdin_data;
        size_t stdin_len;

        /* Each stdout line goes to this callback instead of the log (capture_stdout must be false). */
        ProcessLine stdout_line;
        size_t stdout_line_max; /* longest line handed over, in bytes without the newline; 0 = 1024 */

        /*
         * The child is SIGKILLed when the caller dies (PR_SET_PDEATHSIG),
         * even by SIGKILL: for a helper that must never outlive its parent.
         * A caller that died between fork() and prctl() is noticed too.
         */
        bool die_with_parent;
} ProcessParams;

/* The most a ProcessResult's last_line holds, in bytes after escaping: enough for a REASON. */
#define PROCESS_LAST_LINE_MAX 200

/* How a child ended. Valid during the ProcessDone call only. */
typedef struct ProcessResult {
        /*
         * The exit status (>= 0), or -errno: -ETIMEDOUT when killed at the
         * timeout; -EINTR when killed by another signal (`signal` says which);
         * -EFBIG when captured output went over capture_max; or the -errno of
         * a failed exec (-ENOENT, -EACCES, ...).
         */
        int status;
        int signal;         /* the signal that ended it (at the timeout too), or 0 */
        const char *output; /* the captured stdout, NUL-terminated ("" when not capturing) */
        size_t output_len;
        /*
         * The last non-blank line it wrote on stderr, trimmed, as it may go
         * into a log line or a REASON: control characters and bytes that are
         * not UTF-8 written as \xNN, cut (never inside a character or an
         * escape) to PROCESS_LAST_LINE_MAX bytes; "" when there was none. Seen
         * even when the log of its output was truncated.
         */
        const char *last_line;
} ProcessResult;

/* Called once when the child has ended. The Process may be freed from the callback. */
typedef void (*ProcessDone)(Process *p, const ProcessResult *result, void *userdata);

/*
 * How the child ended, in words that follow "the hook ...": "exited with
 * status 0", "failed with exit status 3", "was killed by signal SEGV",
 * "timed out", "printed more output than allowed", "could not run: No such
 * file or directory". Written into BUF (SIZE bytes); returns BUF.
 */
const char *process_result_to_string(const ProcessResult *r, char *buf, size_t size);

/*
 * Starts the child. Returns 0 and a new Process, or -errno (nothing started):
 * -EINVAL for bad parameters, -E2BIG for stdin_data over PROCESS_STDIN_MAX
 * or more than the pipe takes.
 */
int process_spawn(sd_event *event, const ProcessParams *params, ProcessDone done, void *userdata,
                  Process **ret);

/* The child's PID, for logs. */
int process_pid(const Process *p);

/*
 * Kills (SIGKILL) a child that is still running, reaps it, never calls DONE
 * (nor the stdout_line callback). Safe from within DONE and stdout_line.
 * Returns NULL.
 */
Process *process_free(Process *p);
