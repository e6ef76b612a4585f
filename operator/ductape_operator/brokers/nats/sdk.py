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

import nats
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


async def connect(
    connection: Entries,
    *,
    timeout: float,
    name: str,
    last_error: LastError,
    tls_context: ssl.SSLContext | None = None,
) -> Client:
    """An open connection to the first server that answers; raises nats-py's errors."""
    options: dict[str, object] = {}
    if connection.credentials:
        options["user_credentials"] = RawCredentials(connection.credentials)
    elif connection.username:
        options["user"] = connection.username
        options["password"] = connection.password or ""
    if connection.tls:
        options["tls"] = tls_context or ssl.create_default_context()
    return await nats.connect(
        list(connection.servers),
        name=name,
        connect_timeout=timeout,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=last_error.callback,
        **options,
    )
