# SPDX-License-Identifier: Apache-2.0
"""When to update (ota.install_window, ota.reboot_window,
ota.download_delay_max), with the real krtiotd, krtiot-install, nginx and
the copy hook. Windows open a few seconds from now: each test writes
entries from the current local time, so no clock inside the daemon is
faked; the time-not-synchronised case points krtiotd at a timesyncd
directory of the test's (KRTIOT_TIMESYNC_DIR)."""

import datetime
import hashlib
import json
import os
import re
import subprocess
import threading
import time

import pytest

from daemon import build_dir
from sysbus import IFACE, NAME, PATH
from test_dbus import NOBODY, krtiotctl
from test_ota import OLD, MiB, device, image, nginx, www  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("system_bus")


def hms(t):
    return t.strftime("%H:%M:%S")


def window_from(seconds_from_now, length=3600):
    """A window entry that opens SECONDS_FROM_NOW from now (local time), for LENGTH seconds; and that instant."""
    now = datetime.datetime.now().replace(microsecond=0)
    opens = now + datetime.timedelta(seconds=seconds_from_now)
    return "%s-%s" % (hms(opens), hms(opens + datetime.timedelta(seconds=length))), opens.timestamp()


def open_now():
    entry, _ = window_from(-60)
    return entry


def make(device, ngx, system_bus, **kw):
    dv = device(ngx, **kw)
    dv.d.bus = system_bus
    return dv


def test_install_waits_for_its_window(device, nginx, www, platform, system_bus):
    data = image(www, "fw.img", 512 * 1024)
    entry, opens = window_from(8)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    # Downloaded and verified at once, then it waits: CMD 12, STATUS=, D-Bus.
    w = dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    assert "install window opens" in w.get("REASON", ""), w
    p = system_bus.wait_property("State", lambda v: v == "waiting", timeout=5)
    assert p["WaitingFor"] == "install" and abs(p["WaitingUntil"] / 1e6 - opens) < 1.5, (p, opens)
    assert p["JobPhase"] == "verifying" and "waiting for the install window" in p["StatusText"], p
    assert dv.hook_calls() == [], "the hook ran before the window opened"
    assert len(dv.d.notify.statuses()) and any("waiting for the install window" in s for s in dv.d.notify.statuses())
    # It installs once the window opens, not before.
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=30)
    installed = dv.hook_call_times("install")[0]
    assert installed >= opens - 0.5, "installed %.1f s before the window opened" % (opens - installed)
    assert installed <= opens + 3, "installed %.1f s after the window opened" % (installed - opens)
    p = system_bus.get_all()
    assert p["WaitingFor"] == "" and p["State"] == "connected", p


def test_a_restart_while_waiting_keeps_the_wait(device, nginx, www, platform, system_bus):
    image(www, "fw.img", 256 * 1024)
    entry, opens = window_from(10)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    dv.d.stop()
    dv.d.start()
    system_bus.wait_property("State", lambda v: v == "waiting", timeout=10)
    assert dv.hook_calls() == []
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=30)
    assert dv.hook_call_times("install")[0] >= opens - 0.5
    assert len([l for l in nginx.access_log() if "GET /fw.img" in l]) == 1, "the restart fetched the image again"


def test_a_newer_command_replaces_a_waiting_job(device, nginx, www, platform, system_bus):
    image(www, "a.img", 64 * 1024)
    image(www, "b.img", 64 * 1024)
    entry, opens = window_from(3600)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    first, mark = dv.send(nginx.url("a.img"), "2.0.1")
    dv.wait_state(first, "WAITING", since=mark, timeout=10)
    second, _ = dv.send(nginx.url("b.img"), "2.0.2")
    dv.wait_state(second, "WAITING", since=mark, timeout=10)
    p = system_bus.get_all()
    assert p["JobId"] == second and p["JobTargetVersion"] == "2.0.2" and p["State"] == "waiting", p
    assert sorted(dv.files()) == [dv.job()["key"] + ".img"], dv.files()


def test_install_now_releases_a_waiting_job(device, nginx, www, platform, system_bus):
    image(www, "fw.img", 64 * 1024)
    entry, opens = window_from(3600)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    r = system_bus.busctl("call", NAME, PATH, IFACE, "RebootNow", check=False)
    assert r.returncode != 0, "RebootNow released an install"
    r = system_bus.busctl("call", NAME, PATH, IFACE, "InstallNow", user_cmd=["setpriv", "--reuid=65534",
                          "--regid=65534", "--clear-groups", "--"], check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    system_bus.busctl("call", NAME, PATH, IFACE, "InstallNow")
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=20)
    r = system_bus.busctl("call", NAME, PATH, IFACE, "InstallNow", check=False)
    assert r.returncode != 0 and "No update waits" in r.stderr, r.stderr
    # The release was for that job: the next one waits for the window again.
    image(www, "fw2.img", 64 * 1024)
    second, mark2 = dv.send(nginx.url("fw2.img"), "2.0.2")
    dv.wait_state(second, "WAITING", since=mark2, timeout=10)
    assert system_bus.get("WaitingFor") == "install"


def test_krtiotctl_shows_and_releases_a_waiting_job(device, nginx, www, platform, system_bus):
    image(www, "fw.img", 64 * 1024)
    entry, opens = window_from(3600)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    r = krtiotctl(system_bus, "install-now")
    assert r.returncode == 1 and r.stderr == "No update waits to be installed.\n", r
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    system_bus.wait_property("State", lambda v: v == "waiting", timeout=5)

    r = krtiotctl(system_bus, "status")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*State: waiting$", r.stdout, re.M), r.stdout
    opens_text = datetime.datetime.fromtimestamp(opens).strftime("%a %Y-%m-%d %H:%M:%S")
    assert re.search(r"^\s*Waiting: install window, opens %s \S+ \(in (59 min|1 h)\)$" % re.escape(opens_text),
                     r.stdout, re.M), r.stdout
    r = krtiotctl(system_bus, "status", "--json")
    doc = json.loads(r.stdout)
    assert doc["WaitingFor"] == "install" and abs(doc["WaitingUntil"] / 1e6 - opens) < 1.5, doc
    r = krtiotctl(system_bus, "reboot-now")
    assert r.returncode == 1 and "No update waits for a reboot" in r.stderr, r

    # watch follows the waiting job on, and says what it waits for.
    watch = subprocess.Popen([os.path.join(build_dir(), "src", "ctl", "krtiotctl"), "watch"], env=system_bus.env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = []
        reader = threading.Thread(target=lambda: first.append(watch.stdout.readline()), daemon=True)
        reader.start()
        reader.join(10)
        assert re.fullmatch(r"waiting for the install window until %s \S+\n" % re.escape(opens_text), first[0]), first
        assert watch.poll() is None, "watch ended while the job waits"

        r = krtiotctl(system_bus, "install-now", user_cmd=NOBODY)
        assert r.returncode == 77 and "root" in r.stderr, r
        r = krtiotctl(system_bus, "install-now")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, (out, err)
    assert out.splitlines()[-1] == "Job %s (target 2.0.1) succeeded." % cmd_id, out
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=5)
    r = krtiotctl(system_bus, "install-now")
    assert r.returncode == 1 and "No update waits" in r.stderr, r
    r = krtiotctl(system_bus, "status")
    assert "Waiting:" not in r.stdout, r.stdout


def reboot_recorder(tmp_path):
    """(FILE, SCRIPT): ota.reboot_command SCRIPT appends the time it ran to FILE."""
    rebooted = tmp_path / "rebooted"
    script = tmp_path / "reboot.sh"
    script.write_text("#!/bin/sh\ndate +%%s.%%N >> %s\n" % rebooted)
    script.chmod(0o755)
    return rebooted, script


def test_reboot_waits_for_its_window(device, nginx, www, platform, system_bus, tmp_path):
    image(www, "fw.img", 64 * 1024)
    rebooted, script = reboot_recorder(tmp_path)
    entry, opens = window_from(8)
    dv = make(device, nginx, system_bus, reboot=True,
              config={"ota.reboot_window": [entry], "ota.reboot_command": str(script)}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    w = dv.wait_state(cmd_id, "WAITING", since=mark, timeout=15)
    assert "reboot window opens" in w.get("REASON", ""), w
    p = system_bus.wait_property("WaitingFor", lambda v: v == "reboot", timeout=5)
    assert p["JobPhase"] == "reboot-pending" and "waiting for the reboot window" in p["StatusText"], p
    assert not rebooted.exists()
    # A restart of the agent in the same boot is no reboot: it keeps waiting, no rollback.
    dv.d.stop()
    dv.d.start()
    system_bus.wait_property("WaitingFor", lambda v: v == "reboot", timeout=10)
    assert "rolled back" not in dv.d.log_text()
    dv.wait_state(cmd_id, "REBOOTING", since=mark, timeout=30)
    deadline = time.monotonic() + 10
    while not rebooted.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rebooted.exists(), "the reboot command never ran"
    t = float(rebooted.read_text().split()[0])
    assert opens - 0.5 <= t <= opens + 4, (t, opens)


def test_no_window_until_the_clock_is_synchronised(device, nginx, www, platform, system_bus, tmp_path):
    timesync = tmp_path / "timesync"
    timesync.mkdir()
    image(www, "fw.img", 64 * 1024)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [open_now()]})
    dv.d.extra_env["KRTIOT_TIMESYNC_DIR"] = str(timesync)
    dv.start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    w = dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    assert "not synchronised" in w.get("REASON", ""), w
    p = system_bus.wait_property("State", lambda v: v == "waiting", timeout=5)
    assert p["WaitingUntil"] == 0 and "not synchronised" in p["StatusText"], p
    time.sleep(1)
    assert dv.hook_calls() == []
    (timesync / "synchronized").write_text("")
    dv.d.wait_log(r"The install window is open", timeout=10)
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=30)


def test_download_delay(device, nginx, www, platform, system_bus):
    image(www, "fw.img", 64 * 1024)
    dv = make(device, nginx, system_bus, config={"ota.download_delay_max": 4}).start()
    t0 = time.time()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    # The receipt goes out at once, whatever the delay.
    r = platform.wait_for_receipt("D1", cmd_id, since=mark)
    assert r.get("BACK") == "OK"
    dv.wait_state(cmd_id, "DONE", since=mark, timeout=20)
    delay = dv.d.wait_log(r"Downloading 2\.0\.1 in ([0-9.]+) s", timeout=1)
    assert 0 <= float(delay.group(1)) <= 4.0


def test_a_clock_set_judges_the_wait_again(device, nginx, www, platform, system_bus):
    """When the clock is set (NTP stepping it, an operator's `date -s`), a
    waiting job is judged again at once: krtiotd's timerfd with
    TFD_TIMER_CANCEL_ON_SET hears of it. The test sets the clock to what it
    already reads (root only; a step of microseconds), which is a clock set
    all the same, and sees the wait judged again and still waiting."""
    if os.geteuid() != 0:
        pytest.skip("setting the system clock needs root (CAP_SYS_TIME)")
    image(www, "fw.img", 64 * 1024)
    entry, opens = window_from(3600)
    dv = make(device, nginx, system_bus, config={"ota.install_window": [entry]}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "WAITING", since=mark, timeout=10)
    since = len(dv.d.log_text())
    try:
        time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME))
    except PermissionError as e:
        pytest.skip("cannot set the system clock here: %s" % e)
    dv.d.wait_log(r"The system clock was set; update windows are judged again", timeout=5, since=since)
    p = system_bus.get_all()
    assert p["State"] == "waiting" and p["WaitingFor"] == "install", p
    assert dv.hook_calls() == []
    # Told once: a judgement that finds the same wait sends no second WAITING.
    time.sleep(0.5)
    assert dv.progress(cmd_id, since=mark).count("WAITING") == 1, dv.progress(cmd_id, since=mark)


def test_reboot_now_releases_a_waiting_reboot(device, nginx, www, platform, system_bus, tmp_path):
    image(www, "fw.img", 64 * 1024)
    rebooted, script = reboot_recorder(tmp_path)
    entry, opens = window_from(3600)
    dv = make(device, nginx, system_bus, reboot=True,
              config={"ota.reboot_window": [entry], "ota.reboot_command": str(script)}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "WAITING", since=mark, timeout=15)
    system_bus.wait_property("WaitingFor", lambda v: v == "reboot", timeout=5)
    r = system_bus.busctl("call", NAME, PATH, IFACE, "InstallNow", check=False)
    assert r.returncode != 0 and "No update waits" in r.stderr, "InstallNow released a reboot: %s" % r.stderr
    assert not rebooted.exists()
    system_bus.busctl("call", NAME, PATH, IFACE, "RebootNow")
    dv.wait_state(cmd_id, "REBOOTING", since=mark, timeout=10)
    deadline = time.monotonic() + 10
    while not rebooted.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rebooted.exists(), "RebootNow did not run the reboot command"
    assert "reboot_wait_boot" not in dv.job(), "the journal still says the reboot waits: %r" % dv.job()
    p = system_bus.get_all()
    assert p["WaitingFor"] == "" and p["State"] == "reboot-pending", p
