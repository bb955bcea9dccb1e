/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Outcome records (outcomes.h): KEY.outcome files in the runtime directory.
 *
 * Invariants:
 *  - a record is written by write_file_atomic(): after a crash it holds a
 *    whole answer or is absent, never half of one;
 *  - every name made here is a valid job key plus OUTCOME_SUFFIX, so nothing
 *    outside the directory is ever touched;
 *  - what is read back is parsed like any answer (install-wire.c) and must
 *    be a `done`: the file is ours, but a reboot is decided on it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outcomes.h"
#include "util/fileio.h"
#include "util/macro.h"
#include "util/random-id.h"

#define OUTCOME_SUFFIX ".outcome"
#define OUTCOME_NAME_MAX (RANDOM_ID_LEN + sizeof(OUTCOME_SUFFIX))
#define OUTCOME_TMP_INFIX OUTCOME_SUFFIX ".tmp."

static int outcome_name(const char *key, char name[OUTCOME_NAME_MAX])
{
        if (!install_key_valid(key))
                return -EINVAL;
        (void)snprintf(name, OUTCOME_NAME_MAX, "%s" OUTCOME_SUFFIX, key);
        return 0;
}

/* Whether NAME is KEY.outcome (KIND 0) or what write_file_atomic() leaves of one, KEY.outcome.tmp.X (1). */
static bool outcome_name_is(const char *name, int kind)
{
        size_t n = strlen(name);

        if (n < RANDOM_ID_LEN || strspn(name, RANDOM_ID_SYMBOLS) != RANDOM_ID_LEN)
                return false;
        if (kind == 0)
                return strcmp(name + RANDOM_ID_LEN, OUTCOME_SUFFIX) == 0;
        return strncmp(name + RANDOM_ID_LEN, OUTCOME_TMP_INFIX, strlen(OUTCOME_TMP_INFIX)) == 0;
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/*
 * Removes the oldest records until at most OUTCOMES_MAX are left. A scan per
 * removal: there is one too many after a save, rarely more.
 */
static int outcomes_prune(const char *dir)
{
        for (;;) {
                _cleanup_(closedirp) DIR *d = opendir(dir);
                char oldest[NAME_MAX + 1] = "";
                struct timespec oldest_time = {};
                unsigned n = 0;
                struct dirent *de;

                if (!d)
                        return negative_errno();
                while ((de = readdir(d))) {
                        struct stat st;

                        if (!outcome_name_is(de->d_name, 0) ||
                            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        n++;
                        if (!oldest[0] || st.st_mtim.tv_sec < oldest_time.tv_sec ||
                            (st.st_mtim.tv_sec == oldest_time.tv_sec &&
                             st.st_mtim.tv_nsec < oldest_time.tv_nsec)) {
                                (void)snprintf(oldest, sizeof(oldest), "%s", de->d_name);
                                oldest_time = st.st_mtim;
                        }
                }
                if (n <= OUTCOMES_MAX)
                        return 0;
                if (unlinkat(dirfd(d), oldest, 0) < 0)
                        return negative_errno();
        }
}

int outcomes_prepare(const char *dir)
{
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        struct stat st;

        if (!dir)
                return -EINVAL;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        if (lstat(dir, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (st.st_uid != geteuid() || (st.st_mode & 0022))
                return -EPERM;

        /* No write is under way at the start: what a kill left can go. */
        d = opendir(dir);
        if (!d)
                return negative_errno();
        while ((de = readdir(d)))
                if (outcome_name_is(de->d_name, 1))
                        (void)unlinkat(dirfd(d), de->d_name, 0);
        return 0;
}

int outcomes_save(const char *dir, const char *key, const InstallAnswer *a)
{
        char name[OUTCOME_NAME_MAX], line[WIRE_LINE_MAX];
        size_t len;
        int r;

        if (!a || a->type != INSTALL_ANSWER_DONE)
                return -EINVAL;
        r = outcome_name(key, name);
        if (r < 0)
                return r;
        r = install_wire_answer(line, a, &len);
        if (r < 0)
                return r;
        r = write_file_atomic(dir, name, line, len, 0600);
        if (r < 0)
                return r;
        return outcomes_prune(dir);
}

int outcomes_load(const char *dir, const char *key, WireMessage *msg, InstallAnswer *ret)
{
        _cleanup_free_ char *text = NULL;
        char name[OUTCOME_NAME_MAX];
        InstallAnswer a;
        size_t len;
        int r;

        r = outcome_name(key, name);
        if (r < 0)
                return r;
        r = read_state_file(dir, name, WIRE_LINE_MAX, &text, &len);
        if (r < 0)
                return r;
        r = install_wire_parse_answer(text, len, msg, &a);
        if (r < 0 || a.type != INSTALL_ANSWER_DONE)
                return -EBADMSG;
        *ret = a;
        return 0;
}

int outcomes_remove(const char *dir, const char *key)
{
        _cleanup_close_ int dfd = -1;
        char name[OUTCOME_NAME_MAX];
        int r;

        r = outcome_name(key, name);
        if (r < 0)
                return r;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();
        if (unlinkat(dfd, name, 0) < 0)
                return negative_errno();
        return 0;
}
