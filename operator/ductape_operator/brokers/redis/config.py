"""Redis's config fields (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ductape_operator import schema
from ductape_operator.brokers.redis.entries import DEFAULT_PORT


class RedisConfig(schema.TrustFields):
    """An env's Redis connection."""

    host: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=schema.HOST_MAX_LENGTH,
            pattern=schema.HOST_PATTERN,
            description="server host name or IPv4 address (required).",
        ),
    ] = None
    port: Annotated[schema.Port | None, Field(description="server port.")] = None
    username: Annotated[str | None, Field(max_length=253, description="user name.")] = None
    password: Annotated[schema.SecretRef | None, Field(description="password, from a Secret.")] = (
        None
    )
    db: Annotated[
        int | None,
        Field(ge=0, le=1023, strict=True, description="database number (default 0)."),
    ] = None
    tls: Annotated[schema.Flag | None, Field(description="connect with TLS.")] = None


MODEL = RedisConfig
#: What the API's description of a field adds for this type, e.g. `REDIS (default 6379)`.
NOTES = {"port": f"default {DEFAULT_PORT}"}
