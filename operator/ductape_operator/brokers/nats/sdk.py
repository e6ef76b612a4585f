"""Building a nats-py connection, the same way on both sides.

The connection does not reconnect by itself (`allow_reconnect=False`): a server
restart closes it, and whoever holds it opens a new one on the next use, under its
own retry policy (the operator at its next round, the client within
`retry_timeout`: docs/messaging.md, "Through a broker restart"). One attempt per
server per connect, so a down server fails fast instead of in nats-py's 60 rounds.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats.errors
from nats.aio.client import Client, RawCredentials

from ductape_operator.brokers.nats.entries import Entries

logger = logging.getLogger(__name__)


class LastError:
    """nats-py's error callback: keeps the last error, `errors.classify`'s `cause` (a
    connect that fails raises only `NoServersError`)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    async def callback(self, exc: Exception) -> None:
        # nats-py takes only a coroutine function here, not an awaitable-returning object.
        self.error = exc
        logger.debug("nats: %s", exc)


class _Client(Client):
    """nats-py's client, refusing a server that does not require TLS when TLS is wanted.

    nats-py upgrades to TLS only when the server's INFO says `tls_required`; else it
    sends CONNECT, the password included, in plain text, whatever the client asked
    for. Like the Go client, refuse such a server before anything is sent
    (`SecureConnWantedError`: TLSFailed, README.md "Secure connections").
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and "tls" in self.options and not info.get("tls_required"):
            raise nats.errors.SecureConnWantedError
        await super()._process_info(info, initial_connection)


async def connect(
    connection: Entries,
    *,
    timeout: float,
    name: str,
    last_error: LastError,
    tls_context: ssl.SSLContext | None = None,
) -> Client:
    """An open connection to the first server that answers; raises nats-py's errors."""
    # Seconds as floats: nats-py annotates them `int` but hands them to asyncio as they are.
    options: dict[str, Any] = {"connect_timeout": timeout, "reconnect_time_wait": 0.1}
    if connection.credentials:
        options["user_credentials"] = RawCredentials(connection.credentials)
    elif connection.username:
        options["user"] = connection.username
        options["password"] = connection.password or ""
    if connection.tls:
        options["tls"] = tls_context or ssl.create_default_context()
    client = _Client()
    await client.connect(
        list(connection.servers),
        name=name,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        error_cb=last_error.callback,
        **options,
    )
    return client
