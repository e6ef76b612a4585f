"""Messages as the application sees them, and the one encoding every transport shares.

A payload is bytes, str or any JSON-serialisable object. It travels as bytes with
its content type and a message id beside it; each transport carries those two in
its own native place (AMQP properties) or in reserved headers (`ductape-id`,
`ductape-content-type`, absent for the default `application/octet-stream`),
which are removed again before the application sees `Message.headers`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ductape_operator.messaging import metrics

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

#: Reserved header names; an application cannot set them.
ID_HEADER = "ductape-id"
CONTENT_TYPE_HEADER = "ductape-content-type"
RESERVED_PREFIX = "ductape-"

Payload = bytes | bytearray | memoryview | str | Any


def encode(message: Payload) -> tuple[bytes, str]:
    """Bytes and content type of a payload."""
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), OCTET_STREAM
    if isinstance(message, str):
        return message.encode("utf-8"), TEXT
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"message must be bytes, str or JSON-serialisable, not {type(message).__name__}"
        ) from exc
    return text.encode("utf-8"), JSON


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """A unique message id: a random 64-bit process prefix and a counter.

    As unique as a UUID4 in practice, and cheap enough to give every message one.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Application headers, validated: str to str, no reserved names."""
    if not headers:
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise TypeError("headers must map non-empty str names to str values")
        if name.lower().startswith(RESERVED_PREFIX):
            raise ValueError(
                f"header {name!r}: names starting with {RESERVED_PREFIX!r} are reserved"
            )
        out[name] = value
    return out


class OutgoingMessage:
    """A message ready to send: what every transport's publish receives."""

    __slots__ = ("content_type", "data", "explicit_id", "headers", "id", "key")

    def __init__(
        self,
        data: bytes,
        *,
        content_type: str,
        headers: dict[str, str],
        id: str,
        key: str | None,
        explicit_id: bool = False,
    ) -> None:
        self.data = data
        self.content_type = content_type
        self.headers = headers
        #: The message id; a transport whose broker names messages itself (Redis
        #: stream entry ids) may replace it while publishing, unless it is explicit.
        self.id = id
        self.key = key
        #: True when the application chose the id (`publish(message_id=...)`).
        self.explicit_id = explicit_id

    @classmethod
    def build(
        cls,
        message: Payload,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> OutgoingMessage:
        data, content_type = encode(message)
        return cls(
            data,
            content_type=content_type,
            headers=check_headers(headers),
            id=message_id or new_id(),
            key=key,
            explicit_id=message_id is not None,
        )

    @classmethod
    def build_many(
        cls,
        messages: Iterable[Payload],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[OutgoingMessage]:
        """`build` for each message, with the same key and headers: what `publish_many`
        sends. The headers are checked once, and bytes are taken as they are (half of
        `build`'s 1.3 µs a message went to the calls around them)."""
        checked = check_headers(headers)
        batch = []
        for message in messages:
            if type(message) is bytes:
                data, content_type = message, OCTET_STREAM
            else:
                data, content_type = encode(message)
            batch.append(
                cls(data, content_type=content_type, headers=checked.copy(), id=new_id(), key=key)
            )
        return batch

    def wire_headers(self) -> dict[str, str]:
        """Application headers plus the reserved ones (for transports without properties).

        The content type is left out when it is the default, octet-stream: every
        header costs on the wire and in the broker.
        """
        wire = {**self.headers, ID_HEADER: self.id}
        if self.content_type != OCTET_STREAM:
            wire[CONTENT_TYPE_HEADER] = self.content_type
        return wire


def split_headers(wire: Mapping[str, str]) -> tuple[dict[str, str], str | None, str | None]:
    """Application headers, message id and content type from received headers."""
    headers = {k: v for k, v in wire.items() if not k.lower().startswith(RESERVED_PREFIX)}
    return headers, wire.get(ID_HEADER), wire.get(CONTENT_TYPE_HEADER)


class Settler(Protocol):
    """What a transport's consumer does when a message is acked or nacked."""

    async def settle(self, message: Message, *, ack: bool, requeue: bool) -> None: ...


class Message:
    """A received message.

    `data` is the payload as bytes; `text()` and `json()` decode it. Call `ack()`
    once it is processed, or `nack()` to have it delivered again (`requeue=True`)
    or dropped (`requeue=False`; moved to the dead-letter topic when its topic declares one,
    as is a message nacked or left unsettled on its last attempt: docs/messaging.md).
    A message neither acked nor nacked is delivered again after the
    subscription's redelivery timeout. Settling twice does nothing.
    """

    __slots__ = (
        "_received_at",
        "_settled",
        "_settler",
        "content_type",
        "data",
        "delivery_count",
        "headers",
        "id",
        "key",
        "subscription",
        "token",
        "topic",
    )

    def __init__(
        self,
        # Positional too: a transport builds one for every record it receives, and a
        # call by keywords costs about twice as much (README.md, "The messaging client:
        # throughput").
        data: bytes,
        headers: Mapping[str, str],
        id: str,
        content_type: str,
        topic: str,
        subscription: str,
        settler: Settler,
        token: Any,
        key: str | None = None,
        delivery_count: int | None = None,
        received_at: float | None = None,
    ) -> None:
        self.data = data
        self.headers = headers if isinstance(headers, dict) else dict(headers)
        self.id = id
        self.content_type = content_type
        self.topic = topic
        self.subscription = subscription
        self.key = key
        #: How many times the broker delivered it, where the broker says (None elsewhere).
        self.delivery_count = delivery_count
        #: The transport's own handle (delivery tag, stream id, receipt handle...).
        self.token = token
        self._settler = settler
        self._settled = False
        #: When the transport handed it over: the start of the ack delay (client metrics);
        #: a transport may pass one reading for a whole fetched batch.
        self._received_at = time.monotonic() if received_at is None else received_at

    def text(self, encoding: str = "utf-8") -> str:
        return self.data.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        """Mark the message processed; the broker will not deliver it again."""
        if self._settled:
            log.debug("message %s already settled; ack ignored", self.id)
            return
        self._settled = True
        await self._settler.settle(self, ack=True, requeue=False)
        if metrics.enabled():  # checked first: the call with its arguments costs more
            metrics.settled(
                self.topic,
                self.subscription,
                ack=True,
                requeue=False,
                received_at=self._received_at,
            )

    async def nack(self, requeue: bool = True) -> None:
        """Give the message back: delivered again soon, or dropped (dead-lettered) with
        requeue=False."""
        if self._settled:
            log.debug("message %s already settled; nack ignored", self.id)
            return
        self._settled = True
        await self._settler.settle(self, ack=False, requeue=requeue)
        metrics.settled(
            self.topic, self.subscription, ack=False, requeue=requeue, received_at=self._received_at
        )

    @property
    def received_at(self) -> float:
        """`time.monotonic()` when the transport handed it over."""
        return self._received_at

    def mark_settled(self) -> bool:
        """Mark settled by a batch call (`Subscription.ack_many`); False if it was already."""
        if self._settled:
            return False
        self._settled = True
        return True

    def expire(self) -> bool:
        """Mark settled by the redelivery timeout; False if the application settled it."""
        if self._settled:
            return False
        self._settled = True
        return True

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, topic={self.topic!r}, subscription={self.subscription!r}, "
            f"content_type={self.content_type!r}, size={len(self.data)})"
        )


_new = object.__new__


def received(
    data: bytes,
    headers: dict[str, str],
    id: str,
    content_type: str,
    topic: str,
    subscription: str,
    settler: Settler,
    token: Any,
    key: str | None,
    delivery_count: int | None,
    received_at: float,
) -> Message:
    """`Message(...)` for a transport's hot path, as the constructor builds it minus the
    call through the class (a third of the cost): this runs for every record received."""
    message: Message = _new(Message)
    message.data = data
    message.headers = headers
    message.id = id
    message.content_type = content_type
    message.topic = topic
    message.subscription = subscription
    message.key = key
    message.delivery_count = delivery_count
    message.token = token
    message._settler = settler
    message._settled = False
    message._received_at = received_at
    return message


def make_message(
    *,
    data: bytes,
    wire_headers: Mapping[str, str],
    topic: str,
    subscription: str,
    settler: Settler,
    token: Any,
    fallback_id: str,
    key: str | None = None,
    delivery_count: int | None = None,
    content_type: str | None = None,
    message_id: str | None = None,
) -> Message:
    """A `Message` from what a transport received (reserved headers split off)."""
    headers, wire_id, wire_type = split_headers(wire_headers)
    return Message(
        data=data,
        headers=headers,
        id=message_id or wire_id or fallback_id,
        content_type=content_type or wire_type or OCTET_STREAM,
        topic=topic,
        subscription=subscription,
        settler=settler,
        token=token,
        key=key,
        delivery_count=delivery_count,
    )
