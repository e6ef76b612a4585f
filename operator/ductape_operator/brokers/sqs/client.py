"""AWS SQS transport: a subscription is a queue; a topic is its subscriptions' queues.

SQS has no fan-out of its own, so the operator gives every subscription of a
topic its own queue, and publishing to a topic with subscriptions sends the
message to EACH of those queues (a topic without subscriptions has one queue
of its own). A publish succeeds only when every queue accepted the message;
otherwise it raises, and a retry may duplicate it in the queues that had it.

SQS bodies must be text: a bytes payload (or text SQS cannot carry) is sent
base64-encoded, and the `ductape-body-encoding: base64` attribute says so.
Application headers, the message id (`ductape-id`) and content type
(`ductape-content-type`) are message attributes; SQS allows 10 attributes per
message, so an application has 8 headers at most, fewer with a key or a
base64 body. A received message stays invisible for the redelivery timeout
(its visibility timeout); a nack makes it visible again at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
from collections.abc import Sequence
from typing import Any

import botocore.config

from ductape_operator import errors
from ductape_operator.brokers.sqs import sdk
from ductape_operator.brokers.sqs.entries import Entries
from ductape_operator.brokers.sqs.errors import classify
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

ENCODING_ATTRIBUTE = "ductape-body-encoding"
KEY_ATTRIBUTE = "ductape-key"
MAX_ATTRIBUTES = 10
MAX_BATCH = 10
MAX_BATCH_BYTES = 256 * 1024
#: Batches in flight at once when publishing or acknowledging many messages.
CONCURRENCY = 16
#: What an SQS message body may contain (anything else goes base64).
_SQS_TEXT = re.compile("^[\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The client side's error for a botocore exception (None: not one): `errors.classify`,
    shared with the operator side."""
    text = f"sqs: {type(exc).__name__}: {exc}"
    return _transport.error_for(classify(exc), text)


def make_transport(binding: binding_.Binding, options: _transport.Options) -> SqsTransport:
    return SqsTransport(binding, options)


def encode_body(m: message_.OutgoingMessage) -> tuple[str, bool]:
    """The SQS body of a message and whether it is base64."""
    if m.content_type != message_.OCTET_STREAM:
        text = m.data.decode("utf-8")
        if _SQS_TEXT.match(text):
            return text, False
    return base64.b64encode(m.data).decode("ascii"), True


def _attributes(m: message_.OutgoingMessage, encoded: bool) -> dict[str, Any]:
    values = m.wire_headers()
    if m.key is not None:
        values[KEY_ATTRIBUTE] = m.key
    if encoded:
        values[ENCODING_ATTRIBUTE] = "base64"
    if len(values) > MAX_ATTRIBUTES:
        raise ValueError(
            f"SQS carries at most {MAX_ATTRIBUTES} message attributes; this message needs "
            f"{len(values)} ({len(m.headers)} headers plus the client's own)"
        )
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


class SqsTransport:
    """One aiobotocore SQS client; every call is an HTTP request of its own.

    A call that fails on the way (connection refused or reset, a timeout,
    throttling) is sent again by `retrying` for up to `retry_timeout`; botocore's
    own retries are switched off so the two never stack (docs/messaging.md,
    "Through a broker restart").
    """

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._entries = Entries.read(binding)
        self._options = options
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self.link = _transport.Link(f"sqs {self._entries.endpoint_url or self._entries.region}")
        self.retrying = _transport.Retrier("sqs", options, map_error)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("broker is not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        config = botocore.config.Config(
            retries={"total_max_attempts": 1},
            max_pool_connections=CONCURRENCY * 2,
        )
        self._client = await sdk.open_client(self._entries, config, stack)
        self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        queues = list(route.subscriptions.values()) if route.subscriptions else [route.name]
        entries: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            body, encoded = encode_body(m)
            entries.append(
                {"Id": str(i), "MessageBody": body, "MessageAttributes": _attributes(m, encoded)}
            )
        batches: list[list[dict[str, Any]]] = []
        size = 0
        for entry in entries:
            entry_size = len(entry["MessageBody"].encode()) + sum(
                len(k) + len(v["StringValue"]) + 6 for k, v in entry["MessageAttributes"].items()
            )
            if not batches or len(batches[-1]) >= MAX_BATCH or size + entry_size > MAX_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(entry)
            size += entry_size
        limit = asyncio.Semaphore(CONCURRENCY)

        async def send(queue: str, batch: list[dict[str, Any]]) -> None:
            async with limit:
                await self.retrying(lambda: self._send(queue, batch), "publish", self.link)

        await asyncio.gather(*(send(q, b) for q in queues if q for b in batches))

    async def _send(self, queue: str, batch: list[dict[str, Any]]) -> None:
        response = await self.client.send_message_batch(QueueUrl=queue, Entries=batch)
        failed = response.get("Failed") or []
        if failed:
            sender = any(f.get("SenderFault") for f in failed)
            codes = ", ".join(sorted({str(f.get("Code")) for f in failed}))
            error = errors.BrokerError(
                f"sqs: {len(failed)} of {len(batch)} messages not accepted ({codes})",
                retriable=not sender,
            )
            if not sender:
                raise errors.BrokerUnreachableError(error.message)
            raise error

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> SqsConsumer:
        return SqsConsumer(self, route, subscription, physical, options)


class SqsConsumer:
    client_redelivery = False

    def __init__(
        self,
        transport: SqsTransport,
        route: binding_.TopicRoute,
        subscription: str,
        queue: str,
        options: _transport.Options,
    ) -> None:
        self._transport = transport
        self._tag = route.tag
        self._subscription = subscription
        self._queue = queue
        self._options = options
        self._visibility = min(43200, max(1, math.ceil(options.redelivery_timeout)))
        self._acks: _transport.Batcher[str] = _transport.Batcher(self._delete, "sqs delete")
        self.link = _transport.Link(f"sqs subscription {route.tag}/{subscription}")

    async def start(self) -> None:
        async def check() -> None:
            await self._transport.client.get_queue_attributes(
                QueueUrl=self._queue, AttributeNames=["QueueArn"]
            )

        await self._transport.retrying(check, "subscribe", self.link)

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        wait = min(20, math.ceil(max(timeout, 0.0)))

        async def receive() -> Any:
            return await self._transport.client.receive_message(
                QueueUrl=self._queue,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=wait,
                VisibilityTimeout=self._visibility,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )

        response = await self._transport.retrying(receive, "receive", self.link, wait=wait)
        return [self._message(m) for m in response.get("Messages") or []]

    def _message(self, raw: dict[str, Any]) -> message_.Message:
        wire = {
            name: str(value.get("StringValue", ""))
            for name, value in (raw.get("MessageAttributes") or {}).items()
        }
        encoding = wire.pop(ENCODING_ATTRIBUTE, None)
        key = wire.pop(KEY_ATTRIBUTE, None)
        body: str = raw.get("Body", "")
        data = base64.b64decode(body) if encoding == "base64" else body.encode("utf-8")
        count = (raw.get("Attributes") or {}).get("ApproximateReceiveCount")
        return message_.make_message(
            data=data,
            wire_headers=wire,
            topic=self._tag,
            subscription=self._subscription,
            settler=self,
            token=raw["ReceiptHandle"],
            fallback_id=raw.get("MessageId", ""),
            key=key,
            delivery_count=int(count) if count else None,
        )

    async def ack_many(self, messages: list[message_.Message]) -> None:
        self._acks.extend([m.token for m in messages])

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        if ack or not requeue:
            self._acks.add(message.token)
            return

        async def release() -> None:
            await self._transport.client.change_message_visibility(
                QueueUrl=self._queue, ReceiptHandle=message.token, VisibilityTimeout=0
            )

        await self._transport.retrying(release, "nack", self.link)

    async def _delete(self, handles: list[str]) -> None:
        async def delete(chunk: list[str]) -> None:
            async def once() -> None:
                response = await self._transport.client.delete_message_batch(
                    QueueUrl=self._queue,
                    Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
                )
                if response.get("Failed"):
                    raise errors.BrokerError(f"sqs: {len(response['Failed'])} deletes failed")

            # Retried through an outage, so that a reconnect does not turn acks into
            # redeliveries.
            await self._transport.retrying(once, "delete", self.link)

        await asyncio.gather(
            *(delete(handles[i : i + MAX_BATCH]) for i in range(0, len(handles), MAX_BATCH))
        )

    async def aclose(self) -> None:
        await self._acks.flush()
