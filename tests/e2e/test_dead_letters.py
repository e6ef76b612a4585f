"""Retention and dead letters through the operator: declared, changed, drifted, removed.

The broker's own settings are read back with raw clients (tests/providers/raw.py);
the connection Secret's topics.json carries each topic's dead-letter tag and attempts.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from typing import Any

import pytest

from ductape_operator.providers import base
from tests.e2e import kit
from tests.providers import raw

T = raw.T
NATIVE = ("KAFKA", "GOOGLE_PUBSUB", "AWS_SQS")


def _topics(prefix: str, retention: int | None, attempts: int | None) -> list[dict[str, Any]]:
    live: dict[str, Any] = {
        "tag": "orders",
        "name": f"{prefix}.orders",
        "subscriptions": ["billing"],
    }
    if retention is not None:
        live["retentionSeconds"] = retention
    if attempts is not None:
        live["deadLetter"] = {"topic": "orders-dead", "maxDeliveryAttempts": attempts}
    dead = {"tag": "orders-dead", "name": f"{prefix}.dead", "subscriptions": ["ops"]}
    return [live, dead]


async def _settled(
    type_: T, plan: base.TopicPlan, expected: dict[str | None, raw.QueueSettings]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        read = await raw.read_settings(type_, dict(os.environ), plan)
        if all(read.get(k) == v for k, v in expected.items()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{type_.value}: broker settings {read} never became {expected}")
        await asyncio.sleep(0.5)


def _retention_status(kube: kit.Kube, ns: str, name: str) -> dict[str, str]:
    obj = kube.get(ns, name) or {}
    (env,) = obj["status"]["envs"]
    return {t["tag"]: t.get("retention") for t in env["topics"]}


def _expected(
    type_: T, dead: str, retention: int | None, attempts: int | None
) -> dict[str | None, raw.QueueSettings]:
    target = None if attempts is None else (dead, attempts)
    if type_ is T.KAFKA:
        return {None: raw.QueueSettings(retention)}
    if type_ is T.AWS_SQS:
        # maxReceiveCount is one above the attempts (docs/messaging.md).
        redrive = None if attempts is None else (dead, attempts + 1)
        return {"billing": raw.QueueSettings(retention or 345600, redrive)}
    sub = min(retention or 604800, 604800)
    expected = {"billing": raw.QueueSettings(sub, target)}
    if retention is not None:
        expected[None] = raw.QueueSettings(retention)
    return expected


@pytest.mark.parametrize("type_name", NATIVE)
async def test_settings_follow_the_spec(kube: kit.Kube, namespace: str, type_name: str) -> None:
    type_ = T(type_name)
    name = kit.unique("dlq")
    for secret_name, data in kit.credential_secrets(type_name).items():
        kube.create_secret(namespace, secret_name, data)
    manifest = kit.broker_manifest(
        name, envs=[("dev", type_name)], topics=_topics(name, 600, 5), deletion_policy="Delete"
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert _retention_status(kube, namespace, name) == {
        "orders": "600s",
        "orders-dead": "broker default",
    }
    secret = kube.secret(namespace, f"{name}-dev")
    assert secret is not None
    entries = kit.topics_json(secret)
    assert entries["orders"]["deadLetter"] == {"topic": "orders-dead", "maxDeliveryAttempts": 5}
    assert "deadLetter" not in entries["orders-dead"]

    plan = base.TopicPlan(tag="orders", name=f"{name}.orders", subscriptions=("billing",))
    dead = f"{name}.dead" if type_ is T.GOOGLE_PUBSUB else f"{name}-dead-ops"
    await _settled(type_, plan, _expected(type_, dead, 600, 5))

    changed = copy.deepcopy(manifest)
    changed["spec"]["topics"] = _topics(name, 1209600, 100)
    kube.apply(namespace, changed)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    await _settled(type_, plan, _expected(type_, dead, 1209600, 100))

    if type_ is T.AWS_SQS:
        # Changed out of band: the next health round sets it back.
        async with raw.sqs_client(os.environ) as sqs:
            url = (await sqs.get_queue_url(QueueName=f"{name}-orders-billing"))["QueueUrl"]
            await sqs.set_queue_attributes(
                QueueUrl=url, Attributes={"MessageRetentionPeriod": "900"}
            )
        await _settled(type_, plan, _expected(type_, dead, 1209600, 100))

    removed = copy.deepcopy(manifest)
    removed["spec"]["topics"] = _topics(name, None, None)
    kube.apply(namespace, removed)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    await _settled(type_, plan, _expected(type_, dead, None, None))
    assert _retention_status(kube, namespace, name)["orders"] == "broker default"
    secret = kube.secret(namespace, f"{name}-dev")
    assert secret is not None and "deadLetter" not in kit.topics_json(secret)["orders"]


async def _queue_depth(queue: str) -> int:
    async with raw.amqp(os.environ) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        await channel.close()
        return int(count or 0)


async def _drain(queue: str) -> None:
    async with raw.amqp(os.environ) as connection:
        channel = await connection.channel()
        held = await channel.get_queue(queue, ensure=True)
        while (message := await held.get(fail=False)) is not None:
            await message.ack()
        await channel.close()


async def test_rabbitmq_retention_waits_for_a_queue_holding_messages(
    kube: kit.Kube, namespace: str
) -> None:
    name = kit.unique("ttl")
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    topics = [
        {
            "tag": "orders",
            "name": f"{name}.orders",
            "retentionSeconds": 600,
            "subscriptions": ["billing"],
        }
    ]
    manifest = kit.broker_manifest(
        name, envs=[("dev", "RABBITMQ")], topics=topics, deletion_policy="Delete"
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    queue = f"{name}.orders.billing"
    assert await raw.rabbit_queue_has_arguments(os.environ, queue, {"x-message-ttl": 600000})
    location = base.TopicRoute(
        tag="orders", name=f"{name}.orders", subscriptions={"billing": queue}
    )
    await raw.publish({"type": "rabbitmq", "uri": os.environ["AMQP_URL"]}, location, b"held")

    changed = copy.deepcopy(manifest)
    changed["spec"]["topics"][0]["retentionSeconds"] = 1200
    kube.apply(namespace, changed)
    failed = kube.wait_condition(namespace, name, "False", "ProvisioningFailed")
    message = kit.condition_of(failed)
    assert message is not None
    assert "topic orders: retentionSeconds" in message["message"]
    # Never deleted for it: the message is still there, under the old setting.
    assert await _queue_depth(queue) == 1
    assert await raw.rabbit_queue_has_arguments(os.environ, queue, {"x-message-ttl": 600000})

    await _drain(queue)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert await raw.rabbit_queue_has_arguments(os.environ, queue, {"x-message-ttl": 1200000})


async def test_redis_entries_past_the_retention_go_within_a_health_round(
    kube: kit.Kube, namespace: str
) -> None:
    name = kit.unique("trim")
    topics = [
        {
            "tag": "orders",
            "name": f"{name}.orders",
            "retentionSeconds": 600,
            "subscriptions": ["billing"],
        }
    ]
    kube.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=topics, deletion_policy="Delete"),
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    stream = f"{name}.orders"
    async with raw.redis_client(os.environ) as client:
        seconds, _micros = await client.time()
        # An entry stamped 700 s ago (ids are the server's milliseconds), and a fresh one.
        await client.xadd(stream, {"data": "old"}, id=f"{(int(seconds) - 700) * 1000}-0")
        await client.xadd(stream, {"data": "new"})
        deadline = time.monotonic() + 30  # the e2e operator's health interval is 3 s
        while [f["data"] for _i, f in await client.xrange(stream)] != ["new"]:
            if time.monotonic() > deadline:
                pytest.fail("the expired entry is still in the stream")
            await asyncio.sleep(0.5)
