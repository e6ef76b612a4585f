"""The operator's own writes to MessageBrokers (`ductape_operator.kube`) on a real API server.

The finalizer patch carries the `resourceVersion` of the body the create handler had, so it
never writes a finalizer list based on an old one; when the object changed meanwhile, it
reads the object and retries at once on what it read. These tests change the object between
the read and the write, as another writer would. They use a finalizer name of their own, so
an operator running on the same stack (the e2e layer's, which adds its own finalizer) can
neither satisfy nor break them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from ductape_operator import kube, models

pytestmark = pytest.mark.stack

FINALIZER = "test.ductape.app/finalizer"
OTHER = "example.com/someone-else"
LABEL = {"ductape.app/tag": "writes"}


@pytest.fixture(autouse=True)
def configured(monkeypatch: pytest.MonkeyPatch, api_environ: dict[str, str]) -> None:
    monkeypatch.setenv("KUBECONFIG", api_environ["KUBECONFIG"])
    kube.configure()


@pytest.fixture
def created(api_objects: client.CustomObjectsApi, api_namespace: str) -> Iterator[dict[str, Any]]:
    body = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "writes"},
        "spec": {
            "name": "Writes",
            "tag": f"writes-{uuid.uuid4().hex[:6]}",
            "envs": [{"slug": "dev", "type": "REDIS", "config": {"host": "redis.invalid"}}],
        },
    }
    obj: dict[str, Any] = api_objects.create_namespaced_custom_object(
        models.GROUP, models.VERSION, api_namespace, models.PLURAL, body
    )
    yield obj
    # Let the namespace go: drop every finalizer these tests put on the object.
    api_objects.patch_namespaced_custom_object(
        models.GROUP, models.VERSION, api_namespace, models.PLURAL, "writes",
        {"metadata": {"finalizers": None}},
    )  # fmt: skip


def _ref(obj: dict[str, Any]) -> models.BrokerRef:
    meta = obj["metadata"]
    return models.BrokerRef(meta["namespace"], meta["name"], meta["uid"])


def _read(api_objects: client.CustomObjectsApi, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    read: dict[str, Any] = api_objects.get_namespaced_custom_object(
        models.GROUP, models.VERSION, meta["namespace"], models.PLURAL, meta["name"]
    )
    return read


def _add(obj: dict[str, Any]) -> bool | None:
    meta = obj["metadata"]
    return asyncio.run(
        kube.add_finalizer(
            _ref(obj),
            FINALIZER,
            finalizers=list(meta.get("finalizers") or []),
            resource_version=meta["resourceVersion"],
            labels=LABEL,
        )
    )


def test_finalizer_is_added_on_the_body_the_handler_had(
    api_objects: client.CustomObjectsApi, created: dict[str, Any]
) -> None:
    assert _add(created) is True
    meta = _read(api_objects, created)["metadata"]
    assert FINALIZER in meta["finalizers"]
    assert meta["labels"].items() >= LABEL.items()


def test_a_changed_object_is_read_and_the_finalizer_added_to_its_current_list(
    api_objects: client.CustomObjectsApi, created: dict[str, Any]
) -> None:
    """Another controller added its finalizer after the handler's body was delivered: the
    stale patch is refused (409), and the retry keeps that finalizer."""
    meta = created["metadata"]
    api_objects.patch_namespaced_custom_object(
        models.GROUP, models.VERSION, meta["namespace"], models.PLURAL, meta["name"],
        {"metadata": {"finalizers": [OTHER], "annotations": {"example.com/touched": "yes"}}},
    )  # fmt: skip
    assert _add(created) is True
    now = _read(api_objects, created)["metadata"]
    assert {OTHER, FINALIZER} <= set(now["finalizers"])
    assert now["labels"].items() >= LABEL.items()
    assert now["annotations"]["example.com/touched"] == "yes"


def test_an_object_deleted_meanwhile_is_reported_gone(
    api_objects: client.CustomObjectsApi, created: dict[str, Any]
) -> None:
    meta = created["metadata"]
    api_objects.delete_namespaced_custom_object(
        models.GROUP, models.VERSION, meta["namespace"], models.PLURAL, meta["name"]
    )
    # Gone for good: a recreate of that name is another object (another uid).
    recreated = api_objects.create_namespaced_custom_object(
        models.GROUP, models.VERSION, meta["namespace"], models.PLURAL,
        {k: created[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {"name": "writes"}},
    )  # fmt: skip
    assert _add(created) is False
    assert FINALIZER not in (_read(api_objects, recreated)["metadata"].get("finalizers") or [])


def test_an_object_being_deleted_gets_no_finalizer(
    api_objects: client.CustomObjectsApi, created: dict[str, Any]
) -> None:
    """Deleted after the handler's body was delivered, held by someone else's finalizer:
    nothing was provisioned for it, so the operator must not hold it too."""
    meta = created["metadata"]
    args = (models.GROUP, models.VERSION, meta["namespace"], models.PLURAL, meta["name"])
    api_objects.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": [OTHER]}})
    api_objects.delete_namespaced_custom_object(*args)
    assert _add(created) is False
    now = _read(api_objects, created)["metadata"]
    assert now["deletionTimestamp"]
    assert OTHER in now["finalizers"] and FINALIZER not in now["finalizers"]
