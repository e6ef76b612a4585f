"""The reconcile loop end to end in memory: fake Kubernetes side, fake brokers, no network.

Each test drives `Reconciler` the way kopf's handlers do (a body, and for a change
the record of its spec to write once handled) and checks what it wrote, posted and did
on the brokers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ductape_operator import core, errors, health, reconcile
from tests.unit import fakes
from tests.unit.fakes import FakeBrokers, FakeCluster

REDIS_R2 = {"slug": "dev", "type": "REDIS", "config": {"host": "r2"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manual_health(rec: reconcile.Reconciler, clock: Clock) -> None:
    rec.health = health.EndpointHealth(round_seconds=30, probe_timeout=1, clock=clock)


async def run(
    rec: reconcile.Reconciler,
    raw: dict[str, Any],
    *,
    trigger: str = core.CHANGE,
    tag_owner: str | None = None,
) -> core.Outcome:
    obj = core.BrokerObject.from_body(raw)
    handled = fakes.handled_spec(raw) if trigger == core.CHANGE else None
    return await rec.reconcile(obj, tag_owner=tag_owner, trigger=trigger, handled=handled)


async def ready_body(
    rec: reconcile.Reconciler, cluster: FakeCluster, raw: dict[str, Any]
) -> dict[str, Any]:
    """Reconcile `raw` to Ready; the body the watch would deliver next."""
    outcome = await run(rec, raw)
    assert outcome.ready, outcome.message
    return fakes.after(core.BrokerObject.from_body(raw), cluster)


def reasons(status: Any) -> dict[str, str]:
    return {c.type: c.reason for c in status.conditions}


async def test_create_provisions_writes_the_secret_label_and_status() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    outcome = await run(rec, fakes.body())

    assert outcome.ready
    assert reasons(outcome.status) == {
        "Ready": "AllEnvsReady",
        "Provisioned": "AllEnvsProvisioned",
        "Healthy": "AllBrokersHealthy",
    }
    assert brokers["r1"].topics == {"orders": {"billing", "shipping"}}
    secret = cluster.connection_secrets[("ns", "bus-dev")]
    assert secret["type"] == "redis" and secret["broker-tag"] == "bus"
    assert '"billing": "orders.billing"' in secret["topics.json"]
    kinds = [kind for kind, _ in cluster.writes]
    # The label is written before the status that says Ready; the applied record and
    # the handled spec ride in the status write: no other write.
    assert kinds == ["metadata", "secret", "status"]
    written = cluster.writes[-1][1]
    assert core.load_applied(written["applied"])["dev"].secret_name == "bus-dev"
    assert written["handledSpec"] == fakes.handled_spec(fakes.body())
    assert cluster.event_reasons() == ["AllEnvsReady"]  # a new env's Secret is no news
    assert outcome.status.binding is not None and outcome.status.binding.name == "bus-dev"


async def test_an_unchanged_resource_causes_no_write_and_no_broker_change() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    settled = await ready_body(rec, cluster, fakes.body())
    cluster.writes.clear()
    cluster.events.clear()
    brokers["r1"].calls.clear()

    for trigger in (core.CHANGE, core.HEALTH, core.HEALTH):
        outcome = await run(rec, settled, trigger=trigger)
        assert outcome.ready
    assert cluster.writes == [] and cluster.events == []
    assert not [c for c in brokers["r1"].calls if c.startswith(("ensure", "delete"))]


async def test_a_broker_outage_is_degraded_then_recovered() -> None:
    cluster, brokers, clock = FakeCluster(), FakeBrokers(), Clock()
    rec = fakes.reconciler(cluster, brokers)
    manual_health(rec, clock)
    settled = await ready_body(rec, cluster, fakes.body())

    brokers["r1"].down = True
    clock.now += 31  # the next round
    outcome = await run(rec, settled, trigger=core.HEALTH)
    assert not outcome.ready
    assert reasons(outcome.status)["Ready"] == "BrokerUnreachable"
    assert outcome.status.envs[0].phase == "Degraded"
    assert ("Warning", "BrokerUnreachable") in [(t, r) for t, r, _ in cluster.events]

    brokers["r1"].down = False
    clock.now += 31
    down = fakes.after(core.BrokerObject.from_body(settled), cluster)
    outcome = await run(rec, down, trigger=core.HEALTH)
    assert outcome.ready
    assert cluster.events[-1][:2] == ("Normal", "AllEnvsReady")


async def test_a_missing_secret_is_pending_and_retried() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    env = {
        "slug": "dev",
        "type": "REDIS",
        "config": {"host": "r1", "password": {"secretKeyRef": {"name": "pw", "key": "p"}}},
    }
    outcome = await run(rec, fakes.body(envs=[env]))
    assert not outcome.ready
    assert reasons(outcome.status)["Ready"] == "SecretNotFound"
    assert outcome.status.envs[0].phase == "Pending"
    assert brokers.by_host == {}, "no broker is contacted without its credentials"

    cluster.secrets[("ns", "pw")] = {"p": "hunter22"}
    outcome = await run(rec, fakes.body(envs=[env]))
    assert outcome.ready


@pytest.mark.parametrize(
    ("mutate", "reason", "labelled"),
    [
        (lambda b: b["spec"]["envs"][0].update(type="NOPE"), "InvalidConfig", False),
        (
            lambda b: b["metadata"]["annotations"].update({core.PAUSED_ANNOTATION: "true"}),
            "Paused",
            True,
        ),
    ],
)
async def test_a_resource_that_is_not_reconciled_says_why(
    mutate: Any, reason: str, labelled: bool
) -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    raw = fakes.body()
    mutate(raw)
    outcome = await run(rec, raw)
    assert not outcome.ready
    assert reasons(outcome.status)["Ready"] == reason
    assert brokers.by_host == {} and cluster.connection_secrets == {}
    assert any(kind == "metadata" for kind, _ in cluster.writes) is labelled
    if reason == "Paused":
        assert "Provisioned" not in reasons(outcome.status)


async def test_the_newer_of_two_resources_with_one_tag_is_not_provisioned() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    outcome = await run(rec, fakes.body("newer"), tag_owner="older")
    assert reasons(outcome.status)["Ready"] == "TagConflict"
    assert "older" in outcome.message
    assert brokers.by_host == {}
    labels = [data["labels"] for kind, data in cluster.writes if kind == "metadata"]
    assert labels == [{core.TAG_LABEL: "newer"}]


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_a_swap_provisions_the_new_broker_switches_the_secret_then_applies_the_policy(
    policy: str,
) -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    settled = await ready_body(rec, cluster, fakes.body(policy=policy))
    moved = fakes.body(policy=policy, envs=[REDIS_R2], generation=2)
    moved["metadata"]["annotations"] = settled["metadata"]["annotations"]
    moved["status"] = settled["status"]
    cluster.writes.clear()

    outcome = await run(rec, moved)
    assert outcome.ready
    assert brokers["r2"].topics == {"orders": {"billing", "shipping"}}
    assert cluster.connection_secrets[("ns", "bus-dev")]["host"] == "r2"
    assert "SecretWritten" in cluster.event_reasons()  # the Secret now points elsewhere
    if policy == "Retain":
        assert brokers["r1"].topics == {"orders": {"billing", "shipping"}}
        assert "Retained" in cluster.event_reasons()
    else:
        assert brokers["r1"].topics == {}
        assert "Deleted" in cluster.event_reasons()
        # Provision new, switch the Secret, then delete on the old broker.
        assert brokers["r2"].calls.index("ensure orders") >= 0
        assert brokers["r1"].calls[-1] == "delete orders"


async def test_removing_a_topic_and_a_subscription_with_delete() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    topics = [
        {"tag": "orders", "subscriptions": ["billing", "shipping"]},
        {"tag": "audit", "subscriptions": ["ops"]},
    ]
    settled = await ready_body(rec, cluster, fakes.body(policy="Delete", topics=topics))
    fewer = fakes.body(
        policy="Delete", topics=[{"tag": "orders", "subscriptions": ["billing"]}], generation=2
    )
    fewer["metadata"]["annotations"] = settled["metadata"]["annotations"]
    outcome = await run(rec, fewer)
    assert outcome.ready
    assert brokers["r1"].topics == {"orders": {"billing"}}


async def test_removing_an_env_deletes_its_secret_and_applies_the_policy() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    two = [{"slug": "dev", "type": "REDIS", "config": {"host": "r1"}}, {**REDIS_R2, "slug": "qa"}]
    settled = await ready_body(rec, cluster, fakes.body(policy="Delete", envs=two))
    assert ("ns", "bus-qa") in cluster.connection_secrets
    one = fakes.body(policy="Delete", envs=two[:1], generation=2)
    one["metadata"]["annotations"] = settled["metadata"]["annotations"]
    outcome = await run(rec, one)
    assert outcome.ready
    assert ("ns", "bus-qa") not in cluster.connection_secrets
    assert brokers["r2"].topics == {}
    assert "EnvRemoved" in cluster.event_reasons()


async def test_a_topic_deleted_out_of_band_is_recreated_from_the_round_inventory() -> None:
    cluster, brokers, clock = FakeCluster(), FakeBrokers(), Clock()
    rec = fakes.reconciler(cluster, brokers)
    manual_health(rec, clock)
    settled = await ready_body(rec, cluster, fakes.body())
    brokers["r1"].topics.clear()
    brokers["r1"].calls.clear()
    clock.now += 31

    outcome = await run(rec, settled, trigger=core.HEALTH)
    assert outcome.ready
    assert brokers["r1"].topics == {"orders": {"billing", "shipping"}}
    assert brokers["r1"].calls.count("inventory") == 1
    assert not [c for c in brokers["r1"].calls if c.startswith("exists")]
    assert "DriftRepaired" in cluster.event_reasons()


async def test_an_older_generation_never_undoes_a_newer_one() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    await ready_body(rec, cluster, fakes.body(envs=[REDIS_R2], generation=2))
    cluster.writes.clear()
    outcome = await run(rec, fakes.body(generation=1))
    assert outcome.message == "stale"
    assert cluster.writes == [] and "r1" not in brokers.by_host


async def test_a_slow_first_reconcile_shows_provisioning_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconcile, "PROVISIONING_NOTICE_SECONDS", 0.0)
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    outcome = await run(rec, fakes.body())
    statuses = [data for kind, data in cluster.writes if kind == "status"]
    assert [s["conditions"][0]["reason"] for s in statuses] == ["Provisioning", "AllEnvsReady"]
    assert outcome.ready


# --- finalizer ----------------------------------------------------------------


async def finalize(
    rec: reconcile.Reconciler, raw: dict[str, Any], *, elapsed: float = 0, terminating: bool = False
) -> bool:
    obj = core.BrokerObject.from_body(raw)
    return await rec.finalize(obj, elapsed=elapsed, namespace_terminating=terminating)


async def test_retain_lets_go_without_any_broker() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    settled = await ready_body(rec, cluster, fakes.body())
    brokers["r1"].down = True
    brokers["r1"].calls.clear()
    assert await finalize(rec, settled)
    assert brokers["r1"].calls == [] and brokers["r1"].topics


async def test_delete_removes_the_topics_of_a_reachable_broker() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    settled = await ready_body(rec, cluster, fakes.body(policy="Delete"))
    assert await finalize(rec, settled)
    assert brokers["r1"].topics == {}


async def test_an_object_removed_unfinalized_gets_its_policy_from_what_was_provisioned() -> None:
    """The API server removed the object although its finalizer was added (a DELETE that
    raced the finalizer patch): the topics provisioned meanwhile go, per deletionPolicy.
    The body is the one created, without the applied record that never reached it."""
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    created = fakes.body(policy="Delete")
    await run(rec, created)
    assert brokers["r1"].topics
    assert await rec.removed(core.BrokerObject.from_body(created))
    assert brokers["r1"].topics == {}
    assert not await rec.removed(core.BrokerObject.from_body(created)), "only once"


async def test_an_object_finalized_here_is_left_alone_once_removed() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    settled = await ready_body(rec, cluster, fakes.body())
    assert await finalize(rec, settled)
    brokers["r1"].calls.clear()
    assert not await rec.removed(core.BrokerObject.from_body(settled))
    assert brokers["r1"].calls == []


@pytest.mark.parametrize(
    ("elapsed", "terminating", "lets_go"),
    [(10.0, False, False), (301.0, False, True), (0.0, True, True)],
)
async def test_delete_against_an_unreachable_broker_gives_up_in_bounded_time(
    elapsed: float, terminating: bool, lets_go: bool
) -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers, finalizer_timeout=300)
    settled = await ready_body(rec, cluster, fakes.body(policy="Delete"))
    brokers["r1"].down = True
    if lets_go:
        assert await finalize(rec, settled, elapsed=elapsed, terminating=terminating)
        warning = [e for e in cluster.events if e[1] == "DeletionIncomplete"]
        assert warning and "orders" in warning[0][2]
    else:
        with pytest.raises(errors.BrokerUnreachableError, match="deletion pending"):
            await finalize(rec, settled, elapsed=elapsed, terminating=terminating)
    assert brokers["r1"].topics, "nothing was deleted on a broker that was down"


async def test_retention_is_applied_and_set_back_after_a_change_out_of_band() -> None:
    cluster, brokers, clock = FakeCluster(), FakeBrokers(), Clock()
    rec = fakes.reconciler(cluster, brokers)
    manual_health(rec, clock)
    topics = [{"tag": "orders", "retentionSeconds": 3600, "subscriptions": ["billing"]}]
    settled = await ready_body(rec, cluster, fakes.body(topics=topics))
    assert brokers["r1"].settings == {"orders": (3600, None)}
    assert cluster.connection_secrets[("ns", "bus-dev")]
    status = settled["status"]["envs"][0]["topics"][0]
    assert status["retention"] == "3600s"

    brokers["r1"].settings["orders"] = (60, None)  # changed on the broker by someone
    clock.now += 31
    outcome = await run(rec, settled, trigger=core.HEALTH)
    assert outcome.ready
    assert brokers["r1"].settings == {"orders": (3600, None)}
    assert "set back" in next(m for _, r, m in cluster.events if r == "DriftRepaired")


async def test_the_dead_letter_topic_is_in_topics_json() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    topics = [
        {
            "tag": "orders",
            "deadLetter": {"topic": "dead", "maxDeliveryAttempts": 5},
            "subscriptions": ["billing"],
        },
        {"tag": "dead", "subscriptions": ["ops"]},
    ]
    await ready_body(rec, cluster, fakes.body(topics=topics))
    entry = cluster.connection_secrets[("ns", "bus-dev")]["topics.json"]
    assert '"deadLetter": {"maxDeliveryAttempts": 5, "topic": "dead"}' in entry


async def test_a_change_that_could_not_finish_is_handled_and_left_to_the_health_rounds() -> None:
    """kopf compares each body with `status.handledSpec`: a change the reconcile could not
    finish records its spec all the same, so kopf does not retry it (a patch of the resource
    each time); the next health round finishes it, with no write before it does
    (docs/operations.md, "Retries")."""
    cluster, brokers, clock = FakeCluster(), FakeBrokers(), Clock()
    rec = fakes.reconciler(cluster, brokers)
    manual_health(rec, clock)
    settled = await ready_body(rec, cluster, fakes.body())
    first = settled["status"]["handledSpec"]
    moved = fakes.body(envs=[REDIS_R2], generation=2)
    moved["status"] = settled["status"]
    brokers["r2"].down = True

    outcome = await run(rec, moved)
    assert not outcome.ready
    assert reasons(outcome.status)["Ready"] == "BrokerUnreachable"
    assert cluster.writes[-1][1]["handledSpec"] == fakes.handled_spec(moved) != first

    failed = fakes.after(core.BrokerObject.from_body(moved), cluster)
    cluster.writes.clear()
    clock.now += 31
    outcome = await run(rec, failed, trigger=core.HEALTH)  # still down: nothing to write
    assert not outcome.ready and cluster.writes == []

    brokers["r2"].down = False
    clock.now += 31
    outcome = await run(rec, failed, trigger=core.HEALTH)
    assert outcome.ready
    assert brokers["r2"].topics == {"orders": {"billing", "shipping"}}
    assert cluster.connection_secrets[("ns", "bus-dev")]["host"] == "r2"
    assert cluster.writes[-1][1]["handledSpec"] == fakes.handled_spec(moved)


async def test_a_secret_refused_in_a_terminating_namespace_is_no_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleting a namespace deletes the connection Secrets before it marks the resources: a
    health round in between must not report the refused re-creation as a failure."""
    cluster, brokers, clock = FakeCluster(), FakeBrokers(), Clock()
    rec = fakes.reconciler(cluster, brokers)
    manual_health(rec, clock)
    settled = await ready_body(rec, cluster, fakes.body())
    cluster.connection_secrets.clear()  # deleted with the namespace
    cluster.terminating.add("ns")
    cluster.writes.clear()
    cluster.events.clear()
    clock.now += 31

    await run(rec, settled, trigger=core.HEALTH)
    assert cluster.writes == [] and cluster.events == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_annotations_of_earlier_versions_go_once_the_status_has_both_records() -> None:
    """Earlier versions kept the applied record and kopf's handled spec in annotations;
    the first reconcile writes both into the status, then removes the annotations, once."""
    cluster, brokers = FakeCluster(), FakeBrokers()
    settled = await ready_body(fakes.reconciler(cluster, brokers), cluster, fakes.body())
    status = dict(settled["status"])
    legacy = fakes.body(
        annotations={
            core.APPLIED_ANNOTATION: status.pop("applied"),
            core.DIFFBASE_ANNOTATION: status.pop("handledSpec"),
            core.PAUSED_ANNOTATION: "false",
        },
        labels={core.TAG_LABEL: "bus"},
        status=status,
    )
    cluster.writes.clear()
    rec = fakes.reconciler(cluster, brokers)  # a new process: the upgraded operator

    assert (await run(rec, legacy)).ready
    assert [kind for kind, _ in cluster.writes] == ["status", "metadata"]
    written_status = cluster.writes[0][1]
    assert written_status["applied"] and written_status["handledSpec"]
    assert cluster.writes[1][1]["annotations"] == {
        core.APPLIED_ANNOTATION: None,
        core.DIFFBASE_ANNOTATION: None,
    }

    # The watch has not brought the removal yet: not removed twice.
    stale = {**legacy, "status": written_status}
    assert (await run(rec, stale)).ready
    assert len(cluster.writes) == 2


async def until(condition: Any, what: str) -> None:
    """Let the event loop run until `condition()` holds (a bounded number of steps)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def test_a_retain_resource_is_provisioned_while_its_finalizer_lands_then_written() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    raw = fakes.body(labels={core.TAG_LABEL: "bus"})  # the finalizer patch carries the label
    finalizing: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    reconciling = asyncio.ensure_future(
        rec.reconcile(
            core.BrokerObject.from_body(raw),
            handled=fakes.handled_spec(raw),
            finalizing=finalizing,
        )
    )
    await until(lambda: ("ns", "bus-dev") in cluster.connection_secrets, "the Secret written")
    for _ in range(100):  # all the reconcile could do without the finalizer, in memory
        await asyncio.sleep(0)
    assert brokers["r1"].topics == {"orders": {"billing", "shipping"}}
    assert [kind for kind, _ in cluster.writes] == ["secret"], "no status before the finalizer"
    assert not reconciling.done()

    finalizing.set_result(True)
    outcome = await reconciling
    assert outcome.ready and not outcome.gone
    assert [kind for kind, _ in cluster.writes] == ["secret", "status"]


async def test_a_resource_gone_before_its_finalizer_landed_gets_no_status_and_is_let_go() -> None:
    cluster, brokers = FakeCluster(), FakeBrokers()
    rec = fakes.reconciler(cluster, brokers)
    raw = fakes.body(labels={core.TAG_LABEL: "bus"})
    obj = core.BrokerObject.from_body(raw)
    finalizing: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    finalizing.set_result(False)
    outcome = await rec.reconcile(obj, handled=fakes.handled_spec(raw), finalizing=finalizing)

    assert outcome.gone and not outcome.ready
    assert "status" not in [kind for kind, _ in cluster.writes]
    assert brokers["r1"].topics, "Retain: what was provisioned stays on the broker"
    assert rec.pool.key_of(("ns", "bus", "dev")) is None, "its connection was let go"
    brokers["r1"].calls.clear()
    again = await run(rec, raw)  # an older event of the gone object, handled late
    assert not again.ready and brokers["r1"].calls == []
