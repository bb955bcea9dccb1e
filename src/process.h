/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Child processes inside the event loop: the install hook, `HOOK version`,
 * the reboot command. fork+exec directly (never a shell), a clean
 * environment, other fds closed, signals unblocked and reset, output read
 * from pipes (logged line by line, or captured) with a size limit, a
 * timeout, and the exit status through sd-event's child source. The loop
 * keeps running while a child runs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct Process Process;

typedef struct ProcessParams {
        char *const *argv;      /* argv[0] is the absolute path executed */
        char *const *env;       /* extra "KEY=VALUE" entries, NULL-terminated; may be NULL */
        const char *log_prefix; /* output lines are logged as "PREFIX: line" */
        bool capture_stdout;    /* stdout is captured (up to capture_max bytes) instead of logged */
        size_t capture_max;     /* bytes kept when capturing; more is an error (-EFBIG) */
        size_t log_max;         /* bytes of output logged at most; the rest is read and dropped */
        uint64_t timeout_usec;  /* 0: none. At the timeout: SIGTERM, then SIGKILL 5 s later */
} ProcessParams;

/*
 * RESULT: the exit status (>= 0); -ETIMEDOUT when killed at the timeout;
 * -EINTR when killed by another signal; -EFBIG when captured output went
 * over capture_max; or the -errno of a failed exec (-ENOENT, -EACCES, …).
 * OUTPUT is the captured stdout, NUL-terminated (empty when not capturing),
 * valid during the call only. The Process may be freed from the callback.
 */
typedef void (*ProcessDone)(Process *p, int result, const char *output, size_t output_len, void *userdata);

/* Starts the child. Returns 0 and a new Process, or -errno (nothing started). */
int process_spawn(sd_event *event, const ProcessParams *params, ProcessDone done, void *userdata,
                  Process **ret);

/* The child's PID, for logs. */
int process_pid(const Process *p);

/* Kills (SIGKILL) a child that is still running, reaps it, never calls DONE. Returns NULL. */
Process *process_free(Process *p);
