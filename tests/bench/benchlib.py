# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the benchmarks: the integration harness (imported as
tests/integration/daemon.py does), /proc readings, the result rows and their
verdicts, and a Reaper that stops by PID everything a benchmark started.

Every process a benchmark starts is registered with the Reaper of that
benchmark as soon as it exists; the Reaper stops them (SIGTERM, then SIGKILL)
in reverse order, also when the benchmark fails or is interrupted. Nothing is
ever matched by name.
"""

import math
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import daemon as harness  # noqa: E402  (Daemon, NotifySocket, broker/platform modules)
import nginx as nginx_module  # noqa: E402
import sysbus  # noqa: E402  (a private system-like D-Bus with the shipped policy)

Daemon = harness.Daemon
SystemBus = sysbus.SystemBus
NotifySocket = harness.NotifySocket
broker_module = harness.broker_module
platform_module = harness.platform_module
Nginx = nginx_module.Nginx
NGINX = nginx_module.NGINX
PY = "/usr/bin/python3"

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

# The daemon as the benchmarks run it: production log level, the spec's
# reconnect cap, keepalive 60, unique client ids.
DAEMON_CONFIG = {
    "log_level": "info",
    "mqtt.keepalive": 60,
    "mqtt.reconnect_max": 60,
    "mqtt.client_id": "{product_id}-{device_id}",
    "report.interval": 3600,
}


class BenchError(RuntimeError):
    pass


# -- /proc ------------------------------------------------------------------------

def status_kib(pid, field):
    """A "kB" field of /proc/PID/status (VmRSS, VmHWM, ...) in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError("no %s in /proc/%d/status" % (field, pid))


def uss_kib(pid):
    """Private_Clean + Private_Dirty (+ Private_Hugetlb) of /proc/PID/smaps_rollup."""
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:", "Private_Hugetlb:")):
                total += int(line.split()[1])
    return total


def memory(pid):
    """{"rss": KiB, "uss": KiB, "hwm": KiB} of PID."""
    return {"rss": status_kib(pid, "VmRSS"), "uss": uss_kib(pid), "hwm": status_kib(pid, "VmHWM")}


def smaps_by_mapping(pid, fields):
    """{name: KiB} of PID, from /proc/PID/smaps: the FIELDS ("Rss:",
    "Private_Clean:", ...) summed per file (or [heap], [anon], ...)."""
    sizes = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # a mapping header: "start-end perms offset dev inode [path]"
                name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
            elif head[0] in fields:
                sizes[name] = sizes.get(name, 0) + int(head[1])
    return sizes


def uss_by_mapping(pid, top=6):
    """The largest contributors to PID's USS: [(name, KiB)], from
    /proc/PID/smaps, private pages summed per file (or [heap], [anon], ...)."""
    sizes = smaps_by_mapping(pid, ("Private_Clean:", "Private_Dirty:"))
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def rss_by_mapping(pid):
    """{name: KiB} of PID's resident pages per file (or [heap], [anon], ...)."""
    return smaps_by_mapping(pid, ("Rss:",))


def growth(a, b):
    """[(name, A - B)] for the names of the dicts A and B whose values
    differ, largest change first (a missing name counts 0)."""
    out = [(k, a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b)]
    return sorted([kv for kv in out if kv[1]], key=lambda kv: (-abs(kv[1]), kv[0]))


def ctxt_switches(pid):
    """voluntary + nonvoluntary context switches, summed over PID's threads
    (/proc/PID/status alone counts the main thread only; Go programs such as
    mender have many). Returns (total, threads)."""
    total = 0
    tasks = os.listdir("/proc/%d/task" % pid)
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total, len(tasks)


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (clear_refs "5", Linux >= 4.0)."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


# -- processes -----------------------------------------------------------------------

class Reaper:
    """Stops what a benchmark started, by PID, in reverse order of add()."""

    def __init__(self):
        self._items = []

    def add(self, what, stop=None):
        """WHAT: a Popen, or anything; STOP: callable stopping it (default:
        SIGTERM then SIGKILL for a Popen)."""
        self._items.append((what, stop))
        return what

    def popen(self, cmd, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, **kw)
        return self.add(p)

    @staticmethod
    def terminate(procs, timeout=10):
        """SIGTERM to every Popen of PROCS, then waits; SIGKILL after TIMEOUT."""
        procs = [p for p in procs if p is not None and p.poll() is None]
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)

    def close(self):
        errors = []
        while self._items:
            what, stop = self._items.pop()
            try:
                if stop is not None:
                    stop()
                elif isinstance(what, subprocess.Popen):
                    self.terminate([what])
            except Exception as e:  # keep stopping the others
                errors.append("%r: %s" % (what, e))
        if errors:
            raise BenchError("cleanup: " + "; ".join(errors))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stop_daemons(daemons, timeout=15):
    """SIGTERM to every running Daemon at once, then waits; SIGKILL after TIMEOUT."""
    Reaper.terminate([d.proc for d in daemons if d.proc is not None], timeout)


# mosquitto's default (set_tcp_nodelay false) leaves Nagle on for what it
# sends: a PUBLISH that follows a PUBACK on the same connection waits for the
# client's delayed ACK, ~40 ms, whoever the client is (measured: receipt
# round trip 43.9 ms to krtiotd, 43.6 ms to the echo client). A broker tuned
# for latency sets it; the benchmarks do, so that they measure the clients.
BROKER_EXTRA_CONF = ["set_tcp_nodelay true"]


def start_broker(tmpdir, reaper, extra_conf=BROKER_EXTRA_CONF):
    b = broker_module.Broker(tmpdir, start=False)
    with open(b.conf_path, "a") as f:
        f.write("".join(line + "\n" for line in extra_conf))
    b.start()

    def stop():
        try:
            b.stop()
        finally:
            b.kill()
    reaper.add(b, stop)
    return b


def nodelay(client):
    """TCP_NODELAY on a connected paho client's socket. paho 1.6 leaves Nagle
    on: a PUBLISH it sends right after a PUBACK on the same connection waits
    for the broker's delayed ACK, ~40 ms (seen in the registration service:
    ~45 ms between each of its steps)."""
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def start_platform(broker, reaper, echo=None):
    """The simulated platform (tests/platform/platform.py), with TCP_NODELAY
    on its connection (it does not reconnect during a benchmark: the fleet
    benchmark closes it before restarting the broker)."""
    p = platform_module.Platform(broker.host, broker.port, broker.admin_user,
                                 broker.admin_password, echo=echo)
    reaper.add(p, p.close)
    nodelay(p.client)
    return p


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def mosquitto_sub(broker, user, password, client_id, topic, reaper, keepalive=60, log=None):
    """A mosquitto_sub connected to BROKER (QoS 1 on TOPIC), registered with REAPER."""
    cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", user, "-P", password,
           "-i", client_id, "-k", str(keepalive), "-q", "1", "-t", topic]
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return reaper.popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()


def percentile(values, p):
    """Nearest-rank percentile (P in 0-100) of VALUES."""
    s = sorted(values)
    if not s:
        raise BenchError("percentile of nothing")
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise BenchError("median of nothing")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# -- results -------------------------------------------------------------------------

def fmt_kib(k):
    return "%.2f MiB" % (k / 1024.0) if k >= 10 * 1024 else "%d KiB" % k


def fmt_ms(s):
    return "%.2f ms" % (s * 1000.0)


class Row:
    """One line of the table. VALUE/REFERENCE are display strings; RATIO a
    float (value / reference) or None; TARGET a display string; VERDICT
    "MET", "MISSED by ...", "info" (no target) or "n/a: why"."""

    def __init__(self, figure, value, reference, ratio, target, verdict, quick=False):
        self.figure = figure + (" (quick)" if quick else "")
        self.value = value
        self.reference = reference
        self.ratio = ratio
        self.target = target
        self.verdict = verdict

    def cells(self):
        ratio = "-" if self.ratio is None else "%.2fx" % self.ratio
        return [self.figure, self.value, self.reference, ratio, self.target, self.verdict]


def not_run(figure, reference, target, why, quick=False):
    return Row(figure, "-", reference, None, target, "n/a: " + why, quick)


def verdict_le(value, limit, show):
    """MET when VALUE <= LIMIT, else MISSED by the difference (SHOW formats it)."""
    if value <= limit:
        return "MET"
    return "MISSED by %s (+%.0f%%)" % (show(value - limit), 100.0 * (value - limit) / limit)


def verdict_ge(value, limit, show):
    if value >= limit:
        return "MET"
    return "MISSED by %s (-%.0f%%)" % (show(limit - value), 100.0 * (limit - value) / limit)


HEADER = ["figure", "value", "reference", "ratio", "target", "verdict"]


def render_table(rows):
    table = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
