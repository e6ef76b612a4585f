"""Pure parts of the reconciler: identity, applied record, Secret references, conditions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ductape_operator import conditions, core, models, settings
from ductape_operator.providers import base


def env(type_: str, **config: Any) -> models.EnvSpec:
    return models.EnvSpec.model_validate({"slug": "prd", "type": type_, "config": config})


def test_identity_ignores_credentials_but_not_the_endpoint() -> None:
    a = env("REDIS", host="r1", password={"secretKeyRef": {"name": "a", "key": "p"}})
    b = env("REDIS", host="r1", password={"secretKeyRef": {"name": "b", "key": "q"}})
    c = env("REDIS", host="r2")
    d = env("REDIS", host="r1", db=2)
    assert core.broker_identity(a) == core.broker_identity(b)
    assert core.broker_identity(a) != core.broker_identity(c)
    assert core.broker_identity(a) != core.broker_identity(d)


def test_identity_changes_with_the_type() -> None:
    rabbit = env("RABBITMQ", host="h", port=5672)
    redis = env("REDIS", host="h", port=5672)
    assert core.broker_identity(rabbit) != core.broker_identity(redis)


def test_applied_record_round_trips() -> None:
    topic = models.TopicSpec(tag="orders", name="orders.created", subscriptions=["billing"])
    applied = {
        "prd": core.AppliedEnv(
            env=env("KAFKA", brokers=["k:9092"]),
            topics=(topic,),
            secret_name="bus-prd",
            locations={
                "orders": base.TopicRoute(
                    tag="orders",
                    name="orders.created",
                    subscriptions={"billing": "orders.created.billing"},
                )
            },
        )
    }
    text = core.dump_applied(applied)
    loaded = core.load_applied(text)
    assert loaded == applied
    assert core.dump_applied(loaded) == text


def test_the_applied_record_is_read_from_the_status_before_the_old_annotation() -> None:
    meta = {"namespace": "ns", "name": "bus", "uid": "u"}
    legacy = {"metadata": {**meta, "annotations": {core.APPLIED_ANNOTATION: "old"}}}
    assert core.applied_record(core.BrokerObject.from_body(legacy)) == "old"
    both = {**legacy, "status": {"applied": "new"}}
    assert core.applied_record(core.BrokerObject.from_body(both)) == "new"
    assert core.applied_record(core.BrokerObject.from_body({"metadata": meta})) is None


@pytest.mark.parametrize("junk", ["", "not json", '{"prd": {"env": {}}}', "[]"])
def test_unreadable_applied_record_counts_as_empty(junk: str) -> None:
    assert core.load_applied(junk) == {}


def test_referenced_secrets_tolerates_invalid_specs() -> None:
    raw = {
        "envs": [
            {"config": {"password": {"secretKeyRef": {"name": "rabbit", "key": "p"}}}},
            {"config": {"sasl": {"password": {"secretKeyRef": {"name": "kafka", "key": "p"}}}}},
            {"config": {"accessKeyId": {"secretKeyRef": {"name": "aws"}}}},
            {"config": "not a mapping"},
            "not an env",
        ]
    }
    assert core.referenced_secrets(raw) == {"rabbit", "kafka", "aws"}
    assert core.referenced_secrets({}) == set()


def test_secret_name_defaults_to_name_dash_slug() -> None:
    assert core.secret_name_for("bus", env("REDIS", host="h")) == "bus-prd"
    custom = models.EnvSpec.model_validate(
        {"slug": "prd", "type": "REDIS", "config": {"host": "h"}, "secretName": "mine"}
    )
    assert core.secret_name_for("bus", custom) == "mine"


def test_condition_keeps_transition_time_while_status_holds() -> None:
    conds = conditions.set_condition(
        [],
        type="Ready",
        status=models.ConditionStatus.TRUE,
        reason="AllEnvsReady",
        message="a",
        generation=1,
        timestamp="2026-01-01T00:00:00Z",
    )
    same = conditions.set_condition(
        conds,
        type="Ready",
        status=models.ConditionStatus.TRUE,
        reason="AllEnvsReady",
        message="b",
        generation=2,
        timestamp="2026-02-02T00:00:00Z",
    )
    flipped = conditions.set_condition(
        same,
        type="Ready",
        status=models.ConditionStatus.FALSE,
        reason="BrokerUnreachable",
        message="c",
        generation=2,
        timestamp="2026-03-03T00:00:00Z",
    )
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert same[0].observed_generation == 2
    assert flipped[0].last_transition_time == "2026-03-03T00:00:00Z"
    assert len(flipped) == 1


def test_status_json_clears_absent_fields() -> None:
    data = core.status_to_json(models.MessageBrokerStatus(observed_generation=3))
    assert data["observedGeneration"] == 3
    assert data["binding"] is None and data["envs"] == []


def test_binding_entries_add_the_common_keys() -> None:
    class FakeBinding:
        def binding(self) -> dict[str, str]:
            return {"uri": "redis://h:6379/0", "host": "h"}

    spec = models.parse_spec(
        {
            "name": "Bus",
            "tag": "bus",
            "envs": [{"slug": "dev", "type": "REDIS", "config": {"host": "h"}}],
        }
    )
    entries = core.binding_entries(
        spec,
        spec.envs[0],
        FakeBinding(),  # type: ignore[arg-type]
        {
            "orders": base.TopicRoute(
                tag="orders", name="orders", subscriptions={"billing": "billing"}
            )
        },
    )
    assert entries["type"] == "redis"
    assert entries["provider"] == "ductape"
    assert entries["broker-tag"] == "bus"
    assert entries["env"] == "dev"
    assert (
        entries["topics.json"]
        == '{"orders": {"name": "orders", "subscriptions": {"billing": "billing"}}}'
    )
    assert entries["uri"] == "redis://h:6379/0"


def test_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUCTAPE_ENVS", "prd, dev")
    monkeypatch.setenv("DUCTAPE_PROBE_TIMEOUT", "2.5")
    monkeypatch.setenv("DUCTAPE_HEALTH_INTERVAL", "9")
    monkeypatch.setenv("DUCTAPE_STANDALONE", "true")
    s = settings.parse_settings(["--namespace", "a", "--namespace", "b", "--health-interval", "7"])
    assert s.namespaces == ("a", "b")
    assert s.envs == ("prd", "dev")
    assert s.health_interval == 7, "a flag wins over its environment twin"
    assert s.probe_timeout == 2.5
    assert s.standalone is True
    assert s.reconciles_env("prd") and not s.reconciles_env("qa")


def test_settings_defaults_without_flags_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in settings.Settings.model_fields:
        monkeypatch.delenv(f"DUCTAPE_{name.upper()}", raising=False)
    s = settings.parse_settings([])
    assert s.reconciles_env("anything")
    assert (s.health_interval, s.probe_timeout, s.log_format) == (30.0, 5.0, "text")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--health-interval", "0"], {}, "--health-interval [DUCTAPE_HEALTH_INTERVAL]"),
        ([], {"DUCTAPE_PROBE_TIMEOUT": "-1"}, "--probe-timeout [DUCTAPE_PROBE_TIMEOUT]"),
        ([], {"DUCTAPE_VERBOSE": "maybe"}, "--verbose [DUCTAPE_VERBOSE]"),
    ],
)
def test_settings_refuse_bad_values_naming_flag_and_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    named: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit):
        settings.parse_settings(argv)
    assert named in capsys.readouterr().err


def test_every_setting_has_a_flag_and_its_twin_in_the_help() -> None:
    text = " ".join(settings.build_parser().format_help().split())
    for name, field in settings.Settings.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        assert str(extra["flag"]) in text
        assert f"[DUCTAPE_{name.upper()}]" in text


def _dead_letter_spec() -> models.MessageBrokerSpec:
    return models.parse_spec(
        {
            "name": "Bus",
            "tag": "bus",
            "envs": [{"slug": "prd", "type": "REDIS", "config": {"host": "r"}}],
            "topics": [
                {
                    "tag": "orders",
                    "name": "orders.created",
                    "retentionSeconds": 600,
                    "deadLetter": {"topic": "orders-dead", "maxDeliveryAttempts": 7},
                    "subscriptions": ["billing", "shipping"],
                },
                {"tag": "orders-dead", "name": "orders.dead", "subscriptions": ["ops"]},
            ],
        }
    )


def test_plan_resolves_the_dead_letter_topic() -> None:
    spec = _dead_letter_spec()
    live, dead = (base.TopicPlan.from_spec(t, spec.topics) for t in spec.topics)
    assert live.retention_seconds == 600 and live.has_settings
    assert live.dead_letter == base.DeadLetterPlan("orders-dead", "orders.dead", "ops", 7)
    assert dead.dead_letter is None and not dead.has_settings
    # Without the resource's topics there is nothing to resolve it against.
    assert base.TopicPlan.from_spec(spec.topics[0]).dead_letter is None


class _Provider:
    def binding(self) -> dict[str, str]:
        return {"uri": "redis://r:6379/0"}


def test_topics_json_carries_the_dead_letter() -> None:
    spec = _dead_letter_spec()
    locations = {
        "orders": base.TopicRoute(
            tag="orders", name="orders.created", subscriptions={"billing": "billing"}
        ),
        "orders-dead": base.TopicRoute(
            tag="orders-dead", name="orders.dead", subscriptions={"ops": "ops"}
        ),
    }
    entries = core.binding_entries(spec, spec.envs[0], _Provider(), locations)  # type: ignore[arg-type]
    topics = json.loads(entries["topics.json"])
    assert topics["orders"]["deadLetter"] == {"topic": "orders-dead", "maxDeliveryAttempts": 7}
    assert "deadLetter" not in topics["orders-dead"]
    assert models.retention_in_force(spec.topics[0]) == "600s"
    assert models.retention_in_force(spec.topics[1]) == models.BROKER_DEFAULT_RETENTION
