"""Building the aioboto3 SQS client, the same way for the operator side and the client
side; each side brings its own timeouts and retries (`botocore.config.Config`)."""

from __future__ import annotations

import contextlib
from typing import Any

import aioboto3
from botocore.config import Config

from ductape_operator.brokers.sqs.entries import Entries


async def open_client(entries: Entries, config: Config, stack: contextlib.AsyncExitStack) -> Any:
    """An SQS client for `entries`, closed with `stack`."""
    session = aioboto3.Session(
        region_name=entries.region,
        aws_access_key_id=entries.access_key_id,
        aws_secret_access_key=entries.secret_access_key,
    )
    return await stack.enter_async_context(
        session.client("sqs", endpoint_url=entries.endpoint_url, config=config)
    )
