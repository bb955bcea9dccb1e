/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's status record (status.h): setters that compare and mark what
 * changed, one publication per turn of the loop (progress alone at most once
 * a second), and the one rendering of STATUS=.
 *
 * Invariants:
 *  - every string held is escape_text()ed: D-Bus can carry it and a terminal
 *    shows it harmlessly;
 *  - STATUS= and the listener are told in the same publication, from the
 *    same fields;
 *  - job_finished() for a job comes after the changed() that shows its end.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "notify.h"
#include "status.h"
#include "util/strings.h"

#define FIELD_MAX 512                    /* bytes of one escaped field, NUL included */
#define TEXT_MAX 256                     /* bytes of STATUS=, NUL included */
#define PROGRESS_PERIOD_USEC USEC_PER_SEC /* progress alone is published at most this often */
#define FINISHED_MAX 4                   /* job ends kept for one publication */

typedef struct Finished {
        char *id, *target, *reason;
        bool success;
} Finished;

struct Status {
        sd_event *event;
        sd_event_source *defer; /* publish at the next turn of the loop */
        sd_event_source *timer; /* publish progress once PROGRESS_PERIOD_USEC has passed */
        uint64_t progress_published; /* CLOCK_MONOTONIC */
        uint32_t pending;
        StatusListener listener;
        void *userdata;

        StatusLink link;
        char *link_text;
        char *problem;
        bool registered, connected;
        char *broker, *product_id, *device_id;
        char *hw, *fw;
        uint64_t last_report;

        char *job_id, *job_target, *job_reason;
        JobPhase job_phase; /* _JOB_PHASE_INVALID: none */
        bool committing;
        uint64_t done, total;
        char *last_error, *last_job_result;
        char *waiting_for, *wait_text;
        uint64_t waiting_until;

        const char *state; /* as last published */
        char text[TEXT_MAX];
        Finished finished[FINISHED_MAX];
        size_t n_finished;
};

static const char *const link_words[_STATUS_LINK_MAX] = {
        [STATUS_LINK_STARTING] = "starting",
        [STATUS_LINK_REGISTERING] = "registering",
        [STATUS_LINK_REGISTRATION_REFUSED] = "registration-refused",
        [STATUS_LINK_CONNECTING] = "connecting",
        [STATUS_LINK_CONNECTED] = "connected",
        [STATUS_LINK_OFFLINE] = "offline",
        [STATUS_LINK_STOPPING] = "stopping",
};

static bool phase_active(JobPhase p)
{
        return p >= JOB_ACCEPTED && p < JOB_DONE;
}

/* An escaped, bounded copy of S (NULL for NULL); NULL also when out of memory. */
static char *text_dup(const char *s)
{
        char buf[FIELD_MAX];

        if (!s)
                return NULL;
        escape_text(s, strlen(s), buf, sizeof(buf));
        return strdup(buf);
}

/* Sets *FIELD to an escaped copy of VALUE; returns whether it changed. */
static bool field_set(char **field, const char *value)
{
        char *v = text_dup(value);

        if (value && !v)
                return false; /* out of memory: the old value stays */
        if ((!v && !*field) || (v && *field && strcmp(v, *field) == 0)) {
                free(v);
                return false;
        }
        free(*field);
        *field = v;
        return true;
}

static bool field_vset(char **field, const char *format, va_list ap)
{
        _cleanup_free_ char *raw = NULL;

        if (!format)
                return field_set(field, NULL);
        if (vasprintf(&raw, format, ap) < 0)
                return false;
        return field_set(field, raw);
}

static const char *str(const char *s)
{
        return s ? s : "";
}

/* ---- rendering ---- */

static unsigned job_percent(const Status *s)
{
        if (s->job_phase == JOB_DOWNLOADING || s->job_phase == JOB_ACCEPTED || s->job_phase == JOB_FAILED)
                return s->total > 0 ? (unsigned)(MIN(s->done, s->total) * 100 / s->total) : 0;
        return phase_active(s->job_phase) || s->job_phase == JOB_DONE ? 100 : 0;
}

static const char *status_compute_state(const Status *s)
{
        if (s->link == STATUS_LINK_STOPPING)
                return "stopping";
        if (phase_active(s->job_phase)) {
                if (s->waiting_for)
                        return "waiting";
                if (s->job_phase == JOB_REBOOT_PENDING && s->committing)
                        return "committing";
                return job_phase_to_string(s->job_phase);
        }
        return link_words[s->link];
}

static void status_render(const Status *s, char out[TEXT_MAX])
{
        _cleanup_free_ char *base = NULL, *all = NULL;
        const char *t = str(s->job_target);
        int r = -1;

        if (s->link == STATUS_LINK_STOPPING)
                r = asprintf(&base, "Stopping");
        else if (phase_active(s->job_phase) && s->waiting_for && s->wait_text)
                r = asprintf(&base, "%s", s->wait_text);
        else if (phase_active(s->job_phase))
                switch (s->job_phase) {
                case JOB_DOWNLOADING:
                        if (s->total > 0)
                                r = asprintf(&base, "Updating to %s: downloading %u%% (%.1f of %.1f MiB)", t,
                                             job_percent(s), s->done / 1048576.0, s->total / 1048576.0);
                        else if (s->done > 0)
                                r = asprintf(&base, "Updating to %s: downloading (%.1f MiB)", t,
                                             s->done / 1048576.0);
                        else
                                r = asprintf(&base, "Updating to %s: downloading", t);
                        break;
                case JOB_VERIFYING:
                        r = asprintf(&base, "Updating to %s: verifying", t);
                        break;
                case JOB_INSTALLING:
                        r = asprintf(&base, "Updating to %s: installing", t);
                        break;
                case JOB_REBOOT_PENDING:
                        r = s->committing ? asprintf(&base, "Updating to %s: checking the new firmware after "
                                                            "the reboot", t)
                                          : asprintf(&base, "Update to %s installed; waiting for the reboot "
                                                            "that activates it", t);
                        break;
                default:
                        r = asprintf(&base, "Updating to %s", t);
                }
        else if (s->link == STATUS_LINK_CONNECTED) {
                if (s->job_phase == JOB_FAILED)
                        r = asprintf(&base, "Connected to %s as %s, firmware %s; the update to %s failed: %s",
                                     str(s->broker), str(s->device_id), s->fw ? s->fw : "unknown", t,
                                     str(s->job_reason));
                else
                        r = asprintf(&base, "Connected to %s as %s, firmware %s", str(s->broker),
                                     str(s->device_id), s->fw ? s->fw : "unknown");
        } else
                r = asprintf(&base, "%s", s->link_text ? s->link_text : "Starting");
        if (r < 0)
                base = NULL;

        if (s->problem && asprintf(&all, "%s; %s", s->problem, str(base)) < 0)
                all = NULL;
        /* The parts are escaped already: this only cuts, never in a character. */
        escape_text(all ? all : str(base), strlen(all ? all : str(base)), out, TEXT_MAX);
}

/* ---- publishing ---- */

static void status_publish(Status *s)
{
        char text[TEXT_MAX];
        const char *state;
        uint32_t changed;
        size_t n;

        (void)sd_event_source_set_enabled(s->defer, SD_EVENT_OFF);
        (void)sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);

        status_render(s, text);
        if (strcmp(text, s->text) != 0) {
                memcpy(s->text, text, sizeof(text));
                s->pending |= STATUS_TEXT;
                notify_status(s->text);
        }
        state = status_compute_state(s);
        if (state != s->state) {
                s->state = state;
                s->pending |= STATUS_STATE;
        }

        changed = s->pending;
        s->pending = 0;
        if (changed & STATUS_PROGRESS_FIELDS)
                (void)sd_event_now(s->event, CLOCK_MONOTONIC, &s->progress_published);
        if (changed && s->listener.changed)
                s->listener.changed(s, changed, s->userdata);

        n = s->n_finished;
        s->n_finished = 0;
        for (size_t i = 0; i < n; i++) {
                Finished *f = &s->finished[i];

                if (s->listener.job_finished)
                        s->listener.job_finished(s, f->id, str(f->target), f->success, str(f->reason),
                                                 s->userdata);
                free(f->id);
                free(f->target);
                free(f->reason);
        }
}

static int on_defer(sd_event_source *source, void *userdata)
{
        status_publish(userdata);
        return 0;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
        status_publish(userdata);
        return 0;
}

/* FIELDS changed: published at the next turn of the loop, or (progress alone) once its period has passed. */
static void status_changed(Status *s, uint32_t fields)
{
        uint64_t now = 0, due;

        if (!fields)
                return;
        s->pending |= fields;
        if ((fields & ~STATUS_PROGRESS_FIELDS) || s->n_finished > 0) {
                if (sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT) < 0)
                        status_publish(s);
                return;
        }

        (void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        due = s->progress_published + PROGRESS_PERIOD_USEC;
        if (s->progress_published == 0 || due <= now) {
                if (sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT) < 0)
                        status_publish(s);
                return;
        }
        if (sd_event_source_get_enabled(s->timer, NULL) > 0)
                return; /* armed already */
        if (sd_event_source_set_time(s->timer, due) < 0 ||
            sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT) < 0)
                status_publish(s);
}

void status_flush(Status *s)
{
        status_publish(s);
}

/* ---- setters ---- */

void status_set_link(Status *s, StatusLink link, const char *format, ...)
{
        uint32_t changed = 0;
        bool connected = link == STATUS_LINK_CONNECTED ? true
                         : link == STATUS_LINK_REGISTERING ? s->connected
                                                           : false;
        va_list ap;

        va_start(ap, format);
        if (field_vset(&s->link_text, format, ap))
                changed |= STATUS_TEXT;
        va_end(ap);
        if (link != s->link) {
                s->link = link;
                changed |= STATUS_STATE;
        }
        if (connected != s->connected) {
                s->connected = connected;
                changed |= STATUS_CONNECTED;
        }
        status_changed(s, changed);
}

void status_set_connected(Status *s, bool connected)
{
        if (connected == s->connected)
                return;
        s->connected = connected;
        status_changed(s, STATUS_CONNECTED);
}

void status_set_registered(Status *s, bool registered)
{
        if (registered == s->registered)
                return;
        s->registered = registered;
        status_changed(s, STATUS_REGISTERED);
}

void status_set_identity(Status *s, const char *broker, const char *product_id, const char *device_id)
{
        uint32_t changed = 0;

        if (field_set(&s->broker, broker))
                changed |= STATUS_BROKER;
        if (field_set(&s->product_id, product_id))
                changed |= STATUS_PRODUCT_ID;
        if (field_set(&s->device_id, device_id))
                changed |= STATUS_DEVICE_ID;
        status_changed(s, changed);
}

void status_set_report(Status *s, const char *hw, const char *fw, uint64_t realtime_usec)
{
        uint32_t changed = 0;

        if (field_set(&s->hw, hw))
                changed |= STATUS_HARDWARE_VERSION;
        if (field_set(&s->fw, fw))
                changed |= STATUS_FIRMWARE_VERSION;
        if (realtime_usec != s->last_report) {
                s->last_report = realtime_usec;
                changed |= STATUS_LAST_REPORT;
        }
        status_changed(s, changed);
}

void status_set_error(Status *s, const char *format, ...)
{
        va_list ap;
        bool changed;

        va_start(ap, format);
        changed = field_vset(&s->last_error, format, ap);
        va_end(ap);
        status_changed(s, changed ? STATUS_LAST_ERROR : 0);
}

void status_set_problem(Status *s, const char *format, ...)
{
        va_list ap;
        bool changed;

        va_start(ap, format);
        changed = field_vset(&s->problem, format, ap);
        va_end(ap);
        if (!changed)
                return;
        if (s->problem && field_set(&s->last_error, s->problem))
                status_changed(s, STATUS_LAST_ERROR);
        status_changed(s, STATUS_TEXT);
}

/* The job shown ended: remembered for LastJobResult and queued for job_finished(). */
static void status_job_ended(Status *s, bool success, const char *reason)
{
        _cleanup_free_ char *result = NULL;
        Finished *f;

        if (success)
                result = strdup("succeeded");
        else if (asprintf(&result, "failed: %s", str(reason)) < 0)
                result = NULL;
        if (result && field_set(&s->last_job_result, result))
                s->pending |= STATUS_LAST_JOB_RESULT;
        if (!success && field_set(&s->last_error, result))
                s->pending |= STATUS_LAST_ERROR;

        if (s->n_finished == FINISHED_MAX) { /* a burst of job ends within one turn: the oldest goes */
                free(s->finished[0].id);
                free(s->finished[0].target);
                free(s->finished[0].reason);
                memmove(s->finished, s->finished + 1, (FINISHED_MAX - 1) * sizeof(Finished));
                s->n_finished--;
        }
        f = &s->finished[s->n_finished];
        *f = (Finished){
                .id = strdup(str(s->job_id)),
                .target = s->job_target ? strdup(s->job_target) : NULL,
                .reason = success ? NULL : text_dup(reason),
                .success = success,
        };
        if (f->id)
                s->n_finished++;
}

void status_set_job(Status *s, const Job *j, bool committing)
{
        _cleanup_free_ char *id = j ? text_dup(j->id) : NULL;
        JobPhase phase = j ? j->phase : _JOB_PHASE_INVALID;
        uint32_t changed = 0;
        bool same = id && s->job_id && strcmp(id, s->job_id) == 0;

        if (j && !id)
                return; /* out of memory: shown as it was */

        if (!same) {
                if (s->job_id && phase_active(s->job_phase)) {
                        char why[64 + FIELD_MAX];

                        (void)snprintf(why, sizeof(why), "replaced by command %s", id ? id : "(none)");
                        status_job_ended(s, false, why);
                }
                free(s->job_id);
                s->job_id = TAKE_PTR(id);
                s->job_phase = _JOB_PHASE_INVALID;
                s->done = j ? j->offset : 0;
                s->total = j ? j->size : 0;
                changed |= STATUS_JOB_ID | STATUS_PROGRESS_FIELDS;
        }
        if (field_set(&s->job_target, j ? j->target : NULL))
                changed |= STATUS_JOB_TARGET;
        field_set(&s->job_reason, j ? j->reason : NULL);

        if (phase != s->job_phase) {
                /* A job seen ending (not one found ended in the journal at start). */
                bool ends = s->job_phase != _JOB_PHASE_INVALID && phase_active(s->job_phase) && j &&
                            (phase == JOB_DONE || phase == JOB_FAILED);
                /* Loaded ended: what LastJobResult says until the next job ends. */
                bool found_ended = s->job_phase == _JOB_PHASE_INVALID && j &&
                                   (phase == JOB_DONE || phase == JOB_FAILED);

                s->job_phase = phase;
                changed |= STATUS_JOB_PHASE | STATUS_JOB_PROGRESS;
                if (ends)
                        status_job_ended(s, phase == JOB_DONE, j->reason);
                else if (found_ended) {
                        _cleanup_free_ char *result = NULL;

                        if (phase == JOB_DONE)
                                result = strdup("succeeded");
                        else if (asprintf(&result, "failed: %s", str(j->reason)) < 0)
                                result = NULL;
                        if (result && field_set(&s->last_job_result, result))
                                changed |= STATUS_LAST_JOB_RESULT;
                }
        }
        if (committing != s->committing) {
                s->committing = committing;
                changed |= STATUS_STATE;
        }
        status_changed(s, changed | s->pending);
}

void status_set_job_progress(Status *s, uint64_t done, uint64_t total)
{
        uint32_t changed = 0;

        if (done != s->done) {
                s->done = done;
                changed |= STATUS_JOB_BYTES_DONE | STATUS_JOB_PROGRESS;
        }
        if (total != s->total) {
                s->total = total;
                changed |= STATUS_JOB_BYTES_TOTAL | STATUS_JOB_PROGRESS;
        }
        status_changed(s, changed);
}

/* ---- getters ---- */

StatusLink status_link(const Status *s)
{
        return s->link;
}

const char *status_state(const Status *s)
{
        return status_compute_state(s);
}

const char *status_text(const Status *s)
{
        return s->text;
}

bool status_registered(const Status *s)
{
        return s->registered;
}

bool status_connected(const Status *s)
{
        return s->connected;
}

const char *status_broker(const Status *s)
{
        return str(s->broker);
}

const char *status_product_id(const Status *s)
{
        return str(s->product_id);
}

const char *status_device_id(const Status *s)
{
        return str(s->device_id);
}

const char *status_hardware_version(const Status *s)
{
        return str(s->hw);
}

const char *status_firmware_version(const Status *s)
{
        return str(s->fw);
}

uint64_t status_last_report(const Status *s)
{
        return s->last_report;
}

const char *status_job_id(const Status *s)
{
        return str(s->job_id);
}

const char *status_job_target(const Status *s)
{
        return str(s->job_target);
}

const char *status_job_phase(const Status *s)
{
        return s->job_phase == _JOB_PHASE_INVALID ? "" : job_phase_to_string(s->job_phase);
}

unsigned status_job_progress(const Status *s)
{
        return job_percent(s);
}

uint64_t status_job_bytes_done(const Status *s)
{
        return s->done;
}

uint64_t status_job_bytes_total(const Status *s)
{
        return s->total;
}

const char *status_last_error(const Status *s)
{
        return str(s->last_error);
}

const char *status_last_job_result(const Status *s)
{
        return str(s->last_job_result);
}

const char *status_waiting_for(const Status *s)
{
        return phase_active(s->job_phase) ? str(s->waiting_for) : "";
}

uint64_t status_waiting_until(const Status *s)
{
        return phase_active(s->job_phase) && s->waiting_for ? s->waiting_until : 0;
}

void status_set_wait(Status *s, const char *what, uint64_t until_usec, const char *format, ...)
{
        uint32_t changed = 0;
        va_list ap;

        if (field_set(&s->waiting_for, what))
                changed |= STATUS_WAITING_FOR | STATUS_STATE;
        if (!what)
                until_usec = 0;
        if (until_usec != s->waiting_until) {
                s->waiting_until = until_usec;
                changed |= STATUS_WAITING_UNTIL;
        }
        va_start(ap, format);
        if (field_vset(&s->wait_text, what ? format : NULL, ap))
                changed |= STATUS_TEXT;
        va_end(ap);
        status_changed(s, changed);
}

/* ---- lifecycle ---- */

int status_new(sd_event *event, Status **ret)
{
        _cleanup_status_ Status *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->link = STATUS_LINK_STARTING;
        s->job_phase = _JOB_PHASE_INVALID;
        s->state = link_words[STATUS_LINK_STARTING];
        r = sd_event_add_defer(event, &s->defer, on_defer, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->defer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time(event, &s->timer, CLOCK_MONOTONIC, 0, USEC_PER_SEC / 10, on_timer, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void)sd_event_source_set_description(s->defer, "status");
        (void)sd_event_source_set_description(s->timer, "status-progress");
        status_render(s, s->text);
        *ret = TAKE_PTR(s);
        return 0;
}

void status_set_listener(Status *s, const StatusListener *l, void *userdata)
{
        s->listener = l ? *l : (StatusListener){};
        s->userdata = userdata;
}

Status *status_free(Status *s)
{
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->defer);
        sd_event_source_disable_unref(s->timer);
        sd_event_unref(s->event);
        for (size_t i = 0; i < s->n_finished; i++) {
                free(s->finished[i].id);
                free(s->finished[i].target);
                free(s->finished[i].reason);
        }
        free(s->link_text);
        free(s->problem);
        free(s->broker);
        free(s->product_id);
        free(s->device_id);
        free(s->hw);
        free(s->fw);
        free(s->job_id);
        free(s->job_target);
        free(s->job_reason);
        free(s->last_error);
        free(s->last_job_result);
        free(s->waiting_for);
        free(s->wait_text);
        free(s);
        return NULL;
}
