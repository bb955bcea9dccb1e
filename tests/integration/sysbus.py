# SPDX-License-Identifier: Apache-2.0
"""A private system-like D-Bus for the tests: a real dbus-daemon with
Debian's system bus policy (deny by default) and the policy file krtiot
ships (dbus/com.krtyun.Krtiot1.conf), in which the user krtiot becomes the
agent's test user (daemon.AGENT_USER). It listens on a unix socket in its
own directory; DBUS_SYSTEM_BUS_ADDRESS=bus.address points krtiotd,
krtiotctl and busctl at it.

    bus = SystemBus(tmpdir); bus.start()
    bus.call(...), bus.get(prop), bus.get_all(), bus.monitor()
    bus.restart(down_seconds), bus.stop()
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(REPO, "dbus", "com.krtyun.Krtiot1.conf")
NAME = "com.krtyun.Krtiot1"
PATH = "/com/krtyun/Krtiot1"
IFACE = "com.krtyun.Krtiot1"

# Debian 12's /usr/share/dbus-1/system.conf, without what a private bus must not have (a user to switch to,
# fork, service activation, syslog, the host's policy directories).
CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


def missing_requirements():
    for prog in ("dbus-daemon", "busctl"):
        if not shutil.which(prog):
            return "%s is not installed (apt-get install dbus-daemon systemd)" % prog
    return None


class SystemBus:
    def __init__(self, tmpdir, agent_user):
        self.dir = os.path.join(str(tmpdir), "sysbus")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "system_bus_socket")
        self.address = "unix:path=" + self.socket
        self.log_path = os.path.join(self.dir, "dbus-daemon.log")
        self.policy_path = os.path.join(self.dir, "krtiot-policy.conf")
        with open(POLICY) as f:
            text = f.read()
        # The shipped policy names the package's user; the tests' agent runs as another.
        text, n = re.subn(r'user="krtiot"', 'user="%s"' % agent_user, text)
        assert n == 1, "the shipped policy no longer has one <policy user=\"krtiot\">"
        with open(self.policy_path, "w") as f:
            f.write(text)
        self.config_path = os.path.join(self.dir, "bus.conf")
        with open(self.config_path, "w") as f:
            f.write(CONFIG.format(socket=self.socket, policy=self.policy_path))
        self.proc = None

    def start(self, timeout=10):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile", "--config-file",
                                      self.config_path, "--print-address"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        log.close()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("dbus-daemon did not start: %s" % self.log_text())
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon made no socket")
            time.sleep(0.02)
        return self

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def restart(self, down_seconds=0.0):
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def env(self, extra=None):
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env.update(extra or {})
        return env

    # -- asking, with busctl (the system's own tool) ------------------------------------

    def busctl(self, *args, user_cmd=None, timeout=10, check=True):
        """busctl --system ARGS (as USER_CMD's user when given: a prefix such as setpriv ...)."""
        cmd = list(user_cmd or []) + ["busctl", "--system", "--no-pager"] + list(args)
        r = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
        return r

    def has_owner(self, name=NAME):
        r = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "NameHasOwner", "s", name)
        return r.stdout.strip() == "b true"

    def owner_uid(self, name=NAME):
        r = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "GetConnectionUnixUser", "s", name)
        return int(r.stdout.split()[1])

    def wait_owner(self, timeout=10, name=NAME):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running() and self.has_owner(name):
                return
            time.sleep(0.05)
        raise AssertionError("nobody owns %s on the test bus after %s s" % (name, timeout))

    def get_all(self, user_cmd=None):
        """Every property of the interface, as a dict of Python values."""
        r = self.busctl("--json=short", "call", NAME, PATH, "org.freedesktop.DBus.Properties", "GetAll",
                        "s", IFACE, user_cmd=user_cmd)
        data = json.loads(r.stdout)["data"][0]
        return {k: v["data"] for k, v in data.items()}

    def get(self, prop, user_cmd=None):
        return self.get_all(user_cmd=user_cmd)[prop]

    def wait_property(self, prop, pred, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.get_all()
                if pred(last[prop]):
                    return last
            except AssertionError:
                pass
            time.sleep(0.05)
        raise AssertionError("%s never matched in %s s; last properties: %r" % (prop, timeout, last))


class Monitor:
    """`busctl monitor` of krtiotd's name: every message to or from it, as
    dicts (busctl --json=short), collected in a thread."""

    def __init__(self, bus):
        self.bus = bus
        self.messages = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(["busctl", "--system", "--json=short", "monitor", NAME],
                                     env=bus.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # busctl becomes a monitor asynchronously

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                m = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.messages.append(m)

    def signals(self, member=None):
        with self._lock:
            msgs = list(self.messages)
        return [m for m in msgs if m.get("type") == "signal" and (member is None or m.get("member") == member)]

    def changed(self):
        """Each PropertiesChanged of our interface as a dict {name: value}."""
        out = []
        for m in self.signals("PropertiesChanged"):
            payload = m.get("payload", {}).get("data", [])
            if not payload or payload[0] != IFACE:
                continue
            out.append({k: v["data"] for k, v in payload[1].items()})
        return out

    def wait_signal(self, member, pred=lambda m: True, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.signals(member):
                if pred(m):
                    return m
            time.sleep(0.05)
        raise AssertionError("no %s signal in %s s; got: %r" % (member, timeout, self.signals()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
