"""kopf handlers: parse the event, call the reconciler, map its outcome. Nothing else.

Handlers are plain module-level functions; `register()` attaches them to a
registry with the operator's settings (the health interval is only known once
the command line is parsed). The reconciler lives in kopf's `memo`, opened at
startup and closed at cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import gc
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

# kopf's own rescan of a CRD, and the insights it keeps of what it serves: private, but
# the only way to have kopf serve the CRD's objects again (see `crd_changed`); kopf's
# version is pinned in requirements.lock.
from kopf._cogs.structs import references as kopf_references
from kopf._core.reactor import observation as kopf_observation

from ductape_operator import core, errors, kube, metrics, models, outages, reconcile
from ductape_operator.settings import Settings

logger = logging.getLogger(__name__)

FINALIZER = "ductape.app/finalizer"
PREFIX = "ductape.app"
RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)
CRD = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
CRD_NAME = f"{models.PLURAL}.{models.GROUP}"
#: The annotation where operators before `HandledSpec` kept kopf's record of the spec it
#: last handled (its diff base), `core.DIFFBASE_ANNOTATION`; still read for resources they
#: handled, until the reconciler removes it.
DIFFBASE_KEY = core.DIFFBASE_ANNOTATION.removeprefix(f"{PREFIX}/")
#: What counts as a change is the spec alone: the tag label we add ourselves, or a
#: user's label, must not cost a reconcile.
DIFFBASE_IGNORED = ["metadata.labels", "metadata.annotations"]
#: kopf's retries of a failed API request, in seconds: about five minutes in all, so
#: that an API server outage shorter than that never ends a watch (kopf's default
#: gives up after a minute, and a watch that gives up stops the operator).
API_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30)
#: MessageBrokers finalized at once while their CRD is being deleted.
RELEASE_CONCURRENCY = 16
#: Seconds to keep releasing MessageBrokers of a terminating CRD, at least.
CRD_RELEASE_MIN = 60.0


class HandledSpec(kopf.DiffBaseStorage):
    """kopf's record of the spec it last handled, kept in `status.handledSpec`.

    The reconciler writes it with the status, in the same request, once it is done with
    a spec (`Reconciler.reconcile(handled=...)`); kopf's own storage, an annotation,
    cost a patch of the resource of its own after every handled change: one write in
    four on a new resource's way to Ready (docs/operations.md, "A burst of creates").
    What this process wrote comes first (the watch may not have brought it yet), then
    the status, then the annotation of operators before this one.
    """

    def __init__(self, written: Callable[[Mapping[str, Any]], str | None]) -> None:
        super().__init__(ignored_fields=DIFFBASE_IGNORED)
        self._written = written
        self._legacy = kopf.AnnotationsDiffBaseStorage(
            prefix=PREFIX, key=DIFFBASE_KEY, ignored_fields=DIFFBASE_IGNORED
        )

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        raw = self._written(body) or (body.get("status") or {}).get("handledSpec")
        if isinstance(raw, str):
            try:
                essence: kopf.BodyEssence = json.loads(raw)
                return essence
            except ValueError:
                logger.warning("ignoring an unreadable status.handledSpec")
        return self._legacy.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to write: the reconciler wrote it with the status."""

    def essence(self, body: kopf.Body) -> str:
        """The record of `body`'s spec, as the reconciler writes it."""
        return json.dumps(self.build(body=body), separators=(",", ":"), sort_keys=True)


class HandlerProgress(kopf.AnnotationsProgressStorage):
    """kopf's progress of a handler that is retried, in annotations, without kopf's
    `<prefix>/kopf-managed` marker.

    kopf adds the marker (so that other kopf operators ignore our annotations) in the
    first patch after any handler ran, successful ones included: with the handled spec
    in the status (`HandledSpec`), that marker alone would still cost every new resource
    a patch of its own. Our annotations need no marking: the diff base ignores all
    annotations. `_store_marker` is kopf's private hook (kopf is pinned in
    requirements.lock; a test fails if the marker comes back).
    """

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return


def _handled_spec(memo: kopf.Memo) -> HandledSpec:
    storage: HandledSpec = memo["handled_spec"]
    return storage


def _reconciler(memo: kopf.Memo) -> reconcile.Reconciler:
    reconciler: reconcile.Reconciler = memo["reconciler"]
    return reconciler


def _app_settings(memo: kopf.Memo) -> Settings:
    settings: Settings = memo["app_settings"]
    return settings


def tag_owner(kwargs: dict[str, Any], obj: reconcile.BrokerObject) -> str | None:
    """The name of the oldest MessageBroker holding the object's tag in its namespace.

    Indexes reach handlers as keyword arguments named after the index function;
    kopf's handler protocols do not declare them, hence the lookup in kwargs.
    """
    tags_index: kopf.Index[Any, Any] = kwargs["tags_index"]
    namespace, tag = obj.ref.namespace, obj.spec.get("tag")
    if not isinstance(tag, str) or (namespace, tag) not in tags_index:
        return None
    holders = sorted(tags_index[(namespace, tag)])
    return str(holders[0][1]) if holders else None


# --- lifecycle of the operator ----------------------------------------------


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    app = _app_settings(memo)
    memo["kopf_settings"] = settings
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = HandlerProgress(prefix=PREFIX)
    reconciler = reconcile.Reconciler(app)
    memo["reconciler"] = reconciler
    memo["handled_spec"] = settings.persistence.diffbase_storage = HandledSpec(
        reconciler.handled_spec
    )
    # Events come from one place, the reconciler, on transitions only: kopf posts none
    # of its own (a handler retrying is already in the status and in one Event).
    settings.posting.enabled = False
    settings.peering.name = "ductape-operator"
    settings.peering.standalone = app.standalone
    # HA: the live replica with the highest priority reconciles, the others stand by;
    # equal priorities would pause them all, hence a random one by default.
    settings.peering.priority = app.peering_priority or secrets.randbelow(2**31 - 2) + 1
    settings.peering.lifetime = app.peering_lifetime
    settings.peering.mandatory = app.require_peering and not app.standalone
    # Namespaced mode serves exactly the listed namespaces and the resources found at
    # startup: no cluster-wide list/watch of Namespaces or CRDs, so its RBAC needs no
    # cluster-scoped rule at all (the chart installs the CRDs before the operator starts).
    settings.scanning.disabled = bool(app.namespaces)
    # kopf re-checks a stopping timer this often; its default (60 s) delays deletions.
    settings.background.cancellation_polling = 1.0
    settings.watching.server_timeout = 300
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = API_BACKOFFS
    kube.configure()
    if app.metrics_port:
        metrics.serve(app.metrics_port, app.bind_address)
    memo["summary_task"] = asyncio.create_task(_log_summaries(reconciler, app))
    # Everything alive now lives as long as the process: keep it out of every later
    # collection (see `__main__._fewer_collections`).
    gc.collect()
    gc.freeze()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("summary_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "reconciler" in memo:
        await _reconciler(memo).aclose()


async def _log_summaries(reconciler: reconcile.Reconciler, app: Settings) -> None:
    """One INFO line now and then: resources by Ready reason, endpoints, the last round."""
    period = max(app.health_interval, 30.0)
    while True:
        await asyncio.sleep(period)
        reasons = Counter(reconciler.ready_reasons.values())
        if not reasons:
            continue
        stats = reconciler.health.stats
        logger.info(
            "%d MessageBroker(s): %s; %d endpoint(s), %d probe(s) and %d inventory listing(s)"
            " so far, last round %.3fs",
            sum(reasons.values()),
            ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items())),
            reconciler.health.endpoints,
            stats.probes,
            stats.inventories,
            stats.last_round_seconds,
        )


# --- indexes ----------------------------------------------------------------


async def tags_index(
    namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, Any], tuple[str, str]]:
    """(namespace, tag) -> (creationTimestamp, name): who holds which tag."""
    if namespace is None:
        return {}
    return {(namespace, spec.get("tag")): (str(meta.get("creationTimestamp") or ""), name)}


async def secrets_index(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    """(namespace, Secret name) -> MessageBroker name, for every referenced Secret."""
    if namespace is None:
        return {}
    return {(namespace, secret): name for secret in reconcile.referenced_secrets(spec)}


async def brokers_index(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) -> the body as last watched: Secret events read it from here.

    Only what the reconciler reads is kept: kubectl's and kopf's own annotations
    each repeat the whole spec, and a thousand resources would keep them all.
    """
    if namespace is None:
        return {}
    return {(namespace, name): reconcile.trimmed_body(body)}


# --- MessageBroker handlers -------------------------------------------------


async def reconcile_broker(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """create / update / resume: the same level-based reconcile."""
    obj = reconcile.BrokerObject.from_body(body)
    owner = tag_owner(kwargs, obj)
    delay = min(_app_settings(memo).health_interval, 15.0)
    finalizing: asyncio.Future[bool] | None = None
    try:
        if not holds_finalizer(body):
            kube.namespace_in_use(obj.ref.namespace)
            finalizing = asyncio.ensure_future(_block_deletion(body, obj))
            obj = _labelled_with_finalizer(body, obj)
            deleting = bool(body.get("metadata", {}).get("deletionTimestamp"))
            first = deleting or not core.provisions_while_finalizing(obj)
            if first and not await finalizing:
                return
        try:
            await _reconciler(memo).reconcile(
                obj,
                tag_owner=owner,
                handled=_handled_spec(memo).essence(body),
                finalizing=finalizing,
            )
        finally:
            if finalizing is not None:
                await finalizing  # never outlives its handler; its failure is retried
    except errors.DuctapeError as exc:  # the API server failing us: retry, no traceback
        raise kopf.TemporaryError(exc.message, delay=delay) from exc
    # A reconcile that could not finish (a broker down, a Secret missing, credentials
    # refused) has written its failure and the spec it handled in the status: the health
    # rounds retry it, per broker endpoint and with no API write until something changes,
    # and a change to its spec or its Secret is handled at once. A kopf retry would cost a
    # patch of the resource each time, and would hold back a fix to the spec until it is
    # due (docs/operations.md, "Retries").


#: How long kopf waits for the watch to bring back its own last patch before it handles an
#: older version of the object as if it were current. In a burst of creates the watch lags
#: by several seconds; with kopf's default of 5 s it handled the versions written by the
#: create handler itself (finalizer, status) as new creates: a second reconcile and a
#: second bookkeeping patch per resource, at the worst moment (docs/operations.md, "A burst
#: of creates").
CONSISTENCY_TIMEOUT = 15.0

#: Seconds before a create retries a finalizer patch refused because the object had
#: changed meanwhile (the watch brings the newer body shortly).
CONFLICT_RETRY = 0.5


def holds_finalizer(body: kopf.Body, **_: Any) -> bool:
    """The resource carries the operator's finalizer (a filter of the delete handler and
    of the health timer: kopf adds no finalizer of its own, see `_block_deletion`)."""
    return FINALIZER in (body.get("metadata", {}).get("finalizers") or [])


async def _block_deletion(body: kopf.Body, obj: reconcile.BrokerObject) -> bool:
    """Put the finalizer (and a missing tag label) on a new resource; False when the
    resource is gone.

    kopf would add its finalizer in a patch of its own and run the create handler only
    once the watch brought the patched object back: one more watch round trip on every
    new resource's way to Ready, the longest step of a burst of creates. The delete
    handler and the timer only match a resource that holds the finalizer, so kopf
    requires none before the first handler, and this patch protects the resource just as
    kopf's did. With Delete it is confirmed before any broker is touched: deleted before
    it, the resource is gone and nothing was provisioned; deleted after it, the delete
    handler runs. With Retain the brokers are provisioned while it is in flight, and
    nothing is written to the resource before it is confirmed
    (`core.provisions_while_finalizing`; docs/operations.md, "A burst of creates").
    """
    meta = body.get("metadata", {})
    held = await kube.add_finalizer(
        obj.ref,
        FINALIZER,
        finalizers=list(meta.get("finalizers") or []),
        resource_version=str(meta.get("resourceVersion") or ""),
        labels=_finalizer_labels(body),
    )
    if held is None:  # changed under every attempt: the watch brings the newer body
        raise kopf.TemporaryError("kept changing while adding the finalizer", delay=CONFLICT_RETRY)
    return held


def _finalizer_labels(body: kopf.Body) -> dict[str, str]:
    """The labels the finalizer's patch writes: the tag label, when it is missing."""
    tag = core.label_before_handling(body, FINALIZER)
    return {core.TAG_LABEL: tag} if tag is not None else {}


def _labelled_with_finalizer(
    body: kopf.Body, obj: reconcile.BrokerObject
) -> reconcile.BrokerObject:
    """`obj` as it is once the finalizer's patch landed: the reconcile writes no label
    of its own for it."""
    labels = _finalizer_labels(body)
    return dataclasses.replace(obj, labels={**obj.labels, **labels}) if labels else obj


async def health_round(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Timer: this resource's share of the per-endpoint round (probe, drift, retry).

    Also the retry of a create or change that could not finish: it recorded its spec as
    handled (docs/operations.md, "Retries"). A resource whose create handler has not run
    to its end yet (kopf retries it when the API server failed it) is left to that
    handler: in a burst of creates its timer can fire while it still waits its turn, and
    reconciling it here too would only add API writes to the queue.
    """
    if _handled_spec(memo).fetch(body=body) is None:
        return
    obj = reconcile.BrokerObject.from_body(body)
    logger.debug("health round for %s/%s", obj.ref.namespace, obj.ref.name)
    owner = tag_owner(kwargs, obj)
    try:
        await _reconciler(memo).reconcile(obj, tag_owner=owner, trigger=reconcile.HEALTH)
    except errors.DuctapeError as exc:
        logger.debug("health round of %s/%s: %s", obj.ref.namespace, obj.ref.name, exc.message)


async def pause_changed(body: kopf.Body, memo: kopf.Memo, type: str, **kwargs: Any) -> None:
    """kopf ignores its own prefix's annotations in diffs: watch the paused flag here.

    Also the last word on a resource removed while it still held the finalizer
    (`Reconciler.removed`)."""
    if type == "DELETED" and holds_finalizer(body):
        gone = reconcile.BrokerObject.from_body(body)
        try:
            await _reconciler(memo).removed(gone)
        except errors.DuctapeError as exc:
            logger.warning(
                "%s/%s: deletionPolicy not applied: %s", gone.ref.namespace, gone.ref.name,
                exc.message,
            )  # fmt: skip
        return
    if type in (None, "DELETED") or body.get("metadata", {}).get("deletionTimestamp"):
        return
    obj = reconcile.BrokerObject.from_body(body)
    if obj.paused == reconcile.shows_paused(obj):
        return
    owner = tag_owner(kwargs, obj)
    try:
        await _reconciler(memo).reconcile(obj, tag_owner=owner)
    except errors.DuctapeError as exc:  # the health round retries it
        logger.debug("pause of %s/%s: %s", obj.ref.namespace, obj.ref.name, exc.message)


async def finalize_broker(body: kopf.Body, memo: kopf.Memo, runtime: Any, **_: Any) -> None:
    """delete: apply deletionPolicy, then let the finalizer go."""
    obj = reconcile.BrokerObject.from_body(body)
    try:
        terminating = await kube.namespace_terminating(obj.ref.namespace)
        await _reconciler(memo).finalize(
            obj, elapsed=runtime.total_seconds(), namespace_terminating=terminating
        )
    except errors.DuctapeError as exc:
        raise kopf.TemporaryError(exc.message, delay=10) from exc


# --- the CRD itself ---------------------------------------------------------


async def crd_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """The MessageBroker CRD changed: while it terminates, release every MessageBroker.

    Deleting a CRD marks every one of its objects for deletion and waits for their
    finalizers, but kopf stops serving a resource whose CRD is terminating (it can no
    longer be created, which kopf reads as "not patchable"), so its delete handler never
    runs. Here each one is finalized by its deletionPolicy, as when its namespace is
    terminating (Delete gives up at once on a broker that does not answer), and its
    finalizer removed with the operator's own client (docs/operations.md, "Deleting
    the CRD").
    """
    deleting = type != "DELETED" and bool(body.get("metadata", {}).get("deletionTimestamp"))
    if not deleting:
        if type != "DELETED" and outages.is_open(outages.CRD_GONE):
            await _serve_again(body, memo)
        return
    outages.failing(
        outages.CRD_GONE,
        f"CRD {CRD_NAME} is being deleted: every MessageBroker is finalized by its"
        " deletionPolicy and not served until the CRD is applied again",
    )
    # The API server marks the MessageBrokers for deletion a moment after the CRD, and
    # its own CRD finalizer checks every 5 s whether they are gone, with no event on the
    # CRD in between: so look every second until none is left, or for a bounded time.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(_app_settings(memo).finalizer_timeout, CRD_RELEASE_MIN)
    while True:
        try:
            left = await _release_deleted_brokers(_reconciler(memo))
        except errors.DuctapeError as exc:
            left = 1
            logger.debug("releasing MessageBrokers of the deleted CRD: %s", exc.message)
        if not left or loop.time() >= deadline:
            return
        # kopf does not retry an event handler: poll here (never longer than the deadline).
        await asyncio.sleep(1.0)


async def _serve_again(body: kopf.Body, memo: kopf.Memo) -> None:
    """The CRD is applied again: make sure kopf serves its objects again.

    kopf re-reads the API's discovery on each event of a CRD, but the API server lists
    a new CRD's resource there a moment after its last event (Established): kopf's
    last look can come too early, and it would then never serve MessageBrokers again
    until restarted. So look again, as kopf does, every second until it serves them.
    """
    insights: kopf_references.Insights = memo["kopf_insights"]
    registry: kopf.OperatorRegistry = memo["kopf_registry"]
    settings: kopf.OperatorSettings = memo["kopf_settings"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CRD_RELEASE_MIN
    while not _served(insights):
        if loop.time() >= deadline:
            logger.warning(
                "CRD %s applied again, but its MessageBrokers are not served yet;"
                " restart the operator if they stay unhandled",
                CRD_NAME,
            )
            return
        await kopf_observation.process_discovered_resource_event(
            raw_event=kopf.RawEvent(type="MODIFIED", object=dict(body)),  # type: ignore[typeddict-item]
            settings=settings,
            registry=registry,
            insights=insights,
        )
        if not _served(insights):
            await asyncio.sleep(1.0)
    outages.recovered(outages.CRD_GONE)


def _served(insights: kopf_references.Insights) -> bool:
    return any(
        resource.group == models.GROUP and resource.plural == models.PLURAL
        for resource in insights.watched_resources
    )


async def _release_deleted_brokers(reconciler: reconcile.Reconciler) -> int:
    """Finalize and release every MessageBroker marked for deletion; how many are left."""
    bodies = await kube.list_brokers()
    marked = [
        body
        for body in bodies
        if body.get("metadata", {}).get("deletionTimestamp")
        and FINALIZER in (body.get("metadata", {}).get("finalizers") or [])
    ]
    if marked:
        logger.info("CRD %s terminating: releasing %d MessageBroker(s)", CRD_NAME, len(marked))
    slots = asyncio.Semaphore(RELEASE_CONCURRENCY)

    async def release(body: dict[str, Any]) -> None:
        obj = reconcile.BrokerObject.from_body(body)
        async with slots:
            try:
                await reconciler.finalize(
                    obj, elapsed=_seconds_since(body), namespace_terminating=True
                )
                await kube.remove_finalizer(obj.ref, FINALIZER)
            except errors.DuctapeError as exc:
                logger.debug("releasing %s/%s: %s", obj.ref.namespace, obj.ref.name, exc.message)

    await asyncio.gather(*(release(body) for body in marked))
    return len(bodies)


def _seconds_since(body: Mapping[str, Any]) -> float:
    """Seconds since the object was marked for deletion (0 when unreadable)."""
    stamp = str((body.get("metadata") or {}).get("deletionTimestamp") or "")
    try:
        since = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (datetime.datetime.now(datetime.UTC) - since).total_seconds())


# --- referenced Secrets -----------------------------------------------------


async def secret_changed(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    type: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A Secret appeared, changed or went away: a referenced one, or one we wrote."""
    if namespace is None:
        return
    gone = type == "DELETED"
    secrets_index: kopf.Index[Any, Any] = kwargs["secrets_index"]
    referenced = (namespace, name) in secrets_index
    owners: set[str] = set()
    if referenced:
        changed = kube.remember_secret(
            namespace, name, None if gone else dict(body.get("data") or {})
        )
        # The initial listing (type None) only fills the cache: `resume` reconciles then.
        if type is not None and changed:
            owners.update(secrets_index[(namespace, name)])
    else:
        kube.forget_secret(namespace, name)
    if kube.connection_secret_seen(namespace, name, None if gone else body):
        refs = body.get("metadata", {}).get("ownerReferences") or []
        owners.update(ref["name"] for ref in refs if ref.get("kind") == models.KIND)
    brokers: kopf.Index[Any, Any] = kwargs["brokers_index"]
    live = []
    for broker_name in sorted(owners):
        bodies = list(brokers.get((namespace, broker_name), []))
        if bodies and not bodies[0].get("metadata", {}).get("deletionTimestamp"):
            live.append((broker_name, bodies[0]))
    if gone and live and await _namespace_going(namespace):
        # Deleting a namespace deletes the Secrets before the MessageBrokers are marked:
        # a connection Secret written again would be refused (403), a referenced one
        # reported missing, each for every resource on its way out (docs/operations.md,
        # "Deleting a namespace").
        return
    for broker_name, body in live:
        obj = reconcile.BrokerObject.from_body(body)
        owner = tag_owner(kwargs, obj)
        logger.info("Secret %s/%s changed: reconciling %s", namespace, name, broker_name)
        try:
            await _reconciler(memo).reconcile(obj, tag_owner=owner)
        except errors.DuctapeError as exc:
            raise kopf.TemporaryError(exc.message, delay=10) from exc


async def _namespace_going(namespace: str) -> bool:
    try:
        return await kube.namespace_terminating(namespace)
    except errors.DuctapeError:  # unknown: reconcile, as for any other change
        return False


#: HTTP connections kopf keeps to the API server (its watches included). kopf's own
#: session has no limit: a thousand resources created at once opened a TLS connection
#: each, and every one kept its buffers (docs/operations.md, "Memory").
KOPF_CONNECTIONS = 64


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """Authenticate like the Kubernetes client: in-cluster token, else the kubeconfig,
    through an HTTP session with a bounded connection pool.

    kopf registers its login handlers for its default registry only; ours is a fresh one.
    """
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
    )
    return kopf.AiohttpSession(
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def register(registry: kopf.OperatorRegistry, app: Settings) -> None:
    """Attach every handler to `registry`, configured from `app`."""
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.index(*RESOURCE, registry=registry)(tags_index)
    kopf.index(*RESOURCE, registry=registry)(secrets_index)
    kopf.index(*RESOURCE, registry=registry)(brokers_index)
    kopf.on.create(*RESOURCE, registry=registry, id="create")(reconcile_broker)
    kopf.on.update(*RESOURCE, registry=registry, id="update")(reconcile_broker)
    kopf.on.resume(*RESOURCE, registry=registry, id="resume")(reconcile_broker)
    kopf.on.event(*RESOURCE, registry=registry, id="paused")(pause_changed)
    # Both only for a resource that holds the finalizer: kopf then adds none of its own
    # before the create handler, which adds it itself (see `_block_deletion`).
    kopf.timer(
        *RESOURCE,
        registry=registry,
        id="health",
        interval=app.health_interval,
        initial_delay=app.health_interval,
        when=holds_finalizer,
    )(health_round)
    kopf.on.delete(*RESOURCE, registry=registry, id="finalize", when=holds_finalizer)(
        finalize_broker
    )
    kopf.on.event("", "v1", "secrets", registry=registry, id="secret")(secret_changed)
    if not app.namespaces:
        # Cluster-wide only: CRDs are cluster-scoped, and namespaced mode has no
        # cluster-scoped permission. There kopf keeps serving a terminating CRD's
        # objects (it does not re-scan CRDs), so the delete handler releases them.
        kopf.on.event(*CRD, registry=registry, id="crd", field="metadata.name", value=CRD_NAME)(
            crd_changed
        )


def new_insights() -> kopf_references.Insights:
    """kopf's record of what it serves, made here so that `crd_changed` can reach it."""
    return kopf_references.Insights()


def memo_for(
    app: Settings, registry: kopf.OperatorRegistry, insights: kopf_references.Insights
) -> kopf.Memo:
    """The memo handed to every handler; `registry` and `insights` are what kopf.run
    is given, for `crd_changed`."""
    memo = kopf.Memo()
    memo["app_settings"] = app
    memo["kopf_registry"] = registry
    memo["kopf_insights"] = insights
    return memo
