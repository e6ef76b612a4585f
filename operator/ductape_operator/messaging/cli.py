"""A command line for people and scripts: publish and consume against a binding.

    python -m ductape_operator.messaging publish --binding DIR --topic TAG \\
        [--header k=v ...] [--key K] [--json] MESSAGE
    python -m ductape_operator.messaging consume --binding DIR --topic TAG \\
        --subscription NAME [--count N] [--timeout S] [--no-ack]

`--binding` is a binding folder (one file per Secret entry, as mounted); without
it, the binding is found as `Broker.from_binding()` does ($SERVICE_BINDING_ROOT,
then DUCTAPE_* variables). `publish` prints `{"id": ...}`; `consume` prints one
JSON object per message (id, headers, content_type, key, data as text or, for
binary payloads, `data_base64`) and acks it unless `--no-ack`. Errors go to
stderr with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ductape_operator import errors
from ductape_operator.messaging import broker as broker_
from ductape_operator.messaging import message as message_


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not name=value")
    return name, text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ductape_operator.messaging",
        description="Publish and consume through a ductape connection binding (for debugging).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--binding", metavar="DIR", help="binding folder (default: discover)")
    common.add_argument("--name", help="binding name under $SERVICE_BINDING_ROOT")
    common.add_argument("--topic", required=True, metavar="TAG", help="topic tag")
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", parents=[common], help="publish one message")
    pub.add_argument("--header", action="append", type=_header, default=[], metavar="K=V")
    pub.add_argument("--key", help="message key (Kafka key, RabbitMQ routing key)")
    pub.add_argument("--json", action="store_true", help="MESSAGE is JSON: send it as JSON")
    pub.add_argument("message", metavar="MESSAGE", help="the payload ('-' reads stdin)")
    con = sub.add_parser("consume", parents=[common], help="print messages as JSON lines")
    con.add_argument("--subscription", required=True, metavar="NAME")
    con.add_argument("--count", type=int, default=0, metavar="N", help="stop after N (0: no limit)")
    con.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="stop after S seconds idle"
    )
    con.add_argument("--no-ack", action="store_true", help="nack (requeue) instead of ack")
    con.add_argument("--redelivery-timeout", type=float, default=10.0, metavar="S")
    return p


def render(message: message_.Message) -> dict[str, Any]:
    """A received message as a JSON object."""
    out: dict[str, Any] = {
        "id": message.id,
        "topic": message.topic,
        "subscription": message.subscription,
        "headers": message.headers,
        "content_type": message.content_type,
        "key": message.key,
    }
    if message.content_type == message_.JSON:
        out["data"] = message.json()
    else:
        try:
            out["data"] = message.text()
        except UnicodeDecodeError:
            out["data_base64"] = base64.b64encode(message.data).decode("ascii")
    if message.delivery_count is not None:
        out["delivery_count"] = message.delivery_count
    return out


def _broker(args: argparse.Namespace, **options: Any) -> broker_.Broker:
    return broker_.Broker.from_binding(args.name, path=args.binding, **options)


async def publish(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.message == "-" else args.message
    payload: Any = json.loads(text) if args.json else text
    async with _broker(args) as broker:
        message_id = await broker.publish(
            args.topic, payload, key=args.key, headers=dict(args.header)
        )
    print(json.dumps({"id": message_id}), flush=True)
    return 0


async def consume(args: argparse.Namespace) -> int:
    seen = 0
    async with (
        _broker(args, redelivery_timeout=args.redelivery_timeout) as broker,
        broker.subscribe(args.topic, args.subscription) as messages,
    ):
        idle_until = None if args.timeout is None else time.monotonic() + args.timeout
        while not args.count or seen < args.count:
            wait = None if idle_until is None else max(0.0, idle_until - time.monotonic())
            message = await messages.receive(timeout=wait)
            if message is None:
                break
            print(json.dumps(render(message), ensure_ascii=False), flush=True)
            seen += 1
            if args.no_ack:
                await message.nack(requeue=True)
            else:
                await message.ack()
            if args.timeout is not None:
                idle_until = time.monotonic() + args.timeout
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = publish if args.command == "publish" else consume
    try:
        return asyncio.run(run(args))
    except errors.DuctapeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
