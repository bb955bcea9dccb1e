# SPDX-License-Identifier: Apache-2.0
"""krtiot-install, the root installer (SPEC 9, install-wire.h), against its
real binary: what it refuses (keys that are not job keys, links, FIFOs,
files of another user, requests from another user, oversized or
malformed datagrams, unknown verbs, extra fields, a reboot nobody asked
for), what a hook gets (the job's environment, an IMAGE path that reads
the checked bytes), the outcomes it keeps (for a client that went away, and
across its own restart), one hook at a time, a stop that waits for the
hook, and its idle exit. The last test is the acceptance test of the
split: a restart of krtiotd in the middle of an install loses nothing.

Requests are sent as the agent sends them: one SOCK_SEQPACKET datagram per
connection (Installer.ask in daemon.py). The installer runs as root, as
the tests do; a client of another user runs as nobody (uid 65534).
"""

import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from daemon import Daemon, agent_identity, daemon_missing
from nginx import NGINX, Nginx

NOBODY = 65534
KEY = "ABCDEFGHIJ01"
MALFORMED = "refused reason=malformed%20request\n"


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


# The hook of these tests: records each call (time, argv), its KRTIOT_*
# environment and the bytes it read from IMAGE; what it does is in files
# the test writes (sleep: seconds, exit: its status).
HOOK = """#!/bin/sh
d={dir}
echo "$(date +%s.%N) $*" >> "$d/calls"
env | grep '^KRTIOT_' | sort > "$d/env.$1"
if [ "$1" = install ]; then
    echo "installing from $2"
    cat "$2" > "$d/read"
    [ -e "$d/sleep" ] && sleep "$(cat "$d/sleep")"
fi
[ "$1" = version ] && echo 4.5.6
[ -e "$d/exit" ] && exit "$(cat "$d/exit")"
exit 0
"""

REBOOT = """#!/bin/sh
echo "$(date +%s.%N) reboot" >> {dir}/calls
"""


class Setup:
    """A krtiot-install (d.installer) with the config of a Daemon that is never
    started (no broker needed), the hook above and a reboot command that
    only records itself."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "hookdir"
        self.dir.mkdir()
        self.d = Daemon(tmp_path, None, name="i", seed=False, start=False)
        self.hook = self.dir / "hook"
        self.hook.write_text(HOOK.format(dir=self.dir))
        self.hook.chmod(0o755)
        reboot = self.dir / "reboot"
        reboot.write_text(REBOOT.format(dir=self.dir))
        reboot.chmod(0o755)
        self.d.write_config({"ota.hook": str(self.hook), "ota.reboot_command": str(reboot)})
        self.installer = self.d.installer

    def ask(self, request, timeout=30):
        return self.installer.ask(request, timeout=timeout)

    def image(self, key=KEY, data=None, owner=None):
        """An image as the agent leaves it: owned by the agent's user (the owner
        of state_dir), unless OWNER says otherwise."""
        owner = agent_identity()[0] if owner is None else owner
        data = os.urandom(64 * 1024) if data is None else data
        path = os.path.join(self.d.download_dir, key + ".img")
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, owner, owner)
        return data

    def set(self, name, value):
        path = self.dir / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(value))

    def calls(self, verb=None):
        path = self.dir / "calls"
        lines = path.read_text().splitlines() if path.exists() else []
        return [l.split(" ", 1)[1] for l in lines if verb is None or l.split(" ")[1] == verb]

    def file(self, name):
        path = self.dir / name
        return path.read_bytes() if path.exists() else None


def wire(value):
    """VALUE as util/wire.h writes it: bytes outside 0x21-0x7e, '%', '=' and ' ' as %XX."""
    return "".join("%%%02X" % b if b < 0x21 or b > 0x7e or b in b"%= " else chr(b) for b in value.encode())


def install_request(key=KEY, job_id="J-1", target="2.0.1", url="http://127.0.0.1:9/fw.img"):
    return "install key=%s id=%s target=%s url=%s\n" % (key, wire(job_id), target, wire(url))


@pytest.fixture
def setup(request, tmp_path):
    reason = daemon_missing()
    if reason:
        pytest.skip(reason)
    s = Setup(tmp_path)
    s.installer.start()
    yield s
    s.d.cleanup()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n===== krtiot-install log (tail) =====")
        print(s.installer.log_tail(120))


# -- what a hook gets ------------------------------------------------------------------

def test_install_gives_the_hook_the_jobs_environment_and_the_checked_image(setup):
    data = setup.image()
    url = "http://user:pw@127.0.0.1:9/fw.img?a=1&b=$(touch${IFS}/tmp/krtiot-pwned)"
    assert setup.ask(install_request(job_id="J 1", url=url)) == "done outcome=installed\n"
    assert setup.file("read") == data, "IMAGE does not read the image's bytes"
    (call,) = setup.calls("install")
    m = re.fullmatch(r"install /proc/(\d+)/fd/(\d+)", call)
    assert m and int(m.group(1)) == setup.installer.pid, call
    env = dict(line.split("=", 1) for line in setup.file("env.install").decode().splitlines())
    assert env == {"KRTIOT_JOB_ID": "J 1", "KRTIOT_TARGET_VERSION": "2.0.1", "KRTIOT_URL": url,
                   "KRTIOT_IMAGE": call.split()[1], "KRTIOT_STATE_DIR": setup.d.state_dir}, env
    assert not os.path.exists("/tmp/krtiot-pwned")
    # the hook's output is the installer's log (the journal, under systemd)
    log = setup.installer.log_text()
    assert "<6>hook: installing from %s\n" % call.split()[1] in log, log
    assert "Running %s for the install of job %s" % (setup.hook, KEY) in log


def test_the_image_is_the_one_checked_whatever_replaces_its_name(setup):
    """The hook reads the descriptor the installer checked: a file put in the
    image's place while the hook runs is not what it installs."""
    data = setup.image()
    setup.set("sleep", 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        wait_until(lambda: setup.calls("install"), 10, "the hook to start")
        os.unlink(os.path.join(setup.d.download_dir, KEY + ".img"))
        setup.image(data=b"swapped in")
        s.settimeout(20)
        assert s.recv(9000) == b"done outcome=installed\n"
    assert setup.file("read") == data


def test_exit_statuses_and_reasons(setup):
    setup.image()
    setup.set("exit", 10)
    assert setup.ask(install_request()) == "done outcome=reboot\n"
    setup.set("exit", 3)
    assert setup.ask(install_request()) == \
        "done outcome=failed reason=the%20install%20hook%20failed%20with%20exit%20status%203\n"
    setup.set("exit", None)
    assert setup.ask("version\n") == "version value=4.5.6\n"
    assert setup.ask("commit key=%s id=J-1 target=2.0.1\n" % KEY) == "done outcome=installed\n"
    env = setup.file("env.commit").decode()
    assert "KRTIOT_IMAGE=\n" in env and "KRTIOT_JOB_ID=J-1\n" in env, env


# -- refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["../../etc/pa", "../" + KEY[:9], KEY.lower(), KEY[:11], KEY + "X", "ABCDEF/HIJ01",
                                 "ABCDEF.HIJ01", "ABCDEF%00J01", ""])
def test_refuses_a_key_that_is_not_a_job_key(setup, key):
    """Keys are 12 characters of [0-9A-Z], the agent's own: nothing else
    ever becomes part of a path (positive control: the same request with a
    good key installs)."""
    setup.image()
    for verb in ("install key=%s id=J target=2.0 url=http://x/y\n", "outcome key=%s\n", "reboot key=%s\n",
                 "commit key=%s id=J target=2.0\n"):
        assert setup.ask(verb % key) == MALFORMED, verb % key
    assert setup.calls() == []
    assert setup.ask(install_request()) == "done outcome=installed\n"


def test_refuses_a_symbolic_link(setup, tmp_path):
    target = tmp_path / "elsewhere.img"
    target.write_bytes(b"not downloaded")
    os.symlink(target, os.path.join(setup.d.download_dir, KEY + ".img"))
    answer = setup.ask(install_request())
    assert answer.startswith("refused reason=") and "symbolic%20link" in answer, answer
    assert setup.calls() == []


def test_refuses_a_fifo_at_once(setup):
    os.mkfifo(os.path.join(setup.d.download_dir, KEY + ".img"))
    t0 = time.monotonic()
    answer = setup.ask(install_request(), timeout=10)
    assert time.monotonic() - t0 < 3, "the installer waited on the FIFO"
    assert answer.startswith("refused reason=") and "not%20a%20regular%20file" in answer, answer
    assert setup.calls() == []


def test_refuses_a_directory(setup):
    os.mkdir(os.path.join(setup.d.download_dir, KEY + ".img"))
    assert setup.ask(install_request()).startswith("refused reason=")
    assert setup.calls() == []


def test_refuses_a_file_of_another_user(setup):
    """The agent's user owns state_dir (krtiot-test here); an image of anyone
    else was not downloaded by the agent."""
    setup.image(owner=NOBODY)
    answer = setup.ask(install_request())
    assert answer.startswith("refused reason=") and "belongs%20to%20uid%2065534" in answer, answer
    assert setup.calls() == []
    # positive control: made the agent's user's (state_dir's owner), the same image is taken
    os.chown(setup.d.state_dir, NOBODY, NOBODY)
    assert setup.ask(install_request()) == "done outcome=installed\n"


def test_refuses_a_missing_image(setup):
    answer = setup.ask(install_request())
    assert answer.startswith("refused reason=no%20image%20" + KEY), answer


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)
s.connect(sys.argv[1])
s.send(sys.argv[2].encode())
sys.stdout.write(s.recv(9000).decode())
"""


def ask_as(uid, path, request):
    r = subprocess.run([sys.executable, "-c", CLIENT, path, request], user=uid, group=uid, extra_groups=[],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_refuses_a_request_from_another_user(setup):
    """The socket is reachable (--listen makes it 0666, in a directory of
    mode 0755): the peer check is the gate. Only root and the owner of
    state_dir may ask; nobody is refused, and the refusal is logged."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the client runs as uid %d" % NOBODY)
    assert stat.S_IMODE(os.stat(setup.installer.socket_path).st_mode) == 0o666
    setup.image()
    mark = setup.installer.log_mark()
    answer = ask_as(NOBODY, setup.installer.socket_path, install_request())
    assert answer.startswith("refused reason=not%20allowed"), answer
    assert ask_as(NOBODY, setup.installer.socket_path, "version\n").startswith("refused reason=not%20allowed")
    setup.installer.wait_log(r"<4>Refused a connection from pid \d+ \(uid %d\): not allowed" % NOBODY,
                             since=mark)
    assert setup.calls() == []
    # positive control: the owner of state_dir is the agent's user, and may ask
    os.chown(setup.d.state_dir, NOBODY, NOBODY)
    assert ask_as(NOBODY, setup.installer.socket_path, "version\n") == "version value=4.5.6\n"
    assert setup.ask("version\n") == "version value=4.5.6\n", "root may always ask"


def test_refuses_an_oversized_datagram(setup):
    setup.image()
    line = install_request(url="http://127.0.0.1/" + "u" * 4000)
    pad = "version " + "x" * (8192 - len("version \n")) + "\n"
    assert len(pad) == 8192
    # exactly the limit: read whole, and refused for what it says
    assert setup.ask(pad) == MALFORMED
    answer = setup.ask(pad.encode() + b"y")
    assert answer == "refused reason=request%20of%208193%20bytes,%20longer%20than%208192\n", answer
    answer = setup.ask(b"x" * 65536)
    assert "longer%20than%208192" in answer, answer
    assert setup.calls() == []
    assert setup.ask(line) == "done outcome=installed\n"


@pytest.mark.parametrize("request_", [
    b"install key=%s id=J target=2.0\n" % KEY.encode(),                                # a field missing
    b"install key=%s id=J target=2.0 url=http://x/y\nversion\n" % KEY.encode(),       # two lines
    b"install key=%s id=J\x01 target=2.0 url=http://x/y\n" % KEY.encode(),            # a raw control character
    b"install key=%s id=J%%01 target=2.0 url=http://x/y\n" % KEY.encode(),           # an encoded one in an ID
    b"install key=%s id=J target=../.. url=http://x/y\n" % KEY.encode(),              # not a version
    b"install key=%s id=J target=2.0 url=http://x/%%zz\n" % KEY.encode(),             # a bad escape
    b"install key=%s key=%s id=J target=2.0 url=http://x/y\n" % (KEY.encode(), KEY.encode()),  # twice
    b"outcome key=%s%%00\n" % KEY.encode(),                                           # NUL
    b"\n", b"", b" version\n", b"VERSION\n", b"\xff\xfe\n",
], ids=["missing", "two-lines", "control", "encoded-control", "target", "escape", "repeated", "nul", "empty-line",
        "empty", "leading-space", "upper", "binary"])
def test_refuses_a_malformed_line(setup, request_):
    setup.image()
    answer = setup.ask(request_)
    if request_ == b"":
        # an empty datagram is read as a hangup: nothing to answer
        assert answer in ("", MALFORMED), answer
    else:
        assert answer == MALFORMED, answer
    assert setup.calls() == []


@pytest.mark.parametrize("request_", ["format key=%s\n" % KEY, "shell cmd=reboot\n", "run\n", "install-now\n"])
def test_refuses_an_unknown_verb(setup, request_):
    assert setup.ask(request_) == MALFORMED
    assert setup.calls() == []


@pytest.mark.parametrize("request_", [
    "version key=%s\n" % KEY,
    "outcome key=%s id=J\n" % KEY,
    "reboot key=%s command=/bin/sh\n" % KEY,
    "install key=%s id=J target=2.0 url=http://x/y hook=/bin/sh\n" % KEY,
    "commit key=%s id=J target=2.0 url=http://x/y\n" % KEY,
])
def test_refuses_an_extra_field(setup, request_):
    setup.image()
    assert setup.ask(request_) == MALFORMED
    assert setup.calls() == []


def test_reboot_only_after_an_install_that_asked_for_one_and_once(setup):
    setup.image()
    assert setup.ask("reboot key=%s\n" % KEY).startswith("refused reason=no%20install"), "no install at all"
    assert setup.ask(install_request()) == "done outcome=installed\n"
    assert setup.ask("reboot key=%s\n" % KEY).startswith("refused reason=no%20install"), "installed: no reboot"
    setup.set("exit", 3)
    assert setup.ask(install_request()).startswith("done outcome=failed")
    assert setup.ask("reboot key=%s\n" % KEY).startswith("refused"), "failed: no reboot"
    assert setup.calls("reboot") == []
    # positive control: an install that exited 10 asks for the reboot, once
    setup.set("exit", 10)
    assert setup.ask(install_request()) == "done outcome=reboot\n"
    assert setup.ask("reboot key=OTHERJOB0001\n").startswith("refused"), "another job's key"
    assert setup.ask("reboot key=%s\n" % KEY) == "done outcome=reboot\n"
    assert len(setup.calls("reboot")) == 1
    assert setup.ask("reboot key=%s\n" % KEY).startswith("refused"), "a second reboot for the same install"
    assert len(setup.calls("reboot")) == 1


# -- outcomes ---------------------------------------------------------------------------

def test_outcome_after_the_client_went_away_mid_install(setup):
    """The agent sends install and goes away (a restart of krtiot.service):
    the hook goes on; `outcome` asked meanwhile waits for its end, and
    later ones are answered from the record. The hook ran once."""
    setup.image()
    setup.set("sleep", 2)
    setup.set("exit", 10)
    assert setup.ask("outcome key=%s\n" % KEY) == "unknown\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        wait_until(lambda: setup.calls("install"), 10, "the hook to start")
    hooks = setup.installer.hook_pids()
    assert hooks, "the hook died with the client"
    t0 = time.monotonic()
    assert setup.ask("outcome key=%s\n" % KEY) == "done outcome=reboot\n"
    assert time.monotonic() - t0 > 0.5, "the answer did not wait for the hook"
    assert setup.ask("outcome key=%s\n" % KEY) == "done outcome=reboot\n"
    # install of the same job while it runs: waits for it too, no second run
    setup.set("sleep", 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        wait_until(lambda: len(setup.calls("install")) == 2, 10, "the second run to start")
        assert setup.ask(install_request()) == "done outcome=reboot\n"
    assert len(setup.calls("install")) == 2


def test_recorded_outcome_survives_an_installer_restart(setup):
    setup.image()
    setup.set("exit", 3)
    failed = setup.ask(install_request())
    assert failed.startswith("done outcome=failed reason=")
    assert setup.installer.stop() == 0
    setup.installer.start()
    assert setup.ask("outcome key=%s\n" % KEY) == failed
    assert setup.ask("outcome key=%sX\n" % KEY[:-1]) == "unknown\n"
    assert len(setup.calls("install")) == 1


def test_one_hook_at_a_time(setup):
    """A second install of another job is refused while one runs; a version
    query waits for the running hook instead of running beside it."""
    setup.image()
    setup.image(key="OTHERJOB0001")
    setup.set("sleep", 2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        wait_until(lambda: setup.calls("install"), 10, "the hook to start")
        answer = setup.ask(install_request(key="OTHERJOB0001"))
        assert answer.startswith("refused reason=busy"), answer
        assert setup.ask("version\n") == "version value=4.5.6\n"
        s.settimeout(10)
        assert s.recv(9000) == b"done outcome=installed\n"
    calls = (setup.dir / "calls").read_text().splitlines()
    assert [c.split()[1] for c in calls] == ["install", "version"], calls
    assert float(calls[1].split()[0]) >= float(calls[0].split()[0]) + 2, "the version ran beside the install"


def test_sigterm_waits_for_the_running_hook(setup):
    setup.image()
    setup.set("sleep", 2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        wait_until(lambda: setup.calls("install"), 10, "the hook to start")
        setup.installer.proc.send_signal(signal.SIGTERM)
        s.settimeout(10)
        assert s.recv(9000) == b"done outcome=installed\n", "the install was interrupted"
    assert setup.installer.proc.wait(timeout=10) == 0


def test_idle_exit(setup):
    """With --idle-timeout, it exits (status 0) after that long with nothing
    to do, but not while a hook runs."""
    setup.installer.stop()
    setup.image()
    setup.installer.start(args=("--idle-timeout", "1"))
    t0 = time.monotonic()
    assert setup.installer.proc.wait(timeout=10) == 0
    assert 0.8 < time.monotonic() - t0 < 5
    assert "Nothing to do for 1 s: exiting." in setup.installer.log_text()

    setup.set("sleep", 3)
    setup.installer.start(args=("--idle-timeout", "1"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(setup.installer.socket_path)
        s.send(install_request().encode())
        s.settimeout(10)
        assert s.recv(9000) == b"done outcome=installed\n", "it left during the hook"
    assert setup.installer.proc.wait(timeout=10) == 0


def test_command_line_and_configuration_errors(setup, tmp_path):
    binary = setup.installer.binary
    r = subprocess.run([binary, "--idle-timeout", "soon"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, r
    r = subprocess.run([binary, "--listen", "relative.sock"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, r
    bad = tmp_path / "bad.conf"
    bad.write_text(setup.d.config_text() + "\nno_such_key = 1;\n")
    r = subprocess.run([binary, "-c", str(bad), "--listen", str(tmp_path / "x.sock"), "--runtime-dir",
                        str(tmp_path / "rt")], capture_output=True, text=True, timeout=10)
    assert r.returncode == 78 and "no_such_key: unknown key" in r.stderr, r
    # another installer on the same socket: refused, the first one keeps it
    r = subprocess.run(setup.installer.command(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "another process listens there" in r.stderr, r
    assert setup.ask("version\n") == "version value=4.5.6\n"


# -- the acceptance test: a restart of krtiotd mid-install loses nothing ------------------

COPY_HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "src", "hooks", "copy")


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed (%s)" % NGINX)
def test_restart_of_krtiotd_mid_install_loses_nothing(tmp_path, krtiotd, platform):
    """An OTA whose hook takes its time; krtiotd is killed (-9) while the hook
    runs and started again: the hook was not killed and finishes, the agent
    learns the outcome from the installer and reports the new version, and
    the hook ran once."""
    dev = tmp_path / "dev"
    dev.mkdir()
    slot, calls = dev / "slot.img", dev / "hook.calls"
    slot.write_bytes(b"old slot")
    d = krtiotd(start=False, fw_version="1.0.0")
    (dev / "copy.conf").write_text("COPY_SLOT=%s\nCOPY_VERSION_FILE=%s\n" % (slot, d.fw_version_path))
    hook = dev / "hook"
    hook.write_text("#!/bin/sh\necho \"$(date +%%s.%%N) $*\" >> %s\n[ \"$1\" = install ] && sleep 4\n"
                    "KRTIOT_HOOK_CONFIG=%s exec %s \"$@\"\n" % (calls, dev / "copy.conf", COPY_HOOK))
    hook.chmod(0o755)
    d.write_config({"ota.hook": str(hook), "ota.report_progress": True})
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(512 * 1024)
    (www / "fw.img").write_bytes(data)
    with Nginx(www) as ngx:
        mark = platform.mark()
        d.start()
        platform.wait_for_report("D1", since=mark, timeout=20)
        mark = platform.mark()
        cmd_id = platform.send_ota("P1", "D1", ngx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
        assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
        wait_until(lambda: calls.exists() and "install" in calls.read_text(), 20, "the install hook to start")
        hooks = d.installer.hook_pids()
        assert hooks, "the installer runs no hook"

        d.kill9()
        time.sleep(0.5)
        assert all(os.path.exists("/proc/%d" % pid) for pid in hooks), "the hook died with krtiotd"
        assert slot.read_bytes() != data, "the hook ended before the restart: nothing was tested"

        mark2 = platform.mark()
        d.start()
        report = platform.wait_for_report("D1", "2.0.1", since=mark2, timeout=30)
        platform.wait_for_progress("D1", cmd_id, "DONE", since=mark2, timeout=10)
        d.wait_log(r"The installer says the install of 2\.0\.1 \(command %s\) ended: installed\." % cmd_id,
                   timeout=5)
        assert report is not None
        assert len([l for l in ngx.access_log() if '"GET ' in l]) == 1, "downloaded again"
    assert slot.read_bytes() == data
    assert [l.split()[1] for l in calls.read_text().splitlines()].count("install") == 1, calls.read_text()
    wait_until(lambda: not os.listdir(d.download_dir), 5, "the image to be deleted")
