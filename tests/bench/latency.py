# SPDX-License-Identifier: Apache-2.0
"""Receipt latency and registration time.

Receipt latency: 1,000 CMD 11 commands (quick: 200) whose target is the
running version, one at a time, each timed from the publish by a dedicated
paho client (logged in as the platform) to its receipt arriving back at that
client. The reference is the same round trip through the same broker to
echo_client.py, a trivial device that only answers; the two are
interleaved, command by command, so that both see the same conditions. For
krtiotd the next command waits for the version report that follows each
receipt (SPEC 5.2), so that one command never overlaps the next.

Registration: a daemon without credentials, its device provisioned with the
product secret, the platform's registration service (platform.py) on
loopback. Time from starting the process to the platform receiving its
first version report (which needs the device secret: the broker refuses the
product secret once the password is changed); reference: from start to
READY=1 on the notify socket. Several runs, medians.
"""

import json
import os
import subprocess
import threading
import time

import paho.mqtt.client as mqtt

import benchlib as B

P99_TARGET = 0.005
REGISTRATION_TARGET = 0.100


class RoundTrip:
    """A paho client that sends CMD 11 to PRODUCT/DEVICE and times the receipt."""

    def __init__(self, broker, product, device, expect_report):
        self.set_topic = "/sys/%s/%s/thing/ota/set" % (product, device)
        self.expect_report = expect_report
        self.cond = threading.Condition()
        self.waiting = None
        self.receipt_at = None
        self.reports = 0
        subscribed = threading.Event()
        c = mqtt.Client(client_id="bench-rt-%s-%d" % (device, os.getpid()), clean_session=True,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(broker.admin_user, broker.admin_password)

        def on_connect(cl, u, f, rc):
            B.nodelay(cl)
            cl.subscribe("/sys/%s/%s/thing/ota/post" % (product, device), 1)
        c.on_connect = on_connect
        c.on_subscribe = lambda cl, u, mid, q: subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=60)
        c.loop_start()
        self.client = c
        if not subscribed.wait(10):
            self.close()
            raise B.BenchError("round-trip client for %s could not subscribe" % device)

    def _on_message(self, client, userdata, msg):
        t = time.perf_counter()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self.cond:
            if str(doc.get("CMD")) == "11" and doc.get("ID") == self.waiting and "BACK" in doc:
                self.receipt_at = t
                self.back = doc.get("BACK")
            elif str(doc.get("CMD")) == "10":
                self.reports += 1
            self.cond.notify_all()

    def once(self, version, timeout=10):
        """Sends one command; returns the seconds from publish to receipt."""
        cmd_id = B.platform_module.random_id()
        payload = json.dumps({"CMD": 11, "ID": cmd_id, "URL": "http://127.0.0.1:9/fw.img",
                              "FW_VERSION": version}, separators=(",", ":"))
        with self.cond:
            self.waiting, self.receipt_at = cmd_id, None
            reports = self.reports
        t0 = time.perf_counter()
        self.client.publish(self.set_topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.receipt_at is None or (self.expect_report and self.reports == reports):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise B.BenchError("no %s for command %s within %ss" % (
                        "receipt" if self.receipt_at is None else "version report", cmd_id, timeout))
                self.cond.wait(left)
            if self.back != "OK":
                raise B.BenchError("command %s answered %r" % (cmd_id, self.back))
            return self.receipt_at - t0

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def run_latency(tmpdir, reaper, quick):
    n = 200 if quick else 1000
    base = os.path.join(str(tmpdir), "lat")
    broker = B.start_broker(base, reaper)
    platform = B.start_platform(broker, reaper)
    d = B.Daemon(base, broker, platform=platform, name="lat", device_id="D1", fw_version="2.0.0",
                 config=dict(B.DAEMON_CONFIG), start=False, installer=False)  # receipts only: nothing installs
    reaper.add(d, d.cleanup)
    mark = platform.mark()
    d.start()
    platform.wait_for_report("D1", since=mark, timeout=20)
    echo_secret = "echo-" + B.platform_module.random_id()
    platform.provision_device("ECHO", echo_secret)
    echo = reaper.popen([B.PY, os.path.join(B.HERE, "echo_client.py"), broker.host, str(broker.port),
                         "ECHO", echo_secret, "P1", "ECHO"], stdout=subprocess.PIPE, text=True)
    if echo.stdout.readline().strip() != "ready":
        raise B.BenchError("echo client did not start (exit %s)" % echo.poll())
    # The recording platform is not on the measured path.
    platform.close()
    rt_d = RoundTrip(broker, "P1", "D1", expect_report=True)
    reaper.add(rt_d, rt_d.close)
    rt_e = RoundTrip(broker, "P1", "ECHO", expect_report=False)
    reaper.add(rt_e, rt_e.close)
    for _ in range(5):  # warm-up, not counted
        rt_d.once("2.0.0")
        rt_e.once("2.0.0")
    lat_d, lat_e = [], []
    deadline = time.monotonic() + (60 if quick else 240)
    for _ in range(n):
        lat_d.append(rt_d.once("2.0.0"))
        lat_e.append(rt_e.once("2.0.0"))
        if time.monotonic() > deadline:
            break
    if not d.running():
        raise B.BenchError("krtiotd exited: " + d.log_tail(20))
    count = len(lat_d)
    fig = "receipt latency %s (%d cmds)"
    p50d, p50e = B.percentile(lat_d, 50), B.percentile(lat_e, 50)
    p99d, p99e = B.percentile(lat_d, 99), B.percentile(lat_e, 99)
    rows = [
        B.Row(fig % ("p50", count), B.fmt_ms(p50d), "echo client " + B.fmt_ms(p50e), p50d / p50e,
              "-", "info", quick),
        B.Row(fig % ("p99", count), B.fmt_ms(p99d), "echo client " + B.fmt_ms(p99e), p99d / p99e,
              "<= 5 ms", B.verdict_le(p99d, P99_TARGET, B.fmt_ms), quick),
    ]
    notes = ["receipt latency: krtiotd min %s max %s; echo min %s max %s%s" % (
        B.fmt_ms(min(lat_d)), B.fmt_ms(max(lat_d)), B.fmt_ms(min(lat_e)), B.fmt_ms(max(lat_e)),
        "" if count == n else "; stopped at %d of %d commands (time bound)" % (count, n))]
    return rows, notes


def run_registration(tmpdir, reaper, quick):
    runs = 3 if quick else 10
    base = os.path.join(str(tmpdir), "reg")
    broker = B.start_broker(base, reaper)
    events = []
    lock = threading.Lock()

    def echo(line):
        with lock:
            events.append((time.monotonic(), line))

    platform = B.start_platform(broker, reaper, echo=echo)
    notify = B.NotifySocket()
    reaper.add(notify, notify.close)
    product_secret = "ps-" + B.platform_module.random_id()
    platform.enable_registration("P1", product_secret, receipt_timeout=10)
    total, ready, phases = [], [], []
    for i in range(runs):
        dev = "R%02d" % i
        platform.provision_device(dev, product_secret)
        cfg = dict(B.DAEMON_CONFIG)
        cfg["registration.timeout"] = 10
        d = B.Daemon(base, broker, platform=None, notify=notify, name="reg%d" % i, device_id=dev,
                     seed=False, product_secret=product_secret, config=cfg, start=False,
                     installer=False)  # start -> report only: no krtiot-install in the timing
        reaper.add(d, d.cleanup)
        mark, nmark = platform.mark(), notify.mark()
        t0 = time.monotonic()
        d.start()
        report = platform.wait_for_report(dev, since=mark, timeout=30)
        rdy = [t for t, pid, text in notify.datagrams(nmark) if pid == d.pid and "READY=1" in text.split("\n")]
        if not rdy:
            raise B.BenchError("no READY=1 from %s" % dev)
        changed = [t for t, line in list(events) if line.startswith("== %s now logs in" % dev)]
        req = platform.messages(dev, cmd=20, kind="register/post", since=mark)
        ack = [m for m in platform.messages(dev, cmd=21, kind="register/post", since=mark) if m.get("BACK")]
        if not changed or report.time < changed[0]:
            raise B.BenchError("%s: first version report not after the password change" % dev)
        total.append(report.time - t0)
        ready.append(rdy[0] - t0)
        phases.append((req[0].time - t0, ack[0].time - t0, changed[0] - t0, report.time - t0))
        d.stop()
    med, med_ready = B.median(total), B.median(ready)
    ph = [B.median([p[k] for p in phases]) for k in range(4)]
    rows = [B.Row("registration, start -> report (median of %d)" % runs, B.fmt_ms(med),
                  "start -> READY " + B.fmt_ms(med_ready), med / med_ready, "<= 100 ms",
                  B.verdict_le(med, REGISTRATION_TARGET, B.fmt_ms), quick)]
    notes = ["registration runs (ms): " + " ".join("%.0f" % (t * 1000) for t in total),
             "registration medians from start: CMD 20 at %s, CMD 21 receipt %s, password changed %s, "
             "first report %s" % tuple(B.fmt_ms(x) for x in ph)]
    return rows, notes
