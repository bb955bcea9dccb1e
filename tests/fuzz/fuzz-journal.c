/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for journal_parse(): any bytes as ota-journal.json.
 * Beyond "no crash, no leak, no undefined behaviour": an accepted journal is
 * well-formed (valid key and phase, required strings, lists within bounds),
 * and what journal_save() writes of it loads back equal. The save goes to a
 * directory on tmpfs (/dev/shm when there is one) so fsync costs nothing.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];

static void cleanup(void)
{
        (void)unlink(path);
        (void)rmdir(dir);
}

static void setup(void)
{
        snprintf(dir, sizeof(dir), "%s/fuzz-journal.XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_FILE);
        atexit(cleanup);
}

static bool str_eq(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool key_ok(const char *k)
{
        if (strlen(k) != JOURNAL_KEY_LEN)
                return false;
        for (; *k; k++)
                if (!((*k >= '0' && *k <= '9') || (*k >= 'A' && *k <= 'Z')))
                        return false;
        return true;
}

static bool entries_eq(const JournalEntry *a, const JournalEntry *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!str_eq(a[i].id, b[i].id) || !str_eq(a[i].target, b[i].target) ||
                    !str_eq(a[i].reason, b[i].reason))
                        return false;
        return true;
}

static bool journal_eq(const Journal *a, const Journal *b)
{
        const Job *x = a->job, *y = b->job;

        if (a->n_failed != b->n_failed || a->n_recent != b->n_recent ||
            !entries_eq(a->failed, b->failed, a->n_failed) || !entries_eq(a->recent, b->recent, a->n_recent))
                return false;
        if (!x || !y)
                return !x && !y;
        return strcmp(x->key, y->key) == 0 && str_eq(x->id, y->id) && str_eq(x->url, y->url) &&
               str_eq(x->target, y->target) && str_eq(x->old_version, y->old_version) &&
               str_eq(x->md5, y->md5) && str_eq(x->sha256, y->sha256) && x->size == y->size &&
               x->phase == y->phase && x->offset == y->offset && str_eq(x->etag, y->etag) &&
               str_eq(x->last_modified, y->last_modified) && str_eq(x->reason, y->reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        Journal *j = NULL, *back = NULL;
        struct stat st;
        int r;

        if (!dir[0])
                setup();

        r = journal_parse((const char *)data, size, &j);
        if (r < 0) {
                if ((r != -EBADMSG && r != -ENOMEM) || j)
                        abort();
                return 0;
        }
        if (!j || j->n_failed > JOURNAL_MAX_FAILED || j->n_recent > JOURNAL_MAX_RECENT)
                abort();
        for (size_t i = 0; i < j->n_failed; i++)
                if (!j->failed[i].id)
                        abort();
        for (size_t i = 0; i < j->n_recent; i++)
                if (!j->recent[i].id)
                        abort();
        if (j->job && (!key_ok(j->job->key) || !j->job->id || !j->job->url || !j->job->target ||
                       !job_phase_to_string(j->job->phase)))
                abort();

        if (journal_save(dir, j) < 0)
                abort();
        r = journal_load(dir, &back);
        /*
         * json-c may write a string longer than it read it (escapes), so an
         * input near the limit can save to more than JOURNAL_MAX_SIZE. The
         * daemon's own journals are far smaller (ota.c bounds every field).
         */
        if (r == -EBADMSG && stat(path, &st) == 0 && st.st_size > JOURNAL_MAX_SIZE)
                r = 0, back = NULL;
        else if (r < 0 || !back || !journal_eq(j, back))
                abort(); /* a journal we accepted did not survive save and load */
        journal_free(back);
        journal_free(j);
        return 0;
}
