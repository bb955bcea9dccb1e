/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dynamic registration (SPEC 4), the session logged in with the product
 * secret: subscribe to register/set, publish CMD 20, wait
 * registration.timeout seconds and ask again with backoff, and on CMD 21
 * store the secret durably BEFORE publishing the receipt. The Agent owns the
 * MQTT session and switches to the device secret once REGISTERED is called.
 */
#pragma once

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "mqtt.h"
#include "protocol.h"
#include "status.h"

typedef struct Registration Registration;

/*
 * SECRET set: it is on disk and the receipt was published; valid during the
 * call. SECRET NULL: no answer within registration.timeout (the flow goes on
 * asking; the callee may free the Registration).
 */
typedef void (*RegistrationDone)(Registration *reg, const char *secret, void *userdata);

/*
 * Takes a reference on CONFIG (and gives it back when freed or re-pointed);
 * MQTT and STATUS are borrowed from the Agent, which outlives the
 * Registration. Returns 0 or -errno.
 */
int registration_new(sd_event *event, Config *config, MqttSession *mqtt, Status *status, RegistrationDone done,
                     void *userdata, Registration **ret);
Registration *registration_free(Registration *reg);

/* A reload: from now on CONFIG (same product and device IDs: the Agent restarts the flow otherwise). */
void registration_set_config(Registration *reg, Config *config);

/* The session with the product secret is up: subscribe and ask. */
void registration_connected(Registration *reg);
/* The session ended: stop the answer timer (the next connect asks again). */
void registration_disconnected(Registration *reg);
/* A decoded message from register/set. */
void registration_message(Registration *reg, const PlatformMessage *m);
