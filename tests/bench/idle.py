# SPDX-License-Identifier: Apache-2.0
"""Idle footprint, idle wakeups, and what runs while idle, from the same
processes and the same window.

On one broker: krtiotd (seeded credentials, keepalive 60, report.interval
3600) connected and idle, and mosquitto_sub (keepalive 60, QoS 1 on the
device's ota/set topic) as the floor; beside them mender in daemon mode
(mender_peer.py) when it is installed. krtiot-install is started beside
krtiotd, as the harness does, but with `--idle-timeout 30` (quick: 5), as
under systemd, where the socket starts it and it exits after 30 s with
nothing to do: the window opens once it has exited. Once krtiotd has sent
its first version report and everything has settled, the window opens:
context switches (voluntary + nonvoluntary, all threads) are read at both
ends, memory at the end.

Memory, three figures for each process:
  * unshared (the target): the pages that no process outside the
    benchmark's own setup maps, by PFN from /proc/PID/pagemap; see
    pagemap.py for the exact definition. Unlike USS, it does not drop when
    other krtiotd, the broker or the benchmark's python map the same
    libraries, and it does drop for pages that the rest of the system maps
    too (as systemd and its peers would share libc on a device);
  * RSS (VmRSS);
  * USS, Private_Clean + Private_Dirty of smaps_rollup, as before (info):
    pages no other process at all maps now, whoever that is.
The notes give the unshared figure per mapping, what is shared and with
whom, and the USS per mapping as before.

What runs while idle: during the whole window, no child of krtiotd (it runs
krtiot-fetch for a download and nothing else), no krtiot-install, no hook:
checked by sampling each second (krtiotd's children; krtiot-install's
process; any process running the hook file), and exactly through
krtiotd's /proc/PID/stat cminflt + cmajflt, the page faults of the
children it has reaped, which a child that came and went between two
samples would have raised.

start() opens the window and returns; finish() waits for it to close and
returns the rows. run.py runs the other benchmarks in between in quick mode.
"""

import os
import re
import secrets
import subprocess
import threading
import time

import benchlib as B
import pagemap
from mender_peer import MenderPeer, missing as mender_missing

UNSHARED_TARGET_KIB = 1024
RSS_TARGET_RATIO = 1.5
WAKEUPS_TARGET = 2.0  # per minute
SETTLE = 2.0
INSTALLER_IDLE_TIMEOUT = 30  # krtiot-install's default under systemd (src/install/main.c)
INSTALLER_IDLE_TIMEOUT_QUICK = 5


def stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def reaped_children_faults(pid):
    """cminflt + cmajflt of PID: rises when a child of PID ends and is reaped."""
    f = stat_fields(pid)
    return int(f[7]) + int(f[9])


def processes_running(path):
    """PIDs of the processes whose command line names PATH (a hook runs as
    `/bin/sh HOOK ...` or as HOOK)."""
    want = path.encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if want in f.read().split(b"\0"):
                    out.append(int(d))
        except OSError:
            pass
    return out


class IdleWatch:
    """Samples, each second in a thread, what must not run while krtiotd is
    idle: its children, krtiot-install, the hook."""

    def __init__(self, daemon):
        self.d = daemon
        self.samples = 0
        self.seen = []  # (seconds into the window, what)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-watch", daemon=True)

    def look(self):
        found = []
        for c in B.harness.child_pids(self.d.pid):
            try:
                with open("/proc/%d/cmdline" % c, "rb") as f:
                    argv0 = f.read().split(b"\0")[0].decode("utf-8", "replace")
            except OSError:
                argv0 = "?"
            found.append("krtiotd's child %d (%s)" % (c, os.path.basename(argv0)))
        if self.d.installer.running():
            found.append("krtiot-install %d" % self.d.installer.pid)
        for p in processes_running(self.d.hook_path):
            found.append("hook %d" % p)
        self.samples += 1
        return found

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.wait(1.0):
            for what in self.look():
                self.seen.append((time.monotonic() - t0, what))

    def start(self):
        for what in self.look():
            self.seen.append((0.0, what))
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for what in self.look():
            self.seen.append((None, what))


class IdleBench:
    def __init__(self, tmpdir, reaper, quick, window=None):
        self.tmpdir = tmpdir
        self.reaper = reaper
        self.quick = quick
        self.window = window or (65.0 if quick else 180.0)
        self.installer_timeout = INSTALLER_IDLE_TIMEOUT_QUICK if quick else INSTALLER_IDLE_TIMEOUT
        self.notes = []
        self.mender = None
        self.mender_why = mender_missing()

    def start(self):
        r = self.reaper
        self.broker = B.start_broker(self.tmpdir, r)
        platform = B.start_platform(self.broker, r)
        floor_secret = "floor-" + secrets.token_hex(8)
        platform.provision_device("FLOOR", floor_secret)
        self.d = B.Daemon(self.tmpdir, self.broker, platform=platform, name="idle",
                          device_id="D1", config=dict(B.DAEMON_CONFIG), start=False,
                          installer=False)  # started here, with the idle timeout systemd's socket gives it
        r.add(self.d, self.d.cleanup)
        self.installer_started = time.monotonic()
        self.d.installer.start(args=("--idle-timeout", str(self.installer_timeout)))
        mark = platform.mark()
        self.d.start()
        self.sub = B.mosquitto_sub(self.broker, "FLOOR", floor_secret, "P1-FLOOR",
                                   "/sys/P1/FLOOR/thing/ota/set", r)
        platform.wait_for_report("D1", since=mark, timeout=20)
        B.wait_until(lambda: "as P1-FLOOR " in self.broker.log_text(), 10, "mosquitto_sub to connect")
        if self.mender_why is None:
            try:
                self.mender = MenderPeer(self.tmpdir, r, B.broker_module.free_port).start()
            except Exception as e:
                self.mender = None
                self.mender_why = "mender did not run: %s" % str(e)[:300]
        # The recording platform is not part of what is measured.
        platform.close()
        # krtiot-install leaves when it has had nothing to do for its idle timeout (the harness's
        # readiness probe is a connection too: the timeout runs from its close, a few seconds in).
        try:
            self.d.installer.proc.wait(timeout=self.installer_timeout + 15)
        except subprocess.TimeoutExpired:
            raise B.BenchError("krtiot-install (--idle-timeout %d) still runs %d s after its start; log:\n%s"
                               % (self.installer_timeout, self.installer_timeout + 15, self.d.installer.log_tail(10)))
        self.installer_lived = time.monotonic() - self.installer_started
        if self.d.installer.returncode != 0:
            raise B.BenchError("krtiot-install exited %s; log:\n%s" % (self.d.installer.returncode,
                                                                      self.d.installer.log_tail(10)))
        time.sleep(SETTLE)
        self.procs = {"krtiotd": self.d.pid, "mosquitto_sub": self.sub.pid}
        if self.mender:
            self.procs["mender"] = self.mender.pid
            self.mender_requests_before = len(self.mender.requests())
        self.watch = IdleWatch(self.d)
        self.faults0 = reaped_children_faults(self.d.pid)
        self.t0 = time.monotonic()
        self.cs0 = {k: B.ctxt_switches(pid)[0] for k, pid in self.procs.items()}
        self.watch.start()
        return self

    def finish(self):
        left = self.window - (time.monotonic() - self.t0)
        if left > 0:
            time.sleep(left)
        t1 = time.monotonic()
        cs1 = {k: B.ctxt_switches(pid) for k, pid in self.procs.items()}
        faults1 = reaped_children_faults(self.d.pid)
        self.watch.stop()
        mem = {k: B.memory(pid) for k, pid in self.procs.items()}
        try:
            unshared, scan = pagemap.measure(self.procs)
        except pagemap.PagemapError as e:  # not root: the other figures still stand
            unshared, scan = None, str(e)
        minutes = (t1 - self.t0) / 60.0
        rate = {k: (cs1[k][0] - self.cs0[k]) / minutes for k in self.procs}
        if not self.d.running():
            raise B.BenchError("krtiotd exited during the idle window: " + self.d.log_tail(20))
        q = self.quick
        k, s = mem["krtiotd"], mem["mosquitto_sub"]
        if unshared:
            ku, su = unshared["krtiotd"], unshared["mosquitto_sub"]
            rows = [B.Row("idle memory, unshared (pagemap)", B.fmt_kib(ku.kib), "mosquitto_sub " + B.fmt_kib(su.kib),
                          ku.kib / su.kib, "<= 1024 KiB", B.verdict_le(ku.kib, UNSHARED_TARGET_KIB, B.fmt_kib))]
        else:
            rows = [B.not_run("idle memory, unshared (pagemap)", "mosquitto_sub", "<= 1024 KiB", scan)]
        rows += [
            B.Row("idle RSS", B.fmt_kib(k["rss"]), "mosquitto_sub " + B.fmt_kib(s["rss"]),
                  k["rss"] / s["rss"], "<= 1.5x mosquitto_sub",
                  B.verdict_le(k["rss"] / s["rss"], RSS_TARGET_RATIO, lambda x: "%.2fx" % x)),
            B.Row("idle USS (smaps, as before)", B.fmt_kib(k["uss"]), "mosquitto_sub " + B.fmt_kib(s["uss"]),
                  k["uss"] / s["uss"], "-", "info"),
        ]
        if self.mender:
            m = mem["mender"]
            if unshared:
                mu = unshared["mender"]
                rows.append(B.Row("idle unshared vs mender", B.fmt_kib(ku.kib), "mender " + B.fmt_kib(mu.kib),
                                  ku.kib / mu.kib, "-", "info"))
            rows += [
                B.Row("idle RSS vs mender", B.fmt_kib(k["rss"]), "mender " + B.fmt_kib(m["rss"]),
                      k["rss"] / m["rss"], "-", "info"),
            ]
        else:
            rows.append(B.not_run("idle memory vs mender", "mender", "-", self.mender_why))
        window = "%ds window" % round(t1 - self.t0)
        rows.append(B.Row("idle wakeups/min (%s)" % window, "%.2f" % rate["krtiotd"],
                          "mosquitto_sub %.2f" % rate["mosquitto_sub"],
                          rate["krtiotd"] / rate["mosquitto_sub"] if rate["mosquitto_sub"] else None,
                          "<= 2/min", B.verdict_le(rate["krtiotd"], WAKEUPS_TARGET, lambda x: "%.2f/min" % x),
                          quick=q))
        if self.mender:
            rows.append(B.Row("idle wakeups/min vs mender", "%.2f" % rate["krtiotd"],
                              "mender %.2f (%d threads)" % (rate["mender"], cs1["mender"][1]),
                              rate["krtiotd"] / rate["mender"] if rate["mender"] else None, "-", "info",
                              quick=q))
            polled = len(self.mender.requests()) - self.mender_requests_before
            self.notes.append("mender: %d request(s) to its server during the window (idle = none)" % polled)

        # What ran during the window.
        seen = self.watch.seen
        reaped = faults1 - self.faults0
        requests = len(re.findall(r"^.*Request from pid", self.d.installer.log_text(), re.M))
        spans = {}
        for t, what in seen:
            spans.setdefault(what, []).append("the end" if t is None else "+%.0f s" % t)
        bad = ["%s at %s" % (what, at[0]) if len(at) == 1 else "%s from %s to %s" % (what, at[0], at[-1])
               for what, at in spans.items()]
        if reaped:
            bad.append("a child of krtiotd ended (its reaped children's page faults rose by %d)" % reaped)
        rows.append(B.Row("idle: krtiot-fetch, krtiot-install, hook running", "none" if not bad else bad[0],
                          "krtiot-install left %.0f s after its start" % self.installer_lived, None,
                          "none", "MET" if not bad else "MISSED: %d finding(s)" % len(bad), quick=q))
        self.notes.append("idle: window %.1f s; context switches krtiotd %d, mosquitto_sub %d%s; "
                          "krtiotd VmHWM %d KiB"
                          % (t1 - self.t0, cs1["krtiotd"][0] - self.cs0["krtiotd"],
                             cs1["mosquitto_sub"][0] - self.cs0["mosquitto_sub"],
                             ", mender %d" % (cs1["mender"][0] - self.cs0["mender"]) if self.mender else "",
                             k["hwm"]))
        self.notes.append("idle processes: %d samples of krtiotd's children, krtiot-install and the hook, 1 s "
                          "apart, found %s; krtiotd's reaped children's page faults +%d over the window; "
                          "krtiot-install (--idle-timeout %d, %d request(s) in its log) exited %.1f s after "
                          "its start, before the window"
                          % (self.watch.samples, "nothing" if not seen else "; ".join(bad), reaped,
                             self.installer_timeout, requests, self.installer_lived))
        for label in self.procs if unshared else ():
            u = unshared[label]
            self.notes.append("%s unshared by mapping (KiB, all): %s" % (label, ", ".join(
                "%s %d" % kv for kv in u.by_mapping)))
            self.notes.append("  shared with other processes %d KiB, by mapping: %s; by whom (KiB): %s" % (
                u.shared_kib, ", ".join("%s %d" % kv for kv in u.shared_by_mapping[:6]),
                ", ".join("%s %d" % kv for kv in u.shared_by[:8])))
        if unshared:
            self.notes.append("pagemap: %d other processes read (%d of the setup's left out%s)" % (
                scan["others_read"], scan["excluded"],
                "; not readable: " + ", ".join(scan["unreadable"]) if scan["unreadable"] else ""))
        self.notes.append("krtiotd USS by mapping (KiB): " + ", ".join(
            "%s %d" % kv for kv in B.uss_by_mapping(self.d.pid, 8)))
        self.notes.append("mosquitto_sub USS by mapping (KiB): " + ", ".join(
            "%s %d" % kv for kv in B.uss_by_mapping(self.sub.pid, 5)))
        self.memory = mem
        return rows
