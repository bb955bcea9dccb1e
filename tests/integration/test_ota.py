# SPDX-License-Identifier: Apache-2.0
"""OTA end to end (SPEC 5, 6): the real krtiotd against mosquitto, the
simulated platform, a real nginx serving images, and the shipped `copy` hook
(through a small wrapper that gives it its config, since the daemon runs
hooks with a clean environment, and records every call)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from daemon import REPO
from faultserver import FaultServer
from nginx import NGINX, Nginx
from test_registration import remember_children, traced

COPY_HOOK = os.path.join(REPO, "src", "hooks", "copy")
OLD = "1.0.0"
MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed (%s)" % NGINX)


# -- helpers ---------------------------------------------------------------------

class Device:
    """A krtiotd whose hook is the copy hook, with a slot and a version file."""

    def __init__(self, tmp_path, krtiotd, platform, ngx, install_sleep=0, install_exit=None,
                 reboot=False, config=None, commit_sleep=0, version_sleep=0, install_signal=None):
        self.platform = platform
        self.ngx = ngx
        self.dev = tmp_path / "dev"
        self.dev.mkdir(exist_ok=True)
        self.slot = self.dev / "slot.img"
        self.slot.write_bytes(b"old slot")
        self.calls = self.dev / "hook.calls"
        self.d = krtiotd(start=False, fw_version=OLD)
        self.version_file = self.d.fw_version_path
        self.copy_conf = self.dev / "copy.conf"
        self.copy_conf.write_text("COPY_SLOT=%s\nCOPY_VERSION_FILE=%s\nCOPY_REBOOT=%d\n"
                                  % (self.slot, self.version_file, 1 if reboot else 0))
        self.hook = self.dev / "hook"
        lines = ["#!/bin/sh",
                 'echo "$(date +%%s.%%N) $*" >> %s' % self.calls]
        if install_sleep:
            lines.append('[ "$1" = install ] && sleep %s' % install_sleep)
        if version_sleep:
            lines.append('[ "$1" = version ] && sleep %s' % version_sleep)
        if commit_sleep:
            lines.append('[ "$1" = commit ] && sleep %s' % commit_sleep)
        if install_signal is not None:
            lines.append('[ "$1" = install ] && { echo "wrapper: about to crash" >&2; ulimit -c 0; kill -%s $$; }'
                         % install_signal)
        if install_exit is not None:
            lines.append('[ "$1" = install ] && { echo "wrapper: failing on purpose" >&2; exit %d; }'
                         % install_exit)
        lines.append('KRTIOT_HOOK_CONFIG=%s exec %s "$@"' % (self.copy_conf, COPY_HOOK))
        self.hook.write_text("\n".join(lines) + "\n")
        self.hook.chmod(0o755)
        cfg = {"ota.hook": str(self.hook), "ota.report_progress": True}
        cfg.update(config or {})
        self.d.write_config(cfg)
        self.download_dir = self.d.download_dir
        self.journal_path = os.path.join(self.d.state_dir, "ota-journal.json")

    def start(self):
        mark = self.platform.mark()
        self.d.start()
        self.platform.wait_for_report(self.d.device_id, since=mark, timeout=20)
        return self

    def send(self, url, version, **kw):
        mark = self.platform.mark()
        cmd_id = self.platform.send_ota(self.d.product_id, self.d.device_id, url, version, **kw)
        return cmd_id, mark

    def hook_calls(self):
        if not self.calls.exists():
            return []
        return [line.split(" ", 1)[1] for line in self.calls.read_text().splitlines()]

    def hook_call_times(self, verb):
        if not self.calls.exists():
            return []
        return [float(line.split(" ", 1)[0]) for line in self.calls.read_text().splitlines()
                if line.split(" ")[1] == verb]

    def journal(self):
        try:
            with open(self.journal_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def job(self):
        j = self.journal()
        return (j or {}).get("job") or {}

    def wait_job(self, pred, timeout=20, what="job state"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job()
            if j and pred(j):
                return j
            time.sleep(0.05)
        raise AssertionError("journal never showed %s; last: %r" % (what, self.journal()))

    def files(self):
        try:
            return sorted(os.listdir(self.download_dir))
        except FileNotFoundError:
            return []

    def progress(self, job_id, since=0):
        return [m.get("STATE") for m in self.platform.messages(self.d.device_id, cmd=12, since=since)
                if m.get("ID") == job_id]

    def wait_state(self, job_id, state, since=0, timeout=30):
        return self.platform.wait_for_progress(self.d.device_id, job_id, state, since=since, timeout=timeout)


def gets(ngx, name=None):
    return [l for l in ngx.access_log() if '"GET ' in l and (name is None or "/" + name + " " in l)]


def log_status_bytes(line):
    m = re.search(r'" (\d{3}) (\d+) ', line)
    return int(m.group(1)), int(m.group(2))


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    return d


def image(www, name, size):
    data = os.urandom(size)
    (www / name).write_bytes(data)
    return data


@pytest.fixture
def nginx(www):
    ngx = Nginx(www)
    ngx.start()
    yield ngx
    ngx.cleanup()


@pytest.fixture
def slow_nginx(www):
    ngx = Nginx(www, limit_rate="512k")
    ngx.start()
    yield ngx
    ngx.cleanup()


@pytest.fixture
def device(tmp_path, krtiotd, platform):
    made = []

    def make(ngx, **kw):
        dv = Device(tmp_path, krtiotd, platform, ngx, **kw)
        made.append(dv)
        return dv
    yield make


# -- 1 ---------------------------------------------------------------------------

def test_full_ota_with_copy_hook(device, nginx, www, platform):
    data = image(www, "fw.img", 3 * MiB)
    dv = device(nginx).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", size=len(data),
                           sha256=hashlib.sha256(data).hexdigest())
    receipt = platform.wait_for_receipt("D1", cmd_id, since=mark)
    assert receipt.get("BACK") == "OK"
    done = dv.wait_state(cmd_id, "DONE", since=mark)
    report = platform.wait_for_report("D1", "2.0.1", since=mark)
    first_progress = platform.messages("D1", cmd=12, since=mark)[0]
    assert receipt.seq < first_progress.seq < done.seq, "the receipt must come before any download"
    assert receipt.seq < report.seq
    assert dv.slot.read_bytes() == data
    states = dv.progress(cmd_id, since=mark)
    assert states[0] == "DOWNLOADING" and states[-1] == "DONE", states
    assert "INSTALLING" in states and "FAILED" not in states, states
    assert len(gets(nginx, "fw.img")) == 1
    wait_until(lambda: dv.files() == [], 5, "the image and .part to be deleted (%r)" % dv.files())
    assert dv.job().get("phase") == "done"
    assert [c.split()[0] for c in dv.hook_calls()].count("install") == 1


# -- 2 ---------------------------------------------------------------------------

BAD = [
    ("ftp", "ftp://127.0.0.1/fw.img", "2.0.1", None),
    ("file", "file:///etc/passwd", "2.0.1", None),
    ("version-space", "{url}", "1.0 beta", None),
    ("version-65", "{url}", "1" * 65, None),
    ("version-dotdot", "{url}", "../x", None),
    ("sha256-short", "{url}", "2.0.1", "ab" * 31),
    ("sha256-long", "{url}", "2.0.1", "ab" * 33),
]


def test_bad_commands_are_refused_without_download(device, nginx, www, platform):
    image(www, "fw.img", 64 * 1024)
    dv = device(nginx).start()
    mark = platform.mark()
    ids = []
    for name, url, version, sha in BAD:
        cmd_id, _ = dv.send(url.format(url=nginx.url("fw.img")), version, sha256=sha)
        ids.append((name, cmd_id))
    for name, cmd_id in ids:
        r = platform.wait_for_receipt("D1", cmd_id, since=mark)
        assert r.get("BACK") == "FAIL", (name, r)
        assert r.get("REASON"), (name, r)
    time.sleep(1.5)
    others = [m for m in platform.messages("D1", since=mark)
              if not (m.cmd == 11 and m.get("BACK") == "FAIL")]
    assert others == [], others
    assert nginx.access_log() == []
    assert dv.hook_calls() == []
    assert dv.files() == []


# -- 2b: every command with an ID is answered, and the answer is remembered -------

OTA_SET = "/sys/P1/D1/thing/ota/set"
BAD_CMD = "CMD must be a non-negative integer or a string of 1-9 digits"


DROP = object()  # a key to leave out


def _cmd(cmd_id, url, version="2.0.1"):
    return {"CMD": 11, "ID": cmd_id, "URL": url, "FW_VERSION": version}


def _refused(name, url):
    """(ID, message, REASON) of the commands SPEC 5.1 answers FAIL, each with a bad field."""
    cases = {
        "url-number": (dict(URL=5), "URL must be a string"),
        "url-4097": (dict(URL="http://127.0.0.1/" + "u" * 4080), "URL longer than 4096 bytes"),
        "version-number": (dict(FW_VERSION=2.0), "FW_VERSION must be a string"),
        "md5-array": (dict(MD5=[]), "MD5 must be a string"),
        "sha256-bool": (dict(SHA256=True), "SHA256 must be a string"),
        "size-string": (dict(SIZE="12a"), "SIZE must be a non-negative integer or a string of 1-20 digits"),
        "no-cmd": (dict(CMD=DROP), "CMD missing"),
        "cmd-bool": (dict(CMD=True), BAD_CMD),
        "version-space": (dict(FW_VERSION="1.0 beta"), "FW_VERSION must be 1-64 characters of 0-9A-Za-z._+~-"),
        "ftp": (dict(URL="ftp://127.0.0.1/fw.img"), "URL must be http:// or https://"),
    }
    fields, reason = cases[name]
    cmd_id = "R%s" % name.upper().replace("-", "")[:11]
    msg = _cmd(cmd_id, url)
    msg.update(fields)
    return cmd_id, {k: v for k, v in msg.items() if v is not DROP}, reason


REFUSED = ["url-number", "url-4097", "version-number", "md5-array", "sha256-bool", "size-string",
           "no-cmd", "cmd-bool", "version-space", "ftp"]


def test_bad_fields_are_answered_fail_and_the_answer_is_remembered(device, nginx, www, platform):
    """Review item 8 / SPEC 5.1: a field of the wrong type, a URL over the
    limit, a missing or bad CMD are answered BACK FAIL with a REASON (they
    were dropped silently). The same ID again, now with a good command, gets
    the same answer and starts nothing, also after a restart (journaled)."""
    image(www, "fw.img", 64 * 1024)
    dv = device(nginx).start()
    url = nginx.url("fw.img")
    mark = platform.mark()
    cases = [_refused(name, url) for name in REFUSED]
    for _cmd_id, msg, _reason in cases:
        platform.send_raw(OTA_SET, json.dumps(msg))
    for cmd_id, _msg, reason in cases:
        r = platform.wait_for_receipt("D1", cmd_id, since=mark)
        assert (r.cmd, r.get("BACK"), r.get("REASON")) == (11, "FAIL", reason), r

    # Refusals reach the journal within a second (coalesced: a flood must not cost an fsync each).
    deadline = time.monotonic() + 5
    while True:
        recent = {e["id"]: e.get("reason") for e in (dv.journal() or {}).get("recent", [])}
        if all(recent.get(cmd_id) == reason for cmd_id, _msg, reason in cases) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for cmd_id, _msg, reason in cases:
        assert recent.get(cmd_id) == reason, "refusal of %s not journaled: %r" % (cmd_id, recent)

    def same_ids_again(since):
        for cmd_id, _msg, _reason in cases:
            platform.send_raw(OTA_SET, json.dumps(_cmd(cmd_id, url)))  # a good command now
        for cmd_id, _msg, reason in cases:
            r = platform.wait_for_receipt("D1", cmd_id, since=since)
            assert (r.get("BACK"), r.get("REASON")) == ("FAIL", reason), (cmd_id, r)

    mark2 = platform.mark()
    same_ids_again(mark2)
    dv.d.stop()
    mark3 = platform.mark()
    dv.d.start()
    platform.wait_for_report("D1", since=mark3, timeout=20)
    same_ids_again(mark3)
    time.sleep(1.5)
    assert [m for m in platform.messages("D1", since=mark2)
            if not (m.cmd == 10 or (m.cmd == 11 and m.get("BACK") == "FAIL"))] == []
    assert nginx.access_log() == [], "a refused command ID started a download"
    assert dv.hook_calls() == []


def test_over_long_id_is_answered_but_not_remembered(device, nginx, www, platform):
    """An ID over 64 bytes is echoed with FAIL and its reason, and never
    journaled (IDs that long could make the journal too big to load)."""
    image(www, "fw.img", 64 * 1024)
    dv = device(nginx).start()
    long_id = "L" * 65 + "\u00e9"
    mark = platform.mark()
    platform.send_raw(OTA_SET, json.dumps(_cmd(long_id, nginx.url("fw.img"))))
    r = platform.wait_for_receipt("D1", long_id, since=mark)
    assert (r.get("BACK"), r.get("REASON")) == ("FAIL", "ID longer than 64 bytes"), r
    assert long_id not in json.dumps(dv.journal() or {}, ensure_ascii=False)
    time.sleep(1)
    assert nginx.access_log() == [] and dv.hook_calls() == []


@pytest.mark.parametrize("cmd_id", [18446744073709551621, 18446744073709551615, -9223372036854775809])
def test_integer_id_beyond_64_bits_is_never_echoed_altered(device, nginx, www, platform, cmd_id):
    """Review item 9: json-c saturates integers beyond 64 bits; such an ID
    came back as 18446744073709551615. It is dropped with a warning (there is
    no exact ID to answer with), while a 64-bit one is echoed digit for digit."""
    image(www, "fw.img", 64 * 1024)
    dv = device(nginx).start()
    url = nginx.url("fw.img")
    mark = platform.mark()
    log_mark = dv.d.log_mark()
    platform.send_raw(OTA_SET, '{"CMD":11,"ID":%d,"URL":"%s","FW_VERSION":"2.0.1"}' % (cmd_id, url))
    platform.send_raw(OTA_SET, '{"CMD":11,"ID":18446744073709551614,"URL":"%s","FW_VERSION":"1.0 x"}' % url)
    r = platform.wait_for_receipt("D1", "18446744073709551614", since=mark)
    assert r.get("BACK") == "FAIL"
    dv.d.wait_log(r"<4>Dropped a message on %s: an integer ID beyond 64 bits" % OTA_SET, since=log_mark)
    answers = [m for m in platform.messages("D1", since=mark) if m.cmd != 10]
    assert [m.get("ID") for m in answers] == ["18446744073709551614"], answers
    assert nginx.access_log() == []


# -- 2c: what reaches the log and STATUS= ----------------------------------------

CONTROL_ID = "E\x1b[31mX\x01\x7f\nY"  # ESC, 0x01, DEL, a newline: nothing of it may reach a terminal raw
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def _assert_notify_clean(notify_socket):
    for _t, _pid, text in notify_socket.datagrams():
        for line in text.split("\n"):
            assert re.fullmatch(r"[A-Z_]+=[^\x00-\x1f\x7f]*", line), \
                "a notify assignment with a control character or a broken line: %r" % line


def test_control_characters_in_an_id_are_logged_escaped(device, nginx, www, platform, notify_socket):
    """Review item 10: an ID with ESC, 0x01, DEL and a newline is echoed
    exactly, logged as \\xNN escapes (one call, one line), and neither the
    log nor STATUS= ever holds a raw control character."""
    data = image(www, "fw.img", 256 * 1024)
    dv = device(nginx).start()
    mark = platform.mark()
    platform.send_raw(OTA_SET, json.dumps(_cmd(CONTROL_ID, nginx.url("fw.img"))))
    assert platform.wait_for_receipt("D1", CONTROL_ID, since=mark).get("BACK") == "OK"
    dv.wait_state(CONTROL_ID, "DONE", since=mark)
    refused_id = CONTROL_ID + "2"
    platform.send_raw(OTA_SET, json.dumps(_cmd(refused_id, nginx.url("fw.img"), version="bad version")))
    assert platform.wait_for_receipt("D1", refused_id, since=mark).get("BACK") == "FAIL"
    assert dv.slot.read_bytes() == data
    dv.d.stop()

    log = dv.d.log_text()
    escaped = "E\\x1b[31mX\\x01\\x7f\\x0aY"
    assert re.search(r"^<\d>Updating from 1\.0\.0 to 2\.0\.1 \(command %s\)\.$" % re.escape(escaped), log, re.M), \
        "the ID is not logged escaped on one line"
    assert re.search(r"^<4>Refused command %s2: FW_VERSION must be" % re.escape(escaped), log, re.M)
    with open(dv.d.log_path, "rb") as f:
        raw = f.read().decode("utf-8", "replace")
    assert not RAW_CONTROL.search(raw.replace("\n", "")), "a raw control character in the log"
    for line in raw.splitlines():
        assert line.startswith("<") or line.startswith("=== start"), "a log line was split: %r" % line
    _assert_notify_clean(notify_socket)
    assert notify_socket.statuses(), "no STATUS= was recorded: the check above saw nothing"


def test_url_user_secret_never_logged(device, nginx, www, platform, notify_socket):
    """Review item 10: with log_level debug, the password of a download URL
    (http://user:pass@host/...) is in neither the log nor STATUS=; the user
    name is (a positive control that the URL was logged at all)."""
    data = image(www, "fw.img", 256 * 1024)
    dv = device(nginx, config={"log_level": "debug"}).start()
    url = nginx.url("fw.img").replace("http://", "http://operator7:pass-Hq2x@")
    cmd_id, mark = dv.send(url, "2.0.1")
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    dv.wait_state(cmd_id, "DONE", since=mark)
    assert dv.slot.read_bytes() == data
    dv.d.stop()
    log = dv.d.log_text()
    assert "pass" not in log, [line for line in log.splitlines() if "pass" in line]
    assert not [t for t in notify_socket.all() if "pass" in t]
    assert "<7>" in log, "not logging at debug level"
    assert "operator7:***@127.0.0.1" in log, "the URL was never logged (redacted): nothing was checked"


# -- 3 ---------------------------------------------------------------------------

def test_same_id_after_done_is_receipted_again_without_download(device, nginx, www, platform):
    data = image(www, "fw.img", 1 * MiB)
    dv = device(nginx).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "DONE", since=mark)
    platform.wait_for_report("D1", "2.0.1", since=mark)
    time.sleep(0.5)
    mark2 = platform.mark()
    dv.send(nginx.url("fw.img"), "2.0.1", id=cmd_id)
    r = platform.wait_for_receipt("D1", cmd_id, since=mark2)
    assert r.get("BACK") == "OK"
    time.sleep(1.5)
    assert [m for m in platform.messages("D1", since=mark2) if m.seq != r.seq] == []
    assert len(gets(nginx)) == 1
    assert dv.slot.read_bytes() == data
    assert [c.split()[0] for c in dv.hook_calls()].count("install") == 1


# -- 4 ---------------------------------------------------------------------------

def test_target_equal_to_running_is_receipted_and_reported(device, nginx, www, platform):
    image(www, "fw.img", 64 * 1024)
    dv = device(nginx).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), OLD)
    r = platform.wait_for_receipt("D1", cmd_id, since=mark)
    assert r.get("BACK") == "OK"
    rep = platform.wait_for_report("D1", OLD, since=mark)
    assert rep.seq > r.seq
    time.sleep(1)
    assert nginx.access_log() == []
    assert dv.hook_calls() == []
    assert dv.slot.read_bytes() == b"old slot"


# -- 5 ---------------------------------------------------------------------------

def test_sha256_mismatch_fails_and_is_not_retried(device, nginx, www, platform):
    data = image(www, "fw.img", 2 * MiB)
    dv = device(nginx).start()
    bad_sha = hashlib.sha256(b"something else").hexdigest()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256=bad_sha)
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    failed = dv.wait_state(cmd_id, "FAILED", since=mark)
    assert failed.get("REASON"), failed
    platform.wait_for_report("D1", OLD, since=mark)
    assert dv.hook_calls() == []
    assert dv.slot.read_bytes() == b"old slot"
    wait_until(lambda: dv.files() == [], 5, "the .part to be deleted (%r)" % dv.files())
    assert dv.job().get("phase") == "failed"
    n_gets = len(gets(nginx))
    assert n_gets >= 1

    # the same command again: receipted, nothing retried (loop guard)
    mark2 = platform.mark()
    dv.send(nginx.url("fw.img"), "2.0.1", id=cmd_id, sha256=bad_sha)
    assert platform.wait_for_receipt("D1", cmd_id, since=mark2).get("BACK") == "OK"
    time.sleep(2)
    assert len(gets(nginx)) == n_gets
    assert dv.progress(cmd_id, since=mark2) == []
    assert dv.hook_calls() == []

    # a new command with the right checksum works
    id2, mark3 = dv.send(nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    dv.wait_state(id2, "DONE", since=mark3)
    platform.wait_for_report("D1", "2.0.1", since=mark3)
    assert dv.slot.read_bytes() == data


# -- 6 ---------------------------------------------------------------------------

def test_hook_failure_fails_the_job(device, nginx, www, platform):
    image(www, "fw.img", 1 * MiB)
    dv = device(nginx, install_exit=3).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    failed = dv.wait_state(cmd_id, "FAILED", since=mark)
    # Review item 11: what the hook said on stderr, not only its status.
    assert failed.get("REASON") == "the install hook failed with exit status 3: wrapper: failing on purpose", \
        failed
    platform.wait_for_report("D1", OLD, since=mark)
    assert [c.split()[0] for c in dv.hook_calls()] == ["install"]
    wait_until(lambda: dv.files() == [], 5, "the image to be deleted (%r)" % dv.files())
    assert dv.slot.read_bytes() == b"old slot"
    assert dv.job().get("phase") == "failed"
    assert "DONE" not in dv.progress(cmd_id, since=mark)


def test_hook_killed_by_a_signal_says_which(device, nginx, www, platform):
    """Review item 11: a hook killed by a signal is reported as such
    ("killed by signal SEGV"), not as "could not run: Interrupted system call"."""
    image(www, "fw.img", 256 * 1024)
    dv = device(nginx, install_signal="SEGV").start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    failed = dv.wait_state(cmd_id, "FAILED", since=mark)
    assert failed.get("REASON") == "the install hook was killed by signal SEGV: wrapper: about to crash", failed
    platform.wait_for_report("D1", OLD, since=mark)
    assert dv.job().get("reason") == failed.get("REASON")
    assert dv.slot.read_bytes() == b"old slot"


# -- 7 ---------------------------------------------------------------------------

def _reboot_pending(dv, nginx, www, platform):
    data = image(www, "fw.img", 1 * MiB)
    dv.start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "REBOOTING", since=mark)
    dv.wait_job(lambda j: j.get("phase") == "reboot-pending", 10, "reboot-pending")
    assert dv.slot.read_bytes() == data
    with open(dv.version_file) as f:
        assert f.read().strip() == OLD
    wait_until(lambda: dv.files() == [], 5, "the image to be deleted (%r)" % dv.files())
    assert "DONE" not in dv.progress(cmd_id, since=mark)
    dv.d.stop()
    return cmd_id, data


def _activate(dv):
    subprocess.run([str(dv.hook), "activate"], check=True, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("commit_sleep", [0, 3], ids=["fast-commit", "slow-commit"])
def test_reboot_then_commit(device, nginx, www, platform, commit_sleep):
    """SPEC 5.5: after the reboot the version report comes after `hook commit`
    (with a slow commit, e.g. RAUC mark-good, the connect report must not
    announce the target before the commit has run)."""
    dv = device(nginx, reboot=True, commit_sleep=commit_sleep)
    cmd_id, data = _reboot_pending(dv, nginx, www, platform)
    _activate(dv)  # the simulated reboot
    with open(dv.version_file) as f:
        assert f.read().strip() == "2.0.1"
    mark = platform.mark()
    dv.d.start()
    rep = platform.wait_for_report("D1", "2.0.1", since=mark, timeout=20)
    dv.wait_job(lambda j: j.get("phase") == "done", 10, "done")
    commits = dv.hook_call_times("commit")
    assert len(commits) == 1, dv.hook_calls()
    # the wrapper logs the call when the commit starts; it ends COMMIT_SLEEP later
    assert rep.wall_time >= commits[0] + commit_sleep, \
        "version report with the target sent %.2f s after 'hook commit' started, before it ended" % (
            rep.wall_time - commits[0])
    dv.d.wait_log(r"committing", timeout=5)
    assert dv.slot.read_bytes() == data


def test_reboot_rollback(device, nginx, www, platform):
    dv = device(nginx, reboot=True)
    cmd_id, data = _reboot_pending(dv, nginx, www, platform)
    # "reboot" without activating: the old version came back up
    mark = platform.mark()
    dv.d.start()
    platform.wait_for_report("D1", OLD, since=mark, timeout=20)
    dv.wait_job(lambda j: j.get("phase") == "failed", 10, "failed")
    # The outcome decided before the session was up follows the first report.
    platform.wait_for_progress("D1", job_id=cmd_id, state="FAILED", since=mark)
    assert "commit" not in [c.split()[0] for c in dv.hook_calls()]
    n_gets = len(gets(nginx))
    n_calls = len(dv.hook_calls())
    mark2 = platform.mark()
    dv.send(nginx.url("fw.img"), "2.0.1", id=cmd_id)
    assert platform.wait_for_receipt("D1", cmd_id, since=mark2).get("BACK") == "OK"
    time.sleep(2)
    assert len(gets(nginx)) == n_gets
    assert len(dv.hook_calls()) == n_calls
    assert dv.progress(cmd_id, since=mark2) == []


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_startup_outcome_sends_progress(device, nginx, www, platform, outcome):
    """SPEC 5.6 / CMD 12: with progress on, a job that ends at the start after
    the reboot sends its outcome too: FAILED with the reason on a rollback,
    DONE after the commit. The daemon decides it (ota_start) before the MQTT
    session is up, and these messages must not be lost."""
    dv = device(nginx, reboot=True)
    cmd_id, _ = _reboot_pending(dv, nginx, www, platform)
    if outcome == "commit":
        _activate(dv)
    mark = platform.mark()
    dv.d.start()
    want = "done" if outcome == "commit" else "failed"
    dv.wait_job(lambda j: j.get("phase") == want, 10, want)
    platform.wait_for_report("D1", "2.0.1" if outcome == "commit" else OLD, since=mark, timeout=20)
    m = dv.wait_state(cmd_id, want.upper(), since=mark, timeout=5)
    if outcome == "rollback":
        assert "rolled back" in m.get("REASON", ""), m


# -- 8 ---------------------------------------------------------------------------

def test_resume_after_daemon_restart(device, slow_nginx, www, platform):
    data = image(www, "fw.img", 6 * MiB)
    dv = device(slow_nginx).start()
    cmd_id, mark = dv.send(slow_nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    j = dv.wait_job(lambda j: j.get("phase") == "downloading" and j.get("offset", 0) > 0, 20,
                    "a downloading checkpoint with offset > 0")
    dv.d.kill9()
    offset = j["offset"]
    assert 0 < offset < len(data)
    mark2 = platform.mark()
    dv.d.start()
    dv.d.wait_log(r"resuming", timeout=10)
    dv.wait_state(cmd_id, "DONE", since=mark2, timeout=40)
    platform.wait_for_report("D1", "2.0.1", since=mark2)
    assert dv.slot.read_bytes() == data
    lines = wait_until(lambda: len(gets(slow_nginx)) >= 2 and gets(slow_nginx), 10, "two requests logged")
    stats = [log_status_bytes(l) for l in lines]
    assert len(stats) == 2 and stats[1][0] == 206, lines
    # Resumed from the checkpoint read above, or a later one written before the kill: never from further back.
    # (What the first request sent past the checkpoint is lost by design: the journal is up to 5 s behind.)
    assert stats[1][1] <= len(data) - offset, (offset, lines)


# -- 9 ---------------------------------------------------------------------------

def test_new_command_replaces_running_download(device, slow_nginx, www, platform):
    image(www, "a.img", 6 * MiB)
    b = image(www, "b.img", 512 * 1024)
    dv = device(slow_nginx).start()
    id_a, mark = dv.send(slow_nginx.url("a.img"), "2.0.1")
    dv.wait_state(id_a, "DOWNLOADING", since=mark)
    part_a = wait_until(lambda: [f for f in dv.files() if f.endswith(".part")], 10, "a .part")
    wait_until(lambda: os.path.getsize(os.path.join(dv.download_dir, part_a[0])) > 0, 10, "bytes in .part")
    id_b, mark_b = dv.send(slow_nginx.url("b.img"), "2.0.2")
    assert platform.wait_for_receipt("D1", id_b, since=mark_b).get("BACK") == "OK"
    dv.d.wait_log(r"Command %s replaces the unfinished update" % id_b, timeout=5)
    dv.wait_state(id_b, "DONE", since=mark_b, timeout=30)
    platform.wait_for_report("D1", "2.0.2", since=mark_b)
    assert dv.slot.read_bytes() == b
    assert "DONE" not in dv.progress(id_a, since=mark)
    assert not os.path.exists(os.path.join(dv.download_dir, part_a[0]))
    wait_until(lambda: dv.files() == [], 5, "no files left (%r)" % dv.files())
    assert [c.split(" ", 1)[0] for c in dv.hook_calls()] == ["install"]
    assert platform.messages("D1", cmd=10, since=mark) and all(
        m.get("FW_VERSION") != "2.0.1" for m in platform.messages("D1", cmd=10, since=mark))


# -- 9b: krtiot-fetch, the downloader process ------------------------------------

def _fetch_children(ppid):
    """Live (not zombie) krtiot-fetch processes whose parent is PPID."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, parent = stat[stat.rindex(")") + 2:].split()[:2]
        if comm == "krtiot-fetch" and int(parent) == ppid and state != "Z":
            found.append(int(d))
    return found


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_krtiot_fetch_runs_only_for_a_download_and_dies_with_krtiotd(device, faults, nginx, www, platform):
    """SPEC 9: no downloader process while idle; during a download one krtiot-fetch, krtiotd's child,
    with the URL's password nowhere on its command line; krtiotd SIGKILLed takes it along
    (PR_SET_PDEATHSIG), even while it has nothing to say (a stalled server: no status line whose
    failed write would end it too); a new command replaces the resumed download, and once that one
    is done no krtiot-fetch is left."""
    data = image(www, "fw.img", 512 * 1024)
    dv = device(faults, config={"ota.stall_timeout": 120}).start()
    assert _fetch_children(dv.d.pid) == [], "a krtiot-fetch while idle"
    url = faults.url("fw.img", key="pdeath", stall=300000).replace("http://", "http://op7:pw-Zr8q@")
    cmd_id, mark = dv.send(url, "2.0.1")
    dv.wait_state(cmd_id, "DOWNLOADING", since=mark)
    pid = wait_until(lambda: _fetch_children(dv.d.pid), 10, "krtiot-fetch to start")[0]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        cmdline = f.read().split(b"\0")
    assert b"--status-fd" in cmdline, cmdline
    assert not [a for a in cmdline if b"pw-Zr8q" in a or b"op7" in a], cmdline
    part = wait_until(lambda: [f for f in dv.files() if f.endswith(".part")], 10, "a .part")[0]
    wait_until(lambda: os.path.getsize(os.path.join(dv.download_dir, part)) >= 300000, 10, "the stall")
    time.sleep(1.5)  # the last progress line is out: from now on krtiot-fetch writes nothing
    dv.d.kill9()
    wait_until(lambda: not _alive(pid), 3, "krtiot-fetch %d to die with krtiotd" % pid)

    mark_up = platform.mark()
    dv.d.start()
    old = wait_until(lambda: _fetch_children(dv.d.pid), 10, "the download to resume")[0]
    # The download resumes before the session is up: a command sent before the subscription would be lost.
    platform.wait_for_report("D1", since=mark_up, timeout=20)
    id_b, mark_b = dv.send(nginx.url("fw.img"), "2.0.2")
    dv.wait_state(id_b, "DONE", since=mark_b, timeout=30)
    assert not _alive(old), "the replaced download's krtiot-fetch is gone"
    assert dv.slot.read_bytes() == data
    assert _fetch_children(dv.d.pid) == [], "krtiot-fetch outlived its download"
    log = dv.d.log_text()
    assert "pw-Zr8q" not in log and "op7:***@" in log
    assert re.search(r"<[67]>krtiot-fetch: ", log), "krtiot-fetch's own log lines, under its name"


# -- 10 --------------------------------------------------------------------------

def test_loop_runs_during_slow_hook(device, nginx, www, platform):
    data = image(www, "fw.img", 256 * 1024)
    dv = device(nginx, install_sleep=5, config={"report.interval": 1}).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1")
    dv.wait_state(cmd_id, "INSTALLING", since=mark)
    t0 = wait_until(lambda: dv.hook_call_times("install"), 5, "the install hook to start")[0]
    m_hook = platform.mark()
    time.sleep(1)
    dv.send(nginx.url("fw.img"), "2.0.1", id=cmd_id)
    r = platform.wait_for_receipt("D1", cmd_id, since=m_hook, timeout=3)
    assert r.get("BACK") == "OK"
    assert r.wall_time < t0 + 4.5, "receipt only after the hook"
    done = dv.wait_state(cmd_id, "DONE", since=mark, timeout=15)
    assert done.wall_time >= t0 + 4.5, "the hook did not take its 5 s"
    during = [m for m in platform.messages("D1", cmd=10, since=m_hook) if m.wall_time < t0 + 4.5]
    assert len(during) >= 2, "version reports during the hook: %r" % during
    assert dv.slot.read_bytes() == data


def test_command_during_install_waits_for_it(device, nginx, www, platform):
    """SPEC 5.2: a new command while an install runs waits for the install to
    end (it is not interrupted), then runs; the newest queued command wins."""
    a = image(www, "a.img", 256 * 1024)
    image(www, "b.img", 256 * 1024)
    c = image(www, "c.img", 256 * 1024)
    dv = device(nginx, install_sleep=3).start()
    id_a, mark = dv.send(nginx.url("a.img"), "2.0.1", sha256=hashlib.sha256(a).hexdigest())
    t0 = wait_until(lambda: dv.hook_call_times("install"), 15, "the install hook to start")[0]
    id_b, _ = dv.send(nginx.url("b.img"), "2.0.2")
    id_c, _ = dv.send(nginx.url("c.img"), "2.0.3")
    for cmd_id in (id_b, id_c):
        r = platform.wait_for_receipt("D1", cmd_id, since=mark, timeout=3)
        assert r.get("BACK") == "OK" and r.wall_time < t0 + 2.5, "receipt at once, during the install"
    dv.wait_state(id_a, "DONE", since=mark, timeout=15)
    platform.wait_for_report("D1", "2.0.3", since=mark, timeout=30)
    starts = dv.hook_call_times("install")
    assert len(starts) == 2, dv.hook_calls()
    assert starts[1] >= t0 + 3, "the second install started before the first ended"
    assert dv.slot.read_bytes() == c
    assert gets(nginx, "b.img") == [], "the replaced queued command was downloaded"
    assert dv.progress(id_b, since=mark) == []


# -- kill -9 in the other phases (downloading and reboot-pending are above) -------

def _power_loss(dv):
    """Everything dies at once: the daemon, the installer and the hook it runs
    (SIGKILL by PID), and /run, where the installer keeps outcomes, is gone."""
    dv.d.kill9()
    dv.d.installer.kill9(hooks=True)
    shutil.rmtree(dv.d.installer.runtime_dir, ignore_errors=True)


def test_kill9_while_accepted_resumes(device, nginx, www, platform):
    """Killed after the receipt, while the running version is being read
    (phase accepted): the restart checks again and completes the job."""
    data = image(www, "fw.img", 512 * 1024)
    dv = device(nginx, version_sleep=3,
                config={"device.fw_version_file": None, "device.fw_version_from_hook": True})
    dv.start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    dv.wait_job(lambda j: j.get("id") == cmd_id and j.get("phase") == "accepted", 5, "phase accepted")
    dv.d.kill9()
    assert gets(nginx, "fw.img") == []
    mark = platform.mark()
    dv.d.start()
    platform.wait_for_report("D1", "2.0.1", since=mark, timeout=30)
    assert dv.slot.read_bytes() == data
    dv.wait_job(lambda j: j.get("phase") == "done", 10, "phase done")


def test_kill9_while_verifying_resumes(device, nginx, www, platform):
    """Killed between the verified download and its rename to the image
    (phase verifying; strace kills the daemon at that rename()): the restart
    finds the complete .part, does not download it again, and installs."""
    data = image(www, "fw.img", 2 * MiB)
    dv = device(nginx)
    orig = dv.d.command
    traced(dv.d, dv.dev / "verify.trace", inject="rename:signal=SIGKILL:when=1")
    dv.start()
    remember_children(dv.d)
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    dv.d.wait(timeout=20)
    assert dv.job().get("phase") == "verifying", dv.journal()
    assert any(f.endswith(".part") for f in dv.files()) and not any(f.endswith(".img") for f in dv.files())
    fetched = sum(log_status_bytes(l)[1] for l in gets(nginx, "fw.img"))
    dv.d.command = orig
    mark = platform.mark()
    dv.d.start()
    platform.wait_for_report("D1", "2.0.1", since=mark, timeout=30)
    assert dv.slot.read_bytes() == data
    refetched = sum(log_status_bytes(l)[1] for l in gets(nginx, "fw.img")) - fetched
    assert refetched <= len(data) // 10, "the complete download was fetched again (%d bytes)" % refetched
    assert [c.split()[0] for c in dv.hook_calls()].count("install") == 1


def test_power_loss_while_installing_reruns_the_hook(device, nginx, www, platform):
    """Power lost during the install (daemon, installer and hook killed, the
    installer's outcomes gone with /run): the restart learns from the
    installer that it has no record, and runs the hook again on the kept
    image (installs are idempotent). A restart of the daemon alone is
    test_installer.py's test_restart_of_krtiotd_mid_install_loses_nothing."""
    data = image(www, "fw.img", 512 * 1024)
    dv = device(nginx, install_sleep=3).start()
    cmd_id, mark = dv.send(nginx.url("fw.img"), "2.0.1", sha256=hashlib.sha256(data).hexdigest())
    wait_until(lambda: dv.hook_call_times("install"), 15, "the install hook to start")
    assert dv.job().get("phase") == "installing"
    hooks = dv.d.installer.hook_pids()
    assert hooks, "the installer runs no hook"
    _power_loss(dv)
    assert dv.slot.read_bytes() != data
    mark = platform.mark()
    dv.d.start()
    platform.wait_for_report("D1", "2.0.1", since=mark, timeout=30)
    assert dv.slot.read_bytes() == data
    assert [c.split()[0] for c in dv.hook_calls()].count("install") == 2
    wait_until(lambda: dv.files() == [], 5, "the image to be deleted")
    assert len(gets(nginx, "fw.img")) == 1


# -- servers that misbehave (the download engine's review items 4 and 7) --------

@pytest.fixture
def faults():
    with FaultServer({"fw.img": os.urandom(12 * MiB)}) as s:
        yield s


def test_http_204_without_hash_fails_and_the_hook_never_runs(device, faults, platform):
    """An empty 204 used to end as a "downloaded" empty image, handed to the
    hook when the command had no hash. Only a 200 (or our 206) is an image."""
    dv = device(faults).start()
    cmd_id, mark = dv.send(faults.url("fw.img", key="204", status=204), "2.0.1")
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    failed = dv.wait_state(cmd_id, "FAILED", since=mark)
    assert failed.get("REASON") == "HTTP 204: not an image", failed
    platform.wait_for_report("D1", OLD, since=mark)
    assert dv.hook_calls() == []
    assert dv.slot.read_bytes() == b"old slot"
    assert dv.job().get("phase") == "failed"
    wait_until(lambda: dv.files() == [], 5, "the .part to be deleted (%r)" % dv.files())
    assert len(faults.requests("204")) == 1


def test_server_cutting_every_response_ends_the_job(device, faults, platform):
    """Content-Length larger than the body and no validators: every attempt
    starts over and brings 2 MiB. The job must end after ota.retries more
    attempts, not download forever; the journal counts the bytes fetched."""
    dv = device(faults, config={"ota.retries": 2}).start()
    cmd_id, mark = dv.send(faults.url("fw.img", key="short", short=2 * MiB, no_validators=1), "2.0.1")
    assert platform.wait_for_receipt("D1", cmd_id, since=mark).get("BACK") == "OK"
    failed = dv.wait_state(cmd_id, "FAILED", since=mark, timeout=30)
    assert failed.get("REASON") == "gave up after 3 attempts: connection lost", failed
    platform.wait_for_report("D1", OLD, since=mark)
    time.sleep(1)
    assert len(faults.requests("short")) == 3
    assert dv.hook_calls() == []
    job = dv.job()
    assert job.get("phase") == "failed" and job.get("fetched", 0) >= 4 * MiB, job


# -- memory: a 1 GiB image in constant memory ----------------------------------

def _rss_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def test_1gib_image_peak_rss_within_1mib_of_idle(device, nginx, www, platform):
    """Issue 4: a 1 GiB image downloads, is verified and installed with the
    daemon's peak RSS (VmHWM) no more than 1 MiB above its idle RSS."""
    block = os.urandom(MiB)
    path = www / "big.img"
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(block)
            sha.update(block)
    dv = device(nginx).start()
    platform.wait_for_report("D1", timeout=15)
    time.sleep(1)
    pid = dv.d.pid
    idle = _rss_kib(pid, "VmRSS")
    hwm_before = _rss_kib(pid, "VmHWM")
    started = time.monotonic()
    cmd_id, mark = dv.send(nginx.url("big.img"), "2.0.1", size=1024 * MiB, sha256=sha.hexdigest())
    platform.wait_for_report("D1", "2.0.1", since=mark, timeout=120)
    elapsed = time.monotonic() - started
    peak = _rss_kib(pid, "VmHWM")
    growth = peak - max(idle, hwm_before)
    print("\n1 GiB OTA: %.1f s; idle RSS %d KiB, peak RSS (VmHWM) %d KiB, growth %d KiB (limit 1024)"
          % (elapsed, idle, peak, growth))
    assert growth <= 1024, "peak RSS grew by %d KiB over idle" % growth
