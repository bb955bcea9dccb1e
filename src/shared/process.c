/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One child process run from the event loop: fork+execve of an absolute
 * path, its stdin /dev/null or a few bytes in a pipe, the child's
 * stdout/stderr read from non-blocking pipes by I/O sources, its exit seen
 * by an sd-event child source, a timeout by a time source.
 *
 * Invariants:
 * - The caller (the daemon, or a test) has SIGCHLD blocked before the event
 *   loop is created: sd_event_add_child() refuses to work otherwise.
 * - The child is its own process group leader, so signals sent to -pid reach
 *   whatever it started too. Until our child callback returns, the child is
 *   at worst an unreaped zombie (sd-event reaps it after the callback), so
 *   p->pid cannot name an unrelated process whenever we signal it.
 * - Memory is bounded whatever the child prints: a fixed line buffer per
 *   stream, one for the last line of stderr, captured output up to
 *   capture_max, the rest read and dropped.
 * - DONE is called exactly once, from the child callback, after every source
 *   has been removed; nothing touches the Process after it.
 * - The stdout_line callback may free the Process: process_free() then only
 *   marks it (free_requested), and whoever called the callback frees it once
 *   the callback has returned, before touching anything else. No callback
 *   runs after a process_free().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* pipe2, dup3, close_range, getdents64 */
#endif
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "process.h"
#include "util/macro.h"

/* "<6>" + ": " + "\n" around each line of a child's output. */
#define PROCESS_LOG_RECORD_OVERHEAD 6
/* Well under journald's default rate limit (10000 messages per 30 s). */
#define PROCESS_LOG_LINES_MAX 2000

/* Not a parameter on purpose: a hook that ignores SIGTERM gets this long to clean up, no more. */
#define PROCESS_KILL_GRACE_USEC (5 * USEC_PER_SEC)
/* Longer lines are logged in pieces: a journal line is not a place for megabytes. */
#define PROCESS_LINE_MAX 1024
/* A stdout_line line longer than this is a caller's mistake, not a limit to honor. */
#define PROCESS_STDOUT_LINE_MAX (64 * 1024)
#define PROCESS_READ_CHUNK (64 * 1024)
/* At exit, what a grandchild keeps writing must not keep us reading forever. */
#define PROCESS_DRAIN_MAX (4 * 1024 * 1024)

static const char PROCESS_DEFAULT_PATH[] =
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static const char PROCESS_DEFAULT_LANG[] = "LANG=C";

typedef struct ProcessStream {
        Process *process;
        int fd;
        sd_event_source *source;
        bool capture;
        bool keep_last; /* stderr: its last non-blank line is the result's last_line */
        size_t line_len;
        char line[PROCESS_LINE_MAX + 1];
        /* stdout with a stdout_line callback: whole lines up to cb_max bytes, in their own buffer. */
        char *cb_line;
        size_t cb_max, cb_len;
        bool cb_dropping; /* the current line went over cb_max: skipped up to its newline */
} ProcessStream;

struct Process {
        pid_t pid;
        bool exited; /* our child callback ran: nothing left to kill or reap */
        bool timed_out;
        bool overflow;
        bool log_truncated;
        bool free_requested; /* process_free() from inside stdout_line: the caller frees after it */
        bool freeing;        /* no callback from here on */
        unsigned in_callback;
        char *prefix;

        ProcessStream out, err;
        int exec_fd; /* carries the child's errno if it failed before or in execve() */
        sd_event_source *child_source, *timer_source;

        char *capture;
        size_t capture_len, capture_alloc, capture_max;
        char last_line[PROCESS_LINE_MAX]; /* raw, trimmed; escaped when the child has ended */
        size_t last_line_len;
        size_t log_max, logged; /* bytes of log records written for this child */
        unsigned logged_lines;

        ProcessDone done;
        ProcessLine stdout_line;
        void *userdata;
};

static void stream_close(ProcessStream *s);

static void process_signal(Process *p, int sig)
{
        /* The child may have left our process group (setsid); then at least the child itself. */
        if (kill(-p->pid, sig) < 0)
                (void)kill(p->pid, sig);
}

static void process_remove_sources(Process *p)
{
        stream_close(&p->out);
        stream_close(&p->err);
        p->child_source = sd_event_source_disable_unref(p->child_source);
        p->timer_source = sd_event_source_disable_unref(p->timer_source);
}

static void process_free_now(Process *p)
{
        p->freeing = true;
        process_remove_sources(p);

        if (p->pid > 0 && !p->exited) {
                process_signal(p, SIGKILL);
                /* Blocking, but only for a process that has just been sent SIGKILL. */
                while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }

        if (p->exec_fd >= 0)
                close(p->exec_fd);
        free(p->out.cb_line);
        free(p->capture);
        free(p->prefix);
        free(p);
}

Process *process_free(Process *p)
{
        if (!p)
                return NULL;

        if (p->in_callback > 0) {
                /* The stdout_line caller frees it when the callback returns; the child stops now. */
                p->free_requested = true;
                p->freeing = true;
                if (p->pid > 0 && !p->exited)
                        process_signal(p, SIGKILL);
                return NULL;
        }
        process_free_now(p);
        return NULL;
}

int process_pid(const Process *p)
{
        return p ? p->pid : -EINVAL;
}

/* ---- output ---- */

/*
 * The priority of a line that starts with an sd-daemon prefix ("<0>".."<7>"),
 * never above LOG_ERR (see process.h), and the prefix's length; LOG_INFO and
 * 0 without one.
 */
static int line_priority(const char *line, size_t len, size_t *ret_skip)
{
        if (len >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>') {
                *ret_skip = 3;
                return MAX(line[1] - '0', LOG_ERR);
        }
        *ret_skip = 0;
        return LOG_INFO;
}

/* LEN > 0 bytes of LINE, without its newline; LINE has room for a NUL after them. */
static void process_log_line(Process *p, char *line, size_t len)
{
        size_t cost, skip;
        int level;

        if (p->log_truncated)
                return;
        line[len] = 0;
        level = line_priority(line, len, &skip);
        line += skip;
        len -= skip;
        if (len == 0)
                return;

        /* Hook output is untrusted: no escape sequences or NULs into the journal. */
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                        line[i] = '?';

        /* What a line costs the journal is the whole record ("<6>PREFIX: line\n"), and the number of
         * records counts too: journald drops everything of ours past its rate limit. */
        cost = len + strlen(p->prefix) + PROCESS_LOG_RECORD_OVERHEAD;
        if (p->logged_lines < PROCESS_LOG_LINES_MAX && p->logged + cost <= p->log_max) {
                log_full_errno(level, 0, "%s: %s", p->prefix, line);
                p->logged += cost;
                p->logged_lines++;
                return;
        }
        log_warning("%s: output truncated after %zu bytes in %u lines", p->prefix, p->logged, p->logged_lines);
        p->log_truncated = true;
}

/* Keeps LINE (LEN bytes) as the last line of stderr unless it is blank; trimmed, raw, without a priority. */
static void process_keep_last_line(Process *p, const char *line, size_t len)
{
        size_t skip;

        (void)line_priority(line, len, &skip);
        line += skip;
        len -= skip;
        while (len > 0 && strchr(" \t\r", line[len - 1]))
                len--;
        while (len > 0 && strchr(" \t\r", line[0])) {
                line++;
                len--;
        }
        if (len == 0)
                return;
        memcpy(p->last_line, line, len);
        p->last_line_len = len;
}

static void stream_flush_line(ProcessStream *s)
{
        size_t len = s->line_len;

        s->line_len = 0;
        if (len > 0 && s->line[len - 1] == '\r')
                len--;
        if (len == 0)
                return;
        if (s->keep_last)
                process_keep_last_line(s->process, s->line, len);
        process_log_line(s->process, s->line, len);
}

static void process_capture_drop(Process *p)
{
        p->overflow = true;
        free(p->capture);
        p->capture = NULL;
        p->capture_len = p->capture_alloc = 0;
}

static void process_capture(Process *p, const char *buf, size_t n)
{
        size_t need, alloc;
        char *c;

        if (p->overflow)
                return;

        if (n > p->capture_max - p->capture_len) {
                /* The result is -EFBIG whatever comes next: the partial output is of no use. */
                process_capture_drop(p);
                return;
        }

        need = p->capture_len + n + 1;
        if (need > p->capture_alloc) {
                alloc = MAX(need, MIN(p->capture_alloc * 2, p->capture_max + 1));
                c = realloc(p->capture, alloc);
                if (!c) {
                        /* Nowhere to report it but the result; -EFBIG is the nearest truth. */
                        process_capture_drop(p);
                        return;
                }
                p->capture = c;
                p->capture_alloc = alloc;
        }

        memcpy(p->capture + p->capture_len, buf, n);
        p->capture_len += n;
        p->capture[p->capture_len] = 0;
}

/* Hands one line (or the news of a dropped one) to stdout_line. Returns false when the Process is to be freed. */
static bool stream_emit_line(ProcessStream *s, bool dropped)
{
        Process *p = s->process;
        size_t len = dropped ? 0 : s->cb_len;

        s->cb_line[len] = 0;
        s->cb_len = 0;
        s->cb_dropping = false;
        if (p->freeing)
                return false;
        p->in_callback++;
        p->stdout_line(p, s->cb_line, len, dropped, p->userdata);
        p->in_callback--;
        return !p->free_requested;
}

/* Splits what arrived into lines for stdout_line. Returns false when the Process is to be freed. */
static bool stream_feed_lines(ProcessStream *s, const char *buf, size_t n)
{
        while (n > 0) {
                const char *nl = memchr(buf, '\n', n);
                size_t k = nl ? (size_t)(nl - buf) : n;

                if (!s->cb_dropping) {
                        if (k > s->cb_max - s->cb_len) {
                                s->cb_dropping = true;
                                s->cb_len = 0;
                        } else {
                                memcpy(s->cb_line + s->cb_len, buf, k);
                                s->cb_len += k;
                        }
                }
                if (!nl)
                        break;
                if (!stream_emit_line(s, s->cb_dropping))
                        return false;
                buf += k + 1;
                n -= k + 1;
        }
        return true;
}

/* Returns false when the Process is to be freed (by a stdout_line callback). */
static bool stream_feed(ProcessStream *s, const char *buf, size_t n)
{
        if (s->capture) {
                process_capture(s->process, buf, n);
                return true;
        }
        if (s->cb_line)
                return stream_feed_lines(s, buf, n);

        /* Past the log's limit, stderr is still split into lines: its last one is the result's. */
        for (size_t i = 0; i < n && (s->keep_last || !s->process->log_truncated); i++) {
                if (buf[i] == '\n') {
                        stream_flush_line(s);
                        continue;
                }
                s->line[s->line_len++] = buf[i];
                if (s->line_len == PROCESS_LINE_MAX)
                        stream_flush_line(s);
        }
        return true;
}

/*
 * Reads at most BUDGET bytes of what is there now. Returns 1 at EOF (or a
 * read error), 0 otherwise, -1 when a callback freed the Process.
 */
static int stream_read(ProcessStream *s, size_t budget)
{
        char buf[PROCESS_READ_CHUNK];
        ssize_t n;

        while (budget > 0) {
                n = read(s->fd, buf, MIN(sizeof(buf), budget));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : 1;
                }
                if (n == 0)
                        return 1;
                if (!stream_feed(s, buf, (size_t)n))
                        return -1;
                budget -= (size_t)n;
        }
        return 0;
}

/* The end of a stream: its unterminated last line. Returns false when a callback freed the Process. */
static bool stream_finish(ProcessStream *s)
{
        if (s->fd < 0 || !s->cb_line || (s->cb_len == 0 && !s->cb_dropping))
                return true;
        /* A child cut off mid-line: what it wrote of it is not a line. */
        return stream_emit_line(s, true);
}

static void stream_close(ProcessStream *s)
{
        if (s->fd < 0)
                return;

        if (!s->capture && !s->cb_line && s->line_len > 0)
                stream_flush_line(s);
        s->source = sd_event_source_disable_unref(s->source);
        close(s->fd);
        s->fd = -1;
}

static int stream_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
        ProcessStream *s = userdata;
        Process *p = s->process;
        int r;

        /* One chunk per wakeup, so a flooding child cannot starve the rest of the loop. */
        r = stream_read(s, PROCESS_READ_CHUNK);
        if (r > 0 && !stream_finish(s))
                r = -1;
        if (r < 0)
                process_free_now(p);
        else if (r > 0)
                stream_close(s);
        return 0;
}

/* ---- exit and timeout ---- */

/* Returns the result's status; sets *ret_signal to the signal that ended the child, or 0. */
static int process_result(Process *p, const siginfo_t *si, int *ret_signal)
{
        int e;

        *ret_signal = si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED ? si->si_status : 0;

        /* The write end closed at execve() or exit: this never blocks. */
        if (read(p->exec_fd, &e, sizeof(e)) == (ssize_t)sizeof(e))
                return e > 0 ? -e : -EIO;

        if (p->timed_out)
                return -ETIMEDOUT;
        if (si->si_code != CLD_EXITED)
                return -EINTR;
        if (p->overflow)
                return -EFBIG;
        return si->si_status;
}

/* Strict UTF-8 (RFC 3629): the length of the character at S, or 0 when S does not start one. */
static size_t utf8_char_len(const unsigned char *s, size_t left)
{
        unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        size_t n;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                n = 3;
                lo = s[0] == 0xe0 ? 0xa0 : lo; /* overlong */
                hi = s[0] == 0xed ? 0x9f : hi; /* surrogates */
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                n = 4;
                lo = s[0] == 0xf0 ? 0x90 : lo; /* overlong */
                hi = s[0] == 0xf4 ? 0x8f : hi; /* above U+10FFFF */
        } else
                return 0;

        if (left < n || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t k = 2; k < n; k++)
                if ((s[k] & 0xc0) != 0x80)
                        return 0;
        return n;
}

/*
 * The LEN bytes at IN as they may travel in a REASON (JSON carries any
 * UTF-8; the log and a terminal must get no control character): C0, DEL, the
 * C1 controls and bytes that are not UTF-8 are written as \xNN. What does
 * not fit OUT (SIZE > 0 bytes, NUL included) is dropped, a whole character
 * or escape at a time.
 */
static void escape_last_line(const char *in, size_t len, char *out, size_t size)
{
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = (const unsigned char *)in;
        size_t n = 0;

        for (size_t i = 0; i < len;) {
                size_t k = utf8_char_len(p + i, len - i);
                bool escape = k == 0 || p[i] < 0x20 || p[i] == 0x7f || (p[i] == 0xc2 && p[i + 1] <= 0x9f);

                if (k == 0)
                        k = 1; /* one byte that is not UTF-8 */
                if (n + (escape ? 4 * k : k) >= size)
                        break;
                for (size_t j = 0; j < k; j++) {
                        if (!escape) {
                                out[n++] = (char)p[i + j];
                                continue;
                        }
                        out[n++] = '\\';
                        out[n++] = 'x';
                        out[n++] = hex[p[i + j] >> 4];
                        out[n++] = hex[p[i + j] & 0xf];
                }
                i += k;
        }
        out[n] = '\0';
}

static int process_on_child(sd_event_source *source, const siginfo_t *si, void *userdata)
{
        _cleanup_free_ char *output = NULL;
        char last_line[PROCESS_LAST_LINE_MAX + 1];
        Process *p = userdata;
        ProcessDone done = p->done;
        ProcessResult result = {};

        p->exited = true;

        /* We decided to stop the whole group; what the child left behind goes too. */
        if (p->timed_out)
                (void)kill(-p->pid, SIGKILL);

        /*
         * What the child wrote before exiting is in the pipes now. Read until
         * EAGAIN, not EOF: a grandchild may hold the write ends for hours.
         */
        if ((p->out.fd >= 0 && stream_read(&p->out, PROCESS_DRAIN_MAX) < 0) || !stream_finish(&p->out)) {
                process_free_now(p);
                return 0;
        }
        if (p->err.fd >= 0)
                (void)stream_read(&p->err, PROCESS_DRAIN_MAX);
        process_remove_sources(p);

        result.status = process_result(p, si, &result.signal);

        /* Out of P: what RESULT points to stays valid for the whole call even if DONE frees P. */
        output = TAKE_PTR(p->capture);
        result.output = output ? output : "";
        result.output_len = output ? p->capture_len : 0;
        escape_last_line(p->last_line, p->last_line_len, last_line, sizeof(last_line));
        result.last_line = last_line;

        p->done = NULL;
        done(p, &result, p->userdata);
        return 0;
}

static int process_on_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
        Process *p = userdata;

        if (p->timed_out) {
                process_signal(p, SIGKILL);
                return 0;
        }

        p->timed_out = true;
        process_signal(p, SIGTERM);

        if (sd_event_source_set_time_relative(source, PROCESS_KILL_GRACE_USEC) < 0 ||
            sd_event_source_set_enabled(source, SD_EVENT_ONESHOT) < 0)
                /* No way to wait for the grace period: skip it rather than wait forever. */
                process_signal(p, SIGKILL);
        return 0;
}

/* ---- spawning ---- */

/*
 * Our fds must not be 0-2 (a daemon started with those closed): the child's
 * dup2() onto 0-2 would clobber them.
 */
static int fd_move_above_stdio(int fd)
{
        int copy, r;

        if (fd > 2)
                return fd;

        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        r = copy < 0 ? negative_errno() : copy;
        close(fd);
        return r;
}

static int pipe_new(int ret[2])
{
        int fds[2];

        if (pipe2(fds, O_CLOEXEC) < 0)
                return negative_errno();

        fds[0] = fd_move_above_stdio(fds[0]);
        fds[1] = fd_move_above_stdio(fds[1]);
        if (fds[0] < 0 || fds[1] < 0) {
                int r = fds[0] < 0 ? fds[0] : fds[1];
                if (fds[0] >= 0)
                        close(fds[0]);
                if (fds[1] >= 0)
                        close(fds[1]);
                return r;
        }

        ret[0] = fds[0];
        ret[1] = fds[1];
        return 0;
}

static void pipe_closep(int (*fds)[2])
{
        closep(&(*fds)[0]);
        closep(&(*fds)[1]);
}

#define _cleanup_pipe_ _cleanup_(pipe_closep)

static bool env_has_key(char *const *env, const char *entry)
{
        size_t k = strcspn(entry, "=") + 1; /* "KEY=" */

        for (size_t i = 0; env && env[i]; i++)
                if (strncmp(env[i], entry, k) == 0)
                        return true;
        return false;
}

/* A new NULL-terminated array pointing into EXTRA and static strings: only the array is allocated. */
static int env_build(char *const *extra, char ***ret)
{
        static const char *const defaults[] = { PROCESS_DEFAULT_PATH, PROCESS_DEFAULT_LANG };
        size_t n = 0, k = 0;
        char **envp;

        for (; extra && extra[n]; n++)
                if (extra[n][0] == '=' || !strchr(extra[n], '='))
                        return -EINVAL;

        envp = calloc(n + ELEMENTSOF(defaults) + 1, sizeof(char *));
        if (!envp)
                return -ENOMEM;

        /* The caller's entries win over the defaults, not by order (getenv() takes the first). */
        for (size_t i = 0; i < ELEMENTSOF(defaults); i++)
                if (!env_has_key(extra, defaults[i]))
                        envp[k++] = (char *)defaults[i];
        for (size_t i = 0; i < n; i++)
                envp[k++] = extra[i];

        *ret = envp;
        return 0;
}

/* Only async-signal-safe calls from here: this runs in the child of fork(). */
static void close_all_fds_from(int from)
{
        union {
                struct dirent64 entry;
                char buf[4096];
        } u;
        struct rlimit rl;
        ssize_t n;
        int dfd;

        if (close_range((unsigned)from, ~0U, 0) >= 0)
                return;

        /* Kernels before 5.9. opendir() allocates, getdents64() does not. */
        dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                while ((n = getdents64(dfd, u.buf, sizeof(u.buf))) > 0)
                        for (ssize_t off = 0; off < n;) {
                                struct dirent64 *de = (struct dirent64 *)(u.buf + off);
                                int fd = 0;
                                bool number = de->d_name[0] != 0;

                                for (const char *c = de->d_name; *c && number; c++) {
                                        number = *c >= '0' && *c <= '9' && fd < 100000000;
                                        fd = fd * 10 + (*c - '0');
                                }
                                if (number && fd >= from && fd != dfd)
                                        close(fd);
                                off += de->d_reclen;
                        }
                close(dfd);
                if (n == 0)
                        return;
        }

        /* No /proc either: every possible fd. */
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max > (1U << 20))
                rl.rlim_max = 1U << 20;
        for (rlim_t fd = (rlim_t)from; fd < rl.rlim_max; fd++)
                close((int)fd);
}

typedef struct ChildSetup {
        char *const *argv;
        char **envp;
        int in_fd, out_fd, err_fd, exec_fd;
        pid_t parent;          /* to die with, when not 0 */
} ChildSetup;

_Noreturn static void child_exec(const ChildSetup *c)
{
        /* All zeros is SIG_DFL, no flags, empty mask, whatever the architecture's layout. */
        static const uint64_t kernel_sigaction_default[8] = {};
        int exec_fd = c->exec_fd, e;
        sigset_t ss;

        /* SIG_IGN survives execve(), and sd-event users block signals: give the hook a clean slate. The
         * raw syscall, because glibc's sigaction() refuses the two signals it reserves (32, 33), which
         * a parent started by posix_spawn() (GNU make, for one) can leave ignored. */
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)syscall(SYS_rt_sigaction, sig, kernel_sigaction_default, NULL, _NSIG / 8);
        sigemptyset(&ss);
        if (sigprocmask(SIG_SETMASK, &ss, NULL) < 0)
                goto fail;

        /* The parent does it too; whichever comes first, the timeout's kill(-pid) reaches everything. */
        if (setpgid(0, 0) < 0)
                goto fail;

        if (c->parent != 0) {
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                        goto fail;
                /* The parent died before prctl(): nobody would send the signal. */
                if (getppid() != c->parent)
                        _exit(127);
        }

        if (dup2(c->in_fd, STDIN_FILENO) < 0 || dup2(c->out_fd, STDOUT_FILENO) < 0 ||
            dup2(c->err_fd, STDERR_FILENO) < 0)
                goto fail;

        /* Keep the errno pipe just above stdio, close-on-exec, and everything else closed. */
        if (exec_fd != 3) {
                if (dup3(exec_fd, 3, O_CLOEXEC) < 0)
                        goto fail;
                exec_fd = 3;
        }
        close_all_fds_from(4);

        execve(c->argv[0], c->argv, c->envp);

fail:
        e = errno;
        (void)!write(exec_fd, &e, sizeof(e));
        _exit(127);
}

static int process_add_sources(Process *p, sd_event *event, uint64_t timeout_usec)
{
        int r;

        r = sd_event_add_child(event, &p->child_source, p->pid, WEXITED, process_on_child, p);
        if (r < 0)
                return r;

        r = sd_event_add_io(event, &p->out.source, p->out.fd, EPOLLIN, stream_on_io, &p->out);
        if (r < 0)
                return r;

        r = sd_event_add_io(event, &p->err.source, p->err.fd, EPOLLIN, stream_on_io, &p->err);
        if (r < 0)
                return r;

        if (timeout_usec > 0) {
                r = sd_event_add_time_relative(event, &p->timer_source, CLOCK_MONOTONIC, timeout_usec,
                                               10 * USEC_PER_MSEC, process_on_timeout, p);
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * A pipe holding DATA (LEN <= PROCESS_STDIN_MAX bytes) and then EOF: *RET_FD
 * is its read end, the child's stdin. Everything is written now, so the
 * pipe's buffer must take it all: it is made large enough, and a pipe that
 * cannot be (the user's pipe-user-pages-soft exhausted) is -E2BIG.
 */
static int stdin_pipe_new(const void *data, size_t len, int *ret_fd)
{
        _cleanup_pipe_ int fds[2] = { -1, -1 };
        ssize_t n;
        int r;

        if (len > PROCESS_STDIN_MAX)
                return -E2BIG;
        r = pipe_new(fds);
        if (r < 0)
                return r;
        if (len > PIPE_BUF)
                (void)fcntl(fds[1], F_SETPIPE_SZ, (int)len);
        if (fcntl(fds[1], F_SETFL, O_NONBLOCK) < 0)
                return negative_errno();
        if (len > 0) {
                n = write(fds[1], data, len);
                if (n < 0)
                        return errno == EAGAIN ? -E2BIG : negative_errno();
                if ((size_t)n != len)
                        return -E2BIG;
        }
        *ret_fd = TAKE_FD(fds[0]);
        return 0;
}

static int process_params_check(const ProcessParams *params)
{
        if (!params->argv || !params->argv[0] || params->argv[0][0] != '/')
                return -EINVAL;
        if (params->stdout_line && (params->capture_stdout || params->stdout_line_max > PROCESS_STDOUT_LINE_MAX))
                return -EINVAL;
        if (params->stdin_len > 0 && !params->stdin_data)
                return -EINVAL;
        return 0;
}

int process_spawn(sd_event *event, const ProcessParams *params, ProcessDone done, void *userdata,
                  Process **ret)
{
        _cleanup_pipe_ int out[2] = { -1, -1 }, err[2] = { -1, -1 }, exec[2] = { -1, -1 };
        _cleanup_close_ int in_fd = -1;
        _cleanup_free_ char **envp = NULL;
        Process *p;
        pid_t pid, parent;
        int r;

        if (!event || !params || !done || !ret)
                return -EINVAL;
        r = process_params_check(params);
        if (r < 0)
                return r;

        r = env_build(params->env, &envp);
        if (r < 0)
                return r;

        if ((r = pipe_new(out)) < 0 || (r = pipe_new(err)) < 0 || (r = pipe_new(exec)) < 0)
                return r;
        /* Only our ends: a non-blocking stdout would make the child's writes fail with EAGAIN. */
        if (fcntl(out[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(err[0], F_SETFL, O_NONBLOCK) < 0 ||
            fcntl(exec[0], F_SETFL, O_NONBLOCK) < 0)
                return negative_errno();

        if (params->stdin_data) {
                r = stdin_pipe_new(params->stdin_data, params->stdin_len, &in_fd);
                if (r < 0)
                        return r;
        } else {
                in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (in_fd < 0)
                        return negative_errno();
                in_fd = fd_move_above_stdio(in_fd);
                if (in_fd < 0)
                        return in_fd;
        }

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (Process){
                .out = { .process = p, .fd = -1, .capture = params->capture_stdout },
                .err = { .process = p, .fd = -1, .keep_last = true },
                .exec_fd = -1,
                .capture_max = MIN(params->capture_max, SIZE_MAX - 1), /* + 1 for the NUL must not wrap */
                .log_max = params->log_max,
                .done = done,
                .stdout_line = params->stdout_line,
                .userdata = userdata,
        };
        p->prefix = strdup(params->log_prefix ? params->log_prefix : params->argv[0]);
        if (params->stdout_line) {
                p->out.cb_max = params->stdout_line_max ?: PROCESS_LINE_MAX;
                p->out.cb_line = malloc(p->out.cb_max + 1);
        }
        if (!p->prefix || (params->stdout_line && !p->out.cb_line)) {
                process_free(p);
                return -ENOMEM;
        }

        parent = getpid();
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                process_free(p);
                return r;
        }
        if (pid == 0)
                child_exec(&(ChildSetup){
                        .argv = params->argv,
                        .envp = envp,
                        .in_fd = in_fd,
                        .parent = params->die_with_parent ? parent : 0,
                        .out_fd = out[1],
                        .err_fd = err[1],
                        .exec_fd = exec[1],
                });

        /*
         * Before anyone signals the group: the child may not have run
         * setpgid() yet. Fails with EACCES once it has exec'd; fine then.
         */
        (void)setpgid(pid, pid);

        p->pid = pid;
        p->out.fd = TAKE_FD(out[0]);
        p->err.fd = TAKE_FD(err[0]);
        p->exec_fd = TAKE_FD(exec[0]);

        r = process_add_sources(p, event, params->timeout_usec);
        if (r < 0) {
                process_free(p); /* kills and reaps the child */
                return r;
        }

        *ret = p;
        return 0;
}

const char *process_result_to_string(const ProcessResult *r, char *buf, size_t size)
{
        const char *name;

        if (r->status == 0)
                (void)snprintf(buf, size, "exited with status 0");
        else if (r->status > 0)
                (void)snprintf(buf, size, "failed with exit status %d", r->status);
        else if (r->status == -ETIMEDOUT)
                (void)snprintf(buf, size, "timed out");
        else if (r->signal > 0) {
                name = sigabbrev_np(r->signal);
                if (name)
                        (void)snprintf(buf, size, "was killed by signal %s", name);
                else
                        (void)snprintf(buf, size, "was killed by signal %d", r->signal);
        } else if (r->status == -EFBIG)
                (void)snprintf(buf, size, "printed more output than allowed");
        else
                (void)snprintf(buf, size, "could not run: %s", strerror(-r->status));
        return buf;
}
