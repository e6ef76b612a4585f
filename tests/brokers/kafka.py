"""The raw Kafka kit (see `tests/brokers/__init__.py`): aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from ductape_operator.providers import base
from tests.brokers import Observed, QueueSettings


@contextlib.asynccontextmanager
async def admin(env: Mapping[str, str]) -> AsyncIterator[Any]:
    client = AIOKafkaAdminClient(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], request_timeout_ms=10000
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    name = plan.name
    groups = [base.default_subscription_name(name, s) for s in plan.subscriptions]
    async with admin(env) as client:
        topics = await client.describe_topics([name])
        entry = next((t for t in topics if t["topic"] == name and not t["error_code"]), None)
        committed: dict[str, set[int]] = {}
        for group in groups:
            offsets = await client.list_consumer_group_offsets(group)
            committed[group] = {
                tp.partition for tp, m in offsets.items() if tp.topic == name and m.offset >= 0
            }
    return Observed(
        topic=entry is not None,
        subscriptions={g for g, parts in committed.items() if parts},
        partitions=len(entry["partitions"]) if entry else None,
        committed=committed,
    )


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with admin(env) as client:
        await client.create_topics([NewTopic(plan.name, plan.partitions or 1, 1)])


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with admin(env) as client:
        await client.delete_topics([plan.name])


async def exists(env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]) -> bool:
    async with admin(env) as client:
        if name not in await client.list_topics():
            return False
        for group in subscriptions.values():
            if not await client.list_consumer_group_offsets(group):
                return False
        return True


async def delete_out_of_band(
    env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]
) -> None:
    async with admin(env) as client:
        await client.delete_topics([name])


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=entries["bootstrap-servers"])
    await producer.start()
    try:
        await producer.send_and_wait(str(name), payload)
    finally:
        await producer.stop()


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    # auto_offset_reset="latest": a message published before this consumer joined is
    # seen only if the operator committed the group's start offsets at provisioning.
    consumer = AIOKafkaConsumer(
        str(name),
        bootstrap_servers=entries["bootstrap-servers"],
        group_id=physical,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    deadline = asyncio.get_running_loop().time() + timeout
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=int(timeout * 1000))
        while not batches and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
        out = [r.value for records in batches.values() for r in records]
        if out:
            await consumer.commit()
        return out
    finally:
        await consumer.stop()


async def read_settings(
    env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """The topic's `retention.ms` override (key None: the topic)."""
    async with admin(env) as client:
        (response,) = await client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, plan.name)]
        )
        configs = response.resources[0][4]
        value = next((e[1] for e in configs if e[0] == "retention.ms" and e[3] == 1), None)
    return {None: QueueSettings(None if value is None else int(value) // 1000)}
