"""Provision a topic with subscriptions through the operator's providers.

This is the contract test between the two halves of the project: the topic,
its subscriptions and the connection Secret's entries are made exactly as the
operator makes them (`providers.build_provider`, `ensure_topic`, `binding()`,
plus the common entries of README.md, "The connection Secret"), and the client must work from
those entries alone. The broker configs come from the local stack's environment
(`.testenv/env`).
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.parse
import uuid
from collections.abc import Mapping

from ductape_operator import models, providers
from ductape_operator.providers import base

T = models.MessageBrokerTypes
#: Provider types by binding `type`, and the variables each needs.
TYPES: Mapping[str, models.MessageBrokerTypes] = {t.binding_type: t for t in T}
PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS",),
    "redis": ("REDIS_URL",),
    "rabbitmq": ("AMQP_URL",),
    "google-pubsub": ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID"),
    "aws-sqs": ("SQS_ENDPOINT", "AWS_REGION"),
    "nats": ("NATS_URL",),
}
_RABBIT = ("rabbit", "password")
_SQS = (("sqs", "access-key-id"), ("sqs", "secret-access-key"))


def missing(kind: str) -> list[str]:
    return [v for v in PROVIDERS[kind] if not os.environ.get(v)]


def _ref(secret: tuple[str, str]) -> dict[str, object]:
    return {"secretKeyRef": {"name": secret[0], "key": secret[1]}}


def config(kind: str) -> tuple[models.BrokerConfig, base.SecretValues]:
    """The MessageBroker env config (and Secret values) of the local broker of `kind`."""
    env = os.environ
    raw: dict[str, object]
    values: dict[tuple[str, str], str] = {}
    if kind == "kafka":
        raw = {"brokers": env["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    elif kind == "redis":
        url = urllib.parse.urlsplit(env["REDIS_URL"])
        raw = {"host": url.hostname, "port": url.port or 6379, "db": int(url.path[1:] or 0)}
    elif kind == "rabbitmq":
        url = urllib.parse.urlsplit(env["AMQP_URL"])
        raw = {
            "host": url.hostname,
            "port": url.port or 5672,
            "username": urllib.parse.unquote(url.username or "guest"),
            "password": _ref(_RABBIT),
        }
        values[_RABBIT] = urllib.parse.unquote(url.password or "guest")
    elif kind == "google-pubsub":
        raw = {"projectId": env["PUBSUB_PROJECT_ID"], "emulatorHost": env["PUBSUB_EMULATOR_HOST"]}
    elif kind == "nats":
        raw = {"servers": env["NATS_URL"].split(",")}
    else:
        raw = {
            "region": env["AWS_REGION"],
            "endpoint": env["SQS_ENDPOINT"],
            "accessKeyId": _ref(_SQS[0]),
            "secretAccessKey": _ref(_SQS[1]),
        }
        values[_SQS[0]] = env.get("AWS_ACCESS_KEY_ID", "test")
        values[_SQS[1]] = env.get("AWS_SECRET_ACCESS_KEY", "test")
    return models.BrokerConfig.model_validate(raw), base.SecretValues(values)


class Provisioned:
    """One topic with its subscriptions on one broker; `delete()` removes them."""

    def __init__(self, kind: str, tag: str, subscriptions: tuple[str, ...]) -> None:
        self.kind = kind
        self.tag = tag
        #: Unique: other engineers share the brokers.
        self.name = f"msg.{uuid.uuid4().hex[:10]}"
        self.subscriptions = subscriptions
        self.location: base.TopicRoute | None = None
        self._binding: dict[str, str] = {}

    @property
    def plan(self) -> base.TopicPlan:
        # Two partitions, so that two Kafka consumers of a group both get work.
        return base.TopicPlan(self.tag, self.name, self.subscriptions, partitions=2)

    def _provider(self) -> base.Provider:
        return providers.build_provider(TYPES[self.kind], *config(self.kind))

    async def create(self) -> None:
        async with self._provider() as provider:
            self.location = await provider.ensure_topic(self.plan)
            self._binding = provider.binding()

    async def delete(self) -> None:
        async with self._provider() as provider:
            await provider.delete_topic(self.plan)

    @property
    def route(self) -> dict[str, object]:
        assert self.location is not None, "create() first"
        return self.location.as_json()

    def subscription(self, name: str) -> str:
        """The physical name of a subscription (group, queue, queue URL...)."""
        assert self.location is not None, "create() first"
        return self.location.subscriptions[name]

    def entries(self) -> dict[str, str]:
        """The connection Secret's entries, as the operator writes them."""
        return {
            **self._binding,
            "type": self.kind,
            "provider": "ductape",
            "broker-tag": "message-bus",
            "env": "test",
            "topics.json": json.dumps({self.tag: self.route}),
        }

    def write(self, folder: pathlib.Path) -> pathlib.Path:
        """Write the entries as a binding folder (one file per entry)."""
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in self.entries().items():
            (folder / key).write_text(value)
        return folder
