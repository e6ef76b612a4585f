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

Status is computed from the outcome and written only when it differs from
what is there. "What is there" is the body the watch delivered, overlaid with
what this process itself last wrote (`Written`): a trigger's body may predate
our own last write, and reading the object again would cost a GET per trigger.

Health rounds (`trigger="health"`) take their probe and drift inventory from
`health.EndpointHealth`, once per broker endpoint per round, and touch a
broker only to repair what is missing. This module does not import kopf;
handlers map its outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import pydantic

from ductape_operator import conditions, errors, health, kube, metrics, models, providers
from ductape_operator.providers import base
from ductape_operator.settings import Settings

logger = logging.getLogger(__name__)

#: A first reconcile that takes longer than this writes a `Provisioning` status
#: first, so that users see progress; a quick one writes only its final status.
PROVISIONING_NOTICE_SECONDS = 2.0
#: Reconciles in flight at once (controller-runtime's MaxConcurrentReconciles): a burst
#: of a thousand creates waits here, first come first served, instead of holding a
#: thousand half-done reconciles (and their memory) at once. The API server is the
#: bottleneck of such a burst either way.
MAX_CONCURRENT_RECONCILES = 64

APPLIED_ANNOTATION = "ductape.app/applied"
PAUSED_ANNOTATION = "ductape.app/paused"
TAG_LABEL = "ductape.app/tag"
ENV_LABEL = "ductape.app/env"
TYPE_LABEL = "ductape.app/type"

#: Which failure wins the Ready condition's reason when several envs fail.
_REASON_PRIORITY = (
    "InvalidConfig",
    "TagConflict",
    "SecretNotFound",
    "ProvisioningFailed",
    "BrokerUnreachable",
    "Provisioning",
)


@dataclasses.dataclass(frozen=True)
class BrokerObject:
    """The parts of a MessageBroker body the reconciler reads."""

    ref: kube.BrokerRef
    generation: int
    creation_timestamp: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BrokerObject:
        meta = body.get("metadata", {})
        return cls(
            ref=kube.BrokerRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"]),
            generation=int(meta.get("generation") or 0),
            creation_timestamp=str(meta.get("creationTimestamp") or ""),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )

    @property
    def paused(self) -> bool:
        return self.annotations.get(PAUSED_ANNOTATION, "").lower() == "true"

    def current_status(self) -> models.MessageBrokerStatus:
        try:
            return models.MessageBrokerStatus.model_validate(self.status)
        except pydantic.ValidationError:
            return models.MessageBrokerStatus()


@dataclasses.dataclass(frozen=True)
class AppliedEnv:
    """What was last provisioned for one env: the env, its topics and where they are."""

    env: models.EnvSpec
    topics: tuple[models.TopicSpec, ...]
    secret_name: str
    locations: Mapping[str, base.TopicLocation]

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env.model_dump(by_alias=True, mode="json", exclude_none=True),
            "topics": [
                t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in self.topics
            ],
            "secretName": self.secret_name,
            "locations": {tag: loc.as_json() for tag, loc in sorted(self.locations.items())},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AppliedEnv:
        return cls(
            env=models.EnvSpec.model_validate(raw["env"]),
            topics=tuple(models.TopicSpec.model_validate(t) for t in raw.get("topics", [])),
            secret_name=str(raw["secretName"]),
            locations={
                tag: base.TopicLocation(
                    name=loc.get("name"), subscriptions=dict(loc.get("subscriptions") or {})
                )
                for tag, loc in (raw.get("locations") or {}).items()
            },
        )


def trimmed_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a MessageBroker body `BrokerObject.from_body` reads, and no more."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {
            key: meta[key]
            for key in ("namespace", "name", "uid", "generation", "creationTimestamp", "labels")
            if key in meta
        }
        | {
            "annotations": {
                key: annotations[key]
                for key in (APPLIED_ANNOTATION, PAUSED_ANNOTATION)
                if key in annotations
            },
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def load_applied(annotations: Mapping[str, str]) -> dict[str, AppliedEnv]:
    """The applied record; an unreadable one counts as empty (nothing known provisioned)."""
    raw = annotations.get(APPLIED_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {slug: AppliedEnv.from_json(entry) for slug, entry in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError, pydantic.ValidationError):
        logger.warning("ignoring an unreadable %s annotation", APPLIED_ANNOTATION)
        return {}


def dump_applied(applied: Mapping[str, AppliedEnv]) -> str:
    return json.dumps(
        {slug: entry.to_json() for slug, entry in sorted(applied.items())},
        sort_keys=True,
        separators=(",", ":"),
    )


def referenced_secrets(raw_spec: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a raw (possibly invalid) spec references.

    Tolerant on purpose: it feeds the index that re-reconciles a resource when
    one of its Secrets appears, which matters most when the spec is imperfect.
    """
    names: set[str] = set()
    for env in raw_spec.get("envs") or []:
        config = env.get("config") if isinstance(env, Mapping) else None
        if not isinstance(config, Mapping):
            continue
        sasl = config.get("sasl")
        candidates = [
            config.get(f) for f in ("password", "credentials", "accessKeyId", "secretAccessKey")
        ]
        if isinstance(sasl, Mapping):
            candidates.append(sasl.get("password"))
        for ref in candidates:
            if isinstance(ref, Mapping) and isinstance(ref.get("secretKeyRef"), Mapping):
                name = ref["secretKeyRef"].get("name")
                if isinstance(name, str):
                    names.add(name)
    return names


def shows_paused(obj: BrokerObject) -> bool:
    """Whether the status already says Paused."""
    ready = conditions.find(obj.current_status().conditions, conditions.READY)
    return ready is not None and ready.reason == "Paused"


def broker_identity(env: models.EnvSpec) -> str:
    """Which broker an env points at, credentials aside.

    Two envs with the same identity are the same broker: changing only a
    password or a client id is not a move, and leaves nothing behind.
    """
    cfg = env.config
    parts = [
        env.type.value,
        ",".join(sorted(cfg.brokers or [])),
        cfg.host or "",
        str(cfg.port or ""),
        str(cfg.db or 0),
        cfg.vhost or "",
        cfg.project_id or "",
        cfg.emulator_host or "",
        cfg.region or "",
        cfg.endpoint or "",
    ]
    return "|".join(parts)


def secret_name_for(broker_name: str, env: models.EnvSpec) -> str:
    return env.secret_name or f"{broker_name}-{env.slug}"


def binding_entries(
    spec: models.MessageBrokerSpec,
    env: models.EnvSpec,
    provider: base.Provider,
    locations: Mapping[str, base.TopicLocation],
) -> dict[str, str]:
    """The connection Secret's entries (README.md, "The connection Secret")."""
    entries = dict(provider.binding())
    entries.update(
        {
            "type": env.type.binding_type,
            "provider": "ductape",
            "broker-tag": spec.tag,
            "env": env.slug,
            "topics.json": json.dumps(
                {
                    tag: loc.as_json() | _dead_letter_entry(spec.topic(tag))
                    for tag, loc in sorted(locations.items())
                },
                sort_keys=True,
            ),
        }
    )
    return entries


def _dead_letter_entry(topic: models.TopicSpec | None) -> dict[str, Any]:
    """A topic's `deadLetter` in topics.json: what the messaging client dead-letters by."""
    if topic is None or topic.dead_letter is None:
        return {}
    return {"deadLetter": topic.dead_letter.model_dump(by_alias=True, mode="json")}


def _had_settings(topic: models.TopicSpec | None) -> bool:
    return topic is not None and (
        topic.retention_seconds is not None or topic.dead_letter is not None
    )


@dataclasses.dataclass
class EnvResult:
    """The outcome of reconciling one env."""

    slug: str
    type: models.MessageBrokerTypes
    phase: models.Phase
    endpoint: str | None
    secret_name: str
    topics: list[models.TopicStatus]
    message: str
    reason: str | None = None  # None when the env is fine
    healthy: bool = False
    provisioned: bool = False
    retriable: bool = True
    probe_seconds: float | None = None
    applied: AppliedEnv | None = None
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a reconcile did: the status it wrote and whether to retry."""

    status: models.MessageBrokerStatus
    ready: bool
    retry: bool
    message: str


@dataclasses.dataclass
class Written:
    """What this process last wrote on one MessageBroker (status, label, applied record)."""

    uid: str
    status: Mapping[str, Any] | None = None
    tag_label: str | None = None
    applied: str | None = None
    #: The newest generation reconciled: a trigger holding an older body (a timer
    #: that waited for the lock while an update went through) must not undo it.
    generation: int = 0

    def overlay(self, obj: BrokerObject) -> BrokerObject:
        """`obj` (of this uid) as it is after our own writes, whether or not the watch
        saw them yet."""
        labels = dict(obj.labels)
        annotations = dict(obj.annotations)
        if self.tag_label is not None:
            labels[TAG_LABEL] = self.tag_label
        if self.applied is not None:
            annotations[APPLIED_ANNOTATION] = self.applied
        status = obj.status if self.status is None else self.status
        return dataclasses.replace(obj, labels=labels, annotations=annotations, status=status)


Trigger = str
#: Triggers: a change (create, update, resume, a Secret) or the health timer.
CHANGE: Trigger = "change"
HEALTH: Trigger = "health"


class Reconciler:
    """Reconciles MessageBrokers; one per operator process, shared by all handlers."""

    def __init__(self, settings: Settings, pool: providers.ProviderPool | None = None) -> None:
        self.settings = settings
        self.pool = pool or providers.ProviderPool()
        self.health = health.EndpointHealth(
            round_seconds=settings.health_interval, probe_timeout=settings.probe_timeout
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._in_flight = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
        self._written: dict[tuple[str, str], Written] = {}
        #: The Ready condition's reason per resource, for the periodic summary.
        self.ready_reasons: dict[tuple[str, str], str] = {}

    def lock(self, ref: kube.BrokerRef) -> asyncio.Lock:
        return self._locks.setdefault((ref.namespace, ref.name), asyncio.Lock())

    async def aclose(self) -> None:
        await self.pool.aclose()

    def forget(self, ref: kube.BrokerRef) -> None:
        """The resource is gone: drop everything kept about it."""
        key = (ref.namespace, ref.name)
        self._written.pop(key, None)
        self._locks.pop(key, None)
        self.ready_reasons.pop(key, None)
        metrics.forget(ref.namespace, ref.name)

    def _written_for(self, ref: kube.BrokerRef) -> Written:
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
        patch: MutableMapping[str, Any] | None = None,
    ) -> Outcome:
        """Bring one MessageBroker to its desired state; never raises for user errors.

        With `patch` (kopf's, applied when the handler returns, in the same request
        as kopf's own bookkeeping), metadata changes go there instead of a patch of
        their own: one API write less per created resource.
        """
        async with self._in_flight, self.lock(obj.ref):
            written = self._written_for(obj.ref)
            if obj.generation < written.generation:
                current = obj.current_status()
                return Outcome(status=current, ready=False, retry=False, message="stale")
            written.generation = obj.generation
            obj = written.overlay(obj)
            started = time.monotonic()
            try:
                outcome = await self._reconcile(
                    obj, tag_owner=tag_owner, trigger=trigger, patch=patch
                )
            except Exception:
                metrics.observe_reconcile(time.monotonic() - started, "error")
                raise
            metrics.observe_reconcile(
                time.monotonic() - started, "ready" if outcome.ready else "not_ready"
            )
            metrics.set_ready(obj.ref.namespace, obj.ref.name, outcome.ready)
            return outcome

    async def _reconcile(
        self,
        obj: BrokerObject,
        *,
        tag_owner: str | None,
        trigger: Trigger,
        patch: MutableMapping[str, Any] | None,
    ) -> Outcome:
        current = obj.current_status()
        try:
            spec = models.parse_spec(obj.spec)
        except pydantic.ValidationError as exc:
            message = models.describe_validation_error(exc)
            logger.warning("%s/%s is invalid: %s", obj.ref.namespace, obj.ref.name, message)
            return await self._finish_without_envs(
                obj, current, reason="InvalidConfig", message=message, retry=False
            )

        if (tag_owner is not None and tag_owner != obj.ref.name) or obj.paused:
            # Labelled even when nothing else is done: `-l ductape.app/tag=` finds it.
            unchanged = obj.annotations.get(APPLIED_ANNOTATION, dump_applied({}))
            await self._write_metadata(obj, spec.tag, unchanged, patch)

        if tag_owner is not None and tag_owner != obj.ref.name:
            message = (
                f"tag {spec.tag!r} already belongs to MessageBroker {tag_owner!r}"
                " (the older resource keeps it); nothing is provisioned"
            )
            return await self._finish_without_envs(
                obj, current, reason="TagConflict", message=message, retry=False, spec=spec
            )

        if obj.paused:
            message = (
                f"annotation {PAUSED_ANNOTATION}=true: no change is made to brokers or Secrets"
            )
            return await self._finish_without_envs(
                obj, current, reason="Paused", message=message, retry=False, spec=spec
            )

        applied = load_applied(obj.annotations)
        reconciled = [env for env in spec.envs if self.settings.reconciles_env(env.slug)]
        # A missing tag label is written while the brokers are provisioned, not after:
        # it must be there before the status says Ready, and it needs nothing from them.
        labelling = self._label(obj, spec.tag) if patch is not None else None
        tasks = [
            asyncio.ensure_future(
                self._reconcile_env(obj, spec, env, applied.get(env.slug), trigger)
            )
            for env in reconciled
        ]
        try:
            if not current.conditions and tasks:
                _, pending = await asyncio.wait(tasks, timeout=PROVISIONING_NOTICE_SECONDS)
                if pending:
                    provisioning = self._provisioning_status(obj, spec, reconciled)
                    await self._write_status(obj, current, provisioning)
                    current = provisioning
            results = list(await asyncio.gather(*tasks))
        finally:
            if labelling is not None:
                await labelling
                obj = dataclasses.replace(obj, labels={**obj.labels, TAG_LABEL: spec.tag})

        new_applied = dict(applied)
        for result in results:
            if result.applied is not None:
                new_applied[result.slug] = result.applied
        desired_slugs = {env.slug for env in spec.envs}
        retire_failures: list[str] = []
        for slug, old in applied.items():
            if slug in desired_slugs or not self.settings.reconciles_env(slug):
                continue
            try:
                await self._retire_env(obj, spec, old)
                del new_applied[slug]
            except errors.DuctapeError as exc:
                retire_failures.append(f"removed env {slug}: {exc.message}")

        await self._write_metadata(obj, spec.tag, dump_applied(new_applied), patch)

        status = self._status_from_results(obj, current, spec, results, retire_failures)
        await self._write_status(obj, current, status)
        for result in results:
            for type_, reason, message in result.events:
                kube.emit_event(obj.ref, type=type_, reason=reason, message=message)
        ready = conditions.is_true(status.conditions, conditions.READY)
        retry = not ready and all(r.retriable for r in results if r.reason)
        ready_cond = conditions.find(status.conditions, conditions.READY)
        return Outcome(
            status=status,
            ready=ready,
            retry=retry or bool(retire_failures),
            message=ready_cond.message if ready_cond else "",
        )

    async def _reconcile_env(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        prev: AppliedEnv | None,
        trigger: Trigger = CHANGE,
    ) -> EnvResult:
        ref = obj.ref
        secret_name = secret_name_for(ref.name, env)
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
            secrets = base.SecretValues(
                await kube.read_secret_values(ref.namespace, env.config.secret_refs())
            )
            owner = (ref.namespace, ref.name, env.slug)
            provider = await self.pool.acquire(owner, env.type, env.config, secrets)
            endpoint_key = self.pool.key_of(owner)
            assert endpoint_key is not None  # acquired just now, under this resource's lock
            result.endpoint = provider.endpoint
            probe = await self.health.probe(endpoint_key, provider)
            result.probe_seconds = probe.seconds
            if probe.error is not None:
                self._record_failure(result, probe.error, prev)
                return self._observed(ref, env, result)
            result.healthy = True

            same_broker = prev is not None and broker_identity(prev.env) == broker_identity(env)
            known = {t.tag: t for t in prev.topics} if prev is not None and same_broker else {}
            known_locations = dict(prev.locations) if prev is not None and same_broker else {}
            locations: dict[str, base.TopicLocation] = {}
            inventory = (
                await self.health.inventory(endpoint_key, provider) if trigger == HEALTH else None
            )
            to_ensure: list[tuple[models.TopicSpec, bool]] = []
            #: Topics whose retention and dead-letter settings are (re)applied in place:
            #: changed ones, and on health rounds every one that declares any (drift).
            to_settle: list[models.TopicSpec] = []
            for topic in spec.topics:
                plan = base.TopicPlan.from_spec(topic, spec.topics)
                unchanged = known.get(topic.tag) == topic and topic.tag in known_locations
                if unchanged:
                    if inventory is not None and inventory.knows(plan):
                        exists = inventory.has(plan)
                    else:
                        exists = await provider.topic_exists(plan)
                    if exists:
                        locations[topic.tag] = known_locations[topic.tag]
                        if trigger == HEALTH and plan.has_settings:
                            to_settle.append(topic)
                        continue
                to_ensure.append((topic, unchanged))
            ensured = await asyncio.gather(
                *(
                    provider.ensure_topic(base.TopicPlan.from_spec(t, spec.topics))
                    for t, _ in to_ensure
                )
            )
            to_settle += [
                t
                for t, _ in to_ensure
                if t.retention_seconds is not None
                or t.dead_letter is not None
                or _had_settings(known.get(t.tag))
            ]
            settled = await asyncio.gather(
                *(
                    provider.ensure_settings(base.TopicPlan.from_spec(t, spec.topics))
                    for t in to_settle
                )
            )
            for topic, changed in zip(to_settle, settled, strict=True):
                if changed and known.get(topic.tag) == topic:
                    result.events.append(
                        (
                            "Normal",
                            "DriftRepaired",
                            f"{env.slug}: topic {topic.tag} ({topic.physical_name}) had other"
                            f" retention or dead-letter settings on {provider.endpoint};"
                            " set back",
                        )
                    )
            for (topic, drifted), location in zip(to_ensure, ensured, strict=True):
                locations[topic.tag] = location
                if drifted:
                    logger.info(
                        "%s/%s: topic %s (%s) was missing on %s; re-created",
                        ref.namespace,
                        ref.name,
                        topic.tag,
                        topic.physical_name,
                        provider.endpoint,
                    )
                    result.events.append(
                        (
                            "Normal",
                            "DriftRepaired",
                            f"{env.slug}: topic {topic.tag} ({topic.physical_name}) was missing"
                            f" on {provider.endpoint} and was re-created",
                        )
                    )
            if (
                spec.deletion_policy is models.DeletionPolicy.DELETE
                and prev is not None
                and same_broker
            ):
                # After a move, the old broker is handled as a whole by _leave_old_broker.
                await self._delete_removed_topics(provider, prev.topics, spec.topics)

            entries = binding_entries(spec, env, provider, locations)
            labels = {TAG_LABEL: spec.tag, ENV_LABEL: env.slug, TYPE_LABEL: env.type.binding_type}
            written = await kube.apply_connection_secret(ref, secret_name, entries, labels)
            if written:
                result.events.append(
                    (
                        "Normal",
                        "SecretWritten",
                        f"{env.slug}: connection Secret {secret_name} written",
                    )
                )
            if prev is not None and prev.secret_name != secret_name:
                await kube.delete_secret(ref, prev.secret_name)

            if prev is not None and not same_broker:
                await self._leave_old_broker(obj, spec, env, prev, result)

            result.applied = AppliedEnv(
                env=env, topics=tuple(spec.topics), secret_name=secret_name, locations=locations
            )
            result.topics = [
                models.TopicStatus(
                    tag=t.tag,
                    name=locations[t.tag].name or t.physical_name,
                    ready=True,
                    retention=models.retention_in_force(t),
                )
                for t in spec.topics
            ]
            result.provisioned = True
            result.phase = models.Phase.READY
            result.message = f"{len(spec.topics)} topic(s) provisioned on {provider.endpoint}"
            self.health.want(
                endpoint_key, owner, (base.TopicPlan.from_spec(t, spec.topics) for t in spec.topics)
            )
        except errors.DuctapeError as exc:
            self._record_failure(result, exc, prev)
        except Exception as exc:  # an SDK error nobody mapped: report it, keep running
            logger.exception(
                "unexpected error reconciling %s/%s env %s", ref.namespace, ref.name, env.slug
            )
            self._record_failure(
                result,
                errors.ProvisioningError(f"unexpected {type(exc).__name__}: {exc}", retriable=True),
                prev,
            )
        return self._observed(ref, env, result)

    @staticmethod
    def _observed(ref: kube.BrokerRef, env: models.EnvSpec, result: EnvResult) -> EnvResult:
        metrics.observe_env(
            ref.namespace,
            ref.name,
            env.slug,
            env.type.value,
            healthy=result.healthy,
            probe_seconds=result.probe_seconds,
        )
        return result

    @staticmethod
    def _record_failure(
        result: EnvResult, exc: errors.DuctapeError, prev: AppliedEnv | None
    ) -> None:
        result.reason = exc.reason
        result.retriable = exc.retriable
        result.message = exc.message
        if isinstance(exc, errors.BrokerUnreachableError | errors.BrokerAuthError):
            # The round's probe may predate the outage: the broker failing us now counts.
            result.healthy = False
        if isinstance(exc, errors.BrokerError) and result.healthy is False:
            result.phase = models.Phase.DEGRADED if prev is not None else models.Phase.PENDING
        elif isinstance(exc, errors.SecretNotFoundError):
            result.phase = models.Phase.PENDING
        elif exc.retriable:
            result.phase = models.Phase.DEGRADED if prev is not None else models.Phase.PENDING
        else:
            result.phase = models.Phase.FAILED

    async def _delete_removed_topics(
        self,
        provider: base.Provider,
        before: Sequence[models.TopicSpec],
        after: Sequence[models.TopicSpec],
    ) -> None:
        """deletionPolicy Delete: remove topics and subscriptions no longer declared."""
        now = {t.tag: t for t in after}
        for old in before:
            new = now.get(old.tag)
            old_plan = base.TopicPlan.from_spec(old)
            if new is None or new.physical_name != old.physical_name:
                await provider.delete_topic(old_plan)
                continue
            for sub in old.subscriptions:
                if sub not in new.subscriptions:
                    await provider.delete_subscription(old_plan, sub)

    async def _leave_old_broker(
        self,
        obj: BrokerObject,
        spec: models.MessageBrokerSpec,
        env: models.EnvSpec,
        prev: AppliedEnv,
        result: EnvResult,
    ) -> None:
        """After a move to a new broker: apply deletionPolicy to what is left on the old one."""
        old_topics = ", ".join(t.physical_name for t in prev.topics) or "no topics"
        if spec.deletion_policy is models.DeletionPolicy.RETAIN:
            result.events.append(
                (
                    "Normal",
                    "Retained",
                    f"{env.slug}: moved to {result.endpoint}; kept {old_topics} on the previous"
                    f" {prev.env.type.value} broker (deletionPolicy Retain)",
                )
            )
            return
        await self._delete_on_broker(obj.ref.namespace, prev)
        result.events.append(
            (
                "Normal",
                "Deleted",
                f"{env.slug}: moved to {result.endpoint}; deleted {old_topics} on the previous"
                f" {prev.env.type.value} broker (deletionPolicy Delete)",
            )
        )

    async def _delete_on_broker(self, namespace: str, applied: AppliedEnv) -> None:
        """Delete every topic of an applied env on its broker, with a throwaway connection."""
        secrets = base.SecretValues(
            await kube.read_secret_values(namespace, applied.env.config.secret_refs())
        )
        provider = providers.build_provider(applied.env.type, applied.env.config, secrets)
        async with provider:
            for topic in applied.topics:
                await provider.delete_topic(base.TopicPlan.from_spec(topic))

    async def _retire_env(
        self, obj: BrokerObject, spec: models.MessageBrokerSpec, old: AppliedEnv
    ) -> None:
        """An env was removed from the spec: apply deletionPolicy, drop its Secret."""
        if spec.deletion_policy is models.DeletionPolicy.DELETE:
            await self._delete_on_broker(obj.ref.namespace, old)
        await kube.delete_secret(obj.ref, old.secret_name)
        owner = (obj.ref.namespace, obj.ref.name, old.env.slug)
        await self.pool.release(owner)
        self.health.drop(owner)
        kube.emit_event(
            obj.ref,
            type="Normal",
            reason="EnvRemoved",
            message=(
                f"env {old.env.slug} removed; its topics were "
                + ("deleted" if spec.deletion_policy is models.DeletionPolicy.DELETE else "kept")
                + f" on the {old.env.type.value} broker and its Secret {old.secret_name} deleted"
            ),
        )

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
            try:
                spec = models.parse_spec(obj.spec)
                policy = spec.deletion_policy
            except pydantic.ValidationError:
                policy = models.DeletionPolicy.RETAIN
            applied = load_applied(obj.annotations)
            slugs = [slug for slug in applied if self.settings.reconciles_env(slug)]
            left: list[str] = []
            if policy is models.DeletionPolicy.DELETE:
                for slug in slugs:
                    entry = applied[slug]
                    try:
                        await self._delete_on_broker(obj.ref.namespace, entry)
                    except errors.DuctapeError as exc:
                        names = ", ".join(t.physical_name for t in entry.topics)
                        left.append(f"{slug} ({entry.env.type.value}): {names}: {exc.message}")
            gave_up = bool(left) and (
                namespace_terminating or elapsed >= self.settings.finalizer_timeout
            )
            if left and not gave_up:
                raise errors.BrokerUnreachableError("deletion pending: " + "; ".join(left))
            if gave_up:
                kube.emit_event(
                    obj.ref,
                    type="Warning",
                    reason="DeletionIncomplete",
                    message="gave up deleting on unreachable brokers; left behind: "
                    + "; ".join(left),
                )
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
        self.forget(obj.ref)
        return True

    # --- status -------------------------------------------------------------

    def _provisioning_status(
        self, obj: BrokerObject, spec: models.MessageBrokerSpec, envs: Sequence[models.EnvSpec]
    ) -> models.MessageBrokerStatus:
        conds = conditions.set_condition(
            [],
            type=conditions.READY,
            status=models.ConditionStatus.FALSE,
            reason="Provisioning",
            message="provisioning started",
            generation=obj.generation,
        )
        return models.MessageBrokerStatus(
            observed_generation=obj.generation,
            summary=_summary(envs),
            conditions=conds,
            envs=[
                models.EnvStatus(
                    slug=e.slug,
                    type=e.type,
                    phase=models.Phase.PROVISIONING,
                    endpoint=None,
                    secret_name=secret_name_for(obj.ref.name, e),
                    last_transition_time=conditions.now(),
                )
                for e in envs
            ],
        )

    def _status_from_results(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        spec: models.MessageBrokerSpec,
        results: Sequence[EnvResult],
        retire_failures: Sequence[str],
    ) -> models.MessageBrokerStatus:
        gen = obj.generation
        failing = [r for r in results if r.reason]
        unhealthy = [r for r in results if not r.healthy]
        unprovisioned = [r for r in results if not r.provisioned]

        def verdict(
            conds: list[models.Condition],
            type_: str,
            failed: Sequence[EnvResult],
            fallback_reason: str,
            ok: tuple[str, str],
            extra: Sequence[str] = (),
        ) -> list[models.Condition]:
            """One condition: False with the most telling failure, else True."""
            if failed or extra:
                reasons = {r.reason for r in failed if r.reason}
                reason = next((p for p in _REASON_PRIORITY if p in reasons), fallback_reason)
                message = "; ".join([*(f"{r.slug}: {r.message}" for r in failed), *extra])
                status = models.ConditionStatus.FALSE
            else:
                (reason, message), status = ok, models.ConditionStatus.TRUE
            return conditions.set_condition(
                conds, type=type_, status=status, reason=reason, message=message, generation=gen
            )

        conds = verdict(
            list(current.conditions),
            conditions.PROVISIONED,
            unprovisioned,
            "ProvisioningFailed",
            ("AllEnvsProvisioned", f"topics, subscriptions and Secrets exist for generation {gen}"),
            retire_failures,
        )
        conds = verdict(
            conds,
            conditions.HEALTHY,
            unhealthy,
            "BrokerUnreachable",
            ("AllBrokersHealthy", "every broker answered its last probe"),
        )
        conds = verdict(
            conds,
            conditions.READY,
            failing,
            "ProvisioningFailed",
            ("AllEnvsReady", f"{len(results)} env(s) ready: {_summary_of(results)}"),
            retire_failures,
        )

        previous_envs = {e.slug: e for e in current.envs}
        env_statuses = []
        for r in results:
            before = previous_envs.get(r.slug)
            transition = (
                before.last_transition_time
                if before is not None and before.phase == r.phase and before.last_transition_time
                else conditions.now()
            )
            env_statuses.append(
                models.EnvStatus(
                    slug=r.slug,
                    type=r.type,
                    phase=r.phase,
                    endpoint=r.endpoint or (before.endpoint if before else None),
                    secret_name=r.secret_name,
                    topics=r.topics,
                    last_transition_time=transition,
                    message=r.message,
                )
            )
        binding = (
            models.Binding(name=results[0].secret_name)
            if len(results) == 1 and results[0].provisioned
            else (current.binding if len(results) == 1 else None)
        )
        return models.MessageBrokerStatus(
            observed_generation=gen,
            summary=_summary_of(results),
            conditions=conditions.order(conds),
            envs=env_statuses,
            binding=binding,
        )

    async def _finish_without_envs(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        *,
        reason: str,
        message: str,
        retry: bool,
        spec: models.MessageBrokerSpec | None = None,
    ) -> Outcome:
        """Status for a resource that is not reconciled: invalid, conflicting or paused."""
        conds = conditions.set_condition(
            list(current.conditions),
            type=conditions.READY,
            status=models.ConditionStatus.FALSE,
            reason=reason,
            message=message,
            generation=obj.generation,
        )
        if reason != "Paused":
            conds = conditions.set_condition(
                conds,
                type=conditions.PROVISIONED,
                status=models.ConditionStatus.FALSE,
                reason=reason,
                message=message,
                generation=obj.generation,
            )
        reconciled = [e for e in spec.envs if self.settings.reconciles_env(e.slug)] if spec else []
        status = models.MessageBrokerStatus(
            observed_generation=obj.generation,
            summary=_summary(reconciled) if spec else current.summary,
            conditions=conditions.order(conds),
            envs=list(current.envs),
            binding=current.binding,
        )
        await self._write_status(obj, current, status)
        return Outcome(status=status, ready=False, retry=retry, message=message)

    async def _write_status(
        self,
        obj: BrokerObject,
        current: models.MessageBrokerStatus,
        status: models.MessageBrokerStatus,
    ) -> None:
        """Patch the status only when it changed; post an Event when Ready changes."""
        new = status_to_json(status)
        before = conditions.find(current.conditions, conditions.READY)
        after = conditions.find(status.conditions, conditions.READY)
        if after is not None:
            self.ready_reasons[(obj.ref.namespace, obj.ref.name)] = (
                after.reason if after.status is not models.ConditionStatus.TRUE else "Ready"
            )
        if new == status_to_json(current) and obj.status:
            return
        await kube.patch_status(obj.ref, new)
        self._written_for(obj.ref).status = new
        if after is None or (
            before is not None and (before.status, before.reason) == (after.status, after.reason)
        ):
            return
        where = f"{obj.ref.namespace}/{obj.ref.name}"
        if after.status is models.ConditionStatus.TRUE:
            verb = "recovered" if before is not None and before.reason != "Provisioning" else ""
            logger.info(
                "%s: Ready%s (%s): %s",
                where,
                f", {verb}" if verb else "",
                after.reason,
                after.message,
            )
            kube.emit_event(obj.ref, type="Normal", reason=after.reason, message=after.message)
        elif after.reason == "Provisioning":
            logger.info("%s: provisioning %s", where, status.summary or "")
        else:
            logger.warning("%s: not Ready (%s): %s", where, after.reason, after.message)
            kube.emit_event(obj.ref, type="Warning", reason=after.reason, message=after.message)

    def _label(self, obj: BrokerObject, tag: str) -> asyncio.Future[None] | None:
        """Start writing the tag label when it is missing; None when it is there."""
        if obj.labels.get(TAG_LABEL) == tag:
            return None

        async def write() -> None:
            await kube.patch_metadata(obj.ref, labels={TAG_LABEL: tag})
            self._written_for(obj.ref).tag_label = tag

        return asyncio.ensure_future(write())

    async def _write_metadata(
        self,
        obj: BrokerObject,
        tag: str,
        applied: str,
        patch: MutableMapping[str, Any] | None = None,
    ) -> None:
        """The tag label and the applied record, in one patch, only when either changed."""
        labels = {TAG_LABEL: tag} if obj.labels.get(TAG_LABEL) != tag else None
        empty = dump_applied({})
        changed = applied != obj.annotations.get(APPLIED_ANNOTATION, empty)
        annotations = {APPLIED_ANNOTATION: applied} if changed else None
        if labels is None and annotations is None:
            return
        if patch is not None and labels is None:
            # Only the applied record changes: it rides in kopf's own patch. A missing
            # label is written at once instead, before the status can say Ready: tools
            # that wait for Ready and then select by `ductape.app/tag` must find it.
            metadata = patch.setdefault("metadata", {})
            metadata.setdefault("annotations", {}).update(annotations or {})
        else:
            await kube.patch_metadata(obj.ref, labels=labels, annotations=annotations)
        written = self._written_for(obj.ref)
        written.tag_label = tag
        written.applied = applied


def status_to_json(status: models.MessageBrokerStatus) -> dict[str, Any]:
    """The status as written: every top-level key present, so a merge patch clears stale ones."""
    data = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    for key in ("observedGeneration", "summary", "conditions", "envs", "binding"):
        data.setdefault(key, None)
    return data


def _summary(envs: Sequence[models.EnvSpec]) -> str:
    return " ".join(f"{e.slug}:{e.type.value}" for e in envs)


def _summary_of(results: Sequence[EnvResult]) -> str:
    return " ".join(f"{r.slug}:{r.type.value}" for r in results)
