"""The generated CRD in a real kube-apiserver: what it rejects, what it accepts, how it reads.

Every invalid manifest under `invalid/` starts with `# expect: <text>`: the API
server's error for it must contain that text (which names the field), and pydantic
must reject its spec too, so the operator never acts on what the schema refuses.
"""

from __future__ import annotations

import copy
import pathlib
import re
import uuid
from typing import Any, cast

import pydantic
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ductape_operator import conditions, models
from tests.api.conftest import Kubectl, dry_run_create, load_documents, poll

pytestmark = pytest.mark.stack

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INVALID = sorted((HERE / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (.+)$", re.MULTILINE)


def expectation(path: pathlib.Path) -> str:
    found = EXPECT.search(path.read_text())
    assert found, f"{path.name} has no '# expect:' line"
    return found.group(1).strip()


def test_corpus_is_large_and_distinct() -> None:
    assert len(INVALID) >= 40
    names = [load_documents(p)[0]["metadata"]["name"] for p in INVALID]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(
    path: pathlib.Path, api_objects: client.CustomObjectsApi, api_shared_namespace: str
) -> None:
    expected = expectation(path)
    (manifest,) = load_documents(path)
    message = dry_run_create(api_objects, api_shared_namespace, manifest)
    assert message is not None, f"the API server accepted {path.name}"
    assert expected in message
    with pytest.raises(pydantic.ValidationError):
        models.parse_spec(manifest.get("spec"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(path: pathlib.Path, api_kubectl: Kubectl, api_namespace: str) -> None:
    out = api_kubectl.ok("apply", "--dry-run=server", "-n", api_namespace, "-f", str(path))
    (broker,) = [d for d in load_documents(path) if d["kind"] == models.KIND]
    assert f"messagebroker.ductape.app/{broker['metadata']['name']}" in out
    assert "(server dry run)" in out
    assert models.parse_spec(broker["spec"]).tag == broker["spec"]["tag"]


# --- real objects ----------------------------------------------------------------


def _broker(name: str, tag: str) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": {
            "name": f"Broker {name}",
            "tag": tag,
            "envs": [
                {"slug": "prd", "type": "RABBITMQ", "config": {"host": "127.0.0.1"}},
                {"slug": "dev", "type": "REDIS", "config": {"host": "127.0.0.1", "port": 26379}},
            ],
            "topics": [{"tag": "order-created", "subscriptions": ["billing"]}],
        },
    }


def _create(
    objects: client.CustomObjectsApi, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    created = objects.create_namespaced_custom_object(
        models.GROUP, models.VERSION, namespace, models.PLURAL, body, field_validation="Strict"
    )
    return cast(dict[str, Any], created)


def _patch(
    objects: client.CustomObjectsApi, namespace: str, name: str, patch: Any
) -> dict[str, Any]:
    patched = objects.patch_namespaced_custom_object(
        models.GROUP, models.VERSION, namespace, models.PLURAL, name, patch
    )
    return cast(dict[str, Any], patched)


def test_defaults_are_applied(api_objects: client.CustomObjectsApi, api_namespace: str) -> None:
    created = _create(api_objects, api_namespace, _broker("defaults", "defaults"))
    assert created["spec"]["deletionPolicy"] == "Retain"
    # No default leaks into a config: that would break the per-type rules.
    assert created["spec"]["envs"][0]["config"] == {"host": "127.0.0.1"}
    assert models.parse_spec(created["spec"]).deletion_policy is models.DeletionPolicy.RETAIN


def test_tag_is_immutable(api_objects: client.CustomObjectsApi, api_namespace: str) -> None:
    _create(api_objects, api_namespace, _broker("immutable", "first-tag"))
    with pytest.raises(ApiException) as info:
        _patch(api_objects, api_namespace, "immutable", {"spec": {"tag": "second-tag"}})
    assert info.value.status == 422
    assert "spec.tag is immutable" in str(info.value.body)
    # Everything else stays editable, including the one-line provider swap.
    swapped = _patch(
        api_objects,
        api_namespace,
        "immutable",
        {"spec": {"description": "edited", "tag": "first-tag"}},
    )
    assert swapped["spec"]["description"] == "edited"
    current = cast(
        dict[str, Any],
        api_objects.get_namespaced_custom_object(
            models.GROUP, models.VERSION, api_namespace, models.PLURAL, "immutable"
        ),
    )
    envs = copy.deepcopy(current["spec"]["envs"])
    envs[1] = {"slug": "dev", "type": "KAFKA", "config": {"brokers": ["127.0.0.1:29092"]}}
    moved = _patch(
        api_objects,
        api_namespace,
        "immutable",
        {"spec": {"envs": envs}},  # a merge patch replaces the list
    )
    assert moved["spec"]["envs"][1]["type"] == "KAFKA"
    assert moved["spec"]["tag"] == "first-tag"


def _status(generation: int) -> dict[str, Any]:
    """A status as the operator builds it: from the models and the condition helpers."""
    ready = conditions.set_condition(
        [],
        type=conditions.READY,
        status=models.ConditionStatus.TRUE,
        reason="AllEnvsReady",
        message="every env is ready",
        generation=generation,
    )
    status = models.MessageBrokerStatus(
        observed_generation=generation,
        summary="prd:RABBITMQ dev:REDIS",
        conditions=ready,
        envs=[
            models.EnvStatus(
                slug="prd",
                type=models.MessageBrokerTypes.RABBITMQ,
                phase=models.Phase.READY,
                endpoint="amqp://127.0.0.1:5672/",
                secret_name="columns-prd",
                topics=[models.TopicStatus(tag="order-created", name="orders", ready=True)],
                last_transition_time=conditions.now(),
            )
        ],
        binding=models.Binding(name="columns-prd"),
    )
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def test_printer_columns_and_status_schema(
    api_objects: client.CustomObjectsApi, api_kubectl: Kubectl, api_namespace: str
) -> None:
    created = _create(api_objects, api_namespace, _broker("columns", "columns-tag"))
    status = _status(created["metadata"]["generation"])
    patched = api_objects.patch_namespaced_custom_object_status(
        models.GROUP,
        models.VERSION,
        api_namespace,
        models.PLURAL,
        "columns",
        {"status": status},
    )
    assert isinstance(patched, dict)
    # Nothing of the operator's status was pruned: the schema holds all of it.
    assert patched["status"] == status
    assert models.MessageBrokerStatus.model_validate(patched["status"]).summary == (
        "prd:RABBITMQ dev:REDIS"
    )
    header, row = api_kubectl.ok("get", "mb", "-n", api_namespace).splitlines()
    assert header.split() == ["NAME", "TAG", "ENVS", "READY", "AGE"]
    assert row.split()[:5] == ["columns", "columns-tag", "prd:RABBITMQ", "dev:REDIS", "True"]
    out = api_kubectl.ok(
        "wait", "--for=condition=Ready", "--timeout=10s", "-n", api_namespace, "mb/columns"
    )
    assert "condition met" in out


def test_field_selector_on_tag(
    api_objects: client.CustomObjectsApi, api_kubectl: Kubectl, api_namespace: str
) -> None:
    tag = f"tag-{uuid.uuid4().hex[:8]}"
    _create(api_objects, api_namespace, _broker("wanted", tag))
    _create(api_objects, api_namespace, _broker("other", f"{tag}-other"))
    out = api_kubectl.ok("get", "mb", "-n", api_namespace, "--field-selector", f"spec.tag={tag}")
    rows = out.splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [["wanted", tag]]
    listed = api_objects.list_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        api_namespace,
        models.PLURAL,
        field_selector=f"spec.tag={tag}-other",
    )
    assert isinstance(listed, dict)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["other"]
    everything = api_kubectl.ok("get", "ductape", "-n", api_namespace, "-o", "name")
    assert sorted(everything.split()) == [
        "messagebroker.ductape.app/other",
        "messagebroker.ductape.app/wanted",
    ]


def test_explain_prints_the_descriptions(api_kubectl: Kubectl, api_crd: None) -> None:
    wanted = [
        "Connection settings",
        "KAFKA: bootstrap servers",
        "GOOGLE_PUBSUB: Google Cloud project id",
        "secretAccessKey",
    ]

    def explained() -> str | None:
        done = api_kubectl.run("explain", "mb.spec.envs.config")
        return (
            done.stdout if done.returncode == 0 and all(w in done.stdout for w in wanted) else None
        )

    out = poll(explained, what="kubectl explain to show the config descriptions")
    assert "<Object>" in out or "<object>" in out
    tag = api_kubectl.ok("explain", "messagebroker.spec.tag")
    assert "cannot change" in tag
