/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OTA job journal: {state_dir}/ota-journal.json, written atomically
 * (write_file_atomic, as the credentials). It holds the current job (what
 * the platform asked, how far it got, what the server's validators were) and
 * the short lists that make commands idempotent: recent command IDs with the
 * answer each got (OK, or FAIL and its REASON), and failed jobs (by ID and
 * target) so that a failing install is never retried by the same command
 * again.
 *
 * An entry of either list is {"id":…, "target":…, "reason":…}; "target" and
 * "reason" are optional. "reason" was added later: a journal written before
 * it loads, its entries being commands that were answered OK.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_FILE "ota-journal.json"
#define JOURNAL_MAX_SIZE (64 * 1024)
#define JOURNAL_MAX_FAILED 16
#define JOURNAL_MAX_RECENT 16
#define JOURNAL_KEY_LEN 12

typedef enum JobPhase {
        JOB_ACCEPTED,
        JOB_DOWNLOADING,
        JOB_VERIFYING,
        JOB_INSTALLING,
        JOB_REBOOT_PENDING,
        JOB_DONE,
        JOB_FAILED,
        _JOB_PHASE_MAX,
        _JOB_PHASE_INVALID = -EINVAL,
} JobPhase;

typedef struct Job {
        char key[JOURNAL_KEY_LEN + 1]; /* local name of the job's files: [0-9A-Z]{12}, never from the network */
        char *id;                      /* the platform's command ID */
        char *url;
        char *target;       /* FW_VERSION */
        char *old_version;  /* running when the job was accepted */
        char *md5, *sha256; /* expected, or NULL */
        uint64_t size;      /* expected, 0 = not given */
        JobPhase phase;
        uint64_t offset; /* bytes of the .part file written and synced */
        char *etag, *last_modified;
        uint64_t fetched; /* bytes the download fetched for this job, in all runs ("fetched"; absent = 0) */
        char *reason; /* why it failed */
        /* reboot-pending, the reboot not asked for yet (ota.reboot_window): the boot ID then, so that a
         * restart of the agent in the same boot keeps waiting ("reboot_wait_boot"; absent = asked for) */
        char *reboot_wait_boot;
} Job;

typedef struct JournalEntry {
        char *id;
        char *target; /* or NULL */
        char *reason; /* recent: NULL when the command was answered OK, else the REASON of its FAIL */
} JournalEntry;

typedef struct Journal {
        Job *job; /* the current or last job; NULL when none */
        JournalEntry failed[JOURNAL_MAX_FAILED];
        size_t n_failed;
        JournalEntry recent[JOURNAL_MAX_RECENT]; /* answered command IDs, newest last */
        size_t n_recent;
} Journal;

const char *job_phase_to_string(JobPhase p);
JobPhase job_phase_from_string(const char *s);

Job *job_free(Job *j);

/*
 * Loads the journal; a missing file gives an empty journal. Returns 0, or
 * -EBADMSG when the file is corrupt (the caller starts empty and says so),
 * or another -errno.
 */
int journal_load(const char *state_dir, Journal **ret);
/* Parses a journal from memory (for journal_load and the fuzzer). */
int journal_parse(const char *text, size_t len, Journal **ret);
int journal_save(const char *state_dir, const Journal *j);
Journal *journal_free(Journal *j);

/*
 * Remembers ID (and TARGET, which may be NULL) in a bounded list, dropping
 * the oldest. For a recent command, REASON is NULL when it was answered OK,
 * else the REASON its FAIL carried. Returns 0 or -ENOMEM (nothing changed).
 */
int journal_remember_failed(Journal *j, const char *id, const char *target);
int journal_remember_recent(Journal *j, const char *id, const char *target, const char *reason);
/* Undoes the last journal_remember_recent() (its write failed). */
void journal_drop_last_recent(Journal *j);
bool journal_is_failed(const Journal *j, const char *id);
bool journal_is_recent(const Journal *j, const char *id);
/* The newest recent entry for ID (its answer is in ->reason), or NULL. Valid until the list changes. */
const JournalEntry *journal_find_recent(const Journal *j, const char *id);
