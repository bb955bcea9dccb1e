# SPDX-License-Identifier: Apache-2.0
"""Download: an image (1 GiB; quick 256 MiB) from nginx on loopback.

Floor: `curl -s URL | tee FILE | sha256sum`, timed from its start to its end.
krtiotd: from its CMD 11 receipt (the moment the platform receives it, wall
clock) to the start of the install hook (the hook's first act is to record
`date +%s.%N`; it then writes the target version into the version file and
exits 0). The command carries SIZE and SHA256, as a platform would send
them, so the daemon checks both, as the floor computes the hash.

Both read the same file from the page cache (it is written, then synced,
before either runs) and write their copy to the same filesystem; each copy
is removed and synced away before the next run.

Peak memory: VmHWM is reset to the current RSS (clear_refs 5) while the
daemon is idle, just before the command; growth = VmHWM after the install
- idle VmRSS.
"""

import hashlib
import os
import shutil
import subprocess
import time

import benchlib as B

RATIO_TARGET = 0.9
GROWTH_TARGET_KIB = 1024

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


def run(tmpdir, reaper, quick):
    size = 256 * B.MiB if quick else B.GiB
    label = "%d MiB" % (size // B.MiB) if size < B.GiB else "%d GiB" % (size // B.GiB)
    notes = []
    why = None
    if not os.access(B.NGINX, os.X_OK):
        why = "nginx not installed (%s)" % B.NGINX
    elif not shutil.which("curl"):
        why = "curl not installed (apt-get install curl), the floor cannot run"
    if why:
        return [B.not_run("download %s: throughput" % label, "curl|tee|sha256sum", ">= 0.9x", why, quick),
                B.not_run("download %s: peak RSS growth" % label, "idle RSS", "<= 1024 KiB", why, quick)], notes
    www = os.path.join(str(tmpdir), "www")
    os.makedirs(www, exist_ok=True)
    image = os.path.join(www, "image.bin")
    digest = make_image(image, size)
    ngx = B.Nginx(www).start()
    reaper.add(ngx, ngx.cleanup)
    url = ngx.url("image.bin")

    # -- floor: curl | tee | sha256sum ---------------------------------------------
    floor_file = os.path.join(str(tmpdir), "floor.img")
    t0 = time.monotonic()
    res = subprocess.run(["/bin/bash", "-o", "pipefail", "-c",
                          'curl -s "$1" | tee "$2" | sha256sum', "bash", url, floor_file],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    floor_s = time.monotonic() - t0
    if res.returncode != 0 or not res.stdout.startswith(digest):
        raise B.BenchError("floor pipeline failed (%d): %s" % (res.returncode, res.stdout[-300:]))
    os.unlink(floor_file)
    os.sync()
    # What limits the floor: each stage alone, on the same cached file.
    stages = {}
    for name, cmd in (("sha256sum", ["sha256sum", image]),
                      ("curl -o /dev/null", ["curl", "-s", "-o", "/dev/null", url])):
        t = time.monotonic()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=True)
        stages[name] = (size / B.MiB) / (time.monotonic() - t)

    # -- krtiotd ---------------------------------------------------------------
    broker = B.start_broker(os.path.join(str(tmpdir), "dl"), reaper)
    platform = B.start_platform(broker, reaper)
    d = B.Daemon(os.path.join(str(tmpdir), "dl"), broker, platform=platform, name="dl",
                 device_id="D1", fw_version="1.0.0", config=dict(B.DAEMON_CONFIG), start=False)
    reaper.add(d, d.cleanup)
    with open(d.hook_path, "w") as f:
        f.write(HOOK % {"dir": d.dir, "fw": d.fw_version_path})
    mark = platform.mark()
    d.start()
    platform.wait_for_report("D1", since=mark, timeout=20)
    time.sleep(1.0)
    idle_rss = B.status_kib(d.pid, "VmRSS")
    hwm_at_start = B.status_kib(d.pid, "VmHWM")
    B.reset_hwm(d.pid)
    mark = platform.mark()
    cmd_id = platform.send_ota("P1", "D1", url, "2.0.1", size=size, sha256=digest)
    receipt = platform.wait_for_receipt("D1", cmd_id, since=mark, timeout=20)
    if receipt.get("BACK") != "OK":
        raise B.BenchError("the daemon refused the command: %r" % receipt)
    platform.wait_for_report("D1", "2.0.1", since=mark, timeout=60 + size / (20 * B.MiB))
    peak = B.status_kib(d.pid, "VmHWM")
    with open(os.path.join(d.dir, "hook.start")) as f:
        hook_start = float(f.read().split()[0])
    daemon_s = hook_start - receipt.wall_time
    B.stop_daemons([d])

    mib = size / B.MiB
    floor_tp, daemon_tp = mib / floor_s, mib / daemon_s
    growth = peak - idle_rss
    notes.append("download %s: floor %.2f s, krtiotd receipt->hook %.2f s; the floor's stages alone: %s; "
                 "krtiotd idle RSS %d KiB, VmHWM at start %d KiB (reset before the command), peak during "
                 "the job %d KiB"
                 % (label, floor_s, daemon_s, ", ".join("%s %.0f MiB/s" % kv for kv in stages.items()),
                    idle_rss, hwm_at_start, peak))
    rows = [
        B.Row("download %s: throughput" % label, "%.0f MiB/s" % daemon_tp,
              "curl|tee|sha256sum %.0f MiB/s" % floor_tp, daemon_tp / floor_tp, ">= 0.9x floor",
              B.verdict_ge(daemon_tp / floor_tp, RATIO_TARGET, lambda x: "%.2fx" % x), quick),
        B.Row("download %s: peak RSS growth" % label, "%+d KiB" % growth, "idle RSS " + B.fmt_kib(idle_rss),
              peak / idle_rss, "<= +1024 KiB", B.verdict_le(growth, GROWTH_TARGET_KIB, lambda x: "%d KiB" % x),
              quick),
    ]
    return rows, notes
