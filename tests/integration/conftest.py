# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the integration tests.

  broker          a real mosquitto with dynamic security on a free loopback
                  port, one per test (krtiot_broker.Broker)
  platform        the simulated platform, logged in to it as admin
                  (krtiot_platform.Platform); its plain-words log is
                  tmp_path/platform.log
  notify_socket   a NOTIFY_SOCKET stand-in (daemon.NotifySocket)
  krtiotd         factory: krtiotd(**kw) starts a krtiotd (daemon.Daemon)
                  wired to the three above, and its krtiot-install
                  (Daemon.installer); skips when they are not built
  krtiotd_binary  the binary's path; skips when it is not built
  system_bus      a private system-like dbus-daemon with krtiot's policy
                  (sysbus.SystemBus); pass it as krtiotd(bus=system_bus)

Everything started here is stopped by PID in teardown, even when the test
fails; then the daemons', their installers' and the broker's logs are
printed, so that a failure report shows what happened.
"""

import os
import pwd
import time

import pytest

import sysbus
from daemon import (AGENT_USER, Daemon, NotifySocket, broker_module, daemon_binary, daemon_missing,
                    platform_module)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def broker(request, tmp_path):
    reason = broker_module.missing_requirements()
    if reason:
        pytest.skip("no broker: " + reason)
    b = broker_module.Broker(tmp_path)
    yield b
    try:
        b.stop()
    finally:
        b.kill()
        if _failed(request):
            print("\n===== mosquitto log (tail) =====")
            print("\n".join(b.log_text().splitlines()[-80:]))


@pytest.fixture
def platform(request, broker, tmp_path):
    log = open(tmp_path / "platform.log", "a", buffering=1)

    def echo(line):
        log.write("%.3f %s\n" % (time.monotonic(), line))

    p = platform_module.Platform(broker.host, broker.port, broker.admin_user,
                                 broker.admin_password, echo=echo)
    yield p
    p.close()
    log.close()
    if _failed(request):
        print("\n===== platform log =====")
        print((tmp_path / "platform.log").read_text()[-6000:])


@pytest.fixture
def notify_socket(request):
    s = NotifySocket()
    yield s
    s.close()
    if _failed(request):
        print("\n===== notify socket =====")
        for t, pid, text in s.datagrams():
            print("%.3f pid=%s %r" % (t, pid, text))


@pytest.fixture
def system_bus(request, tmp_path):
    reason = sysbus.missing_requirements()
    if reason:
        pytest.skip("no D-Bus: " + reason)
    bus = sysbus.SystemBus(tmp_path, AGENT_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name)
    bus.start()
    yield bus
    bus.stop()
    if _failed(request):
        print("\n===== dbus-daemon log =====")
        print(bus.log_text()[-4000:])


@pytest.fixture
def krtiotd_binary():
    reason = daemon_missing()
    if reason:
        pytest.skip(reason)
    return daemon_binary()


@pytest.fixture
def krtiotd(request, tmp_path, krtiotd_binary, broker, platform, notify_socket):
    """krtiotd(**kw) -> a started Daemon; see daemon.Daemon for KW (config=
    {dotted key: value} overrides, device_id=, seed=, watchdog_usec=, ...)."""
    daemons = []

    def factory(**kw):
        kw.setdefault("platform", platform)
        kw.setdefault("notify", notify_socket)
        kw.setdefault("name", "d%d" % (len(daemons) + 1))
        start = kw.pop("start", True)
        d = Daemon(tmp_path, broker, start=False, **kw)
        daemons.append(d)
        if start:
            d.start()
        return d

    yield factory
    for d in daemons:
        d.cleanup()
    if _failed(request):
        for d in daemons:
            print("\n===== krtiotd %s (exit %s) log (tail) =====" % (d.name, d.returncode))
            print(d.log_tail(120))
            if d.installer.starts:
                print("\n===== krtiot-install %s (exit %s) log (tail) =====" % (d.name, d.installer.returncode))
                print(d.installer.log_tail(120))
