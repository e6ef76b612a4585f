"""The raw RabbitMQ kit (see `tests/brokers/__init__.py`): aio-pika."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika
from aio_pika.exceptions import ChannelClosed, ChannelPreconditionFailed

from ductape_operator.providers import base
from tests.brokers import Observed


@contextlib.asynccontextmanager
async def connection(env: Mapping[str, str]) -> AsyncIterator[Any]:
    """A connection to the stack's RabbitMQ (`AMQP_URL`)."""
    conn = await aio_pika.connect(env["AMQP_URL"], timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def _attempt(conn: Any, action: Any) -> bool:
    """Run `action(channel)` on a channel of its own: False when the broker refused it."""
    channel = await conn.channel()
    try:
        await action(channel)
        return True
    except ChannelClosed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    exchange = plan.name
    queues = [base.default_subscription_name(plan.name, s) for s in plan.subscriptions]
    async with connection(env) as conn:
        topic = await _attempt(conn, lambda ch: ch.get_exchange(exchange, ensure=True))
        found = set()
        for queue in queues:
            if await _attempt(conn, lambda ch, q=queue: ch.get_queue(q, ensure=True)):
                found.add(queue)
        # A non-passive declare with the wanted settings is refused (406) when they differ.
        wanted = topic and await _attempt(
            conn,
            lambda ch: ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True),
        )
        for queue in found:
            wanted = wanted and await _attempt(
                conn, lambda ch, q=queue: ch.declare_queue(q, durable=True)
            )
    return Observed(topic=topic, subscriptions=found, declared_as_wanted=wanted)


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with connection(env) as conn:
        channel = await conn.channel()
        await channel.declare_exchange(plan.name, aio_pika.ExchangeType.TOPIC, durable=True)
        for sub in plan.subscriptions:
            await channel.declare_queue(
                base.default_subscription_name(plan.name, sub), durable=True
            )


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    queues = {s: base.default_subscription_name(plan.name, s) for s in plan.subscriptions}
    await delete_out_of_band(env, plan.name, queues)


async def exists(env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]) -> bool:
    async with connection(env) as conn:
        if not await _attempt(conn, lambda ch: ch.declare_exchange(name, passive=True)):
            return False
        for queue in subscriptions.values():
            if not await _attempt(conn, lambda ch, q=queue: ch.declare_queue(q, passive=True)):
                return False
        return True


async def delete_out_of_band(
    env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]
) -> None:
    async with connection(env) as conn:
        channel = await conn.channel()
        for queue in subscriptions.values():
            await channel.queue_delete(queue)
        await channel.exchange_delete(name)


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    conn = await aio_pika.connect(entries["uri"], timeout=10)
    try:
        channel = await conn.channel()
        exchange = await channel.get_exchange(str(name), ensure=False)
        await exchange.publish(aio_pika.Message(body=payload), routing_key="any.routing.key")
    finally:
        await conn.close()


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    conn = await aio_pika.connect(entries["uri"], timeout=10)
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(physical, ensure=False)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return [message.body]
            if asyncio.get_running_loop().time() > deadline:
                return []
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def queue_has_arguments(
    env: Mapping[str, str], queue: str, arguments: Mapping[str, Any]
) -> bool:
    """Whether the queue was declared with exactly these (known) arguments: AMQP cannot
    list a queue's arguments, but it refuses a declaration whose arguments differ."""
    async with connection(env) as conn:
        channel = await conn.channel()
        try:
            await channel.declare_queue(queue, durable=True, arguments=dict(arguments))
        except ChannelPreconditionFailed:
            return False
        await channel.close()
        return True
