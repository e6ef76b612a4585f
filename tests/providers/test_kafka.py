"""Kafka specifics: partition counts and the consumer groups' committed offsets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider
from tests.providers import raw
from tests.providers.conftest import stack_config, unique_topic

KAFKA = models.MessageBrokerTypes.KAFKA


@pytest.fixture
async def kafka(stack: dict[str, str]) -> AsyncIterator[base.Provider]:
    config, secrets = stack_config(KAFKA, stack)
    async with build_provider(KAFKA, config, secrets) as provider:
        yield provider


@contextlib.asynccontextmanager
async def cleanup(provider: base.Provider, plan: base.TopicPlan) -> AsyncIterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(errors.DuctapeError):
            await provider.delete_topic(plan)


async def test_more_partitions_declared_grows_the_topic(
    stack: dict[str, str], kafka: base.Provider
) -> None:
    plan = unique_topic(partitions=1)
    async with cleanup(kafka, plan):
        await kafka.ensure_topic(plan)
        grown = base.TopicPlan(plan.tag, plan.name, plan.subscriptions, partitions=3)
        assert not await kafka.topic_exists(grown)  # fewer partitions than declared: drift
        await kafka.ensure_topic(grown)
        seen = await raw.observe(KAFKA, stack, grown)
        assert seen.partitions == 3
        # The groups got start offsets for the new partitions too.
        for group in seen.committed.values():
            assert group == {0, 1, 2}
        assert await kafka.topic_exists(grown)


async def test_fewer_partitions_declared_is_left_alone(
    stack: dict[str, str], kafka: base.Provider
) -> None:
    plan = unique_topic(partitions=1)
    async with cleanup(kafka, plan), raw.kafka_admin(stack) as admin:
        await admin.create_topics([NewTopic(plan.name, 4, 1)])
        await kafka.ensure_topic(plan)
        assert (await raw.observe(KAFKA, stack, plan)).partitions == 4
        assert await kafka.topic_exists(plan)


async def test_an_existing_group_is_never_rewound(
    stack: dict[str, str], kafka: base.Provider
) -> None:
    plan = unique_topic(subscriptions=("billing",))
    async with cleanup(kafka, plan), raw.kafka_admin(stack) as admin:
        location = await kafka.ensure_topic(plan)
        group = location.subscriptions["billing"]
        producer = AIOKafkaProducer(bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"])
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(plan.name, b"x")
        finally:
            await producer.stop()
        # A consumer of the group has read two of them and committed.
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"],
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tp = TopicPartition(plan.name, 0)
            consumer.assign([tp])
            await consumer.commit({tp: OffsetAndMetadata(2, "")})
        finally:
            await consumer.stop()
        await kafka.ensure_topic(plan)
        offsets = await admin.list_consumer_group_offsets(group)
        assert offsets[TopicPartition(plan.name, 0)].offset == 2


#: Topics created and read at once, each by a provider of its own as in a test of the
#: backlog. Before the reading asked again, about one read in a hundred and fifty met a
#: leader that did not know it yet (NotLeaderForPartitionError): rare, so many topics.
FRESH_TOPICS = 40


async def test_a_backlog_read_right_after_creating_the_topic_succeeds(
    stack: dict[str, str],
) -> None:
    config, secrets = stack_config(KAFKA, stack)
    for _ in range(FRESH_TOPICS):
        plan = unique_topic(partitions=3)
        async with build_provider(KAFKA, config, secrets) as kafka, cleanup(kafka, plan):
            await kafka.ensure_topic(plan)
            reading = (await kafka.backlog([plan])).get(plan)
            assert reading is not None, f"no backlog reading for {plan.name}"
            assert reading.published == 0
            waiting = {sub: found.messages for sub, found in reading.subscriptions.items()}
            assert waiting == dict.fromkeys(plan.subscriptions, 0)
