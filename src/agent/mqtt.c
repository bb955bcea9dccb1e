/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MqttSession: one libmosquitto client driven by sd-event.
 *
 * Invariants:
 *  - libmosquitto is only called from our own event-source callbacks or
 *    from the application's calls (publish, subscribe); its callbacks only
 *    record what happened (connack, disconnect) or hand a message up.
 *    Tearing the connection down and reconnecting happen afterwards, in
 *    session_after_io() or a time source, never inside a libmosquitto
 *    callback.
 *  - io_source exists exactly while libmosquitto has a socket.
 *  - The keepalive timer fires keepalive seconds after the last socket
 *    activity, which is when mosquitto_loop_misc() has a PINGREQ to send:
 *    an idle session wakes twice per keepalive period (ping, pong).
 *  - A connection counts as healthy once it has stayed up HEALTHY_USEC; only
 *    then does the backoff start again from its first step.
 *
 * Name resolution happens inside mosquitto_connect_async() (getaddrinfo),
 * which blocks for at most the resolver's timeout; with an IP address in
 * mqtt.uri it does not block at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <mosquitto.h>

#include "backoff.h"
#include "log.h"
#include "mqtt.h"
#include "util/macro.h"

#define HEALTHY_USEC (30 * USEC_PER_SEC)
#define TAKEOVER_WINDOW_USEC (60 * USEC_PER_SEC)
#define TAKEOVER_STREAK 3
#define CONNECT_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define SYSTEM_CA_DIR "/etc/ssl/certs"
/* A hung-up connection: at most this many packets the broker sent before are still read. */
#define MAX_PACKETS_AFTER_HANGUP 64

typedef enum SessionState {
        SESSION_IDLE,       /* stopped, or waiting for the next attempt */
        SESSION_CONNECTING, /* TCP/TLS/CONNECT in progress */
        SESSION_CONNECTED,  /* CONNACK 0 received */
} SessionState;

struct MqttSession {
        sd_event *event;
        MqttSessionCallbacks callbacks;
        void *userdata;

        struct mosquitto *mosq;
        sd_event_source *io_source;
        sd_event_source *keepalive_source;
        sd_event_source *retry_source; /* next attempt, or the connect timeout */
        sd_event_source *restart_source; /* start() with new parameters, run from the loop */

        /* parameters, owned */
        char *host, *ca_file, *client_id, *username, *password;
        unsigned port, keepalive;
        bool tls;

        SessionState state;
        bool running; /* start()ed and not stop()ped */
        Backoff backoff;
        uint64_t connected_at; /* CLOCK_MONOTONIC usec of the CONNACK */
        int connack_rc;         /* -1 until a CONNACK arrived for this attempt */
        bool closed_by_us;
        bool qos_downgraded; /* this connection's SUBACK granted less than QoS 1 */
        unsigned takeover_streak;
};

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

const char *mqtt_end_to_string(MqttEnd end)
{
        static const char *const table[_MQTT_END_MAX] = {
                [MQTT_END_REFUSED_AUTH] = "the broker refused the credentials",
                [MQTT_END_REFUSED_OTHER] = "the broker refused the connection",
                [MQTT_END_CONNECT_FAILED] = "could not connect to the broker",
                [MQTT_END_LOST] = "the connection to the broker was lost",
                /* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one message, two lines */
                [MQTT_END_QOS_REFUSED] = "the broker closed the connection: it grants QoS 0 only, and this "
                                         "device needs QoS 1 (mosquitto: max_qos)",
        };

        return end >= 0 && end < _MQTT_END_MAX ? table[end] : "unknown";
}

/* The one place where libmosquitto's error codes become errno values. */
static int errno_from_mosq(int rc)
{
        switch (rc) {
        case MOSQ_ERR_SUCCESS:
                return 0;
        case MOSQ_ERR_NOMEM:
                return -ENOMEM;
        case MOSQ_ERR_NO_CONN:
        case MOSQ_ERR_CONN_LOST:
                return -ENOTCONN;
        case MOSQ_ERR_INVAL:
        case MOSQ_ERR_MALFORMED_UTF8:
                return -EINVAL;
        case MOSQ_ERR_PAYLOAD_SIZE:
        case MOSQ_ERR_OVERSIZE_PACKET:
                return -EMSGSIZE;
        case MOSQ_ERR_CONN_REFUSED:
        case MOSQ_ERR_AUTH:
                return -EACCES;
        case MOSQ_ERR_TLS:
                return -EPROTO;
        case MOSQ_ERR_EAI:
                return -EHOSTUNREACH;
        case MOSQ_ERR_ERRNO:
                return errno > 0 ? -errno : -EIO;
        default:
                return -EIO;
        }
}

static void session_close(MqttSession *s);
static void session_schedule_retry(MqttSession *s, MqttEnd end);
static int session_update_io(MqttSession *s);

static void on_connect(struct mosquitto *mosq, void *userdata, int rc)
{
        MqttSession *s = userdata;

        s->connack_rc = rc;
        if (rc == 0) {
                s->state = SESSION_CONNECTED;
                s->connected_at = now_usec();
                s->retry_source = sd_event_source_disable_unref(s->retry_source);
                if (s->callbacks.connected)
                        s->callbacks.connected(s, s->userdata);
        }
}

static void on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *m)
{
        MqttSession *s = userdata;

        if (s->callbacks.message && m->topic)
                s->callbacks.message(s, m->topic, m->payload, m->payloadlen > 0 ? (size_t)m->payloadlen : 0,
                                     s->userdata);
}

static void on_subscribe(struct mosquitto *mosq, void *userdata, int mid, int qos_count, const int *granted)
{
        MqttSession *s = userdata;

        for (int i = 0; i < qos_count; i++) {
                if (granted[i] > 2)
                        log_warning("The broker refused a subscription (not authorised?): "
                                    "commands on that topic will not arrive.");
                else if (granted[i] < 1 && !s->qos_downgraded) {
                        s->qos_downgraded = true;
                        log_warning("The broker granted QoS 0 where QoS 1 was asked: commands may be lost, and "
                                    "a broker limited to QoS 0 closes the connection at our first QoS 1 "
                                    "message (mosquitto: max_qos).");
                }
        }
}

static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *str)
{
        /* libmosquitto's errors are the only place that says why TLS failed ("certificate verify
         * failed"): an operator needs them without turning on debug logging. */
        if (level & MOSQ_LOG_ERR)
                log_warning("MQTT: %s", str);
        else
                log_debug("mosquitto: %s", str);
}

/* Decides what ended, then tells the application and schedules the next attempt. */
static void session_handle_end(MqttSession *s)
{
        uint64_t now = now_usec();
        MqttEnd end;

        if (s->state == SESSION_CONNECTED) {
                uint64_t up = now - s->connected_at;

                end = MQTT_END_LOST;
                if (up >= HEALTHY_USEC)
                        backoff_reset(&s->backoff);

                if (!s->closed_by_us && up < HEALTHY_USEC && s->qos_downgraded) {
                        /* Not a take-over: the broker drops QoS 1 senders. Retrying soon cannot help. */
                        end = MQTT_END_QOS_REFUSED;
                        s->takeover_streak = 0;
                        backoff_to_max(&s->backoff);
                } else if (!s->closed_by_us && up < TAKEOVER_WINDOW_USEC) {
                        if (++s->takeover_streak == TAKEOVER_STREAK)
                                log_warning("The broker closed the connection %u times in a row soon after "
                                            "accepting it: the connection keeps being taken over. Another "
                                            "client is probably using the same client id '%s' (a broker "
                                            "closes the older of two connections with one client id). Give "
                                            "each device its own, e.g. mqtt.client_id = "
                                            "\"{product_id}-{device_id}\".",
                                            s->takeover_streak, s->client_id);
                } else if (up >= TAKEOVER_WINDOW_USEC)
                        s->takeover_streak = 0;
        } else {
                if (s->connack_rc == 4 || s->connack_rc == 5)
                        end = MQTT_END_REFUSED_AUTH;
                else if (s->connack_rc > 0)
                        end = MQTT_END_REFUSED_OTHER;
                else
                        end = MQTT_END_CONNECT_FAILED;
                /* A take-over leaves the broker reachable: the next attempt is accepted at once. An
                 * attempt that fails means the broker went away (a restart), not a twin client. */
                s->takeover_streak = 0;
        }

        session_close(s);
        if (s->running)
                session_schedule_retry(s, end);
}

/* Called after every entry into libmosquitto: notices a closed socket, updates write interest. */
static void session_after_io(MqttSession *s)
{
        if (s->state != SESSION_IDLE && mosquitto_socket(s->mosq) < 0) {
                session_handle_end(s);
                return;
        }
        (void)session_update_io(s);
}

/* The pending error of socket FD as -errno, or 0 when it has none to tell. */
static int socket_error(int fd)
{
        int e = 0;
        socklen_t len = sizeof(e);

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
                return 0;
        return -e;
}

/*
 * The socket hung up or failed. libmosquitto does not always close it: over
 * TLS, SSL_connect() failing with SSL_ERROR_SYSCALL (a refused or reset
 * connection) leaves it open with want_connect set, and epoll then reports
 * EPOLLHUP at once, forever: a busy loop until the connect timeout. So the
 * end of the socket is decided here. A connected session first reads what
 * the broker sent before it hung up (a bounded number of packets).
 */
static void session_on_hangup(MqttSession *s, int fd)
{
        if (s->state == SESSION_CONNECTED)
                for (unsigned i = 0; i < MAX_PACKETS_AFTER_HANGUP && mosquitto_socket(s->mosq) >= 0; i++)
                        (void)mosquitto_loop_read(s->mosq, 1);
        if (mosquitto_socket(s->mosq) < 0)
                return; /* libmosquitto saw the end itself */
        if (s->state == SESSION_CONNECTING) {
                int r = socket_error(fd);

                if (r < 0)
                        log_info_errno(r, "Cannot connect to %s:%u: %m", s->host, s->port);
                else
                        log_info("Cannot connect to %s:%u: the connection was closed.", s->host, s->port);
        }
        session_handle_end(s);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
        MqttSession *s = userdata;

        if (revents & (EPOLLERR | EPOLLHUP)) {
                session_on_hangup(s, fd);
                if (s->state == SESSION_IDLE || mosquitto_socket(s->mosq) < 0) {
                        session_after_io(s);
                        return 0;
                }
        }
        if (revents & EPOLLIN)
                (void)mosquitto_loop_read(s->mosq, 1);
        if ((revents & EPOLLOUT) && mosquitto_socket(s->mosq) >= 0)
                (void)mosquitto_loop_write(s->mosq, 1);
        /* Answers queued by our own callbacks (receipts) go out now, not one wakeup later. */
        if (mosquitto_socket(s->mosq) >= 0 && mosquitto_want_write(s->mosq))
                (void)mosquitto_loop_write(s->mosq, 1);

        if (s->keepalive_source)
                (void)sd_event_source_set_time_relative(s->keepalive_source,
                                                        s->keepalive * USEC_PER_SEC + 10 * USEC_PER_MSEC);
        session_after_io(s);
        return 0;
}

static int on_keepalive(sd_event_source *source, uint64_t usec, void *userdata)
{
        MqttSession *s = userdata;

        if (mosquitto_socket(s->mosq) >= 0) {
                (void)mosquitto_loop_misc(s->mosq);
                if (mosquitto_socket(s->mosq) >= 0 && mosquitto_want_write(s->mosq))
                        (void)mosquitto_loop_write(s->mosq, 1);
        }
        (void)sd_event_source_set_time_relative(source, s->keepalive * USEC_PER_SEC + 10 * USEC_PER_MSEC);
        (void)sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        session_after_io(s);
        return 0;
}

static int session_update_io(MqttSession *s)
{
        int fd = s->mosq ? mosquitto_socket(s->mosq) : -1;
        uint32_t events;
        int r;

        if (fd < 0) {
                s->io_source = sd_event_source_disable_unref(s->io_source);
                return 0;
        }

        events = EPOLLIN | (mosquitto_want_write(s->mosq) ? EPOLLOUT : 0);
        if (s->io_source && sd_event_source_get_io_fd(s->io_source) != fd)
                s->io_source = sd_event_source_disable_unref(s->io_source);
        if (s->io_source)
                return sd_event_source_set_io_events(s->io_source, events);

        r = sd_event_add_io(s->event, &s->io_source, fd, events, on_io, s);
        if (r < 0)
                return r;
        (void)sd_event_source_set_description(s->io_source, "mqtt-io");
        return 0;
}

static int on_connect_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
        MqttSession *s = userdata;

        s->retry_source = sd_event_source_disable_unref(s->retry_source);
        log_warning("No answer from the broker %s:%u within %llu s.", s->host, s->port,
                    (unsigned long long)(CONNECT_TIMEOUT_USEC / USEC_PER_SEC));
        s->connack_rc = -1;
        s->state = SESSION_CONNECTING;
        session_handle_end(s);
        return 0;
}

static int session_configure(MqttSession *s)
{
        int rc;

        if (s->mosq)
                mosquitto_destroy(s->mosq);
        s->mosq = mosquitto_new(s->client_id, true, s);
        if (!s->mosq)
                return errno > 0 ? -errno : -ENOMEM;

        mosquitto_connect_callback_set(s->mosq, on_connect);
        mosquitto_message_callback_set(s->mosq, on_message);
        mosquitto_subscribe_callback_set(s->mosq, on_subscribe);
        mosquitto_log_callback_set(s->mosq, on_log);
        (void)mosquitto_int_option(s->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        /* A receipt goes out right after the PUBACK of its command: with Nagle it would wait for the
         * broker's delayed ACK, some 40 ms. */
        (void)mosquitto_int_option(s->mosq, MOSQ_OPT_TCP_NODELAY, 1);

        rc = mosquitto_username_pw_set(s->mosq, s->username, s->password);
        if (rc != MOSQ_ERR_SUCCESS)
                return errno_from_mosq(rc);

        if (s->tls) {
                rc = mosquitto_tls_set(s->mosq, s->ca_file, s->ca_file ? NULL : SYSTEM_CA_DIR, NULL, NULL,
                                       NULL);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_tls_opts_set(s->mosq, 1 /* SSL_VERIFY_PEER */, NULL, NULL);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_tls_insecure_set(s->mosq, false);
                if (rc != MOSQ_ERR_SUCCESS)
                        return errno_from_mosq(rc);
        }
        return 0;
}

static void session_attempt(MqttSession *s)
{
        int rc, r;

        if (!s->mosq) {
                r = session_configure(s);
                if (r < 0) {
                        log_error_errno(r, "Cannot set up the MQTT client: %m");
                        s->state = SESSION_CONNECTING;
                        session_handle_end(s);
                        return;
                }
        }
        s->connack_rc = -1;
        s->closed_by_us = false;
        s->qos_downgraded = false;
        s->state = SESSION_CONNECTING;

        rc = mosquitto_connect_async(s->mosq, s->host, (int)s->port, (int)s->keepalive);
        if (rc != MOSQ_ERR_SUCCESS) {
                r = errno_from_mosq(rc);
                log_info_errno(r, "Cannot connect to %s:%u: %s", s->host, s->port,
                               rc == MOSQ_ERR_ERRNO ? strerror(-r) : mosquitto_strerror(rc));
                session_handle_end(s);
                return;
        }

        r = session_update_io(s);
        if (r >= 0 && !s->keepalive_source) {
                r = sd_event_add_time_relative(s->event, &s->keepalive_source, CLOCK_MONOTONIC,
                                               s->keepalive * USEC_PER_SEC, USEC_PER_SEC, on_keepalive, s);
                if (r >= 0)
                        (void)sd_event_source_set_description(s->keepalive_source, "mqtt-keepalive");
        }
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->retry_source, CLOCK_MONOTONIC,
                                               CONNECT_TIMEOUT_USEC, USEC_PER_SEC, on_connect_timeout, s);
        if (r < 0) {
                log_error_errno(r, "Cannot watch the broker connection: %m");
                session_handle_end(s);
        }
}

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata)
{
        MqttSession *s = userdata;

        s->retry_source = sd_event_source_disable_unref(s->retry_source);
        if (s->running)
                session_attempt(s);
        return 0;
}

static void session_schedule_retry(MqttSession *s, MqttEnd end)
{
        uint64_t delay = backoff_next(&s->backoff);
        int r;

        s->retry_source = sd_event_source_disable_unref(s->retry_source);
        r = sd_event_add_time_relative(s->event, &s->retry_source, CLOCK_MONOTONIC, delay, 10 * USEC_PER_MSEC,
                                       on_retry, s);
        if (r < 0)
                log_error_errno(r, "Cannot schedule the next connection attempt: %m");
        else
                (void)sd_event_source_set_description(s->retry_source, "mqtt-retry");

        if (s->callbacks.disconnected)
                s->callbacks.disconnected(s, end, delay, s->userdata);
}

/* Drops the socket and every source tied to it. Safe to call in any state. */
static void session_close(MqttSession *s)
{
        s->io_source = sd_event_source_disable_unref(s->io_source);
        s->keepalive_source = sd_event_source_disable_unref(s->keepalive_source);
        s->retry_source = sd_event_source_disable_unref(s->retry_source);
        if (s->mosq && mosquitto_socket(s->mosq) >= 0) {
                s->closed_by_us = true;
                if (s->state == SESSION_CONNECTED) {
                        (void)mosquitto_disconnect(s->mosq);
                        /* Flush the DISCONNECT if the socket takes it; libmosquitto closes the socket. */
                        if (mosquitto_socket(s->mosq) >= 0)
                                (void)mosquitto_loop_write(s->mosq, 1);
                        if (mosquitto_socket(s->mosq) >= 0)
                                (void)mosquitto_loop_read(s->mosq, 1);
                }
                /*
                 * Not connected yet (a TCP or TLS handshake was under way), or the DISCONNECT did not
                 * close it: libmosquitto has no call that only closes its socket, and over TLS it keeps
                 * one whose handshake failed. The client goes; the next attempt makes a new one.
                 */
                if (mosquitto_socket(s->mosq) >= 0) {
                        mosquitto_destroy(s->mosq);
                        s->mosq = NULL;
                }
        }
        s->state = SESSION_IDLE;
}

static void params_clear(MqttSession *s)
{
        s->host = mfree(s->host);
        s->ca_file = mfree(s->ca_file);
        s->client_id = mfree(s->client_id);
        s->username = mfree(s->username);
        erase_and_free(s->password);
        s->password = NULL;
}

int mqtt_session_new(sd_event *event, const MqttSessionCallbacks *callbacks, void *userdata,
                     MqttSession **ret)
{
        MqttSession *s;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->callbacks = *callbacks;
        s->userdata = userdata;
        s->connack_rc = -1;
        backoff_init(&s->backoff, USEC_PER_SEC, 60 * USEC_PER_SEC);
        *ret = s;
        return 0;
}

MqttSession *mqtt_session_free(MqttSession *s)
{
        if (!s)
                return NULL;
        s->running = false;
        s->restart_source = sd_event_source_disable_unref(s->restart_source);
        session_close(s);
        if (s->mosq)
                mosquitto_destroy(s->mosq);
        params_clear(s);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

static int on_restart(sd_event_source *source, uint64_t usec, void *userdata)
{
        MqttSession *s = userdata;
        int r;

        s->restart_source = sd_event_source_disable_unref(s->restart_source);
        session_close(s);
        r = session_configure(s);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the MQTT client: %m");
                session_schedule_retry(s, MQTT_END_CONNECT_FAILED);
                return 0;
        }
        session_attempt(s);
        return 0;
}

int mqtt_session_start(MqttSession *s, const MqttSessionParams *p)
{
        int r;

        /* Only the parameters change here: libmosquitto may be inside one of its callbacks (this is
         * called from the message handler when registration completes). The old connection is closed,
         * and the new one made, from on_restart(). */
        params_clear(s);
        if (free_and_strdup(&s->host, p->host) < 0 || free_and_strdup(&s->ca_file, p->ca_file) < 0 ||
            free_and_strdup(&s->client_id, p->client_id) < 0 || free_and_strdup(&s->username, p->username) < 0 ||
            free_and_strdup(&s->password, p->password) < 0)
                return -ENOMEM;
        s->port = p->port;
        s->tls = p->tls;
        s->keepalive = p->keepalive;
        backoff_init(&s->backoff, USEC_PER_SEC, (uint64_t)p->reconnect_max * USEC_PER_SEC);
        s->takeover_streak = 0;
        s->running = true;

        if (s->restart_source)
                return 0;
        /* Accuracy 1 µs: 0 would mean sd-event's default of 250 ms, a quarter second per (re)connect. */
        r = sd_event_add_time_relative(s->event, &s->restart_source, CLOCK_MONOTONIC, 0, 1, on_restart, s);
        if (r < 0)
                return r;
        (void)sd_event_source_set_description(s->restart_source, "mqtt-restart");
        return 0;
}

void mqtt_session_stop(MqttSession *s)
{
        if (!s)
                return;
        s->running = false;
        s->restart_source = sd_event_source_disable_unref(s->restart_source);
        session_close(s);
}

bool mqtt_session_is_connected(const MqttSession *s)
{
        return s && s->state == SESSION_CONNECTED;
}

int mqtt_session_subscribe(MqttSession *s, const char *topic)
{
        int rc;

        if (!mqtt_session_is_connected(s))
                return -ENOTCONN;
        rc = mosquitto_subscribe(s->mosq, NULL, topic, 1);
        (void)session_update_io(s);
        return errno_from_mosq(rc);
}

int mqtt_session_publish(MqttSession *s, const char *topic, const char *payload)
{
        int rc;

        if (!mqtt_session_is_connected(s))
                return -ENOTCONN;
        rc = mosquitto_publish(s->mosq, NULL, topic, (int)strlen(payload), payload, 1, false);
        (void)session_update_io(s);
        return errno_from_mosq(rc);
}
