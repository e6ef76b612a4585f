"""The small interface each provider's transport implements, and what they share.

A transport owns the connections to one broker. `publish` sends a batch of
messages to one topic and returns only once the broker has taken every one of
them (or raises); `consumer` builds a `Consumer` for one subscription. Each
transport module is the only place its SDK is imported, and maps the SDK's
errors to `ductape_operator.errors` there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from ductape_operator import errors
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Options:
    """Client settings shared by every transport."""

    #: Seconds after which a delivered message that was neither acked nor nacked
    #: is delivered again.
    redelivery_timeout: float = 10.0
    #: Seconds to keep retrying a connection loss (with backoff) before raising.
    retry_timeout: float = 30.0
    #: Messages fetched ahead per consumer (RabbitMQ prefetch, batch sizes).
    prefetch: int = 100
    #: Seconds a subscription waits on open for the broker to assign it work (Kafka).
    ready_timeout: float = 30.0


class Consumer(Protocol):
    """One consumer in one subscription."""

    #: True when the broker never redelivers an unsettled message by itself while
    #: the consumer is connected, so the client nacks it after the redelivery timeout.
    client_redelivery: bool

    async def start(self) -> None:
        """Connect and join the subscription; return once messages can flow."""
        ...

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        """Up to `max_messages`, waiting at most about `timeout` seconds for the first."""
        ...

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None: ...

    async def aclose(self) -> None:
        """Send pending acknowledgements and leave the subscription."""
        ...


class Transport(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None: ...

    def consumer(
        self, route: binding_.TopicRoute, subscription: str, physical: str, options: Options
    ) -> Consumer: ...


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    timeout: float,
    map_error: Callable[[BaseException], errors.DuctapeError | None],
) -> T:
    """Run `operation`, retrying with exponential backoff while it is unreachable.

    `map_error` turns an SDK exception into the project's (None: not ours, re-raise
    as is). Only `BrokerUnreachableError` is retried, for up to `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await operation()
        except Exception as exc:
            mapped = exc if isinstance(exc, errors.DuctapeError) else map_error(exc)
            if mapped is None:
                raise
            retry = isinstance(mapped, errors.BrokerUnreachableError)
            if not retry or time.monotonic() > deadline:
                if mapped is exc:
                    raise
                raise mapped from exc
        log.warning("%s: %s; retrying in %.1fs", what, mapped.message, delay)
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0) * (0.8 + 0.4 * random.random())


class Batcher(Generic[T]):
    """Coalesces acknowledgements: queued now, sent together soon after.

    `add` returns at once; the items added within one turn of the event loop
    (a whole batch the application acks in a row) go out in one call. `flush`
    waits for everything added so far. A failed send is logged: the broker then
    delivers those messages again, which at-least-once allows.
    """

    def __init__(self, send: Callable[[list[T]], Awaitable[None]], what: str) -> None:
        self._send = send
        self._what = what
        self._items: list[T] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._items:
            items, self._items = self._items, []
            try:
                await self._send(items)
            except Exception as exc:
                log.warning("%s of %d messages failed: %s", self._what, len(items), exc)

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task
        if self._items:
            await self._run()
