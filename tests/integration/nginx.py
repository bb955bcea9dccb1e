# SPDX-License-Identifier: Apache-2.0
"""A real nginx for the integration tests: serves a directory on a free
loopback port, from a temporary prefix (config, pid file, logs, temp paths
all inside it), optionally rate-limited, optionally over TLS; stopped by PID.

    with Nginx(root=some_dir, limit_rate="1m") as ngx:
        url = ngx.url("image.bin")

nginx runs in the foreground (daemon off) as a child of the test process.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    """A port that was free a moment ago on 127.0.0.1 (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Nginx:
    def __init__(self, root, limit_rate=None, tls_cert=None, tls_key=None, extra_locations="",
                 worker_connections=64, log_format=None):
        """ROOT: directory served at /. LIMIT_RATE: nginx's limit_rate value
        (bytes per second per connection, e.g. "1m"), None for unlimited.
        TLS_CERT/TLS_KEY: PEM files to serve https instead of http.
        EXTRA_LOCATIONS: raw nginx config inserted in the server block.
        WORKER_CONNECTIONS: of its one worker (also raises its open-files
        limit to twice that). LOG_FORMAT: the access log's format (nginx
        variables, e.g. "$msec $request_time $request"), None for combined."""
        self.root = os.path.abspath(root)
        self.worker_connections = worker_connections
        self.log_format = log_format
        self.limit_rate = limit_rate
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.extra_locations = extra_locations
        self.prefix = None
        self.proc = None
        self.port = None

    @property
    def scheme(self):
        return "https" if self.tls_cert else "http"

    def url(self, path=""):
        return "%s://127.0.0.1:%d/%s" % (self.scheme, self.port, path.lstrip("/"))

    def _config(self):
        user = "user root root;\n" if os.geteuid() == 0 else ""
        rate = "limit_rate %s;" % self.limit_rate if self.limit_rate else ""
        if self.tls_cert:
            listen = "listen 127.0.0.1:%d ssl;\n        ssl_certificate %s;\n        ssl_certificate_key %s;" % (
                self.port, self.tls_cert, self.tls_key)
        else:
            listen = "listen 127.0.0.1:%d;" % self.port
        p = self.prefix
        wc = self.worker_connections
        nofile = "worker_rlimit_nofile %d;\n" % (2 * wc) if wc > 64 else ""
        if self.log_format:
            log = "log_format bench '%s';\n    access_log %s/access.log bench;" % (self.log_format, p)
        else:
            log = "access_log %s/access.log;" % p
        return f"""
{user}daemon off;
master_process on;
worker_processes 1;
{nofile}pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections {wc}; }}
http {{
    {log}
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        {listen}
        server_name localhost;
        root {self.root};
        location / {{ {rate} }}
        {self.extra_locations}
    }}
}}
"""

    def start(self, timeout=10):
        self.prefix = tempfile.mkdtemp(prefix="krtiot-nginx-")
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            conf = os.path.join(self.prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(self._config())
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.prefix, "-c", conf, "-e", os.path.join(self.prefix, "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if _wait_listening(self.port, self.proc, timeout):
                return self
            self.stop()
            last_error = self.error_log()
        raise RuntimeError("nginx did not start: " + last_error[-2000:])

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def access_log(self):
        """Lines of the access log (combined format unless LOG_FORMAT), for counting requests."""
        try:
            with open(os.path.join(self.prefix, "access.log")) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to the master's PID: fast shutdown of it and its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
