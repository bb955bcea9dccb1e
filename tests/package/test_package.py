# SPDX-License-Identifier: Apache-2.0
"""The Debian package: builds it once from a clean copy of the tree
(build_deb.py: dpkg-buildpackage -us -uc -b, which also runs the unit tests)
and checks what it ships, its maintainer scripts, lintian, and the unit
(systemd-analyze verify and security) as installed from the package.

The .deb stays in $KRTIOT_DEB_DIR (default /tmp/krtiot-deb), its path in
deb-path.txt there, for whoever wants to install it next.
"""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from build_deb import SOURCE_DIR, BuildError, build_deb

UNIT = "krtiot.service"
UNIT_DIR = "lib/systemd/system"     # Debian 12: where dh_installsystemd looks
# systemd-analyze security --offline: the agent runs as its own user with no capability (issue:
# <= 2.0); the installer keeps what an installer needs, as the one unit had before (4.9).
MAX_EXPOSURE = {UNIT: 2.0, "krtiot-install.service": 5.0}

# Every regular file of the package: mode, owner/group.
EXPECTED_FILES = {
    # 0640: postinst gives it to the group krtiot, which does not exist at build time.
    "etc/krtiot.conf": "-rw-r----- root/root",
    f"{UNIT_DIR}/{UNIT}": "-rw-r--r-- root/root",
    f"{UNIT_DIR}/krtiot-install.service": "-rw-r--r-- root/root",
    f"{UNIT_DIR}/krtiot-install.socket": "-rw-r--r-- root/root",
    "usr/lib/krtiot/hooks/copy": "-rwxr-xr-x root/root",
    "usr/lib/krtiot/hooks/rauc": "-rwxr-xr-x root/root",
    "usr/lib/krtiot/hooks/swupdate": "-rwxr-xr-x root/root",
    "usr/bin/krtiot-fetch": "-rwxr-xr-x root/root",
    "usr/bin/krtiotctl": "-rwxr-xr-x root/root",
    "usr/sbin/krtiotd": "-rwxr-xr-x root/root",
    "usr/sbin/krtiot-install": "-rwxr-xr-x root/root",
    "usr/lib/sysusers.d/krtiot.conf": "-rw-r--r-- root/root",
    "usr/share/doc/krtiot/README.Debian": "-rw-r--r-- root/root",
    "usr/share/lintian/overrides/krtiot": "-rw-r--r-- root/root",
    "usr/share/doc/krtiot/README.md.gz": "-rw-r--r-- root/root",
    "usr/share/doc/krtiot/changelog.gz": "-rw-r--r-- root/root",
    "usr/share/doc/krtiot/copyright": "-rw-r--r-- root/root",
    "usr/share/doc/krtiot/examples/krtiot.conf": "-rw-r--r-- root/root",
    "usr/share/bash-completion/completions/krtiotctl": "-rw-r--r-- root/root",
    "usr/share/man/man1/krtiot-fetch.1.gz": "-rw-r--r-- root/root",
    "usr/share/man/man1/krtiotctl.1.gz": "-rw-r--r-- root/root",
    "usr/share/man/man5/krtiot.conf.5.gz": "-rw-r--r-- root/root",
    "usr/share/man/man7/krtiot-hooks.7.gz": "-rw-r--r-- root/root",
    "usr/share/man/man7/krtiot-dbus.7.gz": "-rw-r--r-- root/root",
    "usr/share/dbus-1/system.d/com.krtyun.Krtiot1.conf": "-rw-r--r-- root/root",
    "usr/share/man/man8/krtiotd.8.gz": "-rw-r--r-- root/root",
    "usr/share/man/man8/krtiot-install.8.gz": "-rw-r--r-- root/root",
}

# Debhelper's generated files: the build must never leave them in the tree.
BUILD_LEFTOVERS = ["debian/krtiot", "debian/.debhelper", "debian/files",
                   "debian/debhelper-build-stamp", "debian/krtiot.substvars",
                   "debian/krtiot.debhelper.log"]


def _leftovers():
    found = {p for p in BUILD_LEFTOVERS if (SOURCE_DIR / p).exists()}
    return found | {p.name for p in SOURCE_DIR.glob("obj-*")}


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if not shutil.which("dpkg-buildpackage"):
        pytest.skip("dpkg-buildpackage not installed (apt-get install dpkg-dev debhelper)")
    before = _leftovers()
    try:
        path = build_deb()
    except BuildError as e:
        if str(e).startswith("missing build dependencies"):
            pytest.skip(str(e))
        pytest.fail(str(e))
    new = _leftovers() - before
    assert not new, f"the build wrote into the source tree: {sorted(new)}"
    print(f"\nbuilt {path}")
    return path


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """The package unpacked over a copy of the host's units (so that systemd
    finds sysinit.target & co.) plus the host's copies of the commands the
    unit runs that come from dependencies (/bin/kill: procps)."""
    r = tmp_path_factory.mktemp("root")
    units = r / UNIT_DIR
    units.mkdir(parents=True)
    host_dirs = {os.path.realpath(d) for d in ("/lib/systemd/system", "/usr/lib/systemd/system")}
    for host_dir in sorted(d for d in host_dirs if os.path.isdir(d)):
        shutil.copytree(host_dir, units, symlinks=True, dirs_exist_ok=True)
    (units / UNIT).unlink(missing_ok=True)      # a krtiot installed on the host is not ours
    assert run(["dpkg-deb", "-x", str(deb), str(r)]).returncode == 0
    for cmd in exec_paths(units / UNIT):
        inside = r / cmd.lstrip("/")
        if not os.path.lexists(inside) and os.path.exists(cmd):
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(cmd), inside)
    return r


def exec_paths(unit):
    paths = []
    for line in Path(unit).read_text().splitlines():
        m = re.match(r"Exec\w+=[-@:+!]*(\S+)", line)
        if m:
            paths.append(m.group(1))
    return paths


def unit_settings(path):
    """{key: [values]} of a unit file (no drop-ins, no continuation lines)."""
    settings = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            settings.setdefault(k.strip(), []).append(v.strip())
    return settings


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def test_file_list_owners_and_modes(deb):
    listing = run(["dpkg-deb", "-c", str(deb)], check=True).stdout
    files = {}
    for line in listing.splitlines():
        perms, owner, _size, _date, _time, name = line.split(None, 5)
        name = name.removeprefix("./")
        if perms.startswith("d"):
            assert perms == "drwxr-xr-x" and owner == "root/root", line
        else:
            files[name] = f"{perms} {owner}"
    assert files == EXPECTED_FILES


def test_control_fields(deb):
    assert deb_field(deb, "Package") == "krtiot"
    version = re.search(r"version\s*:\s*'([^']+)'", (SOURCE_DIR / "meson.build").read_text())
    assert deb_field(deb, "Version") == version.group(1), "debian/changelog and meson.build disagree"
    depends = deb_field(deb, "Depends")
    for lib in ("libc6", "libconfig9", "libcurl4", "libjson-c5", "libmosquitto1", "libssl3",
                "libsystemd0", "procps"):
        assert re.search(rf"(^|, ){re.escape(lib)}\b", depends), f"{lib} not in Depends: {depends}"
    assert deb_field(deb, "Suggests") == "rauc | swupdate"


def test_conffiles(deb, tmp_path):
    assert run(["dpkg-deb", "-e", str(deb), str(tmp_path / "ctl")]).returncode == 0
    assert (tmp_path / "ctl" / "conffiles").read_text().split() == ["/etc/krtiot.conf"]


def test_maintainer_scripts(deb, tmp_path):
    ctl = tmp_path / "ctl"
    assert run(["dpkg-deb", "-e", str(deb), str(ctl)]).returncode == 0
    postinst, prerm, postrm = ((ctl / s).read_text() for s in ("postinst", "prerm", "postrm"))
    # Install: enabled and started. Upgrade: restarted from the new postinst,
    # i.e. after the new files are unpacked (--restart-after-upgrade).
    assert f"deb-systemd-helper enable '{UNIT}'" in postinst
    assert "_dh_action=restart" in postinst and "_dh_action=start" in postinst
    assert f"deb-systemd-invoke $_dh_action '{UNIT}'" in postinst
    # The user exists, and may read its configuration, before the unit starts: 0.1.0 left the
    # file root 0600; an admin's dpkg-statoverride wins.
    users = postinst.index("systemd-sysusers")
    assert users < postinst.index("chown root:krtiot /etc/krtiot.conf") < postinst.index(
        "deb-systemd-invoke $_dh_action '%s'" % UNIT), postinst
    assert "dpkg-statoverride --list /etc/krtiot.conf" in postinst
    assert "chmod 0640 /etc/krtiot.conf" in postinst
    # The installer is enabled by its socket; an upgrade never stops or restarts it (an OTA of
    # this package runs inside it).
    assert "deb-systemd-helper enable 'krtiot-install.socket'" in postinst
    assert not re.search(r"deb-systemd-invoke (restart|try-restart|stop) .*krtiot-install", postinst), postinst
    for m in re.finditer(r"deb-systemd-invoke stop .*krtiot-install", prerm):
        assert re.search(r'"\$1" = remove \][^\n]*\n\s*$', prerm[:m.start()]), "stopped on upgrade too:\n" + prerm
    # Remove: stopped; an upgrade does not stop it first.
    assert re.search(r'"\$1" = remove \].*\n\s*deb-systemd-invoke stop', prerm)
    assert "upgrade" not in prerm
    # Purge: the state goes (dpkg removes the conffile itself).
    assert re.search(r'"\$1" = "purge" \]; then\n\s*rm -rf /var/lib/krtiot\n', postrm)
    assert f"deb-systemd-helper purge '{UNIT}'" in postrm


# Where the shipped config's defaults point: provided on a device by the
# package (the hook) and by the unit's StateDirectory= (the directory).
DEFAULT_HOOK = "/usr/lib/krtiot/hooks/swupdate"
DEFAULT_STATE_DIR = "/var/lib/krtiot"


def test_shipped_config_loads(root, tmp_path):
    """What a fresh install runs with: the shipped /etc/krtiot.conf loads
    (a config error would be exit 78, i.e. a unit that fails to start).

    It leaves state_dir and ota.hook at their defaults, and krtiotd checks
    that those exist. This host need not have them (the package is not
    installed here, systemd has not started the unit), so the file is
    checked twice: as shipped, where nothing but those two may be reported
    missing; and with the two pointed at what the package ships and at a
    directory like the one StateDirectory= makes, where nothing may be
    reported at all."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    env = dict(os.environ, KRTIOT_MACHINE_ID_FILE=str(machine_id))
    krtiotd = str(root / "usr/sbin/krtiotd")
    shipped = root / "etc/krtiot.conf"
    assert shipped.read_bytes() == (root / "usr/share/doc/krtiot/examples/krtiot.conf").read_bytes()

    # The defaults are what the package and the unit provide.
    assert os.access(root / DEFAULT_HOOK.lstrip("/"), os.X_OK), f"the package ships no {DEFAULT_HOOK}"
    assert unit_settings(root / UNIT_DIR / UNIT)["StateDirectory"] == [os.path.basename(DEFAULT_STATE_DIR)]

    r = run([krtiotd, "-c", str(shipped), "--check-config"], env=env)
    missing_here = []
    if not os.path.isdir(DEFAULT_STATE_DIR):
        missing_here.append(f"{shipped}: state_dir: {DEFAULT_STATE_DIR} (the default) does not exist "
                            "(krtiot.service's StateDirectory= creates it)")
    if not os.path.exists(DEFAULT_HOOK):
        missing_here.append(f"{shipped}: ota.hook: {DEFAULT_HOOK} (the default) does not exist")
    if missing_here:
        print("not on this host: " + "; ".join(missing_here))
        errors = [re.sub(r"^<\d>", "", line) for line in r.stderr.splitlines()]
        assert r.returncode == 78, r.stdout + r.stderr
        assert errors == missing_here + [f"{shipped}: configuration refused."], r.stderr
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "configuration OK" in r.stdout and f"OTA hook  {DEFAULT_HOOK}" in r.stdout, r.stdout

    # The same file with the two defaults pointed at the package's hook and a state directory.
    text = shipped.read_text()
    assert not re.search(r"^\s*(state_dir|ota)\s*=", text, re.M), \
        "the shipped file now sets state_dir or ota: this test appends them"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    pointed = tmp_path / "pointed.conf"
    pointed.write_text(text + f'\nstate_dir = "{state}";\nota = {{ hook = "{root / DEFAULT_HOOK.lstrip("/")}"; }};\n')
    r = run([krtiotd, "-c", str(pointed), "--check-config"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK" in r.stdout
    # And a bad one is exit 78, which the unit's RestartPreventExitStatus= names.
    bad = tmp_path / "bad.conf"
    bad.write_text((root / "etc/krtiot.conf").read_text() + "\nno_such_key = 1;\n")
    r = run([krtiotd, "-c", str(bad)], env=env, timeout=30)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "no_such_key" in r.stderr


def test_unit_settings(root):
    path = root / UNIT_DIR / UNIT
    assert path.read_text() == (SOURCE_DIR / "systemd" / UNIT).read_text()
    s = unit_settings(path)
    one = {k: v[-1] for k, v in s.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
        "RestartPreventExitStatus": "78", "ExecStart": "/usr/sbin/krtiotd",
        "ExecReload": "/bin/kill -HUP $MAINPID", "StateDirectory": "krtiot",
        "StateDirectoryMode": "0700", "After": "network-online.target krtiot-install.socket",
        "Wants": "network-online.target krtiot-install.socket", "WantedBy": "multi-user.target",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        # The agent faces the network: its own user, no capability, nothing it does not need.
        "User": "krtiot", "Group": "krtiot", "CapabilityBoundingSet": "", "UMask": "0077",
        "ProtectSystem": "strict", "SystemCallFilter": "~@privileged @resources",
    }
    for k, v in expected.items():
        assert one.get(k) == v, f"{k}={one.get(k)}, want {v}"
    for k in ("PrivateTmp", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
              "ProtectClock", "ProtectHostname", "RestrictRealtime", "RestrictSUIDSGID",
              "LockPersonality", "NoNewPrivileges", "PrivateDevices", "ProtectKernelTunables",
              "MemoryDenyWriteExecute", "ProtectHome", "PrivateUsers"):
        assert one.get(k) == "yes", f"{k}={one.get(k)}"
    assert one.get("WatchdogSec"), "no WatchdogSec="
    assert "man:krtiotd(8)" in one["Documentation"].split()
    # RestartPreventExitStatus= does not apply to ExecStartPre= (systemd #11868):
    # a failing --check-config there would restart forever.
    assert "ExecStartPre" not in s
    assert s["SystemCallFilter"][0] == "@system-service", s["SystemCallFilter"]

    # The installer's unit: the hook must be able to write what an installer writes.
    inst = unit_settings(root / UNIT_DIR / "krtiot-install.service")
    for k in ("ProtectSystem", "ProtectHome", "PrivateDevices", "ProtectKernelTunables",
              "ReadOnlyPaths", "DynamicUser", "User", "NoNewPrivileges"):
        assert k not in inst, f"krtiot-install.service: {k}= would stop the install hook"
    sock = {k: v[-1] for k, v in unit_settings(root / UNIT_DIR / "krtiot-install.socket").items()}
    assert (sock.get("ListenSequentialPacket"), sock.get("SocketUser"), sock.get("SocketGroup"),
            sock.get("SocketMode")) == ("/run/krtiot/install.sock", "root", "krtiot", "0660"), sock


def _systemd_analyze(root, *args):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    env = dict(os.environ, LC_ALL="C", SYSTEMD_COLORS="0",
               MANPATH=str(root / "usr/share/man"))
    return run(["systemd-analyze", *args, f"--root={root}"], env=env, timeout=60)


def test_systemd_analyze_verify(root):
    """verify against the installed package: the ExecStart= binary and the
    Documentation= man pages are the package's (--root, MANPATH)."""
    man = [] if shutil.which("man") else ["--man=no"]
    if man:
        print("man not installed: Documentation= not checked")
    r = _systemd_analyze(root, "verify", *man, UNIT)
    out = (r.stdout + r.stderr).strip()
    print(f"systemd-analyze verify: exit {r.returncode}, output: {out!r}")
    assert out == ""

    # The same harness does see mistakes (so the empty output above means something).
    broken = root / UNIT_DIR / "krtiot-broken.service"
    broken.write_text((root / UNIT_DIR / UNIT).read_text()
                      .replace("ExecStart=/usr/sbin/krtiotd", "ExecStart=/usr/sbin/krtiotd-missing")
                      .replace("WatchdogSec=", "WatchdogSecs="))
    try:
        r = _systemd_analyze(root, "verify", *man, broken.name)
    finally:
        broken.unlink()
    out = r.stdout + r.stderr
    assert "krtiotd-missing" in out and "WatchdogSecs" in out, out


@pytest.mark.parametrize("unit", sorted(MAX_EXPOSURE))
def test_systemd_analyze_security(root, unit):
    r = _systemd_analyze(root, "security", "--offline=yes", unit)
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=yes {unit}: exposure {score} (max {MAX_EXPOSURE[unit]})")
    assert score <= MAX_EXPOSURE[unit], r.stdout


def test_lintian(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed (apt-get install lintian)")
    changes = deb.with_suffix(".changes")
    assert changes.is_file(), changes
    r = run(["lintian", "--display-info", str(changes)], timeout=300)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[A-Z]: ", line)]
    print("lintian:\n" + "\n".join(tags or ["(nothing)"]))
    bad = [t for t in tags if t.startswith(("E: ", "W: "))]
    assert not bad, "\n".join(bad)
    # lintian exits 2 when it could not check the files at all.
    assert r.returncode in (0, 1), r.stdout + r.stderr
