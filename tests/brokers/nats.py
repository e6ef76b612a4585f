"""The raw NATS kit (see `tests/brokers/__init__.py`): nats-py.

The stream of a topic is its subject with dots as dashes, and a subscription's durable
consumer is named after it (docs/reference.md, "NATS"): spelled out here again on
purpose, so the kit does not trust the operator's own naming.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors as js_errors
from nats.js import JetStreamContext, api

from ductape_operator.providers import base
from tests.brokers import Observed, QueueSettings

TIMEOUT = 30.0


def stream(subject: str) -> str:
    return subject.replace(".", "-")


@contextlib.asynccontextmanager
async def _jetstream(
    servers: str, user: str | None = None, password: str | None = None
) -> AsyncIterator[JetStreamContext]:
    options: dict[str, Any] = {}
    if user:
        options.update(user=user, password=password or "")
    client = await nats.connect(
        servers.split(","), connect_timeout=TIMEOUT, allow_reconnect=False, **options
    )
    try:
        yield client.jetstream(timeout=TIMEOUT)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def client(env: Mapping[str, str]) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the stack's nats-server (`NATS_URL`)."""
    async with _jetstream(env["NATS_URL"]) as js:
        yield js


async def _consumers(js: JetStreamContext, name: str) -> set[str] | None:
    """The consumer names of a topic's stream; None without the stream (or with a
    stream that does not hold exactly the topic's subject)."""
    try:
        info = await js.stream_info(stream(name))
    except js_errors.NotFoundError:
        return None
    if info.config.subjects != [name]:
        return None
    return {c.name for c in await js.consumers_info(stream(name)) if c.name}


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    async with client(env) as js:
        names = await _consumers(js, plan.name)
    if names is None:
        return Observed(topic=False, subscriptions=set())
    return Observed(topic=True, subscriptions=names & set(plan.subscriptions))


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as js:
        await js.add_stream(name=stream(plan.name), subjects=[plan.name])
        await js.publish(plan.name, b"before")
        for sub in plan.subscriptions:
            await js.add_consumer(
                stream(plan.name),
                api.ConsumerConfig(
                    durable_name=sub,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.NEW,
                ),
            )


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as js:
        with contextlib.suppress(js_errors.NotFoundError):
            await js.delete_stream(stream(plan.name))


async def exists(env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]) -> bool:
    async with client(env) as js:
        names = await _consumers(js, name)
    return names is not None and set(subscriptions.values()) <= names


async def delete_out_of_band(
    env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]
) -> None:
    async with client(env) as js:
        await js.delete_stream(stream(name))


async def read_settings(
    env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """The stream's `MaxAge` (None: unlimited) and each consumer's `MaxDeliver` (the
    dead-letter topic is the client's, so it is not on the server: named None here)."""
    async with client(env) as js:
        info = await js.stream_info(stream(plan.name))
        out: dict[str | None, QueueSettings] = {
            None: QueueSettings(int(info.config.max_age) if info.config.max_age else None)
        }
        for sub in plan.subscriptions:
            consumer = await js.consumer_info(stream(plan.name), sub)
            max_deliver = consumer.config.max_deliver or -1
            out[sub] = QueueSettings(
                None, ("", max_deliver) if max_deliver and max_deliver > 0 else None
            )
    return out


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    async with _jetstream(
        entries["servers"], entries.get("username"), entries.get("password")
    ) as js:
        await js.publish(str(name), payload)


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    async with _jetstream(
        entries["servers"], entries.get("username"), entries.get("password")
    ) as js:
        pull = await js.pull_subscribe_bind(physical, stream=stream(str(name)))
        try:
            messages = await pull.fetch(100, timeout=timeout)
        except nats.errors.TimeoutError:
            return []
        for message in messages:
            await message.ack_sync()
        return [message.data for message in messages]
