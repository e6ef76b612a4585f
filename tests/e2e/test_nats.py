"""NATS end to end, beside what every provider gets (test_providers.py,
test_messaging_swap.py): Retain and Delete when an env leaves NATS, drift repair, and
an outage of a private nats-server turning Ready=False and back."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.brokers.conftest import PrivateServer
from tests.e2e import kit, raw
from tests.e2e.conftest import HEALTH_INTERVAL


def _secret_entry(kube: kit.Kube, ns: str, secret: str, tag: str) -> tuple[dict[str, str], Any]:
    data = kube.secret(ns, secret)
    assert data is not None, f"Secret {ns}/{secret} missing"
    return data, kit.topics_json(data)[tag]


@pytest.fixture
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    binary = str(pathlib.Path(__file__).resolve().parents[2] / "hack" / "build-nats.sh")
    built = subprocess.run([binary], check=True, capture_output=True, text=True)
    server = PrivateServer(built.stdout.strip().splitlines()[-1], tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
async def test_leaving_nats_applies_the_deletion_policy(
    kube: kit.Kube, namespace: str, policy: str
) -> None:
    name = kit.unique("nleave")
    manifest = kit.broker_manifest(
        name, envs=[("prd", "NATS")], topics=kit.topics_for(name, count=1), deletion_policy=policy
    )
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    nats_secret, nats_entry = _secret_entry(kube, namespace, f"{name}-prd", "t0")
    assert nats_secret["type"] == "nats"
    kept = raw.payload()
    await raw.publish_with_secret(nats_secret, nats_entry, kept)

    manifest["spec"]["envs"][0] = {
        "slug": "prd",
        "type": "REDIS",
        "config": kit.env_config("REDIS"),
    }
    kube.apply(namespace, manifest)
    obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    assert obj["status"]["summary"] == "prd:REDIS"
    if policy == "Retain":
        assert await raw.exists("NATS", nats_entry), "Retain must keep the old stream"
        for sub in ("billing", "shipping"):
            got = await raw.receive_with_secret(nats_secret, nats_entry, sub, timeout=10)
            assert kept in got, f"message on the retained consumer {sub} was lost"
    else:
        assert not await raw.exists("NATS", nats_entry), "Delete must remove the old stream"


async def test_nats_drift_is_repaired_within_a_health_round(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("ndrift")
    kube.apply(
        namespace, kit.broker_manifest(name, envs=[("dev", "NATS")], topics=kit.topics_for(name, 1))
    )
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    _, entry = _secret_entry(kube, namespace, f"{name}-dev", "t0")
    await raw.delete_out_of_band("NATS", entry)
    assert not await raw.exists("NATS", entry)
    await kit.await_until(
        lambda: raw.exists("NATS", entry),
        timeout=HEALTH_INTERVAL * 2 + 20,
        what="the deleted stream and consumers to come back",
    )


def test_nats_outage_is_reported_and_recovers(
    kube: kit.Kube, namespace: str, private_nats: PrivateServer
) -> None:
    name = kit.unique("ndown")
    manifest = kit.broker_manifest(name, envs=[("dev", "NATS")], topics=kit.topics_for(name, 1))
    manifest["spec"]["envs"][0]["config"] = {"servers": [private_nats.url]}
    kube.apply(namespace, manifest)
    kit.assert_outage_reported_and_recovers(
        kube,
        namespace,
        name,
        stop=private_nats.stop,
        start=private_nats.start,
        health_interval=HEALTH_INTERVAL,
    )
