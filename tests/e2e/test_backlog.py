"""The operator's backlog metrics, end to end: one MessageBroker with an env on every
provider, an application publishing and consuming through the messaging client, and
the figures read from the operator's metrics port (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import pathlib
import time

from ductape_operator.messaging import Broker
from tests.e2e import kit
from tests.e2e.conftest import HEALTH_INTERVAL, OperatorProcess
from tests.e2e.test_messaging_swap import sync_folder

TAG = "orders"
DEADLINE = 60.0
#: Two health intervals, and slack for a machine shared by several test runs.
WITHIN = 2 * HEALTH_INTERVAL + 20
ENVS = [
    ("kaf", "KAFKA"),
    ("red", "REDIS"),
    ("rab", "RABBITMQ"),
    ("sqs", "AWS_SQS"),
    ("pub", "GOOGLE_PUBSUB"),
]
#: Envs whose broker counts what was published to a topic.
COUNTED = {"kaf", "red"}
#: Envs whose broker gives the oldest waiting message's age.
AGED = {"kaf", "red"}
#: Envs with no backlog reading at all (Pub/Sub: Cloud Monitoring only).
ABSENT = {"pub"}


async def consume(folder: pathlib.Path, subscription: str, count: int) -> None:
    """Receive and ack `count` messages, then stop (the rest stays on the broker)."""
    async with (
        Broker.from_binding(path=folder, redelivery_timeout=5) as broker,
        broker.subscribe(TAG, subscription, prefetch=1) as messages,
    ):
        end = time.monotonic() + DEADLINE
        acked = 0
        while acked < count:
            assert time.monotonic() < end, f"{acked} of {count} messages on {subscription}"
            message = await messages.receive(timeout=max(0.1, end - time.monotonic()))
            if message is not None:
                await message.ack()
                acked += 1


async def publish(folder: pathlib.Path, count: int) -> None:
    async with Broker.from_binding(path=folder) as broker:
        await broker.publish_many(TAG, [{"n": n} for n in range(count)])


def backlog(operator: OperatorProcess, ns: str, name: str) -> dict[tuple[str, str], float]:
    """(env, subscription) -> backlog, from the metrics port."""
    found = kit.samples(
        operator.metrics(), "ductape_subscription_backlog_messages", namespace=ns, name=name
    )
    return {
        (dict(labels)["env"], dict(labels)["subscription"]): value
        for labels, value in found.items()
        if dict(labels)["topic"] == TAG
    }


def published(operator: OperatorProcess, ns: str, name: str) -> dict[str, float]:
    found = kit.samples(operator.metrics(), "ductape_topic_messages_total", namespace=ns, name=name)
    return {dict(labels)["env"]: value for labels, value in found.items()}


def wait_backlog(
    operator: OperatorProcess, ns: str, name: str, billing: int, shipping: int
) -> dict[tuple[str, str], float]:
    want = {
        (slug, sub): float(count)
        for slug, _ in ENVS
        if slug not in ABSENT
        for sub, count in (("billing", billing), ("shipping", shipping))
    }
    seen: dict[tuple[str, str], float] = {}

    def matches() -> bool:
        seen.clear()
        seen.update(backlog(operator, ns, name))
        return seen == want

    kit.wait_until(matches, timeout=WITHIN, what=f"backlog {want} (seen {seen})")
    return seen


async def test_backlog_per_subscription_on_every_provider(
    kube: kit.Kube, namespace: str, operator: OperatorProcess, tmp_path: pathlib.Path
) -> None:
    name = kit.unique("backlog")
    for _, type_ in ENVS:
        for secret_name, data in kit.credential_secrets(type_).items():
            if kube.secret(namespace, secret_name) is None:
                kube.create_secret(namespace, secret_name, data)
    topics = [
        {
            "tag": TAG,
            "name": f"{name}-orders",
            "partitions": 2,
            "subscriptions": ["billing", "shipping"],
        }
    ]
    kube.apply(namespace, kit.broker_manifest(name, envs=ENVS, topics=topics))
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    folders = {slug: tmp_path / slug for slug, _ in ENVS}
    for slug, folder in folders.items():
        sync_folder(kube, namespace, f"{name}-{slug}", folder)

    wait_backlog(operator, namespace, name, 0, 0)
    before = published(operator, namespace, name)
    assert set(before) == COUNTED, f"publish counts for {sorted(before)}"

    for folder in folders.values():
        await publish(folder, 7)
        await consume(folder, "billing", 3)
    wait_backlog(operator, namespace, name, 4, 7)
    after = published(operator, namespace, name)
    assert {slug: after[slug] - before[slug] for slug in COUNTED} == dict.fromkeys(COUNTED, 7)
    assert not [key for key in backlog(operator, namespace, name) if key[0] in ABSENT]
    ages = kit.samples(
        operator.metrics(),
        "ductape_subscription_oldest_message_age_seconds",
        namespace=namespace,
        name=name,
    )
    assert {dict(labels)["env"] for labels in ages} == AGED, ages
    assert all(0 <= age < 300 for age in ages.values()), ages

    for folder in folders.values():
        await consume(folder, "billing", 4)
        await consume(folder, "shipping", 7)
    wait_backlog(operator, namespace, name, 0, 0)

    # The series go with the resource.
    kube.delete(namespace, name)
    kit.wait_until(
        lambda: kube.get(namespace, name) is None, timeout=DEADLINE, what=f"{name} deleted"
    )
    kit.wait_until(
        lambda: not backlog(operator, namespace, name) and not published(operator, namespace, name),
        timeout=WITHIN,
        what="the backlog series of the deleted resource to go",
    )
    assert "Traceback" not in operator.log()
