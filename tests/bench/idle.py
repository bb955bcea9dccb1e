# SPDX-License-Identifier: Apache-2.0
"""Idle footprint, idle wakeups, and what runs while idle, from the same
processes and the same window, with krtiotd on the system bus.

On one broker: krtiotd (seeded credentials, keepalive 60, report.interval
3600) connected to a private system-like dbus-daemon with the shipped
policy (tests/integration/sysbus.py) and owning com.krtyun.Krtiot1 before
the window opens, connected to the broker and idle; beside it a second
krtiotd, provisioned the same way with its own device ID, without a bus
(DBUS_SYSTEM_BUS_ADDRESS names a socket nobody listens on, as the harness
does by default: one notice, an inotify watch on the socket's directory,
retries); mosquitto_sub (keepalive 60, QoS 1 on the device's ota/set topic)
as the floor; mender in daemon mode (mender_peer.py) when it is installed.
A krtiot-install is started beside each krtiotd, as the harness does, but
with `--idle-timeout 30` (quick: 5), as under systemd, where the socket
starts it and it exits after 30 s with nothing to do: the window opens once
both have exited. Once both krtiotd have sent their first version report
and everything has settled, the window opens: context switches (voluntary +
nonvoluntary, all threads) are read at both ends, memory at the end.

The headline rows (unshared, RSS, USS, wakeups, what runs) are those of
the krtiotd on the bus; the rows "with the bus vs without" set the two
krtiotd side by side: what the bus connection costs.

Memory, three figures for each process:
  * unshared (the target): the pages that no process outside the
    benchmark's own setup maps, by PFN from /proc/PID/pagemap; see
    pagemap.py for the exact definition. Unlike USS, it does not drop when
    the other krtiotd, the broker or the benchmark's python map the same
    libraries, and it does drop for pages that the rest of the system maps
    too (as systemd and its peers would share libc on a device). The
    dbus-daemon is the setup's and is left out like the broker; one info
    row gives the figure with it counted as a sharer, as a device's system
    bus would be (Debian's dbus-daemon links libsystemd too);
  * RSS (VmRSS);
  * USS, Private_Clean + Private_Dirty of smaps_rollup, as before (info):
    pages no other process at all maps now, whoever that is.
The notes give the unshared figure per mapping, what is shared and with
whom, the USS per mapping as before, and per mapping what the bus
connection adds (unshared and RSS, the krtiotd on the bus minus the other).

What runs while idle: during the whole window, no child of either krtiotd
(it runs krtiot-fetch for a download and nothing else), no krtiot-install,
no hook: checked by sampling each second (krtiotd's children;
krtiot-install's process; any process running the hook file), and exactly
through krtiotd's /proc/PID/stat cminflt + cmajflt, the page faults of the
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
    """Samples, each second in a thread, what must not run while the
    krtiotd of DAEMONS are idle: their children, their krtiot-install,
    their hook."""

    def __init__(self, daemons):
        self.daemons = daemons
        self.samples = 0
        self.seen = []  # (seconds into the window, what)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-watch", daemon=True)

    def look(self):
        found = []
        for d in self.daemons:
            for c in B.harness.child_pids(d.pid):
                try:
                    with open("/proc/%d/cmdline" % c, "rb") as f:
                        argv0 = f.read().split(b"\0")[0].decode("utf-8", "replace")
                except OSError:
                    argv0 = "?"
                found.append("krtiotd %s's child %d (%s)" % (d.name, c, os.path.basename(argv0)))
            if d.installer.running():
                found.append("krtiot-install %s %d" % (d.name, d.installer.pid))
            for p in processes_running(d.hook_path):
                found.append("hook of %s %d" % (d.name, p))
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


def agent_user():
    """The name of the user krtiotd runs as (the harness's), for the bus policy."""
    import pwd
    return pwd.getpwuid(B.harness.agent_identity()[0]).pw_name


def environ_value(pid, name):
    """NAME's value in PID's environment (/proc/PID/environ), or None."""
    with open("/proc/%d/environ" % pid, "rb") as f:
        for item in f.read().split(b"\0"):
            k, _, v = item.partition(b"=")
            if k.decode("utf-8", "replace") == name:
                return v.decode("utf-8", "replace")
    return None


def kib_list(pairs, sign=False):
    return ", ".join(("%s %+d" if sign else "%s %d") % kv for kv in pairs) or "none"


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
        why = B.sysbus.missing_requirements()
        if why:
            raise B.BenchError("no system bus for krtiotd: " + why)
        self.bus = B.SystemBus(self.tmpdir, agent_user())
        r.add(self.bus, self.bus.stop)
        self.bus.start()
        self.broker = B.start_broker(self.tmpdir, r)
        platform = B.start_platform(self.broker, r)
        floor_secret = "floor-" + secrets.token_hex(8)
        platform.provision_device("FLOOR", floor_secret)
        # The measured krtiotd, on the bus; beside it the same without one (the harness's default:
        # DBUS_SYSTEM_BUS_ADDRESS names a socket nobody listens on). Each has its krtiot-install, started
        # here with the idle timeout systemd's socket gives it.
        self.d = B.Daemon(self.tmpdir, self.broker, platform=platform, name="idle",
                          device_id="D1", config=dict(B.DAEMON_CONFIG), start=False,
                          installer=False, bus=self.bus)
        r.add(self.d, self.d.cleanup)
        self.nobus = B.Daemon(self.tmpdir, self.broker, platform=platform, name="idle-nobus",
                              device_id="D2", config=dict(B.DAEMON_CONFIG), start=False,
                              installer=False)
        r.add(self.nobus, self.nobus.cleanup)
        self.daemons = (self.d, self.nobus)
        self.installer_started = {}
        for d in self.daemons:
            self.installer_started[d.name] = time.monotonic()
            d.installer.start(args=("--idle-timeout", str(self.installer_timeout)))
        mark = platform.mark()
        for d in self.daemons:
            d.start()
        self.sub = B.mosquitto_sub(self.broker, "FLOOR", floor_secret, "P1-FLOOR",
                                   "/sys/P1/FLOOR/thing/ota/set", r)
        for d in self.daemons:
            platform.wait_for_report(d.device_id, since=mark, timeout=20)
        B.wait_until(lambda: "as P1-FLOOR " in self.broker.log_text(), 10, "mosquitto_sub to connect")
        try:
            self.bus.wait_owner(timeout=10)
        except AssertionError as e:
            raise B.BenchError("%s; krtiotd's log:\n%s" % (e, self.d.log_tail(10)))
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
        self.installer_lived = {}
        for d in self.daemons:
            inst = d.installer
            left = self.installer_started[d.name] + self.installer_timeout + 15 - time.monotonic()
            try:
                inst.proc.wait(timeout=max(0.1, left))
            except subprocess.TimeoutExpired:
                raise B.BenchError("krtiot-install %s (--idle-timeout %d) still runs %d s after its start; log:\n%s"
                                   % (d.name, self.installer_timeout, self.installer_timeout + 15,
                                      inst.log_tail(10)))
            self.installer_lived[d.name] = time.monotonic() - self.installer_started[d.name]
            if inst.returncode != 0:
                raise B.BenchError("krtiot-install %s exited %s; log:\n%s" % (d.name, inst.returncode,
                                                                             inst.log_tail(10)))
        time.sleep(SETTLE)
        if not self.bus.has_owner():
            raise B.BenchError("krtiotd no longer owns %s when the window opens; its log:\n%s"
                               % (B.sysbus.NAME, self.d.log_tail(10)))
        self.procs = {"krtiotd": self.d.pid, "krtiotd-nobus": self.nobus.pid, "mosquitto_sub": self.sub.pid}
        if self.mender:
            self.procs["mender"] = self.mender.pid
            self.mender_requests_before = len(self.mender.requests())
        self.watch = IdleWatch(self.daemons)
        self.faults0 = {d.name: reaped_children_faults(d.pid) for d in self.daemons}
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
        faults1 = {d.name: reaped_children_faults(d.pid) for d in self.daemons}
        self.watch.stop()
        mem = {k: B.memory(pid) for k, pid in self.procs.items()}
        rss_maps = {k: B.rss_by_mapping(self.procs[k]) for k in ("krtiotd", "krtiotd-nobus")}
        try:
            unshared, scan = pagemap.measure(self.procs, also={"dbus-daemon": self.bus.proc.pid})
        except pagemap.PagemapError as e:  # not root: the other figures still stand
            unshared, scan = None, str(e)
        minutes = (t1 - self.t0) / 60.0
        rate = {k: (cs1[k][0] - self.cs0[k]) / minutes for k in self.procs}
        for d in self.daemons:
            if not d.running():
                raise B.BenchError("krtiotd %s exited during the idle window: %s" % (d.name, d.log_tail(20)))
        if not self.bus.has_owner():
            raise B.BenchError("krtiotd lost %s during the idle window; its log:\n%s"
                               % (B.sysbus.NAME, self.d.log_tail(20)))
        q = self.quick
        on = ", bus connected"
        k, n, s = mem["krtiotd"], mem["krtiotd-nobus"], mem["mosquitto_sub"]
        if unshared:
            ku, nu, su = unshared["krtiotd"], unshared["krtiotd-nobus"], unshared["mosquitto_sub"]
            rows = [B.Row("idle memory, unshared (pagemap)" + on, B.fmt_kib(ku.kib),
                          "mosquitto_sub " + B.fmt_kib(su.kib), ku.kib / su.kib, "<= 1024 KiB",
                          B.verdict_le(ku.kib, UNSHARED_TARGET_KIB, B.fmt_kib))]
        else:
            rows = [B.not_run("idle memory, unshared (pagemap)" + on, "mosquitto_sub", "<= 1024 KiB", scan)]
        rows += [
            B.Row("idle RSS" + on, B.fmt_kib(k["rss"]), "mosquitto_sub " + B.fmt_kib(s["rss"]),
                  k["rss"] / s["rss"], "<= 1.5x mosquitto_sub",
                  B.verdict_le(k["rss"] / s["rss"], RSS_TARGET_RATIO, lambda x: "%.2fx" % x)),
            B.Row("idle USS (smaps, as before)" + on, B.fmt_kib(k["uss"]), "mosquitto_sub " + B.fmt_kib(s["uss"]),
                  k["uss"] / s["uss"], "-", "info"),
        ]
        # What the bus connection costs: the two krtiotd side by side.
        if unshared:
            rows += [
                B.Row("idle unshared: with the bus vs without", B.fmt_kib(ku.kib), "without " + B.fmt_kib(nu.kib),
                      ku.kib / nu.kib, "-", "info"),
                B.Row("idle unshared" + on + ", dbus-daemon as a sharer", B.fmt_kib(ku.also_kib),
                      "dbus-daemon left out " + B.fmt_kib(ku.kib), ku.also_kib / ku.kib, "-", "info"),
            ]
        rows += [
            B.Row("idle RSS: with the bus vs without", B.fmt_kib(k["rss"]), "without " + B.fmt_kib(n["rss"]),
                  k["rss"] / n["rss"], "-", "info"),
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
        rows.append(B.Row("idle wakeups/min (%s)%s" % (window, on), "%.2f" % rate["krtiotd"],
                          "mosquitto_sub %.2f" % rate["mosquitto_sub"],
                          rate["krtiotd"] / rate["mosquitto_sub"] if rate["mosquitto_sub"] else None,
                          "<= 2/min", B.verdict_le(rate["krtiotd"], WAKEUPS_TARGET, lambda x: "%.2f/min" % x),
                          quick=q))
        rows.append(B.Row("idle wakeups/min: with the bus vs without", "%.2f" % rate["krtiotd"],
                          "without %.2f" % rate["krtiotd-nobus"],
                          rate["krtiotd"] / rate["krtiotd-nobus"] if rate["krtiotd-nobus"] else None,
                          "-", "info", quick=q))
        if self.mender:
            rows.append(B.Row("idle wakeups/min vs mender", "%.2f" % rate["krtiotd"],
                              "mender %.2f (%d threads)" % (rate["mender"], cs1["mender"][1]),
                              rate["krtiotd"] / rate["mender"] if rate["mender"] else None, "-", "info",
                              quick=q))
            polled = len(self.mender.requests()) - self.mender_requests_before
            self.notes.append("mender: %d request(s) to its server during the window (idle = none)" % polled)

        # What ran during the window (beside either krtiotd).
        seen = self.watch.seen
        reaped = {name: faults1[name] - self.faults0[name] for name in faults1}
        requests = {d.name: len(re.findall(r"^.*Request from pid", d.installer.log_text(), re.M))
                    for d in self.daemons}
        spans = {}
        for t, what in seen:
            spans.setdefault(what, []).append("the end" if t is None else "+%.0f s" % t)
        bad = ["%s at %s" % (what, at[0]) if len(at) == 1 else "%s from %s to %s" % (what, at[0], at[-1])
               for what, at in spans.items()]
        for name, faults in reaped.items():
            if faults:
                bad.append("a child of krtiotd %s ended (its reaped children's page faults rose by %d)"
                           % (name, faults))
        rows.append(B.Row("idle: krtiot-fetch, krtiot-install, hook running", "none" if not bad else bad[0],
                          "krtiot-install left %.0f s after its start" % self.installer_lived[self.d.name], None,
                          "none", "MET" if not bad else "MISSED: %d finding(s)" % len(bad), quick=q))

        self.notes.append("idle: window %.1f s; context switches krtiotd (bus) %d, krtiotd (no bus) %d, "
                          "mosquitto_sub %d%s; VmHWM krtiotd (bus) %d KiB, (no bus) %d KiB"
                          % (t1 - self.t0, cs1["krtiotd"][0] - self.cs0["krtiotd"],
                             cs1["krtiotd-nobus"][0] - self.cs0["krtiotd-nobus"],
                             cs1["mosquitto_sub"][0] - self.cs0["mosquitto_sub"],
                             ", mender %d" % (cs1["mender"][0] - self.cs0["mender"]) if self.mender else "",
                             k["hwm"], n["hwm"]))
        missing = len(re.findall(r"No system bus at ", self.nobus.log_text()))
        self.notes.append("idle bus: krtiotd (pid %d) owned %s on a private dbus-daemon (pid %d, the shipped "
                          "policy) before the window opened and after it closed; krtiotd (no bus, pid %d) "
                          "had DBUS_SYSTEM_BUS_ADDRESS=%s and logged \"No system bus at\" %d time(s); "
                          "RSS krtiotd (bus) %d, (no bus) %d, USS %d and %d KiB; dbus-daemon RSS %d KiB"
                          % (self.d.pid, B.sysbus.NAME, self.bus.proc.pid, self.nobus.pid,
                             environ_value(self.nobus.pid, "DBUS_SYSTEM_BUS_ADDRESS"), missing, k["rss"], n["rss"],
                             k["uss"], n["uss"], B.status_kib(self.bus.proc.pid, "VmRSS")))
        if unshared:
            self.notes.append("idle bus connection's cost by mapping, krtiotd (bus) minus krtiotd (no bus), "
                              "KiB: unshared %s; RSS %s"
                              % (kib_list(B.growth(dict(ku.by_mapping), dict(nu.by_mapping)), sign=True),
                                 kib_list(B.growth(rss_maps["krtiotd"], rss_maps["krtiotd-nobus"]), sign=True)))
            self.notes.append("idle unshared counting the test's dbus-daemon as a sharer (as a device's system "
                              "bus; Debian's dbus-daemon links libsystemd too): %s; the dbus-daemon maps %d KiB of "
                              "krtiotd (bus)'s pages, of which it alone takes off (KiB): %s"
                              % (", ".join("%s %d KiB" % (label, unshared[label].also_kib) for label in self.procs),
                                 ku.also_mapped_kib, kib_list(ku.also_by_mapping)))
        else:
            self.notes.append("idle bus connection's cost by mapping, krtiotd (bus) minus krtiotd (no bus), "
                              "KiB: RSS %s" % kib_list(B.growth(rss_maps["krtiotd"], rss_maps["krtiotd-nobus"]),
                                                       sign=True))
        self.notes.append("idle processes: %d samples of both krtiotd's children, krtiot-install and hook, 1 s "
                          "apart, found %s; their reaped children's page faults %s over the window; "
                          "krtiot-install (--idle-timeout %d) %s, before the window"
                          % (self.watch.samples, "nothing" if not seen else "; ".join(bad),
                             ", ".join("%s +%d" % kv for kv in reaped.items()), self.installer_timeout,
                             ", ".join("%s: %d request(s) in its log, exited %.1f s after its start"
                                       % (d.name, requests[d.name], self.installer_lived[d.name])
                                       for d in self.daemons)))
        for label in self.procs if unshared else ():
            u = unshared[label]
            self.notes.append("%s unshared by mapping (KiB, all): %s" % (label, kib_list(u.by_mapping)))
            self.notes.append("  shared with other processes %d KiB, by mapping: %s; by whom (KiB): %s" % (
                u.shared_kib, kib_list(u.shared_by_mapping[:6]), kib_list(u.shared_by[:8])))
        if unshared:
            self.notes.append("pagemap: %d other processes read (%d of the setup's left out, both krtiotd and "
                              "the dbus-daemon among them%s)" % (
                                  scan["others_read"], scan["excluded"],
                                  "; not readable: " + ", ".join(scan["unreadable"]) if scan["unreadable"] else ""))
        self.notes.append("krtiotd (bus) USS by mapping (KiB): " + kib_list(B.uss_by_mapping(self.d.pid, 8)))
        self.notes.append("mosquitto_sub USS by mapping (KiB): " + kib_list(B.uss_by_mapping(self.sub.pid, 5)))
        self.memory = mem
        return rows
