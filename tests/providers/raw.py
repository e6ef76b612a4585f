"""Raw SDK clients for the provider tests: they check on the broker itself.

Nothing here uses ductape_operator's providers: these functions create, inspect
and delete things the way an administrator (or another tool) would, so a test
can compare what a provider claims with what the broker holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ductape_operator import models
from ductape_operator.providers import base

T = models.MessageBrokerTypes


@dataclasses.dataclass
class Observed:
    """What the broker holds for one topic."""

    topic: bool
    #: Physical names of the subscriptions that exist (and, where it applies, are attached).
    subscriptions: set[str]
    #: Kafka: the topic's partition count.
    partitions: int | None = None
    #: Kafka: partitions with a committed offset, per consumer group.
    committed: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    #: RabbitMQ: the exchange is a durable topic exchange; every queue is durable.
    declared_as_wanted: bool | None = None


# --- clients -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def kafka_admin(env: Mapping[str, str]) -> AsyncIterator[Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], request_timeout_ms=10000
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def redis_client(env: Mapping[str, str]) -> AsyncIterator[Any]:
    import redis.asyncio as aredis

    client = aredis.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def amqp(env: Mapping[str, str]) -> AsyncIterator[Any]:
    import aio_pika

    connection = await aio_pika.connect(env["AMQP_URL"], timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


def sqs_client(env: Mapping[str, str]) -> Any:
    import aioboto3

    return aioboto3.Session().client(
        "sqs",
        endpoint_url=env["SQS_ENDPOINT"],
        region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def _pubsub_clients(env: Mapping[str, str]) -> tuple[Any, Any]:
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = env["PUBSUB_EMULATOR_HOST"]
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def sqs_queue(topic: str, sub: str | None = None) -> str:
    name = topic if sub is None else f"{topic}-{sub}"
    return name.replace(".", "-")


# --- observe -------------------------------------------------------------------


async def observe(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    """What exists on the broker for `plan`, by the default physical names."""
    name = plan.name
    subs = {s: base.default_subscription_name(name, s) for s in plan.subscriptions}
    if type_ is T.KAFKA:
        async with kafka_admin(env) as admin:
            topics = await admin.describe_topics([name])
            entry = next((t for t in topics if t["topic"] == name and not t["error_code"]), None)
            committed: dict[str, set[int]] = {}
            for group in subs.values():
                offsets = await admin.list_consumer_group_offsets(group)
                committed[group] = {
                    tp.partition for tp, m in offsets.items() if tp.topic == name and m.offset >= 0
                }
        return Observed(
            topic=entry is not None,
            subscriptions={g for g, parts in committed.items() if parts},
            partitions=len(entry["partitions"]) if entry else None,
            committed=committed,
        )
    if type_ is T.REDIS:
        async with redis_client(env) as client:
            if await client.type(name) != "stream":
                return Observed(topic=False, subscriptions=set())
            groups = {g["name"] for g in await client.xinfo_groups(name)}
        return Observed(topic=True, subscriptions=groups & set(plan.subscriptions))
    if type_ is T.RABBITMQ:
        return await _observe_rabbit(env, name, list(subs.values()))
    if type_ is T.GOOGLE_PUBSUB:
        return await asyncio.to_thread(_observe_pubsub, env, name, list(subs.values()))
    if type_ is T.AWS_SQS:
        names = [sqs_queue(name, s) for s in plan.subscriptions] or [sqs_queue(name)]
        found: set[str] = set()
        async with sqs_client(env) as sqs:
            from botocore.exceptions import ClientError

            for queue in names:
                try:
                    reply = await sqs.get_queue_url(QueueName=queue)
                    found.add(reply["QueueUrl"])
                except ClientError:
                    pass
        if plan.subscriptions:
            return Observed(topic=bool(found), subscriptions=found)
        return Observed(topic=bool(found), subscriptions=set())
    raise ValueError(type_)


async def _observe_rabbit(env: Mapping[str, str], exchange: str, queues: list[str]) -> Observed:
    import aio_pika
    from aio_pika.exceptions import ChannelClosed

    async def attempt(action: Any) -> bool:
        channel = await connection.channel()
        try:
            await action(channel)
            return True
        except ChannelClosed:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()

    async with amqp(env) as connection:
        topic = await attempt(lambda ch: ch.get_exchange(exchange, ensure=True))
        found = set()
        for queue in queues:
            if await attempt(lambda ch, q=queue: ch.get_queue(q, ensure=True)):
                found.add(queue)
        # A non-passive declare with the wanted settings is refused (406) when they differ.
        wanted = topic and await attempt(
            lambda ch: ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        )
        for queue in found:
            wanted = wanted and await attempt(lambda ch, q=queue: ch.declare_queue(q, durable=True))
    return Observed(topic=topic, subscriptions=found, declared_as_wanted=wanted)


def _observe_pubsub(env: Mapping[str, str], topic: str, subs: list[str]) -> Observed:
    from google.api_core.exceptions import NotFound

    pub, sub = _pubsub_clients(env)
    project = env["PUBSUB_PROJECT_ID"]
    topic_path = pub.topic_path(project, topic)
    try:
        try:
            pub.get_topic(request={"topic": topic_path})
            exists = True
        except NotFound:
            exists = False
        found = set()
        for sid in subs:
            try:
                got = sub.get_subscription(
                    request={"subscription": sub.subscription_path(project, sid)}
                )
            except NotFound:
                continue
            if got.topic == topic_path:
                found.add(sid)
        return Observed(topic=exists, subscriptions=found)
    finally:
        sub.close()


# --- create and delete out of band ---------------------------------------------


async def create(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> None:
    """Create the topic and its subscriptions as another tool would (for adoption)."""
    name = plan.name
    subs = [base.default_subscription_name(name, s) for s in plan.subscriptions]
    if type_ is T.KAFKA:
        from aiokafka.admin import NewTopic

        async with kafka_admin(env) as admin:
            await admin.create_topics([NewTopic(name, plan.partitions or 1, 1)])
    elif type_ is T.REDIS:
        async with redis_client(env) as client:
            await client.xadd(name, {"data": "before"})
            for group in plan.subscriptions:
                await client.xgroup_create(name, group, id="$")
    elif type_ is T.RABBITMQ:
        import aio_pika

        async with amqp(env) as connection:
            channel = await connection.channel()
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            for queue in subs:
                await channel.declare_queue(queue, durable=True)
    elif type_ is T.GOOGLE_PUBSUB:

        def make() -> None:
            pub, sub = _pubsub_clients(env)
            project = env["PUBSUB_PROJECT_ID"]
            pub.create_topic(request={"name": pub.topic_path(project, name)})
            for sid in subs:
                sub.create_subscription(
                    request={
                        "name": sub.subscription_path(project, sid),
                        "topic": pub.topic_path(project, name),
                    }
                )
            sub.close()

        await asyncio.to_thread(make)
    elif type_ is T.AWS_SQS:
        names = [sqs_queue(name, s) for s in plan.subscriptions] or [sqs_queue(name)]
        async with sqs_client(env) as sqs:
            for queue in names:
                await sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "45"})
    else:
        raise ValueError(type_)


async def delete(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> None:
    """Delete the topic (and, where they are separate things, its subscriptions)."""
    name = plan.name
    subs = [base.default_subscription_name(name, s) for s in plan.subscriptions]
    if type_ is T.KAFKA:
        async with kafka_admin(env) as admin:
            await admin.delete_topics([name])
    elif type_ is T.REDIS:
        async with redis_client(env) as client:
            await client.delete(name)
    elif type_ is T.RABBITMQ:
        async with amqp(env) as connection:
            channel = await connection.channel()
            for queue in subs:
                await channel.queue_delete(queue)
            await channel.exchange_delete(name)
    elif type_ is T.GOOGLE_PUBSUB:
        # Only the topic: its subscriptions stay, detached, as on Google Cloud.
        def drop() -> None:
            pub, sub = _pubsub_clients(env)
            pub.delete_topic(request={"topic": pub.topic_path(env["PUBSUB_PROJECT_ID"], name)})
            sub.close()

        await asyncio.to_thread(drop)
    elif type_ is T.AWS_SQS:
        names = [sqs_queue(name, s) for s in plan.subscriptions] or [sqs_queue(name)]
        async with sqs_client(env) as sqs:
            for queue in names:
                url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
                await sqs.delete_queue(QueueUrl=url)
    else:
        raise ValueError(type_)


# --- the application's side: connect with the binding entries only -------------


async def publish(entries: Mapping[str, str], location: base.TopicRoute, payload: bytes) -> None:
    """Publish one message to a topic, connecting with the Secret entries only."""
    kind = entries["type"]
    if kind == "kafka":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=entries["bootstrap-servers"])
        await producer.start()
        try:
            await producer.send_and_wait(str(location.name), payload)
        finally:
            await producer.stop()
    elif kind == "redis":
        import redis.asyncio as aredis

        client = aredis.from_url(entries["uri"])
        try:
            await client.xadd(str(location.name), {"data": payload})
        finally:
            await client.aclose()
    elif kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(entries["uri"], timeout=10)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(str(location.name))
            await exchange.publish(aio_pika.Message(body=payload), routing_key="any.routing.key")
        finally:
            await connection.close()
    elif kind == "google-pubsub":
        from google.cloud import pubsub_v1

        def send() -> None:
            os.environ["PUBSUB_EMULATOR_HOST"] = entries["emulator-host"]
            pub = pubsub_v1.PublisherClient()
            path = pub.topic_path(entries["project-id"], str(location.name))
            pub.publish(path, payload).result(timeout=30)

        await asyncio.to_thread(send)
    elif kind == "aws-sqs":
        async with _sqs_from(entries) as sqs:
            for url in [location.name] if location.name else list(location.subscriptions.values()):
                await sqs.send_message(QueueUrl=url, MessageBody=payload.decode())
    else:
        raise ValueError(kind)


def _sqs_from(entries: Mapping[str, str]) -> Any:
    import aioboto3

    return aioboto3.Session().client(
        "sqs",
        endpoint_url=entries["endpoint"],
        region_name=entries["region"],
        aws_access_key_id=entries["access-key-id"],
        aws_secret_access_key=entries["secret-access-key"],
    )


async def receive(
    entries: Mapping[str, str],
    location: base.TopicRoute,
    subscription: str,
    *,
    timeout: float = 20.0,
) -> list[bytes]:
    """Wait (up to `timeout`) for messages on a subscription; acknowledge them."""
    kind = entries["type"]
    physical = location.subscriptions[subscription]
    deadline = asyncio.get_running_loop().time() + timeout
    if kind == "kafka":
        from aiokafka import AIOKafkaConsumer

        # "latest": a message published before this consumer joined is seen only
        # when the group's start offsets were committed at provisioning.
        consumer = AIOKafkaConsumer(
            str(location.name),
            bootstrap_servers=entries["bootstrap-servers"],
            group_id=physical,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000))
            while not batches and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
            return [r.value for records in batches.values() for r in records]
        finally:
            await consumer.stop()
    if kind == "redis":
        import redis.asyncio as aredis

        client = aredis.from_url(entries["uri"])
        try:
            reply = await client.xreadgroup(
                physical,
                f"c-{uuid.uuid4().hex[:6]}",
                {str(location.name): ">"},
                block=int(timeout * 1000),
            )
            return [
                fields[b"data"] for _stream, messages in reply or [] for _id, fields in messages
            ]
        finally:
            await client.aclose()
    if kind == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(entries["uri"], timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(physical)
            while True:
                message = await queue.get(fail=False)
                if message is not None:
                    await message.ack()
                    return [message.body]
                if asyncio.get_running_loop().time() > deadline:
                    return []
                await asyncio.sleep(0.2)
        finally:
            await connection.close()
    if kind == "google-pubsub":
        from google.cloud import pubsub_v1

        def pull() -> list[bytes]:
            os.environ["PUBSUB_EMULATOR_HOST"] = entries["emulator-host"]
            sub = pubsub_v1.SubscriberClient()
            path = sub.subscription_path(entries["project-id"], physical)
            try:
                while True:
                    reply = sub.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
                    if reply.received_messages:
                        sub.acknowledge(
                            request={
                                "subscription": path,
                                "ack_ids": [m.ack_id for m in reply.received_messages],
                            }
                        )
                        return [m.message.data for m in reply.received_messages]
                    if time.monotonic() > end:
                        return []
            finally:
                sub.close()

        end = time.monotonic() + timeout
        return await asyncio.to_thread(pull)
    if kind == "aws-sqs":
        async with _sqs_from(entries) as sqs:
            while True:
                reply = await sqs.receive_message(
                    QueueUrl=physical, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = reply.get("Messages", [])
                for m in messages:
                    await sqs.delete_message(QueueUrl=physical, ReceiptHandle=m["ReceiptHandle"])
                if messages:
                    return [m["Body"].encode() for m in messages]
                if asyncio.get_running_loop().time() > deadline:
                    return []
    raise ValueError(kind)


# --- retention and dead letters ------------------------------------------------


@dataclasses.dataclass
class QueueSettings:
    """Retention (seconds; None for the broker's default) and dead-letter policy
    (target physical name, attempts) as the broker reports them."""

    retention: int | None
    dead_letter: tuple[str, int] | None = None


async def read_settings(
    type_: T, env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """Per subscription (key None: the topic itself) what the broker holds.

    Kafka: the topic's `retention.ms` override; SQS: each queue's attributes (the
    dead-letter target is the queue name); Pub/Sub: the topic's retention and each
    subscription's retention and dead-letter policy (target: the topic id).
    """
    if type_ is T.KAFKA:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async with kafka_admin(env) as admin:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, plan.name)]
            )
            entries = response.resources[0][4]
            value = next((e[1] for e in entries if e[0] == "retention.ms" and e[3] == 1), None)
        return {None: QueueSettings(None if value is None else int(value) // 1000)}
    if type_ is T.AWS_SQS:
        import json

        found: dict[str | None, QueueSettings] = {}
        async with sqs_client(env) as sqs:
            for sub in plan.subscriptions:
                url = (await sqs.get_queue_url(QueueName=sqs_queue(plan.name, sub)))["QueueUrl"]
                attrs = (
                    await sqs.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["MessageRetentionPeriod", "RedrivePolicy"]
                    )
                )["Attributes"]
                policy = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else None
                found[sub] = QueueSettings(
                    int(attrs["MessageRetentionPeriod"]),
                    None
                    if policy is None
                    else (
                        str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1],
                        int(policy["maxReceiveCount"]),
                    ),
                )
        return found
    if type_ is T.GOOGLE_PUBSUB:
        return await asyncio.to_thread(_pubsub_settings, env, plan)
    raise ValueError(f"{type_} exposes no settings to read back")


def _pubsub_settings(
    env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    pub, sub = _pubsub_clients(env)
    project = env["PUBSUB_PROJECT_ID"]
    try:
        topic = pub.get_topic(request={"topic": pub.topic_path(project, plan.name)})
        seconds = int(topic.message_retention_duration.total_seconds())
        found: dict[str | None, QueueSettings] = {None: QueueSettings(seconds or None)}
        for name in plan.subscriptions:
            path = sub.subscription_path(project, base.default_subscription_name(plan.name, name))
            got = sub.get_subscription(request={"subscription": path})
            policy = got.dead_letter_policy
            found[name] = QueueSettings(
                int(got.message_retention_duration.total_seconds()),
                (policy.dead_letter_topic.rsplit("/", 1)[-1], policy.max_delivery_attempts)
                if policy.dead_letter_topic
                else None,
            )
        return found
    finally:
        sub.close()


async def rabbit_queue_has_arguments(
    env: Mapping[str, str], queue: str, arguments: Mapping[str, Any]
) -> bool:
    """Whether the queue was declared with exactly these (known) arguments: AMQP cannot
    list a queue's arguments, but it refuses a declaration whose arguments differ."""
    from aio_pika.exceptions import ChannelPreconditionFailed

    async with amqp(env) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, durable=True, arguments=dict(arguments))
        except ChannelPreconditionFailed:
            return False
        await channel.close()
        return True
