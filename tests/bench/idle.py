# SPDX-License-Identifier: Apache-2.0
"""Idle footprint and idle wakeups, from the same processes and the same
window.

On one broker: krtiotd (seeded credentials, keepalive 60, report.interval
3600) connected and idle, and mosquitto_sub (keepalive 60, QoS 1 on the
device's ota/set topic) as the floor; beside them mender in daemon mode
(mender_peer.py). Once krtiotd has sent its first version report and
everything has settled, the window opens: context switches
(voluntary + nonvoluntary, all threads) are read at both ends, memory (RSS,
USS = Private_Clean + Private_Dirty) at the end.

start() opens the window and returns; finish() waits for it to close and
returns the rows. run.py runs the other benchmarks in between in quick mode.
"""

import secrets
import time

import benchlib as B
from mender_peer import MenderPeer, missing as mender_missing

USS_TARGET_KIB = 1024
RSS_TARGET_RATIO = 1.5
WAKEUPS_TARGET = 2.0  # per minute
SETTLE = 2.0


class IdleBench:
    def __init__(self, tmpdir, reaper, quick, window=None):
        self.tmpdir = tmpdir
        self.reaper = reaper
        self.quick = quick
        self.window = window or (65.0 if quick else 180.0)
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
                          installer=False)  # idle: socket-activated, krtiot-install would not be running
        r.add(self.d, self.d.cleanup)
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
        time.sleep(SETTLE)
        self.procs = {"krtiotd": self.d.pid, "mosquitto_sub": self.sub.pid}
        if self.mender:
            self.procs["mender"] = self.mender.pid
            self.mender_requests_before = len(self.mender.requests())
        self.t0 = time.monotonic()
        self.cs0 = {k: B.ctxt_switches(pid)[0] for k, pid in self.procs.items()}
        return self

    def finish(self):
        left = self.window - (time.monotonic() - self.t0)
        if left > 0:
            time.sleep(left)
        t1 = time.monotonic()
        cs1 = {k: B.ctxt_switches(pid) for k, pid in self.procs.items()}
        mem = {k: B.memory(pid) for k, pid in self.procs.items()}
        minutes = (t1 - self.t0) / 60.0
        rate = {k: (cs1[k][0] - self.cs0[k]) / minutes for k in self.procs}
        if not self.d.running():
            raise B.BenchError("krtiotd exited during the idle window: " + self.d.log_tail(20))
        q = self.quick
        k, s = mem["krtiotd"], mem["mosquitto_sub"]
        rows = [
            B.Row("idle USS", B.fmt_kib(k["uss"]), "mosquitto_sub " + B.fmt_kib(s["uss"]),
                  k["uss"] / s["uss"], "<= 1024 KiB",
                  B.verdict_le(k["uss"], USS_TARGET_KIB, B.fmt_kib)),
            B.Row("idle RSS", B.fmt_kib(k["rss"]), "mosquitto_sub " + B.fmt_kib(s["rss"]),
                  k["rss"] / s["rss"], "<= 1.5x mosquitto_sub",
                  B.verdict_le(k["rss"] / s["rss"], RSS_TARGET_RATIO, lambda x: "%.2fx" % x)),
        ]
        if self.mender:
            m = mem["mender"]
            rows += [
                B.Row("idle USS vs mender", B.fmt_kib(k["uss"]), "mender " + B.fmt_kib(m["uss"]),
                      k["uss"] / m["uss"], "-", "info"),
                B.Row("idle RSS vs mender", B.fmt_kib(k["rss"]), "mender " + B.fmt_kib(m["rss"]),
                      k["rss"] / m["rss"], "-", "info"),
            ]
        else:
            rows.append(B.not_run("idle RSS/USS vs mender", "mender", "-", self.mender_why))
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
        self.notes.append("idle: window %.1f s; context switches krtiotd %d, mosquitto_sub %d%s; "
                          "krtiotd VmHWM %d KiB"
                          % (t1 - self.t0, cs1["krtiotd"][0] - self.cs0["krtiotd"],
                             cs1["mosquitto_sub"][0] - self.cs0["mosquitto_sub"],
                             ", mender %d" % (cs1["mender"][0] - self.cs0["mender"]) if self.mender else "",
                             k["hwm"]))
        self.notes.append("krtiotd USS by mapping (KiB): " + ", ".join(
            "%s %d" % kv for kv in B.uss_by_mapping(self.d.pid, 8)))
        self.notes.append("mosquitto_sub USS by mapping (KiB): " + ", ".join(
            "%s %d" % kv for kv in B.uss_by_mapping(self.sub.pid, 5)))
        self.memory = mem
        return rows
