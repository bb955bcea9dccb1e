# SPDX-License-Identifier: Apache-2.0
"""The peer of the idle-footprint benchmark: Debian's mender-client
(`apt-get install mender-client`, Mender 3.x) in daemon mode, against a
minimal Mender server on loopback, so that it reaches the state of a device
that is accepted and has nothing to do (authorized, inventory sent, update
check answered "no update", then waiting for its next poll).

How it is run, without touching the host's files:
  * its config, data directory and device_type file are in a temp dir
    (`mender -c CONF -b MISSING -d DATA daemon`);
  * two paths that mender 3.4 does not let the config move,
    /etc/mender/artifact_info (the running artifact's name) and
    /usr/share/mender/identity/mender-device-identity (Debian ships the
    directory empty), are bind-mounted from the temp dir in a private mount
    namespace of its own (`unshare -m --propagation private`), which `sh`
    then `exec`s mender in: the PID we get is mender's;
  * the server is this file run as a script: auth request -> a token,
    inventory -> 200, "next deployment" -> 204 (no update).

Run as a script: `mender_peer.py PORT` serves on 127.0.0.1:PORT until SIGTERM.
"""

import http.server
import os
import shutil
import subprocess
import sys
import time

MENDER = shutil.which("mender") or "/usr/bin/mender"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"

# Polls as a production device would have them: check for updates every
# 30 min, inventory every 8 h (mender's own documented defaults).
CONF = """{
  "ServerURL": "http://127.0.0.1:%(port)d",
  "TenantToken": "",
  "UpdatePollIntervalSeconds": 1800,
  "InventoryPollIntervalSeconds": 28800,
  "RetryPollIntervalSeconds": 300,
  "DeviceTypeFile": "%(dir)s/data/device_type",
  "DBus": {"Enabled": false}
}
"""


def missing():
    """Why mender cannot be run here (a sentence), or None."""
    if not os.access(MENDER, os.X_OK):
        return "mender-client not installed (apt-get install mender-client)"
    if not os.access(UNSHARE, os.X_OK):
        return "unshare (util-linux) not found"
    if os.geteuid() != 0:
        return "needs root for its private mount namespace (bind mounts over /etc/mender)"
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    # A token the client treats as opaque.
    TOKEN = b"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJrcnRpb3QtYmVuY2gifQ.c2lnbmF0dXJl"

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(min(n, 1 << 20))
        sys.stderr.write("%.3f %s %s\n" % (time.time(), self.command, self.path))
        sys.stderr.flush()
        if "/authentication/auth_requests" in self.path:
            status, body = 200, self.TOKEN
        elif "/deployments/device/deployments/next" in self.path:
            status, body = 204, b""
        elif "/inventory/device/attributes" in self.path:
            status, body = 200, b""
        else:
            status, body = 404, b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args):
        pass


class MenderPeer:
    """mender daemon + its server; start() then .pid; stop() by PID."""

    def __init__(self, tmpdir, reaper, free_port):
        self.dir = os.path.join(str(tmpdir), "mender")
        self.reaper = reaper
        self.port = free_port()
        self.server = None
        self.proc = None

    def start(self, timeout=60):
        d = self.dir
        for sub in ("data", "etc", "identity"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, "data", "device_type"), "w") as f:
            f.write("device_type=krtiot-bench\n")
        with open(os.path.join(d, "etc", "artifact_info"), "w") as f:
            f.write("artifact_name=bench-1.0.0\n")
        ident = os.path.join(d, "identity", "mender-device-identity")
        with open(ident, "w") as f:
            f.write("#!/bin/sh\necho mac=02:00:00:00:be:0c\n")
        os.chmod(ident, 0o755)
        conf = os.path.join(d, "mender.conf")
        with open(conf, "w") as f:
            f.write(CONF % {"port": self.port, "dir": d})
        self.server_log = os.path.join(d, "server.log")
        with open(self.server_log, "ab") as log:
            self.server = self.reaper.popen([sys.executable, os.path.abspath(__file__), str(self.port)],
                                            stdout=subprocess.DEVNULL, stderr=log)
        self.log_path = os.path.join(d, "mender.log")
        script = ('mount --bind "$1/etc" /etc/mender && '
                  'mount --bind "$1/identity" /usr/share/mender/identity && '
                  'exec "$2" --no-syslog -c "$1/mender.conf" -b "$1/no-fallback.conf" -d "$1/data" '
                  '-l info daemon')
        with open(self.log_path, "ab") as log:
            self.proc = self.reaper.popen(
                [UNSHARE, "-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", d, MENDER],
                stdout=log, stderr=subprocess.STDOUT)
        # Idle = it has asked for its next deployment and been told "none".
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mender exited (%s): %s" % (self.proc.returncode, self.log_tail()))
            if "deployments/next" in self._read(self.server_log):
                return self
            time.sleep(0.1)
        raise RuntimeError("mender did not check for updates within %ss: %s" % (timeout, self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def requests(self):
        return [line for line in self._read(self.server_log).splitlines() if line.strip()]

    def log_tail(self, n=15):
        return " | ".join(self._read(self.log_path).splitlines()[-n:])


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler).serve_forever()
