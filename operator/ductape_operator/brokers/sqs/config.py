"""SQS's config fields (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ductape_operator import schema


class SQSConfig(schema.ConfigModel):
    """An env's AWS SQS region and account."""

    region: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z0-9-]+$",
            description="AWS region, e.g. eu-west-1 (required).",
        ),
    ] = None
    endpoint: Annotated[
        str | None,
        Field(
            max_length=2048,
            pattern=schema.URL_PATTERN,
            description="endpoint URL, for SQS-compatible servers.",
        ),
    ] = None
    access_key_id: Annotated[
        schema.SecretRef | None, Field(description="access key id, from a Secret.")
    ] = None
    secret_access_key: Annotated[
        schema.SecretRef | None, Field(description="secret access key, from a Secret.")
    ] = None


MODEL = SQSConfig
