/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Agent: one sd-event loop, one MQTT session, and the mode the device is
 * in. Without a usable stored secret it registers (registration.c, logged in
 * with the product secret); with one it logs in with the device secret,
 * reports its versions at every connect and every report.interval seconds,
 * and takes commands.
 *
 * The mode is one AgentMode; the objects each mode needs exist exactly in
 * that mode (agent_mode_check() says which), so no combination of flags can
 * disagree with it.
 *
 * Invariants:
 *  - STATUS= always says, in words, what the daemon is doing now;
 *  - a refused stored secret is never deleted.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "agent.h"
#include "build-config.h"
#include "bus.h"
#include "credentials.h"
#include "journal.h"
#include "log.h"
#include "mqtt.h"
#include "notify.h"
#include "ota.h"
#include "protocol.h"
#include "registration.h"
#include "status.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/random-id.h"
#include "version.h"

/* After the registration receipt, how long the platform gets to close the connection itself. */
#define REGISTRATION_SWITCH_USEC (3 * USEC_PER_SEC)
/* After this many refusals of the stored secret in a row, try one registration round. */
#define REFUSALS_BEFORE_REREGISTER 3

typedef enum AgentMode {
        AGENT_STARTING,      /* no session yet */
        AGENT_REGISTERING,   /* no usable stored secret: logged in with the product secret */
        AGENT_REREGISTERING, /* the stored secret was refused in a row: one registration round, secret kept */
        AGENT_REGISTERED,    /* a new secret is stored and acknowledged: the platform closes the session */
        AGENT_NORMAL,        /* logged in with the stored device secret */
        _AGENT_MODE_MAX,
} AgentMode;

struct Agent {
        sd_event *event;
        char *config_path;
        Config *config; /* a reference of our own; agent_set_config() re-points every holder */

        Status *status; /* what the daemon is doing: STATUS= and D-Bus render it */
        Bus *bus;       /* com.krtyun.Krtiot1, while the loop runs */
        MqttSession *mqtt;
        Ota *ota;
        AgentMode mode;
        Registration *registration; /* REGISTERING, REREGISTERING, REGISTERED */
        Credentials *credentials;   /* NORMAL, REREGISTERING: the stored secret */
        unsigned refusals;          /* NORMAL: refusals of the stored secret in a row */

        char *topics[_TOPIC_MAX];
        sd_event_source *report_timer; /* set while connected normally */
        uint64_t last_report_usec;     /* CLOCK_MONOTONIC of the last report (or of its attempt) */
        sd_event_source *switch_timer; /* REGISTERED: switch to the device secret when it fires */
        InstallCall *version_query;    /* `HOOK version`, asked of the installer */
        bool report_again;             /* a report was asked for while the version query ran */
};

static void agent_connect_normal(Agent *a);
static void agent_connect_register(Agent *a);
static void agent_set_mode_registering(Agent *a, AgentMode mode);

static const char *agent_mode_to_string(AgentMode m)
{
        static const char *const names[_AGENT_MODE_MAX] = {
                [AGENT_STARTING] = "starting",
                [AGENT_REGISTERING] = "registering",
                [AGENT_REREGISTERING] = "re-registering",
                [AGENT_REGISTERED] = "registered",
                [AGENT_NORMAL] = "normal",
        };

        return m >= 0 && m < _AGENT_MODE_MAX ? names[m] : "?";
}

/* Whether the session is the product secret's (registration.c speaks on it). */
static bool agent_registering(const Agent *a)
{
        return a->mode == AGENT_REGISTERING || a->mode == AGENT_REREGISTERING || a->mode == AGENT_REGISTERED;
}

/* The objects each mode needs, and only those: checked at every change of mode. */
static void agent_mode_check(const Agent *a)
{
        assert(!!a->registration == agent_registering(a));
        assert(!!a->credentials == (a->mode == AGENT_NORMAL || a->mode == AGENT_REREGISTERING));
        assert(!a->switch_timer || a->mode == AGENT_REGISTERED);
        assert(a->mode == AGENT_NORMAL || a->refusals == 0);
}

static void agent_set_mode(Agent *a, AgentMode mode)
{
        if (a->mode != mode)
                log_debug("Mode: %s -> %s.", agent_mode_to_string(a->mode), agent_mode_to_string(mode));
        a->mode = mode;
        agent_mode_check(a);
        status_set_registered(a->status, mode == AGENT_NORMAL);
}

static MqttSessionParams agent_session_params(const Agent *a, const char *password)
{
        const Config *c = a->config;

        return (MqttSessionParams){
                .host = c->mqtt_host,
                .port = c->mqtt_port,
                .tls = c->mqtt_tls,
                .ca_file = c->mqtt_ca_file,
                .client_id = c->mqtt_client_id,
                .username = c->device_id,
                .password = password,
                .keepalive = c->mqtt_keepalive,
                .reconnect_max = c->mqtt_reconnect_max,
        };
}

static int agent_publish(Agent *a, TopicKind kind, const char *payload)
{
        int r;

        r = mqtt_session_publish(a->mqtt, a->topics[kind], payload);
        if (r < 0)
                return log_warning_errno(r, "Cannot publish on %s: %m", a->topics[kind]);
        log_debug("Published on %s: %s", a->topics[kind], payload);
        return 0;
}

/* ---- version reports ---- */

static int on_report_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The next report is due report.interval after the last one: a reload (with the same or another
 * interval) never postpones it. */
static void agent_arm_report_timer(Agent *a)
{
        uint64_t due = a->last_report_usec + (uint64_t)a->config->report_interval * USEC_PER_SEC;
        int r;

        if (a->report_timer) {
                r = sd_event_source_set_time(a->report_timer, due);
                if (r >= 0)
                        r = sd_event_source_set_enabled(a->report_timer, SD_EVENT_ONESHOT);
        } else {
                r = sd_event_add_time(a->event, &a->report_timer, CLOCK_MONOTONIC, due, USEC_PER_SEC,
                                      on_report_timer, a);
                if (r >= 0)
                        (void)sd_event_source_set_description(a->report_timer, "report");
        }
        if (r < 0)
                log_error_errno(r, "Cannot arm the report timer: %m");
}

static void agent_publish_report(Agent *a, const char *fw)
{
        _cleanup_free_ char *hw = NULL, *payload = NULL;
        char id[RANDOM_ID_LEN + 1];
        int r;

        r = version_read_hw(a->config, &hw);
        if (r < 0)
                log_error_errno(r, "Cannot read the hardware version from %s: %s. Reporting \"%s\".",
                                a->config->hw_version_file, read_error_message(r), VERSION_UNKNOWN);

        r = random_id(id);
        if (r >= 0)
                r = protocol_version_report(id, hw ? hw : VERSION_UNKNOWN, fw ? fw : VERSION_UNKNOWN,
                                            &payload);
        if (r < 0) {
                log_error_errno(r, "Cannot build the version report: %m");
                return;
        }
        if (agent_publish(a, TOPIC_OTA_POST, payload) < 0)
                return;
        log_info("Reported hardware %s, firmware %s.", hw ? hw : VERSION_UNKNOWN, fw ? fw : VERSION_UNKNOWN);
        status_set_report(a->status, hw ? hw : VERSION_UNKNOWN, fw ? fw : VERSION_UNKNOWN, now_realtime_usec());
}

static void on_version_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                              void *userdata)
{
        Agent *a = userdata;
        const char *v, *why = NULL;
        int r;

        a->version_query = install_call_free(a->version_query);
        v = version_from_answer(error, answer, reason, &why);
        if (!v)
                log_error("The installer gave no firmware version: %s. Reporting \"%s\".", why,
                          VERSION_UNKNOWN);

        if (mqtt_session_is_connected(a->mqtt) && a->mode == AGENT_NORMAL)
                agent_publish_report(a, v);
        if (a->report_again) {
                a->report_again = false;
                r = version_query_installer(a->event, a->config, on_version_answer, a, &a->version_query);
                if (r < 0)
                        log_error_errno(r, "Cannot ask the installer for the firmware version: %m");
        }
}

/* Reports the versions now (the firmware version may come from the hook, later). */
static void agent_report(Agent *a)
{
        _cleanup_free_ char *fw = NULL;
        int r;

        (void)sd_event_now(a->event, CLOCK_MONOTONIC, &a->last_report_usec);
        agent_arm_report_timer(a);
        if (ota_holds_reports(a->ota)) {
                log_debug("Version report held until the update's commit is decided.");
                return;
        }

        if (a->config->fw_version_from_hook) {
                if (a->version_query) {
                        a->report_again = true;
                        return;
                }
                r = version_query_installer(a->event, a->config, on_version_answer, a, &a->version_query);
                if (r < 0)
                        log_error_errno(r, "Cannot ask the installer for the firmware version: %m");
                return;
        }

        r = version_read_fw(a->config, &fw);
        if (r < 0)
                log_error_errno(r, "Cannot read the firmware version from %s: %s. Reporting \"%s\".",
                                a->config->fw_version_file, read_error_message(r), VERSION_UNKNOWN);
        agent_publish_report(a, fw);
}

static int on_report_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Agent *a = userdata;

        if (mqtt_session_is_connected(a->mqtt) && a->mode == AGENT_NORMAL)
                agent_report(a);
        return 0;
}

static int on_ota_publish(Ota *o, const char *payload, void *userdata)
{
        return agent_publish(userdata, TOPIC_OTA_POST, payload);
}

/* ReportNow() over D-Bus. */
static int on_bus_report_now(void *userdata)
{
        Agent *a = userdata;

        if (a->mode != AGENT_NORMAL || !mqtt_session_is_connected(a->mqtt))
                return -ENOTCONN;
        agent_report(a);
        return 0;
}

/* InstallNow(), RebootNow() over D-Bus. */
static int on_bus_install_now(void *userdata)
{
        Agent *a = userdata;

        return ota_install_now(a->ota);
}

static int on_bus_reboot_now(void *userdata)
{
        Agent *a = userdata;

        return ota_reboot_now(a->ota);
}

static void on_ota_report(Ota *o, void *userdata)
{
        Agent *a = userdata;

        if (mqtt_session_is_connected(a->mqtt) && a->mode == AGENT_NORMAL)
                agent_report(a);
}

/* ---- registration ---- */

static void agent_switch_to_device_secret(Agent *a)
{
        _cleanup_credentials_ Credentials *c = NULL;
        int r;

        a->switch_timer = sd_event_source_disable_unref(a->switch_timer);
        r = credentials_load(a->config->state_dir, &c);
        if (r < 0) {
                log_error_errno(r, "Cannot read back the stored device secret: %s. Registering again.",
                                read_error_message(r));
                a->credentials = credentials_free(a->credentials);
                agent_set_mode(a, AGENT_REGISTERING);
                agent_connect_register(a);
                return;
        }
        credentials_free(a->credentials);
        a->credentials = TAKE_PTR(c);
        a->registration = registration_free(a->registration);
        a->refusals = 0;
        agent_set_mode(a, AGENT_NORMAL);
        log_info("Registered. Logging in with the device secret.");
        agent_connect_normal(a);
}

static int on_switch_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        agent_switch_to_device_secret(userdata);
        return 0;
}

/* Ends a re-registration round: the stored secret again. */
static void agent_back_to_stored_secret(Agent *a, const char *why)
{
        log_info("%s", why);
        a->registration = registration_free(a->registration);
        agent_set_mode(a, AGENT_NORMAL);
        agent_connect_normal(a);
}

static void on_registered(Registration *reg, const char *secret, void *userdata)
{
        Agent *a = userdata;
        int r;

        if (!secret) {
                /* No answer in time. Registering only because the stored secret was refused: go back to it. */
                if (a->mode == AGENT_REREGISTERING)
                        agent_back_to_stored_secret(a, "No new secret from the platform; trying the stored "
                                                       "device secret again.");
                return;
        }
        if (a->mode == AGENT_REGISTERED)
                return;
        /* A re-registration that got a new secret: it replaces the refused one (registration.c stored it). */
        a->credentials = credentials_free(a->credentials);
        agent_set_mode(a, AGENT_REGISTERED);
        status_set_link(a->status, STATUS_LINK_REGISTERING, "Registered: switching to the device secret");
        /* The platform closes the connection once it has the receipt; give it a moment to. */
        r = sd_event_add_time_relative(a->event, &a->switch_timer, CLOCK_MONOTONIC, REGISTRATION_SWITCH_USEC,
                                       USEC_PER_SEC / 10, on_switch_timer, a);
        if (r < 0)
                agent_switch_to_device_secret(a);
}

/* ---- the session ---- */

static void on_connected(MqttSession *s, void *userdata)
{
        Agent *a = userdata;
        int r;

        if (agent_registering(a)) {
                log_info("Connected to %s with the product secret.", a->config->mqtt_uri);
                status_set_connected(a->status, true);
                registration_connected(a->registration);
                return;
        }

        a->refusals = 0;
        log_info("Connected to %s as %s.", a->config->mqtt_uri, a->config->device_id);
        status_set_link(a->status, STATUS_LINK_CONNECTED, NULL);
        r = mqtt_session_subscribe(a->mqtt, a->topics[TOPIC_OTA_SET]);
        if (r < 0)
                log_warning_errno(r, "Cannot subscribe to %s: %m", a->topics[TOPIC_OTA_SET]);
        agent_report(a);
        ota_connected(a->ota);
}

static void on_disconnected(MqttSession *s, MqttEnd end, uint64_t retry_usec, void *userdata)
{
        Agent *a = userdata;
        unsigned secs = MAX(1u, (unsigned)((retry_usec + USEC_PER_SEC / 2) / USEC_PER_SEC));

        a->report_timer = sd_event_source_disable_unref(a->report_timer);

        if (a->mode == AGENT_REGISTERED) {
                /* The platform closed the registration session, as it should. */
                agent_switch_to_device_secret(a);
                return;
        }

        if (agent_registering(a)) {
                registration_disconnected(a->registration);
                if (end == MQTT_END_REFUSED_AUTH) {
                        log_error("The broker refused the product secret for device %s: dynamic registration "
                                  "is off for product %s, or product.secret is wrong. Retrying in %u s.",
                                  a->config->device_id, a->config->product_id, secs);
                        status_set_link(a->status, STATUS_LINK_REGISTRATION_REFUSED,
                                        "Registration refused by the broker (product secret wrong, or "
                                        "dynamic registration off for this product); retrying in %u s",
                                        secs);
                        status_set_error(a->status, "The broker refused the product secret");
                        if (a->mode == AGENT_REREGISTERING)
                                /* Back to the stored secret: registration is no way out either. */
                                agent_back_to_stored_secret(a, "The product secret is refused too; back to the "
                                                               "stored device secret.");
                        return;
                }
        } else if (end == MQTT_END_REFUSED_AUTH) {
                a->refusals++;
                log_error("The broker refused the device secret of %s (stored in %s/%s; it is kept). "
                          "Retrying in %u s.", a->config->device_id, a->config->state_dir, CREDENTIALS_FILE,
                          secs);
                status_set_link(a->status, STATUS_LINK_OFFLINE, "Broker refused the device secret, retrying in %u s",
                                secs);
                status_set_error(a->status, "The broker refused the device secret");
                if (a->refusals >= REFUSALS_BEFORE_REREGISTER) {
                        log_notice("Trying one registration round with the product secret, in case the "
                                   "platform never activated the stored secret. The stored secret is kept "
                                   "unless the platform issues a new one.");
                        a->refusals = 0;
                        agent_set_mode_registering(a, AGENT_REREGISTERING);
                }
                return;
        }

        log_info("%s (%s); retrying in %u s.", mqtt_end_to_string(end), a->config->mqtt_uri, secs);
        status_set_link(a->status, STATUS_LINK_OFFLINE, "Offline: %s (%s); retrying in %u s", mqtt_end_to_string(end),
                        a->config->mqtt_uri, secs);
        status_set_error(a->status, "%s (%s)", mqtt_end_to_string(end), a->config->mqtt_uri);
}

static void agent_handle_ota_message(Agent *a, const PlatformMessage *m)
{
        switch (m->cmd) {
        case CMD_OTA:
        case CMD_NONE: /* an ID but no usable CMD: refused with a CMD 11 receipt */
                ota_command(a->ota, m);
                break;
        default:
                log_warning("Dropped a message with unknown CMD %d (ID %s) on %s.", m->cmd, m->id,
                            a->topics[TOPIC_OTA_SET]);
        }
}

static void on_message(MqttSession *s, const char *topic, const void *payload, size_t len, void *userdata)
{
        Agent *a = userdata;
        PlatformMessage m;
        TopicKind kind;
        int r;

        kind = protocol_topic_kind(topic, a->config->product_id, a->config->device_id);
        if (kind != TOPIC_OTA_SET && kind != TOPIC_REGISTER_SET) {
                log_warning("Dropped a message on unexpected topic %s.", topic);
                return;
        }

        r = protocol_parse(payload, len, &m);
        if (r < 0) {
                log_warning("Dropped a message on %s: %s.", topic,
                            r == -EMSGSIZE ? "larger than 16 KiB"
                            : r == -ENOMSG ? "no ID"
                            : r == -ERANGE ? "an integer ID beyond 64 bits, which cannot be echoed exactly"
                                           : "not a JSON object of the platform's format with a string or "
                                             "integer ID");
                return;
        }

        if (kind == TOPIC_REGISTER_SET) {
                if (agent_registering(a))
                        registration_message(a->registration, &m);
                else
                        log_warning("Dropped CMD %d on %s: the device is registered already.", m.cmd, topic);
        } else if (a->mode != AGENT_NORMAL)
                log_warning("Dropped CMD %d on %s: the device is not registered yet.", m.cmd, topic);
        else
                agent_handle_ota_message(a, &m);

        platform_message_clear(&m);
}

static void agent_connect_normal(Agent *a)
{
        MqttSessionParams p = agent_session_params(a, a->credentials->device_secret);
        int r;

        status_set_link(a->status, STATUS_LINK_CONNECTING, "Connecting to %s as %s", a->config->mqtt_uri,
                        a->config->device_id);
        r = mqtt_session_start(a->mqtt, &p);
        if (r < 0)
                log_error_errno(r, "Cannot start the MQTT session: %m");
}

/* Enters MODE (REGISTERING or REREGISTERING) with a Registration of its own, and connects. */
static void agent_set_mode_registering(Agent *a, AgentMode mode)
{
        int r;

        assert(mode == AGENT_REGISTERING || mode == AGENT_REREGISTERING);
        if (!a->registration) {
                r = registration_new(a->event, a->config, a->mqtt, a->status, on_registered, a,
                                     &a->registration);
                if (r < 0) {
                        /* Nothing to register with: the mode stays, and a reload or restart tries again. */
                        log_error_errno(r, "Cannot start registration: %m");
                        return;
                }
        }
        agent_set_mode(a, mode);
        agent_connect_register(a);
}

static void agent_connect_register(Agent *a)
{
        MqttSessionParams p = agent_session_params(a, a->config->product_secret);
        int r;

        status_set_link(a->status, STATUS_LINK_REGISTERING, "Registering: connecting to %s with the product secret",
                        a->config->mqtt_uri);
        r = mqtt_session_start(a->mqtt, &p);
        if (r < 0)
                log_error_errno(r, "Cannot start the MQTT session: %m");
}

/* Loads the stored secret and connects with it, or registers. */
static void agent_start_session(Agent *a)
{
        _cleanup_credentials_ Credentials *c = NULL;
        int r;

        a->registration = registration_free(a->registration);
        a->credentials = credentials_free(a->credentials);
        a->switch_timer = sd_event_source_disable_unref(a->switch_timer);
        a->refusals = 0;
        agent_set_mode(a, AGENT_STARTING);

        r = credentials_load(a->config->state_dir, &c);
        if (r == -ENOENT)
                log_info("No device secret stored yet: registering with the product secret.");
        else if (r == -EBADMSG)
                log_warning("%s/%s is corrupt or truncated; ignoring it and registering again.",
                            a->config->state_dir, CREDENTIALS_FILE);
        else if (r < 0)
                log_error_errno(r, "Cannot read %s/%s: %s. Registering with the product secret.",
                                a->config->state_dir, CREDENTIALS_FILE, read_error_message(r));
        else if (!credentials_match(c, a->config->product_id, a->config->device_id)) {
                log_notice("The stored device secret belongs to product %s, device %s, not to this "
                           "configuration (%s, %s): registering again.",
                           c->product_id, c->device_id, a->config->product_id, a->config->device_id);
                c = credentials_free(c);
        }

        if (r >= 0 && c) {
                a->credentials = TAKE_PTR(c);
                agent_set_mode(a, AGENT_NORMAL);
                agent_connect_normal(a);
        } else
                agent_set_mode_registering(a, AGENT_REGISTERING);
}

static int agent_make_topics(Agent *a)
{
        for (TopicKind k = 0; k < _TOPIC_MAX; k++) {
                char *t;
                int r;

                r = protocol_topic(k, a->config->product_id, a->config->device_id, &t);
                if (r < 0)
                        return r;
                free(a->topics[k]);
                a->topics[k] = t;
        }
        return 0;
}

/* ---- signals ---- */

int agent_load_config(const char *path, Config **ret)
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

/* The one place that re-points every holder of the Config after a reload. */
static void agent_set_config(Agent *a, Config *c)
{
        config_ref(c);
        config_unref(a->config);
        a->config = c;
        ota_set_config(a->ota, c);
        status_set_identity(a->status, c->mqtt_uri, c->product_id, c->device_id);
        if (agent_registering(a))
                registration_set_config(a->registration, c);
}

static void agent_reload(Agent *a)
{
        _cleanup_config_ Config *c = NULL;
        bool session_changed;
        int r;

        notify_reloading();
        log_info("Reloading %s.", a->config_path);

        r = agent_load_config(a->config_path, &c);
        if (r < 0 || !c) {
                log_error("The new configuration was refused; the running one stays in force.");
                notify_ready();
                return;
        }

        session_changed = !config_session_equal(a->config, c);
        agent_set_config(a, c);
        log_set_max_level(c->log_level);

        r = agent_make_topics(a);
        if (r < 0)
                log_error_errno(r, "Cannot build the topics: %m");
        if (session_changed) {
                log_info("The connection settings changed: reconnecting.");
                agent_start_session(a);
        } else if (a->report_timer)
                agent_arm_report_timer(a);
        log_info("Configuration reloaded.");
        notify_ready();
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        Agent *a = userdata;

        if (si->ssi_signo == SIGHUP) {
                agent_reload(a);
                return 0;
        }

        log_info("Received %s, stopping.", strsignal((int)si->ssi_signo));
        status_set_link(a->status, STATUS_LINK_STOPPING, NULL);
        status_flush(a->status);
        notify_stopping();
        mqtt_session_stop(a->mqtt);
        return sd_event_exit(a->event, 0);
}

/* ---- lifecycle ---- */

int agent_new(const char *config_path, Config *config, Agent **ret)
{
        static const MqttSessionCallbacks callbacks = {
                .connected = on_connected,
                .disconnected = on_disconnected,
                .message = on_message,
        };
        static const OtaCallbacks ota_callbacks = {
                .publish = on_ota_publish,
                .report = on_ota_report,
        };
        Agent *a;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->config = config_ref(config);
        a->config_path = strdup(config_path);
        if (!a->config_path) {
                agent_free(a);
                return -ENOMEM;
        }

        r = sd_event_new(&a->event);
        if (r >= 0)
                r = status_new(a->event, &a->status);
        if (r >= 0)
                r = agent_make_topics(a);
        if (r >= 0)
                r = mqtt_session_new(a->event, &callbacks, a, &a->mqtt);
        if (r >= 0)
                r = ota_new(a->event, a->config, a->status, &ota_callbacks, a, &a->ota);
        if (r < 0) {
                agent_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

Agent *agent_free(Agent *a)
{
        if (!a)
                return NULL;
        bus_free(a->bus); /* before the Status it serves */
        install_call_free(a->version_query);
        sd_event_source_disable_unref(a->report_timer);
        sd_event_source_disable_unref(a->switch_timer);
        registration_free(a->registration);
        ota_free(a->ota);
        mqtt_session_free(a->mqtt);
        credentials_free(a->credentials);
        for (TopicKind k = 0; k < _TOPIC_MAX; k++)
                free(a->topics[k]);
        status_free(a->status);
        sd_event_unref(a->event);
        config_unref(a->config);
        free(a->config_path);
        free(a);
        return NULL;
}

/*
 * Before the state directory is used: a kill during a write leaves
 * temporary files (of the secret too) that nothing else removes, and a store
 * someone made readable is made private again. Nothing here stops the start.
 */
static void agent_tidy_state_dir(Agent *a)
{
        static const char *const files[] = { CREDENTIALS_FILE, JOURNAL_FILE };
        const char *dir = a->config->state_dir;
        struct stat st = {};
        int r;

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                r = remove_stale_tmpfiles(dir, files[i]);
                if (r < 0)
                        log_warning_errno(r, "Cannot remove stale temporary files %s/%s.tmp.*: %m", dir,
                                          files[i]);
                else if (r > 0)
                        log_notice("Removed %d stale temporary file(s) %s/%s.tmp.* left by an interrupted "
                                   "write.", r, dir, files[i]);
        }

        r = credentials_fix_permissions(dir, &st);
        if (r < 0 && r != -ENOENT)
                log_warning("Cannot check or fix the permissions of %s/%s: %s", dir, CREDENTIALS_FILE,
                            read_error_message(r));
        if (r > 0 && (r & CREDENTIALS_NOT_OURS))
                log_warning("%s/%s belongs to uid %u, not to us (uid %u), and only root could change that: "
                            "its mode %04o is left as it is.",
                            dir, CREDENTIALS_FILE, (unsigned)st.st_uid, (unsigned)geteuid(),
                            (unsigned)(st.st_mode & 07777));
        if (r > 0 && (r & CREDENTIALS_OWNER_FIXED))
                log_warning("%s/%s belonged to uid %u: it is ours (uid %u) again.", dir, CREDENTIALS_FILE,
                            (unsigned)st.st_uid, (unsigned)geteuid());
        if (r > 0 && (r & CREDENTIALS_MODE_FIXED))
                log_warning("%s/%s had mode %04o: made it 0600 again, the device secret is ours alone.",
                            dir, CREDENTIALS_FILE, (unsigned)(st.st_mode & 07777));
}

int agent_run(Agent *a)
{
        static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
        static const BusCallbacks bus_callbacks = {
                .report_now = on_bus_report_now,
                .install_now = on_bus_install_now,
                .reboot_now = on_bus_reboot_now,
        };
        sigset_t mask;
        int r;

        /* sd-event's signal and child sources need these blocked; children get a clean mask (process.c). */
        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                sigaddset(&mask, signals[i]);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");
        /* A broker closing the socket must not kill us. */
        signal(SIGPIPE, SIG_IGN);

        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                r = sd_event_add_signal(a->event, NULL, signals[i], on_signal, a);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch signal %d: %m", signals[i]);
        }

        r = sd_event_set_watchdog(a->event, true);
        if (r < 0)
                log_warning_errno(r, "Cannot enable the watchdog: %m");
        else if (r > 0)
                log_debug("Watchdog enabled.");

        status_set_identity(a->status, a->config->mqtt_uri, a->config->product_id, a->config->device_id);
        r = bus_new(a->event, a->status, &bus_callbacks, a, &a->bus);
        if (r < 0)
                log_warning_errno(r, "Cannot set up the D-Bus interface: %m");
        agent_tidy_state_dir(a);
        ota_start(a->ota);
        agent_start_session(a);
        status_flush(a->status);
        /* Ready once configured and looping, not when the broker answers: offline is a state, not a failure. */
        notify_ready();
        log_info("krtiotd %s started: product %s, device %s, broker %s.", PACKAGE_VERSION,
                 a->config->product_id, a->config->device_id, a->config->mqtt_uri);

        r = sd_event_loop(a->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}
