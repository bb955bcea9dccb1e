/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging to stderr with sd-daemon priority prefixes ("<6>…"), which
 * journald reads as the priority of the line. Only the top of a call chain
 * logs; helpers return codes. Never pass a secret to these.
 */
#pragma once

#include <syslog.h>

#include "util/macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);

/* Parses "err", "warning", "notice", "info", "debug" (and their numbers). -EINVAL otherwise. */
int log_level_from_string(const char *s);

/*
 * Logs at LEVEL; ERROR (an errno, either sign, or 0) is made available to %m.
 * Returns -abs(ERROR), or -EIO when ERROR is 0, so that callers can write
 * return log_error_errno(r, "…: %m");
 */
int log_internal(int level, int error, const char *format, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...) log_internal(level, error, __VA_ARGS__)
#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_internal(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_internal(LOG_INFO, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, e, __VA_ARGS__)
