/* SPDX-License-Identifier: Apache-2.0 */
/*
 * credentials.c: the store round-trips, is private (0600) and compact, and
 * everything that is not exactly what it writes (truncated at any byte,
 * garbage, a field missing, extra or of the wrong type, too big) is refused
 * with the code the caller relies on, leaving *ret untouched; a link or a
 * FIFO as the store is refused; a store someone opened up is made private
 * again.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "credentials.h"
#include "tap.h"
#include "util/fileio.h"
#include "util/macro.h"

static char dir[64];
static char path[128];

static void put(const char *content, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || write(fd, content, len) != (ssize_t)len)
                abort();
        close(fd);
}

/* Not a real object: credentials_load() must leave *ret pointing here when it fails. */
static Credentials sentinel;

/*
 * Writes LEN bytes of CONTENT as the store and loads it: expects ERR, and on
 * failure *ret untouched; on success (ERR 0) a complete object.
 */
static void load_expect(const char *content, size_t len, int err, const char *name)
{
        Credentials *c = &sentinel;
        int r;

        put(content, len);
        r = credentials_load(dir, &c);
        is_int(r, err, name);
        if (r < 0) {
                ok(c == &sentinel, "  *ret untouched on failure");
                return;
        }
        ok(c != &sentinel && c && c->product_id && c->device_id && c->device_secret,
           "  a new object with all three fields");
        if (c != &sentinel)
                credentials_free(c);
}

#define LOAD_FAILS(lit, err, name) load_expect(lit, sizeof(lit) - 1, err, name)

static int entries(void)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static void test_round_trip(void)
{
        _cleanup_credentials_ Credentials *c = NULL;
        const char *odd = "s\"e\\c/r\xc3\xa9t\x01 \xe5\xaf\x86";
        const char *pretty =
                " {\n  \"device_secret\" : \"x\",\n  \"device_id\" : \"D\",\n  \"product_id\" : \"P\"\n}\n";
        char *text = NULL;
        struct stat st;
        mode_t old;

        old = umask(0);
        is_int(credentials_store(dir, "P1", "D1", "s3cr3t"), 0, "store succeeds");
        umask(old);
        ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "the file has mode 0600 even with umask 0");

        is_int(read_file_limited(path, 4096, &text, NULL), 0, "the file reads");
        is_str(text, "{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s3cr3t\"}",
               "it is compact JSON in SPEC 4.2's key order");
        free(text);

        is_int(credentials_load(dir, &c), 0, "load succeeds");
        ok(c && c->product_id && c->device_id && c->device_secret, "  with all three fields");
        if (!c)
                return;
        is_str(c->product_id, "P1", "  product_id");
        is_str(c->device_id, "D1", "  device_id");
        is_str(c->device_secret, "s3cr3t", "  device_secret");
        c = credentials_free(c);
        ok(c == NULL, "credentials_free returns NULL");
        ok(credentials_free(NULL) == NULL, "credentials_free(NULL) is harmless");

        is_int(credentials_store(dir, "P\xe4\xba\xa7", "D 1", odd), 0,
               "a secret JSON must escape is stored");
        is_int(credentials_load(dir, &c), 0, "  and loads");
        is_str(c ? c->device_secret : NULL, odd, "  byte for byte");
        is_str(c ? c->product_id : NULL, "P\xe4\xba\xa7", "  with a UTF-8 product ID");

        c = credentials_free(c);
        put(pretty, strlen(pretty));
        is_int(credentials_load(dir, &c), 0, "a hand-formatted file with the keys in any order loads");
        is_str(c ? c->device_secret : NULL, "x", "  its secret");
}

static void test_replace(void)
{
        _cleanup_credentials_ Credentials *c = NULL;
        struct stat before, after;

        is_int(credentials_store(dir, "P1", "D1", "first"), 0, "store a first secret");
        if (chmod(path, 0644) < 0 || stat(path, &before) < 0)
                abort();
        is_int(credentials_store(dir, "P1", "D1", "second"), 0, "store over it");
        ok(stat(path, &after) == 0 && before.st_ino != after.st_ino,
           "  the file was replaced by rename (new inode)");
        is_int(after.st_mode & 07777, 0600, "  and is 0600 again");
        is_int(entries(), 1, "  and no temporary file is left");
        is_int(credentials_load(dir, &c), 0, "load");
        is_str(c ? c->device_secret : NULL, "second", "  gives the new secret");

        is_int(credentials_store(dir, "P1", "D1", ""), -EINVAL, "an empty secret is not stored");
        is_int(credentials_store(dir, "", "D1", "x"), -EINVAL, "an empty product ID is not stored");
        is_int(credentials_store(dir, "P1", NULL, "x"), -EINVAL, "a NULL device ID is not stored");
        c = credentials_free(c);
        is_int(credentials_load(dir, &c), 0, "  and the stored secret is still there");
        is_str(c ? c->device_secret : NULL, "second", "  unchanged");
}

static void test_corrupt(void)
{
        const char *good = "{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s3cr3t\"}";
        size_t len = strlen(good);
        bool all = true;
        char big[CREDENTIALS_MAX_SIZE + 64];

        /* A crash cannot tear our writes, but a copied or hand-edited file can be cut anywhere. */
        for (size_t cut = 0; cut < len; cut++) {
                Credentials *c = &sentinel;
                int r;

                put(good, cut);
                r = credentials_load(dir, &c);
                if (r != -EBADMSG || c != &sentinel) {
                        printf("#   cut at %zu: %d, *ret %s\n", cut, r,
                               c == &sentinel ? "untouched" : "changed");
                        all = false;
                }
                if (c != &sentinel)
                        credentials_free(c);
        }
        ok(all, "the file cut at every byte is -EBADMSG, *ret untouched");

        /* Sanity: the same helper with the whole text succeeds, so the failures are the cut. */
        load_expect(good, len, 0, "the uncut file loads");
        load_expect(good, len / 2, -EBADMSG, "the file cut in half is -EBADMSG");
        LOAD_FAILS("garbage", -EBADMSG, "garbage is -EBADMSG");
        LOAD_FAILS("", -EBADMSG, "an empty file is -EBADMSG");
        LOAD_FAILS("\x89PNG\r\n\x1a\n\0\0{}", -EBADMSG, "binary junk is -EBADMSG");
        LOAD_FAILS("[]", -EBADMSG, "an array is -EBADMSG");
        LOAD_FAILS("null", -EBADMSG, "null is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\"}", -EBADMSG, "no secret is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_secret\":\"s\"}", -EBADMSG, "no device_id is -EBADMSG");
        LOAD_FAILS("{\"device_id\":\"D1\",\"device_secret\":\"s\"}", -EBADMSG, "no product_id is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"\"}", -EBADMSG,
                   "an empty secret is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"\",\"device_id\":\"D1\",\"device_secret\":\"s\"}", -EBADMSG,
                   "an empty product_id is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":1,\"device_secret\":\"s\"}", -EBADMSG,
                   "a numeric device_id is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":null}", -EBADMSG,
                   "a null secret is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":[\"s\"]}", -EBADMSG,
                   "an array secret is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s\",\"x\":1}", -EBADMSG,
                   "a fourth key is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s\\u0000t\"}", -EBADMSG,
                   "a secret with an embedded NUL is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s\",}", -EBADMSG,
                   "a trailing comma is -EBADMSG (we write strict JSON, we read it strictly)");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s\"}x", -EBADMSG,
                   "trailing garbage is -EBADMSG");
        LOAD_FAILS("{\"product_id\":\"P1\",\"device_id\":\"D1\",\"device_secret\":\"s\"}{}", -EBADMSG,
                   "a second object is -EBADMSG");

        memset(big, ' ', sizeof(big));
        memcpy(big, good, len); /* valid JSON followed by whitespace, over the size limit */
        load_expect(big, CREDENTIALS_MAX_SIZE + 1, -EFBIG,
                    "a file of CREDENTIALS_MAX_SIZE + 1 bytes is -EFBIG");
        load_expect(big, CREDENTIALS_MAX_SIZE, 0, "  while one of exactly CREDENTIALS_MAX_SIZE bytes loads");
}

static void test_missing(void)
{
        Credentials *c = &sentinel;
        char missing[128];

        if (unlink(path) < 0)
                abort();
        is_int(credentials_load(dir, &c), -ENOENT, "no file is -ENOENT");
        ok(c == &sentinel, "  and leaves *ret untouched");

        snprintf(missing, sizeof(missing), "%s/nope", dir);
        is_int(credentials_load(missing, &c), -ENOENT, "a missing state directory is -ENOENT");
        is_int(credentials_store(missing, "P", "D", "s"), -ENOENT,
               "storing into a missing directory is -ENOENT");
        ok(access(missing, F_OK) < 0, "  and does not create it");
}

static mode_t file_mode(const char *p)
{
        struct stat st;

        return lstat(p, &st) < 0 ? (mode_t)-1 : st.st_mode & 07777;
}

/* A link or a FIFO planted as the store: refused, never followed, never waited on. */
static void test_not_regular(void)
{
        char elsewhere[160];
        Credentials *c = &sentinel;

        snprintf(elsewhere, sizeof(elsewhere), "%s.elsewhere", dir);
        (void)unlink(path);
        if (credentials_store(dir, "P1", "D1", "planted") < 0 || rename(path, elsewhere) < 0 ||
            chmod(elsewhere, 0644) < 0 || symlink(elsewhere, path) < 0)
                abort();
        is_int(credentials_load(dir, &c), -ELOOP, "a symbolic link as the store is -ELOOP");
        ok(c == &sentinel, "  *ret untouched");
        is_int(credentials_fix_permissions(dir, NULL), -ELOOP, "credentials_fix_permissions: -ELOOP too");
        is_int(file_mode(elsewhere), 0644, "  and the file it points to keeps its mode");
        if (unlink(path) < 0 || unlink(elsewhere) < 0 || mkfifo(path, 0600) < 0)
                abort();
        is_int(credentials_load(dir, &c), -EBADFD, "a FIFO as the store is -EBADFD, without blocking");
        ok(c == &sentinel, "  *ret untouched");
        is_int(credentials_fix_permissions(dir, NULL), -EBADFD, "credentials_fix_permissions: -EBADFD too");
        if (unlink(path) < 0)
                abort();
}

/* Runs credentials_fix_permissions() as uid/gid 65534 (nobody) in a child; returns its result, or -EIO. */
static int fix_permissions_as_nobody(void)
{
        int status, fds[2], r = -EIO;
        pid_t pid;

        if (pipe(fds) < 0)
                abort();
        pid = fork();
        if (pid < 0)
                abort();
        if (pid == 0) {
                close(fds[0]);
                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(1);
                r = credentials_fix_permissions(dir, NULL);
                _exit(write(fds[1], &r, sizeof(r)) == sizeof(r) ? 0 : 1);
        }
        close(fds[1]);
        if (read(fds[0], &r, sizeof(r)) != sizeof(r))
                r = -EIO;
        close(fds[0]);
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                r = -EIO;
        return r;
}

static void test_fix_permissions(void)
{
        struct stat before = {}, st;

        (void)unlink(path);
        is_int(credentials_fix_permissions(dir, NULL), -ENOENT, "no store: -ENOENT, nothing to fix");

        is_int(credentials_store(dir, "P1", "D1", "s3cr3t"), 0, "a store");
        is_int(credentials_fix_permissions(dir, &before), 0, "  as written (0600, ours): nothing to fix");
        is_int(before.st_mode & 07777, 0600, "  *ret_before is its stat()");

        if (chmod(path, 0644) < 0)
                abort();
        is_int(credentials_fix_permissions(dir, &before), CREDENTIALS_MODE_FIXED, "mode 0644: fixed");
        is_int(before.st_mode & 07777, 0644, "  *ret_before has the old mode");
        is_int(file_mode(path), 0600, "  the store is 0600 again");

        if (chmod(path, 0700) < 0)
                abort();
        is_int(credentials_fix_permissions(dir, NULL), CREDENTIALS_MODE_FIXED, "mode 0700 (x bit): fixed");
        is_int(file_mode(path), 0600, "  to 0600");
        if (chmod(path, 0400) < 0)
                abort();
        is_int(credentials_fix_permissions(dir, NULL), 0, "mode 0400 (narrower): left alone");
        is_int(file_mode(path), 0400, "  still 0400");
        if (chmod(path, 0600) < 0)
                abort();

        if (geteuid() != 0) {
                for (int i = 0; i < 5; i++) {
                        tap_count++;
                        printf("ok %u # SKIP not root: cannot give the store to another user\n", tap_count);
                }
                (void)unlink(path);
                return;
        }
        if (chown(path, 65534, 65534) < 0 || chmod(path, 0640) < 0)
                abort();
        is_int(credentials_fix_permissions(dir, &before), CREDENTIALS_OWNER_FIXED | CREDENTIALS_MODE_FIXED,
               "root, a store of uid 65534 with mode 0640: owner and mode fixed");
        is_int(before.st_uid, 65534, "  *ret_before has the old owner");
        ok(stat(path, &st) == 0 && st.st_uid == 0 && (st.st_mode & 07777) == 0600, "  ours and 0600 again");

        /* The other way round: a process that is not root finds root's store, opened up. */
        if (chmod(path, 0644) < 0 || chmod(dir, 0755) < 0)
                abort();
        is_int(fix_permissions_as_nobody(), CREDENTIALS_NOT_OURS,
               "not root, another user's store: not ours");
        is_int(file_mode(path), 0644, "  left as it is");
        if (chmod(dir, 0700) < 0 || unlink(path) < 0)
                abort();
}

static void test_match(void)
{
        Credentials c = {
                .product_id = (char *)"P1", .device_id = (char *)"D1", .device_secret = (char *)"s"};

        ok(credentials_match(&c, "P1", "D1"), "matches its own product and device");
        ok(!credentials_match(&c, "P2", "D1"), "does not match another product");
        ok(!credentials_match(&c, "P1", "D2"), "does not match another device");
        ok(!credentials_match(&c, "P1", "D10"), "does not match a device ID it is a prefix of");
        ok(!credentials_match(&c, "P", "D1"), "does not match a product ID that is its prefix");
        ok(!credentials_match(&c, "p1", "D1"), "compares case-sensitively");
        ok(!credentials_match(&c, "D1", "P1"), "does not match with the IDs swapped");
        ok(!credentials_match(NULL, "P1", "D1"), "NULL credentials match nothing");
        ok(!credentials_match(&c, NULL, "D1"), "a NULL product ID matches nothing");
}

int main(void)
{
        snprintf(dir, sizeof(dir), "/tmp/test-credentials.XXXXXX");
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/%s", dir, CREDENTIALS_FILE);

        test_round_trip();
        test_replace();
        test_corrupt();
        test_missing();
        test_not_regular();
        test_fix_permissions();
        test_match();

        if (tap_failed == 0)
                (void)rmdir(dir);
        else
                printf("# left %s\n", dir);
        return tap_done();
}
