# SPDX-License-Identifier: Apache-2.0
"""The Debian 12 root the system test boots: debootstrap --variant=minbase
with systemd, systemd-sysv, dbus and the runtime libraries the .deb depends
on, from the mirror the host's apt uses, and the host's apt sources (so that
apt inside it can fetch what is missing).

Made once and kept in the cache directory (tests/system/.cache/, or
$KRTIOT_SYSTEM_CACHE) as rootfs-KEY/, KEY being a hash of everything that
goes into it (suite, mirror, package list, apt sources, this file's recipe
version). Each run copies it (cp -a) and installs the .deb into the copy.
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time

import nspawn

SUITE = "bookworm"  # Debian 12
RECIPE = 1          # bump when the way the root is made changes
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"

HERE = os.path.dirname(os.path.abspath(__file__))


def cache_dir():
    d = os.environ.get("KRTIOT_SYSTEM_CACHE") or os.path.join(HERE, ".cache")
    os.makedirs(d, exist_ok=True)
    return d


def host_apt_sources():
    """[(file name, text)] of the host's enabled apt sources."""
    out = []
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as f:
            out.append(("sources.list", f.read()))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.list") +
                       glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            out.append((os.path.basename(path), f.read()))
    return out


def host_mirror(sources):
    """The first mirror of the host's sources that serves SUITE."""
    for name, text in sources:
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                    if m:
                        fields[m.group(1).lower()] = m.group(2).split()
                if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                        and fields.get("enabled", ["yes"])[0] != "no" and fields.get("uris")):
                    return fields["uris"][0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def host_is_suite():
    try:
        with open("/etc/os-release") as f:
            return "VERSION_CODENAME=%s" % SUITE in f.read()
    except OSError:
        return False


def deb_depends(deb):
    """Package names of DEB's Depends (first of each alternative, no version)."""
    text = subprocess.run(["dpkg-deb", "--field", deb, "Depends"], stdout=subprocess.PIPE,
                          text=True, check=True).stdout
    names = []
    for dep in text.replace("\n", " ").split(","):
        first = dep.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, 1)[0] if first else ""
        if name and name not in names:
            names.append(name)
    return names


class RootCache:
    """The cached root for a package list; ensure() makes it when missing."""

    def __init__(self, extra_packages=(), log=print):
        self.sources = host_apt_sources() if host_is_suite() else []
        self.mirror = host_mirror(self.sources)
        self.packages = sorted(set(BASE_PACKAGES) | set(extra_packages))
        self.log = log
        recipe = {"recipe": RECIPE, "suite": SUITE, "variant": "minbase", "mirror": self.mirror,
                  "packages": self.packages, "sources": self.sources,
                  "arch": subprocess.run(["dpkg", "--print-architecture"], stdout=subprocess.PIPE,
                                         text=True).stdout.strip()}
        self.key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir(), "rootfs-" + self.key)
        self.built = False  # made by this run (not found in the cache)

    def ensure(self, work_log):
        """Returns the cached root's path, making it first if needed (under a lock)."""
        with open(os.path.join(cache_dir(), "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(os.path.join(self.path, ".complete")):
                return self.path
            self._make(work_log)
            self.built = True
            self._prune()
            return self.path

    def _make(self, work_log):
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            if nspawn.mounts_under(tmp):
                raise AssertionError("%s has mounts left by an earlier run: %s" % (tmp, nspawn.mounts_under(tmp)))
            shutil.rmtree(tmp)
        started = time.monotonic()
        include = ",".join(self.packages)
        cmd = ["debootstrap", "--variant=minbase", "--include=" + include, SUITE, tmp, self.mirror]
        self.log("system test: debootstrap %s (%s) from %s into the cache, once" % (SUITE, include, self.mirror))
        with open(work_log, "ab") as log:
            log.write(("=== %s\n" % " ".join(cmd)).encode())
            log.flush()
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PATH=nspawn.PATH), timeout=1800)
        if r.returncode != 0:
            raise AssertionError("debootstrap failed (exit %d); see %s:\n%s"
                                 % (r.returncode, work_log, _tail(work_log)))
        if nspawn.mounts_under(tmp):
            raise AssertionError("debootstrap left mounts: %s" % nspawn.mounts_under(tmp))
        # The host's apt sources (same suite): apt inside can fetch what the
        # .deb needs beyond the included packages, security updates included.
        if self.sources:
            for stale in glob.glob(os.path.join(tmp, "etc/apt/sources.list.d/*")):
                os.unlink(stale)
            if os.path.exists(os.path.join(tmp, "etc/apt/sources.list")):
                os.unlink(os.path.join(tmp, "etc/apt/sources.list"))
            for name, text in self.sources:
                dest = "etc/apt/sources.list" if name == "sources.list" else "etc/apt/sources.list.d/" + name
                with open(os.path.join(tmp, dest), "w") as f:
                    f.write(text)
        nspawn.probe(tmp, work_log)
        rc = nspawn.run_command(tmp, "krtiot-root-" + secrets.token_hex(3), work_log,
                                ["/bin/sh", "-c", "apt-get update -q && apt-get clean"])
        if rc != 0:
            raise AssertionError("apt-get update in the new root failed (exit %d):\n%s" % (rc, _tail(work_log)))
        with open(os.path.join(tmp, ".complete"), "w") as f:
            f.write(json.dumps({"packages": self.packages, "mirror": self.mirror,
                                "seconds": round(time.monotonic() - started)}) + "\n")
        os.rename(tmp, self.path)

    def _prune(self):
        """Removes the cached roots of other package lists (300 MB each)."""
        for other in glob.glob(os.path.join(cache_dir(), "rootfs-*")):
            if other != self.path and not nspawn.mounts_under(other):
                shutil.rmtree(other, ignore_errors=True)


def copy_root(cached, dest):
    """A private copy of the cached root, with a machine ID of its own."""
    subprocess.run(["cp", "-a", "--reflink=auto", cached, dest], check=True)
    os.unlink(os.path.join(dest, ".complete"))
    with open(os.path.join(dest, "etc/machine-id"), "w") as f:
        f.write(secrets.token_hex(16) + "\n")


def install_deb(root, deb, work_log):
    """apt-get install the .deb inside ROOT (a booted-less nspawn), which
    pulls whatever dependency the root lacks from the mirror. Returns the
    exit status."""
    return nspawn.run_command(
        root, "krtiot-install-" + secrets.token_hex(3), work_log,
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "/run/krtiot-test/krtiot.deb"],
        args=["--bind-ro=%s:/run/krtiot-test/krtiot.deb" % os.path.abspath(deb),
              "--setenv=DEBIAN_FRONTEND=noninteractive"])


def _tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


def group_id(root, name):
    """The gid of group NAME in ROOT's /etc/group."""
    with open(os.path.join(root, "etc/group")) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
    raise AssertionError("no group %s in %s/etc/group: the package did not create it" % (name, root))


def user_id(root, name):
    with open(os.path.join(root, "etc/passwd")) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
    raise AssertionError("no user %s in %s/etc/passwd: the package did not create it" % (name, root))


def say(line):
    """A progress line of the system tests (shown with -s); kept short."""
    sys.stderr.write("[system] %s\n" % line)
    sys.stderr.flush()


def unavailable(reason):
    """Skips (or fails, with KRTIOT_SYSTEM_REQUIRE=1) the system tests of a module."""
    import pytest
    if os.environ.get("KRTIOT_SYSTEM_REQUIRE") == "1":
        pytest.fail("system test required but cannot run: " + reason, pytrace=False)
    pytest.skip(reason)
