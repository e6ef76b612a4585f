"""The brokers: one package per broker, and the registry that finds them.

Everything one broker knows lives in its package, `brokers/<name>/`: its config
fields, its Secret entries, its error mapping, its SDK client, its operator side
(`operator.py`) and its client side (`client.py`); the package exports a
`BrokerKind` as `KIND`. The shared machinery (reconcile, the binding reader, the
provider pool) asks this registry, and names no broker. Adding a broker is adding
its package and one name to `_PACKAGES` (README.md, "Layout").
"""

from __future__ import annotations

import functools
import importlib

from ductape_operator.brokers._kind import BrokerKind

__all__ = ["BrokerKind", "by_binding_type", "kind", "kinds"]

#: The broker packages, in the order the API lists them.
_PACKAGES = ("kafka", "redis", "rabbitmq", "pubsub", "sqs", "nats")


@functools.cache
def kinds() -> tuple[BrokerKind, ...]:
    """Every registered broker, in registry order."""
    found = []
    for name in _PACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        found.append(module.KIND)
    return tuple(found)


def kind(type_name: str) -> BrokerKind:
    """The broker whose CRD `type` is `type_name`; KeyError for an unknown type."""
    for found in kinds():
        if found.type == type_name:
            return found
    raise KeyError(type_name)


def by_binding_type(binding_type: str) -> BrokerKind | None:
    """The broker whose Secret `type` entry is `binding_type`, or None."""
    return next((found for found in kinds() if found.binding_type == binding_type), None)
