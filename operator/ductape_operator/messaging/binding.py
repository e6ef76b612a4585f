"""Reading a connection Secret the way an application sees it: a service binding.

The operator writes one Secret per environment (README.md, "The connection Secret"). An
application gets it in one of three shapes, and `Binding.load` reads each:

- mounted as a folder, the Service Binding for Kubernetes way:
  `$SERVICE_BINDING_ROOT/<name>/<entry>`, one file per entry;
- as environment variables, with `envFrom: [{secretRef: {name: ...}, prefix: DUCTAPE_}]`.
  Kubernetes keeps a key verbatim after the prefix (`DUCTAPE_bootstrap-servers`,
  `DUCTAPE_topics.json`); the upper-cased form with underscores
  (`DUCTAPE_BOOTSTRAP_SERVERS`, `DUCTAPE_TOPICS_JSON`) is accepted too, for shells
  and platforms that only pass portable variable names;
- as an explicit mapping of entry name to value (tests, other config systems).

Whatever the shape, a missing or malformed binding raises one `BindingError`
that names the place looked at and the entry that is missing or wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ductape_operator import brokers, errors, tls
from ductape_operator.topics import TopicRoute

if TYPE_CHECKING:
    import pydantic

__all__ = ["Binding", "BindingError", "TopicRoute", "env_variable_names", "kind_of"]

#: The `type` entry of each broker, as the operator writes it (one per registered broker).
TYPES = tuple(kind.binding_type for kind in brokers.kinds())

#: The entries every type has; each broker's own are in its `BrokerKind.entries`.
COMMON_ENTRIES = ("type", "provider", "uri", "broker-tag", "env", "topics.json")
#: Every entry the operator may write: the names looked up in the environment.
KNOWN_ENTRIES = tuple(
    dict.fromkeys(COMMON_ENTRIES + tuple(e for kind in brokers.kinds() for e in kind.entries))
)

#: The default prefix of environment variables (`envFrom` with `prefix: DUCTAPE_`).
ENV_PREFIX = "DUCTAPE_"
#: The Service Binding spec's root variable.
ROOT_VARIABLE = "SERVICE_BINDING_ROOT"


class BindingError(errors.InvalidConfigError):
    """The binding is missing, incomplete or malformed; the message says where and what."""


def env_variable_names(entry: str, prefix: str = ENV_PREFIX) -> tuple[str, str]:
    """The two variable names an entry is read from: verbatim and portable.

    >>> env_variable_names("bootstrap-servers")
    ('DUCTAPE_bootstrap-servers', 'DUCTAPE_BOOTSTRAP_SERVERS')
    """
    portable = entry.upper().replace("-", "_").replace(".", "_")
    return f"{prefix}{entry}", f"{prefix}{portable}"


@dataclasses.dataclass(frozen=True)
class Binding:
    """A parsed connection Secret."""

    #: Where it was read from, for messages: a folder, `environment (DUCTAPE_*)`, `mapping`.
    source: str
    #: The broker: one of `TYPES`.
    type: str
    #: Every entry as written, credentials included; never log this.
    entries: Mapping[str, str] = dataclasses.field(repr=False)
    topics: Mapping[str, TopicRoute] = dataclasses.field(default_factory=dict)

    def tls_context(self) -> ssl.SSLContext:
        """A verifying TLS context: the system store, `ca.crt`, and `tls.crt`/`tls.key`."""
        return tls.Material.from_entries(self.entries).context(f"binding {self.source}")

    def get(self, entry: str, default: str | None = None) -> str | None:
        """An entry's value, or `default` when absent or empty."""
        value = self.entries.get(entry)
        return value if value else default

    def require(self, entry: str) -> str:
        """An entry's value; `BindingError` naming it when absent or empty."""
        value = self.entries.get(entry)
        if not value:
            raise BindingError(f"binding {self.source}: entry {entry!r} is missing")
        return value

    def topic(self, tag: str) -> TopicRoute:
        try:
            return self.topics[tag]
        except KeyError:
            known = ", ".join(sorted(self.topics)) or "none"
            raise BindingError(
                f"binding {self.source}: topic {tag!r} is not in topics.json (known: {known})"
            ) from None

    def subscription(self, tag: str, subscription: str) -> str:
        """The physical name of a subscription of a topic."""
        route = self.topic(tag)
        try:
            return route.subscriptions[subscription]
        except KeyError:
            known = ", ".join(sorted(route.subscriptions)) or "none"
            raise BindingError(
                f"binding {self.source}: topic {tag!r} has no subscription {subscription!r} "
                f"in topics.json (known: {known})"
            ) from None

    # -- loading ---------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name: str | None = None,
        *,
        mapping: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        path: str | os.PathLike[str] | None = None,
        env_prefix: str = ENV_PREFIX,
    ) -> Binding:
        """Find and parse a binding; see the module docstring for the order.

        An explicit `mapping` or `path` wins. Otherwise, when `$SERVICE_BINDING_ROOT`
        is set and holds the binding folder (`name`, or the only folder there when
        `name` is None), that folder is read; else the environment variables with
        `env_prefix`.
        """
        if mapping is not None:
            return cls.from_mapping(mapping)
        if path is not None:
            return cls.from_folder(path)
        env = os.environ if environ is None else environ
        looked: list[str] = []
        root = env.get(ROOT_VARIABLE)
        if root:
            folder = _pick_folder(Path(root), name)
            if folder is not None:
                return cls.from_folder(folder)
            looked.append(
                f"${ROOT_VARIABLE}/{name}" if name else f"a single folder in ${ROOT_VARIABLE}"
            )
            looked[-1] += f" ({root})"
        else:
            looked.append(f"${ROOT_VARIABLE} (not set)")
        if any(v in env for v in env_variable_names("type", env_prefix)):
            return cls.from_environ(env, prefix=env_prefix)
        looked.append(f"environment variables {env_prefix}* (no {env_prefix}type)")
        what = f"binding {name!r}" if name else "a binding"
        raise BindingError(f"{what} not found: looked in " + "; ".join(looked))

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> Binding:
        """Read a binding folder: one file per entry (hidden files are Kubernetes' own)."""
        folder = Path(path)
        if not folder.is_dir():
            raise BindingError(f"binding folder {folder} does not exist")
        entries: dict[str, str] = {}
        for item in sorted(folder.iterdir()):
            if item.name.startswith(".") or not item.is_file():
                continue
            try:
                entries[item.name] = item.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise BindingError(f"binding {folder}: entry {item.name!r} unreadable") from exc
        return cls._parse(str(folder), entries)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, prefix: str = ENV_PREFIX
    ) -> Binding:
        """Read the entries from environment variables (see `env_variable_names`)."""
        env = os.environ if environ is None else environ
        entries: dict[str, str] = {}
        for entry in KNOWN_ENTRIES:
            for variable in env_variable_names(entry, prefix):
                if variable in env:
                    entries[entry] = env[variable].strip()
                    break
        return cls._parse(f"environment ({prefix}*)", entries)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], *, source: str = "mapping") -> Binding:
        return cls._parse(source, {k: str(v).strip() for k, v in mapping.items()})

    @classmethod
    def _parse(cls, source: str, entries: Mapping[str, str]) -> Binding:
        kind = entries.get("type")
        if not kind:
            raise BindingError(f"binding {source}: entry 'type' is missing")
        broker = brokers.by_binding_type(kind)
        if broker is None:
            raise BindingError(
                f"binding {source}: entry 'type' is {kind!r}, expected one of {', '.join(TYPES)}"
            )
        for alternatives in broker.required_entries:
            if not any(entries.get(entry) for entry in alternatives):
                raise BindingError(
                    f"binding {source}: entry {alternatives[0]!r} is missing ({kind})"
                )
        raw = entries.get("topics.json")
        if not raw:
            raise BindingError(f"binding {source}: entry 'topics.json' is missing")
        topics = _parse_topics(source, broker, raw)
        return cls(source=source, type=kind, entries=dict(entries), topics=topics)


def _pick_folder(root: Path, name: str | None) -> Path | None:
    if name is not None:
        folder = root / name
        return folder if folder.is_dir() else None
    if not root.is_dir():
        return None
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) > 1:
        names = ", ".join(p.name for p in folders)
        raise BindingError(
            f"several bindings in ${ROOT_VARIABLE} ({root}): {names}; pass the name of one"
        )
    return folders[0] if folders else None


def kind_of(binding: Binding) -> brokers.BrokerKind:
    """The registered broker a parsed binding is for."""
    kind = brokers.by_binding_type(binding.type)
    if kind is None:  # `_parse` let it through, so only a hand-made Binding gets here
        raise BindingError(f"binding {binding.source}: unknown type {binding.type!r}")
    return kind


def _parse_topics(source: str, kind: brokers.BrokerKind, raw: str) -> dict[str, TopicRoute]:
    where = f"binding {source}: entry 'topics.json'"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BindingError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BindingError(f"{where} must be a JSON object of topic tags")
    import pydantic  # on first use: the client imports without it

    topics: dict[str, TopicRoute] = {}
    for tag, value in data.items():
        if not isinstance(value, dict):
            raise BindingError(f"{where}: topic {tag!r} must be an object")
        try:
            route = TopicRoute.from_json(tag, value)
        except pydantic.ValidationError as exc:
            raise BindingError(f"{where}: topic {tag!r}: {_problem(exc)}") from None
        if route.name is None and (not kind.topic_name_optional or not route.subscriptions):
            raise BindingError(f"{where}: topic {tag!r}: 'name' is missing")
        topics[tag] = route
    return topics


def _problem(exc: pydantic.ValidationError) -> str:
    """What is wrong with one `topics.json` entry, naming its first bad field."""
    error = exc.errors()[0]
    field, *inner = error["loc"]
    if field == "name":
        if error["type"] == "missing":
            return "'name' is missing"
        return "'name' must be a non-empty string"
    if field == "subscriptions":
        return "'subscriptions' must map names to physical names"
    where = ".".join(str(part) for part in inner)
    message = error["msg"].removeprefix("Value error, ")
    return f"'{field}' is malformed ({where + ': ' if where else ''}{message})"
