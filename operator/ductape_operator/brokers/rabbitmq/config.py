"""RabbitMQ's config fields (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ductape_operator import schema
from ductape_operator.brokers.rabbitmq.entries import DEFAULT_PORT


class RabbitMQConfig(schema.TrustFields):
    """An env's RabbitMQ connection."""

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
    tls: Annotated[schema.Flag | None, Field(description="connect with TLS.")] = None
    vhost: Annotated[
        str | None,
        Field(min_length=1, max_length=253, description='virtual host (default "/").'),
    ] = None


MODEL = RabbitMQConfig
#: What the API's description of a field adds for this type, e.g. `RABBITMQ (default 5672)`.
NOTES = {"port": f"default {DEFAULT_PORT}"}
