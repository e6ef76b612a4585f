"""`BrokerKind`: what the shared machinery knows about one broker, as plain data.

Each broker package (`brokers/<name>/__init__.py`) exports one `KIND`. The kind
names the broker (its CRD `type` and the Secret's `type` entry), its config
fields, the Secret entries a client needs, what makes two envs the same broker,
and where its operator side and client side live. Those two are named by dotted
path and imported only when asked for, so reading a kind imports no broker SDK,
and the messaging client never imports an operator side (README.md, "Layout").
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class BrokerKind:
    """One broker, described for the shared machinery."""

    #: The CRD's `type` value: `KAFKA`, `REDIS`, ...
    type: str
    #: The connection Secret's `type` entry: `kafka`, `redis`, ...
    binding_type: str
    #: Its name in prose: `Kafka`, `Google Pub/Sub`, ...
    title: str
    #: The package holding everything about it: `ductape_operator.brokers.<name>`.
    package: str
    #: Config fields (wire names) this type requires, and those it also allows.
    required: frozenset[str]
    optional: frozenset[str]
    #: The config fields (wire names) that say which broker an env points at,
    #: credentials aside; a change of any of them is a move to another broker.
    identity_fields: tuple[str, ...]
    #: The identity value of an identity field left unset, where unset means a default
    #: that setting it to explicitly is the same broker (Redis `db`: 0).
    identity_defaults: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The config field that switches TLS on (`ssl` or `tls`), None without TLS settings.
    tls_flag: str | None = None
    #: Secret entries a client cannot work without (besides `type` and `topics.json`):
    #: each item lists the entries any one of which will do.
    required_entries: tuple[tuple[str, ...], ...] = ()
    #: Every Secret entry this type may write besides the common ones.
    entries: tuple[str, ...] = ()
    #: Whether a `topics.json` topic may have no `name` when it has subscriptions
    #: (its messages go to every subscription's own queue).
    topic_name_optional: bool = False
    #: For a broker that moves dead letters itself and marks them with its own headers:
    #: `module:attribute` of the client side's reader of those marks, a function of a
    #: message's headers returning `messaging._transport.DeadLetterMarks` or None.
    dead_letter_marks: str | None = None
    #: The SDK's loggers, kept to warnings by the operator (they log URLs at INFO).
    sdk_loggers: tuple[str, ...] = ()
    #: `module:attribute` of the operator side, a `providers.base.Provider` class,
    #: relative to `package`.
    provider: str = "operator:Provider"
    #: `module:attribute` of the client side's `make_transport(binding, options)`.
    transport: str = "client:make_transport"

    def config_module(self) -> Any:
        """The broker's `config` module: `MODEL`, its config model, and optional `NOTES`."""
        return importlib.import_module(f"{self.package}.config")

    def provider_class(self) -> Any:
        """The operator side's class, imported now (it imports the broker's SDK)."""
        return _resolve(self.package, self.provider)

    def transport_factory(self) -> Any:
        """The client side's `make_transport`, imported now (it imports the broker's SDK)."""
        return _resolve(self.package, self.transport)

    def dead_letter_reader(self) -> Any:
        """The client side's reader of the broker's own dead-letter marks, or None."""
        if self.dead_letter_marks is None:
            return None
        return _resolve(self.package, self.dead_letter_marks)

    def identity(self, values: Mapping[str, Any]) -> str:
        """Which broker a config points at, from its wire-named `values`, credentials aside."""
        parts = [self.type]
        for field in self.identity_fields:
            value = values.get(field)
            if value is None:
                parts.append(self.identity_defaults.get(field, ""))
            elif isinstance(value, Sequence) and not isinstance(value, str):
                parts.append(",".join(sorted(str(item) for item in value)))
            else:
                parts.append(str(value))
        return "|".join(parts)


def _resolve(package: str, target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(f"{package}.{module}"), attribute)
