"""Smoke tests of the local stack (`make testenv-up`): every part answers real requests.

What Kubernetes itself does (garbage collection, RBAC) is not tested here: the
end-to-end and chart tests rely on it and would fail without it.

Each part is driven with the same pinned client library the operator uses, so a
failure here points at the stack, not at the operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika
import aioboto3
import kubernetes
import pytest
import redis.asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.cloud import pubsub_v1

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

T = TypeVar("T")
DEADLINE = 60.0


def poll(check: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Calls `check` until it returns something other than None, or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


async def apoll(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


# --- Kubernetes ------------------------------------------------------------------------


def test_apiserver_ready(kube: kubernetes.client.ApiClient) -> None:
    resp = kube.call_api("GET", kube.configuration.host + "/readyz")
    assert resp.status == 200
    assert resp.read() == b"ok"
    version = kubernetes.client.VersionApi(kube).get_code()
    assert version.git_version.startswith("v1.")


# --- brokers ---------------------------------------------------------------------------


async def test_kafka_round_trip(stack_env: dict[str, str], name: str) -> None:
    servers = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            await producer.send_and_wait(name, b"hello kafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            name, bootstrap_servers=servers, group_id=name, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), DEADLINE)
        finally:
            await consumer.stop()
        assert record.value == b"hello kafka"
    finally:
        await admin.delete_topics([name])
        await admin.close()


async def test_redis_stream_round_trip(stack_env: dict[str, str], name: str) -> None:
    client = redis.asyncio.from_url(stack_env["REDIS_URL"])
    try:
        await client.xgroup_create(name, "group", id="$", mkstream=True)
        sent = await client.xadd(name, {"body": "hello redis"})
        got = await client.xreadgroup("group", "c1", {name: ">"}, count=1, block=5000)
        assert got, "nothing read from the stream"
        _stream, entries = got[0]
        entry_id, fields = entries[0]
        assert entry_id == sent
        assert fields == {b"body": b"hello redis"}
        assert await client.xack(name, "group", entry_id) == 1
    finally:
        await client.delete(name)
        await client.aclose()


async def test_rabbitmq_round_trip(stack_env: dict[str, str], name: str) -> None:
    connection = await aio_pika.connect(stack_env["AMQP_URL"], timeout=30)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(name)
        try:
            await queue.bind(exchange, routing_key="#")
            await exchange.publish(
                aio_pika.Message(b"hello rabbitmq", headers={"k": "v"}), routing_key="a.b"
            )

            async def get() -> aio_pika.abc.AbstractIncomingMessage | None:
                return await queue.get(no_ack=True, fail=False)

            message = await apoll(get, "the message on the queue")
            assert message.body == b"hello rabbitmq"
            assert message.headers == {"k": "v"}
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()


def test_pubsub_round_trip(stack_env: dict[str, str], name: str) -> None:
    project = stack_env["PUBSUB_PROJECT_ID"]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, name)
    subscription = subscriber.subscription_path(project, name)
    publisher.create_topic(name=topic, timeout=30)
    try:
        subscriber.create_subscription(name=subscription, topic=topic, timeout=30)
        publisher.publish(topic, b"hello pubsub", origin="stack").result(timeout=30)

        def pull() -> list[pubsub_v1.types.ReceivedMessage] | None:
            resp = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
            return list(resp.received_messages) or None

        (received,) = poll(pull, "the message on the subscription")
        assert received.message.data == b"hello pubsub"
        assert dict(received.message.attributes) == {"origin": "stack"}
        subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
        subscriber.delete_subscription(subscription=subscription, timeout=30)
    finally:
        publisher.delete_topic(topic=topic, timeout=30)
        subscriber.close()


async def test_sqs_round_trip(stack_env: dict[str, str], name: str) -> None:
    session = aioboto3.Session()
    async with session.client(
        "sqs", endpoint_url=stack_env["SQS_ENDPOINT"], region_name=stack_env["AWS_REGION"]
    ) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        try:
            await sqs.send_message(QueueUrl=url, MessageBody="hello sqs")

            async def receive() -> list[dict[str, object]] | None:
                resp = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
                return resp.get("Messages") or None

            (message,) = await apoll(receive, "the message on the queue")
            assert message["Body"] == "hello sqs"
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        finally:
            await sqs.delete_queue(QueueUrl=url)
