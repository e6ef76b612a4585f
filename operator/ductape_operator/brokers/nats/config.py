"""NATS's config fields (docs/reference.md, "NATS")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ductape_operator import schema

#: One server URL: `nats://` or `tls://`, a host name or IPv4 address, a port. No user
#: info: a credential never goes in a plain field.
SERVER_PATTERN = (
    r"^(nats|tls)://" + schema.HOST_PORT_PATTERN.removeprefix("^").removesuffix("$") + "$"
)
MAX_SERVERS = 64

ServerUrl = Annotated[
    str, Field(min_length=10, max_length=schema.HOST_MAX_LENGTH + 13, pattern=SERVER_PATTERN)
]


class NatsConfig(schema.TrustFields):
    """An env's NATS servers and account credentials."""

    servers: Annotated[
        list[ServerUrl] | None,
        Field(
            min_length=1,
            max_length=MAX_SERVERS,
            description="server URLs, each nats://host:port or tls://host:port (required).",
        ),
    ] = None
    username: Annotated[str | None, Field(max_length=253, description="user name.")] = None
    password: Annotated[schema.SecretRef | None, Field(description="password, from a Secret.")] = (
        None
    )
    credentials: Annotated[
        schema.SecretRef | None,
        Field(
            description=(
                "a .creds file (JWT and NKey seed), instead of username and password;"
                " from a Secret."
            )
        ),
    ] = None
    tls: Annotated[schema.Flag | None, Field(description="connect with TLS.")] = None


MODEL = NatsConfig


def problems(config: NatsConfig) -> list[str]:
    """The rules between fields the schema does not state; the operator side reports
    them as InvalidConfig."""
    found = []
    if not config.servers:
        found.append("NATS: config.servers is required")
    if config.credentials is not None and (config.username or config.password):
        found.append("NATS: config.credentials and config.username/password are exclusive")
    if (config.username is None) != (config.password is None):
        found.append("NATS: config.username and config.password must be set together")
    return found
