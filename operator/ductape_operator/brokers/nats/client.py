"""NATS JetStream, the messaging client side: publish to a topic's subject, consume a
subscription's durable pull consumer (docs/messaging.md).

A message is one JetStream message: the payload as its data, application headers as
NATS headers, the content type in the reserved `ductape-content-type` header (left out
for the default), the key in `ductape-key`. The message id goes out once, as the
server's `Nats-Msg-Id`: a publish retried after a lost connection is then stored once
(the stream's duplicate window), and the consumer reads the id back from it (from
`ductape-id` first, which earlier versions sent). Consumers pull batches; an ack is
`+ACK` on the message's reply subject, a nack with requeue `-NAK` (delivered again at
once), a nack without `+TERM`. The server counts deliveries (`num_delivered`): the
dead-letter moves go by it.

A server restart closes the connection (sdk.py); the next attempt of whatever was
running opens a new one and re-binds the consumers, within `retry_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import nats.errors as nats_sdk_errors
import nats.js.errors as js_sdk_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ductape_operator import errors
from ductape_operator.brokers.nats import entries, sdk
from ductape_operator.brokers.nats.errors import classify, is_not_found
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

log = logging.getLogger(__name__)

KEY_HEADER = "ductape-key"
#: The server's de-duplication header; not the application's, so not handed to it.
MSG_ID_HEADER = "Nats-Msg-Id"
#: Seconds one connect or one JetStream request may take (retries go on up to
#: `retry_timeout`).
REQUEST_TIMEOUT = 10.0
_ACK, _NAK, _TERM = b"+ACK", b"-NAK", b"+TERM"
#: Publishes in flight at most (their acks outstanding), per batch of a `publish_many`.
WINDOW = 4000
#: Token positions in a JetStream reply subject (`$JS.ACK.<domain>.<account hash>.<stream>.
#: <consumer>.<delivered>.<stream seq>...`; the older form lacks domain and hash).
_STREAM, _DELIVERED, _STREAM_SEQ = Msg.Ack.Stream, Msg.Ack.NumDelivered, Msg.Ack.StreamSeq
_V1_TOKENS, _V1_SHIFT = 9, 2


def map_error(
    exc: BaseException, cause: BaseException | None = None, *, where: str = "nats"
) -> errors.DuctapeError | None:
    """The client side's error for a nats-py exception (None: not one): `errors.classify`,
    shared with the operator side; `cause` is nats-py's last reported error."""
    reason = cause or exc
    text = f"{where}: {type(reason).__name__}: {reason}"
    return _transport.error_for(classify(exc, cause), text, missing="the subscription")


def make_transport(binding: binding_.Binding, options: _transport.Options) -> NatsTransport:
    return NatsTransport(binding, options)


class NatsTransport:
    """One connection for publishing and every consumer, reopened after a restart."""

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._connection = entries.Entries.read(binding)
        self._tls = binding.tls_context() if self._connection.tls else None
        self._options = options
        self._client: Client | None = None
        #: Bumped at every new connection: consumers re-bind when it moved.
        self.generation = 0
        #: The connection's JetStream context, kept: its publish-ack subscription is made
        #: once per connection, on the first publish.
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._last_error = sdk.LastError()
        self.where = f"nats {self._connection.endpoint}"
        self.link = _transport.Link(self.where)
        self.retrying = _transport.Retrier(self.where, options, self.map_error)

    def map_error(self, exc: BaseException) -> errors.DuctapeError | None:
        """`map_error`, with why a connect failed: nats-py's last reported error."""
        cause = self._last_error.error if isinstance(exc, nats_sdk_errors.NoServersError) else None
        return map_error(exc, cause, where=self.where)

    async def client(self) -> Client:
        """The open connection: a new one when the last was closed (a server restart)."""
        async with self._lock:
            current = self._client
            if current is not None and current.is_connected:
                return current
            self._client = None
            if current is not None:
                with contextlib.suppress(Exception):
                    await current.close()
            self._last_error.error = None
            self._client = await sdk.connect(
                self._connection,
                timeout=REQUEST_TIMEOUT,
                name="ductape-client",
                last_error=self._last_error,
                tls_context=self._tls,
            )
            self.generation += 1
            self._js = self._client.jetstream(
                timeout=REQUEST_TIMEOUT, publish_async_max_pending=WINDOW
            )
            return self._client

    @property
    def current(self) -> Client | None:
        """The connection as it is, without opening one."""
        return self._client

    async def jetstream(self) -> JetStreamContext:
        await self.client()
        assert self._js is not None
        return self._js

    async def start(self) -> None:
        await self.retrying(self.client, "connect", self.link)

    async def aclose(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        subject = route.name
        assert subject is not None  # only SQS topics lack a name

        async def send() -> None:
            js = await self.jetstream()
            publish = js.publish_async
            # Sent without waiting, then the acks awaited together: nats-py's
            # `publish_async`, a fraction of what a request per message costs
            # (`js.publish`: an inbox future and a timer each). At most WINDOW in
            # flight: past it the oldest ack is awaited first (under a timeout), so that
            # nats-py's own limit never blocks a publish (it would wait, without a
            # timeout, for acks a closed connection never brings).
            sent: list[asyncio.Future[Any]] = []
            acked = False
            try:
                for m in messages:
                    if len(sent) >= WINDOW:
                        oldest = sent[-WINDOW]
                        if not oldest.done():
                            await _acked(oldest)
                    sent.append(await publish(subject, m.data, headers=_headers(m)))
                await _all_acked(sent)
                acked = True
            except (nats_sdk_errors.NoRespondersError, js_sdk_errors.NoStreamResponseError):
                # Nothing stores this subject: no stream, so no topic (or JetStream is off).
                raise errors.ProvisioningError(
                    f"{self.where}: no stream stores subject {subject!r} "
                    f"(is topic {route.tag!r} provisioned?)"
                ) from None
            finally:
                if not acked:  # else every result was taken already
                    _release(sent)

        await self.retrying(send, "publish", self.link)

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> NatsConsumer:
        assert route.name is not None
        return NatsConsumer(self, route, subscription, physical, options)


async def _acked(future: asyncio.Future[Any]) -> None:
    """Wait for one publish ack; nats-py's `TimeoutError` after `REQUEST_TIMEOUT`."""
    if not future.done():
        done, _ = await asyncio.wait([future], timeout=REQUEST_TIMEOUT)
        if not done:
            raise nats_sdk_errors.TimeoutError
    future.result()


async def _all_acked(sent: list[asyncio.Future[Any]]) -> None:
    """Wait for every publish ack; raise the first error, or nats-py's `TimeoutError`
    when none came for `REQUEST_TIMEOUT` seconds (a closed connection answers nothing).

    The server acks a stream's publishes in order, so this waits on the last one: one
    waiter for the batch, where waiting on each (`asyncio.wait`, `gather`) costs a
    callback and a loop step per message, about 1.2 µs (README.md, "The messaging
    client: throughput"). Order is not relied on: an ack still missing once the last
    came is waited for in turn.
    """
    first, end = 0, len(sent)
    while True:
        while first < end and sent[first].done():
            first += 1
        if first == end:
            break
        oldest, last = sent[first], sent[-1]
        done, _ = await asyncio.wait([oldest if last.done() else last], timeout=REQUEST_TIMEOUT)
        if not done and not oldest.done():
            raise nats_sdk_errors.TimeoutError
    for future in sent:
        future.result()


def _release(sent: list[asyncio.Future[Any]]) -> None:
    """Cancel the acks still awaited (nats-py then frees their in-flight slots) and
    take the errors of the others (an unread one is logged when it is collected)."""
    for future in sent:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


def _headers(m: message_.OutgoingMessage) -> dict[str, str]:
    # Every header costs nats-py an encode and a parse and the server bytes: the id
    # travels once, as the de-duplication header the server needs anyway.
    headers = {**m.headers, MSG_ID_HEADER: m.id}
    if m.content_type != message_.OCTET_STREAM:
        headers[message_.CONTENT_TYPE_HEADER] = m.content_type
    if m.key is not None:
        headers[KEY_HEADER] = m.key
    return headers


def _delivery(msg: Msg) -> tuple[str, str, int]:
    """Stream, stream sequence and delivery count from a JetStream message's reply subject.

    What nats-py's `Msg.metadata` reads too, without the timestamp and dataclasses it
    builds (about 10 µs a message, a fifth of a raw consume loop's time per message).
    """
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        shift = _V1_SHIFT if len(tokens) == _V1_TOKENS else 0
        if len(tokens) > _STREAM_SEQ - shift:
            return (
                tokens[_STREAM - shift],
                tokens[_STREAM_SEQ - shift],
                int(tokens[_DELIVERED - shift]),
            )
    meta = msg.metadata  # raises nats-py's own error for a subject it does not know
    return meta.stream, str(meta.sequence.stream), meta.num_delivered


class NatsConsumer:
    """One consumer of a durable pull consumer: consumers of one subscription compete."""

    #: The server redelivers only after the consumer's ack wait (30 s, the backstop for
    #: a dead client), so the client nacks after its own redelivery timeout.
    client_redelivery = True

    def __init__(
        self,
        transport: NatsTransport,
        route: binding_.TopicRoute,
        subscription: str,
        durable: str,
        options: _transport.Options,
    ) -> None:
        assert route.name is not None
        self._transport = transport
        self._stream = entries.stream_name(route.name)
        self._tag = route.tag
        self._subscription = subscription
        self._durable = durable
        self._options = options
        self._pull: JetStreamContext.PullSubscription | None = None
        self._bound_to = -1
        #: Acks go out together, soon after the application's acks (not one await each).
        self._acks: _transport.Batcher[str] = _transport.Batcher(self._ack, "nats ack")
        self.link = _transport.Link(f"{transport.where} subscription {route.tag}/{subscription}")

    async def _bind(self) -> JetStreamContext.PullSubscription:
        """The pull subscription on the current connection (re-bound after a reconnect)."""
        js = await self._transport.jetstream()
        if self._pull is not None and self._bound_to == self._transport.generation:
            return self._pull
        try:
            await js.consumer_info(self._stream, self._durable)
        except Exception as exc:
            if is_not_found(exc):
                raise errors.ProvisioningError(
                    f"{self._transport.where}: stream {self._stream!r} has no consumer "
                    f"{self._durable!r} (is subscription {self._subscription!r} provisioned?)"
                ) from None
            raise
        self._pull = await js.pull_subscribe_bind(self._durable, stream=self._stream)
        self._bound_to = self._transport.generation
        return self._pull

    async def start(self) -> None:
        await self._transport.retrying(self._bind, "subscribe", self.link)

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        return await self._transport.retrying(
            lambda: self._fetch(max_messages, timeout), "fetch", self.link, wait=timeout
        )

    async def _fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        pull = await self._bind()
        try:
            received = await pull.fetch(max_messages, timeout=max(timeout, 0.1))
        except nats_sdk_errors.TimeoutError:
            return []  # nothing within the timeout: the normal empty answer
        now = time.monotonic()  # one reading per fetch: when the batch was handed over
        return [self._message(msg, now) for msg in received]

    def _message(self, msg: Msg, received_at: float) -> message_.Message:
        stream, sequence, delivered = _delivery(msg)
        # One pass over the headers instead of `message.make_message`'s copies: this runs
        # for every message, and most carry the id header alone.
        headers: dict[str, str] = {}
        server_id = own_id = key = content_type = None
        wire = msg.headers
        if wire is not None and len(wire) == 1 and MSG_ID_HEADER in wire:
            server_id = wire[MSG_ID_HEADER]  # what the client sends without headers of yours
        elif wire:
            for name, value in wire.items():
                if name == MSG_ID_HEADER:
                    server_id = value
                elif not name.lower().startswith(message_.RESERVED_PREFIX):
                    headers[name] = value
                elif name == KEY_HEADER:
                    key = value
                elif name == message_.CONTENT_TYPE_HEADER:
                    content_type = value
                elif name == message_.ID_HEADER:
                    own_id = value
        # `received`: the constructor's twin without the call through the class.
        return message_.received(
            msg.data,
            headers,
            own_id or server_id or f"{stream}:{sequence}",
            content_type or message_.OCTET_STREAM,
            self._tag,
            self._subscription,
            self,
            msg.reply,
            key,
            delivered,
            received_at,
        )

    async def ack_many(self, messages: list[message_.Message]) -> None:
        """Ack a batch as `settle` does one by one (one batched send)."""
        self._acks.extend([message.token for message in messages])

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        # The reply subject settles the message from any connection of the account, so a
        # settle after a reconnect still reaches the server.
        if ack:
            self._acks.add(message.token)
            return
        await self._send([message.token], _NAK if requeue else _TERM)

    async def _send(self, replies: list[str], verb: bytes) -> None:
        async def send() -> None:
            client = await self._transport.client()
            for reply in replies:
                await client.publish(reply, verb)

        await self._transport.retrying(send, "ack" if verb == _ACK else "nack", self.link)

    async def _ack(self, replies: list[str]) -> None:
        await self._send(replies, _ACK)

    async def aclose(self) -> None:
        await self._acks.flush()
        pull, self._pull = self._pull, None
        client = self._transport.current
        with contextlib.suppress(Exception):
            if client is not None and client.is_connected:
                await client.flush(timeout=int(REQUEST_TIMEOUT))  # the acks sent so far
            if pull is not None:
                await pull.unsubscribe()
