"""Pub/Sub's entries of the connection Secret: written by the operator side, read back by
the client side, with one definition of names (README.md, "The connection Secret")."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ductape_operator.messaging import binding as binding_


@dataclasses.dataclass(frozen=True)
class Entries:
    """One Google Cloud project (or emulator), and the key to use it."""

    project_id: str
    emulator_host: str | None = None
    #: A service-account JSON key; None: the ambient credentials (workload identity).
    credentials_json: str | None = dataclasses.field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """Where the project is, without credentials."""
        if self.emulator_host:
            return f"http://{self.emulator_host}/projects/{self.project_id}"
        return f"pubsub://projects/{self.project_id}"

    def write(self) -> dict[str, str]:
        """The Secret's entries (the operator side)."""
        entries = {"uri": self.endpoint, "project-id": self.project_id}
        if self.emulator_host:
            entries["emulator-host"] = self.emulator_host
        if self.credentials_json:
            entries["credentials.json"] = self.credentials_json
        return entries

    @classmethod
    def read(cls, binding: binding_.Binding) -> Entries:
        """The entries of a binding (the client side)."""
        return cls(
            project_id=binding.require("project-id"),
            emulator_host=binding.get("emulator-host"),
            credentials_json=binding.get("credentials.json"),
        )
