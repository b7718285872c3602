"""A grpcio (C-core) client for the interoperability tests: runs every scenario against one
target and prints one JSON object of results, so that a run straight against the grpcio
server and a run through switchyard can be compared for equality.

    grpc_client.py [--ca FILE --server-name NAME] [--authority HOST] TARGET [COMMAND ...]

TARGET is host:port; plaintext h2c unless --ca is given (then TLS, verifying the server's
certificate against FILE for NAME). Commands:

- scenarios (default): every scenario; the results hold only what must not depend on the
  path taken (status codes, details, metadata, message counts, sizes and SHA-256 sums);
- echo: one unary call; prints {"code", "details"};
- stats: the server's call counts;
- set-health SERVICE serving|not_serving: changes the server's health service.

Every call has a deadline, so the client never hangs; a call that fails is recorded with
its status code and details rather than stopping the run.
"""

import argparse
import hashlib
import json
import queue
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

MAX_MESSAGE = 32 * 1024 * 1024
SERVICE = "/interop.Interop/"
CALL_TIMEOUT = 30  # seconds: generous for a slow machine, bounded so a hang fails


def identity(b):
    return b


def sha(data):
    return hashlib.sha256(data).hexdigest()


def md(metadata, prefix="x-interop"):
    """The metadata entries the test controls, as a JSON-friendly dict (binary values in hex)."""
    out = {}
    for key, value in metadata or ():
        if key.startswith(prefix):
            out[key] = value.hex() if isinstance(value, bytes) else value
    return out


def failure(error, with_details=True):
    result = {"code": error.code().name}
    if with_details:
        result["details"] = error.details()
        result["trailing"] = md(error.trailing_metadata())
    return result


class Client:
    def __init__(self, channel):
        self.channel = channel

    def unary(self, method):
        return self.channel.unary_unary(SERVICE + method, request_serializer=identity, response_deserializer=identity)

    def unary_stream(self, method):
        return self.channel.unary_stream(SERVICE + method, request_serializer=identity, response_deserializer=identity)

    def stream_unary(self, method):
        return self.channel.stream_unary(SERVICE + method, request_serializer=identity, response_deserializer=identity)

    def stream_stream(self, method):
        return self.channel.stream_stream(SERVICE + method, request_serializer=identity, response_deserializer=identity)


def scenario_unary(c, payload):
    metadata = (("x-interop-tag", "hello-interop"), ("x-interop-bin-bin", b"\x00\xffbinary"))
    try:
        response, call = c.unary("Echo").with_call(payload, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        return failure(e)
    return {
        "code": call.code().name,
        "len": len(response),
        "sha256": sha(response),
        "initial": md(call.initial_metadata()),
        "trailing": md(call.trailing_metadata()),
    }


def scenario_server_stream(c, n, size, delay_ms):
    request = json.dumps({"n": n, "size": size, "delay_ms": delay_ms}).encode()
    digest, count, total = hashlib.sha256(), 0, 0
    call = c.unary_stream("Source")(request, timeout=CALL_TIMEOUT)
    try:
        for message in call:
            count += 1
            total += len(message)
            digest.update(message)
    except grpc.RpcError as e:
        return dict(failure(e), count=count)
    return {"code": call.code().name, "count": count, "bytes": total, "sha256": digest.hexdigest()}


def scenario_client_stream(c, n):
    messages = [bytes([i % 256]) * (i * 37 % 5000) for i in range(n)]
    try:
        response = c.stream_unary("Sink")(iter(messages), timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        return failure(e)
    sent = hashlib.sha256(b"".join(messages)).hexdigest()
    return {"code": "OK", "answer": json.loads(response), "matches_sent": json.loads(response)["sha256"] == sent}


def scenario_bidi(c, n):
    """Ping-pong: message i+1 is sent only after the answer to message i arrived, so it
    passes only if answers stream back while the request stream is still open."""
    answered = queue.Queue()
    sent = []

    def requests():
        for i in range(n):
            message = f"ping {i}".encode() * (i + 1)
            sent.append(message)
            yield message
            try:
                answered.get(timeout=CALL_TIMEOUT)
            except queue.Empty:
                return

    got = []
    call = c.stream_stream("Chat")(requests(), timeout=CALL_TIMEOUT)
    try:
        for message in call:
            got.append(message)
            answered.put(True)
    except grpc.RpcError as e:
        return dict(failure(e), count=len(got))
    return {"code": call.code().name, "count": len(got), "echoed": got == sent[: len(got)], "sha256": sha(b"".join(got))}


def scenario_error(c):
    try:
        c.unary("Fail").with_call(b"x", timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        return failure(e)
    return {"code": "OK"}


def scenario_deadline(c):
    try:
        c.unary("Sleep")(json.dumps({"ms": 5000}).encode(), timeout=1.0)
    except grpc.RpcError as e:
        # Only the code: whether the client's own timer or an intermediary answered first
        # decides the details.
        return failure(e, with_details=False)
    return {"code": "OK"}


def scenario_health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    out = {}
    for service in ("", "interop.Up", "interop.Down", "interop.Missing"):
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
            out[service or "(server)"] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.RpcError as e:
            out[service or "(server)"] = e.code().name
    return out


def run_scenarios(channel):
    c = Client(channel)
    big = bytes(range(256)) * (16 * 1024 * 1024 // 256)
    return {
        "unary": scenario_unary(c, b"hello, interop"),
        "unary_empty": scenario_unary(c, b""),
        "server_stream": scenario_server_stream(c, 100, 1000, 0),
        "server_stream_paced": scenario_server_stream(c, 10, 10, 50),
        "client_stream": scenario_client_stream(c, 100),
        "bidi": scenario_bidi(c, 50),
        "error": scenario_error(c),
        "big_16mib": scenario_unary(c, big),
        "deadline": scenario_deadline(c),
        "health": scenario_health(channel),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--ca", help="PEM CA file: use TLS and verify the server with it")
    parser.add_argument("--server-name", help="the name to verify the certificate for (and SNI)")
    parser.add_argument("--authority", help=":authority to send instead of the target")
    parser.add_argument("command", nargs="*", default=["scenarios"])
    args = parser.parse_args()

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        # Each run is its own connection: no sharing of sub-channels between runs.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.ca:
        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        if args.server_name:
            options.append(("grpc.ssl_target_name_override", args.server_name))
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)

    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        except grpc.FutureTimeoutError:
            print(json.dumps({"error": f"no connection to {args.target} within {CALL_TIMEOUT}s"}))
            return 2
        command = args.command[0]
        if command == "scenarios":
            result = run_scenarios(channel)
        elif command == "echo":
            try:
                Client(channel).unary("Echo")(b"ping", timeout=CALL_TIMEOUT)
                result = {"code": "OK"}
            except grpc.RpcError as e:
                result = {"code": e.code().name, "details": e.details()}
        elif command == "stats":
            result = json.loads(Client(channel).unary("Stats")(b"", timeout=CALL_TIMEOUT))
        elif command == "set-health":
            service, state = args.command[1], args.command[2]
            request = json.dumps({"service": service, "serving": state == "serving"}).encode()
            Client(channel).unary("SetHealth")(request, timeout=CALL_TIMEOUT)
            result = {"ok": True}
        else:
            parser.error(f"unknown command {command!r}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
