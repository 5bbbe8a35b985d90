#!/usr/bin/env python3
"""WebSocket peer of the interop suite (python3-websockets, Debian).

server --port N: answers a plain GET /ok with "ok" (the harness's tunnel
  check); echoes every message on any other path, with subprotocol
  "echo.v1" when asked; a text message "close:<code>" makes it close the
  connection with that code instead.
client --url URL: connects asking for "echo.v1", sends a short text, a
  1 MiB binary (deterministic bytes), a 70000-character text and an empty
  binary, checks each echo, then asks the server to close with 4001 and
  prints one JSON line: the subprotocol, the response's Sec-WebSocket-Accept
  check, each echo's SHA-256 and whether it matched, the close code seen.
"""
import argparse
import asyncio
import hashlib
import http
import json
import sys

import websockets


async def serve(port):
    async def echo(ws, *args):
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("close:"):
                await ws.close(code=int(msg[6:]), reason="asked")
                return
            await ws.send(msg)

    async def plain(path, headers):
        # The test harness checks the tunnel with a plain GET /ok.
        if path == "/ok":
            return http.HTTPStatus.OK, [("Content-Length", "2")], b"ok"
        return None

    async with websockets.serve(echo, "127.0.0.1", port, subprotocols=["echo.v1"], max_size=8 << 20,
                                process_request=plain):
        print("listening", flush=True)
        await asyncio.Future()


def payloads():
    big = bytearray()
    seed = b"ptproxy-ws"
    while len(big) < 1 << 20:
        seed = hashlib.sha256(seed).digest()
        big += seed
    return ["hello websocket", bytes(big[: 1 << 20]), "\u00e9" * 70000, b""]


async def client(url):
    out = {"echoes": []}
    async with websockets.connect(url, subprotocols=["echo.v1"], max_size=8 << 20, compression=None) as ws:
        out["subprotocol"] = ws.subprotocol
        for p in payloads():
            await ws.send(p)
            got = await ws.recv()
            data = got.encode() if isinstance(got, str) else got
            want = p.encode() if isinstance(p, str) else p
            out["echoes"].append({"type": type(got).__name__, "len": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()[:16], "match": data == want})
        await ws.send("close:4001")
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            out["close_code"] = e.rcvd.code if e.rcvd else None
    print(json.dumps(out, sort_keys=True), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    a = ap.parse_args()
    if a.mode == "server":
        asyncio.run(serve(a.port))
    else:
        asyncio.run(asyncio.wait_for(client(a.url), 60))


if __name__ == "__main__":
    sys.exit(main())
