/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The properties of krtiotd's object (krtiot-dbus(7)) as one record, read
 * from the a{sv} of GetAll or PropertiesChanged, and rendered as the JSON
 * object of `krtiotctl status --json`. The table in properties.c is the only
 * place that names a property; its order is the contract's, and so is the
 * JSON's.
 *
 * Reading is lenient: a property that is not in the contract, or that has
 * another type than the contract's, is skipped, so that an agent newer or
 * older than this client still shows what both know. Strings are kept as
 * the bus sent them (valid UTF-8, anything else): whoever prints them to a
 * terminal escapes them (format.h).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

typedef struct Properties {
        char *state;
        bool registered;
        bool connected;
        char *broker;
        char *product_id;
        char *device_id;
        char *hardware_version;
        char *firmware_version;
        uint64_t last_report; /* µs since the epoch, CLOCK_REALTIME; 0: never */
        char *job_id;
        char *job_target_version;
        char *job_phase;
        uint32_t job_progress;
        uint64_t job_bytes_done;
        uint64_t job_bytes_total;
        char *last_error;
        char *last_job_result;
        char *status_text;
        char *waiting_for;      /* "download", "install", "reboot"; empty: the job does not wait */
        uint64_t waiting_until; /* µs since the epoch, CLOCK_REALTIME; 0: not known */
} Properties;

/* Frees the strings and zeroes *P (empty strings read as NULL then). Accepts a zeroed record. */
void properties_clear(Properties *p);

/*
 * Sets the property NAME from a value of D-Bus type TYPE ('s', 'b', 'u', 't')
 * at VALUE (a const char *, an int, a uint32_t, a uint64_t). Returns 1 when
 * set, 0 when NAME is unknown or TYPE is not its type (nothing changed), or
 * -ENOMEM with *P untouched.
 */
int properties_set(Properties *p, const char *name, char type, const void *value);

/*
 * Reads an a{sv} (GetAll's reply, or PropertiesChanged's second argument)
 * from M, which must be positioned at the array, into *P; properties not in
 * the array keep their values. Returns the number of properties set, or
 * -errno (-EBADMSG and others from sd-bus for a malformed message, -ENOMEM);
 * on failure *P may hold the properties read before the error.
 */
int properties_read(Properties *p, sd_bus_message *m);

/*
 * The JSON object of `krtiotctl status --json`: every property of the
 * contract, exactly once, under its D-Bus name, in the contract's order;
 * strings as strings (empty when unset), booleans, and numbers as integers
 * (LastReport, WaitingUntil in µs). One line, no trailing newline. Returns 0 and *RET
 * (free() it), or -ENOMEM.
 */
int properties_to_json(const Properties *p, char **ret);

/* The contract's I-th property name (from 0, in its order), or NULL past the last one. */
const char *properties_name(size_t i);
