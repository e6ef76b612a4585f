"""Each broker's connection Secret entries are written and read by one definition
(`brokers/<name>/entries.py`): what the operator side writes, the client side reads
back as it was written."""

from __future__ import annotations

from typing import Any

import pytest

from ductape_operator import brokers
from ductape_operator.brokers.kafka.entries import Entries as KafkaEntries
from ductape_operator.brokers.nats.entries import Entries as NatsEntries
from ductape_operator.brokers.pubsub.entries import Entries as PubSubEntries
from ductape_operator.brokers.rabbitmq.entries import Entries as RabbitEntries
from ductape_operator.brokers.redis.entries import Entries as RedisEntries
from ductape_operator.brokers.sqs.entries import Entries as SQSEntries
from ductape_operator.messaging import Binding

CASES: list[tuple[str, Any]] = [
    ("KAFKA", KafkaEntries(bootstrap_servers=("k1:9092", "k2:9092"))),
    (
        "KAFKA",
        KafkaEntries(
            bootstrap_servers=("k1:9093",),
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            username="app",
            password="p@ss:w/rd",
        ),
    ),
    ("REDIS", RedisEntries(host="redis.local")),
    (
        "REDIS",
        RedisEntries(
            host="redis.local", port=6380, database=3, username="u", password="p@ss", tls=True
        ),
    ),
    ("RABBITMQ", RabbitEntries(host="mq.local")),
    (
        "RABBITMQ",
        RabbitEntries(
            host="mq.local", port=5671, vhost="/shop a", username="u", password="p:w", tls=True
        ),
    ),
    ("GOOGLE_PUBSUB", PubSubEntries(project_id="shop", emulator_host="127.0.0.1:8085")),
    ("GOOGLE_PUBSUB", PubSubEntries(project_id="shop", credentials_json='{"type": "x"}')),
    ("AWS_SQS", SQSEntries(region="eu-west-1")),
    (
        "AWS_SQS",
        SQSEntries(
            region="eu-west-1",
            endpoint_url="http://127.0.0.1:9324",
            access_key_id="AKIA",
            secret_access_key="secret",
        ),
    ),
    ("NATS", NatsEntries(servers=("nats://n1:4222", "nats://n2:4222"))),
    ("NATS", NatsEntries(servers=("tls://n1:4222",), username="u", password="p@ss")),
    ("NATS", NatsEntries(servers=("nats://n1:4222",), credentials="p:w")),
]


@pytest.mark.parametrize(("type_name", "entries"), CASES)
def test_what_the_operator_writes_the_client_reads(type_name: str, entries: Any) -> None:
    written = entries.write()
    kind = brokers.kind(type_name)
    assert set(written) <= set(kind.entries) | {"uri"}
    binding = Binding.from_mapping({"type": kind.binding_type, "topics.json": "{}", **written})
    assert type(entries).read(binding) == entries
    assert written["uri"].startswith(entries.endpoint.split("://")[0])


@pytest.mark.parametrize(
    ("entries_type", "uri", "expected"),
    [
        (
            RedisEntries,
            "rediss://u:p%40ss@redis.local:6380/2",
            RedisEntries(
                host="redis.local", port=6380, database=2, username="u", password="p@ss", tls=True
            ),
        ),
        (RedisEntries, "redis://redis.local", RedisEntries(host="redis.local")),
        (
            RabbitEntries,
            "amqps://u:p@mq.local/shop",
            RabbitEntries(
                host="mq.local", port=5671, vhost="shop", username="u", password="p", tls=True
            ),
        ),
    ],
)
def test_a_uri_alone_is_enough(entries_type: Any, uri: str, expected: Any) -> None:
    kind = "redis" if entries_type is RedisEntries else "rabbitmq"
    binding = Binding.from_mapping({"type": kind, "topics.json": "{}", "uri": uri})
    assert entries_type.read(binding) == expected


def test_credentials_stay_out_of_the_endpoint_and_repr() -> None:
    for _, entries in CASES:
        for secret in ("p@ss", "p:w", "secret", '{"type": "x"}', "p@ss:w/rd"):
            assert secret not in entries.endpoint
            assert secret not in repr(entries)
