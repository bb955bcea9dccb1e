/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for install-client.c, the agent's side of the installer's wire,
 * against a fake installer in the same sd-event loop (a listening
 * SOCK_SEQPACKET socket whose behaviour each test picks): the request as
 * sent, an answer, each way of failing in words (nobody listening, a close
 * without an answer, a reset with the answer behind it, silence past the
 * timeout, a malformed or oversized answer), DONE called once and never
 * from inside install_call_new(), and a call freed from its callback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "install-client.h"
#include "tap.h"
#include "util/macro.h"

typedef enum Behaviour {
        ANSWER,       /* reads the request, sends ANSWER_TEXT */
        CLOSE,        /* reads the request, closes */
        CLOSE_UNREAD, /* sends ANSWER_TEXT, closes with the request unread: the client sees a reset first */
        SILENT,       /* reads the request, says nothing */
        OVERSIZED,    /* answers with a datagram of 9000 bytes */
} Behaviour;

typedef struct Fake {
        int listen_fd, conn_fd;
        Behaviour behaviour;
        const char *answer;
        char request[WIRE_LINE_MAX + 1];
        sd_event_source *listen_source, *conn_source;
} Fake;

typedef struct Result {
        unsigned calls;
        int error;
        InstallAnswer answer;
        char reason[512], value[128];
        bool free_in_callback;
        InstallCall *call;
} Result;

static char tmpdir[] = "/tmp/krtiot-test-install-client-XXXXXX";
static char sock_path[128];

static int on_fake_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Fake *f = userdata;
        char big[9000];
        ssize_t n;

        /* Peeked only, for CLOSE_UNREAD: the request must still be there when it closes. */
        n = recv(fd, f->request, WIRE_LINE_MAX,
                 MSG_DONTWAIT | (f->behaviour == CLOSE_UNREAD ? MSG_PEEK : 0));
        if (n <= 0)
                return 0;
        f->request[n] = 0;
        switch (f->behaviour) {
        case CLOSE_UNREAD:
                (void)!send(fd, f->answer, strlen(f->answer), MSG_NOSIGNAL);
                f->conn_source = sd_event_source_disable_unref(f->conn_source);
                close(f->conn_fd);
                f->conn_fd = -1;
                break;
        case ANSWER:
                (void)!send(fd, f->answer, strlen(f->answer), MSG_NOSIGNAL);
                break;
        case OVERSIZED:
                memset(big, 'x', sizeof(big));
                (void)!send(fd, big, sizeof(big), MSG_NOSIGNAL);
                break;
        case CLOSE:
                f->conn_source = sd_event_source_disable_unref(f->conn_source);
                close(f->conn_fd);
                f->conn_fd = -1;
                break;
        default:
                break;
        }
        return 0;
}

static int on_fake_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Fake *f = userdata;

        f->conn_fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (f->conn_fd < 0)
                return 0;
        if (sd_event_add_io(sd_event_source_get_event(s), &f->conn_source, f->conn_fd, EPOLLIN, on_fake_conn,
                            f) < 0)
                abort();
        return 0;
}

static void fake_start(sd_event *e, Fake *f, Behaviour b, const char *answer)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        *f = (Fake){ .listen_fd = -1, .conn_fd = -1, .behaviour = b, .answer = answer };
        unlink(sock_path);
        memcpy(sa.sun_path, sock_path, strlen(sock_path));
        f->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            listen(f->listen_fd, 4) < 0 ||
            sd_event_add_io(e, &f->listen_source, f->listen_fd, EPOLLIN, on_fake_listen, f) < 0)
                abort();
}

static void fake_stop(Fake *f)
{
        sd_event_source_disable_unref(f->listen_source);
        sd_event_source_disable_unref(f->conn_source);
        if (f->conn_fd >= 0)
                close(f->conn_fd);
        if (f->listen_fd >= 0)
                close(f->listen_fd);
        unlink(sock_path);
}

static void on_done(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                    void *userdata)
{
        Result *res = userdata;

        res->calls++;
        res->error = error;
        if (answer) {
                res->answer = *answer;
                if (answer->version) {
                        (void)snprintf(res->value, sizeof(res->value), "%s", answer->version);
                        res->answer.version = res->value;
                }
                res->answer.reason = NULL;
        }
        (void)snprintf(res->reason, sizeof(res->reason), "%s",
                       reason                     ? reason
                       : answer && answer->reason ? answer->reason
                                                  : "");
        if (res->free_in_callback)
                res->call = install_call_free(call);
}

/* Runs one call of REQ to SOCKET_PATH until DONE (or 10 s). */
static void run(sd_event *e, const char *path, const InstallRequest *req, uint64_t timeout_usec, Result *res)
{
        uint64_t deadline;
        int r;

        res->calls = 0;
        r = install_call_new(e, path, req, timeout_usec, on_done, res, &res->call);
        is_int(r, 0, "install_call_new() starts");
        ok(res->calls == 0, "  DONE is not called from inside install_call_new()");
        if (r < 0)
                return;
        (void)sd_event_now(e, CLOCK_MONOTONIC, &deadline);
        deadline += 10 * USEC_PER_SEC;
        while (res->calls == 0) {
                uint64_t now;

                (void)sd_event_now(e, CLOCK_MONOTONIC, &now);
                if (now > deadline || sd_event_run(e, 100 * USEC_PER_MSEC) < 0)
                        break;
        }
        /* A little more: a second DONE would show here. */
        for (int k = 0; k < 5; k++)
                (void)sd_event_run(e, 20 * USEC_PER_MSEC);
        is_int(res->calls, 1, "  DONE called exactly once");
        res->call = install_call_free(res->call);
}

int main(void)
{
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        InstallRequest version = { .op = INSTALL_OP_VERSION };
        InstallRequest install = {
                .op = INSTALL_OP_INSTALL,
                .key = "ABCDEFGHIJ01",
                .id = "J 1",
                .target = "2.0",
                .url = "http://x/y",
        };
        Result res = {};
        Fake f;
        char want[256];

        if (!mkdtemp(tmpdir) || sd_event_new(&e) < 0)
                abort();
        (void)snprintf(sock_path, sizeof(sock_path), "%s/install.sock", tmpdir);

        printf("# an answer\n");
        fake_start(e, &f, ANSWER, "version value=3.1.4\n");
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        is_int(res.error, 0, "an answer: no error");
        ok(res.answer.type == INSTALL_ANSWER_VERSION, "  a version answer");
        is_str(res.answer.version, "3.1.4", "  its value");
        is_str(f.request, "version\n", "  the request as sent: one line");
        fake_stop(&f);

        fake_start(e, &f, ANSWER, "done outcome=failed reason=the%20install%20hook%20failed\n");
        run(e, sock_path, &install, 5 * USEC_PER_SEC, &res);
        is_str(f.request, "install key=ABCDEFGHIJ01 id=J%201 target=2.0 url=http://x/y\n",
               "install: the request as sent, encoded");
        ok(res.error == 0 && res.answer.type == INSTALL_ANSWER_DONE &&
                   res.answer.outcome == INSTALL_OUTCOME_FAILED,
           "install: a failed outcome");
        is_str(res.reason, "the install hook failed", "  with the installer's reason");
        fake_stop(&f);

        printf("# failures, in words\n");
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        is_int(res.error, -ENOENT, "nobody there: -ENOENT");
        (void)snprintf(want, sizeof(want), "the installer is not reachable at %s: No such file or directory",
                       sock_path);
        is_str(res.reason, want, "  says where");

        fake_start(e, &f, CLOSE, NULL);
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        is_int(res.error, -ECONNRESET, "closed without an answer: -ECONNRESET");
        is_str(res.reason, "the installer closed the connection", "  says so");
        fake_stop(&f);

        fake_start(e, &f, CLOSE_UNREAD, "refused reason=not%20allowed\n");
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        ok(res.error == 0 && res.answer.type == INSTALL_ANSWER_REFUSED,
           "closed with the request unread: the answer behind the reset is read");
        is_str(res.reason, "not allowed", "  its reason");
        fake_stop(&f);

        fake_start(e, &f, SILENT, NULL);
        run(e, sock_path, &version, 300 * USEC_PER_MSEC, &res);
        is_int(res.error, -ETIMEDOUT, "silence: -ETIMEDOUT");
        is_str(res.reason, "no answer from the installer within 1 s", "  says how long (rounded up)");
        fake_stop(&f);

        fake_start(e, &f, ANSWER, "version value=../..\n");
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        is_int(res.error, -EBADMSG, "an answer the parser refuses: -EBADMSG");
        is_str(res.reason, "the installer's answer is malformed", "  says so");
        fake_stop(&f);

        fake_start(e, &f, OVERSIZED, NULL);
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        is_int(res.error, -EBADMSG, "an answer over WIRE_LINE_MAX: -EBADMSG, not a cut line");
        fake_stop(&f);

        printf("# freed from its callback\n");
        fake_start(e, &f, ANSWER, "unknown\n");
        res.free_in_callback = true;
        run(e, sock_path, &version, 5 * USEC_PER_SEC, &res);
        ok(res.answer.type == INSTALL_ANSWER_UNKNOWN && !res.call, "  answered, and freed inside DONE");
        res.free_in_callback = false;
        fake_stop(&f);

        printf("# refused before any connection\n");
        {
                InstallRequest bad = { .op = INSTALL_OP_OUTCOME, .key = "../etc/pass" };
                InstallCall *call = NULL;

                is_int(install_call_new(e, sock_path, &bad, USEC_PER_SEC, on_done, &res, &call), -EINVAL,
                       "a request the installer would refuse is never sent");
                ok(!call, "  and no call is made");
        }

        rmdir(tmpdir);
        return tap_done();
}
