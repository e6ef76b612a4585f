"""The NATS messaging transport on the stack's nats-server: publish with headers,
consume through a durable pull consumer, ack and nack, and ride through a restart of
a private server. Topics are provisioned by the operator side of the same package."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from ductape_operator import errors
from ductape_operator.brokers.nats import client as nats_client
from ductape_operator.brokers.nats.operator import NatsProvider
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_
from ductape_operator.providers import base
from tests.brokers.conftest import PrivateServer, nats_config, unique_topic

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]
OPTIONS = _transport.Options(retry_timeout=60.0)


def binding_for(url: str, plan: base.TopicPlan, location: base.TopicRoute) -> binding_.Binding:
    """The binding the operator would write, read the way an application reads it."""
    topics = {plan.tag: location.as_json()}
    return binding_.Binding(
        source="test",
        type="nats",
        entries={"type": "nats", "servers": url, "topics.json": json.dumps(topics)},
        topics={
            plan.tag: binding_.TopicRoute(
                tag=plan.tag, name=location.name, subscriptions=dict(location.subscriptions)
            )
        },
    )


@contextlib.asynccontextmanager
async def provisioned(url: str, plan: base.TopicPlan) -> AsyncIterator[binding_.Binding]:
    config, secrets = nats_config([url])
    async with NatsProvider(config, secrets) as provider:
        location = await provider.ensure_topic(plan)
        try:
            yield binding_for(url, plan, location)
        finally:
            with contextlib.suppress(errors.DuctapeError):
                await provider.delete_topic(plan)


@contextlib.asynccontextmanager
async def started_transport(
    url: str, plan: base.TopicPlan, options: _transport.Options = OPTIONS
) -> AsyncIterator[tuple[binding_.Binding, nats_client.NatsTransport, binding_.TopicRoute]]:
    """The topic provisioned on `url`, a started transport to it, and the topic's route;
    the transport closed and the topic deleted after."""
    async with provisioned(url, plan) as binding:
        transport = nats_client.make_transport(binding, options)
        await transport.start()
        try:
            yield binding, transport, binding.topic(plan.tag)
        finally:
            await transport.aclose()


async def collect(
    consumer: _transport.Consumer, count: int, timeout: float = 60.0
) -> list[message_.Message]:
    got: list[message_.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"received {len(got)} of {count} messages in {timeout:.0f}s")
        got += await consumer.fetch(count - len(got), 1.0)
    return got


async def test_publishes_and_consumes_20_messages_with_headers(nats_env: dict[str, str]) -> None:
    plan = unique_topic()
    async with started_transport(nats_env["NATS_URL"], plan) as (binding, transport, route):
        sent = [
            message_.OutgoingMessage.build(
                {"n": n}, key=f"k{n}", headers={"trace": f"t{n}", "Tenant": "acme"}
            )
            for n in range(20)
        ]
        await transport.publish(route, sent)
        for sub in plan.subscriptions:
            consumer = transport.consumer(route, sub, binding.subscription(plan.tag, sub), OPTIONS)
            await consumer.start()
            got = await collect(consumer, 20)
            assert [m.json() for m in got] == [{"n": n} for n in range(20)]
            assert [m.id for m in got] == [m.id for m in sent]
            assert [m.headers for m in got] == [
                {"trace": f"t{n}", "Tenant": "acme"} for n in range(20)
            ]
            assert [m.key for m in got] == [f"k{n}" for n in range(20)]
            assert {m.content_type for m in got} == {message_.JSON}
            assert {m.delivery_count for m in got} == {1}
            for m in got:
                await consumer.settle(m, ack=True, requeue=False)
            await consumer.aclose()
            # Acked: nothing comes back within a redelivery round.
            again = transport.consumer(route, sub, binding.subscription(plan.tag, sub), OPTIONS)
            await again.start()
            assert await again.fetch(20, 1.0) == []
            await again.aclose()


async def test_nack_requeues_or_drops(nats_env: dict[str, str]) -> None:
    plan = unique_topic(subscriptions=("billing",))
    async with started_transport(nats_env["NATS_URL"], plan) as (_, transport, route):
        await transport.publish(route, [message_.OutgoingMessage.build(b"again")])
        await transport.publish(route, [message_.OutgoingMessage.build(b"dropped")])
        consumer = transport.consumer(route, "billing", "billing", OPTIONS)
        await consumer.start()
        first = await collect(consumer, 2)
        by_data = {m.data: m for m in first}
        await consumer.settle(by_data[b"again"], ack=False, requeue=True)
        await consumer.settle(by_data[b"dropped"], ack=False, requeue=False)
        [back] = await collect(consumer, 1)
        assert back.data == b"again" and back.delivery_count == 2
        await consumer.settle(back, ack=True, requeue=False)
        assert await consumer.fetch(10, 1.0) == []
        await consumer.aclose()


async def test_a_batch_past_the_in_flight_window_is_stored_once_in_order(
    nats_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small window (nats-py's own in-flight limit is set from it at connect): a
    # publish that did not wait for the oldest ack past it would block in nats-py.
    monkeypatch.setattr(nats_client, "WINDOW", 16)
    plan = unique_topic(subscriptions=("billing",))
    async with started_transport(nats_env["NATS_URL"], plan) as (_, transport, route):
        sent = [message_.OutgoingMessage.build(f"m{n}") for n in range(100)]
        await asyncio.wait_for(transport.publish(route, sent), 30)
        # Sent again (as a retry after a lost connection would): the server keeps one.
        await asyncio.wait_for(transport.publish(route, sent[:20]), 30)
        consumer = transport.consumer(route, "billing", "billing", OPTIONS)
        await consumer.start()
        got = await collect(consumer, 100)
        assert [m.id for m in got] == [m.id for m in sent]
        assert await consumer.fetch(10, 1.0) == [], "the resent 20 were not stored again"
        await consumer.ack_many(got)
        await consumer.aclose()


async def test_unprovisioned_topic_and_subscription_are_named(nats_env: dict[str, str]) -> None:
    plan = unique_topic(subscriptions=("billing",))
    location = base.TopicRoute(tag=plan.tag, name=plan.name, subscriptions={"billing": "billing"})
    binding = binding_for(nats_env["NATS_URL"], plan, location)
    transport = nats_client.make_transport(binding, OPTIONS)
    await transport.start()
    try:
        route = binding.topic(plan.tag)
        started = time.monotonic()
        with pytest.raises(errors.ProvisioningError, match=r"is topic .* provisioned"):
            await transport.publish(route, [message_.OutgoingMessage.build(b"x")])
        with pytest.raises(errors.ProvisioningError, match=r"is subscription .* provisioned"):
            await transport.consumer(route, "billing", "billing", OPTIONS).start()
        assert time.monotonic() - started < 30  # not retried as if the server were down
    finally:
        await transport.aclose()


async def test_rides_through_a_server_restart(private_server: PrivateServer) -> None:
    plan = unique_topic(subscriptions=("billing",))
    async with started_transport(private_server.url, plan) as (_, transport, route):
        consumer = transport.consumer(route, "billing", "billing", OPTIONS)
        await consumer.start()
        await transport.publish(route, [message_.OutgoingMessage.build(b"before")])
        [held] = await collect(consumer, 1)  # delivered, not acked across the restart
        await private_server.astop()
        # The outage itself lasts 2 s (not a wait for a condition): the publish
        # below must ride through it.
        restart = asyncio.create_task(asyncio.sleep(2))
        publishing = asyncio.create_task(
            transport.publish(route, [message_.OutgoingMessage.build(b"during")])
        )
        await restart
        await private_server.astart()
        await publishing  # retried until the server was back
        got = await collect(consumer, 1)
        datas = [m.data for m in got]
        for m in got:
            await consumer.settle(m, ack=True, requeue=False)
        # The held message comes back (nacked now, on the new connection) as well.
        await consumer.settle(held, ack=False, requeue=True)
        rest = await collect(consumer, 1 if b"during" in datas else 2)
        datas += [m.data for m in rest]
        assert sorted(set(datas)) == [b"before", b"during"]
        for m in rest:
            await consumer.settle(m, ack=True, requeue=False)
        await consumer.aclose()


async def test_a_server_that_stays_away_fails_after_the_retry_timeout(
    private_server: PrivateServer,
) -> None:
    plan = unique_topic(subscriptions=())
    short = _transport.Options(retry_timeout=2.0)
    async with started_transport(private_server.url, plan, short) as (_, transport, route):
        try:
            await private_server.astop()
            started = time.monotonic()
            with pytest.raises(errors.BrokerUnreachableError):
                await transport.publish(route, [message_.OutgoingMessage.build(b"lost")])
            assert time.monotonic() - started < 15
        finally:
            await private_server.astart()
