"""Interop client for cmd/internal/proctest (TestInterop): one request with
Python's urllib.request or http.client, result as one JSON line on stdout.

    python3 client.py --lib urllib|httpclient --url URL [--method M]
        [--header 'Name: value']... [--body-file F] [--chunked]
        [--http10] [--close]

--chunked sends the body file without a length (Transfer-Encoding: chunked);
--http10 (http.client only) speaks HTTP/1.0, which makes http.client send no
Host field; --close adds Connection: close (urllib always sends it).

Output: {"status", "headers": [[name, value]...], "body_len", "body_sha256",
"body_b64" (bodies up to 64 KiB), "error"}; error is null when the exchange completed, else the exception
(for example IncompleteRead). HTTP error statuses are results, not errors.
Trailers are read and discarded by http.client, so none are reported.
"""

import argparse
import base64
import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

# The header-heavy scenario sends 150 fields; http.client stops at 100.
http.client._MAXHEADERS = 1000


def file_chunks(path, size=65536):
    with open(path, "rb") as f:
        while True:
            b = f.read(size)
            if not b:
                return
            yield b


def body_of(a):
    if not a.body_file:
        return None
    if a.chunked:
        return file_chunks(a.body_file)
    with open(a.body_file, "rb") as f:
        return f.read()


def headers_of(a):
    out = {}
    for h in a.header:
        k, _, v = h.partition(":")
        out[k.strip()] = v.strip()
    if a.close:
        out["Connection"] = "close"
    return out


def consume(resp, result):
    h = hashlib.sha256()
    n = 0
    small = b""
    while True:
        b = resp.read(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
        if n <= 65536:
            small += b
    result["body_len"], result["body_sha256"] = n, h.hexdigest()
    if n <= 65536:
        result["body_b64"] = base64.b64encode(small).decode()


def with_urllib(a, result):
    req = urllib.request.Request(a.url, data=body_of(a), method=a.method, headers=headers_of(a))
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        resp = e  # a response with an error status
    result["status"] = resp.status if hasattr(resp, "status") else resp.code
    result["headers"] = [[k, v] for k, v in resp.headers.items()]
    consume(resp, result)


def with_httpclient(a, result):
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    if a.http10:
        conn._http_vsn = 10
        conn._http_vsn_str = "HTTP/1.0"
    path = u.path + ("?" + u.query if u.query else "")
    conn.request(a.method, path, body=body_of(a), headers=headers_of(a), encode_chunked=a.chunked)
    resp = conn.getresponse()
    result["status"] = resp.status
    result["headers"] = [[k, v] for k, v in resp.getheaders()]
    consume(resp, result)
    conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["urllib", "httpclient"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--body-file")
    ap.add_argument("--chunked", action="store_true")
    ap.add_argument("--http10", action="store_true")
    ap.add_argument("--close", action="store_true")
    a = ap.parse_args()
    result = {"status": 0, "headers": [], "body_len": 0, "body_sha256": "", "error": None}
    try:
        if a.lib == "urllib":
            with_urllib(a, result)
        else:
            with_httpclient(a, result)
    except Exception as e:  # the result says how the exchange failed
        result["error"] = "%s: %s" % (type(e).__name__, e)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
