# SPDX-License-Identifier: Apache-2.0
"""The system test: the krtiot .deb, installed with apt in a minimal Debian 12
root, booted with systemd-nspawn, run by systemd as the packaged unit.

The container shares the host's network; mosquitto (dynamic security), the
simulated platform (registration service, OTA commands) and an nginx serving
the image run on the host's 127.0.0.1. Everything is checked from the
container's own systemctl and journalctl, and on the platform's side.

The tests share one container (conftest.py: fixture `system`) and run in
this order; each one says what it proves. Run:

    sudo python3 -m pytest tests/system -rs -v

Skips (one line, why) when the machine cannot: not root, no systemd-nspawn
or debootstrap, nspawn cannot boot here, no debian/ yet (set KRTIOT_DEB).
"""

import hashlib
import json
import os
import re
import stat
import subprocess
import time

from system_root import user_id


UNIT = "krtiot.service"
# The same values as conftest.py writes into the container's config.
PRODUCT_ID = "PSYS1"
HW_VERSION = "1.0.0"
FW_VERSION = "1.0.0"
WATCHDOG_SEC = 5
INSTALLER_IDLE_SEC = 3


def test_package_installs_and_enables_the_unit(system):
    """apt installs the .deb with its dependencies; the package enables its
    unit (as dh_installsystemd does), so it starts at boot."""
    assert system.facts["apt_install_status"] == 0
    assert os.path.exists(system.rootpath("/usr/sbin/krtiotd")), "no /usr/sbin/krtiotd in the package"
    assert system.facts["is_enabled"] == "enabled", (
        "after apt-get install, `systemctl is-enabled krtiot.service` says %r, not enabled "
        "(the test enabled it itself to go on)" % system.facts["is_enabled"])


def test_unit_is_active_after_boot(system):
    """The unit (Type=notify) starts at boot: READY=1 came, it runs, and its
    ExecStartPre (--check-config) passed on the config we wrote."""
    c = system.container
    r = c.systemctl("is-active", UNIT)
    if r.stdout.strip() == "activating":
        time.sleep(3)
        r = c.systemctl("is-active", UNIT)
    assert r.stdout.strip() == "active", c.systemctl("status", UNIT).stdout
    s = system.show("ActiveState", "SubState", "MainPID", "Type", "WatchdogUSec", "NRestarts",
                    "StatusText", "ExecMainStartTimestampMonotonic")
    assert s["SubState"] == "running" and int(s["MainPID"]) > 0, s
    assert s["Type"] == "notify", s
    assert s["WatchdogUSec"] in ("5s", str(WATCHDOG_SEC * 1000000)), s  # our drop-in
    assert s["NRestarts"] == "0", s
    assert s["StatusText"], "the daemon sent no STATUS=: %r" % s


def test_agent_runs_as_krtiot_without_capabilities(system):
    """krtiotd runs as the system user krtiot the package made (sysusers),
    with no capability at all; the installer is not running (nothing to
    install), only its socket listens, root:krtiot 0660."""
    c = system.container
    pid = system.show("MainPID")["MainPID"]
    status = c.run("cat", "/proc/%s/status" % pid, check=True).stdout
    uid = user_id(system.root, "krtiot")
    assert re.search(r"^Uid:\s+%d\s+%d\s+%d\s+%d$" % ((uid,) * 4), status, re.M), status
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(r"^%s:\s+0+$" % cap, status, re.M), "%s is not empty:\n%s" % (cap, status)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert c.systemctl("is-active", "krtiot-install.socket").stdout.strip() == "active"
    assert c.systemctl("is-active", "krtiot-install.service").stdout.strip() == "inactive"
    r = c.run("stat", "-c", "%U:%G %a %F", "/run/krtiot/install.sock", check=True)
    assert r.stdout.strip() == "root:krtiot 660 socket", r.stdout


def test_device_registers_and_reports_its_version(system):
    """CMD 20 with the product secret, the platform issues a secret, the
    daemon stores it (0600, in the StateDirectory) and acknowledges it, then
    logs in with it and reports its versions (CMD 10)."""
    p, d = system.platform, system.device_id
    p.wait_registration_event(d, "request", timeout=30)
    req = p.wait_for(lambda m: m.device_id == d and m.cmd == 20 and m.kind == "register/post",
                     timeout=5, what="CMD 20 from %s" % d)
    assert req.get("PRODUCT_ID") == PRODUCT_ID and req.get("DEVICE_ID") == d, req
    p.wait_registration_event(d, "password-changed", timeout=30)
    report = p.wait_for_report(d, fw_version=FW_VERSION, timeout=30)
    assert report.get("HW_VERSION") == HW_VERSION, report
    # The report came after the secret was issued: on the device-secret session.
    assert report.seq > req.seq

    cred = system.rootpath("/var/lib/krtiot/credentials.json")
    st = os.stat(cred)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == user_id(system.root, "krtiot"), "credentials.json is not the agent's"
    with open(cred) as f:
        doc = json.load(f)
    assert doc == {"product_id": PRODUCT_ID, "device_id": d,
                   "device_secret": p.issued_secret(d)}, "credentials.json does not hold the issued secret"
    assert stat.S_IMODE(os.stat(system.rootpath("/var/lib/krtiot")).st_mode) == 0o700
    system.wait_journal("Registered.")


def test_reload(system):
    """systemctl reload krtiot: SIGHUP, RELOADING=1 ... READY=1; the journal
    says so, and the same process is still running."""
    before = system.show("MainPID")["MainPID"]
    cur = system.cursor()
    r = system.container.systemctl("reload", UNIT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = system.wait_journal("Configuration reloaded.", after=cur, timeout=15)
    assert "Reloading" in text, text
    s = system.show("ActiveState", "SubState", "MainPID", "NRestarts")
    assert s["ActiveState"] == "active" and s["SubState"] == "running", s
    assert s["MainPID"] == before and s["NRestarts"] == "0", s


def test_journal_priorities_and_no_secrets(system):
    """The daemon's <N> prefixes become journal priorities: a refused command
    is a warning, reports are info; `-p warning` has the one and not the
    other. Neither secret appears anywhere in the journal."""
    p, d = system.platform, system.device_id
    cur = system.cursor()
    since = p.mark()
    bad = p.send_ota(PRODUCT_ID, d, "ftp://127.0.0.1/fw.bin", "9.9.9")
    receipt = p.wait_for_receipt(d, bad, since=since)
    assert receipt.get("BACK") == "FAIL", receipt
    system.wait_journal("Refused command %s" % bad, after=cur)

    entries = system.journal_entries()
    def prio(needle):
        found = [e for e in entries if needle in str(e.get("MESSAGE", ""))]
        assert found, "no journal entry with %r" % needle
        return {e.get("PRIORITY") for e in found}
    assert prio("Refused command %s" % bad) == {"4"}
    assert prio("Reported hardware") == {"6"}
    assert prio("Device secret received and stored durably") == {"5"}

    warning = system.journal_text("-p", "warning")
    info = system.journal_text("-p", "info")
    assert "Refused command %s" % bad in warning
    assert "Reported hardware" not in warning and "Connected to" not in warning, warning
    assert "Reported hardware" in info and "Refused command %s" % bad in info

    # Every field of every entry, of every unit, this boot and before.
    r = system.container.journal("-o", "export", text=False, timeout=120)
    assert r.returncode == 0
    dump = r.stdout
    assert len(dump) > 10000
    for name, secret in (("product", system.product_secret), ("device", p.issued_secret(d))):
        assert secret and secret.encode() not in dump, "the %s secret is in the journal" % name
    status = system.show("StatusText")["StatusText"]
    assert system.product_secret not in status and p.issued_secret(d) not in status, status
    with open(system.container.nspawn.log_path, "rb") as f:
        console = f.read()
    assert system.product_secret.encode() not in console and p.issued_secret(d).encode() not in console


def test_ota_with_the_copy_hook_under_the_units_sandbox(system):
    """A whole OTA inside the packaged unit's sandbox (PrivateTmp, seccomp
    filters...): download from nginx, the copy hook writes the slot and the
    version file, the daemon reports the new version, the image is gone."""
    c, p, d = system.container, system.platform, system.device_id
    # The sandbox is in force: own mount namespace (PrivateTmp), seccomp filter.
    pid = system.show("MainPID")["MainPID"]
    r = c.run("/bin/sh", "-c", "readlink /proc/1/ns/mnt /proc/%s/ns/mnt; grep -E '^(Seccomp|NoNewPrivs):' /proc/%s/status"
              % (pid, pid), check=True)
    lines = r.stdout.split()
    assert lines[0] != lines[1], "the daemon shares PID 1's mount namespace: %r" % r.stdout
    assert re.search(r"Seccomp:\s+2", r.stdout), r.stdout

    image = os.urandom(3 * 1024 * 1024 + 17)
    with open(os.path.join(system.image_dir, "fw-2.0.0.bin"), "wb") as f:
        f.write(image)
    cur = system.cursor()
    since = p.mark()
    cmd = p.send_ota(PRODUCT_ID, d, system.nginx.url("fw-2.0.0.bin"), "2.0.0", size=len(image),
                     sha256=hashlib.sha256(image).hexdigest())
    assert p.wait_for_receipt(d, cmd, since=since).get("BACK") == "OK"
    p.wait_for_report(d, fw_version="2.0.0", since=since, timeout=60)
    system.wait_journal("done: the new firmware is running", after=cur)
    # The hook ran in krtiot-install.service, started by its socket; its output is that unit's.
    installer = system.journal_text(after=cur, unit="krtiot-install.service")
    assert "copy hook: installed 2.0.0" in installer, installer

    with open(system.rootpath("/var/lib/krtiot/slot.img"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(image).digest(), "slot.img differs from the image"
    with open(system.rootpath("/etc/krtiot/fw_version")) as f:
        assert f.read().strip() == "2.0.0"
    download = system.rootpath("/var/lib/krtiot/download")
    leftovers = os.listdir(download) if os.path.isdir(download) else []
    assert not leftovers, "the download directory is not empty after the job: %r" % leftovers
    assert any("fw-2.0.0.bin" in l for l in system.nginx.access_log())
    s = system.show("ActiveState", "NRestarts")
    assert s == {"ActiveState": "active", "NRestarts": "0"}, s
    # Socket-activated for the install, and gone again once idle (--idle-timeout, 3 s here).
    _wait_installer_inactive(system)


NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")
BUS = ("com.krtyun.Krtiot1", "/com/krtyun/Krtiot1")


def test_dbus_and_krtiotctl(system):
    """krtiotd owns com.krtyun.Krtiot1 on the container's own system bus (its
    dbus-daemon, the packaged policy file): busctl introspect and krtiotctl
    status work as root and as nobody; ReportNow is refused for nobody and
    sends a report for root; krtiotctl watch follows an OTA and exits 0."""
    c, p, d = system.container, system.platform, system.device_id
    for user in ((), NOBODY):
        r = c.run(*user, "busctl", "--system", "introspect", *BUS, "com.krtyun.Krtiot1")
        assert r.returncode == 0 and "ReportNow" in r.stdout and ".FirmwareVersion" in r.stdout, r.stdout + r.stderr
        r = c.run(*user, "krtiotctl", "status")
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"^\s*State: connected$", r.stdout, re.M), r.stdout
        assert re.search(r"^\s*Device: %s$" % re.escape(d), r.stdout, re.M), r.stdout
    # The name is the agent's (the user krtiot), not root's.
    r = c.run("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
              "org.freedesktop.DBus", "GetConnectionUnixUser", "s", BUS[0], check=True)
    assert int(r.stdout.split()[1]) == user_id(system.root, "krtiot"), r.stdout

    since = p.mark()
    r = c.run(*NOBODY, "busctl", "--system", "call", *BUS, "com.krtyun.Krtiot1", "ReportNow")
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stdout + r.stderr
    r = c.run(*NOBODY, "krtiotctl", "report")
    assert r.returncode == 77, r.stdout + r.stderr
    r = c.run("krtiotctl", "report")
    assert r.returncode == 0, r.stdout + r.stderr
    p.wait_for_report(d, since=since, timeout=10)

    image = os.urandom(2 * 1024 * 1024 + 3)
    with open(os.path.join(system.image_dir, "fw-2.0.5.bin"), "wb") as f:
        f.write(image)
    watch = subprocess.Popen(c.command("krtiotctl", "watch"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        since = p.mark()
        cmd = p.send_ota(PRODUCT_ID, d, system.nginx.url("fw-2.0.5.bin"), "2.0.5", size=len(image),
                         sha256=hashlib.sha256(image).hexdigest())
        out, err = watch.communicate(timeout=90)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, (out, err)
    assert out.splitlines()[-1] == "Job %s (target 2.0.5) succeeded." % cmd, out
    p.wait_for_report(d, fw_version="2.0.5", since=since, timeout=30)
    r = c.run("krtiotctl", "status", "--json", check=True)
    doc = json.loads(r.stdout)
    assert doc["FirmwareVersion"] == "2.0.5" and doc["LastJobResult"] == "succeeded", doc
    assert doc["StatusText"] == system.show("StatusText")["StatusText"], "STATUS= and D-Bus disagree"
    _wait_installer_inactive(system)


def test_install_window_and_krtiotctl_install_now(system):
    """An ota.install_window that opens in an hour (the container's local
    time), taken by systemctl reload: an OTA downloads and then waits;
    krtiotctl status and STATUS= say so; krtiotctl install-now (root)
    releases it and the new version is reported. The window is removed
    again, and reloaded, for the tests after this one."""
    c, p, d = system.container, system.platform, system.device_id
    conf = system.rootpath("/etc/krtiot.conf")
    with open(conf) as f:
        original = f.read()
    assert "\nota = {\n" in original, original
    # The window in the container's own local time: from in an hour, for an hour.
    opens = c.run("date", "-d", "+1 hour", "+%H:%M:%S", check=True).stdout.strip()
    closes = c.run("date", "-d", "+2 hours", "+%H:%M:%S", check=True).stdout.strip()
    image = os.urandom(1024 * 1024 + 5)
    with open(os.path.join(system.image_dir, "fw-2.0.6.bin"), "wb") as f:
        f.write(image)
    try:
        # Rewritten in place: root:krtiot 0640 stays.
        with open(conf, "w") as f:
            f.write(original.replace("\nota = {\n", '\nota = {\n  install_window = ["%s-%s"];\n' % (opens, closes)))
        cur = system.cursor()
        r = c.systemctl("reload", UNIT, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        system.wait_journal("Configuration reloaded.", after=cur, timeout=15)

        since = p.mark()
        cmd = p.send_ota(PRODUCT_ID, d, system.nginx.url("fw-2.0.6.bin"), "2.0.6", size=len(image),
                         sha256=hashlib.sha256(image).hexdigest())
        assert p.wait_for_receipt(d, cmd, since=since).get("BACK") == "OK"
        status = system.wait_show(lambda s: "waiting for the install window" in s["StatusText"], ["StatusText"],
                                  timeout=60, what="STATUS= waiting for the install window")["StatusText"]
        assert "2.0.6" in status, status
        r = c.run("krtiotctl", "status")
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"^\s*State: waiting$", r.stdout, re.M), r.stdout
        # In the container's local time, as the window is written: "opens <day> <date> HH:MM:SS". The container
        # has no timesyncd: its clock counts as set, being later than (a week before) the package's build.
        assert re.search(r"^\s*Waiting: install window, opens \S+ \S+ %s \S+ \(in (59 min|1 h)\)$"
                         % re.escape(opens), r.stdout, re.M), (opens, status, r.stdout)
        doc = json.loads(c.run("krtiotctl", "status", "--json", check=True).stdout)
        assert doc["WaitingFor"] == "install" and doc["WaitingUntil"] > 0 and doc["JobId"] == cmd, doc
        r = c.run(*NOBODY, "krtiotctl", "install-now")
        assert r.returncode == 77, r.stdout + r.stderr
        assert c.systemctl("is-active", "krtiot-install.service").stdout.strip() != "active", \
            "installing before the window, and before install-now"

        r = c.run("krtiotctl", "install-now")
        assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
        p.wait_for_report(d, fw_version="2.0.6", since=since, timeout=60)
        r = c.run("krtiotctl", "install-now")
        assert r.returncode == 1 and "No update waits" in r.stderr, r.stdout + r.stderr
        doc = json.loads(c.run("krtiotctl", "status", "--json", check=True).stdout)
        assert doc["FirmwareVersion"] == "2.0.6" and doc["WaitingFor"] == "" and doc["WaitingUntil"] == 0, doc
        _wait_installer_inactive(system)
    finally:
        with open(conf, "w") as f:
            f.write(original)
        cur = system.cursor()
        r = c.systemctl("reload", UNIT, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        system.wait_journal("Configuration reloaded.", after=cur, timeout=15)


def _wait_installer_inactive(system, timeout=INSTALLER_IDLE_SEC + 30):
    c = system.container
    deadline = time.monotonic() + timeout
    while True:
        state = c.systemctl("is-active", "krtiot-install.service").stdout.strip()
        if state == "inactive":
            return
        assert time.monotonic() < deadline, "krtiot-install.service still %s %ds after the job" % (state, timeout)
        time.sleep(0.5)


def test_watchdog_restarts_a_frozen_daemon(system):
    """SIGSTOP the daemon: it stops pinging, systemd's watchdog (WatchdogSec=5s
    drop-in) kills it, Restart=on-failure starts it again, and it reports."""
    c, p, d = system.container, system.platform, system.device_id
    s0 = system.show("MainPID", "NRestarts")
    cur = system.cursor()
    since = p.mark()
    frozen = time.monotonic()
    c.run("/bin/sh", "-c", "kill -STOP %s" % s0["MainPID"], check=True)
    s = system.wait_show(lambda s: s["NRestarts"] != s0["NRestarts"] and s["ActiveState"] == "active"
                         and s["MainPID"] not in ("0", s0["MainPID"]),
                         ["ActiveState", "SubState", "MainPID", "NRestarts"],
                         timeout=WATCHDOG_SEC + 60, what="restart after the watchdog")
    took = time.monotonic() - frozen
    assert int(s["NRestarts"]) == int(s0["NRestarts"]) + 1, s
    r = c.journal("-u", UNIT, "--after-cursor=" + cur, "-o", "cat")
    # systemd's own words for it ("Watchdog timeout (limit 5s)!" is not always in the unit's journal).
    assert "Failed with result 'watchdog'" in r.stdout, r.stdout
    assert took >= WATCHDOG_SEC - 1, "restarted after %.1f s, before the watchdog could fire" % took
    # The version the last OTA installed (test_install_window_and_krtiotctl_install_now).
    p.wait_for_report(d, fw_version="2.0.6", since=since, timeout=30)


def test_agent_restart_mid_install_loses_nothing(system):
    """An OTA whose hook takes 8 s; systemctl restart krtiot while it runs.
    The install is krtiot-install's: the restart does not kill it; the new
    krtiotd asks for the outcome, reports the new version, and the hook ran
    once. krtiot-install.service is inactive again afterwards."""
    c, p, d = system.container, system.platform, system.device_id
    with open(system.rootpath("/etc/krtiot/test-hook-delay"), "w") as f:
        f.write("8\n")
    try:
        image = os.urandom(1024 * 1024 + 5)
        with open(os.path.join(system.image_dir, "fw-2.1.0.bin"), "wb") as f:
            f.write(image)
        cur = system.cursor()
        since = p.mark()
        cmd = p.send_ota(PRODUCT_ID, d, system.nginx.url("fw-2.1.0.bin"), "2.1.0",
                         sha256=hashlib.sha256(image).hexdigest())
        assert p.wait_for_receipt(d, cmd, since=since).get("BACK") == "OK"
        system.wait_journal("test hook: holding the install", after=cur, timeout=30,
                            unit="krtiot-install.service")
        before = system.show("MainPID")["MainPID"]
        r = c.systemctl("restart", UNIT, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert system.show("MainPID")["MainPID"] != before
        assert c.systemctl("is-active", "krtiot-install.service").stdout.strip() == "active", \
            "the agent's restart stopped the installer"
        p.wait_for_report(d, fw_version="2.1.0", since=since, timeout=60)
        installer = system.journal_text(after=cur, unit="krtiot-install.service")
        assert installer.count("copy hook: installed 2.1.0") == 1, installer
        agent = system.journal_text(after=cur, unit=UNIT)
        assert "done: the new firmware is running" in agent, agent
        with open(system.rootpath("/var/lib/krtiot/slot.img"), "rb") as f:
            assert f.read() == image
        _wait_installer_inactive(system)
    finally:
        os.unlink(system.rootpath("/etc/krtiot/test-hook-delay"))


def test_stop_is_clean(system):
    """systemctl stop: SIGTERM, the daemon exits 0, the unit is inactive with
    Result=success."""
    c = system.container
    cur = system.cursor()
    r = c.systemctl("stop", UNIT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    s = system.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert s["ActiveState"] == "inactive", s
    assert s["ExecMainStatus"] == "0" and s["ExecMainCode"] == "1", s  # CLD_EXITED, 0
    assert s["Result"] == "success", s
    try:
        system.wait_journal("Received Terminated, stopping.", after=cur, timeout=10)
    except AssertionError:
        # Where did it go? The whole journal after the cursor, every unit, says.
        r = c.journal("--after-cursor=" + cur, "-o", "verbose")
        raise AssertionError("no stop line from krtiotd; the journal since the stop:\n" + r.stdout[-6000:])


def test_poweroff(system):
    """The container powers off cleanly: systemd-nspawn exits 0."""
    status = system.container.poweroff()
    assert status == 0, "systemd-nspawn exited %s; log:\n%s" % (status, system.container.nspawn.log_tail(40))
