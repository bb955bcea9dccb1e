/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which job `krtiotctl watch` follows, and how it ended: the decisions
 * alone, fed with the properties and the JobFinished signals as they
 * arrive, so that the tests can play any order of events.
 *
 * Without an ID asked for, the job followed is the one running when the
 * watch starts, else the next one to start. A job whose final phase was
 * already seen (the last one, done long ago) is never taken for the next:
 * krtiotd may tell a new job's phase before its ID. With an ID, only that
 * job: at once when the properties show it ended, otherwise once it runs.
 *
 * A followed job ends when its phase becomes done or failed (the result then
 * from LastJobResult), or with its JobFinished signal (the result from the
 * signal, which wins). Without an ID and before any job is followed, the
 * first JobFinished of a job not seen ended ends the watch too: it ran
 * when the watch started, or it is the next one and ended before its
 * phase was seen. When the current job becomes another one while the
 * followed one never showed an end (krtiotd was away meanwhile), the
 * followed one ended unseen: a failure, its result unknown.
 */
#pragma once

#include <stdbool.h>

#include "properties.h"

typedef enum FollowState {
        FOLLOW_WAITING, /* no job followed yet */
        FOLLOW_RUNNING, /* following job_id */
        FOLLOW_ENDED,   /* job_id ended: success, reason */
} FollowState;

typedef struct Follow {
        char *want_id;        /* --job, or NULL */
        char *old_id;         /* a job seen ended while none was followed: not the next one */
        FollowState state;
        char *job_id;         /* RUNNING, ENDED: the job */
        char *target_version; /* RUNNING, ENDED: its target, as last known ("" when not) */
        bool success;         /* ENDED */
        char *reason;         /* ENDED and failed: why ("" when not said) */
        bool from_signal;     /* ENDED: by JobFinished (final), not by the phase */
} Follow;

/* A Follow for the job WANT_ID, or for the running or next one (WANT_ID NULL). Returns 0 or -ENOMEM. */
int follow_new(const char *want_id, Follow **ret);
Follow *follow_free(Follow *f);

/*
 * Takes the properties after a change (or a new GetAll). Returns the state
 * (FOLLOW_*), or -ENOMEM. Once ENDED, nothing changes it but
 * follow_job_finished() for the same job.
 */
int follow_update(Follow *f, const Properties *p);

/*
 * Takes a JobFinished signal. Returns FOLLOW_ENDED when it ends (or tells
 * the final result of) the job followed, or of the job looked for, else the
 * unchanged state; or -ENOMEM.
 */
int follow_job_finished(Follow *f, const char *id, const char *target_version, bool success, const char *reason);
