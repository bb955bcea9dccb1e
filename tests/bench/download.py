# SPDX-License-Identifier: Apache-2.0
"""Download: images from nginx on loopback, 256 MiB and 1 GiB (quick: 256
MiB), each timed beside its floor and with krtiot-fetch's memory.

Throughput. Floor: `curl -s URL | tee FILE | openssl dgst -sha256 && sync
-d FILE`, timed from its start to its end: what any tool must at least do
(fetch, write, hash with the same OpenSSL SHA-256 that krtiot-fetch uses,
and have the file's data on disk). krtiotd: from the moment the platform
sends CMD 11 (wall clock, just before the publish) to the start of the
install hook, which krtiot-install runs (the hook's first act is to record
`date +%s.%N`; it then writes the target version into the version file and
exits 0). In between: krtiotd starts krtiot-fetch, which downloads, hashes,
fsyncs, and reports; krtiotd checks the result and hands the image to
krtiot-install over its socket. The command carries SIZE and SHA256, as a
platform would send them. The two alternate (floor, krtiotd, floor, ...;
3 rounds, quick 1) and the medians are compared. The former floor,
`curl | tee | sha256sum` (coreutils' slower SHA-256), is run once per size
for the record (info).

Both read the same file from the page cache (it is written, then synced,
before either runs) and write their copy to the same filesystem; each copy
is removed and synced away before the next run.

krtiot-fetch's peak RSS, two ways:
  * by hand, exactly: the command line krtiotd gave its krtiot-fetch (read
    from /proc/PID/cmdline during the job) is run again under
    `/usr/bin/time -f %M` (the child's ru_maxrss), as the agent's user,
    with the same empty environment, the URL on stdin and the status lines
    on a pipe, as krtiotd runs it; this is the figure compared between the
    sizes (quick mode: 256 MiB against a 32 MiB image);
  * in the job itself: the krtiot-fetch krtiotd started, its VmHWM sampled
    every 5 ms until it exits (the high-water mark only rises, so this can
    only miss what grew in its last 5 ms), to show the by-hand run is the
    same program doing the same thing.
krtiotd's own VmHWM is reset (clear_refs 5) before each command; its growth
during the job is given for information (it downloads nothing itself now).

After each job: no child of krtiotd left (krtiot-fetch has ended), and no
hook left under krtiot-install.
"""

import hashlib
import os
import shutil
import subprocess
import threading
import time

import benchlib as B

RATIO_TARGET = 1.0
FETCH_RSS_SPREAD_KIB = 1024
SAMPLE_INTERVAL = 0.005

HOOK = """#!/bin/sh
# Benchmark hook: records when the install starts, "installs" by writing the
# version file, succeeds.
case "$1" in
  install)
    date +%%s.%%N >> %(dir)s/hook.start
    echo "$KRTIOT_TARGET_VERSION" > %(fw)s.tmp && mv %(fw)s.tmp %(fw)s
    exit 0 ;;
esac
exit 0
"""


def label_of(size):
    return "%d MiB" % (size // B.MiB) if size < B.GiB else "%d GiB" % (size // B.GiB)


def make_image(path, size):
    """SIZE bytes (a multiple of 1 MiB) of random 1 MiB blocks; returns the sha256 hex."""
    sha = hashlib.sha256()
    blocks = [os.urandom(B.MiB) for _ in range(8)]
    with open(path, "wb") as f:
        for i in range(size // B.MiB):
            b = blocks[i % len(blocks)]
            f.write(b)
            sha.update(b)
    os.sync()
    return sha.hexdigest()


def remove_synced(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.sync()


def floor(url, path, digest, pipeline):
    """Runs PIPELINE ($1 URL, $2 FILE) under bash -o pipefail; returns its
    seconds. Its output must hold DIGEST."""
    t0 = time.monotonic()
    res = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", pipeline, "bash", url, path],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    s = time.monotonic() - t0
    if res.returncode != 0 or digest not in res.stdout:
        raise B.BenchError("floor %r failed (%d): %s" % (pipeline, res.returncode, res.stdout[-300:]))
    remove_synced(path)
    return s


FLOOR = 'curl -s "$1" | tee "$2" | openssl dgst -sha256 && sync -d "$2"'
OLD_FLOOR = 'curl -s "$1" | tee "$2" | sha256sum'


def stat_fields(pid):
    """/proc/PID/stat after the command name, as a list (index 0 = state)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def reaped_children_faults(pid):
    """cminflt + cmajflt: page faults of PID's children that it has waited
    for. It rises when a child of PID ends and is reaped; an exec alone
    costs hundreds of faults."""
    f = stat_fields(pid)
    return int(f[7]) + int(f[9])


class ChildSampler:
    """Samples the children of PID every SAMPLE_INTERVAL in a thread:
    {child pid: {"cmdline": [...], "first": t, "last": t, "hwm": KiB}}."""

    def __init__(self, pid):
        self.pid = pid
        self.children = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = time.time()
            for c in B.harness.child_pids(self.pid):
                rec = self.children.get(c)
                if rec is None:
                    rec = self.children[c] = {"cmdline": [], "first": now, "last": now, "hwm": 0}
                try:
                    if not rec["cmdline"] or os.path.basename(rec["cmdline"][0]) != "krtiot-fetch":
                        # Until its execve(), a child shows krtiotd's command line (or none).
                        with open("/proc/%d/cmdline" % c, "rb") as f:
                            rec["cmdline"] = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:-1]]
                    hwm = B.status_kib(c, "VmHWM")
                except (OSError, B.BenchError):
                    continue  # gone, or a zombie: its last figure stands
                rec["last"] = now
                rec["hwm"] = max(rec["hwm"], hwm)
            self._stop.wait(SAMPLE_INTERVAL)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def fetch_by_hand(argv, url, part, timeout=600):
    """Runs krtiot-fetch with ARGV (krtiotd's, the part path replaced by PART)
    as the agent's user under /usr/bin/time -f %M, the way krtiotd runs it:
    empty environment, URL on stdin, status lines (fd 1) on a pipe. Returns
    (max RSS KiB, seconds, the result line)."""
    out = part + ".maxrss"
    args = list(argv)
    args[-1] = part
    cmd = B.harness.as_agent(["/usr/bin/time", "-f", "%M", "-o", out] + args)
    B.harness.give_to_agent(os.path.dirname(part))
    t0 = time.monotonic()
    res = subprocess.run(cmd, input=url + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={}, timeout=timeout)
    s = time.monotonic() - t0
    result = [line for line in res.stdout.splitlines() if line.startswith("result ")]
    if res.returncode != 0 or not result or "error=0" not in result[-1].split():
        raise B.BenchError("krtiot-fetch by hand failed (%d): %s %s" % (res.returncode, res.stdout[-300:],
                                                                     res.stderr[-300:]))
    with open(out) as f:
        maxrss = int(f.read().split()[-1])
    os.unlink(out)
    remove_synced(part)
    return maxrss, s, result[-1]


class Job:
    """One update through krtiotd: its figures."""


def daemon_job(d, platform, url, size, digest, version):
    """Sends CMD 11 for VERSION and waits for its version report; returns a Job."""
    j = Job()
    j.idle_rss = B.status_kib(d.pid, "VmRSS")
    B.reset_hwm(d.pid)
    j.faults_before = reaped_children_faults(d.pid)
    hook_log = os.path.join(d.dir, "hook.start")
    starts_before = 0
    if os.path.exists(hook_log):
        with open(hook_log) as f:
            starts_before = len(f.read().split())
    mark = platform.mark()
    with ChildSampler(d.pid) as sampler:
        j.t_cmd = time.time()
        cmd_id = platform.send_ota("P1", "D1", url, version, size=size, sha256=digest)
        receipt = platform.wait_for_receipt("D1", cmd_id, since=mark, timeout=20)
        if receipt.get("BACK") != "OK":
            raise B.BenchError("the daemon refused the command: %r" % receipt)
        platform.wait_for_report("D1", version, since=mark, timeout=60 + size / (20 * B.MiB))
    j.peak = B.status_kib(d.pid, "VmHWM")
    with open(hook_log) as f:
        starts = f.read().split()
    if len(starts) != starts_before + 1:
        raise B.BenchError("expected one more hook start in %s, found %d" % (hook_log, len(starts) - starts_before))
    j.hook_start = float(starts[-1])
    j.seconds = j.hook_start - j.t_cmd
    j.fetches = list(sampler.children.values())
    if len(j.fetches) != 1:
        raise B.BenchError("expected one krtiot-fetch child of krtiotd during the job, saw %d: %r"
                           % (len(j.fetches), j.fetches))
    j.fetch = j.fetches[0]
    if not j.fetch["cmdline"] or os.path.basename(j.fetch["cmdline"][0]) != "krtiot-fetch":
        raise B.BenchError("krtiotd's child is not krtiot-fetch: %r" % j.fetch["cmdline"])
    # Nothing left running for this job: krtiot-fetch ended and was reaped, the hook is done.
    B.wait_until(lambda: not B.harness.child_pids(d.pid) and not d.installer.hook_pids(), 5,
                 "krtiot-fetch and the hook to be gone after the job")
    j.faults_after = reaped_children_faults(d.pid)
    return j


def run(tmpdir, reaper, quick):
    sizes = [256 * B.MiB] if quick else [256 * B.MiB, B.GiB]
    rounds = 1 if quick else 3
    notes = []
    why = None
    if not os.access(B.NGINX, os.X_OK):
        why = "nginx not installed (%s)" % B.NGINX
    elif not shutil.which("curl") or not shutil.which("openssl"):
        why = "curl or openssl not installed, the floor cannot run"
    elif not os.access("/usr/bin/time", os.X_OK):
        why = "/usr/bin/time not installed (apt-get install time)"
    if why:
        return [B.not_run("download %s: command -> hook" % label_of(s), "curl|tee|openssl dgst; sync -d",
                          ">= 1.0x floor", why, quick) for s in sizes], notes
    tmpdir = str(tmpdir)
    www = os.path.join(tmpdir, "www")
    os.makedirs(www, exist_ok=True)
    ngx = B.Nginx(www).start()
    reaper.add(ngx, ngx.cleanup)

    broker = B.start_broker(os.path.join(tmpdir, "dl"), reaper)
    platform = B.start_platform(broker, reaper)
    d = B.Daemon(os.path.join(tmpdir, "dl"), broker, platform=platform, name="dl",
                 device_id="D1", fw_version="1.0.0", config=dict(B.DAEMON_CONFIG), start=False)
    reaper.add(d, d.cleanup)
    with open(d.hook_path, "w") as f:
        f.write(HOOK % {"dir": d.dir, "fw": d.fw_version_path})
    mark = platform.mark()
    d.start()
    platform.wait_for_report("D1", since=mark, timeout=20)
    time.sleep(1.0)
    floor_file = os.path.join(tmpdir, "floor.img")
    byhand_dir = os.path.join(d.download_dir, "by-hand")
    os.makedirs(byhand_dir, exist_ok=True)

    rows, fetch_rss = [], {}
    version = 0
    fetch_argv = None
    for size in sizes:
        label = label_of(size)
        image = os.path.join(www, "image-%d.bin" % size)
        digest = make_image(image, size)
        url = ngx.url(os.path.basename(image))
        mib = size / B.MiB
        floor_s, daemon_s, jobs = [], [], []
        for _ in range(rounds):
            floor_s.append(floor(url, floor_file, digest, FLOOR))
            version += 1
            j = daemon_job(d, platform, url, size, digest, "2.0.%d" % version)
            jobs.append(j)
            daemon_s.append(j.seconds)
        old_s = floor(url, floor_file, digest, OLD_FLOOR)
        fetch_argv = jobs[-1].fetch["cmdline"]
        hand = fetch_by_hand(fetch_argv, url, os.path.join(byhand_dir, "image.part"))
        fetch_rss[size] = hand[0]
        os.unlink(image)
        os.sync()

        f_tp, d_tp = mib / B.median(floor_s), mib / B.median(daemon_s)
        old_tp = mib / old_s
        growth = max(j.peak - j.idle_rss for j in jobs)
        sampled = max(j.fetch["hwm"] for j in jobs)
        rows += [
            B.Row("download %s: command -> hook" % label, "%.0f MiB/s" % d_tp,
                  "curl|tee|openssl dgst; sync -d %.0f MiB/s" % f_tp, d_tp / f_tp, ">= 1.0x floor",
                  B.verdict_ge(d_tp / f_tp, RATIO_TARGET, lambda x: "%.2fx" % x), quick),
            B.Row("download %s: vs the former floor" % label, "%.0f MiB/s" % d_tp,
                  "curl|tee|sha256sum %.0f MiB/s" % old_tp, d_tp / old_tp, "-", "info", quick),
            B.Row("download %s: krtiot-fetch peak RSS" % label, B.fmt_kib(hand[0]),
                  "in krtiotd's job (VmHWM sampled) %s" % B.fmt_kib(sampled), hand[0] / sampled if sampled else None,
                  "-", "info", quick),
            B.Row("download %s: krtiotd RSS growth" % label, "%+d KiB" % growth,
                  "idle RSS " + B.fmt_kib(jobs[-1].idle_rss), None, "-", "info", quick),
        ]
        notes.append("download %s, %d round(s): floor %s s; krtiotd command->hook %s s; former floor %.2f s; "
                     "krtiot-fetch by hand %.2f s" % (label, rounds, " ".join("%.2f" % s for s in floor_s),
                                                      " ".join("%.2f" % s for s in daemon_s), old_s, hand[1]))
        for n, j in enumerate(jobs, 1):
            f = j.fetch
            notes.append("  job %d: krtiot-fetch seen from +%.3f s to +%.3f s after the command, VmHWM %d KiB; "
                         "hook started +%.3f s; krtiotd VmHWM %d KiB (idle RSS %d KiB); its reaped children's "
                         "page faults +%d"
                         % (n, f["first"] - j.t_cmd, f["last"] - j.t_cmd, f["hwm"], j.seconds, j.peak, j.idle_rss,
                            j.faults_after - j.faults_before))
    notes.append("krtiot-fetch as krtiotd runs it: " + " ".join(fetch_argv[:1] + [
        "<sha256>" if i > 0 and fetch_argv[i - 1] == "--sha256" else a for i, a in enumerate(fetch_argv) if i > 0]))

    # The same program's peak for a small image and a large one.
    if quick:
        small = 32 * B.MiB
        image = os.path.join(www, "image-%d.bin" % small)
        digest = make_image(image, small)
        argv = list(fetch_argv)
        argv[argv.index("--sha256") + 1] = digest
        argv[argv.index("--size") + 1] = str(small)
        fetch_rss[small] = fetch_by_hand(argv, ngx.url(os.path.basename(image)),
                                         os.path.join(byhand_dir, "image.part"))[0]
        os.unlink(image)
    lo, hi = min(fetch_rss), max(fetch_rss)
    spread = fetch_rss[hi] - fetch_rss[lo]
    rows.append(B.Row("krtiot-fetch peak RSS, %s vs %s" % (label_of(hi), label_of(lo)), "%+d KiB" % spread,
                      "%s at %s, %s at %s" % (B.fmt_kib(fetch_rss[lo]), label_of(lo), B.fmt_kib(fetch_rss[hi]),
                                              label_of(hi)),
                      fetch_rss[hi] / fetch_rss[lo], "within 1024 KiB",
                      B.verdict_le(abs(spread), FETCH_RSS_SPREAD_KIB, lambda x: "%d KiB" % x), quick))
    B.stop_daemons([d])
    return rows, notes
