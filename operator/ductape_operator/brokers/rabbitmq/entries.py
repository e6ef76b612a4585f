"""RabbitMQ's entries of the connection Secret: written by the operator side, read back by
the client side, with one definition of names and defaults (README.md, "The connection
Secret").

The TLS material (`ca.crt`, `tls.crt`, `tls.key`) is written and read by `tls.Material`.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ductape_operator.brokers import _uri

if TYPE_CHECKING:  # the config model imports this module while the API is being built
    from ductape_operator.messaging import binding as binding_

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
DEFAULT_VHOST = "/"
#: RabbitMQ's default user, and its password, when none is given.
DEFAULT_USER = "guest"
SCHEME = "amqp"
TLS_SCHEME = "amqps"


def default_port(tls: bool) -> int:
    return DEFAULT_TLS_PORT if tls else DEFAULT_PORT


@dataclasses.dataclass(frozen=True)
class Entries:
    """One RabbitMQ virtual host, and the credentials to use it."""

    host: str
    port: int = DEFAULT_PORT
    vhost: str = DEFAULT_VHOST
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False

    @property
    def scheme(self) -> str:
        return TLS_SCHEME if self.tls else SCHEME

    @property
    def vhost_path(self) -> str:
        return urllib.parse.quote(self.vhost, safe="")

    @property
    def endpoint(self) -> str:
        """The server and virtual host, without credentials."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.vhost_path}"

    @property
    def login(self) -> tuple[str, str]:
        """User name and password to log in with (RabbitMQ's default user without them)."""
        return self.username or DEFAULT_USER, self.password or DEFAULT_USER

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        info = _uri.userinfo(self.username, self.password, default_user=DEFAULT_USER)
        entries = {
            "uri": f"{self.scheme}://{info}{self.host}:{self.port}/{self.vhost_path}",
            "host": self.host,
            "port": str(self.port),
            "virtual-host": self.vhost,
        }
        if self.username:
            entries["username"] = self.username
        if self.password:
            entries["password"] = self.password
        return entries

    @classmethod
    def read(cls, binding: binding_.Binding) -> Entries:
        """The entries of a binding (the client side): each entry, else the `uri`'s part."""
        uri = urlsplit(binding.get("uri") or "")
        tls = uri.scheme == TLS_SCHEME or (binding.get("tls") or "").lower() == "true"
        path_vhost = urllib.parse.unquote(uri.path[1:]) if len(uri.path) > 1 else None
        return cls(
            host=binding.get("host") or uri.hostname or "localhost",
            port=int(binding.get("port") or uri.port or default_port(tls)),
            vhost=binding.get("virtual-host") or path_vhost or DEFAULT_VHOST,
            username=binding.get("username") or _uri.unquoted(uri.username),
            password=binding.get("password") or _uri.unquoted(uri.password),
            tls=tls,
        )
