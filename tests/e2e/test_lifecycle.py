"""Lifecycle end to end: examples, provider swap, deletion policies, Secrets, outages,
pausing, tag conflicts, drift, credential hygiene and invalid resources."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

import pytest

from tests.e2e import kit, raw
from tests.e2e.conftest import HEALTH_INTERVAL, OperatorProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _secret_entry(kube: kit.Kube, ns: str, secret: str, tag: str) -> tuple[dict[str, str], Any]:
    data = kube.secret(ns, secret)
    assert data is not None, f"Secret {ns}/{secret} missing"
    return data, kit.topics_json(data)[tag]


def test_two_env_example_goes_ready_with_two_secrets(kube: kit.Kube, namespace: str) -> None:
    kit.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "message-bus.yaml"))
    obj = kube.wait_condition(namespace, "message-bus", "True", "AllEnvsReady")
    assert obj["status"]["summary"] == "prd:RABBITMQ dev:REDIS"
    assert "binding" not in obj["status"] or obj["status"]["binding"] is None
    prd = kube.secret(namespace, "message-bus-prd")
    dev = kube.secret(namespace, "message-bus-dev")
    assert prd is not None and prd["type"] == "rabbitmq"
    assert dev is not None and dev["type"] == "redis"
    printed = kit.kubectl("get", "mb", "-n", namespace)
    assert "message-bus" in printed and "True" in printed


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_swap_rabbitmq_to_kafka(kube: kit.Kube, namespace: str, policy: str) -> None:
    name = kit.unique("swap")
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    topics = kit.topics_for(name, count=1)
    manifest = kit.broker_manifest(
        name, envs=[("prd", "RABBITMQ")], topics=topics, deletion_policy=policy
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    rabbit_secret, rabbit_entry = _secret_entry(kube, namespace, f"{name}-prd", "t0")
    kept = raw.payload()
    await raw.publish_with_secret(rabbit_secret, rabbit_entry, kept)

    manifest["spec"]["envs"][0] = {
        "slug": "prd",
        "type": "KAFKA",
        "config": kit.env_config("KAFKA"),
    }
    kube.apply(namespace, manifest)
    obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert obj["status"]["summary"] == "prd:KAFKA"

    kafka_secret, kafka_entry = _secret_entry(kube, namespace, f"{name}-prd", "t0")
    assert kafka_secret["type"] == "kafka"
    assert "bootstrap-servers" in kafka_secret
    assert await raw.exists("KAFKA", kafka_entry)
    if policy == "Retain":
        assert await raw.exists("RABBITMQ", rabbit_entry), "Retain must keep the old exchange"
        for sub in ("billing", "shipping"):
            got = await raw.receive_with_secret(rabbit_secret, rabbit_entry, sub)
            assert kept in got, f"message on the retained queue {sub} was lost"
    else:
        assert not await raw.exists("RABBITMQ", rabbit_entry), "Delete must remove the old ones"


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_delete_applies_policy_and_secrets_are_collected(
    kube: kit.Kube, namespace: str, policy: str
) -> None:
    name = kit.unique("del")
    manifest = kit.broker_manifest(
        name, envs=[("dev", "REDIS")], topics=kit.topics_for(name), deletion_policy=policy
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    secret, entry = _secret_entry(kube, namespace, f"{name}-dev", "t0")
    message = raw.payload()
    await raw.publish_with_secret(secret, entry, message)

    kube.delete(namespace, name)
    kit.wait_until(lambda: kube.get(namespace, name) is None, timeout=60, what="resource gone")
    kit.wait_until(
        lambda: kube.secret(namespace, f"{name}-dev") is None,
        timeout=60,
        what="connection Secret garbage-collected",
    )
    if policy == "Retain":
        assert await raw.exists("REDIS", entry)
        assert message in await raw.receive_with_secret(secret, entry, "billing", timeout=5)
    else:
        assert not await raw.exists("REDIS", entry)


async def test_a_resource_deleted_right_after_its_create_leaves_nothing_behind(
    kube: kit.Kube, namespace: str
) -> None:
    """Deleted while its create is being handled, with deletionPolicy Delete: whether the
    deletion comes before the operator's finalizer or after it, the resource goes and
    no stream of it is left on the broker (docs/operations.md, "A burst of creates")."""
    control = kit.unique("kept")
    kube.apply(
        namespace,
        kit.broker_manifest(control, envs=[("dev", "REDIS")], topics=kit.topics_for(control)),
    )
    names = [kit.unique("quick") for _ in range(8)]
    for name in names:
        manifest = kit.broker_manifest(
            name, envs=[("dev", "REDIS")], topics=kit.topics_for(name), deletion_policy="Delete"
        )
        kube.apply(namespace, manifest)
        kube.delete(namespace, name)
    for name in names:
        kit.wait_until(
            lambda name=name: kube.get(namespace, name) is None, timeout=60, what=f"{name} gone"
        )
    # The lookup below finds a stream that exists: its negative answers mean something.
    kube.wait_condition(namespace, control, "True", "AllEnvsReady")
    for topic in kit.topics_for(control):
        assert await raw.exists("REDIS", {"name": topic["name"]})
    left = [
        topic["name"]
        for name in names
        for topic in kit.topics_for(name)
        if await raw.exists("REDIS", {"name": topic["name"]})
    ]
    assert left == []


def test_a_retain_resource_deleted_right_after_its_create_goes_with_its_secret(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    """With Retain the brokers are provisioned while the finalizer patch is in flight:
    deleted before it lands or after, the resource goes, its Secret goes by garbage
    collection, and the operator reports no failure for it (docs/operations.md, "A burst
    of creates")."""
    since = operator.log_size()
    names = [kit.unique("retained") for _ in range(8)]
    for name in names:
        kube.apply(
            namespace,
            kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name)),
        )
        kube.delete(namespace, name)
    for name in names:
        kit.wait_until(
            lambda name=name: kube.get(namespace, name) is None, timeout=60, what=f"{name} gone"
        )
        kit.wait_until(
            lambda name=name: kube.secret(namespace, f"{name}-dev") is None,
            timeout=60,
            what=f"the Secret of {name} collected",
        )
    complaints = [
        line
        for line in operator.log(since).splitlines()
        if any(name in line for name in names) and ("WARNING" in line or "ERROR" in line)
    ]
    assert complaints == []


def test_missing_secret_then_created_then_rotated(
    kube: kit.Kube, namespace: str, private_redis: kit.PrivateRedis
) -> None:
    name = kit.unique("sec")
    manifest = private_redis.manifest(name)
    kube.apply(namespace, manifest)
    obj = kube.wait_condition(namespace, name, "False", "SecretNotFound")
    assert "redis-auth" in obj["status"]["conditions"][0]["message"]

    kube.create_secret(namespace, "redis-auth", {"password": private_redis.password})
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert kube.secret(namespace, f"{name}-dev")["password"] == private_redis.password  # type: ignore[index]

    # Rotation: the Secret changes first. The operator picks it up without the
    # MessageBroker being touched, reconnects with it, and is refused...
    new_password = f"rotated-{uuid.uuid4().hex}"
    kube.replace_secret(namespace, "redis-auth", {"password": new_password})
    obj = kube.wait_condition(namespace, name, "False", "AuthenticationFailed", timeout=60)
    assert obj["metadata"]["generation"] == 1
    # ...until the broker is given the new password too.
    private_redis.set_password(new_password)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady", timeout=2 * HEALTH_INTERVAL + 30)
    kit.wait_until(
        lambda: (kube.secret(namespace, f"{name}-dev") or {}).get("password") == new_password,
        timeout=30,
        what="connection Secret carries the rotated password",
    )


def test_broker_outage_is_reported_and_recovers(
    kube: kit.Kube, namespace: str, private_redis: kit.PrivateRedis
) -> None:
    name = kit.unique("down")
    kube.create_secret(namespace, "redis-auth", {"password": private_redis.password})
    kube.apply(namespace, private_redis.manifest(name))
    kit.assert_outage_reported_and_recovers(
        kube,
        namespace,
        name,
        stop=private_redis.stop,
        start=private_redis.start,
        health_interval=HEALTH_INTERVAL,
    )


async def test_paused_resource_is_left_alone_until_resumed(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("pause")
    manifest = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1))
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")

    kube.patch(namespace, name, {"metadata": {"annotations": {"ductape.app/paused": "true"}}})
    kube.wait_condition(namespace, name, "False", "Paused")
    manifest["metadata"]["annotations"] = {"ductape.app/paused": "true"}
    manifest["spec"]["topics"].append({"tag": "later", "name": f"{name}.later"})
    kube.apply(namespace, manifest)
    # The operator saw the new generation (observedGeneration) and still did nothing.
    kube.wait_condition(namespace, name, "False", "Paused")
    later = {"name": f"{name}.later", "subscriptions": {}}
    assert not await raw.exists("REDIS", later)
    secret = kube.secret(namespace, f"{name}-dev") or {}
    assert "later" not in kit.topics_json(secret)

    kube.patch(namespace, name, {"metadata": {"annotations": {"ductape.app/paused": None}}})
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert await raw.exists("REDIS", later)
    assert "later" in kit.topics_json(kube.secret(namespace, f"{name}-dev") or {})


def test_newer_resource_with_same_tag_conflicts(kube: kit.Kube, namespace: str) -> None:
    tag = kit.unique("shared")
    older, newer = f"{tag}-a", f"{tag}-b"
    kube.apply(
        namespace,
        kit.broker_manifest(
            older, tag=tag, envs=[("dev", "REDIS")], topics=kit.topics_for(older, 1)
        ),
    )
    kube.wait_condition(namespace, older, "True", "AllEnvsReady")
    kube.apply(
        namespace,
        kit.broker_manifest(
            newer, tag=tag, envs=[("dev", "REDIS")], topics=kit.topics_for(newer, 1)
        ),
    )
    obj = kube.wait_condition(namespace, newer, "False", "TagConflict")
    assert older in kit.kube_condition_message(obj)
    assert kube.secret(namespace, f"{newer}-dev") is None
    # The older one is untouched.
    assert kube.condition(namespace, older, "Ready")["status"] == "True"  # type: ignore[index]


async def test_drift_is_repaired_within_a_health_round(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("drift")
    kube.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "RABBITMQ")], topics=kit.topics_for(name, 1)),
    )
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    _, entry = _secret_entry(kube, namespace, f"{name}-dev", "t0")

    await raw.delete_out_of_band("RABBITMQ", entry)
    assert not await raw.exists("RABBITMQ", entry)
    await kit.await_until(
        lambda: raw.exists("RABBITMQ", entry),
        timeout=HEALTH_INTERVAL * 2 + 20,
        what="the deleted exchange and queues to come back",
    )
    kit.wait_until(
        lambda: any(e.reason == "DriftRepaired" for e in kube.events(namespace)),
        timeout=30,
        what="a DriftRepaired event",
    )


def test_no_credential_in_status_events_or_log(
    kube: kit.Kube, namespace: str, private_redis: kit.PrivateRedis, operator: OperatorProcess
) -> None:
    name = kit.unique("creds")
    sqs_secret = f"sqs-secret-{uuid.uuid4().hex}"
    kube.create_secret(namespace, "redis-auth", {"password": private_redis.password})
    kube.create_secret(
        namespace,
        kit.SQS_KEYS_SECRET,
        {"access-key-id": "testing", "secret-access-key": sqs_secret},
    )
    manifest = private_redis.manifest(name)
    manifest["spec"]["envs"].append(
        {"slug": "prd", "type": "AWS_SQS", "config": kit.env_config("AWS_SQS")}
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    # An outage makes the operator write errors: they must not quote credentials either.
    private_redis.stop()
    kube.wait_condition(
        namespace, name, "False", "BrokerUnreachable", timeout=2 * HEALTH_INTERVAL + 20
    )
    private_redis.start()
    kube.wait_condition(namespace, name, "True", "AllEnvsReady", timeout=2 * HEALTH_INTERVAL + 30)

    status = json.dumps(kube.get(namespace, name)["status"])  # type: ignore[index]
    events = kit.kubectl("get", "events", "-n", namespace, "-o", "yaml")
    log = operator.log()
    assert private_redis.password in (kube.secret(namespace, f"{name}-dev") or {}).values()
    for secret_value in (private_redis.password, sqs_secret):
        assert secret_value not in status
        assert secret_value not in events
        assert secret_value not in log


def test_operator_survives_a_resource_that_fails_validation(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    """A resource stored under an older, laxer CRD reaches the operator: InvalidConfig."""
    crd_file = ROOT / "crds" / "messagebrokers.ductape.app.yaml"
    lax = kit.lax_crd(crd_file)
    name = kit.unique("bad")
    try:
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=lax)
        kit.wait_until(
            lambda: kit.try_apply(namespace, kit.invalid_broker(name)),
            timeout=30,
            what="the lax CRD to accept an invalid resource",
        )
    finally:
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_file))
    obj = kube.wait_condition(namespace, name, "False", "InvalidConfig")
    assert "brokers" in kit.kube_condition_message(obj)
    operator.assert_alive()
    # And the operator still serves everyone else.
    other = kit.unique("fine")
    kube.apply(namespace, kit.broker_manifest(other, envs=[("dev", "REDIS")], topics=[]))
    kube.wait_condition(namespace, other, "True", "AllEnvsReady")


# --- a Redis of the test's own, to stop, restart and re-password ------------------


async def test_removed_topic_gets_the_deletion_policy(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("rmtopic")
    topics = kit.topics_for(name, count=2)
    manifest = kit.broker_manifest(
        name, envs=[("dev", "REDIS")], topics=topics, deletion_policy="Delete"
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    _, kept = _secret_entry(kube, namespace, f"{name}-dev", "t0")
    _, removed = _secret_entry(kube, namespace, f"{name}-dev", "t1")

    manifest["spec"]["topics"] = topics[:1]
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert not await raw.exists("REDIS", removed), "Delete must remove a topic taken out"
    assert await raw.exists("REDIS", kept)
    assert set(kit.topics_json(kube.secret(namespace, f"{name}-dev") or {})) == {"t0"}

    # With Retain, taking a topic out leaves it on the broker.
    manifest["spec"]["deletionPolicy"] = "Retain"
    manifest["spec"]["topics"] = []
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert await raw.exists("REDIS", kept)


def test_healthy_unchanged_resource_causes_no_writes(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = kit.unique("quiet")
    kube.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1)),
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    kit.kubectl("wait", "--for=condition=Ready", f"mb/{name}", "-n", namespace, "--timeout=30s")
    marker = f"health round for {namespace}/{name}"
    # One round first: labels and the applied record are written once, then never again.
    kit.wait_until(lambda: operator.log().count(marker) >= 1, timeout=60, what="a health round")
    version = kube.get(namespace, name)["metadata"]["resourceVersion"]  # type: ignore[index]
    secret_version = kube.secret_object(namespace, f"{name}-dev").metadata.resource_version
    rounds = operator.log().count(marker)
    kit.wait_until(
        lambda: operator.log().count(marker) >= rounds + 3,
        timeout=HEALTH_INTERVAL * 3 + 30,
        what="three more health rounds",
    )
    assert kube.get(namespace, name)["metadata"]["resourceVersion"] == version  # type: ignore[index]
    assert kube.secret_object(namespace, f"{name}-dev").metadata.resource_version == secret_version


def test_a_failing_resource_is_retried_by_the_health_rounds_without_a_write(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    """A create that cannot finish is retried by the health rounds, not by kopf: kopf
    patched its progress annotation on every retry (docs/operations.md, "Retries")."""
    name = kit.unique("broken")
    manifest = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1))
    good = manifest["spec"]["envs"][0]
    broken = {**good, "config": {**good["config"], "host": "no-such-broker.invalid"}}
    manifest["spec"]["envs"] = [broken]
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "False", "BrokerUnreachable")
    marker = f"health round for {namespace}/{name}"
    kit.wait_until(lambda: operator.log().count(marker) >= 1, timeout=60, what="a health round")
    obj = kube.get(namespace, name) or {}
    version = obj["metadata"]["resourceVersion"]
    rounds = operator.log().count(marker)
    kit.wait_until(
        lambda: operator.log().count(marker) >= rounds + 3,
        timeout=HEALTH_INTERVAL * 3 + 30,
        what="three more health rounds",
    )

    obj = kube.get(namespace, name) or {}
    assert obj["metadata"]["resourceVersion"] == version, "written while it kept failing"
    annotations = obj["metadata"].get("annotations") or {}
    assert "ductape.app/create" not in annotations, "kopf keeps a retry of the create"
    assert kit.condition_of(obj)["reason"] == "BrokerUnreachable"  # type: ignore[index]

    kube.patch(namespace, name, {"spec": {"envs": [good]}})
    kube.wait_condition(namespace, name, "True", "AllEnvsReady", timeout=60)
    assert kube.secret(namespace, f"{name}-dev") is not None


def test_a_new_resource_is_written_twice_by_the_operator_and_never_by_kopf(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    """The finalizer patch (with the tag label) and the status, which carries kopf's record
    of the handled spec: no bookkeeping patch, no kopf annotation (docs/operations.md,
    "A burst of creates")."""
    name = kit.unique("lean")
    kube.apply(namespace, kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=[]))
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    marker = f"health round for {namespace}/{name}"
    kit.wait_until(lambda: operator.log().count(marker) >= 1, timeout=60, what="a health round")

    obj = kube.get(namespace, name)
    assert obj is not None
    writers = sorted(
        (f["manager"], f.get("subresource") or "") for f in obj["metadata"]["managedFields"]
    )
    assert [w for w in writers if w[0] != "kubectl-client-side-apply"] == [
        ("OpenAPI-Generator", ""),
        ("OpenAPI-Generator", "status"),
    ], writers
    ours = [k for k in obj["metadata"].get("annotations") or {} if k.startswith("ductape.app/")]
    assert ours == []
    assert obj["metadata"]["finalizers"] == ["ductape.app/finalizer"]
    assert json.loads(obj["status"]["handledSpec"])["spec"]["tag"] == name
    assert "dev" in json.loads(obj["status"]["applied"])


def test_the_annotations_of_an_earlier_version_are_removed_once_the_status_has_both_records(
    kube: kit.Kube, namespace: str
) -> None:
    """A resource as an earlier version left it: its applied record and kopf's handled
    spec (of an older spec) in annotations. The operator handles the change, writes both
    records into the status and removes the annotations (docs/reference.md, "Annotations")."""
    name = kit.unique("legacy")
    spec = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=[])["spec"]
    older = {"spec": {**spec, "description": "before the upgrade"}}
    legacy = {
        "ductape.app/applied": "{}",
        "ductape.app/last-handled-configuration": json.dumps(older),
        "team": "payments",
    }
    kube.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=[], annotations=legacy),
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")

    def annotations() -> dict[str, str]:
        obj = kube.get(namespace, name)
        assert obj is not None
        return dict(obj["metadata"].get("annotations") or {})

    kit.wait_until(
        lambda: (
            "ductape.app/applied" not in annotations()
            and "ductape.app/last-handled-configuration" not in annotations()
        ),
        timeout=60,
        what="the earlier version's annotations to go",
    )
    assert annotations().get("team") == "payments", "annotations of others are kept"
    status = (kube.get(namespace, name) or {})["status"]
    assert json.loads(status["handledSpec"])["spec"]["tag"] == name
    assert "dev" in json.loads(status["applied"])


def test_finalizer_gives_up_on_an_unreachable_broker(
    kube: kit.Kube, namespace: str, private_redis: kit.PrivateRedis
) -> None:
    from tests.e2e.conftest import FINALIZER_TIMEOUT

    name = kit.unique("stuck")
    kube.create_secret(namespace, "redis-auth", {"password": private_redis.password})
    manifest = private_redis.manifest(name)
    manifest["spec"]["deletionPolicy"] = "Delete"
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    private_redis.stop()

    kube.delete(namespace, name)
    kit.wait_until(
        lambda: kube.get(namespace, name) is None,
        timeout=FINALIZER_TIMEOUT + 60,
        what="the finalizer to let go after its timeout",
    )
    warnings = [
        e
        for e in kube.events(namespace)
        if e.reason == "DeletionIncomplete" and e.type == "Warning"
    ]
    assert warnings, "a Warning event must name what was left on the broker"
    assert f"{name}.t0" in warnings[0].message


def test_namespace_deletion_is_not_held_hostage(
    kube: kit.Kube, operator: OperatorProcess, private_redis: kit.PrivateRedis
) -> None:
    ns = f"e2e-ns-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(ns)
    name = kit.unique("hostage")
    kube.create_secret(ns, "redis-auth", {"password": private_redis.password})
    manifest = private_redis.manifest(name)
    manifest["spec"]["deletionPolicy"] = "Delete"
    kube.apply(ns, manifest)
    kube.wait_condition(ns, name, "True", "AllEnvsReady")
    private_redis.stop()

    kube.delete_namespace(ns)

    def gone() -> bool:
        try:
            kube.core.read_namespace(ns)
        except Exception:
            return True
        return False

    # Well under the finalizer timeout would be ideal; the namespace controller's own
    # pace sets the floor, so allow it generous time but less than timeout + slack.
    kit.wait_until(gone, timeout=90, what=f"namespace {ns} to be deleted")
    operator.assert_alive()


def test_deleting_a_namespace_writes_no_secret_again_and_reports_no_failure(
    kube: kit.Kube, operator: OperatorProcess
) -> None:
    """The namespace controller deletes the Secrets before it marks the MessageBrokers:
    writing a connection Secret again is refused (403), a referenced Secret is missing, and
    neither must be reported as a failure of each resource on its way out
    (docs/operations.md, "Deleting a namespace")."""
    ns = f"e2e-ns-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(ns)
    for secret, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(ns, secret, data)  # referenced: deleted with the namespace too
    names = [kit.unique("going") for _ in range(5)]
    for i, name in enumerate(names):
        envs = [("dev", "REDIS" if i % 2 else "RABBITMQ")]
        kube.apply(ns, kit.broker_manifest(name, envs=envs, topics=[]))
    for name in names:
        kube.wait_condition(ns, name, "True", "AllEnvsReady")
    since = operator.log_size()

    kube.delete_namespace(ns)
    kit.wait_until(
        lambda: ns not in kube.namespace_names() or None,
        timeout=90,
        what=f"namespace {ns} to be deleted",
    )
    log = operator.log(since)
    for name in names:
        assert f"{ns}/{name}: deleted (deletionPolicy Retain)" in log
    assert not [line for line in log.splitlines() if ns in line and "WARNING" in line], log
    rewritten = [
        line for line in log.splitlines() if f"Secret {ns}/" in line and "reconciling" in line
    ]
    assert not rewritten, "a connection Secret was written again:\n" + "\n".join(rewritten)
