"""Kafka: topics through the admin API, subscriptions as consumer groups.

A subscription is the consumer group `<topic>.<subscription>`. Kafka has nothing
to create for a group, but the README ("The connection Secret") promises every subscription gets
every message published after it was provisioned, even before anyone consumes.
So provisioning commits the group's start offsets: for each partition of the
topic where the group has no committed offset yet, its current beginning
offset. An existing commit is never touched, so a group is never rewound.

aiokafka's admin client has no "describe without auto-creating" and no
"delete consumer groups", and its offset listing drops the broker's error code,
so those three go through its request API with the protocol classes it ships
(`_request`); everything else is public API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import conn as conn_
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetFetchRequest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from ductape_operator import errors, models
from ductape_operator.brokers.kafka.config import KafkaConfig, SaslMechanism
from ductape_operator.brokers.kafka.entries import Entries, security_protocol
from ductape_operator.brokers.kafka.errors import classify
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

#: Replication factor of created topics when the config sets none: min(this, brokers).
#: (CreateTopics v4's "-1 = the broker default" is beyond what aiokafka sends.)
MAX_DEFAULT_REPLICATION_FACTOR = 3
#: How long a topic creation waits for others to join its CreateTopics request, in seconds.
CREATE_LINGER = 0.002
#: How long ensure_topic waits for a new topic's partitions to get leaders, in seconds.
LEADER_WAIT = 10.0
#: Consumer groups an inventory asks about at once. aiokafka 0.14 speaks OffsetFetch
#: up to v3 and FindCoordinator up to v1, one group each (the batched forms are v8
#: and v4), so each group costs two small requests; these run a few at a time.
GROUP_LOOKUP_CONCURRENCY = 8

#: Bytes a backlog reading fetches per partition to learn the oldest waiting message's
#: timestamp: one record batch, which a producer keeps under 16 KiB by default (a larger
#: batch leaves that age unknown), and partitions per Fetch request, so that one
#: response stays under a megabyte.
TIMESTAMP_FETCH_BYTES = 16 * 1024
TIMESTAMP_FETCH_PARTITIONS = 64
#: The topic config that holds a topic's retention (the `retentionSeconds` of the spec).
RETENTION_CONFIG = "retention.ms"
#: DescribeConfigs' config source of a value set on the topic itself (an override).
_DYNAMIC_TOPIC_CONFIG = 1

_NO_ERROR = 0
_UNKNOWN_TOPIC_OR_PARTITION = kafka_errors.UnknownTopicOrPartitionError.errno
_TOPIC_ALREADY_EXISTS = kafka_errors.TopicAlreadyExistsError.errno
_NON_EMPTY_GROUP = kafka_errors.NonEmptyGroup.errno
_GROUP_ID_NOT_FOUND = kafka_errors.GroupIdNotFound.errno
#: A partition's leadership is moving, or a topic created a moment ago has its leader in
#: the metadata before the leader itself knows: asking again shortly succeeds.
_LEADER_MOVING = frozenset(
    {
        kafka_errors.LeaderNotAvailableError.errno,
        kafka_errors.NotLeaderForPartitionError.errno,
        74,  # FENCED_LEADER_EPOCH (no class of its own in aiokafka)
        75,  # UNKNOWN_LEADER_EPOCH
    }
)
#: Attempts at a backlog reading's offsets while partition leadership is moving.
OFFSET_ATTEMPTS = 5

#: (topic, partition) -> an offset (or a partition's leader).
PartitionOffsets = dict[tuple[str, int], int]
#: The group coordinator is not there yet (being elected, or its log still loading).
_COORDINATOR_NOT_READY = frozenset(
    {
        kafka_errors.CoordinatorNotAvailableError.errno,
        kafka_errors.NotCoordinatorError.errno,
        kafka_errors.CoordinatorLoadInProgressError.errno,
    }
)
#: A topic created a moment ago may not be in the coordinator's metadata yet either.
_NEW_TOPIC_NOT_READY = _COORDINATOR_NOT_READY | {kafka_errors.UnknownTopicOrPartitionError.errno}
#: A commit without a generation refused because the group has live members.
_GROUP_IN_USE = frozenset(
    {
        kafka_errors.IllegalGenerationError.errno,
        kafka_errors.UnknownMemberIdError.errno,
        kafka_errors.RebalanceInProgressError.errno,
    }
)
_SASL_MECHANISMS = {
    SaslMechanism.PLAIN: "PLAIN",
    SaslMechanism.SCRAM_SHA_256: "SCRAM-SHA-256",
    SaslMechanism.SCRAM_SHA_512: "SCRAM-SHA-512",
}


def group_id(topic: str, subscription: str) -> str:
    """The consumer group of a subscription: `<topic>.<subscription>`."""
    return base.default_subscription_name(topic, subscription)


class KafkaProvider(_common.ProviderBase):
    """One Kafka cluster (bootstrap servers) with one set of credentials."""

    TYPE = models.MessageBrokerTypes("KAFKA")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        self._settings = settings = config.narrow(KafkaConfig)
        if not settings.brokers:
            raise errors.InvalidConfigError("KAFKA: config.brokers is required")
        self._brokers = list(settings.brokers)
        self._password = (
            _common.secret_value(secrets, settings.sasl.password) if settings.sasl else None
        )
        if self._password:
            self._credentials.append(self._password)
        self._tls_material, self._ssl_context = self._tls_setup(bool(settings.ssl))
        self._admin: AIOKafkaAdminClient | None = None
        #: Topics waiting for the next CreateTopics request, and the request in flight.
        self._creating: list[tuple[NewTopic, asyncio.Future[tuple[int, list[Any]]]]] = []
        self._create_task: asyncio.Future[None] | None = None

    # --- naming and binding -------------------------------------------------

    @property
    def _entries(self) -> Entries:
        sasl = self._settings.sasl
        return Entries(
            bootstrap_servers=tuple(self._brokers),
            security_protocol=self.security_protocol,
            sasl_mechanism=None if sasl is None else _SASL_MECHANISMS[sasl.mechanism],
            username=None if sasl is None else sasl.username,
            password=self._password,
        )

    @property
    def endpoint(self) -> str:
        return self._entries.endpoint

    @property
    def security_protocol(self) -> str:
        return security_protocol(tls=bool(self._settings.ssl), sasl=self._settings.sasl is not None)

    def binding(self) -> dict[str, str]:
        entries = self._entries.write()
        entries.update(self._tls_material.entries())
        return entries

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "bootstrap_servers": self._brokers,
            "client_id": self._settings.client_id or "ductape-operator",
            "request_timeout_ms": int(self._timeout * 1000),
            "security_protocol": self.security_protocol,
        }
        if self._ssl_context is not None:
            options["ssl_context"] = self._ssl_context
        sasl = self._settings.sasl
        if sasl is not None:
            options["sasl_mechanism"] = _SASL_MECHANISMS[sasl.mechanism]
            options["sasl_plain_username"] = sasl.username
            options["sasl_plain_password"] = self._password
        return options

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            self._admin = AIOKafkaAdminClient(**self._client_options())
            try:
                await self._admin.start()
            except kafka_errors.KafkaConnectionError as exc:
                raise await self._why_bootstrap_failed(exc) from exc

    async def _why_bootstrap_failed(self, exc: Exception) -> Exception:
        """What a bootstrap server said, where aiokafka only says "Unable to bootstrap".

        aiokafka logs each server's error (a refused TLS handshake, a refused SASL
        login, a name that does not resolve) and raises without it; the condition
        needs it (README.md, "Conditions"), so one connection is tried again here.
        Runs only after a failed start.
        """
        options = self._client_options()
        for broker in self._brokers:
            host, _, port = broker.rpartition(":")
            try:
                conn = await conn_.create_conn(
                    host,
                    int(port),
                    client_id=options["client_id"],
                    request_timeout_ms=options["request_timeout_ms"],
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                )
            except (OSError, kafka_errors.KafkaError, TimeoutError) as found:
                return found
            conn.close()
        return exc

    async def _close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception:  # closing a broken connection may fail; it is gone either way
                logger.debug("closing the Kafka admin client of %s failed", self.endpoint)

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        return self._admin

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        name = topic.name
        wanted = topic.partitions or 1
        async with self.guard(f"ensuring topic {name}", self._map):
            metadata = await self._metadata([name])
            partitions = _partition_count(metadata, name)
            created = False
            if partitions is None:
                brokers = len(metadata.get("brokers") or []) or 1
                replicas = self._settings.replication_factor or min(
                    MAX_DEFAULT_REPLICATION_FACTOR, brokers
                )
                code, rest = await self._create_topic(NewTopic(name, wanted, replicas))
                if code not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS):
                    raise self._code_error(code, f"creating topic {name}", rest)
                # Created by someone else meanwhile: its groups may hold offsets.
                created = code == _NO_ERROR
                # Created here: it has the partitions asked for, and offsets can be
                # committed before its leaders are known (producers wait for them).
                # Found existing instead: it may be half created or being deleted.
                partitions = wanted if created else await self._wait_for_leaders(name)
            elif partitions < wanted:
                # More partitions declared than exist: grow. Fewer is impossible on
                # Kafka, so a topic with more partitions than declared is left alone.
                await self._require_admin().create_partitions({name: NewPartitions(wanted)})
                partitions = await self._wait_for_leaders(name, at_least=wanted)
            groups = {sub: group_id(name, sub) for sub in topic.subscriptions}
            if created:
                # A topic created just now starts at offset 0 on every partition: its
                # groups get that committed directly, at once, without a consumer.
                await asyncio.gather(
                    *(self._commit_new_topic_start(g, name, partitions) for g in groups.values())
                )
            else:
                for group in groups.values():
                    await self._commit_start_offsets(group, name, partitions)
        return base.TopicRoute(tag=topic.tag, name=name, subscriptions=groups)

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """`retention.ms` of the topic, set or removed (the broker's default then stands).

        Dead letters are the messaging client's on Kafka: nothing to set. aiokafka
        speaks only the non-incremental AlterConfigs, which replaces every override
        of the topic, so the other overrides are read first and sent back unchanged.
        """
        await self._ensure_started()
        name = topic.name
        wanted = None if topic.retention_seconds is None else str(topic.retention_seconds * 1000)
        async with self.guard(f"setting {RETENTION_CONFIG} of topic {name}", self._map):
            overrides = await self._topic_overrides(name)
            if overrides.get(RETENTION_CONFIG) == wanted:
                return False
            configs = {k: v for k, v in overrides.items() if k != RETENTION_CONFIG}
            if wanted is not None:
                configs[RETENTION_CONFIG] = wanted
            admin = self._require_admin()
            resource = ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)
            for response in await admin.alter_configs([resource]):
                for code, message, *_ in response.resources:
                    if code != _NO_ERROR:
                        raise self._code_error(code, f"altering configs of topic {name}", [message])
        return True

    async def _topic_overrides(self, name: str) -> dict[str, str | None]:
        """The configs set on the topic itself (not the broker's defaults)."""
        resource = ConfigResource(ConfigResourceType.TOPIC, name)
        overrides: dict[str, str | None] = {}
        for response in await self._require_admin().describe_configs([resource]):
            for code, message, _type, _name, entries, *_ in response.resources:
                if code != _NO_ERROR:
                    raise self._code_error(code, f"describing configs of topic {name}", [message])
                for key, value, _read_only, source, *_ in entries:
                    if source == _DYNAMIC_TOPIC_CONFIG:
                        overrides[key] = value
        return overrides

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        name = topic.name
        async with self.guard(f"deleting topic {name}", self._map):
            response = await self._require_admin().delete_topics([name])
            for _topic, code in response.topic_error_codes:
                if code not in (_NO_ERROR, _UNKNOWN_TOPIC_OR_PARTITION):
                    raise self._code_error(code, f"deleting topic {name}", [])
            for sub in topic.subscriptions:
                await self._delete_group(group_id(name, sub))

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        group = group_id(topic.name, subscription)
        async with self.guard(f"deleting consumer group {group}", self._map):
            await self._delete_group(group)

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        await self._ensure_started()
        name = topic.name
        async with self.guard(f"looking up topic {name}", self._map):
            if not _large_enough(await self._metadata([name]), topic):
                return False
            for sub in topic.subscriptions:
                if not await self._has_offsets(group_id(name, sub), name):
                    return False
        return True

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """One Metadata request for every topic, then the groups of the topics that exist.

        A group's committed offsets cost a coordinator lookup and an OffsetFetch
        (no batched form aiokafka can send, see `GROUP_LOOKUP_CONCURRENCY`); the
        groups are asked concurrently, a few at a time, under this one operation slot.
        """
        plans = list(topics)
        if not plans:
            return frozenset()
        await self._ensure_started()
        names = sorted({plan.name for plan in plans})
        async with self.guard(f"listing {len(names)} topic(s)", self._map):
            metadata = await self._metadata(names)
            sized = [plan for plan in plans if _large_enough(metadata, plan)]
            pairs = {
                (group_id(plan.name, sub), plan.name)
                for plan in sized
                for sub in plan.subscriptions
            }
            committed = await self._groups_with_offsets(pairs)
        return frozenset(
            plan
            for plan in sized
            if all((group_id(plan.name, sub), plan.name) in committed for sub in plan.subscriptions)
        )

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Consumer-group lag of every subscription, from one Metadata request, two
        ListOffsets requests per partition leader (latest and earliest offsets of every
        partition of every topic) and one committed-offset lookup per group.

        A group with no committed offset on a partition has all of it waiting (the
        subscription sees every message, README.md), so its backlog there is end minus
        beginning. The topic's count is the sum of its end offsets (every offset ever
        given out: compaction and transaction markers make it an upper bound). The oldest
        waiting message's age is its timestamp's, read with one small Fetch per partition
        leader (`TIMESTAMP_FETCH_BYTES` per partition with a backlog); unknown for a
        subscription when any of its partitions' records could not be read that way.
        """
        plans = list(topics)
        if not plans:
            return {}
        await self._ensure_started()
        names = sorted({plan.name for plan in plans})
        async with self.guard(f"reading the backlog of {len(names)} topic(s)", self._map):
            leader_of, partitions, end, start = await self._end_offsets(names)
            pairs = {
                (group_id(plan.name, sub), plan.name)
                for plan in plans
                if plan.name in partitions
                for sub in plan.subscriptions
            }
            committed = await self._committed_offsets(pairs, partitions)
            # The first waiting offset of every subscription on every partition with a backlog.
            waiting_from = {
                (group, topic, p): committed[(group, topic)].get(p, start.get((topic, p), 0))
                for group, topic in committed
                for p in partitions[topic]
                if (topic, p) in end
            }
            lagging = {
                (topic, p, offset)
                for (_group, topic, p), offset in waiting_from.items()
                if end[(topic, p)] > offset
            }
            stamps = await self._timestamps(leader_of, lagging)
        now_ms = time.time() * 1000
        result: dict[base.TopicPlan, base.TopicBacklog] = {}
        for plan in plans:
            parts = partitions.get(plan.name)
            if not parts or any((plan.name, p) not in end for p in parts):
                continue
            subs: dict[str, base.SubscriptionBacklog] = {}
            for sub in plan.subscriptions:
                offsets = committed.get((group_id(plan.name, sub), plan.name))
                if offsets is None:
                    continue
                group = group_id(plan.name, sub)
                waiting, oldest, known = 0, None, True
                for p in parts:
                    first = waiting_from[(group, plan.name, p)]
                    count = max(0, end[(plan.name, p)] - first)
                    waiting += count
                    if count:
                        stamp = stamps.get((plan.name, p, first))
                        known = known and stamp is not None
                        if stamp is not None:
                            oldest = stamp if oldest is None else min(oldest, stamp)
                age = max(0.0, now_ms - oldest) / 1000 if known and oldest is not None else None
                subs[sub] = base.SubscriptionBacklog(messages=waiting, oldest_age_seconds=age)
            published = sum(end[(plan.name, p)] for p in parts)
            result[plan] = base.TopicBacklog(published=published, subscriptions=subs)
        return result

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            await self._metadata([])

    # --- helpers ------------------------------------------------------------

    async def _request(self, request: Any, node_id: int | None = None) -> Any:
        # The admin client's own request path (connection handling, version
        # negotiation) for the two requests it has no method for.
        return await self._require_admin()._send_request(request, node_id)

    async def _metadata(self, topics: list[str]) -> dict[str, Any]:
        """Cluster metadata for `topics`, never auto-creating one by asking."""
        response = await self._request(MetadataRequest(topics, allow_auto_topic_creation=False))
        result: dict[str, Any] = response.to_object()
        return result

    async def _has_offsets(self, group: str, topic: str) -> bool:
        """Whether `group` has a committed offset on some partition of `topic`.

        aiokafka's `list_consumer_group_offsets` ignores the response's own error
        code: a coordinator still loading would read as "no offsets", i.e. drift.
        """
        coordinator = await self._require_admin().find_coordinator(group)
        response = await self._request(OffsetFetchRequest(group, None), coordinator)
        code = getattr(response, "error_code", _NO_ERROR)  # v2 and later
        if code == _GROUP_ID_NOT_FOUND:
            return False
        if code != _NO_ERROR:
            raise self._code_error(code, f"fetching the offsets of consumer group {group}", [])
        return any(
            name == topic and offset >= 0 and not error
            for name, partitions in response.topics
            for _partition, offset, _metadata, error in partitions
        )

    async def _groups_with_offsets(
        self, pairs: Collection[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """The (group, topic) pairs whose group has committed offsets on the topic."""
        limit = asyncio.Semaphore(GROUP_LOOKUP_CONCURRENCY)
        found: set[tuple[str, str]] = set()

        async def lookup(group: str, topic: str) -> None:
            async with limit:
                if await self._has_offsets(group, topic):
                    found.add((group, topic))

        await _each_pair(pairs, lookup)
        return found

    async def _end_offsets(
        self, names: list[str]
    ) -> tuple[PartitionOffsets, dict[str, list[int]], PartitionOffsets, PartitionOffsets]:
        """The leader of every led partition of `names`, each topic's led partitions, and
        every such partition's end and beginning offsets.

        Leaders come from the Metadata response, which can name a leader that does not
        know it yet (a topic created a moment ago) or no longer is one: such partitions
        are asked again, from fresh metadata, a few times; one still moving after that
        is left out, and its topic is read at the next round.
        """
        pause, attempts = 0.05, 1
        while True:
            metadata = await self._metadata(names)
            leaders: dict[int, dict[str, list[int]]] = {}
            leader_of: dict[tuple[str, int], int] = {}
            partitions: dict[str, list[int]] = {}
            for name in names:
                entry = _topic_meta(metadata, name)
                if entry is None:
                    continue
                for part in entry.get("partitions") or []:
                    if part.get("leader", -1) < 0:
                        continue
                    index = int(part["partition"])
                    leaders.setdefault(int(part["leader"]), {}).setdefault(name, []).append(index)
                    leader_of[(name, index)] = int(part["leader"])
                    partitions.setdefault(name, []).append(index)
            end, moving = await self._list_offsets(leaders, -1)
            start, moving_too = await self._list_offsets(leaders, -2)
            if not (moving or moving_too) or attempts == OFFSET_ATTEMPTS:
                # A partition read at one end only is not read at all.
                end = {key: offset for key, offset in end.items() if key in start}
                return leader_of, partitions, end, start
            await asyncio.sleep(pause)
            pause, attempts = min(pause * 2, 0.5), attempts + 1

    async def _list_offsets(
        self, leaders: dict[int, dict[str, list[int]]], at: int
    ) -> tuple[dict[tuple[str, int], int], bool]:
        """(topic, partition) -> offset: `at` -1 is the end, -2 the beginning; one
        request per partition leader. Also whether some partition was left out because
        its leadership is moving."""
        found: dict[tuple[str, int], int] = {}
        moving = False
        for leader, topics in sorted(leaders.items()):
            request = OffsetRequest(
                -1, 0, [(name, [(p, at) for p in parts]) for name, parts in topics.items()]
            )
            response = await self._request(request, leader)
            for name, parts in response.topics:
                for partition, code, *rest in parts:
                    if code in _LEADER_MOVING:
                        moving = True
                        continue
                    if code != _NO_ERROR:
                        raise self._code_error(code, f"listing the offsets of {name}", [])
                    # v1 and later: (timestamp, offset, ...); v0: ([offsets],)
                    offset = rest[1] if len(rest) >= 2 else (rest[0] or [0])[0]
                    found[(name, int(partition))] = int(offset)
        return found, moving

    async def _timestamps(
        self, leader_of: dict[tuple[str, int], int], wanted: Collection[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int]:
        """(topic, partition, offset) -> the timestamp (ms) of the record at that offset.

        A Fetch names a partition once, so subscriptions waiting at different offsets of
        one partition take one more request each; at most `TIMESTAMP_FETCH_PARTITIONS`
        partitions go in one request. A partition whose answer is an error (the offset
        gone by retention) or an incomplete batch is left out.
        """
        found: dict[tuple[str, int, int], int] = {}
        pending = sorted(wanted)
        while pending:
            requests: list[tuple[int, dict[tuple[str, int], int]]] = []
            later: list[tuple[str, int, int]] = []
            open_: dict[int, dict[tuple[str, int], int]] = {}
            for topic, p, offset in pending:
                leader = leader_of[(topic, p)]
                current = open_.get(leader)
                if current is not None and (topic, p) in current:
                    later.append((topic, p, offset))
                    continue
                if current is None or len(current) >= TIMESTAMP_FETCH_PARTITIONS:
                    current = open_[leader] = {}
                    requests.append((leader, current))
                current[(topic, p)] = offset
            for leader, asked in requests:
                topics: dict[str, list[tuple[int, int, int]]] = {}
                for (topic, p), offset in asked.items():
                    topics.setdefault(topic, []).append((p, offset, TIMESTAMP_FETCH_BYTES))
                request = FetchRequest(
                    0, 0, TIMESTAMP_FETCH_BYTES * len(asked), 0, list(topics.items())
                )
                response = await self._request(request, leader)
                for topic, parts in response.topics:
                    for p, code, _high, *rest in parts:
                        at = asked.get((topic, int(p)))
                        if code != _NO_ERROR or at is None or not rest:
                            continue
                        stamp = _timestamp_at(rest[-1], at)
                        if stamp is not None:
                            found[(topic, int(p), at)] = stamp
            pending = later
        return found

    async def _committed_offsets(
        self, pairs: Collection[tuple[str, str]], partitions: dict[str, list[int]]
    ) -> dict[tuple[str, str], dict[int, int]]:
        """(group, topic) -> partition -> committed offset (partitions without one left
        out), a few groups at a time, like `_groups_with_offsets`."""
        limit = asyncio.Semaphore(GROUP_LOOKUP_CONCURRENCY)
        found: dict[tuple[str, str], dict[int, int]] = {}

        async def lookup(group: str, topic: str) -> None:
            async with limit:
                coordinator = await self._require_admin().find_coordinator(group)
                request = OffsetFetchRequest(group, [(topic, partitions[topic])])
                response = await self._request(request, coordinator)
            code = getattr(response, "error_code", _NO_ERROR)
            if code not in (_NO_ERROR, _GROUP_ID_NOT_FOUND):
                raise self._code_error(code, f"fetching the offsets of consumer group {group}", [])
            offsets: dict[int, int] = {}
            for name, parts in response.topics if code == _NO_ERROR else []:
                for entry in parts:
                    partition, offset, error = entry[0], entry[1], entry[-1]
                    if name == topic and offset >= 0 and not error:
                        offsets[int(partition)] = int(offset)
            found[(group, topic)] = offsets

        await _each_pair(pairs, lookup)
        return found

    async def _wait_for_leaders(self, name: str, at_least: int = 1) -> int:
        """Wait a little for every partition to have a leader; a created topic needs a moment.

        A topic that stays without leaders is still being created, or is being
        deleted (a create then answers "already exists" while the topic is not
        listed): both pass, so the caller is told to retry.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(LEADER_WAIT, self._timeout)
        pause = 0.01  # leaders usually follow a create within milliseconds
        while True:
            metadata = await self._metadata([name])
            count = _partition_count(metadata, name)
            if count is not None and count >= at_least and _all_led(metadata, name):
                return count
            if loop.time() > deadline:
                raise errors.ProvisioningError(
                    f"{self.endpoint}: topic {name} has no partition leaders yet (being"
                    " created or deleted); retrying later",
                    retriable=True,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def _create_topic(self, topic: NewTopic) -> tuple[int, list[Any]]:
        """Create one topic, in one CreateTopics request with those asked for meanwhile.

        The controller handles one request at a time: three topics in three requests
        took three times as long as in one. The topics of a resource are ensured
        concurrently, so they reach here within a few milliseconds of each other.
        Returns the topic's error code and the rest of its result.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, list[Any]]] = loop.create_future()
        if not self._creating:
            loop.call_later(CREATE_LINGER, self._start_creates)
        self._creating.append((topic, future))
        return await future

    def _start_creates(self) -> None:
        self._create_task = asyncio.ensure_future(self._send_creates())

    async def _send_creates(self) -> None:
        batch, self._creating = self._creating, []
        try:
            response = await self._require_admin().create_topics([t for t, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        results = {name: (code, rest) for name, code, *rest in response.topic_errors}
        for topic, future in batch:
            if not future.done():
                future.set_result(results.get(topic.name, (_NO_ERROR, [])))

    async def _commit_new_topic_start(self, group: str, topic: str, partitions: int) -> None:
        """Commit offset 0 on every partition of a topic created just now, for `group`.

        Generation -1 and no member id is Kafka's commit for a group nobody
        consumes in: a group with live members refuses it, and keeps its offsets.
        """
        offsets = [(partition, 0, "") for partition in range(partitions)]
        request = OffsetCommitRequest(group, -1, "", -1, [(topic, offsets)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(LEADER_WAIT, self._timeout)
        pause = 0.05
        while True:
            # A fresh cluster creates its offsets topic on the first group's use: the
            # coordinator is "not available" or "loading" for a moment, which the
            # consumer this replaced waited out by itself.
            try:
                coordinator = await self._require_admin().find_coordinator(group)
                response = await self._request(request, coordinator)
                codes = [code for _topic, results in response.topics for _p, code in results]
            except (kafka_errors.CoordinatorNotAvailableError, kafka_errors.NotCoordinatorError):
                codes = [kafka_errors.CoordinatorNotAvailableError.errno]
            if any(code in _GROUP_IN_USE for code in codes):
                logger.info("consumer group %s on %s is active; not committing", group, topic)
                return
            failed = [code for code in codes if code != _NO_ERROR]
            if not failed:
                return
            if failed[0] not in _NEW_TOPIC_NOT_READY or loop.time() > deadline:
                raise self._code_error(
                    failed[0], f"committing the start offsets of consumer group {group}", []
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _commit_start_offsets(self, group: str, topic: str, partitions: int) -> None:
        offsets = await self._require_admin().list_consumer_group_offsets(group)
        committed = {
            tp.partition for tp, m in offsets.items() if tp.topic == topic and m.offset >= 0
        }
        missing = [TopicPartition(topic, p) for p in range(partitions) if p not in committed]
        if not missing:
            return
        consumer = AIOKafkaConsumer(
            group_id=group, enable_auto_commit=False, **self._client_options()
        )
        await consumer.start()
        try:
            consumer.assign(missing)
            start = await consumer.beginning_offsets(missing)
            try:
                await consumer.commit({tp: start[tp] for tp in missing})
            except (
                kafka_errors.CommitFailedError,
                kafka_errors.IllegalGenerationError,
                kafka_errors.UnknownMemberIdError,
                kafka_errors.RebalanceInProgressError,
            ):
                # The group has live members: they own its offsets; leave them be.
                logger.info("consumer group %s on %s is active; not committing", group, topic)
        finally:
            await consumer.stop()

    async def _delete_group(self, group: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(LEADER_WAIT, self._timeout)
        pause = 0.05
        while True:
            # Right after a broker restart the group's coordinator is loading for a
            # moment: wait that out, as for a new topic's start offsets.
            try:
                coordinator = await self._require_admin().find_coordinator(group)
                response = await self._request(DeleteGroupsRequest([group]), coordinator)
                codes = [code for _group, code in response.results]
            except (kafka_errors.CoordinatorNotAvailableError, kafka_errors.NotCoordinatorError):
                codes = [kafka_errors.CoordinatorNotAvailableError.errno]
            if not any(code in _COORDINATOR_NOT_READY for code in codes) or loop.time() > deadline:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
        for code in codes:
            if code == _NON_EMPTY_GROUP:
                # Consumers are still connected; Kafka drops the group's offsets on
                # its own once they leave (offsets.retention.minutes).
                logger.warning("consumer group %s on %s is in use; left", group, self.endpoint)
            elif code not in (_NO_ERROR, _GROUP_ID_NOT_FOUND):
                raise self._code_error(code, f"deleting consumer group {group}", [])

    def _code_error(self, code: int, what: str, rest: list[Any]) -> errors.DuctapeError:
        exc = kafka_errors.for_code(code)(*(str(r) for r in rest if r))
        return self._map(exc, what)

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side)."""
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


def _timestamp_at(data: bytes | None, offset: int) -> int | None:
    """The timestamp of the first record at or after `offset` in fetched record batches."""
    if not data:
        return None
    records = MemoryRecords(data)
    while True:
        batch = records.next_batch()
        if batch is None:
            return None
        for record in batch:
            if record.offset >= offset:
                return int(record.timestamp)


async def _each_pair(
    pairs: Collection[tuple[str, str]], lookup: Callable[[str, str], Coroutine[Any, Any, None]]
) -> None:
    """`lookup(group, topic)` for every pair, concurrently (each bounds itself).

    A failure cancels the lookups still running and is raised as it came, so the
    guard maps it like any other (not as an exception group).
    """
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            for group, topic in pairs:
                tasks.create_task(lookup(group, topic))
    except BaseExceptionGroup as failed:
        error = failed.exceptions[0]
    if error is not None:
        raise error  # outside the handler: its own cause and context stay


def _topic_meta(metadata: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in metadata.get("topics") or []:
        if entry.get("topic") == name and entry.get("error_code") == _NO_ERROR:
            return dict(entry)
    return None


def _partition_count(metadata: dict[str, Any], name: str) -> int | None:
    entry = _topic_meta(metadata, name)
    return None if entry is None else len(entry.get("partitions") or [])


def _large_enough(metadata: dict[str, Any], topic: base.TopicPlan) -> bool:
    """The topic exists with at least its declared partitions (more is not drift)."""
    count = _partition_count(metadata, topic.name)
    return count is not None and count >= (topic.partitions or 1)


def _all_led(metadata: dict[str, Any], name: str) -> bool:
    entry = _topic_meta(metadata, name)
    parts = (entry or {}).get("partitions") or []
    return bool(parts) and all(p.get("leader", -1) >= 0 and not p.get("error_code") for p in parts)
