/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File helpers. write_file_atomic() is the one place that knows how to make
 * a file durable: temporary file, fsync, rename, fsync of the directory, in
 * that order; a failure before the rename leaves no temporary file behind,
 * and what a kill leaves, remove_stale_tmpfiles() removes at the next start.
 * The readers never allocate more than their caller's limit, and they erase
 * what they drop on the way, because they also read secrets. They read
 * regular files only, and never block in open(): a FIFO planted where a
 * file should be must not hang the daemon before it can answer SIGTERM.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "util/fileio.h"
#include "util/macro.h"
#include "util/random-id.h"

#define WHITESPACE " \t\n\r\f\v"
#define ONE_LINE_FILE_MAX 4096
#define TMP_NAME_TRIES 16

static bool filename_valid(const char *name)
{
        return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int loop_write(int fd, const void *data, size_t len)
{
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0) /* never for a regular file; don't spin if it happens */
                        return -EIO;
                p += k;
                len -= (size_t)k;
        }
        return 0;
}

/* Creates DFD/NAME.tmp.RANDOM with MODE (narrowed by the umask, widened back by the caller). */
static int open_tmpfile(int dfd, const char *name, mode_t mode, char ret_tmp[static NAME_MAX + 1])
{
        for (unsigned i = 0; i < TMP_NAME_TRIES; i++) {
                char suffix[RANDOM_ID_LEN + 1];
                int fd, r;

                r = random_id(suffix);
                if (r < 0)
                        return r;

                r = snprintf(ret_tmp, NAME_MAX + 1, "%s.tmp.%s", name, suffix);
                if (r < 0 || r > NAME_MAX)
                        return -ENAMETOOLONG;

                fd = openat(dfd, ret_tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                            mode);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        return negative_errno();
        }
        return -EEXIST;
}

/* Everything that happens to the temporary file before it may be renamed. Closes FD. */
static int tmpfile_fill(int fd, const void *data, size_t len, mode_t mode)
{
        _cleanup_close_ int f = fd;
        int r;

        /* The umask narrowed the mode at creation; the caller's MODE is what it must be. */
        if (fchmod(f, mode) < 0)
                return negative_errno();

        r = loop_write(f, data, len);
        if (r < 0)
                return r;

        if (fsync(f) < 0)
                return negative_errno();

        /* After fsync a close error means nothing was lost, but treat it as the failure it claims. */
        if (close(TAKE_FD(f)) < 0)
                return negative_errno();

        return 0;
}

/* Whether ENTRY is a name open_tmpfile() makes for NAME. */
static bool tmpfile_name_of(const char *entry, const char *name)
{
        size_t n = strlen(name);
        const char *suffix;

        if (strncmp(entry, name, n) != 0 || strncmp(entry + n, ".tmp.", 5) != 0)
                return false;
        suffix = entry + n + 5;
        return strlen(suffix) == RANDOM_ID_LEN && strspn(suffix, RANDOM_ID_SYMBOLS) == RANDOM_ID_LEN;
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

int remove_stale_tmpfiles(const char *dir, const char *name)
{
        _cleanup_(closedirp) DIR *d = NULL;
        int removed = 0, r = 0;

        if (!dir || !filename_valid(name))
                return -EINVAL;

        d = opendir(dir);
        if (!d)
                return negative_errno();

        /* errno tells readdir()'s end from its failure: cleared before each call. */
        errno = 0;
        for (struct dirent *de; (de = readdir(d)); errno = 0) {
                if (!tmpfile_name_of(de->d_name, name))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
                        if (r == 0)
                                r = negative_errno();
                        continue;
                }
                removed++;
        }
        if (errno != 0 && r == 0)
                r = negative_errno();

        return r < 0 ? r : removed;
}

int write_file_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode)
{
        _cleanup_close_ int dfd = -1;
        char tmp[NAME_MAX + 1];
        int fd, r;

        if (!dir || !filename_valid(name) || (!data && len > 0))
                return -EINVAL;

        mode &= 07777;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();

        fd = open_tmpfile(dfd, name, mode, tmp);
        if (fd < 0)
                return fd;

        r = tmpfile_fill(fd, data, len, mode);
        if (r < 0)
                goto fail;

        if (renameat(dfd, tmp, dfd, name) < 0) {
                r = negative_errno();
                goto fail;
        }

        /*
         * Makes the rename itself durable. NAME already holds the new content
         * here, so a failure cannot be undone, only reported. EINVAL means the
         * file system cannot sync directories at all: nothing more can be done,
         * and failing forever would be worse.
         */
        if (fsync(dfd) < 0 && errno != EINVAL)
                return negative_errno();

        return 0;

fail:
        (void)unlinkat(dfd, tmp, 0);
        return r;
}

/* Moves BUF into a bigger allocation, erasing the old one: it may hold a secret. */
static int buffer_grow(char **buf, size_t len, size_t new_size)
{
        char *n;

        n = malloc(new_size);
        if (!n)
                return -ENOMEM;
        memcpy(n, *buf, len);
        explicit_bzero(*buf, len);
        free(*buf);
        *buf = n;
        return 0;
}

/* What a reader makes of ST: 0 for a regular file, else why it is refused. */
static int stat_check_regular(const struct stat *st)
{
        if (S_ISREG(st->st_mode))
                return 0;
        if (S_ISDIR(st->st_mode))
                return -EISDIR;
        if (S_ISLNK(st->st_mode)) /* only seen when not following */
                return -ELOOP;
        return -EBADFD;
}

/*
 * Opens DFD/PATH for reading if it is a regular file; NOFOLLOW refuses a
 * symbolic link as its last component. Returns the fd or -errno.
 */
static int open_regular(int dfd, const char *path, bool nofollow)
{
        _cleanup_close_ int opened = -1;
        struct stat st;
        int r;

        /* Checked before open() too: opening a device can act by itself (a watchdog arms, a tape
         * rewinds), and a FIFO would block without O_NONBLOCK. */
        if (fstatat(dfd, path, &st, nofollow ? AT_SYMLINK_NOFOLLOW : 0) < 0)
                return negative_errno();
        r = stat_check_regular(&st);
        if (r < 0)
                return r;

        /* O_NONBLOCK: it may have been swapped for a FIFO since; the fstat() below refuses that. */
        opened = openat(dfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
        if (opened < 0)
                return negative_errno();
        if (fstat(opened, &st) < 0)
                return negative_errno();
        r = stat_check_regular(&st);
        if (r < 0)
                return r;

        return TAKE_FD(opened);
}

/* Reads all of FD, a regular file, into a new buffer; see read_file_limited(). */
static int read_fd_limited(int fd, size_t max, char **ret, size_t *ret_len)
{
        char *buf = NULL;
        size_t size, len = 0;
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if ((uint64_t)st.st_size > max)
                return -EFBIG;

        /*
         * The size from stat() is only a hint (0 for /proc and /sys files, and
         * the file may grow meanwhile); reading one byte past MAX is what tells
         * a file that is too big.
         */
        size = (st.st_size > 0 ? (size_t)st.st_size : MIN(max, (size_t)4095)) + 1;
        buf = malloc(size);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t k;

                if (len == size) {
                        if (len > max) {
                                r = -EFBIG;
                                goto fail;
                        }
                        size = len > max - len ? max + 1 : 2 * len;
                        r = buffer_grow(&buf, len, size);
                        if (r < 0)
                                goto fail;
                }

                k = read(fd, buf + len, size - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        goto fail;
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }

        /* len < size here: the loop only reads when there is room, and stops at EOF. */
        buf[len] = '\0';
        *ret = buf;
        if (ret_len)
                *ret_len = len;
        return 0;

fail:
        explicit_bzero(buf, len);
        free(buf);
        return r;
}

int read_file_limited(const char *path, size_t max, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = -1;

        /* max + 1 must not overflow, and read() takes at most SSIZE_MAX. */
        if (!path || !ret || max >= SSIZE_MAX)
                return -EINVAL;

        fd = open_regular(AT_FDCWD, path, false);
        if (fd < 0)
                return fd;
        return read_fd_limited(fd, max, ret, ret_len);
}

int open_state_file(const char *dir, const char *name)
{
        _cleanup_close_ int dfd = -1;

        if (!dir || !filename_valid(name))
                return -EINVAL;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();
        return open_regular(dfd, name, true);
}

int read_state_file(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = -1;

        if (!ret || max >= SSIZE_MAX)
                return -EINVAL;

        fd = open_state_file(dir, name);
        if (fd < 0)
                return fd;
        return read_fd_limited(fd, max, ret, ret_len);
}

const char *read_error_message(int error)
{
        error = error < 0 ? -error : error;

        switch (error) {
        case EBADFD:
                return "not a regular file";
        case ELOOP:
                /* The same code for a refused link and for a loop of links. */
                return "a symbolic link (not allowed here), or a loop of them";
        default:
                return strerror(error);
        }
}

int read_one_line_file(const char *path, char **ret)
{
        char *buf = NULL;
        int r;

        if (!ret)
                return -EINVAL;

        r = read_file_limited(path, ONE_LINE_FILE_MAX, &buf, NULL);
        if (r < 0)
                return r;

        *ret = strstrip(buf);
        return 0;
}

char *strstrip(char *s)
{
        size_t skip, len, total;

        if (!s)
                return NULL;

        skip = strspn(s, WHITESPACE);
        total = strlen(s);
        len = total - skip;
        while (len > 0 && strchr(WHITESPACE, s[skip + len - 1]))
                len--;

        /* Callers free() the result, so it must stay the start of the allocation. The old tail is
         * zeroed: it may be part of a secret, and erase_and_free() only sees up to the NUL. */
        memmove(s, s + skip, len);
        memset(s + len, 0, total - len);
        return s;
}
