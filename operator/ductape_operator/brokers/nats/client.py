"""NATS JetStream, the messaging client side: publish to a topic's subject, consume a
subscription's durable pull consumer (docs/messaging.md).

A message is one JetStream message: the payload as its data, application headers as
NATS headers, the message id and content type in the reserved `ductape-id` and
`ductape-content-type` headers, the key in `ductape-key`. The id also goes out as
`Nats-Msg-Id`, so a publish retried after a lost connection is stored once (the
stream's duplicate window). Consumers pull batches; an ack is `+ACK` on the message's
reply subject, a nack with requeue `-NAK` (delivered again at once), a nack without
`+TERM`. The server counts deliveries (`num_delivered`): the dead-letter moves go by it.

A server restart closes the connection (sdk.py); the next attempt of whatever was
running opens a new one and re-binds the consumers, within `retry_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

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

T = TypeVar("T")
KEY_HEADER = "ductape-key"
#: The server's de-duplication header; not the application's, so not handed to it.
MSG_ID_HEADER = "Nats-Msg-Id"
#: Seconds one connect or one JetStream request may take (retries go on up to
#: `retry_timeout`).
REQUEST_TIMEOUT = 10.0
_ACK, _NAK, _TERM = b"+ACK", b"-NAK", b"+TERM"


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
        self._lock = asyncio.Lock()
        self._last_error = sdk.LastError()
        self.where = f"nats {self._connection.endpoint}"
        self.link = _transport.Link(self.where)

    def map_error(self, exc: BaseException) -> errors.DuctapeError | None:
        """`map_error`, with why a connect failed: nats-py's last reported error."""
        cause = self._last_error.error if isinstance(exc, nats_sdk_errors.NoServersError) else None
        return map_error(exc, cause, where=self.where)

    def retrying(
        self, operation: Callable[[], Awaitable[T]], what: str, link: _transport.Link
    ) -> Awaitable[T]:
        return _transport.retrying(
            operation,
            what=f"{self.where} {what}",
            timeout=self._options.retry_timeout,
            map_error=self.map_error,
            link=link,
        )

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
            return self._client

    @property
    def current(self) -> Client | None:
        """The connection as it is, without opening one."""
        return self._client

    async def jetstream(self) -> JetStreamContext:
        return (await self.client()).jetstream(timeout=REQUEST_TIMEOUT)

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
            try:
                await asyncio.gather(
                    *(js.publish(subject, m.data, headers=_headers(m)) for m in messages)
                )
            except (nats_sdk_errors.NoRespondersError, js_sdk_errors.NoStreamResponseError):
                # Nothing stores this subject: no stream, so no topic (or JetStream is off).
                raise errors.ProvisioningError(
                    f"{self.where}: no stream stores subject {subject!r} "
                    f"(is topic {route.tag!r} provisioned?)"
                ) from None

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


def _headers(m: message_.OutgoingMessage) -> dict[str, str]:
    headers = m.wire_headers()
    headers[MSG_ID_HEADER] = m.id
    if m.key is not None:
        headers[KEY_HEADER] = m.key
    return headers


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
            lambda: self._fetch(max_messages, timeout), "fetch", self.link
        )

    async def _fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        pull = await self._bind()
        try:
            received = await pull.fetch(max_messages, timeout=max(timeout, 0.1))
        except nats_sdk_errors.TimeoutError:
            return []  # nothing within the timeout: the normal empty answer
        return [self._message(msg) for msg in received]

    def _message(self, msg: Msg) -> message_.Message:
        wire = dict(msg.headers or {})
        wire.pop(MSG_ID_HEADER, None)
        key = wire.pop(KEY_HEADER, None)
        meta = msg.metadata
        return message_.make_message(
            data=msg.data,
            wire_headers=wire,
            topic=self._tag,
            subscription=self._subscription,
            settler=self,
            token=msg.reply,
            fallback_id=f"{meta.stream}:{meta.sequence.stream}",
            key=key,
            delivery_count=meta.num_delivered,
        )

    async def ack_many(self, messages: list[message_.Message]) -> None:
        """Ack a batch as `settle` does one by one (one batched send)."""
        for message in messages:
            self._acks.add(message.token)

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
