"""In-memory stand-ins for the reconciler's two interfaces, for unit tests only.

`FakeCluster` is the Kubernetes side (`reconcile.Cluster`): Secrets in a dict,
every write recorded. `FakeBrokers` hands out `FakeProvider`s (`base.Provider`)
whose topics live in a dict per endpoint; an endpoint can be taken down. The
end-to-end tests cover the real API server and brokers; these cover the
decisions, fast.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import uuid
from collections.abc import Collection, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from ductape_operator import core, errors, models, providers, reconcile
from ductape_operator.models import BrokerRef
from ductape_operator.providers import base
from ductape_operator.settings import Settings


@dataclasses.dataclass
class FakeCluster:
    """Secrets by (namespace, name); every write the reconciler makes, in order."""

    secrets: dict[tuple[str, str], dict[str, str]] = dataclasses.field(default_factory=dict)
    connection_secrets: dict[tuple[str, str], dict[str, str]] = dataclasses.field(
        default_factory=dict
    )
    writes: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    #: Namespaces being deleted: the API server refuses to create anything there.
    terminating: set[str] = dataclasses.field(default_factory=set)

    async def read_secret_values(
        self, namespace: str, refs: Iterable[models.SecretKeySelector]
    ) -> dict[tuple[str, str], str]:
        values = {}
        for ref in refs:
            data = self.secrets.get((namespace, ref.name))
            if data is None or ref.key not in data:
                raise errors.SecretNotFoundError(
                    f"Secret {namespace}/{ref.name} not found", secret_name=ref.name
                )
            values[(ref.name, ref.key)] = data[ref.key]
        return values

    async def apply_connection_secret(
        self, owner: BrokerRef, name: str, data: Mapping[str, str], labels: Mapping[str, str]
    ) -> bool:
        key = (owner.namespace, name)
        if self.connection_secrets.get(key) == dict(data):
            return False
        if owner.namespace in self.terminating:
            raise errors.NamespaceTerminatingError("the namespace is being deleted")
        self.connection_secrets[key] = dict(data)
        self.writes.append(("secret", name))
        return True

    async def delete_secret(self, owner: BrokerRef, name: str) -> None:
        if self.connection_secrets.pop((owner.namespace, name), None) is not None:
            self.writes.append(("delete-secret", name))

    async def patch_status(self, ref: BrokerRef, status: Mapping[str, Any]) -> None:
        self.writes.append(("status", dict(status)))

    async def patch_metadata(
        self,
        ref: BrokerRef,
        *,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> None:
        self.writes.append(("metadata", {"labels": labels, "annotations": annotations}))

    def emit_event(self, ref: BrokerRef, *, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    def event_reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@dataclasses.dataclass
class FakeBroker:
    """One endpoint: its topics (physical name -> subscriptions) and whether it answers."""

    topics: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    #: Retention and dead-letter settings by topic, as last set.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    down: bool = False
    calls: list[str] = dataclasses.field(default_factory=list)


class FakeProvider:
    """`base.Provider` over a `FakeBroker`."""

    def __init__(self, env_type: models.MessageBrokerTypes, host: str, broker: FakeBroker) -> None:
        self._type, self._host, self.broker = env_type, host, broker

    @property
    def type(self) -> models.MessageBrokerTypes:
        return self._type

    @property
    def endpoint(self) -> str:
        return f"fake://{self._host}"

    def _call(self, what: str) -> None:
        self.broker.calls.append(what)
        if self.broker.down:
            raise errors.BrokerUnreachableError(f"{self.endpoint}: {what}: connection refused")

    async def start(self) -> None:
        self._call("connect")

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        self._call(f"ensure {topic.name}")
        self.broker.topics.setdefault(topic.name, set()).update(topic.subscriptions)
        return base.TopicRoute(
            tag=topic.tag,
            name=topic.name,
            subscriptions={
                s: base.default_subscription_name(topic.name, s) for s in topic.subscriptions
            },
        )

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        self._call(f"settle {topic.name}")
        wanted = (topic.retention_seconds, topic.dead_letter)
        changed = self.broker.settings.get(topic.name) != wanted
        self.broker.settings[topic.name] = wanted
        return changed

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> Mapping[base.TopicPlan, base.TopicBacklog]:
        self._call("backlog")
        return {}

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        self._call(f"delete {topic.name}")
        self.broker.topics.pop(topic.name, None)

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        self._call(f"delete {topic.name}.{subscription}")
        self.broker.topics.get(topic.name, set()).discard(subscription)

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        self._call(f"exists {topic.name}")
        return set(topic.subscriptions) <= self.broker.topics.get(topic.name, {"\0"})

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        self._call("inventory")
        have = self.broker.topics
        return frozenset(
            t for t in topics if t.name in have and set(t.subscriptions) <= have[t.name]
        )

    async def probe(self, timeout: float) -> None:
        self._call("probe")

    def binding(self) -> dict[str, str]:
        return {"uri": self.endpoint, "host": self._host}


class FakeBrokers:
    """Endpoints by host, and the factory a `ProviderPool` builds providers with."""

    def __init__(self) -> None:
        self.by_host: dict[str, FakeBroker] = {}

    def __getitem__(self, host: str) -> FakeBroker:
        return self.by_host.setdefault(host, FakeBroker())

    def factory(
        self,
        env_type: models.MessageBrokerTypes,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
    ) -> base.Provider:
        host = config.host or ",".join(config.brokers or []) or "?"
        return FakeProvider(env_type, host, self[host])


def reconciler(cluster: FakeCluster, brokers: FakeBrokers, **settings: Any) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        Settings(**settings),
        pool=providers.ProviderPool(factory=brokers.factory),
        cluster=cluster,
    )


def body(
    name: str = "bus",
    *,
    envs: list[dict[str, Any]] | None = None,
    topics: list[dict[str, Any]] | None = None,
    generation: int = 1,
    uid: str | None = None,
    policy: str = "Retain",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A MessageBroker body as the watch delivers it."""
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid or str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
            "generation": generation,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "name": name,
            "tag": name,
            "deletionPolicy": policy,
            "envs": envs or [{"slug": "dev", "type": "REDIS", "config": {"host": "r1"}}],
            "topics": topics
            if topics is not None
            else [{"tag": "orders", "subscriptions": ["billing", "shipping"]}],
        },
        "status": status or {},
    }


def handled_spec(raw: Mapping[str, Any]) -> str:
    """The record of a body's spec a change handler passes (`HandledSpec.essence`)."""
    return json.dumps({"spec": raw.get("spec") or {}}, separators=(",", ":"), sort_keys=True)


def after(obj: core.BrokerObject, cluster: FakeCluster) -> dict[str, Any]:
    """The body the next watch event would deliver: our writes applied."""
    meta: dict[str, Any] = {
        "namespace": obj.ref.namespace,
        "name": obj.ref.name,
        "uid": obj.ref.uid,
        "generation": obj.generation,
        "labels": dict(obj.labels),
        "annotations": dict(obj.annotations),
    }
    status = dict(obj.status)
    for kind, data in cluster.writes:
        if kind == "status":
            status = data
        elif kind == "metadata":
            meta["labels"].update(data["labels"] or {})
            meta["annotations"].update(data["annotations"] or {})
    return {"metadata": meta, "spec": dict(obj.spec), "status": status}
