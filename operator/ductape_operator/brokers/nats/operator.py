"""NATS JetStream, the operator side: a topic is a stream, a subscription a durable
pull consumer on it (docs/reference.md, "NATS").

A topic's stream is named after its subject (`entries.stream_name`) and holds that one
subject; file storage, limits retention, `MaxAge` = `retentionSeconds` (0: no limit,
the server's default). A subscription's consumer acks explicitly, starts at the
messages published after it was created (deliver policy `new`), and with a dead-letter
topic has `MaxDeliver` = maxDeliveryAttempts + 1: the messaging client moves a message
to the dead-letter topic when it sees delivery attempts + 1, so the server must offer it
once more (docs/messaging.md, "Dead letters and retention").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from nats.aio.client import Client
from nats.errors import NoServersError
from nats.js import JetStreamContext, api

from ductape_operator import errors, models
from ductape_operator.brokers.nats import config as config_
from ductape_operator.brokers.nats import entries, sdk
from ductape_operator.brokers.nats.errors import TLS_ERRORS, classify, is_not_found
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

#: Seconds the server waits for an ack before it delivers a message again: the
#: backstop for a consumer that died; a live client nacks after its own redelivery
#: timeout (docs/messaging.md).
ACK_WAIT = 30.0
#: Streams the server lists per page.
_PAGE = 256


class NatsProvider(_common.ProviderBase):
    """The JetStream of one NATS account, reached through one set of servers."""

    TYPE = models.MessageBrokerTypes("NATS")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        settings = config.narrow(config_.NatsConfig)
        problems = config_.problems(settings)
        if problems:
            raise errors.InvalidConfigError("; ".join(problems))
        servers = tuple(settings.servers or ())
        secure = bool(settings.tls) or any(s.startswith("tls://") for s in servers)
        password = _common.secret_value(secrets, settings.password)
        credentials = _common.secret_value(secrets, settings.credentials)
        self._credentials += [v for v in (password, credentials) if v]
        self._entries = entries.Entries(
            servers=entries.server_urls(servers, secure),
            username=settings.username or None,
            password=password,
            credentials=credentials,
        )
        self._tls_material, self._tls_context = self._tls_setup(secure)
        self._last_error = sdk.LastError()
        self._client: Client | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        return self._entries.endpoint

    def binding(self) -> dict[str, str]:
        written = self._entries.write()
        written.update(self._tls_material.entries())
        return written

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            await self._connect()

    async def _connect(self) -> Client:
        """The open connection; a new one when the server closed the last (a restart)."""
        async with self._connect_lock:
            current = self._client
            if current is not None and current.is_connected:
                return current
            if current is not None:
                logger.info("the connection to %s was closed; reopening", self.endpoint)
                self._client = None
                await _close_quietly(current)
            self._last_error.error = None
            self._client = await sdk.connect(
                self._entries,
                timeout=self._timeout,
                name="ductape-operator",
                last_error=self._last_error,
                tls_context=self._tls_context,
            )
            return self._client

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def _js(self) -> JetStreamContext:
        client = await self._connect()
        return client.jetstream(timeout=self._timeout)

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        stream = entries.stream_name(topic.name)
        async with self.guard(f"ensuring stream {stream}", self._map):
            js = await self._js()
            try:
                info = await js.stream_info(stream)
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                await js.add_stream(_stream_config(topic))
            else:
                if list(info.config.subjects or ()) != [topic.name]:
                    raise errors.ProvisioningError(
                        f"{self.endpoint}: stream {stream!r} exists with subjects "
                        f"{info.config.subjects}, not [{topic.name!r}]",
                        retriable=False,
                    )
            for sub in topic.subscriptions:
                await self._ensure_consumer(js, stream, topic, sub)
        return base.TopicRoute(
            tag=topic.tag,
            name=topic.name,
            subscriptions={sub: entries.consumer_name(sub) for sub in topic.subscriptions},
        )

    async def _ensure_consumer(
        self, js: JetStreamContext, stream: str, topic: base.TopicPlan, sub: str
    ) -> None:
        try:
            await js.consumer_info(stream, entries.consumer_name(sub))
        except Exception as exc:
            if not is_not_found(exc):
                raise
            await js.add_consumer(stream, _consumer_config(topic, sub))

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """The stream's `MaxAge` and each consumer's `MaxDeliver`, both editable in place."""
        await self._ensure_started()
        stream = entries.stream_name(topic.name)
        changed = False
        async with self.guard(f"updating the settings of stream {stream}", self._map):
            js = await self._js()
            info = await js.stream_info(stream)
            max_age = float(topic.retention_seconds or 0)
            if float(info.config.max_age or 0) != max_age:
                info.config.max_age = max_age
                await js.update_stream(info.config)
                changed = True
            wanted = _max_deliver(topic)
            for sub in topic.subscriptions:
                name = entries.consumer_name(sub)
                consumer = await js.consumer_info(stream, name)
                if (consumer.config.max_deliver or -1) != wanted:
                    consumer.config.max_deliver = wanted
                    await js.add_consumer(stream, consumer.config)
                    changed = True
        return changed

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        stream = entries.stream_name(topic.name)
        async with self.guard(f"deleting stream {stream}", self._map):
            js = await self._js()
            try:
                await js.delete_stream(stream)
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        stream = entries.stream_name(topic.name)
        name = entries.consumer_name(subscription)
        async with self.guard(f"deleting consumer {name} of stream {stream}", self._map):
            js = await self._js()
            try:
                await js.delete_consumer(stream, name)
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        return topic in await self.inventory([topic])

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """One listing of the account's streams (paged by 256), then the consumer names of
        each declared stream that has subscriptions."""
        plans = list(topics)
        if not plans:
            return frozenset()
        await self._ensure_started()
        async with self.guard(f"listing streams for {len(plans)} topic(s)", self._map):
            js = await self._js()
            streams = await self._stream_names(js)
            wanted = sorted(
                {
                    entries.stream_name(p.name)
                    for p in plans
                    if p.subscriptions and entries.stream_name(p.name) in streams
                }
            )
            consumers: dict[str, set[str]] = {}
            for stream in wanted:
                try:
                    listed = await js.consumers_info(stream)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                    continue  # deleted since the listing: missing
                consumers[stream] = {c.name for c in listed}
        present = set()
        for plan in plans:
            stream = entries.stream_name(plan.name)
            if stream not in streams:
                continue
            names = {entries.consumer_name(s) for s in plan.subscriptions}
            if names <= consumers.get(stream, set()):
                present.add(plan)
        return frozenset(present)

    async def _stream_names(self, js: JetStreamContext) -> set[str]:
        names: set[str] = set()
        offset = 0
        while True:
            page = await js.streams_info(offset=offset)
            names.update(info.config.name for info in page if info.config.name)
            if len(page) < _PAGE:
                return names
            offset += len(page)

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Per stream its last sequence (the publish count), per consumer its pending
        count (`num_pending`: not delivered yet) plus `num_ack_pending` (delivered, not
        acked); one consumer listing per stream."""
        plans = [p for p in topics if p.subscriptions]
        if not plans:
            return {}
        await self._ensure_started()
        result: dict[base.TopicPlan, base.TopicBacklog] = {}
        async with self.guard(f"reading the backlog of {len(plans)} topic(s)", self._map):
            js = await self._js()
            for plan in plans:
                stream = entries.stream_name(plan.name)
                try:
                    info = await js.stream_info(stream)
                    listed = await js.consumers_info(stream)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                    continue
                by_name = {c.name: c for c in listed}
                subs: dict[str, base.SubscriptionBacklog] = {}
                for sub in plan.subscriptions:
                    consumer = by_name.get(entries.consumer_name(sub))
                    if consumer is None:
                        continue
                    subs[sub] = base.SubscriptionBacklog(
                        messages=(consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
                    )
                result[plan] = base.TopicBacklog(published=info.state.last_seq, subscriptions=subs)
        return result

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            client = await self._connect()
            await client.jetstream(timeout=timeout).account_info()

    # --- helpers ------------------------------------------------------------

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side); why a connect failed is nats-py's last reported error."""
        cause = self._last_error.error if isinstance(exc, NoServersError) else None
        reason = cause or exc
        if isinstance(reason, TLS_ERRORS):
            return _common.tls_failed(self.endpoint, what, reason)
        return _common.from_failure(classify(exc, cause), self.endpoint, what, reason)


def _max_deliver(topic: base.TopicPlan) -> int:
    if topic.dead_letter is None:
        return -1
    return topic.dead_letter.max_delivery_attempts + 1


def _stream_config(topic: base.TopicPlan) -> api.StreamConfig:
    return api.StreamConfig(
        name=entries.stream_name(topic.name),
        subjects=[topic.name],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=float(topic.retention_seconds or 0),
    )


def _consumer_config(topic: base.TopicPlan, sub: str) -> api.ConsumerConfig:
    name = entries.consumer_name(sub)
    return api.ConsumerConfig(
        durable_name=name,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.NEW,
        ack_wait=ACK_WAIT,
        max_deliver=_max_deliver(topic),
    )


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except Exception as exc:  # a broken connection may fail to close; it is gone either way
        logger.debug("closing a NATS connection failed: %s", exc)
