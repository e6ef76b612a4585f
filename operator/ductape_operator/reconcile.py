"""Observe, compare, act: one MessageBroker becomes broker resources, Secrets and a status.

The reconciler is level-based: every trigger (create, update, resume, the
health timer, a referenced Secret changing) runs the same `reconcile()`. It
compares the desired spec with what it last provisioned, recorded in the
`ductape.app/applied` annotation, and does the minimum:

- a topic unchanged on an unchanged broker is only checked for existence (and
  re-created if it drifted away);
- a new or changed topic is ensured (created or adopted);
- a topic or env that disappeared gets the `deletionPolicy`;
- an env whose broker changed (type or endpoint) is provisioned on the new
  broker first, its Secret switched, and only then is the policy applied to
  the old broker.

What to do and what the status becomes is decided in `core`, as plain data;
this module performs it, through two injected interfaces: `Cluster` (the
Kubernetes reads and writes, `kube` in the operator, a fake in unit tests) and
the provider pool. Status is written only when it differs from what is there:
the body the watch delivered, overlaid with what this process itself last
wrote (`core.Written`), so no trigger costs a GET.

Health rounds (`trigger="health"`) take their probe and drift inventory from
`health.EndpointHealth`, once per broker endpoint per round, and touch a
broker only to repair what is missing. This module does not import kopf;
handlers map its outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

from ductape_operator import core, errors, health, kube, metrics, models, providers
from ductape_operator.core import (
    CHANGE,
    HEALTH,
    TAG_LABEL,
    AppliedEnv,
    BrokerObject,
    EnvResult,
    Outcome,
    Trigger,
    Written,
    referenced_secrets,
    shows_paused,
    trimmed_body,
)
from ductape_operator.models import BrokerRef
from ductape_operator.providers import base
from ductape_operator.settings import Settings

# What handlers read from here; the decisions themselves live in `core`.
__all__ = [
    "CHANGE",
    "HEALTH",
    "BrokerObject",
    "Cluster",
    "Reconciler",
    "referenced_secrets",
    "shows_paused",
    "trimmed_body",
]

logger = logging.getLogger(__name__)

#: A first reconcile that takes longer than this writes a `Provisioning` status
#: first, so that users see progress; a quick one writes only its final status.
PROVISIONING_NOTICE_SECONDS = 2.0
#: Reconciles in flight at once (controller-runtime's MaxConcurrentReconciles): a burst
#: of a thousand creates waits here instead of holding a thousand half-done reconciles
#: (and their memory) at once. The API server is the bottleneck of such a burst either
#: way. Changes go first, health rounds after (see `Slots`).
MAX_CONCURRENT_RECONCILES = 64
#: Deleted resources' uids remembered (see `Reconciler._finalized`).
FINALIZED_KEPT = 10_000


class Cluster(Protocol):
    """The Kubernetes side of a reconcile: what it reads and writes (`kube` implements it)."""

    async def read_secret_values(
        self, namespace: str, refs: Iterable[models.SecretKeySelector]
    ) -> dict[tuple[str, str], str]: ...

    async def apply_connection_secret(
        self, owner: BrokerRef, name: str, data: Mapping[str, str], labels: Mapping[str, str]
    ) -> bool: ...

    async def delete_secret(self, owner: BrokerRef, name: str) -> None: ...

    async def patch_status(self, ref: BrokerRef, status: Mapping[str, Any]) -> None: ...

    async def patch_metadata(
        self,
        ref: BrokerRef,
        *,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> None: ...

    def emit_event(self, ref: BrokerRef, *, type: str, reason: str, message: str) -> None: ...


class KubeCluster:
    """`Cluster` over the `kube` module: the real API server."""

    read_secret_values = staticmethod(kube.read_secret_values)
    apply_connection_secret = staticmethod(kube.apply_connection_secret)
    delete_secret = staticmethod(kube.delete_secret)
    patch_status = staticmethod(kube.patch_status)
    patch_metadata = staticmethod(kube.patch_metadata)
    emit_event = staticmethod(kube.emit_event)


class Slots:
    """A semaphore whose urgent waiters go first, each kind first come first served.

    In a burst of creates longer than a health interval, the resources already Ready
    have their health rounds come due: with one plain queue each of those took a slot
    ahead of the creates still waiting, and a new resource's time to Ready grew by
    rounds that had nothing to write (docs/operations.md, "A burst of creates").
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._later: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, *, urgent: bool) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if self._free > 0:  # then nobody waits: a released slot goes to a waiter first
            self._free -= 1
            return
        queue = self._urgent if urgent else self._later
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                queue.remove(granted)
            raise

    def _release(self) -> None:
        """Hand the slot to the next waiter, urgent first; else it is free again."""
        for queue in (self._urgent, self._later):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1


class Reconciler:
    """Reconciles MessageBrokers; one per operator process, shared by all handlers."""

    def __init__(
        self,
        settings: Settings,
        pool: providers.ProviderPool | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.settings = settings
        # `is None`: an empty pool is falsy (it has a length), yet it is the one to use.
        self.pool = pool if pool is not None else providers.ProviderPool()
        self.cluster: Cluster = cluster if cluster is not None else KubeCluster()
        self.health = health.EndpointHealth(
            round_seconds=settings.health_interval, probe_timeout=settings.probe_timeout
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._in_flight = Slots(MAX_CONCURRENT_RECONCILES)
        self._written: dict[tuple[str, str], Written] = {}
        #: The Ready condition's reason per resource, for the periodic summary.
        self.ready_reasons: dict[tuple[str, str], str] = {}
        #: uids finalized by this process, newest last: a health round still holding an
        #: older body (kopf stops serving the objects of a terminating CRD, not their
        #: timers) must not provision again what a deletion just removed.
        self._finalized: collections.OrderedDict[str, None] = collections.OrderedDict()

    def lock(self, ref: BrokerRef) -> asyncio.Lock:
        return self._locks.setdefault((ref.namespace, ref.name), asyncio.Lock())

    async def aclose(self) -> None:
        await self.pool.aclose()

    def forget(self, ref: BrokerRef) -> None:
        """The resource is gone: drop everything kept about it."""
        key = (ref.namespace, ref.name)
        self._written.pop(key, None)
        self._locks.pop(key, None)
        self.ready_reasons.pop(key, None)
        metrics.forget(ref.namespace, ref.name)

    def handled_spec(self, body: Mapping[str, Any]) -> str | None:
        """The `status.handledSpec` this process last wrote on `body`'s object, if any."""
        meta = body.get("metadata") or {}
        written = self._written.get((str(meta.get("namespace")), str(meta.get("name"))))
        if written is None or written.uid != meta.get("uid") or written.status is None:
            return None
        handled = written.status.get("handledSpec")
        return handled if isinstance(handled, str) else None

    def _written_for(self, ref: BrokerRef) -> Written:
        written = self._written.get((ref.namespace, ref.name))
        if written is None or written.uid != ref.uid:
            written = self._written[(ref.namespace, ref.name)] = Written(uid=ref.uid)
        return written

    # --- the reconcile ------------------------------------------------------

    async def reconcile(
        self,
        obj: BrokerObject,
        *,
        tag_owner: str | None = None,
        trigger: Trigger = CHANGE,
        handled: str | None = None,
        finalizing: asyncio.Future[bool] | None = None,
    ) -> Outcome:
        """Bring one MessageBroker to its desired state; never raises for user errors.

        `handled` is kopf's record of the spec this reconcile handles (a change
        handler's): written with the status when the reconcile is done with that spec
        (no retry), in the same request, so that kopf needs no bookkeeping patch of
        its own (docs/operations.md, "A burst of creates").

        `finalizing` is the finalizer's patch, still in flight, of a new resource whose
        policy lets the brokers be provisioned meanwhile (`core.provisions_while_finalizing`):
        True once the finalizer is on, False when the resource is gone. Nothing is
        written to the resource before it is True.
        """
        async with self._in_flight.hold(urgent=trigger != HEALTH), self.lock(obj.ref):
            if obj.ref.uid in self._finalized:
                return Outcome(obj.current_status(), ready=False, message="deleted")
            written = self._written_for(obj.ref)
            if obj.generation < written.generation:
                current = obj.current_status()
                return Outcome(status=current, ready=False, message="stale")
            written.generation = obj.generation
            obj = written.overlay(obj)
            started = time.monotonic()
            try:
                outcome = await self._reconcile(
                    obj,
                    tag_owner=tag_owner,
                    trigger=trigger,
                    handled=handled,
                    finalizing=finalizing,
                )
            except Exception:
                metrics.observe_reconcile(time.monotonic() - started, "error")
                raise
            metrics.observe_reconcile(
                time.monotonic() - started, "ready" if outcome.ready else "not_ready"
            )
            if outcome.gone:
                self._remember_finalized(obj.ref.uid)
            else:
                metrics.set_ready(obj.ref.namespace, obj.ref.name, outcome.ready)
        if outcome.gone:
            self.forget(obj.ref)
        return outcome

    async def _reconcile(
        self,
        obj: BrokerObject,
        *,
        tag_owner: str | None,
        trigger: Trigger,
        handled: str | None,
        finalizing: asyncio.Future[bool] | None,
    ) -> Outcome:
        current = obj.current_status()
        verdict = core.gate(obj, tag_owner)
        if verdict.spec is None:
            logger.warning("%s/%s is invalid: %s", obj.ref.namespace, obj.ref.name, verdict.message)
        elif verdict.label:
            await self._write_label(obj, verdict.spec.tag)
        if verdict.reason is not None:
            if not await self._still_there(obj, finalizing, []):
                return core.gone(current)
            return await self._stop(obj, current, verdict, handled)
        assert verdict.spec is not None
        return await self._provision(obj, current, verdict.spec, trigger, handled, finalizing)

    async def _stop(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        verdict: core.Gate,
        handled: str | None,
    ) -> Outcome:
        """A resource that is not reconciled: its status says why."""
        envs = (
            [e for e in verdict.spec.envs if self.settings.reconciles_env(e.slug)]
            if (verdict.spec)
            else []
        )
        status = core.unreconciled_status(obj, current, verdict, envs)
        status = await self._write_status(obj, current, status, handled=handled)
        return Outcome(status=status, ready=False, message=verdict.message)

    async def _provision(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        spec: models.MessageBrokerSpec,
        trigger: Trigger,
        handled: str | None,
        finalizing: asyncio.Future[bool] | None = None,
    ) -> Outcome:
        applied = core.load_applied(core.applied_record(obj))
        reconciled = [env for env in spec.envs if self.settings.reconciles_env(env.slug)]
        # A missing tag label is written while the brokers are provisioned, not after:
        # it must be there before the status says Ready, and it needs nothing from them.
        labelling = self._label(obj, spec.tag)
        tasks = [
            asyncio.ensure_future(
                self._reconcile_env(obj, spec, env, applied.get(env.slug), trigger)
            )
            for env in reconciled
        ]
        try:
            if not current.conditions and tasks:
                _, pending = await asyncio.wait(tasks, timeout=PROVISIONING_NOTICE_SECONDS)
                if pending and await self._still_there(obj, finalizing, []):
                    provisioning = core.provisioning_status(obj, reconciled)
                    current = await self._write_status(obj, current, provisioning)
            results = list(await asyncio.gather(*tasks))
        finally:
            if labelling is not None:
                await labelling
                obj = dataclasses.replace(obj, labels={**obj.labels, TAG_LABEL: spec.tag})

        if not await self._still_there(obj, finalizing, [env.slug for env in reconciled]):
            return core.gone(current)
        new_applied = dict(applied)
        for result in results:
            if result.applied is not None:
                new_applied[result.slug] = result.applied
        if any(result.namespace_terminating for result in results):
            logger.debug("%s/%s: its namespace is being deleted", obj.ref.namespace, obj.ref.name)
            return Outcome(current, ready=False, message="namespace terminating")
        retire_failures = await self._retire_removed_envs(obj, spec, applied, new_applied)

        status = core.status_from_results(obj.generation, current, results, retire_failures)
        outcome = core.outcome(status)
        await self._write_status(
            obj,
            current,
            status,
            applied=core.dump_applied(new_applied),
            handled=handled,
        )
        for result in results:
            for event in result.events:
                self._post(obj.ref, event)
        return outcome

    async def _still_there(
        self, obj: BrokerObject, finalizing: asyncio.Future[bool] | None, slugs: Iterable[str]
    ) -> bool:
        """Wait for the finalizer patch in flight, if any: False when the resource went
        before it landed, after letting go of the connections its `slugs` took.

        Only a Retain resource provisions meanwhile, so nothing on a broker is to be
        deleted: what was created there stays, as Retain promises, and its Secret, owned
        by the deleted resource, goes by garbage collection.
        """
        if finalizing is None or await finalizing:
            return True
        for slug in slugs:
            owner = (obj.ref.namespace, obj.ref.name, slug)
            await self.pool.release(owner)
            self.health.drop(owner)
        return False

    async def _retire_removed_envs(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        applied: Mapping[str, AppliedEnv],
        new_applied: dict[str, AppliedEnv],
    ) -> list[str]:
        """Envs removed from the spec get deletionPolicy; what failed, to report."""
        desired = {env.slug for env in spec.envs}
        failures: list[str] = []
        for slug, old in applied.items():
            if slug in desired or not self.settings.reconciles_env(slug):
                continue
            try:
                await self._retire_env(obj, spec, old)
                del new_applied[slug]
            except errors.DuctapeError as exc:
                failures.append(f"removed env {slug}: {exc.message}")
        return failures

    async def _reconcile_env(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        prev: AppliedEnv | None,
        trigger: Trigger = CHANGE,
    ) -> EnvResult:
        ref = obj.ref
        secret_name = core.secret_name_for(ref.name, env)
        result = EnvResult(
            slug=env.slug,
            type=env.type,
            phase=models.Phase.PROVISIONING,
            endpoint=None,
            secret_name=secret_name,
            topics=[
                models.TopicStatus(
                    tag=t.tag, name=t.physical_name, retention=models.retention_in_force(t)
                )
                for t in spec.topics
            ],
            message="",
        )
        try:
            await self._provision_env(obj, spec, env, prev, trigger, result)
        except errors.NamespaceTerminatingError:
            result.namespace_terminating = True
        except errors.DuctapeError as exc:
            core.record_failure(result, exc, prev)
        except Exception as exc:  # an SDK error nobody mapped: report it, keep running
            logger.exception(
                "unexpected error reconciling %s/%s env %s", ref.namespace, ref.name, env.slug
            )
            core.record_failure(
                result,
                errors.ProvisioningError(f"unexpected {type(exc).__name__}: {exc}", retriable=True),
                prev,
            )
        metrics.observe_env(
            ref.namespace,
            ref.name,
            env.slug,
            env.type.value,
            healthy=result.healthy,
            probe_seconds=result.probe_seconds,
        )
        return result

    async def _provision_env(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        prev: AppliedEnv | None,
        trigger: Trigger,
        result: EnvResult,
    ) -> None:
        """Probe, ensure the topics, write the Secret, leave an old broker: fills `result`."""
        ref = obj.ref
        secrets = base.SecretValues(
            await self.cluster.read_secret_values(ref.namespace, env.config.secret_refs())
        )
        owner = (ref.namespace, ref.name, env.slug)
        provider = await self.pool.acquire(owner, env.type, env.config, secrets)
        endpoint_key = self.pool.key_of(owner)
        assert endpoint_key is not None  # acquired just now, under this resource's lock
        result.endpoint = provider.endpoint
        probe = await self.health.probe(endpoint_key, provider)
        result.probe_seconds = probe.seconds
        if probe.error is not None:
            core.record_failure(result, probe.error, prev)
            return
        result.healthy = True

        inventory = (
            await self.health.inventory(endpoint_key, provider) if trigger == HEALTH else None
        )
        locations = await self._ensure_topics(
            obj, spec, env, provider, core.topic_work(spec, env, prev), inventory, result
        )
        same_broker = core.same_broker(prev, env)
        if (
            spec.deletion_policy is models.DeletionPolicy.DELETE
            and prev is not None
            and same_broker
        ):
            # After a move, the old broker is handled as a whole by _leave_old_broker.
            await self._delete_removed_topics(provider, prev.topics, spec.topics)

        await self._write_secret(obj, spec, env, provider, locations, prev, result)
        if prev is not None and not same_broker:
            await self._leave_old_broker(obj, spec, env, prev, result)
        result.applied = AppliedEnv(
            env=env, topics=tuple(spec.topics), secret_name=result.secret_name, locations=locations
        )
        core.ready_env(result, spec, locations)
        plans = (base.TopicPlan.from_spec(t, spec.topics) for t in spec.topics)
        self.health.want(endpoint_key, owner, plans)

    async def _ensure_topics(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        provider: base.Provider,
        work: core.TopicWork,
        inventory: health.Inventory | None,
        result: EnvResult,
    ) -> dict[str, base.TopicRoute]:
        """Unchanged topics are looked up (in the round's inventory when there is one);
        new, changed and missing ones are ensured, concurrently; then retention and dead
        letters are applied where they are declared. Where the topics all are."""

        plans = {t.tag: base.TopicPlan.from_spec(t, spec.topics) for t in spec.topics}
        locations: dict[str, base.TopicRoute] = {}
        existing: list[models.TopicSpec] = []
        drifted: list[models.TopicSpec] = []
        for topic in work.check:
            plan = plans[topic.tag]
            if inventory is not None and inventory.knows(plan):
                exists = inventory.has(plan)
            else:
                exists = await provider.topic_exists(plan)
            if exists:
                locations[topic.tag] = work.known[topic.tag]
                existing.append(topic)
            else:
                drifted.append(topic)
        to_ensure = [*work.ensure, *drifted]
        ensured = await asyncio.gather(*(provider.ensure_topic(plans[t.tag]) for t in to_ensure))
        locations.update({t.tag: loc for t, loc in zip(to_ensure, ensured, strict=True)})
        to_settle = work.settle(existing, to_ensure, health=inventory is not None)
        settled = await asyncio.gather(*(provider.ensure_settings(plans[t.tag]) for t in to_settle))
        where = f"{obj.ref.namespace}/{obj.ref.name}"
        for topic, changed in zip(to_settle, settled, strict=True):
            if changed and work.previous.get(topic.tag) == topic:
                logger.info("%s: topic %s: settings were changed on %s; set back", where,
                            topic.tag, provider.endpoint)  # fmt: skip
                result.events.append(core.settings_repaired(env, topic, provider.endpoint))
        for topic in drifted:
            logger.info(
                "%s: topic %s (%s) was missing on %s; re-created",
                where,
                topic.tag,
                topic.physical_name,
                provider.endpoint,
            )
            result.events.append(core.drift_repaired(env, topic, provider.endpoint))
        return locations

    async def _write_secret(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        provider: base.Provider,
        locations: Mapping[str, base.TopicRoute],
        prev: AppliedEnv | None,
        result: EnvResult,
    ) -> None:
        """The connection Secret, and the old one gone when its name changed."""
        entries = core.binding_entries(spec, env, provider, locations)
        labels = {
            core.TAG_LABEL: spec.tag,
            core.ENV_LABEL: env.slug,
            core.TYPE_LABEL: env.type.binding_type,
        }
        name = result.secret_name
        written = await self.cluster.apply_connection_secret(obj.ref, name, entries, labels)
        if written and prev is not None:
            # A changed Secret is news (rotation, a move); a new env's first one is not:
            # the Ready Event that follows says as much, one API write less per create.
            result.events.append(core.secret_written(env, name))
        if prev is not None and prev.secret_name != name:
            await self.cluster.delete_secret(obj.ref, prev.secret_name)

    async def _delete_removed_topics(
        self,
        provider: base.Provider,
        before: Iterable[models.TopicSpec],
        after: Iterable[models.TopicSpec],
    ) -> None:
        """deletionPolicy Delete: remove topics and subscriptions no longer declared."""
        for plan, subscription in core.removed_from(list(before), list(after)):
            if subscription is None:
                await provider.delete_topic(plan)
            else:
                await provider.delete_subscription(plan, subscription)

    async def _leave_old_broker(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        prev: AppliedEnv,
        result: EnvResult,
    ) -> None:
        """After a move to a new broker: apply deletionPolicy to what is left on the old one."""
        if spec.deletion_policy is models.DeletionPolicy.DELETE:
            await self._delete_on_broker(obj.ref.namespace, prev)
        result.events.append(
            core.moved(spec.deletion_policy, env, prev, result.endpoint or "the new broker")
        )

    async def _delete_on_broker(self, namespace: str, applied: AppliedEnv) -> None:
        """Delete every topic of an applied env on its broker, with a throwaway connection."""
        secrets = base.SecretValues(
            await self.cluster.read_secret_values(namespace, applied.env.config.secret_refs())
        )
        provider = self.pool.build(applied.env.type, applied.env.config, secrets)
        async with provider:
            for topic in applied.topics:
                await provider.delete_topic(base.TopicPlan.from_spec(topic))

    async def _retire_env(
        self, obj: BrokerObject, spec: models.MessageBrokerSpec, old: AppliedEnv
    ) -> None:
        """An env was removed from the spec: apply deletionPolicy, drop its Secret."""
        if spec.deletion_policy is models.DeletionPolicy.DELETE:
            await self._delete_on_broker(obj.ref.namespace, old)
        await self.cluster.delete_secret(obj.ref, old.secret_name)
        owner = (obj.ref.namespace, obj.ref.name, old.env.slug)
        await self.pool.release(owner)
        self.health.drop(owner)
        self._post(obj.ref, core.env_removed(spec.deletion_policy, old))

    # --- deletion -----------------------------------------------------------

    async def finalize(
        self, obj: BrokerObject, *, elapsed: float, namespace_terminating: bool
    ) -> bool:
        """Apply deletionPolicy for a deleted MessageBroker; True when the finalizer may go.

        `Retain` needs no broker at all. `Delete` retries an unreachable broker
        until `finalizer_timeout` seconds have `elapsed` since deletion began,
        or at once when the namespace is terminating, then lets go with a
        Warning event naming what was left behind.
        """
        async with self.lock(obj.ref):
            obj = self._written_for(obj.ref).overlay(obj)
            policy = core.deletion_policy(obj)
            applied = core.load_applied(core.applied_record(obj))
            left = await self._delete_everything(obj, policy, applied)
            verdict = core.release(
                left,
                elapsed=elapsed,
                timeout=self.settings.finalizer_timeout,
                namespace_terminating=namespace_terminating,
            )
            if not verdict.let_go:
                raise errors.BrokerUnreachableError(verdict.retry_message)
            if verdict.warning is not None:
                self._post(obj.ref, verdict.warning)
            for slug in applied:
                owner = (obj.ref.namespace, obj.ref.name, slug)
                await self.pool.release(owner)
                self.health.drop(owner)
            logger.info(
                "%s/%s: deleted (deletionPolicy %s%s)",
                obj.ref.namespace,
                obj.ref.name,
                policy.value,
                "; left behind on unreachable brokers: " + "; ".join(left) if left else "",
            )
            self._remember_finalized(obj.ref.uid)
        self.forget(obj.ref)
        return True

    def _remember_finalized(self, uid: str) -> None:
        self._finalized[uid] = None
        while len(self._finalized) > FINALIZED_KEPT:
            self._finalized.popitem(last=False)

    async def removed(self, obj: BrokerObject) -> bool:
        """The object is gone while it still held the finalizer, and was never finalized
        here: apply its deletionPolicy now, giving up at once on an unreachable broker
        (there is nothing left to retry on). True when it had to.

        The API server can accept a finalizer and a concurrent DELETE both, and remove
        the object without ever marking it for deletion (an API server race):
        a create handler that provisioned after its finalizer patch succeeded would
        otherwise leave the broker's topics behind (docs/operations.md, "A burst of
        creates").
        """
        if obj.ref.uid in self._finalized:
            return False
        logger.info(
            "%s/%s was removed without being marked for deletion first; applying its"
            " deletionPolicy now",
            obj.ref.namespace,
            obj.ref.name,
        )
        await self.finalize(obj, elapsed=0.0, namespace_terminating=True)
        return True

    async def _delete_everything(
        self,
        obj: BrokerObject,
        policy: models.DeletionPolicy,
        applied: Mapping[str, AppliedEnv],
    ) -> list[str]:
        """With Delete, every reconciled env's topics; what could not be deleted."""
        if policy is not models.DeletionPolicy.DELETE:
            return []
        left: list[str] = []
        for slug, entry in applied.items():
            if not self.settings.reconciles_env(slug):
                continue
            try:
                await self._delete_on_broker(obj.ref.namespace, entry)
            except errors.DuctapeError as exc:
                names = ", ".join(t.physical_name for t in entry.topics)
                left.append(f"{slug} ({entry.env.type.value}): {names}: {exc.message}")
        return left

    # --- writes -------------------------------------------------------------

    def _post(self, ref: BrokerRef, event: core.Event) -> None:
        self.cluster.emit_event(ref, type=event.type, reason=event.reason, message=event.message)

    async def _write_status(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        status: models.MessageBrokerStatus,
        *,
        applied: str | None = None,
        handled: str | None = None,
    ) -> models.MessageBrokerStatus:
        """Patch the status only when it changed; log and post a change of Ready. The
        applied record and the handled spec are kept as they are unless given. The
        status as it is now."""
        status = status.model_copy(
            update={
                "applied": current.applied if applied is None else applied,
                "handled_spec": current.handled_spec if handled is None else handled,
            }
        )
        reason = core.ready_reason(status)
        if reason is not None:
            self.ready_reasons[(obj.ref.namespace, obj.ref.name)] = reason
        new = core.status_to_json(status)
        if new == core.status_to_json(current) and obj.status:
            await self._drop_legacy_annotations(obj, status)
            return status
        await self.cluster.patch_status(obj.ref, new)
        await self._drop_legacy_annotations(obj, status)
        self._written_for(obj.ref).status = new
        change = core.transition(obj, current, status)
        if change is not None:
            logger.log(change.level, "%s", change.line)
            if change.event is not None:
                self._post(obj.ref, change.event)
        return status

    async def _drop_legacy_annotations(
        self, obj: BrokerObject, status: models.MessageBrokerStatus
    ) -> None:
        """Remove the annotations where earlier versions kept the applied record and the
        handled spec, once the written status carries both: one patch per resource they
        handled, then never again."""
        present = [key for key in core.LEGACY_ANNOTATIONS if key in obj.annotations]
        if not present or not (status.applied and status.handled_spec):
            return
        written = self._written_for(obj.ref)
        legacy = [key for key in present if key not in written.dropped_annotations]
        if legacy:
            await self.cluster.patch_metadata(obj.ref, annotations=dict.fromkeys(legacy))
            written.dropped_annotations.update(legacy)

    def _label(self, obj: BrokerObject, tag: str) -> asyncio.Future[None] | None:
        """Start writing the tag label when it is missing; None when it is there."""
        if obj.labels.get(TAG_LABEL) == tag:
            return None

        async def write() -> None:
            await self.cluster.patch_metadata(obj.ref, labels={TAG_LABEL: tag})
            self._written_for(obj.ref).tag_label = tag

        return asyncio.ensure_future(write())

    async def _write_label(self, obj: BrokerObject, tag: str) -> None:
        """The tag label, when it is missing."""
        labelling = self._label(obj, tag)
        if labelling is not None:
            await labelling
