/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OTA jobs (SPEC 5): CMD 11 validated and receipted at once; the image
 * downloaded by krtiot-fetch (fetcher.c), installed by krtiot-install, which
 * runs the hook (install-client.c), the result reported; every step
 * journaled (journal.c) so that a restart or a reboot in any phase continues
 * correctly.
 */
#pragma once

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "protocol.h"
#include "status.h"

typedef struct Ota Ota;

typedef struct OtaCallbacks {
        /* Publish PAYLOAD on ota/post. Returns 0 or -errno (e.g. -ENOTCONN). */
        int (*publish)(Ota *o, const char *payload, void *userdata);
        /* Send a version report (CMD 10) now. */
        void (*report)(Ota *o, void *userdata);
} OtaCallbacks;

/*
 * Takes a reference on CONFIG; ota_set_config() re-points it after a reload.
 * STATUS is borrowed (the Agent's): the job and its progress are shown there.
 */
int ota_new(sd_event *event, Config *config, Status *status, const OtaCallbacks *callbacks, void *userdata,
            Ota **ret);
Ota *ota_free(Ota *o);
void ota_set_config(Ota *o, Config *config);

/* Loads the journal and continues the job it holds. */
void ota_start(Ota *o);

/*
 * A decoded CMD 11 from ota/set, or a message there whose CMD is missing or
 * bad (CMD_NONE). Answered with a CMD 11 receipt in every case: FAIL with
 * m->invalid or the validation's REASON, or OK; the same ID again gets the
 * same answer.
 */
void ota_command(Ota *o, const PlatformMessage *m);

/* The session is up: sends the outcome messages made while offline. */
void ota_connected(Ota *o);

/* Whether version reports must wait (a job's commit after a reboot is being decided). */
bool ota_holds_reports(const Ota *o);

/*
 * InstallNow(): the job waiting for its download delay or its install
 * window goes on at once (and waits for no window until it is installed).
 * RebootNow(): the job waiting for its reboot window asks for the reboot
 * now. Return 0, or -ENOENT when no job waits for that.
 */
int ota_install_now(Ota *o);
int ota_reboot_now(Ota *o);

/* Whether a job is under way. */
bool ota_active(const Ota *o);
