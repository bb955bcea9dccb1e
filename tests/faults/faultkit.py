# SPDX-License-Identifier: Apache-2.0
"""Helpers of the fault suite (tests/faults/test_faults.py).

  Device            a krtiotd whose hook is the shipped `copy` hook behind a
                    small wrapper (records its calls, runs extra shell lines)
  RestartableNginx  tests/integration's Nginx, stopped (SIGTERM, as `nginx -s
                    stop`) or killed (SIGKILL, workers then master, by PID)
                    and started again on the same port, same prefix and logs
  BrokerKiller      SIGKILL mosquitto and start it again on its port
  CountingRelay     a TCP relay in front of a server that counts the bytes the
                    server sent; nginx does not log a request that a stop or a
                    kill cuts off, so its access log alone cannot say how many
                    bytes it served
  mounted()         mount something for the length of a with block; always
                    unmounted (lazily if busy), even when the block fails
  garbage()         payloads the platform must never send: random bytes,
                    big-but-allowed JSON, deep nesting, oversize, near misses
  rss_kib()         VmRSS/VmHWM of a process

Everything started here listens on 127.0.0.1 and is stopped by PID.
"""

import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time

from daemon import REPO, agent_identity
from nginx import NGINX, Nginx, _wait_listening

COPY_HOOK = os.path.join(REPO, "src", "hooks", "copy")
OLD = "1.0.0"
KiB = 1024
MiB = 1024 * 1024


def wait_until(pred, timeout=10, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def settled_rss(pid, timeout=10, window=1.0):
    """VmRSS once it has not changed for WINDOW seconds (or after TIMEOUT)."""
    deadline = time.monotonic() + timeout
    last, since = rss_kib(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= window:
            break
    return last


def write_image(path, size, seed=None):
    """SIZE pseudo-random bytes at PATH (1 MiB blocks); returns the bytes."""
    rng = random.Random(seed)
    data = bytearray()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(MiB, left)
            block = rng.randbytes(n)
            f.write(block)
            data += block
            left -= n
    return bytes(data)


# -- a device with the copy hook ------------------------------------------------

class Device:
    """A krtiotd (not started) whose hook is a wrapper around the copy hook.

    HOOK_LINES: shell lines the wrapper runs before it execs the copy hook
    ("$1" is the verb). CONFIG: config overrides. KW: passed to krtiotd().
    The wrapper appends "TIME VERB ARGS" to hook.calls."""

    def __init__(self, tmp_path, krtiotd, platform, hook_lines=(), config=None, name=None, **kw):
        self.platform = platform
        tag = name or "dev"
        self.dev = tmp_path / tag
        self.dev.mkdir(exist_ok=True)
        self.slot = self.dev / "slot.img"
        self.slot.write_bytes(b"old slot")
        self.calls = self.dev / "hook.calls"
        if name:
            kw["name"] = name
        self.d = krtiotd(start=False, fw_version=OLD, **kw)
        self.copy_conf = self.dev / "copy.conf"
        self.copy_conf.write_text("COPY_SLOT=%s\nCOPY_VERSION_FILE=%s\nCOPY_REBOOT=0\n"
                                  % (self.slot, self.d.fw_version_path))
        self.hook = self.dev / "hook"
        lines = ["#!/bin/sh", 'echo "$(date +%%s.%%N) $*" >> %s' % self.calls]
        lines += list(hook_lines)
        lines.append('KRTIOT_HOOK_CONFIG=%s exec %s "$@"' % (self.copy_conf, COPY_HOOK))
        self.hook.write_text("\n".join(lines) + "\n")
        self.hook.chmod(0o755)
        cfg = {"ota.hook": str(self.hook), "ota.report_progress": True}
        cfg.update(config or {})
        self.d.write_config(cfg)

    @property
    def id(self):
        return self.d.device_id

    @property
    def download_dir(self):
        return self.d.download_dir

    def start(self, timeout=20):
        mark = self.platform.mark()
        self.d.start()
        self.platform.wait_for_report(self.id, since=mark, timeout=timeout)
        return self

    def send(self, url, version, **kw):
        mark = self.platform.mark()
        cmd_id = self.platform.send_ota(self.d.product_id, self.id, url, version, **kw)
        return cmd_id, mark

    def hook_verbs(self):
        if not self.calls.exists():
            return []
        return [line.split(" ")[1] for line in self.calls.read_text().splitlines()]

    def files(self):
        try:
            return sorted(os.listdir(self.download_dir))
        except FileNotFoundError:
            return []

    def states(self, job_id, since=0):
        return [m.get("STATE") for m in self.platform.messages(self.id, cmd=12, since=since)
                if m.get("ID") == job_id]

    def wait_state(self, job_id, state, since=0, timeout=30):
        return self.platform.wait_for_progress(self.id, job_id, state, since=since, timeout=timeout)

    def journal(self):
        try:
            with open(os.path.join(self.d.state_dir, "ota-journal.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def job(self):
        return (self.journal() or {}).get("job") or {}

    def ota_ok(self, url, version, data, timeout=30, **kw):
        """Sends an upgrade, expects BACK OK, DONE, the slot holding DATA and a
        report of VERSION after DONE. Returns the command ID."""
        cmd_id, mark = self.send(url, version, **kw)
        r = self.platform.wait_for_receipt(self.id, cmd_id, since=mark)
        assert r.get("BACK") == "OK", r
        done = self.wait_state(cmd_id, "DONE", since=mark, timeout=timeout)
        rep = self.platform.wait_for_report(self.id, version, since=mark, timeout=10)
        assert rep.seq > done.seq or rep.seq > r.seq
        assert self.slot.read_bytes() == data, "the slot does not hold the image"
        wait_until(lambda: self.files() == [], 5, "the download directory to be empty (%r)" % self.files())
        return cmd_id


# -- nginx that can be stopped or killed and started again on its port ----------

def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _port_bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RestartableNginx(Nginx):
    """Nginx whose restart() brings it back on the same port, with the same
    prefix, config and (appended) access log."""

    def down(self, how="stop"):
        """HOW: "stop" (SIGTERM to the master: nginx's fast shutdown, what
        `nginx -s stop` sends) or "kill" (SIGKILL to the master, then to each
        of its workers, all by PID)."""
        if not self.proc or self.proc.poll() is not None:
            self.proc = None
            return
        if how == "kill":
            # The master first: a master that sees a worker die forks a new one, which the master's
            # death would then orphan, still holding the listening socket.
            workers = _children(self.proc.pid)
            self.proc.kill()
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def up(self, timeout=10):
        wait_until(lambda: _port_bindable(self.port), timeout, "port %d to be free" % self.port, 0.01)
        conf = os.path.join(self.prefix, "nginx.conf")
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.prefix, "-c", conf, "-e", os.path.join(self.prefix, "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not _wait_listening(self.port, self.proc, timeout):
            raise RuntimeError("nginx did not come back on port %d: %s" % (self.port, self.error_log()[-2000:]))

    def restart(self, how="stop", down_seconds=0.0):
        self.down(how)
        if down_seconds:
            time.sleep(down_seconds)
        self.up()


# -- killing mosquitto ------------------------------------------------------------

class BrokerKiller:
    """Kills mosquitto (SIGKILL) and starts it again on its port.

    mosquitto 2.0.11's dynamic-security plugin rewrites its JSON file in
    place: a SIGKILL during a save leaves it empty or cut short, and the
    restarted broker then knows no client at all (seen here: a 0-byte file,
    every login refused). A production broker's store does not lose its
    users that way, and this suite tests the daemon, not mosquitto: so after
    a kill, a broken file is put back as it was just before the kill, which
    is the broker dying before the save began (the platform was not told the
    change was made). .repairs counts how often that was needed."""

    def __init__(self, broker, platform=None):
        self.broker = broker
        self.platform = platform
        self.kills = 0
        self.repairs = 0

    def _read_good(self):
        try:
            with open(self.broker.dynsec_path) as f:
                text = f.read()
            json.loads(text)
            return text
        except (OSError, ValueError):
            return None

    def kill_and_restart(self, down_seconds=0.0, wait_platform=True):
        good = self._read_good()
        before = self.platform.connects if self.platform else 0
        self.broker.kill()
        self.kills += 1
        if self._read_good() is None and good is not None:
            tmp = self.broker.dynsec_path + ".restore"
            with open(tmp, "w") as f:
                f.write(good)
            os.replace(tmp, self.broker.dynsec_path)
            self.repairs += 1
        if down_seconds:
            time.sleep(down_seconds)
        self.broker.start()
        if self.platform and wait_platform:
            self.platform.wait_reconnected(before)


# -- a byte-counting relay --------------------------------------------------------

class CountingRelay:
    """Listens on 127.0.0.1:port and relays each connection to
    127.0.0.1:UPSTREAM_PORT, counting what the upstream sent: .bytes (all),
    .body (after the first header block of each connection), .connections,
    .refused (connections it closed because the upstream was down)."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.bytes = 0
        self.body = 0
        self.connections = 0
        self.refused = 0
        self._open = set()
        self._stop = threading.Event()
        self._threads = []
        self._thread = threading.Thread(target=self._accept_loop, name="relay", daemon=True)
        self._thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.port, path.lstrip("/"))

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, c):
        c.settimeout(None)
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:
            with self.lock:
                self.refused += 1
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
        u.settimeout(None)
        with self.lock:
            self.connections += 1
            self._open.update((c, u))
        up = threading.Thread(target=self._pump, args=(c, u, False), daemon=True)
        up.start()
        self._pump(u, c, True)
        up.join(timeout=30)
        with self.lock:
            self._open.discard(c)
            self._open.discard(u)
        for s in (c, u):
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src, dst, downstream):
        head = b""
        in_body = False
        while True:
            try:
                data = src.recv(256 * 1024)
            except OSError:
                data = b""
            if not data:
                break
            if downstream:
                n_body = 0
                if in_body:
                    n_body = len(data)
                else:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end >= 0:
                        in_body = True
                        n_body = len(head) - end - 4
                        head = b""
                with self.lock:
                    self.bytes += len(data)
                    self.body += n_body
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self._stop.set()
        self.sock.close()
        with self.lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)


# -- mounts -----------------------------------------------------------------------

def _umount(path):
    r = subprocess.run(["umount", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        # Busy (a process still has a file open there): detach it now, freed when closed.
        r = subprocess.run(["umount", "-l", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError("cannot unmount %s: %s" % (path, r.stdout))


def is_mountpoint(path):
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


@contextlib.contextmanager
def mounted(path, *argvs):
    """Runs each `mount ARGV...` (the first mounts PATH, the others remount
    it); unmounts PATH at the end of the block, whatever happened."""
    os.makedirs(path, exist_ok=True)
    done = False
    try:
        for argv in argvs:
            subprocess.run(["mount"] + list(argv), check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
            done = True
        yield path
    finally:
        if done or is_mountpoint(path):
            _umount(path)


def tmpfs(path, size, uid=None, gid=None):
    """A tmpfs of SIZE at PATH, its root owned by UID:GID (default: the agent's user, whose
    download directory it usually replaces)."""
    if uid is None:
        uid, gid = agent_identity()
    return mounted(path, ["-t", "tmpfs", "-o", "size=%s,mode=0700,uid=%d,gid=%d" % (size, uid, gid),
                          "krtiot-faults", path])


def read_only_bind(path):
    return mounted(path, ["--bind", path, path], ["-o", "remount,bind,ro", path])


# -- garbage ------------------------------------------------------------------------

PAYLOAD_MAX = 16 * 1024


def _big_json(rng, size):
    """A JSON object of at most SIZE bytes (under the 16 KiB limit) the device
    must drop or refuse: many keys, long strings, no usable command."""
    obj = {"CMD": rng.choice([11, "11", 10, 12, 99, "x", None]), "ID": "G%011d" % rng.randrange(10 ** 11)}
    if obj["CMD"] in (11, "11"):
        obj["URL"] = "ftp://127.0.0.1/" + "a" * rng.randrange(10, 200)  # refused: BACK FAIL
        obj["FW_VERSION"] = "2.0.1"
    n = len(json.dumps(obj))
    while True:
        k = "k%d" % len(obj)
        v = rng.choice(["s" * rng.randrange(1, 900), rng.random(), [1, 2, 3], {"a": {"b": None}}])
        add = len(json.dumps({k: v})) - 2 + 2  # the member, plus ", "
        if n + add > size:
            data = json.dumps(obj).encode()
            assert len(data) <= size
            return data
        obj[k] = v
        n += add


def _nested(rng, depth, kind):
    """Nesting far beyond what the parser takes (PROTOCOL_MAX_DEPTH), still under 16 KiB."""
    if kind == "object":
        depth = min(depth, 2700)
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"]" * depth
    return b'{"CMD":11,"ID":"N%011d","URL":' % rng.randrange(10 ** 11) + inner + b',"FW_VERSION":"1"}'


NEAR_MISSES = [
    b"", b"null", b"[]", b"{}", b'"CMD"', b"11", b"1e999", b"-0", b"true",
    b'{"CMD":11}', b'{"ID":"X"}', b'{"CMD":11,"ID":""}', b'{"CMD":11,"ID":null}',
    b'{"CMD":"eleven","ID":"AAAAAAAAAAAA"}', b'{"CMD":11.5,"ID":"AAAAAAAAAAAA"}',
    b'{"CMD":-1,"ID":"AAAAAAAAAAAA"}', b'{"CMD":99999999999999999999,"ID":"AAAAAAAAAAAA"}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAA","URL":"file:///etc/shadow","FW_VERSION":"9"}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAB","URL":"http://127.0.0.1:9/x","FW_VERSION":"../.."}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAC","URL":"http://127.0.0.1:9/x\\u0000y","FW_VERSION":"9"}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAD","URL":"http://127.0.0.1:9/x","FW_VERSION":"9","SHA256":"zz"}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAE","URL":"http://127.0.0.1:9/x","FW_VERSION":"9","SIZE":-5}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAF","URL":"http://127.0.0.1:9/x","FW_VERSION":"9","SIZE":1e300}',
    b'{"CMD":21,"ID":"AAAAAAAAAAAG","DEVICE_SECRET":""}',
    b'{"CMD":21,"ID":"AAAAAAAAAAAH","DEVICE_SECRET":null}',
    b'{"CMD":21,"ID":"AAAAAAAAAAAI","DEVICE_SECRET":12345}',
    b'{"CMD":21,"ID":"AAAAAAAAAAAJ"}',
    b'{"CMD":20,"ID":"AAAAAAAAAAAK","PRODUCT_ID":"P1","DEVICE_ID":"D1"}',
    b'{"CMD":11,"ID":"\xff\xfe","URL":"http://x","FW_VERSION":"1"}',
    b'{"CMD":11,"ID":"AAAAAAAAAAAL",',
    b'{"CMD":11,"ID":"AAAAAAAAAAAM","URL":"http://127.0.0.1:9/x","FW_VERSION":"9",}}}',
    b"\x00" * 64, b"\xef\xbb\xbf{}", b'{"\\ud800":1}', b'{"a":"\\uDFFF\\uD800"}',
]


def garbage(rng, n, register=False):
    """N payloads, shuffled, none of which is an acceptable command. Kinds, in
    roughly equal shares: random bytes, big-but-allowed JSON (12-16 KiB),
    deep nesting (arrays, objects, inside a command), oversize (17 KiB), and
    near misses (valid JSON with missing, mistyped or refused fields).
    REGISTER: for register/set; never a CMD 21 with a non-empty string
    DEVICE_SECRET (that would be a real secret, not garbage)."""
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            p = rng.randbytes(rng.randrange(1, 4096))
        elif kind == 1:
            p = _big_json(rng, rng.randrange(12 * 1024, PAYLOAD_MAX - 64))
        elif kind == 2:
            p = _nested(rng, rng.choice([9, 33, 100, 1000, 5000, 8000]), rng.choice(["array", "object", "cmd"]))
        elif kind == 3:
            p = b'{"CMD":11,"ID":"O%011d","URL":"http://127.0.0.1:9/' % rng.randrange(10 ** 11)
            p += b"o" * (17 * 1024 - len(p) - 24) + b'","FW_VERSION":"2.0.1"}'
        else:
            p = rng.choice(NEAR_MISSES)
        if register and b"DEVICE_SECRET" in p:
            try:
                obj = json.loads(p)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("DEVICE_SECRET"), str) and obj["DEVICE_SECRET"]:
                continue
        out.append(p)
    rng.shuffle(out)
    return out
