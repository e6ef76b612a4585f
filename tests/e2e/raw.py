"""Raw broker clients for the end-to-end tests.

They check on the broker itself what the operator claims, and prove a
connection Secret works, using the SDKs directly and never the operator's
providers. Physical names come from the Secret's `topics.json` entry of a tag:
`{"name": ..., "subscriptions": {sub: physical}}`.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

Entry = Mapping[str, Any]


async def _kafka_admin(bootstrap: str) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    return admin


async def exists(type_: str, entry: Entry) -> bool:
    """Whether the topic of `entry` and all its subscriptions exist on the local broker."""
    subs = dict(entry.get("subscriptions") or {})
    name = entry.get("name")
    if type_ == "KAFKA":
        admin = await _kafka_admin(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        try:
            if name not in await admin.list_topics():
                return False
            for group in subs.values():
                if not await admin.list_consumer_group_offsets(group):
                    return False
            return True
        finally:
            await admin.close()
    if type_ == "REDIS":
        import redis.asyncio as aredis

        client = aredis.from_url(os.environ["REDIS_URL"], decode_responses=True)
        try:
            if await client.type(name) != "stream":
                return False
            groups = {g["name"] for g in await client.xinfo_groups(name)}
            return set(subs.values()) <= groups
        finally:
            await client.aclose()
    if type_ == "RABBITMQ":
        import aio_pika
        from aio_pika.exceptions import ChannelClosed

        conn = await aio_pika.connect(os.environ["AMQP_URL"])
        try:
            for kind, target in [("exchange", name), *(("queue", q) for q in subs.values())]:
                channel = await conn.channel()
                try:
                    if kind == "exchange":
                        await channel.declare_exchange(target, passive=True)
                    else:
                        await channel.declare_queue(target, passive=True)
                except ChannelClosed:
                    return False
                finally:
                    if not channel.is_closed:
                        await channel.close()
            return True
        finally:
            await conn.close()
    if type_ == "GOOGLE_PUBSUB":
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        project = os.environ["PUBSUB_PROJECT_ID"]

        def check() -> bool:
            pub = pubsub_v1.PublisherClient()
            sub = pubsub_v1.SubscriberClient()
            try:
                pub.get_topic(request={"topic": pub.topic_path(project, name)})
                for sid in subs.values():
                    sub.get_subscription(
                        request={"subscription": sub.subscription_path(project, sid)}
                    )
                return True
            except gexc.NotFound:
                return False
            finally:
                sub.close()

        return await asyncio.to_thread(check)
    if type_ == "AWS_SQS":
        urls = [name] if name else list(subs.values())
        async with _sqs() as sqs:
            from botocore.exceptions import ClientError

            for url in urls:
                try:
                    await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                except ClientError:
                    return False
        return bool(urls)
    raise ValueError(type_)


def _redis_from_secret(secret: Mapping[str, str]) -> Any:
    import redis.asyncio as aredis

    return aredis.Redis(
        host=secret["host"],
        port=int(secret["port"]),
        db=int(secret.get("database", "0")),
        username=secret.get("username") or None,
        password=secret.get("password") or None,
    )


def _sqs_from_secret(secret: Mapping[str, str]) -> Any:
    import aioboto3

    return aioboto3.Session().client(
        "sqs",
        endpoint_url=secret.get("endpoint") or None,
        region_name=secret["region"],
        aws_access_key_id=secret.get("access-key-id"),
        aws_secret_access_key=secret.get("secret-access-key"),
    )


def _sqs() -> Any:
    import aioboto3

    return aioboto3.Session().client(
        "sqs",
        endpoint_url=os.environ["SQS_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


async def delete_out_of_band(type_: str, entry: Entry) -> None:
    """Delete a topic (and its subscriptions) behind the operator's back."""
    subs = dict(entry.get("subscriptions") or {})
    name = entry.get("name")
    if type_ == "KAFKA":
        admin = await _kafka_admin(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        try:
            await admin.delete_topics([name])
        finally:
            await admin.close()
    elif type_ == "REDIS":
        import redis.asyncio as aredis

        client = aredis.from_url(os.environ["REDIS_URL"])
        try:
            await client.delete(name)
        finally:
            await client.aclose()
    elif type_ == "RABBITMQ":
        import aio_pika

        conn = await aio_pika.connect(os.environ["AMQP_URL"])
        try:
            channel = await conn.channel()
            for q in subs.values():
                await channel.queue_delete(q)
            await channel.exchange_delete(name)
        finally:
            await conn.close()
    elif type_ == "GOOGLE_PUBSUB":
        from google.cloud import pubsub_v1

        project = os.environ["PUBSUB_PROJECT_ID"]

        def delete() -> None:
            pub = pubsub_v1.PublisherClient()
            sub = pubsub_v1.SubscriberClient()
            for sid in subs.values():
                sub.delete_subscription(
                    request={"subscription": sub.subscription_path(project, sid)}
                )
            pub.delete_topic(request={"topic": pub.topic_path(project, name)})
            sub.close()

        await asyncio.to_thread(delete)
    elif type_ == "AWS_SQS":
        async with _sqs() as sqs:
            for url in [name] if name else list(subs.values()):
                await sqs.delete_queue(QueueUrl=url)
    else:
        raise ValueError(type_)


async def publish_with_secret(secret: Mapping[str, str], entry: Entry, payload: bytes) -> None:
    """Publish one message using only the connection Secret's entries."""
    type_ = secret["type"]
    name = entry.get("name")
    subs = dict(entry.get("subscriptions") or {})
    if type_ == "kafka":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=secret["bootstrap-servers"])
        await producer.start()
        try:
            await producer.send_and_wait(name, payload)
        finally:
            await producer.stop()
    elif type_ == "redis":
        client = _redis_from_secret(secret)
        try:
            await client.xadd(name, {"data": payload})
        finally:
            await client.aclose()
    elif type_ == "rabbitmq":
        import aio_pika

        conn = await aio_pika.connect(secret["uri"])
        try:
            channel = await conn.channel()
            exchange = await channel.get_exchange(name, ensure=False)
            await exchange.publish(aio_pika.Message(body=payload), routing_key="e2e")
        finally:
            await conn.close()
    elif type_ == "google-pubsub":
        from google.cloud import pubsub_v1

        def publish() -> None:
            pub = pubsub_v1.PublisherClient()
            pub.publish(pub.topic_path(secret["project-id"], name), payload).result(timeout=30)

        await asyncio.to_thread(publish)
    elif type_ == "aws-sqs":
        async with _sqs_from_secret(secret) as sqs:
            for url in [name] if name else list(subs.values()):
                await sqs.send_message(QueueUrl=url, MessageBody=payload.decode())
    else:
        raise ValueError(type_)


async def receive_with_secret(
    secret: Mapping[str, str], entry: Entry, subscription: str, *, timeout: float = 30
) -> list[bytes]:
    """Receive (and acknowledge) what waits on one subscription, using the Secret only."""
    type_ = secret["type"]
    name = entry.get("name")
    physical = entry["subscriptions"][subscription]
    if type_ == "kafka":
        from aiokafka import AIOKafkaConsumer

        # auto_offset_reset="latest": a message published before this consumer
        # joined is only seen if the operator committed the group's start offsets.
        consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=secret["bootstrap-servers"],
            group_id=physical,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000))
            out = [r.value for records in batches.values() for r in records]
            if out:
                await consumer.commit()
            return out
        finally:
            await consumer.stop()
    if type_ == "redis":
        client = _redis_from_secret(secret)
        try:
            reply = await client.xreadgroup(
                physical, "e2e", {name: ">"}, count=100, block=int(timeout * 1000)
            )
            out = []
            for _stream, messages in reply or []:
                for msg_id, fields in messages:
                    out.append(fields[b"data"])
                    await client.xack(name, physical, msg_id)
            return out
        finally:
            await client.aclose()
    if type_ == "rabbitmq":
        import aio_pika

        conn = await aio_pika.connect(secret["uri"])
        try:
            channel = await conn.channel()
            queue = await channel.get_queue(physical, ensure=False)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                msg = await queue.get(fail=False)
                if msg is not None:
                    await msg.ack()
                    return [msg.body]
                if asyncio.get_running_loop().time() > deadline:
                    return []
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
    if type_ == "google-pubsub":
        from google.cloud import pubsub_v1

        def pull() -> list[bytes]:
            sub = pubsub_v1.SubscriberClient()
            path = sub.subscription_path(secret["project-id"], physical)
            try:
                response = sub.pull(
                    request={"subscription": path, "max_messages": 10}, timeout=timeout
                )
                msgs = list(response.received_messages)
                if msgs:
                    sub.acknowledge(
                        request={"subscription": path, "ack_ids": [m.ack_id for m in msgs]}
                    )
                return [m.message.data for m in msgs]
            finally:
                sub.close()

        return await asyncio.to_thread(pull)
    if type_ == "aws-sqs":
        async with _sqs_from_secret(secret) as sqs:
            resp = await sqs.receive_message(
                QueueUrl=physical, MaxNumberOfMessages=10, WaitTimeSeconds=min(int(timeout), 20)
            )
            out = []
            for m in resp.get("Messages", []):
                out.append(m["Body"].encode())
                await sqs.delete_message(QueueUrl=physical, ReceiptHandle=m["ReceiptHandle"])
            return out
    raise ValueError(type_)


def payload() -> bytes:
    return f"e2e-{uuid.uuid4().hex}".encode()


def redis_url_parts() -> tuple[str, int]:
    url = urllib.parse.urlparse(os.environ["REDIS_URL"])
    return url.hostname or "127.0.0.1", url.port or 6379
