"""The only module that calls the Kubernetes API directly (besides kopf itself).

It reads the Secrets a MessageBroker references, writes its connection
Secrets, patches its status and metadata, and posts Events. The official
client is synchronous, so every call runs in a worker thread of a pool of its
own, sized with the client's connection pool (`API_CONCURRENCY`): API calls
never queue behind the default executor's handful of threads, and a thousand
resources never mean a thousand simultaneous calls either.

Reads come from what the watches delivered wherever possible
(docs/operations.md, "Steady state"): referenced Secrets are cached from the
operator's Secret watch (`remember_secret`), and a connection Secret is
written only when its content differs from what this process last wrote or
saw. Callers see plain async functions and the project's own errors; an API
server that does not answer is a retriable error, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from ductape_operator import errors, models, outages, redaction

logger = logging.getLogger(__name__)

MANAGED_BY = "ductape-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
#: API calls in flight at once: worker threads and pooled HTTP connections alike. With
#: 32, a burst of creates had each Secret and status write wait about 0.3 s for a thread
#: before it even reached the API server (docs/operations.md, "A burst of creates").
API_CONCURRENCY = 64


#: Identity of one MessageBroker object (a plain value, defined with the models).
BrokerRef = models.BrokerRef


_api_client: kubernetes.client.ApiClient | None = None
_executor = concurrent.futures.ThreadPoolExecutor(
    max_workers=API_CONCURRENCY, thread_name_prefix="kube-api"
)

#: Referenced Secrets' decoded data as the Secret watch delivered it; None = known absent.
_secrets: dict[tuple[str, str], dict[str, str] | None] = {}
#: Digest of each connection Secret as this process last wrote or saw it.
_written: dict[tuple[str, str], _Written] = {}


def configure() -> None:
    """Load in-cluster credentials, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    global _api_client
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = API_CONCURRENCY
    _api_client = kubernetes.client.ApiClient(configuration)
    # urllib3 logs each of its own retries; an API server restart is reported once,
    # by whoever gives up, as a retriable error.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


async def _call(
    action: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    missing_ok: bool = False,
    conflict_ok: bool = False,
) -> dict[str, Any] | None:
    """One request to the API server, run in the API pool; errors become the project's.

    It goes through the client's REST layer, not its generated API methods: those
    validate every call with pydantic, which builds a schema of each method's whole
    model tree on first use (tens of megabytes of native memory) and costs CPU under
    the GIL on every call after. Answers are plain JSON. With `missing_ok` a 404,
    with `conflict_ok` a 409, returns None instead of raising.
    """
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(_executor, _request, method, path, body, content_type)
    except ApiException as exc:
        if exc.status == 429:
            report_throttled()
        elif exc.status is None or exc.status >= 500:
            report_unreachable(f"{exc.status} {exc.reason}")
        else:
            outages.recovered(outages.API_SERVER)
        if (missing_ok and exc.status == 404) or (conflict_ok and exc.status == 409):
            return None
        raise _api_error(exc, action) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        report_unreachable(_root_cause(exc))
        raise errors.DuctapeError(
            f"Kubernetes API: cannot {action}: API server unreachable ({type(exc).__name__})",
            retriable=True,
        ) from exc
    outages.recovered(outages.API_SERVER)
    outages.recovered(outages.API_THROTTLED)
    return answer


def api_server() -> str:
    """The API server's URL, as the operator's own client reaches it."""
    if _api_client is None:  # not configured yet: never configure from a log filter
        return "(not configured yet)"
    return str(_api_client.configuration.host)


def report_unreachable(cause: str) -> None:
    """The API server did not answer, or answered 5xx: one WARNING per outage, an INFO
    line when `GET /version` answers again (docs/operations.md, "Logs")."""
    outages.failing(
        outages.API_SERVER,
        f"Kubernetes API server {api_server()} unreachable or restarting ({cause});"
        " retrying, quietly until it is ready again",
        probe=_probe_api_server,
    )


def report_throttled() -> None:
    """The API server answered 429: it asks for fewer requests; callers retry later.

    A restarting API server answers 429 too while its caches fill: part of that outage.
    """
    if outages.is_open(outages.API_SERVER):
        report_unreachable("429 Too Many Requests")
        return
    outages.failing(
        outages.API_THROTTLED,
        f"Kubernetes API server {api_server()} is throttling requests (429 Too Many"
        " Requests); retrying, quietly until it answers again",
        probe=_probe_api_server,
    )


def _probe_api_server() -> None:
    """Raise unless the API server says it is ready (`/readyz`: etcd reached, RBAC and
    CRDs loaded), so that the outage does not end while calls would still fail."""
    client = _client()
    serialized = client.param_serialize(
        method="GET", resource_path="/readyz", auth_settings=["BearerToken"]
    )
    response = client.call_api(*serialized, _request_timeout=5)
    response.read()  # type: ignore[no-untyped-call]
    if response.status != 200:
        raise ApiException(status=response.status, reason=response.reason)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's class name (ConnectionRefusedError rather than MaxRetryError)."""
    seen: set[int] = set()
    while True:
        inner = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return type(exc).__name__
        seen.add(id(exc))
        exc = inner


def _request(method: str, path: str, body: Any, content_type: str) -> dict[str, Any]:
    client = _client()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = client.param_serialize(
        method=method,
        resource_path=path,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*serialized)
    raw = response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=raw, data=None)
    parsed: dict[str, Any] = json.loads(raw) if raw else {}
    return parsed


def _secrets_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/secrets"
    return base if name is None else f"{base}/{name}"


def _broker_path(ref: BrokerRef, subresource: str = "") -> str:
    path = (
        f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{ref.namespace}"
        f"/{models.PLURAL}/{ref.name}"
    )
    return f"{path}/{subresource}" if subresource else path


MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def _client() -> kubernetes.client.ApiClient:
    if _api_client is None:
        configure()
    assert _api_client is not None
    return _api_client


def _decode(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8") for k, v in (data or {}).items()}


async def read_secret_values(
    namespace: str, refs: Iterable[models.SecretKeySelector]
) -> dict[tuple[str, str], str]:
    """Resolve Secret key references in `namespace`, keyed by (secret name, key).

    Raises `SecretNotFoundError` naming the first missing Secret or key, or
    `NamespaceTerminatingError` when the Secret went with its namespace.
    """
    values: dict[tuple[str, str], str] = {}
    by_secret: dict[str, list[str]] = {}
    for ref in refs:
        by_secret.setdefault(ref.name, []).append(ref.key)
    for secret_name, keys in sorted(by_secret.items()):
        data = await cached_secret_data(namespace, secret_name)
        if data is None and namespace in _terminating:
            raise errors.NamespaceTerminatingError(
                f"Secret {namespace}/{secret_name} went with its namespace"
            )
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
        redaction.register((data[key] for key in keys), owner=(namespace, secret_name))
    return values


async def _read_secret(namespace: str, name: str) -> Any | None:
    """The V1Secret, or None when it does not exist."""
    return await _call(
        f"read Secret {namespace}/{name}", "GET", _secrets_path(namespace, name), missing_ok=True
    )


async def read_secret_data(namespace: str, name: str) -> dict[str, str] | None:
    """A Secret's decoded data, or None when it does not exist."""
    secret = await _read_secret(namespace, name)
    return None if secret is None else _decode(secret.get("data"))


async def cached_secret_data(namespace: str, name: str) -> dict[str, str] | None:
    """A referenced Secret's data from the watch's cache; read once when not yet seen."""
    key = (namespace, name)
    if key not in _secrets:
        _secrets[key] = await read_secret_data(namespace, name)
    return _secrets[key]


def remember_secret(namespace: str, name: str, data: Mapping[str, str] | None) -> bool:
    """The Secret watch delivered a referenced Secret (raw base64 `data`; None: deleted).

    True when its content differs from what was known (never seen counts as absent).
    """
    key = (namespace, name)
    before = _secrets.get(key)
    _secrets[key] = None if data is None else _decode(data)
    if _secrets[key] == before:
        return False
    redaction.forget(key)  # values still in use are registered again when next read
    return True


def forget_secret(namespace: str, name: str) -> None:
    """Nothing references this Secret any more (or it is not ours to track)."""
    if _secrets.pop((namespace, name), None) is not None:
        redaction.forget((namespace, name))


def connection_secret_seen(namespace: str, name: str, body: Mapping[str, Any] | None) -> bool:
    """The watch delivered a Secret; True when it is one of ours and not what we wrote.

    Every connection Secret this operator manages is remembered as the watch shows
    it (a digest of our labels, type and data, and its owners), so a reconcile that
    would write the same again makes no call at all, after a restart too. One that
    was deleted or edited out of band is reported, so its owner writes it again.
    """
    key = (namespace, name)
    meta = (body or {}).get("metadata") or {}
    labels = meta.get("labels") or {}
    if body is None or labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return _written.pop(key, None) is not None
    before = _written.get(key)
    # Only the labels the operator sets count: one someone else adds is theirs to keep.
    ours = {k: v for k, v in labels.items() if _is_our_label(k)}
    seen = _Written(
        digest=_digest(body.get("type"), ours, body.get("data") or {}),
        type=body.get("type"),
        metadata={"labels": ours, "ownerReferences": list(meta.get("ownerReferences") or [])},
    )
    _written[key] = seen
    return before is not None and before.digest != seen.digest


def _is_our_label(key: str) -> bool:
    return key == MANAGED_BY_LABEL or key.startswith(f"{models.GROUP}/")


@dataclasses.dataclass(frozen=True)
class _Written:
    """A connection Secret as last written or watched: enough to skip an equal write,
    and to know whose it is without reading it."""

    digest: str
    type: object
    #: Its labels (ours only) and ownerReferences.
    metadata: Mapping[str, Any]


def _digest(type_: object, labels: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    raw = json.dumps([type_, dict(labels), dict(data)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


async def apply_connection_secret(
    owner: BrokerRef,
    name: str,
    data: Mapping[str, str],
    labels: Mapping[str, str],
) -> bool:
    """Make the connection Secret of `owner` hold `data`; True when its content changed.

    One server-side apply, with a field manager of the owning MessageBroker's own
    (docs/reference.md, "The connection Secret"): entries and labels the operator
    no longer sets are removed, what others add to the Secret (an annotation, a
    label) is kept, and a Secret of that name written by anyone else, another
    MessageBroker included, conflicts instead of being taken over: that would
    destroy someone else's data.
    """
    namespace = owner.namespace
    encoded = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
    all_labels = {**labels, MANAGED_BY_LABEL: MANAGED_BY}
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
    key = (namespace, name)
    digest = _digest(body["type"], all_labels, encoded)
    known = _written.get(key)
    if known is None:
        await _first_apply(owner, body)
    elif _owned_by(known.metadata, owner):
        if known.digest == digest:
            return False  # as written or watched, and the watch has not seen it change since
        if known.type != body["type"]:
            # The type of a Secret is immutable: replace it (applications that re-read
            # the binding never see partial data).
            await delete_secret(owner, name)
        await _apply_secret(owner, body, force=True)
    elif _left_by_namesake(known.metadata, owner):
        await _apply_secret(owner, body, force=True)
    else:
        raise _not_ours(namespace, name)
    _written[key] = _Written(digest, body["type"], body["metadata"])
    # Unknown to this process (a first write, or the watch not there yet after a
    # restart): the apply is idempotent, and whether it changed anything is not news.
    return known is not None


def field_manager(owner: BrokerRef) -> str:
    """The field manager of `owner`'s Secrets: one per MessageBroker, so that two of
    them naming the same Secret conflict on the API server."""
    return f"{MANAGED_BY}/{owner.uid}"


async def _apply_secret(owner: BrokerRef, body: Any, *, force: bool) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    query = f"?fieldManager={field_manager(owner)}&force={'true' if force else 'false'}"
    await _call(
        f"write Secret {namespace}/{name}",
        "PATCH",
        _secrets_path(namespace, name) + query,
        body,
        content_type=APPLY_PATCH,
    )


async def _first_apply(owner: BrokerRef, body: Any) -> None:
    """A Secret this process has not seen: applied without force, so that one of that
    name already written by anyone else conflicts; only then is it read to decide."""
    namespace, name = owner.namespace, body["metadata"]["name"]
    try:
        await _apply_secret(owner, body, force=False)
        return
    except errors.DuctapeError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ApiException) or cause.status not in (409, 422):
            raise
    existing = await _read_secret(namespace, name)
    if existing is None:  # deleted meanwhile
        await _apply_secret(owner, body, force=False)
        return
    meta = existing.get("metadata") or {}
    if not _owned_by(meta, owner) and not _left_by_namesake(meta, owner):
        raise _not_ours(namespace, name)
    if existing.get("type") != body["type"]:
        await delete_secret(owner, name)
        await _apply_secret(owner, body, force=False)
        return
    # Ours, written by an earlier owner of the same name or an earlier version: take it.
    await _apply_secret(owner, body, force=True)


def _not_ours(namespace: str, name: str) -> errors.InvalidConfigError:
    return errors.InvalidConfigError(
        f"Secret {namespace}/{name} already exists and is not owned by this"
        " MessageBroker; set envs[].secretName to another name or remove that Secret"
    )


async def delete_secret(owner: BrokerRef, name: str) -> None:
    """Delete a connection Secret if `owner` owns it; success when it is gone."""
    namespace = owner.namespace
    _written.pop((namespace, name), None)
    existing = await _read_secret(namespace, name)
    if existing is None:
        return
    if not _owned_by(existing.get("metadata") or {}, owner):
        return
    await _call(
        f"delete Secret {namespace}/{name}",
        "DELETE",
        _secrets_path(namespace, name),
        missing_ok=True,
    )


async def patch_status(ref: BrokerRef, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (lists are replaced whole by a merge patch)."""
    body = {"status": json.loads(redaction.redact(json.dumps(dict(status))))}
    await _call(
        f"patch status of MessageBroker {ref.namespace}/{ref.name}",
        "PATCH",
        _broker_path(ref, "status"),
        body,
        content_type=MERGE_PATCH,
        missing_ok=True,  # deleted meanwhile: nothing to report on
    )


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

    await _call(
        f"patch MessageBroker {ref.namespace}/{ref.name}",
        "PATCH",
        _broker_path(ref),
        {"metadata": metadata},
        content_type=MERGE_PATCH,
        missing_ok=True,
    )


#: Attempts at the finalizer patch: each refusal (the object changed since the body the
#: handler had) is answered by a read, and the next attempt is based on what it read.
FINALIZER_ATTEMPTS = 5


async def add_finalizer(
    ref: BrokerRef,
    finalizer: str,
    *,
    finalizers: list[str],
    resource_version: str,
    labels: Mapping[str, str],
) -> bool | None:
    """Append `finalizer` to the MessageBroker's `finalizers` (and write `labels`), as of
    `resource_version`.

    True when written; False when the object is gone (or is another one of that name
    now, or is being deleted); None when it kept changing under every attempt. The merge
    patch carries the `resourceVersion` it is based on, so a list written is never based
    on an old list: when the API server refuses it (409), the object is read and the patch
    retried at once on what was read, rather than waiting for the watch to bring the newer body
    (docs/operations.md, "A burst of creates").
    """
    for _ in range(FINALIZER_ATTEMPTS):
        metadata: dict[str, Any] = {
            "resourceVersion": resource_version,
            "finalizers": [*finalizers, finalizer],
        }
        if labels:
            metadata["labels"] = dict(labels)
        answer = await _call(
            f"add the finalizer of MessageBroker {ref.namespace}/{ref.name}",
            "PATCH",
            _broker_path(ref),
            {"metadata": metadata},
            content_type=MERGE_PATCH,
            missing_ok=True,
            conflict_ok=True,
        )
        if answer is not None:
            return ((answer.get("metadata") or {}).get("uid")) == ref.uid
        # Gone (404) or changed meanwhile (409): which one, a read tells.
        current = await _read_broker(ref)
        meta = (current or {}).get("metadata") or {}
        if current is None or meta.get("deletionTimestamp"):
            return False  # gone, or going before anything was provisioned for it
        logger.debug(
            "%s/%s changed since resourceVersion %s (now %s, last written by %s): finalizer"
            " patch retried on the current object",
            ref.namespace, ref.name, resource_version, meta.get("resourceVersion"),
            _last_writers(meta),
        )  # fmt: skip
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        held = len(finalizers) != len(meta.get("finalizers") or [])
        current_labels = meta.get("labels") or {}
        if held and all(current_labels.get(k) == v for k, v in labels.items()):
            return True
        resource_version = str(meta.get("resourceVersion") or "")
    return None


def _last_writers(metadata: Mapping[str, Any]) -> str:
    """Who wrote the object, newest first, from its managedFields (for a debug line)."""
    entries = sorted(
        metadata.get("managedFields") or [], key=lambda e: str(e.get("time")), reverse=True
    )
    return (
        ", ".join(
            f"{e.get('manager')} {e.get('operation')}"
            + (f" {e['subresource']}" if e.get("subresource") else "")
            + f" at {e.get('time')}"
            for e in entries
        )
        or "(unknown)"
    )


async def _read_broker(ref: BrokerRef) -> dict[str, Any] | None:
    """The MessageBroker `ref` (that very uid) as the API server has it, or None."""
    body = await _call(
        f"read MessageBroker {ref.namespace}/{ref.name}", "GET", _broker_path(ref), missing_ok=True
    )
    if body is None or ((body.get("metadata") or {}).get("uid")) != ref.uid:
        return None
    return body


#: Events being posted; kept so that the tasks are not garbage-collected mid-flight.
_posting: set[asyncio.Task[None]] = set()
#: Events posted at once. An Event is news, never on a resource's path to Ready: a burst
#: of a thousand creates posts a thousand Ready Events, and they wait here, behind the
#: Secrets and status patches of the resources still on their way (docs/operations.md,
#: "A burst of creates"), instead of taking the API pool's threads ahead of them.
EVENT_CONCURRENCY = 2
#: The event loop the slots were made in, and the slots: asyncio primitives belong to one
#: loop, and tests run several loops in one process.
_event_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None


def _event_slot() -> asyncio.Semaphore:
    global _event_slots
    loop = asyncio.get_running_loop()
    if _event_slots is None or _event_slots[0] is not loop:
        _event_slots = (loop, asyncio.Semaphore(EVENT_CONCURRENCY))
    return _event_slots[1]


def emit_event(ref: BrokerRef, *, type: str, reason: str, message: str) -> None:
    """Post an Event in the background: it is never on the path to a resource's Ready."""
    task = asyncio.ensure_future(post_event(ref, type=type, reason=reason, message=message))
    _posting.add(task)
    task.add_done_callback(_posting.discard)


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
        async with _event_slot():
            await _call(
                f"post Event {reason}",
                "POST",
                f"/api/v1/namespaces/{ref.namespace}/events",
                body,
            )
    except errors.DuctapeError as exc:
        # During an API server outage that outage's own line says it all; a namespace
        # being deleted refuses new Events (403), which is no news either.
        down = outages.is_open(outages.API_SERVER) or outages.is_open(outages.API_THROTTLED)
        cause = exc.__cause__
        terminating = isinstance(cause, ApiException) and "being terminated" in str(cause.body)
        logger.log(
            logging.DEBUG if down or terminating else logging.WARNING,
            "could not post event on %s/%s: %s",
            ref.namespace,
            ref.name,
            exc.message,
        )


#: Namespaces seen terminating: a Secret missing there went with the namespace, which is
#: no `SecretNotFound` to report (docs/operations.md, "Deleting a namespace").
_terminating: set[str] = set()


def namespace_in_use(namespace: str) -> None:
    """A MessageBroker was just created in `namespace`: it is not (or no longer) terminating,
    whatever was seen of an earlier namespace of that name."""
    _terminating.discard(namespace)


async def namespace_terminating(namespace: str) -> bool:
    if namespace in _terminating:  # a namespace never stops terminating: no read again
        return True
    going = await _namespace_terminating(namespace)
    if going:
        _terminating.add(namespace)
    return going


async def _namespace_terminating(namespace: str) -> bool:
    try:
        ns = await _call(f"read Namespace {namespace}", "GET", f"/api/v1/namespaces/{namespace}")
    except errors.DuctapeError as exc:
        cause = exc.__cause__
        if isinstance(cause, ApiException) and cause.status in (403, 404):
            return bool(cause.status == 404)
        raise
    assert ns is not None
    deleting = bool((ns.get("metadata") or {}).get("deletionTimestamp"))
    return deleting or (ns.get("status") or {}).get("phase") == "Terminating"


def _owned_by(metadata: Mapping[str, Any], owner: BrokerRef) -> bool:
    refs = metadata.get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)


def _left_by_namesake(metadata: Mapping[str, Any], owner: BrokerRef) -> bool:
    """The Secret is ours, written for an earlier MessageBroker of the same name (deleted
    with its CRD, say, and applied again) that garbage collection has not reached yet:
    it is adopted (docs/operations.md, "Deleting the CRD")."""
    refs = metadata.get("ownerReferences") or []
    labels = metadata.get("labels") or {}
    return (
        labels.get(MANAGED_BY_LABEL) == MANAGED_BY
        and bool(refs)
        and all(
            ref.get("kind") == models.KIND
            and str(ref.get("apiVersion", "")).startswith(f"{models.GROUP}/")
            and ref.get("name") == owner.name
            for ref in refs
        )
    )


def _api_error(exc: ApiException, action: str) -> errors.DuctapeError:
    if exc.status == 403 and "being terminated" in str(exc.body):
        return errors.NamespaceTerminatingError(
            f"Kubernetes API: cannot {action}: the namespace is being deleted"
        )
    retriable = exc.status is None or exc.status >= 500 or exc.status in (409, 429)
    return errors.DuctapeError(
        f"Kubernetes API: cannot {action}: {exc.status} {exc.reason}", retriable=retriable
    )


# --- the CRD going away (docs/operations.md, "Deleting the CRD") --------------

JSON_PATCH = "application/json-patch+json"


async def list_brokers() -> list[dict[str, Any]]:
    """Every MessageBroker in the cluster, read from the API server; [] once the CRD is gone.

    Not from a watch: kopf stops watching MessageBrokers once their CRD is terminating.
    """
    path = f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}"
    listing = await _call("list MessageBrokers", "GET", path, missing_ok=True)
    return list((listing or {}).get("items") or [])


async def remove_finalizer(ref: BrokerRef, finalizer: str) -> None:
    """Take `finalizer` off the MessageBroker; success when it, or the object, is gone.

    A JSON patch that first tests the list entry: a finalizer another controller
    added or removed meanwhile is never removed or restored by mistake.
    """
    for _ in range(5):
        body = await _read_broker(ref)
        meta = (body or {}).get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if body is None or finalizer not in finalizers:
            return
        at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
        try:
            await _call(
                f"remove the finalizer of MessageBroker {ref.namespace}/{ref.name}",
                "PATCH",
                _broker_path(ref),
                [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}],
                content_type=JSON_PATCH,
                missing_ok=True,
            )
            return
        except errors.DuctapeError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ApiException) and cause.status in (409, 422)):
                raise
    raise errors.DuctapeError(
        f"Kubernetes API: cannot remove the finalizer of MessageBroker {ref.namespace}/{ref.name}:"
        " its finalizers keep changing"
    )
