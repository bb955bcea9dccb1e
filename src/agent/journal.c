/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job journal, in JSON (json-c). Parsing is strict about types and
 * sizes, because a journal that is wrong in some detail must be refused
 * whole rather than resume a job half-understood: the caller then starts
 * with no job and says so.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "journal.h"
#include "util/fileio.h"
#include "util/macro.h"

#define JOURNAL_MAX_STRING 4096
#define JOURNAL_MAX_NUMBER (INT64_C(1) << 53)

static const char *const phase_names[_JOB_PHASE_MAX] = {
        [JOB_ACCEPTED] = "accepted",
        [JOB_DOWNLOADING] = "downloading",
        [JOB_VERIFYING] = "verifying",
        [JOB_INSTALLING] = "installing",
        [JOB_REBOOT_PENDING] = "reboot-pending",
        [JOB_DONE] = "done",
        [JOB_FAILED] = "failed",
};

const char *job_phase_to_string(JobPhase p)
{
        return p >= 0 && p < _JOB_PHASE_MAX ? phase_names[p] : NULL;
}

JobPhase job_phase_from_string(const char *s)
{
        for (JobPhase p = 0; p < _JOB_PHASE_MAX; p++)
                if (s && strcmp(s, phase_names[p]) == 0)
                        return p;
        return _JOB_PHASE_INVALID;
}

Job *job_free(Job *j)
{
        if (!j)
                return NULL;
        free(j->id);
        free(j->url);
        free(j->target);
        free(j->old_version);
        free(j->md5);
        free(j->sha256);
        free(j->etag);
        free(j->last_modified);
        free(j->reboot_wait_boot);
        free(j->reason);
        free(j);
        return NULL;
}

static void entries_clear(JournalEntry *e, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(e[i].id);
                free(e[i].target);
                free(e[i].reason);
        }
}

Journal *journal_free(Journal *j)
{
        if (!j)
                return NULL;
        job_free(j->job);
        entries_clear(j->failed, j->n_failed);
        entries_clear(j->recent, j->n_recent);
        free(j);
        return NULL;
}

static void journal_freep(Journal **j)
{
        journal_free(*j);
}

/* ---- parsing ---- */

/* A string member: absent or null → *ret NULL (allowed unless REQUIRED). */
static int get_string(struct json_object *o, const char *key, bool required, char **ret)
{
        struct json_object *v;
        const char *s;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
                *ret = NULL;
                return required ? -EBADMSG : 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return -EBADMSG;
        s = json_object_get_string(v);
        if (json_object_get_string_len(v) > JOURNAL_MAX_STRING || strlen(s) != (size_t)json_object_get_string_len(v))
                return -EBADMSG;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int get_u64(struct json_object *o, const char *key, uint64_t *ret)
{
        struct json_object *v;
        int64_t i;

        if (!json_object_object_get_ex(o, key, &v)) {
                *ret = 0;
                return 0;
        }
        if (!json_object_is_type(v, json_type_int))
                return -EBADMSG;
        /* json-c clamps numbers beyond INT64_MAX without an error: anything near that is refused, as
         * no size or offset we write comes close (images are capped at 2^50 bytes). */
        errno = 0;
        i = json_object_get_int64(v);
        if (i < 0 || i > JOURNAL_MAX_NUMBER || errno != 0)
                return -EBADMSG;
        *ret = (uint64_t)i;
        return 0;
}

static bool key_valid(const char *k)
{
        if (strlen(k) != JOURNAL_KEY_LEN)
                return false;
        for (const char *p = k; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z')))
                        return false;
        return true;
}

/* The job's string members, in the order they are written. */
static const struct {
        const char *name;
        size_t offset;
        bool required;
} job_strings[] = {
        { "id", offsetof(Job, id), true },
        { "url", offsetof(Job, url), true },
        { "target", offsetof(Job, target), true },
        { "old_version", offsetof(Job, old_version), false },
        { "md5", offsetof(Job, md5), false },
        { "sha256", offsetof(Job, sha256), false },
        { "etag", offsetof(Job, etag), false },
        { "last_modified", offsetof(Job, last_modified), false },
        { "reason", offsetof(Job, reason), false },
        { "reboot_wait_boot", offsetof(Job, reboot_wait_boot), false },
};

#define JOB_STRING(j, i) ((char **)((uint8_t *)(j) + job_strings[i].offset))

static int parse_job(struct json_object *o, Job **ret)
{
        _cleanup_free_ char *key = NULL, *phase = NULL;
        Job *j;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return -EBADMSG;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;

        r = get_string(o, "key", true, &key);
        if (r >= 0 && !key_valid(key))
                r = -EBADMSG;
        if (r >= 0)
                memcpy(j->key, key, JOURNAL_KEY_LEN + 1);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(job_strings); i++)
                r = get_string(o, job_strings[i].name, job_strings[i].required, JOB_STRING(j, i));
        if (r >= 0)
                r = get_u64(o, "size", &j->size);
        if (r >= 0)
                r = get_u64(o, "offset", &j->offset);
        if (r >= 0)
                r = get_u64(o, "fetched", &j->fetched);
        if (r >= 0)
                r = get_string(o, "phase", true, &phase);
        if (r >= 0) {
                j->phase = job_phase_from_string(phase);
                if (j->phase < 0)
                        r = -EBADMSG;
        }
        if (r < 0) {
                job_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

static int parse_entries(struct json_object *o, const char *key, JournalEntry *e, size_t max, size_t *n)
{
        struct json_object *a;
        size_t len;
        int r;

        if (!json_object_object_get_ex(o, key, &a))
                return 0;
        if (!json_object_is_type(a, json_type_array))
                return -EBADMSG;
        len = json_object_array_length(a);
        if (len > max)
                return -EBADMSG;
        for (size_t i = 0; i < len; i++) {
                struct json_object *item = json_object_array_get_idx(a, i);

                if (!json_object_is_type(item, json_type_object))
                        return -EBADMSG;
                r = get_string(item, "id", true, &e[*n].id);
                if (r >= 0)
                        r = get_string(item, "target", false, &e[*n].target);
                if (r >= 0) /* absent in journals written before answers were kept: answered OK */
                        r = get_string(item, "reason", false, &e[*n].reason);
                (*n)++; /* counted even when half-filled, so that journal_free() frees it */
                if (r < 0)
                        return r;
        }
        return 0;
}

int journal_parse(const char *text, size_t len, Journal **ret)
{
        _cleanup_(journal_freep) Journal *j = NULL;
        struct json_tokener *tok;
        struct json_object *root, *job;
        int r = 0;

        if (len > JOURNAL_MAX_SIZE)
                return -EBADMSG;
        tok = json_tokener_new_ex(8);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        root = json_tokener_parse_ex(tok, text, (int)len);
        if (!root || json_tokener_get_error(tok) != json_tokener_success ||
            json_tokener_get_parse_end(tok) != len || !json_object_is_type(root, json_type_object))
                r = -EBADMSG;
        json_tokener_free(tok);

        if (r >= 0) {
                j = calloc(1, sizeof(*j));
                if (!j)
                        r = -ENOMEM;
        }
        if (r >= 0 && json_object_object_get_ex(root, "job", &job) && !json_object_is_type(job, json_type_null))
                r = parse_job(job, &j->job);
        if (r >= 0)
                r = parse_entries(root, "failed", j->failed, JOURNAL_MAX_FAILED, &j->n_failed);
        if (r >= 0)
                r = parse_entries(root, "recent", j->recent, JOURNAL_MAX_RECENT, &j->n_recent);
        json_object_put(root);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(j);
        return 0;
}

int journal_load(const char *state_dir, Journal **ret)
{
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r;

        /* Not through a symbolic link (-ELOOP), nor from a FIFO (-EBADFD): see read_state_file(). */
        r = read_state_file(state_dir, JOURNAL_FILE, JOURNAL_MAX_SIZE, &text, &len);
        if (r == -ENOENT) {
                *ret = calloc(1, sizeof(Journal));
                return *ret ? 0 : -ENOMEM;
        }
        if (r == -EFBIG)
                return -EBADMSG;
        if (r < 0)
                return r;
        return journal_parse(text, len, ret);
}

/* ---- writing ---- */

static int add_string(struct json_object *o, const char *key, const char *value)
{
        struct json_object *v;

        if (!value)
                return 0;
        v = json_object_new_string(value);
        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static int add_u64(struct json_object *o, const char *key, uint64_t value)
{
        struct json_object *v = json_object_new_int64((int64_t)value);

        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static struct json_object *build_job(const Job *job)
{
        struct json_object *o = json_object_new_object();
        int r;

        if (!o)
                return NULL;
        r = add_string(o, "key", job->key);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(job_strings); i++)
                r = add_string(o, job_strings[i].name, *JOB_STRING(job, i));
        if (r >= 0)
                r = add_u64(o, "size", job->size);
        if (r >= 0)
                r = add_u64(o, "offset", job->offset);
        if (r >= 0)
                r = add_u64(o, "fetched", job->fetched);
        if (r >= 0)
                r = add_string(o, "phase", job_phase_to_string(job->phase));
        if (r < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static struct json_object *build_entries(const JournalEntry *e, size_t n)
{
        struct json_object *a = json_object_new_array();

        for (size_t i = 0; a && i < n; i++) {
                struct json_object *item = json_object_new_object();

                if (!item || add_string(item, "id", e[i].id) < 0 ||
                    add_string(item, "target", e[i].target) < 0 ||
                    add_string(item, "reason", e[i].reason) < 0 || json_object_array_add(a, item) < 0) {
                        json_object_put(item);
                        json_object_put(a);
                        return NULL;
                }
        }
        return a;
}

int journal_save(const char *state_dir, const Journal *j)
{
        struct json_object *root, *v;
        const char *text;
        int r = -ENOMEM;

        root = json_object_new_object();
        if (!root)
                return -ENOMEM;
        v = j->job ? build_job(j->job) : NULL;
        if (j->job && !v)
                goto finish;
        if (v && json_object_object_add(root, "job", v) < 0)
                goto finish;
        v = build_entries(j->failed, j->n_failed);
        if (!v || json_object_object_add(root, "failed", v) < 0)
                goto finish;
        v = build_entries(j->recent, j->n_recent);
        if (!v || json_object_object_add(root, "recent", v) < 0)
                goto finish;

        text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        r = text ? write_file_atomic(state_dir, JOURNAL_FILE, text, strlen(text), 0600) : -ENOMEM;
finish:
        json_object_put(root);
        return r;
}

/* ---- the bounded lists ---- */

static int remember(JournalEntry *e, size_t max, size_t *n, const char *id, const char *target,
                    const char *reason)
{
        JournalEntry new = {
                .id = strdup(id),
                .target = target ? strdup(target) : NULL,
                .reason = reason ? strdup(reason) : NULL,
        };

        if (!new.id || (target && !new.target) || (reason && !new.reason)) {
                entries_clear(&new, 1);
                return -ENOMEM;
        }
        if (*n == max) {
                entries_clear(e, 1);
                memmove(e, e + 1, (max - 1) * sizeof(*e));
                (*n)--;
        }
        e[(*n)++] = new;
        return 0;
}

int journal_remember_failed(Journal *j, const char *id, const char *target)
{
        return remember(j->failed, JOURNAL_MAX_FAILED, &j->n_failed, id, target, NULL);
}

int journal_remember_recent(Journal *j, const char *id, const char *target, const char *reason)
{
        return remember(j->recent, JOURNAL_MAX_RECENT, &j->n_recent, id, target, reason);
}

/* The newest entry for ID: an ID remembered twice answers as it did last. */
static const JournalEntry *find(const JournalEntry *e, size_t n, const char *id)
{
        for (size_t i = n; i > 0; i--)
                if (strcmp(e[i - 1].id, id) == 0)
                        return &e[i - 1];
        return NULL;
}

bool journal_is_failed(const Journal *j, const char *id)
{
        return find(j->failed, j->n_failed, id) != NULL;
}

bool journal_is_recent(const Journal *j, const char *id)
{
        return find(j->recent, j->n_recent, id) != NULL;
}

const JournalEntry *journal_find_recent(const Journal *j, const char *id)
{
        return find(j->recent, j->n_recent, id);
}

void journal_drop_last_recent(Journal *j)
{
        if (j->n_recent == 0)
                return;
        j->n_recent--;
        entries_clear(j->recent + j->n_recent, 1);
}
