"""RabbitMQ: a topic is a durable topic exchange, a subscription a durable queue.

Each subscription's queue `<topic>.<subscription>` is bound to the exchange
with `#`, so it gets every message published to the topic from the moment it
exists, consumed or not.

Operations take a channel from a small pool of long-lived ones: opening and
closing a channel per operation cost two more round trips and as much of the
broker's time as the declarations themselves. A channel the broker closed (a
refused declare, a passive miss) is never handed out again, so a failure stays
the failure of the resource that caused it. Every method waits for its answer
before the next is sent, on purpose: a frame still queued for a channel that the
broker has just closed reaches it as a frame on no channel, and the broker then
closes the whole connection (seen with AMQP's no-wait flag and 32 operations at
once). The connection is reopened on use after the broker dropped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import TypeVar

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
#: Operations at once on the one connection (and so at most this many pooled
#: channels). The broker's own work on durable declarations is the limit well
#: before this; 32 rather than 16 hides the operator's event-loop lag under a
#: burst (docs/operations.md, "Limits of our own are not outages").
CONCURRENCY = 32
#: Topics an inventory looks up at once, each an operation: a quarter of the
#: slots, so that creates still find most of them free during a health round.
INVENTORY_LOOKUPS = 8
_T = TypeVar("_T")
#: The highest channel number AMQP 0-9-1 has (a `channel_max` of 0 means this).
MAX_CHANNEL = 65535


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
        concurrency: int = CONCURRENCY,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout, concurrency=concurrency)
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
        #: Idle channels, each with the connection it was opened on.
        self._idle: list[tuple[aio_pika_abc.AbstractConnection, aio_pika_abc.AbstractChannel]] = []
        self._pool_size = concurrency
        self._last_channel = 0  # see _next_channel_number

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
                self._idle.clear()  # channels of the closed connection
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
        self._idle.clear()  # closed with their connection
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                logger.debug("closing the AMQP connection to %s failed", self.endpoint)

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[aio_pika_abc.AbstractChannel]:
        """A pooled channel, back in the pool after a use that went through.

        After a failure (the broker closed the channel, or a timeout cut an operation
        off with an answer still due on it) it is closed and dropped.
        """
        connection, channel = await self._take_channel()
        try:
            yield channel
        except BaseException:
            if not channel.is_closed:
                # The error that got us here is the one to report, not the close's.
                with contextlib.suppress(Exception):
                    await channel.close()
            raise
        if channel.is_closed or connection is not self._connection:
            return
        if len(self._idle) < self._pool_size:
            self._idle.append((connection, channel))
        else:
            await channel.close()

    async def _take_channel(
        self,
    ) -> tuple[aio_pika_abc.AbstractConnection, aio_pika_abc.AbstractChannel]:
        connection = await self._connect()
        while self._idle:
            owner, channel = self._idle.pop()
            if owner is connection and not channel.is_closed:
                return connection, channel
        channel = await self._open_channel()
        assert self._connection is not None  # just (re)opened by _open_channel
        return self._connection, channel

    async def _open_channel(self) -> aio_pika_abc.AbstractChannel:
        """A new channel; the connection is reopened once if it died under us."""
        connection = await self._connect()
        try:
            return await self._new_channel(connection)
        except (RuntimeError, amqp_errors.AMQPConnectionError, ConnectionError):
            if _usable(connection):
                raise
            connection = await self._connect()
            return await self._new_channel(connection)

    async def _new_channel(
        self, connection: aio_pika_abc.AbstractConnection
    ) -> aio_pika_abc.AbstractChannel:
        number = self._next_channel_number(connection)
        return await connection.channel(channel_number=number, publisher_confirms=False)

    def _next_channel_number(self, connection: aio_pika_abc.AbstractConnection) -> int | None:
        """Channel numbers count up through the broker's `channel_max`, round and round.

        aiormq takes the number after the highest one in use, and frees a number as
        soon as the broker's Close arrives, before our CloseOk is written (or at all,
        when its write queue is full): a channel opened on that number in between
        makes the broker close the whole connection ("CHANNEL_ERROR - second
        'channel.open' seen", seen here with a few refused declarations among 60 at
        once; docs/operations.md, "Limits of our own are not outages"). Counting up
        keeps a number that was just closed unused until `channel_max` other channels
        were opened. None (aio-pika's own choice) when not connected.
        """
        underlay = connection.transport
        if underlay is None:
            return None
        amqp = underlay.connection
        limit = min(amqp.connection_tune.channel_max or MAX_CHANNEL, MAX_CHANNEL)
        for _ in range(limit):
            self._last_channel = self._last_channel % limit + 1
            if self._last_channel not in amqp.channels:
                return self._last_channel
        return None

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        exchange = topic.name
        queues = {sub: queue_name(exchange, sub) for sub in topic.subscriptions}
        arguments = queue_arguments(topic)
        async with self.guard(f"ensuring exchange {exchange}", self._map):
            try:
                # The usual case on one channel: exchange, queues and bindings.
                async with self._channel() as channel:
                    await _declare(channel, exchange, list(queues.values()), arguments)
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
        queues = [queue_name(exchange, sub) for sub in topic.subscriptions]
        async with self.guard(f"deleting exchange {exchange}", self._map):
            try:
                async with self._channel() as channel:
                    amqp = await channel.get_underlay_channel()
                    for queue in queues:
                        await amqp.queue_delete(queue)
                    await amqp.exchange_delete(exchange)
                return
            except amqp_errors.ChannelNotFoundEntity:
                pass  # a broker that refuses to delete what is gone: one at a time
            for queue in queues:
                await self._delete("queue", queue)
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
        async with self.guard(f"looking up exchange {topic.name}", self._map):
            return await self._exists(topic)

    async def _exists(self, topic: base.TopicPlan) -> bool:
        """Passive declarations of the exchange and its queues, on one pooled channel."""
        try:
            async with self._channel() as channel:
                amqp = await channel.get_underlay_channel()
                await amqp.exchange_declare(topic.name, passive=True)
                for sub in topic.subscriptions:
                    await amqp.queue_declare(queue_name(topic.name, sub), passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return False
        return True

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """Passive declarations on pooled channels, a few topics at once (`_each`).

        AMQP has no listing (the management API is a plugin with a port of its own).
        """
        await self._ensure_started()
        present: set[base.TopicPlan] = set()

        async def look_up(topic: base.TopicPlan) -> None:
            if await self.topic_exists(topic):
                present.add(topic)

        await _each(topics, look_up)
        return frozenset(present)

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Each subscription queue's ready messages, from passive declarations on
        pooled channels, a few queues at once, like `inventory`.

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

        async def read(queue: str) -> None:
            count = await self._ready_messages(queue)
            if count is not None:
                ready[queue] = count

        await _each(queues, read)
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

    async def _ready_messages(self, queue: str) -> int | None:
        """A queue's ready messages from a passive declaration; None when it is gone."""
        async with self.guard(f"reading the backlog of queue {queue}", self._map):
            try:
                async with self._channel() as channel:
                    declared = await channel.get_queue(queue, ensure=True)
            except amqp_errors.ChannelNotFoundEntity:
                return None
        result = getattr(declared, "declaration_result", None)
        count = getattr(result, "message_count", None)
        return None if count is None else int(count)

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            # A new channel, not a pooled one: the broker's answer to opening one is
            # the probe (docs/operations.md).
            channel = await self._open_channel()
            await channel.close()

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side)."""
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


async def _each(items: Iterable[_T], work: Callable[[_T], Awaitable[None]]) -> None:
    """`work` on every item, `INVENTORY_LOOKUPS` at a time, each an operation of its own
    (a slot, a timeout): an endpoint's listing or backlog reading of a thousand queues is
    neither done one after the other nor failed as a whole for taking longer than one
    operation may. The first failure stands for the whole, as it would alone."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(INVENTORY_LOOKUPS):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _declare(
    channel: aio_pika_abc.AbstractChannel, exchange: str, queues: list[str], arguments: FieldTable
) -> None:
    """The topic exchange, its queues and their bindings, through aiormq's channel
    (aio-pika's objects for each exchange and queue would be built for nothing)."""
    amqp = await channel.get_underlay_channel()
    await amqp.exchange_declare(exchange, exchange_type="topic", durable=True)
    for queue in queues:
        await amqp.queue_declare(queue, durable=True, arguments=arguments)
        await amqp.queue_bind(queue, exchange, routing_key=ROUTING_KEY)


def _usable(connection: aio_pika_abc.AbstractConnection) -> bool:
    """Open and connected: `is_closed` alone misses a close that came from the broker."""
    connected = getattr(connection, "connected", None)
    return not connection.is_closed and (connected is None or connected.is_set())
