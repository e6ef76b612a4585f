"""The raw Redis kit (see `tests/brokers/__init__.py`): redis-py."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis.asyncio as aredis

from ductape_operator.providers import base
from tests.brokers import Observed


@contextlib.asynccontextmanager
async def client(env: Mapping[str, str]) -> AsyncIterator[Any]:
    """A client of the stack's Redis (`REDIS_URL`), replies decoded."""
    redis_client = aredis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


@contextlib.asynccontextmanager
async def _from_entries(entries: Mapping[str, str]) -> AsyncIterator[Any]:
    """A client built from the Secret's entries alone, as an application would."""
    redis_client = aredis.Redis(
        host=entries["host"],
        port=int(entries["port"]),
        db=int(entries.get("database", "0")),
        username=entries.get("username") or None,
        password=entries.get("password") or None,
    )
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    async with client(env) as redis_client:
        if await redis_client.type(plan.name) != "stream":
            return Observed(topic=False, subscriptions=set())
        groups = {g["name"] for g in await redis_client.xinfo_groups(plan.name)}
    return Observed(topic=True, subscriptions=groups & set(plan.subscriptions))


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as redis_client:
        await redis_client.xadd(plan.name, {"data": "before"})
        for group in plan.subscriptions:
            await redis_client.xgroup_create(plan.name, group, id="$")


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as redis_client:
        await redis_client.delete(plan.name)


async def exists(env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]) -> bool:
    async with client(env) as redis_client:
        if await redis_client.type(name) != "stream":
            return False
        groups = {g["name"] for g in await redis_client.xinfo_groups(name)}
        return set(subscriptions.values()) <= groups


async def delete_out_of_band(
    env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]
) -> None:
    async with client(env) as redis_client:
        await redis_client.delete(name)


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    async with _from_entries(entries) as redis_client:
        await redis_client.xadd(str(name), {"data": payload})


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    async with _from_entries(entries) as redis_client:
        reply = await redis_client.xreadgroup(
            physical,
            f"c-{uuid.uuid4().hex[:6]}",
            {str(name): ">"},
            count=100,
            block=int(timeout * 1000),
        )
        out = []
        for _stream, messages in reply or []:
            for message_id, fields in messages:
                out.append(fields[b"data"])
                await redis_client.xack(str(name), physical, message_id)
        return out
