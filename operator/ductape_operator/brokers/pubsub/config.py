"""Pub/Sub's config fields (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ductape_operator import schema


class PubSubConfig(schema.ConfigModel):
    """An env's Google Cloud Pub/Sub project."""

    project_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^[a-z][-a-z0-9]*[a-z0-9]$",
            description="Google Cloud project id (required).",
        ),
    ] = None
    credentials: Annotated[
        schema.SecretRef | None,
        Field(description="service-account JSON key, from a Secret."),
    ] = None
    emulator_host: Annotated[
        schema.HostPort | None,
        Field(description="host:port of a Pub/Sub emulator."),
    ] = None


MODEL = PubSubConfig
