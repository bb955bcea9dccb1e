"""The shipped install hooks (src/hooks/) against the real installers.

Each hook is run as krtiotd runs it: directly (argv list, no shell), with the
job's KRTIOT_* variables and its config file named by KRTIOT_HOOK_CONFIG.
Keys, images, .swu files and RAUC bundles are made at test time in temp dirs;
RAUC runs as `rauc service` on a private dbus-daemon, with file-backed slots
and a file-backed "bootloader" (hooks_data/rauc-bootloader-backend). Nothing
touches the real system: no real bus, no real slot, no file outside tmp.

A failing install must leave the installer's own reason as the hook's last
line on stderr: krtiotd sends that line to the platform as the REASON (the
last tests run the hooks under the real krtiotd to check it arrives).

A check that cannot run here is skipped with the reason, never passed.
Run: /usr/bin/python3 -m pytest tests/integration/test_hooks.py
KRTIOT_HOOKS_DIR points the tests at installed hooks instead of src/hooks.
"""

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = Path(os.environ.get("KRTIOT_HOOKS_DIR", ROOT / "src" / "hooks"))
DATA = Path(__file__).resolve().parent / "hooks_data"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALLED, REBOOT = 0, 10


def write_config(path, values):
    """A hook config: KEY='value' lines, as an admin would write them."""
    path.write_text("".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items()))
    return path


def last_stderr_line(r):
    """The hook's last non-blank line on stderr: what krtiotd sends as the REASON."""
    lines = [line.strip() for line in r.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_hook(name, args, tmp, config=None, target="2.0", env=None):
    """Run HOOK args like krtiotd does; returns the CompletedProcess."""
    state, tmpdir = tmp / "state", tmp / "tmpdir"
    state.mkdir(exist_ok=True)
    tmpdir.mkdir(exist_ok=True)  # swupdate deletes files there named like its images
    full_env = {
        "PATH": PATH,
        "TMPDIR": str(tmpdir),
        "KRTIOT_JOB_ID": "job-42",
        "KRTIOT_TARGET_VERSION": target,
        "KRTIOT_IMAGE": args[1] if len(args) > 1 else "",
        "KRTIOT_URL": "http://127.0.0.1:9/fw.img?$(touch /tmp/krtiot-pwned)",
        "KRTIOT_STATE_DIR": str(state),
        "KRTIOT_HOOK_CONFIG": str(write_config(tmp / f"{name}.conf", config or {})),
    }
    full_env.update(env or {})
    return subprocess.run([str(HOOKS / name), *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=300)


PACKAGES = {"mksquashfs": "squashfs-tools", "dbus-daemon": "dbus", "sha256sum": "coreutils"}


def need(*tools):
    for tool in tools:
        if shutil.which(tool, path=PATH) is None:
            pytest.skip(f"{tool} is not installed (apt-get install -y {PACKAGES.get(tool, tool)})")


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


def self_signed(dir_, name):
    """A self-signed certificate (its own CA) and its key."""
    key, cert = dir_ / f"{name}.key.pem", dir_ / f"{name}.cert.pem"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-subj", f"/CN=krtiot test {name}", "-keyout", str(key), "-out", str(cert))
    return key, cert


# ---------------------------------------------------------------- copy ----

@pytest.fixture
def copy_setup(tmp_path):
    d = tmp_path / "dev"
    d.mkdir()
    image = tmp_path / "fw.img"
    image.write_bytes(os.urandom(200_000))
    conf = {"COPY_SLOT": d / "slot.img", "COPY_VERSION_FILE": d / "fw_version"}
    (d / "slot.img").write_bytes(b"old slot")
    (d / "fw_version").write_text("1.0\n")
    return tmp_path, d, image, conf


def test_copy_install_writes_slot_and_version_and_exits_0(copy_setup):
    tmp, d, image, conf = copy_setup
    r = run_hook("copy", ["install", image], tmp, conf, target="2.0")
    assert r.returncode == INSTALLED, r.stderr
    assert (d / "slot.img").read_bytes() == image.read_bytes()
    assert (d / "fw_version").read_text() == "2.0\n"
    assert sorted(p.name for p in d.iterdir()) == ["fw_version", "slot.img"]
    r = run_hook("copy", ["version"], tmp, conf)
    assert (r.returncode, r.stdout) == (0, "2.0\n")
    assert run_hook("copy", ["commit"], tmp, conf).returncode == 0


def test_copy_reboot_exits_10_and_version_changes_only_on_activate(copy_setup):
    tmp, d, image, conf = copy_setup
    conf["COPY_REBOOT"] = 1
    r = run_hook("copy", ["install", image], tmp, conf, target="2.0")
    assert r.returncode == REBOOT, r.stderr
    assert (d / "slot.img").read_bytes() == image.read_bytes()
    assert (d / "fw_version.pending").read_text() == "2.0\n"
    assert run_hook("copy", ["version"], tmp, conf).stdout == "1.0\n"
    # the simulated reboot
    assert run_hook("copy", ["activate"], tmp, conf).returncode == 0
    assert run_hook("copy", ["version"], tmp, conf).stdout == "2.0\n"
    assert not (d / "fw_version.pending").exists()
    assert run_hook("copy", ["commit"], tmp, conf).returncode == 0
    # a second activate (a reboot without an update) changes nothing
    assert run_hook("copy", ["activate"], tmp, conf).returncode == 0
    assert run_hook("copy", ["version"], tmp, conf).stdout == "2.0\n"


@pytest.mark.parametrize("bad", ["1.0; rm -rf /", "../x", "", "a" * 65, "1.0\n2.0",
                                 "$(touch /tmp/krtiot-pwned)", "1.0 ", "é"])
@pytest.mark.parametrize("reboot", [0, 1])
def test_copy_bad_target_version_fails_and_writes_nothing(copy_setup, bad, reboot):
    tmp, d, image, conf = copy_setup
    conf["COPY_REBOOT"] = reboot
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = run_hook("copy", ["install", image], tmp, conf, target=bad)
    assert r.returncode not in (INSTALLED, REBOOT)
    assert "invalid KRTIOT_TARGET_VERSION" in r.stderr
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert not Path("/tmp/krtiot-pwned").exists()


def test_copy_longest_valid_version_is_accepted(copy_setup):
    tmp, d, image, conf = copy_setup
    version = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx._+~-"[:64]
    r = run_hook("copy", ["install", image], tmp, conf, target=version)
    assert r.returncode == INSTALLED, r.stderr
    assert run_hook("copy", ["version"], tmp, conf).stdout == version + "\n"


def test_copy_missing_image_fails_and_writes_nothing(copy_setup):
    tmp, d, image, conf = copy_setup
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = run_hook("copy", ["install", tmp / "nonexistent.img"], tmp, conf)
    assert r.returncode not in (INSTALLED, REBOOT)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_copy_version_without_a_version_fails(copy_setup):
    tmp, d, image, conf = copy_setup
    for content in ("\n", ""):
        (d / "fw_version").write_text(content)
        r = run_hook("copy", ["version"], tmp, conf)
        assert r.returncode != 0 and r.stdout == "", repr(content)
    (d / "fw_version").unlink()
    r = run_hook("copy", ["version"], tmp, conf)
    assert r.returncode != 0 and r.stdout == ""


def test_hook_with_unreadable_config_fails(copy_setup):
    tmp, d, image, conf = copy_setup
    for name in ("copy", "swupdate", "rauc"):
        r = run_hook(name, ["version"], tmp, env={"KRTIOT_HOOK_CONFIG": str(tmp / "none.conf")})
        assert r.returncode != 0 and "cannot read config" in r.stderr, name


# ------------------------------------------------------------ swupdate ----

def swupdate_build(tmp):
    """How this swupdate verifies images: 'cms', 'rsa' or None (unsigned)."""
    r = subprocess.run(["swupdate", "-i", str(tmp / "none.swu")], env={"PATH": PATH, "TMPDIR": str(tmp)},
                       capture_output=True, text=True, timeout=60)
    if "built for signed images" not in r.stdout + r.stderr:
        return None
    help_ = subprocess.run(["swupdate", "-h"], capture_output=True, text=True).stdout
    return "cms" if "--forced-signer-name" in help_ else "rsa"


class Swu:
    """Signing material and .swu builder for one test."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.signing = swupdate_build(tmp)
        self.key, self.cert = self_signed(tmp, "swu")
        self.other_key, self.other_cert = self_signed(tmp, "other")
        self.public = self.cert
        if self.signing == "rsa":
            self.public = tmp / "swu.pub.pem"
            sh("openssl", "rsa", "-in", str(self.key), "-pubout", "-out", str(self.public))
        self.image = tmp / "rootfs.img"
        self.image.write_bytes(os.urandom(300_000))
        self.target = tmp / "target.img"
        self.target.write_bytes(b"\0" * 4096)
        self.untouched = self.target.read_bytes()
        self.n = 0

    def entry(self, target=None):
        sha = sh("sha256sum", str(self.image)).stdout.split()[0].decode()
        return (f'{{ filename = "rootfs.img"; path = "{target or self.target}"; '
                f'type = "rawfile"; sha256 = "{sha}"; }}')

    def description(self, body=None):
        return ('software = {\n  version = "2.0";\n  hardware-compatibility = [ "1.0" ];\n'
                + (body or f"  files: ( {self.entry()} );\n") + "};\n")

    def build(self, description=None, signer="good"):
        """sw-description (signed by 'good', 'other' or None), image; cpio crc."""
        self.n += 1
        d = self.tmp / f"swu{self.n}"
        d.mkdir()
        (d / "sw-description").write_text(description or self.description())
        shutil.copy(self.image, d / "rootfs.img")
        names = ["sw-description"]
        key, cert = (self.key, self.cert) if signer == "good" else (self.other_key, self.other_cert)
        if signer and self.signing == "cms":
            sh("openssl", "cms", "-sign", "-in", "sw-description", "-out", "sw-description.sig",
               "-signer", str(cert), "-inkey", str(key), "-outform", "DER", "-nosmimecap",
               "-binary", cwd=d)
            names.append("sw-description.sig")
        elif signer and self.signing == "rsa":
            sh("openssl", "dgst", "-sha256", "-sign", str(key), "-out", "sw-description.sig",
               "sw-description", cwd=d)
            names.append("sw-description.sig")
        names.append("rootfs.img")
        out = self.tmp / f"update{self.n}.swu"
        with open(out, "wb") as f:
            subprocess.run(["cpio", "-o", "-H", "crc"], input="\n".join(names).encode() + b"\n",
                           stdout=f, stderr=subprocess.DEVNULL, cwd=d, check=True)
        return out

    def config(self, **kw):
        conf = {"SWUPDATE_HW_COMPAT": "board:1.0"}
        if self.signing:
            conf["SWUPDATE_PUBLIC_KEY"] = self.public
        conf.update(kw)
        return {k: v for k, v in conf.items() if v is not None}


def processes_mentioning(text):
    """PIDs of processes whose command line mentions TEXT."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.fixture
def swu(tmp_path):
    need("swupdate", "openssl", "cpio", "sha256sum")
    yield Swu(tmp_path)
    # SWUpdate 2022.12 can leave a child behind, blocked for ever: the hook
    # must kill it. Should it not, kill it here (it is ours), then fail.
    left = processes_mentioning(str(tmp_path))
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not left, f"swupdate processes left running: {left}"


def need_signing(swu):
    if not swu.signing:
        pytest.skip("this swupdate is built without signed-image support (CONFIG_SIGNED_IMAGES)")


@pytest.mark.parametrize("reboot,expected", [(None, REBOOT), (1, REBOOT), (0, INSTALLED)])
def test_swupdate_installs_signed_image_exact_bytes(swu, reboot, expected):
    r = run_hook("swupdate", ["install", swu.build()], swu.tmp, swu.config(SWUPDATE_REBOOT=reboot))
    assert r.returncode == expected, r.stdout + r.stderr
    assert swu.target.read_bytes() == swu.image.read_bytes()


def test_swupdate_repeated_installs_give_the_same_answer(swu):
    """SWUpdate's own exit status varies between identical successful runs."""
    swu_file = swu.build()
    for _ in range(8):
        swu.target.write_bytes(swu.untouched)
        r = run_hook("swupdate", ["install", swu_file], swu.tmp, swu.config())
        assert r.returncode == REBOOT, r.stdout + r.stderr
        assert swu.target.read_bytes() == swu.image.read_bytes()


def test_swupdate_refuses_image_signed_with_another_key(swu):
    need_signing(swu)
    r = run_hook("swupdate", ["install", swu.build(signer="other")], swu.tmp, swu.config())
    assert r.returncode not in (INSTALLED, REBOOT)
    assert swu.target.read_bytes() == swu.untouched
    # SWUpdate's first error, not its generic last ones ("SWUpdate *failed* !")
    assert last_stderr_line(r) == "swupdate hook: swupdate failed: Authentication of all signatures failed", \
        r.stdout + r.stderr


def test_swupdate_refuses_unsigned_image(swu):
    need_signing(swu)
    r = run_hook("swupdate", ["install", swu.build(signer=None)], swu.tmp, swu.config())
    assert r.returncode not in (INSTALLED, REBOOT)
    assert swu.target.read_bytes() == swu.untouched


def test_swupdate_without_public_key_refuses_on_signing_build(swu):
    need_signing(swu)
    conf = swu.config(SWUPDATE_PUBLIC_KEY=None)
    r = run_hook("swupdate", ["install", swu.build()], swu.tmp, conf)
    assert r.returncode not in (INSTALLED, REBOOT)
    assert swu.target.read_bytes() == swu.untouched


@pytest.mark.parametrize("conf,ok", [
    ({"SWUPDATE_HW_COMPAT": "board:2.0"}, False),
    ({"SWUPDATE_HW_COMPAT": None, "SWUPDATE_HWREVISION_FILE": "board 9.9\n"}, False),
    ({"SWUPDATE_HW_COMPAT": None, "SWUPDATE_HWREVISION_FILE": "board 1.0\n"}, True),
])
def test_swupdate_hardware_compatibility(swu, conf, ok):
    if "SWUPDATE_HWREVISION_FILE" in conf:
        (swu.tmp / "hwrevision").write_text(conf["SWUPDATE_HWREVISION_FILE"])
        conf = dict(conf, SWUPDATE_HWREVISION_FILE=swu.tmp / "hwrevision")
    r = run_hook("swupdate", ["install", swu.build()], swu.tmp, swu.config(**conf))
    if ok:
        assert r.returncode == REBOOT, r.stdout + r.stderr
        assert swu.target.read_bytes() == swu.image.read_bytes()
    else:
        assert r.returncode not in (INSTALLED, REBOOT)
        assert last_stderr_line(r) == "swupdate hook: swupdate failed: SW not compatible with hardware", \
            r.stdout + r.stderr
        assert swu.target.read_bytes() == swu.untouched


def test_swupdate_select_installs_the_chosen_set(swu):
    other = swu.tmp / "target-alt.img"
    other.write_bytes(swu.untouched)
    body = ("  stable = {\n"
            f"    main = {{ files: ( {swu.entry(swu.target)} ); }};\n"
            f"    alt = {{ files: ( {swu.entry(other)} ); }};\n"
            "  };\n")
    r = run_hook("swupdate", ["install", swu.build(swu.description(body))], swu.tmp,
                 swu.config(SWUPDATE_SELECT="stable,alt"))
    assert r.returncode == REBOOT, r.stdout + r.stderr
    assert other.read_bytes() == swu.image.read_bytes()
    assert swu.target.read_bytes() == swu.untouched


STUB = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done >"$0.args"
{stub}
"""


def stub_swupdate(tmp, body):
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / "swupdate"
    stub.write_text(STUB.format(stub=body))
    stub.chmod(0o755)
    return {"PATH": f"{bindir}:{PATH}"}, Path(f"{stub}.args")


@pytest.mark.parametrize("body,expected,reason", [
    ("echo '[INFO ] : SWUPDATE successful ! SWUPDATE successful !'; exit 1", REBOOT, None),
    ("echo '[ERROR] : SWUPDATE failed [1] Installation failed !'; exit 0", None,
     "swupdate failed: Installation failed !"),
    ("echo '[ERROR] : SWUPDATE failed [0] ERROR core/handler.c : cannot open /dev/mmcblk0p3'; "
     "echo '[ERROR] : SWUPDATE failed [0] ERROR : SWUpdate *failed* !'", None,
     "swupdate failed: cannot open /dev/mmcblk0p3"),
    ("exit 0", None, "swupdate did not report success (exit status 0)"),
    ("echo '[ERROR] : out of memory'; exit 139", None,
     "swupdate did not report success (exit status 139): out of memory"),
])
def test_swupdate_result_comes_from_its_messages_not_its_exit_status(tmp_path, body, expected, reason):
    """Stub swupdate: SWUpdate 2022.12 exits 1 after some successful runs.
    A failure ends with SWUpdate's first error on the hook's stderr."""
    env, _ = stub_swupdate(tmp_path, body)
    (tmp_path / "x.swu").write_bytes(b"x")
    r = run_hook("swupdate", ["install", tmp_path / "x.swu"], tmp_path, {}, env=env)
    if expected is None:
        assert r.returncode not in (INSTALLED, REBOOT)
        assert last_stderr_line(r) == "swupdate hook: " + reason, r.stdout + r.stderr
    else:
        assert r.returncode == expected, r.stdout + r.stderr


def test_swupdate_child_left_behind_neither_blocks_the_hook_nor_survives(tmp_path):
    """SWUpdate 2022.12 sometimes leaves a child blocked for ever, holding its
    stdout: with a pipe the hook would never see EOF. Stub: such a child."""
    env, _ = stub_swupdate(tmp_path, "( while :; do sleep 1; done ) &\n"
                                     "echo '[INFO ] : SWUPDATE successful !'; exit 0")
    (tmp_path / "x.swu").write_bytes(b"x")
    start = time.monotonic()
    r = run_hook("swupdate", ["install", tmp_path / "x.swu"], tmp_path, {}, env=env)
    assert r.returncode == REBOOT, r.stdout + r.stderr
    assert time.monotonic() - start < 30
    deadline = time.monotonic() + 5
    while processes_mentioning(str(tmp_path / "bin")) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_mentioning(str(tmp_path / "bin"))
    for pid in left:
        os.kill(pid, 9)
    assert not left, "the hook left the stub's child running"


def test_swupdate_hook_terminated_stops_swupdate(tmp_path):
    """swupdate runs in its own session: SIGTERM to the hook (krtiotd's hook
    timeout) must reach it. Stub: a swupdate that never ends."""
    env, args = stub_swupdate(tmp_path, "while :; do sleep 1; done")
    (tmp_path / "x.swu").write_bytes(b"x")
    hook_env = {"PATH": env["PATH"], "TMPDIR": str(tmp_path),
                "KRTIOT_HOOK_CONFIG": str(write_config(tmp_path / "s.conf", {}))}
    hook = subprocess.Popen([str(HOOKS / "swupdate"), "install", str(tmp_path / "x.swu")],
                            env=hook_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not args.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert args.exists(), "the stub swupdate did not start"
        hook.terminate()
        assert hook.wait(timeout=10) not in (INSTALLED, REBOOT)
    finally:
        if hook.poll() is None:
            hook.kill()
            hook.wait()
    deadline = time.monotonic() + 5
    while processes_mentioning(str(tmp_path / "bin")) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_mentioning(str(tmp_path / "bin"))
    for pid in left:
        os.kill(pid, 9)
    assert not left, "swupdate survived the hook"


def test_swupdate_config_becomes_these_arguments(tmp_path):
    """Stub swupdate records its argv: options map one to one, EXTRA_ARGS is
    split on blanks and never globbed, nothing from KRTIOT_* is evaluated."""
    env, args = stub_swupdate(tmp_path, "echo '[INFO ] : SWUPDATE successful !'")
    (tmp_path / "x.swu").write_bytes(b"x")
    conf = {"SWUPDATE_PUBLIC_KEY": "/k.pem", "SWUPDATE_HW_COMPAT": "b:1",
            "SWUPDATE_SELECT": "stable,main", "SWUPDATE_EXTRA_ARGS": " -v  -l 5 /*  ",
            "SWUPDATE_REBOOT": 0}
    r = run_hook("swupdate", ["install", tmp_path / "x.swu"], tmp_path, conf, env=env,
                 target="$(touch /tmp/krtiot-pwned)")
    assert r.returncode == INSTALLED, r.stdout + r.stderr
    assert args.read_text().splitlines() == [
        "-i", str(tmp_path / "x.swu"), "-k", "/k.pem", "-H", "b:1", "-e", "stable,main",
        "-v", "-l", "5", "/*"]
    assert not Path("/tmp/krtiot-pwned").exists()


def test_swupdate_commit_runs_the_configured_command(tmp_path):
    assert run_hook("swupdate", ["commit"], tmp_path, {}).returncode == 0
    env, args = stub_swupdate(tmp_path, "exit 0")
    fw_setenv = tmp_path / "bin" / "fw_setenv"
    (tmp_path / "bin" / "swupdate").rename(fw_setenv)
    r = run_hook("swupdate", ["commit"], tmp_path,
                 {"SWUPDATE_COMMIT_CMD": f"{fw_setenv} upgrade_available 0"}, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(f"{fw_setenv}.args").read_text() == "upgrade_available\n0\n"
    r = run_hook("swupdate", ["commit"], tmp_path, {"SWUPDATE_COMMIT_CMD": "false"})
    assert r.returncode != 0


def test_swupdate_version(tmp_path):
    versions = tmp_path / "sw-versions"
    versions.write_text("# comment\nrootfs 2.0.1\nbootloader 2022.10\nkernel 6.1")
    conf = {"SWUPDATE_VERSIONS_FILE": versions}
    assert run_hook("swupdate", ["version"], tmp_path, conf).stdout == "2.0.1\n"
    for name, version in [("bootloader", "2022.10"), ("kernel", "6.1")]:
        r = run_hook("swupdate", ["version"], tmp_path, dict(conf, SWUPDATE_VERSION_NAME=name))
        assert (r.returncode, r.stdout) == (0, version + "\n")
    r = run_hook("swupdate", ["version"], tmp_path, dict(conf, SWUPDATE_VERSION_NAME="nope"))
    assert r.returncode != 0 and r.stdout == ""
    (tmp_path / "v").write_text("3.1~rc1\n")
    r = run_hook("swupdate", ["version"], tmp_path, dict(conf, SWUPDATE_VERSION_FILE=tmp_path / "v"))
    assert (r.returncode, r.stdout) == (0, "3.1~rc1\n")


# ---------------------------------------------------------------- rauc ----

SYSTEM_CONF = """[system]
compatible=krtiot-test-board
bootloader=custom
statusfile={d}/status.raucs
bundle-formats=plain

[keyring]
path={d}/ca.cert.pem

[handlers]
bootloader-custom-backend={d}/boot/backend

[slot.rootfs.0]
device={d}/slotA.img
type=raw
bootname=A

[slot.rootfs.1]
device={d}/slotB.img
type=raw
bootname=B
"""

SLOT_SIZE = 1 << 20


class Rauc:
    """A RAUC system in a temp dir: private bus, rauc service, slots."""

    def __init__(self, tmp):
        self.d = tmp
        self.boot = tmp / "boot"
        self.boot.mkdir()
        shutil.copy(DATA / "rauc-bootloader-backend", self.boot / "backend")
        (self.boot / "backend").chmod(0o755)
        (self.boot / "primary").write_text("A\n")
        (self.boot / "booted").write_text("A\n")
        self.key, self.cert = self_signed(tmp, "ca")
        self.other_key, self.other_cert = self_signed(tmp, "other")
        self.conf = tmp / "system.conf"
        self.conf.write_text(SYSTEM_CONF.format(d=tmp))
        self.slots = {s: tmp / f"slot{s}.img" for s in "AB"}
        for slot in self.slots.values():
            slot.write_bytes(b"\0" * SLOT_SIZE)
        self.mnt = tmp / "mnt"
        self.mnt.mkdir()
        # a unix socket path must be short: not under pytest's tmp_path
        self.busdir = Path(tempfile.mkdtemp(prefix="krtiot-bus-"))
        self.bus = self.service = None
        self.n = 0

    def start_bus(self):
        conf = self.busdir / "bus.conf"
        conf.write_text((DATA / "private-bus.conf").read_text()
                        .replace("@SOCKET@", str(self.busdir / "bus")))
        self.bus = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork",
                                     "--print-address=1"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.bus.stdout], [], [], 10)
        address = self.bus.stdout.readline().strip() if ready else ""
        assert address.startswith("unix:"), "private dbus-daemon did not start"
        # rauc uses the system bus, or the session bus with
        # DBUS_STARTER_BUS_TYPE=session: both lead to the private bus.
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": address, "DBUS_SESSION_BUS_ADDRESS": address,
                    "DBUS_STARTER_BUS_TYPE": "session"}

    def start_service(self, booted):
        (self.boot / "booted").write_text(booted + "\n")
        log = open(self.d / "rauc-service.log", "a")
        self.service = subprocess.Popen(
            ["rauc", "service", f"--conf={self.conf}", f"--mount={self.mnt}",
             f"--override-boot-slot={booted}"],
            env={"PATH": PATH, "TMPDIR": str(self.d), **self.env}, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.service.poll() is None, (self.d / "rauc-service.log").read_text()
            r = subprocess.run(["rauc", "status", "--output-format=json"], capture_output=True,
                               env={"PATH": PATH, **self.env}, timeout=30)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError("rauc service did not come up on the private bus")

    def stop(self, proc):
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def reboot_into(self, slot):
        self.stop(self.service)
        self.start_service(slot)

    def close(self):
        self.stop(self.service)
        self.stop(self.bus)
        # rauc unmounts its bundle; should it not, undo only our own mounts
        with open("/proc/self/mounts") as mounts:
            ours = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.mnt))]
        for mountpoint in reversed(ours):
            subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(self.busdir, ignore_errors=True)

    def bundle(self, version="2.0", compatible="krtiot-test-board", signer="good"):
        self.n += 1
        d = self.d / f"bundle{self.n}"
        d.mkdir()
        self.image = os.urandom(300_000)
        (d / "rootfs.img").write_bytes(self.image)
        (d / "manifest.raucm").write_text(
            f"[update]\ncompatible={compatible}\nversion={version}\n\n"
            "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n")
        key, cert = (self.key, self.cert) if signer == "good" else (self.other_key, self.other_cert)
        out = self.d / f"update{self.n}.raucb"
        sh("rauc", "bundle", f"--cert={cert}", f"--key={key}", str(d), str(out),
           env={"PATH": PATH, "TMPDIR": str(self.d)})
        return out

    def hook(self, *args, config=None, target="2.0"):
        return run_hook("rauc", list(args), self.d, config or {"RAUC_CONF": self.conf},
                        target=target, env=self.env)

    def slot(self, name):
        return self.slots[name].read_bytes()

    def boot_file(self, name):
        path = self.boot / name
        return path.read_text() if path.exists() else ""


@pytest.fixture
def rauc(tmp_path):
    need("rauc", "dbus-daemon", "mksquashfs", "openssl")
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        pytest.skip("rauc install mounts the bundle on a loop device: needs root and /dev/loop-control")
    system = Rauc(tmp_path)
    try:
        system.start_bus()
        system.start_service("A")
        yield system
    finally:
        system.close()


def test_rauc_install_reboot_version_commit(rauc):
    empty = b"\0" * SLOT_SIZE
    r = rauc.hook("version")
    assert r.returncode != 0 and "RAUC_VERSION_FILE" in r.stderr  # factory slot: no bundle
    bundle = rauc.bundle(version="2.0")
    r = rauc.hook("install", bundle)
    assert r.returncode == REBOOT, r.stdout + r.stderr
    assert rauc.slot("B") == rauc.image + empty[len(rauc.image):]
    assert rauc.slot("A") == empty
    assert rauc.boot_file("primary") == "B\n"
    rauc.reboot_into("B")
    r = rauc.hook("version")
    assert (r.returncode, r.stdout) == (0, "2.0\n"), r.stderr
    calls_before = rauc.boot_file("calls.log")
    r = rauc.hook("commit")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = rauc.boot_file("calls.log")[len(calls_before):].splitlines()
    assert "set-state B good" in calls, calls
    assert not [c for c in calls if c.startswith("set-") and c != "set-state B good"], calls


def test_rauc_without_conf_uses_the_service(rauc):
    """On a device RAUC_CONF is usually unset: the service has the config."""
    r = rauc.hook("install", rauc.bundle(), config={})
    assert r.returncode == REBOOT, r.stdout + r.stderr
    assert rauc.slot("B").startswith(rauc.image)


def test_rauc_refuses_bundle_signed_by_another_ca(rauc):
    r = rauc.hook("install", rauc.bundle(signer="other"))
    assert r.returncode not in (INSTALLED, REBOOT)
    # RAUC's "LastError:" line, on stdout, repeated as the hook's last stderr line
    assert last_stderr_line(r).startswith("rauc hook: rauc install failed: signature verification failed"), \
        r.stdout + r.stderr
    assert rauc.slot("B") == b"\0" * SLOT_SIZE
    assert rauc.boot_file("primary") == "A\n"


def test_rauc_refuses_incompatible_bundle_unless_extra_args_say_so(rauc):
    bundle = rauc.bundle(compatible="another-board")
    r = rauc.hook("install", bundle)
    assert r.returncode not in (INSTALLED, REBOOT)
    assert last_stderr_line(r) == ("rauc hook: rauc install failed: Installation error: Compatible mismatch: "
                                   "Expected 'krtiot-test-board' but bundle manifest has 'another-board'"), \
        r.stdout + r.stderr
    assert rauc.slot("B") == b"\0" * SLOT_SIZE
    r = rauc.hook("install", bundle,
                  config={"RAUC_CONF": rauc.conf, "RAUC_EXTRA_ARGS": "--ignore-compatible"})
    assert r.returncode == REBOOT, r.stdout + r.stderr
    assert rauc.slot("B").startswith(rauc.image)


def test_rauc_version_file_overrides_rauc_status(tmp_path):
    (tmp_path / "v").write_text("7.1+build.3\nnoise\n")
    r = run_hook("rauc", ["version"], tmp_path, {"RAUC_VERSION_FILE": tmp_path / "v"})
    assert (r.returncode, r.stdout) == (0, "7.1+build.3\n")


def test_rauc_failure_without_lasterror_gives_rauc_last_line(tmp_path):
    """Stub rauc: no "LastError:" line (a D-Bus failure, say): its last line."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rauc").write_text("#!/bin/sh\necho 'installing'\n"
                                 "echo 'rauc-CRITICAL **: Error creating proxy: Could not connect' >&2\n"
                                 "echo >&2\nexit 1\n")
    (bindir / "rauc").chmod(0o755)
    (tmp_path / "x.raucb").write_bytes(b"x")
    r = run_hook("rauc", ["install", tmp_path / "x.raucb"], tmp_path, {}, env={"PATH": f"{bindir}:{PATH}"})
    assert r.returncode not in (INSTALLED, REBOOT)
    assert last_stderr_line(r) == ("rauc hook: rauc install failed: "
                                   "rauc-CRITICAL **: Error creating proxy: Could not connect"), r.stderr
    assert "installing" in r.stdout, "rauc's output must still reach the log"


def test_rauc_install_of_missing_image_fails(tmp_path):
    r = run_hook("rauc", ["install", tmp_path / "none.raucb"], tmp_path, {})
    assert r.returncode not in (INSTALLED, REBOOT)


# ------------------------------------------- through krtiotd to the platform ----
# Review item 11: what RAUC or SWUpdate said reaches the platform as the REASON
# of the failed job (CMD 12 FAILED, the journal), through the real daemon.
# krtiotd runs the hook with a clean environment, so the hook gets its
# settings - the private bus's address, TMPDIR - from its config file, as on a
# device: "export" lines, the file being sourced (krtiot-hooks(7)). Only the
# file's path comes from a wrapper here, as /etc/krtiot/hooks is not ours.

def daemon_hook(tmp, name, settings, exports):
    """The shipped hook NAME behind a wrapper that names its config file and
    logs the IMAGE it was given (on stdout: the last line of stderr is the
    REASON)."""
    conf = tmp / f"{name}-daemon.conf"
    conf.write_text("".join(f"{k}={shlex.quote(str(v))}\n" for k, v in settings.items()) +
                    "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in exports.items()))
    hook = tmp / f"{name}-daemon-hook"
    hook.write_text(f"#!/bin/sh\necho \"wrapper: $1 ${{2:-}}\"\nKRTIOT_HOOK_CONFIG={shlex.quote(str(conf))} "
                    f"exec {shlex.quote(str(HOOKS / name))} \"$@\"\n")
    hook.chmod(0o755)
    return hook


def through_krtiotd(tmp, krtiotd, platform, hook, image, state):
    """krtiotd with HOOK installs IMAGE, served by nginx, until its CMD 12
    STATE: returns (receipt, that message, the journal's job, the Daemon).
    The installer (d.installer) runs the hook."""
    from nginx import NGINX, Nginx
    if not os.access(NGINX, os.X_OK):
        pytest.skip(f"nginx is not installed ({NGINX})")
    www = tmp / "www"
    www.mkdir()
    shutil.copy(image, www / "update.bin")
    with Nginx(www) as ngx:
        d = krtiotd(fw_version="1.0", config={"ota.hook": str(hook), "ota.report_progress": True})
        try:
            platform.wait_for_report("D1", timeout=20)
            mark = platform.mark()
            cmd_id = platform.send_ota("P1", "D1", ngx.url("update.bin"), "2.0")
            receipt = platform.wait_for_receipt("D1", cmd_id, since=mark)
            message = platform.wait_for_progress("D1", cmd_id, state, since=mark, timeout=240)
        finally:
            d.stop()
    with open(os.path.join(d.state_dir, "ota-journal.json")) as f:
        job = json.load(f)["job"]
    return receipt, message, job, d


def failed_through_krtiotd(tmp, krtiotd, platform, hook, image):
    """krtiotd with HOOK installs IMAGE, served by nginx, and fails: returns
    (receipt, CMD 12 FAILED, the journal's job)."""
    receipt, failed, job, _d = through_krtiotd(tmp, krtiotd, platform, hook, image, "FAILED")
    return receipt, failed, job


def image_given_by_the_installer(d):
    """The IMAGE the wrapper of daemon_hook() logged, through the installer's
    log: /proc/INSTALLER_PID/fd/N, the installer's own descriptor."""
    m = re.search(r"hook: wrapper: install (\S+)$", d.installer.log_text(), re.M)
    assert m, d.installer.log_tail()
    return m.group(1)


def test_rauc_reason_reaches_the_platform(rauc, krtiotd, platform):
    hook = daemon_hook(rauc.d, "rauc", {"RAUC_CONF": rauc.conf}, rauc.env)
    receipt, failed, job = failed_through_krtiotd(rauc.d, krtiotd, platform, hook, rauc.bundle(signer="other"))
    assert receipt.get("BACK") == "OK"
    reason = failed.get("REASON", "")
    assert reason.startswith("the install hook failed with exit status 1: rauc hook: rauc install failed: "
                             "signature verification failed"), failed
    assert job["phase"] == "failed" and job["reason"] == reason
    assert rauc.slot("B") == b"\0" * SLOT_SIZE


def test_swupdate_reason_reaches_the_platform(swu, krtiotd, platform):
    hook = daemon_hook(swu.tmp, "swupdate", swu.config(SWUPDATE_HW_COMPAT="board:2.0"),
                       {"TMPDIR": swu.tmp / "tmpdir"})
    (swu.tmp / "tmpdir").mkdir(exist_ok=True)
    receipt, failed, job = failed_through_krtiotd(swu.tmp, krtiotd, platform, hook, swu.build())
    assert receipt.get("BACK") == "OK"
    assert failed.get("REASON") == ("the install hook failed with exit status 1: "
                                    "swupdate hook: swupdate failed: SW not compatible with hardware"), failed
    assert job["phase"] == "failed" and job["reason"] == failed.get("REASON")
    assert swu.target.read_bytes() == swu.untouched


# The IMAGE a hook gets from krtiot-install is /proc/PID/fd/N, the
# installer's own descriptor of the image it checked (krtiot-hooks(7)):
# RAUC (whose service, another process, opens the path and applies its
# checks for plain bundles: regular file, owner, mode, file system, a read
# lease) and SWUpdate must take it and install from it.

def test_rauc_installs_from_the_installers_descriptor(rauc, krtiotd, platform):
    hook = daemon_hook(rauc.d, "rauc", {"RAUC_CONF": rauc.conf}, rauc.env)
    receipt, rebooting, job, d = through_krtiotd(rauc.d, krtiotd, platform, hook, rauc.bundle(), "REBOOTING")
    assert receipt.get("BACK") == "OK"
    assert job["phase"] == "reboot-pending", job
    assert re.fullmatch(r"/proc/%d/fd/\d+" % d.installer.pid, image_given_by_the_installer(d))
    assert rauc.slot("B").startswith(rauc.image)
    assert rauc.boot_file("primary") == "B\n"


def test_swupdate_installs_from_the_installers_descriptor(swu, krtiotd, platform):
    (swu.tmp / "tmpdir").mkdir(exist_ok=True)
    hook = daemon_hook(swu.tmp, "swupdate", swu.config(), {"TMPDIR": swu.tmp / "tmpdir"})
    receipt, rebooting, job, d = through_krtiotd(swu.tmp, krtiotd, platform, hook, swu.build(), "REBOOTING")
    assert receipt.get("BACK") == "OK"
    assert job["phase"] == "reboot-pending", job
    assert re.fullmatch(r"/proc/%d/fd/\d+" % d.installer.pid, image_given_by_the_installer(d))
    assert swu.target.read_bytes() == swu.image.read_bytes()


def test_rauc_takes_a_bundle_of_the_agents_user(rauc, krtiotd):
    """On a device the image belongs to the agent's user (krtiot), not root:
    RAUC refuses a plain bundle another user could still write, unless it
    can take it over (fchown to root, which its service does). Here the
    agent's user is nobody (the owner of state_dir and of the image), and
    the request comes straight to the installer."""
    nobody = 65534
    hook = daemon_hook(rauc.d, "rauc", {"RAUC_CONF": rauc.conf}, rauc.env)
    d = krtiotd(start=False, config={"ota.hook": str(hook)}, installer=True)
    os.makedirs(d.download_dir, exist_ok=True)
    key = "NOBODYBUNDLE"
    image = os.path.join(d.download_dir, key + ".img")
    shutil.copy(rauc.bundle(), image)
    for path in (d.state_dir, d.download_dir, image):
        os.chown(path, nobody, nobody)
    os.chmod(image, 0o644)
    d.installer.start()
    answer = d.installer.ask("install key=%s id=J1 target=2.0 url=http://127.0.0.1:9/x\n" % key, timeout=240)
    assert answer == "done outcome=reboot\n", d.installer.log_tail()
    assert rauc.slot("B").startswith(rauc.image)
    # RAUC took the bundle over (the agent's user can still delete it: the directory is its own);
    # installed again (after a power loss, say), it is taken all the same.
    assert os.stat(image).st_uid == 0
    answer = d.installer.ask("install key=%s id=J1 target=2.0 url=http://127.0.0.1:9/x\n" % key, timeout=240)
    assert answer == "done outcome=reboot\n", d.installer.log_tail()
