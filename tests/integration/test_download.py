# SPDX-License-Identifier: Apache-2.0
"""krtiot-fetch, the downloader (src/fetch/), as krtiotd runs it: the URL on
standard input, status lines on a pipe (--status-fd), against a real nginx
and the fault-injecting server. Every test checks the bytes on disk or the
server's own record of the requests, not just the exit status.

The binary: $KRTIOT_BUILD_DIR/src/fetch/krtiot-fetch (default
/work/main/build). Run: /usr/bin/python3 -m pytest -v -rs tests/integration/test_download.py
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest

from faultserver import FaultServer
from nginx import Nginx

BUILD_DIR = os.environ.get("KRTIOT_BUILD_DIR", "/work/main/build")
FETCH = os.path.join(BUILD_DIR, "src", "fetch", "krtiot-fetch")
MiB = 1024 * 1024

ENOENT, EACCES, ENOSPC, EINVAL, EFBIG = -2, -13, -28, -22, -27
ELOOP, EBADMSG, EPROTONOSUPPORT, ETIMEDOUT, EPERM = -40, -74, -93, -110, -1
EPROTO, EIO, ECONNRESET, EDQUOT, ECANCELED = -71, -5, -104, -122, -125
EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_USAGE = 0, 1, 2, 64


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def md5(data):
    return hashlib.md5(data).hexdigest()


def clean_env():
    """The tests talk to 127.0.0.1 only: no proxy from the environment may intervene."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "*"
    return env


def parse_status(line):
    """One fetch-wire status line (src/shared/fetch-wire.h) as a dict: "event" is its verb."""
    verb, *fields = line.rstrip("\n").split(" ")
    ev = {"event": verb}
    for f in fields:
        k, v = f.split("=", 1)
        assert k not in ev, line
        ev[k] = urllib.parse.unquote(v)
    for k in ("done", "total", "offset", "fetched", "error"):
        if k in ev:
            ev[k] = int(ev[k])
    for k in {"checkpoint": ("etag", "last_modified"), "result": ("reason", "sha256")}.get(verb, ()):
        ev.setdefault(k, None)  # absent: none
    return ev


def int_arg(args, name, default=0):
    args = [str(a) for a in args]
    return int(args[args.index(name) + 1]) if name in args else default


class Result:
    """What one run of krtiot-fetch said: its status lines (events), and in
    .done the result line with what a person would also ask (bytes this run
    fetched, attempts, time), taken from the status lines and the log."""

    def __init__(self, returncode, status, stdout, stderr, elapsed, args):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.events = [parse_status(line) for line in status.splitlines() if line.strip()]
        results = self.of("result")
        assert len(results) <= 1 and (not results or self.events[-1] is results[0]), \
            "one result line, the last: %r" % self.events
        self.done = None
        if results:
            r = results[0]
            cps = self.of("checkpoint")
            before = int_arg(args, "--bytes-fetched")
            self.done = {
                "event": "done",
                "result": r["error"],
                "reason": r.get("reason"),
                "sha256": r.get("sha256"),
                "bytes_fetched": cps[-1]["fetched"] - before if cps else 0,
                "attempts": 1 + len(re.findall(r"Download attempt \d+ of .* retrying in", stderr)),
                "elapsed_s": elapsed,
            }

    def of(self, kind):
        return [e for e in self.events if e["event"] == kind]

    def __repr__(self):
        return "exit %s after %.2fs, last: %s, stderr: %s" % (
            self.returncode, self.elapsed, self.events[-3:], self.stderr[-1500:])


def check_sanitizers(stderr):
    assert "AddressSanitizer" not in stderr and "runtime error:" not in stderr \
        and "LeakSanitizer" not in stderr, stderr


class Fetch:
    """krtiot-fetch running: its status lines read from a pipe as they come (.lines, a
    thread), stdout and stderr collected. URL_ON_STDIN: "-" and the URL on stdin, as
    krtiotd passes it; else the URL on the command line. WRAP: a command put before it."""

    def __init__(self, url, part, *args, url_on_stdin=True, wrap=(), env=None):
        self.args = [str(a) for a in args]
        r, w = os.pipe()  # w is never 1: krtiot-fetch's stdout must stay silent
        cmd = [*wrap, FETCH, "--status-fd", str(w), *self.args, "-" if url_on_stdin else url, str(part)]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env or clean_env(), pass_fds=(w,))
        os.close(w)
        self.lines = []
        self._status = os.fdopen(r, "r")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if url_on_stdin:
            self.proc.stdin.write((url + "\n").encode())
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again

    def _read(self):
        for line in self._status:
            self.lines.append(line)

    def wait_event(self, pred, timeout=30):
        """The first status line (as a dict) for which PRED is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                ev = parse_status(self.lines[seen])
                seen += 1
                if pred(ev):
                    return ev
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError("no such status line in %r" % self.lines)

    def finish(self, timeout=90):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        elapsed = time.monotonic() - self.start
        self._reader.join(10)
        self._status.close()
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        check_sanitizers(err)
        return Result(self.proc.returncode, "".join(self.lines), out, err, elapsed, self.args)


def run_fetch(url, part, *args, timeout=90, url_on_stdin=True, wrap=()):
    res = Fetch(url, part, *args, url_on_stdin=url_on_stdin, wrap=wrap).finish(timeout)
    assert res.done is not None, res
    assert res.stdout == "" or wrap, "krtiot-fetch printed on stdout: %r" % res.stdout
    return res


def assert_ok(res, data, part):
    assert res.returncode == EXIT_OK, res
    assert res.done["result"] == 0 and res.done["reason"] is None, res
    assert res.done["sha256"] == sha256(data), res
    with open(part, "rb") as f:
        assert f.read() == data


def assert_fail(res, error, reason_part):
    assert res.returncode == EXIT_FAILED, res
    assert res.done["result"] == error, res
    assert reason_part in res.done["reason"], res


def head(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
        return r.headers


@pytest.fixture(scope="session", autouse=True)
def fetch_binary():
    if not os.access(FETCH, os.X_OK):
        pytest.skip("krtiot-fetch is not built at %s (set KRTIOT_BUILD_DIR to the build directory)" % FETCH)


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    os.chmod(d, 0o755)
    return d


def put(www, name, data):
    with open(os.path.join(www, name), "wb") as f:
        f.write(data)
    return data


@pytest.fixture(scope="module")
def image(www):
    """3 MiB and a bit: several write chunks, several re-hash chunks, odd size."""
    return put(www, "image.bin", os.urandom(3 * MiB + 17))


@pytest.fixture(scope="module")
def ngx(www, image):
    with Nginx(www) as n:
        yield n


@pytest.fixture(scope="module")
def fimg():
    return os.urandom(2 * MiB + 5)


@pytest.fixture(scope="module")
def fault(fimg):
    with FaultServer({"img": fimg, "big": os.urandom(12 * MiB)}) as s:
        yield s


@pytest.fixture
def part(tmp_path):
    return tmp_path / "job.part"


@pytest.fixture
def key(request):
    """One faultserver key per test: its request counters and log."""
    return request.node.name


def nginx_requests(ngx, path):
    return [line for line in ngx.access_log() if ('"GET /%s ' % path) in line]


# ---------------------------------------------------------------- nginx: basics


def test_full_download_is_verified_and_reports_checkpoint(ngx, image, part):
    res = run_fetch(ngx.url("image.bin"), part, "--size", len(image), "--sha256", sha256(image).upper(),
                    "--md5", md5(image))
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image)
    cps = res.of("checkpoint")
    assert cps and all(c["etag"] == head(ngx.url("image.bin"))["ETag"] for c in cps), res
    offsets = [c["offset"] for c in cps]
    assert offsets == sorted(offsets) and offsets[-1] <= len(image), res
    assert all(p["total"] == len(image) for p in res.of("progress")), res
    assert os.stat(part).st_mode & 0o777 == 0o600


def test_sha256_mismatch_fails(ngx, image, part):
    res = run_fetch(ngx.url("image.bin"), part, "--sha256", sha256(b"other"))
    assert_fail(res, EBADMSG, "SHA-256 mismatch")
    assert res.done["sha256"] == sha256(image), "the actual hash is reported for the log"


def test_md5_mismatch_fails(ngx, image, part):
    res = run_fetch(ngx.url("image.bin"), part, "--sha256", sha256(image), "--md5", md5(b"other"))
    assert_fail(res, EBADMSG, "MD5 mismatch")


@pytest.mark.parametrize("delta", [-1, +1])
def test_size_mismatch_fails_at_headers(ngx, image, part, delta):
    res = run_fetch(ngx.url("image.bin"), part, "--size", len(image) + delta)
    assert_fail(res, EBADMSG, "SIZE mismatch: server has %d bytes" % len(image))
    assert res.done["bytes_fetched"] == 0


@pytest.mark.parametrize("opt,value,what", [
    ("--sha256", "abc", "malformed expected SHA-256"),
    ("--sha256", "g" * 64, "malformed expected SHA-256"),
    ("--md5", "0" * 31, "malformed expected MD5"),
])
def test_malformed_expected_hash_is_final_without_request(ngx, image, part, opt, value, what):
    before = len(nginx_requests(ngx, "image.bin"))
    res = run_fetch(ngx.url("image.bin"), part, opt, value)
    assert_fail(res, EINVAL, what)
    assert len(nginx_requests(ngx, "image.bin")) == before


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"])
def test_initial_url_must_be_http(part, url):
    res = run_fetch(url, part)
    assert_fail(res, EINVAL, "URL is not http:// or https://")
    assert res.done["bytes_fetched"] == 0


def test_404_from_nginx_is_final(ngx, part):
    res = run_fetch(ngx.url("missing.bin"), part, "--retries", 5, "--retry-delay-ms", 2000)
    assert_fail(res, ENOENT, "HTTP 404")
    assert len(nginx_requests(ngx, "missing.bin")) == 1


# ---------------------------------------------------------------- nginx: resume


def test_resume_from_partial_file_with_etag(ngx, image, part):
    half = len(image) // 2
    part.write_bytes(image[:half])
    etag = head(ngx.url("image.bin"))["ETag"]
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", half, "--etag", etag, "--sha256", sha256(image))
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image) - half
    assert '" 206 ' in nginx_requests(ngx, "image.bin")[-1]


def test_resume_with_last_modified_only(ngx, image, part):
    half = len(image) // 3
    part.write_bytes(image[:half])
    lm = head(ngx.url("image.bin"))["Last-Modified"]
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", half, "--last-modified", lm)
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image) - half


def test_bytes_past_the_checkpoint_are_dropped(ngx, image, part):
    half = len(image) // 2
    part.write_bytes(image[:half] + b"\0" * 100000)  # written after the last checkpoint, garbage
    etag = head(ngx.url("image.bin"))["ETag"]
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", half, "--etag", etag)
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image) - half


@pytest.mark.parametrize("validator", [[], ["--etag", 'W/"weak"']])
def test_resume_without_usable_validator_starts_over(ngx, image, part, validator):
    half = len(image) // 2
    part.write_bytes(image[:half])
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", half, *validator)
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image)


def test_resume_offset_beyond_file_starts_over(ngx, image, part):
    part.write_bytes(image[:1000])
    etag = head(ngx.url("image.bin"))["ETag"]
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", 5000, "--etag", etag)
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image)


def test_changed_file_on_server_is_refetched_whole(ngx, www, part):
    old = put(www, "changing.bin", os.urandom(MiB + 3))
    etag = head(ngx.url("changing.bin"))["ETag"]
    half = len(old) // 2
    part.write_bytes(old[:half])
    new = put(www, "changing.bin", os.urandom(MiB + 1000))
    os.utime(os.path.join(www, "changing.bin"), (time.time() + 10, time.time() + 10))
    assert head(ngx.url("changing.bin"))["ETag"] != etag
    res = run_fetch(ngx.url("changing.bin"), part, "--resume-offset", half, "--etag", etag)
    assert_ok(res, new, part)
    assert res.done["bytes_fetched"] == len(new)
    new_etag = head(ngx.url("changing.bin"))["ETag"]
    assert res.of("checkpoint")[0]["etag"] == new_etag, "the journal must learn the new validator"


def test_corrupt_prefix_is_caught_and_refetched_whole_once(ngx, image, part):
    half = len(image) // 2
    part.write_bytes(b"\xff" * half)
    etag = head(ngx.url("image.bin"))["ETag"]
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", half, "--etag", etag, "--sha256", sha256(image))
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == len(image) - half + len(image)
    assert "fetching it whole again" in res.stderr


def test_complete_part_file_needs_no_body(ngx, image, part):
    part.write_bytes(image)
    etag = head(ngx.url("image.bin"))["ETag"]
    before = len(nginx_requests(ngx, "image.bin"))
    # SIZE known: verified from disk, no request at all.
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", len(image), "--etag", etag, "--size", len(image),
                    "--sha256", sha256(image))
    assert_ok(res, image, part)
    assert len(nginx_requests(ngx, "image.bin")) == before
    # SIZE unknown: the server answers 416 */SIZE, which says we have it all.
    res = run_fetch(ngx.url("image.bin"), part, "--resume-offset", len(image), "--etag", etag, "--sha256", sha256(image))
    assert_ok(res, image, part)
    assert res.done["bytes_fetched"] == 0
    assert '" 416 ' in nginx_requests(ngx, "image.bin")[-1]


def test_resume_after_stop_from_own_checkpoint(ngx, www, part):
    """The daemon's real flow: run, persist the checkpoints, get stopped (SIGTERM), start again from
    the last checkpoint, which the stop itself wrote."""
    data = put(www, "slow.bin", os.urandom(8 * MiB))
    f = Fetch(ngx.url("slow.bin"), part, "--rate-limit", MiB)
    try:
        # The first checkpoints follow the headers; this one is the periodic one (every 5 s).
        periodic = f.wait_event(lambda e: e["event"] == "checkpoint" and e["offset"] >= 3 * MiB, timeout=30)
        f.proc.send_signal(signal.SIGTERM)
        stopped = f.finish(timeout=30)
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()
    assert stopped.returncode == EXIT_CANCELLED, stopped
    assert stopped.done["result"] == ECANCELED and stopped.done["reason"] == "cancelled", stopped
    last = stopped.of("checkpoint")[-1]
    assert last["etag"] and last["offset"] >= periodic["offset"], stopped
    assert 3 * MiB <= last["offset"] < len(data)  # a time checkpoint, about 5 s in, or the stop's
    assert last["offset"] == os.path.getsize(part), "the stop's checkpoint is what is on disk"
    res = run_fetch(ngx.url("slow.bin"), part, "--resume-offset", last["offset"], "--etag", last["etag"],
                    "--last-modified", last["last_modified"], "--bytes-fetched", last["fetched"],
                    "--sha256", sha256(data))
    assert_ok(res, data, part)
    assert res.done["bytes_fetched"] == len(data) - last["offset"]
    assert res.of("checkpoint")[-1]["fetched"] == len(data), "counted on from the stop's checkpoint"


# ---------------------------------------------------------------- nginx: limits


def test_rate_limit_is_honored(ngx, www, part):
    data = put(www, "two.bin", os.urandom(2 * 1000 * 1000))
    res = run_fetch(ngx.url("two.bin"), part, "--rate-limit", 1000 * 1000)
    assert_ok(res, data, part)
    print("2 MB at 1 MB/s took %.2f s" % res.done["elapsed_s"])
    assert res.done["elapsed_s"] >= 1.5, res
    assert res.done["elapsed_s"] < 4, res
    # Progress at most about once a second.
    assert 1 <= len(res.of("progress")) <= 4, res


def test_max_size_from_content_length(ngx, image, part):
    res = run_fetch(ngx.url("image.bin"), part, "--max-size", MiB)
    assert_fail(res, EFBIG, "larger than max_image_size")
    assert res.done["bytes_fetched"] == 0
    assert os.path.getsize(part) == 0


def test_size_beyond_max_size_fails_without_request(ngx, image, part):
    before = len(nginx_requests(ngx, "image.bin"))
    res = run_fetch(ngx.url("image.bin"), part, "--max-size", MiB, "--size", len(image))
    assert_fail(res, EFBIG, "larger than max_image_size")
    assert len(nginx_requests(ngx, "image.bin")) == before


def test_free_space_huge_size_fails_early(ngx, image, part):
    before = len(nginx_requests(ngx, "image.bin"))
    res = run_fetch(ngx.url("image.bin"), part, "--size", 1 << 62)
    assert_fail(res, ENOSPC, "no space left: need %d, have " % (1 << 62))
    assert len(nginx_requests(ngx, "image.bin")) == before
    assert res.elapsed < 5


@pytest.fixture
def small_fs():
    """An 8 MiB tmpfs (needs CAP_SYS_ADMIN)."""
    d = tempfile.mkdtemp(prefix="krtiot-smallfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", d], capture_output=True,
                       text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a small tmpfs (%s); the huge --size test covers the early check" %
                    r.stderr.strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=True)
        os.rmdir(d)


def test_free_space_from_size_on_small_fs(ngx, image, small_fs):
    part = os.path.join(small_fs, "job.part")
    res = run_fetch(ngx.url("image.bin"), part, "--size", 16 * MiB)
    assert_fail(res, ENOSPC, "no space left: need %d, have " % (16 * MiB))
    assert res.done["bytes_fetched"] == 0


def test_free_space_from_content_length_on_small_fs(ngx, www, small_fs):
    put(www, "twelve.bin", os.urandom(12 * MiB))
    part = os.path.join(small_fs, "job.part")
    res = run_fetch(ngx.url("twelve.bin"), part)
    assert_fail(res, ENOSPC, "no space left: need %d, have " % (12 * MiB))
    assert res.done["bytes_fetched"] == 0
    assert os.path.getsize(part) == 0


def test_disk_full_without_length_is_final(fault, small_fs, key):
    part = os.path.join(small_fs, "job.part")
    res = run_fetch(fault.url("big", key=key, no_length=1), part, "--retries", 3)
    assert_fail(res, ENOSPC, "No space left on device")
    assert len(fault.requests(key)) == 1


# ---------------------------------------------------------------- nginx: TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory, www, image):
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a test certificate")
    d = tmp_path_factory.mktemp("tls")

    def cert(name, san):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=krtiot-test", "-addext", "subjectAltName=" + san,
                        "-keyout", str(d / (name + ".key")), "-out", str(d / (name + ".pem"))],
                       check=True, capture_output=True)
        return str(d / (name + ".pem")), str(d / (name + ".key"))

    good, wrong_host = cert("good", "IP:127.0.0.1"), cert("wrong", "DNS:elsewhere.example")
    with Nginx(www, tls_cert=good[0], tls_key=good[1]) as a, \
            Nginx(www, tls_cert=wrong_host[0], tls_key=wrong_host[1]) as b:
        yield {"good": a, "good_ca": good[0], "wrong": b, "wrong_ca": wrong_host[0]}


def test_https_with_ca_file(tls, image, part):
    res = run_fetch(tls["good"].url("image.bin"), part, "--ca-file", tls["good_ca"], "--sha256", sha256(image))
    assert_ok(res, image, part)


def test_https_unknown_issuer_is_refused_at_once(tls, image, part):
    res = run_fetch(tls["good"].url("image.bin"), part, "--retries", 3, "--retry-delay-ms", 2000)
    assert_fail(res, EPERM, "TLS verification failed")
    assert res.done["attempts"] == 1 and res.done["bytes_fetched"] == 0


def test_https_wrong_host_is_refused(tls, image, part):
    res = run_fetch(tls["wrong"].url("image.bin"), part, "--ca-file", tls["wrong_ca"], "--retries", 0)
    assert_fail(res, EPERM, "TLS verification failed")
    assert res.done["bytes_fetched"] == 0


# ---------------------------------------------------------------- faultserver


def ranges(fault, key):
    return [r["range"] for r in fault.requests(key)]


def test_dropped_connections_resume_by_range(fault, fimg, part, key):
    n = 500000
    res = run_fetch(fault.url("img", key=key, drop=n, drops=3), part, "--retries", 3, "--retry-delay-ms", 50,
                    "--sha256", sha256(fimg))
    assert_ok(res, fimg, part)
    assert res.done["bytes_fetched"] <= 1.1 * len(fimg)
    assert ranges(fault, key) == [None, "bytes=%d-" % n, "bytes=%d-" % (2 * n), "bytes=%d-" % (3 * n)]
    assert all(r["if_range"] == '"img-v0"' for r in fault.requests(key)[1:])
    # Progress was saved before each wait (and again when each response was accepted).
    offsets = [c["offset"] for c in res.of("checkpoint")]
    assert {n, 2 * n, 3 * n} <= set(offsets) and offsets == sorted(offsets), res


@pytest.mark.parametrize("status,error", [(404, ENOENT), (410, ENOENT), (403, EACCES), (401, EACCES),
                                          (400, -71)])
def test_client_errors_are_final_at_once(fault, part, key, status, error):
    res = run_fetch(fault.url("img", key=key, status=status), part, "--retries", 5, "--retry-delay-ms", 2000)
    assert_fail(res, error, "HTTP %d" % status)
    assert res.done["reason"] == "HTTP %d" % status
    assert len(fault.requests(key)) == 1
    assert res.elapsed < 1.5


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_transient_errors_are_retried_then_given_up(fault, part, key, status):
    res = run_fetch(fault.url("img", key=key, status=status), part, "--retries", 2, "--retry-delay-ms", 50)
    assert res.returncode == 1, res
    assert res.done["reason"] == "gave up after 3 attempts: HTTP %d" % status, res
    assert len(fault.requests(key)) == 3


def test_transient_error_then_success(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, status=503, status_times=2), part, "--retries", 2,
                    "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert len(fault.requests(key)) == 3


def test_retry_after_is_honored(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, status=503, status_times=1, retry_after=2), part,
                    "--retries", 1, "--retry-delay-ms", 10, "--retry-max-ms", 10000)
    assert_ok(res, fimg, part)
    assert res.elapsed >= 2


def test_connection_refused_is_retried(part):
    with FaultServer() as s:
        port = s.port
    res = run_fetch("http://127.0.0.1:%d/img" % port, part, "--retries", 1, "--retry-delay-ms", 50)
    assert res.returncode == 1, res
    assert res.done["reason"] == "gave up after 2 attempts: cannot connect", res


def test_redirect_loop_is_too_many_redirects(fault, part, key):
    res = run_fetch(fault.url("img", key=key, redirect="loop"), part, "--max-redirects", 4)
    assert_fail(res, ELOOP, "too many redirects")
    assert len(fault.requests(key)) == 5


def test_redirect_is_followed_within_limit(fault, fimg, part, key):
    assert_ok(run_fetch(fault.url("img", key=key, redirect="once"), part), fimg, part)
    res = run_fetch(fault.url("img", key=key + "0", redirect="once"), part, "--max-redirects", 0)
    assert_fail(res, ELOOP, "too many redirects")


@pytest.mark.parametrize("target", ["file", "ftp"])
def test_redirect_to_other_protocol_is_refused(fault, part, key, target):
    res = run_fetch(fault.url("img", key=key, redirect=target), part, "--retries", 3)
    assert_fail(res, EPROTONOSUPPORT, "redirect to a forbidden protocol")
    assert res.done["bytes_fetched"] == 0
    assert len(fault.requests(key)) == 1
    assert not os.path.exists(part) or os.path.getsize(part) == 0, "nothing of /etc/passwd may be read"


def test_server_ignoring_range_is_refetched_whole(fault, fimg, part, key):
    half = len(fimg) // 2
    part.write_bytes(fimg[:half])
    res = run_fetch(fault.url("img", key=key, ignore_range=1), part, "--resume-offset", half, "--etag", '"img-v0"',
                    "--sha256", sha256(fimg))
    assert_ok(res, fimg, part)
    assert res.done["bytes_fetched"] == len(fimg)
    assert ranges(fault, key) == ["bytes=%d-" % half]


def test_server_ignoring_range_after_drop(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, ignore_range=1, drop=300000, drops=1), part, "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert res.done["bytes_fetched"] == 300000 + len(fimg)


def test_file_changed_between_attempts(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, change=1, drop=300000, drops=1), part, "--retry-delay-ms", 50)
    assert_ok(res, fault.image("img", 2), part)
    reqs = fault.requests(key)
    assert reqs[1]["if_range"] == '"img-v1"' and reqs[1]["range"] == "bytes=300000-"
    assert res.done["bytes_fetched"] == 300000 + len(fimg)


def test_wrong_content_range_restarts_from_zero(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, bad_range=1, drop=300000, drops=1), part, "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, "bytes=300000-", None]


def test_wrong_bytes_fail_verification(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, wrong=1), part, "--sha256", sha256(fimg))
    assert_fail(res, EBADMSG, "SHA-256 mismatch")
    res = run_fetch(fault.url("img", key=key, wrong=1), part, "--md5", md5(fimg))
    assert_fail(res, EBADMSG, "MD5 mismatch")


@pytest.mark.parametrize("fault_args", [{"stall": 1000}, {"stall_headers": 1}])
def test_stall_is_detected_after_stall_timeout(fault, part, key, fault_args):
    res = run_fetch(fault.url("img", key=key, **fault_args), part, "--stall-timeout", 5, "--retries", 0)
    assert_fail(res, ETIMEDOUT, "download stalled")
    assert res.done["reason"] == "download stalled"
    assert 4.5 <= res.elapsed < 8, res


def test_max_size_without_content_length(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, no_length=1), part, "--max-size", MiB, "--retries", 3)
    assert_fail(res, EFBIG, "larger than max_image_size (%d bytes)" % MiB)
    assert res.done["bytes_fetched"] <= MiB
    assert os.path.getsize(part) <= MiB
    assert len(fault.requests(key)) == 1


def test_size_checked_without_content_length(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, no_length=1), part, "--size", len(fimg) - 1)
    assert_fail(res, EBADMSG, "SIZE mismatch: more than %d bytes" % (len(fimg) - 1))
    res = run_fetch(fault.url("img", key=key, no_length=1), part, "--size", len(fimg) + 1)
    assert_fail(res, EBADMSG, "SIZE mismatch: got %d bytes" % len(fimg))
    assert_ok(run_fetch(fault.url("img", key=key, no_length=1), part, "--size", len(fimg)), fimg, part)


# ---------------------------------------------------------------- reasons that say what happened (review item 11)


@pytest.mark.parametrize("what", ["ssh", "random", "status", "version", "nocolon"])
def test_response_that_is_not_http(fault, part, key, what):
    """An SSH banner or random bytes used to be "redirect to a forbidden protocol"."""
    res = run_fetch(fault.url("img", key=key, not_http=what), part, "--retries", 3, "--retry-delay-ms", 50)
    assert_fail(res, EPROTO, "the server's response is not HTTP")
    assert res.done["reason"] == "the server's response is not HTTP"
    assert len(fault.requests(key)) == 1


def test_redirect_to_a_response_that_is_not_http(fault, part, key):
    """After a redirect to an http:// URL, it is the answer there that is wrong, not the redirect."""
    res = run_fetch(fault.url("img", key=key, redirect="nothttp"), part, "--retries", 3)
    assert_fail(res, EPROTO, "the server's response is not HTTP")
    assert len(fault.requests(key)) == 2


def test_huge_response_header(fault, part, key):
    res = run_fetch(fault.url("img", key=key, huge_header=1), part, "--retries", 3, "--retry-delay-ms", 50)
    assert_fail(res, EPROTO, "response header too large")
    assert res.done["reason"] == "response header too large"
    assert len(fault.requests(key)) == 1


def test_log_lines_hide_the_url_password(fault, part, key):
    url = fault.url("img", key=key, status=503).replace("http://", "http://user:s3cret@")
    res = run_fetch(url, part, "--retries", 1, "--retry-delay-ms", 50)
    assert res.returncode == 1, res
    assert "Download attempt 1 of http://user:***@127.0.0.1:" in res.stderr, res
    assert "s3cret" not in res.stderr


# ---------------------------------------------------------------- the .part file


def test_part_file_symlink_is_not_followed(fault, part, key, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    os.symlink(target, part)
    res = run_fetch(fault.url("img", key=key), part)
    assert_fail(res, EIO, "%s is a symbolic link" % part)
    assert target.read_bytes() == b"precious"
    assert fault.requests(key) == []
    # A dangling one is not created through either.
    os.unlink(part)
    os.symlink(tmp_path / "nowhere", part)
    res = run_fetch(fault.url("img", key=key), part)
    assert_fail(res, EIO, "is a symbolic link")
    assert not os.path.exists(tmp_path / "nowhere")


def test_part_file_fifo_is_refused(fault, part, key):
    os.mkfifo(part)
    res = run_fetch(fault.url("img", key=key), part, timeout=10)
    assert_fail(res, EIO, "%s is not a regular file" % part)
    assert fault.requests(key) == []


# ---------------------------------------------------------------- only a 200, or our 206, whole, is an image (review item 7)


@pytest.mark.parametrize("status", [204, 202, 203])
def test_2xx_other_than_200_is_not_an_image(fault, part, key, status):
    res = run_fetch(fault.url("img", key=key, status=status), part, "--retries", 3, "--retry-delay-ms", 50)
    assert_fail(res, EPROTO, "HTTP %d: not an image" % status)
    assert res.done["sha256"] is None
    assert len(fault.requests(key)) == 1


@pytest.mark.parametrize("faults,reason", [({"cl_overflow": 1}, "invalid Content-Length"),
                                           ({"cl_twice": 1}, "conflicting Content-Length headers")])
def test_bad_content_length_is_refused(fault, part, key, faults, reason):
    """libcurl 7.88 reads an overflowing Content-Length as none and takes the
    last of two: either way a cut body ended as a "complete" image."""
    res = run_fetch(fault.url("img", key=key, **faults), part, "--retries", 3, "--retry-delay-ms", 50)
    assert_fail(res, EPROTO, reason)
    assert res.done["sha256"] is None and res.done["bytes_fetched"] == 0
    assert len(fault.requests(key)) == 1


def test_206_short_of_the_total_is_not_complete(fault, fimg, part, key):
    """A 206 that sends less than the rest of the file (its own Content-Range
    and Content-Length agree) leaves the file incomplete: carry on from there."""
    res = run_fetch(fault.url("img", key=key, drop=300000, drops=1, range_short=1100000), part,
                    "--retries", 1, "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, "bytes=300000-", "bytes=1400000-"]
    assert res.done["bytes_fetched"] == len(fimg)


def test_206_whose_content_length_disagrees_starts_over(fault, fimg, part, key):
    res = run_fetch(fault.url("img", key=key, drop=300000, drops=1, range_len=1), part, "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, "bytes=300000-", None]


# ---------------------------------------------------------------- resume without validators (review item 6)


@pytest.mark.parametrize("hashopt", ["--sha256", "--md5"])
def test_drop_without_validators_resumes_when_a_hash_is_given(fault, fimg, part, key, hashopt):
    n = 500000
    digest = sha256(fimg) if hashopt == "--sha256" else md5(fimg)
    res = run_fetch(fault.url("img", key=key, drop=n, drops=1, no_validators=1), part, hashopt, digest,
                    "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, "bytes=%d-" % n]
    assert all(r["if_range"] is None for r in fault.requests(key)), "no validator, no If-Range"
    assert res.done["bytes_fetched"] == len(fimg)
    cps = res.of("checkpoint")
    assert n in [c["offset"] for c in cps] and all(c["etag"] is None for c in cps), res


def test_drop_without_validators_or_hash_starts_over(fault, fimg, part, key):
    n = 500000
    res = run_fetch(fault.url("img", key=key, drop=n, drops=1, no_validators=1), part, "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, None]
    assert res.done["bytes_fetched"] == n + len(fimg)


def test_restart_without_validators_resumes_when_a_hash_is_given(fault, fimg, part, key):
    """The journal's offset with no ETag/Last-Modified but a SHA256: a daemon
    restart continues with a plain Range instead of fetching it all again."""
    n = 700000
    part.write_bytes(fimg[:n])
    res = run_fetch(fault.url("img", key=key, no_validators=1), part, "--resume-offset", n, "--sha256", sha256(fimg))
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == ["bytes=%d-" % n]
    assert res.done["bytes_fetched"] == len(fimg) - n
    # Without the hash the same offset is not trusted.
    part.write_bytes(fimg[:n])
    res = run_fetch(fault.url("img", key=key + "0", no_validators=1), part, "--resume-offset", n)
    assert_ok(res, fimg, part)
    assert ranges(fault, key + "0") == [None]
    assert res.done["bytes_fetched"] == len(fimg)


def test_plain_range_resume_with_bad_prefix_starts_over_once(fault, fimg, part, key):
    n = 700000
    part.write_bytes(b"\xff" * n)
    res = run_fetch(fault.url("img", key=key, no_validators=1), part, "--resume-offset", n, "--sha256", sha256(fimg))
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == ["bytes=%d-" % n, None]
    assert res.done["bytes_fetched"] == len(fimg) - n + len(fimg)
    assert "fetching it whole again" in res.stderr
    # Once: a server whose file never matches the hash is not fetched a third time.
    part.write_bytes(b"\xff" * n)
    res = run_fetch(fault.url("img", key=key + "0", no_validators=1, wrong=1), part, "--resume-offset", n,
                    "--sha256", sha256(fimg))
    assert_fail(res, EBADMSG, "SHA-256 mismatch")
    assert ranges(fault, key + "0") == ["bytes=%d-" % n, None]


@pytest.mark.parametrize("validators", ["none", "etag"])
def test_206_with_another_total_starts_over(fault, fimg, part, key, validators):
    """The 206's Content-Range total must be the size the 200 declared."""
    faults = dict(drop=300000, drops=1, bad_total=1)
    if validators == "none":
        faults["no_validators"] = 1
    res = run_fetch(fault.url("img", key=key, **faults), part, "--sha256", sha256(fimg), "--retry-delay-ms", 50)
    assert_ok(res, fimg, part)
    assert ranges(fault, key) == [None, "bytes=300000-", None]


# ---------------------------------------------------------------- bounded retries (review item 4)


def test_server_cutting_every_response_ends_within_the_retries(fault, part, key):
    """Content-Length larger than the body, no validators: each attempt starts
    over from byte 0 and brings 2 MiB, which used to renew the retry budget
    forever (111 requests, 333 MiB in 60 s). Only progress past the best
    offset reached renews it: 3 attempts with --retries 2, then the end."""
    res = run_fetch(fault.url("big", key=key, short=2 * MiB, no_validators=1), part, "--retries", 2,
                    "--retry-delay-ms", 50, timeout=30)
    assert_fail(res, ECONNRESET, "gave up after 3 attempts: connection lost")
    assert len(fault.requests(key)) == 3
    assert res.done["bytes_fetched"] == 3 * 2 * MiB
    assert res.elapsed < 10, res
    # The running total, saved before each wait, is what a restarted daemon continues counting from.
    totals = [c["fetched"] for c in res.of("checkpoint")]
    assert totals == sorted(totals) and {2 * MiB, 4 * MiB} <= set(totals), res


def test_bytes_fetched_for_one_job_are_capped(fault, part, key):
    """A server that lets each attempt get 1 MiB further than the last (so
    each one renews the retries) but always from byte 0: the job stops at
    3 x the declared size + 1 MiB instead of fetching 78 MiB for 12."""
    res = run_fetch(fault.url("big", key=key, short=MiB, short_grow=1, no_validators=1), part, "--retries", 2,
                    "--retry-delay-ms", 50, timeout=60)
    assert_fail(res, EDQUOT, "gave up: fetched 37.0 MiB for an image of 12.0 MiB")
    assert res.done["bytes_fetched"] <= 3 * 12 * MiB + MiB
    assert len(fault.requests(key)) <= 9
    assert res.elapsed < 20, res


def test_bytes_fetched_cap_holds_across_restarts(fault, part, key):
    big = fault.images["big"]
    # Already fetched the whole allowance in earlier runs, SIZE known: not one more request.
    res = run_fetch(fault.url("big", key=key), part, "--size", len(big), "--bytes-fetched", 3 * len(big) + MiB)
    assert_fail(res, EDQUOT, "gave up: fetched 37.0 MiB for an image of 12.0 MiB")
    assert fault.requests(key) == [] and res.done["bytes_fetched"] == 0
    # No SIZE: the allowance follows the server's declared size once it is known.
    res = run_fetch(fault.url("big", key=key + "0"), part, "--bytes-fetched", 36 * MiB, "--retries", 3)
    assert_fail(res, EDQUOT, "for an image of 12.0 MiB")
    assert res.done["bytes_fetched"] <= MiB
    assert len(fault.requests(key + "0")) == 1
    # No size known at all: 3 x max_image_size.
    res = run_fetch(fault.url("big", key=key + "1"), part, "--max-size", 16 * MiB, "--bytes-fetched", 49 * MiB)
    assert_fail(res, EDQUOT, "gave up: fetched 49.0 MiB for an image of at most 16.0 MiB")
    assert fault.requests(key + "1") == []
    # Positive control: below the allowance the same download completes, and counts on from there.
    res = run_fetch(fault.url("big", key=key + "2"), part, "--bytes-fetched", 20 * MiB)
    assert_ok(res, big, part)
    assert res.of("checkpoint")[-1]["fetched"] == 20 * MiB + len(big)


# ---------------------------------------------------------------- cancellation, signals, parent


def stop_with(f, sig):
    """Sends SIG; returns the Result and how long the exit took after it."""
    sent = time.monotonic()
    f.proc.send_signal(sig)
    res = f.finish(timeout=20)
    return res, time.monotonic() - sent


def test_sigterm_after_first_checkpoint_ends_with_checkpoint_and_exit_2(ngx, image, part):
    f = Fetch(ngx.url("image.bin"), part, "--rate-limit", MiB)
    f.wait_event(lambda e: e["event"] == "checkpoint")
    res, took = stop_with(f, signal.SIGTERM)
    assert res.returncode == EXIT_CANCELLED and res.done["result"] == ECANCELED, res
    assert res.done["reason"] == "cancelled" and res.done["sha256"] is None, res
    assert took < 1.0, "SIGTERM took %.2f s to stop the transfer" % took
    assert res.of("checkpoint")[-1]["offset"] == os.path.getsize(part) < len(image), res
    assert "cancelled" in res.stderr


def test_sigint_mid_transfer_stops_promptly(ngx, image, part):
    f = Fetch(ngx.url("image.bin"), part, "--rate-limit", MiB)
    f.wait_event(lambda e: e["event"] == "progress" and e["done"] >= MiB)
    res, took = stop_with(f, signal.SIGINT)
    assert res.returncode == EXIT_CANCELLED and res.done["result"] == ECANCELED, res
    assert took < 1.0, "SIGINT took %.2f s to stop the transfer" % took
    last = res.of("checkpoint")[-1]
    assert MiB <= last["offset"] == os.path.getsize(part) < len(image), res
    assert MiB <= res.done["bytes_fetched"] < len(image)


def test_sigterm_while_waiting_to_retry(fault, part, key):
    """Retry-After: 30 makes the wait 30 s exactly; SIGTERM ends it at once."""
    f = Fetch(fault.url("img", key=key, status=503, retry_after=30), part, "--retries", 5,
              "--retry-max-ms", 30000)
    deadline = time.monotonic() + 10
    while not fault.requests(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    res, took = stop_with(f, signal.SIGTERM)
    assert "retrying in 30000 ms" in res.stderr, res
    assert res.returncode == EXIT_CANCELLED and res.done["reason"] == "cancelled", res
    assert took < 1.0, "the wait to retry ignored SIGTERM for %.2f s" % took
    assert len(fault.requests(key)) == 1


def test_sigterm_while_the_server_stalls(fault, part, key):
    f = Fetch(fault.url("img", key=key, stall_headers=1), part, "--stall-timeout", 30)
    deadline = time.monotonic() + 10
    while not fault.requests(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    res, took = stop_with(f, signal.SIGTERM)
    assert res.returncode == EXIT_CANCELLED and res.done["reason"] == "cancelled", res
    assert took < 1.5, "a stalled transfer ignored SIGTERM for %.2f s" % took


def test_url_password_not_in_cmdline_nor_log(fault, part, key):
    """krtiotd passes the URL on stdin ("-"): ps must not show a password, and no log line does."""
    url = fault.url("img", key=key, stall=300000).replace("http://", "http://user:s3cret-Pw@")
    f = Fetch(url, part, "--stall-timeout", 2, "--retries", 1, "--retry-delay-ms", 50, "-v")
    f.wait_event(lambda e: e["event"] == "checkpoint")
    with open("/proc/%d/cmdline" % f.proc.pid, "rb") as c:
        cmdline = c.read()
    res = f.finish(timeout=30)
    assert b"s3cret" not in cmdline and b"user" not in cmdline, cmdline
    assert b"--status-fd" in cmdline, "positive control: that was krtiot-fetch's command line"
    assert res.returncode == EXIT_FAILED and res.done["reason"] == "gave up after 2 attempts: download stalled", res
    assert "s3cret" not in res.stderr and "s3cret" not in "".join(f.lines)
    assert "http://user:***@127.0.0.1:" in res.stderr, "positive control: the URL was logged, redacted"
    assert fault.requests(key)[0]["path"].startswith("/img"), "positive control: the URL was used"


def test_url_on_the_command_line_works_too(ngx, image, part):
    assert_ok(run_fetch(ngx.url("image.bin"), part, url_on_stdin=False), image, part)


def run_plain(*args, stdin=b""):
    return subprocess.run([FETCH, *map(str, args)], input=stdin, capture_output=True, env=clean_env(), timeout=20)


def test_help_version_and_bad_usage(tmp_path):
    r = run_plain("--help")
    assert r.returncode == 0 and b"--status-fd" in r.stdout and b"--resume-offset" in r.stdout, r
    assert run_plain("-h").stdout == r.stdout
    r = run_plain("--version")
    assert r.returncode == 0 and re.match(rb"krtiot-fetch \d+\.\d+", r.stdout), r
    part = tmp_path / "x.part"
    for args in [(), ("http://127.0.0.1:9/x",), ("--bogus", "http://127.0.0.1:9/x", part),
                 ("--retries", "-1", "http://127.0.0.1:9/x", part), ("--size", "12k", "http://127.0.0.1:9/x", part),
                 ("--status-fd", "77", "http://127.0.0.1:9/x", part), ("a", "b", "c")]:
        r = run_plain(*args)
        assert r.returncode == EXIT_USAGE and r.stdout == b"" and b"krtiot-fetch" in r.stderr, (args, r)
    # "-" with nothing, or too much, on stdin.
    assert run_plain("-", part).returncode == EXIT_USAGE
    assert run_plain("-", part, stdin=b"\n").returncode == EXIT_USAGE
    assert run_plain("-", part, stdin=b"http://127.0.0.1/" + b"x" * 9000 + b"\n").returncode == EXIT_USAGE
    assert not part.exists(), "a usage error touches no file"


# ---------------------------------------------------------------- memory and speed


def peak_rss_kib(stderr):
    """GNU time's %M (maxrss of the child it forked), printed last on stderr. Through time,
    because ru_maxrss survives execve(): a child pytest starts directly would report pytest's."""
    m = re.search(r"^PEAK_RSS_KIB=(\d+)$", stderr, re.M)
    assert m, stderr[-500:]
    return int(m.group(1))


def write_random(path, mib):
    block = os.urandom(MiB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            b = block[i % 4096:] + block[:i % 4096]  # every MiB different: no dedup anywhere helps
            f.write(b)
            h.update(b)
    return h.hexdigest()


def test_peak_rss_is_the_same_for_256_mib_and_1_gib(ngx, www, tmp_path):
    """Constant memory whatever the image size: krtiot-fetch's peak RSS for a 1 GiB image is within
    1 MiB of its peak for a 256 MiB one (SHA-256 given, hashing and writing to disk as it goes)."""
    if not os.access("/usr/bin/time", os.X_OK):
        pytest.fail("/usr/bin/time (Debian package time) is needed to measure a child's peak RSS")
    wrap = ("/usr/bin/time", "-f", "PEAK_RSS_KIB=%M")
    peaks, speeds = {}, {}
    for mib in (256, 1024):
        name = "m%d.bin" % mib
        digest = write_random(os.path.join(www, name), mib)
        part = tmp_path / (name + ".part")
        try:
            res = run_fetch(ngx.url(name), part, "--size", mib * MiB, "--sha256", digest, wrap=wrap, timeout=600)
            assert res.returncode == EXIT_OK and res.done["sha256"] == digest, res
            assert res.done["bytes_fetched"] == mib * MiB
            peaks[mib] = peak_rss_kib(res.stderr)
            speeds[mib] = mib / res.elapsed
        finally:
            os.unlink(os.path.join(www, name))
            if part.exists():
                os.unlink(part)
    print("\nkrtiot-fetch peak RSS: 256 MiB image %d KiB, 1 GiB image %d KiB (difference %+d KiB); "
          "%.0f and %.0f MiB/s (SHA-256, writing to disk, fsync)"
          % (peaks[256], peaks[1024], peaks[1024] - peaks[256], speeds[256], speeds[1024]))
    assert abs(peaks[1024] - peaks[256]) <= 1024, peaks


def test_memory_is_constant_with_a_tiny_image_too(ngx, www, tmp_path):
    """The fixed cost: a 4 KiB image peaks within 1 MiB of a 64 MiB one (no buffer grows with the size)."""
    wrap = ("/usr/bin/time", "-f", "PEAK_RSS_KIB=%M")
    if not os.access(wrap[0], os.X_OK):
        pytest.fail("/usr/bin/time (Debian package time) is needed to measure a child's peak RSS")
    tiny = put(www, "tiny.bin", os.urandom(4096))
    small = run_fetch(ngx.url("tiny.bin"), tmp_path / "tiny.part", wrap=wrap)
    assert_ok(small, tiny, tmp_path / "tiny.part")
    digest = write_random(os.path.join(www, "m64.bin"), 64)
    big = run_fetch(ngx.url("m64.bin"), tmp_path / "m64.part", "--sha256", digest, wrap=wrap, timeout=300)
    os.unlink(os.path.join(www, "m64.bin"))
    assert big.returncode == EXIT_OK and big.done["bytes_fetched"] == 64 * MiB, big
    growth = peak_rss_kib(big.stderr) - peak_rss_kib(small.stderr)
    print("\npeak RSS: 4 KiB image %d KiB, 64 MiB image %d KiB (growth %d KiB)"
          % (peak_rss_kib(small.stderr), peak_rss_kib(big.stderr), growth))
    assert growth <= 1024, "peak RSS grew by %d KiB for a 64 MiB image" % growth
