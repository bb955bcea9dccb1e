/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiot-install's server: connections, requests, the queue of hook runs,
 * and the outcomes it keeps.
 *
 *   accept ─ peer check (SO_PEERCRED: root or the owner of state_dir) ─ one
 *   request (one datagram, at most WIRE_LINE_MAX bytes, install-wire.c) ─
 *   answered at once, or when the hook run it waits for ends ─ closed
 *
 * Decisions:
 *  - One hook at a time. A request that needs a hook while another runs
 *    waits in a short queue (INSTALLER_QUEUE_MAX) instead of being refused:
 *    the agent's version report, a commit and an install may meet (a report
 *    timer fires during an install), and refusing one of them would turn
 *    an ordinary coincidence into a failed job or an "unknown" version.
 *    What is refused as busy is a second install of another job (the agent
 *    never asks for one before the first has answered: whoever does is
 *    confused), and anything beyond the queue.
 *  - `install K` and `outcome K` while K's install runs or waits both wait
 *    for it: an agent that restarted asks again, and the hook runs once.
 *    Queued `version` requests share one run.
 *  - A queued run whose every asker has gone is dropped (no hook runs for
 *    nobody); a running one goes on: an install is never interrupted
 *    because the agent went away, and its outcome is recorded first.
 *  - The configuration is re-read when the file changed, at the next
 *    connection: `systemctl reload krtiot` changes the hook for the next
 *    install without a restart of the installer. A file that no longer
 *    loads leaves the one loaded before in force.
 *
 * Invariants:
 *  - everything the agent can make us hold is bounded: connections
 *    (INSTALLER_CONNECTIONS_MAX, each given INSTALLER_REQUEST_TIMEOUT_USEC
 *    to say what it wants), queued runs, outcome records (outcomes.c);
 *  - a Task's image fd is opened and checked when the request arrives and
 *    stays open until its hook has ended (hook.c);
 *  - an install's outcome is recorded before anyone is answered.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "hook.h"
#include "install-wire.h"
#include "installer.h"
#include "log.h"
#include "outcomes.h"
#include "util/macro.h"
#include "util/random-id.h"

#define INSTALLER_CONNECTIONS_MAX 16
#define INSTALLER_QUEUE_MAX 4
#define INSTALLER_REQUEST_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define INSTALLER_BACKLOG 16

typedef struct Task Task;
typedef struct Conn Conn;

struct Conn {
        Installer *installer;
        int fd;
        struct ucred peer;
        sd_event_source *io, *timer;
        Task *task; /* the run whose end it waits for; NULL until its request came */
        /*
         * Set when it is refused whatever it asks (a peer that may not ask). The answer waits for the
         * request: closing a Unix socket with a datagram unread resets the peer's connection, whose
         * next recv() then says ECONNRESET instead of why.
         */
        char refusal[192];
        Conn *prev, *next;
};

struct Task {
        Installer *installer;
        InstallOp op;
        char key[RANDOM_ID_LEN + 1];
        char *id, *target, *url;
        int image_fd; /* install: until hook_start() takes it */
        Hook *hook;   /* set while it runs */
        Task *next;   /* the queue */
};

struct Installer {
        sd_event *event;
        char *config_path, *listen_path, *runtime_dir;
        Config *config;
        struct stat config_stat; /* of the file the last load (good or bad) looked at */
        uint64_t idle_usec;
        bool verbose;

        int listen_fd;
        struct stat bound; /* the socket file we made (--listen), to remove only ours at exit */
        sd_event_source *listen_source, *idle_timer;

        Conn *conns;
        unsigned n_conns;
        Task *running;
        Task *queue; /* oldest first */
        unsigned n_queued;
        bool stopping;
};

static void installer_next(Installer *i);
static void installer_check_idle(Installer *i);

/* ---- configuration ---- */

/* Loads PATH; every problem is logged as FILE:LINE: KEY: what is wrong. */
static int installer_load_config(const char *path, Config **ret)
{
        _cleanup_free_ char *errors = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        f = open_memstream(&errors, &len);
        if (!f)
                return log_error_errno(errno, "Cannot load %s: %m", path);
        r = config_load(path, f, ret);
        fclose(f);
        if (r < 0)
                for (char *line = strtok(errors, "\n"); line; line = strtok(NULL, "\n"))
                        log_error("%s", line);
        return r;
}

static bool stat_same_file(const struct stat *a, const struct stat *b)
{
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
               a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
               a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Re-reads the configuration if its file changed since the last look. */
static void installer_refresh_config(Installer *i)
{
        Config *c = NULL;
        struct stat st;

        if (stat(i->config_path, &st) < 0 || stat_same_file(&st, &i->config_stat))
                return; /* a missing file: the loaded configuration stays, as it would on a bad one */
        i->config_stat = st;
        if (installer_load_config(i->config_path, &c) < 0) {
                log_error("%s changed and was refused; the configuration loaded before stays in force.",
                          i->config_path);
                return;
        }
        config_unref(i->config);
        i->config = c;
        if (!i->verbose)
                log_set_max_level(c->log_level);
        log_info("%s changed: reloaded.", i->config_path);
}

/* The agent's user: the owner of state_dir (StateDirectory= makes it so under systemd). */
static int installer_agent_uid(const Installer *i, uid_t *ret)
{
        struct stat st;

        if (stat(i->config->state_dir, &st) < 0)
                return negative_errno();
        *ret = st.st_uid;
        return 0;
}

/* ---- tasks ---- */

static Task *task_free(Task *t)
{
        if (!t)
                return NULL;
        hook_free(t->hook);
        if (t->image_fd >= 0)
                close(t->image_fd);
        free(t->id);
        free(t->target);
        free(t->url);
        free(t);
        return NULL;
}

/* A Task for REQ; takes IMAGE_FD (install) on success. */
static int task_new(Installer *i, const InstallRequest *req, int image_fd, Task **ret)
{
        Task *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        *t = (Task){ .installer = i, .op = req->op, .image_fd = -1 };
        if (req->key)
                (void)snprintf(t->key, sizeof(t->key), "%s", req->key);
        if ((req->id && !(t->id = strdup(req->id))) || (req->target && !(t->target = strdup(req->target))) ||
            (req->url && !(t->url = strdup(req->url)))) {
                task_free(t);
                return -ENOMEM;
        }
        t->image_fd = image_fd;
        *ret = t;
        return 0;
}

static InstallRequest task_request(const Task *t)
{
        return (InstallRequest){
                .op = t->op,
                .key = t->key[0] ? t->key : NULL,
                .id = t->id,
                .target = t->target,
                .url = t->url,
        };
}

/* The install of KEY (any key when NULL), running or queued. */
static Task *installer_find_install(Installer *i, const char *key)
{
        if (i->running && i->running->op == INSTALL_OP_INSTALL &&
            (!key || strcmp(i->running->key, key) == 0))
                return i->running;
        for (Task *t = i->queue; t; t = t->next)
                if (t->op == INSTALL_OP_INSTALL && (!key || strcmp(t->key, key) == 0))
                        return t;
        return NULL;
}

static void installer_dequeue(Installer *i, Task *t)
{
        for (Task **p = &i->queue; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        t->next = NULL;
                        i->n_queued--;
                        return;
                }
}

static void installer_enqueue(Installer *i, Task *t)
{
        Task **p = &i->queue;

        while (*p)
                p = &(*p)->next;
        *p = t;
        i->n_queued++;
}

/* ---- connections ---- */

static Conn *conn_free(Conn *c)
{
        Installer *i;

        if (!c)
                return NULL;
        i = c->installer;
        if (c->prev)
                c->prev->next = c->next;
        else if (i->conns == c)
                i->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        i->n_conns--;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        if (c->fd >= 0)
                close(c->fd);
        free(c);
        return NULL;
}

/* Sends A and closes the connection. One datagram, far below any socket buffer: it never blocks. */
static void conn_answer(Conn *c, const InstallAnswer *a)
{
        char line[WIRE_LINE_MAX];
        size_t len;
        int r;

        r = install_wire_answer(line, a, &len);
        if (r < 0)
                log_error_errno(r, "Cannot encode an answer: %m");
        else if (send(c->fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                /* The agent went away: what it asked is recorded (an install's outcome) or moot. */
                log_info_errno(errno, "Cannot answer pid %d: %m", (int)c->peer.pid);
        conn_free(c);
}

static void conn_refuse(Conn *c, const char *reason)
{
        log_warning("Refused a request from pid %d (uid %u): %s.", (int)c->peer.pid, (unsigned)c->peer.uid,
                    reason);
        conn_answer(c, &(InstallAnswer){ .type = INSTALL_ANSWER_REFUSED, .reason = reason });
}

static bool task_has_waiters(const Installer *i, const Task *t)
{
        for (const Conn *c = i->conns; c; c = c->next)
                if (c->task == t)
                        return true;
        return false;
}

/*
 * A waiting connection's peer went away (or broke the protocol). A queued
 * run nobody waits for any more is dropped; a reboot, whose permission
 * (the outcome record) it consumed, and a running hook go on.
 */
static void installer_drop_conn(Conn *c)
{
        Installer *i = c->installer;
        Task *t = c->task;

        conn_free(c);
        if (t && t != i->running && t->op != INSTALL_OP_REBOOT && !task_has_waiters(i, t)) {
                log_info("Dropped the queued %s%s%s: whoever asked has gone.", install_op_to_string(t->op),
                         t->key[0] ? " of job " : "", t->key);
                installer_dequeue(i, t);
                task_free(t);
        }
        installer_check_idle(i);
}

/* ---- running hooks ---- */

static void installer_answer_waiters(Installer *i, const Task *t, const InstallAnswer *a)
{
        Conn *next;

        for (Conn *c = i->conns; c; c = next) {
                next = c->next;
                if (c->task == t)
                        conn_answer(c, a);
        }
}

static void installer_log_outcome(const Task *t, const InstallAnswer *a)
{
        const char *what = install_op_to_string(t->op);

        if (a->type == INSTALL_ANSWER_VERSION)
                log_info("The running version is %s.", a->version);
        else if (a->outcome == INSTALL_OUTCOME_FAILED)
                log_error("The %s%s%s failed: %s.", what, t->key[0] ? " of job " : "", t->key,
                          a->reason ? a->reason : "no reason given");
        else
                log_notice("The %s%s%s ended: %s.", what, t->key[0] ? " of job " : "", t->key,
                           install_outcome_to_string(a->outcome));
}

/* T ended with A: recorded (an install), answered, freed; the next run starts. */
static void installer_finish(Installer *i, Task *t, const InstallAnswer *a)
{
        int r;

        installer_log_outcome(t, a);
        if (t->op == INSTALL_OP_INSTALL) {
                r = outcomes_save(i->runtime_dir, t->key, a);
                if (r < 0)
                        log_error_errno(r, "Cannot record the outcome of job %s in %s: %m", t->key,
                                        i->runtime_dir);
        }
        installer_answer_waiters(i, t, a);
        if (i->running == t)
                i->running = NULL;
        task_free(t);

        if (i->stopping && !i->running) {
                log_info("The hook run has ended: stopping.");
                (void)sd_event_exit(i->event, 0);
                return;
        }
        installer_next(i);
        installer_check_idle(i);
}

static void on_hook_done(Hook *h, const InstallAnswer *a, void *userdata)
{
        Task *t = userdata;

        installer_finish(t->installer, t, a);
}

/* Starts the oldest queued run, unless one runs (or we are stopping). */
static void installer_next(Installer *i)
{
        InstallRequest req;
        InstallAnswer now = {};
        char reason[256];
        Task *t = i->queue;
        int r;

        if (i->running || i->stopping || !t)
                return;
        installer_dequeue(i, t);
        req = task_request(t);
        r = hook_start(i->event, i->config, &req, t->image_fd, on_hook_done, t, &t->hook, &now);
        if (r == 0) {
                t->image_fd = -1; /* the Hook's now */
                i->running = t;
                log_info("Running %s for the %s%s%s (pid %d).",
                         t->op == INSTALL_OP_REBOOT ? "the reboot command" : i->config->ota_hook,
                         install_op_to_string(t->op), t->key[0] ? " of job " : "", t->key,
                         hook_pid(t->hook));
                return;
        }
        if (r < 0) {
                (void)snprintf(reason, sizeof(reason), "cannot run %s: %s",
                               t->op == INSTALL_OP_REBOOT ? "the reboot command" : i->config->ota_hook,
                               strerror(-r));
                now = (InstallAnswer){
                        .type = INSTALL_ANSWER_DONE, .outcome = INSTALL_OUTCOME_FAILED, .reason = reason};
        }
        installer_finish(i, t, &now); /* answered without a run; it starts the next one */
}

/* ---- requests ---- */

static void conn_wait(Conn *c, Task *t)
{
        c->task = t;
        /* It has asked: the request timeout is over; its io source now only watches for a hangup. */
        c->timer = sd_event_source_disable_unref(c->timer);
}

/* Queues REQ (taking IMAGE_FD on success) and makes C wait for it. */
static void installer_queue_request(Installer *i, Conn *c, const InstallRequest *req, int image_fd)
{
        Task *t;
        int r;

        r = task_new(i, req, image_fd, &t);
        if (r < 0) {
                if (image_fd >= 0)
                        close(image_fd);
                conn_refuse(c, "out of memory");
                return;
        }
        installer_enqueue(i, t);
        conn_wait(c, t);
        installer_next(i);
}

static void installer_answer_outcome(Installer *i, Conn *c, const char *key)
{
        WireMessage msg = {};
        InstallAnswer a;
        int r;

        r = outcomes_load(i->runtime_dir, key, &msg, &a);
        if (r == -ENOENT)
                a = (InstallAnswer){ .type = INSTALL_ANSWER_UNKNOWN };
        else if (r < 0) {
                log_error_errno(r, "Cannot read the outcome of job %s in %s: %m", key, i->runtime_dir);
                a = (InstallAnswer){ .type = INSTALL_ANSWER_UNKNOWN };
        }
        conn_answer(c, &a);
        wire_message_done(&msg);
}

static bool installer_queue_full(Installer *i, Conn *c)
{
        if (i->n_queued < INSTALLER_QUEUE_MAX)
                return false;
        conn_refuse(c, "busy: too many requests are waiting");
        return true;
}

static void installer_request_install(Installer *i, Conn *c, const InstallRequest *req)
{
        char reason[INSTALL_REASON_MAX];
        Task *t = installer_find_install(i, req->key);
        uid_t agent = (uid_t)-1; /* nobody's: set by installer_agent_uid() */
        int fd, r;

        if (t) {
                log_info("The install of job %s is under way already: pid %d waits for its end.", req->key,
                         (int)c->peer.pid);
                conn_wait(c, t);
                return;
        }
        if (installer_find_install(i, NULL)) {
                conn_refuse(c, "busy: the install of another job is under way");
                return;
        }
        if (installer_queue_full(i, c))
                return;

        r = installer_agent_uid(i, &agent);
        if (r < 0) {
                (void)snprintf(reason, sizeof(reason), "cannot stat state_dir %s: %s", i->config->state_dir,
                               strerror(-r));
                conn_refuse(c, reason);
                return;
        }
        fd = hook_open_image(i->config->ota_download_dir, req->key, agent, reason, sizeof(reason));
        if (fd < 0) {
                conn_refuse(c, reason);
                return;
        }
        installer_queue_request(i, c, req, fd);
}

static void installer_request_reboot(Installer *i, Conn *c, const InstallRequest *req)
{
        WireMessage msg = {};
        InstallAnswer a;
        int r;

        if (installer_queue_full(i, c))
                return;
        r = outcomes_load(i->runtime_dir, req->key, &msg, &a);
        wire_message_done(&msg);
        if (r < 0 || a.outcome != INSTALL_OUTCOME_REBOOT) {
                conn_refuse(c, "no install of this job ended asking for a reboot");
                return;
        }
        /* One reboot per install that asked for one: the record is the permission, and it is used up. */
        r = outcomes_remove(i->runtime_dir, req->key);
        if (r < 0) {
                log_error_errno(r, "Cannot remove the outcome of job %s in %s: %m", req->key,
                                i->runtime_dir);
                conn_refuse(c, "cannot use up the job's outcome record");
                return;
        }
        installer_queue_request(i, c, req, -1);
}

static void installer_request_version(Installer *i, Conn *c, const InstallRequest *req)
{
        for (Task *t = i->queue; t; t = t->next)
                if (t->op == INSTALL_OP_VERSION) {
                        conn_wait(c, t); /* one run answers everyone who asked meanwhile */
                        return;
                }
        if (!installer_queue_full(i, c))
                installer_queue_request(i, c, req, -1);
}

static void installer_request(Installer *i, Conn *c, const char *buf, size_t len)
{
        WireMessage msg = {};
        InstallRequest req;
        Task *t;

        if (install_wire_parse_request(buf, len, &msg, &req) < 0) {
                conn_refuse(c, "malformed request");
                wire_message_done(&msg);
                return;
        }
        log_info("Request from pid %d (uid %u): %s%s%s%s%s.", (int)c->peer.pid, (unsigned)c->peer.uid,
                 install_op_to_string(req.op), req.key ? " of job " : "", req.key ? req.key : "",
                 req.target ? " to " : "", req.target ? req.target : "");

        switch (req.op) {
        case INSTALL_OP_INSTALL:
                installer_request_install(i, c, &req);
                break;
        case INSTALL_OP_OUTCOME:
                t = installer_find_install(i, req.key);
                if (t)
                        conn_wait(c, t);
                else
                        installer_answer_outcome(i, c, req.key);
                break;
        case INSTALL_OP_COMMIT:
                if (!installer_queue_full(i, c))
                        installer_queue_request(i, c, &req, -1);
                break;
        case INSTALL_OP_VERSION:
                installer_request_version(i, c, &req);
                break;
        case INSTALL_OP_REBOOT:
                installer_request_reboot(i, c, &req);
                break;
        default:
                conn_refuse(c, "malformed request");
        }
        wire_message_done(&msg);
}

static void conn_read_request(Conn *c)
{
        char buf[WIRE_LINE_MAX];
        ssize_t n;

        /* MSG_TRUNC: the length of the whole datagram, so that one too long is seen as such. */
        n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                if (n < 0)
                        log_info_errno(errno, "Connection from pid %d broke: %m", (int)c->peer.pid);
                installer_drop_conn(c);
                return;
        }
        if (c->refusal[0]) {
                /* Logged when it connected. */
                conn_answer(c, &(InstallAnswer){ .type = INSTALL_ANSWER_REFUSED, .reason = c->refusal });
                return;
        }
        if ((size_t)n > sizeof(buf)) {
                char reason[64];

                (void)snprintf(reason, sizeof(reason), "request of %zd bytes, longer than %d", n,
                               WIRE_LINE_MAX);
                conn_refuse(c, reason);
                return;
        }
        installer_request(c->installer, c, buf, (size_t)n);
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Conn *c = userdata;
        Installer *i = c->installer;
        char byte;
        ssize_t n;

        if (!c->task) {
                conn_read_request(c);
                installer_check_idle(i);
                return 0;
        }

        /* Waiting for a run: EOF is the agent gone; anything else breaks "one request per connection". */
        n = recv(fd, &byte, 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(revents & (EPOLLHUP | EPOLLERR)))
                return 0;
        if (n > 0)
                log_warning("pid %d sent a second request on one connection: closing it.", (int)c->peer.pid);
        installer_drop_conn(c);
        return 0;
}

static int on_conn_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        Conn *c = userdata;

        log_warning("pid %d (uid %u) sent no request within %u s: closing its connection.", (int)c->peer.pid,
                    (unsigned)c->peer.uid, (unsigned)(INSTALLER_REQUEST_TIMEOUT_USEC / USEC_PER_SEC));
        installer_drop_conn(c);
        return 0;
}

/* ---- the listening socket ---- */

/*
 * A connection we cannot take at all (too many): refused and closed at once. A peer whose request was
 * there already may see ECONNRESET instead of this answer (see Conn.refusal); it is busy either way.
 */
static void installer_turn_away(int fd, const struct ucred *peer, const char *reason)
{
        char line[WIRE_LINE_MAX];
        size_t len;

        log_warning("Refused a connection from pid %d (uid %u): %s.", (int)peer->pid, (unsigned)peer->uid,
                    reason);
        if (install_wire_answer(line, &(InstallAnswer){ .type = INSTALL_ANSWER_REFUSED, .reason = reason },
                                &len) >= 0)
                (void)send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        close(fd);
}

/* Why PEER may not ask (into REASON), or "" when it may. */
static void installer_check_peer(Installer *i, const struct ucred *peer, char *reason, size_t size)
{
        uid_t agent = (uid_t)-1; /* nobody's: set by installer_agent_uid() */
        int r;

        reason[0] = 0;
        /* The real gate: only root and the agent's user may ask, whatever the socket's mode. */
        r = installer_agent_uid(i, &agent);
        if (r < 0)
                (void)snprintf(reason, size, "cannot stat state_dir %s: %s", i->config->state_dir,
                               strerror(-r));
        else if (peer->uid != 0 && peer->uid != agent)
                (void)snprintf(reason, size,
                               "not allowed: only root and the agent's user (uid %u, the owner of %s) "
                               "may ask",
                               (unsigned)agent, i->config->state_dir);
}

static void installer_accept(Installer *i, int fd)
{
        struct ucred peer = {};
        socklen_t sl = sizeof(peer);
        char reason[sizeof(((Conn *)NULL)->refusal)];
        Conn *c;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &sl) < 0) {
                log_warning_errno(errno, "Cannot get the credentials of a connection: %m");
                close(fd);
                return;
        }
        if (i->n_conns >= INSTALLER_CONNECTIONS_MAX) {
                installer_turn_away(fd, &peer, "busy: too many connections");
                return;
        }
        installer_refresh_config(i);
        installer_check_peer(i, &peer, reason, sizeof(reason));
        if (reason[0])
                log_warning("Refused a connection from pid %d (uid %u): %s.", (int)peer.pid,
                            (unsigned)peer.uid, reason);

        c = calloc(1, sizeof(*c));
        if (!c) {
                installer_turn_away(fd, &peer, "out of memory");
                return;
        }
        *c = (Conn){ .installer = i, .fd = fd, .peer = peer, .next = i->conns };
        (void)snprintf(c->refusal, sizeof(c->refusal), "%s", reason);
        if (i->conns)
                i->conns->prev = c;
        i->conns = c;
        i->n_conns++;

        r = sd_event_add_io(i->event, &c->io, fd, EPOLLIN | EPOLLRDHUP, on_conn_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(i->event, &c->timer, CLOCK_MONOTONIC,
                                               INSTALLER_REQUEST_TIMEOUT_USEC, USEC_PER_SEC / 10,
                                               on_conn_timeout, c);
        if (r < 0) {
                log_error_errno(r, "Cannot watch a connection: %m");
                conn_free(c);
        }
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Installer *i = userdata;
        int cfd;

        /* One per wakeup: the loop comes back at once while more are pending (level-triggered). */
        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        log_warning_errno(errno, "Cannot accept a connection: %m");
                return 0;
        }
        installer_accept(i, cfd);
        installer_check_idle(i);
        return 0;
}

/* The socket systemd passed (krtiot-install.socket): exactly one listening SOCK_SEQPACKET Unix socket. */
static int installer_take_systemd_socket(Installer *i)
{
        int n = sd_listen_fds(1);

        if (n < 0)
                return log_error_errno(n, "Cannot get the socket from systemd: %m");
        if (n == 0)
                return log_error_errno(EBADF, "No socket: run krtiot-install from krtiot-install.socket, "
                                              "or give --listen PATH.");
        if (n != 1 || sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
                return log_error_errno(EBADF,
                                       "systemd passed %d sockets; one listening SOCK_SEQPACKET Unix "
                                       "socket was expected (ListenSequentialPacket=).",
                                       n);
        if (fcntl(SD_LISTEN_FDS_START, F_SETFL, O_NONBLOCK) < 0)
                return log_error_errno(errno, "Cannot make the socket non-blocking: %m");
        i->listen_fd = SD_LISTEN_FDS_START;
        return 0;
}

/* Whether something accepts connections on PATH (a live installer: its socket is not ours to replace). */
static bool socket_is_live(const struct sockaddr_un *sa)
{
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        return fd >= 0 && (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN);
}

/* --listen PATH: binds the socket ourselves, mode 0666 (the peer check is the gate). */
static int installer_bind(Installer *i)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        struct stat st;
        mode_t old;
        int r;

        if (strlen(i->listen_path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "--listen %s: longer than %zu bytes.", i->listen_path,
                                       sizeof(sa.sun_path) - 1);
        memcpy(sa.sun_path, i->listen_path, strlen(i->listen_path));

        if (lstat(i->listen_path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(EEXIST, "--listen %s: exists and is not a socket.",
                                               i->listen_path);
                if (socket_is_live(&sa))
                        return log_error_errno(EADDRINUSE, "--listen %s: another process listens there.",
                                               i->listen_path);
                if (unlink(i->listen_path) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "Cannot remove the stale socket %s: %m",
                                               i->listen_path);
        }

        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create a socket: %m");
        old = umask(0111);
        r = bind(fd, (const struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (r < 0)
                return log_error_errno(errno, "Cannot bind %s: %m", i->listen_path);
        if (lstat(i->listen_path, &i->bound) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", i->listen_path);
        if (listen(fd, INSTALLER_BACKLOG) < 0)
                return log_error_errno(errno, "Cannot listen on %s: %m", i->listen_path);
        i->listen_fd = TAKE_FD(fd);
        return 0;
}

/* ---- idle, signals, lifecycle ---- */

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata)
{
        Installer *i = userdata;

        log_info("Nothing to do for %u s: exiting.", (unsigned)(i->idle_usec / USEC_PER_SEC));
        return sd_event_exit(i->event, 0);
}

/* Armed while nothing happens: no connection, no run (socket activation starts us again). */
static void installer_check_idle(Installer *i)
{
        bool busy = i->n_conns > 0 || i->running || i->queue;
        int r;

        if (i->idle_usec == 0 || i->stopping)
                return;
        if (busy) {
                if (i->idle_timer)
                        (void)sd_event_source_set_enabled(i->idle_timer, SD_EVENT_OFF);
                return;
        }
        if (i->idle_timer) {
                r = sd_event_source_set_time_relative(i->idle_timer, i->idle_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(i->idle_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(i->event, &i->idle_timer, CLOCK_MONOTONIC, i->idle_usec,
                                               USEC_PER_SEC / 10, on_idle, i);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the idle timer: %m");
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        Installer *i = userdata;
        Conn *next;

        if (i->stopping || !i->running) {
                if (i->running)
                        log_warning("Received %s again: stopping now; the %s (pid %d) is killed.",
                                    strsignal((int)si->ssi_signo), install_op_to_string(i->running->op),
                                    hook_pid(i->running->hook));
                else
                        log_info("Received %s, stopping.", strsignal((int)si->ssi_signo));
                return sd_event_exit(i->event, 0);
        }

        /* A firmware install is not interrupted by a stop: it ends first (systemd's TimeoutStopSec= is the
         * bound). Nothing new is taken meanwhile; whoever waits for it gets its answer. */
        i->stopping = true;
        log_notice("Received %s: stopping once the %s (pid %d) has ended.", strsignal((int)si->ssi_signo),
                   install_op_to_string(i->running->op), hook_pid(i->running->hook));
        i->listen_source = sd_event_source_disable_unref(i->listen_source);
        i->idle_timer = sd_event_source_disable_unref(i->idle_timer);
        for (Conn *c = i->conns; c; c = next) {
                next = c->next;
                if (c->task != i->running)
                        conn_answer(c, &(InstallAnswer){ .type = INSTALL_ANSWER_REFUSED,
                                                        .reason = "the installer is stopping" });
        }
        while (i->queue) {
                Task *t = i->queue;

                installer_dequeue(i, t);
                task_free(t);
        }
        return 0;
}

int installer_new(const InstallerParams *params, Installer **ret)
{
        _cleanup_(installer_freep) Installer *i = NULL;
        int r;

        if (!params || !params->config_path || !params->runtime_dir || !ret)
                return -EINVAL;

        i = calloc(1, sizeof(*i));
        if (!i)
                return log_error_errno(ENOMEM, "Out of memory.");
        i->listen_fd = -1;
        i->idle_usec = params->idle_usec;
        i->verbose = params->verbose;
        i->config_path = strdup(params->config_path);
        i->runtime_dir = strdup(params->runtime_dir);
        i->listen_path = params->listen_path ? strdup(params->listen_path) : NULL;
        if (!i->config_path || !i->runtime_dir || (params->listen_path && !i->listen_path))
                return log_error_errno(ENOMEM, "Out of memory.");

        (void)stat(i->config_path, &i->config_stat);
        r = installer_load_config(i->config_path, &i->config);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (!i->verbose)
                log_set_max_level(i->config->log_level);

        r = outcomes_prepare(i->runtime_dir);
        if (r == -EPERM)
                return log_error_errno(r,
                                       "The runtime directory %s must be ours (uid %u) and writable by "
                                       "nobody else.",
                                       i->runtime_dir, (unsigned)geteuid());
        if (r < 0)
                return log_error_errno(r, "Cannot use the runtime directory %s: %m", i->runtime_dir);

        r = sd_event_new(&i->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");

        *ret = TAKE_PTR(i);
        return 0;
}

Installer *installer_free(Installer *i)
{
        struct stat st;

        if (!i)
                return NULL;
        while (i->conns)
                conn_free(i->conns);
        task_free(i->running);
        while (i->queue) {
                Task *t = i->queue;

                installer_dequeue(i, t);
                task_free(t);
        }
        sd_event_source_disable_unref(i->listen_source);
        sd_event_source_disable_unref(i->idle_timer);
        if (i->listen_fd >= 0) {
                close(i->listen_fd);
                /* Our socket file only: another installer may have replaced it since. */
                if (i->listen_path && lstat(i->listen_path, &st) == 0 && st.st_dev == i->bound.st_dev &&
                    st.st_ino == i->bound.st_ino)
                        (void)unlink(i->listen_path);
        }
        sd_event_unref(i->event);
        config_unref(i->config);
        free(i->config_path);
        free(i->listen_path);
        free(i->runtime_dir);
        free(i);
        return NULL;
}

int installer_run(Installer *i)
{
        static const int signals[] = { SIGTERM, SIGINT };
        sigset_t mask;
        int r;

        /* sd-event's signal and child sources need these blocked; hooks get a clean mask (process.c). */
        sigemptyset(&mask);
        for (size_t k = 0; k < ELEMENTSOF(signals); k++)
                sigaddset(&mask, signals[k]);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");
        signal(SIGPIPE, SIG_IGN);

        for (size_t k = 0; k < ELEMENTSOF(signals); k++) {
                r = sd_event_add_signal(i->event, NULL, signals[k], on_signal, i);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch signal %d: %m", signals[k]);
        }

        r = i->listen_path ? installer_bind(i) : installer_take_systemd_socket(i);
        if (r < 0)
                return r;
        r = sd_event_add_io(i->event, &i->listen_source, i->listen_fd, EPOLLIN, on_listen, i);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the socket: %m");

        installer_check_idle(i);
        log_info("krtiot-install ready on %s (hook %s, outcomes in %s).",
                 i->listen_path ? i->listen_path : "the socket from systemd", i->config->ota_hook,
                 i->runtime_dir);

        r = sd_event_loop(i->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}
