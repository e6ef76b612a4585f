"""The connection Secret is written by server-side apply, one field manager per
MessageBroker (docs/reference.md, "The connection Secret"): what the operator stops
setting goes, what others add stays, and a Secret that is not the resource's own is
never taken over."""

from __future__ import annotations

from typing import Any

from tests.e2e import kit


def _redis_env(username: str | None) -> dict[str, Any]:
    config = kit.env_config("REDIS")
    if username is not None:
        config["username"] = username
    return {"slug": "dev", "type": "REDIS", "config": config}


def test_dropped_entry_goes_and_what_others_added_stays(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("ssa")
    manifest = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1))
    manifest["spec"]["envs"] = [_redis_env("default")]
    kube.apply(namespace, manifest)
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    secret_name = f"{name}-dev"
    assert (kube.secret(namespace, secret_name) or {}).get("username") == "default"
    # Someone else (a reflector, Argo CD) marks the Secret.
    kube.core.patch_namespaced_secret(
        secret_name,
        namespace,
        {"metadata": {"labels": {"team": "shop"}, "annotations": {"note": "mine"}}},
    )

    kube.patch(namespace, name, {"spec": {"envs": [_redis_env(None)]}})
    kube.wait_condition(namespace, name, "True", "AllEnvsReady")
    data = kit.wait_until(
        lambda: (d := kube.secret(namespace, secret_name)) and "username" not in d and d,
        timeout=60,
        what=f"{secret_name} without its username entry",
    )
    assert data["host"] and data["type"] == "redis"
    meta = kube.secret_object(namespace, secret_name).metadata
    assert meta.labels["team"] == "shop"
    assert meta.annotations["note"] == "mine"
    assert meta.labels["ductape.app/env"] == "dev"


def test_a_secret_of_that_name_is_never_taken_over(kube: kit.Kube, namespace: str) -> None:
    name = kit.unique("foreign")
    kube.create_secret(namespace, f"{name}-dev", {"keep": "me"})
    kube.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1)),
    )
    obj = kube.wait_condition(namespace, name, "False", "InvalidConfig")
    assert "not owned by this MessageBroker" in kit.condition_of(obj, "Ready")["message"]
    assert kube.secret(namespace, f"{name}-dev") == {"keep": "me"}
    assert not kube.secret_object(namespace, f"{name}-dev").metadata.owner_references


def test_two_resources_naming_one_secret_do_not_share_it(kube: kit.Kube, namespace: str) -> None:
    first, second = kit.unique("first"), kit.unique("second")
    kube.apply(
        namespace,
        kit.broker_manifest(first, envs=[("dev", "REDIS")], topics=kit.topics_for(first, 1)),
    )
    owner = kube.wait_condition(namespace, first, "True", "AllEnvsReady")
    manifest = kit.broker_manifest(
        second, envs=[("dev", "REDIS")], topics=kit.topics_for(second, 1)
    )
    manifest["spec"]["envs"][0]["secretName"] = f"{first}-dev"
    kube.apply(namespace, manifest)

    kube.wait_condition(namespace, second, "False", "InvalidConfig")
    meta = kube.secret_object(namespace, f"{first}-dev").metadata
    assert [ref.uid for ref in meta.owner_references] == [owner["metadata"]["uid"]]
    assert (kube.secret(namespace, f"{first}-dev") or {}).get("broker-tag") == first
