"""Kafka's entries of the connection Secret: written by the operator side, read back by the
client side, with one definition of names and defaults (README.md, "The connection
Secret").

The TLS material (`ca.crt`, `tls.crt`, `tls.key`) is written and read by `tls.Material`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ductape_operator.messaging import binding as binding_

PLAINTEXT = "PLAINTEXT"
#: The SASL mechanism when the Secret names none.
DEFAULT_SASL_MECHANISM = "PLAIN"


def security_protocol(*, tls: bool, sasl: bool) -> str:
    """Kafka's `security.protocol` for TLS on or off, SASL on or off."""
    if sasl:
        return "SASL_SSL" if tls else "SASL_PLAINTEXT"
    return "SSL" if tls else PLAINTEXT


@dataclasses.dataclass(frozen=True)
class Entries:
    """One Kafka cluster, and the SASL login to use it."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str = PLAINTEXT
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """The bootstrap servers, without credentials."""
        return "kafka://" + ",".join(self.bootstrap_servers)

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        entries = {
            "uri": self.endpoint,
            "bootstrap-servers": ",".join(self.bootstrap_servers),
            "security-protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            entries["sasl-mechanism"] = self.sasl_mechanism
        if self.username is not None:
            entries["username"] = self.username
        if self.password is not None:
            entries["password"] = self.password
        return entries

    @classmethod
    def read(cls, binding: binding_.Binding) -> Entries:
        """The entries of a binding (the client side); with SASL, the login is required."""
        protocol = (binding.get("security-protocol") or PLAINTEXT).upper()
        servers = binding.require("bootstrap-servers").split(",")
        entries = cls(
            bootstrap_servers=tuple(s.strip() for s in servers if s.strip()),
            security_protocol=protocol,
        )
        if not entries.sasl:
            return entries
        return dataclasses.replace(
            entries,
            sasl_mechanism=(binding.get("sasl-mechanism") or DEFAULT_SASL_MECHANISM).upper(),
            username=binding.require("username"),
            password=binding.require("password"),
        )
