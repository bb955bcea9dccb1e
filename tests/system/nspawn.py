# SPDX-License-Identifier: Apache-2.0
"""Booting a Debian root with systemd-nspawn for the system test, and
driving it from the host.

    c = Container(root, name, log_path)
    c.start()                  # systemd-nspawn -D ROOT -b --register=no ...
    c.wait_booted()            # the container's systemd answers
    c.run("systemctl", "is-active", "krtiot")   # nsenter into it
    c.poweroff()               # -> nspawn's exit status
    c.cleanup()                # always: stops whatever is left, by PID

The container shares the host's network namespace (no --private-network,
no --network-veth), so it reaches a broker on the host's 127.0.0.1. It is
not registered with machined (--register=no), so machinectl and
systemd-run --machine cannot reach it; commands run inside it through
nsenter(1) into all the namespaces of its PID 1.

cgroups. On a host whose PID 1 is systemd, nspawn --register=no allocates
its own scope through PID 1. On a host without systemd (a sandbox, a CI
container) nobody would: the container is started in cgroups of its own
(krtiot-system-RANDOM, in the name=systemd and the cgroup2 hierarchies,
below the test's own cgroup) and nspawn is told --keep-unit, so it creates
its supervisor/payload subgroups in there rather than at the root of the
hierarchy. cleanup() kills what is left in them and removes them.

Nothing is mounted on the host: nspawn's mounts live in its own mount
namespace, which goes away with its processes.
"""

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unavailable(Exception):
    """This machine cannot run the container; str() is the one-line reason."""


def host_runs_systemd():
    return os.path.isdir("/run/systemd/system")


def missing_requirements():
    """Why this machine cannot boot a container (a sentence), or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, debootstrap), running as uid %d" % os.geteuid()
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("debootstrap", "debootstrap")):
        if not shutil.which(tool, path=PATH):
            return "%s is not installed (package %s)" % (tool, package)
    return None


# -- cgroups -------------------------------------------------------------------

def _own_cgroups():
    """{hierarchy: path of this process's cgroup} for the cgroup2 hierarchy
    ("") and the name=systemd one, as /proc/self/cgroup lists them."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers in ("", "name=systemd"):
                out[controllers] = path
    return out


def _cgroup_mounts():
    """{hierarchy: mount point}: "" for cgroup2, "name=systemd" for the legacy one."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            mnt = fields[4].replace("\\040", " ")
            if fstype == "cgroup2":
                out.setdefault("", mnt)
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                out.setdefault("name=systemd", mnt)
    return out


class CgroupJail:
    """cgroups of our own for one nspawn (host without systemd). wrap(cmd)
    returns a command that moves itself into them and execs CMD."""

    def __init__(self, name):
        self.dirs = []
        self.owned = True
        own = _own_cgroups()
        mounts = _cgroup_mounts()
        if "" not in mounts:
            raise Unavailable("no cgroup2 hierarchy is mounted on the host (systemd-nspawn needs one)")
        for hierarchy, mnt in sorted(mounts.items()):
            d = os.path.join(mnt, own.get(hierarchy, "/").lstrip("/"), name)
            try:
                os.mkdir(d)
            except OSError as e:
                self.remove()
                raise Unavailable("cannot create the cgroup %s: %s" % (d, e.strerror))
            self.dirs.append(d)

    @classmethod
    def adopt(cls, pid, name):
        """The scope NAME.scope systemd made for nspawn PID (host with
        systemd): its processes can be killed; systemd removes the scope
        itself. Any other cgroup (the caller's own session...) is left alone."""
        jail = cls.__new__(cls)
        jail.owned = False
        jail.dirs = []
        mounts = _cgroup_mounts()
        with open("/proc/%d/cgroup" % pid) as f:
            for line in f:
                _hid, controllers, path = line.rstrip("\n").split(":", 2)
                parts = path.split("/")
                scopes = [i for i, p in enumerate(parts) if p == name + ".scope"]
                if controllers == "" and "" in mounts and scopes:
                    jail.dirs.append(os.path.join(mounts[""], *parts[1:scopes[0] + 1]))
        return jail

    def wrap(self, cmd):
        moves = " && ".join('echo $$ > %s' % shlex.quote(os.path.join(d, "cgroup.procs"))
                            for d in self.dirs)
        return ["/bin/sh", "-c", moves + ' && exec "$@"', "sh"] + list(cmd)

    def pids(self):
        found = set()
        for top in self.dirs:
            for dirpath, _dirs, files in os.walk(top):
                if "cgroup.procs" in files:
                    try:
                        with open(os.path.join(dirpath, "cgroup.procs")) as f:
                            found.update(int(x) for x in f.read().split())
                    except OSError:
                        pass
        return found

    def kill_all(self, timeout=10):
        """SIGKILLs every process left in the jail (container processes, all
        started by us), by PID; returns the PIDs it had to kill."""
        killed = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("processes %s survive SIGKILL in %s" % (sorted(pids), self.dirs))
            time.sleep(0.1)

    def remove(self):
        """Removes the jail's cgroups, deepest first; returns what could not be removed."""
        left = []
        if not self.owned:
            return left
        for top in self.dirs:
            if not os.path.isdir(top):
                continue
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                for _ in range(50):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)  # EBUSY while the last process is reaped
                else:
                    left.append(dirpath)
        self.dirs = [d for d in self.dirs if os.path.isdir(d)]
        return left


# -- running nspawn ------------------------------------------------------------

def _children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def _nspid(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


def _error_line(text):
    """The most telling line of nspawn's output, for a one-line skip reason."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for l in reversed(lines):
        if re.search(r"fail|error|cannot|can't|not supported|permission|denied", l, re.I):
            return l
    return lines[-1] if lines else "no output"


class Nspawn:
    """One systemd-nspawn process, in a CgroupJail when the host has no systemd."""

    def __init__(self, root, name, log_path, args, env=None):
        self.root = root
        self.name = name
        self.log_path = log_path
        self.jail = None
        base = ["systemd-nspawn", "-D", root, "--machine", name, "--register=no",
                "--link-journal=no", "--pipe", "--quiet"]
        if not host_runs_systemd():
            base.append("--keep-unit")
        base += shlex.split(os.environ.get("KRTIOT_SYSTEM_NSPAWN_ARGS", ""))
        self.cmd = base + list(args)
        self.env = dict(os.environ, PATH=PATH, **(env or {}))
        # The container's systemd on the unified cgroup hierarchy alone, as on
        # a Debian 12 device, even when the host mounts the hybrid layout
        # (nspawn would otherwise copy it: "System is tainted: cgroupsv1").
        self.env.setdefault("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        self.proc = None

    def start(self):
        cmd = self.cmd
        if not host_runs_systemd():
            self.jail = CgroupJail(self.name)
            cmd = self.jail.wrap(cmd)
        with open(self.log_path, "ab") as log:
            log.write(("=== %s\n" % " ".join(shlex.quote(c) for c in self.cmd)).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def log_tail(self, n=25):
        return _tail(self.log_path, n)

    def stop(self, timeout=30):
        """SIGTERM (nspawn then halts the container), SIGKILL after TIMEOUT;
        then whatever is left in the jail is killed and the jail removed.
        Returns a list of problems (empty: all clean)."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                problems.append("systemd-nspawn (pid %d) ignored SIGTERM for %ss: killed" % (self.proc.pid, timeout))
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.jail is not None:
            try:
                killed = self.jail.kill_all()
                if killed:
                    problems.append("processes left in the container's cgroups were killed: %s" % sorted(killed))
            except RuntimeError as e:
                problems.append(str(e))
            left = self.jail.remove()
            if left:
                problems.append("cgroups not removed: %s" % left)
        return problems


def run_command(root, name, log_path, command, args=(), timeout=600):
    """Runs COMMAND (a list) in ROOT with systemd-nspawn, not booted (a stub
    init as PID 1, COMMAND as PID 2). Returns its exit status; its output is
    appended to LOG_PATH."""
    n = Nspawn(root, name, log_path, ["--as-pid2"] + list(args) + ["--"] + list(command))
    n.start()
    try:
        return n.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s did not finish within %ss; log:\n%s"
                             % (" ".join(command), timeout, n.log_tail()))
    finally:
        problems = n.stop()
        if problems:
            raise AssertionError("after %s: %s" % (" ".join(command), "; ".join(problems)))


def probe(root, log_path):
    """Raises Unavailable, with nspawn's own error, when systemd-nspawn
    cannot run even /bin/true in ROOT on this machine."""
    n = Nspawn(root, "krtiot-probe-" + secrets.token_hex(3), log_path, ["--as-pid2", "--", "/bin/true"])
    start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    n.start()  # raises Unavailable when the cgroups cannot be made
    try:
        status = n.wait(120)
    except subprocess.TimeoutExpired:
        status = None
    problems = n.stop()
    if status != 0:
        with open(log_path, errors="replace") as f:
            f.seek(start)
            out = f.read()
        raise Unavailable("systemd-nspawn cannot run a command here (exit %s): %s"
                          % (status, _error_line(out.split("\n", 1)[-1])))  # past the "===" line
    if problems:
        raise AssertionError("after systemd-nspawn /bin/true: " + "; ".join(problems))


class Container:
    """A booted Debian root. Its processes are the nspawn's; commands run in
    it with nsenter into the namespaces of its PID 1."""

    def __init__(self, root, log_path, name=None, args=()):
        self.root = root
        self.name = name or "krtiot-system-" + secrets.token_hex(4)
        self.nspawn = Nspawn(root, self.name, log_path, ["--boot"] + list(args))
        self.pid1 = None  # the container's PID 1, as the host sees it

    def start(self, timeout=60):
        """Boots the container; returns once its PID 1 is found. Raises
        Unavailable with nspawn's own error when nspawn gives up."""
        self.nspawn.start()
        deadline = time.monotonic() + timeout
        while self.pid1 is None:
            if not self.nspawn.running():
                raise Unavailable("systemd-nspawn exited with status %s before the container started: %s"
                                  % (self.nspawn.proc.returncode, _error_line(self.nspawn.log_tail())))
            if time.monotonic() > deadline:
                raise AssertionError("no container PID 1 under systemd-nspawn (pid %d) within %ss; log:\n%s"
                                     % (self.nspawn.pid, timeout, self.nspawn.log_tail()))
            todo = [self.nspawn.pid]
            while todo and self.pid1 is None:
                p = todo.pop()
                ns = _nspid(p)
                if len(ns) >= 2 and ns[-1] == 1:
                    self.pid1 = p
                todo.extend(_children(p))
            if self.pid1 is None:
                time.sleep(0.05)
        if self.nspawn.jail is None:
            # Host with systemd: nspawn is in a scope of its own; whatever
            # is left in it at cleanup() is killed, by PID.
            try:
                self.nspawn.jail = CgroupJail.adopt(self.nspawn.pid, self.name)
            except OSError:
                pass
        return self

    def wait_booted(self, timeout=90):
        """Waits for the container's systemd to finish booting; returns what
        `systemctl is-system-running` says (running, degraded...). Raises
        Unavailable when nspawn exits, AssertionError on a timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not self.nspawn.running():
                raise Unavailable("the container exited (systemd-nspawn status %s) while booting: %s"
                                  % (self.nspawn.proc.returncode, _error_line(self.nspawn.log_tail())))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the container did not finish booting within %ss (last: %r); log:\n%s"
                                     % (timeout, last, self.nspawn.log_tail()))
            try:
                r = self.run("systemctl", "is-system-running", "--wait", timeout=min(left, 30))
                last = (r.stdout + r.stderr).strip()
                if r.stdout.strip() in ("running", "degraded"):
                    return r.stdout.strip()
            except subprocess.TimeoutExpired:
                last = "timeout"
            time.sleep(0.2)

    def command(self, *argv):
        """The host command that runs ARGV inside the container."""
        return (["nsenter", "--target", str(self.pid1), "--all", "--",
                 "/usr/bin/env", "-i", "PATH=" + PATH, "LANG=C.UTF-8", "SYSTEMD_PAGER=",
                 "SYSTEMD_COLORS=0", "TERM=dumb"] + list(argv))

    def run(self, *argv, timeout=60, check=False, text=True):
        """Runs ARGV inside the container; returns the CompletedProcess
        (stdout and stderr captured)."""
        if self.pid1 is None or not self.nspawn.running():
            raise AssertionError("the container is not running")
        r = subprocess.run(self.command(*argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=text, timeout=timeout, env={"PATH": PATH})
        if check and r.returncode != 0:
            raise AssertionError("%s exited %d in the container:\n%s%s"
                                 % (" ".join(argv), r.returncode, r.stdout, r.stderr))
        return r

    def systemctl(self, *args, **kw):
        return self.run("systemctl", "--no-pager", *args, **kw)

    def show(self, unit, *props):
        """{property: value} of `systemctl show UNIT -p PROP...`."""
        r = self.systemctl("show", unit, *["--property=" + p for p in props], check=True)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def journal(self, *args, **kw):
        return self.run("journalctl", "--no-pager", "--quiet", *args, **kw)

    def poweroff(self, timeout=90):
        """systemctl poweroff inside; returns nspawn's exit status."""
        # The call may lose its connection as PID 1 goes down: its own status
        # does not matter, nspawn's does.
        try:
            self.run("systemctl", "poweroff", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            return self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the container did not power off within %ss; log:\n%s"
                                 % (timeout, self.nspawn.log_tail()))

    def cleanup(self):
        """Stops whatever is left (by PID) and removes the cgroups; returns the problems."""
        return self.nspawn.stop()


def mounts_under(path):
    """Mount points at or below PATH in the host's mount namespace."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                found.append(mnt)
    return found
