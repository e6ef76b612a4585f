"""Readiness probes for hack/testenv-up.sh: one real request per protocol, stdlib only.

Usage: probe.py kafka|redis|amqp PORT
       probe.py http URL [--expect TEXT] [--sqs] [--ca F --cert F --key F]
Exit 0 when the server gave a sane answer, 1 otherwise (quietly: it is polled).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import urllib.request

TIMEOUT = 3.0


def _exchange(port: int, payload: bytes, want: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(payload)
        data = b""
        while len(data) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def kafka(port: int) -> bool:
    # Metadata v4 for all topics (null array): the broker lists itself only once it is
    # registered and unfenced, which is when clients can really use it.
    client = b"testenv-probe"
    body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">i?", -1, False)
    data = _exchange(port, struct.pack(">i", len(body)) + body, 16)
    if len(data) < 16:
        return False
    _size, corr, _throttle, brokers = struct.unpack(">iiii", data[:16])
    return corr == 7 and brokers >= 1


def redis(port: int) -> bool:
    return _exchange(port, b"*1\r\n$4\r\nPING\r\n", 7).startswith(b"+PONG")


def amqp(port: int) -> bool:
    # The protocol header must be answered by a Connection.Start method frame.
    data = _exchange(port, b"AMQP\x00\x00\x09\x01", 11)
    return len(data) >= 11 and data[0] == 1 and data[7:11] == b"\x00\x0a\x00\x0a"


def http(args: argparse.Namespace) -> bool:
    ctx = None
    if args.ca:
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.load_cert_chain(args.cert, args.key)
    req = urllib.request.Request(args.target)
    if args.sqs:
        # moto routes a request to a service by the credential scope of its signature.
        req.data = b"Action=ListQueues&Version=2012-11-05"
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        req.add_header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/sqs/aws4_request, "
            "SignedHeaders=host, Signature=0",
        )
    with urllib.request.urlopen(req, timeout=TIMEOUT, context=ctx) as resp:
        text = resp.read().decode("utf-8", "replace")
        return resp.status == 200 and (args.expect is None or args.expect in text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["kafka", "redis", "amqp", "http"])
    parser.add_argument("target")
    parser.add_argument("--expect")
    parser.add_argument("--sqs", action="store_true")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    raw = {"kafka": kafka, "redis": redis, "amqp": amqp}
    try:
        ok = http(args) if args.kind == "http" else raw[args.kind](int(args.target))
    except Exception:  # any failure means "not ready yet"
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
