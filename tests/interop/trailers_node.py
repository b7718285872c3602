"""A node that reports the trailers of each request, for the interoperability tests.

hypercorn (like every ASGI server) does not give an application a request's trailers, so
this node speaks HTTP directly with the protocol libraries hypercorn is built on: h11 for
HTTP/1.1 (chunked requests, trailer section after the last chunk) and h2 for h2c with prior
knowledge (a HEADERS frame after the DATA frames), both on one port, chosen by the first
bytes of each connection.

Every request is answered 200 with JSON: {"http_version", "method", "path", "body_len",
"trailers": {name: value}} (trailer names in lower case; several values of one name joined
with ", ").

The server binds 127.0.0.1:0 and prints `LISTENING <port>` on stdout once it accepts.
"""

import asyncio
import json
import sys

import h11
import h2.config
import h2.connection
import h2.events
import h2.exceptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


def report(http_version, method, path, body_len, trailers):
    merged = {}
    for name, value in trailers:
        name, value = text(name).lower(), text(value)
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    answer = {
        "http_version": http_version,
        "method": text(method),
        "path": text(path),
        "body_len": body_len,
        "trailers": merged,
    }
    return (json.dumps(answer, sort_keys=True) + "\n").encode()


async def serve_h11(reader, writer, first):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(first)
    request, body_len = None, 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                return
            continue
        if isinstance(event, h11.Request):
            request, body_len = event, 0
        elif isinstance(event, h11.Data):
            body_len += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            body = report("1.1", request.method, request.target, body_len, event.headers)
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            out = conn.send(h11.Response(status_code=200, headers=headers))
            out += conn.send(h11.Data(data=body))
            out += conn.send(h11.EndOfMessage())
            writer.write(out)
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
        elif isinstance(event, (h11.ConnectionClosed,)):
            return


async def serve_h2(reader, writer, first):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    streams = {}  # stream id -> [method, path, body length, trailers]
    data = first
    while True:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = {text(k): text(v) for k, v in event.headers}
                streams[event.stream_id] = [headers.get(":method"), headers.get(":path"), 0, []]
            elif isinstance(event, h2.events.DataReceived):
                streams[event.stream_id][2] += len(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                streams[event.stream_id][3] = list(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                method, path, body_len, trailers = streams.pop(event.stream_id)
                body = report("2", method, path, body_len, trailers)
                conn.send_headers(
                    event.stream_id,
                    [(":status", "200"), ("content-type", "application/json"), ("content-length", str(len(body)))],
                )
                conn.send_data(event.stream_id, body, end_stream=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                writer.write(conn.data_to_send())
                await writer.drain()
                return
        writer.write(conn.data_to_send())
        await writer.drain()
        data = await reader.read(65536)
        if not data:
            return


async def handle(reader, writer):
    try:
        first = await reader.read(len(PREFACE))
        while first and PREFACE.startswith(first) and len(first) < len(PREFACE):
            more = await reader.read(len(PREFACE) - len(first))
            if not more:
                break
            first += more
        if first == PREFACE:
            await serve_h2(reader, writer, first)
        elif first:
            await serve_h11(reader, writer, first)
    except (ConnectionError, h11.ProtocolError, h2.exceptions.ProtocolError) as e:
        print(f"connection ended: {e!r}", file=sys.stderr, flush=True)
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
