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
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

import tenacity

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
    #: Seconds an operation keeps retrying a lost connection (with backoff), or waits
    #: on a broker that does not answer, before it raises `BrokerUnreachableError`.
    retry_timeout: float = 30.0
    #: Messages fetched ahead per consumer (RabbitMQ prefetch, batch sizes).
    prefetch: int = 100
    #: Seconds a subscription waits on open for the broker to assign it work (Kafka).
    ready_timeout: float = 30.0


@dataclasses.dataclass(frozen=True)
class DeadLetterMarks:
    """What a broker that dead-letters by itself wrote on a message it moved: the
    physical name of the subscription it left, its delivery count, and the headers
    that carried them (dropped once read into the common ones)."""

    source: str
    count: str
    headers: tuple[str, ...]


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

    async def ack_many(self, messages: list[message_.Message]) -> None:
        """Ack messages fetched by this consumer, as `settle` does one by one."""
        ...

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


#: Backoff between attempts while the broker is unreachable: 0.1 s doubling to 2 s, with jitter.
_BACKOFF = tenacity.wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1)
#: The wait after the first failed attempt, before the retryer takes over.
_FIRST_BACKOFF = 0.1
#: An attempt that gets no answer for this long is reported as a lost connection (a
#: frozen broker or a black-holed network closes nothing, so no error would tell).
STALL = 5.0


class Link:
    """What the client knows about one connection: up, or lost since when.

    It logs one WARNING when the connection is lost and one INFO when it is back,
    with how long that took; failed attempts in between log at DEBUG only
    (docs/messaging.md, "Through a broker restart").
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lost_at: float | None = None
        #: Attempts in flight that got no answer for `STALL` seconds (yet).
        self._stalled = 0

    def lost(self, reason: str, *, since: float | None = None) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic() if since is None else since
            log.warning("%s: connection lost (%s); reconnecting", self.name, reason)

    def stalled(self, reason: str, *, since: float) -> None:
        """An attempt still in flight got no answer for `STALL` seconds: lost, until it
        and every other stalled attempt have ended. Without that count, a broker that
        answers each of many concurrent calls slowly logged a loss and a recovery per
        call: hundreds of lines for one slow batch."""
        self._stalled += 1
        self.lost(reason, since=since)

    def unstalled(self) -> None:
        """A stalled attempt ended, answered or failed."""
        self._stalled -= 1

    def restored(self) -> None:
        if self._lost_at is not None and not self._stalled:
            took = time.monotonic() - self._lost_at
            self._lost_at = None
            log.info("%s: connection back after %.1fs", self.name, took)


def error_for(
    failure: errors.Failure | None, text: str, *, missing: str = "the topic"
) -> errors.DuctapeError | None:
    """The client side's error for a failure a broker's `classify` found (None: not an
    exception of the SDK, re-raised as is). `missing` names what NOT_FOUND means.

    A throttled request is retried like a lost connection (`retrying`).
    """
    if failure is None:
        return None
    if failure is errors.Failure.AUTH:
        return errors.BrokerAuthError(text)
    if failure in (errors.Failure.UNREACHABLE, errors.Failure.THROTTLED):
        return errors.BrokerUnreachableError(text)
    if failure is errors.Failure.NOT_FOUND:
        return errors.ProvisioningError(f"{text} (is {missing} provisioned?)", retriable=True)
    return errors.BrokerError(text, retriable=failure is not errors.Failure.INVALID)


class Retrier:
    """`retrying` with a transport's name, error mapping and retry budget bound once:
    a transport's `retrying(operation, what, link, wait=...)`."""

    def __init__(
        self,
        name: str,
        options: Options,
        map_error: Callable[[BaseException], errors.DuctapeError | None],
    ) -> None:
        self.name = name
        self._options = options
        self._map_error = map_error

    def __call__(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        link: Link,
        *,
        wait: float = 0.0,
    ) -> Awaitable[T]:
        return retrying(
            operation,
            what=f"{self.name} {what}",
            timeout=self._options.retry_timeout,
            map_error=self._map_error,
            link=link,
            wait=wait,
        )


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    timeout: float,
    map_error: Callable[[BaseException], errors.DuctapeError | None],
    link: Link | None = None,
    wait: float = 0.0,
) -> T:
    """Run `operation`, retrying with backoff while the broker is unreachable.

    `map_error` turns an SDK exception into the project's (None: not ours, re-raise
    as is). Only `BrokerUnreachableError` is retried, and for `timeout` seconds
    from the first attempt in all: an attempt still waiting on a frozen broker
    then is cut off too, so the caller gets `BrokerUnreachableError` after about
    `timeout` seconds, never much later (0: one attempt, not cut off). A future
    the SDK cancelled because its connection closed counts as unreachable, a
    cancellation of the caller's own task is passed on. `link`, when given, is
    told about losses and recoveries (it does the logging). `wait` is how long the
    operation itself waits by design (a long poll for messages): it is added to the
    budget and to the stall warning's `STALL`, so a quiet subscription is never taken for
    a broker that does not answer.
    """
    budget = timeout + wait
    stall_after = STALL + wait
    deadline = time.monotonic() + budget
    last: list[errors.DuctapeError] = []

    async def attempt() -> T:
        task = asyncio.current_task()
        at = time.monotonic()
        stall = None
        stalled = False
        if link is not None:

            def no_answer() -> None:
                nonlocal stalled
                stalled = True
                link.stalled(f"{what}: no answer in {stall_after:.0f}s", since=at)

            stall = asyncio.get_running_loop().call_later(stall_after, no_answer)
        try:
            result = await operation()
        except asyncio.CancelledError as exc:
            if task is None or task.cancelling():
                raise
            # Not us: the SDK cancelled what we awaited because its connection went.
            mapped: errors.DuctapeError | None = errors.BrokerUnreachableError(
                f"{what}: cancelled by the client library (connection closed)"
            )
            error: BaseException = exc
        except Exception as exc:
            mapped = exc if isinstance(exc, errors.DuctapeError) else map_error(exc)
            if mapped is None:
                raise
            error = exc
        else:
            if link is not None:
                if stalled:
                    stalled = False
                    link.unstalled()
                link.restored()
            return result
        finally:
            if stall is not None:
                stall.cancel()
            if stalled:
                assert link is not None
                link.unstalled()
        assert mapped is not None
        if isinstance(mapped, errors.BrokerUnreachableError):
            last[:] = [mapped]
            if link is not None:
                link.lost(mapped.message, since=at)
        if mapped is error:
            raise mapped
        raise mapped from error

    def backoff(state: tenacity.RetryCallState) -> float:
        # Never sleep past the deadline: the last attempt runs right at it.
        return max(0.0, min(_BACKOFF(state), deadline - time.monotonic()))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        # The first attempt ran before the retryer: its attempts are the second on.
        log.debug("%s: %s; attempt %d, retrying", what, failure, state.attempt_number + 1)

    if timeout <= 0:
        return await attempt()
    window = asyncio.timeout(budget)
    try:
        async with window:
            # The first attempt goes without the retry machinery: building and running
            # tenacity's retryer costs about 50 µs, paid on every fetch, ack batch and
            # publish, while nearly every call succeeds at once.
            try:
                return await attempt()
            except errors.BrokerUnreachableError as exc:
                log.debug("%s: %s; attempt 1, retrying", what, exc)
            await asyncio.sleep(min(_FIRST_BACKOFF, max(0.0, deadline - time.monotonic())))
            retryer: tenacity.AsyncRetrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=backoff,
                retry=tenacity.retry_if_exception_type(errors.BrokerUnreachableError),
                before_sleep=before_sleep,
                reraise=True,
            )
            return await retryer(attempt)
    except TimeoutError as exc:
        if not window.expired():
            raise
        if last:
            error = last[0]
            raise error from error.__cause__
        raise errors.BrokerUnreachableError(
            f"{what}: no answer from the broker in {budget:g}s"
        ) from exc


class Batcher(Generic[T]):
    """Coalesces acknowledgements: queued now, sent together soon after.

    `add` returns at once; the items added within one turn of the event loop
    (a whole batch the application acks in a row) go out in one call, or with
    `linger` those added within that many seconds. `flush` sends everything
    added so far without waiting out the linger. A failed send is logged: the
    broker then delivers those messages again, which at-least-once allows.
    """

    def __init__(
        self, send: Callable[[list[T]], Awaitable[None]], what: str, *, linger: float = 0.0
    ) -> None:
        self._send = send
        self._what = what
        self._linger = linger
        self._items: list[T] = []
        self._task: asyncio.Task[None] | None = None
        #: True while the task waits out the linger (has taken no items yet).
        self._lingering = False

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._task is None or self._task.done():
            self._start()

    def extend(self, items: Iterable[T]) -> None:
        self._items.extend(items)
        if self._task is None or self._task.done():
            self._start()

    def _start(self) -> None:
        self._lingering = self._linger > 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        if self._lingering:
            await asyncio.sleep(self._linger)
            self._lingering = False
        await self._drain()

    async def _drain(self) -> None:
        while self._items:
            items, self._items = self._items, []
            try:
                await self._send(items)
            except Exception as exc:
                log.warning("%s of %d messages failed: %s", self._what, len(items), exc)

    async def flush(self) -> None:
        task = self._task
        if task is not None and not task.done() and self._lingering:
            # Still lingering, so it took nothing: cut it short, send below.
            task.cancel()
            await asyncio.wait([task])
            self._lingering = False
        while self._task is not None and not self._task.done():
            await self._task
        if self._items:
            await self._drain()
