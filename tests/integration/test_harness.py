# SPDX-License-Identifier: Apache-2.0
"""The harness itself: the broker, the simulated platform and the notify
socket do what the daemon's tests rely on. No krtiotd needed; mosquitto_pub,
mosquitto_sub and plain paho clients play the device."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from daemon import (PLATFORM_DIR, Daemon, NotifySocket, platform_module as P, render_config,
                    apply_overrides, restart_broker)

PUB_TIMEOUT = 20


def mosquitto_pub(broker, user, password, topic, payload, qos=1):
    return subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u", user, "-P", password,
         "-i", "pub-" + user, "-t", topic, "-m", payload, "-q", str(qos)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=PUB_TIMEOUT)


def test_broker_accepts_right_password_refuses_wrong(broker, platform):
    platform.provision_device("D1", "right-pw")

    ok = mosquitto_pub(broker, "D1", "right-pw", "/sys/P1/D1/thing/ota/post", "{}")
    assert ok.returncode == 0, ok.stdout
    bad = mosquitto_pub(broker, "D1", "wrong-pw", "/sys/P1/D1/thing/ota/post", "{}")
    assert bad.returncode != 0
    assert "not authori" in bad.stdout.lower()
    unknown = mosquitto_pub(broker, "nobody", "right-pw", "/sys/P1/D1/thing/ota/post", "{}")
    assert unknown.returncode != 0

    assert P.try_connect(broker.host, broker.port, "D1", "right-pw") == 0
    assert P.try_connect(broker.host, broker.port, "D1", "wrong-pw") != 0


def test_control_errors_are_raised(platform):
    platform.provision_device("D1", "pw")
    with pytest.raises(P.ControlError, match="already exists"):
        platform.provision_device("D1", "pw")
    with pytest.raises(P.ControlError):
        platform.set_password("no-such-device", "pw")
    assert platform.client_exists("D1")
    assert not platform.client_exists("no-such-device")


def test_set_password_kicks_connected_client(broker, platform):
    platform.provision_device("D1", "old-pw")
    dev = P.DeviceClient(broker.host, broker.port, "D1", "old-pw")
    try:
        assert dev.connect() == 0
        assert not dev.disconnected.wait(0.5)
        platform.set_password("D1", "new-pw")
        assert dev.disconnected.wait(10), "the broker did not close the session"
    finally:
        dev.close()
    assert P.try_connect(broker.host, broker.port, "D1", "old-pw") != 0
    assert P.try_connect(broker.host, broker.port, "D1", "new-pw") == 0


def test_disabled_client_is_refused(broker, platform):
    platform.provision_device("D1", "pw")
    platform.disable_client("D1")
    assert P.try_connect(broker.host, broker.port, "D1", "pw") != 0
    platform.enable_client("D1")
    assert P.try_connect(broker.host, broker.port, "D1", "pw") == 0
    platform.delete_client("D1")
    assert P.try_connect(broker.host, broker.port, "D1", "pw") != 0


def test_platform_records_device_messages(broker, platform):
    platform.provision_device("D1", "pw")
    report = {"CMD": 10, "ID": "7QK2M9X1ZC0B", "HW_VERSION": "1.0.0", "FW_VERSION": "2.0.0"}
    r = mosquitto_pub(broker, "D1", "pw", "/sys/P1/D1/thing/ota/post", json.dumps(report))
    assert r.returncode == 0, r.stdout
    m = platform.wait_for_report("D1", fw_version="2.0.0", timeout=10)
    assert (m.product_id, m.device_id, m.kind) == ("P1", "D1", "ota/post")
    assert m.json == report
    assert m.cmd == 10
    assert m.qos == 1

    receipt = {"CMD": 11, "ID": "2836S8F46SDR", "BACK": "OK"}
    mosquitto_pub(broker, "D1", "pw", "/sys/P1/D1/thing/ota/post", json.dumps(receipt))
    assert platform.wait_for_receipt("D1", "2836S8F46SDR", timeout=10).json == receipt

    mosquitto_pub(broker, "D1", "pw", "/sys/P1/D1/thing/ota/post", "not json")
    m = platform.wait_for(lambda m: m.payload == b"not json", timeout=10)
    assert m.json is None and m.cmd is None

    assert [x.cmd for x in platform.messages("D1")] == [10, 11, None]
    assert [x.cmd for x in platform.messages("D1", cmd=11)] == [11]
    assert platform.messages("D2") == []


def test_wait_for_times_out_with_what_it_saw(platform):
    with pytest.raises(AssertionError, match="version report from D9"):
        platform.wait_for_report("D9", timeout=0.5)


def test_platform_command_reaches_device(broker, platform):
    platform.provision_device("D1", "pw")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", "D1", "-P", "pw",
         "-i", "sub-D1", "-t", "/sys/P1/D1/thing/ota/set", "-q", "1", "-C", "2", "-W", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert broker.wait_log("sub-D1 1 /sys/P1/D1/thing/ota/set", timeout=10), \
            "mosquitto_sub did not subscribe"
        cmd_id = platform.send_ota("P1", "D1", "http://127.0.0.1:1/fw/2.0.1.swu", "2.0.1",
                                   size=1234, sha256="ab" * 32)
        platform.send_ota("P1", "D1", None, None, raw_payload=b'{"CMD":"11",}')
        out, _ = sub.communicate(timeout=25)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert json.loads(lines[0]) == {"CMD": 11, "ID": cmd_id, "URL": "http://127.0.0.1:1/fw/2.0.1.swu",
                                    "FW_VERSION": "2.0.1", "SIZE": 1234, "SHA256": "ab" * 32}
    assert re.fullmatch(r"[0-9A-Z]{12}", cmd_id)
    assert lines[1] == '{"CMD":"11",}'


def _register_as_device(broker, product_secret, device_id="D1"):
    """A paho client doing the device's half of SPEC 4; returns (client, CMD 21 message)."""
    dev = P.DeviceClient(broker.host, broker.port, device_id, product_secret, client_id="P1")
    assert dev.connect() == 0
    dev.subscribe("/sys/P1/%s/thing/register/set" % device_id)
    dev.publish("/sys/P1/%s/thing/register/post" % device_id,
                {"CMD": 20, "ID": "A1B2C3D4E5F6", "PRODUCT_ID": "P1", "DEVICE_ID": device_id})
    return dev


def test_registration_service_issues_secret(broker, platform):
    platform.enable_registration("P1", "product-secret", devices=["D1"])
    dev = _register_as_device(broker, "product-secret")
    try:
        _t, payload = dev.wait_message(lambda t, p: t == "/sys/P1/D1/thing/register/set", timeout=10)
        answer = json.loads(payload)
        assert answer["CMD"] == 21 and answer["ID"] == "A1B2C3D4E5F6"
        secret = answer["DEVICE_SECRET"]
        assert secret and secret == platform.issued_secret("D1")
        # No receipt yet: the password must not change before it.
        time.sleep(0.5)
        assert not dev.disconnected.is_set()
        assert P.try_connect(broker.host, broker.port, "D1", "product-secret") == 0

        dev.publish("/sys/P1/D1/thing/register/post", {"CMD": 21, "ID": "A1B2C3D4E5F6", "BACK": "OK"})
        platform.wait_registration_event("D1", "password-changed", timeout=10)
        assert dev.disconnected.wait(10), "the broker did not close the registration session"
    finally:
        dev.close()
    assert P.try_connect(broker.host, broker.port, "D1", secret) == 0
    assert P.try_connect(broker.host, broker.port, "D1", "product-secret") != 0
    assert [e[1] for e in platform.registration_events("D1")] == [
        "request", "answered", "acknowledged", "password-changed"]


def test_registration_ignores_other_products(broker, platform):
    platform.enable_registration("P1", "product-secret", devices=["D1"])
    platform.provision_device("X1", "other")
    dev = P.DeviceClient(broker.host, broker.port, "X1", "other")
    try:
        assert dev.connect() == 0
        dev.subscribe("/sys/P9/X1/thing/register/set")
        dev.publish("/sys/P9/X1/thing/register/post", {"CMD": 20, "ID": "A", "PRODUCT_ID": "P9"})
        platform.wait_for(lambda m: m.device_id == "X1", timeout=10)
        time.sleep(1)
        assert dev.received == []
        assert platform.registration_events("X1") == []
    finally:
        dev.close()


@pytest.mark.parametrize("mode", [P.REG_SILENT, P.REG_KEEP_PASSWORD, P.REG_TWICE])
def test_registration_modes(broker, platform, mode):
    platform.enable_registration("P1", "product-secret", devices=["D1"], mode=mode)
    dev = _register_as_device(broker, "product-secret")
    try:
        if mode == P.REG_SILENT:
            platform.wait_registration_event("D1", "request", timeout=10)
            time.sleep(2)
            assert dev.received == []
            assert platform.issued_secret("D1") is None
            return
        dev.wait_message(lambda t, p: t.endswith("/register/set"), timeout=10)
        if mode == P.REG_TWICE:
            dev.wait_message(lambda t, p: len(dev.received) >= 2, timeout=10)
            assert dev.received[0] == dev.received[1]
        dev.publish("/sys/P1/D1/thing/register/post", {"CMD": 21, "ID": "A1B2C3D4E5F6", "BACK": "OK"})
        platform.wait_registration_event("D1", "acknowledged", timeout=10)
        secret = platform.issued_secret("D1")
        if mode == P.REG_KEEP_PASSWORD:
            time.sleep(1)
            assert not dev.disconnected.is_set()
            assert P.try_connect(broker.host, broker.port, "D1", "product-secret") == 0
            assert P.try_connect(broker.host, broker.port, "D1", secret) != 0
        else:
            platform.wait_registration_event("D1", "password-changed", timeout=10)
            assert P.try_connect(broker.host, broker.port, "D1", secret) == 0
    finally:
        dev.close()


def test_broker_restart_keeps_clients(broker, platform):
    platform.provision_device("D1", "pw")
    pid = broker.pid
    restart_broker(broker, platform)
    assert broker.pid != pid and broker.running()
    assert P.try_connect(broker.host, broker.port, "D1", "pw") == 0
    assert P.try_connect(broker.host, broker.port, "D1", "wrong") != 0
    # The platform is subscribed again and records.
    r = mosquitto_pub(broker, "D1", "pw", "/sys/P1/D1/thing/ota/post",
                      '{"CMD":10,"ID":"X","HW_VERSION":"1","FW_VERSION":"3"}')
    assert r.returncode == 0, r.stdout
    platform.wait_for_report("D1", fw_version="3", timeout=10)
    # And a hard kill too.
    restart_broker(broker, platform, hard=True)
    assert P.try_connect(broker.host, broker.port, "D1", "pw") == 0


def test_notify_socket_collects_datagrams():
    ns = NotifySocket()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1\nSTATUS=Connected", ns.path)
            s.sendto(b"WATCHDOG=1", ns.path)
        i, line = ns.wait_for("READY=1", timeout=5)
        assert (i, line) == (0, "READY=1")
        ns.wait_for("WATCHDOG=1", timeout=5, since=1)
        assert ns.statuses() == ["Connected"]
        assert ns.all() == ["READY=1\nSTATUS=Connected", "WATCHDOG=1"]
        assert {pid for _t, pid, _ in ns.datagrams()} == {os.getpid()}
        with pytest.raises(AssertionError):
            ns.wait_for("STOPPING=1", timeout=0.3)
    finally:
        ns.close()


def test_config_rendering(tmp_path):
    class FakeBroker:
        port = 1883
    d = Daemon(tmp_path, FakeBroker(), start=False, seed=True, device_secret="s",
               config={"report.interval": 2, "device.fw_version_file": None,
                       "device.fw_version": 'a"b'})
    text = d.config_text()
    assert 'uri = "tcp://127.0.0.1:1883";' in text
    assert "interval = 2;" in text and "fw_version_file" not in text
    assert 'fw_version = "a\\"b";' in text
    assert text.splitlines()[d.config_lines["report.interval"] - 1] == "  interval = 2;"
    assert oct(os.stat(d.credentials_path).st_mode & 0o777) == "0o600"
    assert d.read_credentials() == {"product_id": "P1", "device_id": "D1", "device_secret": "s"}
    text, _ = render_config(apply_overrides({"a": {"b": 1}}, {"a.c": True, "d": "x"}))
    assert text == "a = {\n  b = 1;\n  c = true;\n};\nd = \"x\";\n"


def test_platform_script_prints_plain_words(broker, platform, tmp_path):
    """The demo: platform.py as a script provisions, prints reports in plain
    words, registers a device, and stops on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(PLATFORM_DIR, "platform.py"), "--port", str(broker.port),
         "--admin-user", broker.admin_user, "--admin-password", broker.admin_password,
         "--product-id", "P1", "--product-secret", "ps", "--devices", "D1,D2",
         "--ota", "http://127.0.0.1:9/fw/2.0.1.swu", "2.0.1", "--ota-device", "D2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while P.try_connect(broker.host, broker.port, "D2", "ps") != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "D2 never provisioned"
            time.sleep(0.2)
        d2 = P.DeviceClient(broker.host, broker.port, "D2", "ps")
        try:
            assert d2.connect() == 0
            d2.subscribe("/sys/P1/D2/thing/ota/set")
            d2.publish("/sys/P1/D2/thing/ota/post",
                       {"CMD": 10, "ID": "X", "HW_VERSION": "1.0.0", "FW_VERSION": "2.0.0"})
            _t, cmd = d2.wait_message(lambda t, p: t.endswith("/ota/set"), timeout=10)
        finally:
            d2.close()
        cmd = json.loads(cmd)
        assert (cmd["CMD"], cmd["URL"], cmd["FW_VERSION"]) == (11, "http://127.0.0.1:9/fw/2.0.1.swu", "2.0.1")
        dev = _register_as_device(broker, "ps", "D1")
        try:
            _t, payload = dev.wait_message(lambda t, p: t.endswith("/register/set"), timeout=10)
            dev.publish("/sys/P1/D1/thing/register/post",
                        {"CMD": 21, "ID": "A1B2C3D4E5F6", "BACK": "OK"})
            assert dev.disconnected.wait(10)
        finally:
            dev.close()
        secret = json.loads(payload)["DEVICE_SECRET"]
        assert P.try_connect(broker.host, broker.port, "D1", secret) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "<- D2 version report: hw 1.0.0, fw 2.0.0" in out
    assert "-> D2 upgrade command %s: 2.0.1 from http://127.0.0.1:9/fw/2.0.1.swu" % cmd["ID"] in out
    assert "<- D1 asks to be registered" in out
    assert "<- D1 acknowledged its device secret" in out
    assert secret not in out
    assert "== platform stopped" in out
