"""NATS's entries of the connection Secret: written by the operator side, read back by the
client side, with one definition of names (README.md, "The connection Secret").

    uri          the servers, comma-separated (`nats://h1:4222,nats://h2:4222`): what
                 nats.go's `nats.Connect` and the nats CLI's `--server` take; no credential
    servers      the same list
    username     and `password`: where the config sets them
    credentials  the `.creds` file's content (JWT and NKey seed), where the config sets it

With TLS on, every server is written as `tls://host:port`, so TLS needs no entry of its
own and any NATS client honours it (the system's CAs are trusted). Physical names: the
topics.json `name` is the stream's subject, each subscription maps to its durable
consumer's name; the stream's name is derived from the subject by `stream_name`, on both
sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports this package while the API is being built
    from ductape_operator.messaging import binding as binding_

TLS_SCHEME = "tls"


def stream_name(subject: str) -> str:
    """The JetStream stream of a topic: its subject with dots as dashes (a stream name
    may not contain a dot); the physical-name pattern allows nothing else it forbids."""
    return subject.replace(".", "-")


def consumer_name(subscription: str) -> str:
    """The durable consumer of a subscription: consumers are scoped to their stream, so
    the subscription's own name (a DNS label) is enough, as for a Redis group."""
    return subscription


def server_urls(servers: Iterable[str], tls: bool) -> tuple[str, ...]:
    """The server URLs as written: `tls://` for every one when TLS is on."""
    if not tls:
        return tuple(servers)
    return tuple(f"{TLS_SCHEME}://" + s.split("://", 1)[-1] for s in servers)


@dataclasses.dataclass(frozen=True)
class Entries:
    """The servers of one NATS account, and the credentials to use it."""

    servers: tuple[str, ...]
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    #: The `.creds` file's content; a secret.
    credentials: str | None = dataclasses.field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return any(s.startswith(f"{TLS_SCHEME}://") for s in self.servers)

    @property
    def endpoint(self) -> str:
        """The servers, without credentials."""
        return ",".join(self.servers)

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        entries = {"uri": self.endpoint, "servers": self.endpoint}
        if self.username:
            entries["username"] = self.username
        if self.password:
            entries["password"] = self.password
        if self.credentials:
            entries["credentials"] = self.credentials
        return entries

    @classmethod
    def read(cls, binding: binding_.Binding) -> Entries:
        """The entries of a binding (the client side): `servers`, else the `uri`."""
        raw = binding.get("servers") or binding.get("uri") or ""
        servers = tuple(s.strip() for s in raw.split(",") if s.strip())
        if not servers:
            from ductape_operator.messaging.binding import BindingError

            raise BindingError(f"binding {binding.source}: entry 'servers' is missing")
        return cls(
            servers=servers,
            username=binding.get("username"),
            password=binding.get("password"),
            credentials=binding.get("credentials"),
        )
