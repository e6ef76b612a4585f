"""Kafka's config fields (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from ductape_operator import schema


class SaslMechanism(enum.StrEnum):
    """SASL mechanism for Kafka."""

    PLAIN = "plain"
    SCRAM_SHA_256 = "scram-sha-256"
    SCRAM_SHA_512 = "scram-sha-512"


class KafkaSasl(schema.ApiModel):
    """SASL authentication for Kafka."""

    mechanism: Annotated[SaslMechanism, Field(description="SASL mechanism.")]
    username: Annotated[str, Field(min_length=1, max_length=253, description="SASL username.")]
    password: Annotated[schema.SecretRef, Field(description="SASL password, from a Secret.")]


class KafkaConfig(schema.TrustFields):
    """An env's Kafka connection."""

    brokers: Annotated[
        list[schema.HostPort] | None,
        Field(
            min_length=1,
            max_length=64,
            description="bootstrap servers, each host:port (required).",
        ),
    ] = None
    client_id: Annotated[
        str | None, Field(max_length=253, description="client id the operator uses.")
    ] = None
    group_id: Annotated[
        str | None,
        Field(max_length=253, description="default consumer group id for applications."),
    ] = None
    ssl: Annotated[schema.Flag | None, Field(description="connect with TLS.")] = None
    sasl: Annotated[KafkaSasl | None, Field(description="SASL authentication.")] = None
    replication_factor: Annotated[
        int | None,
        Field(
            ge=1,
            le=32,
            strict=True,
            description="replication factor of created topics (default: the broker's).",
        ),
    ] = None


MODEL = KafkaConfig
