"""Fixtures of the provider tests: configs for the local stack's brokers.

Every test here talks to a real broker of `make testenv-up`; the environment
comes from the shell (`. .testenv/env`) or, failing that, from `.testenv/env`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider

ROOT = pathlib.Path(__file__).resolve().parents[2]
TYPES = list(models.MessageBrokerTypes)
#: The stack's values for the configs below; the RabbitMQ password and the SQS
#: keys go through SecretValues, as they do in the operator.
RABBIT_SECRET = ("rabbit-credentials", "password")
SQS_SECRET = ("sqs-keys", "access-key-id"), ("sqs-keys", "secret-access-key")
CLOSED_PORT = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/providers/" in str(item.fspath):
            item.add_marker(pytest.mark.stack)


def _load_env_file() -> None:
    path = pathlib.Path(os.environ.get("DUCTAPE_STATE_DIR") or ROOT / ".testenv") / "env"
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        for word in shlex.split(line[len("export ") :]):
            key, sep, value = word.partition("=")
            if sep and key != "PATH":
                os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        _load_env_file()
    needed = ["KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "AMQP_URL", "PUBSUB_EMULATOR_HOST"]
    needed += ["PUBSUB_PROJECT_ID", "SQS_ENDPOINT", "NATS_URL"]
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `make testenv-up` first")
    return dict(os.environ)


def _ref(name: str, key: str) -> dict[str, object]:
    return {"secretKeyRef": {"name": name, "key": key}}


def stack_config(
    type_: models.MessageBrokerTypes, env: dict[str, str], *, dead: bool = False
) -> tuple[models.BrokerConfig, base.SecretValues]:
    """A config (and its secret values) for the stack's broker of `type_`.

    With `dead`, the same config pointing at a closed port of localhost.
    """
    T = models.MessageBrokerTypes
    if type_ is T.KAFKA:
        brokers = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")
        if dead:
            brokers = [f"127.0.0.1:{CLOSED_PORT}"]
        return models.BrokerConfig.model_validate({"brokers": brokers}), base.SecretValues()
    if type_ is T.REDIS:
        url = urllib.parse.urlsplit(env["REDIS_URL"])
        raw: dict[str, object] = {
            "host": url.hostname,
            "port": CLOSED_PORT if dead else url.port or 6379,
            "db": int(url.path.lstrip("/") or 0),
        }
        return models.BrokerConfig.model_validate(raw), base.SecretValues()
    if type_ is T.RABBITMQ:
        url = urllib.parse.urlsplit(env["AMQP_URL"])
        raw = {
            "host": url.hostname,
            "port": CLOSED_PORT if dead else url.port or 5672,
            "username": urllib.parse.unquote(url.username or "guest"),
            "password": _ref(*RABBIT_SECRET),
        }
        secret = urllib.parse.unquote(url.password or "guest")
        return models.BrokerConfig.model_validate(raw), base.SecretValues({RABBIT_SECRET: secret})
    if type_ is T.GOOGLE_PUBSUB:
        raw = {
            "projectId": env["PUBSUB_PROJECT_ID"],
            "emulatorHost": f"127.0.0.1:{CLOSED_PORT}" if dead else env["PUBSUB_EMULATOR_HOST"],
        }
        return models.BrokerConfig.model_validate(raw), base.SecretValues()
    if type_ is T.AWS_SQS:
        raw = {
            "region": env.get("AWS_REGION", "us-east-1"),
            "endpoint": f"http://127.0.0.1:{CLOSED_PORT}" if dead else env["SQS_ENDPOINT"],
            "accessKeyId": _ref(*SQS_SECRET[0]),
            "secretAccessKey": _ref(*SQS_SECRET[1]),
        }
        values = {
            SQS_SECRET[0]: env.get("AWS_ACCESS_KEY_ID", "testing"),
            SQS_SECRET[1]: env.get("AWS_SECRET_ACCESS_KEY", "testing"),
        }
        return models.BrokerConfig.model_validate(raw), base.SecretValues(values)
    if type_ is T.NATS:
        servers = [f"nats://127.0.0.1:{CLOSED_PORT}"] if dead else env["NATS_URL"].split(",")
        return models.BrokerConfig.model_validate({"servers": servers}), base.SecretValues()
    raise ValueError(type_)


def unique_topic(
    subscriptions: tuple[str, ...] = ("billing", "shipping"), partitions: int | None = None
) -> base.TopicPlan:
    """A topic nobody else uses; the dot exercises SQS's dots-to-dashes rule."""
    suffix = uuid.uuid4().hex[:12]
    return base.TopicPlan(
        tag=f"t-{suffix}",
        name=f"ductape.t{suffix}",
        subscriptions=subscriptions,
        partitions=partitions,
    )


@pytest.fixture
async def provider(
    type_: models.MessageBrokerTypes, stack: dict[str, str]
) -> AsyncIterator[base.Provider]:
    """A started provider of `type_` (the test's parameter) on the stack's broker."""
    config, secrets = stack_config(type_, stack)
    async with build_provider(type_, config, secrets) as started:
        yield started


@pytest.fixture
async def plans(provider: base.Provider) -> AsyncIterator[list[base.TopicPlan]]:
    """Topics a test creates; deleted afterwards whatever happened."""
    created: list[base.TopicPlan] = []
    yield created
    for plan in created:
        with contextlib.suppress(errors.DuctapeError):
            await provider.delete_topic(plan)
