"""RabbitMQ's pooled channels and pipelined declarations, on the real broker.

Operations share a few long-lived channels, and a topic's declarations go out
without waiting for each answer (the module docstring of
`ductape_operator.brokers.rabbitmq.operator`). What must hold: a declaration the
broker refuses fails its own topic only, with the broker's reason naming it, and
the channel it closed is never handed to another operation; waiting for one of
the provider's own slots never reads as the broker being down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from ductape_operator import errors, models
from ductape_operator.brokers.rabbitmq import operator as rabbitmq
from ductape_operator.providers import base, build_provider
from tests.providers.conftest import stack_config, unique_topic
from tests.providers.test_reconnect import close_all_connections

RABBITMQ = models.MessageBrokerTypes.RABBITMQ


@pytest.fixture
async def amqp(stack: dict[str, str]) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel of our own, to set the broker up as someone else left it."""
    connection = await aio_pika.connect(stack["AMQP_URL"])
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def test_a_refused_declaration_fails_its_own_topic_only(
    stack: dict[str, str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    plans = [unique_topic() for _ in range(60)]
    # Exchanges of another type: the broker refuses the topic exchange and closes
    # the channel, in the middle of the others' declarations on the same pool.
    refused = {plans[5], plans[30], plans[59]}
    for plan in refused:
        await amqp.declare_exchange(plan.name, aio_pika.ExchangeType.FANOUT, durable=True)
    # A queue with other arguments is refused too, then adopted as it is.
    adopted = plans[17]
    held = rabbitmq.queue_name(adopted.name, adopted.subscriptions[0])
    await amqp.declare_queue(held, durable=True, arguments={"x-max-length": 10})
    config, secrets = stack_config(RABBITMQ, stack)
    try:
        async with build_provider(RABBITMQ, config, secrets) as provider:
            outcomes = await asyncio.gather(
                *(provider.ensure_topic(plan) for plan in plans), return_exceptions=True
            )
            for plan, outcome in zip(plans, outcomes, strict=True):
                if plan in refused:
                    assert isinstance(outcome, errors.ProvisioningError), repr(outcome)
                    assert not outcome.retriable
                    assert plan.name in outcome.message
                    assert "PRECONDITION_FAILED" in outcome.message
                else:
                    assert isinstance(outcome, base.TopicRoute), repr(outcome)
                    assert outcome.name == plan.name
            fine = [plan for plan in plans if plan not in refused]
            assert await provider.inventory(plans) == frozenset(fine)
            # The channels the broker closed were dropped, not handed out again:
            # the same provider keeps working, over and over.
            for _ in range(3):
                again = await asyncio.gather(*(provider.ensure_topic(plan) for plan in fine))
                assert [route.name for route in again] == [plan.name for plan in fine]
                assert await provider.inventory(plans) == frozenset(fine)
            assert await provider.topic_exists(fine[0])
            assert not await provider.topic_exists(unique_topic())
            await provider.probe(5)
            for plan in fine:
                await provider.delete_topic(plan)
            assert await provider.inventory(plans) == frozenset()
    finally:
        for plan in refused:
            await amqp.exchange_delete(plan.name)
        await amqp.queue_delete(held)


async def test_waiting_for_a_slot_of_our_own_is_not_an_outage(stack: dict[str, str]) -> None:
    """One slot and a 1.5 s timeout for 600 topics: the queue on our side takes longer
    than the timeout (200 took 1.4 s on a quiet machine: too few), and still nothing is
    reported as unreachable."""
    config, secrets = stack_config(RABBITMQ, stack)
    timeout = 1.5
    plans = [unique_topic() for _ in range(600)]
    provider = rabbitmq.RabbitMQProvider(config, secrets, timeout=timeout, concurrency=1)
    # An inventory is one operation under one timeout: the checker has the usual one.
    checker = build_provider(RABBITMQ, config, secrets)
    async with provider, checker:
        started = time.monotonic()
        routes = await asyncio.gather(*(provider.ensure_topic(plan) for plan in plans))
        elapsed = time.monotonic() - started
        assert [route.name for route in routes] == [plan.name for plan in plans]
        assert elapsed > timeout, "too fast to show that a slot's wait is not timed"
        assert await checker.inventory(plans) == frozenset(plans)
        await asyncio.gather(*(provider.delete_topic(plan) for plan in plans))
        assert await checker.inventory(plans) == frozenset()


async def test_an_inventory_cut_off_by_the_broker_fails_as_one_broker_error(
    stack: dict[str, str],
) -> None:
    """The inventory's lookups run a few at once; when the broker drops the connection
    under them, the listing fails with the project's error (not a group of them), and
    the next listing, on a reopened connection, is exact."""
    config, secrets = stack_config(RABBITMQ, stack)
    plans = [unique_topic(subscriptions=("billing",)) for _ in range(300)]
    async with build_provider(RABBITMQ, config, secrets) as provider:
        await asyncio.gather(*(provider.ensure_topic(plan) for plan in plans))
        missing = unique_topic()
        listing = asyncio.create_task(provider.inventory([*plans, missing]))
        await asyncio.to_thread(close_all_connections)
        try:
            outcome: object = await listing
        except errors.DuctapeError as exc:
            outcome = exc
        # Finished before the close (then exact), or cut off by it: never half a listing.
        assert outcome == frozenset(plans) or isinstance(outcome, errors.BrokerError), outcome
        assert await provider.inventory([*plans, missing]) == frozenset(plans)
        await asyncio.gather(*(provider.delete_topic(plan) for plan in plans))
