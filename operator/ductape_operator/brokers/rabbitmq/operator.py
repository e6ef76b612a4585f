"""RabbitMQ: a topic is a durable topic exchange, a subscription a durable queue.

Each subscription's queue `<topic>.<subscription>` is bound to the exchange
with `#`, so it gets every message published to the topic from the moment it
exists, consumed or not. Every operation opens its own channel: a refused
declare closes the channel it ran on, and that must not break the next one.
The connection is reopened on use after the broker dropped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection

import aio_pika
from aio_pika import abc as aio_pika_abc
from aio_pika import exceptions as amqp_errors
from pamqp.common import FieldTable

from ductape_operator import errors, models
from ductape_operator.brokers.rabbitmq.config import RabbitMQConfig
from ductape_operator.brokers.rabbitmq.entries import DEFAULT_VHOST, Entries, default_port
from ductape_operator.brokers.rabbitmq.errors import classify
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

#: A subscription's queue gets every message of its topic.
ROUTING_KEY = "#"


def queue_name(topic: str, subscription: str) -> str:
    """The queue of a subscription: `<topic>.<subscription>`."""
    return base.default_subscription_name(topic, subscription)


def queue_arguments(topic: base.TopicPlan) -> FieldTable:
    """The queue arguments of a topic's subscriptions: `x-message-ttl` for retention.

    Dead letters are the messaging client's on RabbitMQ (a dead-letter exchange on
    the queue would also take every message that expires, which retention drops).
    """
    if topic.retention_seconds is None:
        return {}
    return {"x-message-ttl": topic.retention_seconds * 1000}


class RabbitMQProvider(_common.ProviderBase):
    """One RabbitMQ virtual host with one set of credentials."""

    TYPE = models.MessageBrokerTypes("RABBITMQ")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        settings = config.narrow(RabbitMQConfig)
        if not settings.host:
            raise errors.InvalidConfigError("RABBITMQ: config.host is required")
        self._host = settings.host
        self._tls = bool(settings.tls)
        self._port = settings.port or default_port(self._tls)
        self._vhost = settings.vhost or DEFAULT_VHOST
        self._username = settings.username or None
        self._password = _common.secret_value(secrets, settings.password)
        if self._password:
            self._credentials.append(self._password)
        self._tls_material, self._ssl_context = self._tls_setup(self._tls)
        self._connection: aio_pika_abc.AbstractConnection | None = None
        self._connect_lock = asyncio.Lock()

    # --- naming and binding -------------------------------------------------

    @property
    def _entries(self) -> Entries:
        return Entries(
            host=self._host,
            port=self._port,
            vhost=self._vhost,
            username=self._username,
            password=self._password,
            tls=self._tls,
        )

    @property
    def endpoint(self) -> str:
        return self._entries.endpoint

    def binding(self) -> dict[str, str]:
        entries = self._entries.write()
        entries.update(self._tls_material.entries())
        return entries

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            await self._connect()

    async def _connect(self) -> aio_pika_abc.AbstractConnection:
        async with self._connect_lock:
            current = self._connection
            if current is not None and _usable(current):
                return current
            if current is not None:
                # Closed by the broker (restart, `close_connection`, a channel error that
                # took the connection down): aio-pika does not reopen a plain connection,
                # and its `is_closed` stays False, so it is replaced here.
                logger.info("the AMQP connection to %s was closed; reopening", self.endpoint)
                self._connection = None
                with contextlib.suppress(Exception):
                    await current.close()
            login, password = self._entries.login
            self._connection = await aio_pika.connect(
                host=self._host,
                port=self._port,
                login=login,
                password=password,
                virtualhost=self._vhost,
                ssl=self._tls,
                ssl_context=self._ssl_context,
                timeout=self._timeout,
                client_properties={"connection_name": "ductape-operator"},
            )
            return self._connection

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                logger.debug("closing the AMQP connection to %s failed", self.endpoint)

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[aio_pika_abc.AbstractChannel]:
        channel = await self._open_channel()
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _open_channel(self) -> aio_pika_abc.AbstractChannel:
        """A new channel; the connection is reopened once if it died under us."""
        connection = await self._connect()
        try:
            return await connection.channel(publisher_confirms=False)
        except (RuntimeError, amqp_errors.AMQPConnectionError, ConnectionError):
            if _usable(connection):
                raise
            connection = await self._connect()
            return await connection.channel(publisher_confirms=False)

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        exchange = topic.name
        queues = {sub: queue_name(exchange, sub) for sub in topic.subscriptions}
        arguments = queue_arguments(topic)
        async with self.guard(f"ensuring exchange {exchange}", self._map):
            try:
                # The usual case in one channel: exchange, queues and bindings.
                async with self._channel() as channel:
                    await channel.declare_exchange(
                        exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                    for queue in queues.values():
                        declared = await channel.declare_queue(
                            queue, durable=True, arguments=arguments
                        )
                        await declared.bind(exchange, routing_key=ROUTING_KEY)
            except amqp_errors.ChannelPreconditionFailed:
                # Something exists with other arguments and closed that channel:
                # sort it out one declaration per channel.
                async with self._channel() as channel:
                    await channel.declare_exchange(
                        exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                for queue in queues.values():
                    await self._ensure_queue(queue, exchange, arguments)
        return base.TopicRoute(tag=topic.tag, name=exchange, subscriptions=queues)

    async def _ensure_queue(self, queue: str, exchange: str, arguments: FieldTable) -> None:
        try:
            async with self._channel() as channel:
                declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
                await declared.bind(exchange, routing_key=ROUTING_KEY)
                return
        except amqp_errors.ChannelPreconditionFailed:
            # The queue exists with other arguments (a quorum queue, say): adopt it as it is.
            logger.info("queue %s on %s exists with other arguments; adopted", queue, self.endpoint)
        async with self._channel() as channel:
            existing = await channel.get_queue(queue, ensure=True)
            await existing.bind(exchange, routing_key=ROUTING_KEY)

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """Each subscription queue's `x-message-ttl` (retention), through AMQP alone.

        Queue arguments cannot change on an existing queue, and policies need the
        management API, which a broker may not expose. A queue whose arguments differ
        is replaced when it is empty and unused (the delete is conditional on the
        broker, so a message arriving meanwhile is never lost with it); while it holds
        messages or has consumers, the change waits and the error names the topic and
        the field (docs/messaging.md, "Dead letters and retention").
        """
        await self._ensure_started()
        arguments = queue_arguments(topic)
        changed = False
        async with self.guard(
            f"setting retention of the queues of exchange {topic.name}", self._map
        ):
            for sub in topic.subscriptions:
                queue = queue_name(topic.name, sub)
                try:
                    async with self._channel() as channel:
                        await channel.declare_queue(queue, durable=True, arguments=arguments)
                    continue
                except amqp_errors.ChannelPreconditionFailed:
                    pass  # declared with other arguments
                try:
                    async with self._channel() as channel:
                        await channel.queue_delete(queue, if_unused=True, if_empty=True)
                except amqp_errors.ChannelPreconditionFailed:
                    async with self._channel() as channel:
                        held = await channel.get_queue(queue, ensure=True)
                        result = held.declaration_result
                    raise errors.ProvisioningError(
                        f"topic {topic.tag}: retentionSeconds cannot change in place on"
                        f" RabbitMQ queue {queue} of subscription {sub} (queue arguments are"
                        f" fixed): it holds {result.message_count} message(s) and has"
                        f" {result.consumer_count} consumer(s); the queue is re-declared"
                        " with the new setting once it is empty and unused",
                        retriable=True,
                    ) from None
                async with self._channel() as channel:
                    declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
                    await declared.bind(topic.name, routing_key=ROUTING_KEY)
                changed = True
        return changed

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        exchange = topic.name
        async with self.guard(f"deleting exchange {exchange}", self._map):
            for sub in topic.subscriptions:
                await self._delete("queue", queue_name(exchange, sub))
            await self._delete("exchange", exchange)

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        queue = queue_name(topic.name, subscription)
        async with self.guard(f"deleting queue {queue}", self._map):
            await self._delete("queue", queue)

    async def _delete(self, kind: str, name: str) -> None:
        try:
            async with self._channel() as channel:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
        except amqp_errors.ChannelNotFoundEntity:
            pass  # already gone

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        await self._ensure_started()
        exchange = topic.name
        async with self.guard(f"looking up exchange {exchange}", self._map):
            try:
                async with self._channel() as channel:
                    await channel.get_exchange(exchange, ensure=True)
                for sub in topic.subscriptions:
                    async with self._channel() as channel:
                        await channel.get_queue(queue_name(exchange, sub), ensure=True)
            except amqp_errors.ChannelNotFoundEntity:
                return False
        return True

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """Passive declarations on one channel, a new channel only after a miss.

        AMQP has no listing (the management API is a plugin with a port of its
        own), but passive declarations on one open channel cost one round trip
        each, not a channel open each.
        """
        await self._ensure_started()
        present: set[base.TopicPlan] = set()
        async with self.guard(f"looking up {len(topics)} exchange(s)", self._map):
            channel = await self._open_channel()
            try:
                for topic in topics:
                    names = [("exchange", topic.name)] + [
                        ("queue", queue_name(topic.name, sub)) for sub in topic.subscriptions
                    ]
                    try:
                        for kind, name in names:
                            if kind == "exchange":
                                await channel.get_exchange(name, ensure=True)
                            else:
                                await channel.get_queue(name, ensure=True)
                    except amqp_errors.ChannelNotFoundEntity:
                        channel = await self._open_channel()
                        continue
                    present.add(topic)
            finally:
                if not channel.is_closed:
                    await channel.close()
        return frozenset(present)

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Each subscription queue's ready messages, from passive declarations on one
        channel (a new channel only after a miss), like `inventory`.

        AMQP's declare-ok counts only the messages ready for delivery: those delivered
        to a consumer and not acked yet are not in it (only the management plugin's
        HTTP API has them), so a consumer's prefetched messages are not counted until
        they are requeued. RabbitMQ keeps no count of what an exchange received.
        """
        await self._ensure_started()
        queues = sorted(
            {queue_name(plan.name, sub) for plan in topics for sub in plan.subscriptions}
        )
        ready: dict[str, int] = {}
        async with self.guard(f"reading the backlog of {len(queues)} queue(s)", self._map):
            channel = await self._open_channel()
            try:
                for name in queues:
                    try:
                        declared = await channel.get_queue(name, ensure=True)
                    except amqp_errors.ChannelNotFoundEntity:
                        channel = await self._open_channel()
                        continue
                    result = getattr(declared, "declaration_result", None)
                    count = getattr(result, "message_count", None)
                    if count is not None:
                        ready[name] = int(count)
            finally:
                if not channel.is_closed:
                    await channel.close()
        return {
            plan: base.TopicBacklog(
                subscriptions={
                    sub: base.SubscriptionBacklog(messages=ready[queue_name(plan.name, sub)])
                    for sub in plan.subscriptions
                    if queue_name(plan.name, sub) in ready
                }
            )
            for plan in topics
        }

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            async with self._channel():
                pass

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side)."""
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


def _usable(connection: aio_pika_abc.AbstractConnection) -> bool:
    """Open and connected: `is_closed` alone misses a close that came from the broker."""
    connected = getattr(connection, "connected", None)
    return not connection.is_closed and (connected is None or connected.is_set())
