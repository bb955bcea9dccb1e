# SPDX-License-Identifier: Apache-2.0
"""Running the real krtiotd for the integration tests: its config file
(SPEC section 7, libconfig syntax), its seeded credentials, its notify
socket, its process and its log; and beside it the real krtiot-install,
which runs its hooks.

The daemon runs in the foreground as `krtiotd -c CONF`, with stdout and
stderr in a log file, NOTIFY_SOCKET pointing at a NotifySocket of ours, and,
when asked, WATCHDOG_USEC and WATCHDOG_PID (which must be the daemon's own
PID, so it is set by a shell that then execs the daemon).

The installer runs as `krtiot-install -c CONF --listen SOCK --runtime-dir
DIR` (as root, like the tests), with the same CONF, whose
ota.installer_socket is SOCK: started before the daemon, stopped by PID at
cleanup, logging to its own file. Like krtiot-install.service beside
krtiot.service, it is not stopped or killed with the daemon.
"""

import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLATFORM_DIR = os.path.join(REPO, "tests", "platform")
EX_CONFIG = 78


def _load(name, filename):
    # tests/platform/platform.py would shadow the standard library's
    # "platform" if its directory were put on sys.path: load it by path,
    # under another name.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(PLATFORM_DIR, filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


broker_module = _load("krtiot_broker", "broker.py")
platform_module = _load("krtiot_platform", "platform.py")


def restart_broker(broker, platform=None, down_seconds=0.0, hard=False):
    """Restarts BROKER on the same port; waits for PLATFORM to log in again."""
    before = platform.connects if platform else 0
    broker.restart(down_seconds=down_seconds, hard=hard)
    if platform:
        platform.wait_reconnected(before)

# The hook the core tests configure: records its calls, installs nothing.
# (The OTA tests bring their own hooks.)
RECORDING_HOOK = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/hook.calls"
case "$1" in
  version) cat "$(dirname "$0")/fw_version" ;;
  install) exit 1 ;;
esac
exit 0
"""


def build_dir():
    return os.environ.get("KRTIOT_BUILD_DIR") or os.path.join(REPO, "build")


def daemon_binary():
    """The krtiotd under test: $KRTIOT_BUILD_DIR/src/agent/krtiotd (default build/ in the repository)."""
    return os.path.join(build_dir(), "src", "agent", "krtiotd")


def fetch_binary():
    """The krtiot-fetch the daemon under test runs: $KRTIOT_BUILD_DIR/src/fetch/krtiot-fetch."""
    return os.path.join(build_dir(), "src", "fetch", "krtiot-fetch")


def installer_binary():
    """The krtiot-install under test: $KRTIOT_BUILD_DIR/src/install/krtiot-install."""
    return os.path.join(build_dir(), "src", "install", "krtiot-install")


def daemon_missing():
    """Why the daemon cannot be run (a sentence), or None."""
    path = daemon_binary()
    if not os.path.exists(path):
        return ("krtiotd is not built: %s does not exist (build with meson, or set "
                "KRTIOT_BUILD_DIR to the build directory)" % path)
    if not os.access(path, os.X_OK):
        return "%s is not executable" % path
    if not os.access(installer_binary(), os.X_OK):
        return "krtiot-install is not built: %s is not executable" % installer_binary()
    return None


class WaitTimeout(AssertionError):
    pass


# -- the agent's user -------------------------------------------------------------

AGENT_USER = "krtiot-test"
_agent_identity = []


def agent_identity():
    """(uid, gid) every krtiotd under test runs as. krtiotd never runs as root
    in production (krtiot.service: User=krtiot): as root, the tests run it as
    the system user krtiot-test, created here once (useradd) when missing, so
    that any hidden need for root shows up. Not root: our own uid and gid."""
    if not _agent_identity:
        if os.geteuid() != 0:
            _agent_identity.append((os.getuid(), os.getgid()))
        else:
            import pwd
            try:
                pw = pwd.getpwnam(AGENT_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                                "--comment", "krtiot tests, the unprivileged agent", AGENT_USER],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60)
                pw = pwd.getpwnam(AGENT_USER)
            _agent_identity.append((pw.pw_uid, pw.pw_gid))
    return _agent_identity[0]


def as_agent(cmd):
    """CMD run as the agent's user (setpriv, which execs: same PID)."""
    uid, gid = agent_identity()
    if uid == os.geteuid():
        return list(cmd)
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"] + list(cmd)


def give_to_agent(*paths):
    """PATHS (made if missing, as directories) belong to the agent's user."""
    uid, gid = agent_identity()
    for p in paths:
        if not os.path.lexists(p):
            os.makedirs(p, exist_ok=True)
        os.lchown(p, uid, gid)


def open_path_to(path):
    """Lets everyone traverse (never list) the directories above PATH that
    pytest made 0700 (/tmp/pytest-of-root, ...), up to the first one that is
    already traversable."""
    d = os.path.dirname(os.path.abspath(path))
    while d != "/":
        st = os.stat(d)
        if st.st_mode & 0o001:
            break
        os.chmod(d, (st.st_mode & 0o7777) | 0o011)
        d = os.path.dirname(d)


_strace_problem = []


def strace_missing():
    """Why strace cannot trace a child here (a sentence), or None: not
    installed, or ptrace refused (a container without CAP_SYS_PTRACE, a
    Yama ptrace_scope of 3). Tried once per run."""
    import shutil
    if not _strace_problem:
        path = shutil.which("strace")
        if path is None:
            _strace_problem.append("strace is not installed")
        else:
            r = subprocess.run([path, "-f", "-o", "/dev/null", "--", "/bin/true"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
            _strace_problem.append(None if r.returncode == 0 else
                                   "strace cannot trace here (ptrace not allowed?): exit %d: %s"
                                   % (r.returncode, r.stdout.strip()[:200]))
    return _strace_problem[0]


# -- libconfig ------------------------------------------------------------------

def libconfig_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(libconfig_value(x) for x in v) + " ]"
    raise TypeError("cannot write %r in libconfig syntax" % (v,))


class Raw:
    """A value written into the config as is (for broken configs)."""

    def __init__(self, text):
        self.text = text


def render_config(tree):
    """TREE: {top-level key: scalar or {key: scalar}}. Returns (text, lines),
    where LINES maps "group.key" to the line number it was written on."""
    out = []
    lines = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append("%s = {" % key)
            for k, v in value.items():
                out.append("  %s = %s;" % (k, libconfig_value(v)))
                lines["%s.%s" % (key, k)] = len(out)
            out.append("};")
        else:
            out.append("%s = %s;" % (key, libconfig_value(value)))
            lines[key] = len(out)
    return "\n".join(out) + "\n", lines


def apply_overrides(tree, overrides):
    """OVERRIDES: {"report.interval": 2, "device.id": None (removes it), "mqtt": None, ...}."""
    for path, value in (overrides or {}).items():
        parts = path.split(".")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return tree


# -- the notify socket ------------------------------------------------------------

SYNC_PREFIX = b"X_KRTIOT_HARNESS_SYNC="


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.
    Every datagram is kept as (time, sender_pid, text); a thread reads them.
    .path is what to put in NOTIFY_SOCKET. The query methods (all,
    datagrams, lines, statuses, count) first sync(), so they see everything
    sent before they were called, even by a process that has exited since."""

    def __init__(self):
        # sun_path is short (108 bytes): a short directory, not pytest's tmp_path.
        self.dir = tempfile.mkdtemp(prefix="krtn-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        # The agent under test does not run as root (agent_identity()): it must reach us.
        os.chmod(self.dir, 0o711)
        os.chmod(self.path, 0o666)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self._cond = threading.Condition()
        self._datagrams = []
        self._synced = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def _run(self):
        ucred_len = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(ucred_len))
            except socket.timeout:
                continue
            except OSError:
                return
            if data.startswith(SYNC_PREFIX):
                with self._cond:
                    self._synced.add(data[len(SYNC_PREFIX):])
                    self._cond.notify_all()
                continue
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid, _uid, _gid = struct.unpack("3i", cdata[:ucred_len])
            with self._cond:
                self._datagrams.append((time.monotonic(), pid, data.decode("utf-8", "replace")))
                self._cond.notify_all()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass

    def sync(self, timeout=5):
        """Returns once every datagram queued on the socket has been read: it
        sends one of its own and waits for the reader to reach it."""
        if self._stop.is_set():
            return  # closed: what was read is all there is
        token = secrets.token_hex(8).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(SYNC_PREFIX + token, self.path)
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._synced:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout("the notify socket reader is stuck")
                self._cond.wait(left)
            self._synced.discard(token)

    def mark(self):
        """A position: pass it as SINCE to look only at later datagrams."""
        self.sync()
        with self._cond:
            return len(self._datagrams)

    def all(self, since=0):
        """The datagrams' texts, oldest first."""
        return [d[2] for d in self.datagrams(since)]

    def datagrams(self, since=0):
        """(monotonic time, sender pid, text) tuples."""
        self.sync()
        with self._cond:
            return list(self._datagrams[since:])

    def lines(self, since=0, pid=None):
        """Every assignment ("KEY=VALUE") of every datagram, in order."""
        return [line for _t, p, text in self.datagrams(since) if pid is None or p == pid
                for line in text.split("\n") if line]

    def statuses(self, since=0):
        """The STATUS= values sent."""
        return [line[len("STATUS="):] for line in self.lines(since) if line.startswith("STATUS=")]

    @staticmethod
    def _matches(line, want):
        if isinstance(want, re.Pattern):
            return want.search(line) is not None
        if want.endswith("="):
            return line.startswith(want)
        return line == want

    def wait_for(self, want, timeout=10, since=0, pid=None):
        """Waits for an assignment: WANT is an exact line ("READY=1"), a
        prefix ending in "=" ("STATUS="), or a compiled regex. Returns
        (index of its datagram, line); raises WaitTimeout."""
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._datagrams):
                    _t, p, text = self._datagrams[i]
                    i += 1
                    if pid is not None and p != pid:
                        continue
                    for line in text.split("\n"):
                        if self._matches(line, want):
                            return i - 1, line
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            seen = [d[2] for d in self._datagrams[since:]]
        raise WaitTimeout("no %r on the notify socket within %ss; got %r" % (
            getattr(want, "pattern", want), timeout, seen[-40:]))

    def count(self, want, since=0):
        return sum(1 for line in self.lines(since) if self._matches(line, want))


# -- the installer ----------------------------------------------------------------

def child_pids(pid):
    """The PIDs of PID's children."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _remove_socket_dir(socket_dir, socket_path):
    for remove, path in ((os.unlink, socket_path), (os.rmdir, socket_dir)):
        try:
            remove(path)
        except OSError:
            pass


class Installer:
    """One krtiot-install: `-c CONF_PATH --listen SOCKET --runtime-dir
    RUNTIME_DIR`, stdout and stderr in LOG_PATH. SOCKET is in a short
    directory of its own (sun_path is 108 bytes: not under pytest's
    tmp_path)."""

    def __init__(self, conf_path, log_path, runtime_dir, name="install"):
        self.binary = installer_binary()
        self.conf_path = conf_path
        self.log_path = log_path
        self.runtime_dir = runtime_dir
        self.name = name
        self.socket_dir = tempfile.mkdtemp(prefix="krti-")
        # Reachable by an agent that does not run as root (the socket is 0666): the installer's peer
        # check is the gate, as under systemd.
        os.chmod(self.socket_dir, 0o755)
        self.socket_path = os.path.join(self.socket_dir, "install.sock")
        # Also for a Daemon that is never started nor cleaned up (a test of the harness itself).
        weakref.finalize(self, _remove_socket_dir, self.socket_dir, self.socket_path)
        self.proc = None
        self.starts = 0

    def command(self, *args):
        return [self.binary, "-c", self.conf_path, "--listen", self.socket_path,
                "--runtime-dir", self.runtime_dir] + list(args)

    def start(self, args=(), timeout=10, check=True):
        """Starts it and waits until it accepts connections. Without CHECK, an
        installer that exits at once (a configuration it refuses, as a test
        may want for the daemon) is left so: its log says why."""
        if self.running():
            raise RuntimeError("krtiot-install %s already running" % self.name)
        cmd = self.command(*args)
        env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        log = open(self.log_path, "ab")
        try:
            log.write(b"=== start %d: %s\n" % (self.starts + 1, " ".join(cmd).encode()))
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd="/")
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None:
                if not check:
                    return self
                raise RuntimeError("krtiot-install %s exited (%s) at start; log:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("krtiot-install %s did not listen on %s within %ss; log:\n%s"
                                   % (self.name, self.socket_path, timeout, self.log_tail()))
            time.sleep(0.02)
        return self

    def _accepts(self):
        # A connection that sends nothing: the installer closes it after a few seconds, no harm done.
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            try:
                s.connect(self.socket_path)
                return True
            except OSError:
                return False

    def ask(self, request, timeout=30):
        """Sends REQUEST (str or bytes: one datagram, as the agent does) and
        returns the answer line (str), or "" when it closed the connection
        without one."""
        data = request.encode() if isinstance(request, str) else request
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(timeout)
            s.connect(self.socket_path)
            s.send(data)
            return s.recv(65536).decode("utf-8", "replace")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def hook_pids(self):
        """What it runs now (hooks, each the leader of its own process group)."""
        return child_pids(self.proc.pid) if self.running() else []

    def stop(self, timeout=10):
        """SIGTERM (it waits for a running hook), wait; SIGKILL after TIMEOUT.
        Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def kill9(self, hooks=True):
        """SIGKILL by PID; with HOOKS, the process groups of its hooks first
        (a power loss takes them all)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode
        if hooks:
            for pid in self.hook_pids():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.proc.kill()
        self.proc.wait(timeout=10)
        return self.proc.returncode

    def cleanup(self):
        """Teardown: stopped (a hook still running is killed after 5 s), socket removed."""
        self.stop(timeout=5)
        self.kill9()
        _remove_socket_dir(self.socket_dir, self.socket_path)

    # -- log ----------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """A position in the log: pass it as SINCE to wait_log()."""
        return len(self.log_text())

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, regex, timeout=10, since=0, flags=0):
        """Waits until REGEX matches the log (from offset SINCE); returns the match."""
        pattern = re.compile(regex, flags) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self.log_text(), since)
            if m:
                return m
            if time.monotonic() > deadline:
                raise WaitTimeout("no /%s/ in the log of krtiot-install %s within %ss; log:\n%s"
                                  % (pattern.pattern, self.name, timeout, self.log_tail()))
            time.sleep(0.05)

    def __repr__(self):
        return "<krtiot-install %s pid=%s>" % (self.name, self.pid)


# -- the daemon -------------------------------------------------------------------

class Daemon:
    """One krtiotd, in its own directory under TMPDIR.

    Daemon(tmpdir, broker, platform=None, notify=None, name="d1",
           product_id="P1", product_secret=None, device_id="D1",
           seed=True, device_secret=None, config=None, extra_config="",
           watchdog_usec=None, fw_version="2.0.0", hw_version="1.0.0",
           start=True, installer=True, bus=None)

    CONFIG: overrides of the default config as dotted keys, e.g.
    {"report.interval": 2, "device.id": None}. SEED: write
    {state_dir}/credentials.json with DEVICE_SECRET (random by default) and,
    with a PLATFORM, create the device on the broker with that secret.
    INSTALLER: run a krtiot-install beside it (.installer, started with the
    daemon when it is not running); False for daemons that never install
    (the config still names a socket, where nothing listens). BUS: a
    sysbus.SystemBus to serve D-Bus on; without one, DBUS_SYSTEM_BUS_ADDRESS
    names a socket nobody listens on, so that no test reaches the host's bus.
    """

    def __init__(self, tmpdir, broker, platform=None, notify=None, name="d1",
                 product_id="P1", product_secret=None, device_id="D1", seed=True,
                 device_secret=None, config=None, extra_config="", watchdog_usec=None,
                 watchdog_pid=None, fw_version="2.0.0", hw_version="1.0.0", start=True,
                 env=None, installer=True, bus=None):
        self.binary = daemon_binary()
        self.broker = broker
        self.platform = platform
        self.notify = notify
        self.name = name
        self.dir = os.path.join(str(tmpdir), "krtiotd-" + name)
        os.makedirs(self.dir, exist_ok=True)
        open_path_to(self.dir)
        self.state_dir = os.path.join(self.dir, "state")
        self.download_dir = os.path.join(self.dir, "download")
        # What the packaged unit gives krtiot: its StateDirectory=, and the download directory in it.
        give_to_agent(self.state_dir, self.download_dir)
        self.conf_path = os.path.join(self.dir, "krtiot.conf")
        self.log_path = os.path.join(self.dir, "krtiotd.log")
        self.hook_path = os.path.join(self.dir, "hook")
        self.fw_version_path = os.path.join(self.dir, "fw_version")
        self.product_id = product_id
        self.product_secret = product_secret or "ps-" + secrets.token_hex(10)
        self.device_id = device_id
        self.device_secret = device_secret or ("ds-" + secrets.token_hex(10) if seed else None)
        self.hw_version = hw_version
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid
        self.extra_env = dict(env or {})
        self.overrides = dict(config or {})
        self.extra_config = extra_config
        self.config_lines = {}
        self.proc = None
        self.starts = 0
        self.installer = Installer(self.conf_path, os.path.join(self.dir, "krtiot-install.log"),
                                   os.path.join(self.dir, "install-runtime"), name=name)
        self.run_installer = installer
        self.bus = bus

        with open(self.hook_path, "w") as f:
            f.write(RECORDING_HOOK)
        os.chmod(self.hook_path, 0o755)
        if fw_version is not None:
            self.set_fw_version(fw_version)
        self.write_config()
        if seed:
            self.seed_credentials()
        if start:
            self.start()

    # -- files ------------------------------------------------------------

    def default_tree(self):
        return {
            "log_level": "debug",
            "state_dir": self.state_dir,
            "mqtt": {
                "uri": "tcp://127.0.0.1:%d" % self.broker.port if self.broker else "tcp://127.0.0.1:9",
                "client_id": "{product_id}",
                "keepalive": 30,
                "reconnect_max": 2,
            },
            "product": {"id": self.product_id, "secret": self.product_secret},
            "device": {
                "id": self.device_id,
                "hw_version": self.hw_version,
                "fw_version_file": self.fw_version_path,
            },
            "report": {"interval": 3600},
            "registration": {"timeout": 5},
            "ota": {
                "hook": self.hook_path,
                "download_dir": self.download_dir,
                "reboot_command": "",
                "report_progress": False,
                "installer_socket": self.installer.socket_path,
            },
        }

    def write_config(self, config=None, extra_config=None, replace=False):
        """Writes the config file. CONFIG (dotted overrides) is added to the
        ones given so far, unless REPLACE. Returns its path."""
        if replace:
            self.overrides = {}
        self.overrides.update(config or {})
        if extra_config is not None:
            self.extra_config = extra_config
        text, self.config_lines = render_config(apply_overrides(self.default_tree(), self.overrides))
        text += self.extra_config
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)
        return self.conf_path

    def write_config_text(self, text):
        """Replaces the config file with TEXT as is."""
        with open(self.conf_path, "w") as f:
            f.write(text)

    def config_text(self):
        with open(self.conf_path) as f:
            return f.read()

    def set_fw_version(self, version):
        tmp = self.fw_version_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(version + "\n")
        os.replace(tmp, self.fw_version_path)

    @property
    def credentials_path(self):
        return os.path.join(self.state_dir, "credentials.json")

    def seed_credentials(self, provision=True):
        """Writes credentials.json (mode 0600) and, with a platform, creates
        the device on the broker with that secret."""
        doc = {"product_id": self.product_id, "device_id": self.device_id,
               "device_secret": self.device_secret}
        fd = os.open(self.credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.chmod(self.credentials_path, 0o600)
        give_to_agent(self.credentials_path)
        if provision and self.platform is not None:
            self.platform.provision_device(self.device_id, self.device_secret)

    def read_credentials(self):
        with open(self.credentials_path) as f:
            return json.load(f)

    # -- process ----------------------------------------------------------

    def command(self, *args):
        """krtiotd's command line, as the agent's user (agent_identity())."""
        return as_agent([self.binary, "-c", self.conf_path] + list(args))

    def _env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                            "LISTEN_FDS", "LISTEN_PID", "INVOCATION_ID", "JOURNAL_STREAM")}
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.path
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        # The build tree's downloader, not an installed one (krtiotd reads it with secure_getenv()).
        env["KRTIOT_FETCH_PROGRAM"] = fetch_binary()
        env["DBUS_SYSTEM_BUS_ADDRESS"] = (self.bus.address if self.bus else
                                          "unix:path=" + os.path.join(self.dir, "no_system_bus_socket"))
        env.update(self.extra_env)
        return env

    def start(self, args=()):
        if self.running():
            raise RuntimeError("krtiotd %s already running" % self.name)
        if self.run_installer and not self.installer.running():
            self.installer.start(check=False)
        cmd = self.command(*args)
        if self.watchdog_usec is not None and self.watchdog_pid is None:
            # WATCHDOG_PID must be the daemon's own PID: the shell exports its
            # PID and execs the daemon, which keeps it.
            cmd = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"'] + cmd
        env = self._env()
        if self.watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(self.watchdog_pid)
        log = open(self.log_path, "ab")
        try:
            log.write(b"=== start %d: %s\n" % (self.starts + 1, " ".join(cmd).encode()))
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        finally:
            log.close()
        self.starts += 1
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=10):
        """Waits for the daemon to exit; returns its exit status (negative: killed by a signal)."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL after TIMEOUT. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("krtiotd %s did not stop within %ss of SIGTERM"
                                     % (self.name, timeout))
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def restart(self, args=()):
        self.stop()
        return self.start(args)

    def cleanup(self):
        """Teardown: whatever is left is killed, the installer too."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=5)
            except AssertionError:
                pass
            self.kill9()
        self.installer.cleanup()

    def run(self, *args, timeout=20, config=True):
        """Runs krtiotd [-c CONF] ARGS to completion (e.g. --check-config);
        returns the CompletedProcess with text stdout and stderr."""
        cmd = (self.command(*args) if config else as_agent([self.binary] + list(args)))
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=self._env(), timeout=timeout)

    # -- log --------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """A position in the log: pass it as SINCE to wait_log()."""
        return len(self.log_text())

    def wait_log(self, regex, timeout=10, since=0, flags=0):
        """Waits until REGEX matches the log (from offset SINCE); returns the
        match. Raises WaitTimeout with the log's tail. Fails early if the
        daemon exits."""
        pattern = re.compile(regex, flags) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self.log_text(), since)
            if m:
                return m
            if time.monotonic() > deadline:
                break
            if self.proc is not None and self.proc.poll() is not None:
                # One last look: the exit may have flushed the line.
                m = pattern.search(self.log_text(), since)
                if m:
                    return m
                raise WaitTimeout("krtiotd exited (%s) before logging /%s/; log:\n%s"
                                  % (self.proc.returncode, pattern.pattern, self.log_tail()))
            time.sleep(0.05)
        raise WaitTimeout("no /%s/ in the log of krtiotd %s within %ss; log:\n%s"
                          % (pattern.pattern, self.name, timeout, self.log_tail()))

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def __repr__(self):
        return "<krtiotd %s pid=%s>" % (self.name, self.pid)
