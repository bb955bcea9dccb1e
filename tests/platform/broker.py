# SPDX-License-Identifier: Apache-2.0
"""A real mosquitto for the tests: one broker per test, on a free loopback
port, from a temporary directory, with the dynamic-security plugin so that
clients and their passwords can be changed while it runs (the simulated
platform does that through the $CONTROL API, see platform.py).

The broker's state that matters to the tests (clients, roles, passwords) is
the dynamic-security JSON file, which the plugin rewrites on every change, so
restart() on the same port brings back every client it knew.

Everything is stopped by PID; nothing here ever matches processes by name.
"""

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time

ADMIN_USER = "admin"


def find_dynsec_plugin():
    """The dynamic-security plugin's path, or None when it is not installed."""
    env = os.environ.get("KRTIOT_DYNSEC_PLUGIN")
    if env:
        return env if os.path.exists(env) else None
    patterns = [
        "/usr/lib/*/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/lib/*/mosquitto/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/*/mosquitto_dynamic_security.so",
    ]
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def find_mosquitto():
    """The mosquitto binary (often in /usr/sbin, which a user's PATH lacks)."""
    path = shutil.which("mosquitto")
    if path:
        return path
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_requirements():
    """A sentence saying what is missing to run a broker, or None."""
    missing = []
    if not find_mosquitto():
        missing.append("mosquitto (package mosquitto)")
    if not shutil.which("mosquitto_ctrl"):
        missing.append("mosquitto_ctrl (package mosquitto-clients)")
    if not find_dynsec_plugin():
        missing.append("mosquitto_dynamic_security.so (package mosquitto)")
    if missing:
        return "not installed: " + ", ".join(missing)
    return None


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_bindable(port, host="127.0.0.1"):
    """Whether a listener could bind PORT now (with SO_REUSEADDR, as mosquitto does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class BrokerError(RuntimeError):
    pass


class Broker:
    """mosquitto with dynamic security on 127.0.0.1:port.

    Broker(tmpdir) starts it at once. Attributes: host, port, pid,
    admin_user, admin_password, dir, conf_path, dynsec_path, log_path.
    """

    host = "127.0.0.1"

    def __init__(self, tmpdir, port=None, admin_password=None, start=True):
        reason = missing_requirements()
        if reason:
            raise BrokerError(reason)
        self.dir = os.path.join(str(tmpdir), "broker")
        os.makedirs(self.dir, exist_ok=True)
        self.conf_path = os.path.join(self.dir, "mosquitto.conf")
        self.dynsec_path = os.path.join(self.dir, "dynamic-security.json")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.stdout_path = os.path.join(self.dir, "mosquitto.out")
        self.admin_user = ADMIN_USER
        self.admin_password_path = os.path.join(self.dir, "admin.password")
        if admin_password is None and os.path.exists(self.dynsec_path):
            # A directory used before: its dynsec file knows the old password.
            with open(self.admin_password_path) as f:
                admin_password = f.read().strip()
        self.admin_password = admin_password or secrets.token_hex(12)
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self._write_dynsec()
        self._write_conf()
        if start:
            self.start()

    # -- files -------------------------------------------------------------

    def _write_dynsec(self):
        if os.path.exists(self.dynsec_path):
            return
        with open(self.admin_password_path, "w", opener=lambda p, fl: os.open(p, fl, 0o600)) as f:
            f.write(self.admin_password + "\n")
        # mosquitto_ctrl hashes the admin password the way the plugin wants it.
        res = subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", self.dynsec_path,
             self.admin_user, self.admin_password],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=30)
        if res.returncode != 0 or not os.path.exists(self.dynsec_path):
            raise BrokerError("mosquitto_ctrl dynsec init failed: " + res.stdout)
        # The admin is also the simulated platform, which sends commands on
        # /sys/#. Granted here, in the file, because changing the roles of a
        # connected client through the API makes mosquitto disconnect it.
        with open(self.dynsec_path) as f:
            doc = json.load(f)
        for role in doc.get("roles", []):
            if role.get("rolename") == "admin":
                role.setdefault("acls", []).append(
                    {"acltype": "publishClientSend", "topic": "/sys/#", "allow": True})
        with open(self.dynsec_path + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(self.dynsec_path + ".tmp", self.dynsec_path)

    def _write_conf(self):
        lines = [
            "per_listener_settings false",
            "listener %d 127.0.0.1" % self.port,
            "allow_anonymous false",
            "plugin " + find_dynsec_plugin(),
            "plugin_opt_config_file " + self.dynsec_path,
            "persistence false",
            "log_dest file " + self.log_path,
            "log_type all",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the user "mosquitto", which
            # cannot write the log and the dynsec file in our temp dir.
            lines.append("user " + pwd.getpwuid(os.geteuid()).pw_name)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- process -----------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15):
        if self.running():
            raise BrokerError("broker already running")
        deadline = time.monotonic() + timeout
        while not port_bindable(self.port):
            if time.monotonic() > deadline:
                raise BrokerError("port %d is still in use" % self.port)
            time.sleep(0.05)
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [find_mosquitto(), "-c", self.conf_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.dir)
        finally:
            out.close()
        self.starts += 1
        while not port_accepts(self.port):
            if self.proc.poll() is not None:
                raise BrokerError("mosquitto exited with %s:\n%s\n%s" % (
                    self.proc.returncode, self._read(self.stdout_path),
                    self.log_text()[-4000:]))
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError("mosquitto did not listen on port %d within %ss"
                                  % (self.port, timeout))
            time.sleep(0.05)
        return self

    def stop(self, timeout=10):
        """SIGTERM, wait (SIGKILL after TIMEOUT). Returns the exit status or None."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self):
        """SIGKILL, wait."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.proc.returncode

    def restart(self, down_seconds=0.0, hard=False):
        """Stops (or kills, when HARD) and starts again on the same port with
        the same dynsec file, so every client the broker knew still exists."""
        if hard:
            self.kill()
        else:
            self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        return self.start()

    # -- introspection -----------------------------------------------------

    @staticmethod
    def _read(path):
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_text(self):
        return self._read(self.log_path)

    def log_mark(self):
        """A position in the log, for wait_log(since=...)."""
        return len(self.log_text())

    def wait_log(self, needle, timeout=10, since=0):
        """Waits until NEEDLE (a plain string) is in the broker's log (after
        offset SINCE). Returns whether it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text()[since:]:
                return True
            time.sleep(0.05)
        return False

    def __repr__(self):
        return "<Broker 127.0.0.1:%d pid=%s>" % (self.port, self.pid)


if __name__ == "__main__":
    # For the demo and for debugging: run a broker in a temp dir until ^C.
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Run a mosquitto with dynamic security on loopback.")
    ap.add_argument("--dir", help="directory for its files (default: a new temp dir)")
    ap.add_argument("--port", type=int, help="port (default: a free one)")
    ap.add_argument("--admin-password", help="admin password (default: random)")
    args = ap.parse_args()
    d = args.dir or tempfile.mkdtemp(prefix="krtiot-broker-")
    b = Broker(d, port=args.port, admin_password=args.admin_password)
    print("broker 127.0.0.1:%d pid %d dir %s admin %s password %s"
          % (b.port, b.pid, b.dir, b.admin_user, b.admin_password), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop and b.running():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
