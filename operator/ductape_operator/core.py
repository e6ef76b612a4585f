"""The reconcile core: what to do and what the status becomes, as plain data, no I/O.

`reconcile.Reconciler` performs what this module decides. Here, from the spec,
what was last provisioned (the `ductape.app/applied` record) and what the brokers
answered, come: whether a resource is reconciled at all (invalid, tag conflict,
paused), which topics to check, ensure or delete, the status (conditions, phases,
reasons), which transitions to log and post as Events, and what a finalizer may
do. Every function is pure and unit-tested table by table (tests/unit/test_core.py).
The contract these names implement: docs/reference.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from ductape_operator import conditions, errors, models
from ductape_operator.models import BrokerRef
from ductape_operator.providers import base
from ductape_operator.reasons import PRIORITY, Reason

logger = logging.getLogger(__name__)

APPLIED_ANNOTATION = "ductape.app/applied"
#: kopf's record of the spec it last handled, where operators before `status.handledSpec`
#: kept it (handlers.HandledSpec).
DIFFBASE_ANNOTATION = "ductape.app/last-handled-configuration"
#: Where earlier versions kept what the status now carries (docs/reference.md,
#: "Annotations"): removed once the status has both records.
LEGACY_ANNOTATIONS = (APPLIED_ANNOTATION, DIFFBASE_ANNOTATION)
PAUSED_ANNOTATION = "ductape.app/paused"
TAG_LABEL = "ductape.app/tag"
ENV_LABEL = "ductape.app/env"
TYPE_LABEL = "ductape.app/type"


@dataclasses.dataclass(frozen=True)
class BrokerObject:
    """The parts of a MessageBroker body the reconciler reads."""

    ref: BrokerRef
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
            ref=BrokerRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"]),
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
    locations: Mapping[str, base.TopicRoute]

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
                tag: base.TopicRoute(
                    tag=tag,
                    name=loc.get("name"),
                    subscriptions=dict(loc.get("subscriptions") or {}),
                )
                for tag, loc in (raw.get("locations") or {}).items()
            },
        )


def label_before_handling(body: Mapping[str, Any], finalizer: str) -> str | None:
    """The tag label to write with the finalizer; else None.

    The create handler adds the finalizer in a patch of its own before it writes
    anything else to the resource; a missing tag label goes into that same patch, so
    that a new resource costs one API write less and is labelled before its status says
    Ready (docs/operations.md, "A burst of creates"). Only while the finalizer is still
    missing (a new resource), and only for a valid spec, as `gate` would label it.
    """
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or finalizer in (meta.get("finalizers") or []):
        return None
    tag = (body.get("spec") or {}).get("tag")
    if not isinstance(tag, str) or (meta.get("labels") or {}).get(TAG_LABEL) == tag:
        return None
    try:
        models.parse_spec(body.get("spec") or {})
    except pydantic.ValidationError:
        return None
    return tag


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
                for key in (*LEGACY_ANNOTATIONS, PAUSED_ANNOTATION)
                if key in annotations
            },
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def applied_record(obj: BrokerObject) -> str | None:
    """The applied record as written: in the status (`status.applied`), or in the
    annotation where operators before it kept it (docs/reference.md, "Annotations")."""
    raw = obj.status.get("applied")
    if isinstance(raw, str):
        return raw
    return obj.annotations.get(APPLIED_ANNOTATION)


def load_applied(raw: str | None) -> dict[str, AppliedEnv]:
    """The applied record; an unreadable one counts as empty (nothing known provisioned)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {slug: AppliedEnv.from_json(entry) for slug, entry in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError, pydantic.ValidationError):
        logger.warning("ignoring an unreadable applied record (status.applied)")
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
        if isinstance(config, Mapping):
            _collect_secret_names(config, names)
    return names


def _collect_secret_names(node: Mapping[str, Any], names: set[str]) -> None:
    """Every `secretKeyRef.name` in a raw config, at any depth (whatever its broker)."""
    for value in node.values():
        if not isinstance(value, Mapping):
            continue
        ref = value.get("secretKeyRef")
        if isinstance(ref, Mapping):
            if isinstance(ref.get("name"), str):
                names.add(ref["name"])
        else:
            _collect_secret_names(value, names)


def shows_paused(obj: BrokerObject) -> bool:
    """Whether the status already says Paused.

    Read from the raw status, not the validated model: it is asked on every watch event
    of every resource (a burst of creates delivers four per resource).
    """
    for condition in obj.status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == conditions.READY:
            return bool(condition.get("reason") == Reason.PAUSED)
    return False


def broker_identity(env: models.EnvSpec) -> str:
    """Which broker an env points at, credentials aside.

    Two envs with the same identity are the same broker: changing only a
    password or a client id is not a move, and leaves nothing behind.
    """
    return env.broker_identity()


def secret_name_for(broker_name: str, env: models.EnvSpec) -> str:
    return env.secret_name or f"{broker_name}-{env.slug}"


def binding_entries(
    spec: models.MessageBrokerSpec,
    env: models.EnvSpec,
    provider: base.Provider,
    locations: Mapping[str, base.TopicRoute],
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


def has_settings(topic: models.TopicSpec | None) -> bool:
    """Whether a topic declares retention or dead letters (applied in place, checked for drift)."""
    return topic is not None and (
        topic.retention_seconds is not None or topic.dead_letter is not None
    )


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the resource."""

    type: str  # Normal | Warning
    reason: str  # a Reason
    message: str


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
    reason: Reason | None = None  # None when the env is fine
    healthy: bool = False
    provisioned: bool = False
    retriable: bool = True
    probe_seconds: float | None = None
    applied: AppliedEnv | None = None
    events: list[Event] = dataclasses.field(default_factory=list)
    #: The namespace is being deleted: the env's Secret could not be written, and that is
    #: no failure to report (docs/operations.md, "Deleting a namespace").
    namespace_terminating: bool = False


@dataclasses.dataclass
class Written:
    """What this process last wrote on one MessageBroker (status, applied record and
    handled spec included, and the tag label)."""

    uid: str
    status: Mapping[str, Any] | None = None
    tag_label: str | None = None
    #: Annotations removed (`LEGACY_ANNOTATIONS`): the watch may still show them.
    dropped_annotations: set[str] = dataclasses.field(default_factory=set)
    #: The newest generation reconciled: a trigger holding an older body (a timer
    #: that waited for the lock while an update went through) must not undo it.
    generation: int = 0

    def overlay(self, obj: BrokerObject) -> BrokerObject:
        """`obj` (of this uid) as it is after our own writes, whether or not the watch
        saw them yet."""
        labels = dict(obj.labels)
        if self.tag_label is not None:
            labels[TAG_LABEL] = self.tag_label
        status = obj.status if self.status is None else self.status
        return dataclasses.replace(obj, labels=labels, status=status)


Trigger = str
#: Triggers: a change (create, update, resume, a Secret) or the health timer.
CHANGE: Trigger = "change"
HEALTH: Trigger = "health"


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


# --- is this resource reconciled at all? --------------------------------------


@dataclasses.dataclass(frozen=True)
class Gate:
    """Whether a resource is provisioned; when not (`reason` set), why."""

    spec: models.MessageBrokerSpec | None
    reason: Reason | None = None
    message: str = ""
    #: Label the resource although nothing else is done: `-l ductape.app/tag=` finds it.
    label: bool = False


def gate(obj: BrokerObject, tag_owner: str | None) -> Gate:
    """An invalid spec, a tag another resource holds, or the paused annotation stop here."""
    try:
        spec = models.parse_spec(obj.spec)
    except pydantic.ValidationError as exc:
        return Gate(None, Reason.INVALID_CONFIG, models.describe_validation_error(exc))
    if tag_owner is not None and tag_owner != obj.ref.name:
        message = (
            f"tag {spec.tag!r} already belongs to MessageBroker {tag_owner!r}"
            " (the older resource keeps it); nothing is provisioned"
        )
        return Gate(spec, Reason.TAG_CONFLICT, message, label=True)
    if obj.paused:
        message = f"annotation {PAUSED_ANNOTATION}=true: no change is made to brokers or Secrets"
        return Gate(spec, Reason.PAUSED, message, label=True)
    return Gate(spec)


# --- topics of one env ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TopicWork:
    """What an env's topics need on its broker this time."""

    #: Unchanged since they were provisioned on this broker: only check they still exist.
    check: tuple[models.TopicSpec, ...]
    #: New, changed, or on another broker than before: create or adopt.
    ensure: tuple[models.TopicSpec, ...]
    #: Where the unchanged ones were provisioned.
    known: Mapping[str, base.TopicRoute]
    #: The topics as last provisioned on this broker, by tag.
    previous: Mapping[str, models.TopicSpec] = dataclasses.field(default_factory=dict)

    def settle(
        self,
        existing: Sequence[models.TopicSpec],
        ensured: Sequence[models.TopicSpec],
        health: bool,
    ) -> list[models.TopicSpec]:
        """Topics whose retention and dead-letter settings are (re)applied in place: those
        ensured now that declare settings or had some, and on a health round every existing
        one that declares any (drift)."""
        settle = [t for t in existing if health and has_settings(t)]
        return settle + [
            t for t in ensured if has_settings(t) or has_settings(self.previous.get(t.tag))
        ]


def same_broker(prev: AppliedEnv | None, env: models.EnvSpec) -> bool:
    return prev is not None and broker_identity(prev.env) == broker_identity(env)


def topic_work(
    spec: models.MessageBrokerSpec, env: models.EnvSpec, prev: AppliedEnv | None
) -> TopicWork:
    known = {t.tag: t for t in prev.topics} if prev and same_broker(prev, env) else {}
    locations = dict(prev.locations) if prev and same_broker(prev, env) else {}
    check: list[models.TopicSpec] = []
    ensure: list[models.TopicSpec] = []
    for topic in spec.topics:
        unchanged = known.get(topic.tag) == topic and topic.tag in locations
        (check if unchanged else ensure).append(topic)
    return TopicWork(
        check=tuple(check),
        ensure=tuple(ensure),
        known={t.tag: locations[t.tag] for t in check},
        previous=known,
    )


def removed_from(
    before: Sequence[models.TopicSpec], after: Sequence[models.TopicSpec]
) -> list[tuple[base.TopicPlan, str | None]]:
    """What deletionPolicy Delete removes when topics go from `before` to `after`:
    (topic, None) deletes a whole topic, (topic, subscription) one subscription."""
    now = {t.tag: t for t in after}
    removed: list[tuple[base.TopicPlan, str | None]] = []
    for old in before:
        new = now.get(old.tag)
        plan = base.TopicPlan.from_spec(old, before)
        if new is None or new.physical_name != old.physical_name:
            removed.append((plan, None))
            continue
        removed += [(plan, sub) for sub in old.subscriptions if sub not in new.subscriptions]
    return removed


def drift_repaired(env: models.EnvSpec, topic: models.TopicSpec, endpoint: str) -> Event:
    return Event(
        "Normal",
        Reason.DRIFT_REPAIRED,
        f"{env.slug}: topic {topic.tag} ({topic.physical_name}) was missing on {endpoint}"
        " and was re-created",
    )


def settings_repaired(env: models.EnvSpec, topic: models.TopicSpec, endpoint: str) -> Event:
    return Event(
        "Normal",
        Reason.DRIFT_REPAIRED,
        f"{env.slug}: topic {topic.tag} ({topic.physical_name}) had other retention or"
        f" dead-letter settings on {endpoint}; set back",
    )


def secret_written(env: models.EnvSpec, secret_name: str) -> Event:
    return Event(
        "Normal", Reason.SECRET_WRITTEN, f"{env.slug}: connection Secret {secret_name} written"
    )


def moved(policy: models.DeletionPolicy, env: models.EnvSpec, prev: AppliedEnv, to: str) -> Event:
    """The env moved to another broker: what became of its topics on the previous one."""
    old_topics = ", ".join(t.physical_name for t in prev.topics) or "no topics"
    if policy is models.DeletionPolicy.RETAIN:
        reason, verb = Reason.RETAINED, "kept"
    else:
        reason, verb = Reason.DELETED, "deleted"
    return Event(
        "Normal",
        reason,
        f"{env.slug}: moved to {to}; {verb} {old_topics} on the previous"
        f" {prev.env.type.value} broker (deletionPolicy {policy.value})",
    )


def env_removed(policy: models.DeletionPolicy, old: AppliedEnv) -> Event:
    fate = "deleted" if policy is models.DeletionPolicy.DELETE else "kept"
    return Event(
        "Normal",
        Reason.ENV_REMOVED,
        f"env {old.env.slug} removed; its topics were {fate} on the {old.env.type.value}"
        f" broker and its Secret {old.secret_name} deleted",
    )


def ready_env(
    result: EnvResult, spec: models.MessageBrokerSpec, locations: Mapping[str, base.TopicRoute]
) -> None:
    """Everything of the env exists: mark `result` so."""
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
    result.message = f"{len(spec.topics)} topic(s) provisioned on {result.endpoint}"


def record_failure(result: EnvResult, exc: errors.DuctapeError, prev: AppliedEnv | None) -> None:
    """What a failure means for the env: its reason, phase and health."""
    result.reason = exc.reason
    result.retriable = exc.retriable
    result.message = exc.message
    if isinstance(
        exc, errors.BrokerUnreachableError | errors.BrokerAuthError | errors.BrokerTLSError
    ):
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


# --- status ---------------------------------------------------------------------


def provisioning_status(
    obj: BrokerObject, envs: Sequence[models.EnvSpec]
) -> models.MessageBrokerStatus:
    """What a first reconcile that takes a while shows meanwhile."""
    conds = conditions.set_condition(
        [],
        type=conditions.READY,
        status=models.ConditionStatus.FALSE,
        reason=Reason.PROVISIONING,
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


def _verdict(
    conds: list[models.Condition],
    type_: str,
    generation: int,
    failed: Sequence[EnvResult],
    fallback: Reason,
    ok: tuple[Reason, str],
    extra: Sequence[str] = (),
) -> list[models.Condition]:
    """One condition: False with the most telling failure, else True."""
    if failed or extra:
        reasons = {r.reason for r in failed if r.reason}
        reason = next((p for p in PRIORITY if p in reasons), fallback)
        message = "; ".join([*(f"{r.slug}: {r.message}" for r in failed), *extra])
        status = models.ConditionStatus.FALSE
    else:
        (reason, message), status = ok, models.ConditionStatus.TRUE
    return conditions.set_condition(
        conds, type=type_, status=status, reason=reason, message=message, generation=generation
    )


def _env_statuses(
    current: models.MessageBrokerStatus, results: Sequence[EnvResult]
) -> list[models.EnvStatus]:
    previous = {e.slug: e for e in current.envs}
    statuses = []
    for r in results:
        before = previous.get(r.slug)
        kept = before is not None and before.phase == r.phase and before.last_transition_time
        statuses.append(
            models.EnvStatus(
                slug=r.slug,
                type=r.type,
                phase=r.phase,
                endpoint=r.endpoint or (before.endpoint if before else None),
                secret_name=r.secret_name,
                topics=r.topics,
                last_transition_time=(
                    before.last_transition_time if kept and before else conditions.now()
                ),
                message=r.message,
            )
        )
    return statuses


def status_from_results(
    generation: int,
    current: models.MessageBrokerStatus,
    results: Sequence[EnvResult],
    retire_failures: Sequence[str] = (),
) -> models.MessageBrokerStatus:
    """The status after reconciling every env (`results`) of one generation."""
    gen = generation
    conds = _verdict(
        list(current.conditions),
        conditions.PROVISIONED,
        gen,
        [r for r in results if not r.provisioned],
        Reason.PROVISIONING_FAILED,
        (
            Reason.ALL_ENVS_PROVISIONED,
            f"topics, subscriptions and Secrets exist for generation {gen}",
        ),
        retire_failures,
    )
    conds = _verdict(
        conds,
        conditions.HEALTHY,
        gen,
        [r for r in results if not r.healthy],
        Reason.BROKER_UNREACHABLE,
        (Reason.ALL_BROKERS_HEALTHY, "every broker answered its last probe"),
    )
    conds = _verdict(
        conds,
        conditions.READY,
        gen,
        [r for r in results if r.reason],
        Reason.PROVISIONING_FAILED,
        (Reason.ALL_ENVS_READY, f"{len(results)} env(s) ready: {_summary_of(results)}"),
        retire_failures,
    )
    one = results[0] if len(results) == 1 else None
    binding = (
        models.Binding(name=one.secret_name)
        if one is not None and one.provisioned
        else (current.binding if one is not None else None)
    )
    return models.MessageBrokerStatus(
        observed_generation=gen,
        summary=_summary_of(results),
        conditions=conditions.order(conds),
        envs=_env_statuses(current, results),
        binding=binding,
    )


def unreconciled_status(
    obj: BrokerObject,
    current: models.MessageBrokerStatus,
    stop: Gate,
    envs: Sequence[models.EnvSpec],
) -> models.MessageBrokerStatus:
    """The status of a resource `gate` stopped: invalid, conflicting or paused."""
    assert stop.reason is not None
    conds = list(current.conditions)
    kinds = [conditions.READY] + ([] if stop.reason is Reason.PAUSED else [conditions.PROVISIONED])
    for type_ in kinds:
        conds = conditions.set_condition(
            conds,
            type=type_,
            status=models.ConditionStatus.FALSE,
            reason=stop.reason,
            message=stop.message,
            generation=obj.generation,
        )
    return models.MessageBrokerStatus(
        observed_generation=obj.generation,
        summary=_summary(envs) if stop.spec is not None else current.summary,
        conditions=conditions.order(conds),
        envs=list(current.envs),
        binding=current.binding,
    )


def ready_reason(status: models.MessageBrokerStatus) -> str | None:
    """ "Ready", or why not, for the periodic summary; None before any Ready condition."""
    after = conditions.find(status.conditions, conditions.READY)
    if after is None:
        return None
    return "Ready" if after.status is models.ConditionStatus.TRUE else after.reason


@dataclasses.dataclass(frozen=True)
class Transition:
    """A change of the Ready condition: one log line, and an Event unless it is progress."""

    level: int
    line: str
    event: Event | None


def transition(
    obj: BrokerObject, before: models.MessageBrokerStatus, after: models.MessageBrokerStatus
) -> Transition | None:
    """What to say when Ready's status or reason changed; None when it did not."""
    old = conditions.find(before.conditions, conditions.READY)
    new = conditions.find(after.conditions, conditions.READY)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return None
    where = f"{obj.ref.namespace}/{obj.ref.name}"
    if new.status is models.ConditionStatus.TRUE:
        verb = ""
        if old is not None and old.reason != Reason.PROVISIONING:
            took = conditions.lasted(old)  # the outage's end line says how long it lasted
            verb = f", recovered after {took}" if took else ", recovered"
        line = f"{where}: Ready{verb} ({new.reason}): {new.message}"
        return Transition(logging.INFO, line, Event("Normal", new.reason, new.message))
    if new.reason == Reason.PROVISIONING:
        return Transition(logging.INFO, f"{where}: provisioning {after.summary or ''}", None)
    line = f"{where}: not Ready ({new.reason}): {new.message}"
    return Transition(logging.WARNING, line, Event("Warning", new.reason, new.message))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a reconcile did: the status it wrote. One that could not finish is retried by
    the health rounds, whatever the failure (docs/operations.md, "Retries")."""

    status: models.MessageBrokerStatus
    ready: bool
    message: str
    #: The resource went before its finalizer was on: nothing of it is kept.
    gone: bool = False


def gone(current: models.MessageBrokerStatus) -> Outcome:
    """The outcome of a reconcile whose resource was deleted before its finalizer landed."""
    return Outcome(current, ready=False, message="deleted", gone=True)


def outcome(status: models.MessageBrokerStatus) -> Outcome:
    ready = conditions.is_true(status.conditions, conditions.READY)
    ready_cond = conditions.find(status.conditions, conditions.READY)
    return Outcome(status=status, ready=ready, message=ready_cond.message if ready_cond else "")


# --- deletion ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Release:
    """A finalizer's verdict: let go (with a Warning when something was left), or retry."""

    let_go: bool
    warning: Event | None = None
    retry_message: str = ""


def release(
    left: Sequence[str], *, elapsed: float, timeout: float, namespace_terminating: bool
) -> Release:
    """`left`: what deletionPolicy Delete could not delete (nothing with Retain)."""
    if not left:
        return Release(let_go=True)
    if namespace_terminating or elapsed >= timeout:
        message = "gave up deleting on unreachable brokers; left behind: " + "; ".join(left)
        return Release(let_go=True, warning=Event("Warning", Reason.DELETION_INCOMPLETE, message))
    return Release(let_go=False, retry_message="deletion pending: " + "; ".join(left))


def provisions_while_finalizing(obj: BrokerObject) -> bool:
    """Whether a new resource's brokers may be provisioned while its finalizer patch is
    still in flight, instead of after it.

    The finalizer is there so that deletionPolicy is applied on delete. With Retain,
    the policy deletes nothing on any broker, so a resource deleted before its
    finalizer landed loses nothing it would otherwise have kept, and the patch's round
    trip to the API server overlaps the broker's instead of adding to every create's
    time to Ready (docs/operations.md, "A burst of creates"). With Delete, or a spec
    that cannot be read, the finalizer goes first, as it always did.
    """
    try:
        policy = models.parse_spec(obj.spec).deletion_policy
    except pydantic.ValidationError:
        return False
    return policy is models.DeletionPolicy.RETAIN


def deletion_policy(obj: BrokerObject) -> models.DeletionPolicy:
    """The resource's policy; Retain when its spec cannot be read (touch nothing)."""
    try:
        return models.parse_spec(obj.spec).deletion_policy
    except pydantic.ValidationError:
        return models.DeletionPolicy.RETAIN
