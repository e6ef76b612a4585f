"""The MessageBroker API models and the CRD generated from them (no network)."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from ductape_operator import crdgen, models
from tests.api import specs

ROOT = pathlib.Path(__file__).resolve().parents[2]
T = models.MessageBrokerTypes


def rejection(raw: Any) -> str:
    """The operator's one-line description of why `raw` is invalid."""
    with pytest.raises(pydantic.ValidationError) as info:
        models.parse_spec(raw)
    return models.describe_validation_error(info.value)


# --- good specs -------------------------------------------------------------------


@pytest.mark.parametrize("type_", list(T))
@pytest.mark.parametrize("build", [specs.minimal_config, specs.full_config])
def test_every_type_accepts_its_own_fields(type_: T, build: Any) -> None:
    parsed = models.parse_spec(specs.spec(specs.env("dev", type_, build(type_))))
    assert parsed.envs[0].type is type_
    assert parsed.envs[0].config.set_fields() == set(build(type_))


def test_design_example_parses_with_defaults() -> None:
    raw = specs.spec(
        specs.env(
            "prd",
            T.RABBITMQ,
            {"host": "rabbitmq.prod.svc", "port": 5672, "username": "shop", "password": specs.REF},
        ),
        specs.env("dev", T.REDIS, {"host": "redis.dev.svc", "port": 6379}),
        topics=[{"tag": "order-created", "name": "orders.created", "partitions": 3}],
    )
    parsed = models.parse_spec(raw)
    assert parsed.deletion_policy is models.DeletionPolicy.RETAIN
    assert [env.slug for env in parsed.envs] == ["prd", "dev"]
    assert parsed.env("dev") is parsed.envs[1]
    assert parsed.env("qa") is None
    topic = parsed.topics[0]
    assert (topic.physical_name, topic.subscriptions) == ("orders.created", [])
    assert models.TopicSpec(tag="audit").physical_name == "audit"
    assert [ref.name for ref in parsed.envs[0].config.secret_refs()] == ["creds"]


def test_secret_refs_include_sasl_tls_and_sqs_keys() -> None:
    kafka = models.BrokerConfig.model_validate(specs.full_config(T.KAFKA))
    sqs = models.BrokerConfig.model_validate(specs.full_config(T.AWS_SQS))
    # The SASL password, the CA bundle, the client certificate and its key.
    assert {(ref.name, ref.key) for ref in kafka.secret_refs()} == {
        ("creds", "password"),
        ("broker-ca", "ca.crt"),
        ("client-tls", "tls.crt"),
        ("client-tls", "tls.key"),
    }
    assert len(sqs.secret_refs()) == 2


@pytest.mark.parametrize("type_", [T.KAFKA, T.REDIS, T.RABBITMQ])
def test_trust_fields_need_tls_on(type_: T) -> None:
    flag = "ssl" if type_ is T.KAFKA else "tls"
    config = {**specs.minimal_config(type_), "ca": specs.SAMPLE_VALUES["ca"]}
    assert models.NEEDS_TLS_MESSAGE in rejection(specs.spec(specs.env("dev", type_, config)))
    config[flag] = True
    models.parse_spec(specs.spec(specs.env("dev", type_, config)))


def test_client_certificate_and_key_go_together() -> None:
    config = {**specs.minimal_config(T.REDIS), "tls": True}
    config["clientCert"] = specs.SAMPLE_VALUES["clientCert"]
    assert models.CLIENT_PAIR_MESSAGE in rejection(specs.spec(specs.env("dev", T.REDIS, config)))
    config["clientKey"] = specs.SAMPLE_VALUES["clientKey"]
    models.parse_spec(specs.spec(specs.env("dev", T.REDIS, config)))


def test_null_counts_as_absent_like_the_api_server() -> None:
    raw = specs.spec(
        specs.env("dev", T.REDIS, {"host": "h", "brokers": None}), topics=None, description=None
    )
    parsed = models.parse_spec(raw)
    assert parsed.topics == []
    assert parsed.envs[0].config.set_fields() == {"host"}


def test_round_trip_through_json_is_stable() -> None:
    raw = specs.spec(specs.env("prd", T.KAFKA, specs.full_config(T.KAFKA)))
    parsed = models.parse_spec(raw)
    dumped = parsed.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert models.parse_spec(dumped) == parsed
    assert dumped["envs"][0]["config"]["replicationFactor"] == 1


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path: pathlib.Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == models.KIND]
    assert len(docs) == 1
    assert docs[0]["apiVersion"] == models.API_VERSION
    assert "namespace" not in docs[0]["metadata"]
    assert models.parse_spec(docs[0]["spec"]).tag == docs[0]["spec"]["tag"]


# --- bad specs: every message names the field ---------------------------------------


@pytest.mark.parametrize("type_", list(T))
def test_missing_required_field_is_named(type_: T) -> None:
    (field,) = models.FIELDS_BY_TYPE[type_][0]
    config = specs.full_config(type_)
    del config[field]
    message = rejection(specs.spec(specs.env("dev", type_, config)))
    assert f"spec.envs[0]: config.{field} is required when type is {type_.value}" in message


@pytest.mark.parametrize(
    ("type_", "field"),
    [(type_, field) for type_ in T for field in specs.foreign_fields(type_)],
    ids=lambda v: str(v),
)
def test_field_of_another_type_is_named(type_: T, field: str) -> None:
    config = {**specs.minimal_config(type_), field: specs.SAMPLE_VALUES[field]}
    message = rejection(specs.spec(specs.env("dev", type_, config)))
    assert f"config.{field} is not allowed when type is {type_.value}" in message


def test_every_problem_of_an_env_is_reported() -> None:
    message = rejection(specs.spec(specs.env("dev", T.KAFKA, {"host": "h", "region": "r"})))
    assert "config.brokers is required when type is KAFKA" in message
    assert "config.host is not allowed when type is KAFKA" in message
    assert "config.region is not allowed when type is KAFKA" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["envs"].append(copy.deepcopy(s["envs"][0])), "duplicate env slug 'dev'"),
        (
            lambda s: s.update(topics=[{"tag": "a"}, {"tag": "a", "name": "b"}]),
            "duplicate topic tag 'a'",
        ),
        (
            lambda s: s.update(topics=[{"tag": "a", "subscriptions": ["x", "x"]}]),
            "spec.topics[0]: duplicate subscription",
        ),
        (lambda s: s["envs"][0].update(slug="Prd"), "spec.envs[0].slug: String should match"),
        (lambda s: s["envs"][0].update(slug="a" * 64), "spec.envs[0].slug: String should have at"),
        (lambda s: s.update(tag="-bus"), "spec.tag: String should match"),
        (lambda s: s.update(tag=""), "spec.tag: String should have at least 1"),
        (lambda s: s["envs"][0].update(type="AMQP"), "spec.envs[0].type: Input should be"),
        (lambda s: s.update(envs=[]), "spec.envs: List should have at least 1"),
        (lambda s: s.pop("envs"), "spec.envs: Field required"),
        (lambda s: s.pop("name"), "spec.name: Field required"),
        (lambda s: s.update(name="n" * 254), "spec.name: String should have at most 253"),
        (lambda s: s.update(description="d" * 4097), "spec.description: String should have"),
        (lambda s: s.update(deletionPolicy="Orphan"), "spec.deletionPolicy: Input should be"),
        (lambda s: s.update(replicas=3), "spec.replicas: Extra inputs are not permitted"),
        (lambda s: s["envs"][0]["config"].update(port="6379"), "spec.envs[0].config.port:"),
        (lambda s: s["envs"][0]["config"].update(port=True), "spec.envs[0].config.port:"),
        (lambda s: s["envs"][0]["config"].update(port=65536), "spec.envs[0].config.port:"),
        (lambda s: s["envs"][0]["config"].update(tls="true"), "spec.envs[0].config.tls:"),
        (lambda s: s["envs"][0]["config"].update(db=1.5), "spec.envs[0].config.db:"),
        (lambda s: s["envs"][0]["config"].update(host="h:1"), "spec.envs[0].config.host:"),
        (lambda s: s["envs"][0]["config"].update(host="h\u00a0"), "spec.envs[0].config.host:"),
        (lambda s: s["envs"][0]["config"].update(password="pw"), "spec.envs[0].config.password:"),
        (
            lambda s: s["envs"][0]["config"].update(
                password={"secretKeyRef": {"name": "s", "key": "k", "namespace": "other"}}
            ),
            "spec.envs[0].config.password.secretKeyRef.namespace: Extra inputs",
        ),
        (lambda s: s["envs"][0].update(secretName="A B"), "spec.envs[0].secretName:"),
        (
            lambda s: s.update(topics=[{"tag": "a", "name": "orders created"}]),
            "spec.topics[0].name:",
        ),
        (lambda s: s.update(topics=[{"tag": "a", "partitions": 0}]), "spec.topics[0].partitions:"),
        (
            lambda s: s.update(topics=[{"tag": "a", "subscriptions": ["B"]}]),
            "spec.topics[0].subscriptions[0]:",
        ),
    ],
)
def test_bad_spec_names_the_field(mutate: Any, expected: str) -> None:
    raw = specs.spec()
    mutate(raw)
    assert expected in rejection(raw)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("kafka:9092", True),
        ("127.0.0.1:1", True),
        ("k:65535", True),
        ("k:65536", False),
        ("k:0", False),
        ("k:09", False),
        ("k", False),
        (":9092", False),
        ("k :9092", False),
        ("[::1]:9092", False),
    ],
)
def test_host_port(value: str, ok: bool) -> None:
    raw = specs.spec(specs.env("dev", T.KAFKA, {"brokers": [value]}))
    if ok:
        assert models.parse_spec(raw).envs[0].config.brokers == [value]
    else:
        assert "spec.envs[0].config.brokers[0]" in rejection(raw)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("http://127.0.0.1:29324", True),
        ("https://sqs.eu-west-1.amazonaws.example/queue?x=1", True),
        ("ftp://s", False),
        ("http://", False),
        ("http://s/a b", False),
    ],
)
def test_endpoint_url(value: str, ok: bool) -> None:
    raw = specs.spec(specs.env("dev", T.AWS_SQS, {"region": "eu-west-1", "endpoint": value}))
    if ok:
        assert models.parse_spec(raw).envs[0].config.endpoint == value
    else:
        assert "spec.envs[0].config.endpoint" in rejection(raw)


def test_fields_by_type_covers_every_config_field_once_per_type() -> None:
    wire = {info.alias or name for name, info in models.BrokerConfig.model_fields.items()}
    covered: set[str] = set()
    for required, optional in models.FIELDS_BY_TYPE.values():
        assert not required & optional
        covered |= required | optional
    assert covered == wire == set(specs.SAMPLE_VALUES)
    assert set(models.FIELDS_BY_TYPE) == set(T)


def test_status_accepts_what_the_api_server_returns() -> None:
    status = models.MessageBrokerStatus.model_validate(
        {
            "observedGeneration": 4,
            "summary": "prd:RABBITMQ",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllEnvsReady",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 4,
                }
            ],
            "envs": [{"slug": "prd", "type": "RABBITMQ", "phase": "Ready", "endpoint": None}],
            "kopf": {"progress": {}},
        }
    )
    assert status.conditions[0].status is models.ConditionStatus.TRUE
    assert status.envs[0].endpoint is None
    with pytest.raises(pydantic.ValidationError):
        models.Condition(
            type="Ready",
            status=models.ConditionStatus.TRUE,
            reason="not camel case",
            last_transition_time="2026-01-01T00:00:00Z",
        )


# --- the generated CRD ---------------------------------------------------------------


def test_committed_crd_is_up_to_date() -> None:
    assert crdgen.CRD_PATH.read_text() == crdgen.render(), "run `make crds`"


def test_check_mode_names_a_stale_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "crd.yaml"
    assert crdgen.main(["--check", "--path", str(path)]) == 1
    assert str(path) in capsys.readouterr().err
    assert crdgen.main(["--write", "--path", str(path)]) == 0
    assert crdgen.main(["--check", "--path", str(path)]) == 0
    path.write_text(path.read_text() + "# edited\n")
    assert crdgen.main(["--check", "--path", str(path)]) == 1


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
    return found


def test_schema_is_structural_and_bounded() -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], ".spec"):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "additionalProperties", "title"} & set(
            node
        ), path
        assert "type" in node, path
        assert node.get("default", "x") is not None, path
        if path.startswith(".spec"):
            # CEL cost estimation needs a bound on every string and list.
            if node["type"] == "string" and "enum" not in node:
                assert "maxLength" in node, path
            if node["type"] == "array":
                assert "maxItems" in node, path
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["envs", "name", "tag"]
    assert spec["properties"]["envs"]["x-kubernetes-list-map-keys"] == ["slug"]
    assert spec["properties"]["topics"]["x-kubernetes-list-map-keys"] == ["tag"]
    subs = spec["properties"]["topics"]["items"]["properties"]["subscriptions"]
    assert subs["x-kubernetes-list-type"] == "set"
    assert spec["properties"]["tag"]["x-kubernetes-validations"] == [crdgen.TAG_RULE]
    assert spec["properties"]["deletionPolicy"]["default"] == "Retain"


def test_cel_messages_are_the_pydantic_messages() -> None:
    rules = crdgen.env_rules()
    required = {r["message"] for r in rules if r["reason"] == "FieldValueRequired"}
    forbidden = {r["fieldPath"].removeprefix(".") for r in rules if "messageExpression" in r}
    for type_ in T:
        for field in models.FIELDS_BY_TYPE[type_][0]:
            assert f"config.{field} is required when type is {type_.value}" in required
        for field in specs.foreign_fields(type_):
            assert f"config.{field}" in forbidden
            expression = next(
                r
                for r in rules
                if r["fieldPath"] == f".config.{field}" and "messageExpression" in r
            )
            assert f"config.{field} is not allowed when type is " in expression["messageExpression"]
            assert models.config_problems(type_, {field} | models.FIELDS_BY_TYPE[type_][0]) == [
                f"config.{field} is not allowed when type is {type_.value}"
            ]


def test_crd_names_and_columns() -> None:
    doc = crdgen.crd()
    names = doc["spec"]["names"]
    assert doc["metadata"]["name"] == "messagebrokers.ductape.app"
    assert (names["kind"], names["plural"], names["singular"]) == (
        "MessageBroker",
        "messagebrokers",
        "messagebroker",
    )
    assert (names["shortNames"], names["categories"]) == (["mb"], ["ductape"])
    version = doc["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Tag",
        "Envs",
        "Ready",
        "Age",
    ]
    assert version["selectableFields"] == [{"jsonPath": ".spec.tag"}]
    assert version["subresources"] == {"status": {}}
    assert crdgen.render() == crdgen.render()
    assert crdgen.render().startswith("# Generated by `make crds`")


def _dead_letter_spec(*topics: dict[str, Any]) -> dict[str, Any]:
    return specs.spec(topics=list(topics))


_LIVE = {"tag": "live", "deadLetter": {"topic": "dead", "maxDeliveryAttempts": 5}}


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        ([_LIVE], models.DEAD_LETTER_NOT_A_TOPIC),
        (
            [{**_LIVE, "deadLetter": {"topic": "live", "maxDeliveryAttempts": 5}}],
            models.DEAD_LETTER_OWN_TOPIC,
        ),
        (
            [
                _LIVE,
                {
                    "tag": "dead",
                    "subscriptions": ["ops"],
                    "deadLetter": {"topic": "grave", "maxDeliveryAttempts": 5},
                },
                {"tag": "grave", "subscriptions": ["ops"]},
            ],
            models.DEAD_LETTER_CHAINED,
        ),
        ([_LIVE, {"tag": "dead"}], models.DEAD_LETTER_SUBSCRIPTIONS),
        ([_LIVE, {"tag": "dead", "subscriptions": ["a", "b"]}], models.DEAD_LETTER_SUBSCRIPTIONS),
    ],
)
def test_bad_dead_letter_names_the_field(topics: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        models.parse_spec(_dead_letter_spec(*topics))
    message = models.describe_validation_error(info.value)
    assert "topics[0].deadLetter.topic ('live')" in message
    assert expected in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("retentionSeconds", 599), ("retentionSeconds", 1209601), ("retentionSeconds", "600")],
)
def test_retention_out_of_range_is_named(field: str, value: Any) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        models.parse_spec(_dead_letter_spec({"tag": "t", field: value}))
    assert f"spec.topics[0].{field}" in models.describe_validation_error(info.value)


def test_dead_letter_declaration_parses() -> None:
    parsed = models.parse_spec(
        _dead_letter_spec(
            {**_LIVE, "retentionSeconds": 600, "subscriptions": ["billing", "shipping"]},
            {"tag": "dead", "retentionSeconds": 1209600, "subscriptions": ["ops"]},
        )
    )
    live = parsed.topic("live")
    assert live is not None and live.dead_letter is not None
    assert (live.dead_letter.topic, live.dead_letter.max_delivery_attempts) == ("dead", 5)
    assert live.retention_seconds == 600
    assert parsed.topic("nowhere") is None


def test_dead_letter_cel_rules_carry_the_pydantic_messages() -> None:
    messages = {rule["message"] for rule in crdgen.topic_list_rules()}
    messages.add(crdgen.OWN_DEAD_LETTER_RULE["message"])
    assert messages == {
        models.DEAD_LETTER_NOT_A_TOPIC,
        models.DEAD_LETTER_OWN_TOPIC,
        models.DEAD_LETTER_CHAINED,
        models.DEAD_LETTER_SUBSCRIPTIONS,
    }
