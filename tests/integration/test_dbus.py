# SPDX-License-Identifier: Apache-2.0
"""The D-Bus interface (krtiot-dbus(7)) of the real krtiotd, on a real
dbus-daemon with Debian's system bus policy and the policy file the package
ships (sysbus.py), read with busctl: every property, PropertiesChanged and
JobFinished across a whole OTA, ReportNow() and who may call it, no bus,
and a bus that restarts."""

import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from daemon import agent_identity, build_dir
from sysbus import IFACE, NAME, PATH, Monitor
from test_ota import MiB, device, image, nginx, slow_nginx, www  # noqa: F401 (fixtures)
from test_registration import PRODUCT_SECRET, REG_SILENT, registering

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def as_uid(uid, gid):
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"]


@pytest.fixture
def monitor(system_bus):
    m = Monitor(system_bus)
    yield m
    m.close()


def started(krtiotd, platform, system_bus, **kw):
    mark = platform.mark()
    d = krtiotd(bus=system_bus, **kw)
    platform.wait_for_report(d.device_id, since=mark, timeout=20)
    system_bus.wait_owner()
    return d


def test_properties_of_a_connected_device(krtiotd, platform, system_bus):
    before = time.time()
    d = started(krtiotd, platform, system_bus)
    p = system_bus.wait_property("State", lambda v: v == "connected")
    after = time.time()

    assert p["Registered"] is True and p["Connected"] is True
    assert p["Broker"] == "tcp://127.0.0.1:%d" % d.broker.port
    assert p["ProductId"] == "P1" and p["DeviceId"] == "D1"
    assert p["HardwareVersion"] == "1.0.0" and p["FirmwareVersion"] == "2.0.0"
    assert before * 1e6 <= p["LastReport"] <= after * 1e6, (before, p["LastReport"], after)
    assert p["JobId"] == "" and p["JobTargetVersion"] == "" and p["JobPhase"] == ""
    assert p["JobProgress"] == 0 and p["JobBytesDone"] == 0 and p["JobBytesTotal"] == 0
    assert p["LastError"] == "" and p["LastJobResult"] == ""
    assert p["StatusText"].startswith("Connected to tcp://127.0.0.1:%d as D1, firmware 2.0.0" % d.broker.port)
    # The agent's user owns the name, not root.
    assert system_bus.owner_uid() == agent_identity()[0]


def test_introspection_and_reading_as_any_user(krtiotd, platform, system_bus):
    started(krtiotd, platform, system_bus)
    r = system_bus.busctl("introspect", NAME, PATH, IFACE)
    for member in ("State", "Registered", "Connected", "Broker", "ProductId", "DeviceId", "HardwareVersion",
                   "FirmwareVersion", "LastReport", "JobId", "JobTargetVersion", "JobPhase", "JobProgress",
                   "JobBytesDone", "JobBytesTotal", "LastError", "LastJobResult", "StatusText", "ReportNow",
                   "JobFinished"):
        assert member in r.stdout, (member, r.stdout)
    assert "emits-change" in r.stdout
    # Reading is for everyone (nobody here), through the shipped policy.
    p = system_bus.get_all(user_cmd=NOBODY)
    assert p["DeviceId"] == "D1"
    r = system_bus.busctl("introspect", NAME, PATH, user_cmd=NOBODY)
    assert "ReportNow" in r.stdout


def test_report_now_is_for_root_only(krtiotd, platform, system_bus):
    d = started(krtiotd, platform, system_bus)
    time.sleep(0.5)
    mark = platform.mark()
    system_bus.busctl("call", NAME, PATH, IFACE, "ReportNow")
    platform.wait_for_report(d.device_id, since=mark, timeout=5)
    assert "Version report asked for over D-Bus" in d.log_text()

    # nobody: the bus's policy refuses the call before krtiotd sees it.
    mark = platform.mark()
    r = system_bus.busctl("call", NAME, PATH, IFACE, "ReportNow", user_cmd=NOBODY, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    assert "Refused ReportNow()" not in d.log_text(), "krtiotd saw a call the policy should have stopped"
    # The agent's own user: the policy lets it send to its name; krtiotd itself refuses (busctl shows every
    # AccessDenied as "Access denied": krtiotd's log says who refused).
    uid, gid = agent_identity()
    if uid != 0:
        r = system_bus.busctl("call", NAME, PATH, IFACE, "ReportNow", user_cmd=as_uid(uid, gid), check=False)
        assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
        d.wait_log(r"Refused ReportNow\(\) from uid %d: only root may call it" % uid, timeout=5)
    time.sleep(1)
    assert platform.messages(d.device_id, cmd=10, since=mark) == [], "a refused ReportNow sent a report"


def test_report_now_when_not_logged_in(krtiotd, platform, system_bus):
    # Nobody issues the secret: the device stays in registration.
    d = registering(krtiotd, platform, mode=REG_SILENT, bus=system_bus)
    system_bus.wait_owner()
    p = system_bus.wait_property("StatusText", lambda v: "waiting for the platform" in v)
    assert p["State"] == "registering" and p["Registered"] is False and p["Connected"] is True
    r = system_bus.busctl("call", NAME, PATH, IFACE, "ReportNow", check=False)
    assert r.returncode != 0 and "Not logged in" in r.stderr, r.stderr
    assert d.running()


def test_registration_and_states(krtiotd, platform, system_bus):
    d = registering(krtiotd, platform, bus=system_bus)
    system_bus.wait_owner()
    p = system_bus.wait_property("State", lambda v: v == "connected", timeout=20)
    assert p["Registered"] is True

    # The broker goes away: offline, with the reason.
    d.broker.stop()
    p = system_bus.wait_property("State", lambda v: v == "offline", timeout=15)
    assert p["Connected"] is False
    assert p["LastError"], p
    assert p["StatusText"].startswith("Offline: "), p
    d.broker.start()
    system_bus.wait_property("State", lambda v: v == "connected", timeout=30)


def test_registration_refused(krtiotd, platform, system_bus):
    platform.enable_registration("P1", PRODUCT_SECRET, receipt_timeout=4)
    platform.provision_device("D1", "some-other-password")
    krtiotd(bus=system_bus, seed=False, product_secret=PRODUCT_SECRET)
    p = system_bus.wait_property("State", lambda v: v == "registration-refused", timeout=20)
    assert p["Registered"] is False and p["Connected"] is False
    assert "product secret" in p["LastError"], p


def test_a_whole_ota_on_the_bus(device, slow_nginx, www, platform, system_bus, monitor):
    data = image(www, "fw.img", 3 * MiB)  # 512 KiB/s: ~6 s of download
    dv = device(slow_nginx)
    dv.d.bus = system_bus
    dv.start()
    system_bus.wait_owner()
    cmd_id, mark = dv.send(slow_nginx.url("fw.img"), "2.0.1", size=len(data),
                           sha256=hashlib.sha256(data).hexdigest())
    p = system_bus.wait_property("State", lambda v: v == "downloading", timeout=10)
    assert p["JobId"] == cmd_id and p["JobTargetVersion"] == "2.0.1" and p["JobPhase"] == "downloading"
    assert p["JobBytesTotal"] == len(data)
    p = system_bus.wait_property("JobProgress", lambda v: 20 <= v < 100, timeout=10)
    assert p["StatusText"].startswith("Updating to 2.0.1: downloading %d%%" % p["JobProgress"]) or \
        p["StatusText"].startswith("Updating to 2.0.1: downloading"), p

    fin = monitor.wait_signal("JobFinished", timeout=40)
    assert fin["payload"]["data"] == [cmd_id, "2.0.1", True, ""], fin
    p = system_bus.wait_property("FirmwareVersion", lambda v: v == "2.0.1", timeout=10)
    assert p["JobPhase"] == "done" and p["State"] == "connected" and p["LastJobResult"] == "succeeded"
    assert p["JobProgress"] == 100

    changes = monitor.changed()
    states = [c["State"] for c in changes if "State" in c]
    assert states[:1] == ["downloading"] or "downloading" in states, states
    assert states.index("downloading") < states.index("installing") < len(states), states
    # Progress alone: at most about once a second, whatever krtiot-fetch says (a change of phase carries the
    # progress of its moment with it).
    progress = [m for m in monitor.signals("PropertiesChanged")
                if set(m["payload"]["data"][1]) <= {"JobBytesDone", "JobBytesTotal", "JobProgress", "StatusText"}]
    times = [m["timestamp-realtime"] / 1e6 for m in progress]
    assert len(progress) >= 3, progress
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.8, (gaps, [sorted(m["payload"]["data"][1]) for m in progress])
    # The signal comes after the properties that show the end.
    end = [m for m in monitor.signals("PropertiesChanged")
           if m["payload"]["data"][1].get("JobPhase", {}).get("data") == "done"]
    assert end and end[0]["timestamp-realtime"] <= fin["timestamp-realtime"]


def test_a_failed_ota_on_the_bus(device, nginx, www, platform, system_bus, monitor):
    image(www, "fw.img", 256 * 1024)
    dv = device(nginx)
    dv.d.bus = system_bus
    dv.start()
    system_bus.wait_owner()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256="ab" * 32)
    fin = monitor.wait_signal("JobFinished", timeout=30)
    id_, target, success, reason = fin["payload"]["data"]
    assert (id_, target, success) == (cmd_id, "2.0.1", False)
    assert "SHA-256" in reason or "sha256" in reason.lower(), reason
    p = system_bus.get_all()
    assert p["JobPhase"] == "failed" and p["LastJobResult"] == "failed: " + reason
    assert p["LastError"] == "failed: " + reason or reason in p["LastError"], p
    assert "the update to 2.0.1 failed" in p["StatusText"], p


def test_no_bus_at_start_then_the_bus_appears(krtiotd, platform, system_bus):
    system_bus.stop()
    d = started_without_owner = krtiotd(bus=system_bus)
    platform.wait_for_report(d.device_id, timeout=20)
    d.wait_log(r"No system bus at unix:path=.*: the D-Bus interface is off", timeout=5)
    assert d.running()
    t0 = time.monotonic()
    system_bus.start()
    system_bus.wait_owner(timeout=10)
    # inotify saw the socket: no need to wait for the next retry.
    assert time.monotonic() - t0 < 5
    d.wait_log(r"system_bus_socket appeared: connecting to the system bus", timeout=2)
    assert system_bus.get("State") == "connected"
    assert d.log_text().count("No system bus at") == 1, "the notice is said once"
    assert started_without_owner.running()


def test_the_bus_restarts(krtiotd, platform, system_bus):
    d = started(krtiotd, platform, system_bus)
    for _ in range(2):
        system_bus.restart(down_seconds=1)
        system_bus.wait_owner(timeout=15)
        assert system_bus.get("DeviceId") == "D1"
    assert "Lost the system bus" in d.log_text()
    assert d.running()
    # MQTT never noticed.
    mark = platform.mark()
    system_bus.busctl("call", NAME, PATH, IFACE, "ReportNow")
    platform.wait_for_report(d.device_id, since=mark, timeout=5)


def test_secrets_never_on_the_bus(krtiotd, platform, system_bus, monitor):
    d = registering(krtiotd, platform, bus=system_bus)
    system_bus.wait_property("State", lambda v: v == "connected", timeout=20)
    secret = d.read_credentials()["device_secret"]
    text = repr(monitor.messages) + repr(system_bus.get_all())
    assert len(monitor.messages) > 3, "the monitor saw nothing: the check proves nothing"
    assert d.product_secret not in text
    assert secret not in text


def test_control_characters_and_bad_utf8_reach_the_bus_escaped(device, nginx, www, platform, system_bus):
    dv = device(nginx)
    dv.d.bus = system_bus
    dv.start()
    system_bus.wait_owner()
    # An ID with ESC and a byte that is not UTF-8: refused (bad URL), but an ID still reaches no property; a
    # job with a hostile ID does.
    image(www, "fw.img", 1024)
    weird = "job-\x1b[31m-\u00e9"
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", id=weird)
    system_bus.wait_property("JobPhase", lambda v: v in ("done", "failed"), timeout=20)
    p = system_bus.get_all()
    assert p["JobId"] == "job-\\x1b[31m-\u00e9", p["JobId"]


# -- krtiotctl against the real agent ----------------------------------------------------------------------

def krtiotctl(bus, *args, user_cmd=None, timeout=30, **kw):
    cmd = list(user_cmd or []) + [os.path.join(build_dir(), "src", "ctl", "krtiotctl")] + list(args)
    return subprocess.run(cmd, env=bus.env(), capture_output=True, text=True, timeout=timeout, **kw)


def test_krtiotctl_status(krtiotd, platform, system_bus):
    d = started(krtiotd, platform, system_bus)
    system_bus.wait_property("State", lambda v: v == "connected")
    for user in (None, NOBODY):
        r = krtiotctl(system_bus, "status", user_cmd=user)
        assert r.returncode == 0, r.stderr
        assert re.search(r"^\s*State: connected$", r.stdout, re.M), r.stdout
        assert re.search(r"^\s*Device: D1$", r.stdout, re.M), r.stdout
        assert re.search(r"^\s*Firmware: 2\.0\.0$", r.stdout, re.M), r.stdout
        r = krtiotctl(system_bus, "status", "--json", user_cmd=user)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc == system_bus.get_all() or doc["DeviceId"] == "D1", doc
        assert set(doc) == set(system_bus.get_all()), "the JSON keys are the property names"
        assert doc["State"] == "connected" and doc["Registered"] is True and doc["Broker"] == "tcp://127.0.0.1:%d" % d.broker.port


def test_krtiotctl_report_and_its_errors(krtiotd, platform, system_bus):
    d = started(krtiotd, platform, system_bus)
    mark = platform.mark()
    r = krtiotctl(system_bus, "report")
    assert r.returncode == 0 and r.stdout == "", r
    platform.wait_for_report(d.device_id, since=mark, timeout=5)
    r = krtiotctl(system_bus, "report", user_cmd=NOBODY)
    assert r.returncode == 77 and "root" in r.stderr, r
    r = krtiotctl(system_bus, "bogus")
    assert r.returncode == 64 and "--help" in r.stderr, r
    d.stop()
    r = krtiotctl(system_bus, "status")
    assert r.returncode == 69 and "krtiotd is not running" in r.stderr, r
    system_bus.stop()
    r = krtiotctl(system_bus, "status")
    assert r.returncode == 69 and "system bus" in r.stderr, r


def _watch(bus, *args):
    cmd = [os.path.join(build_dir(), "src", "ctl", "krtiotctl"), "watch"] + list(args)
    return subprocess.Popen(cmd, env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_krtiotctl_watch_follows_a_whole_ota(device, slow_nginx, www, platform, system_bus):
    data = image(www, "fw.img", 2 * MiB)  # 512 KiB/s: ~4 s of download
    dv = device(slow_nginx)
    dv.d.bus = system_bus
    dv.start()
    system_bus.wait_owner()
    w = _watch(system_bus)  # no job yet: it waits for the next one
    time.sleep(0.5)
    cmd_id, mark = dv.send(slow_nginx.url("fw.img"), "2.0.1", size=len(data),
                           sha256=hashlib.sha256(data).hexdigest())
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, (out, err)
    lines = out.splitlines()
    assert any(re.fullmatch(r"downloading \d+%% \d+/%d bytes" % len(data), l) for l in lines), lines
    assert "installing" in lines, lines
    assert lines[-1] == "Job %s (target 2.0.1) succeeded." % cmd_id, lines
    # The percentages only go up.
    pct = [int(re.match(r"downloading (\d+)%", l).group(1)) for l in lines if re.match(r"downloading \d+%", l)]
    assert pct == sorted(pct) and len(pct) >= 2, pct
    # status --json after it: the job and its result.
    doc = json.loads(krtiotctl(system_bus, "status", "--json").stdout)
    assert doc["JobId"] == cmd_id and doc["JobPhase"] == "done" and doc["LastJobResult"] == "succeeded", doc
    # --job for a job that has ended: at once, with its result.
    r = krtiotctl(system_bus, "watch", "--job", cmd_id, timeout=10)
    assert r.returncode == 0, r


def test_krtiotctl_watch_exits_1_on_a_failed_ota(device, nginx, www, platform, system_bus):
    image(www, "fw.img", 128 * 1024)
    dv = device(nginx, install_exit=3)
    dv.d.bus = system_bus
    dv.start()
    system_bus.wait_owner()
    w = _watch(system_bus)
    time.sleep(0.5)
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    out, err = w.communicate(timeout=60)
    assert w.returncode == 1, (out, err)
    assert re.search(r"Job %s \(target 2\.0\.1\) failed: .*wrapper: failing on purpose" % cmd_id, err), err
