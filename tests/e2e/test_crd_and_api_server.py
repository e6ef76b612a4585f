"""The cluster under the operator goes away in part: the MessageBroker CRD is deleted
(an Argo CD prune, `kubectl delete -f crds/`), or the API server is killed and started
again. Nothing hangs, nothing is lost that `Retain` keeps, and the log stays readable
(docs/operations.md, "Deleting the CRD" and "Logs").

Both tests leave the shared stack as they found it, even when they fail: the CRD
applied and the API server running.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

from tests.e2e import kit, raw
from tests.e2e.conftest import FINALIZER_TIMEOUT, OperatorProcess, apply_crd

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_NAME = f"{kit.PLURAL}.{kit.GROUP}"
#: The API server's own CRD finalizer looks every 5 s whether the objects are gone.
CRD_FINALIZER_POLL = 5.0


def _crd_exists() -> bool:
    out = kit.kubectl("get", "crd", CRD_NAME, "--ignore-not-found", "-o", "name")
    return bool(out.strip())


@contextlib.contextmanager
def _namespaces(kube: kit.Kube, count: int) -> Iterator[list[str]]:
    names = [f"e2e-crd-{uuid.uuid4().hex[:6]}" for _ in range(count)]
    for name in names:
        kube.create_namespace(name)
    try:
        yield names
    finally:
        for name in names:
            kube.delete_namespace(name)


def _entry(kube: kit.Kube, ns: str, name: str, slug: str = "dev") -> tuple[dict[str, str], Any]:
    secret = kube.secret(ns, f"{name}-{slug}")
    assert secret is not None, f"Secret {ns}/{name}-{slug} missing"
    return secret, kit.topics_json(secret)["t0"]


async def test_crd_deletion_releases_every_broker_and_reapply_adopts(
    kube: kit.Kube, operator: OperatorProcess, private_redis: kit.PrivateRedis
) -> None:
    with _namespaces(kube, 2) as (ns1, ns2):
        keep_redis, keep_rabbit = kit.unique("keep"), kit.unique("keep")
        gone, stranded = kit.unique("gone"), kit.unique("stranded")
        retained = {
            (ns1, keep_redis): kit.broker_manifest(
                keep_redis, envs=[("dev", "REDIS")], topics=kit.topics_for(keep_redis, 1)
            ),
            (ns2, keep_rabbit): kit.broker_manifest(
                keep_rabbit, envs=[("dev", "RABBITMQ")], topics=kit.topics_for(keep_rabbit, 1)
            ),
        }
        deleted = kit.broker_manifest(
            gone, envs=[("dev", "REDIS")], topics=kit.topics_for(gone, 1), deletion_policy="Delete"
        )
        # Delete on a broker that is down when the CRD goes: bounded, with a Warning.
        unreachable = private_redis.manifest(stranded)
        unreachable["spec"]["deletionPolicy"] = "Delete"
        kube.create_secret(ns2, "redis-auth", {"password": private_redis.password})
        for secret_name, data in kit.credential_secrets("RABBITMQ").items():
            kube.create_secret(ns2, secret_name, data)
        for (ns, _), manifest in retained.items():
            kube.apply(ns, manifest)
        kube.apply(ns2, deleted)
        kube.apply(ns2, unreachable)
        for ns, name in [*retained, (ns2, gone), (ns2, stranded)]:
            kube.wait_condition(ns, name, "True", "AllEnvsReady")

        messages: dict[tuple[str, str], bytes] = {}
        entries: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}
        for key in retained:
            entries[key] = _entry(kube, *key)
            messages[key] = raw.payload()
            await raw.publish_with_secret(*entries[key], messages[key])
        _, gone_entry = _entry(kube, ns2, gone)
        private_redis.stop()

        try:
            kit.kubectl("delete", "crd", CRD_NAME, "--wait=false")
            # Within the finalizer timeout, give or take the API server's own look
            # every 5 s (the unreachable broker's client retries its connection for
            # a few seconds before Delete gives up on it).
            kit.wait_until(
                lambda: not _crd_exists(),
                timeout=FINALIZER_TIMEOUT + 2 * CRD_FINALIZER_POLL,
                what=f"CRD {CRD_NAME} gone",
            )

            # Retain touched nothing on the brokers; Delete deleted what it could reach...
            for key, (secret, entry) in entries.items():
                assert await raw.exists(secret["type"].upper(), entry), f"{key}: topic lost"
            assert not await raw.exists("REDIS", gone_entry), "Delete left its stream behind"
            # ...and named what it could not reach.
            warnings = [
                e
                for e in kube.events(ns2)
                if e.reason == "DeletionIncomplete" and e.involved_object.name == stranded
            ]
            assert warnings and warnings[0].type == "Warning", "no DeletionIncomplete event"
            assert f"{stranded}.t0" in warnings[0].message
            operator.assert_alive()
        finally:
            if not _crd_exists():
                apply_crd()

        # Applied again: the same resources adopt what Retain kept (the connection
        # Secrets of their earlier selves included) and go Ready; the messages
        # published before are still there, so nothing was re-created.
        for (ns, _), manifest in retained.items():
            kube.apply(ns, manifest)
        for ns, name in retained:
            obj = kube.wait_condition(ns, name, "True", "AllEnvsReady", timeout=60)
            assert obj["metadata"]["generation"] == 1
        for key in retained:
            secret, entry = _entry(kube, *key)
            assert entry == entries[key][1]
            got = await raw.receive_with_secret(secret, entry, "billing", timeout=10)
            assert messages[key] in got, f"{key}: the retained message is gone"
        started_lines = [
            line
            for line in operator.log().splitlines()
            if "WARNING" in line and f"CRD {CRD_NAME} is being deleted" in line
        ]
        assert len(started_lines) == 1, started_lines


def _apiserver(action: str) -> None:
    subprocess.run(
        [str(ROOT / "hack" / "kube-apiserver.sh"), action],
        check=True,
        timeout=180,
        env=os.environ,
        capture_output=True,
    )


def _apiserver_answers() -> bool:
    result = subprocess.run(
        ["kubectl", "get", "--raw", "/readyz", "--request-timeout=3s"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0


async def test_api_server_restart_is_two_log_lines(
    kube: kit.Kube, operator: OperatorProcess, namespace: str
) -> None:
    name = kit.unique("api")
    manifest = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1))
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")

    since = operator.log_size()
    try:
        _apiserver("kill")
        kit.wait_until(
            lambda: "unreachable or restarting" in operator.log(since),
            timeout=30,
            what="the operator to notice the API server is gone",
        )
        # Down for a while: kopf's watches and the health rounds all fail meanwhile.
        kit.wait_until(
            lambda: operator.log(since).count("Request attempt") >= 6 or None,
            timeout=30,
            what="kopf to retry its watches a few times",
        )
    finally:
        if not _apiserver_answers():
            _apiserver("start")
    kit.wait_until(
        lambda: "over after" in operator.log(since),
        timeout=60,
        what="the operator to log the end of the outage",
    )

    # The operator lives and works: a new resource, and a topic added to the old one.
    operator.assert_alive()
    newer = kit.unique("api")
    kube.apply(
        namespace,
        kit.broker_manifest(newer, envs=[("dev", "REDIS")], topics=kit.topics_for(newer, 1)),
    )
    manifest["spec"]["topics"].append({"tag": "t1", "name": f"{name}.t1", "subscriptions": ["ops"]})
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, newer, "True", "AllEnvsReady", timeout=60)
    obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady", timeout=60)
    assert obj["metadata"]["generation"] == 2
    secret = kube.secret(namespace, f"{name}-dev")
    assert secret is not None
    assert await raw.exists("REDIS", kit.topics_json(secret)["t1"])
    secret = kube.secret(namespace, f"{newer}-dev")
    assert secret is not None
    assert await raw.exists("REDIS", kit.topics_json(secret)["t0"])

    # The log: one WARNING when it started, one INFO when it ended, no traceback (checked
    # for every test by conftest). A restarting API server may also answer 429 for a
    # moment after it says it is ready: at most one more pair of lines, for that.
    lines = operator.log(since).splitlines()
    loud = [line for line in lines if re.search(r"\[(WARNING|ERROR|CRITICAL) *\]", line)]
    assert 1 <= len(loud) <= 2, "outage lines:\n" + "\n".join(loud)
    assert all("ductape_operator.out" in line for line in loud), "\n".join(loud)
    assert sum("unreachable or restarting" in line for line in loud) == 1, "\n".join(loud)
    ended = [line for line in lines if "over after" in line]
    assert len(ended) == len(loud) and all("[INFO" in line for line in ended), ended
