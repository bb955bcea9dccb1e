/* SPDX-License-Identifier: Apache-2.0 */
/* The job `krtiotctl watch` follows (follow.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "follow.h"
#include "format.h"
#include "util/macro.h"

static bool streq_ptr(const char *a, const char *b)
{
        return a && b && strcmp(a, b) == 0;
}

static const char *empty_to_null(const char *s)
{
        return s && *s ? s : NULL;
}

int follow_new(const char *want_id, Follow **ret)
{
        Follow *f;

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        if (free_and_strdup(&f->want_id, empty_to_null(want_id)) < 0) {
                free(f);
                return -ENOMEM;
        }
        f->state = FOLLOW_WAITING;
        *ret = f;
        return 0;
}

Follow *follow_free(Follow *f)
{
        if (!f)
                return NULL;
        free(f->want_id);
        free(f->old_id);
        free(f->job_id);
        free(f->target_version);
        free(f->reason);
        return mfree(f);
}

static int follow_start(Follow *f, const char *id, const char *target_version)
{
        if (free_and_strdup(&f->job_id, id) < 0 ||
            free_and_strdup(&f->target_version, target_version ? target_version : "") < 0)
                return -ENOMEM;
        f->state = FOLLOW_RUNNING;
        return FOLLOW_RUNNING;
}

static int follow_end(Follow *f, const char *id, const char *target_version, bool success, const char *reason,
                      bool from_signal)
{
        if (free_and_strdup(&f->job_id, id) < 0 || free_and_strdup(&f->reason, reason ? reason : "") < 0)
                return -ENOMEM;
        /* A target the properties knew stays when the signal has none. */
        if ((empty_to_null(target_version) || !f->target_version) &&
            free_and_strdup(&f->target_version, target_version ? target_version : "") < 0)
                return -ENOMEM;
        f->success = success;
        f->from_signal = from_signal;
        f->state = FOLLOW_ENDED;
        return FOLLOW_ENDED;
}

/* The job of P has ended (its phase is final): the result from the properties. */
static int follow_end_from_properties(Follow *f, const Properties *p)
{
        const char *result = p->last_job_result ? p->last_job_result : "";
        bool success = strcmp(p->job_phase, "done") == 0;
        const char *reason = "";

        if (!success && strncmp(result, "failed:", 7) == 0)
                reason = result + 7 + strspn(result + 7, " ");
        return follow_end(f, p->job_id, p->job_target_version, success, reason, false);
}

int follow_update(Follow *f, const Properties *p)
{
        const char *id = empty_to_null(p->job_id), *phase = empty_to_null(p->job_phase);
        bool final = format_phase_is_final(phase), running = id && phase && !final;

        switch (f->state) {
        case FOLLOW_ENDED:
                return FOLLOW_ENDED;
        case FOLLOW_RUNNING:
                if (!streq_ptr(id, f->job_id)) {
                        _cleanup_free_ char *reason = NULL;

                        if (asprintf(&reason, "it ended while krtiotd was away, how is not known (the job now is %s)",
                                     id ? id : "none") < 0)
                                return -ENOMEM;
                        return follow_end(f, f->job_id, f->target_version, false, reason, false);
                }
                if (final)
                        return follow_end_from_properties(f, p);
                return follow_start(f, id, p->job_target_version);
        case FOLLOW_WAITING:
                break;
        }

        if (f->want_id) {
                if (!streq_ptr(id, f->want_id))
                        return FOLLOW_WAITING;
                if (final)
                        return follow_end_from_properties(f, p);
                return running ? follow_start(f, id, p->job_target_version) : FOLLOW_WAITING;
        }

        if (final && id && free_and_strdup(&f->old_id, id) < 0)
                return -ENOMEM;
        if (running && !streq_ptr(id, f->old_id))
                return follow_start(f, id, p->job_target_version);
        return FOLLOW_WAITING;
}

int follow_job_finished(Follow *f, const char *id, const char *target_version, bool success, const char *reason)
{
        bool ours;

        if (f->state == FOLLOW_ENDED && f->from_signal)
                return FOLLOW_ENDED;
        if (f->job_id)
                ours = streq_ptr(id, f->job_id);
        else if (f->want_id)
                ours = streq_ptr(id, f->want_id);
        else
                ours = !streq_ptr(id, f->old_id);
        if (!ours)
                return f->state;
        return follow_end(f, id, target_version, success, reason, true);
}
