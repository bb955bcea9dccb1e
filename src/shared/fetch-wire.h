/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire between krtiotd and krtiot-fetch (SPEC 9). krtiotd starts one
 * krtiot-fetch per download with the job's parameters on its command line
 * (the URL on standard input, out of sight of ps), and reads what happens
 * from the status lines krtiot-fetch writes on --status-fd, framed as in
 * util/wire.h, one line per event:
 *
 *   progress done=N total=N
 *       At most about once a second while bytes arrive. TOTAL 0: unknown.
 *   checkpoint offset=N fetched=N [etag=S] [last_modified=S]
 *       The first OFFSET bytes of the file are written and fdatasync()ed;
 *       FETCHED bytes were taken from the network for this job so far (the
 *       --bytes-fetched it was started with included); the validators of the
 *       response they came from (absent: none usable). What the journal keeps
 *       so that a restart resumes.
 *   result error=E [reason=S] [sha256=HEX]
 *       The last line. ERROR 0: the file is complete, matches every
 *       expectation given and is fsync()ed, SHA256 its hash. Else ERROR is a
 *       -errno (download.h lists them) and REASON says why in a few words.
 *
 * Its exit status says the same in short: FETCH_EXIT_*. A krtiot-fetch that
 * ends without a result line (killed) failed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/wire.h"

#define FETCH_EXIT_OK 0
#define FETCH_EXIT_FAILED 1
#define FETCH_EXIT_CANCELLED 2 /* SIGTERM or SIGINT */
#define FETCH_EXIT_USAGE 64

#define FETCH_VALIDATOR_MAX 256 /* longer ETag/Last-Modified values are not kept */
#define FETCH_REASON_MAX 256

typedef enum FetchEventType {
        FETCH_EVENT_PROGRESS,
        FETCH_EVENT_CHECKPOINT,
        FETCH_EVENT_RESULT,
} FetchEventType;

/* One status line, decoded. Strings point into the WireMessage it came from (NULL: absent). */
typedef struct FetchEvent {
        FetchEventType type;
        uint64_t done, total;     /* progress */
        uint64_t offset, fetched; /* checkpoint */
        const char *etag, *last_modified;
        int error; /* result: 0 or -errno */
        const char *reason, *sha256;
} FetchEvent;

/*
 * Decodes one status line. Returns 0 and fills *ret (valid while *msg is),
 * or -EBADMSG for anything that is not a well-formed event (unknown verb,
 * missing or malformed field, a positive error, a sha256 that is not 64
 * lowercase hex digits, a validator or reason over its limit). *msg must be
 * freed with wire_message_done() whatever the result.
 */
int fetch_wire_parse(const char *line, size_t len, WireMessage *msg, FetchEvent *ret);

/* Encoders into BUF (WIRE_LINE_MAX bytes). Return 0 and the line's length, or -E2BIG/-EINVAL. */
int fetch_wire_progress(char *buf, uint64_t done, uint64_t total, size_t *ret_len);
int fetch_wire_checkpoint(char *buf, uint64_t offset, uint64_t fetched, const char *etag, const char *last_modified,
                          size_t *ret_len);
int fetch_wire_result(char *buf, int error, const char *reason, const char *sha256, size_t *ret_len);
