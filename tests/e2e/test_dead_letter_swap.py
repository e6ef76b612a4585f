"""The swap with dead letters: RabbitMQ to SQS, the application function unchanged.

The same function runs on both: it publishes one message, nacks every delivery of
it, and reads it back from the dead-letter topic. On RabbitMQ the client counts and
moves it; on SQS the count is the broker's receive count (and its redrive policy is
the backstop). What the application sees must be the same.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

from ductape_operator.messaging import Broker
from tests.e2e import kit
from tests.e2e.test_messaging_swap import sync_folder

DEADLINE = 60.0
ATTEMPTS = 5


async def application(folder: pathlib.Path) -> dict[str, Any]:
    """Publish, nack every delivery, read the dead letter: what the application saw."""
    async with (
        Broker.from_binding(path=folder, redelivery_timeout=2) as broker,
        broker.subscribe("orders", "billing") as billing,
        broker.subscribe("orders-dead", "ops") as ops,
    ):
        sent = await broker.publish("orders", {"order": 1}, headers={"trace": "t-1"})
        deliveries = 0
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            message = await billing.receive(timeout=0.5)
            if message is not None:
                deliveries += 1
                await message.nack()
            dead = await ops.receive(timeout=0.1)
            if dead is not None:
                await dead.ack()
                return {
                    "type": broker.binding.type,
                    "deliveries": deliveries,
                    "same id": dead.id == sent,
                    "data": dead.json(),
                    "headers": dict(dead.headers),
                    "left on billing": await billing.receive(timeout=3) is not None,
                }
        pytest.fail(f"{broker.binding.type}: no dead letter after {deliveries} deliveries")


async def test_dead_letters_survive_rabbitmq_to_sqs_swap(
    kube: kit.Kube, namespace: str, tmp_path: pathlib.Path
) -> None:
    name = kit.unique("dlswap")
    for type_ in ("RABBITMQ", "AWS_SQS"):
        for secret_name, data in kit.credential_secrets(type_).items():
            kube.create_secret(namespace, secret_name, data)
    topics = [
        {
            "tag": "orders",
            "name": f"{name}.orders",
            "deadLetter": {"topic": "orders-dead", "maxDeliveryAttempts": ATTEMPTS},
            "subscriptions": ["billing"],
        },
        {"tag": "orders-dead", "name": f"{name}.dead", "subscriptions": ["ops"]},
    ]
    manifest = kit.broker_manifest(
        name, envs=[("dev", "RABBITMQ")], topics=topics, deletion_policy="Delete"
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    folder = tmp_path / "bindings" / "message-bus"
    assert sync_folder(kube, namespace, f"{name}-dev", folder) == "rabbitmq"
    on_rabbit = await application(folder)

    kube.patch(
        namespace,
        name,
        {
            "spec": {
                "envs": [{"slug": "dev", "type": "AWS_SQS", "config": kit.env_config("AWS_SQS")}]
            }
        },
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    kit.wait_until(
        lambda: (kube.secret(namespace, f"{name}-dev") or {}).get("type") == "aws-sqs",
        timeout=DEADLINE,
        what="the Secret to switch to aws-sqs",
    )
    assert sync_folder(kube, namespace, f"{name}-dev", folder) == "aws-sqs"
    on_sqs = await application(folder)

    expected = {
        "deliveries": ATTEMPTS,
        "same id": True,
        "data": {"order": 1},
        "headers": {
            "trace": "t-1",
            "dead-letter-topic": "orders",
            "dead-letter-subscription": "billing",
            "dead-letter-delivery-count": str(ATTEMPTS),
        },
        "left on billing": False,
    }
    assert on_rabbit == {"type": "rabbitmq", **expected}
    assert on_sqs == {"type": "aws-sqs", **expected}
