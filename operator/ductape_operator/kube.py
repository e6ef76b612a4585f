"""The only module that calls the Kubernetes API directly (besides kopf itself).

It reads the Secrets a MessageBroker references, writes its connection
Secrets, patches its status and metadata, and posts Events. The official
client is synchronous, so every call runs in a worker thread; callers see
plain async functions and the project's own errors.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from ductape_operator import errors, models, redaction

logger = logging.getLogger(__name__)

MANAGED_BY = "ductape-operator"


@dataclasses.dataclass(frozen=True)
class BrokerRef:
    """Identity of one MessageBroker object."""

    namespace: str
    name: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


_api_client: kubernetes.client.ApiClient | None = None


def configure() -> None:
    """Load in-cluster credentials, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    global _api_client
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    _api_client = kubernetes.client.ApiClient()


def _client() -> kubernetes.client.ApiClient:
    if _api_client is None:
        configure()
    assert _api_client is not None
    return _api_client


def _core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(_client())


def _custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(_client())


def _decode(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8") for k, v in (data or {}).items()}


async def read_secret_values(
    namespace: str, refs: Iterable[models.SecretKeySelector]
) -> dict[tuple[str, str], str]:
    """Resolve Secret key references in `namespace`, keyed by (secret name, key).

    Raises `SecretNotFoundError` naming the first missing Secret or key.
    """
    values: dict[tuple[str, str], str] = {}
    by_secret: dict[str, list[str]] = {}
    for ref in refs:
        by_secret.setdefault(ref.name, []).append(ref.key)
    for secret_name, keys in sorted(by_secret.items()):
        data = await read_secret_data(namespace, secret_name)
        if data is None:
            raise errors.SecretNotFoundError(
                f"Secret {namespace}/{secret_name} not found", secret_name=secret_name
            )
        for key in keys:
            if key not in data:
                raise errors.SecretNotFoundError(
                    f"Secret {namespace}/{secret_name} has no key {key!r}",
                    secret_name=secret_name,
                )
            values[(secret_name, key)] = data[key]
    redaction.register(values.values())
    return values


async def _read_secret(namespace: str, name: str) -> Any | None:
    """The V1Secret, or None when it does not exist."""
    try:
        return await asyncio.to_thread(lambda: _core().read_namespaced_secret(name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"read Secret {namespace}/{name}") from exc


async def read_secret_data(namespace: str, name: str) -> dict[str, str] | None:
    """A Secret's decoded data, or None when it does not exist."""
    secret = await _read_secret(namespace, name)
    return None if secret is None else _decode(secret.data)


async def apply_connection_secret(
    owner: BrokerRef,
    name: str,
    data: Mapping[str, str],
    labels: Mapping[str, str],
) -> bool:
    """Create or update a connection Secret owned by `owner`; True when something was written.

    A Secret of that name that this MessageBroker does not own is never
    overwritten: that would destroy someone else's data.
    """
    namespace = owner.namespace
    encoded = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
    all_labels = {**labels, "app.kubernetes.io/managed-by": MANAGED_BY}

    existing = await _read_secret(namespace, name)
    body: Any = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "servicebinding.io/" + data.get("type", "ductape"),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
            "ownerReferences": [owner.owner_reference()],
        },
        "data": encoded,
    }
    if existing is None:
        try:
            await asyncio.to_thread(lambda: _core().create_namespaced_secret(namespace, body))
        except ApiException as exc:
            raise _api_error(exc, f"create Secret {namespace}/{name}") from exc
        return True

    owners = existing.metadata.owner_references or []
    if not any(ref.uid == owner.uid for ref in owners):
        raise errors.InvalidConfigError(
            f"Secret {namespace}/{name} already exists and is not owned by this"
            " MessageBroker; set envs[].secretName to another name or remove that Secret"
        )
    same_data = (existing.data or {}) == encoded
    same_labels = all((existing.metadata.labels or {}).get(k) == v for k, v in all_labels.items())
    if same_data and same_labels and existing.type == body["type"]:
        return False
    if existing.type != body["type"]:
        # The type of a Secret is immutable: replace it (the switch is atomic enough
        # for applications that re-read the binding; they never see partial data).
        await delete_secret(owner, name)
        await asyncio.to_thread(lambda: _core().create_namespaced_secret(namespace, body))
        return True
    body["metadata"]["resourceVersion"] = existing.metadata.resource_version
    try:
        await asyncio.to_thread(lambda: _core().replace_namespaced_secret(name, namespace, body))
    except ApiException as exc:
        raise _api_error(exc, f"update Secret {namespace}/{name}") from exc
    return True


async def delete_secret(owner: BrokerRef, name: str) -> None:
    """Delete a connection Secret if `owner` owns it; success when it is gone."""
    namespace = owner.namespace
    existing = await _read_secret(namespace, name)
    if existing is None:
        return
    existing_owners = existing.metadata.owner_references if existing.metadata else None
    if not any(ref.uid == owner.uid for ref in existing_owners or []):
        return
    try:
        await asyncio.to_thread(lambda: _core().delete_namespaced_secret(name, namespace))
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, f"delete Secret {namespace}/{name}") from exc


async def get_broker(namespace: str, name: str) -> dict[str, Any] | None:
    def read() -> Any:
        return _custom().get_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, models.PLURAL, name
        )

    try:
        body: dict[str, Any] = await asyncio.to_thread(read)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"read MessageBroker {namespace}/{name}") from exc
    return body


async def patch_status(ref: BrokerRef, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (lists are replaced whole by a merge patch)."""

    def patch() -> Any:
        return _custom().patch_namespaced_custom_object_status(
            models.GROUP,
            models.VERSION,
            ref.namespace,
            models.PLURAL,
            ref.name,
            {"status": json.loads(redaction.redact(json.dumps(dict(status))))},
        )

    try:
        await asyncio.to_thread(patch)
    except ApiException as exc:
        if exc.status == 404:
            return  # deleted meanwhile: nothing to report on
        raise _api_error(exc, f"patch status of MessageBroker {ref.namespace}/{ref.name}") from exc


async def patch_metadata(
    ref: BrokerRef,
    *,
    labels: Mapping[str, str | None] | None = None,
    annotations: Mapping[str, str | None] | None = None,
) -> None:
    metadata: dict[str, Any] = {}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    if not metadata:
        return

    def patch() -> Any:
        return _custom().patch_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            ref.namespace,
            models.PLURAL,
            ref.name,
            {"metadata": metadata},
        )

    try:
        await asyncio.to_thread(patch)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise _api_error(exc, f"patch MessageBroker {ref.namespace}/{ref.name}") from exc


async def post_event(ref: BrokerRef, *, type: str, reason: str, message: str) -> None:
    """Post a core/v1 Event about the MessageBroker. Never fails the caller."""
    now = datetime.datetime.now(datetime.UTC)
    body: Any = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{ref.name}.{uuid.uuid4().hex[:16]}",
            "namespace": ref.namespace,
        },
        "involvedObject": {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        },
        "type": type,
        "reason": reason,
        "message": redaction.redact(message)[:1024],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": MANAGED_BY,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    try:
        await asyncio.to_thread(lambda: _core().create_namespaced_event(ref.namespace, body))
    except ApiException as exc:
        logger.warning(
            "could not post event %s on %s/%s: %s", reason, ref.namespace, ref.name, exc.reason
        )


async def namespace_terminating(namespace: str) -> bool:
    try:
        ns = await asyncio.to_thread(lambda: _core().read_namespace(namespace))
    except ApiException as exc:
        if exc.status in (403, 404):
            return bool(exc.status == 404)
        raise _api_error(exc, f"read Namespace {namespace}") from exc
    deleting = bool(ns.metadata and ns.metadata.deletion_timestamp)
    return deleting or bool(ns.status and ns.status.phase == "Terminating")


def _api_error(exc: ApiException, action: str) -> errors.DuctapeError:
    retriable = exc.status is None or exc.status >= 500 or exc.status in (409, 429)
    return errors.DuctapeError(
        f"Kubernetes API: cannot {action}: {exc.status} {exc.reason}", retriable=retriable
    )
