"""Each provider type end to end: apply, Ready, check the broker, use the Secret."""

from __future__ import annotations

import pytest

from tests.e2e import kit, raw


@pytest.mark.parametrize("type_", kit.TYPES)
async def test_resource_goes_ready_and_broker_and_secret_match(
    kube: kit.Kube, namespace: str, type_: str
) -> None:
    # Not "google...": Pub/Sub refuses resource names that start with "goog".
    name = kit.unique(type_.lower().split("_")[-1])
    for secret_name, data in kit.credential_secrets(type_).items():
        kube.create_secret(namespace, secret_name, data)
    topics = kit.topics_for(name)
    kube.apply(namespace, kit.broker_manifest(name, envs=[("dev", type_)], topics=topics))

    obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady")

    status = obj["status"]
    assert status["summary"] == f"dev:{type_}"
    assert [e["phase"] for e in status["envs"]] == ["Ready"]
    assert status["envs"][0]["secretName"] == f"{name}-dev"
    assert status["binding"] == {"name": f"{name}-dev"}
    assert obj["metadata"]["labels"]["ductape.app/tag"] == name
    assert "ductape.app/finalizer" in obj["metadata"]["finalizers"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Provisioned"]["status"] == "True"
    assert conds["Healthy"]["status"] == "True"

    secret = kube.secret(namespace, f"{name}-dev")
    assert secret is not None
    assert secret["provider"] == "ductape"
    assert secret["broker-tag"] == name
    assert secret["env"] == "dev"
    secret_obj = kube.secret_object(namespace, f"{name}-dev")
    assert secret_obj.metadata.labels["ductape.app/env"] == "dev"
    assert secret_obj.metadata.owner_references[0].uid == obj["metadata"]["uid"]
    mapping = kit.topics_json(secret)
    assert set(mapping) == {"t0", "t1"}
    for topic in topics:
        entry = mapping[topic["tag"]]
        assert set(entry["subscriptions"]) == {"billing", "shipping"}
        assert await raw.exists(type_, entry), f"{topic['tag']} missing on the broker: {entry}"

    # The Secret alone is enough to talk to the broker: one message, both subscriptions.
    entry = mapping["t0"]
    message = raw.payload()
    await raw.publish_with_secret(secret, entry, message)
    for sub in ("billing", "shipping"):
        got = await raw.receive_with_secret(secret, entry, sub)
        assert message in got, f"{sub} did not receive the message on {type_}"


async def test_kafka_topic_has_declared_partitions(kube: kit.Kube, namespace: str) -> None:
    import os

    from aiokafka.admin import AIOKafkaAdminClient

    name = kit.unique("kparts")
    topics = [{"tag": "orders", "name": f"{name}.orders", "partitions": 3, "subscriptions": ["a"]}]
    kube.apply(namespace, kit.broker_manifest(name, envs=[("dev", "KAFKA")], topics=topics))
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        described = await admin.describe_topics([f"{name}.orders"])
        assert len(described[0]["partitions"]) == 3
    finally:
        await admin.close()
