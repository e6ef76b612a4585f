"""Fixtures for the API tests: the real kube-apiserver of the local stack, no operator.

Everything is prefixed `api_` so it never clashes with the fixtures of other layers.
The CRD is installed once per session from `crds/` (the generated file, as users get
it); every object lives in a namespace with a unique name, so runs can share a stack.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ductape_operator import crdgen, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".testenv" / "env"
DEADLINE = 60.0
T = TypeVar("T")


def poll(probe: Callable[[], T | None], *, what: str, timeout: float = DEADLINE) -> T:
    """Call `probe` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _stack_environ() -> dict[str, str]:
    if "KUBECONFIG" in os.environ:
        return dict(os.environ)
    if not ENV_FILE.exists():
        pytest.fail(f"no KUBECONFIG and no {ENV_FILE}: run `make testenv-up` first")
    dump = subprocess.run(
        ["bash", "-c", f'set -a; . "{ENV_FILE}"; env -0'],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in dump.split("\0") if "=" in line)


class Kubectl:
    """The stack's kubectl, with the stack's environment."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args],
            env=self.environ,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self.run(*args, input=input)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def api_environ() -> dict[str, str]:
    return _stack_environ()


@pytest.fixture(scope="session")
def api_kubectl(api_environ: dict[str, str]) -> Kubectl:
    return Kubectl(api_environ)


@pytest.fixture(scope="session")
def api_client(api_environ: dict[str, str]) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=api_environ["KUBECONFIG"])  # type: ignore[no-untyped-call]
    yield api
    api.close()


@pytest.fixture(scope="session")
def api_objects(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def dry_run_create(
    objects: client.CustomObjectsApi, namespace: str, manifest: dict[str, Any]
) -> str | None:
    """Server-side dry-run create; the API server's error message, or None if accepted."""
    try:
        objects.create_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            namespace,
            models.PLURAL,
            manifest,
            dry_run="All",
            field_validation="Strict",
        )
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    return None


def _sentinel(tag: str) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "sentinel"},
        "spec": {
            "name": "Sentinel",
            "tag": tag,
            "envs": [{"slug": "dev", "type": "REDIS", "config": {"host": "h", "brokers": ["h:1"]}}],
        },
    }


@pytest.fixture(scope="session")
def api_crd(
    api_kubectl: Kubectl, api_client: client.ApiClient, api_objects: client.CustomObjectsApi
) -> None:
    """The CRD from crds/, applied and Established, its schema and rules in force."""
    api_kubectl.ok(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=ductape-api-tests",
        "-f",
        str(crdgen.CRD_PATH),
    )
    extensions = client.ApiextensionsV1Api(api_client)

    def established() -> bool | None:
        crd = extensions.read_custom_resource_definition(crdgen.CRD_NAME)
        conditions = {c.type: c.status for c in ((crd.status and crd.status.conditions) or [])}
        return True if conditions.get("Established") == "True" else None

    poll(established, what="the CRD to be Established")
    # Established says the resource is served; a CRD that was updated takes a moment
    # more to validate with the new schema. Wait until a CEL rule answers.
    expected = "config.brokers is not allowed when type is REDIS"

    def rules_in_force() -> bool | None:
        try:
            message = dry_run_create(api_objects, "default", _sentinel("sentinel"))
        except ApiException:
            return None
        return True if message and expected in message else None

    poll(rules_in_force, what="the CRD's CEL rules to be in force")


@pytest.fixture
def api_namespace(api_client: client.ApiClient, api_crd: None) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting: it holds no finalizers)."""
    name = f"api-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def api_shared_namespace(api_client: client.ApiClient, api_crd: None) -> Iterator[str]:
    """One namespace for dry runs, which create nothing in it."""
    name = f"api-dry-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def load_documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
