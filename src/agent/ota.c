/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OTA job state machine.
 *
 *   command ──receipt──▶ accepted ──▶ downloading ──▶ verifying ──▶ installing
 *                           │ (target running: report, done)           │
 *                           ▼                          exit 0 ◀────────┤ exit 10
 *                          done ◀── version = target ──┘               ▼
 *                                                            reboot-pending ──(restart)──▶
 *                                                            running = target: commit, done
 *                                                            running = old: failed (rollback)
 *
 * Invariants:
 *  - the journal is written before each phase's work starts, so a restart
 *    resumes the phase it finds (downloading resumes with Range, installing
 *    asks the installer how the install ended and reruns it only when the
 *    installer does not know, reboot-pending checks the running version);
 *  - the agent runs no hook: krtiot-install (install-client.c) runs the
 *    install, the commit, `HOOK version` and the reboot command, and keeps
 *    running an install when the agent goes away;
 *  - every command gets a receipt: OK before any download, or FAIL with a
 *    REASON; an OK is journaled before it is sent, a FAIL within a second
 *    (it starts nothing, and a flood of them must not cost an fsync each);
 *    the same command ID gets the same answer again without changing anything
 *    (refusals that a retry may cure - no journal, a journal write that
 *    failed, no memory - and IDs longer than PROTOCOL_MAX_ID are not
 *    remembered);
 *  - a job that failed is remembered by ID: the same command never starts
 *    the same failing install again (no rollback loop);
 *  - the job's files are named by a local random key, never by anything the
 *    network sent; the image is deleted once the hook has finished, and a
 *    failed job deletes its partial file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "clock.h"
#include "fetcher.h"
#include "journal.h"
#include "log.h"
#include "ota.h"
#include "install-client.h"
#include "status.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/strings.h"
#include "util/random-id.h"
#include "version.h"

/* The installer's own limits on a commit and on the reboot command (src/install/hook.c). */
#define COMMIT_TIMEOUT_SEC 300
#define REBOOT_TIMEOUT_SEC 120
#define PROGRESS_STEP 10 /* percent between CMD 12 reports */
#define OTA_MAX_UNSENT 4 /* CMD 12 kept while offline (a job's outcome at start-up) */
#define SAVE_COALESCE_USEC USEC_PER_SEC /* refusals are journaled at most this often */

typedef void (*VersionThen)(Ota *o, const char *running);

/* What the job waits for, if anything (ota.download_delay_max, ota.install_window, ota.reboot_window). */
typedef enum OtaWait {
        OTA_WAIT_NONE,
        OTA_WAIT_DOWNLOAD, /* the random delay before the download */
        OTA_WAIT_INSTALL,  /* verified: the install window */
        OTA_WAIT_REBOOT,   /* installed, reboot-pending: the reboot window */
} OtaWait;

struct Ota {
        sd_event *event;
        Config *config; /* a reference of our own */
        Status *status; /* borrowed from the Agent */
        OtaCallbacks callbacks;
        void *userdata;

        Journal *journal;
        Fetcher *download;        /* krtiot-fetch, while a download runs */
        InstallCall *install;     /* install, its outcome, or commit: a hook runs (or may) */
        InstallCall *version;     /* `HOOK version` for a comparison */
        VersionThen version_then; /* what to do with its answer */
        InstallCall *reboot;
        Job *queued; /* the newest command that arrived while the hook ran; not journaled yet */
        unsigned last_progress;
        bool resolving; /* checking, after a restart, how a reboot-pending job ended */
        char *unsent[OTA_MAX_UNSENT]; /* progress messages made while offline, oldest first */
        size_t n_unsent;
        sd_event_source *save_timer; /* a coalesced journal write (refusals) is due */

        ClockWatch *clock;           /* windows are judged by a synchronised clock only */
        OtaWait waiting;
        sd_event_source *wait_timer; /* the delay ends, or the window opens */
        bool wait_told;              /* the platform and the log were told of this wait */
        bool released;               /* InstallNow(): this job's install waits for no window */
};

static void ota_run_queued(Ota *o);
static void ota_wait_end(Ota *o);

/* ---- small helpers ---- */

static Job *ota_job(const Ota *o)
{
        return o->journal ? o->journal->job : NULL;
}

bool ota_active(const Ota *o)
{
        Job *j = ota_job(o);

        return j && j->phase != JOB_DONE && j->phase != JOB_FAILED;
}

/* Shows the job as it is in memory (status.c publishes only what changed). */
static void ota_show(Ota *o)
{
        status_set_job(o->status, ota_job(o), o->resolving);
}

static int ota_save(Ota *o)
{
        int r;

        /* This write carries whatever a coalesced one was waiting to write. */
        o->save_timer = sd_event_source_disable_unref(o->save_timer);
        r = journal_save(o->config->state_dir, o->journal);
        if (r < 0) {
                log_error_errno(r, "Cannot write the OTA journal %s/%s: %m", o->config->state_dir, JOURNAL_FILE);
                return r;
        }
        status_set_problem(o->status, NULL); /* the journal can be written (again) */
        ota_show(o);
        return 0;
}

static int on_save_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        (void)ota_save(userdata);
        return 0;
}

/*
 * A journal write that may wait a little and be shared: refusals start
 * nothing, so losing the last second of them to a power cut costs only that
 * such an ID, sent again, is checked again; a flood of them costs one write a
 * second, not one fsync each.
 */
static void ota_save_soon(Ota *o)
{
        if (o->save_timer)
                return;
        if (sd_event_add_time_relative(o->event, &o->save_timer, CLOCK_MONOTONIC, SAVE_COALESCE_USEC,
                                       USEC_PER_SEC / 10, on_save_timer, o) < 0)
                (void)ota_save(o);
        else
                (void)sd_event_source_set_description(o->save_timer, "ota-journal-save");
}

static char *job_path(const Ota *o, const Job *j, const char *suffix)
{
        char *p;

        if (asprintf(&p, "%s/%s.%s", o->config->ota_download_dir, j->key, suffix) < 0)
                return NULL;
        return p;
}

static void job_unlink(const Ota *o, const Job *j, const char *suffix)
{
        _cleanup_free_ char *p = job_path(o, j, suffix);

        if (p && unlink(p) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Cannot delete %s: %m", p);
}

static void ota_publish_receipt(Ota *o, const char *id, bool ok, const char *reason)
{
        _cleanup_free_ char *payload = NULL;

        if (protocol_ota_receipt(id, ok, reason, &payload) < 0 || o->callbacks.publish(o, payload, o->userdata) < 0)
                log_warning("Could not send the receipt of command %s (offline?).", id);
}

static void ota_progress(Ota *o, const char *state, unsigned percent, const char *reason)
{
        _cleanup_free_ char *payload = NULL;
        Job *j = ota_job(o);

        if (!o->config->ota_report_progress || !j)
                return;
        if (protocol_progress(j->id, state, percent, reason, &payload) < 0)
                return;
        if (o->callbacks.publish(o, payload, o->userdata) == -ENOTCONN &&
            (strcmp(state, "DONE") == 0 || strcmp(state, "FAILED") == 0 || strcmp(state, "REBOOTING") == 0)) {
                /* An outcome decided while offline (e.g. at start-up after a reboot) is sent at the next
                 * connect; intermediate progress is not worth keeping. */
                if (o->n_unsent == OTA_MAX_UNSENT) {
                        free(o->unsent[0]);
                        memmove(o->unsent, o->unsent + 1, (OTA_MAX_UNSENT - 1) * sizeof(char *));
                        o->n_unsent--;
                }
                o->unsent[o->n_unsent++] = TAKE_PTR(payload);
        }
}

void ota_connected(Ota *o)
{
        size_t sent = 0;

        while (sent < o->n_unsent && o->callbacks.publish(o, o->unsent[sent], o->userdata) >= 0)
                free(o->unsent[sent++]);
        memmove(o->unsent, o->unsent + sent, (o->n_unsent - sent) * sizeof(char *));
        o->n_unsent -= sent;
}

bool ota_holds_reports(const Ota *o)
{
        return o->resolving;
}

static void ota_set_phase(Ota *o, JobPhase phase)
{
        ota_job(o)->phase = phase;
        (void)ota_save(o);
}

/* Ends the job as failed: files deleted, remembered, reported. */
static void ota_fail(Ota *o, const char *reason)
{
        Job *j = ota_job(o);

        o->download = fetcher_free(o->download);
        o->resolving = false;
        ota_wait_end(o);
        o->released = false;
        log_error("Update to %s (command %s) failed: %s.", j->target, j->id, reason);
        job_unlink(o, j, "part");
        job_unlink(o, j, "img");
        free(j->reason);
        j->reason = strdup(reason);
        j->phase = JOB_FAILED;
        (void)journal_remember_failed(o->journal, j->id, j->target);
        (void)ota_save(o);
        ota_show(o); /* also when the journal could not be written */
        ota_progress(o, "FAILED", 0, reason);
        o->callbacks.report(o, o->userdata);
        ota_run_queued(o);
}

static void ota_succeed(Ota *o)
{
        Job *j = ota_job(o);

        o->resolving = false;
        log_notice("Update to %s (command %s) done: the new firmware is running.", j->target, j->id);
        ota_set_phase(o, JOB_DONE);
        ota_show(o);
        ota_progress(o, "DONE", 100, NULL);
        o->callbacks.report(o, o->userdata);
        ota_run_queued(o);
}

/* ---- the running version (from a file, or asynchronously from the hook) ---- */

static void on_version_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                              void *userdata)
{
        Ota *o = userdata;
        VersionThen then = o->version_then;
        const char *v, *why = NULL;

        o->version = install_call_free(o->version);
        v = version_from_answer(error, answer, reason, &why);
        if (!v)
                log_error("The installer gave no running version: %s.", why);
        then(o, v);
}

/* Calls THEN with the running version (NULL when unknown), now or from the loop. */
static void ota_with_running_version(Ota *o, VersionThen then)
{
        _cleanup_free_ char *v = NULL;
        int r;

        if (o->config->fw_version_from_hook) {
                o->version = install_call_free(o->version);
                o->version_then = then;
                r = version_query_installer(o->event, o->config, on_version_answer, o, &o->version);
                if (r >= 0)
                        return;
                log_error_errno(r, "Cannot ask the installer for the running version: %m");
        } else {
                r = version_read_fw(o->config, &v);
                if (r < 0)
                        log_error_errno(r, "Cannot read the firmware version: %s", read_error_message(r));
        }
        then(o, v);
}

/*
 * The job's ID as the installer takes it (install-wire.h: no control
 * characters): as it is, or with those written \xNN, cut to fit. Only the
 * hook's KRTIOT_JOB_ID sees it; the platform gets the ID exactly.
 */
static const char *job_wire_id(const Job *j, char buf[INSTALL_ID_MAX + 1])
{
        if (install_id_valid(j->id))
                return j->id;
        (void)escape_control(j->id, strlen(j->id), buf, INSTALL_ID_MAX + 1);
        return buf;
}

/* Asks the installer for REQ; DONE follows from the loop. */
static int ota_ask(Ota *o, const InstallRequest *req, unsigned timeout_sec, InstallCallDone done,
                   InstallCall **ret)
{
        return install_call_new(o->event, o->config->ota_installer_socket, req,
                                install_call_timeout(timeout_sec), done, o, ret);
}

/* ---- waiting: the download's random delay, the install and reboot windows ---- */

static void ota_install(Ota *o);
static void ota_reboot(Ota *o);
static void ota_download(Ota *o);
static void ota_install_when_allowed(Ota *o);
static void ota_reboot_when_allowed(Ota *o);

static void ota_wait_end(Ota *o)
{
        o->wait_timer = sd_event_source_disable_unref(o->wait_timer);
        o->waiting = OTA_WAIT_NONE;
        o->wait_told = false;
        status_set_wait(o->status, NULL, 0, NULL);
}

/* The wait is over, or is to be judged again (a window opened, the clock changed). */
static void ota_go_on(Ota *o)
{
        switch (o->waiting) {
        case OTA_WAIT_DOWNLOAD:
                ota_wait_end(o);
                ota_download(o);
                break;
        case OTA_WAIT_INSTALL:
                ota_install_when_allowed(o);
                break;
        case OTA_WAIT_REBOOT:
                ota_reboot_when_allowed(o);
                break;
        default:
                break;
        }
}

static int on_wait_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        ota_go_on(userdata);
        return 0;
}

static void on_clock_changed(ClockWatch *w, void *userdata)
{
        Ota *o = userdata;

        if (o->waiting == OTA_WAIT_INSTALL || o->waiting == OTA_WAIT_REBOOT)
                ota_go_on(o);
}

/*
 * Whether window W (NULL: any time) allows now. If not: *RET_OPENS is when
 * it opens, or 0 when that cannot be known yet, *RET_WHY saying why.
 */
static bool ota_window_allows(Ota *o, const Window *w, time_t *ret_opens, const char **ret_why)
{
        time_t when = 0;
        int r;

        *ret_opens = 0;
        *ret_why = NULL;
        if (!w)
                return true;
        if (o->clock && !clock_watch_synchronized(o->clock, ret_why))
                return false;
        r = window_check(w, time(NULL), &when);
        if (r < 0) {
                log_warning_errno(r, "Cannot judge the update window: %m. Going on as if it were open.");
                return true;
        }
        if (r == WINDOW_INSIDE)
                return true;
        *ret_opens = when;
        return false;
}

/* The job waits for WHAT's window, which opens at OPENS (0: not known; WHY says why). */
static void ota_wait_window(Ota *o, OtaWait what, time_t opens, const char *why)
{
        Job *j = ota_job(o);
        const char *name = what == OTA_WAIT_INSTALL ? "install" : "reboot";
        char when[WINDOW_TIME_MAX], reason[192];
        int r;

        o->waiting = what;
        o->wait_timer = sd_event_source_disable_unref(o->wait_timer);
        if (opens > 0) {
                window_format_time(opens, when, sizeof(when));
                (void)snprintf(reason, sizeof(reason), "the %s window opens %s", name, when);
                r = sd_event_add_time(o->event, &o->wait_timer, CLOCK_REALTIME, (uint64_t)opens * USEC_PER_SEC, 1,
                                      on_wait_timer, o);
                if (r < 0)
                        log_error_errno(r, "Cannot arm the %s window's timer: %m", name);
                else
                        (void)sd_event_source_set_description(o->wait_timer, "ota-window");
        } else
                (void)snprintf(reason, sizeof(reason), "%s", why ? why : "the window's opening is not known");

        if (what == OTA_WAIT_INSTALL)
                status_set_wait(o->status, name, (uint64_t)opens * USEC_PER_SEC,
                                "Updating to %s: downloaded; waiting for the install window%s%s", j->target,
                                opens > 0 ? ", which opens " : ": ", opens > 0 ? when : reason);
        else
                status_set_wait(o->status, name, (uint64_t)opens * USEC_PER_SEC,
                                "Update to %s installed; waiting for the reboot window%s%s", j->target,
                                opens > 0 ? ", which opens " : ": ", opens > 0 ? when : reason);
        if (!o->wait_told) {
                log_notice("Update to %s (command %s) waits: %s.", j->target, j->id, reason);
                ota_progress(o, "WAITING", 100, reason);
                o->wait_told = true;
        }
}

static void ota_install_when_allowed(Ota *o)
{
        const char *why;
        time_t opens;

        if (!o->released && !ota_window_allows(o, o->config->ota_install_window, &opens, &why)) {
                ota_wait_window(o, OTA_WAIT_INSTALL, opens, why);
                return;
        }
        if (o->waiting == OTA_WAIT_INSTALL)
                log_info("The install window is open.");
        ota_wait_end(o);
        ota_install(o);
}

static int read_boot_id(char **ret)
{
        return read_one_line_file("/proc/sys/kernel/random/boot_id", ret);
}

/* The reboot waits no more: the journal says so (a restart then takes the old version for a rollback). */
static void ota_reboot_asked(Ota *o)
{
        Job *j = ota_job(o);

        ota_wait_end(o);
        if (j->reboot_wait_boot) {
                j->reboot_wait_boot = mfree(j->reboot_wait_boot);
                (void)ota_save(o);
        }
        ota_progress(o, "REBOOTING", 100, NULL);
        ota_reboot(o);
}

static void ota_reboot_when_allowed(Ota *o)
{
        Job *j = ota_job(o);
        const char *why;
        time_t opens;

        if (!ota_window_allows(o, o->config->ota_reboot_window, &opens, &why)) {
                if (!j->reboot_wait_boot) {
                        /* Until the reboot is asked for, a restart in this boot keeps waiting (ota_start). */
                        if (read_boot_id(&j->reboot_wait_boot) < 0)
                                log_warning("Cannot read the boot ID: a restart of krtiotd before the reboot window "
                                            "opens will count as the reboot.");
                        else
                                (void)ota_save(o);
                }
                ota_wait_window(o, OTA_WAIT_REBOOT, opens, why);
                return;
        }
        if (o->waiting == OTA_WAIT_REBOOT)
                log_info("The reboot window is open.");
        ota_reboot_asked(o);
}

/* The download starts now, or after a random delay of at most ota.download_delay_max. */
static void ota_download_when_due(Ota *o)
{
        Job *j = ota_job(o);
        unsigned max = o->config->ota_download_delay_max;
        uint64_t delay;
        int r;

        if (max == 0 || j->offset > 0 || o->released) {
                ota_download(o);
                return;
        }
        delay = random_below((uint64_t)max * USEC_PER_SEC + 1);
        o->wait_timer = sd_event_source_disable_unref(o->wait_timer);
        r = sd_event_add_time_relative(o->event, &o->wait_timer, CLOCK_MONOTONIC, delay, USEC_PER_SEC / 100,
                                       on_wait_timer, o);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the download delay: %m. Downloading now.");
                ota_download(o);
                return;
        }
        (void)sd_event_source_set_description(o->wait_timer, "ota-download-delay");
        o->waiting = OTA_WAIT_DOWNLOAD;
        log_info("Downloading %s in %.1f s (a random delay of at most ota.download_delay_max = %u s).", j->target,
                 (double)delay / USEC_PER_SEC, max);
        status_set_wait(o->status, "download", now_realtime_usec() + delay,
                        "Updating to %s: the download starts in %llu s (ota.download_delay_max)", j->target,
                        (unsigned long long)((delay + USEC_PER_SEC / 2) / USEC_PER_SEC));
}

int ota_install_now(Ota *o)
{
        switch (o->waiting) {
        case OTA_WAIT_DOWNLOAD:
                o->released = true;
                ota_wait_end(o);
                ota_download(o);
                return 0;
        case OTA_WAIT_INSTALL:
                o->released = true;
                ota_wait_end(o);
                ota_install(o);
                return 0;
        default:
                return -ENOENT;
        }
}

int ota_reboot_now(Ota *o)
{
        if (o->waiting != OTA_WAIT_REBOOT)
                return -ENOENT;
        ota_reboot_asked(o);
        return 0;
}

/* ---- install ---- */

static void on_reboot_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                             void *userdata)
{
        Ota *o = userdata;

        o->reboot = install_call_free(o->reboot);
        if (error < 0)
                log_error("Cannot ask the installer for the reboot: %s; the new firmware is active after "
                          "the next "
                          "reboot.",
                          reason);
        else if (answer->type == INSTALL_ANSWER_DONE && answer->outcome == INSTALL_OUTCOME_REBOOT)
                log_notice("The installer ran the reboot command.");
        else
                log_notice("The installer did not reboot: %s.",
                           answer->reason ? answer->reason : "it gave no reason");
}

/* The installer decides whether and how (ota.reboot_command in its configuration); the job's key is all we
 * send. */
static void ota_reboot(Ota *o)
{
        InstallRequest req = { .op = INSTALL_OP_REBOOT, .key = ota_job(o)->key };
        int r;

        log_notice("Asking the installer to reboot to activate the new firmware.");
        o->reboot = install_call_free(o->reboot);
        r = ota_ask(o, &req, REBOOT_TIMEOUT_SEC, on_reboot_answer, &o->reboot);
        if (r < 0)
                log_error_errno(r, "Cannot ask the installer for the reboot: %m");
}

static void on_installed_version(Ota *o, const char *running)
{
        Job *j = ota_job(o);
        _cleanup_free_ char *reason = NULL;

        if (running && strcmp(running, j->target) == 0) {
                ota_succeed(o);
                return;
        }
        if (asprintf(&reason, "the install hook succeeded but the running firmware is %s, not %s",
                     running ? running : VERSION_UNKNOWN, j->target) < 0)
                reason = NULL;
        ota_fail(o, reason ? reason : "the running firmware is not the target");
}

/*
 * The install ended (the installer's answer to `install`, or to `outcome`
 * after a restart), or the agent could not learn how (ERROR, REASON).
 */
static void ota_install_ended(Ota *o, int error, const InstallAnswer *answer, const char *reason)
{
        Job *j = ota_job(o);
        char why[128 + INSTALL_REASON_MAX];

        job_unlink(o, j, "img"); /* whatever the result (SPEC 5.6) */

        if (error < 0) {
                ota_fail(o, reason);
                return;
        }
        if (answer->type == INSTALL_ANSWER_DONE && answer->outcome == INSTALL_OUTCOME_INSTALLED) {
                log_info("The install hook installed %s; checking the running version.", j->target);
                ota_with_running_version(o, on_installed_version);
                return;
        }
        if (answer->type == INSTALL_ANSWER_DONE && answer->outcome == INSTALL_OUTCOME_REBOOT) {
                log_notice("The install hook installed %s; a reboot activates it.", j->target);
                ota_set_phase(o, JOB_REBOOT_PENDING);
                ota_reboot_when_allowed(o);
                ota_run_queued(o);
                return;
        }
        /* The installer's reason is the hook's ("the install hook failed with exit status 1: ..."). */
        if (answer->type == INSTALL_ANSWER_DONE)
                (void)snprintf(why, sizeof(why), "%s",
                               answer->reason ? answer->reason : "the install hook failed");
        else if (answer->type == INSTALL_ANSWER_REFUSED)
                (void)snprintf(why, sizeof(why), "the installer refused the install: %s",
                               answer->reason ? answer->reason : "no reason given");
        else
                (void)snprintf(why, sizeof(why), "the installer's answer to the install is not an outcome");
        ota_fail(o, why);
}

static void on_install_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                              void *userdata)
{
        Ota *o = userdata;

        o->install = install_call_free(o->install);
        ota_install_ended(o, error, answer, reason);
}

static void ota_install(Ota *o)
{
        Job *j = ota_job(o);
        char id[INSTALL_ID_MAX + 1];
        /* The job's key names the image in the download directory: the installer opens it itself. */
        InstallRequest req = {
                .op = INSTALL_OP_INSTALL,
                .key = j->key,
                .id = job_wire_id(j, id),
                .target = j->target,
                .url = j->url,
        };
        int r;

        ota_set_phase(o, JOB_INSTALLING);
        log_info("Installing %s with %s.", j->target, o->config->ota_hook);
        ota_progress(o, "INSTALLING", 100, NULL);

        r = ota_ask(o, &req, o->config->ota_hook_timeout, on_install_answer, &o->install);
        if (r < 0) {
                char reason[128];

                (void)snprintf(reason, sizeof(reason), "cannot ask the installer for the install: %s",
                               strerror(-r));
                ota_fail(o, reason);
        }
}

/* ---- download ---- */

static void on_download_progress(Fetcher *d, uint64_t done, uint64_t total, void *userdata)
{
        Ota *o = userdata;

        status_set_job_progress(o->status, done, total);
        if (total > 0) {
                unsigned percent = (unsigned)(MIN(done, total) * 100 / total);

                if (percent >= o->last_progress + PROGRESS_STEP) {
                        o->last_progress = percent - percent % PROGRESS_STEP;
                        ota_progress(o, "DOWNLOADING", percent, NULL);
                }
        }
}

static void on_download_checkpoint(Fetcher *d, const FetcherCheckpoint *c, void *userdata)
{
        Ota *o = userdata;
        Job *j = ota_job(o);

        j->offset = c->offset;
        j->fetched = c->bytes_fetched;
        if (free_and_strdup(&j->etag, c->etag) < 0 || free_and_strdup(&j->last_modified, c->last_modified) < 0)
                return;
        (void)ota_save(o);
}

static void on_download_done(Fetcher *d, int result, const char *reason, void *userdata)
{
        Ota *o = userdata;
        Job *j = ota_job(o);
        _cleanup_free_ char *part = NULL, *image = NULL;
        _cleanup_free_ char *sha256 = NULL, *shown = NULL;

        if (result < 0) {
                ota_fail(o, reason ? reason : strerror(-result));
                return;
        }

        sha256 = fetcher_get_sha256(d) ? strdup(fetcher_get_sha256(d)) : NULL;
        o->download = fetcher_free(o->download);
        ota_set_phase(o, JOB_VERIFYING);

        /* Checked by the download (SIZE, MD5, SHA256): only now does the .part become the image. */
        part = job_path(o, j, "part");
        image = job_path(o, j, "img");
        if (!part || !image || rename(part, image) < 0) {
                ota_fail(o, "cannot rename the downloaded image");
                return;
        }
        shown = url_redact(j->url);
        log_info("Downloaded %s (SHA-256 %s).", shown ? shown : "the image", sha256 ? sha256 : "?");
        ota_install_when_allowed(o);
}

static int ensure_download_dir(const Ota *o)
{
        if (mkdir(o->config->ota_download_dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static void ota_download(Ota *o)
{
        Job *j = ota_job(o);
        _cleanup_free_ char *part = job_path(o, j, "part"), *shown = NULL;
        const Config *c = o->config;
        FetcherParams params = {
                .url = j->url,
                .part_path = part,
                .resume_offset = j->offset,
                .etag = j->etag,
                .last_modified = j->last_modified,
                .bytes_fetched = j->fetched,
                .expected_size = j->size,
                .expected_md5 = j->md5,
                .expected_sha256 = j->sha256,
                .max_image_size = c->ota_max_image_size,
                .rate_limit = c->ota_rate_limit,
                .stall_timeout_sec = c->ota_stall_timeout,
                .connect_timeout_sec = c->ota_connect_timeout,
                .retries = c->ota_retries,
                .max_redirects = c->ota_max_redirects,
                .ca_file = c->ota_ca_file,
                .user_agent = "krtiotd/" PACKAGE_VERSION,
        };
        static const FetcherCallbacks callbacks = {
                .progress = on_download_progress,
                .checkpoint = on_download_checkpoint,
                .done = on_download_done,
        };
        int r;

        r = ensure_download_dir(o);
        if (r < 0) {
                char reason[256];

                snprintf(reason, sizeof(reason), "cannot create the download directory %s: %s",
                         c->ota_download_dir, strerror(-r));
                ota_fail(o, reason);
                return;
        }
        if (!part) {
                ota_fail(o, "out of memory");
                return;
        }
        if (access(part, F_OK) < 0)
                j->offset = 0;

        ota_set_phase(o, JOB_DOWNLOADING);
        o->last_progress = 0;
        shown = url_redact(j->url); /* a password in the URL never reaches the log */
        log_info("Downloading %s%s.", shown ? shown : "the image", j->offset > 0 ? " (resuming)" : "");
        status_set_job_progress(o->status, j->offset, j->size);
        ota_progress(o, "DOWNLOADING", 0, NULL);

        r = fetcher_new(o->event, &params, &callbacks, o, &o->download);
        if (r < 0) {
                char reason[256];

                log_error_errno(r, "Cannot start %s: %m", fetcher_program());
                snprintf(reason, sizeof(reason), "cannot start the download: %s", strerror(-r));
                ota_fail(o, reason);
        }
}

/* ---- commands ---- */

static bool hex_valid(const char *s, size_t len)
{
        if (strlen(s) != len)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
                        return false;
        return true;
}

/* Returns NULL when the command is acceptable, else the REASON sent back with FAIL. */
static const char *ota_validate(const Ota *o, const PlatformMessage *m)
{
        if (!m->url || !m->url[0])
                return "URL missing";
        if (strncasecmp(m->url, "http://", 7) != 0 && strncasecmp(m->url, "https://", 8) != 0)
                return "URL must be http:// or https://";
        for (const char *p = m->url; *p; p++)
                if ((unsigned char)*p <= ' ' || *p == 0x7f)
                        return "URL contains spaces or control characters";
        if (!m->fw_version)
                return "FW_VERSION missing";
        if (!version_is_valid(m->fw_version))
                return "FW_VERSION must be 1-64 characters of 0-9A-Za-z._+~-";
        if (m->md5 && !hex_valid(m->md5, 32))
                return "MD5 must be 32 hex digits";
        if (m->sha256 && !hex_valid(m->sha256, 64))
                return "SHA256 must be 64 hex digits";
        if (m->has_size && m->size > o->config->ota_max_image_size)
                return "SIZE is larger than this device accepts (ota.max_image_size)";
        return NULL;
}

static int job_from_message(const PlatformMessage *m, Job **ret)
{
        Job *j = calloc(1, sizeof(*j));
        int r;

        if (!j)
                return -ENOMEM;
        r = random_id(j->key);
        if (r >= 0 && (!(j->id = strdup(m->id)) || !(j->url = strdup(m->url)) ||
                       !(j->target = strdup(m->fw_version)) || (m->md5 && !(j->md5 = strdup(m->md5))) ||
                       (m->sha256 && !(j->sha256 = strdup(m->sha256)))))
                r = -ENOMEM;
        if (r < 0) {
                job_free(j);
                return r;
        }
        j->size = m->has_size ? m->size : 0;
        j->phase = JOB_ACCEPTED;
        *ret = j;
        return 0;
}

static void on_accepted_version(Ota *o, const char *running)
{
        Job *j = ota_job(o);

        free(j->old_version);
        j->old_version = running ? strdup(running) : NULL;
        if (running && strcmp(running, j->target) == 0) {
                log_info("Command %s asks for %s, which is running already: reporting it.", j->id, j->target);
                j->phase = JOB_DONE;
                (void)ota_save(o);
                o->callbacks.report(o, o->userdata);
                return;
        }
        log_notice("Updating from %s to %s (command %s).", running ? running : VERSION_UNKNOWN, j->target, j->id);
        ota_download_when_due(o);
}

/* Ends the current job, if one is under way, because J replaces it. */
static void ota_drop_active(Ota *o, Job *old, const Job *j)
{
        if (!old || old->phase == JOB_DONE || old->phase == JOB_FAILED)
                return;
        log_notice("Command %s replaces the unfinished update to %s (command %s).", j->id, old->target, old->id);
        ota_wait_end(o);
        o->released = false;
        o->download = fetcher_free(o->download);
        job_unlink(o, old, "part");
        job_unlink(o, old, "img");
}

/*
 * A command seen before (QoS 1 redelivery, a retained message, the platform
 * re-sending) gets the answer it got then and changes nothing: FAIL with the
 * same REASON, or OK (then, for a job that failed, a version report too).
 * Returns whether ID was seen.
 */
static bool ota_answer_again(Ota *o, const char *id)
{
        const JournalEntry *e = journal_find_recent(o->journal, id);
        bool failed = journal_is_failed(o->journal, id);
        Job *j = ota_job(o);

        if (e && e->reason) {
                log_info("Command %s was refused before (%s); refusing it again.", id, e->reason);
                ota_publish_receipt(o, id, false, e->reason);
                return true;
        }
        if (!e && !failed && !(j && strcmp(j->id, id) == 0) &&
            !(o->queued && strcmp(o->queued->id, id) == 0))
                return false;

        log_info("Command %s was received before; acknowledging it again.", id);
        ota_publish_receipt(o, id, true, NULL);
        if (failed)
                o->callbacks.report(o, o->userdata);
        return true;
}

/*
 * Refuses command ID for REASON. Remembered like an accepted command, so that
 * the same ID gets the same answer again and never starts a job: at once in
 * memory, and in the journal within SAVE_COALESCE_USEC (ota_save_soon()). If
 * the write fails it stays remembered in memory.
 */
static void ota_refuse(Ota *o, const char *id, const char *reason)
{
        log_warning("Refused command %s: %s.", id, reason);
        if (journal_remember_recent(o->journal, id, NULL, reason) >= 0)
                ota_save_soon(o);
        ota_publish_receipt(o, id, false, reason);
}

void ota_command(Ota *o, const PlatformMessage *m)
{
        const char *reason;
        Job *j = NULL, *old;
        int r;

        /* Refusals that are not remembered: the same command may succeed later. */
        if (!o->journal) {
                ota_publish_receipt(o, m->id, false, "the device cannot take updates now (no job journal)");
                return;
        }
        if (strlen(m->id) > PROTOCOL_MAX_ID) {
                /* Never journaled: IDs that long would make the journal too large to load again. */
                reason = m->invalid ? m->invalid : "ID too long";
                log_warning("Refused a command with an ID of %zu bytes: %s.", strlen(m->id), reason);
                ota_publish_receipt(o, m->id, false, reason);
                return;
        }

        if (ota_answer_again(o, m->id))
                return;

        reason = m->invalid ? m->invalid : ota_validate(o, m);
        if (reason) {
                ota_refuse(o, m->id, reason);
                return;
        }

        r = job_from_message(m, &j);
        if (r < 0) {
                ota_publish_receipt(o, m->id, false, "out of memory");
                return;
        }

        /* One journal write before the receipt: the command's ID (so that a redelivery is recognised
         * after a crash) and, unless an install runs, the new job. Nothing is torn down before it is
         * on disk. */
        old = ota_job(o);
        if (!o->install)
                o->journal->job = j;
        r = journal_remember_recent(o->journal, m->id, m->fw_version, NULL);
        if (r >= 0) {
                r = ota_save(o);
                if (r < 0)
                        journal_drop_last_recent(o->journal);
        }
        if (r < 0) {
                char why[160];

                if (!o->install)
                        o->journal->job = old;
                job_free(j);
                snprintf(why, sizeof(why), "cannot write the job journal: %s", strerror(-r));
                ota_publish_receipt(o, m->id, false, why);
                status_set_problem(o->status, "Cannot accept updates: cannot write %s/%s (%s)",
                                   o->config->state_dir, JOURNAL_FILE, strerror(-r));
                return;
        }
        ota_publish_receipt(o, m->id, true, NULL);

        if (o->install) {
                /* An install is running: it is not interrupted. The newest command waits for it. */
                log_notice("Command %s waits for the install that is running.", m->id);
                job_free(o->queued);
                o->queued = j;
                return;
        }
        o->released = false; /* InstallNow() released the job it was called for, not this one */
        ota_drop_active(o, old, j);
        job_free(old);
        ota_with_running_version(o, on_accepted_version);
}

static void ota_run_queued(Ota *o)
{
        Job *old;

        if (!o->queued || o->install)
                return;
        old = ota_job(o);
        o->journal->job = TAKE_PTR(o->queued);
        o->released = false;
        ota_drop_active(o, old, o->journal->job);
        job_free(old);
        (void)ota_save(o);
        ota_with_running_version(o, on_accepted_version);
}

/* ---- start-up: continue what the journal holds ---- */

/* The installer does not know how the install ended (it never ran it, or the device rebooted since). */
static void ota_install_again(Ota *o)
{
        _cleanup_free_ char *image = job_path(o, ota_job(o), "img");

        if (image && access(image, F_OK) == 0)
                ota_install(o); /* installs are idempotent: run the hook again */
        else
                ota_fail(o, "the image was gone after a restart during the install");
}

static void on_outcome_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                              void *userdata)
{
        Ota *o = userdata;
        Job *j = ota_job(o);

        o->install = install_call_free(o->install);
        if (error == 0 && answer->type == INSTALL_ANSWER_DONE) {
                log_info("The installer says the install of %s (command %s) ended: %s.", j->target, j->id,
                         install_outcome_to_string(answer->outcome));
                ota_install_ended(o, 0, answer, NULL);
                return;
        }
        if (error < 0)
                log_warning("Cannot learn from the installer how the install of %s ended: %s.", j->target,
                            reason);
        else if (answer->type == INSTALL_ANSWER_REFUSED)
                log_warning("The installer refused to say how the install of %s ended: %s.", j->target,
                            answer->reason ? answer->reason : "no reason given");
        else
                log_info("The installer has no record of the install of %s.", j->target);
        ota_install_again(o);
}

/*
 * A restart found the job installing: the hook may still run in the
 * installer (a restart of the agent never stops it), or have ended while we
 * were away. The installer answers when it knows, waiting for a running
 * hook; only when it has no record is the install run again.
 */
static void ota_ask_outcome(Ota *o)
{
        Job *j = ota_job(o);
        InstallRequest req = { .op = INSTALL_OP_OUTCOME, .key = j->key };
        int r;

        r = ota_ask(o, &req, o->config->ota_hook_timeout, on_outcome_answer, &o->install);
        if (r < 0) {
                log_warning_errno(r, "Cannot ask the installer how the install of %s ended: %m", j->target);
                ota_install_again(o);
        }
}

static void on_commit_answer(InstallCall *call, int error, const InstallAnswer *answer, const char *reason,
                             void *userdata)
{
        Ota *o = userdata;
        char why[128 + INSTALL_REASON_MAX];

        o->install = install_call_free(o->install);
        if (error == 0 && answer->type == INSTALL_ANSWER_DONE &&
            answer->outcome == INSTALL_OUTCOME_INSTALLED) {
                ota_succeed(o);
                return;
        }
        if (error < 0)
                (void)snprintf(why, sizeof(why), "%s", reason);
        else if (answer->type == INSTALL_ANSWER_DONE)
                (void)snprintf(why, sizeof(why), "%s",
                               answer->reason ? answer->reason : "the hook's commit failed");
        else
                (void)snprintf(why, sizeof(why), "the installer refused the commit: %s",
                               answer->reason ? answer->reason : "no reason given");
        ota_fail(o, why);
}

static void on_rebooted_version(Ota *o, const char *running)
{
        Job *j = ota_job(o);
        int r;

        if (running && strcmp(running, j->target) == 0) {
                char id[INSTALL_ID_MAX + 1];
                InstallRequest req = {
                        .op = INSTALL_OP_COMMIT,
                        .key = j->key,
                        .id = job_wire_id(j, id),
                        .target = j->target,
                };

                log_info("Running %s after the reboot: committing it.", j->target);
                r = ota_ask(o, &req, COMMIT_TIMEOUT_SEC, on_commit_answer, &o->install);
                if (r < 0)
                        ota_fail(o, "cannot ask the installer for the hook's commit");
                return;
        }
        /* The new firmware did not come up, and the bootloader went back: a failure, remembered. */
        {
                char reason[192];

                snprintf(reason, sizeof(reason), "rolled back: running %s after the reboot, not %s",
                         running ? running : VERSION_UNKNOWN, j->target);
                ota_fail(o, reason);
        }
}

void ota_start(Ota *o)
{
        Job *j;
        int r;

        r = journal_load(o->config->state_dir, &o->journal);
        if (r < 0) {
                if (r == -EBADMSG)
                        log_warning("%s/%s is corrupt; starting with no OTA job.", o->config->state_dir,
                                    JOURNAL_FILE);
                else
                        log_error_errno(r, "Cannot read %s/%s: %s. Starting with no OTA job.",
                                        o->config->state_dir, JOURNAL_FILE, read_error_message(r));
                o->journal = calloc(1, sizeof(Journal));
                if (!o->journal) {
                        log_error("Out of memory.");
                        return;
                }
        }

        j = ota_job(o);
        ota_show(o); /* the job the journal holds, or the last one's result */
        if (!j || !ota_active(o))
                return;

        log_info("Continuing the update to %s (command %s), which was %s.", j->target, j->id,
                 job_phase_to_string(j->phase));
        switch (j->phase) {
        case JOB_ACCEPTED:
                ota_with_running_version(o, on_accepted_version);
                break;
        case JOB_DOWNLOADING:
                ota_download(o);
                break;
        case JOB_VERIFYING: {
                _cleanup_free_ char *image = job_path(o, j, "img");

                /* The image was checked; no install was asked for yet (it may wait for its window). */
                if (image && access(image, F_OK) == 0)
                        ota_install_when_allowed(o);
                else
                        ota_download(o);
                break;
        }
        case JOB_INSTALLING:
                ota_ask_outcome(o);
                break;
        case JOB_REBOOT_PENDING:
                if (j->reboot_wait_boot) {
                        _cleanup_free_ char *boot = NULL;

                        if (read_boot_id(&boot) >= 0 && strcmp(boot, j->reboot_wait_boot) == 0) {
                                /* Not rebooted since: still waiting for the reboot window. */
                                ota_reboot_when_allowed(o);
                                break;
                        }
                        j->reboot_wait_boot = mfree(j->reboot_wait_boot); /* rebooted meanwhile */
                }
                /* No version report until this is decided: the platform counts a report of the target as
                 * success, which it is only once the hook has committed it. */
                o->resolving = true;
                ota_show(o);
                ota_with_running_version(o, on_rebooted_version);
                break;
        default:
                break;
        }
}

/* ---- lifecycle ---- */

int ota_new(sd_event *event, Config *config, Status *status, const OtaCallbacks *callbacks, void *userdata,
            Ota **ret)
{
        Ota *o = calloc(1, sizeof(*o));

        if (!o)
                return -ENOMEM;
        o->event = sd_event_ref(event);
        o->config = config_ref(config);
        o->status = status;
        if (clock_watch_new(event, on_clock_changed, o, &o->clock) < 0)
                log_warning("Cannot watch the system clock: update windows are judged without knowing whether "
                            "it is synchronised.");
        o->callbacks = *callbacks;
        o->userdata = userdata;
        *ret = o;
        return 0;
}

void ota_set_config(Ota *o, Config *config)
{
        config_ref(config);
        config_unref(o->config);
        o->config = config;
}

Ota *ota_free(Ota *o)
{
        if (!o)
                return NULL;
        if (o->save_timer && o->journal)
                (void)ota_save(o); /* what waited is written before we go */
        sd_event_source_disable_unref(o->save_timer);
        sd_event_source_disable_unref(o->wait_timer);
        clock_watch_free(o->clock);
        fetcher_free(o->download);
        install_call_free(o->install);
        install_call_free(o->version);
        install_call_free(o->reboot);
        job_free(o->queued);
        for (size_t i = 0; i < o->n_unsent; i++)
                free(o->unsent[i]);
        journal_free(o->journal);
        sd_event_unref(o->event);
        config_unref(o->config);
        free(o);
        return NULL;
}
