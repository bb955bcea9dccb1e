/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker session inside the event loop. libmosquitto does the protocol;
 * this file gives it an sd-event I/O source (write interest only while
 * mosquitto_want_write()) and a keepalive time source, and owns what
 * libmosquitto leaves to the application: reconnecting with backoff,
 * noticing a connection that keeps being taken over, and never re-entering
 * libmosquitto from inside its own callbacks (teardown and reconnects run
 * from our own event sources).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct MqttSession MqttSession;

typedef struct MqttSessionParams {
        const char *host;
        unsigned port;
        bool tls;
        const char *ca_file; /* NULL: the system CA directory */
        const char *client_id;
        const char *username;
        const char *password; /* copied and erased when no longer needed */
        unsigned keepalive;     /* s */
        unsigned reconnect_max; /* s, cap of the backoff */
} MqttSessionParams;

typedef enum MqttEnd {
        MQTT_END_REFUSED_AUTH,   /* CONNACK: bad user name or password, or not authorised */
        MQTT_END_REFUSED_OTHER,  /* CONNACK: another refusal (protocol, identifier, unavailable) */
        MQTT_END_CONNECT_FAILED, /* no connection: refused, unreachable, TLS failure, timeout */
        MQTT_END_LOST,           /* an accepted connection ended */
        MQTT_END_QOS_REFUSED,    /* closed after the broker granted QoS 0 only (mosquitto's max_qos 0) */
        _MQTT_END_MAX,
} MqttEnd;

typedef struct MqttSessionCallbacks {
        /* The broker accepted us (CONNACK 0). Subscribe and publish from here. */
        void (*connected)(MqttSession *s, void *userdata);
        /* An attempt or a connection ended; the next attempt is in RETRY_USEC. */
        void (*disconnected)(MqttSession *s, MqttEnd end, uint64_t retry_usec, void *userdata);
        /* A message arrived. TOPIC and PAYLOAD are valid during the call only. */
        void (*message)(MqttSession *s, const char *topic, const void *payload, size_t len, void *userdata);
} MqttSessionCallbacks;

int mqtt_session_new(sd_event *event, const MqttSessionCallbacks *callbacks, void *userdata,
                     MqttSession **ret);
MqttSession *mqtt_session_free(MqttSession *s);

/*
 * Sets the parameters (copied) and, from the next loop iteration, closes
 * any current connection and connects with them; the backoff starts from
 * the beginning. Safe to call from the callbacks. Returns 0 or -errno.
 */
int mqtt_session_start(MqttSession *s, const MqttSessionParams *params);

/* Closes the connection, if any, and stops reconnecting. Not from inside the callbacks. */
void mqtt_session_stop(MqttSession *s);

bool mqtt_session_is_connected(const MqttSession *s);

/* QoS 1. Return 0, -ENOTCONN when not connected, or -errno. */
int mqtt_session_subscribe(MqttSession *s, const char *topic);
int mqtt_session_publish(MqttSession *s, const char *topic, const char *payload);

/* Human words for an MqttEnd, for logs and STATUS. */
const char *mqtt_end_to_string(MqttEnd end);
