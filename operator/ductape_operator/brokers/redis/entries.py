"""Redis's entries of the connection Secret: written by the operator side, read back by the
client side, with one definition of names and defaults (README.md, "The connection Secret").

The TLS material (`ca.crt`, `tls.crt`, `tls.key`) is written and read by `tls.Material`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ductape_operator.brokers import _uri

if TYPE_CHECKING:  # the config model imports this module while the API is being built
    from ductape_operator.messaging import binding as binding_

DEFAULT_PORT = 6379
DEFAULT_DATABASE = 0
SCHEME = "redis"
TLS_SCHEME = "rediss"


@dataclasses.dataclass(frozen=True)
class Entries:
    """One Redis server and database, and the credentials to use it."""

    host: str
    port: int = DEFAULT_PORT
    database: int = DEFAULT_DATABASE
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False

    @property
    def scheme(self) -> str:
        return TLS_SCHEME if self.tls else SCHEME

    @property
    def endpoint(self) -> str:
        """The server and database, without credentials."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.database}"

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        info = _uri.userinfo(self.username, self.password)
        entries = {
            "uri": f"{self.scheme}://{info}{self.host}:{self.port}/{self.database}",
            "host": self.host,
            "port": str(self.port),
            "database": str(self.database),
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
        database = binding.get("database") or uri.path.lstrip("/") or str(DEFAULT_DATABASE)
        try:
            number = int(database)
        except ValueError:
            from ductape_operator.messaging.binding import BindingError

            raise BindingError(
                f"binding {binding.source}: entry 'database' must be a number, not {database!r}"
            ) from None
        return cls(
            host=binding.get("host") or uri.hostname or "localhost",
            port=int(binding.get("port") or uri.port or DEFAULT_PORT),
            database=number,
            username=binding.get("username") or _uri.unquoted(uri.username),
            password=binding.get("password") or _uri.unquoted(uri.password),
            tls=uri.scheme == TLS_SCHEME or (binding.get("tls") or "").lower() == "true",
        )
