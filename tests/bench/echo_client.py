#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The reference of the receipt-latency benchmark: a trivial device that
answers each CMD 11 on its ota/set topic with a receipt {"CMD":11,"ID":…,
"BACK":"OK"} on ota/post, QoS 1 both ways, and does nothing else (no
validation, no version report). Its own process, so that it does not share
the measuring process's interpreter.

    echo_client.py HOST PORT USER PASSWORD PRODUCT DEVICE

Prints "ready" once subscribed; runs until SIGTERM.
"""

import json
import signal
import socket
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    host, port, user, password, product, device = sys.argv[1:7]
    set_topic = "/sys/%s/%s/thing/ota/set" % (product, device)
    post_topic = "/sys/%s/%s/thing/ota/post" % (product, device)
    ready = threading.Event()
    stop = threading.Event()

    def on_connect(c, u, flags, rc):
        # paho 1.6 leaves Nagle on; a trivial client that answers at once wants it off.
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rc == 0:
            c.subscribe(set_topic, 1)

    def on_subscribe(c, u, mid, granted):
        ready.set()

    def on_message(c, u, msg):
        try:
            cmd_id = json.loads(msg.payload).get("ID")
        except (ValueError, AttributeError):
            return
        c.publish(post_topic, '{"CMD":11,"ID":%s,"BACK":"OK"}' % json.dumps(cmd_id), qos=1)

    c = mqtt.Client(client_id="%s-%s" % (product, device), clean_session=True, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    c.connect(host, int(port), keepalive=60)
    c.loop_start()
    if not ready.wait(20):
        sys.exit("echo client: not subscribed within 20 s")
    print("ready", flush=True)
    stop.wait()
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
