"""The raw Pub/Sub kit (see `tests/brokers/__init__.py`): google-cloud-pubsub's own
clients, pointed at the emulator with an explicit channel (not `PUBSUB_EMULATOR_HOST`
in the process environment)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from google.api_core.exceptions import NotFound
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from ductape_operator.providers import base
from tests.brokers import Observed, QueueSettings


@contextmanager
def clients(emulator: str) -> Iterator[tuple[Any, Any]]:
    """A publisher and a subscriber of the emulator at `emulator` (host:port), closed after."""
    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(host=emulator, channel=grpc.insecure_channel(emulator))
    )
    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(host=emulator, channel=grpc.insecure_channel(emulator))
    )
    try:
        yield publisher, subscriber
    finally:
        subscriber.close()
        publisher.transport.close()


def _stack(env: Mapping[str, str]) -> tuple[str, str]:
    return env["PUBSUB_EMULATOR_HOST"], env["PUBSUB_PROJECT_ID"]


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    emulator, project = _stack(env)
    subs = [base.default_subscription_name(plan.name, s) for s in plan.subscriptions]

    def look() -> Observed:
        with clients(emulator) as (pub, sub):
            topic_path = pub.topic_path(project, plan.name)
            try:
                pub.get_topic(request={"topic": topic_path})
                topic = True
            except NotFound:
                topic = False
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
            return Observed(topic=topic, subscriptions=found)

    return await asyncio.to_thread(look)


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    emulator, project = _stack(env)

    def make() -> None:
        with clients(emulator) as (pub, sub):
            topic_path = pub.topic_path(project, plan.name)
            pub.create_topic(request={"name": topic_path})
            for name in plan.subscriptions:
                sid = base.default_subscription_name(plan.name, name)
                sub.create_subscription(
                    request={"name": sub.subscription_path(project, sid), "topic": topic_path}
                )

    await asyncio.to_thread(make)


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    """Only the topic: its subscriptions stay, detached, as on Google Cloud."""
    emulator, project = _stack(env)

    def drop() -> None:
        with clients(emulator) as (pub, _sub):
            pub.delete_topic(request={"topic": pub.topic_path(project, plan.name)})

    await asyncio.to_thread(drop)


async def exists(env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]) -> bool:
    emulator, project = _stack(env)

    def check() -> bool:
        with clients(emulator) as (pub, sub):
            try:
                pub.get_topic(request={"topic": pub.topic_path(project, name)})
                for sid in subscriptions.values():
                    sub.get_subscription(
                        request={"subscription": sub.subscription_path(project, sid)}
                    )
                return True
            except NotFound:
                return False

    return await asyncio.to_thread(check)


async def delete_out_of_band(
    env: Mapping[str, str], name: str, subscriptions: Mapping[str, str]
) -> None:
    emulator, project = _stack(env)

    def drop() -> None:
        with clients(emulator) as (pub, sub):
            for sid in subscriptions.values():
                sub.delete_subscription(
                    request={"subscription": sub.subscription_path(project, sid)}
                )
            pub.delete_topic(request={"topic": pub.topic_path(project, name)})

    await asyncio.to_thread(drop)


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    def send() -> None:
        with clients(entries["emulator-host"]) as (pub, _sub):
            path = pub.topic_path(entries["project-id"], str(name))
            pub.publish(path, payload).result(timeout=30)

    await asyncio.to_thread(send)


def pull_raw(
    emulator: str, project: str, physical: str, *, count: int, timeout: float
) -> list[Any]:
    """Pull subscription `physical` until `count` messages came (whole pulls, so the last
    may bring more) or `timeout` passed, acknowledging each pull; the messages as the SDK
    hands them over (data, attributes, message_id). Blocking: run it in a thread."""
    end = time.monotonic() + timeout
    got: list[Any] = []
    with clients(emulator) as (_pub, sub):
        path = sub.subscription_path(project, physical)
        while len(got) < count and time.monotonic() < end:
            reply = sub.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
            if reply.received_messages:
                sub.acknowledge(
                    request={
                        "subscription": path,
                        "ack_ids": [m.ack_id for m in reply.received_messages],
                    }
                )
                got += [m.message for m in reply.received_messages]
    return got


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    """The payloads of the first pull that brings any, or [] after `timeout`."""
    messages = await asyncio.to_thread(
        pull_raw, entries["emulator-host"], entries["project-id"], physical,
        count=1, timeout=timeout,
    )  # fmt: skip
    return [m.data for m in messages]


async def read_settings(
    env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """The topic's retention (key None) and each subscription's retention and
    dead-letter policy (target: the topic id)."""
    emulator, project = _stack(env)

    def read() -> dict[str | None, QueueSettings]:
        with clients(emulator) as (pub, sub):
            topic = pub.get_topic(request={"topic": pub.topic_path(project, plan.name)})
            seconds = int(topic.message_retention_duration.total_seconds())
            found: dict[str | None, QueueSettings] = {None: QueueSettings(seconds or None)}
            for name in plan.subscriptions:
                sid = base.default_subscription_name(plan.name, name)
                got = sub.get_subscription(
                    request={"subscription": sub.subscription_path(project, sid)}
                )
                policy = got.dead_letter_policy
                found[name] = QueueSettings(
                    int(got.message_retention_duration.total_seconds()),
                    (policy.dead_letter_topic.rsplit("/", 1)[-1], policy.max_delivery_attempts)
                    if policy.dead_letter_topic
                    else None,
                )
            return found

    return await asyncio.to_thread(read)
