# SPDX-License-Identifier: Apache-2.0
"""The krtiot .deb the system test installs.

1. $KRTIOT_DEB, when set: that file (an error if it does not exist).
2. Else, when debian/control exists: built with `dpkg-buildpackage -us -uc -b`
   from a clean copy of the tree (without build*/, .git, caches) in a
   temporary directory, with DEB_BUILD_OPTIONS=nocheck unless the caller set
   DEB_BUILD_OPTIONS (and then DEB_BUILD_PROFILES=nocheck too: scripts/check
   runs the tests already). The result is
   kept in the cache as deb-KEY/, KEY being a hash of every file copied, so
   an unchanged tree is not built twice.
3. Else: None, and the reason ("debian/ packaging not present yet").
"""

import fcntl
import glob
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time

import system_root

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Top-level names never copied: build directories, VCS, caches.
EXCLUDE_TOP = {".git", ".pytest_cache", ".cache"}
EXCLUDE_ANY = {"__pycache__", ".pytest_cache"}
EXCLUDE_PATHS = {"tests/system/.cache", "debian/.debhelper", "debian/krtiot", "debian/files",
                 "debian/debhelper-build-stamp", "debian/tmp"}


class NoDeb(Exception):
    """No .deb and no way to build one; str() is why (a skip reason)."""


def _ignore(src, names):
    rel = os.path.relpath(src, REPO)
    out = set()
    for n in names:
        path = n if rel == "." else os.path.join(rel, n)
        if rel == "." and (n in EXCLUDE_TOP or n.startswith("build")):
            out.add(n)
        elif n in EXCLUDE_ANY or path in EXCLUDE_PATHS or n.endswith((".substvars", ".pyc")):
            out.add(n)
        elif rel == "debian" and n.endswith(".log"):
            out.add(n)
    return out


def copy_tree(dest):
    """A clean copy of the repository at DEST; returns a hash of its content."""
    shutil.copytree(REPO, dest, symlinks=True, ignore=_ignore)
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(dest):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(os.path.relpath(p, dest).encode() + b"\0" + oct(st.st_mode).encode() + b"\0")
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _package_of(path):
    r = subprocess.run(["dpkg-deb", "--field", path, "Package"], stdout=subprocess.PIPE, text=True)
    return r.stdout.strip()


def get_deb(log=print):
    """(path of the .deb, how it was obtained). Raises NoDeb (skip) when
    there is neither $KRTIOT_DEB nor debian/control; AssertionError when a
    build fails."""
    env_deb = os.environ.get("KRTIOT_DEB")
    if env_deb:
        if not os.path.isfile(env_deb):
            raise AssertionError("KRTIOT_DEB=%s is not a file" % env_deb)
        return os.path.abspath(env_deb), "KRTIOT_DEB=%s" % env_deb
    if not os.path.exists(os.path.join(REPO, "debian", "control")):
        raise NoDeb("debian/ packaging not present yet (no debian/control; set KRTIOT_DEB to a .deb to test one)")
    if not shutil.which("dpkg-buildpackage"):
        raise AssertionError("debian/control exists but dpkg-buildpackage is not installed (package dpkg-dev)")

    cache = system_root.cache_dir()
    work = tempfile.mkdtemp(prefix="krtiot-deb-")
    try:
        src = os.path.join(work, "krtiot")
        key = copy_tree(src)
        kept = os.path.join(cache, "deb-" + key)
        with open(os.path.join(cache, "lock-deb"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = glob.glob(os.path.join(kept, "*.deb"))
            if found:
                return found[0], "built earlier from the same tree (cache %s)" % os.path.basename(kept)
            started = time.monotonic()
            env = dict(os.environ)
            if "DEB_BUILD_OPTIONS" not in env:
                env["DEB_BUILD_OPTIONS"] = "nocheck"
                env.setdefault("DEB_BUILD_PROFILES", "nocheck")
            logpath = os.path.join(work, "dpkg-buildpackage.log")
            log("system test: dpkg-buildpackage -us -uc -b in a clean copy of the tree (%s)" % src)
            with open(logpath, "wb") as out:
                r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   timeout=1800)
            with open(logpath, errors="replace") as f:
                text = f.read()
            if r.returncode != 0:
                raise AssertionError("dpkg-buildpackage -us -uc -b failed (exit %d):\n%s"
                                     % (r.returncode, "\n".join(text.splitlines()[-40:])))
            debs = [p for p in glob.glob(os.path.join(work, "*.deb")) if _package_of(p) == "krtiot"]
            if len(debs) != 1:
                raise AssertionError("dpkg-buildpackage made %d krtiot .deb files: %s; log tail:\n%s"
                                     % (len(debs), sorted(glob.glob(os.path.join(work, "*deb"))),
                                        "\n".join(text.splitlines()[-20:])))
            for old in glob.glob(os.path.join(cache, "deb-*")):
                shutil.rmtree(old, ignore_errors=True)
            os.makedirs(kept + ".tmp", exist_ok=True)
            shutil.copy2(debs[0], kept + ".tmp")
            shutil.copy2(logpath, kept + ".tmp")
            os.rename(kept + ".tmp", kept)
            return (os.path.join(kept, os.path.basename(debs[0])),
                    "built by dpkg-buildpackage in %.0f s" % (time.monotonic() - started))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# The last release before the agent ran unprivileged: the upgrade test installs it first.
RELEASE_0_1_0 = "cbc95b9"


def get_release_deb(rev, log=print):
    """(path of the .deb of the committed release REV, how it was obtained):
    `git archive REV` built with dpkg-buildpackage (nocheck), kept in the
    cache as release-REV/. An AssertionError says why when the repository's
    history does not have REV (a shallow clone: fetch it with --unshallow)."""
    if not shutil.which("git") or not os.path.exists(os.path.join(REPO, ".git")):  # a file in a worktree
        raise AssertionError("the upgrade test builds release %s from the git history, and %s is not a git "
                             "checkout (or git is missing)" % (rev, REPO))
    r = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", "--quiet", rev + "^{commit}"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0:
        raise AssertionError("release %s is not in this repository's history (a shallow clone? "
                             "git fetch --unshallow)" % rev)
    full = r.stdout.strip()
    cache = system_root.cache_dir()
    kept = os.path.join(cache, "release-" + full[:12])
    with open(os.path.join(cache, "lock-deb"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = glob.glob(os.path.join(kept, "krtiot_*.deb"))
        if found:
            return found[0], "release %s built earlier (cache %s)" % (rev, os.path.basename(kept))
        work = tempfile.mkdtemp(prefix="krtiot-release-")
        try:
            src = os.path.join(work, "krtiot")
            os.makedirs(src)
            archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", full],
                                     stdout=subprocess.PIPE, check=True).stdout
            subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
            started = time.monotonic()
            env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck", DEB_BUILD_PROFILES="nocheck")
            logpath = os.path.join(work, "dpkg-buildpackage.log")
            log("system test: building release %s (git archive, dpkg-buildpackage -us -uc -b)" % rev)
            with open(logpath, "wb") as out:
                r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
            if r.returncode != 0:
                with open(logpath, errors="replace") as f:
                    tail = "\n".join(f.read().splitlines()[-40:])
                raise AssertionError("building release %s failed (exit %d):\n%s" % (rev, r.returncode, tail))
            debs = [p for p in glob.glob(os.path.join(work, "*.deb")) if _package_of(p) == "krtiot"]
            if len(debs) != 1:
                raise AssertionError("building release %s made %r" % (rev, debs))
            os.makedirs(kept + ".tmp", exist_ok=True)
            shutil.copy2(debs[0], kept + ".tmp")
            os.rename(kept + ".tmp", kept)
            return (os.path.join(kept, os.path.basename(debs[0])),
                    "release %s built in %.0f s" % (rev, time.monotonic() - started))
        finally:
            shutil.rmtree(work, ignore_errors=True)
