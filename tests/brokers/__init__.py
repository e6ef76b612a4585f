"""Raw broker kits for the tests: one module per broker (`tests/brokers/<name>.py`, named
as its package under `ductape_operator/brokers/`).

A kit checks on the broker itself what the operator claims, creates and deletes things
behind its back the way another tool would, and connects with a connection Secret's
entries the way an application would, with the broker's SDK only: never the operator's
providers or messaging client. No kit changes the process-wide `os.environ`: the stack's
settings (`.testenv/env`) come in as a mapping.

Every kit has the same functions:

    observe(env, plan) -> Observed           what exists for a plan, by default names
    create(env, plan) / delete(env, plan)    out of band, by default names
    exists(env, name, subscriptions) -> bool the topic and every subscription exist
    delete_out_of_band(env, name, subscriptions)
    publish(entries, name, subscriptions, payload)
    receive(entries, name, physical, timeout) -> list[bytes]   received and acknowledged

and some more where the broker has them (`read_settings`, `queue_has_arguments`).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from ductape_operator import brokers


@dataclasses.dataclass
class Observed:
    """What the broker holds for one topic."""

    topic: bool
    #: Physical names of the subscriptions that exist (and, where it applies, are attached).
    subscriptions: set[str]
    #: Kafka: the topic's partition count.
    partitions: int | None = None
    #: Kafka: partitions with a committed offset, per consumer group.
    committed: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    #: RabbitMQ: the exchange is a durable topic exchange; every queue is durable.
    declared_as_wanted: bool | None = None


@dataclasses.dataclass
class QueueSettings:
    """Retention (seconds; None for the broker's default) and dead-letter policy
    (target physical name, attempts) as the broker reports them."""

    retention: int | None
    dead_letter: tuple[str, int] | None = None


def kit(type_name: str) -> ModuleType:
    """The kit of a broker, by its CRD type (`KAFKA`) or its Secret type (`kafka`)."""
    kind = brokers.by_binding_type(type_name)
    if kind is None:
        kind = brokers.kind(str(type_name))
    return importlib.import_module(f"{__name__}.{kind.package.rsplit('.', 1)[-1]}")
