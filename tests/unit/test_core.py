"""The reconcile core's decisions, table by table: pure functions, no I/O."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ductape_operator import conditions, core, errors, models
from ductape_operator.reasons import Reason
from tests.unit import fakes

T = models.MessageBrokerTypes


def result(slug: str = "dev", **fields: Any) -> core.EnvResult:
    base: dict[str, Any] = {
        "slug": slug,
        "type": T.REDIS,
        "phase": models.Phase.READY,
        "endpoint": "redis://r:6379/0",
        "secret_name": f"bus-{slug}",
        "topics": [],
        "message": "ok",
        "healthy": True,
        "provisioned": True,
    }
    return core.EnvResult(**{**base, **fields})


def failed(slug: str, reason: Reason, **fields: Any) -> core.EnvResult:
    return result(slug, reason=reason, message=f"{reason} here", **fields)


EMPTY = models.MessageBrokerStatus()


@pytest.mark.parametrize(
    ("results", "ready", "provisioned", "healthy"),
    [
        ([result()], "AllEnvsReady", "AllEnvsProvisioned", "AllBrokersHealthy"),
        (
            [result("a"), failed("b", Reason.BROKER_UNREACHABLE, healthy=False, provisioned=False)],
            "BrokerUnreachable",
            "BrokerUnreachable",
            "BrokerUnreachable",
        ),
        (
            # The reason a user must act on first wins: a missing Secret before a broker.
            [
                failed("a", Reason.BROKER_UNREACHABLE, healthy=False),
                failed("b", Reason.SECRET_NOT_FOUND, provisioned=False),
            ],
            "SecretNotFound",
            "SecretNotFound",
            "BrokerUnreachable",
        ),
        (
            [failed("a", Reason.PROVISIONING_FAILED, provisioned=False)],
            "ProvisioningFailed",
            "ProvisioningFailed",
            "AllBrokersHealthy",
        ),
        (
            [failed("a", Reason.INVALID_CONFIG, provisioned=False), failed("b", Reason.TLS_FAILED)],
            "InvalidConfig",
            "InvalidConfig",
            "AllBrokersHealthy",
        ),
    ],
)
def test_status_from_results(
    results: list[core.EnvResult], ready: str, provisioned: str, healthy: str
) -> None:
    status = core.status_from_results(3, EMPTY, results)
    by_type = {c.type: c for c in status.conditions}
    assert [c.type for c in status.conditions] == ["Ready", "Provisioned", "Healthy"]
    assert (by_type["Ready"].reason, by_type["Provisioned"].reason) == (ready, provisioned)
    assert by_type["Healthy"].reason == healthy
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert status.observed_generation == 3
    for r in results:
        if r.reason:
            assert f"{r.slug}: {r.message}" in by_type["Ready"].message


def test_a_removed_env_that_could_not_be_retired_keeps_ready_false() -> None:
    status = core.status_from_results(2, EMPTY, [result()], ["removed env qa: unreachable"])
    ready = conditions.find(status.conditions, conditions.READY)
    assert ready is not None and ready.status is models.ConditionStatus.FALSE
    assert "removed env qa" in ready.message
    assert not core.outcome(status).ready


def test_unchanged_results_give_an_identical_status() -> None:
    first = core.status_from_results(1, EMPTY, [result()])
    again = core.status_from_results(1, first, [result()])
    assert core.status_to_json(first) == core.status_to_json(again)


def test_an_env_keeps_its_transition_time_while_its_phase_holds() -> None:
    before = core.status_from_results(1, EMPTY, [result()])
    stamped = before.model_copy(
        update={"envs": [before.envs[0].model_copy(update={"last_transition_time": "T0"})]}
    )
    same = core.status_from_results(1, stamped, [result()])
    degraded = failed("dev", Reason.BROKER_UNREACHABLE, phase=models.Phase.DEGRADED)
    other = core.status_from_results(1, stamped, [degraded])
    assert same.envs[0].last_transition_time == "T0"
    assert other.envs[0].last_transition_time != "T0"


@pytest.mark.parametrize(
    ("results", "binding"),
    [
        ([result()], "bus-dev"),
        ([result("a"), result("b")], None),
        ([failed("dev", Reason.SECRET_NOT_FOUND, provisioned=False)], None),
    ],
)
def test_binding_names_the_secret_of_the_one_reconciled_env(
    results: list[core.EnvResult], binding: str | None
) -> None:
    status = core.status_from_results(1, EMPTY, results)
    assert (status.binding.name if status.binding else None) == binding


@pytest.mark.parametrize(
    ("exc", "prev", "phase", "healthy"),
    [
        (errors.BrokerUnreachableError("down"), None, "Pending", False),
        (errors.BrokerUnreachableError("down"), "applied", "Degraded", False),
        (errors.BrokerAuthError("refused"), "applied", "Degraded", False),
        (errors.BrokerTLSError("untrusted certificate"), None, "Pending", False),
        (errors.SecretNotFoundError("no", secret_name="s"), "applied", "Pending", True),
        (errors.ProvisioningError("busy", retriable=True), "applied", "Degraded", True),
        (errors.ProvisioningError("refused", retriable=False), None, "Failed", True),
        (errors.InvalidConfigError("bad"), None, "Failed", True),
    ],
)
def test_what_a_failure_means_for_an_env(
    exc: errors.DuctapeError, prev: str | None, phase: str, healthy: bool
) -> None:
    env = result(phase=models.Phase.PROVISIONING, provisioned=False)
    applied = applied_env() if prev else None
    core.record_failure(env, exc, applied)
    assert (env.phase, env.healthy, env.reason) == (phase, healthy, exc.reason)
    assert env.retriable is exc.retriable and env.message == exc.message


def applied_env(host: str = "r1", topics: tuple[models.TopicSpec, ...] = ()) -> core.AppliedEnv:
    env = models.EnvSpec.model_validate({"slug": "dev", "type": "REDIS", "config": {"host": host}})
    return core.AppliedEnv(env=env, topics=topics, secret_name="bus-dev", locations={})


# --- gate, topics, deletions -----------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "owner", "reason", "label"),
    [
        (lambda b: None, None, None, False),
        (lambda b: None, "bus", None, False),
        (lambda b: b["spec"].pop("envs"), None, Reason.INVALID_CONFIG, False),
        (lambda b: None, "older", Reason.TAG_CONFLICT, True),
        (
            lambda b: b["metadata"]["annotations"].update({core.PAUSED_ANNOTATION: "True"}),
            None,
            Reason.PAUSED,
            True,
        ),
    ],
)
def test_gate(mutate: Any, owner: str | None, reason: Reason | None, label: bool) -> None:
    raw = fakes.body()
    mutate(raw)
    verdict = core.gate(core.BrokerObject.from_body(raw), owner)
    assert (verdict.reason, verdict.label) == (reason, label)
    assert (verdict.spec is None) is (reason is Reason.INVALID_CONFIG)
    if reason is Reason.INVALID_CONFIG:
        assert "envs" in verdict.message


FINALIZER = "ductape.app/finalizer"


@pytest.mark.parametrize(
    ("mutate", "label"),
    [
        (lambda b: None, "bus"),
        (lambda b: b["metadata"].update(finalizers=["other.example/keep"]), "bus"),
        (lambda b: b["metadata"].update(finalizers=[FINALIZER]), None),
        (lambda b: b["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"), None),
        (lambda b: b["metadata"]["labels"].update({core.TAG_LABEL: "bus"}), None),
        (lambda b: b["metadata"]["labels"].update({core.TAG_LABEL: "stale"}), "bus"),
        (lambda b: b["spec"].pop("envs"), None),
        (lambda b: b["spec"].pop("tag"), None),
    ],
)
def test_a_new_resource_is_labelled_with_the_finalizer(mutate: Any, label: str | None) -> None:
    raw = fakes.body()
    mutate(raw)
    assert core.label_before_handling(raw, FINALIZER) == label


def topic(tag: str, *subs: str, name: str | None = None) -> models.TopicSpec:
    return models.TopicSpec(tag=tag, name=name, subscriptions=list(subs))


def test_topic_work_checks_the_unchanged_and_ensures_the_rest() -> None:
    orders, audit = topic("orders", "billing"), topic("audit", "ops")
    prev = applied_env(topics=(orders, audit))
    prev = core.AppliedEnv(
        env=prev.env,
        topics=prev.topics,
        secret_name="bus-dev",
        locations={"orders": core.base.TopicRoute(tag="orders", name="orders")},
    )
    spec = models.parse_spec(
        fakes.body(
            topics=[
                {"tag": "orders", "subscriptions": ["billing"]},
                {"tag": "audit", "subscriptions": ["ops", "x"]},
            ]
        )["spec"]
    )
    env = spec.envs[0]
    work = core.topic_work(spec, env, prev)
    assert [t.tag for t in work.check] == ["orders"]
    assert [t.tag for t in work.ensure] == ["audit"]  # changed, and no location known
    moved = spec.envs[0].model_copy(
        update={"config": spec.envs[0].config.model_copy(update={"host": "r2"})}
    )
    assert [t.tag for t in core.topic_work(spec, moved, prev).ensure] == ["orders", "audit"]
    assert core.topic_work(spec, env, None).check == ()


@pytest.mark.parametrize(
    ("before", "after", "removed"),
    [
        ([topic("a", "x", "y")], [topic("a", "x", "y")], []),
        ([topic("a", "x", "y")], [topic("a", "x")], [("a", "y")]),
        ([topic("a", "x"), topic("b", "z")], [topic("a", "x")], [("b", None)]),
        ([topic("a", "x")], [topic("a", "x", name="renamed")], [("a", None)]),
    ],
)
def test_removed_from(
    before: list[models.TopicSpec], after: list[models.TopicSpec], removed: list[Any]
) -> None:
    assert [(p.name, sub) for p, sub in core.removed_from(before, after)] == removed


# --- transitions and the finalizer -------------------------------------------------


def status_with(reason: Reason, ok: bool) -> models.MessageBrokerStatus:
    conds = conditions.set_condition(
        [],
        type=conditions.READY,
        status=models.ConditionStatus.TRUE if ok else models.ConditionStatus.FALSE,
        reason=reason,
        message=str(reason),
        generation=1,
    )
    return models.MessageBrokerStatus(conditions=conds, summary="dev:REDIS")


OBJ = core.BrokerObject.from_body(fakes.body())


@pytest.mark.parametrize(
    ("before", "after", "level", "event", "words"),
    [
        (EMPTY, status_with(Reason.ALL_ENVS_READY, True), logging.INFO, "Normal", "Ready ("),
        (
            status_with(Reason.PROVISIONING, False),
            status_with(Reason.ALL_ENVS_READY, True),
            logging.INFO,
            "Normal",
            "Ready (",
        ),
        (
            status_with(Reason.BROKER_UNREACHABLE, False),
            status_with(Reason.ALL_ENVS_READY, True),
            logging.INFO,
            "Normal",
            "Ready, recovered",
        ),
        (EMPTY, status_with(Reason.PROVISIONING, False), logging.INFO, None, "provisioning"),
        (
            status_with(Reason.ALL_ENVS_READY, True),
            status_with(Reason.BROKER_UNREACHABLE, False),
            logging.WARNING,
            "Warning",
            "not Ready (BrokerUnreachable)",
        ),
    ],
)
def test_transitions_log_one_line_and_post_an_event(
    before: models.MessageBrokerStatus,
    after: models.MessageBrokerStatus,
    level: int,
    event: str | None,
    words: str,
) -> None:
    change = core.transition(OBJ, before, after)
    assert change is not None
    assert change.level == level and words in change.line and "ns/bus" in change.line
    assert (change.event.type if change.event else None) == event


def test_no_transition_while_ready_holds() -> None:
    ready = status_with(Reason.ALL_ENVS_READY, True)
    assert core.transition(OBJ, ready, ready) is None
    assert core.transition(OBJ, EMPTY, EMPTY) is None


@pytest.mark.parametrize(
    ("left", "elapsed", "terminating", "let_go", "warns"),
    [
        ([], 0.0, False, True, False),
        (["dev (REDIS): orders: down"], 10.0, False, False, False),
        (["dev (REDIS): orders: down"], 300.0, False, True, True),
        (["dev (REDIS): orders: down"], 0.0, True, True, True),
    ],
)
def test_release(
    left: list[str], elapsed: float, terminating: bool, let_go: bool, warns: bool
) -> None:
    verdict = core.release(left, elapsed=elapsed, timeout=300, namespace_terminating=terminating)
    assert verdict.let_go is let_go
    assert (verdict.warning is not None) is warns
    if warns:
        assert verdict.warning is not None and "orders" in verdict.warning.message
    if not let_go:
        assert "deletion pending" in verdict.retry_message


def test_an_unreadable_spec_is_finalized_with_retain() -> None:
    raw = fakes.body(policy="Delete")
    raw["spec"]["envs"] = "garbage"
    assert core.deletion_policy(core.BrokerObject.from_body(raw)) is models.DeletionPolicy.RETAIN
    assert core.deletion_policy(OBJ) is models.DeletionPolicy.RETAIN
    delete = core.BrokerObject.from_body(fakes.body(policy="Delete"))
    assert core.deletion_policy(delete) is models.DeletionPolicy.DELETE


def test_events_name_what_happened_on_the_broker() -> None:
    prev = applied_env(topics=(topic("orders", "billing"),))
    env = prev.env
    assert "kept orders" in core.moved(models.DeletionPolicy.RETAIN, env, prev, "x").message
    assert core.moved(models.DeletionPolicy.DELETE, env, prev, "x").reason == Reason.DELETED
    assert "deleted" in core.env_removed(models.DeletionPolicy.DELETE, prev).message
    assert core.secret_written(env, "bus-dev").reason == Reason.SECRET_WRITTEN
    assert "re-created" in core.drift_repaired(env, topic("orders"), "redis://r").message


@pytest.mark.parametrize(
    ("status", "paused"),
    [
        ({}, False),
        ({"conditions": []}, False),
        ({"conditions": [{"type": "Ready", "status": "False", "reason": "Paused"}]}, True),
        ({"conditions": [{"type": "Ready", "status": "True", "reason": "AllEnvsReady"}]}, False),
        ({"conditions": [{"type": "Healthy", "reason": "Paused"}]}, False),
        ({"conditions": ["garbage", {"type": "Ready", "reason": "Paused"}]}, True),
        ({"conditions": "garbage"}, False),
    ],
)
def test_shows_paused_reads_the_ready_reason(status: dict[str, Any], paused: bool) -> None:
    body = {"metadata": {"namespace": "ns", "name": "bus", "uid": "u"}, "status": status}
    assert core.shows_paused(core.BrokerObject.from_body(body)) is paused


@pytest.mark.parametrize(
    ("policy", "meanwhile"), [("Retain", True), ("Delete", False), ("Sometimes", False)]
)
def test_only_retain_provisions_while_the_finalizer_is_in_flight(
    policy: str, meanwhile: bool
) -> None:
    obj = core.BrokerObject.from_body(fakes.body(policy=policy))
    assert core.provisions_while_finalizing(obj) is meanwhile
