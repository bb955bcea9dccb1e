/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The clock watcher (clock.h): inotify on timesyncd's directory, a
 * TFD_TIMER_CANCEL_ON_SET timerfd for clock changes.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "clock.h"
#include "log.h"
#include "util/macro.h"

#define TIMESYNC_DIR "/run/systemd/timesync"
#define TIMESYNC_FILE "synchronized"
/*
 * Without timesyncd, a clock at least this close to the build's date counts
 * as set: what the rule is for is a clock in 1970 or at systemd's own epoch,
 * years back, not a package whose changelog is dated later today.
 */
#define BUILD_EPOCH_SLACK_SEC (7 * 86400)

struct ClockWatch {
        sd_event *event;
        ClockChanged changed;
        void *userdata;
        char *dir;                /* timesyncd's runtime directory */
        sd_event_source *inotify; /* DIR, or the directory above it while DIR does not exist */
        sd_event_source *timer;   /* the timerfd that tells of clock changes */
        int timer_fd;
};

static int clock_watch_arm_timerfd(ClockWatch *w)
{
        /* Far in the future (2255, or 2038 where time_t has 32 bits): it never expires, it only gets cancelled
         * when the clock is set. */
        struct itimerspec its = {
                .it_value = { .tv_sec = sizeof(time_t) > 4 ? (time_t)9000000000LL : (time_t)INT32_MAX },
        };

        if (timerfd_settime(w->timer_fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0)
                return -errno;
        return 0;
}

static int on_clock_set(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ClockWatch *w = userdata;
        uint64_t n;

        /* ECANCELED: the clock was set. */
        if (read(fd, &n, sizeof(n)) < 0 && errno != ECANCELED && errno != EAGAIN)
                return log_warning_errno(errno, "Cannot read the clock-change timer: %m");
        if (clock_watch_arm_timerfd(w) < 0)
                log_warning_errno(errno, "Cannot re-arm the clock-change timer: %m");
        log_info("The system clock was set; update windows are judged again.");
        w->changed(w, w->userdata);
        return 0;
}

static int clock_watch_add_inotify(ClockWatch *w);

static int on_inotify(sd_event_source *s, const struct inotify_event *event, void *userdata)
{
        ClockWatch *w = userdata;
        /* The directory appeared (timesyncd started) or went: watch the right one again. */
        const char *base = strrchr(w->dir, '/');

        if (event->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF) ||
            (event->len > 0 && base && strcmp(base + 1, event->name) == 0)) {
                w->inotify = sd_event_source_disable_unref(w->inotify);
                (void)clock_watch_add_inotify(w);
        }
        w->changed(w, w->userdata);
        return 0;
}

static int clock_watch_add_inotify(ClockWatch *w)
{
        char parent[PATH_MAX];
        const char *watched = w->dir;
        struct stat st;
        char *slash;
        int r;

        if (stat(w->dir, &st) == 0 && S_ISDIR(st.st_mode))
                r = sd_event_add_inotify(w->event, &w->inotify, w->dir,
                                         IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE_SELF |
                                                 IN_MOVE_SELF | IN_ONLYDIR,
                                         on_inotify, w);
        else {
                /* Not there (yet): the directory above tells when it is made. */
                if ((size_t)snprintf(parent, sizeof(parent), "%s", w->dir) >= sizeof(parent))
                        return -ENAMETOOLONG;
                slash = strrchr(parent, '/');
                if (!slash || slash == parent)
                        return 0;
                *slash = '\0';
                watched = parent;
                r = sd_event_add_inotify(w->event, &w->inotify, parent, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR,
                                         on_inotify, w);
        }
        if (r < 0)
                return log_debug_errno(r, "Cannot watch %s: %m", watched);
        (void)sd_event_source_set_description(w->inotify, "timesync");
        return 0;
}

bool clock_watch_synchronized(ClockWatch *w, const char **ret_why)
{
        _cleanup_free_ char *file = NULL;
        struct stat st;

        if (stat(w->dir, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (asprintf(&file, "%s/%s", w->dir, TIMESYNC_FILE) >= 0 && access(file, F_OK) == 0)
                        return true;
                *ret_why = "the system clock is not synchronised yet (systemd-timesyncd)";
                return false;
        }
        if (time(NULL) >= (time_t)BUILD_EPOCH - BUILD_EPOCH_SLACK_SEC)
                return true;
        *ret_why = "the system clock is earlier than this build: it is not set yet";
        return false;
}

int clock_watch_new(sd_event *event, ClockChanged changed, void *userdata, ClockWatch **ret)
{
        const char *dir = secure_getenv("KRTIOT_TIMESYNC_DIR");
        ClockWatch *w;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(event);
        w->changed = changed;
        w->userdata = userdata;
        w->timer_fd = -1;
        w->dir = strdup(dir && dir[0] ? dir : TIMESYNC_DIR);
        if (!w->dir) {
                clock_watch_free(w);
                return -ENOMEM;
        }

        w->timer_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
        r = w->timer_fd < 0 ? -errno : clock_watch_arm_timerfd(w);
        if (r >= 0)
                r = sd_event_add_io(event, &w->timer, w->timer_fd, EPOLLIN, on_clock_set, w);
        if (r < 0) {
                clock_watch_free(w);
                return r;
        }
        (void)sd_event_source_set_description(w->timer, "clock-set");
        (void)clock_watch_add_inotify(w); /* without it, a clock set or the next judgement still sees it */
        *ret = w;
        return 0;
}

ClockWatch *clock_watch_free(ClockWatch *w)
{
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->inotify);
        sd_event_source_disable_unref(w->timer);
        if (w->timer_fd >= 0)
                close(w->timer_fd);
        sd_event_unref(w->event);
        free(w->dir);
        free(w);
        return NULL;
}
