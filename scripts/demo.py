#!/usr/bin/python3
"""The product's main job, on this machine, with everything local.

Starts a real mosquitto (dynamic security checks every secret) and the
simulated KRT platform on 127.0.0.1, an nginx serving a firmware image, and
krtiotd with conf/demo.conf, beside krtiot-install (the root installer that
runs its hook), and a private system-like D-Bus (a dbus-daemon with the
policy krtiot ships, tests/integration/sysbus.py) on which krtiotd serves
krtiot-dbus(7). Then shows, in order: the device registering
with the product secret and storing its device secret; logging in with it and
reporting its versions; `krtiotctl status`; an OTA command, its receipt, the
download progress, the install through the `copy` hook, and the new version
reported, followed live by `krtiotctl watch`; `krtiotctl status` again. Ends
by itself and stops everything it started. Without dbus-daemon, it says so and
shows the rest.

Run it with scripts/demo (which installs what is missing and builds first).
"""
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

# tests/integration/daemon.py loads tests/platform/{broker,platform}.py under names that do not
# shadow the standard library's platform module.
from daemon import broker_module, platform_module  # noqa: E402
from nginx import Nginx  # noqa: E402
from sysbus import SystemBus  # noqa: E402

Broker = broker_module.Broker
Platform = platform_module.Platform

BUILD = os.environ.get("KRTIOT_BUILD_DIR", os.path.join(ROOT, "build"))
KRTIOTD = os.path.join(BUILD, "src", "agent", "krtiotd")
# The downloader krtiotd starts for each download: the one built here, not an installed one.
FETCH = os.path.join(BUILD, "src", "fetch", "krtiot-fetch")
KRTIOT_INSTALL = os.path.join(BUILD, "src", "install", "krtiot-install")
KRTIOTCTL = os.path.join(BUILD, "src", "ctl", "krtiotctl")
PRODUCT, PRODUCT_SECRET, DEVICE = "DemoProduct", "demo-product-secret", "demo-device-0001"


def say(text):
    print("\n### " + text, flush=True)


def ctl_json(env):
    """krtiotctl status --json, as a dict; None while krtiotd is not on the bus."""
    r = subprocess.run([KRTIOTCTL, "status", "--json"], env=env, capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else None


def show_status(env, pred, timeout=10):
    """Once krtiotctl status --json satisfies PRED, prints `krtiotctl status`."""
    deadline = time.monotonic() + timeout
    while not pred(ctl_json(env) or {}):
        if time.monotonic() > deadline:
            raise RuntimeError("krtiotctl status --json never showed what was expected: %r" % ctl_json(env))
        time.sleep(0.1)
    r = subprocess.run([KRTIOTCTL, "status"], env=env, capture_output=True, text=True, timeout=10, check=True)
    print("$ krtiotctl status\n" + r.stdout, end="", flush=True)


def main():
    tmp = tempfile.mkdtemp(prefix="krtiot-demo-")
    procs = []
    broker = platform = nginx = bus = None
    try:
        say("Starting a local mosquitto broker with dynamic security (127.0.0.1)")
        broker = Broker(tmp)
        print("broker on port %d" % broker.port)

        say("Starting the simulated KRT platform; dynamic registration is on for %s" % PRODUCT)
        platform = Platform("127.0.0.1", broker.port, broker.admin_user, broker.admin_password,
                            echo=lambda line: print("  platform: " + line, flush=True))
        platform.enable_registration(PRODUCT, PRODUCT_SECRET, devices=[DEVICE])

        www = os.path.join(tmp, "www")
        os.makedirs(www)
        image = os.urandom(8 * 1024 * 1024)
        with open(os.path.join(www, "firmware-2.0.1.img"), "wb") as f:
            f.write(image)
        nginx = Nginx(www, limit_rate="2m")
        nginx.start()
        print("nginx serving an 8 MiB image at %s (rate-limited to 2 MB/s to show progress)"
              % nginx.url("firmware-2.0.1.img"))

        state = os.path.join(tmp, "state")
        os.makedirs(state, mode=0o700)
        with open(os.path.join(tmp, "fw_version"), "w") as f:
            f.write("2.0.0\n")
        with open(os.path.join(tmp, "copy.conf"), "w") as f:
            f.write("COPY_SLOT=%s/slot.img\nCOPY_VERSION_FILE=%s/fw_version\n" % (tmp, tmp))
        hook = os.path.join(tmp, "hook")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nKRTIOT_HOOK_CONFIG=%s/copy.conf exec %s/src/hooks/copy \"$@\"\n" % (tmp, ROOT))
        os.chmod(hook, 0o755)
        with open(os.path.join(ROOT, "conf", "demo.conf")) as f:
            conf = f.read()
        for k, v in {"@PORT@": str(broker.port), "@TMP@": tmp, "@PRODUCT@": PRODUCT,
                     "@SECRET@": PRODUCT_SECRET, "@DEVICE@": DEVICE}.items():
            conf = conf.replace(k, v)
        conf_path = os.path.join(tmp, "krtiot.conf")
        with open(conf_path, "w") as f:
            f.write(conf)

        # krtiotd and krtiotctl use the private bus, never the host's (without dbus-daemon, a socket that
        # is not there); krtiotd runs as we do, so the bus's policy lets our user own its name.
        env = dict(os.environ, KRTIOT_FETCH_PROGRAM=FETCH,
                   DBUS_SYSTEM_BUS_ADDRESS="unix:path=%s/no-bus" % tmp)
        if shutil.which("dbus-daemon"):
            say("Starting a private system bus (dbus-daemon with the policy krtiot ships)")
            bus = SystemBus(tmp, pwd.getpwuid(os.geteuid()).pw_name)
            bus.start()
            env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
            print("  demo: DBUS_SYSTEM_BUS_ADDRESS=%s for krtiotd and krtiotctl" % bus.address)
        else:
            print("\n  demo: dbus-daemon is not installed (apt-get install dbus): no D-Bus, no krtiotctl", flush=True)

        say("krtiotd --check-config")
        subprocess.run([KRTIOTD, "-c", conf_path, "--check-config"], check=True)

        sock = os.path.join(tmp, "install.sock")
        say("Starting krtiot-install, the root installer that runs the hook for krtiotd (socket %s)" % sock)
        installer = subprocess.Popen([KRTIOT_INSTALL, "-c", conf_path, "--listen", sock,
                                      "--runtime-dir", os.path.join(tmp, "install-runtime")],
                                     stderr=subprocess.STDOUT)
        procs.append(installer)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if installer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("krtiot-install did not start")
            time.sleep(0.05)

        say("Starting krtiotd: no device secret yet, so it registers with the product secret")
        daemon = subprocess.Popen([KRTIOTD, "-c", conf_path], stderr=subprocess.STDOUT, env=env)
        procs.append(daemon)

        platform.wait_for_report(DEVICE, fw_version="2.0.0", timeout=30)
        cred = os.path.join(state, "credentials.json")
        print("  demo: %s exists, mode %o; the device logged in with its own secret and reported 2.0.0"
              % (cred, os.stat(cred).st_mode & 0o777))

        watch = None
        if bus:
            say("Asking krtiotd what it is doing, over D-Bus")
            show_status(env, lambda s: s.get("FirmwareVersion") == "2.0.0")

            say("Starting `krtiotctl watch` to follow the next update")
            watch = subprocess.Popen([KRTIOTCTL, "watch"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
            procs.append(watch)
            watch_lines, waiting = [], threading.Event()

            def relay():
                for line in watch.stdout:
                    print("  krtiotctl watch: " + line, end="", flush=True)
                    watch_lines.append(line.rstrip("\n"))
                    waiting.set()  # its first line: it has subscribed and read the properties
                waiting.set()
            relay_thread = threading.Thread(target=relay, daemon=True)
            relay_thread.start()
            if not waiting.wait(10) or watch.poll() is not None:
                raise RuntimeError("krtiotctl watch did not start")

        say("The platform sends an OTA command: upgrade to 2.0.1")
        mark = platform.mark()
        job = platform.send_ota(PRODUCT, DEVICE, nginx.url("firmware-2.0.1.img"), "2.0.1",
                                sha256=hashlib.sha256(image).hexdigest(), size=len(image))
        platform.wait_for_receipt(DEVICE, job, since=mark, timeout=15)
        platform.wait_for_report(DEVICE, fw_version="2.0.1", since=mark, timeout=60)
        if watch:
            watch_rc = watch.wait(timeout=30)
            procs.remove(watch)
            relay_thread.join(5)
            if watch_rc != 0 or watch_lines[-1:] != ["Job %s (target 2.0.1) succeeded." % job]:
                raise RuntimeError("krtiotctl watch exited with status %d, last line %r"
                                   % (watch_rc, watch_lines[-1:]))
            print("  demo: krtiotctl watch exited with status 0")
            say("Asking krtiotd again: the new firmware and the job's result")
            show_status(env, lambda s: (s.get("FirmwareVersion"), s.get("JobId"), s.get("LastJobResult"))
                        == ("2.0.1", job, "succeeded"))
        with open(os.path.join(tmp, "slot.img"), "rb") as f:
            assert f.read() == image, "slot does not hold the image"
        print("  demo: the slot holds the exact image; the device reported 2.0.1: the platform counts "
              "the upgrade a success")

        say("Stopping krtiotd (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=10)
        procs.remove(daemon)
        print("  demo: krtiotd exited with status %d" % rc)
        installer.send_signal(signal.SIGTERM)
        installer.wait(timeout=10)
        procs.remove(installer)

        say("Shown: registration (secret stored before the receipt), version reports, and a whole "
            "OTA (receipt, download with progress, install, new version reported)%s."
            % (", followed with krtiotctl status and watch" if bus else ""))
        return 0 if rc == 0 else 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if platform:
            platform.close()
        if nginx:
            nginx.stop()
        if broker:
            broker.stop()
        if bus:
            bus.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
