"""A WebSocket server for wsc's integration tests, built on the `websockets` package.

Usage: ws_server.py [--deflate [--no-context-takeover] | --deflate-defaults]
Binds 127.0.0.1 on a free port and prints `READY <port>`. Paths:
  /            echo every message (a text "close:CODE:REASON" makes the server close so)
  /refuse      answers 403 with body "go away"
  /stall       accepts, then stops reading (so pings go unanswered)
  /fragments   sends one text message in three fragments, then echoes
  /big?n=N     sends one binary message of N bytes, then echoes
  /stream      echoes each message fragment by fragment as it arrives (never whole)
  /bad-json    sends a text message that is not valid JSON, then echoes
  /whoami      sends the request's Cookie and Origin headers as one text message, then echoes
  /set-cookie  answers the upgrade with Set-Cookie: session=s3cr3t; then echoes
  /redirect?to=URL  answers 302 with that Location (default /set-cookie), setting a cookie
  /loop        redirects to itself
Options: --port N binds that port (default: a free one).
"""
import asyncio
import http
import sys
from urllib.parse import urlparse, parse_qs

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


async def handler(ws):
    url = urlparse(ws.request.path)
    if url.path == "/stall":
        ws.transport.pause_reading()
        await asyncio.sleep(3600)
        return
    if url.path == "/fragments":
        await ws.send(["frag-one ", "frag-two ", "frag-three"])
    if url.path == "/stream":
        while True:
            async def fragments():
                async for fragment in ws.recv_streaming():
                    yield fragment
            await ws.send(fragments())
    if url.path == "/whoami":
        h = ws.request.headers
        await ws.send(f"cookie={h.get('Cookie', '')};origin={h.get('Origin', '')}")
    if url.path == "/bad-json":
        await ws.send('{"id": 1, "name": ')
    if url.path == "/big":
        n = int(parse_qs(url.query)["n"][0])
        await ws.send((bytes(range(251)) * (n // 251 + 1))[:n])  # byte i is i % 251
    async for msg in ws:
        if isinstance(msg, str) and msg.startswith("close:"):
            _, code, reason = msg.split(":", 2)
            await ws.close(int(code), reason)
            return
        await ws.send(msg)


def process_request(conn, request):
    url = urlparse(request.path)
    if url.path == "/refuse":
        return conn.respond(http.HTTPStatus.FORBIDDEN, "go away\n")
    if url.path in ("/redirect", "/loop"):
        to = parse_qs(url.query).get("to", ["/loop" if url.path == "/loop" else "/set-cookie"])[0]
        resp = conn.respond(http.HTTPStatus.FOUND, "moved\n")
        resp.headers["Location"] = to
        resp.headers["Set-Cookie"] = "hop=1; Path=/"
        return resp
    return None


def process_response(conn, request, response):
    if urlparse(request.path).path == "/set-cookie" and response.status_code == 101:
        response.headers["Set-Cookie"] = "session=s3cr3t; Path=/"
    return response


def select_subprotocol(conn, offered):
    for p in ("chat", "superchat"):
        if p in offered:
            return p
    return None


async def main():
    ext = None
    compression = None  # the extension list below decides
    if "--deflate-defaults" in sys.argv:
        compression = "deflate"  # websockets' own defaults: 12-bit windows, memLevel 5
    elif "--deflate" in sys.argv:
        nct = "--no-context-takeover" in sys.argv
        ext = [ServerPerMessageDeflateFactory(server_no_context_takeover=nct, client_no_context_takeover=nct)]
    async with serve(
        handler,
        "127.0.0.1",
        int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0,
        process_request=process_request,
        process_response=process_response,
        select_subprotocol=select_subprotocol,
        max_size=None,
        ping_interval=None,
        compression=compression,
        extensions=ext,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await server.serve_forever()


asyncio.run(main())
