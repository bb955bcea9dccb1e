/* SPDX-License-Identifier: Apache-2.0 */
/* status.c: the state word, the STATUS= text, what is published when, and job ends. */
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "tap.h"

typedef struct Seen {
        unsigned publications;
        uint32_t changed; /* of the last publication */
        char finished[8][256];
        unsigned n_finished;
        unsigned changed_before_finished; /* publications seen when the last job_finished came */
} Seen;

static void on_changed(Status *s, uint32_t changed, void *userdata)
{
        Seen *seen = userdata;

        seen->publications++;
        seen->changed = changed;
}

static void on_finished(Status *s, const char *id, const char *target, bool success, const char *reason,
                        void *userdata)
{
        Seen *seen = userdata;

        if (seen->n_finished < 8)
                snprintf(seen->finished[seen->n_finished++], 256, "%s %s %s %s", id, target,
                         success ? "ok" : "fail", reason);
        seen->changed_before_finished = seen->publications;
}

static const StatusListener listener = { .changed = on_changed, .job_finished = on_finished };

/* Runs the loop until nothing is pending (no timer is waited for). */
static void turn(sd_event *e)
{
        while (sd_event_run(e, 0) > 0)
                ;
}

static Job job(const char *id, const char *target, JobPhase phase)
{
        return (Job){ .id = (char *)id, .target = (char *)target, .phase = phase, .size = 0 };
}

static void test_link_and_text(sd_event *e)
{
        _cleanup_status_ Status *s = NULL;
        Seen seen = {};

        ok(status_new(e, &s) == 0, "status_new");
        status_set_listener(s, &listener, &seen);
        is_str(status_state(s), "starting", "a new record says starting");

        status_set_identity(s, "tcp://127.0.0.1:1883", "P1", "D1");
        status_set_link(s, STATUS_LINK_REGISTERING, "Registering: connecting to %s with the product secret",
                        "tcp://127.0.0.1:1883");
        is_int(seen.publications, 0, "nothing is published before the loop turns");
        turn(e);
        is_int(seen.publications, 1, "changes made in one turn are published once");
        ok(seen.changed & STATUS_STATE, "the state changed");
        ok(seen.changed & STATUS_BROKER && seen.changed & STATUS_DEVICE_ID, "the identity changed");
        ok(seen.changed & STATUS_TEXT, "the text changed");
        is_str(status_state(s), "registering", "registering");
        is_str(status_text(s), "Registering: connecting to tcp://127.0.0.1:1883 with the product secret",
               "the session's words while no job runs");

        status_set_identity(s, "tcp://127.0.0.1:1883", "P1", "D1");
        turn(e);
        is_int(seen.publications, 1, "setting the same values publishes nothing");

        status_set_link(s, STATUS_LINK_CONNECTED, NULL);
        status_set_registered(s, true);
        status_set_report(s, "1.0", "2.0", 1234);
        turn(e);
        is_str(status_state(s), "connected", "connected");
        ok(status_connected(s) && status_registered(s), "connected and registered");
        is_str(status_text(s), "Connected to tcp://127.0.0.1:1883 as D1, firmware 2.0",
               "connected: the words come from the fields");
        is_int(status_last_report(s), 1234, "last report");

        status_set_link(s, STATUS_LINK_OFFLINE, "Offline: %s", "connection refused");
        status_set_error(s, "connection refused \x1b[2J");
        turn(e);
        ok(!status_connected(s), "offline is not connected");
        is_str(status_last_error(s), "connection refused \\x1b[2J", "the last error, escaped");

        status_set_problem(s, "Cannot accept updates: %s", "disk full");
        turn(e);
        is_str(status_text(s), "Cannot accept updates: disk full; Offline: connection refused",
               "a problem comes first in STATUS=");
        is_str(status_last_error(s), "Cannot accept updates: disk full", "a problem is the last error too");
        status_set_problem(s, NULL);
        turn(e);
        is_str(status_text(s), "Offline: connection refused", "a cleared problem leaves STATUS=");
}

static void test_job(sd_event *e)
{
        _cleanup_status_ Status *s = NULL;
        Seen seen = {};
        Job j;

        ok(status_new(e, &s) == 0, "status_new");
        status_set_listener(s, &listener, &seen);
        status_set_identity(s, "tcp://b", "P1", "D1");
        status_set_link(s, STATUS_LINK_CONNECTED, NULL);
        turn(e);

        /* A job found done in the journal at start: a result, no signal. */
        j = job("old", "1.9", JOB_DONE);
        status_set_job(s, &j, false);
        turn(e);
        is_str(status_last_job_result(s), "succeeded", "a job found done: its result");
        is_int(seen.n_finished, 0, "a job found ended sends no JobFinished");
        is_str(status_state(s), "connected", "an ended job leaves the session's state");

        j = job("A", "2.0", JOB_ACCEPTED);
        j.size = 1000;
        status_set_job(s, &j, false);
        j.phase = JOB_DOWNLOADING;
        status_set_job(s, &j, false);
        turn(e);
        is_str(status_state(s), "downloading", "downloading");
        is_str(status_job_id(s), "A", "job ID");
        is_int(status_job_bytes_total(s), 1000, "the size given is the total");
        is_str(status_text(s), "Updating to 2.0: downloading 0% (0.0 of 0.0 MiB)", "downloading text");

        /* Progress alone: published now (the period since the last progress has passed? no: the job's start
         * published progress this turn), so it waits for the timer. */
        unsigned before = seen.publications;
        status_set_job_progress(s, 450, 1000);
        turn(e);
        is_int(seen.publications, before, "progress within a second of the last is held");
        is_int(status_job_progress(s), 45, "but the record has it");
        j.phase = JOB_VERIFYING;
        status_set_job(s, &j, false);
        turn(e);
        is_int(seen.publications, before + 1, "a change of phase publishes at once");
        ok(seen.changed & STATUS_JOB_BYTES_DONE, "with the held progress");
        is_int(status_job_progress(s), 100, "verifying is 100%");

        j.phase = JOB_REBOOT_PENDING;
        status_set_job(s, &j, false);
        turn(e);
        is_str(status_state(s), "reboot-pending", "reboot-pending");
        status_set_job(s, &j, true);
        turn(e);
        is_str(status_state(s), "committing", "reboot-pending while resolving is committing");

        j.phase = JOB_FAILED;
        j.reason = (char *)"rolled back";
        status_set_job(s, &j, false);
        turn(e);
        is_int(seen.n_finished, 1, "a job seen ending sends JobFinished");
        is_str(seen.finished[0], "A 2.0 fail rolled back", "with its ID, target, result and reason");
        is_int(seen.changed_before_finished, seen.publications, "after the properties that show it");
        is_str(status_last_job_result(s), "failed: rolled back", "LastJobResult");
        is_str(status_text(s), "Connected to tcp://b as D1, firmware unknown; the update to 2.0 failed: rolled back",
               "a failed job is named in STATUS=");

        /* A job under way replaced by another: it ends, as failed. */
        j = job("B", "3.0", JOB_DOWNLOADING);
        status_set_job(s, &j, false);
        turn(e);
        j = job("C", "3.1", JOB_ACCEPTED);
        status_set_job(s, &j, false);
        turn(e);
        is_int(seen.n_finished, 2, "a replaced job sends JobFinished");
        is_str(seen.finished[1], "B 3.0 fail replaced by command C", "as failed, replaced");
        is_str(status_job_id(s), "C", "the new job is shown");

        /* An ID with control characters and bytes that are not UTF-8. */
        j = job("x\x1b\xff", "3.2", JOB_ACCEPTED);
        status_set_job(s, &j, false);
        turn(e);
        is_str(status_job_id(s), "x\\x1b\\xff", "the job ID is escaped");
}

int main(void)
{
        sd_event *e = NULL;

        if (sd_event_new(&e) < 0)
                return 1;
        test_link_and_text(e);
        test_job(e);
        sd_event_unref(e);
        return tap_done();
}
