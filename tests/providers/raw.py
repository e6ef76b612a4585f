"""The provider tests' view of the raw broker kits (`tests/brokers/`): by broker type,
with the stack's settings as a mapping. Nothing here uses the operator's providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ductape_operator import models
from ductape_operator.providers import base
from tests.brokers import Observed, QueueSettings, kit
from tests.brokers import kafka as kafka_kit
from tests.brokers import rabbitmq as rabbitmq_kit
from tests.brokers import redis as redis_kit
from tests.brokers import sqs as sqs_kit

__all__ = [
    "Observed",
    "QueueSettings",
    "amqp",
    "create",
    "delete",
    "kafka_admin",
    "observe",
    "publish",
    "rabbit_queue_has_arguments",
    "read_settings",
    "receive",
    "redis_client",
    "sqs_client",
    "sqs_queue",
]

T = models.MessageBrokerTypes

kafka_admin = kafka_kit.admin
redis_client = redis_kit.client
amqp = rabbitmq_kit.connection
sqs_client = sqs_kit.client
sqs_queue = sqs_kit.queue_name
rabbit_queue_has_arguments = rabbitmq_kit.queue_has_arguments


async def observe(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    """What exists on the broker for `plan`, by the default physical names."""
    result: Observed = await kit(type_.value).observe(env, plan)
    return result


async def create(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> None:
    """Create the topic and its subscriptions as another tool would (for adoption)."""
    await kit(type_.value).create(env, plan)


async def delete(type_: T, env: Mapping[str, str], plan: base.TopicPlan) -> None:
    """Delete the topic (and, where they are separate things, its subscriptions)."""
    await kit(type_.value).delete(env, plan)


async def publish(entries: Mapping[str, str], location: base.TopicRoute, payload: bytes) -> None:
    """Publish one message to a topic, connecting with the Secret entries only."""
    await kit(entries["type"]).publish(entries, location.name, location.subscriptions, payload)


async def receive(
    entries: Mapping[str, str],
    location: base.TopicRoute,
    subscription: str,
    *,
    timeout: float = 20.0,
) -> list[bytes]:
    """Wait (up to `timeout`) for messages on a subscription; acknowledge them."""
    physical = location.subscriptions[subscription]
    got: list[bytes] = await kit(entries["type"]).receive(entries, location.name, physical, timeout)
    return got


async def read_settings(
    type_: T, env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """Per subscription (key None: the topic itself) the retention and dead-letter policy
    the broker holds, where the broker exposes them."""
    reader: Any = getattr(kit(type_.value), "read_settings", None)
    if reader is None:
        raise ValueError(f"{type_} exposes no settings to read back")
    settings: dict[str | None, QueueSettings] = await reader(env, plan)
    return settings
