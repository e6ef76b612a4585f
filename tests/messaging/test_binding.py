"""Unit tests (no broker): reading bindings, encoding payloads, the SQS body rule."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from ductape_operator import errors
from ductape_operator.brokers.sqs import client as sqs_
from ductape_operator.messaging import Binding, BindingError, Broker, env_variable_names
from ductape_operator.messaging import message as message_

TOPICS = {"order-created": {"name": "orders.created", "subscriptions": {"billing": "orders.b"}}}
ENTRIES = {
    "type": "kafka",
    "provider": "ductape",
    "bootstrap-servers": "k1:9092,k2:9092",
    "topics.json": json.dumps(TOPICS),
}


def write(folder: pathlib.Path, entries: dict[str, str]) -> pathlib.Path:
    folder.mkdir(parents=True)
    for key, value in entries.items():
        (folder / key).write_text(value + "\n")
    return folder


def test_folder_under_service_binding_root(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "bus", ENTRIES)
    # What a Secret volume also holds: Kubernetes' own hidden entries.
    (tmp_path / "bus" / "..data").mkdir()
    binding = Binding.load("bus", environ={"SERVICE_BINDING_ROOT": str(tmp_path)})
    assert binding.type == "kafka"
    assert binding.source == str(tmp_path / "bus")
    assert binding.require("bootstrap-servers") == "k1:9092,k2:9092"
    assert binding.topic("order-created").name == "orders.created"
    assert binding.subscription("order-created", "billing") == "orders.b"


def test_the_only_folder_is_used_without_a_name(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "only", ENTRIES)
    binding = Binding.load(environ={"SERVICE_BINDING_ROOT": str(tmp_path)})
    assert binding.source.endswith("only")


def test_several_folders_without_a_name_is_an_error(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "one", ENTRIES)
    write(tmp_path / "two", ENTRIES)
    with pytest.raises(BindingError, match=r"several bindings.*one, two"):
        Binding.load(environ={"SERVICE_BINDING_ROOT": str(tmp_path)})


def test_missing_folder_names_where_it_looked(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BindingError) as caught:
        Binding.load("bus", environ={"SERVICE_BINDING_ROOT": str(tmp_path)})
    assert "$SERVICE_BINDING_ROOT/bus" in str(caught.value)
    assert "DUCTAPE_" in str(caught.value)
    assert isinstance(caught.value, errors.InvalidConfigError)
    assert not caught.value.retriable


def test_nothing_anywhere() -> None:
    with pytest.raises(BindingError, match=r"SERVICE_BINDING_ROOT \(not set\)"):
        Binding.load(environ={})


def test_env_from_with_prefix_keeps_keys_verbatim() -> None:
    environ = {f"DUCTAPE_{k}": v for k, v in ENTRIES.items()}
    binding = Binding.load(environ=environ)
    assert binding.require("bootstrap-servers") == "k1:9092,k2:9092"
    assert binding.source == "environment (DUCTAPE_*)"
    assert "order-created" in binding.topics


def test_env_portable_upper_case_names() -> None:
    environ = {
        "DUCTAPE_TYPE": "redis",
        "DUCTAPE_HOST": "redis.dev",
        "DUCTAPE_PORT": "6380",
        "DUCTAPE_TOPICS_JSON": json.dumps({"t": {"name": "t", "subscriptions": {"s": "s"}}}),
    }
    binding = Binding.load(environ=environ)
    assert binding.type == "redis"
    assert binding.get("port") == "6380"
    assert env_variable_names("topics.json") == ("DUCTAPE_topics.json", "DUCTAPE_TOPICS_JSON")


def test_root_without_the_folder_falls_back_to_env(tmp_path: pathlib.Path) -> None:
    environ = {"SERVICE_BINDING_ROOT": str(tmp_path)} | {
        f"DUCTAPE_{k}": v for k, v in ENTRIES.items()
    }
    assert Binding.load(environ=environ).source == "environment (DUCTAPE_*)"


def test_mapping_wins() -> None:
    assert Binding.load(mapping=ENTRIES, environ={}).source == "mapping"


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("type", "entry 'type' is missing"),
        ("bootstrap-servers", "entry 'bootstrap-servers' is missing"),
        ("topics.json", "entry 'topics.json' is missing"),
    ],
)
def test_missing_entry_is_named(tmp_path: pathlib.Path, drop: str, message: str) -> None:
    folder = write(tmp_path / "bus", {k: v for k, v in ENTRIES.items() if k != drop})
    with pytest.raises(BindingError, match=message) as caught:
        Binding.from_folder(folder)
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object of topic tags"),
        ('{"t": {"subscriptions": {}}}', "topic 't': 'name' is missing"),
        ('{"t": {"name": "t", "subscriptions": {"s": 1}}}', "'subscriptions' must map"),
        (
            '{"t": {"name": "t", "deadLetter": {"topic": "d", "maxDeliveryAttempts": 2}}}',
            r"topic 't': 'deadLetter' is malformed \(maxDeliveryAttempts",
        ),
        ('{"t": {"name": "t", "deadLetter": {"maxDeliveryAttempts": 5}}}', "deadLetter.*topic"),
    ],
)
def test_malformed_topics_json(topics: str, message: str) -> None:
    with pytest.raises(BindingError, match=message):
        Binding.from_mapping(ENTRIES | {"topics.json": topics})


def test_dead_letter_is_read_from_topics_json() -> None:
    topics = TOPICS | {
        "order-paid": {
            "name": "orders.paid",
            "subscriptions": {"billing": "orders.paid.billing"},
            "deadLetter": {"topic": "order-dead", "maxDeliveryAttempts": 7},
        }
    }
    binding = Binding.from_mapping(ENTRIES | {"topics.json": json.dumps(topics)})
    dead_letter = binding.topic("order-paid").dead_letter
    assert dead_letter is not None
    assert (dead_letter.topic, dead_letter.max_delivery_attempts) == ("order-dead", 7)
    assert binding.topic("order-created").dead_letter is None


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(BindingError, match="'mqtt', expected one of kafka"):
        Binding.from_mapping(ENTRIES | {"type": "mqtt"})


def test_sqs_topic_with_subscriptions_has_no_name() -> None:
    topics = {"t": {"name": None, "subscriptions": {"a": "http://q/a", "b": "http://q/b"}}}
    binding = Binding.from_mapping(
        {"type": "aws-sqs", "region": "eu-west-1", "topics.json": json.dumps(topics)}
    )
    assert binding.topic("t").name is None
    with pytest.raises(BindingError, match="'name' is missing"):
        Binding.from_mapping(ENTRIES | {"topics.json": json.dumps(topics)})


def test_unknown_tag_and_subscription() -> None:
    binding = Binding.from_mapping(ENTRIES)
    with pytest.raises(BindingError, match=r"'nope' is not in topics.json \(known: order-created"):
        binding.topic("nope")
    with pytest.raises(BindingError, match=r"no subscription 'audit'.*known: billing"):
        binding.subscription("order-created", "audit")


def test_broker_from_binding_builds_without_network() -> None:
    broker = Broker.from_binding(mapping=ENTRIES, redelivery_timeout=1.5)
    assert broker.binding.type == "kafka"
    assert broker.options.redelivery_timeout == 1.5


def test_binding_repr_hides_credentials() -> None:
    binding = Binding.from_mapping(ENTRIES | {"password": "s3cret"})
    assert "s3cret" not in repr(binding)


@pytest.mark.parametrize(
    ("payload", "data", "content_type"),
    [
        (b"\x00\x01", b"\x00\x01", message_.OCTET_STREAM),
        ("héllo", "héllo".encode(), message_.TEXT),
        ({"a": [1, 2]}, b'{"a":[1,2]}', message_.JSON),
        ([1, "x"], b'[1,"x"]', message_.JSON),
    ],
)
def test_payload_encoding(payload: object, data: bytes, content_type: str) -> None:
    assert message_.encode(payload) == (data, content_type)


def test_unserialisable_payload_and_reserved_headers() -> None:
    with pytest.raises(TypeError, match="JSON-serialisable"):
        message_.encode(object())
    with pytest.raises(ValueError, match="reserved"):
        message_.OutgoingMessage.build("x", headers={"ductape-id": "forged"})


def test_reserved_headers_are_split_off() -> None:
    out = message_.OutgoingMessage.build("x", headers={"a": "1"}, message_id="m-1")
    headers, message_id, content_type = message_.split_headers(out.wire_headers())
    assert (headers, message_id, content_type) == ({"a": "1"}, "m-1", message_.TEXT)


def test_sqs_body_is_text_or_base64() -> None:
    raw = message_.OutgoingMessage.build(b"\x00\xff")
    body, encoded = sqs_.encode_body(raw)
    assert encoded and base64.b64decode(body) == b"\x00\xff"
    text = message_.OutgoingMessage.build("plain")
    assert sqs_.encode_body(text) == ("plain", False)
    control = message_.OutgoingMessage.build("bell\x07")
    body, encoded = sqs_.encode_body(control)
    assert encoded and base64.b64decode(body) == b"bell\x07"
