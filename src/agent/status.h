/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the daemon is doing, in one place: the session (registering,
 * connected, offline, ...), the identity and versions, the current job and
 * its progress, the last error. The agent, registration and the OTA job
 * update it; it renders STATUS= for systemd and tells its listener (the
 * D-Bus interface, bus.c) which fields changed, so the two always agree and
 * nobody else knows either exists.
 *
 * Changes are gathered and published once per turn of the event loop; a
 * change of download progress alone at most once a second. Every string is
 * kept escaped (escape_text()): valid UTF-8 without control characters.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "journal.h"
#include "util/macro.h"

typedef struct Status Status;

/* Where the session stands. */
typedef enum StatusLink {
        STATUS_LINK_STARTING,
        STATUS_LINK_REGISTERING,
        STATUS_LINK_REGISTRATION_REFUSED,
        STATUS_LINK_CONNECTING,
        STATUS_LINK_CONNECTED,
        STATUS_LINK_OFFLINE,
        STATUS_LINK_STOPPING,
        _STATUS_LINK_MAX,
} StatusLink;

/* The fields, as bits of a change mask. */
typedef enum StatusField {
        STATUS_STATE = 1u << 0,
        STATUS_REGISTERED = 1u << 1,
        STATUS_CONNECTED = 1u << 2,
        STATUS_BROKER = 1u << 3,
        STATUS_PRODUCT_ID = 1u << 4,
        STATUS_DEVICE_ID = 1u << 5,
        STATUS_HARDWARE_VERSION = 1u << 6,
        STATUS_FIRMWARE_VERSION = 1u << 7,
        STATUS_LAST_REPORT = 1u << 8,
        STATUS_JOB_ID = 1u << 9,
        STATUS_JOB_TARGET = 1u << 10,
        STATUS_JOB_PHASE = 1u << 11,
        STATUS_JOB_PROGRESS = 1u << 12,
        STATUS_JOB_BYTES_DONE = 1u << 13,
        STATUS_JOB_BYTES_TOTAL = 1u << 14,
        STATUS_LAST_ERROR = 1u << 15,
        STATUS_LAST_JOB_RESULT = 1u << 16,
        STATUS_TEXT = 1u << 17,
        STATUS_WAITING_FOR = 1u << 18,
        STATUS_WAITING_UNTIL = 1u << 19,
} StatusField;

#define STATUS_PROGRESS_FIELDS (STATUS_JOB_PROGRESS | STATUS_JOB_BYTES_DONE | STATUS_JOB_BYTES_TOTAL)

typedef struct StatusListener {
        /* CHANGED (StatusField bits) were published; the getters below give the new values. */
        void (*changed)(Status *s, uint32_t changed, void *userdata);
        /* A job ended, after changed() said so. REASON is "" on success. */
        void (*job_finished)(Status *s, const char *id, const char *target, bool success, const char *reason,
                             void *userdata);
} StatusListener;

int status_new(sd_event *event, Status **ret);
Status *status_free(Status *s);
static inline void status_freep(Status **s)
{
        status_free(*s);
}
#define _cleanup_status_ _cleanup_(status_freep)

/* One listener (or NULL): the D-Bus interface. */
void status_set_listener(Status *s, const StatusListener *l, void *userdata);

/* ---- setters: each compares, and publishes only what changed ---- */

/*
 * The session. FORMAT (printf) is what STATUS= says while no job runs, e.g.
 * "Offline: connection refused (tcp://...); retrying in 5 s"; NULL for
 * STATUS_LINK_CONNECTED, whose words come from the fields.
 */
void status_set_link(Status *s, StatusLink link, const char *format, ...) _printf_(3, 4);
/* Whether the MQTT session is up (with either secret; status_set_link() sets it too). */
void status_set_connected(Status *s, bool connected);
/* Whether a device secret is stored and in use. */
void status_set_registered(Status *s, bool registered);
void status_set_identity(Status *s, const char *broker, const char *product_id, const char *device_id);
/* A version report was sent (REALTIME_USEC: CLOCK_REALTIME). */
void status_set_report(Status *s, const char *hw, const char *fw, uint64_t realtime_usec);

/* Something went wrong (printf): the last error, and a line in no log (the caller logs). */
void status_set_error(Status *s, const char *format, ...) _printf_(2, 3);
/*
 * A condition that lasts until it is cleared (NULL), e.g. "Cannot accept
 * updates: cannot write ...": STATUS= starts with it meanwhile. Setting it
 * also sets the last error.
 */
void status_set_problem(Status *s, const char *format, ...) _printf_(2, 3);

/*
 * The current job (J, NULL = none) as the journal holds it; COMMITTING: its
 * reboot-pending phase is being resolved after a reboot. A job whose phase
 * becomes done or failed here ends: LastJobResult, and job_finished(). A job
 * that was under way and is replaced by another ends as failed ("replaced by
 * command ID"). Called whenever the job may have changed; cheap.
 */
void status_set_job(Status *s, const Job *j, bool committing);
/* The download's progress: DONE bytes on disk of TOTAL (0 = unknown). */
void status_set_job_progress(Status *s, uint64_t done, uint64_t total);

/*
 * The job waits (State "waiting"): FOR is "download" (the random delay of
 * ota.download_delay_max), "install" or "reboot" (their windows), NULL when
 * it does not wait. UNTIL_USEC: CLOCK_REALTIME when the wait should end, 0
 * when not known (the clock is not synchronised). FORMAT (printf) is what
 * STATUS= says meanwhile.
 */
void status_set_wait(Status *s, const char *what, uint64_t until_usec, const char *format, ...) _printf_(4, 5);

/* Publishes what changed now, without waiting for the loop (before READY=1, at exit). */
void status_flush(Status *s);

/* ---- getters ---- */

StatusLink status_link(const Status *s);
/* The one-word state of krtiot-dbus(7): the job's phase while one is under way, else the session's. */
const char *status_state(const Status *s);
/* STATUS= as it is now. */
const char *status_text(const Status *s);
bool status_registered(const Status *s);
bool status_connected(const Status *s);
const char *status_broker(const Status *s);
const char *status_product_id(const Status *s);
const char *status_device_id(const Status *s);
const char *status_hardware_version(const Status *s);
const char *status_firmware_version(const Status *s);
uint64_t status_last_report(const Status *s);
const char *status_job_id(const Status *s);
const char *status_job_target(const Status *s);
const char *status_job_phase(const Status *s);
unsigned status_job_progress(const Status *s);
uint64_t status_job_bytes_done(const Status *s);
uint64_t status_job_bytes_total(const Status *s);
const char *status_last_error(const Status *s);
const char *status_last_job_result(const Status *s);
const char *status_waiting_for(const Status *s);
uint64_t status_waiting_until(const Status *s);
