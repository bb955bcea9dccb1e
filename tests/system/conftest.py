# SPDX-License-Identifier: Apache-2.0
"""The system test's fixture: the krtiot .deb installed in a booted Debian 12
container (systemd-nspawn), talking to a real mosquitto, the simulated
platform and an nginx on the host's loopback. See test_system.py.

Environment:
  KRTIOT_DEB              the .deb to test (default: build it from debian/)
  KRTIOT_SYSTEM_CACHE     cache directory (default tests/system/.cache)
  KRTIOT_SYSTEM_REQUIRE=1 what would be a skip (no root, no nspawn, nspawn
                          cannot boot here, no debian/) is a failure
  KRTIOT_SYSTEM_KEEP=1    keep the run directory (the container's root) after
                          the test
  KRTIOT_SYSTEM_NSPAWN_ARGS  extra systemd-nspawn arguments
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import daemon  # noqa: E402  (tests/integration: loads tests/platform as broker_module, platform_module)
import nginx  # noqa: E402
import nspawn  # noqa: E402
import system_deb  # noqa: E402
import system_root  # noqa: E402

# test_system.py checks against the same values.
PRODUCT_ID = "PSYS1"
HW_VERSION = "1.0.0"
FW_VERSION = "1.0.0"
WATCHDOG_SEC = 5
INSTALLER_IDLE_SEC = 3


from system_root import say, unavailable  # noqa: E402  (shared with test_upgrade.py)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class System:
    """Everything the tests look at: .container (nspawn.Container), .root,
    .platform, .broker, .nginx, the product and device IDs and secrets,
    .facts (what the fixture saw while setting up)."""

    def __init__(self):
        self.facts = {}
        self.container = None
        self.platform = None
        self.broker = None
        self.nginx = None
        self.timings = {}

    # -- inside the container ----------------------------------------------

    def rootpath(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def cursor(self):
        """The journal's current end: pass it as AFTER to journal_entries()."""
        r = self.container.journal("-n", "1", "-o", "json", check=True)
        lines = r.stdout.strip().splitlines()
        return json.loads(lines[-1])["__CURSOR"] if lines else None

    def journal_entries(self, *args, after=None, unit="krtiot.service"):
        """The journal entries (dicts) of UNIT (default the agent's), oldest first.

        The unit's entries are picked here, as `journalctl -u` would (its
        processes' lines, and PID 1's about it), not with -u: seen here, the
        last line a stopping krtiotd wrote was in the journal, with
        _SYSTEMD_UNIT=krtiot.service, but not in what -u returned."""
        extra = ["--after-cursor=" + after] if after else []
        r = self.container.journal("-o", "json", *extra, *args, check=True)
        entries = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        return [e for e in entries
                if e.get("_SYSTEMD_UNIT") == unit or e.get("OBJECT_SYSTEMD_UNIT") == unit
                or (e.get("UNIT") == unit and e.get("_PID") == "1")]

    def journal_text(self, *args, after=None, unit="krtiot.service"):
        return "\n".join(str(e.get("MESSAGE", "")) for e in self.journal_entries(*args, after=after, unit=unit))

    def wait_journal(self, needle, after=None, timeout=30, args=(), unit="krtiot.service"):
        deadline = time.monotonic() + timeout
        while True:
            text = self.journal_text(*args, after=after, unit=unit)
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError("no %r in the journal of %s within %ss; it has:\n%s"
                                     % (needle, unit, timeout, "\n".join(text.splitlines()[-40:])))
            time.sleep(0.3)

    def show(self, *props):
        return self.container.show("krtiot.service", *props)

    def wait_show(self, pred, props, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            s = self.show(*props)
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError("krtiot.service: no %s within %ss; last: %r" % (what, timeout, s))
            time.sleep(0.3)


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _hook_path(deb):
    """Where the .deb installs the copy hook (a path inside the root)."""
    listing = subprocess.run(["dpkg-deb", "--contents", deb], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
    for line in listing.splitlines():
        path = line.split()[-1].lstrip(".")
        if path.endswith("/hooks/copy"):
            return path
    raise AssertionError("the .deb ships no hooks/copy:\n" + listing)


# The hook the system test configures: the package's copy hook, behind a
# wrapper that can make an install last (the file test-hook-delay holds the
# seconds), so that a restart of the agent lands during one.
SLOW_HOOK = "/usr/local/lib/krtiot-test/copy"
SLOW_HOOK_TEXT = """#!/bin/sh
if [ "$1" = install ] && [ -s /etc/krtiot/test-hook-delay ]; then
    echo "test hook: holding the install for $(cat /etc/krtiot/test-hook-delay) s"
    sleep "$(cat /etc/krtiot/test-hook-delay)"
fi
exec %s "$@"
"""


def _configure(s, hook):
    """/etc/krtiot.conf and friends, written into the root before boot."""
    tree = {
        "log_level": "info",
        "mqtt": {"uri": "tcp://127.0.0.1:%d" % s.broker.port, "keepalive": 30, "reconnect_max": 5},
        "product": {"id": PRODUCT_ID, "secret": s.product_secret},
        "device": {"id_from": "file:/etc/krtiot/serial", "hw_version": HW_VERSION,
                   "fw_version_file": "/etc/krtiot/fw_version"},
        "report": {"interval": 3600},
        "registration": {"timeout": 10},
        "ota": {"hook": SLOW_HOOK, "reboot_command": ""},
    }
    text, _lines = daemon.render_config(tree)
    # As the package leaves it: root:krtiot 0640, the agent reads it as its group.
    _write(s.rootpath("/etc/krtiot.conf"), text, 0o640)
    os.chown(s.rootpath("/etc/krtiot.conf"), 0, system_root.group_id(s.root, "krtiot"))
    _write(s.rootpath(SLOW_HOOK), SLOW_HOOK_TEXT % hook, 0o755)
    _write(s.rootpath("/etc/krtiot/serial"), s.device_id + "\n")
    _write(s.rootpath("/etc/krtiot/fw_version"), FW_VERSION + "\n")
    _write(s.rootpath("/etc/krtiot/hooks/copy.conf"),
           "COPY_SLOT=/var/lib/krtiot/slot.img\nCOPY_VERSION_FILE=/etc/krtiot/fw_version\n")
    # A shorter watchdog than the unit's 60 s, so that the frozen-daemon
    # test takes seconds. Everything else is the packaged unit.
    _write(s.rootpath("/etc/systemd/system/krtiot.service.d/50-system-test.conf"),
           "[Service]\nWatchdogSec=%ds\n" % WATCHDOG_SEC)
    # The installer leaves after 3 s idle instead of 30, so that "inactive again" takes seconds.
    _write(s.rootpath("/etc/systemd/system/krtiot-install.service.d/50-system-test.conf"),
           "[Service]\nExecStart=\nExecStart=/usr/sbin/krtiot-install --idle-timeout %d\n" % INSTALLER_IDLE_SEC)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    reason = nspawn.missing_requirements() or daemon.broker_module.missing_requirements()
    if reason:
        unavailable(reason)
    if not os.path.exists(nginx.NGINX):
        unavailable("nginx is not installed (package nginx-light)")
    t0 = time.monotonic()
    try:
        deb, how = system_deb.get_deb(log=say)
    except system_deb.NoDeb as e:
        unavailable(str(e))
    s = System()
    s.deb = deb
    s.facts["deb"] = how
    s.timings["deb"] = time.monotonic() - t0
    say("package: %s (%s)" % (deb, how))

    run = tempfile.mkdtemp(prefix="krtiot-system-", dir=os.environ.get("KRTIOT_SYSTEM_RUN_DIR"))
    s.run_dir = run
    s.root = os.path.join(run, "root")
    s.work_log = os.path.join(run, "setup.log")
    tmp = tmp_path_factory.mktemp("system")
    try:
        t = time.monotonic()
        cache = system_root.RootCache(system_root.deb_depends(deb), log=say)
        try:
            cached = cache.ensure(s.work_log)
        except nspawn.Unavailable as e:
            unavailable(str(e))
        s.timings["root cache" + (" (built)" if cache.built else " (hit)")] = time.monotonic() - t
        t = time.monotonic()
        system_root.copy_root(cached, s.root)
        s.timings["root copy"] = time.monotonic() - t
        t = time.monotonic()
        try:
            nspawn.probe(s.root, s.work_log)
        except nspawn.Unavailable as e:
            unavailable(str(e))
        s.facts["apt_install_status"] = system_root.install_deb(s.root, deb, s.work_log)
        s.timings["apt install"] = time.monotonic() - t
        with open(s.work_log, errors="replace") as f:
            s.facts["setup_log"] = f.read()
        if s.facts["apt_install_status"] != 0:
            pytest.fail("apt-get install of %s in the container root failed (exit %d):\n%s"
                        % (deb, s.facts["apt_install_status"], "\n".join(s.facts["setup_log"].splitlines()[-40:])),
                        pytrace=False)
        # Whether the package enabled its unit, as systemd would see it at boot.
        enabled = subprocess.run(["systemctl", "--root=" + s.root, "is-enabled", "krtiot.service"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        s.facts["is_enabled"] = enabled.stdout.strip()
        if s.facts["is_enabled"] != "enabled":
            # test_package_enables_the_unit fails on this; the rest still runs.
            subprocess.run(["systemctl", "--root=" + s.root, "enable", "krtiot.service"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        s.broker = daemon.broker_module.Broker(tmp)
        s.platform_log = open(os.path.join(str(tmp), "platform.log"), "a", buffering=1)
        s.platform = daemon.platform_module.Platform(
            s.broker.host, s.broker.port, s.broker.admin_user, s.broker.admin_password,
            echo=lambda line: s.platform_log.write("%.3f %s\n" % (time.monotonic(), line)))
        s.product_secret = "ps-" + secrets.token_hex(12)
        s.device_id = "SYS" + secrets.token_hex(5).upper()
        s.platform.enable_registration(PRODUCT_ID, s.product_secret, devices=[s.device_id])
        s.image_dir = os.path.join(str(tmp), "images")
        os.makedirs(s.image_dir)
        s.nginx = nginx.Nginx(s.image_dir).start()

        s.hook = _hook_path(deb)
        _configure(s, s.hook)

        t = time.monotonic()
        s.container = nspawn.Container(s.root, os.path.join(run, "nspawn.log"))
        say("booting %s (systemd-nspawn -D %s -b --register=no%s)" % (
            s.container.name, s.root, "" if nspawn.host_runs_systemd() else " --keep-unit"))
        try:
            s.container.start()
            s.facts["system_state"] = s.container.wait_booted()
        except nspawn.Unavailable as e:
            unavailable(str(e))
        s.timings["boot"] = time.monotonic() - t
        yield s
    finally:
        problems = []
        if s.container is not None:
            problems += s.container.cleanup()
        if s.nginx is not None:
            s.nginx.cleanup()
        if s.platform is not None:
            s.platform.close()
            s.platform_log.close()
        if s.broker is not None:
            try:
                s.broker.stop()
            finally:
                s.broker.kill()
        mounts = nspawn.mounts_under(run)
        if mounts:
            problems.append("still mounted under %s: %s" % (run, mounts))
        elif os.environ.get("KRTIOT_SYSTEM_KEEP") != "1":
            shutil.rmtree(run, ignore_errors=True)
        else:
            say("kept %s" % run)
        s.timings["total"] = time.monotonic() - t0
        say("timings: " + ", ".join("%s %.1f s" % kv for kv in s.timings.items()))
        if problems:
            raise AssertionError("system test teardown: " + "; ".join(problems))


@pytest.fixture(autouse=True)
def _diagnostics(request):
    """On a failure, prints what the container, the platform and the broker saw."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or "system" not in request.fixturenames:
        return
    s = request.getfixturevalue("system")
    print("\n===== timings so far: %r" % s.timings)
    c = s.container
    if c is not None and c.nspawn.running():
        for args in (["-u", "krtiot.service", "-o", "short-monotonic", "-n", "80"],
                     ["-p", "warning", "-o", "short-monotonic", "-n", "40"]):
            r = c.journal(*args)
            print("\n===== journalctl %s =====\n%s%s" % (" ".join(args), r.stdout, r.stderr))
        r = c.systemctl("status", "krtiot.service")
        print("\n===== systemctl status krtiot =====\n" + r.stdout + r.stderr)
    if c is not None:
        print("\n===== systemd-nspawn output (tail) =====\n" + c.nspawn.log_tail(40))
    if s.platform is not None:
        with open(s.platform_log.name) as f:
            print("\n===== platform log =====\n" + f.read()[-5000:])
    if s.broker is not None:
        print("\n===== mosquitto log (tail) =====\n" + "\n".join(s.broker.log_text().splitlines()[-40:]))
