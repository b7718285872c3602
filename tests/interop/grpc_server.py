"""A grpcio (C-core) server for the interoperability tests, without a protoc step.

Every method is registered through `grpc.method_handlers_generic_handler` with raw bytes in
and out, so the wire format is plain gRPC framing around opaque messages. Methods of the
service `interop.Interop` (their JSON arguments are UTF-8 JSON messages):

- Echo (unary): answers the request bytes; sends initial metadata `x-interop-initial: 1`
  and echoes the request's `x-interop-tag` (and `x-interop-bin-bin`) as trailing metadata.
- Source (server streaming): request JSON {"n", "size", "delay_ms"}; n messages of `size`
  bytes, message i filled with byte i % 256.
- Sink (client streaming): answers JSON {"count", "bytes", "sha256"} of what arrived.
- Chat (bidirectional): answers each message as it arrives, so a client can ping-pong.
- Fail (unary): status INVALID_ARGUMENT with a non-ASCII message and trailing metadata.
- Sleep (unary): request JSON {"ms"}; sleeps while the call is alive, then answers.
- Stats (unary): JSON counts of calls per method (to see whether traffic arrived).
- SetHealth (unary): request JSON {"service", "serving"} changes the health service.

plus the standard `grpc.health.v1.Health` service: "" and "interop.Up" SERVING,
"interop.Down" NOT_SERVING (until SetHealth says otherwise).

The server binds 127.0.0.1:0 (or --port) and prints `LISTENING <port>` on stdout once it
accepts calls. Messages up to 32 MiB are allowed both ways.
"""

import argparse
import collections
import hashlib
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

MAX_MESSAGE = 32 * 1024 * 1024
SERVICE = "interop.Interop"

calls = collections.Counter()
calls_lock = threading.Lock()


def count(name):
    with calls_lock:
        calls[name] += 1


def identity(b):
    return b


def echo(request, context):
    count("Echo")
    meta = dict(context.invocation_metadata())
    context.send_initial_metadata((("x-interop-initial", "1"),))
    trailing = []
    if "x-interop-tag" in meta:
        trailing.append(("x-interop-tag", meta["x-interop-tag"]))
    if "x-interop-bin-bin" in meta:
        trailing.append(("x-interop-bin-bin", meta["x-interop-bin-bin"]))
    context.set_trailing_metadata(tuple(trailing))
    return request


def source(request, context):
    count("Source")
    args = json.loads(request)
    for i in range(args["n"]):
        if i and args.get("delay_ms"):
            time.sleep(args["delay_ms"] / 1000)
        yield bytes([i % 256]) * args["size"]


def sink(request_iterator, context):
    count("Sink")
    n, size, digest = 0, 0, hashlib.sha256()
    for message in request_iterator:
        n += 1
        size += len(message)
        digest.update(message)
    return json.dumps({"count": n, "bytes": size, "sha256": digest.hexdigest()}).encode()


def chat(request_iterator, context):
    count("Chat")
    for message in request_iterator:
        yield message


def fail(request, context):
    count("Fail")
    context.set_trailing_metadata((("x-interop-reason", "bad-argument"), ("x-interop-detail-bin", b"\x00\x01\xff")))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the argument was refused: ünïcode, 100% sure")


def sleep(request, context):
    count("Sleep")
    deadline = time.monotonic() + json.loads(request)["ms"] / 1000
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.02)
    return b"slept"


def stats(request, context):
    with calls_lock:
        return json.dumps(dict(calls)).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options)

    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("interop.Up", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("interop.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    def set_health(request, context):
        args = json.loads(request)
        status = health_pb2.HealthCheckResponse.SERVING if args["serving"] else health_pb2.HealthCheckResponse.NOT_SERVING
        health_servicer.set(args["service"], status)
        return b"ok"

    raw = dict(request_deserializer=identity, response_serializer=identity)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, **raw),
        "Source": grpc.unary_stream_rpc_method_handler(source, **raw),
        "Sink": grpc.stream_unary_rpc_method_handler(sink, **raw),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, **raw),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **raw),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep, **raw),
        "Stats": grpc.unary_unary_rpc_method_handler(stats, **raw),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health, **raw),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        print(f"cannot bind 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    server.start()
    print(f"LISTENING {port}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
