#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""krtiot benchmarks: one command runs them all and prints one table
(figure, value, reference, ratio, target, verdict).

    /usr/bin/python3 tests/bench/run.py            # full: about 6 minutes + the fleet campaign's ~1.5
    /usr/bin/python3 tests/bench/run.py --quick    # smaller sizes/counts, under 90 s + the campaign's ~70 s

Each figure is measured in one run beside its reference (a floor or a peer
on the same machine, at the same time or interleaved) and given as a ratio.
Benchmarks: idle.py (footprint, with pagemap.py's count of the memory no
other process maps; wakeups; that nothing but krtiotd runs while idle; all
with krtiotd on a private system bus, beside a second krtiotd without one:
what the bus connection costs; mender beside, mender_peer.py), download.py (throughput against the floor,
krtiot-fetch's peak RSS per image size), latency.py (receipt latency,
registration time), fleet.py (registration, memory, reconnection and an
update campaign with and without ota.download_delay_max).

The three programs run as they are deployed, as far as the harness
(tests/integration/daemon.py) goes: krtiotd as the unprivileged
krtiot-test, krtiot-fetch started by it for each download, krtiot-install
as root beside it where something installs (download; in idle, with the
idle timeout systemd's socket gives it, so it leaves). Needs root (the
harness's user switch; PFNs in /proc/PID/pagemap).

Full mode writes the table to tests/bench/results/latest.txt (or --out).
Quick mode runs the other benchmarks inside the idle window to fit in
scripts/check, and writes a file only with --out. Everything runs on
127.0.0.1, from a temp dir, and is stopped by PID at the end.

Exit status: 0 when every benchmark ran (whatever the verdicts; --strict:
and every target was met), 1 when one could not run or a target was missed
under --strict, 2 when nothing can run (daemon not built, no mosquitto).
"""

import argparse
import hashlib
import os
import platform as pyplatform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402
import download  # noqa: E402
import fleet  # noqa: E402
import idle  # noqa: E402
import latency  # noqa: E402

ALL = ("idle", "latency", "registration", "download", "fleet")
OTHERS = {
    "latency": latency.run_latency,
    "registration": latency.run_registration,
    "download": download.run,
    "fleet": fleet.run,
}


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def snapshot(binary, tmpdir):
    """Copies the three programs (src/agent/krtiotd, src/fetch/krtiot-fetch,
    src/install/krtiot-install) into TMPDIR/build and points the harness there
    (KRTIOT_BUILD_DIR), so that a rebuild during the run changes nothing."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    for rel in (("agent", "krtiotd"), ("fetch", "krtiot-fetch"), ("install", "krtiot-install")):
        dest = os.path.join(tmpdir, "build", "src", rel[0])
        os.makedirs(dest)
        shutil.copy2(os.path.join(src, *rel), os.path.join(dest, rel[1]))
    os.environ["KRTIOT_BUILD_DIR"] = os.path.join(tmpdir, "build")


def describe_run(quick, binary):
    try:
        rev = subprocess.run(["git", "-C", B.REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    with open(binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return ("krtiot benchmarks%s - %s UTC - commit %s - %s (sha256 %s) - %d CPUs - Linux %s - load %s"
            % (" (quick)" if quick else "", time.strftime("%Y-%m-%d %H:%M", time.gmtime()), rev or "?",
               os.path.relpath(binary, B.REPO), digest, os.cpu_count() or 0, pyplatform.release(),
               loadavg()))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run the krtiot benchmarks and print one table.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and counts (for scripts/check)")
    ap.add_argument("--only", default=",".join(ALL),
                    help="comma-separated subset of: %s" % ",".join(ALL))
    ap.add_argument("--out", help="also write the table here (full mode default: tests/bench/results/latest.txt)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--idle-window", type=float, metavar="SECONDS",
                    help="length of the idle window (default: 180; quick: 65)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and print its path")
    args = ap.parse_args(argv)
    only = [x for x in args.only.split(",") if x]
    unknown = [x for x in only if x not in ALL]
    if unknown:
        ap.error("unknown benchmark(s): " + ", ".join(unknown))

    why = B.harness.daemon_missing() or B.broker_module.missing_requirements()
    if why:
        print("bench: cannot run: " + why, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    nofile = raise_fd_limit()
    quick = args.quick
    tmpdir = tempfile.mkdtemp(prefix="krtiot-bench-")
    # krtiotd runs as the harness's unprivileged user (daemon.agent_identity()): it must traverse
    # the temp dir (0700 from mkdtemp) to reach its files; listing it stays root's.
    os.chmod(tmpdir, 0o711)
    built = B.harness.daemon_binary()
    snapshot(built, tmpdir)
    header = describe_run(quick, built)
    print(header, flush=True)
    rows, notes, failed = [], [], []
    started = time.monotonic()

    def attempt(name, fn):
        t = time.monotonic()
        print("bench: %s ..." % name, flush=True)
        try:
            with B.Reaper() as reaper:
                r, n = fn(os.path.join(tmpdir, name), reaper, quick)
            rows.extend(r)
            notes.extend(n)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            failed.append(name)
            rows.append(B.Row(name, "-", "-", None, "-", "n/a: error: %s" % str(e).splitlines()[0][:160]))
            notes.append("%s failed:\n%s" % (name, traceback.format_exc()))
        print("bench: %s done in %.1f s" % (name, time.monotonic() - t), flush=True)

    idle_reaper = B.Reaper()
    try:
        bench = None
        if "idle" in only:
            print("bench: idle (window opens; %s) ..." % ("others run inside it" if quick else "nothing else runs"),
                  flush=True)
            try:
                bench = idle.IdleBench(os.path.join(tmpdir, "idle"), idle_reaper, quick,
                                      args.idle_window).start()
            except KeyboardInterrupt:
                raise
            except Exception as e:
                failed.append("idle")
                rows.append(B.Row("idle", "-", "-", None, "-", "n/a: error: %s" % str(e).splitlines()[0][:160]))
                notes.append("idle failed:\n%s" % traceback.format_exc())

        def finish_idle():
            if bench is None:
                return
            try:
                rows[0:0] = bench.finish()
                notes[0:0] = bench.notes
            except KeyboardInterrupt:
                raise
            except Exception as e:
                failed.append("idle")
                rows.insert(0, B.Row("idle", "-", "-", None, "-", "n/a: error: %s" % str(e).splitlines()[0][:160]))
                notes.insert(0, "idle failed:\n%s" % traceback.format_exc())
            finally:
                idle_reaper.close()
            print("bench: idle done", flush=True)

        if not quick:
            finish_idle()
        for name in ALL[1:]:
            if name in only:
                attempt(name, OTHERS[name])
        if quick:
            finish_idle()
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what was started", file=sys.stderr)
        idle_reaper.close()
        return 130
    finally:
        idle_reaper.close()
        if args.keep:
            print("bench: files kept in " + tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)

    table = B.render_table(rows)
    lines = [header, "", table, ""] + notes
    lines.append("(%s mode, %.0f s; load average at the end %s; RLIMIT_NOFILE %d)" % (
        "quick" if quick else "full", time.monotonic() - started, loadavg(), nofile))
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    out = args.out or (None if quick else os.path.join(B.HERE, "results", "latest.txt"))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".tmp", "w") as f:
            f.write(text)
        os.replace(out + ".tmp", out)
        print("bench: written to " + out)
    missed = [r for r in rows if r.verdict.startswith("MISSED")]
    if failed:
        return 1
    if args.strict and missed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
