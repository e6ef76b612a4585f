"""RabbitMQ transport: publish to the topic's exchange, consume its subscription queues.

The operator makes a topic a durable topic exchange and each subscription a
durable queue bound with `#`. Messages go out persistent, with publisher
confirms and `mandatory`, so a message the broker cannot route to any queue
raises instead of vanishing. The routing key is the message key, or the topic's
exchange name. The message id and content type travel in the AMQP properties,
application headers in the AMQP headers table. The connection is aio-pika's
robust connection: it reconnects with backoff and resumes consumers.

RabbitMQ only redelivers an unacknowledged message when its channel closes, so
the client nacks (with requeue) a message left unsettled past the redelivery
timeout itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions as amqp_errors
import aiormq.exceptions

from ductape_operator import errors
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

log = logging.getLogger(__name__)


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The project's error for an aio-pika exception (None: not an AMQP error)."""
    text = f"rabbitmq: {type(exc).__name__}: {exc}"
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return errors.BrokerAuthError(text)
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return errors.BrokerAuthError(text)
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return errors.ProvisioningError(f"{text} (is the topic provisioned?)", retriable=True)
    if isinstance(exc, amqp_errors.DeliveryError):
        return errors.BrokerError(f"rabbitmq: message not delivered: {exc}", retriable=False)
    if isinstance(
        exc,
        amqp_errors.AMQPConnectionError
        | amqp_errors.ChannelInvalidStateError
        | ConnectionError
        | OSError
        | TimeoutError,
    ):
        return errors.BrokerUnreachableError(text)
    if isinstance(exc, amqp_errors.AMQPError):
        return errors.BrokerError(text)
    return None


def make_transport(binding: binding_.Binding, options: _transport.Options) -> RabbitTransport:
    return RabbitTransport(binding, options)


def _connection_kwargs(binding: binding_.Binding) -> dict[str, Any]:
    uri = urlsplit(binding.get("uri") or "")
    tls = uri.scheme == "amqps" or (binding.get("tls") or "").lower() == "true"
    vhost = binding.get("virtual-host") or (unquote(uri.path[1:]) if len(uri.path) > 1 else "/")
    return {
        "host": binding.get("host") or uri.hostname or "localhost",
        "port": int(binding.get("port") or uri.port or (5671 if tls else 5672)),
        "login": binding.get("username") or unquote(uri.username or "") or "guest",
        "password": binding.get("password") or unquote(uri.password or "") or "guest",
        "virtualhost": vhost,
        "ssl": tls,
        "ssl_context": binding.tls_context() if tls else None,
    }


class RabbitTransport:
    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._kwargs = _connection_kwargs(binding)
        self._options = options
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._lock = asyncio.Lock()

    @property
    def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker is not started")
        return self._connection

    async def start(self) -> None:
        if self._connection is not None:
            return

        async def connect() -> aio_pika.abc.AbstractRobustConnection:
            connection: aio_pika.abc.AbstractRobustConnection = await aio_pika.connect_robust(
                **self._kwargs, timeout=10
            )
            return connection

        self._connection = await _transport.retrying(
            connect,
            what="rabbitmq connect",
            timeout=self._options.retry_timeout,
            map_error=map_error,
        )

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchanges.clear()
        if connection is not None:
            await connection.close()

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._exchanges.clear()
                self._channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            exchange = self._exchanges.get(name)
            if exchange is None:
                exchange = await self._channel.get_exchange(name, ensure=True)
                self._exchanges[name] = exchange
            return exchange

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        name = route.name
        assert name is not None

        async def send() -> None:
            exchange = await self._exchange(name)
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            m.data,
                            headers=dict(m.headers) or None,
                            content_type=m.content_type,
                            message_id=m.id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=m.key or name,
                        mandatory=True,
                    )
                    for m in messages
                )
            )

        await _transport.retrying(
            send, what="rabbitmq publish", timeout=self._options.retry_timeout, map_error=map_error
        )

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> RabbitConsumer:
        return RabbitConsumer(self, route, subscription, physical, options)


class RabbitConsumer:
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
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def start(self) -> None:
        async def subscribe() -> None:
            channel = await self._transport.connection.channel()
            try:
                await channel.set_qos(prefetch_count=self._options.prefetch)
                queue = await channel.get_queue(self._queue_name, ensure=True)
                self._consumer_tag = await queue.consume(self._inbox.put, no_ack=False)
            except BaseException:
                await channel.close()
                raise
            self._channel, self._queue = channel, queue

        await _transport.retrying(
            subscribe,
            what="rabbitmq subscribe",
            timeout=self._options.retry_timeout,
            map_error=map_error,
        )

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        try:
            first = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            return []
        out = [self._message(first)]
        while len(out) < max_messages and not self._inbox.empty():
            out.append(self._message(self._inbox.get_nowait()))
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
            # The channel it came on is gone: the broker has requeued it already.
            log.warning("rabbitmq: settling message %s failed: %s", message.id, exc)

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        try:
            if self._queue is not None and self._consumer_tag is not None:
                await self._queue.cancel(self._consumer_tag)
        finally:
            # Closing the channel hands unacknowledged messages back to the queue.
            await channel.close()
