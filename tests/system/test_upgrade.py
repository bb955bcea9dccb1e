# SPDX-License-Identifier: Apache-2.0
"""The upgrade from 0.1.0, the release that ran krtiotd as root, in a booted
Debian 12 of its own (systemd-nspawn, as test_system.py).

0.1.0 is built from the git history (system_deb.get_release_deb), installed
with apt, configured as 0.1.0 wanted (/etc/krtiot.conf root 0600), booted:
it registers and stores its device secret (root's, 0600), and starts an OTA
whose download nginx serves slowly. While that download runs, the new .deb
is installed with dpkg -i in the running system, unattended (the admin's
configuration kept), as an operator or an OTA of the package itself would.
Then:

- the user krtiot exists, /etc/krtiot.conf is root:krtiot 0640, and krtiotd
  runs as krtiot;
- the device secret is kept: no new registration, the same secret, now the
  agent's file;
- the update in progress goes on: the download resumes with a Range request
  where 0.1.0 left it (not from byte 0), krtiot-install installs it, and the
  new version is reported.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time

import pytest

import daemon
import nginx
import nspawn
import system_deb
import system_root
from system_root import say, unavailable

UNIT = "krtiot.service"
PRODUCT_ID = "PUPG1"
HW_VERSION = "1.0.0"
FW_VERSION = "1.0.0"
IMAGE_SIZE = 6 * 1024 * 1024
RATE = "384k"  # the image takes ~16 s: the upgrade lands in the middle


class Upgrade:
    def __init__(self):
        self.container = self.broker = self.platform = self.nginx = None
        self.facts = {}

    def rootpath(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def journal_text(self, unit=UNIT):
        r = self.container.journal("-u", unit, "-o", "cat")
        return r.stdout

    def job(self):
        try:
            with open(self.rootpath("/var/lib/krtiot/ota-journal.json")) as f:
                return json.load(f).get("job") or {}
        except (OSError, ValueError):
            return {}


def _write(path, text, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _configure_0_1_0(u):
    """/etc/krtiot.conf as 0.1.0 had it: root-only, keys 0.1.0 knows."""
    tree = {
        "log_level": "info",
        "mqtt": {"uri": "tcp://127.0.0.1:%d" % u.broker.port, "keepalive": 30, "reconnect_max": 5},
        "product": {"id": PRODUCT_ID, "secret": u.product_secret},
        "device": {"id": u.device_id, "hw_version": HW_VERSION, "fw_version_file": "/etc/krtiot/fw_version"},
        "registration": {"timeout": 10},
        "ota": {"hook": "/usr/lib/krtiot/hooks/copy", "reboot_command": ""},
    }
    text, _lines = daemon.render_config(tree)
    _write(u.rootpath("/etc/krtiot.conf"), text, 0o600)
    _write(u.rootpath("/etc/krtiot/fw_version"), FW_VERSION + "\n", 0o644)
    _write(u.rootpath("/etc/krtiot/hooks/copy.conf"),
           "COPY_SLOT=/var/lib/krtiot/slot.img\nCOPY_VERSION_FILE=/etc/krtiot/fw_version\n", 0o644)


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory):
    reason = nspawn.missing_requirements() or daemon.broker_module.missing_requirements()
    if reason:
        unavailable(reason)
    if not os.path.exists(nginx.NGINX):
        unavailable("nginx is not installed (package nginx-light)")
    try:
        new_deb, how = system_deb.get_deb(log=say)
    except system_deb.NoDeb as e:
        unavailable(str(e))
    old_deb, old_how = system_deb.get_release_deb(system_deb.RELEASE_0_1_0, log=say)
    say("upgrade: from %s (%s) to %s (%s)" % (old_deb, old_how, new_deb, how))

    u = Upgrade()
    run = tempfile.mkdtemp(prefix="krtiot-upgrade-", dir=os.environ.get("KRTIOT_SYSTEM_RUN_DIR"))
    u.root = os.path.join(run, "root")
    log = os.path.join(run, "setup.log")
    tmp = tmp_path_factory.mktemp("upgrade")
    try:
        cache = system_root.RootCache(system_root.deb_depends(new_deb), log=say)
        try:
            cached = cache.ensure(log)
        except nspawn.Unavailable as e:
            unavailable(str(e))
        system_root.copy_root(cached, u.root)
        try:
            nspawn.probe(u.root, log)
        except nspawn.Unavailable as e:
            unavailable(str(e))
        status = system_root.install_deb(u.root, old_deb, log)
        assert status == 0, "apt-get install of 0.1.0 failed (exit %d); see %s" % (status, log)

        u.broker = daemon.broker_module.Broker(tmp)
        u.platform = daemon.platform_module.Platform(u.broker.host, u.broker.port, u.broker.admin_user,
                                                     u.broker.admin_password)
        u.product_secret = "ps-" + secrets.token_hex(12)
        u.device_id = "UPG" + secrets.token_hex(5).upper()
        u.platform.enable_registration(PRODUCT_ID, u.product_secret, devices=[u.device_id])
        u.image_dir = os.path.join(str(tmp), "images")
        os.makedirs(u.image_dir)
        u.image = os.urandom(IMAGE_SIZE)
        with open(os.path.join(u.image_dir, "fw-2.0.0.bin"), "wb") as f:
            f.write(u.image)
        u.nginx = nginx.Nginx(u.image_dir, limit_rate=RATE).start()
        _configure_0_1_0(u)
        # The new package, where dpkg inside the container can reach it.
        shutil.copy2(new_deb, u.rootpath("/var/tmp/krtiot-new.deb"))

        u.container = nspawn.Container(u.root, os.path.join(run, "nspawn.log"))
        u.container.start()
        u.facts["system_state"] = u.container.wait_booted()
        yield u
    finally:
        if u.container is not None:
            u.container.cleanup()
        if u.nginx is not None:
            u.nginx.cleanup()
        if u.platform is not None:
            u.platform.close()
        if u.broker is not None:
            try:
                u.broker.stop()
            finally:
                u.broker.kill()
        if not nspawn.mounts_under(run) and os.environ.get("KRTIOT_SYSTEM_KEEP") != "1":
            shutil.rmtree(run, ignore_errors=True)


def test_0_1_0_registers_and_starts_an_update(upgrade):
    """The starting point: 0.1.0, as root, registered (its secret root's,
    0600) and downloading an update."""
    u, p, d = upgrade, upgrade.platform, upgrade.device_id
    p.wait_registration_event(d, "password-changed", timeout=60)
    p.wait_for_report(d, fw_version=FW_VERSION, timeout=30)
    st = os.stat(u.rootpath("/var/lib/krtiot/credentials.json"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), st
    u.secret = p.issued_secret(d)
    u.cmd20 = len(p.messages(d, cmd=20, kind="register/post"))
    since = p.mark()
    u.cmd = p.send_ota(PRODUCT_ID, d, u.nginx.url("fw-2.0.0.bin"), "2.0.0", size=IMAGE_SIZE,
                       sha256=hashlib.sha256(u.image).hexdigest())
    assert p.wait_for_receipt(d, u.cmd, since=since).get("BACK") == "OK"
    u.since = since
    deadline = time.monotonic() + 30
    while not (u.job().get("phase") == "downloading" and u.job().get("offset", 0) > 0):
        assert time.monotonic() < deadline, "0.1.0 never checkpointed its download: %r" % u.job()
        time.sleep(0.2)
    u.offset_before = u.job()["offset"]
    assert u.offset_before < IMAGE_SIZE


def test_dpkg_upgrade_in_the_running_system(upgrade):
    """dpkg -i of the new package while 0.1.0 downloads: it configures, the
    agent is restarted as the user krtiot, and the conffile is root:krtiot
    0640 (0.1.0 left it root 0600)."""
    u, c = upgrade, upgrade.container
    # Unattended, as a fleet upgrades: the admin's /etc/krtiot.conf is kept (the shipped one changed).
    r = c.run("dpkg", "--force-confdef", "--force-confold", "-i", "/var/tmp/krtiot-new.deb", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert u.job().get("phase") in ("downloading", "verifying", "installing", "done"), u.job()
    st = os.stat(u.rootpath("/etc/krtiot.conf"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        0, system_root.group_id(u.root, "krtiot"), 0o640), st
    deadline = time.monotonic() + 30
    while c.systemctl("is-active", UNIT).stdout.strip() != "active":
        assert time.monotonic() < deadline, c.systemctl("status", UNIT).stdout
        time.sleep(0.3)
    pid = c.show(UNIT, "MainPID")["MainPID"]
    status = c.run("cat", "/proc/%s/status" % pid, check=True).stdout
    uid = system_root.user_id(u.root, "krtiot")
    assert re.search(r"^Uid:\s+%d\s" % uid, status, re.M), status


def test_the_secret_is_kept(upgrade):
    """No new registration: the same secret, now the agent's file, and the
    new agent logs in with it (its report comes on that session)."""
    u, p, d = upgrade, upgrade.platform, upgrade.device_id
    p.wait_for_report(d, since=u.since, timeout=60)
    with open(u.rootpath("/var/lib/krtiot/credentials.json")) as f:
        assert json.load(f)["device_secret"] == u.secret
    st = os.stat(u.rootpath("/var/lib/krtiot/credentials.json"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (system_root.user_id(u.root, "krtiot"), 0o600), st
    assert len(p.messages(d, cmd=20, kind="register/post")) == u.cmd20, "registered again after the upgrade"
    assert p.issued_secrets(d) == [u.secret]


def test_the_update_in_progress_goes_on(upgrade):
    """The download resumes where 0.1.0 checkpointed it (a 206, not the
    whole image again), krtiot-install installs it with the copy hook, and
    the new version is reported."""
    u, p, d = upgrade, upgrade.platform, upgrade.device_id
    p.wait_for_report(d, fw_version="2.0.0", since=u.since, timeout=120)
    with open(u.rootpath("/var/lib/krtiot/slot.img"), "rb") as f:
        assert f.read() == u.image
    log = u.nginx.access_log()
    assert any('" 206 ' in line for line in log), "no Range request after the upgrade: %r" % log
    installer = u.journal_text("krtiot-install.service")
    assert "copy hook: installed 2.0.0" in installer, installer
