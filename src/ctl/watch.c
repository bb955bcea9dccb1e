/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `krtiotctl watch` (watch.h). Standard output has the job's progress and
 * its result when it succeeded; standard error has everything else (which
 * job, waiting, krtiotd gone and back, a failure). On a terminal the
 * progress is one line redrawn with "\r" and erased ("\e[K") before any
 * other output, redrawn every second too, so that a stalled download shows
 * its rate falling to 0. A job that waits (for a window, for the download's
 * delay) is followed on: the line says what for and until when.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "client.h"
#include "follow.h"
#include "format.h"
#include "properties.h"
#include "rate.h"
#include "util/macro.h"
#include "watch.h"

/* After a final phase, how long the JobFinished signal (which says why) may take to follow. */
#define GRACE_USEC (1 * USEC_PER_SEC)
#define REDRAW_USEC (1 * USEC_PER_SEC)
/* Between tries to read the properties of a krtiotd that is back but does not answer yet. */
#define REREAD_USEC (1 * USEC_PER_SEC)

typedef struct Watch {
        sd_event *event;
        sd_bus *bus;
        bool tty;
        Properties props;
        Follow *follow;
        Rate rate;
        bool have_snapshot;  /* GetAll answered since the start, or since krtiotd came back */
        bool ever_snapshot;  /* GetAll answered once: failures from then on are not fatal */
        bool agent_away;
        bool said_waiting;
        bool line_shown;     /* the cursor is at the end of a progress line */
        char *said_job;      /* the job "Following job ..." was said for */
        char last_plain[512];
        sd_bus_slot *getall_slot;
        sd_event_source *grace_timer;
        sd_event_source *redraw_timer;
        sd_event_source *reread_timer;
        int exit_status;     /* -1 while running */
} Watch;

static uint64_t now_monotonic(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_realtime(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static size_t terminal_width(void)
{
        struct winsize ws = {};

        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
                return ws.ws_col - 1u; /* the last column would wrap on some terminals */
        return 79;
}

static void watch_clear_line(Watch *w)
{
        if (!w->line_shown)
                return;
        fputs("\r\033[K", stdout);
        fflush(stdout);
        w->line_shown = false;
}

static void watch_exit(Watch *w, int status)
{
        watch_clear_line(w);
        if (w->exit_status < 0)
                w->exit_status = status;
        sd_event_exit(w->event, 0);
}

/* A message on standard error, below the progress line. */
_printf_(2, 3) static void watch_say(Watch *w, const char *format, ...)
{
        va_list ap;

        watch_clear_line(w);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static void watch_show_progress(Watch *w)
{
        char line[sizeof(w->last_plain)];

        if (w->props.job_phase && strcmp(w->props.job_phase, "downloading") == 0)
                rate_add(&w->rate, now_monotonic(), w->props.job_bytes_done);

        if (w->tty && w->props.waiting_for && *w->props.waiting_for) {
                /* Redrawn every second too: the time left counts down. */
                format_waiting_line(line, sizeof(line), &w->props, MIN(terminal_width(), sizeof(line) - 1),
                                    now_realtime());
                printf("\r%s\033[K", line);
                w->line_shown = true;
        } else if (w->tty) {
                format_progress_line(line, sizeof(line), &w->props, rate_get(&w->rate, now_monotonic()),
                                     MIN(terminal_width(), sizeof(line) - 1));
                printf("\r%s\033[K", line);
                w->line_shown = true;
        } else {
                format_plain_line(line, sizeof(line), &w->props);
                if (strcmp(line, w->last_plain) == 0)
                        return;
                memcpy(w->last_plain, line, sizeof(line));
                printf("%s\n", line);
        }
        fflush(stdout);
}

/* "42 (target 2.0.1)", or "42" when the target is not known; escaped. Returns 0 and *RET, or -ENOMEM. */
static int job_name(const char *id, const char *target, char **ret)
{
        _cleanup_free_ char *i = format_escape(id), *t = format_escape(target);

        if (!i || !t)
                return -ENOMEM;
        if (asprintf(ret, "%s%s%s%s", i, *t ? " (target " : "", t, *t ? ")" : "") < 0)
                return -ENOMEM;
        return 0;
}

static void watch_finish(Watch *w)
{
        _cleanup_free_ char *name = NULL, *reason = NULL;
        const Follow *f = w->follow;

        if (w->exit_status >= 0)
                return;
        if (job_name(f->job_id, f->target_version, &name) < 0 || !(reason = format_escape(f->reason))) {
                watch_say(w, "Out of memory.");
                watch_exit(w, CTL_EXIT_FAILURE);
                return;
        }
        watch_clear_line(w);
        if (f->success) {
                printf("Job %s succeeded.\n", name);
                fflush(stdout);
        } else
                fprintf(stderr, "Job %s failed: %s\n", name, *reason ? reason : "no reason given");
        watch_exit(w, f->success ? CTL_EXIT_SUCCESS : CTL_EXIT_FAILURE);
}

static int on_grace_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        watch_finish(userdata);
        return 0;
}

static int on_redraw_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Watch *w = userdata;

        if (w->line_shown && w->follow->state == FOLLOW_RUNNING)
                watch_show_progress(w);
        (void)sd_event_source_set_time_relative(s, REDRAW_USEC);
        return 0;
}

/* The properties changed, or were read anew (SNAPSHOT): what that means for the job followed. */
static void watch_evaluate(Watch *w, bool snapshot)
{
        const Follow *f = w->follow;
        int r;

        if (w->exit_status >= 0)
                return;
        r = follow_update(w->follow, &w->props);
        if (r < 0) {
                watch_say(w, "Out of memory.");
                watch_exit(w, CTL_EXIT_FAILURE);
                return;
        }
        switch (r) {
        case FOLLOW_WAITING:
                watch_clear_line(w);
                if (w->said_waiting)
                        break;
                w->said_waiting = true;
                if (f->want_id) {
                        _cleanup_free_ char *id = format_escape(f->want_id);

                        watch_say(w, "Waiting for job %s to start.", id ? id : "");
                } else
                        watch_say(w, "No job is running; waiting for the next one.");
                break;
        case FOLLOW_RUNNING:
                if (!w->said_job || strcmp(w->said_job, f->job_id) != 0) {
                        _cleanup_free_ char *name = NULL;

                        if (free_and_strdup(&w->said_job, f->job_id) < 0 ||
                            job_name(f->job_id, f->target_version, &name) < 0) {
                                watch_say(w, "Out of memory.");
                                watch_exit(w, CTL_EXIT_FAILURE);
                                return;
                        }
                        watch_say(w, "Following job %s.", name);
                        rate_reset(&w->rate);
                }
                watch_show_progress(w);
                break;
        case FOLLOW_ENDED:
                /* A record read whole, or the signal, is the last word; a change waits for the signal. */
                if (!snapshot && !f->from_signal && w->grace_timer)
                        break;
                if (snapshot || f->from_signal ||
                    sd_event_add_time_relative(w->event, &w->grace_timer, CLOCK_MONOTONIC, GRACE_USEC, 0,
                                               on_grace_timer, w) < 0)
                        watch_finish(w);
                break;
        }
}

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);

static void watch_read_properties(Watch *w)
{
        int r;

        w->getall_slot = sd_bus_slot_unref(w->getall_slot);
        r = sd_bus_call_method_async(w->bus, &w->getall_slot, KRTIOT_BUS_NAME, KRTIOT_OBJECT_PATH,
                                     "org.freedesktop.DBus.Properties", "GetAll", on_get_all, w, "s",
                                     KRTIOT_INTERFACE);
        if (r < 0)
                watch_exit(w, client_fail(NULL, r, "read krtiotd's properties"));
}

static int on_reread_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Watch *w = userdata;

        w->reread_timer = sd_event_source_unref(w->reread_timer);
        if (!w->agent_away)
                watch_read_properties(w);
        return 0;
}

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Watch *w = userdata;
        const sd_bus_error *e;
        Properties fresh = {};
        int r;

        w->getall_slot = sd_bus_slot_unref(w->getall_slot);
        e = sd_bus_message_get_error(m);
        if (e) {
                /* At the start, krtiotd must be there; later it may be restarting. */
                if (!w->ever_snapshot)
                        watch_exit(w, client_fail(e, sd_bus_message_get_errno(m), "read krtiotd's properties"));
                else if (!client_error_is_absent(e) && !w->reread_timer) {
                        _cleanup_free_ char *msg = format_escape(e->message ? e->message : e->name);

                        watch_say(w, "Failed to read krtiotd's properties: %s; trying again.", msg ? msg : "");
                        (void)sd_event_add_time_relative(w->event, &w->reread_timer, CLOCK_MONOTONIC,
                                                         REREAD_USEC, 0, on_reread_timer, w);
                }
                return 0;
        }

        r = properties_read(&fresh, m);
        if (r < 0) {
                properties_clear(&fresh);
                watch_say(w, "Failed to read krtiotd's properties: %s", strerror(-r));
                watch_exit(w, CTL_EXIT_FAILURE);
                return 0;
        }
        properties_clear(&w->props);
        w->props = fresh;
        w->have_snapshot = w->ever_snapshot = true;
        watch_evaluate(w, true);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Watch *w = userdata;
        const char *interface;
        int r;

        r = sd_bus_message_read_basic(m, 's', &interface);
        if (r < 0 || strcmp(interface, KRTIOT_INTERFACE) != 0)
                return 0;
        r = properties_read(&w->props, m);
        if (r >= 0) {
                /* The contract sends values; a property only invalidated is read again whole. */
                r = sd_bus_message_enter_container(m, 'a', "s");
                if (r > 0)
                        r = sd_bus_message_at_end(m, false);
                if (r == 0)
                        watch_read_properties(w);
        }
        if (r < 0) {
                watch_say(w, "Ignoring a malformed PropertiesChanged signal: %s", strerror(-r));
                watch_read_properties(w);
                return 0;
        }
        if (w->have_snapshot)
                watch_evaluate(w, false);
        return 0;
}

static int on_job_finished(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Watch *w = userdata;
        const char *id, *target, *reason;
        int success, r;

        r = sd_bus_message_read(m, "ssbs", &id, &target, &success, &reason);
        if (r < 0) {
                watch_say(w, "Ignoring a malformed JobFinished signal: %s", strerror(-r));
                return 0;
        }
        r = follow_job_finished(w->follow, id, target, success, reason);
        if (r < 0) {
                watch_say(w, "Out of memory.");
                watch_exit(w, CTL_EXIT_FAILURE);
        } else if (r == FOLLOW_ENDED)
                watch_finish(w);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Watch *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 ||
            strcmp(name, KRTIOT_BUS_NAME) != 0)
                return 0;

        if (!*new_owner) {
                if (w->agent_away)
                        return 0;
                w->agent_away = true;
                w->have_snapshot = false;
                w->getall_slot = sd_bus_slot_unref(w->getall_slot);
                w->reread_timer = sd_event_source_unref(w->reread_timer);
                rate_reset(&w->rate);
                /* A job that showed its end needs no word from a krtiotd that left. */
                if (w->follow->state == FOLLOW_ENDED)
                        watch_finish(w);
                else
                        watch_say(w, "krtiotd went away; waiting for it to come back.");
                return 0;
        }
        if (w->agent_away)
                watch_say(w, "krtiotd is back.");
        w->agent_away = false;
        w->have_snapshot = false;
        watch_read_properties(w);
        return 0;
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Watch *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e)
                watch_exit(w, client_fail(e, sd_bus_message_get_errno(m), "subscribe to krtiotd's signals"));
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        Watch *w = userdata;

        if (w->line_shown) {
                fputc('\n', stdout);
                fflush(stdout);
                w->line_shown = false;
        }
        watch_exit(w, 128 + (int)si->ssi_signo);
        return 0;
}

static int watch_subscribe(Watch *w)
{
        static const char *const rules[] = {
                "type='signal',sender='" KRTIOT_BUS_NAME "',path='" KRTIOT_OBJECT_PATH "',"
                "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
                "arg0='" KRTIOT_INTERFACE "'",
                "type='signal',sender='" KRTIOT_BUS_NAME "',path='" KRTIOT_OBJECT_PATH "',"
                "interface='" KRTIOT_INTERFACE "',member='JobFinished'",
                "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" KRTIOT_BUS_NAME "'",
        };
        const sd_bus_message_handler_t handlers[] = {
                on_properties_changed,
                on_job_finished,
                on_name_owner_changed,
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
                /* Floating slots: they live as long as the connection. */
                r = sd_bus_add_match_async(w->bus, NULL, rules[i], handlers[i], on_match_installed, w);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int watch_setup(Watch *w)
{
        sigset_t mask;
        int r;

        r = sd_event_new(&w->event);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(w->bus, w->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        /* A bus that goes away ends the loop with the status still unset. */
        r = sd_bus_set_exit_on_disconnect(w->bus, true);
        if (r < 0)
                return r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return negative_errno();
        r = sd_event_add_signal(w->event, NULL, SIGINT, on_signal, w);
        if (r < 0)
                return r;
        r = sd_event_add_signal(w->event, NULL, SIGTERM, on_signal, w);
        if (r < 0)
                return r;

        if (w->tty) {
                r = sd_event_add_time_relative(w->event, &w->redraw_timer, CLOCK_MONOTONIC, REDRAW_USEC, 0,
                                               on_redraw_timer, w);
                if (r < 0)
                        return r;
                r = sd_event_source_set_enabled(w->redraw_timer, SD_EVENT_ON);
                if (r < 0)
                        return r;
        }

        r = watch_subscribe(w);
        if (r < 0)
                return r;
        return sd_bus_call_method_async(w->bus, &w->getall_slot, KRTIOT_BUS_NAME, KRTIOT_OBJECT_PATH,
                                        "org.freedesktop.DBus.Properties", "GetAll", on_get_all, w, "s",
                                        KRTIOT_INTERFACE);
}

static void watch_done(Watch *w)
{
        w->getall_slot = sd_bus_slot_unref(w->getall_slot);
        w->grace_timer = sd_event_source_unref(w->grace_timer);
        w->redraw_timer = sd_event_source_unref(w->redraw_timer);
        w->reread_timer = sd_event_source_unref(w->reread_timer);
        if (w->bus)
                (void)sd_bus_detach_event(w->bus);
        w->event = sd_event_unref(w->event);
        w->follow = follow_free(w->follow);
        properties_clear(&w->props);
        w->said_job = mfree(w->said_job);
}

int watch_run(sd_bus *bus, const char *job_id, bool tty)
{
        Watch w = {
                .bus = bus,
                .tty = tty,
                .exit_status = -1,
        };
        int r;

        r = follow_new(job_id, &w.follow);
        if (r >= 0)
                r = watch_setup(&w);
        if (r >= 0)
                r = sd_event_loop(w.event);
        if (r < 0 && w.exit_status < 0)
                w.exit_status = client_fail(NULL, r, "watch krtiotd");
        if (w.exit_status < 0) {
                watch_clear_line(&w);
                fprintf(stderr, "Lost the connection to the system bus.\n");
                w.exit_status = CTL_EXIT_UNAVAILABLE;
        }
        watch_done(&w);
        return w.exit_status;
}
