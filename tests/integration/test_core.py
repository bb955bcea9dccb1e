# SPDX-License-Identifier: Apache-2.0
"""The daemon's core behaviour against a real mosquitto and the simulated
platform: sessions and version reports (SPEC 2, 3), robustness against
malformed commands (SPEC 3), systemd notification, signals, configuration
errors and the command line (SPEC 7, 8), secrets kept out of the log, and
devices that share a client id (SPEC 2)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from daemon import EX_CONFIG, REPO, Daemon, Raw, restart_broker, strace_missing

ID_RE = re.compile(r"[0-9A-Z]{12}")
OTA_SET = "/sys/P1/D1/thing/ota/set"
# A command whose target is the running version: acknowledged and answered
# with a version report, no download (SPEC 5.2). Used as a positive control:
# its receipt proves the daemon was reading ota/set.
def control_command(cmd_id="CONTROL00001"):
    return {"CMD": 11, "ID": cmd_id, "URL": "http://127.0.0.1:9/fw.swu", "FW_VERSION": "2.0.0"}


def project_version():
    with open(os.path.join(REPO, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def wait_subscribed(broker, topic, timeout=15, since=0):
    """Waits for the broker to log a subscription to TOPIC (after offset
    SINCE); returns its QoS."""
    pattern = re.compile(r" (\d) " + re.escape(topic) + r"$", re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(broker.log_text(), since)
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError("nobody subscribed to %s within %ss" % (topic, timeout))


def wait_reconnected_and_published(broker, since, timeout=25):
    """After a broker restart the daemon may reconnect and report before the
    platform is back (clean sessions: that report is lost to it, SPEC 2), so
    the broker's own log is the witness: a new session as P1/D1, then a
    PUBLISH on ota/post. Returns the log text after SINCE."""
    session = re.compile(r"New client connected from \S+ as P1 \(p\d, c1, k\d+, u'D1'\)")
    publish = re.compile(r"Received PUBLISH from P1 \(d\d, q1, r0, m\d+, '/sys/P1/D1/thing/ota/post'")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = broker.log_text()[since:]
        m = session.search(text)
        if m and publish.search(text, m.end()):
            return text
        time.sleep(0.1)
    raise AssertionError("no new session and version report within %ss; broker log:\n%s"
                         % (timeout, broker.log_text()[since:][-3000:]))


def assert_strict_compact_json(m):
    assert m.json is not None, "not JSON: %r" % m.payload
    assert m.payload == json.dumps(m.json, separators=(",", ":"), ensure_ascii=False).encode(), \
        "not compact JSON: %r" % m.payload


def started(krtiotd, platform, **kw):
    """A daemon that is connected: its first version report has arrived."""
    d = krtiotd(**kw)
    first = platform.wait_for_report(d.device_id, timeout=20)
    return d, first


def assert_spacing(a, b, interval, slack=1.5):
    dt = b.time - a.time
    assert interval - 0.5 <= dt <= interval + slack, \
        "reports %.2f s apart, expected about %s s" % (dt, interval)


# -- sessions and version reports ------------------------------------------------

@pytest.mark.parametrize("fw_source", ["file", "config"])
def test_version_report_on_connect(krtiotd, platform, broker, fw_source):
    config = {}
    expected_fw = "2.0.0"
    if fw_source == "config":
        config = {"device.fw_version_file": None, "device.fw_version": "3.1.4"}
        expected_fw = "3.1.4"
    d = krtiotd(config=config)
    m = platform.wait_for_report("D1", timeout=20)

    assert m.topic == "/sys/P1/D1/thing/ota/post"
    assert m.qos == 1
    assert_strict_compact_json(m)
    assert type(m.json["CMD"]) is int and m.json["CMD"] == 10
    assert ID_RE.fullmatch(m.json["ID"]), m.json["ID"]
    assert m.json["HW_VERSION"] == "1.0.0"
    assert m.json["FW_VERSION"] == expected_fw
    assert set(m.json) == {"CMD", "ID", "HW_VERSION", "FW_VERSION"}
    # SPEC 2: client id = product ID, username = device ID; clean session.
    assert re.search(r"New client connected from 127\.0\.0\.1:\d+ as P1 \(p\d, c1, k30, u'D1'\)",
                     broker.log_text()), "session parameters not as in SPEC 2"
    assert wait_subscribed(broker, OTA_SET) == 1
    assert d.running()


def test_periodic_report_after_interval(krtiotd, platform):
    _d, first = started(krtiotd, platform, config={"report.interval": 2})
    second = platform.wait_for_report("D1", since=first.seq + 1, timeout=10)
    third = platform.wait_for_report("D1", since=second.seq + 1, timeout=10)
    assert_spacing(first, second, 2)
    assert_spacing(second, third, 2)
    ids = {first.json["ID"], second.json["ID"], third.json["ID"]}
    assert len(ids) == 3 and all(ID_RE.fullmatch(i) for i in ids)


def test_changed_fw_version_file_is_reported_without_restart(krtiotd, platform):
    d, first = started(krtiotd, platform, config={"report.interval": 2})
    assert first.json["FW_VERSION"] == "2.0.0"
    pid = d.pid
    d.set_fw_version("2.0.1")
    m = platform.wait_for_report("D1", fw_version="2.0.1", since=first.seq + 1, timeout=10)
    assert m.json["HW_VERSION"] == "1.0.0"
    assert d.running() and d.pid == pid and d.starts == 1


def test_broker_restart_reconnects_and_reports(krtiotd, platform, broker):
    d, first = started(krtiotd, platform)  # report.interval 3600: a new report means a new connect
    mark = platform.mark()
    bmark = broker.log_mark()
    restart_broker(broker, platform, down_seconds=1)
    wait_reconnected_and_published(broker, bmark)
    for m in platform.messages("D1", since=mark):  # what the platform caught, if anything
        assert m.cmd == 10 and m.json["ID"] != first.json["ID"]
    assert d.running()
    assert wait_subscribed(broker, OTA_SET, since=bmark) == 1
    # One restart is not a connection that "keeps being taken over".
    assert not re.search(r"taken over", d.log_text(), re.I)


# -- malformed commands ------------------------------------------------------------

MALFORMED = {
    "not-json": b"this is not JSON {",
    "empty": b"",
    "array": b'[{"CMD":11,"ID":"ARRAY0000001","URL":"http://127.0.0.1:9/x","FW_VERSION":"9.9.9"}]',
    "string": b'"CMD 11"',
    "no-id": json.dumps({"CMD": 11, "URL": "http://127.0.0.1:9/x", "FW_VERSION": "9.9.9"}).encode(),
    "17KiB": json.dumps({"CMD": 11, "ID": "BIG000000001", "URL": "http://127.0.0.1:9/x",
                         "FW_VERSION": "9.9.9", "PAD": "x" * (17 * 1024)}).encode(),
    "unknown-cmd-99": json.dumps({"CMD": 99, "ID": "UNKNOWN00001"}).encode(),
}
# SPEC 3: these are "dropped with a warning".
WARNED = {"not-json", "array", "string", "no-id", "17KiB"}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_ota_set_is_dropped(krtiotd, platform, broker, kind):
    d, first = started(krtiotd, platform, config={"report.interval": 2})
    wait_subscribed(broker, OTA_SET)
    mark = platform.mark()
    log_mark = d.log_mark()

    platform.send_raw(OTA_SET, MALFORMED[kind])
    # The positive control, sent after it on the same topic (so delivered after it).
    platform.send_raw(OTA_SET, control_command())
    try:
        receipt = platform.wait_for_receipt("D1", "CONTROL00001", since=mark, timeout=15)
    except AssertionError as e:
        raise AssertionError("positive control failed: a command for the running version "
                             "(SPEC 5.2) sent after the malformed one got no receipt, so "
                             "nothing shows the daemon read ota/set.\n%s" % e) from None
    assert receipt.json["BACK"] == "OK"

    # Still alive, still reporting on its timer.
    r1 = platform.wait_for_report("D1", since=receipt.seq + 1, timeout=10)
    platform.wait_for_report("D1", since=r1.seq + 1, timeout=10)
    assert d.running()

    answers = [m for m in platform.messages("D1", since=mark) if m.cmd != 10]
    assert [m.json.get("ID") for m in answers] == ["CONTROL00001"], \
        "the malformed message was answered: %r" % answers
    if kind in WARNED:
        assert re.search(r"^<[0-4]>", d.log_text()[log_mark:], re.M), \
            "no warning logged for the dropped message"
    assert not os.path.exists(os.path.join(d.dir, "hook.calls")), "the hook was run"
    assert not os.path.isdir(d.download_dir) or os.listdir(d.download_dir) == []


# -- systemd -----------------------------------------------------------------------

def test_notify_ready_and_status(krtiotd, platform, notify_socket):
    d = krtiotd()
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    notify_socket.wait_for("STATUS=", timeout=10, pid=d.pid)
    platform.wait_for_report("D1", timeout=20)
    time.sleep(1)
    assert notify_socket.count("READY=1") == 1
    assert all(s.strip() for s in notify_socket.statuses()), notify_socket.statuses()
    assert notify_socket.count("WATCHDOG=1") == 0, "watchdog pings without WATCHDOG_USEC"


def test_ready_while_offline_and_status_says_so(krtiotd, platform, broker, notify_socket):
    d = krtiotd(start=False)  # provisions D1 while the broker runs
    broker.stop()
    d.start()
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    notify_socket.wait_for(re.compile(r"^STATUS=.*\boffline\b", re.I), timeout=15, pid=d.pid)
    assert d.running()
    bmark = broker.log_mark()
    broker.start()
    wait_reconnected_and_published(broker, bmark)


def test_watchdog_pings(krtiotd, notify_socket):
    d = krtiotd(watchdog_usec=2000000)
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    i, _ = notify_socket.wait_for("WATCHDOG=1", timeout=5, pid=d.pid)
    time.sleep(4)
    pings = [l for l in notify_socket.lines(since=i, pid=d.pid) if l == "WATCHDOG=1"]
    assert len(pings) >= 3, "%d pings in 4 s with a 2 s watchdog" % len(pings)


def test_watchdog_for_another_pid_is_not_ours(krtiotd, notify_socket):
    d = krtiotd(watchdog_usec=2000000, watchdog_pid=1)
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    time.sleep(3)
    assert notify_socket.count("WATCHDOG=1") == 0


def test_sighup_reloads_and_new_interval_takes_effect(krtiotd, platform, notify_socket):
    d, _first = started(krtiotd, platform)  # report.interval 3600
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    nmark = notify_socket.mark()
    d.write_config({"report.interval": 2})
    mark = platform.mark()
    d.signal(signal.SIGHUP)
    i, _ = notify_socket.wait_for("RELOADING=1", since=nmark, timeout=10, pid=d.pid)
    notify_socket.wait_for("READY=1", since=i, timeout=10, pid=d.pid)
    r1 = platform.wait_for_report("D1", since=mark, timeout=10)
    r2 = platform.wait_for_report("D1", since=r1.seq + 1, timeout=10)
    r3 = platform.wait_for_report("D1", since=r2.seq + 1, timeout=10)
    assert_spacing(r2, r3, 2)
    assert d.running() and d.starts == 1


def test_reloads_never_postpone_the_periodic_report(krtiotd, platform):
    """A reload used to re-arm the report timer from the moment of the
    reload: reloading more often than report.interval stopped periodic
    reports altogether. Reloads every second, interval 3 s: a report still
    comes every 3 s."""
    d, first = started(krtiotd, platform, config={"report.interval": 3})
    end = time.monotonic() + 7.6
    while time.monotonic() < end:
        d.signal(signal.SIGHUP)
        time.sleep(0.5)
    reports = platform.messages("D1", cmd=10, kind="ota/post", since=first.seq + 1)
    assert len(reports) >= 2, "%d periodic report(s) in 7.6 s of reloads every 0.5 s" % len(reports)
    assert_spacing(first, reports[0], 3)
    assert_spacing(reports[0], reports[1], 3)
    assert d.running() and d.starts == 1


def test_changed_interval_counts_from_the_last_report(krtiotd, platform):
    """A new report.interval counts from the last report, not from the reload."""
    d, first = started(krtiotd, platform)  # report.interval 3600
    time.sleep(3)
    d.write_config({"report.interval": 6})
    d.signal(signal.SIGHUP)
    second = platform.wait_for_report("D1", since=first.seq + 1, timeout=15)
    assert_spacing(first, second, 6)  # at first + 6 s; from the reload it would be first + 9 s


@pytest.mark.parametrize("syscall", ["epoll_create1"])
def test_failed_start_exits_1_and_frees_once(krtiotd, syscall):
    """agent_new() failing (sd_event_new() cannot make its epoll fd) used to
    free the Config through agent_free(), then main() freed it again: glibc
    aborted ("double free"). It must exit 1 and say why."""
    why = strace_missing()
    if why:
        pytest.skip(why)
    d = krtiotd(start=False)
    cmd = ["strace", "-f", "-o", "/dev/null", "-e", "trace=" + syscall,
           "-e", "inject=%s:error=EMFILE" % syscall, "--"] + d.command()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=d._env(), timeout=30)
    assert r.returncode == 1, "exit %d; output:\n%s" % (r.returncode, r.stdout)
    assert re.search(r"<3>Cannot start: Too many open files", r.stdout), r.stdout
    assert "double free" not in r.stdout and "AddressSanitizer" not in r.stdout, r.stdout


def test_sighup_with_broken_config_keeps_old_config(krtiotd, platform, notify_socket):
    d, first = started(krtiotd, platform, config={"report.interval": 2})
    log_mark = d.log_mark()
    nmark = notify_socket.mark()
    # Broken, and with another interval: nothing of it may be applied.
    d.write_config({"report.interval": 3600, "mqtt.bogus_key": 1})
    d.signal(signal.SIGHUP)
    m = d.wait_log(r"^.*bogus_key.*$", since=log_mark, timeout=10, flags=re.M)
    assert d.conf_path in m.group(0), "the error does not name the file: %r" % m.group(0)
    assert re.match(r"<[0-3]>", m.group(0)), "not logged as an error: %r" % m.group(0)
    mark = platform.mark()
    r1 = platform.wait_for_report("D1", since=mark, timeout=10)
    r2 = platform.wait_for_report("D1", since=r1.seq + 1, timeout=10)
    assert_spacing(r1, r2, 2)
    assert d.running()
    lines = notify_socket.lines(since=nmark, pid=d.pid)
    if "RELOADING=1" in lines:
        assert "READY=1" in lines[lines.index("RELOADING=1"):], \
            "RELOADING=1 without a READY=1 after it leaves systemd waiting"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_zero(krtiotd, platform, notify_socket, sig):
    d, _ = started(krtiotd, platform)
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    d.signal(sig)
    assert d.wait(timeout=10) == 0
    assert "STOPPING=1" in notify_socket.lines()  # read after exit: the sender PID may be gone


# -- configuration and command line -----------------------------------------------

def assert_names_key(text, conf_path, key, line):
    """SPEC 7: FILE:LINE: KEY: what is wrong (LINE where libconfig knows it)."""
    m = re.search(re.escape(conf_path) + r"(?::(\d+))?: " + re.escape(key) + r": \S", text)
    assert m, "no %s:LINE: %s: … in:\n%s" % (conf_path, key, text)
    if m.group(1) is not None:
        assert int(m.group(1)) == line, "%s reported on line %s, it is on line %d" % (
            key, m.group(1), line)


def test_bad_config_exits_78_and_names_every_key(krtiotd, broker, notify_socket):
    d = krtiotd(config={"report.interval": "soon", "mqtt.bogus_key": 1})
    assert d.wait(timeout=10) == EX_CONFIG, d.log_text()
    log = d.log_text()
    assert_names_key(log, d.conf_path, "report.interval", d.config_lines["report.interval"])
    assert_names_key(log, d.conf_path, "mqtt.bogus_key", d.config_lines["mqtt.bogus_key"])
    assert notify_socket.count("READY=1") == 0
    assert "u'D1'" not in broker.log_text(), "connected with a bad config"


def test_check_config(krtiotd):
    d = krtiotd(start=False)
    good = d.run("--check-config")
    assert good.returncode == 0, good.stdout + good.stderr

    d.write_config({"report.interval": 0, "registration.bogus": True})
    bad = d.run("--check-config")
    assert bad.returncode == EX_CONFIG, bad.stdout + bad.stderr
    out = bad.stdout + bad.stderr
    assert_names_key(out, d.conf_path, "report.interval", d.config_lines["report.interval"])
    assert_names_key(out, d.conf_path, "registration.bogus", d.config_lines["registration.bogus"])

    d.write_config_text("mqtt = { uri = ")  # a syntax error
    broken = d.run("--check-config")
    assert broken.returncode == EX_CONFIG
    assert d.conf_path in broken.stdout + broken.stderr


def test_check_config_finds_what_would_fail_later(krtiotd):
    """A hook that cannot run, a missing state directory, a version no OTA
    target can equal, user info in the broker URI: each would only show
    when an update, a registration or a login came. All reported at once."""
    d = krtiotd(start=False)
    good = d.run("--check-config")
    assert good.returncode == 0, good.stdout + good.stderr   # the control
    not_executable = os.path.join(d.dir, "not-executable")
    with open(not_executable, "w") as f:
        f.write("#!/bin/sh\n")
    d.write_config({"ota.hook": not_executable, "state_dir": os.path.join(d.dir, "no-such-dir"),
                    "device.fw_version_file": None, "device.fw_version": "2.0 beta",
                    "mqtt.uri": "tcp://D1:pw-4d2f9a@127.0.0.1:1883"})
    bad = d.run("--check-config")
    assert bad.returncode == EX_CONFIG, bad.stdout + bad.stderr
    for key, what in (("ota.hook", "is not executable"), ("state_dir", "does not exist"),
                      ("device.fw_version", "must be 1-64 characters"),
                      ("mqtt.uri", "must not hold a user name or password")):
        assert_names_key(bad.stderr, d.conf_path, key, d.config_lines[key])
        assert re.search(r":%d: %s: .*%s" % (d.config_lines[key], re.escape(key), re.escape(what)),
                         bad.stderr), bad.stderr
    assert "pw-4d2f9a" not in bad.stderr

    d.write_config(replace=True)
    d.write_config_text(d.config_text().replace("report = {", "/* report = {"))
    line = d.config_text().splitlines().index("/* report = {") + 1
    unclosed = d.run("--check-config")
    assert unclosed.returncode == EX_CONFIG, unclosed.stdout + unclosed.stderr
    assert "%s:%d: syntax error: /* comment is never closed" % (d.conf_path, line) in unclosed.stderr, \
        unclosed.stderr


BAD_WINDOWS = [
    ("ota.install_window", ["Mon..Fry 02:00-05:00"], '"Mon..Fry 02:00-05:00": unknown day "Fry"'),
    ("ota.install_window", ["25:00-26:00"], '"25:00-26:00": "25:00": hour out of range 00..23'),
    ("ota.install_window", [""], '"": is empty'),
    ("ota.install_window", ["02:00-02:00"], "starts and ends at the same time"),
    ("ota.install_window", [], "an empty list would never allow an install; leave the key out for any time"),
    ("ota.install_window", 5, "expected a list of strings, got an integer"),
    ("ota.install_window", "Mon 02:00-05:00", "expected a list of strings, got a string"),
    ("ota.install_window", Raw('{ from = "02:00"; }'), "expected a list of strings, got a group"),
    ("ota.install_window", Raw('( "02:00-03:00", 5 )'), "entry 2: expected a string, got an integer"),
    ("ota.reboot_window", [], "an empty list would never allow a reboot; leave the key out for any time"),
    ("ota.reboot_window", ["Sun 22:00"], 'expected "-" and an end time'),
    ("ota.download_delay_max", 86401, "86401 is out of range 0..86400"),
    ("ota.download_delay_max", "60", "expected an integer, got a string"),
]


def test_check_config_update_windows(krtiotd):
    """ota.install_window, ota.reboot_window, ota.download_delay_max
    (krtiot.conf(5), UPDATE WINDOWS): good values pass; each bad one is
    named at its line with what is wrong, exit 78, and all of them at once."""
    d = krtiotd(start=False)
    d.write_config({"ota.install_window": ["Mon..Fri 02:00-05:00", "Sat,Sun 00:00-24:00"],
                    "ota.reboot_window": Raw('( "Sun 22:00-02:00", "03:00:30-04:00" )'),
                    "ota.download_delay_max": 86400})
    good = d.run("--check-config")
    assert good.returncode == 0, good.stdout + good.stderr   # the control

    def check(out, key, what):
        assert_names_key(out, d.conf_path, key, d.config_lines[key])
        assert re.search(r":%d: %s: .*%s" % (d.config_lines[key], re.escape(key), re.escape(what)), out), out

    for key, value, what in BAD_WINDOWS:
        d.write_config({key: value}, replace=True)
        bad = d.run("--check-config")
        assert bad.returncode == EX_CONFIG, "%s = %r: %s" % (key, value, bad.stdout + bad.stderr)
        check(bad.stderr, key, what)

    d.write_config({"ota.install_window": ["Mon..Fry 02:00-05:00"], "ota.reboot_window": [],
                    "ota.download_delay_max": -1}, replace=True)
    bad = d.run("--check-config")
    assert bad.returncode == EX_CONFIG, bad.stdout + bad.stderr
    check(bad.stderr, "ota.install_window", 'unknown day "Fry"')
    check(bad.stderr, "ota.reboot_window", "would never allow a reboot")
    check(bad.stderr, "ota.download_delay_max", "-1 is out of range 0..86400")


def test_version_and_help(krtiotd_binary):
    def run(*args):
        return subprocess.run([krtiotd_binary] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)

    v = run("--version")
    assert v.returncode == 0, v.stderr
    assert project_version() in v.stdout
    h = run("--help")
    assert h.returncode == 0, h.stderr
    assert "--check-config" in h.stdout and "-c" in h.stdout
    bad = run("--no-such-option")
    assert bad.returncode != 0


# -- secrets -----------------------------------------------------------------------

def assert_secret_absent(secret, d, notify_socket):
    assert secret and secret not in d.log_text(), "a secret is in the log"
    assert not any(secret in t for t in notify_socket.all()), "a secret was sent to systemd"


def test_secrets_never_in_log_or_status(krtiotd, platform, broker, notify_socket):
    d, first = started(krtiotd, platform, config={"report.interval": 2})
    # Walk through the paths that log most: reconnect, refused login, reload.
    restart_broker(broker, platform)
    platform.wait_for_report("D1", since=first.seq + 1, timeout=25)
    mark = platform.mark()
    bmark = broker.log_mark()
    platform.set_password("D1", "not-the-stored-secret")
    assert broker.wait_log("disconnected, not authorised", since=bmark, timeout=15), \
        "the daemon did not try again after being kicked"
    platform.set_password("D1", d.device_secret)
    platform.wait_for_report("D1", since=mark, timeout=25)
    d.signal(signal.SIGHUP)
    notify_socket.wait_for("RELOADING=1", timeout=10, pid=d.pid)
    assert d.stop() == 0

    assert_secret_absent(d.device_secret, d, notify_socket)
    assert_secret_absent(d.product_secret, d, notify_socket)
    # SPEC 4.6: a refused stored secret is not deleted.
    assert d.read_credentials()["device_secret"] == d.device_secret


def test_issued_secret_never_in_log(krtiotd, platform, notify_socket):
    platform.enable_registration("P1", "product-secret-4b1e", devices=["D1"])
    d = krtiotd(seed=False, product_secret="product-secret-4b1e", config={"registration.timeout": 5})
    platform.wait_registration_event("D1", "password-changed", timeout=30)
    _, mark = platform.password_change("D1")
    platform.wait_for_report("D1", since=mark, timeout=30)
    secret = platform.issued_secret("D1")
    assert d.stop() == 0
    assert_secret_absent(secret, d, notify_socket)
    assert_secret_absent("product-secret-4b1e", d, notify_socket)
    assert os.stat(d.credentials_path).st_mode & 0o777 == 0o600
    assert d.read_credentials() == {"product_id": "P1", "device_id": "D1", "device_secret": secret}


# -- devices sharing a client id ---------------------------------------------------

def _takeover_logged(daemons):
    return [d for d in daemons if re.search(r"taken over", d.log_text(), re.I)]


def test_shared_client_id_takeover_is_logged(krtiotd, platform, broker):
    d1 = krtiotd(device_id="D1")
    d2 = krtiotd(device_id="D2")
    deadline = time.monotonic() + 25
    while not _takeover_logged([d1, d2]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "already connected, closing old connection" in broker.log_text(), \
        "the premise failed: the broker never closed a session for a duplicate client id"
    assert _takeover_logged([d1, d2]), "neither daemon said its connection keeps being taken over"
    assert d1.running() and d2.running()


def test_unique_client_ids_coexist(krtiotd, platform, broker):
    """The control for the test above: with unique client ids, no takeover."""
    template = {"mqtt.client_id": "{product_id}-{device_id}"}
    d1 = krtiotd(device_id="D1", config=template)
    d2 = krtiotd(device_id="D2", config=template)
    platform.wait_for_report("D1", timeout=20)
    platform.wait_for_report("D2", timeout=20)
    time.sleep(8)
    assert "already connected" not in broker.log_text()
    assert not _takeover_logged([d1, d2])
    assert re.search(r" as P1-D1 ", broker.log_text()) and re.search(r" as P1-D2 ", broker.log_text())


def test_broker_granting_qos0_only_is_named_not_blamed_on_a_twin(krtiotd, platform, broker, notify_socket):
    """mosquitto with max_qos 0 grants QoS 0 and drops the connection at our
    first QoS 1 publish. That used to be reported as a take-over by another
    client with the same client id, with quick reconnects. The log and
    STATUS= name the real cause, and the retries back off to reconnect_max."""
    d = krtiotd(config={"mqtt.reconnect_max": 5}, start=False)  # provisioned while the broker takes QoS 1
    with open(broker.conf_path, "a") as f:
        f.write("max_qos 0\n")
    broker.restart()  # the platform cannot work with this broker either: it is not waited for
    d.start()
    d.wait_log(r"<4>The broker granted QoS 0 where QoS 1 was asked", timeout=15)
    d.wait_log(r"grants QoS 0 only, and this device needs QoS 1.*retrying in [1-5] s", timeout=15)
    assert "Too high QoS in PUBLISH" in broker.log_text(), "the premise failed: the broker did not drop us"
    notify_socket.wait_for(re.compile(r"^STATUS=Offline: .*grants QoS 0 only"), timeout=10)
    time.sleep(8)
    assert not re.search(r"taken over", d.log_text(), re.I), "blamed on another client with our client id"
    delays = [int(x) for x in re.findall(r"QoS 1 \(mosquitto: max_qos\) \(tcp://[^)]*\); retrying in (\d+) s",
                                         d.log_text())]
    assert delays and max(delays) <= 5, delays
    assert d.running()


# -- files that are not regular files ------------------------------------------------
#
# open() of a FIFO blocks until a writer comes: before READY=1, where SIGTERM
# is not watched yet, that was a daemon hung for good. Every file the daemon
# reads is opened without blocking and must be a regular file.

def assert_stops_quickly(d, timeout=5):
    """SIGTERM is obeyed within TIMEOUT seconds, exit status 0."""
    d.signal(signal.SIGTERM)
    try:
        rc = d.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("krtiotd did not stop within %ss of SIGTERM (hung?); log:\n%s"
                             % (timeout, d.log_tail())) from None
    assert rc == 0, d.log_tail()


def test_fifo_as_credentials_does_not_hang(krtiotd, platform, notify_socket):
    platform.enable_registration("P1", "product-secret-fifo", devices=["D1"])
    d = krtiotd(seed=False, start=False, product_secret="product-secret-fifo")
    os.mkfifo(d.credentials_path, 0o600)
    d.start()
    d.wait_log(r"Cannot read %s: not a regular file\. Registering with the product secret\."
               % re.escape(d.credentials_path), timeout=10)
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    # It goes on: it registers, and the secret replaces the FIFO (rename).
    platform.wait_registration_event("D1", "password-changed", timeout=30)
    platform.wait_for_report("D1", timeout=30)
    assert_stops_quickly(d)
    assert d.read_credentials()["device_secret"] == platform.issued_secret("D1")


def test_symlink_as_credentials_is_refused(krtiotd, platform, tmp_path):
    """A link planted in the state directory is not followed, even to a
    well-formed store: the daemon registers instead of logging in with it."""
    d = krtiotd(start=False)  # seeds, and provisions D1 with that secret
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(d.credentials_path, elsewhere)
    os.symlink(elsewhere, d.credentials_path)
    before = elsewhere.read_bytes()
    d.start()
    d.wait_log(r"Cannot read %s: a symbolic link \(not allowed here\), or a loop of them\. "
               r"Registering with the product secret\." % re.escape(d.credentials_path), timeout=10)
    assert d.running()
    assert_stops_quickly(d)
    assert elsewhere.read_bytes() == before


def test_fifo_as_fw_version_file_does_not_hang(krtiotd, platform, notify_socket):
    d = krtiotd(start=False)
    os.unlink(d.fw_version_path)
    os.mkfifo(d.fw_version_path, 0o600)
    d.start()
    notify_socket.wait_for("READY=1", timeout=10, pid=d.pid)
    m = platform.wait_for_report("D1", timeout=20)
    assert m.json["FW_VERSION"] == "unknown", m.json
    d.wait_log(r"Cannot read the firmware version from %s: not a regular file"
               % re.escape(d.fw_version_path), timeout=5)
    assert_stops_quickly(d)


def test_fifo_as_config_file_exits_78(krtiotd, notify_socket):
    d = krtiotd(start=False)
    os.unlink(d.conf_path)
    os.mkfifo(d.conf_path, 0o600)
    check = d.run("--check-config", timeout=10)
    assert check.returncode == EX_CONFIG, check.stdout + check.stderr
    assert "%s: cannot read: not a regular file" % d.conf_path in check.stderr, check.stderr
    d.start()
    try:
        rc = d.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("krtiotd hangs on a FIFO as its config file; log:\n" + d.log_tail()) from None
    assert rc == EX_CONFIG, d.log_tail()
    assert "%s: cannot read: not a regular file" % d.conf_path in d.log_text()
    assert notify_socket.count("READY=1") == 0


def test_config_file_may_be_a_symlink(krtiotd, tmp_path):
    """The positive control of the test above: integrators link the config
    file (and version and ID files) from elsewhere; links are followed."""
    d = krtiotd(start=False)
    real = tmp_path / "real.conf"
    os.replace(d.conf_path, real)
    os.symlink(real, d.conf_path)
    os.replace(d.fw_version_path, tmp_path / "fw_version.real")
    os.symlink(tmp_path / "fw_version.real", d.fw_version_path)
    r = d.run("--check-config")
    assert r.returncode == 0, r.stdout + r.stderr
