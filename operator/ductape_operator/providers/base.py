"""The provider interface: what every broker module implements, and its value types.

A provider is built from a validated `BrokerConfig` and the values of the
Secrets it references, with no network I/O in the constructor. `start()` and
`aclose()` are idempotent, and a provider is an async context manager. Every
`ensure_*` succeeds when the thing already exists (it is adopted), every
`delete_*` succeeds when it is already gone. Each SDK's errors are mapped to
`ductape_operator.errors` inside its own module, so nothing above this layer
imports a broker SDK.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Protocol, Self

from ductape_operator import models
from ductape_operator.topics import TopicRoute as TopicRoute  # where ensure_topic put it


@dataclasses.dataclass(frozen=True)
class SecretValues:
    """Resolved values of the Secret keys a config references, keyed by (name, key)."""

    values: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def get(self, ref: models.SecretRef | None) -> str | None:
        if ref is None:
            return None
        sel = ref.secret_key_ref
        return self.values[(sel.name, sel.key)]

    def fingerprint(self) -> tuple[tuple[tuple[str, str], str], ...]:
        """A hashable identity, so a rotated credential gives a new connection."""
        return tuple(sorted(self.values.items()))


@dataclasses.dataclass(frozen=True)
class DeadLetterPlan:
    """Where a topic's dead letters go: the dead-letter topic and its one subscription."""

    tag: str
    name: str
    subscription: str
    max_delivery_attempts: int


@dataclasses.dataclass(frozen=True)
class TopicPlan:
    """A topic as a provider sees it: tag, physical name and subscription names, and the
    retention and dead-letter settings (docs/messaging.md, "Dead letters and retention")."""

    tag: str
    name: str
    subscriptions: tuple[str, ...] = ()
    partitions: int | None = None
    retention_seconds: int | None = None
    dead_letter: DeadLetterPlan | None = None

    @property
    def has_settings(self) -> bool:
        """Whether retention or dead letters are declared (else the broker's defaults stand)."""
        return self.retention_seconds is not None or self.dead_letter is not None

    @classmethod
    def from_spec(
        cls, topic: models.TopicSpec, topics: Collection[models.TopicSpec] = ()
    ) -> TopicPlan:
        """The plan of `topic`; `topics` (the resource's) resolve its dead-letter topic."""
        dead_letter = None
        if topic.dead_letter is not None:
            target = next((t for t in topics if t.tag == topic.dead_letter.topic), None)
            if target is not None and len(target.subscriptions) == 1:
                dead_letter = DeadLetterPlan(
                    tag=target.tag,
                    name=target.physical_name,
                    subscription=target.subscriptions[0],
                    max_delivery_attempts=topic.dead_letter.max_delivery_attempts,
                )
        return cls(
            tag=topic.tag,
            name=topic.physical_name,
            subscriptions=tuple(topic.subscriptions),
            partitions=topic.partitions,
            retention_seconds=topic.retention_seconds,
            dead_letter=dead_letter,
        )


@dataclasses.dataclass(frozen=True)
class SubscriptionBacklog:
    """One subscription's backlog as the broker counts it (docs/operations.md, "Metrics").

    `messages`: published to the topic and not yet acked on this subscription.
    `oldest_age_seconds`: the age of the oldest of them, where the broker gives it
    cheaply (None elsewhere, and when there is none).
    """

    messages: int
    oldest_age_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class TopicBacklog:
    """One topic's reading: its subscriptions' backlogs, and its publish count where
    the broker keeps one (`published`: messages ever added, None elsewhere)."""

    published: int | None = None
    subscriptions: Mapping[str, SubscriptionBacklog] = dataclasses.field(default_factory=dict)


def default_subscription_name(topic_name: str, subscription: str) -> str:
    """`<topic>.<subscription>`: the default physical name of a subscription."""
    return f"{topic_name}.{subscription}"


class Provider(Protocol):
    """One broker endpoint with one set of credentials."""

    @property
    def type(self) -> models.MessageBrokerTypes: ...

    @property
    def endpoint(self) -> str:
        """A URI naming the broker, never containing a credential."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def ensure_topic(self, topic: TopicPlan) -> TopicRoute:
        """Create the topic and all its subscriptions, or adopt them; say where they are."""
        ...

    async def ensure_settings(self, topic: TopicPlan) -> bool:
        """Make the existing topic's retention and dead-letter settings the plan's, in place
        (None: the broker's default); True when something had to change. Where the broker
        cannot change one in place, `ProvisioningError` names the topic and the field."""
        ...

    async def delete_topic(self, topic: TopicPlan) -> None:
        """Delete the topic and its subscriptions; success when already gone."""
        ...

    async def delete_subscription(self, topic: TopicPlan, subscription: str) -> None:
        """Delete one subscription of a topic; success when already gone."""
        ...

    async def topic_exists(self, topic: TopicPlan) -> bool:
        """Whether the topic and every subscription exist now (drift detection)."""
        ...

    async def inventory(self, topics: Collection[TopicPlan]) -> frozenset[TopicPlan]:
        """Which of `topics` exist now with every subscription, in as few calls as the
        broker allows (one listing or one pipelined batch): drift detection for every
        resource on this endpoint at once (docs/operations.md, health rounds)."""
        ...

    async def backlog(self, topics: Collection[TopicPlan]) -> Mapping[TopicPlan, TopicBacklog]:
        """The backlog of every subscription of `topics` (keyed by subscription name, not
        physical name), in as few calls as the broker allows: metrics only, read once per
        endpoint per health round (docs/operations.md, "Metrics"). A topic or
        subscription the broker does not know, or cannot count, is left out."""
        ...

    async def probe(self, timeout: float) -> None:
        """Check the broker answers; raise `BrokerUnreachableError` if not within timeout."""
        ...

    def binding(self) -> dict[str, str]:
        """Connection Secret entries of this type (README.md, "The connection Secret") except the
        common ones (`type`, `provider`, `broker-tag`, `env`, `topics.json`)."""
        ...
