"""The ASGI application the interoperability tests serve with hypercorn (HTTP/1.1 and h2c).

Each route answers something a test can compare between a request sent straight to
hypercorn and the same request sent through switchyard:

- any path not below: JSON with what the application saw (method, path, query, HTTP
  version, the headers the proxy may change, and the request body's length and SHA-256);
- /stream?n=N&interval=S: text/event-stream, one event every S seconds, no length (chunked
  on HTTP/1.1), so a proxy timeout that cuts a long response shows as missing events;
- /bytes?size=N[&chunked=1]: N bytes of a fixed pattern, with a content-length unless
  chunked=1 (then sent in 16 KiB pieces without a length);
- /trailers: a body and then response trailers through the `http.response.trailers` ASGI
  extension, announced in a `Trailer` header. hypercorn sends trailers over HTTP/2 only, and only to a request that carried
  `te: trailers`; otherwise the body ends without them. The body says whether the
  extension was offered and whether the request had `te: trailers`.

hypercorn does not give an application the trailers of a request (ASGI has no event for
them), so request trailers are checked with another node.
"""

import asyncio
import hashlib
import json
from urllib.parse import parse_qs

PATTERN = bytes(range(256)) * 64  # 16 KiB


def pattern(size):
    """`size` bytes of the repeating 0..255 pattern."""
    whole, rest = divmod(size, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


def header(scope, name):
    """Every value of request header `name`, joined with ", " (None when absent)."""
    values = [v.decode("latin-1") for k, v in scope["headers"] if k.decode("latin-1").lower() == name]
    return ", ".join(values) if values else None


async def read_body(receive):
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return bytes(body)


async def start(send, status, content_type, extra=(), trailers=False):
    headers = [(b"content-type", content_type)]
    headers.extend(extra)
    message = {"type": "http.response.start", "status": status, "headers": headers}
    if trailers:
        message["trailers"] = True
    await send(message)


async def echo(scope, receive, send):
    body = await read_body(receive)
    answer = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "host": header(scope, "host"),
        "te": header(scope, "te"),
        "content_length": header(scope, "content-length"),
        "x_forwarded_for": header(scope, "x-forwarded-for"),
        "x_interop": header(scope, "x-interop"),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    payload = (json.dumps(answer, sort_keys=True) + "\n").encode()
    await start(send, 200, b"application/json", [(b"content-length", str(len(payload)).encode())])
    await send({"type": "http.response.body", "body": payload})


async def stream(scope, receive, send):
    query = parse_qs(scope["query_string"].decode("latin-1"))
    n = int(query.get("n", ["10"])[0])
    interval = float(query.get("interval", ["0.5"])[0])
    await start(send, 200, b"text/event-stream", [(b"cache-control", b"no-cache")])
    for i in range(n):
        if i:
            await asyncio.sleep(interval)
        event = f"id: {i}\ndata: event {i} of {n}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: end\n\n"})


async def sized(scope, receive, send):
    query = parse_qs(scope["query_string"].decode("latin-1"))
    size = int(query.get("size", ["0"])[0])
    chunked = query.get("chunked", ["0"])[0] == "1"
    body = pattern(size)
    if not chunked:
        await start(send, 200, b"application/octet-stream", [(b"content-length", str(size).encode())])
        await send({"type": "http.response.body", "body": body})
        return
    await start(send, 200, b"application/octet-stream")
    for at in range(0, size, len(PATTERN)):
        await send({"type": "http.response.body", "body": body[at : at + len(PATTERN)], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def trailers(scope, receive, send):
    await read_body(receive)
    offered = "http.response.trailers" in scope.get("extensions", {})
    te = header(scope, "te")
    body = json.dumps({"offered": offered, "te": te}, sort_keys=True).encode() + b"\n"
    # Announced in `Trailer` (RFC 9110 §6.6.2): an HTTP/1.1 hop sends only announced fields.
    announce = [(b"trailer", b"x-checksum, x-done")] if offered else []
    await start(send, 200, b"application/json", extra=announce, trailers=offered)
    # With `trailers: True` in the start message, the body's last message moves hypercorn
    # to the trailers state; the trailers message then ends the response.
    await send({"type": "http.response.body", "body": body})
    if offered:
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", hashlib.sha256(body).hexdigest().encode()), (b"x-done", b"yes")],
                "more_trailers": False,
            }
        )


ROUTES = {"/stream": stream, "/bytes": sized, "/trailers": trailers}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await ROUTES.get(scope["path"], echo)(scope, receive, send)
