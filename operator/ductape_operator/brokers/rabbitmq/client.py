"""RabbitMQ transport: publish to the topic's exchange, consume its subscription queues.

The operator makes a topic a durable topic exchange and each subscription a
durable queue bound with `#`. Messages go out persistent, with publisher
confirms and `mandatory`, so a message the broker cannot route to any queue
raises instead of vanishing. The routing key is the message key, or the topic's
exchange name. The message id and content type (absent for octet-stream) travel
in the AMQP properties, application headers in the AMQP headers table. The
client owns the reconnect (see `RabbitTransport`): a lost connection or channel
is reopened before the next use, publishes wait for it and consumers consume
again.

RabbitMQ only redelivers an unacknowledged message when its channel closes, so
the client nacks (with requeue) a message left unsettled past the redelivery
timeout itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aio_pika
import aio_pika.abc
import aio_pika.exceptions as amqp_errors
import aiormq.exceptions

from ductape_operator import errors
from ductape_operator.brokers.rabbitmq.entries import Entries
from ductape_operator.brokers.rabbitmq.errors import classify
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds one connection attempt may take (retries go on up to `retry_timeout`).
CONNECT_TIMEOUT = 10.0


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The client side's error for an aio-pika exception (None: not one): `errors.classify`,
    shared with the operator side."""
    if isinstance(exc, aiormq.exceptions.PublishError):
        # Returned as unroutable (`mandatory`): no queue is bound, sending again won't help.
        return errors.BrokerError(f"rabbitmq: message not delivered: {exc}", retriable=False)
    if isinstance(exc, amqp_errors.DeliveryError):
        # A nack: the broker could not take it just now (a queue going down): send again.
        return errors.BrokerUnreachableError(f"rabbitmq: message refused by the broker: {exc}")
    return _transport.error_for(classify(exc), f"rabbitmq: {type(exc).__name__}: {exc}")


def _usable(connection: aio_pika.abc.AbstractConnection) -> bool:
    """Open and connected: after a close that came from the broker, aio-pika's
    `is_closed` may stay False while `connected` is cleared."""
    return not connection.is_closed and connection.connected.is_set()


def make_transport(binding: binding_.Binding, options: _transport.Options) -> RabbitTransport:
    return RabbitTransport(binding, options)


def _connection_kwargs(binding: binding_.Binding) -> dict[str, Any]:
    entries = Entries.read(binding)
    login, password = entries.login
    return {
        "host": entries.host,
        "port": entries.port,
        "login": login,
        "password": password,
        "virtualhost": entries.vhost,
        "ssl": entries.tls,
        "ssl_context": binding.tls_context() if entries.tls else None,
    }


class RabbitTransport:
    """One AMQP connection, reopened by the client itself when the broker drops it.

    aio-pika's robust connection reconnects in the background, but while it does
    `channel()` raises `RuntimeError("Connection was not opened")` and whether an
    operation lands before or after its reconnect is a race. Here a plain
    connection is checked before each use and replaced, under a lock, when the
    broker closed it; every operation runs in `retrying`, so it waits for the new
    connection (up to `retry_timeout`) instead of failing.
    """

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._kwargs = _connection_kwargs(binding)
        self._options = options
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self.link = _transport.Link(f"rabbitmq {self._kwargs['host']}:{self._kwargs['port']}")

    def retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return _transport.retrying(
            operation,
            what=f"rabbitmq {what}",
            timeout=self._options.retry_timeout,
            map_error=map_error,
            link=self.link,
        )

    async def start(self) -> None:
        if not self._started:
            await self.retrying(self.connected, "connect")
            self._started = True

    async def aclose(self) -> None:
        self._started = False
        async with self._lock:
            connection, self._connection = self._connection, None
            self._channel = None
            self._exchanges.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def current(self, connection: aio_pika.abc.AbstractConnection | None) -> bool:
        """Whether `connection` is the open connection (not one the broker closed)."""
        return connection is not None and connection is self._connection and _usable(connection)

    async def connected(self) -> aio_pika.abc.AbstractConnection:
        """The open connection: the current one, or a new one when it was lost."""
        async with self._lock:
            current = self._connection
            if current is not None and _usable(current):
                return current
            self._connection = None
            self._channel = None
            self._exchanges.clear()
            if current is not None:
                self.link.lost("closed by the broker")
                with contextlib.suppress(Exception):
                    await current.close()
            connection: aio_pika.abc.AbstractConnection = await aio_pika.connect(
                **self._kwargs, timeout=CONNECT_TIMEOUT
            )
            connection.close_callbacks.add(self._on_close)
            self._connection = connection
            self.link.restored()
            return connection

    def _on_close(self, connection: Any, exc: BaseException | None = None) -> None:
        # Called by aio-pika when the connection closes: report a loss at once, even
        # when no operation is running (aclose() forgets the connection first).
        if connection is self._connection:
            self.link.lost(str(exc) if exc else "closed")

    async def _exchange(
        self, name: str
    ) -> tuple[
        aio_pika.abc.AbstractConnection,
        aio_pika.abc.AbstractChannel,
        aio_pika.abc.AbstractExchange,
    ]:
        connection = await self.connected()
        async with self._lock:
            channel = self._channel
            if channel is None or channel.is_closed or not self.current(connection):
                self._exchanges.clear()
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._channel = channel
            exchange = self._exchanges.get(name)
            if exchange is None:
                exchange = await channel.get_exchange(name, ensure=True)
                self._exchanges[name] = exchange
            return connection, channel, exchange

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        name = route.name
        assert name is not None

        async def send() -> None:
            connection, channel, exchange = await self._exchange(name)
            try:
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                m.data,
                                headers=dict(m.headers) or None,
                                # Absent for octet-stream, as in the other transports'
                                # headers: one property less to encode per message.
                                content_type=(
                                    None
                                    if m.content_type == message_.OCTET_STREAM
                                    else m.content_type
                                ),
                                message_id=m.id,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=m.key or name,
                            mandatory=True,
                        )
                        for m in messages
                    )
                )
            except Exception as exc:
                if channel.is_closed or not self.current(connection):
                    # Whatever aio-pika raised, the channel or connection it went out on
                    # is gone: the broker may or may not have the messages, so send again.
                    raise errors.BrokerUnreachableError(
                        f"rabbitmq: connection lost while publishing: {type(exc).__name__}: {exc}"
                    ) from exc
                raise

        await self.retrying(send, "publish")

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> RabbitConsumer:
        return RabbitConsumer(self, route, subscription, physical, options)


class RabbitConsumer:
    """One consumer on a subscription queue, re-subscribed when its channel is lost.

    Every `fetch` first checks that the channel it consumes on is still open on
    the transport's current connection; if not, it opens a new channel and
    consumes again (waiting, like a publish, up to `retry_timeout`). Messages
    delivered on the lost channel and not yet acked are requeued by the broker
    and come again on the new one; their late acks are ignored.
    """

    client_redelivery = True

    def __init__(
        self,
        transport: RabbitTransport,
        route: binding_.TopicRoute,
        subscription: str,
        queue: str,
        options: _transport.Options,
    ) -> None:
        self._transport = transport
        self._tag = route.tag
        self._subscription = subscription
        self._queue_name = queue
        self._options = options
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._on: aio_pika.abc.AbstractConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        self.link = _transport.Link(f"rabbitmq subscription {route.tag}/{subscription}")

    async def _subscribe(self) -> None:
        connection = await self._transport.connected()
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=self._options.prefetch)
            queue = await channel.get_queue(self._queue_name, ensure=True)
            # A fresh inbox: what the lost channel delivered can no longer be acked.
            inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            tag = await queue.consume(inbox.put, no_ack=False)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel, self._on, self._queue = channel, connection, queue
        self._consumer_tag, self._inbox = tag, inbox

    def _consuming(self) -> bool:
        channel = self._channel
        return channel is not None and not channel.is_closed and self._transport.current(self._on)

    async def _ensure(self) -> None:
        if self._consuming():
            return
        if self._channel is not None:
            self.link.lost("channel closed")
            old, self._channel = self._channel, None
            with contextlib.suppress(Exception):
                await old.close()
        await _transport.retrying(
            self._subscribe,
            what=f"rabbitmq subscribe {self._tag}/{self._subscription}",
            timeout=self._options.retry_timeout,
            map_error=map_error,
            link=self.link,
        )

    async def start(self) -> None:
        await self._ensure()

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        await self._ensure()
        inbox = self._inbox
        if inbox.empty():
            try:
                first = await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                return []
        else:
            # Deliveries are waiting: no timer (wait_for costs a task per call).
            first = inbox.get_nowait()
        out = [self._message(first)]
        while len(out) < max_messages and not inbox.empty():
            out.append(self._message(inbox.get_nowait()))
        return out

    def _message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> message_.Message:
        wire: dict[str, str] = {}
        count: int | None = None
        for name, value in (incoming.headers or {}).items():
            if name == "x-delivery-count" and isinstance(value, int):
                count = value + 1
            elif isinstance(value, bytes):
                wire[name] = value.decode("utf-8", "replace")
            elif value is not None:
                wire[name] = str(value)
        if count is None and not incoming.redelivered:
            count = 1
        return message_.make_message(
            data=incoming.body,
            wire_headers=wire,
            topic=self._tag,
            subscription=self._subscription,
            settler=self,
            token=incoming,
            fallback_id=str(incoming.delivery_tag),
            key=incoming.routing_key,
            delivery_count=count,
            content_type=incoming.content_type,
            message_id=incoming.message_id,
        )

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        incoming: aio_pika.abc.AbstractIncomingMessage = message.token
        try:
            if ack:
                await incoming.ack()
            else:
                await incoming.nack(requeue=requeue)
        except Exception as exc:
            # The channel it came on is gone: the broker has requeued it already and
            # delivers it again on the new channel (expected after a reconnect).
            log.debug("rabbitmq: settling message %s failed: %s", message.id, exc)

    async def ack_many(self, messages: list[message_.Message]) -> None:
        for message in messages:
            await self.settle(message, ack=True, requeue=False)

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        try:
            if self._queue is not None and self._consumer_tag is not None:
                await self._queue.cancel(self._consumer_tag)
        except Exception as exc:
            # The connection went meanwhile: the broker has requeued what was unacked.
            log.debug("rabbitmq: cancelling consumer %s failed: %s", self._consumer_tag, exc)
        finally:
            # Closing the channel hands unacknowledged messages back to the queue.
            with contextlib.suppress(Exception):
                await channel.close()
