/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.c: a saved journal loads back field for field; a missing file is
 * an empty journal; anything else that is not exactly what journal_save()
 * writes (cut at any byte, wrong types, negative numbers, a bad key or
 * phase, lists or file over their limits) is -EBADMSG and never a crash; the
 * bounded lists keep the newest entries; the file is private (0600).
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "journal.h"
#include "tap.h"
#include "util/fileio.h"
#include "util/macro.h"

static char dir[64];
static char path[128];

static void journal_freep(Journal **j)
{
        journal_free(*j);
}
#define _cleanup_journal_ _cleanup_(journal_freep)

static void put(const char *content, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || write(fd, content, len) != (ssize_t)len)
                abort();
        close(fd);
}

static char *slurp(size_t *ret_len)
{
        char *text = NULL;

        if (read_file_limited(path, JOURNAL_MAX_SIZE, &text, ret_len) < 0)
                abort();
        return text;
}

static int entries(void)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

/* Not a real journal: journal_load() and journal_parse() must leave *ret pointing here when they fail. */
static Journal sentinel;

static void journal_free_unless_sentinel(Journal *j)
{
        if (j != &sentinel)
                journal_free(j);
}

/* Writes LEN bytes of CONTENT as the journal, loads it, expects ERR; on failure *ret must stay untouched. */
static void load_expect(const char *content, size_t len, int err, const char *name)
{
        Journal *j = &sentinel;
        int r;

        put(content, len);
        r = journal_load(dir, &j);
        is_int(r, err, name);
        if (r < 0)
                ok(j == &sentinel, "  *ret untouched on failure");
        else
                ok(j && j != &sentinel, "  a new journal");
        journal_free_unless_sentinel(j);
}

#define LOAD(lit, err, name) load_expect(lit, sizeof(lit) - 1, err, name)

/* A job object with every required member; EXTRA is spliced in last (it may override one). */
#define JOB(extra)                                                                                          \
        "{\"job\":{\"key\":\"0123456789AZ\",\"id\":\"I1\",\"url\":\"http://h/f\",\"target\":\"2.0\","       \
        "\"phase\":\"downloading\"" extra "}}"

static Job *full_job(void)
{
        Job *j = calloc(1, sizeof(*j));

        if (!j)
                abort();
        memcpy(j->key, "K0Z9A1B2C3D4", JOURNAL_KEY_LEN + 1);
        j->id = strdup("2836S8F46SDR");
        /* Everything JSON must escape, a slash json-c might escape, UTF-8, a control character. */
        j->url = strdup("https://h:8443/fw/\"a\\b\"/2.0.1.swu?x=1&y=\xe5\x9b\xba\x01");
        j->target = strdup("2.0.1+rc1~b");
        j->old_version = strdup("2.0.0");
        j->md5 = strdup("d41d8cd98f00b204e9800998ecf8427e");
        j->sha256 = strdup("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        j->size = UINT64_C(1) << 50; /* the largest ota.max_image_size */
        j->phase = JOB_INSTALLING;
        j->offset = (UINT64_C(1) << 50) - 1;
        j->fetched = 3 * (UINT64_C(1) << 50) + 1024 * 1024; /* the download's cap for the largest image */
        j->etag = strdup("\"5f3a-1c\"");
        j->last_modified = strdup("Wed, 21 Oct 2015 07:28:00 GMT");
        j->reason = strdup("the install hook failed with exit status 3");
        if (!j->id || !j->url || !j->target || !j->old_version || !j->md5 || !j->sha256 || !j->etag ||
            !j->last_modified || !j->reason)
                abort();
        return j;
}

static bool job_equal(const Job *a, const Job *b)
{
#define SAME(f) ((a->f == NULL && b->f == NULL) || (a->f && b->f && strcmp(a->f, b->f) == 0))
        return strcmp(a->key, b->key) == 0 && SAME(id) && SAME(url) && SAME(target) && SAME(old_version) &&
               SAME(md5) && SAME(sha256) && a->size == b->size && a->phase == b->phase &&
               a->offset == b->offset && a->fetched == b->fetched && SAME(etag) && SAME(last_modified) &&
               SAME(reason);
#undef SAME
}

static void test_round_trip(void)
{
        _cleanup_journal_ Journal *saved = calloc(1, sizeof(Journal));
        _cleanup_journal_ Journal *loaded = NULL;
        struct stat st;
        mode_t old;

        if (!saved)
                abort();
        saved->job = full_job();
        is_int(journal_remember_failed(saved, "F1", "1.9"), 0, "remember a failed job");
        is_int(journal_remember_failed(saved, "F2", NULL), 0, "remember a failed job without target");
        is_int(journal_remember_recent(saved, "R1", "2.0.1", NULL), 0, "remember a recent command");
        is_int(journal_remember_recent(saved, "R2", NULL, NULL), 0,
               "remember a recent command without target");
        is_int(journal_remember_recent(saved, "R3", NULL, "URL must be a string \"\\\n\x01"), 0,
               "remember a command answered FAIL, with a reason JSON must escape");

        old = umask(0);
        is_int(journal_save(dir, saved), 0, "save a full journal");
        umask(old);
        ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "  the file is 0600 even with umask 0");
        is_int(entries(), 1, "  and no temporary file is left");

        is_int(journal_load(dir, &loaded), 0, "load it");
        if (!loaded)
                return;
        ok(loaded->job != NULL, "  it has the job");
        if (loaded->job) {
                ok(job_equal(loaded->job, saved->job), "  every field of the job round-trips");
                is_str(loaded->job->url, saved->job->url, "  the URL that needs escaping, byte for byte");
                ok(loaded->job->size == UINT64_C(1) << 50, "  size 2^50");
                ok(loaded->job->offset == (UINT64_C(1) << 50) - 1, "  offset 2^50-1");
                ok(loaded->job->fetched == 3 * (UINT64_C(1) << 50) + 1024 * 1024, "  fetched 3 * 2^50 + 1 MiB");
                is_int(loaded->job->phase, JOB_INSTALLING, "  phase");
        }
        is_int(loaded->n_failed, 2, "  two failed entries");
        is_int(loaded->n_recent, 3, "  three recent entries");
        if (loaded->n_failed == 2 && loaded->n_recent == 3) {
                is_str(loaded->failed[0].id, "F1", "  failed[0].id");
                is_str(loaded->failed[0].target, "1.9", "  failed[0].target");
                is_str(loaded->failed[1].id, "F2", "  failed[1].id");
                ok(loaded->failed[1].target == NULL, "  failed[1].target stays NULL");
                is_str(loaded->recent[0].id, "R1", "  recent[0].id");
                is_str(loaded->recent[0].target, "2.0.1", "  recent[0].target");
                is_str(loaded->recent[1].id, "R2", "  recent[1].id");
                ok(loaded->recent[1].target == NULL, "  recent[1].target stays NULL");
                ok(loaded->recent[0].reason == NULL && loaded->recent[1].reason == NULL,
                   "  commands answered OK have no reason");
                is_str(loaded->recent[2].reason, "URL must be a string \"\\\n\x01",
                       "  a FAIL answer's reason round-trips byte for byte");
                ok(loaded->failed[0].reason == NULL && loaded->failed[1].reason == NULL,
                   "  failed entries have no reason");
        }

        /* A job with only the required fields: the optional ones come back NULL/0, not "". */
        loaded = journal_free(loaded);
        saved->job = job_free(saved->job);
        saved->job = calloc(1, sizeof(Job));
        if (!saved->job)
                abort();
        memcpy(saved->job->key, "AAAAAAAAAAAA", JOURNAL_KEY_LEN + 1);
        saved->job->id = strdup("I");
        saved->job->url = strdup("http://h/");
        saved->job->target = strdup("1");
        saved->job->phase = JOB_ACCEPTED;
        is_int(journal_save(dir, saved), 0, "save a minimal job");
        is_int(journal_load(dir, &loaded), 0, "  load it");
        ok(loaded && loaded->job && job_equal(loaded->job, saved->job),
           "  it round-trips with NULL optional strings and zero numbers");
}

static void test_empty(void)
{
        Journal empty = {};
        Journal *j = NULL;
        char *text;

        is_int(journal_save(dir, &empty), 0, "save an empty journal");
        text = slurp(NULL);
        ok(strstr(text, "\"job\"") == NULL, "  it has no job member");
        free(text);
        is_int(journal_load(dir, &j), 0, "  load it");
        ok(j && !j->job && j->n_failed == 0 && j->n_recent == 0, "  it is empty");
        j = journal_free(j);
        ok(journal_free(NULL) == NULL, "journal_free(NULL) is harmless");
        ok(job_free(NULL) == NULL, "job_free(NULL) is harmless");

        if (unlink(path) < 0)
                abort();
        j = NULL;
        is_int(journal_load(dir, &j), 0, "a missing file loads");
        ok(j && !j->job && j->n_failed == 0 && j->n_recent == 0, "  as an empty journal");
        j = journal_free(j);

        LOAD("{}", 0, "an empty object is an empty journal");
        LOAD("{\"job\":null}", 0, "a null job is no job");
        LOAD(" {\"failed\":[],\"recent\":[]}\n", 0, "surrounding whitespace is accepted");
}

static void test_phases(void)
{
        _cleanup_journal_ Journal *saved = calloc(1, sizeof(Journal));
        bool distinct = true;

        if (!saved)
                abort();
        for (JobPhase p = 0; p < _JOB_PHASE_MAX; p++) {
                const char *s = job_phase_to_string(p);
                Journal *loaded = NULL;
                char name[96];

                snprintf(name, sizeof(name), "phase %d has a name ('%s')", p, s ? s : "(null)");
                ok(s != NULL, name);
                if (!s)
                        continue;
                for (JobPhase q = 0; q < p; q++)
                        if (strcmp(s, job_phase_to_string(q)) == 0)
                                distinct = false;
                snprintf(name, sizeof(name), "  '%s' parses back", s);
                is_int(job_phase_from_string(s), p, name);

                saved->job = job_free(saved->job);
                saved->job = full_job();
                saved->job->phase = p;
                snprintf(name, sizeof(name), "  '%s' survives save and load", s);
                ok(journal_save(dir, saved) == 0 && journal_load(dir, &loaded) == 0 && loaded &&
                           loaded->job && loaded->job->phase == p,
                   name);
                journal_free(loaded);
        }
        ok(distinct, "the phase names are distinct");
        is_str(job_phase_to_string(JOB_REBOOT_PENDING), "reboot-pending", "SPEC 5.5's 'reboot-pending'");
        ok(job_phase_to_string(_JOB_PHASE_MAX) == NULL, "no name past the last phase");
        ok(job_phase_to_string(_JOB_PHASE_INVALID) == NULL, "no name for the invalid phase");
        ok(job_phase_to_string((JobPhase)-1) == NULL, "no name for -1");
        is_int(job_phase_from_string(NULL), _JOB_PHASE_INVALID, "NULL is no phase");
        is_int(job_phase_from_string(""), _JOB_PHASE_INVALID, "'' is no phase");
        is_int(job_phase_from_string("DONE"), _JOB_PHASE_INVALID, "phase names are case-sensitive");
        is_int(job_phase_from_string("done "), _JOB_PHASE_INVALID, "no trailing space");
        is_int(job_phase_from_string("reboot_pending"), _JOB_PHASE_INVALID, "no underscore variant");
}

/* Every cut of a saved journal short of its full length is refused, by journal_load and journal_parse. */
static void test_truncated(void)
{
        _cleanup_journal_ Journal *saved = calloc(1, sizeof(Journal));
        _cleanup_free_ char *text = NULL;
        size_t len = 0, bad_load = 0, bad_parse = 0, first_bad = SIZE_MAX;

        if (!saved)
                abort();
        saved->job = full_job();
        for (int i = 0; i < 3; i++) {
                char id[16];

                snprintf(id, sizeof(id), "ID%d", i);
                if (journal_remember_failed(saved, id, "t") < 0 ||
                    journal_remember_recent(saved, id, NULL,
                                            i == 1 ? "SHA256 must be 64 hex digits" : NULL) < 0)
                        abort();
        }
        is_int(journal_save(dir, saved), 0, "save a journal to cut");
        text = slurp(&len);
        ok(len > 200, "  it is a few hundred bytes");

        for (size_t cut = 0; cut < len; cut++) {
                Journal *j = &sentinel;
                char *copy;
                int r;

                put(text, cut);
                r = journal_load(dir, &j);
                if (r != -EBADMSG || j != &sentinel) {
                        bad_load++;
                        first_bad = MIN(first_bad, cut);
                        journal_free_unless_sentinel(j);
                }

                /* An exact-size, unterminated buffer: the parser must not read past LEN. */
                copy = malloc(cut ? cut : 1);
                if (!copy)
                        abort();
                memcpy(copy, text, cut);
                j = &sentinel;
                r = journal_parse(copy, cut, &j);
                free(copy);
                if (r != -EBADMSG || j != &sentinel) {
                        bad_parse++;
                        first_bad = MIN(first_bad, cut);
                        journal_free_unless_sentinel(j);
                }
        }
        is_int(bad_load, 0,
               "journal_load refuses the journal cut at every byte with -EBADMSG, *ret untouched");
        is_int(bad_parse, 0,
               "journal_parse refuses every cut of an unterminated buffer with -EBADMSG, *ret untouched");
        if (first_bad != SIZE_MAX)
                printf("#   first accepted cut: %zu of %zu\n", first_bad, len);

        /* Single-byte damage anywhere: either refused, or a journal that is still well-formed. */
        size_t crashed_or_insane = 0;
        for (size_t i = 0; i < len; i++) {
                static const char junk[] = {'\0', '"', '}', '[', '-', 'x', '\xff'};

                for (size_t k = 0; k < ELEMENTSOF(junk); k++) {
                        Journal *j = &sentinel;
                        char saved_byte = text[i];
                        int r;

                        text[i] = junk[k];
                        r = journal_parse(text, len, &j);
                        text[i] = saved_byte;
                        if (r != 0) {
                                if (r != -EBADMSG || j != &sentinel)
                                        crashed_or_insane++;
                                journal_free_unless_sentinel(j);
                                continue;
                        }
                        if (j && j->job &&
                            (strlen(j->job->key) != JOURNAL_KEY_LEN || !j->job->id || !j->job->url ||
                             !j->job->target || !job_phase_to_string(j->job->phase)))
                                crashed_or_insane++;
                        if (!j || j == &sentinel || j->n_failed > JOURNAL_MAX_FAILED ||
                            j->n_recent > JOURNAL_MAX_RECENT)
                                crashed_or_insane++;
                        journal_free_unless_sentinel(j);
                }
        }
        is_int(crashed_or_insane, 0,
               "a byte overwritten anywhere gives -EBADMSG (*ret untouched) or a well-formed journal");
}

static void test_bad_content(void)
{
        LOAD("", -EBADMSG, "an empty file");
        LOAD("   \n", -EBADMSG, "whitespace only");
        LOAD("null", -EBADMSG, "a JSON null");
        LOAD("[]", -EBADMSG, "an array");
        LOAD("\"job\"", -EBADMSG, "a string");
        LOAD("{}{}", -EBADMSG, "two objects");
        LOAD("{} x", -EBADMSG, "trailing garbage");
        LOAD("{}\0", -EBADMSG, "a trailing NUL byte");
        LOAD("{\"failed\":[],}", -EBADMSG, "a trailing comma (the journal is strict JSON)");
        LOAD("{\"job\":'x'}", -EBADMSG, "a single-quoted value");
        LOAD("{\"x\":[[[[[[[[[[]]]]]]]]]]}", -EBADMSG,
             "nesting deeper than a journal ever is, even in an unknown member");
        LOAD("{\"x\":[[[]]]}", 0, "  while shallow unknown members are ignored");

        /* The job and its members. */
        LOAD("{\"job\":[]}", -EBADMSG, "job is an array");
        LOAD("{\"job\":\"x\"}", -EBADMSG, "job is a string");
        LOAD("{\"job\":{}}", -EBADMSG, "job is an empty object");
        LOAD(JOB(""), 0, "the reference job loads (the cases below differ from it in one member)");
        LOAD(JOB(",\"extra\":1"), 0, "an unknown member is ignored");
        LOAD(JOB(",\"id\":7"), -EBADMSG, "id is a number");
        LOAD(JOB(",\"id\":null"), -EBADMSG, "id is null");
        LOAD(JOB(",\"url\":true"), -EBADMSG, "url is a boolean");
        LOAD(JOB(",\"target\":[\"2.0\"]"), -EBADMSG, "target is an array");
        LOAD(JOB(",\"old_version\":{}"), -EBADMSG, "old_version is an object");
        LOAD(JOB(",\"md5\":1"), -EBADMSG, "md5 is a number");
        LOAD(JOB(",\"sha256\":false"), -EBADMSG, "sha256 is a boolean");
        LOAD(JOB(",\"etag\":2"), -EBADMSG, "etag is a number");
        LOAD(JOB(",\"last_modified\":[]"), -EBADMSG, "last_modified is an array");
        LOAD(JOB(",\"reason\":3.5"), -EBADMSG, "reason is a number");
        LOAD(JOB(",\"md5\":null"), 0, "an optional string may be null");
        LOAD(JOB(",\"id\":\"a\\u0000b\""), -EBADMSG, "a string with an embedded NUL");
        LOAD(JOB(",\"size\":\"10\""), -EBADMSG, "size is a string");
        LOAD(JOB(",\"size\":1.0"), -EBADMSG, "size is a double");
        LOAD(JOB(",\"size\":1e3"), -EBADMSG, "size in exponent form");
        LOAD(JOB(",\"size\":true"), -EBADMSG, "size is a boolean");
        LOAD(JOB(",\"size\":null"), -EBADMSG, "size is null");
        LOAD(JOB(",\"size\":-1"), -EBADMSG, "size is negative");
        LOAD(JOB(",\"offset\":-1"), -EBADMSG, "offset is negative");
        LOAD(JOB(",\"offset\":-9223372036854775808"), -EBADMSG, "offset is INT64_MIN");
        LOAD(JOB(",\"offset\":9007199254740992"), 0, "offset 2^53 is the largest accepted");
        LOAD(JOB(",\"offset\":9007199254740993"), -EBADMSG, "offset 2^53 + 1 is refused");
        LOAD(JOB(",\"offset\":\"5\""), -EBADMSG, "offset is a string");
        {
                /* "fetched" came later: a journal without it is a job that fetched nothing yet. */
                static const char old[] = JOB(",\"offset\":5");
                Journal *j = NULL;

                is_int(journal_parse(old, sizeof(old) - 1, &j), 0, "a journal without fetched loads");
                ok(j && j->job && j->job->offset == 5 && j->job->fetched == 0, "  with fetched 0");
                journal_free(j);
        }
        LOAD(JOB(",\"fetched\":7340032"), 0, "fetched is a number");
        LOAD(JOB(",\"fetched\":-1"), -EBADMSG, "fetched is negative");
        LOAD(JOB(",\"fetched\":\"5\""), -EBADMSG, "fetched is a string");
        LOAD(JOB(",\"fetched\":1.5"), -EBADMSG, "fetched is a double");
        LOAD(JOB(",\"fetched\":null"), -EBADMSG, "fetched is null");
        LOAD(JOB(",\"fetched\":true"), -EBADMSG, "fetched is a boolean");
        LOAD(JOB(",\"fetched\":9007199254740993"), -EBADMSG, "fetched 2^53 + 1 is refused");
        LOAD(JOB(",\"phase\":3"), -EBADMSG, "phase is a number");
        LOAD(JOB(",\"phase\":\"paused\""), -EBADMSG, "an unknown phase");
        LOAD(JOB(",\"phase\":\"Done\""), -EBADMSG, "a phase in the wrong case");
        LOAD(JOB(",\"phase\":null"), -EBADMSG, "phase is null");
        LOAD("{\"job\":{\"key\":\"0123456789AZ\",\"id\":\"I1\",\"url\":\"u\",\"target\":\"2\"}}", -EBADMSG,
             "phase is missing");
        LOAD("{\"job\":{\"key\":\"0123456789AZ\",\"url\":\"u\",\"target\":\"2\",\"phase\":\"done\"}}",
             -EBADMSG, "id is missing");
        LOAD("{\"job\":{\"key\":\"0123456789AZ\",\"id\":\"I\",\"target\":\"2\",\"phase\":\"done\"}}",
             -EBADMSG, "url is missing");
        LOAD("{\"job\":{\"key\":\"0123456789AZ\",\"id\":\"I\",\"url\":\"u\",\"phase\":\"done\"}}", -EBADMSG,
             "target is missing");

        /* The key names the job's files: exactly 12 of [0-9A-Z], nothing a path could be made of. */
        LOAD("{\"job\":{\"id\":\"I\",\"url\":\"u\",\"target\":\"2\",\"phase\":\"done\"}}", -EBADMSG,
             "key is missing");
        LOAD(JOB(",\"key\":null"), -EBADMSG, "key is null");
        LOAD(JOB(",\"key\":123456789012"), -EBADMSG, "key is a number");
        LOAD(JOB(",\"key\":\"\""), -EBADMSG, "key is empty");
        LOAD(JOB(",\"key\":\"0123456789A\""), -EBADMSG, "key of 11 characters");
        LOAD(JOB(",\"key\":\"0123456789ABC\""), -EBADMSG, "key of 13 characters");
        LOAD(JOB(",\"key\":\"0123456789aB\""), -EBADMSG, "key with a lower-case letter");
        LOAD(JOB(",\"key\":\"01234/6789AB\""), -EBADMSG, "key with a slash");
        LOAD(JOB(",\"key\":\"..3456789ABC\""), -EBADMSG, "key with dots");
        LOAD(JOB(",\"key\":\"0123456789A-\""), -EBADMSG, "key with a dash");
        LOAD(JOB(",\"key\":\"0123456789A\\u0000\""), -EBADMSG, "key with an embedded NUL");
        LOAD(JOB(",\"key\":\"0123456789\xc3\x89\""), -EBADMSG, "key with a non-ASCII letter (12 bytes)");
        LOAD(JOB(",\"key\":\"ZZZZZZZZZZZZ\""), 0, "key of 12 Z is valid");

        /* The lists. */
        LOAD("{\"failed\":{}}", -EBADMSG, "failed is an object");
        LOAD("{\"recent\":\"R1\"}", -EBADMSG, "recent is a string");
        LOAD("{\"failed\":null}", -EBADMSG, "failed is null");
        LOAD("{\"failed\":[\"F1\"]}", -EBADMSG, "a failed entry is a string");
        LOAD("{\"recent\":[null]}", -EBADMSG, "a recent entry is null");
        LOAD("{\"failed\":[{\"target\":\"1\"}]}", -EBADMSG, "a failed entry without id");
        LOAD("{\"recent\":[{\"id\":5}]}", -EBADMSG, "a recent id is a number");
        LOAD("{\"failed\":[{\"id\":\"F\",\"target\":5}]}", -EBADMSG, "a failed target is a number");
        LOAD("{\"failed\":[{\"id\":\"F1\"},{\"id\":\"F2\"},{\"id\":3}]}", -EBADMSG,
             "a bad entry after good ones (no leak: see the ASan run)");
        LOAD("{\"recent\":[{\"id\":\"R\",\"reason\":5}]}", -EBADMSG, "a recent reason is a number");
        LOAD("{\"recent\":[{\"id\":\"R\",\"reason\":[\"x\"]}]}", -EBADMSG, "a recent reason is an array");
        LOAD("{\"recent\":[{\"id\":\"R\",\"reason\":\"a\\u0000b\"}]}", -EBADMSG,
             "a recent reason with an embedded NUL");
        LOAD("{\"recent\":[{\"id\":\"R\",\"reason\":null}]}", 0, "a null reason is no reason (answered OK)");
}

/* Journals written before the recent list kept answers: their entries load, as commands answered OK. */
static void test_old_format(void)
{
        static const char old[] = "{\"failed\":[{\"id\":\"F1\",\"target\":\"1.9\"}],"
                                  "\"recent\":[{\"id\":\"R1\",\"target\":\"2.0.1\"},{\"id\":\"R2\"}]}";
        _cleanup_journal_ Journal *j = NULL;

        put(old, sizeof(old) - 1);
        is_int(journal_load(dir, &j), 0, "a journal without reasons (the format before them) loads");
        if (!j)
                return;
        is_int(j->n_recent, 2, "  with its recent entries");
        ok(j->n_recent == 2 && !j->recent[0].reason && !j->recent[1].reason,
           "  which count as answered OK (no reason)");
        ok(journal_find_recent(j, "R1") && !journal_find_recent(j, "R1")->reason, "  found, answered OK");
        ok(journal_is_failed(j, "F1"), "  and the failed list is as it was");
}

/* Strings up to JOURNAL_MAX_STRING (4096, the URL limit of protocol.h) bytes load; longer ones do not. */
static void test_limits(void)
{
        _cleanup_free_ char *buf = malloc(JOURNAL_MAX_SIZE + 2);
        size_t n;

        if (!buf)
                abort();

        n = (size_t)snprintf(buf, 8192,
                             "{\"job\":{\"key\":\"0123456789AZ\",\"id\":\"I\",\"target\":\"2\","
                             "\"phase\":\"done\",\"url\":\"");
        memset(buf + n, 'u', 4096);
        strcpy(buf + n + 4096, "\"}}");
        load_expect(buf, strlen(buf), 0, "a URL of 4096 bytes loads");
        memset(buf + n, 'u', 4097);
        strcpy(buf + n + 4097, "\"}}");
        load_expect(buf, strlen(buf), -EBADMSG, "a URL of 4097 bytes is refused");

        /* 17 entries in a list that holds 16. */
        n = (size_t)snprintf(buf, 64, "{\"failed\":[");
        for (int i = 0; i < JOURNAL_MAX_FAILED + 1; i++)
                n += (size_t)snprintf(buf + n, 64, "%s{\"id\":\"F%d\"}", i ? "," : "", i);
        strcpy(buf + n, "]}");
        load_expect(buf, strlen(buf), -EBADMSG, "17 failed entries are refused");
        buf[strlen(buf) - 2] = '\0';
        *strrchr(buf, ',') = '\0';
        strcat(buf, "]}");
        load_expect(buf, strlen(buf), 0, "16 failed entries load");
        n = (size_t)snprintf(buf, 64, "{\"recent\":[");
        for (int i = 0; i < JOURNAL_MAX_RECENT + 1; i++)
                n += (size_t)snprintf(buf + n, 64, "%s{\"id\":\"R%d\"}", i ? "," : "", i);
        strcpy(buf + n, "]}");
        load_expect(buf, strlen(buf), -EBADMSG, "17 recent entries are refused");

        /* The size limit: valid JSON padded with whitespace, at and one past JOURNAL_MAX_SIZE. */
        memset(buf, ' ', JOURNAL_MAX_SIZE + 1);
        memcpy(buf, "{}", 2);
        load_expect(buf, JOURNAL_MAX_SIZE, 0, "a journal of exactly JOURNAL_MAX_SIZE bytes loads");
        load_expect(buf, JOURNAL_MAX_SIZE + 1, -EBADMSG, "one byte over JOURNAL_MAX_SIZE is -EBADMSG");
        {
                Journal *j = &sentinel;

                is_int(journal_parse(buf, JOURNAL_MAX_SIZE + 1, &j), -EBADMSG,
                       "journal_parse refuses more than JOURNAL_MAX_SIZE too");
                ok(j == &sentinel, "  and leaves *ret alone");
                journal_free_unless_sentinel(j);
        }
}

/*
 * Numbers above INT64_MAX. journal_save never writes them (SIZE is capped
 * at 2^50 by ota.max_image_size), but a journal "wrong in some detail must
 * be refused whole" (journal.c). json-c 0.16 hands them over as uint64 and
 * json_object_get_int64() clamps to INT64_MAX without setting errno, so
 * journal.c refuses any number above 2^53.
 */

static void test_out_of_range(void)
{
        static const char *const cases[] = {
                JOB(",\"size\":9223372036854775808"),
                JOB(",\"offset\":18446744073709551615"),
                JOB(",\"offset\":18446744073709551616"),
                JOB(",\"size\":99999999999999999999999999"),
                JOB(",\"fetched\":18446744073709551615"),
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Journal *j = &sentinel;
                char name[128];
                int r = journal_parse(cases[i], strlen(cases[i]), &j);

                snprintf(name, sizeof(name), "%s above INT64_MAX is -EBADMSG (got %d%s), *ret untouched",
                         i == 0 || i == 3 ? "size" : i == 4 ? "fetched" : "offset", r,
                         r == 0 && j && j->job ? ", clamped to INT64_MAX" : "");
                ok(r == -EBADMSG && j == &sentinel, name);
                journal_free_unless_sentinel(j);
        }
}

static void test_lists(void)
{
        _cleanup_journal_ Journal *j = calloc(1, sizeof(Journal));
        _cleanup_journal_ Journal *loaded = NULL;
        bool order = true, kept = true, dropped = true;

        if (!j)
                abort();
        ok(!journal_is_failed(j, "F0"), "an empty journal has no failed ID");
        ok(!journal_is_recent(j, "F0"), "an empty journal has no recent ID");

        for (int i = 0; i < 20; i++) {
                char id[16], target[16];

                snprintf(id, sizeof(id), "F%d", i);
                snprintf(target, sizeof(target), "1.%d", i);
                if (journal_remember_failed(j, id, target) < 0)
                        abort();
        }
        is_int(j->n_failed, JOURNAL_MAX_FAILED, "20 failed IDs remembered: 16 kept");
        for (int i = 0; i < 20; i++) {
                char id[16];

                snprintf(id, sizeof(id), "F%d", i);
                if (i < 4 && journal_is_failed(j, id))
                        dropped = false;
                if (i >= 4 && !journal_is_failed(j, id))
                        kept = false;
        }
        ok(dropped, "  the 4 oldest are dropped");
        ok(kept, "  the 16 newest are kept");
        for (size_t i = 0; i < j->n_failed; i++) {
                char id[16], target[16];

                snprintf(id, sizeof(id), "F%zu", i + 4);
                snprintf(target, sizeof(target), "1.%zu", i + 4);
                if (strcmp(j->failed[i].id, id) != 0 || !j->failed[i].target ||
                    strcmp(j->failed[i].target, target) != 0)
                        order = false;
        }
        ok(order, "  oldest first, each with its own target");
        ok(!journal_is_recent(j, "F10"), "a failed ID is not a recent one");
        ok(!journal_is_failed(j, "F1"), "F1 is gone (and not matched as a prefix of F10..F19)");
        ok(!journal_is_failed(j, "F1x"), "no match for a longer ID");
        ok(!journal_is_failed(j, "f10"), "IDs compare case-sensitively");

        for (int i = 0; i < JOURNAL_MAX_RECENT + 1; i++) {
                char id[16];

                snprintf(id, sizeof(id), "R%d", i);
                if (journal_remember_recent(j, id, NULL, NULL) < 0)
                        abort();
        }
        is_int(j->n_recent, JOURNAL_MAX_RECENT, "17 recent IDs remembered: 16 kept");
        ok(!journal_is_recent(j, "R0"), "  R0, the oldest, is dropped");
        ok(journal_is_recent(j, "R1") && journal_is_recent(j, "R16"), "  R1 and R16 are kept");
        ok(!journal_is_failed(j, "R16"), "a recent ID is not a failed one");
        ok(journal_find_recent(j, "R16") && !journal_find_recent(j, "R16")->reason, "R16 was answered OK");
        is_int(journal_remember_recent(j, "R16", NULL, "FW_VERSION missing"), 0, "remembering an ID again");
        is_str(j->recent[JOURNAL_MAX_RECENT - 1].id, "R16", "  puts it last");
        ok(!journal_is_recent(j, "R1") && journal_is_recent(j, "R2"), "  and drops the oldest, R1");
        is_str(journal_find_recent(j, "R16") ? journal_find_recent(j, "R16")->reason : NULL,
               "FW_VERSION missing", "  and the newest answer is the one found");
        ok(journal_find_recent(j, "R0") == NULL, "  a dropped ID is not found");

        is_int(journal_save(dir, j), 0, "save the full lists");
        is_int(journal_load(dir, &loaded), 0, "  they load (16 entries each is within the limit)");
        ok(loaded && loaded->n_failed == JOURNAL_MAX_FAILED && loaded->n_recent == JOURNAL_MAX_RECENT &&
                   journal_is_failed(loaded, "F19") && !journal_is_failed(loaded, "F3") &&
                   journal_is_recent(loaded, "R2") && !journal_is_recent(loaded, "R1"),
           "  with the same entries");
}

static void test_files(void)
{
        Journal empty = {};
        Journal *j = NULL;
        char missing[128];
        struct stat st;
        mode_t old;

        put("{}", 2);
        if (chmod(path, 0644) < 0)
                abort();
        old = umask(022);
        is_int(journal_save(dir, &empty), 0, "save over a 0644 journal with umask 022");
        umask(old);
        ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "  the file is 0600 again");
        is_int(entries(), 1, "  and it is the only file in the directory");

        snprintf(missing, sizeof(missing), "%s/missing", dir);
        is_int(journal_save(missing, &empty), -ENOENT, "saving into a missing directory is -ENOENT");
        ok(access(missing, F_OK) < 0, "  and does not create it");
        is_int(journal_load(missing, &j), 0, "loading from a missing directory gives an empty journal");
        ok(j && !j->job, "  (the file is missing)");
        j = journal_free(j);

        /* A journal that cannot be read is not "corrupt": the caller logs the errno instead. */
        if (unlink(path) < 0 || mkdir(path, 0700) < 0)
                abort();
        {
                int r;

                j = &sentinel;
                r = journal_load(dir, &j);
                ok(r < 0 && r != -EBADMSG && j == &sentinel,
                   "a directory in the journal's place is an error, not -EBADMSG; *ret untouched");
                if (!(r < 0 && r != -EBADMSG))
                        printf("#   got %d\n", r);
                journal_free_unless_sentinel(j);
        }
        if (rmdir(path) < 0)
                abort();

        /* Planted in the state directory: a link is not followed, a FIFO not waited on. */
        {
                char elsewhere[160];

                snprintf(elsewhere, sizeof(elsewhere), "%s.elsewhere", dir);
                put("{}", 2);
                if (rename(path, elsewhere) < 0 || symlink(elsewhere, path) < 0)
                        abort();
                j = &sentinel;
                is_int(journal_load(dir, &j), -ELOOP, "a symbolic link as the journal is -ELOOP");
                ok(j == &sentinel, "  *ret untouched");
                if (unlink(path) < 0 || unlink(elsewhere) < 0 || mkfifo(path, 0600) < 0)
                        abort();
                is_int(journal_load(dir, &j), -EBADFD, "a FIFO as the journal is -EBADFD, without blocking");
                ok(j == &sentinel, "  *ret untouched");
                if (unlink(path) < 0)
                        abort();
        }
}

int main(void)
{
        snprintf(dir, sizeof(dir), "/tmp/test-journal.XXXXXX");
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_FILE);

        test_round_trip();
        test_empty();
        test_phases();
        test_truncated();
        test_bad_content();
        test_old_format();
        test_limits();
        test_out_of_range();
        test_lists();
        test_files();

        (void)unlink(path);
        if (tap_failed == 0)
                (void)rmdir(dir);
        else
                printf("# left %s\n", dir);
        return tap_done();
}
