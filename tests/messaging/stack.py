"""Provision a topic with subscriptions on a local broker and describe it as a binding.

The entries written are those of the connection Secret (DESIGN.md section 4),
built from the local stack's environment (`.testenv/env`). Provisioning uses
each SDK directly, following the provider mapping of DESIGN.md section 5, so
the client is tested against the contract rather than against itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

#: Provider types, as in the `type` entry, and the variables each needs.
PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS",),
    "redis": ("REDIS_URL",),
    "rabbitmq": ("AMQP_URL",),
    "google-pubsub": ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID"),
    "aws-sqs": ("SQS_ENDPOINT", "AWS_REGION"),
}


def missing(kind: str) -> list[str]:
    return [v for v in PROVIDERS[kind] if not os.environ.get(v)]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Provisioned:
    """One topic with its subscriptions on one broker; `delete()` removes them."""

    def __init__(self, kind: str, tag: str, subscriptions: tuple[str, ...]) -> None:
        self.kind = kind
        self.tag = tag
        self.name = unique("msg.")
        self.subscriptions = subscriptions
        self.route: dict[str, Any] = {}

    def entries(self) -> dict[str, str]:
        """The connection Secret entries for this broker and topic."""
        entries = {
            "type": self.kind,
            "provider": "ductape",
            "broker-tag": "message-bus",
            "env": "test",
            "topics.json": json.dumps({self.tag: self.route}),
        }
        if self.kind == "kafka":
            servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
            entries |= {
                "bootstrap-servers": servers,
                "security-protocol": "PLAINTEXT",
                "uri": f"kafka://{servers}",
            }
        elif self.kind == "redis":
            url = urllib.parse.urlsplit(os.environ["REDIS_URL"])
            entries |= {
                "uri": f"redis://{url.hostname}:{url.port or 6379}/0",
                "host": url.hostname or "127.0.0.1",
                "port": str(url.port or 6379),
                "database": (url.path.lstrip("/") or "0"),
            }
            if url.password:
                entries["password"] = urllib.parse.unquote(url.password)
        elif self.kind == "rabbitmq":
            url = urllib.parse.urlsplit(os.environ["AMQP_URL"])
            entries |= {
                "uri": f"amqp://{url.hostname}:{url.port or 5672}/",
                "host": url.hostname or "127.0.0.1",
                "port": str(url.port or 5672),
                "username": urllib.parse.unquote(url.username or "guest"),
                "password": urllib.parse.unquote(url.password or "guest"),
                "virtual-host": urllib.parse.unquote(url.path[1:]) if len(url.path) > 1 else "/",
            }
        elif self.kind == "google-pubsub":
            entries |= {
                "project-id": os.environ["PUBSUB_PROJECT_ID"],
                "emulator-host": os.environ["PUBSUB_EMULATOR_HOST"],
                "uri": f"pubsub://{os.environ['PUBSUB_PROJECT_ID']}",
            }
        else:
            entries |= {
                "region": os.environ["AWS_REGION"],
                "endpoint": os.environ["SQS_ENDPOINT"],
                "access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                "secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                "uri": os.environ["SQS_ENDPOINT"],
            }
        return entries

    def write(self, folder: pathlib.Path) -> pathlib.Path:
        """Write the entries as a binding folder (one file per entry)."""
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in self.entries().items():
            (folder / key).write_text(value)
        return folder

    async def create(self) -> None:
        await getattr(self, "_create_" + self.kind.replace("-", "_"))()

    async def delete(self) -> None:
        await getattr(self, "_delete_" + self.kind.replace("-", "_"))()

    # Kafka: a topic with two partitions; a subscription is a group id.
    async def _create_kafka(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()
        subs = {s: f"{self.name}.{s}" for s in self.subscriptions}
        self.route = {"name": self.name, "subscriptions": subs}

    async def _delete_kafka(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        await admin.start()
        try:
            await admin.delete_topics([self.name])
        finally:
            await admin.close()

    # Redis: a stream; a subscription is a consumer group named as the subscription.
    async def _create_redis(self) -> None:
        import redis.asyncio as aredis

        client = aredis.from_url(os.environ["REDIS_URL"])
        try:
            for sub in self.subscriptions:
                await client.xgroup_create(self.name, sub, id="$", mkstream=True)
        finally:
            await client.aclose()
        self.route = {"name": self.name, "subscriptions": {s: s for s in self.subscriptions}}

    async def _delete_redis(self) -> None:
        import redis.asyncio as aredis

        client = aredis.from_url(os.environ["REDIS_URL"])
        try:
            await client.delete(self.name)
        finally:
            await client.aclose()

    # RabbitMQ: a durable topic exchange; each subscription a durable queue bound with #.
    async def _create_rabbitmq(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(os.environ["AMQP_URL"])
        try:
            channel = await conn.channel()
            exchange = await channel.declare_exchange(
                self.name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for sub in self.subscriptions:
                queue = await channel.declare_queue(f"{self.name}.{sub}", durable=True)
                await queue.bind(exchange, "#")
        finally:
            await conn.close()
        subs = {s: f"{self.name}.{s}" for s in self.subscriptions}
        self.route = {"name": self.name, "subscriptions": subs}

    async def _delete_rabbitmq(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(os.environ["AMQP_URL"])
        try:
            channel = await conn.channel()
            for queue in self.route["subscriptions"].values():
                await channel.queue_delete(queue)
            await channel.exchange_delete(self.name)
        finally:
            await conn.close()

    # Pub/Sub: a topic; each subscription a subscription (ack deadline 10 s).
    def _pubsub_clients(self) -> tuple[Any, Any]:
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    async def _create_google_pubsub(self) -> None:
        import asyncio

        project = os.environ["PUBSUB_PROJECT_ID"]
        names = {s: f"{self.name}.{s}" for s in self.subscriptions}

        def create() -> None:
            publisher, subscriber = self._pubsub_clients()
            topic = publisher.topic_path(project, self.name)
            publisher.create_topic(name=topic)
            for physical in names.values():
                subscriber.create_subscription(
                    name=subscriber.subscription_path(project, physical),
                    topic=topic,
                    ack_deadline_seconds=10,
                )
            subscriber.close()

        await asyncio.to_thread(create)
        self.route = {"name": self.name, "subscriptions": names}

    async def _delete_google_pubsub(self) -> None:
        import asyncio

        project = os.environ["PUBSUB_PROJECT_ID"]

        def delete() -> None:
            publisher, subscriber = self._pubsub_clients()
            for physical in self.route["subscriptions"].values():
                subscriber.delete_subscription(
                    subscription=subscriber.subscription_path(project, physical)
                )
            publisher.delete_topic(topic=publisher.topic_path(project, self.name))
            subscriber.close()

        await asyncio.to_thread(delete)

    # SQS: one queue per subscription (dots become dashes); the topic has no queue.
    def _sqs(self) -> Any:
        import aioboto3

        return aioboto3.Session().client(
            "sqs",
            region_name=os.environ["AWS_REGION"],
            endpoint_url=os.environ["SQS_ENDPOINT"],
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        )

    async def _create_aws_sqs(self) -> None:
        subs: dict[str, str] = {}
        async with self._sqs() as sqs:
            for sub in self.subscriptions:
                queue = f"{self.name}.{sub}".replace(".", "-")
                subs[sub] = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
        self.route = {"name": None, "subscriptions": subs}

    async def _delete_aws_sqs(self) -> None:
        async with self._sqs() as sqs:
            for url in self.route["subscriptions"].values():
                await sqs.delete_queue(QueueUrl=url)
