"""Interop origin for cmd/internal/proctest (TestInterop): Python's
http.server, as HTTP/1.0 (the default BaseHTTPRequestHandler) or HTTP/1.1.

    python3 origin.py --port P [--http11] [--idle-timeout S]

Prints "listening <port>" on stdout once it accepts connections.

As HTTP/1.0 (the default) every response body is close-delimited: no
Content-Length, the connection closes after the response. As HTTP/1.1
(protocol_version = "HTTP/1.1") bodies carry Content-Length, except /chunked
and /trailers (chunked, written by hand: http.server has no chunked writer)
and /close (close-delimited); the connection stays open for the next request
until --idle-timeout seconds pass without one. Routes are those of
origin.js: /ok /static /big /echo /chunked /close /trailers /204 /slow
/headers /reject.
"""

import argparse
import hashlib
import http.server
import json
import socket
import socketserver
import sys
import time

LAST_MODIFIED = "Wed, 01 Jan 2020 00:00:00 GMT"
ETAG = '"static-v1"'
STATIC = b"hello from python\n"
PARTS = [b"first part\n", b"second part\n", b"third part\n", b"fourth part\n", b"last part\n"]


def deterministic(n, seed):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(("%s:%d" % (seed, i)).encode()).digest()
        i += 1
    return bytes(out[:n])


BIG = deterministic(2 << 20, "python-big")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "interop-origin-py"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    @property
    def http11(self):
        """Whether this response may use HTTP/1.1 framing (chunked): the
        server speaks HTTP/1.1 and so does the request."""
        return self.protocol_version == "HTTP/1.1" and self.request_version == "HTTP/1.1"

    def end_headers(self):
        # An HTTP/1.0 request that asked for keep-alive is kept by
        # http.server as HTTP/1.1 without saying so; say it, or the client
        # waits for the close that marks the end of the response.
        if self.protocol_version == "HTTP/1.1" and self.request_version == "HTTP/1.0" and not self.close_connection:
            self.send_header("Connection", "keep-alive")
        super().end_headers()

    def handle_expect_100(self):
        # Only called for HTTP/1.1 (the base class checks the versions).
        if self.path.split("?")[0] == "/reject":
            self.reject()
            return False
        return super().handle_expect_100()

    def read_body(self):
        """The request body, from Content-Length or chunked framing."""
        h = hashlib.sha256()
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                data = self.rfile.read(size)
                h.update(data)
                n += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left > 0:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    break
                h.update(data)
                n += len(data)
                left -= len(data)
        return n, h.hexdigest()

    def body(self, status, ctype, data, extra=()):
        """A complete response: Content-Length as HTTP/1.1, close-delimited
        as HTTP/1.0."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if self.protocol_version == "HTTP/1.1":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def unknown_length(self, parts, trailers=None, delay=0.0):
        """A body whose length is not announced: chunked as HTTP/1.1 (with
        trailers if given), close-delimited otherwise."""
        chunked = self.http11 and self.path.split("?")[0] != "/close"
        if delay:
            time.sleep(delay * 2)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            if trailers:
                self.send_header("Trailer", ", ".join(k for k, _ in trailers))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        if self.command == "HEAD":
            return
        for p in parts:
            if delay:
                time.sleep(delay)
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
            else:
                self.wfile.write(p)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n")
            for k, v in trailers or ():
                self.wfile.write(("%s: %s\r\n" % (k, v)).encode())
            self.wfile.write(b"\r\n")

    def reject(self):
        self.send_response(413)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "10")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"too large\n")
        self.wfile.flush()
        self.close_connection = True
        # Lingering close, as nginx and Apache httpd do: closing with the
        # unread upload in the receive buffer would reset the connection,
        # and a client still sending could lose this answer.
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(2)
            while self.connection.recv(65536):
                pass
        except OSError:
            pass

    def route(self):
        path = self.path.split("?")[0]
        if path == "/ok":
            self.body(200, "text/plain", b"ok")
        elif path == "/static":
            validators = (("Last-Modified", LAST_MODIFIED), ("ETag", ETAG))
            if self.headers.get("If-None-Match") == ETAG or self.headers.get("If-Modified-Since") == LAST_MODIFIED:
                self.send_response(304)
                for k, v in validators:
                    self.send_header(k, v)
                self.end_headers()
                return
            self.body(200, "text/plain", STATIC, validators)
        elif path == "/big":
            self.body(200, "application/octet-stream", BIG)
        elif path == "/echo":
            n, sha = self.read_body()
            out = json.dumps({"method": self.command, "length": n, "sha256": sha}, separators=(",", ":")) + "\n"
            self.body(200, "application/json", out.encode())
        elif path in ("/chunked", "/close"):
            self.unknown_length(PARTS)
        elif path == "/trailers":
            h = hashlib.sha256(b"".join(PARTS)).hexdigest()
            self.unknown_length(PARTS, trailers=[("X-Checksum", h), ("X-Parts", str(len(PARTS)))])
        elif path == "/slow":
            self.unknown_length(PARTS, delay=0.1)
        elif path == "/204":
            self.send_response(204)
            self.end_headers()
        elif path == "/headers":
            extra = [("X-Field-%03d" % i, "v" * 450) for i in range(150)]
            self.body(200, "text/plain", b"many fields\n", extra)
        elif path == "/reject":
            self.reject()
        else:
            self.body(404, "text/plain", b"not found\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = route


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--http11", action="store_true")
    ap.add_argument("--idle-timeout", type=float, default=2.0)
    a = ap.parse_args()
    if a.http11:
        Handler.protocol_version = "HTTP/1.1"
        # StreamRequestHandler.timeout: an idle keep-alive connection (or a
        # stalled request) is closed after this many seconds.
        Handler.timeout = a.idle_timeout
    srv = Server(("127.0.0.1", a.port), Handler)
    print("listening %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
