#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The simulated KRT platform (SPEC sections 2-4), for the integration tests
and for the demo.

It is one paho client, logged in as the broker's dynamic-security admin, that
  * manages the broker's clients through the $CONTROL/dynamic-security/v1
    API: a "device" role allowed on /sys/#, provision_device(),
    set_password() (mosquitto then disconnects that client), disable/delete;
  * records every message devices publish on .../thing/ota/post and
    .../thing/register/post, with wait_for*() helpers for the tests;
  * sends upgrade commands (CMD 11) and raw payloads;
  * runs the registration service (CMD 20 request -> CMD 21 secret -> CMD 21
    receipt -> setClientPassword), with modes to misbehave on purpose.

Imported by tests/integration; run as a script it prints what it sees in
plain words (see --help). Standard library and paho-mqtt 1.6 only.
"""

import os
import sys

if __name__ == "__main__":
    # Run as a script, this file's directory comes first on sys.path, where
    # this file would shadow the standard library's "platform" module for
    # everything imported below. Importers load it as "krtiot_platform".
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import string  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import paho.mqtt.client as mqtt

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
DEVICE_ROLE = "device"

CMD_VERSION_REPORT = 10
CMD_OTA = 11
CMD_PROGRESS = 12
CMD_REGISTER_REQUEST = 20
CMD_REGISTER_SECRET = 21

ID_ALPHABET = string.digits + string.ascii_uppercase

# Registration service modes.
REG_NORMAL = "normal"              # answer, wait for the receipt, change the password
REG_SILENT = "silent"              # never answer
REG_KEEP_PASSWORD = "keep-password"  # answer, wait for the receipt, leave the password alone
REG_TWICE = "twice"                # answer twice (same message), then as normal


def topic(kind, product_id, device_id):
    """kind: "ota/post", "ota/set", "register/post", "register/set"."""
    return "/sys/%s/%s/thing/%s" % (product_id, device_id, kind)


def parse_topic(t):
    """(product_id, device_id, kind) for a /sys/P/D/thing/KIND topic, else None."""
    parts = t.split("/")
    if len(parts) != 7 or parts[0] != "" or parts[1] != "sys" or parts[4] != "thing":
        return None
    return parts[2], parts[3], parts[5] + "/" + parts[6]


def random_id():
    """An ID as the device makes them: 12 characters of 0-9A-Z."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


def cmd_of(obj):
    """The CMD of a decoded message as an int (number or digit string), else None."""
    if not isinstance(obj, dict):
        return None
    c = obj.get("CMD")
    if isinstance(c, bool):
        return None
    if isinstance(c, int):
        return c
    if isinstance(c, str) and c.isdigit():
        return int(c)
    return None


class PlatformError(RuntimeError):
    pass


class ControlError(PlatformError):
    """The dynamic-security plugin answered a command with an error."""

    def __init__(self, command, error):
        super().__init__("%s: %s" % (command, error))
        self.command = command
        self.error = error


class WaitTimeout(AssertionError):
    """A wait_for*() saw nothing matching in time. An AssertionError, so that
    pytest reports it as a failed expectation, with what was seen."""


class Message:
    """One message received from a device."""

    __slots__ = ("seq", "topic", "product_id", "device_id", "kind", "payload",
                 "json", "time", "wall_time", "qos", "retain")

    def __init__(self, seq, msg):
        self.seq = seq
        self.topic = msg.topic
        parsed = parse_topic(msg.topic)
        self.product_id, self.device_id, self.kind = parsed or (None, None, None)
        self.payload = bytes(msg.payload)
        try:
            self.json = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.json = None
        self.time = time.monotonic()
        self.wall_time = time.time()
        self.qos = msg.qos
        self.retain = bool(msg.retain)

    @property
    def cmd(self):
        return cmd_of(self.json)

    def get(self, key, default=None):
        return self.json.get(key, default) if isinstance(self.json, dict) else default

    def __repr__(self):
        return "<%d %s %s>" % (self.seq, self.topic, self.payload[:300].decode("utf-8", "replace"))


def describe(m):
    """A message in plain words, for the demo and for failure messages."""
    d = m.device_id or "?"
    c = m.cmd
    if m.json is None:
        return "<- %s sent something that is not JSON on %s (%d bytes)" % (d, m.kind, len(m.payload))
    if c == CMD_VERSION_REPORT:
        return "<- %s version report: hw %s, fw %s" % (d, m.get("HW_VERSION"), m.get("FW_VERSION"))
    if c == CMD_OTA and m.kind == "ota/post":
        back = m.get("BACK")
        reason = m.get("REASON")
        return "<- %s receipt for %s: %s%s" % (d, m.get("ID"), back,
                                              " (%s)" % reason if reason else "")
    if c == CMD_PROGRESS:
        reason = m.get("REASON")
        return "<- %s progress of %s: %s %s%%%s" % (d, m.get("ID"), m.get("STATE"), m.get("PROGRESS"),
                                                   " (%s)" % reason if reason else "")
    if c == CMD_REGISTER_REQUEST:
        return "<- %s asks to be registered (product %s, request %s)" % (
            d, m.get("PRODUCT_ID"), m.get("ID"))
    if c == CMD_REGISTER_SECRET and m.kind == "register/post":
        return "<- %s acknowledged its device secret (%s: %s)" % (d, m.get("ID"), m.get("BACK"))
    return "<- %s sent CMD %s on %s: %s" % (d, m.get("CMD"), m.kind,
                                            m.payload[:200].decode("utf-8", "replace"))


class Platform:
    """The simulated platform. Platform(host, port, admin_user, admin_password)
    connects at once and sets up the broker's roles (connect=False to do it
    later with connect()). Call close() when done."""

    def __init__(self, host, port, admin_user, admin_password, connect=True,
                 echo=None, timeout=10):
        self.host = host
        self.port = port
        self.admin_user = admin_user
        self.timeout = timeout
        self.echo = echo  # callable(str) for plain-words lines, or None
        self.client_id = "krtiot-platform-" + secrets.token_hex(4)
        self._lock = threading.Condition()
        self._messages = []
        self._sent = []
        self._pending = {}  # correlationData -> response dict (None until answered)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._sub_mid = None
        self.connects = 0
        self.disconnects = 0

        self._reg = {}          # product_id -> dict(secret, mode)
        self._issued = {}       # device_id -> [secrets]
        self._reg_events = []   # (device_id, what, request_id)
        self._password_change = {}  # device_id -> (monotonic time, mark) just before the change
        self._reg_queue = queue.Queue()
        self._reg_thread = None
        self._closing = False

        c = mqtt.Client(client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(admin_user, admin_password)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c
        if connect:
            self.connect()

    # -- connection ---------------------------------------------------------

    def connect(self):
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.wait_connected()
        self.setup_roles()
        return self

    def wait_connected(self, timeout=None):
        """Waits until connected and subscribed (also after a broker restart)."""
        timeout = timeout or self.timeout * 2
        if not self._subscribed.wait(timeout):
            raise PlatformError("platform not connected to %s:%s within %ss"
                                % (self.host, self.port, timeout))

    def wait_reconnected(self, connects_before, timeout=None):
        """After a broker restart: waits until the platform has logged in
        again (self.connects > CONNECTS_BEFORE) and resubscribed."""
        timeout = timeout or self.timeout * 3
        deadline = time.monotonic() + timeout
        while self.connects <= connects_before or not self._subscribed.is_set():
            if time.monotonic() > deadline:
                raise PlatformError("platform did not reconnect within %ss" % timeout)
            time.sleep(0.05)

    def close(self):
        self._closing = True
        self._reg_queue.put(None)
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()
        if self._reg_thread:
            self._reg_thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            self._say("!! platform login refused: %s" % mqtt.connack_string(rc))
            return
        self.connects += 1
        self._connected.set()
        rc, mid = client.subscribe([
            (CONTROL_RESPONSE_TOPIC, 1),
            ("/sys/+/+/thing/ota/post", 1),
            ("/sys/+/+/thing/register/post", 1),
        ])
        self._sub_mid = mid

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        if mid == self._sub_mid:
            if any(q == 0x80 for q in granted_qos):
                self._say("!! platform subscriptions refused: %s" % (granted_qos,))
                return
            self._subscribed.set()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnects += 1
        self._connected.clear()
        self._subscribed.clear()

    def _on_message(self, client, userdata, msg):
        if msg.topic == CONTROL_RESPONSE_TOPIC:
            self._on_control_response(msg.payload)
            return
        with self._lock:
            m = Message(len(self._messages), msg)
            self._messages.append(m)
            self._lock.notify_all()
        self._say(describe(m))
        if m.kind == "register/post" and m.cmd == CMD_REGISTER_REQUEST and m.product_id in self._reg:
            self._reg_queue.put(m)

    def _say(self, line):
        if self.echo:
            self.echo(line)

    # -- dynamic security ---------------------------------------------------

    def _on_control_response(self, payload):
        try:
            doc = json.loads(payload.decode("utf-8"))
        except ValueError:
            return
        with self._lock:
            for r in doc.get("responses", []):
                cid = r.get("correlationData")
                if cid in self._pending:
                    self._pending[cid] = r
            self._lock.notify_all()

    def control(self, command, ignore=(), **fields):
        """Runs one dynamic-security command and waits for its answer. Raises
        ControlError when the plugin reports an error not in IGNORE (a list
        of substrings, e.g. "already exists"). Returns the response dict."""
        cid = secrets.token_hex(16)
        cmd = dict(fields, command=command, correlationData=cid)
        with self._lock:
            self._pending[cid] = None
        deadline = time.monotonic() + self.timeout
        try:
            self.wait_connected()
            info = self.client.publish(CONTROL_TOPIC, json.dumps({"commands": [cmd]}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise PlatformError("%s: publish failed: %s" % (command, mqtt.error_string(info.rc)))
            with self._lock:
                while self._pending[cid] is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PlatformError("%s: no answer from the broker within %ss"
                                            % (command, self.timeout))
                    self._lock.wait(left)
                resp = self._pending[cid]
        finally:
            with self._lock:
                self._pending.pop(cid, None)
        err = resp.get("error")
        if err and not any(s in err for s in ignore):
            raise ControlError(command, err)
        return resp

    def setup_roles(self):
        """The "device" role: publish, receive and subscribe on /sys/#.
        Idempotent. The admin itself must be allowed to publish on /sys/#
        (broker.py grants it in the dynsec file: changing a connected
        client's roles through the API would disconnect it)."""
        self.control("createRole", rolename=DEVICE_ROLE, ignore=("already exists",))
        for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern"):
            self.control("addRoleACL", rolename=DEVICE_ROLE, acltype=acltype, topic="/sys/#",
                         priority=0, allow=True, ignore=("already exists",))

    def provision_device(self, device_id, password):
        """Creates the broker client DEVICE_ID with PASSWORD and the device role."""
        self.control("createClient", username=device_id, password=password)
        self.control("addClientRole", username=device_id, rolename=DEVICE_ROLE)

    def client_exists(self, device_id):
        try:
            self.control("getClient", username=device_id)
        except ControlError as e:
            if "not found" in e.error.lower():
                return False
            raise
        return True

    def set_password(self, device_id, password):
        """Changes DEVICE_ID's password; mosquitto disconnects that client."""
        self.control("setClientPassword", username=device_id, password=password)

    def disable_client(self, device_id):
        self.control("disableClient", username=device_id)

    def enable_client(self, device_id):
        self.control("enableClient", username=device_id)

    def delete_client(self, device_id):
        self.control("deleteClient", username=device_id)

    # -- recorded messages --------------------------------------------------

    def mark(self):
        """A position in the record: pass it as SINCE to see only later messages."""
        with self._lock:
            return len(self._messages)

    def messages(self, device_id=None, cmd=None, kind=None, since=0):
        """Recorded messages, oldest first, filtered."""
        with self._lock:
            ms = list(self._messages[since or 0:])
        return [m for m in ms
                if (device_id is None or m.device_id == device_id)
                and (cmd is None or m.cmd == cmd)
                and (kind is None or m.kind == kind)]

    def wait_for(self, predicate, timeout=10, since=0, what="a matching message"):
        """The first recorded message (at or after SINCE) for which
        PREDICATE(message) is true, waiting up to TIMEOUT seconds. Raises
        WaitTimeout, listing what was seen."""
        deadline = time.monotonic() + timeout
        i = since or 0
        with self._lock:
            while True:
                while i < len(self._messages):
                    m = self._messages[i]
                    i += 1
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            seen = self._messages[since or 0:]
        raise WaitTimeout("no %s within %ss; %d message(s) seen:\n%s" % (
            what, timeout, len(seen), "\n".join("  " + repr(m) for m in seen[-30:])))

    def wait_for_report(self, device_id, fw_version=None, hw_version=None, since=0, timeout=15):
        """The next CMD 10 version report from DEVICE_ID (with FW_VERSION when given)."""
        def pred(m):
            return (m.device_id == device_id and m.kind == "ota/post" and m.cmd == CMD_VERSION_REPORT
                    and (fw_version is None or m.get("FW_VERSION") == fw_version)
                    and (hw_version is None or m.get("HW_VERSION") == hw_version))
        return self.wait_for(pred, timeout, since,
                             "version report from %s%s" % (device_id, " with FW_VERSION %s" % fw_version
                                                           if fw_version else ""))

    def wait_for_receipt(self, device_id, cmd_id, since=0, timeout=15):
        """DEVICE_ID's CMD 11 receipt (BACK OK or FAIL) of the command CMD_ID."""
        def pred(m):
            return (m.device_id == device_id and m.kind == "ota/post" and m.cmd == CMD_OTA
                    and m.get("ID") == cmd_id and "BACK" in m.json)
        return self.wait_for(pred, timeout, since, "receipt of %s from %s" % (cmd_id, device_id))

    def wait_for_progress(self, device_id, job_id=None, state=None, since=0, timeout=15):
        def pred(m):
            return (m.device_id == device_id and m.kind == "ota/post" and m.cmd == CMD_PROGRESS
                    and (job_id is None or m.get("ID") == job_id)
                    and (state is None or m.get("STATE") == state))
        return self.wait_for(pred, timeout, since, "progress %s from %s" % (state or "", device_id))

    # -- commands -----------------------------------------------------------

    def send_raw(self, topic_, payload, qos=1, retain=False):
        """Publishes PAYLOAD (bytes, str, or something json.dumps takes) on TOPIC_."""
        if not isinstance(payload, (bytes, bytearray, str)):
            payload = json.dumps(payload)
        self.wait_connected()
        info = self.client.publish(topic_, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PlatformError("publish on %s failed: %s" % (topic_, mqtt.error_string(info.rc)))
        if qos > 0:
            info.wait_for_publish(self.timeout)
            if not info.is_published():
                raise PlatformError("publish on %s not acknowledged within %ss" % (topic_, self.timeout))
        with self._lock:
            self._sent.append((time.monotonic(), topic_, payload))
        return info

    def send_ota(self, product_id, device_id, url, fw_version, id=None, size=None, md5=None,
                 sha256=None, raw_payload=None, extra=None, qos=1, retain=False):
        """Sends a CMD 11 upgrade command; returns its ID. RAW_PAYLOAD, when
        given, is sent instead of the JSON built from the arguments."""
        cmd_id = id if id is not None else random_id()
        if raw_payload is None:
            msg = {"CMD": CMD_OTA, "ID": cmd_id, "URL": url, "FW_VERSION": fw_version}
            if size is not None:
                msg["SIZE"] = size
            if md5 is not None:
                msg["MD5"] = md5
            if sha256 is not None:
                msg["SHA256"] = sha256
            if extra:
                msg.update(extra)
            payload = json.dumps(msg, separators=(",", ":"))
            self._say("-> %s upgrade command %s: %s from %s" % (device_id, cmd_id, fw_version, url))
        else:
            payload = raw_payload
            self._say("-> %s raw payload on ota/set (%d bytes)" % (device_id, len(payload)))
        self.send_raw(topic("ota/set", product_id, device_id), payload, qos=qos, retain=retain)
        return cmd_id

    def sent(self):
        with self._lock:
            return list(self._sent)

    # -- registration service -----------------------------------------------

    def enable_registration(self, product_id, product_secret, auto=True, mode=REG_NORMAL,
                            devices=(), receipt_timeout=10):
        """Answers CMD 20 requests for PRODUCT_ID (when AUTO; MODE: REG_NORMAL,
        REG_SILENT, REG_KEEP_PASSWORD, REG_TWICE). DEVICES, if given, are
        provisioned on the broker with the product secret, which is what a
        product with registration turned on looks like."""
        for d in devices:
            self.provision_device(d, product_secret)
        self._reg[product_id] = {"secret": product_secret, "mode": mode if auto else REG_SILENT,
                                 "receipt_timeout": receipt_timeout}
        if self._reg_thread is None:
            self._reg_thread = threading.Thread(target=self._registration_worker,
                                                name="krtiot-registration", daemon=True)
            self._reg_thread.start()

    def set_registration_mode(self, product_id, mode):
        self._reg[product_id]["mode"] = mode

    def issued_secret(self, device_id):
        """The last secret issued to DEVICE_ID, or None."""
        with self._lock:
            s = self._issued.get(device_id)
            return s[-1] if s else None

    def issued_secrets(self, device_id):
        with self._lock:
            return list(self._issued.get(device_id, []))

    def registration_events(self, device_id=None):
        """(device_id, what, request_id) tuples; what is one of "request",
        "answered", "acknowledged", "password-changed", "no-receipt", "error"."""
        with self._lock:
            return [e for e in self._reg_events if device_id is None or e[0] == device_id]

    def password_change(self, device_id):
        """(monotonic time, mark) taken just before the platform changed
        DEVICE_ID's password to the issued secret, or None. Every message sent
        with the new secret comes after both."""
        with self._lock:
            return self._password_change.get(device_id)

    def wait_registration_event(self, device_id, what, timeout=15):
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for e in self._reg_events:
                    if e[0] == device_id and e[1] == what:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout("registration of %s: no %r within %ss; events: %r" % (
                        device_id, what, timeout, self._reg_events))
                self._lock.wait(left)

    def _reg_event(self, device_id, what, request_id):
        with self._lock:
            self._reg_events.append((device_id, what, request_id))
            self._lock.notify_all()

    def _registration_worker(self):
        # Its own thread: it waits for receipts, which paho's thread delivers.
        while True:
            m = self._reg_queue.get()
            if m is None or self._closing:
                return
            try:
                self._register(m)
            except Exception as e:  # keep serving other devices
                self._reg_event(m.device_id, "error", m.get("ID"))
                self._say("!! registration of %s failed: %s" % (m.device_id, e))

    def _register(self, m):
        p, d = m.product_id, m.device_id
        conf = self._reg.get(p)
        req_id = m.get("ID")
        self._reg_event(d, "request", req_id)
        if conf is None or conf["mode"] == REG_SILENT:
            return
        if not isinstance(req_id, str) or not req_id:
            self._say("!! %s: registration request without an ID, ignored" % d)
            return
        if m.get("PRODUCT_ID") not in (None, p) or m.get("DEVICE_ID") not in (None, d):
            self._say("!! %s: registration request names another product or device, ignored" % d)
            return
        secret = secrets.token_urlsafe(18)
        with self._lock:
            self._issued.setdefault(d, []).append(secret)
        answer = json.dumps({"CMD": CMD_REGISTER_SECRET, "ID": req_id, "DEVICE_SECRET": secret},
                            separators=(",", ":"))
        since = self.mark()
        times = 2 if conf["mode"] == REG_TWICE else 1
        for _ in range(times):
            self.send_raw(topic("register/set", p, d), answer)
        self._reg_event(d, "answered", req_id)
        self._say("-> %s device secret issued (request %s)" % (d, req_id))
        try:
            self.wait_for(lambda r: (r.device_id == d and r.kind == "register/post"
                                     and r.cmd == CMD_REGISTER_SECRET and r.get("ID") == req_id
                                     and r.get("BACK") == "OK"),
                          timeout=conf["receipt_timeout"], since=since,
                          what="CMD 21 receipt from %s" % d)
        except WaitTimeout:
            self._reg_event(d, "no-receipt", req_id)
            self._say("!! %s did not acknowledge its secret; password left unchanged" % d)
            return
        self._reg_event(d, "acknowledged", req_id)
        if conf["mode"] == REG_KEEP_PASSWORD:
            return
        # The broker closes the device's session as soon as it applies the change, before its
        # answer reaches us: the device may be back with its new secret before set_password()
        # returns. What comes after the change is what comes after this point.
        with self._lock:
            self._password_change[d] = (time.monotonic(), len(self._messages))
        self.set_password(d, secret)
        self._reg_event(d, "password-changed", req_id)
        self._say("== %s now logs in with its device secret (the broker closed its session)" % d)


# -- test helper: a plain MQTT client acting as a device ----------------------

class DeviceClient:
    """A paho client for tests that act as a device: connect() returns the
    CONNACK code (0 = accepted); received messages are kept in .received."""

    def __init__(self, host, port, username, password, client_id=None):
        self.host, self.port = host, port
        self.received = []
        self.cond = threading.Condition()
        self.connack = None
        self.disconnected = threading.Event()
        self.c = mqtt.Client(client_id=client_id or "dev-" + secrets.token_hex(4),
                             clean_session=True, protocol=mqtt.MQTTv311,
                             reconnect_on_failure=False)
        self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self._connected_ev = threading.Event()

    def _on_connect(self, client, userdata, flags, rc):
        self.connack = rc
        self._connected_ev.set()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnected.set()
        self._connected_ev.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def connect(self, timeout=10):
        self.c.connect(self.host, self.port, keepalive=30)
        self.c.loop_start()
        if not self._connected_ev.wait(timeout):
            raise PlatformError("no CONNACK within %ss" % timeout)
        return self.connack if self.connack is not None else -1

    def subscribe(self, t, qos=1, timeout=10):
        ev = threading.Event()
        self.c.on_subscribe = lambda c, u, mid, granted: ev.set()
        self.c.subscribe(t, qos)
        if not ev.wait(timeout):
            raise PlatformError("SUBACK for %s not received" % t)

    def publish(self, t, payload, qos=1, timeout=10):
        if not isinstance(payload, (bytes, bytearray, str)):
            payload = json.dumps(payload, separators=(",", ":"))
        info = self.c.publish(t, payload, qos=qos)
        if qos:
            info.wait_for_publish(timeout)
        return info

    def wait_message(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for tp, pl in self.received:
                    if predicate(tp, pl):
                        return tp, pl
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout("no matching message within %ss; got %r" % (timeout, self.received))
                self.cond.wait(left)

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


def try_connect(host, port, username, password, client_id=None, timeout=10):
    """Connects once and disconnects; returns the CONNACK code (0 = accepted)."""
    dc = DeviceClient(host, port, username, password, client_id)
    try:
        return dc.connect(timeout)
    finally:
        dc.close()


# -- the demo -------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        description="The simulated KRT platform: prints what devices say, answers "
                    "registrations, sends upgrade commands.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin-user", default="admin")
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--product-id")
    ap.add_argument("--product-secret")
    ap.add_argument("--devices", default="",
                    help="comma-separated device IDs to provision with the product secret "
                         "(existing broker clients are left alone)")
    ap.add_argument("--registration-mode", default=REG_NORMAL,
                    choices=(REG_NORMAL, REG_SILENT, REG_KEEP_PASSWORD, REG_TWICE))
    ap.add_argument("--ota", nargs=2, metavar=("URL", "VERSION"),
                    help="send this upgrade to --ota-device after its first version report")
    ap.add_argument("--ota-device")
    ap.add_argument("--duration", type=float, default=0, help="seconds to run (0: until SIGTERM/SIGINT)")
    args = ap.parse_args(argv)

    def say(line):
        print(time.strftime("%H:%M:%S ") + line, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())

    p = Platform(args.host, args.port, args.admin_user, args.admin_password, echo=say)
    say("== platform connected to %s:%d as %s" % (args.host, args.port, args.admin_user))
    try:
        if args.product_id:
            if not args.product_secret:
                ap.error("--product-id needs --product-secret")
            for d in [x for x in args.devices.split(",") if x]:
                if p.client_exists(d):
                    say("== %s is already known to the broker; left as it is" % d)
                else:
                    p.provision_device(d, args.product_secret)
                    say("== %s provisioned with the product secret (may register)" % d)
            p.enable_registration(args.product_id, args.product_secret, mode=args.registration_mode)
            say("== registration open for product %s (%s)" % (args.product_id, args.registration_mode))
        ota_sent = False
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if deadline and time.monotonic() >= deadline:
                break
            if args.ota and not ota_sent:
                dev = args.ota_device
                if not dev or not args.product_id:
                    ap.error("--ota needs --ota-device and --product-id")
                if p.messages(dev, CMD_VERSION_REPORT):
                    p.send_ota(args.product_id, dev, args.ota[0], args.ota[1])
                    ota_sent = True
            stop.wait(0.2)
    finally:
        p.close()
        say("== platform stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
