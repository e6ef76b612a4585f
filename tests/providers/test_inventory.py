"""`inventory()` of every provider against its real broker of the local stack.

The inventory is drift detection for a whole endpoint in one listing (or one
pipelined batch): it must say exactly which of the declared topics exist with
every subscription, agreeing with `topic_exists` one topic at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider
from tests.providers.conftest import TYPES, stack_config, unique_topic

T = models.MessageBrokerTypes
each_type = pytest.mark.parametrize("type_", TYPES, ids=[t.value for t in TYPES])


def never_created(prefix: str = "ductape.t") -> base.TopicPlan:
    """A plan nobody provisions; `prefix` decides whether it shares the others' prefix."""
    suffix = uuid.uuid4().hex[:12]
    return base.TopicPlan(tag=f"n-{suffix}", name=f"{prefix}{suffix}", subscriptions=("billing",))


async def one_by_one(
    provider: base.Provider, topics: list[base.TopicPlan]
) -> frozenset[base.TopicPlan]:
    return frozenset([topic for topic in topics if await provider.topic_exists(topic)])


@each_type
async def test_inventory_is_exactly_what_exists(
    type_: T, provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    first = unique_topic(partitions=2 if type_ is T.KAFKA else None)
    second = unique_topic(subscriptions=("audit",))
    bare = unique_topic(subscriptions=())
    created = [first, second, bare]
    plans.extend(created)
    for plan in created:
        await provider.ensure_topic(plan)
    missing = never_created()
    declared = [*created, missing]

    assert await provider.inventory(declared) == frozenset(created)
    assert await provider.inventory(declared) == await one_by_one(provider, declared)
    # A prefix shared with nothing else (SQS lists every queue then).
    elsewhere = never_created(prefix="zz-elsewhere-")
    assert await provider.inventory([*created, elsewhere]) == frozenset(created)
    # Only a subset asked: only that subset answered.
    assert await provider.inventory([second, missing]) == frozenset({second})

    # One subscription of one topic goes out of band: that topic, and only it, drops out.
    await provider.delete_subscription(first, "billing")
    assert await provider.inventory(declared) == frozenset({second, bare})
    assert await provider.inventory(declared) == await one_by_one(provider, declared)
    # The same topic declared without that subscription is whole again.
    narrowed = dataclasses.replace(first, subscriptions=("shipping",))
    assert await provider.inventory([narrowed, *declared]) == frozenset({narrowed, second, bare})


@each_type
async def test_an_undeclared_subscription_is_missing(
    type_: T, provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    plans.append(plan)
    await provider.ensure_topic(plan)
    wider = dataclasses.replace(plan, subscriptions=(*plan.subscriptions, "never"))
    assert await provider.inventory([plan, wider]) == frozenset({plan})


@each_type
async def test_empty_inventory(type_: T, provider: base.Provider) -> None:
    assert await provider.inventory([]) == frozenset()
    assert await provider.inventory(()) == frozenset()


@each_type
async def test_inventory_starts_the_provider_and_runs_beside_other_operations(
    type_: T, stack: dict[str, str]
) -> None:
    config, secrets = stack_config(type_, stack)
    provider = build_provider(type_, config, secrets)  # not started: inventory starts it
    plan = unique_topic()
    try:
        await provider.ensure_topic(plan)
        async with asyncio.timeout(60):
            results = await asyncio.gather(
                *(provider.inventory([plan]) for _ in range(20)),
                *(provider.topic_exists(plan) for _ in range(20)),
            )
        assert results[:20] == [frozenset({plan})] * 20
        assert all(results[20:])
    finally:
        with contextlib.suppress(errors.DuctapeError):
            await provider.delete_topic(plan)
        await provider.aclose()


@pytest.mark.parametrize("type_", [T.KAFKA], ids=[T.KAFKA.value])
async def test_kafka_fewer_partitions_than_declared_is_missing(
    type_: T, provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic(partitions=2)
    plans.append(plan)
    await provider.ensure_topic(plan)
    fewer = dataclasses.replace(plan, partitions=1)
    more = dataclasses.replace(plan, partitions=3)
    assert await provider.inventory([plan, fewer, more]) == frozenset({plan, fewer})
