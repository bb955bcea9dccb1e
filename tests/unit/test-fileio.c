/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fileio.c: the atomic write (content, mode whatever the umask, replacement
 * by rename, no temporary file left behind, and the order of the syscalls
 * that makes it durable, checked under strace), the bounded reads (regular
 * files only, never blocking on a FIFO, no link in the state directory) and
 * strstrip().
 *
 * Run as "test-fileio --write-atomic DIR NAME" it only performs one write:
 * that is the child traced by strace.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* nftw() */
#endif
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tap.h"
#include "util/fileio.h"
#include "util/macro.h"

#define STRACE "/usr/bin/strace"

static char tmpdir[64];

static void skip(const char *why)
{
        tap_count++;
        printf("ok %u # SKIP %s\n", tap_count, why);
}

static char *path_in(const char *dir, const char *name)
{
        static char buf[PATH_MAX];

        snprintf(buf, sizeof(buf), "%s/%s", dir, name);
        return buf;
}

/* Number of entries in DIR other than . and ..; with ONLY set, whether ONLY is the single one. */
static int count_entries(const char *dir, const char *only, bool *ret_only)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;
        bool match = true;

        if (!d)
                return -1;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                n++;
                if (only && strcmp(de->d_name, only) != 0) {
                        printf("#   unexpected entry '%s'\n", de->d_name);
                        match = false;
                }
        }
        closedir(d);
        if (ret_only)
                *ret_only = match;
        return n;
}

static void make_file(const char *path, const char *content, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content) ||
            fchmod(fd, mode) < 0)
                abort();
        close(fd);
}

static mode_t file_mode(const char *path)
{
        struct stat st;

        return stat(path, &st) < 0 ? (mode_t)-1 : st.st_mode & 07777;
}

static void test_write_read(void)
{
        char dir[128], *buf = NULL;
        static const char bin[] = "a\0b\nc\377";
        size_t len = 0;
        bool only;

        snprintf(dir, sizeof(dir), "%s/rw", tmpdir);
        if (mkdir(dir, 0755) < 0)
                abort();

        is_int(write_file_atomic(dir, "f", "hello\n", 6, 0600), 0, "write_file_atomic succeeds");
        is_int(read_file_limited(path_in(dir, "f"), 4096, &buf, &len), 0, "read_file_limited reads it back");
        is_str(buf, "hello\n", "  same content");
        is_int(len, 6, "  same length");
        free(buf);

        is_int(count_entries(dir, "f", &only), 1, "after success the directory holds only the file");
        ok(only, "  no temporary file is left");

        is_int(write_file_atomic(dir, "bin", bin, sizeof(bin), 0600), 0, "binary data with NULs");
        is_int(read_file_limited(path_in(dir, "bin"), 4096, &buf, &len), 0, "  reads back");
        ok(len == sizeof(bin) && memcmp(buf, bin, sizeof(bin)) == 0, "  byte for byte");
        free(buf);

        is_int(write_file_atomic(dir, "empty", "", 0, 0600), 0, "empty data");
        is_int(read_file_limited(path_in(dir, "empty"), 4096, &buf, &len), 0, "  reads back");
        ok(len == 0 && buf[0] == '\0', "  as an empty string");
        free(buf);
        is_int(write_file_atomic(dir, "null", NULL, 0, 0600), 0, "NULL data of length 0");
        is_int(write_file_atomic(dir, "null2", NULL, 1, 0600), -EINVAL, "NULL data of length 1 is -EINVAL");

        is_int(write_file_atomic(dir, "", "x", 1, 0600), -EINVAL, "an empty name is -EINVAL");
        is_int(write_file_atomic(dir, "a/b", "x", 1, 0600), -EINVAL, "a name with '/' is -EINVAL");
        is_int(write_file_atomic(dir, ".", "x", 1, 0600), -EINVAL, "'.' is -EINVAL");
        is_int(write_file_atomic(dir, "..", "x", 1, 0600), -EINVAL, "'..' is -EINVAL");
        is_int(count_entries(dir, NULL, NULL), 4, "the refused writes created nothing");
}

static void test_modes(void)
{
        char dir[128];
        struct stat before, after;
        mode_t old = umask(0);
        char *buf = NULL;

        snprintf(dir, sizeof(dir), "%s/modes", tmpdir);
        if (mkdir(dir, 0755) < 0)
                abort();

        is_int(write_file_atomic(dir, "a", "x", 1, 0600), 0, "write with umask 0");
        is_int(file_mode(path_in(dir, "a")), 0600, "  mode is 0600, not wider");

        umask(077);
        is_int(write_file_atomic(dir, "b", "x", 1, 0644), 0, "write 0644 with umask 077");
        is_int(file_mode(path_in(dir, "b")), 0644, "  mode is exactly 0644, not narrowed by the umask");
        is_int(write_file_atomic(dir, "c", "x", 1, 0600), 0, "write 0600 with umask 077");
        is_int(file_mode(path_in(dir, "c")), 0600, "  mode is 0600");

        umask(022);
        make_file(path_in(dir, "d"), "old content", 0644);
        if (stat(path_in(dir, "d"), &before) < 0)
                abort();
        is_int(write_file_atomic(dir, "d", "new", 3, 0600), 0, "replacing an existing 0644 file");
        is_int(file_mode(path_in(dir, "d")), 0600, "  the new file has mode 0600");
        is_int(read_file_limited(path_in(dir, "d"), 100, &buf, NULL), 0, "  reads");
        is_str(buf, "new", "  the new content, none of the old");
        free(buf);
        if (stat(path_in(dir, "d"), &after) < 0)
                abort();
        ok(before.st_ino != after.st_ino, "  it is a new inode: replaced by rename, not rewritten in place");
        is_int(count_entries(dir, NULL, NULL), 4, "no temporary files left (a, b, c, d)");

        umask(old);
}

static void test_failures(void)
{
        char dir[128], missing[128];
        bool only;
        int r;

        snprintf(dir, sizeof(dir), "%s/fail", tmpdir);
        snprintf(missing, sizeof(missing), "%s/no-such-dir", tmpdir);
        if (mkdir(dir, 0755) < 0)
                abort();

        is_int(write_file_atomic(missing, "f", "x", 1, 0600), -ENOENT, "a missing directory is -ENOENT");
        ok(access(missing, F_OK) < 0, "  and is not created");

        /* NAME is a non-empty directory: the temporary file is written, then the rename fails. */
        if (mkdir(path_in(dir, "target"), 0755) < 0)
                abort();
        make_file(path_in(dir, "target/keep"), "keep", 0644);
        r = write_file_atomic(dir, "target", "x", 1, 0600);
        ok(r == -EISDIR || r == -ENOTEMPTY || r == -EEXIST, "renaming over a directory fails with -errno");
        if (r >= 0)
                printf("#   got %d\n", r);
        is_int(count_entries(dir, "target", &only), 1, "  the temporary file was removed after the failure");
        ok(only, "  only the untouched directory remains");
        is_int(access(path_in(dir, "target/keep"), F_OK), 0, "  whose content is intact");

        if (geteuid() == 0) {
                skip("running as root: permissions do not stop root");
                skip("running as root: permissions do not stop root");
        } else {
                char ro[128];

                snprintf(ro, sizeof(ro), "%s/ro", tmpdir);
                if (mkdir(ro, 0555) < 0)
                        abort();
                is_int(write_file_atomic(ro, "f", "x", 1, 0600), -EACCES,
                       "a read-only directory is -EACCES");
                is_int(count_entries(ro, NULL, NULL), 0, "  and holds nothing afterwards");
                chmod(ro, 0755);
        }
}

static void test_read_limited(void)
{
        char dir[128], big[5000];
        char *buf = (char *)"untouched";
        size_t len = 12345;

        snprintf(dir, sizeof(dir), "%s/read", tmpdir);
        if (mkdir(dir, 0755) < 0)
                abort();

        make_file(path_in(dir, "ten"), "0123456789", 0644);
        is_int(read_file_limited(path_in(dir, "ten"), 10, &buf, &len), 0,
               "a file of exactly MAX bytes is read");
        is_str(buf, "0123456789", "  whole and NUL-terminated");
        free(buf);

        buf = (char *)"untouched";
        len = 12345;
        is_int(read_file_limited(path_in(dir, "ten"), 9, &buf, &len), -EFBIG, "one byte over MAX is -EFBIG");
        ok(strcmp(buf, "untouched") == 0 && len == 12345, "  and the outputs are untouched");

        is_int(read_file_limited(path_in(dir, "missing"), 10, &buf, &len), -ENOENT,
               "a missing file is -ENOENT");
        ok(strcmp(buf, "untouched") == 0, "  and the output is untouched");
        is_int(read_file_limited(dir, 10, &buf, NULL), -EISDIR, "a directory is -EISDIR");

        /* /proc files report size 0: only reading tells their size. */
        is_int(read_file_limited("/proc/self/status", 16, &buf, NULL), -EFBIG,
               "a /proc file (st_size 0) larger than MAX is -EFBIG");
        buf = NULL;
        is_int(read_file_limited("/proc/self/maps", 1 << 20, &buf, &len), 0,
               "a /proc file of unknown size is read");
        ok(buf && len > 0 && strlen(buf) == len, "  whole, and NUL-terminated at its length");
        free(buf);

        memset(big, 'x', sizeof(big));
        big[sizeof(big) - 1] = '\0';
        make_file(path_in(dir, "big"), big, 0644);
        is_int(read_one_line_file(path_in(dir, "big"), &buf), -EFBIG,
               "read_one_line_file refuses more than 4 KiB");

        make_file(path_in(dir, "line"), " \t 2.0.1-rc1 \r\n\n", 0644);
        is_int(read_one_line_file(path_in(dir, "line"), &buf), 0, "read_one_line_file reads");
        is_str(buf, "2.0.1-rc1", "  and strips surrounding whitespace");
        free(buf); /* the pointer must be the allocation itself: ASan checks */

        make_file(path_in(dir, "blank"), " \n", 0644);
        is_int(read_one_line_file(path_in(dir, "blank"), &buf), 0, "a blank file");
        is_str(buf, "", "  is the empty string");
        free(buf);
}

/* What a kill during write_file_atomic() leaves behind, and only that, goes. */
static void test_remove_stale_tmpfiles(void)
{
        static const char *const stale[] = {
                "credentials.json.tmp.0123456789AB",
                "credentials.json.tmp.ZZZZZZZZZZZZ",
        };
        static const char *const kept[] = {
                "credentials.json",               /* the store itself */
                "credentials.json.tmp.0123456789a", /* lower case: not ours */
                "credentials.json.tmp.0123456789ABC", /* 13 characters */
                "credentials.json.tmp.",
                "credentials.json.tmp.0123456789A",
                "ota-journal.json.tmp.0123456789AB", /* another NAME's */
                "xcredentials.json.tmp.0123456789AB",
        };
        char dir[128];

        snprintf(dir, sizeof(dir), "%s/stale", tmpdir);
        if (mkdir(dir, 0755) < 0)
                abort();
        for (size_t i = 0; i < ELEMENTSOF(stale); i++)
                make_file(path_in(dir, stale[i]), "{\"device_secret\":\"s\"}", 0600);
        for (size_t i = 0; i < ELEMENTSOF(kept); i++)
                make_file(path_in(dir, kept[i]), "x", 0600);
        if (mkdir(path_in(dir, "credentials.json.tmp.DIRECTORY000"), 0700) < 0)
                abort();

        is_int(remove_stale_tmpfiles(dir, "credentials.json"), -EISDIR,
               "a directory with a temporary file's name cannot be unlinked: -EISDIR");
        for (size_t i = 0; i < ELEMENTSOF(stale); i++)
                ok(access(path_in(dir, stale[i]), F_OK) < 0, "  the stale temporary files went anyway");
        if (rmdir(path_in(dir, "credentials.json.tmp.DIRECTORY000")) < 0)
                abort();

        for (size_t i = 0; i < ELEMENTSOF(stale); i++)
                make_file(path_in(dir, stale[i]), "{}", 0600);
        is_int(remove_stale_tmpfiles(dir, "credentials.json"), 2, "two stale temporary files are removed");
        is_int(count_entries(dir, NULL, NULL), (int)ELEMENTSOF(kept), "  and nothing else");
        for (size_t i = 0; i < ELEMENTSOF(kept); i++)
                ok(access(path_in(dir, kept[i]), F_OK) == 0, kept[i]);
        is_int(remove_stale_tmpfiles(dir, "credentials.json"), 0, "a second run finds none");
        is_int(remove_stale_tmpfiles(dir, "ota-journal.json"), 1, "another NAME's");

        /* A completed write leaves nothing to remove, and its file stays. */
        is_int(write_file_atomic(dir, "f", "x", 1, 0600), 0, "write_file_atomic");
        is_int(remove_stale_tmpfiles(dir, "f"), 0, "  leaves nothing to remove");
        ok(access(path_in(dir, "f"), F_OK) == 0, "  and the file it wrote stays");

        is_int(remove_stale_tmpfiles(path_in(dir, "missing"), "f"), -ENOENT, "a missing DIR is -ENOENT");
        is_int(remove_stale_tmpfiles(dir, "a/b"), -EINVAL, "NAME with a / is -EINVAL");
        is_int(remove_stale_tmpfiles(dir, ""), -EINVAL, "an empty NAME is -EINVAL");
}

/* A read that blocks fails the test instead of hanging it until meson's timeout. */
static void on_alarm(int sig)
{
        static const char msg[] = "not ok - a read blocked (on a FIFO?) for 10 s\nBail out!\n";

        (void)!write(STDOUT_FILENO, msg, sizeof(msg) - 1);
        _exit(1);
}

/* Where a regular file should be: FIFOs, devices, directories, links. */
static void test_read_not_regular(void)
{
        char dir[128], fifo[160], buf_untouched[] = "untouched";
        char *buf = buf_untouched;
        size_t len = 12345;
        int wfd;

        snprintf(dir, sizeof(dir), "%s/special", tmpdir);
        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        if (mkdir(dir, 0755) < 0 || mkfifo(fifo, 0600) < 0 || mkdir(path_in(dir, "subdir"), 0755) < 0)
                abort();
        make_file(path_in(dir, "regular"), "1.2.3\n", 0644);
        if (symlink("regular", path_in(dir, "link")) < 0 ||
            symlink("fifo", path_in(dir, "link-to-fifo")) < 0 || symlink("loop", path_in(dir, "loop")) < 0 ||
            symlink("subdir", path_in(dir, "link-to-dir")) < 0)
                abort();

        signal(SIGALRM, on_alarm);
        alarm(10);

        /* Nobody writes to it: a blocking open() would wait forever. */
        is_int(read_file_limited(fifo, 100, &buf, &len), -EBADFD, "a FIFO is -EBADFD, without blocking");
        ok(buf == buf_untouched && len == 12345, "  and the outputs are untouched");
        is_int(read_one_line_file(fifo, &buf), -EBADFD, "read_one_line_file: a FIFO is -EBADFD");

        /* A FIFO with a writer that never writes: a blocking read() would wait forever. */
        wfd = open(fifo, O_RDWR | O_CLOEXEC); /* O_RDWR: does not wait for a reader */
        if (wfd < 0)
                abort();
        is_int(read_file_limited(fifo, 100, &buf, &len), -EBADFD, "a FIFO with a silent writer is -EBADFD");
        close(wfd);

        is_int(read_file_limited(path_in(dir, "link-to-fifo"), 100, &buf, NULL), -EBADFD,
               "a symbolic link to a FIFO is -EBADFD");
        is_int(read_file_limited("/dev/null", 100, &buf, NULL), -EBADFD,
               "/dev/null (a char device) is -EBADFD");
        is_int(read_file_limited(path_in(dir, "subdir"), 100, &buf, NULL), -EISDIR,
               "a directory is -EISDIR");
        is_int(read_file_limited(path_in(dir, "link-to-dir"), 100, &buf, NULL), -EISDIR,
               "a link to a directory is -EISDIR");
        is_int(read_file_limited(path_in(dir, "loop"), 100, &buf, NULL), -ELOOP,
               "a loop of links is -ELOOP");
        ok(buf == buf_untouched, "  every refusal left the output untouched");

        /* Positive controls: links to regular files are followed; /proc and /sys files (regular, of
         * size 0) are read. */
        is_int(read_file_limited(path_in(dir, "link"), 100, &buf, &len), 0,
               "a link to a regular file is followed");
        is_str(buf, "1.2.3\n", "  and read");
        if (buf != buf_untouched)
                free(buf);
        buf = NULL;
        is_int(read_file_limited("/proc/self/stat", 4096, &buf, &len), 0, "/proc/self/stat still reads");
        ok(buf && len > 0, "  and is not empty");
        free(buf);
        buf = NULL;
        if (access("/sys/class/net/lo/address", R_OK) < 0)
                skip("/sys/class/net/lo/address is not readable (no sysfs?)");
        else {
                is_int(read_one_line_file("/sys/class/net/lo/address", &buf), 0,
                       "/sys/class/net/lo/address still reads");
                is_str(buf, "00:00:00:00:00:00", "  the loopback's MAC address");
                free(buf);
        }

        /* The state directory's reader: no link, whatever it points to. */
        buf = buf_untouched;
        is_int(read_state_file(dir, "regular", 100, &buf, &len), 0, "read_state_file reads a regular file");
        is_str(buf, "1.2.3\n", "  whole");
        if (buf != buf_untouched)
                free(buf);
        buf = buf_untouched;
        is_int(read_state_file(dir, "link", 100, &buf, &len), -ELOOP,
               "read_state_file: a link, even to a regular file, is -ELOOP");
        is_int(read_state_file(dir, "link-to-dir", 100, &buf, &len), -ELOOP, "  a link to a directory too");
        is_int(read_state_file(dir, "fifo", 100, &buf, &len), -EBADFD, "read_state_file: a FIFO is -EBADFD");
        is_int(read_state_file(dir, "subdir", 100, &buf, &len), -EISDIR, "read_state_file: a directory");
        is_int(read_state_file(dir, "missing", 100, &buf, &len), -ENOENT,
               "read_state_file: missing is -ENOENT");
        is_int(read_state_file(dir, "subdir/x", 100, &buf, &len), -EINVAL, "read_state_file: NAME has no /");
        is_int(read_state_file(dir, "..", 100, &buf, &len), -EINVAL, "read_state_file: NAME is not ..");
        is_int(read_state_file(path_in(dir, "regular"), "x", 100, &buf, &len), -ENOTDIR,
               "read_state_file: DIR is a file");
        ok(buf == buf_untouched, "  every refusal left the output untouched");

        alarm(0);

        is_str(read_error_message(-EBADFD), "not a regular file", "read_error_message: -EBADFD in words");
        is_str(read_error_message(EBADFD), "not a regular file", "  either sign");
        is_str(read_error_message(-ELOOP), "a symbolic link (not allowed here), or a loop of them",
               "read_error_message: -ELOOP");
        is_str(read_error_message(-ENOENT), "No such file or directory",
               "read_error_message: others are strerror()");
}

static void test_strstrip(void)
{
        static const struct {
                const char *in, *out;
        } table[] = {
                {"", ""},         {"   ", ""},      {"abc", "abc"},
                {"  abc", "abc"}, {"abc  ", "abc"}, {" \t\n a  b \r\n\v\f", "a  b"},
                {"\n", ""},       {"x", "x"},       {" x ", "x"},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char *s = strdup(table[i].in), *r, name[64];

                if (!s)
                        abort();
                r = strstrip(s);
                snprintf(name, sizeof(name), "strstrip case %zu", i);
                is_str(r, table[i].out, name);
                ok(r == s, "  returns its argument (callers free it)");
                free(r);
        }
        ok(strstrip(NULL) == NULL, "strstrip(NULL) is NULL");
}

/* Runs "strace ... SELF --write-atomic DIR NAME" and returns strace's wait status, or -1. */
static int run_traced(const char *self, const char *trace, const char *dir, const char *name)
{
        pid_t pid = fork();
        int status;

        if (pid < 0)
                return -1;
        if (pid == 0) {
                const char *asan = getenv("ASAN_OPTIONS");
                char opts[1024];
                int devnull = open("/dev/null", O_WRONLY);

                /* LeakSanitizer cannot run under ptrace and would fail the child. */
                snprintf(opts, sizeof(opts), "%s%sdetect_leaks=0", asan ? asan : "", asan ? ":" : "");
                setenv("ASAN_OPTIONS", opts, 1);
                if (devnull >= 0)
                        dup2(devnull, STDOUT_FILENO);
                execl(STRACE, "strace", "-f", "-y", "-o", trace, "-e",
                      "trace=openat,write,fsync,fdatasync,rename,renameat,renameat2", self, "--write-atomic",
                      dir, name, (char *)NULL);
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -1;
        return status;
}

static void test_syscall_order(void)
{
        char dir[128], real[PATH_MAX], trace[128], self[PATH_MAX], line[4096];
        char tmp_tag[PATH_MAX + 32], dir_tag[PATH_MAX + 8];
        long n = 0, tmp_open = -1, first_write = -1, last_write = -1, tmp_fsync = -1, ren = -1,
             dir_fsync = -1;
        ssize_t k;
        FILE *f;
        int status;

        if (access(STRACE, X_OK) < 0) {
                for (int i = 0; i < 6; i++)
                        skip("strace not installed");
                return;
        }

        snprintf(dir, sizeof(dir), "%s/traced", tmpdir);
        snprintf(trace, sizeof(trace), "%s/trace.txt", tmpdir);
        k = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (mkdir(dir, 0755) < 0 || !realpath(dir, real) || k < 0)
                abort();
        self[k] = '\0';

        status = run_traced(self, trace, real, "state.json");
        f = fopen(trace, "re");
        if (status != 0 && (!f || fgetc(f) == EOF)) {
                /* strace ran but traced nothing: ptrace is not allowed here (container, Yama). */
                for (int i = 0; i < 6; i++)
                        skip("strace cannot trace here");
                if (f)
                        fclose(f);
                return;
        }
        is_int(status, 0, "the traced write succeeds");
        if (!f)
                abort();
        rewind(f);

        /* With -y strace shows each fd with its path: "write(4</dir/state.json.tmp.X>, ...". */
        snprintf(tmp_tag, sizeof(tmp_tag), "<%s/state.json.tmp.", real);
        snprintf(dir_tag, sizeof(dir_tag), "<%s>)", real);
        while (fgets(line, sizeof(line), f)) {
                bool ok0 = strstr(line, "= 0") != NULL;

                n++;
                if (strstr(line, "openat(") && strstr(line, "state.json.tmp.") && strstr(line, "O_CREAT") &&
                    tmp_open < 0)
                        tmp_open = n;
                else if (strstr(line, "write(") && strstr(line, tmp_tag)) {
                        if (first_write < 0)
                                first_write = n;
                        last_write = n;
                } else if ((strstr(line, "fsync(") || strstr(line, "fdatasync(")) && strstr(line, tmp_tag) &&
                           ok0)
                        tmp_fsync = n;
                else if (strstr(line, "rename") && strstr(line, "state.json.tmp.") && ok0)
                        ren = n;
                else if (strstr(line, "fsync(") && strstr(line, dir_tag) && ok0)
                        dir_fsync = n;
        }
        fclose(f);

        printf("# trace lines: open %ld, writes %ld-%ld, fsync %ld, rename %ld, dir fsync %ld\n", tmp_open,
               first_write, last_write, tmp_fsync, ren, dir_fsync);
        ok(tmp_open > 0, "the temporary file is created (O_CREAT) in the directory");
        ok(first_write > tmp_open, "  then written");
        ok(tmp_fsync > last_write, "  then fsync()ed after its last write");
        ok(ren > tmp_fsync, "  then renamed over the name");
        ok(dir_fsync > ren, "  then the directory is fsync()ed");
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        return remove(path);
}

int main(int argc, char *argv[])
{
        if (argc == 4 && strcmp(argv[1], "--write-atomic") == 0)
                return write_file_atomic(argv[2], argv[3], "{\"traced\":true}\n", 16, 0600) < 0 ? 1 : 0;

        snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-fileio.XXXXXX");
        if (!mkdtemp(tmpdir))
                abort();

        test_write_read();
        test_modes();
        test_failures();
        test_read_limited();
        test_read_not_regular();
        test_remove_stale_tmpfiles();
        test_strstrip();
        test_syscall_order();

        /* Leaves the directory on failure, for a look at what went wrong. */
        if (tap_failed == 0) {
                if (nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
                        printf("# could not remove %s\n", tmpdir);
        } else
                printf("# left %s\n", tmpdir);
        return tap_done();
}
