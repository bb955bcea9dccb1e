/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registration flow. The one rule that matters: the platform issues a
 * device secret once, so a secret is acknowledged only after
 * credentials_store() has returned, i.e. after it is on disk (fsync, rename,
 * fsync of the directory). A crash before that point leaves no receipt and
 * the platform may issue again; a crash after it leaves a stored secret.
 * The secret is never logged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "credentials.h"
#include "log.h"
#include "registration.h"
#include "status.h"
#include "util/macro.h"
#include "util/random-id.h"

struct Registration {
        sd_event *event;
        Config *config; /* a reference of our own */
        MqttSession *mqtt; /* borrowed */
        Status *status;    /* borrowed */
        RegistrationDone done;
        void *userdata;

        char *topic_post, *topic_set;
        sd_event_source *timer; /* no answer yet: ask again when it fires */
        Backoff backoff;
        bool backing_off; /* the timer is the backoff delay, not the answer timeout */
        char *stored_secret; /* set once stored: a repeat of the same secret is receipted again */
};

static int registration_request(Registration *reg)
{
        _cleanup_free_ char *payload = NULL;
        char id[RANDOM_ID_LEN + 1];
        int r;

        r = random_id(id);
        if (r < 0)
                return r;
        r = protocol_register_request(id, reg->config->product_id, reg->config->device_id, &payload);
        if (r < 0)
                return r;
        return mqtt_session_publish(reg->mqtt, reg->topic_post, payload);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void registration_arm(Registration *reg, uint64_t usec)
{
        int r;

        reg->timer = sd_event_source_disable_unref(reg->timer);
        r = sd_event_add_time_relative(reg->event, &reg->timer, CLOCK_MONOTONIC, usec, USEC_PER_SEC / 10,
                                       on_timer, reg);
        if (r < 0)
                log_error_errno(r, "Cannot arm the registration timer: %m");
}

static void registration_ask(Registration *reg)
{
        int r;

        r = registration_request(reg);
        if (r < 0)
                log_warning_errno(r, "Cannot send the registration request: %m");
        else
                log_info("Registration requested for product %s, device %s; waiting up to %u s for the secret.",
                         reg->config->product_id, reg->config->device_id, reg->config->registration_timeout);
        status_set_link(reg->status, STATUS_LINK_REGISTERING,
                        "Registering: waiting for the platform to issue the device secret");
        registration_arm(reg, (uint64_t)reg->config->registration_timeout * USEC_PER_SEC);
}

/* Fires registration.timeout after a request (then ask again after a backoff delay), or after that delay. */
static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Registration *reg = userdata;

        reg->timer = sd_event_source_disable_unref(reg->timer);
        if (!mqtt_session_is_connected(reg->mqtt))
                return 0;
        if (!reg->backing_off) {
                uint64_t delay = backoff_next(&reg->backoff);

                log_warning("No device secret from the platform within %u s; asking again in %llu s.",
                            reg->config->registration_timeout, (unsigned long long)(delay / USEC_PER_SEC));
                status_set_link(reg->status, STATUS_LINK_REGISTERING,
                                "Registering: no answer from the platform, asking again in %llu s",
                                (unsigned long long)(delay / USEC_PER_SEC));
                reg->backing_off = true;
                registration_arm(reg, delay);
                /* Last: may free REG (the Agent ends a registration round that was only a try). */
                reg->done(reg, NULL, reg->userdata);
                return 0;
        }
        reg->backing_off = false;
        registration_ask(reg);
        return 0;
}

void registration_connected(Registration *reg)
{
        int r;

        r = mqtt_session_subscribe(reg->mqtt, reg->topic_set);
        if (r < 0)
                log_warning_errno(r, "Cannot subscribe to %s: %m", reg->topic_set);
        registration_ask(reg);
}

void registration_disconnected(Registration *reg)
{
        reg->backing_off = false;
        reg->timer = sd_event_source_disable_unref(reg->timer);
}

static int registration_receipt(Registration *reg, const char *id)
{
        _cleanup_free_ char *payload = NULL;
        int r;

        r = protocol_register_receipt(id, &payload);
        if (r < 0)
                return r;
        return mqtt_session_publish(reg->mqtt, reg->topic_post, payload);
}

void registration_message(Registration *reg, const PlatformMessage *m)
{
        int r;

        if (m->invalid) {
                log_warning("Dropped a message with ID %s on %s: %s.", m->id, reg->topic_set, m->invalid);
                return;
        }
        if (m->cmd != CMD_REGISTER_SECRET) {
                log_warning("Dropped a message with CMD %d on %s: only CMD %d is expected there.", m->cmd,
                            reg->topic_set, CMD_REGISTER_SECRET);
                return;
        }
        if (!m->device_secret || !m->device_secret[0]) {
                log_warning("Dropped CMD %d (ID %s): it carries no DEVICE_SECRET.", m->cmd, m->id);
                return;
        }

        if (reg->stored_secret) {
                if (strcmp(reg->stored_secret, m->device_secret) != 0) {
                        log_warning("Refused a second, different device secret (CMD 21, ID %s): the one "
                                    "already stored is kept and no receipt is sent.", m->id);
                        return;
                }
                log_info("The platform sent the same device secret again (ID %s); acknowledging again.", m->id);
        } else {
                r = credentials_store(reg->config->state_dir, reg->config->product_id, reg->config->device_id,
                                      m->device_secret);
                if (r < 0) {
                        /* No receipt: the platform may issue again, and nothing unstored is acknowledged. */
                        log_error_errno(r, "Cannot store the device secret in %s/%s: %m. Not acknowledging it.",
                                        reg->config->state_dir, CREDENTIALS_FILE);
                        status_set_link(reg->status, STATUS_LINK_REGISTERING,
                                        "Registration failed: cannot write %s/%s (%s)", reg->config->state_dir,
                                        CREDENTIALS_FILE, strerror(-r));
                        status_set_error(reg->status, "Cannot store the device secret in %s/%s: %s",
                                         reg->config->state_dir, CREDENTIALS_FILE, strerror(-r));
                        return;
                }
                reg->stored_secret = strdup(m->device_secret);
                if (!reg->stored_secret)
                        log_warning("Out of memory: a repeat of this secret will not be recognised.");
                log_notice("Device secret received and stored durably in %s/%s.", reg->config->state_dir,
                           CREDENTIALS_FILE);
        }

        r = registration_receipt(reg, m->id);
        if (r < 0)
                log_warning_errno(r, "Cannot send the registration receipt: %m");
        reg->timer = sd_event_source_disable_unref(reg->timer);
        reg->done(reg, m->device_secret, reg->userdata);
}

int registration_new(sd_event *event, Config *config, MqttSession *mqtt, Status *status, RegistrationDone done,
                     void *userdata, Registration **ret)
{
        Registration *reg;
        int r;

        reg = calloc(1, sizeof(*reg));
        if (!reg)
                return -ENOMEM;
        reg->event = sd_event_ref(event);
        reg->config = config_ref(config);
        reg->mqtt = mqtt;
        reg->status = status;
        reg->done = done;
        reg->userdata = userdata;
        backoff_init(&reg->backoff, USEC_PER_SEC, (uint64_t)config->mqtt_reconnect_max * USEC_PER_SEC);

        r = protocol_topic(TOPIC_REGISTER_POST, config->product_id, config->device_id, &reg->topic_post);
        if (r >= 0)
                r = protocol_topic(TOPIC_REGISTER_SET, config->product_id, config->device_id, &reg->topic_set);
        if (r < 0) {
                registration_free(reg);
                return r;
        }
        *ret = reg;
        return 0;
}

void registration_set_config(Registration *reg, Config *config)
{
        config_ref(config);
        config_unref(reg->config);
        reg->config = config;
}

Registration *registration_free(Registration *reg)
{
        if (!reg)
                return NULL;
        sd_event_source_disable_unref(reg->timer);
        sd_event_unref(reg->event);
        config_unref(reg->config);
        free(reg->topic_post);
        free(reg->topic_set);
        erase_and_free(reg->stored_secret);
        free(reg);
        return NULL;
}
