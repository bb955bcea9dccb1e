/* SPDX-License-Identifier: Apache-2.0 */
/*
 * krtiotd on the system bus (bus.h, krtiot-dbus(7)), with sd-bus inside the
 * agent's sd-event loop.
 *
 * Invariants:
 *  - nothing here blocks the loop for long: the name is requested
 *    asynchronously, and the one synchronous call (asking the bus who called
 *    ReportNow) goes to the local bus daemon, for root's calls only;
 *  - every property is read from the Status record at the moment it is
 *    asked for, and PropertiesChanged carries what status.c says changed:
 *    the bus never holds a value of its own;
 *  - without a bus, no timer fires more often than BUS_RETRY_MAX_USEC (or
 *    BUS_RETRY_WATCHED_USEC while inotify watches for the socket).
 */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

#include <systemd/sd-bus.h>

#include "backoff.h"
#include "bus.h"
#include "log.h"
#include "util/macro.h"

#define BUS_DEFAULT_ADDRESS "unix:path=/run/dbus/system_bus_socket"
#define BUS_RETRY_MAX_USEC (30 * USEC_PER_SEC)
#define BUS_RETRY_WATCHED_USEC (300 * USEC_PER_SEC)
#define BUS_ERROR_NOT_CONNECTED "com.krtyun.Krtiot1.Error.NotConnected"
#define BUS_ERROR_NOT_WAITING "com.krtyun.Krtiot1.Error.NotWaiting"

struct Bus {
        sd_event *event;
        Status *status; /* borrowed */
        BusCallbacks callbacks;
        void *userdata;

        char *address;
        char *socket_dir, *socket_name; /* a unix:path= address, for inotify; else NULL */
        sd_bus *bus;                    /* NULL while there is no connection */
        bool serving;                   /* the name is ours */
        bool told_missing;              /* the "no bus" notice was logged since the last connection */
        Backoff backoff;
        sd_event_source *retry;   /* connect again when it fires */
        sd_event_source *inotify; /* the socket's directory, while there is no connection */
};

static void bus_schedule_retry(Bus *b);

/* ---- properties ---- */

static const struct {
        uint32_t field;
        const char *name;
} property_names[] = {
        { STATUS_STATE, "State" },
        { STATUS_REGISTERED, "Registered" },
        { STATUS_CONNECTED, "Connected" },
        { STATUS_BROKER, "Broker" },
        { STATUS_PRODUCT_ID, "ProductId" },
        { STATUS_DEVICE_ID, "DeviceId" },
        { STATUS_HARDWARE_VERSION, "HardwareVersion" },
        { STATUS_FIRMWARE_VERSION, "FirmwareVersion" },
        { STATUS_LAST_REPORT, "LastReport" },
        { STATUS_JOB_ID, "JobId" },
        { STATUS_JOB_TARGET, "JobTargetVersion" },
        { STATUS_JOB_PHASE, "JobPhase" },
        { STATUS_JOB_PROGRESS, "JobProgress" },
        { STATUS_JOB_BYTES_DONE, "JobBytesDone" },
        { STATUS_JOB_BYTES_TOTAL, "JobBytesTotal" },
        { STATUS_LAST_ERROR, "LastError" },
        { STATUS_LAST_JOB_RESULT, "LastJobResult" },
        { STATUS_TEXT, "StatusText" },
        { STATUS_WAITING_FOR, "WaitingFor" },
        { STATUS_WAITING_UNTIL, "WaitingUntil" },
};

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        const Status *s = b->status;

        if (strcmp(property, "State") == 0)
                return sd_bus_message_append(reply, "s", status_state(s));
        if (strcmp(property, "Registered") == 0)
                return sd_bus_message_append(reply, "b", status_registered(s));
        if (strcmp(property, "Connected") == 0)
                return sd_bus_message_append(reply, "b", status_connected(s));
        if (strcmp(property, "Broker") == 0)
                return sd_bus_message_append(reply, "s", status_broker(s));
        if (strcmp(property, "ProductId") == 0)
                return sd_bus_message_append(reply, "s", status_product_id(s));
        if (strcmp(property, "DeviceId") == 0)
                return sd_bus_message_append(reply, "s", status_device_id(s));
        if (strcmp(property, "HardwareVersion") == 0)
                return sd_bus_message_append(reply, "s", status_hardware_version(s));
        if (strcmp(property, "FirmwareVersion") == 0)
                return sd_bus_message_append(reply, "s", status_firmware_version(s));
        if (strcmp(property, "LastReport") == 0)
                return sd_bus_message_append(reply, "t", status_last_report(s));
        if (strcmp(property, "JobId") == 0)
                return sd_bus_message_append(reply, "s", status_job_id(s));
        if (strcmp(property, "JobTargetVersion") == 0)
                return sd_bus_message_append(reply, "s", status_job_target(s));
        if (strcmp(property, "JobPhase") == 0)
                return sd_bus_message_append(reply, "s", status_job_phase(s));
        if (strcmp(property, "JobProgress") == 0)
                return sd_bus_message_append(reply, "u", status_job_progress(s));
        if (strcmp(property, "JobBytesDone") == 0)
                return sd_bus_message_append(reply, "t", status_job_bytes_done(s));
        if (strcmp(property, "JobBytesTotal") == 0)
                return sd_bus_message_append(reply, "t", status_job_bytes_total(s));
        if (strcmp(property, "LastError") == 0)
                return sd_bus_message_append(reply, "s", status_last_error(s));
        if (strcmp(property, "LastJobResult") == 0)
                return sd_bus_message_append(reply, "s", status_last_job_result(s));
        if (strcmp(property, "StatusText") == 0)
                return sd_bus_message_append(reply, "s", status_text(s));
        if (strcmp(property, "WaitingFor") == 0)
                return sd_bus_message_append(reply, "s", status_waiting_for(s));
        if (strcmp(property, "WaitingUntil") == 0)
                return sd_bus_message_append(reply, "t", status_waiting_until(s));
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s.", property);
}

/* ---- methods ---- */

/*
 * Root only, whatever the bus policy says. The bus daemon is asked who the
 * caller is (a short synchronous call to the local bus, as sd-bus does for
 * its own privilege checks).
 */
static int check_root(sd_bus_message *m, sd_bus_error *error)
{
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot tell who called: %s", strerror(-r));
        if (uid != 0) {
                log_notice("Refused %s() from uid %u: only root may call it.", sd_bus_message_get_member(m),
                           (unsigned)uid);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Only root may call %s().",
                                         sd_bus_message_get_member(m));
        }
        return 0;
}

static int method_report_now(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        int r;

        r = check_root(m, error);
        if (r < 0)
                return r;
        r = b->callbacks.report_now ? b->callbacks.report_now(b->userdata) : -ENOTCONN;
        if (r == -ENOTCONN)
                return sd_bus_error_setf(error, BUS_ERROR_NOT_CONNECTED,
                                         "Not logged in to the broker with the device secret: no report "
                                         "can be sent now.");
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot send a report: %s", strerror(-r));
        log_info("Version report asked for over D-Bus.");
        return sd_bus_reply_method_return(m, NULL);
}

/* InstallNow(), RebootNow(): a job that waits for its window (or its download delay) goes on at once. */
static int method_release(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        bool install = strcmp(sd_bus_message_get_member(m), "InstallNow") == 0;
        int (*release)(void *) = install ? b->callbacks.install_now : b->callbacks.reboot_now;
        int r;

        r = check_root(m, error);
        if (r < 0)
                return r;
        r = release ? release(b->userdata) : -ENOENT;
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NOT_WAITING, install ? "No update waits to be installed."
                                                                               : "No update waits for a reboot.");
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot release the update: %s", strerror(-r));
        log_notice("%s asked for over D-Bus.", install ? "Installing now" : "Rebooting now");
        return sd_bus_reply_method_return(m, NULL);
}

#define PROPERTY(name, sig) SD_BUS_PROPERTY(name, sig, property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable vtable[] = {
        SD_BUS_VTABLE_START(0),
        PROPERTY("State", "s"),
        PROPERTY("Registered", "b"),
        PROPERTY("Connected", "b"),
        PROPERTY("Broker", "s"),
        PROPERTY("ProductId", "s"),
        PROPERTY("DeviceId", "s"),
        PROPERTY("HardwareVersion", "s"),
        PROPERTY("FirmwareVersion", "s"),
        PROPERTY("LastReport", "t"),
        PROPERTY("JobId", "s"),
        PROPERTY("JobTargetVersion", "s"),
        PROPERTY("JobPhase", "s"),
        PROPERTY("JobProgress", "u"),
        PROPERTY("JobBytesDone", "t"),
        PROPERTY("JobBytesTotal", "t"),
        PROPERTY("LastError", "s"),
        PROPERTY("LastJobResult", "s"),
        PROPERTY("StatusText", "s"),
        PROPERTY("WaitingFor", "s"),
        PROPERTY("WaitingUntil", "t"),
        /* Access is checked by method_report_now() itself (check_root()), not by sd-bus's own rule, which
         * would also let in our own user. */
        SD_BUS_METHOD("ReportNow", "", "", method_report_now, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("InstallNow", "", "", method_release, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RebootNow", "", "", method_release, SD_BUS_VTABLE_UNPRIVILEGED),
        /* The names as SD_BUS_PARAM() would write them (cppcheck cannot expand that macro). */
        SD_BUS_SIGNAL_WITH_NAMES("JobFinished", "ssbs", "id\0" "target_version\0" "success\0" "reason\0", 0),
        SD_BUS_VTABLE_END,
};

/* ---- the Status listener ---- */

static void on_status_changed(Status *s, uint32_t changed, void *userdata)
{
        Bus *b = userdata;
        const char *names[ELEMENTSOF(property_names) + 1];
        size_t n = 0;
        int r;

        if (!b->bus)
                return;
        for (size_t i = 0; i < ELEMENTSOF(property_names); i++)
                if (changed & property_names[i].field)
                        names[n++] = property_names[i].name;
        names[n] = NULL;
        if (n == 0)
                return;
        r = sd_bus_emit_properties_changed_strv(b->bus, BUS_PATH, BUS_INTERFACE, (char **)names);
        if (r < 0)
                log_debug_errno(r, "Cannot emit PropertiesChanged: %m");
}

static void on_job_finished(Status *s, const char *id, const char *target, bool success, const char *reason,
                            void *userdata)
{
        Bus *b = userdata;
        int r;

        if (!b->bus)
                return;
        r = sd_bus_emit_signal(b->bus, BUS_PATH, BUS_INTERFACE, "JobFinished", "ssbs", id, target, (int)success,
                               reason);
        if (r < 0)
                log_debug_errno(r, "Cannot emit JobFinished: %m");
}

/* ---- the connection ---- */

static void bus_drop(Bus *b)
{
        b->bus = sd_bus_flush_close_unref(b->bus);
        b->serving = false;
}

static int on_name_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Bus *b = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e) {
                /* The policy (dbus/com.krtyun.Krtiot1.conf) lets only krtiot and root own the name. */
                log_warning("Cannot own %s on the system bus: %s. The D-Bus interface is off until the bus "
                            "or krtiotd restarts (is %s installed?).",
                            BUS_NAME, e->message ? e->message : e->name,
                            "/usr/share/dbus-1/system.d/" BUS_NAME ".conf");
                return 0;
        }
        b->serving = true;
        log_info("Serving %s on the system bus.", BUS_NAME);
        return 0;
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Bus *b = userdata;

        log_notice("Lost the system bus; the D-Bus interface is off until it is back.");
        /* Not dropped here, inside its own dispatch: the retry does it. */
        b->serving = false;
        b->told_missing = true;
        backoff_reset(&b->backoff);
        bus_schedule_retry(b);
        return 0;
}

static int bus_connect(Bus *b)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        (void)sd_bus_set_description(bus, "system-bus");
        r = sd_bus_set_address(bus, b->address);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, true);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, NULL, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                              "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, NULL,
                                              b);
        if (r >= 0)
                r = sd_bus_add_object_vtable(bus, NULL, BUS_PATH, BUS_INTERFACE, vtable, b);
        if (r >= 0)
                r = sd_bus_request_name_async(bus, NULL, BUS_NAME, 0, on_name_reply, b);
        if (r < 0)
                return r;
        b->bus = TAKE_PTR(bus);
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static int on_inotify(sd_event_source *s, const struct inotify_event *event, void *userdata)
{
        Bus *b = userdata;

        if (event->len == 0 || strcmp(event->name, b->socket_name) != 0)
                return 0;
        log_debug("%s/%s appeared: connecting to the system bus.", b->socket_dir, b->socket_name);
        backoff_reset(&b->backoff);
        return on_retry(b->retry, 0, b);
}

/* Watches the socket's directory (when it exists) for the socket to appear. */
static void bus_watch_socket(Bus *b)
{
        int r;

        if (b->inotify || !b->socket_dir)
                return;
        r = sd_event_add_inotify(b->event, &b->inotify, b->socket_dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR,
                                 on_inotify, b);
        if (r < 0) {
                log_debug_errno(r, "Cannot watch %s for the bus socket: %m", b->socket_dir);
                return;
        }
        (void)sd_event_source_set_description(b->inotify, "bus-socket");
}

static void bus_schedule_retry(Bus *b)
{
        uint64_t delay;
        int r;

        bus_watch_socket(b);
        b->backoff.max_usec = b->inotify ? BUS_RETRY_WATCHED_USEC : BUS_RETRY_MAX_USEC;
        delay = backoff_next(&b->backoff);
        r = sd_event_source_set_time_relative(b->retry, delay);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->retry, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the bus retry timer: %m");
}

static void bus_try(Bus *b)
{
        int r;

        bus_drop(b);
        r = bus_connect(b);
        if (r < 0) {
                if (!b->told_missing)
                        log_notice("No system bus at %s (%s): the D-Bus interface is off until there is one; "
                                   "everything else works.",
                                   b->address, strerror(-r));
                else
                        log_debug_errno(r, "Still no system bus: %m");
                b->told_missing = true;
                bus_schedule_retry(b);
                return;
        }
        if (b->told_missing)
                log_info("Connected to the system bus.");
        b->told_missing = false;
        backoff_reset(&b->backoff);
        (void)sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
        b->inotify = sd_event_source_disable_unref(b->inotify);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        bus_try(userdata);
        return 0;
}

/* The directory and name of a unix:path= socket, for inotify. */
static int bus_parse_socket(Bus *b)
{
        const char *p;
        _cleanup_free_ char *path = NULL, *d = NULL, *n = NULL;

        if (strncmp(b->address, "unix:path=", 10) != 0 || strchr(b->address, ';'))
                return 0;
        p = b->address + 10;
        path = strndup(p, strcspn(p, ","));
        if (!path)
                return -ENOMEM;
        if (path[0] != '/' || strchr(path, '%'))
                return 0; /* relative, or escaped: not worth watching */
        d = strdup(path);
        n = strdup(path);
        if (!d || !n)
                return -ENOMEM;
        b->socket_dir = strdup(dirname(d));
        b->socket_name = strdup(basename(n));
        if (!b->socket_dir || !b->socket_name)
                return -ENOMEM;
        return 0;
}

int bus_new(sd_event *event, Status *status, const BusCallbacks *callbacks, void *userdata, Bus **ret)
{
        static const StatusListener listener = {
                .changed = on_status_changed,
                .job_finished = on_job_finished,
        };
        const char *address = secure_getenv("DBUS_SYSTEM_BUS_ADDRESS");
        Bus *b;
        int r;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->event = sd_event_ref(event);
        b->status = status;
        b->callbacks = *callbacks;
        b->userdata = userdata;
        backoff_init(&b->backoff, USEC_PER_SEC, BUS_RETRY_MAX_USEC);
        b->address = strdup(address && address[0] ? address : BUS_DEFAULT_ADDRESS);
        r = b->address ? bus_parse_socket(b) : -ENOMEM;
        if (r >= 0)
                r = sd_event_add_time(event, &b->retry, CLOCK_MONOTONIC, 0, USEC_PER_SEC / 10, on_retry, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
        if (r < 0) {
                bus_free(b);
                return r;
        }
        (void)sd_event_source_set_description(b->retry, "bus-retry");
        status_set_listener(status, &listener, b);
        bus_try(b);
        *ret = b;
        return 0;
}

Bus *bus_free(Bus *b)
{
        if (!b)
                return NULL;
        if (b->status)
                status_set_listener(b->status, NULL, NULL);
        bus_drop(b);
        sd_event_source_disable_unref(b->retry);
        sd_event_source_disable_unref(b->inotify);
        sd_event_unref(b->event);
        free(b->address);
        free(b->socket_dir);
        free(b->socket_name);
        free(b);
        return NULL;
}
