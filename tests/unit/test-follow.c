/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for src/ctl/follow.c, which job `krtiotctl watch` follows and how it
 * ended, fed with property records and JobFinished signals in the orders
 * krtiotd may send them: a job running at the start; none running (the old
 * job never taken for the next, even when the new phase comes before the
 * new ID); --job for an ended, a running and a later job; the signal before
 * the first GetAll; the signal's result winning over LastJobResult; a job
 * that ended while krtiotd was away.
 */
#include <stdlib.h>

#include "follow.h"
#include "tap.h"
#include "util/macro.h"

static Properties job(const char *id, const char *target, const char *phase, const char *result)
{
        return (Properties){
                .job_id = (char *)id,
                .job_target_version = (char *)target,
                .job_phase = (char *)phase,
                .last_job_result = (char *)result,
        };
}

static Follow *new_follow(const char *want_id)
{
        Follow *f = NULL;

        if (follow_new(want_id, &f) < 0)
                abort();
        return f;
}

static void test_running_at_start(void)
{
        Follow *f = new_follow(NULL);
        Properties p = job("42", "2.0.1", "downloading", "failed: an older job");

        is_int(follow_update(f, &p), FOLLOW_RUNNING, "running at start: followed");
        is_str(f->job_id, "42", "running at start: its ID");
        p.job_phase = (char *)"installing";
        is_int(follow_update(f, &p), FOLLOW_RUNNING, "installing: still running");
        p.job_phase = (char *)"done";
        p.last_job_result = (char *)"succeeded";
        is_int(follow_update(f, &p), FOLLOW_ENDED, "done: ended");
        ok(f->success && !f->from_signal, "done: a success, from the properties");
        is_str(f->target_version, "2.0.1", "done: the target");
        is_int(follow_job_finished(f, "42", "", true, ""), FOLLOW_ENDED, "its JobFinished: the final word");
        ok(f->success && f->from_signal, "its JobFinished: success, from the signal");
        is_str(f->target_version, "2.0.1", "a signal without a target keeps the known one");
        p.job_id = (char *)"43";
        p.job_phase = (char *)"downloading";
        is_int(follow_update(f, &p), FOLLOW_ENDED, "ended stays ended");
        follow_free(f);
}

static void test_waiting_for_next(void)
{
        Follow *f = new_follow(NULL);
        Properties p = job("41", "2.0.0", "done", "succeeded");

        is_int(follow_update(f, &p), FOLLOW_WAITING, "last job done: waiting");
        p.job_phase = (char *)"accepted";
        is_int(follow_update(f, &p), FOLLOW_WAITING, "a new phase before the new ID: the old job is not followed");
        is_int(follow_job_finished(f, "41", "2.0.0", true, ""), FOLLOW_WAITING,
               "a late JobFinished of the old job is not the next one's");
        p.job_id = (char *)"43";
        p.job_target_version = (char *)"2.0.2";
        is_int(follow_update(f, &p), FOLLOW_RUNNING, "the new ID: followed");
        is_str(f->job_id, "43", "the new job");
        is_int(follow_job_finished(f, "44", "", false, "other"), FOLLOW_RUNNING, "another job's JobFinished: ignored");
        p.job_phase = (char *)"failed";
        p.last_job_result = (char *)"failed:   download: HTTP 404";
        is_int(follow_update(f, &p), FOLLOW_ENDED, "failed: ended");
        ok(!f->success, "failed: not a success");
        is_str(f->reason, "download: HTTP 404", "failed: the reason from LastJobResult");
        is_int(follow_job_finished(f, "43", "2.0.2", false, "download: HTTP 404 Not Found"), FOLLOW_ENDED,
               "its JobFinished after the phase");
        is_str(f->reason, "download: HTTP 404 Not Found", "the signal's reason wins");
        follow_free(f);

        f = new_follow(NULL);
        p = job("", "", "", "");
        is_int(follow_update(f, &p), FOLLOW_WAITING, "no job ever: waiting");
        is_int(follow_job_finished(f, "1", "1.1", false, "refused: bad URL"), FOLLOW_ENDED,
               "the next job ends before its phase was seen: ended");
        ok(!f->success, "and failed");
        is_str(f->reason, "refused: bad URL", "with the signal's reason");
        is_str(f->target_version, "1.1", "and target");
        follow_free(f);
}

static void test_signal_before_snapshot(void)
{
        Follow *f = new_follow(NULL);
        Properties p = job("42", "2.0.1", "done", "succeeded");

        is_int(follow_job_finished(f, "42", "2.0.1", true, ""), FOLLOW_ENDED,
               "JobFinished before the first GetAll: the job that ran at the start");
        is_int(follow_update(f, &p), FOLLOW_ENDED, "and the record after it changes nothing");
        ok(f->success, "a success");
        follow_free(f);
}

static void test_want_id(void)
{
        Follow *f = new_follow("41");
        Properties p = job("41", "2.0.0", "failed", "failed: hook exited with 3");

        is_int(follow_update(f, &p), FOLLOW_ENDED, "--job of an ended job: at once");
        ok(!f->success, "--job: failed");
        is_str(f->reason, "hook exited with 3", "--job: the reason");
        follow_free(f);

        f = new_follow("41");
        p = job("41", "2.0.0", "done", "succeeded");
        is_int(follow_update(f, &p), FOLLOW_ENDED, "--job of a job done: at once");
        ok(f->success, "--job: succeeded");
        follow_free(f);

        f = new_follow("45");
        p = job("44", "3.0", "downloading", "");
        is_int(follow_update(f, &p), FOLLOW_WAITING, "--job: another job runs: waiting");
        is_int(follow_job_finished(f, "44", "3.0", true, ""), FOLLOW_WAITING, "--job: another job's end: ignored");
        p = job("45", "3.1", "accepted", "succeeded");
        is_int(follow_update(f, &p), FOLLOW_RUNNING, "--job: it starts: running");
        is_int(follow_job_finished(f, "45", "3.1", false, "no space"), FOLLOW_ENDED, "--job: its JobFinished");
        is_str(f->reason, "no space", "--job: its reason");
        follow_free(f);

        f = new_follow("");
        ok(!f->want_id, "an empty ID is no ID");
        follow_free(f);
}

static void test_ended_unseen(void)
{
        Follow *f = new_follow(NULL);
        Properties p = job("42", "2.0.1", "installing", "");

        is_int(follow_update(f, &p), FOLLOW_RUNNING, "installing");
        /* krtiotd away; when back, another job is current. */
        p = job("50", "2.1", "downloading", "succeeded");
        is_int(follow_update(f, &p), FOLLOW_ENDED, "another job now: ours ended unseen");
        ok(!f->success, "unseen: not a success");
        is_str(f->job_id, "42", "unseen: our job, not the new one");
        ok(f->reason && strstr(f->reason, "not known") && strstr(f->reason, "50"), "unseen: said so, naming the new job");
        follow_free(f);

        f = new_follow(NULL);
        p = job("42", "2.0.1", "failed", "succeeded");
        p.job_phase = (char *)"downloading";
        follow_update(f, &p);
        p.job_phase = (char *)"failed";
        is_int(follow_update(f, &p), FOLLOW_ENDED, "failed with a stale LastJobResult");
        is_str(f->reason, "", "no reason invented");
        follow_free(f);
}

int main(void)
{
        test_running_at_start();
        test_waiting_for_next();
        test_signal_before_snapshot();
        test_want_id();
        test_ended_unseen();
        return tap_done();
}
