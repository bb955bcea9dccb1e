/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One run of krtiot-fetch once its command line is understood: the URL
 * (from standard input for "-"), the signals that cancel, the download
 * itself (download.c), and what it tells: fetch-wire status lines on
 * --status-fd, human lines on stderr. main.c is the command line only.
 */
#pragma once

#include "download.h"

typedef struct FetchOptions {
        DownloadParams params; /* params.url is set by fetch_run() */
        const char *url_arg;   /* the URL, or "-": the first line of standard input */
        int status_fd;         /* -1: none */
} FetchOptions;

/* Runs the download O describes. Returns the exit status (FETCH_EXIT_*, fetch-wire.h). */
int fetch_run(FetchOptions *o);
