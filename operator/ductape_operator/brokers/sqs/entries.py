"""SQS's entries of the connection Secret: written by the operator side, read back by the
client side, with one definition of names (README.md, "The connection Secret")."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ductape_operator.messaging import binding as binding_


@dataclasses.dataclass(frozen=True)
class Entries:
    """One AWS region (or SQS-compatible endpoint), and the keys to use it."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """Where the queues are, without credentials."""
        return self.endpoint_url or f"sqs://{self.region}"

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        entries = {"uri": self.endpoint, "region": self.region}
        if self.endpoint_url:
            entries["endpoint"] = self.endpoint_url
        if self.access_key_id:
            entries["access-key-id"] = self.access_key_id
        if self.secret_access_key:
            entries["secret-access-key"] = self.secret_access_key
        return entries

    @classmethod
    def read(cls, binding: binding_.Binding) -> Entries:
        """The entries of a binding (the client side)."""
        return cls(
            region=binding.require("region"),
            endpoint_url=binding.get("endpoint"),
            access_key_id=binding.get("access-key-id"),
            secret_access_key=binding.get("secret-access-key"),
        )
