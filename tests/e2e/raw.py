"""The end-to-end tests' view of the raw broker kits (`tests/brokers/`).

They check on the broker itself what the operator claims, and prove a connection
Secret works, with the SDKs directly and never the operator's providers. Physical
names come from the Secret's `topics.json` entry of a tag:
`{"name": ..., "subscriptions": {sub: physical}}`. The stack's settings are read
from the environment (`. .testenv/env`), never written to it.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from tests.brokers import kit

Entry = Mapping[str, Any]


async def exists(type_: str, entry: Entry) -> bool:
    """Whether the topic of `entry` and all its subscriptions exist on the local broker."""
    subs = dict(entry.get("subscriptions") or {})
    found: bool = await kit(type_).exists(os.environ, entry.get("name"), subs)
    return found


async def delete_out_of_band(type_: str, entry: Entry) -> None:
    """Delete a topic (and its subscriptions) behind the operator's back."""
    subs = dict(entry.get("subscriptions") or {})
    await kit(type_).delete_out_of_band(os.environ, entry.get("name"), subs)


async def publish_with_secret(secret: Mapping[str, str], entry: Entry, payload: bytes) -> None:
    """Publish one message using only the connection Secret's entries."""
    subs = dict(entry.get("subscriptions") or {})
    await kit(secret["type"]).publish(secret, entry.get("name"), subs, payload)


async def receive_with_secret(
    secret: Mapping[str, str], entry: Entry, subscription: str, *, timeout: float = 30
) -> list[bytes]:
    """Receive (and acknowledge) what waits on one subscription, using the Secret only."""
    physical = entry["subscriptions"][subscription]
    got: list[bytes] = await kit(secret["type"]).receive(
        secret, entry.get("name"), physical, timeout
    )
    return got


def payload() -> bytes:
    return f"e2e-{uuid.uuid4().hex}".encode()


def redis_url_parts() -> tuple[str, int]:
    url = urllib.parse.urlparse(os.environ["REDIS_URL"])
    return url.hostname or "127.0.0.1", url.port or 6379
