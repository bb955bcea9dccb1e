/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Agent owns every other object (config, MQTT session, registration,
 * OTA, timers) and wires their events together. main() makes one, runs it,
 * and frees it.
 */
#pragma once

#include "config.h"

typedef struct Agent Agent;

/*
 * Loads PATH (config_load()) and logs every problem found, one line each.
 * Returns 0 and a new Config, or -errno.
 */
int agent_load_config(const char *path, Config **ret);

/*
 * Takes a reference of its own on CONFIG (loaded from CONFIG_PATH, which
 * SIGHUP re-reads): the caller keeps, and drops, its own whatever the
 * result. Returns 0 and a new Agent, or -errno with nothing kept.
 */
int agent_new(const char *config_path, Config *config, Agent **ret);
Agent *agent_free(Agent *a);

/* Runs the loop until SIGTERM/SIGINT. Returns the exit status (0) or -errno. */
int agent_run(Agent *a);
