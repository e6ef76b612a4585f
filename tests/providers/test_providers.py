"""Every provider against its real broker of the local stack, one suite for all five.

Each test checks what the provider did with a raw SDK client (`raw`), never
with the provider itself, and every name is unique so that other tests and
engineers sharing the brokers are not disturbed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider
from tests.providers import raw
from tests.providers.conftest import TYPES, stack_config, unique_topic

T = models.MessageBrokerTypes
pytestmark = pytest.mark.parametrize("type_", TYPES, ids=[t.value for t in TYPES])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll `check` until it holds; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {timeout}s")
        await asyncio.sleep(0.2)


def expected_location(type_: T, plan: base.TopicPlan, location: base.TopicRoute) -> None:
    """The location's names follow README.md, "The connection Secret"."""
    assert set(location.subscriptions) == set(plan.subscriptions)
    for sub, physical in location.subscriptions.items():
        if type_ is T.REDIS or type_ is T.NATS:
            assert physical == sub
        elif type_ is T.AWS_SQS:
            assert physical.endswith("/" + raw.sqs_queue(plan.name, sub)), physical
        else:
            assert physical == f"{plan.name}.{sub}"
    if type_ is T.AWS_SQS:
        if plan.subscriptions:
            assert location.name is None
        else:
            assert str(location.name).endswith("/" + raw.sqs_queue(plan.name))
    else:
        assert location.name == plan.name


async def assert_provisioned(
    type_: T, env: dict[str, str], plan: base.TopicPlan, location: base.TopicRoute
) -> None:
    seen = await raw.observe(type_, env, plan)
    assert seen.topic, f"{plan.name} missing on the broker"
    wanted = set(location.subscriptions.values())
    assert seen.subscriptions == wanted, (seen.subscriptions, wanted)
    if type_ is T.KAFKA:
        assert seen.partitions == (plan.partitions or 1)
        for group in wanted:
            assert seen.committed[group] == set(range(seen.partitions)), seen.committed
    if type_ is T.RABBITMQ:
        assert seen.declared_as_wanted, (
            "exchange not a durable topic exchange, or queue not durable"
        )


async def test_ensure_is_idempotent_and_real(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic(partitions=2 if type_ is T.KAFKA else None)
    plans.append(plan)
    first = await provider.ensure_topic(plan)
    second = await provider.ensure_topic(plan)
    assert first == second
    expected_location(type_, plan, first)
    await assert_provisioned(type_, stack, plan, first)
    assert await provider.topic_exists(plan)


async def test_topic_without_subscriptions(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic(subscriptions=())
    plans.append(plan)
    location = await provider.ensure_topic(plan)
    expected_location(type_, plan, location)
    await assert_provisioned(type_, stack, plan, location)
    assert await provider.topic_exists(plan)


async def test_adopts_what_exists(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    plans.append(plan)
    await raw.create(type_, stack, plan)
    location = await provider.ensure_topic(plan)
    expected_location(type_, plan, location)
    await assert_provisioned(type_, stack, plan, location)


async def test_drift_is_seen_and_repaired(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    plans.append(plan)
    location = await provider.ensure_topic(plan)
    assert await provider.topic_exists(plan)
    await raw.delete(type_, stack, plan)

    async def gone() -> bool:
        return not await provider.topic_exists(plan)

    await eventually(gone)  # Kafka deletes asynchronously
    if type_ is T.KAFKA:
        await eventually(lambda: _kafka_topic_absent(stack, plan.name))

    async def repaired() -> bool:
        try:
            return await provider.ensure_topic(plan) == location
        except errors.ProvisioningError as exc:  # Kafka: "marked for deletion" for a moment
            assert exc.retriable, exc
            return False

    await eventually(repaired)
    assert await provider.topic_exists(plan)
    await assert_provisioned(type_, stack, plan, location)


async def _kafka_topic_absent(env: dict[str, str], name: str) -> bool:
    async with raw.kafka_admin(env) as admin:
        return name not in await admin.list_topics()


async def test_delete_is_idempotent(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    await provider.ensure_topic(plan)
    await provider.delete_topic(plan)
    await provider.delete_topic(plan)

    async def gone() -> bool:
        seen = await raw.observe(type_, stack, plan)
        return not seen.topic and not seen.subscriptions

    await eventually(gone)
    assert not await provider.topic_exists(plan)


async def test_delete_subscription(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    plans.append(plan)
    location = await provider.ensure_topic(plan)
    await provider.delete_subscription(plan, "billing")
    await provider.delete_subscription(plan, "billing")
    seen = await raw.observe(type_, stack, plan)
    assert seen.topic
    assert seen.subscriptions == {location.subscriptions["shipping"]}
    assert not await provider.topic_exists(plan)
    kept = base.TopicPlan(tag=plan.tag, name=plan.name, subscriptions=("shipping",))
    assert await provider.topic_exists(kept)


async def test_probe_of_a_live_broker_answers_within_its_timeout(
    type_: T, provider: base.Provider
) -> None:
    timeout = 5.0
    began = time.monotonic()
    await provider.probe(timeout)  # raises BrokerUnreachableError when it does not answer
    assert time.monotonic() - began < timeout


async def test_probe_of_a_dead_broker_fails_in_time(type_: T, stack: dict[str, str]) -> None:
    config, secrets = stack_config(type_, stack, dead=True)
    dead = build_provider(type_, config, secrets)
    timeout = 3.0
    began = time.monotonic()
    with pytest.raises(errors.BrokerUnreachableError) as caught:
        await dead.probe(timeout)
    assert time.monotonic() - began < timeout + 2.0
    assert "127.0.0.1:1" in caught.value.message
    for value in secrets.values.values():
        assert value not in caught.value.message
    await dead.aclose()


async def test_binding_connects_and_delivers(
    type_: T, stack: dict[str, str], provider: base.Provider, plans: list[base.TopicPlan]
) -> None:
    plan = unique_topic()
    plans.append(plan)
    location = await provider.ensure_topic(plan)
    entries = {"type": type_.binding_type, **provider.binding()}
    payload = f"hello-{uuid.uuid4().hex}".encode()
    await raw.publish(entries, location, payload)
    for sub in plan.subscriptions:
        assert await raw.receive(entries, location, sub) == [payload], sub
