"""The NATS provider against the stack's nats-server, checked with a raw nats-py client:
provisioning, adoption, drift, Retain and Delete, settings, backlog, probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats.js.errors as js_errors
import pytest
from nats.js import JetStreamContext, api

from ductape_operator import errors
from ductape_operator.brokers.nats import entries
from ductape_operator.brokers.nats.operator import NatsProvider
from ductape_operator.providers import base
from tests.brokers.conftest import PrivateServer, nats_config, unique_topic
from tests.messaging import outage

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]


@pytest.fixture
async def provider(nats_env: dict[str, str]) -> AsyncIterator[NatsProvider]:
    config, secrets = nats_config(
        [nats_env["NATS_URL"]],
        username=nats_env["NATS_USERNAME"],
        password=nats_env["NATS_PASSWORD"],
    )
    async with NatsProvider(config, secrets) as started:
        yield started


@pytest.fixture
async def plans(provider: NatsProvider) -> AsyncIterator[list[base.TopicPlan]]:
    created: list[base.TopicPlan] = []
    yield created
    for plan in created:
        with contextlib.suppress(errors.DuctapeError):
            await provider.delete_topic(plan)


async def stream_of(raw: JetStreamContext, plan: base.TopicPlan) -> api.StreamInfo | None:
    try:
        return await raw.stream_info(entries.stream_name(plan.name))
    except js_errors.NotFoundError:
        return None


async def consumers_of(raw: JetStreamContext, plan: base.TopicPlan) -> dict[str, api.ConsumerInfo]:
    return {c.name: c for c in await raw.consumers_info(entries.stream_name(plan.name))}


async def test_provisions_a_stream_and_durable_consumers(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic(retention_seconds=600)
    plans.append(plan)
    location = await provider.ensure_topic(plan)
    assert location == base.TopicRoute(
        tag=plan.tag, name=plan.name, subscriptions={"billing": "billing", "shipping": "shipping"}
    )
    stream = await stream_of(raw, plan)
    assert stream is not None
    assert stream.config.subjects == [plan.name]
    assert stream.config.max_age == 600
    consumers = await consumers_of(raw, plan)
    assert set(consumers) == {"billing", "shipping"}
    for consumer in consumers.values():
        assert consumer.config.durable_name == consumer.name
        assert consumer.config.ack_policy == api.AckPolicy.EXPLICIT
        assert consumer.config.deliver_policy == api.DeliverPolicy.NEW
    # Idempotent: a second ensure changes nothing and says the same.
    assert await provider.ensure_topic(plan) == location
    assert set(await consumers_of(raw, plan)) == {"billing", "shipping"}
    assert await provider.topic_exists(plan)
    assert await provider.inventory([plan]) == frozenset({plan})


async def test_every_subscription_gets_messages_published_after_it(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic()
    plans.append(plan)
    await provider.ensure_topic(plan)
    await raw.publish(plan.name, b"one", headers={"k": "v"})
    for sub in plan.subscriptions:
        pull = await raw.pull_subscribe_bind(sub, stream=entries.stream_name(plan.name))
        [msg] = await pull.fetch(1, timeout=10)
        assert msg.data == b"one"
        assert msg.headers == {"k": "v"}
        await msg.ack_sync()


async def test_adopts_what_exists(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic(subscriptions=("billing",))
    plans.append(plan)
    stream = entries.stream_name(plan.name)
    await raw.add_stream(name=stream, subjects=[plan.name])
    await raw.add_consumer(
        stream, api.ConsumerConfig(durable_name="billing", ack_policy=api.AckPolicy.EXPLICIT)
    )
    await raw.publish(plan.name, b"kept")
    await provider.ensure_topic(plan)
    info = await stream_of(raw, plan)
    assert info is not None and info.state.messages == 1  # adopted, not re-created
    assert await provider.topic_exists(plan)


async def test_a_foreign_stream_on_the_name_is_refused(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic(subscriptions=())
    plans.append(plan)
    await raw.add_stream(name=entries.stream_name(plan.name), subjects=[plan.name + ".other"])
    with pytest.raises(errors.ProvisioningError, match="exists with subjects") as refused:
        await provider.ensure_topic(plan)
    assert refused.value.retriable is False


async def test_drift_is_seen_and_repaired(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    whole, partial, gone = unique_topic(), unique_topic(), unique_topic(subscriptions=())
    plans += [whole, partial, gone]
    for plan in plans:
        await provider.ensure_topic(plan)
    assert await provider.inventory(plans) == frozenset(plans)
    await raw.delete_consumer(entries.stream_name(partial.name), "shipping")
    await raw.delete_stream(entries.stream_name(gone.name))
    assert await provider.inventory(plans) == frozenset({whole})
    assert not await provider.topic_exists(partial)
    for plan in (partial, gone):
        await provider.ensure_topic(plan)
    assert await provider.inventory(plans) == frozenset(plans)


async def test_delete_and_retain(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic()
    plans.append(plan)
    await provider.ensure_topic(plan)
    # Retain is the operator's not calling delete: nothing in the provider deletes on
    # its own, so closing it leaves everything in place.
    await provider.aclose()
    assert await stream_of(raw, plan) is not None
    await provider.start()
    await provider.delete_subscription(plan, "shipping")
    await provider.delete_subscription(plan, "shipping")  # already gone: success
    assert set(await consumers_of(raw, plan)) == {"billing"}
    await provider.delete_topic(plan)
    await provider.delete_topic(plan)
    await provider.delete_subscription(plan, "billing")
    assert await stream_of(raw, plan) is None
    assert await provider.inventory([plan]) == frozenset()


async def test_settings_are_changed_in_place(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic(subscriptions=("billing",))
    plans.append(plan)
    await provider.ensure_topic(plan)
    assert await provider.ensure_settings(plan) is False
    dead = base.DeadLetterPlan(tag="dead", name="dead", subscription="ops", max_delivery_attempts=5)
    declared = base.TopicPlan(
        tag=plan.tag,
        name=plan.name,
        subscriptions=plan.subscriptions,
        retention_seconds=3600,
        dead_letter=dead,
    )
    assert await provider.ensure_settings(declared) is True
    info = await stream_of(raw, plan)
    assert info is not None and info.config.max_age == 3600
    consumer = (await consumers_of(raw, plan))["billing"]
    assert consumer.config.max_deliver == 6  # attempts + 1: the client moves it then
    assert await provider.ensure_settings(declared) is False
    assert await provider.ensure_settings(plan) is True  # back to the server's defaults
    info = await stream_of(raw, plan)
    assert info is not None and not info.config.max_age
    assert (await consumers_of(raw, plan))["billing"].config.max_deliver == -1


async def test_backlog_counts_pending_and_unacked(
    provider: NatsProvider, plans: list[base.TopicPlan], raw: JetStreamContext
) -> None:
    plan = unique_topic()
    plans.append(plan)
    await provider.ensure_topic(plan)
    for n in range(5):
        await raw.publish(plan.name, str(n).encode())
    pull = await raw.pull_subscribe_bind("billing", stream=entries.stream_name(plan.name))
    got = await pull.fetch(2, timeout=10)
    await got[0].ack_sync()  # one acked, one delivered and not acked, three not delivered

    async def reading() -> base.TopicBacklog:
        return (await provider.backlog([plan]))[plan]

    reading_ = await reading()
    assert reading_.published == 5
    assert reading_.subscriptions["billing"].messages == 4
    assert reading_.subscriptions["shipping"].messages == 5
    assert await provider.backlog([unique_topic()]) == {}


async def test_probe_answers(provider: NatsProvider) -> None:
    await provider.probe(5)


async def test_probe_of_a_stopped_server_fails_in_time(private_server: PrivateServer) -> None:
    config, secrets = nats_config([private_server.url])
    async with NatsProvider(config, secrets) as provider:
        await provider.probe(5)
        plan = unique_topic(subscriptions=("billing",))
        await provider.ensure_topic(plan)
        await private_server.astop()
        started = asyncio.get_running_loop().time()
        with pytest.raises(errors.BrokerUnreachableError) as down:
            await provider.probe(3)
        assert asyncio.get_running_loop().time() - started < 10
        assert private_server.url in down.value.message
        # Back up (same data folder): the next use reopens the connection by itself.
        await private_server.astart()
        await provider.probe(10)
        assert await provider.topic_exists(plan)


async def test_a_server_that_never_answered_is_unreachable() -> None:
    config, secrets = nats_config(["nats://127.0.0.1:1"])
    provider = NatsProvider(config, secrets)
    with pytest.raises(errors.BrokerUnreachableError, match=r"127\.0\.0\.1:1"):
        await provider.probe(5)
    await provider.aclose()


async def test_refused_credentials_are_an_auth_failure(nats_env: dict[str, str]) -> None:
    config, secrets = nats_config(
        [nats_env["NATS_URL"]], username=nats_env["NATS_USERNAME"], password="wrong-password"
    )
    provider = NatsProvider(config, secrets)
    with pytest.raises(errors.BrokerAuthError) as refused:
        await provider.probe(5)
    assert "wrong-password" not in str(refused.value)
    await provider.aclose()


async def test_tls_wanted_refuses_a_server_that_does_not_require_it(
    nats_env: dict[str, str],
) -> None:
    # nats-py would send CONNECT, the password in it, in plain text here; the Go client
    # refuses, and so does the provider. The proxy shows what went on the wire.
    host, _, port = nats_env["NATS_URL"].removeprefix("nats://").rpartition(":")
    proxy = outage.Proxy(host, int(port))
    await proxy.start()
    try:
        for tls in (False, True):
            config, secrets = nats_config(
                [f"nats://{proxy.address}"],
                username=nats_env["NATS_USERNAME"],
                password=nats_env["NATS_PASSWORD"],
            )
            if tls:
                config = config.model_copy(update={"tls": True})
            proxy.sent.clear()
            provider = NatsProvider(config, secrets)
            try:
                if tls:
                    with pytest.raises(errors.BrokerTLSError, match="secure connection"):
                        await provider.probe(5)
                else:
                    await provider.probe(5)  # the control: the same server, no TLS wanted
            finally:
                await provider.aclose()
            wire = bytes(proxy.sent)
            assert (b"CONNECT" in wire) is not tls, wire[:200]
            assert (nats_env["NATS_PASSWORD"].encode() in wire) is not tls
    finally:
        await proxy.stop()


async def test_binding_entries(nats_env: dict[str, str]) -> None:
    config, secrets = nats_config([nats_env["NATS_URL"]], username="app", password="s3cret")
    provider = NatsProvider(config, secrets)
    assert provider.endpoint == nats_env["NATS_URL"]
    assert provider.binding() == {
        "uri": nats_env["NATS_URL"],
        "servers": nats_env["NATS_URL"],
        "username": "app",
        "password": "s3cret",
    }
    assert "s3cret" not in provider.endpoint
