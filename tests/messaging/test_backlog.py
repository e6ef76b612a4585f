"""Backlog figures (the providers' `backlog()`) and the client's metrics, on real brokers.

The messages are published and consumed with the messaging client, as an
application would; the figures are read the way the operator reads them, with
the provider of the topic's broker (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import asyncio
import pathlib
import time

import prometheus_client
import pytest

from ductape_operator import providers
from ductape_operator.messaging import Broker
from ductape_operator.messaging import metrics as client_metrics
from ductape_operator.providers import base
from tests.messaging import stack
from tests.messaging.test_client import DEADLINE, REDELIVERY, broker_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

#: Providers whose broker counts what was published to a topic.
COUNTS_PUBLISHES = {"kafka", "redis", "nats"}
#: Providers that give the oldest waiting message's age.
GIVES_AGE = {"kafka", "redis"}
#: Providers with no backlog reading (Pub/Sub: only Cloud Monitoring has it).
NO_BACKLOG = {"google-pubsub"}


async def read(topic: stack.Provisioned) -> base.TopicBacklog | None:
    provider = providers.build_provider(stack.TYPES[topic.kind], *stack.config(topic.kind))
    async with provider:
        return (await provider.backlog([topic.plan])).get(topic.plan)


async def wait_for(
    topic: stack.Provisioned, billing: int, shipping: int, *, deadline: float = DEADLINE
) -> base.TopicBacklog:
    """Poll the reading until both subscriptions show the expected backlog."""
    end = time.monotonic() + deadline
    while True:
        reading = await read(topic)
        assert reading is not None, "the topic has no reading"
        seen = {sub: found.messages for sub, found in reading.subscriptions.items()}
        if seen == {"billing": billing, "shipping": shipping}:
            return reading
        assert time.monotonic() < end, f"backlog {seen}, expected {billing} / {shipping}"
        await asyncio.sleep(0.5)  # the polling interval of a condition with a deadline


async def consume(broker: Broker, subscription: str, count: int) -> None:
    """Receive and ack `count` messages, then close the subscription (what it held but did
    not ack goes back to the broker)."""
    async with broker.subscribe("orders", subscription, prefetch=1) as sub:
        for _ in range(count):
            message = await sub.receive(timeout=DEADLINE)
            assert message is not None, f"fewer than {count} messages on {subscription}"
            await message.ack()


async def test_backlog_counts_what_is_not_acked_per_subscription(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    if topic.kind in NO_BACKLOG:
        assert await read(topic) is None, "Pub/Sub's backlog is absent, not a guess"
        return
    before = await wait_for(topic, 0, 0)
    async with broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker:
        await broker.publish_many("orders", [{"n": n} for n in range(7)])
        await consume(broker, "billing", 3)
        reading = await wait_for(topic, 4, 7)
        if topic.kind in COUNTS_PUBLISHES:
            assert before.published is not None and reading.published is not None
            assert reading.published - before.published == 7
        else:
            assert reading.published is None
        ages = {sub: found.oldest_age_seconds for sub, found in reading.subscriptions.items()}
        if topic.kind in GIVES_AGE:
            assert all(age is not None and 0 <= age < 120 for age in ages.values()), ages
        else:
            assert ages == {"billing": None, "shipping": None}
        await consume(broker, "billing", 4)
        await consume(broker, "shipping", 7)
        done = await wait_for(topic, 0, 0)
        assert all(found.oldest_age_seconds is None for found in done.subscriptions.values())


def sample(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_client_metrics_count_what_the_application_did(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    registry = prometheus_client.CollectorRegistry()
    assert client_metrics.enable(registry)
    try:
        async with broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker:
            await broker.publish_many("orders", [{"n": n} for n in range(5)])
            for n in range(5, 10):
                await broker.publish("orders", {"n": n})
            acked = nacked = 0
            async with broker.subscribe("orders", "billing") as sub:
                end = time.monotonic() + DEADLINE
                while acked < 8:
                    assert time.monotonic() < end, f"acked {acked}, nacked {nacked}"
                    message = await sub.receive(timeout=DEADLINE)
                    assert message is not None
                    if nacked < 2 and message.json()["n"] % 4 == 1:
                        await message.nack(requeue=nacked == 0)
                        nacked += 1
                    else:
                        await message.ack()
                        acked += 1
        labels = {"topic": "orders", "subscription": "billing"}
        assert sample(registry, "ductape_client_messages_published_total", topic="orders") == 10
        assert (
            sample(registry, "ductape_client_publish_duration_seconds_count", topic="orders") == 6
        )
        assert sample(registry, "ductape_client_messages_acked_total", **labels) == 8
        assert sample(registry, "ductape_client_messages_nacked_total", **labels) == 2
        assert sample(registry, "ductape_client_messages_dead_lettered_total", **labels) == 1
        assert sample(registry, "ductape_client_ack_delay_seconds_count", **labels) == 8
        assert sample(registry, "ductape_client_messages_delivered_total", **labels) >= 10
        assert (
            sample(
                registry,
                "ductape_client_messages_acked_total",
                topic="orders",
                subscription="shipping",
            )
            == 0
        )
    finally:
        client_metrics.disable()
    assert registry.get_sample_value("ductape_client_messages_acked_total", labels) is None
