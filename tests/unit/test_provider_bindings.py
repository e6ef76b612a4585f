"""Provider naming, endpoints and Secret entries, built from configs with no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ductape_operator import errors, models
from ductape_operator.brokers.kafka import operator as kafka
from ductape_operator.brokers.rabbitmq import operator as rabbitmq
from ductape_operator.brokers.sqs import operator as sqs
from ductape_operator.providers import base, build_provider

T = models.MessageBrokerTypes


def ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def make(type_: T, raw: dict[str, Any], values: dict[tuple[str, str], str] | None = None) -> Any:
    config = models.BrokerConfig.model_validate(raw)
    return build_provider(type_, config, base.SecretValues(values or {}))


def test_kafka_plain() -> None:
    provider = make(T.KAFKA, {"brokers": ["k1:9092", "k2:9092"]})
    assert provider.type is T.KAFKA
    assert provider.endpoint == "kafka://k1:9092,k2:9092"
    assert provider.binding() == {
        "uri": "kafka://k1:9092,k2:9092",
        "bootstrap-servers": "k1:9092,k2:9092",
        "security-protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize(
    ("ssl", "mechanism", "protocol", "wire"),
    [
        (True, "scram-sha-512", "SASL_SSL", "SCRAM-SHA-512"),
        (False, "plain", "SASL_PLAINTEXT", "PLAIN"),
        (None, "scram-sha-256", "SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ],
)
def test_kafka_sasl(ssl: bool | None, mechanism: str, protocol: str, wire: str) -> None:
    raw: dict[str, Any] = {
        "brokers": ["k1:9093"],
        "sasl": {"mechanism": mechanism, "username": "shop", "password": ref("k", "pw")},
    }
    if ssl is not None:
        raw["ssl"] = ssl
    provider = make(T.KAFKA, raw, {("k", "pw"): "s3cret"})
    entries = provider.binding()
    assert entries["security-protocol"] == protocol
    assert entries["sasl-mechanism"] == wire
    assert entries["username"] == "shop"
    assert entries["password"] == "s3cret"
    assert "s3cret" not in entries["uri"] and "s3cret" not in provider.endpoint


def test_kafka_ssl_without_sasl() -> None:
    entries = make(T.KAFKA, {"brokers": ["k1:9093"], "ssl": True}).binding()
    assert entries["security-protocol"] == "SSL"
    assert "sasl-mechanism" not in entries and "password" not in entries


def test_kafka_group_ids() -> None:
    assert kafka.group_id("orders.created", "billing") == "orders.created.billing"


def test_redis_defaults() -> None:
    provider = make(T.REDIS, {"host": "redis.dev.svc"})
    assert provider.endpoint == "redis://redis.dev.svc:6379/0"
    assert provider.binding() == {
        "uri": "redis://redis.dev.svc:6379/0",
        "host": "redis.dev.svc",
        "port": "6379",
        "database": "0",
    }


def test_redis_with_credentials_and_tls() -> None:
    raw = {
        "host": "r",
        "port": 6380,
        "db": 3,
        "tls": True,
        "username": "app",
        "password": ref("r", "pw"),
    }
    provider = make(T.REDIS, raw, {("r", "pw"): "p@ss/word"})
    assert provider.endpoint == "rediss://r:6380/3"
    entries = provider.binding()
    assert entries["uri"] == "rediss://app:p%40ss%2Fword@r:6380/3"
    assert entries["username"] == "app" and entries["password"] == "p@ss/word"
    assert entries["database"] == "3" and entries["port"] == "6380"


def test_redis_password_only() -> None:
    provider = make(T.REDIS, {"host": "r", "password": ref("r", "pw")}, {("r", "pw"): "pw"})
    entries = provider.binding()
    assert entries["uri"] == "redis://:pw@r:6379/0"
    assert "username" not in entries


def test_rabbitmq_defaults() -> None:
    provider = make(T.RABBITMQ, {"host": "mq"})
    assert provider.endpoint == "amqp://mq:5672/%2F"
    assert provider.binding() == {
        "uri": "amqp://mq:5672/%2F",
        "host": "mq",
        "port": "5672",
        "virtual-host": "/",
    }


def test_rabbitmq_with_credentials_vhost_and_tls() -> None:
    raw = {
        "host": "mq",
        "tls": True,
        "vhost": "shop/prd",
        "username": "shop",
        "password": ref("mq", "pw"),
    }
    provider = make(T.RABBITMQ, raw, {("mq", "pw"): "a:b"})
    assert provider.endpoint == "amqps://mq:5671/shop%2Fprd"
    entries = provider.binding()
    assert entries["uri"] == "amqps://shop:a%3Ab@mq:5671/shop%2Fprd"
    assert entries["virtual-host"] == "shop/prd"
    assert entries["username"] == "shop" and entries["password"] == "a:b"
    assert entries["port"] == "5671"


def test_rabbitmq_queue_names() -> None:
    assert rabbitmq.queue_name("orders.created", "billing") == "orders.created.billing"


def test_pubsub_emulator() -> None:
    provider = make(T.GOOGLE_PUBSUB, {"projectId": "shop-dev", "emulatorHost": "ps:8085"})
    assert provider.endpoint == "http://ps:8085/projects/shop-dev"
    assert provider.binding() == {
        "uri": "http://ps:8085/projects/shop-dev",
        "project-id": "shop-dev",
        "emulator-host": "ps:8085",
    }


def test_pubsub_cloud_with_key() -> None:
    key = json.dumps({"type": "service_account", "private_key": "-----BEGIN..."})
    raw = {"projectId": "shop-prd", "credentials": ref("gcp", "key.json")}
    provider = make(T.GOOGLE_PUBSUB, raw, {("gcp", "key.json"): key})
    assert provider.endpoint == "pubsub://projects/shop-prd"
    entries = provider.binding()
    assert entries["credentials.json"] == key
    assert "emulator-host" not in entries
    assert "BEGIN" not in entries["uri"]


def test_sqs() -> None:
    raw = {
        "region": "eu-west-1",
        "endpoint": "http://sqs.local:9324",
        "accessKeyId": ref("aws", "id"),
        "secretAccessKey": ref("aws", "secret"),
    }
    provider = make(T.AWS_SQS, raw, {("aws", "id"): "AKIA1", ("aws", "secret"): "shh"})
    assert provider.endpoint == "http://sqs.local:9324"
    assert provider.binding() == {
        "uri": "http://sqs.local:9324",
        "region": "eu-west-1",
        "endpoint": "http://sqs.local:9324",
        "access-key-id": "AKIA1",
        "secret-access-key": "shh",
    }
    assert make(T.AWS_SQS, {"region": "eu-west-1"}).binding() == {
        "uri": "sqs://eu-west-1",
        "region": "eu-west-1",
    }


def test_sqs_queue_names() -> None:
    assert sqs.queue_name("orders.created", "billing") == "orders-created-billing"
    assert sqs.queue_name("orders.created") == "orders-created"
    plan = base.TopicPlan(tag="t", name="a.b", subscriptions=("x", "y"))
    assert sqs.queue_names(plan) == {"x": "a-b-x", "y": "a-b-y"}
    assert sqs.queue_names(base.TopicPlan(tag="t", name="a.b")) == {None: "a-b"}


async def test_sqs_rejects_a_queue_name_too_long_before_any_io() -> None:
    provider = make(T.AWS_SQS, {"region": "eu-west-1", "endpoint": "http://127.0.0.1:1"})
    plan = base.TopicPlan(tag="t", name="x" * 70, subscriptions=("subscription",))
    with pytest.raises(errors.InvalidConfigError, match="not a valid SQS queue name") as caught:
        await provider.ensure_topic(plan)
    assert not caught.value.retriable


@pytest.mark.parametrize(
    ("type_", "raw"),
    [
        (T.REDIS, {"host": "r", "password": ref("gone", "pw")}),
        (T.RABBITMQ, {"host": "mq", "password": ref("gone", "pw")}),
        (T.AWS_SQS, {"region": "r", "accessKeyId": ref("gone", "pw")}),
        (
            T.KAFKA,
            {
                "brokers": ["k:1"],
                "sasl": {"mechanism": "plain", "username": "u", "password": ref("gone", "pw")},
            },
        ),
        (T.GOOGLE_PUBSUB, {"projectId": "p-1", "credentials": ref("gone", "pw")}),
    ],
)
def test_a_missing_secret_value_is_named(type_: T, raw: dict[str, Any]) -> None:
    with pytest.raises(errors.SecretNotFoundError) as caught:
        make(type_, raw)
    assert caught.value.secret_name == "gone"


@pytest.mark.parametrize("type_", list(T))
def test_a_missing_required_field_is_invalid_config(type_: T) -> None:
    with pytest.raises(errors.InvalidConfigError):
        build_provider(type_, models.BrokerConfig(), base.SecretValues())


async def test_closing_an_unstarted_provider_closes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = make(T.REDIS, {"host": "r"})
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    monkeypatch.setattr(provider, "_close", close)
    await provider.aclose()
    await provider.aclose()
    assert closed == [], "aclose() of a provider never started talked to its broker"
