"""Redis: a topic is a stream key, a subscription a consumer group on it.

The group is named after the subscription alone (README.md, "The connection Secret") and is
created at `$`, so it receives every entry added after it was provisioned. A
topic without subscriptions still gets its (empty) stream, made by creating and
destroying a throwaway group, since Redis has no "create an empty stream".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection

import redis.asyncio as aredis
from redis import exceptions as redis_errors

from ductape_operator import errors, models, tls
from ductape_operator.brokers.redis.config import RedisConfig
from ductape_operator.brokers.redis.entries import DEFAULT_DATABASE, DEFAULT_PORT, Entries
from ductape_operator.brokers.redis.errors import classify
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)


class RedisProvider(_common.ProviderBase):
    """One Redis server and database with one set of credentials."""

    TYPE = models.MessageBrokerTypes("REDIS")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        settings = config.narrow(RedisConfig)
        if not settings.host:
            raise errors.InvalidConfigError("REDIS: config.host is required")
        self._host = settings.host
        self._port = settings.port or DEFAULT_PORT
        self._db = settings.db or DEFAULT_DATABASE
        self._tls = bool(settings.tls)
        self._username = settings.username or None
        self._password = _common.secret_value(secrets, settings.password)
        if self._password:
            self._credentials.append(self._password)
        # redis-py builds its own context from these (CA text, pair as files), with the
        # same trust as `tls.client_context`; building ours checks the PEM up front.
        self._tls_material, _ = self._tls_setup(self._tls)
        self._pair: tls.PairFiles | None = None
        self._client: aredis.Redis | None = None

    # --- naming and binding -------------------------------------------------

    @property
    def _entries(self) -> Entries:
        return Entries(
            host=self._host,
            port=self._port,
            database=self._db,
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
        material = self._tls_material
        if material.cert and material.key:
            self._pair = tls.PairFiles(material.cert, material.key)
        self._client = aredis.Redis(
            host=self._host,
            port=self._port,
            db=self._db,
            username=self._username,
            password=self._password,
            ssl=self._tls,
            ssl_ca_data=material.ca,
            ssl_certfile=self._pair.cert_path if self._pair else None,
            ssl_keyfile=self._pair.key_path if self._pair else None,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            decode_responses=True,
            # Room for every operation slot plus the unlimited probe: the pool is
            # never what makes an operation fail.
            max_connections=_common.DEFAULT_CONCURRENCY + 4,
        )
        async with self.guard("connecting", self._map, limited=False):
            await self._client.ping()

    async def _close(self) -> None:
        client, self._client = self._client, None
        pair, self._pair = self._pair, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # a broken connection may fail to close; it is gone either way
                logger.debug("closing the Redis client of %s failed", self.endpoint)
        if pair is not None:
            pair.cleanup()

    def _require_client(self) -> aredis.Redis:
        if self._client is None:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        return self._client

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        key = topic.name
        async with self.guard(f"ensuring stream {key}", self._map):
            client = self._require_client()
            # One round trip: the key's type and every group's creation. On a key that is
            # not a stream, XGROUP CREATE fails (WRONGTYPE) and changes nothing.
            async with client.pipeline(transaction=False) as pipe:
                pipe.type(key)
                for sub in topic.subscriptions:
                    pipe.xgroup_create(key, sub, id="$", mkstream=True)
                kind_reply, *created = await pipe.execute(raise_on_error=False)
            kind = _text(kind_reply)
            if kind not in ("stream", "none"):
                raise errors.ProvisioningError(
                    f"{self.endpoint}: key {key!r} exists and is a {kind}, not a stream",
                    retriable=False,
                )
            for reply in created:
                if isinstance(reply, Exception) and not _group_exists(reply):
                    raise reply
            if kind == "none" and not topic.subscriptions:
                scratch = f"ductape-init-{uuid.uuid4().hex}"
                await self._create_group(key, scratch)
                await client.xgroup_destroy(key, scratch)
        return base.TopicRoute(
            tag=topic.tag, name=key, subscriptions={sub: sub for sub in topic.subscriptions}
        )

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """Retention by time: `XTRIM <key> MINID` of the entries older than `retentionSeconds`.

        A stream has no time limit of its own, so this runs at every health round
        (docs/messaging.md, "Dead letters and retention"); entry ids are the server's
        milliseconds, so the cut-off is taken from the server's clock. Dead letters are
        the messaging client's (delivery counts of the pending-entries list).
        """
        if topic.retention_seconds is None:
            return False
        await self._ensure_started()
        async with self.guard(f"trimming stream {topic.name}", self._map):
            client = self._require_client()
            seconds, micros = await client.time()
            cutoff = seconds * 1000 + micros // 1000 - topic.retention_seconds * 1000
            if cutoff > 0:
                await client.xtrim(topic.name, minid=f"{cutoff}-0", approximate=False)
        return False

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        key = topic.name
        async with self.guard(f"deleting stream {key}", self._map):
            client = self._require_client()
            # Only a stream is ours to delete; its consumer groups go with it.
            if _text(await client.type(key)) == "stream":
                await client.delete(key)

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        key = topic.name
        async with self.guard(f"deleting consumer group {subscription} of {key}", self._map):
            client = self._require_client()
            if _text(await client.type(key)) == "stream":
                await client.xgroup_destroy(key, subscription)

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        await self._ensure_started()
        key = topic.name
        async with self.guard(f"looking up stream {key}", self._map):
            client = self._require_client()
            if _text(await client.type(key)) != "stream":
                return False
            if not topic.subscriptions:
                return True
            groups = {group["name"] for group in await client.xinfo_groups(key)}
        return set(topic.subscriptions) <= groups

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """Two pipelined round trips for every topic of every resource on this database.

        No SCAN: the keyspace may hold millions of application keys, the declared
        streams are what we need to know about.
        """
        await self._ensure_started()
        plans = list(topics)
        if not plans:
            return frozenset()
        async with self.guard(f"listing {len(plans)} stream(s)", self._map):
            client = self._require_client()
            async with client.pipeline(transaction=False) as pipe:
                for plan in plans:
                    pipe.type(plan.name)
                kinds = [_text(kind) for kind in await pipe.execute()]
            streams = [plan for plan, kind in zip(plans, kinds, strict=True) if kind == "stream"]
            with_groups = [plan for plan in streams if plan.subscriptions]
            async with client.pipeline(transaction=False) as pipe:
                for plan in with_groups:
                    pipe.xinfo_groups(plan.name)
                replies = await pipe.execute(raise_on_error=False)
        present = {plan for plan in streams if not plan.subscriptions}
        for plan, reply in zip(with_groups, replies, strict=True):
            if isinstance(reply, Exception):
                continue  # deleted between the two round trips: missing
            groups = {group["name"] for group in reply}
            if set(plan.subscriptions) <= groups:
                present.add(plan)
        return frozenset(present)

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Two pipelined round trips for every stream of every resource on this database.

        First the server's clock, `XINFO STREAM` (entries-added: the publish count) and
        `XINFO GROUPS` (each group's lag and pending count) of every stream; then, for
        each group with a backlog, the id of its oldest pending entry (`XPENDING`
        summary) and of its first undelivered one (`XRANGE` after last-delivered-id):
        stream ids are millisecond timestamps, so the older of the two gives the age.
        A group whose lag Redis cannot tell (entries deleted in the middle of the
        stream) is left out rather than guessed.
        """
        plans = list(topics)
        if not plans:
            return {}
        await self._ensure_started()
        names = sorted({plan.name for plan in plans})
        async with self.guard(f"reading the backlog of {len(names)} stream(s)", self._map):
            client = self._require_client()
            async with client.pipeline(transaction=False) as pipe:
                pipe.time()
                for name in names:
                    pipe.xinfo_stream(name)
                    pipe.xinfo_groups(name)
                replies = await pipe.execute(raise_on_error=False)
            now_ms = _clock_ms(replies[0])
            streams: dict[str, tuple[int | None, dict[str, dict[str, object]]]] = {}
            for index, name in enumerate(names):
                info, groups = replies[1 + 2 * index], replies[2 + 2 * index]
                if isinstance(info, Exception) or isinstance(groups, Exception):
                    continue  # not a stream (yet): no figures
                added = info.get("entries-added")
                streams[name] = (
                    int(added) if added is not None else None,
                    {_text(group["name"]): group for group in groups},
                )
            # Only the groups somebody declared, and only those with something waiting.
            waiting = sorted(
                {
                    (plan.name, sub)
                    for plan in plans
                    if plan.name in streams
                    for sub in plan.subscriptions
                    if _backlog_of(streams[plan.name][1].get(sub))
                }
            )
            async with client.pipeline(transaction=False) as pipe:
                for name, sub in waiting:
                    group = streams[name][1][sub]
                    pipe.xpending(name, sub)
                    pipe.xrange(name, f"({_text(group['last-delivered-id'])}", "+", count=1)
                oldest = await pipe.execute(raise_on_error=False)
        first_ids: dict[tuple[str, str], list[str]] = {}
        for index, key in enumerate(waiting):
            pending, undelivered = oldest[2 * index], oldest[2 * index + 1]
            ids = first_ids.setdefault(key, [])
            if isinstance(pending, dict) and pending.get("min"):
                ids.append(_text(pending["min"]))
            if isinstance(undelivered, list) and undelivered:
                ids.append(_text(undelivered[0][0]))
        result: dict[base.TopicPlan, base.TopicBacklog] = {}
        for plan in plans:
            if plan.name not in streams:
                continue
            added, groups = streams[plan.name]
            subs: dict[str, base.SubscriptionBacklog] = {}
            for sub in plan.subscriptions:
                count = _backlog_of(groups.get(sub))
                if count is None:
                    continue
                ages = [now_ms - _id_ms(entry) for entry in first_ids.get((plan.name, sub), [])]
                age = max(0, max(ages)) / 1000 if ages else None
                subs[sub] = base.SubscriptionBacklog(messages=count, oldest_age_seconds=age)
            result[plan] = base.TopicBacklog(published=added, subscriptions=subs)
        return result

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            await self._require_client().ping()

    # --- helpers ------------------------------------------------------------

    async def _create_group(self, key: str, group: str) -> None:
        try:
            await self._require_client().xgroup_create(key, group, id="$", mkstream=True)
        except redis_errors.ResponseError as exc:
            if not _group_exists(exc):
                raise

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side)."""
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


def _backlog_of(group: dict[str, object] | None) -> int | None:
    """A group's lag (entries not delivered yet) plus its pending (delivered, not acked);
    None when there is no such group or Redis cannot tell its lag."""
    if group is None or group.get("lag") is None:
        return None
    return int(str(group["lag"])) + int(str(group.get("pending") or 0))


def _clock_ms(reply: object) -> int:
    """Milliseconds from `TIME`'s (seconds, microseconds): the server's clock, which
    stamped the entry ids, not ours."""
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        raise redis_errors.ResponseError(f"unexpected TIME reply {reply!r}")
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def _id_ms(entry_id: str) -> int:
    """The millisecond timestamp of a stream entry id (`<ms>-<seq>`)."""
    return int(entry_id.split("-", 1)[0])


def _group_exists(exc: Exception) -> bool:
    """XGROUP CREATE's answer for a group that is already there (adopted, not an error)."""
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("BUSYGROUP")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
