"""The ssl:// broker (SPEC 2): TLS with the server certificate verified
against mqtt.ca_file, host name included. A real mosquitto TLS listener with
a certificate made here by openssl (a CA, and a server certificate for
"localhost")."""
import os
import shutil
import subprocess
import time

import pytest

from daemon import broker_module

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def make_ca(d, name):
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    return d


def make_server_cert(ca, d, cn, san):
    d.mkdir(parents=True, exist_ok=True)
    (d / "ext.cnf").write_text("subjectAltName=%s\n" % san)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    return d


@pytest.fixture
def tls(broker, platform, tmp_path):
    """Adds a TLS listener (certificate for localhost) to the test's broker."""
    ca = make_ca(tmp_path / "ca", "krtiot test CA")
    srv = make_server_cert(ca, tmp_path / "srv", "localhost", "DNS:localhost")
    port = broker_module.free_port()
    with open(broker.conf_path, "a") as f:
        f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                % (port, ca / "ca.crt", srv / "server.crt", srv / "server.key"))
    before = platform.connects
    broker.stop()
    broker.start()
    platform.wait_reconnected(before)
    return {"port": port, "ca": str(ca / "ca.crt"), "dir": tmp_path}


def test_ssl_broker_verified_with_ca_file(krtiotd, platform, tls):
    mark = platform.mark()
    krtiotd(config={"mqtt.uri": "ssl://localhost:%d" % tls["port"], "mqtt.ca_file": tls["ca"]})
    platform.wait_for_report("D1", since=mark, timeout=20)


def test_ssl_broker_with_unknown_ca_is_refused(krtiotd, platform, tls):
    other = make_ca(tls["dir"] / "other", "another CA")
    d = krtiotd(config={"mqtt.uri": "ssl://localhost:%d" % tls["port"],
                        "mqtt.ca_file": str(other / "ca.crt")})
    # At the default log level an operator must see why: the TLS error, as a warning.
    d.wait_log(r"(?m)^<4>MQTT: .*certificate verify failed", timeout=15)
    assert platform.messages("D1") == [], "a report went through a broker whose certificate is not trusted"
    assert d.returncode is None, "the daemon must keep retrying, not exit"


def test_ssl_broker_host_name_is_verified(krtiotd, platform, tls):
    """The certificate is for localhost: connecting as 127.0.0.1 must fail."""
    d = krtiotd(config={"mqtt.uri": "ssl://127.0.0.1:%d" % tls["port"], "mqtt.ca_file": tls["ca"]})
    d.wait_log(r"(?m)^<4>MQTT: .*certificate verify failed", timeout=15)
    assert platform.messages("D1") == [], "a report went through a certificate for another host"


def cpu_seconds(pid):
    """User + system CPU time of PID so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tls_broker_down_costs_no_cpu_and_reconnects(krtiotd, platform, broker, tls):
    """With ssl://, a broker that is stopped used to make the daemon spin on
    the hung-up socket (thousands of failed writes and epoll_wait()s a
    second, 25-28 CPU-seconds per attempt) until the 30 s connect timeout.
    Down for 8 s: the daemon uses almost no CPU, and it is back within a few
    seconds of the broker (reconnect_max is 2 s here)."""
    d = krtiotd(config={"mqtt.uri": "ssl://localhost:%d" % tls["port"], "mqtt.ca_file": tls["ca"]})
    platform.wait_for_report("D1", timeout=20)
    for _ in range(2):
        before = cpu_seconds(d.pid)
        broker.stop()
        time.sleep(8)
        used = cpu_seconds(d.pid) - before
        assert used < 0.5, "%.2f CPU-seconds in 8 s with the broker down" % used
        mark = d.log_mark()
        t0 = time.monotonic()
        broker.start()
        d.wait_log(r"<6>Connected to ssl://", since=mark, timeout=20)
        took = time.monotonic() - t0
        assert took < 8, "back %.1f s after the broker" % took
        d.wait_log(r"Reported hardware", since=mark, timeout=10)
    assert d.running()


def test_tls_broker_unreachable_costs_no_cpu(krtiotd, tls):
    """Nothing listens on the port: every attempt fails at once and backs off."""
    port = broker_module.free_port()
    d = krtiotd(config={"mqtt.uri": "ssl://localhost:%d" % port, "mqtt.ca_file": tls["ca"]})
    d.wait_log(r"retrying in", timeout=10)
    before = cpu_seconds(d.pid)
    time.sleep(8)
    used = cpu_seconds(d.pid) - before
    assert used < 0.5, "%.2f CPU-seconds in 8 s with no broker" % used
    assert d.running()
