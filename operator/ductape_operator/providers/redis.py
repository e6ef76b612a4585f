"""Redis: a topic is a stream key, a subscription a consumer group on it.

The group is named after the subscription alone (README.md, "The connection Secret") and is
created at `$`, so it receives every entry added after it was provisioned. A
topic without subscriptions still gets its (empty) stream, made by creating and
destroying a throwaway group, since Redis has no "create an empty stream".
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from collections.abc import Collection

import redis.asyncio as aredis
from redis import exceptions as redis_errors

from ductape_operator import errors, models
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6379


class RedisProvider(_common.ProviderBase):
    """One Redis server and database with one set of credentials."""

    TYPE = models.MessageBrokerTypes.REDIS

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        if not config.host:
            raise errors.InvalidConfigError("REDIS: config.host is required")
        self._host = config.host
        self._port = config.port or DEFAULT_PORT
        self._db = config.db or 0
        self._tls = bool(config.tls)
        self._username = config.username or None
        self._password = _common.secret_value(secrets, config.password)
        if self._password:
            self._credentials.append(self._password)
        self._client: aredis.Redis | None = None

    # --- naming and binding -------------------------------------------------

    @property
    def _scheme(self) -> str:
        return "rediss" if self._tls else "redis"

    @property
    def endpoint(self) -> str:
        return f"{self._scheme}://{self._host}:{self._port}/{self._db}"

    def binding(self) -> dict[str, str]:
        userinfo = ""
        if self._username or self._password:
            userinfo = urllib.parse.quote(self._username or "", safe="")
            if self._password:
                userinfo += ":" + urllib.parse.quote(self._password, safe="")
            userinfo += "@"
        entries = {
            "uri": f"{self._scheme}://{userinfo}{self._host}:{self._port}/{self._db}",
            "host": self._host,
            "port": str(self._port),
            "database": str(self._db),
        }
        if self._username:
            entries["username"] = self._username
        if self._password:
            entries["password"] = self._password
        return entries

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        self._client = aredis.Redis(
            host=self._host,
            port=self._port,
            db=self._db,
            username=self._username,
            password=self._password,
            ssl=self._tls,
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
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # a broken connection may fail to close; it is gone either way
                logger.debug("closing the Redis client of %s failed", self.endpoint)

    def _require_client(self) -> aredis.Redis:
        if self._client is None:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        return self._client

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicLocation:
        await self._ensure_started()
        key = topic.name
        async with self.guard(f"ensuring stream {key}", self._map):
            client = self._require_client()
            kind = _text(await client.type(key))
            if kind not in ("stream", "none"):
                raise errors.ProvisioningError(
                    f"{self.endpoint}: key {key!r} exists and is a {kind}, not a stream",
                    retriable=False,
                )
            if kind == "none" and not topic.subscriptions:
                scratch = f"ductape-init-{uuid.uuid4().hex}"
                await self._create_group(key, scratch)
                await client.xgroup_destroy(key, scratch)
            for sub in topic.subscriptions:
                await self._create_group(key, sub)
        return base.TopicLocation(name=key, subscriptions={sub: sub for sub in topic.subscriptions})

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

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            await self._require_client().ping()

    # --- helpers ------------------------------------------------------------

    async def _create_group(self, key: str, group: str) -> None:
        try:
            await self._require_client().xgroup_create(key, group, id="$", mkstream=True)
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The one place Redis errors become the project's."""
        endpoint = self.endpoint
        text = str(exc)
        if isinstance(
            exc,
            redis_errors.AuthenticationError
            | redis_errors.AuthorizationError
            | redis_errors.NoPermissionError,
        ) or text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return _common.auth_failed(endpoint, what, exc)
        if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
            return _common.unreachable(endpoint, what, exc)
        if isinstance(exc, redis_errors.BusyLoadingError | redis_errors.TryAgainError):
            return _common.refused(endpoint, what, exc, retriable=True)
        if isinstance(exc, redis_errors.ReadOnlyError | redis_errors.OutOfMemoryError):
            return _common.refused(endpoint, what, exc, retriable=True)
        if isinstance(exc, redis_errors.ResponseError):
            return _common.refused(endpoint, what, exc, retriable=False)
        return _common.refused(endpoint, what, exc, retriable=True)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
