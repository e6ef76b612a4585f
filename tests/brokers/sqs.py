"""The raw SQS kit (see `tests/brokers/__init__.py`): aioboto3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aioboto3
from botocore.exceptions import ClientError

from ductape_operator.providers import base
from tests.brokers import Observed, QueueSettings


def client(env: Mapping[str, str]) -> Any:
    """A client of the stack's SQS (`SQS_ENDPOINT`), as an async context manager."""
    return aioboto3.Session().client(
        "sqs",
        endpoint_url=env["SQS_ENDPOINT"],
        region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def _from_entries(entries: Mapping[str, str]) -> Any:
    return aioboto3.Session().client(
        "sqs",
        endpoint_url=entries.get("endpoint") or None,
        region_name=entries["region"],
        aws_access_key_id=entries.get("access-key-id"),
        aws_secret_access_key=entries.get("secret-access-key"),
    )


def queue_name(topic: str, sub: str | None = None) -> str:
    """The default queue name of a topic (without subscriptions) or of a subscription."""
    name = topic if sub is None else f"{topic}-{sub}"
    return name.replace(".", "-")


def _names(plan: base.TopicPlan) -> list[str]:
    return [queue_name(plan.name, s) for s in plan.subscriptions] or [queue_name(plan.name)]


async def observe(env: Mapping[str, str], plan: base.TopicPlan) -> Observed:
    found: set[str] = set()
    async with client(env) as sqs:
        for queue in _names(plan):
            try:
                reply = await sqs.get_queue_url(QueueName=queue)
                found.add(reply["QueueUrl"])
            except ClientError:
                pass
    return Observed(topic=bool(found), subscriptions=found if plan.subscriptions else set())


async def create(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as sqs:
        for queue in _names(plan):
            await sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "45"})


async def delete(env: Mapping[str, str], plan: base.TopicPlan) -> None:
    async with client(env) as sqs:
        for queue in _names(plan):
            url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
            await sqs.delete_queue(QueueUrl=url)


def _urls(name: str | None, subscriptions: Mapping[str, str]) -> list[str]:
    """A topic without subscriptions is one queue (`name`); else one queue per subscription."""
    return [name] if name else list(subscriptions.values())


async def exists(
    env: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str]
) -> bool:
    urls = _urls(name, subscriptions)
    async with client(env) as sqs:
        for url in urls:
            try:
                await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            except ClientError:
                return False
    return bool(urls)


async def delete_out_of_band(
    env: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str]
) -> None:
    async with client(env) as sqs:
        for url in _urls(name, subscriptions):
            await sqs.delete_queue(QueueUrl=url)


async def publish(
    entries: Mapping[str, str], name: str | None, subscriptions: Mapping[str, str], payload: bytes
) -> None:
    async with _from_entries(entries) as sqs:
        for url in _urls(name, subscriptions):
            await sqs.send_message(QueueUrl=url, MessageBody=payload.decode())


async def receive(
    entries: Mapping[str, str], name: str | None, physical: str, timeout: float
) -> list[bytes]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with _from_entries(entries) as sqs:
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


async def read_settings(
    env: Mapping[str, str], plan: base.TopicPlan
) -> dict[str | None, QueueSettings]:
    """Each subscription queue's retention and redrive policy (target: the queue name)."""
    found: dict[str | None, QueueSettings] = {}
    async with client(env) as sqs:
        for sub in plan.subscriptions:
            url = (await sqs.get_queue_url(QueueName=queue_name(plan.name, sub)))["QueueUrl"]
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
