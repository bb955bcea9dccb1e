# SPDX-License-Identifier: Apache-2.0
"""Fleet: N krtiotd (500; quick 50) registering at once against one
mosquitto, then a broker restart.

Each daemon has its own device ID (F0000...) and client id
"{product_id}-{device_id}", no stored secret, and the spec's defaults for
what matters here (registration.timeout 30, reconnect_max 60, keepalive 60).
Every device is provisioned with the product secret; the platform's
registration service (platform.py, one worker, one device at a time)
answers them. All N are started in one loop; a device counts as registered
when the platform has its first version report, which needs the device
secret.

Memory, once all are registered and idle: the broker's RSS (reference: the
same broker before the agents connected) and every agent's RSS and USS,
beside N mosquitto_sub (keepalive 60, same broker, started afterwards).

Reconnection: the broker is stopped, kept down a few seconds (10; quick 5),
as during an upgrade, and started again. Connect times are read from the
broker's log (seconds resolution), counted per second after it came back:
the N agents (backoff from 1 s, doubling, full jitter), against the N
mosquitto_sub (libmosquitto's fixed 1 s retry: a burst).
"""

import os
import re
import subprocess
import time
from collections import Counter

import benchlib as B

SPREAD_TARGET = 0.25  # busiest second, share of N (ours: the brief asks "spread out vs a burst")
USS_TARGET_KIB = 1024
RSS_TARGET_RATIO = 1.5

CONNECT_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): New client connected from \S+ as (\S+) ", re.M)
RUNNING_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): mosquitto version \S+ running", re.M)


def _epoch(stamp):
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def _first_reports(platform, since):
    firsts = {}
    for m in platform.messages(cmd=10, kind="ota/post", since=since):
        firsts.setdefault(m.device_id, m.time)
    return firsts


def histogram(ha, hb, last, width=32, detail=20):
    """Lines of a per-second histogram of two Counters: one line per second
    up to DETAIL, runs of empty seconds folded into one line, and everything
    from DETAIL on in one line."""
    top = max([1] + list(ha.values()) + list(hb.values()))
    lines, s = [], 0
    while s <= min(last, detail - 1):
        a, b = ha.get(s, 0), hb.get(s, 0)
        if a == 0 and b == 0:
            e = s
            while e + 1 <= min(last, detail - 1) and ha.get(e + 1, 0) == 0 and hb.get(e + 1, 0) == 0:
                e += 1
            if e > s:
                lines.append("  +%2d..%ds  none" % (s, e))
                s = e + 1
                continue
        lines.append(("  +%2ds  krtiotd %4d %-*s  mosquitto_sub %4d %s"
                      % (s, a, width, "#" * round(width * a / top), b, "#" * round(width * b / top))).rstrip())
        s += 1
    if last >= detail:
        a = sum(v for k, v in ha.items() if k >= detail)
        b = sum(v for k, v in hb.items() if k >= detail)
        lines.append("  +%d..%ds  krtiotd %4d, mosquitto_sub %d" % (detail, last, a, b))
    return lines


def run(tmpdir, reaper, quick):
    n = 50 if quick else 500
    down = 5 if quick else 10
    notes = []
    base = os.path.join(str(tmpdir), "fleet")
    broker = B.start_broker(base, reaper)
    platform = B.start_platform(broker, reaper)
    product_secret = "ps-" + B.platform_module.random_id()
    ids = ["F%04d" % i for i in range(n)]
    t = time.monotonic()
    platform.enable_registration("P1", product_secret, devices=ids, receipt_timeout=30)
    provision_s = time.monotonic() - t
    broker_before = B.memory(broker.pid)

    notify = B.NotifySocket()
    reaper.add(notify, notify.close)
    cfg = dict(B.DAEMON_CONFIG)
    cfg["registration.timeout"] = 30
    daemons = []
    reaper.add(daemons, lambda: B.stop_daemons(daemons))
    for dev in ids:
        daemons.append(B.Daemon(base, broker, platform=None, notify=notify, name=dev, device_id=dev,
                                seed=False, product_secret=product_secret, config=cfg, start=False,
                                # Nothing installs here: no krtiot-install (socket-activated, it
                                # would not run on these devices either).
                                installer=False))
    mark, nmark = platform.mark(), notify.mark()
    t0 = time.monotonic()
    for d in daemons:
        d.start()
    spawn_s = time.monotonic() - t0
    deadline = t0 + (90 if quick else 300)
    while True:
        firsts = _first_reports(platform, mark)
        if len(firsts) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    dead = [d.device_id for d in daemons if not d.running()]
    if dead:
        raise B.BenchError("%d agents exited, e.g. %s: %s" % (len(dead), dead[0],
                                                            daemons[ids.index(dead[0])].log_tail(10)))
    registered = len(firsts)
    pids = {d.pid for d in daemons}
    ready = {}
    for tm, pid, text in notify.datagrams(nmark):
        if pid in pids and "READY=1" in text.split("\n"):
            ready.setdefault(pid, tm)
    times = sorted(tm - t0 for tm in firsts.values())
    last = times[-1] if times else float("nan")
    last_ready = max(ready.values()) - t0 if ready else float("nan")
    requests = Counter(m.device_id for m in platform.messages(cmd=20, kind="register/post", since=mark))
    retries = sum(c - 1 for c in requests.values() if c > 1)
    platform.close()  # not needed any more; not part of what is measured
    time.sleep(2.0)

    broker_after = B.memory(broker.pid)
    mem = [B.memory(d.pid) for d in daemons]
    rss = sum(m["rss"] for m in mem)
    uss = sum(m["uss"] for m in mem)

    # The burst reference: N mosquitto_sub on the same broker.
    subs = []
    reaper.add(subs, lambda: B.Reaper.terminate(subs))
    for i in range(n):
        cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", broker.admin_user,
               "-P", broker.admin_password, "-i", "S-%04d" % i, "-k", "60", "-q", "1",
               "-t", "/bench/S-%04d" % i]
        subs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL))
    B.wait_until(lambda: broker.log_text().count(" as S-") >= n, 60, "%d mosquitto_sub to connect" % n, 0.2)
    time.sleep(1.0)
    smem = [B.memory(p.pid) for p in subs]
    srss = sum(m["rss"] for m in smem)
    suss = sum(m["uss"] for m in smem)

    # Broker restart.
    bmark = broker.log_mark()
    broker.stop()
    time.sleep(down)
    broker.start()

    def back():
        text = broker.log_text()[bmark:]
        agents = {c for _s, c in CONNECT_RE.findall(text) if c.startswith("P1-F")}
        bursts = {c for _s, c in CONNECT_RE.findall(text) if c.startswith("S-")}
        return len(agents) >= n and len(bursts) >= n
    try:
        B.wait_until(back, 40 if quick else 120, "every client to reconnect", 0.5)
    except B.BenchError as e:
        notes.append("reconnect: " + str(e))
    text = broker.log_text()[bmark:]
    up = RUNNING_RE.findall(text)
    up_at = _epoch(up[0])
    first_conn = {}
    for stamp, client in CONNECT_RE.findall(text):
        first_conn.setdefault(client, _epoch(stamp) - up_at)
    agent_t = [v for c, v in first_conn.items() if c.startswith("P1-F")]
    burst_t = [v for c, v in first_conn.items() if c.startswith("S-")]
    ha, hb = Counter(int(x) for x in agent_t), Counter(int(x) for x in burst_t)
    busiest_a = max(ha.values()) / n if ha else float("nan")
    busiest_b = max(hb.values()) / n if hb else float("nan")
    span_a = max(agent_t) if agent_t else float("nan")
    span_b = max(burst_t) if burst_t else float("nan")

    notes.append("fleet %d: provisioning %.1f s; spawning %.2f s; registration start->report: median %.2f s, "
                 "last %.2f s (%.1f ms per device through the one-at-a-time registration service); "
                 "%d repeated CMD 20; broker RSS %s -> %s (%+.1f KiB per agent)"
                 % (n, provision_s, spawn_s, B.median(times) if times else float("nan"), last,
                    1000.0 * last / max(1, registered), retries,
                    B.fmt_kib(broker_before["rss"]), B.fmt_kib(broker_after["rss"]),
                    (broker_after["rss"] - broker_before["rss"]) / n))
    notes.append("reconnect after a %d s broker outage: clients connected per second after the broker "
                 "came back (krtiotd %d/%d, mosquitto_sub %d/%d):" % (down, len(agent_t), n, len(burst_t), n))
    notes.extend(histogram(ha, hb, int(max([0] + agent_t + burst_t))))

    q = quick
    f = "fleet %d: " % n
    rows = [
        B.Row(f + "registered", "%d/%d" % (registered, n), "-", None, "all",
              "MET" if registered == n else "MISSED by %d" % (n - registered), q),
        B.Row(f + "start -> last registered", "%.2f s" % last, "last READY %.2f s" % last_ready,
              last / last_ready if last_ready else None, "-", "info", q),
        B.Row(f + "broker RSS", B.fmt_kib(broker_after["rss"]), "no agents " + B.fmt_kib(broker_before["rss"]),
              broker_after["rss"] / broker_before["rss"], "-", "info", q),
        B.Row(f + "agent RSS, mean (total)", "%s (%s)" % (B.fmt_kib(rss // n), B.fmt_kib(rss)),
              "mosquitto_sub %s (%s)" % (B.fmt_kib(srss // n), B.fmt_kib(srss)), rss / srss,
              "<= 1.5x mosquitto_sub", B.verdict_le(rss / srss, RSS_TARGET_RATIO, lambda x: "%.2fx" % x), q),
        B.Row(f + "agent USS, mean (total)", "%s (%s)" % (B.fmt_kib(uss // n), B.fmt_kib(uss)),
              "mosquitto_sub %s (%s)" % (B.fmt_kib(suss // n), B.fmt_kib(suss)), uss / suss,
              "<= 1024 KiB each", B.verdict_le(uss / n, USS_TARGET_KIB, lambda x: "%d KiB" % x), q),
        B.Row(f + "reconnect, busiest second", "%.0f%% of agents" % (100 * busiest_a),
              "mosquitto_sub %.0f%%" % (100 * busiest_b), busiest_a / busiest_b if busiest_b else None,
              "<= 25% (ours)", B.verdict_le(busiest_a, SPREAD_TARGET, lambda x: "%.0f points" % (100 * x)), q),
        B.Row(f + "reconnect, last one back", "+%d s" % span_a, "mosquitto_sub +%d s" % span_b,
              span_a / span_b if span_b else None, "-", "info", q),
    ]
    B.stop_daemons(daemons)
    B.Reaper.terminate(subs)
    return rows, notes
