"""The swap: the same application works on RabbitMQ, and on Kafka after its env moved there.

The application reads its binding from a folder kept in sync with the
connection Secret (what a Secret volume does), publishes and consumes through
`Broker.from_binding`, and never changes: the MessageBroker's env type does.
It runs before the swap and again after it (not across it: a client open
during the move keeps its old connection until it is started again).
"""

from __future__ import annotations

import pathlib
import time

from ductape_operator.messaging import Broker
from tests.e2e import kit

TAG = "orders"
DEADLINE = 60.0


def sync_folder(kube: kit.Kube, ns: str, secret_name: str, folder: pathlib.Path) -> str:
    """Mirror the Secret into `folder` (one file per entry); return its `type` entry."""
    secret = kube.secret(ns, secret_name)
    assert secret is not None, f"Secret {secret_name} is missing"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.name not in secret:
            stale.unlink()
    for key, value in secret.items():
        (folder / key).write_text(value)
    return secret["type"]


def secret_type(kube: kit.Kube, ns: str, secret_name: str) -> str | None:
    return (kube.secret(ns, secret_name) or {}).get("type")


async def application(folder: pathlib.Path, count: int) -> tuple[str, set[str], set[str]]:
    """The application, identical on every provider: publish `count`, consume them all."""
    async with (
        Broker.from_binding(path=folder, redelivery_timeout=5) as broker,
        broker.subscribe(TAG, "billing") as messages,
    ):
        sent = set(await broker.publish_many(TAG, [{"n": i} for i in range(count)]))
        got: set[str] = set()
        end = time.monotonic() + DEADLINE
        while not sent <= got and time.monotonic() < end:
            message = await messages.receive(timeout=max(0.1, end - time.monotonic()))
            if message is not None:
                got.add(message.id)
                await message.ack()
        return broker.binding.type, sent, got


async def test_the_same_application_works_before_and_after_a_rabbitmq_to_kafka_swap(
    kube: kit.Kube, namespace: str, tmp_path: pathlib.Path
) -> None:
    name = kit.unique("swap")
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    topics = [{"tag": TAG, "name": f"{name}.orders", "partitions": 2, "subscriptions": ["billing"]}]
    kube.apply(namespace, kit.broker_manifest(name, envs=[("dev", "RABBITMQ")], topics=topics))
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    folder = tmp_path / "bindings" / "message-bus"

    assert sync_folder(kube, namespace, f"{name}-dev", folder) == "rabbitmq"
    kind, sent, got = await application(folder, 20)
    assert kind == "rabbitmq"
    assert sent <= got, f"{len(sent - got)} of {len(sent)} messages lost on RabbitMQ"

    kube.patch(
        namespace,
        name,
        {"spec": {"envs": [{"slug": "dev", "type": "KAFKA", "config": kit.env_config("KAFKA")}]}},
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    kit.wait_until(
        lambda: (kube.secret(namespace, f"{name}-dev") or {}).get("type") == "kafka",
        timeout=DEADLINE,
        what="the Secret to switch to kafka",
    )

    assert sync_folder(kube, namespace, f"{name}-dev", folder) == "kafka"
    kind, sent, got = await application(folder, 20)
    assert kind == "kafka"
    assert sent <= got, f"{len(sent - got)} of {len(sent)} messages lost after the swap"


async def test_the_same_application_works_across_swaps_to_and_from_nats(
    kube: kit.Kube, namespace: str, tmp_path: pathlib.Path
) -> None:
    """Redis, then NATS, then RabbitMQ: the application never changes."""
    name = kit.unique("nswap")
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    topics = [{"tag": TAG, "name": f"{name}.orders", "subscriptions": ["billing"]}]
    kube.apply(namespace, kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=topics))
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    folder = tmp_path / "bindings" / "message-bus"
    for type_ in ("REDIS", "NATS", "RABBITMQ"):
        binding_type = type_.lower()
        if type_ != "REDIS":
            config = kit.env_config(type_)
            kube.patch(
                namespace,
                name,
                {"spec": {"envs": [{"slug": "dev", "type": type_, "config": config}]}},
            )
            kube.wait_condition(namespace, name, "True", "AllEnvsReady")
            kit.wait_until(
                lambda t=binding_type: secret_type(kube, namespace, f"{name}-dev") == t,
                timeout=DEADLINE,
                what=f"the Secret to switch to {binding_type}",
            )
        assert sync_folder(kube, namespace, f"{name}-dev", folder) == binding_type
        kind, sent, got = await application(folder, 20)
        assert kind == binding_type
        assert sent <= got, f"{len(sent - got)} of {len(sent)} messages lost on {type_}"
