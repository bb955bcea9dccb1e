# SPDX-License-Identifier: Apache-2.0
"""A small HTTP/1.1 server (Python stdlib only) that misbehaves on request,
for the download engine's tests. It serves named in-memory images at
/<name>, with Range/If-Range, ETag and Last-Modified like a real server, and
the query string picks the fault:

  key=K            requests with the same key share counters and a log (use one per test)
  drop=N&drops=K   the first K requests send the headers and N body bytes, then close
  status=S         answer S (404, 500, 429, ...) instead; status_times=K: only the first K times
  retry_after=N    add "Retry-After: N" to a status= answer
  ignore_range=1   always 200 with the whole image
  bad_range=1      206 whose Content-Range starts at 0 whatever was asked
  change=1         every request sees a new version of the image (new bytes, ETag, Last-Modified)
  wrong=1          one byte of the body is wrong
  stall=N          send the headers and N body bytes, then nothing until the server stops
  stall_headers=1  accept the request, never answer
  no_length=1      no Content-Length: the body ends when the connection closes
  redirect=loop    302 to the same URL, forever
  redirect=file    302 to file:///etc/passwd
  redirect=ftp     302 to ftp://127.0.0.1/x
  redirect=once    302 to the same URL without the redirect
  redirect=nothttp 302 to the same URL with not_http=ssh instead of the redirect
  short=N          Content-Length says the whole body, but only N body bytes are sent, then close
                   (every request); short_grow=1: request number k sends k*N bytes
  no_validators=1  no ETag, no Last-Modified (lighttpd without a MIME type, embedded servers);
                   a Range is still honored, an If-Range never matches
  status=204       no body and no Content-Length; status=202/203: a small body, like other statuses
  cl_overflow=1    "Content-Length: 99999999999999999999999", the whole image, then close
  cl_twice=1       two different Content-Length headers (whole, then half), half the body, close
  not_http=ssh     answer "SSH-2.0-OpenSSH_9" and close; not_http=random: random bytes, close;
                   not_http=status: "HTTP/1.1 2x0 OK" (an HTTP-looking status line that is not one);
                   not_http=version: "HTTP/7.1 200 OK"; not_http=nocolon: a header line without a colon
  huge_header=1    a response header line of 2 MiB
  bad_total=1      206 whose Content-Range total is 1000 more than the image's size
  range_len=1      206 whose Content-Length (and body) is 1000 bytes shorter than its Content-Range
  range_short=N    206 that sends only N bytes, with a Content-Range and Content-Length saying so

Use in-process (FaultServer(images).start(), .url(), .requests(key), .stop())
or standalone: faultserver.py --port 8080 --image name=path.
"""

import argparse
import email.utils
import http.server
import random
import socket
import sys
import threading
import urllib.parse

CHUNK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultserver"

    def log_message(self, *args):
        pass

    def _send_body(self, body, limit=None):
        """Writes BODY (or its first LIMIT bytes); False if the client went away."""
        end = len(body) if limit is None else min(limit, len(body))
        try:
            for i in range(0, end, CHUNK):
                self.wfile.write(body[i:min(i + CHUNK, end)])
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False

    def _drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _stall(self):
        self.server.fault.stopping.wait()
        self.close_connection = True

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        fs = self.server.fault
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        name = url.path.lstrip("/")
        key = q.get("key", "")
        n = fs.log_request(key, {
            "path": self.path,
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
        })

        if "stall_headers" in q:
            return self._stall()

        not_http = q.get("not_http")
        if not_http:
            if not_http == "ssh":
                raw = b"SSH-2.0-OpenSSH_9\r\n"
            elif not_http == "status":
                raw = b"HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello"
            elif not_http == "version":
                raw = b"HTTP/7.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            elif not_http == "nocolon":
                raw = b"HTTP/1.1 200 OK\r\nbogus header line\r\nContent-Length: 5\r\n\r\nhello"
            else:
                raw = random.Random(n).randbytes(4096)
            try:
                self.wfile.write(raw)
            except OSError:
                pass
            return self._drop()

        redirect = q.get("redirect")
        if redirect:
            if redirect == "file":
                location = "file:///etc/passwd"
            elif redirect == "ftp":
                location = "ftp://127.0.0.1/x"
            elif redirect == "once":
                q.pop("redirect")
                location = url.path + "?" + urllib.parse.urlencode(q)
            elif redirect == "nothttp":
                q.pop("redirect")
                q["not_http"] = "ssh"
                location = url.path + "?" + urllib.parse.urlencode(q)
            else:
                location = self.path
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        status = int(q.get("status", 0))
        if status and n <= int(q.get("status_times", 1 << 30)):
            body = b"fault %d\n" % status
            self.send_response(status)
            if "retry_after" in q:
                self.send_header("Retry-After", q["retry_after"])
            if status in (204, 304):
                # No body, and no Content-Length (RFC 9110 8.6).
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self._send_body(body)
            return

        version = n if "change" in q else 0
        image = fs.image(name, version)
        if image is None:
            self.send_error(404)
            return
        if "wrong" in q:
            image = bytearray(image)
            image[len(image) // 2] ^= 0xFF
            image = bytes(image)
        etag = '"%s-v%d"' % (name, version)
        last_modified = email.utils.formatdate(1700000000 + version, usegmt=True)
        if "no_validators" in q:
            etag = last_modified = None

        start = 0
        partial = False
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        # Without validators an If-Range cannot match anything (RFC 9110 13.1.5): the whole file.
        if_range_ok = if_range is None or (etag is not None and if_range in (etag, last_modified))
        if rng and "ignore_range" not in q and if_range_ok:
            spec = rng.strip()
            if spec.startswith("bytes=") and "," not in spec:
                first = spec[6:].split("-", 1)[0]
                if first.isdigit():
                    start = int(first)
                    partial = True
            if partial and start >= len(image):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(image))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return

        body = image[start:]
        length = len(body)
        if partial:
            self.send_response(206)
            shown = 0 if "bad_range" in q else start
            end = len(image) - 1
            total = len(image) + (1000 if "bad_total" in q else 0)
            if "range_short" in q:
                body = body[:int(q["range_short"])]
                end = start + len(body) - 1
                length = len(body)
            if "range_len" in q:
                body = body[:-1000]
                length = len(body)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (shown, end, total))
        else:
            self.send_response(200)
        if etag is not None:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if "huge_header" in q:
            self.send_header("X-Huge", "a" * (2 * 1024 * 1024))
        short = None
        if "short" in q:
            short = int(q["short"]) * (n if "short_grow" in q else 1)
        if "no_length" in q:
            self.send_header("Connection", "close")
            self.close_connection = True
        elif "cl_overflow" in q:
            self.send_header("Content-Length", "99999999999999999999999")
            self.send_header("Connection", "close")
            self.close_connection = True
        elif "cl_twice" in q:
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Length", str(length // 2))
            self.send_header("Connection", "close")
            self.close_connection = True
            short = length // 2
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        if short is not None:
            self._send_body(body, short)
            return self._drop()

        drops = int(q.get("drops", 0))
        if "drop" in q and n <= drops:
            self._send_body(body, int(q["drop"]))
            return self._drop()
        if "stall" in q:
            self._send_body(body, int(q["stall"]))
            return self._stall()
        self._send_body(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up (aborting a download on purpose) is not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultServer:
    def __init__(self, images=None, port=0):
        """IMAGES: name -> bytes."""
        self.images = dict(images or {})
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._log = {}
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fault = self
        self._thread = None

    @property
    def port(self):
        return self._httpd.server_address[1]

    def url(self, name, **faults):
        query = urllib.parse.urlencode(faults)
        return "http://127.0.0.1:%d/%s%s" % (self.port, name, "?" + query if query else "")

    def image(self, name, version=0):
        """The bytes served for NAME; VERSION > 0 (change=1) alters the first 8 bytes."""
        data = self.images.get(name)
        if data is None or version == 0:
            return data
        return b"v%07d" % version + data[8:]

    def log_request(self, key, entry):
        with self._lock:
            entries = self._log.setdefault(key, [])
            entries.append(entry)
            return len(entries)

    def requests(self, key):
        with self._lock:
            return list(self._log.get(key, []))

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="faultserver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()  # releases stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--image", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args()
    images = {}
    for spec in args.image:
        name, path = spec.split("=", 1)
        with open(path, "rb") as f:
            images[name] = f.read()
    server = FaultServer(images, args.port)
    print("listening on http://127.0.0.1:%d/" % server.port, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server._httpd.server_close()


if __name__ == "__main__":
    main()
