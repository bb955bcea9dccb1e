/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One request to krtiot-install (install-client.h).
 *
 *   connect (non-blocking; a full backlog is retried) ─ send one datagram ─
 *   receive one datagram ─ parse ─ DONE
 *
 * Invariants:
 *  - DONE is called exactly once, always from the loop (a failure found in
 *    install_call_new() goes through a defer source), and nothing touches
 *    the call after it;
 *  - the answer is read whole or refused: a datagram longer than
 *    WIRE_LINE_MAX is an error, not a truncated line;
 *  - the timeout covers everything from the connect to the answer.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "install-client.h"
#include "util/macro.h"

/* The installer's backlog is full: try again this soon (within the timeout). */
#define INSTALL_CALL_RETRY_USEC (100 * USEC_PER_MSEC)

struct InstallCall {
        sd_event *event;
        struct sockaddr_un address;
        int fd;
        char request[WIRE_LINE_MAX];
        size_t request_len;
        bool sent;
        bool starting; /* inside install_call_new(): an end is kept for the defer source */
        uint64_t timeout_usec;
        sd_event_source *io, *timer, *retry, *defer;
        int error; /* how it ended inside install_call_new(), for the defer source */
        char reason[256 + sizeof(((struct sockaddr_un *)NULL)->sun_path)];
        InstallCallDone done;
        void *userdata;
};

static void call_connect(InstallCall *c);

static void call_remove_sources(InstallCall *c)
{
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->retry = sd_event_source_disable_unref(c->retry);
        c->defer = sd_event_source_disable_unref(c->defer);
}

InstallCall *install_call_free(InstallCall *c)
{
        if (!c)
                return NULL;
        call_remove_sources(c);
        if (c->fd >= 0)
                close(c->fd);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

/* Ends the call: DONE with ERROR (and REASON) or the ANSWER. Nothing may touch C after. */
static void call_end(InstallCall *c, int error, const InstallAnswer *answer)
{
        InstallCallDone done = c->done;

        call_remove_sources(c);
        if (c->fd >= 0)
                c->fd = (close(c->fd), -1);
        if (c->starting) {
                c->error = error;
                return;
        }
        c->done = NULL;
        if (done)
                done(c, error, answer, error < 0 ? c->reason : NULL, c->userdata);
}

static void call_fail(InstallCall *c, int error, const char *format, ...) _printf_(3, 4);

static void call_fail(InstallCall *c, int error, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(c->reason, sizeof(c->reason), format, ap);
        va_end(ap);
        call_end(c, error, NULL);
}

static void call_unreachable(InstallCall *c, int error)
{
        call_fail(c, error, "the installer is not reachable at %s: %s", c->address.sun_path,
                  strerror(-error));
}

static int on_defer(sd_event_source *s, void *userdata)
{
        InstallCall *c = userdata;

        call_end(c, c->error, NULL);
        return 0;
}

static void call_receive(InstallCall *c)
{
        char buf[WIRE_LINE_MAX];
        WireMessage msg = {};
        InstallAnswer a;
        ssize_t n;

        n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == ECONNRESET) {
                /* A peer that closed with our request unread: the reset comes first, then what it sent. */
                n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
                if (n < 0 && (errno == EAGAIN || errno == ECONNRESET)) {
                        call_fail(c, -ECONNRESET, "the installer closed the connection");
                        return;
                }
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n < 0) {
                call_fail(c, negative_errno(), "cannot read the installer's answer: %s", strerror(errno));
                return;
        }
        if (n == 0) {
                call_fail(c, -ECONNRESET, "the installer closed the connection");
                return;
        }
        if ((size_t)n > sizeof(buf)) {
                call_fail(c, -EBADMSG, "the installer's answer is malformed (%zd bytes)", n);
                return;
        }
        if (install_wire_parse_answer(buf, (size_t)n, &msg, &a) < 0) {
                wire_message_done(&msg);
                call_fail(c, -EBADMSG, "the installer's answer is malformed");
                return;
        }
        call_end(c, 0, &a);
        wire_message_done(&msg);
}

static void call_send(InstallCall *c)
{
        if (send(c->fd, c->request, c->request_len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return; /* EPOLLOUT comes */
                if (errno == EPIPE || errno == ECONNRESET)
                        call_fail(c, -ECONNRESET, "the installer closed the connection");
                else
                        call_fail(c, negative_errno(), "cannot send to the installer: %s", strerror(errno));
                return;
        }
        c->sent = true;
        if (sd_event_source_set_io_events(c->io, EPOLLIN) < 0)
                call_fail(c, -ENOMEM, "cannot wait for the installer's answer");
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        InstallCall *c = userdata;

        if (!c->sent) {
                /* A connect in progress has ended (or the socket is writable again). */
                if (revents & (EPOLLERR | EPOLLHUP)) {
                        int error = 0;
                        socklen_t len = sizeof(error);

                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error == 0)
                                error = ECONNRESET;
                        call_unreachable(c, -error);
                        return 0;
                }
                call_send(c);
                return 0;
        }
        call_receive(c);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        InstallCall *c = userdata;

        call_fail(c, -ETIMEDOUT, "no answer from the installer within %u s",
                  (unsigned)((c->timeout_usec + USEC_PER_SEC - 1) / USEC_PER_SEC));
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        InstallCall *c = userdata;

        c->retry = sd_event_source_disable_unref(c->retry);
        call_connect(c);
        return 0;
}

static void call_connect(InstallCall *c)
{
        int r;

        if (c->fd < 0) {
                c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (c->fd < 0) {
                        call_fail(c, negative_errno(), "cannot create a socket: %s", strerror(errno));
                        return;
                }
        }
        if (connect(c->fd, (const struct sockaddr *)&c->address, sizeof(c->address)) < 0 &&
            errno != EINPROGRESS) {
                if (errno != EAGAIN) {
                        call_unreachable(c, negative_errno());
                        return;
                }
                /* Its backlog is full (a Unix socket says so at once, it does not queue us): again soon. */
                close(c->fd);
                c->fd = -1;
                r = sd_event_add_time_relative(c->event, &c->retry, CLOCK_MONOTONIC, INSTALL_CALL_RETRY_USEC,
                                               10 * USEC_PER_MSEC, on_retry, c);
                if (r < 0)
                        call_unreachable(c, -EAGAIN);
                return;
        }
        /* Connected, or in progress: either way the send waits for EPOLLOUT. */
        r = sd_event_add_io(c->event, &c->io, c->fd, EPOLLOUT, on_io, c);
        if (r < 0)
                call_fail(c, r, "cannot watch the installer's socket: %s", strerror(-r));
}

int install_call_new(sd_event *event, const char *socket_path, const InstallRequest *req,
                     uint64_t timeout_usec, InstallCallDone done, void *userdata, InstallCall **ret)
{
        InstallCall *c;
        int r;

        if (!event || !socket_path || !req || !done || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (InstallCall){
                .event = sd_event_ref(event),
                .address = { .sun_family = AF_UNIX },
                .fd = -1,
                .timeout_usec = timeout_usec,
                .done = done,
                .userdata = userdata,
        };

        r = install_wire_request(c->request, req, &c->request_len);
        if (r < 0) {
                install_call_free(c);
                return r == -E2BIG ? -EINVAL : r;
        }
        r = sd_event_add_time_relative(event, &c->timer, CLOCK_MONOTONIC, timeout_usec, USEC_PER_SEC / 10,
                                       on_timeout, c);
        if (r < 0) {
                install_call_free(c);
                return r;
        }

        c->starting = true;
        if (strlen(socket_path) >= sizeof(c->address.sun_path))
                call_fail(c, -ENAMETOOLONG, "the installer's socket path is too long: %s", socket_path);
        else {
                memcpy(c->address.sun_path, socket_path, strlen(socket_path));
                call_connect(c);
        }
        c->starting = false;
        if (c->error < 0) {
                /* Failed at once: said from the loop all the same. */
                r = sd_event_add_defer(event, &c->defer, on_defer, c);
                if (r < 0) {
                        install_call_free(c);
                        return r;
                }
        }
        *ret = c;
        return 0;
}
