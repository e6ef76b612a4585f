"""`Broker` and `Subscription`: the application's whole API.

A `Broker` is built from a binding (the connection Secret) and knows topics only
by tag; the transport for the binding's type is imported when the broker is
created, so an application needs only its own provider's SDK installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_
from ductape_operator.messaging import metrics as metrics_

if TYPE_CHECKING:
    from ductape_operator import models

log = logging.getLogger(__name__)

#: Headers a dead-lettered message gains (docs/messaging.md, "Dead letters and retention").
DEAD_LETTER_TOPIC_HEADER = "dead-letter-topic"
DEAD_LETTER_SUBSCRIPTION_HEADER = "dead-letter-subscription"
DEAD_LETTER_COUNT_HEADER = "dead-letter-delivery-count"
#: A broker that dead-letters by itself marks messages its own way; its client side reads
#: the marks (`BrokerKind.dead_letter_marks`) into the headers above, so every provider's
#: dead letters read alike.
#: Message ids whose deliveries a subscription counts itself (where the broker does not).
_MAX_COUNTED = 100_000
#: Messages handed over one by one within this many seconds share one redelivery watch entry.
_WATCH_GROUP = 0.001
#: Messages per broker operation of `publish_many` (docs/messaging.md, "Large batches"). Each
#: chunk is one operation with its own retry budget and stall warning, so a large batch is
#: neither reported as a lost connection nor cut off at `retry_timeout` while the broker
#: keeps answering, and an interrupted chunk sends only its own messages again.
PUBLISH_CHUNK = 5_000


class _Watched:
    """Messages handed over together, due for redelivery together (`Subscription._arm`)."""

    __slots__ = ("due", "messages", "opened", "start")

    def __init__(self, due: float, messages: list[message_.Message]) -> None:
        #: When the unsettled ones are nacked; moved later as messages join the entry.
        self.due = due
        #: When the entry was opened: messages join it for `_WATCH_GROUP` seconds only.
        self.opened = due
        self.messages = messages
        #: Every message before this index is settled.
        self.start = 0


def _make_transport(binding: binding_.Binding, options: _transport.Options) -> Any:
    """The client side of the binding's broker, imported now (with its SDK)."""
    return binding_.kind_of(binding).transport_factory()(binding, options)


class Broker:
    """Publish and subscribe by topic tag on whatever broker the binding names.

        async with Broker.from_binding() as broker:
            await broker.publish("order-created", {"id": 42})
            async with broker.subscribe("order-created", "billing") as messages:
                async for message in messages:
                    print(message.json())
                    await message.ack()

    `redelivery_timeout`: seconds after which a message neither acked nor nacked
    is delivered again. `retry_timeout`: seconds a lost connection is retried
    (with backoff) before an operation raises `BrokerUnreachableError`.
    `prefetch`: messages a consumer fetches ahead. `metrics`: export the client's
    metrics in prometheus-client's default registry (`enable_metrics()`, docs/messaging.md).
    """

    def __init__(
        self,
        binding: binding_.Binding,
        *,
        redelivery_timeout: float = 10.0,
        retry_timeout: float = 30.0,
        prefetch: int = 100,
        ready_timeout: float = 30.0,
        metrics: bool = False,
    ) -> None:
        if redelivery_timeout <= 0 or retry_timeout < 0 or prefetch < 1:
            raise ValueError("redelivery_timeout > 0, retry_timeout >= 0 and prefetch >= 1")
        if metrics:
            metrics_.enable()
        self.binding = binding
        self.options = _transport.Options(
            redelivery_timeout=redelivery_timeout,
            retry_timeout=retry_timeout,
            prefetch=prefetch,
            ready_timeout=ready_timeout,
        )
        self._transport = cast(_transport.Transport, _make_transport(binding, self.options))
        self._started = False
        self._subscriptions: set[Subscription] = set()

    @classmethod
    def from_binding(
        cls,
        name: str | None = None,
        *,
        mapping: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        path: str | os.PathLike[str] | None = None,
        env_prefix: str = binding_.ENV_PREFIX,
        **options: Any,
    ) -> Broker:
        """A broker from `$SERVICE_BINDING_ROOT/<name>/`, `DUCTAPE_*` variables or a mapping.

        See `Binding.load` for the search order; `options` are the constructor's.
        """
        found = binding_.Binding.load(
            name, mapping=mapping, environ=environ, path=path, env_prefix=env_prefix
        )
        return cls(found, **options)

    async def start(self) -> None:
        if not self._started:
            await self._transport.start()
            self._started = True

    async def aclose(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._started:
            self._started = False
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def publish(
        self,
        topic: str,
        message: message_.Payload,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message to a topic tag; return its id once the broker has it.

        `message` is bytes, str or a JSON-serialisable object. `key` is the Kafka
        message key (partitioning) and the RabbitMQ routing key (default: the
        topic's physical name); other providers keep it as the message key only.
        Raises a `BrokerError` when the message could not be delivered.
        """
        out = message_.OutgoingMessage.build(
            message, key=key, headers=headers, message_id=message_id
        )
        await self._publish(topic, [out])
        return out.id

    async def publish_many(
        self,
        topic: str,
        messages: Iterable[message_.Payload],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Publish several messages in as few round trips as the provider allows.

        Returns their ids in order once the broker has every one of them; raises
        if any could not be delivered (some others may have been).
        """
        batch = message_.OutgoingMessage.build_many(messages, key=key, headers=headers)
        if batch:
            await self._publish(topic, batch)
        return [m.id for m in batch]

    async def _publish(self, topic: str, batch: list[message_.OutgoingMessage]) -> None:
        route = self.binding.topic(topic)
        if not self._started:
            await self.start()
        started = time.monotonic()
        if len(batch) <= PUBLISH_CHUNK:
            await self._transport.publish(route, batch)
        else:
            for i in range(0, len(batch), PUBLISH_CHUNK):
                await self._transport.publish(route, batch[i : i + PUBLISH_CHUNK])
        metrics_.published(topic, len(batch), time.monotonic() - started)

    def subscribe(
        self,
        topic: str,
        subscription: str,
        *,
        prefetch: int | None = None,
        redelivery_timeout: float | None = None,
    ) -> Subscription:
        """Consume one subscription of a topic tag.

        Use it as `async with broker.subscribe(...) as messages: async for m in messages`;
        consumers of the same subscription share its messages, and every
        subscription gets every message.
        """
        physical = self.binding.subscription(topic, subscription)
        options = self.options
        if prefetch is not None or redelivery_timeout is not None:
            options = _transport.Options(
                redelivery_timeout=redelivery_timeout or options.redelivery_timeout,
                retry_timeout=options.retry_timeout,
                prefetch=prefetch or options.prefetch,
                ready_timeout=options.ready_timeout,
            )
        route = self.binding.topic(topic)
        consumer = self._transport.consumer(route, subscription, physical, options)
        return Subscription(self, consumer, options, dead_letter=route.dead_letter)


class Subscription:
    """An async iterator of `Message`s (and an async context manager that closes it)."""

    def __init__(
        self,
        broker: Broker,
        consumer: _transport.Consumer,
        options: _transport.Options,
        *,
        dead_letter: models.DeadLetterSpec | None = None,
    ) -> None:
        self._broker = broker
        self._dead_letter = dead_letter
        #: Deliveries seen per message id, for dead letters (the broker's count wins
        #: when it is higher): a count that restarts with the consumer.
        self._counts: OrderedDict[str, int] = OrderedDict()
        #: Physical subscription name -> (topic tag, subscription), for messages the
        #: broker itself dead-lettered.
        self._read_marks = binding_.kind_of(broker.binding).dead_letter_reader()
        self._sources = {
            physical: (route.tag, name)
            for route in broker.binding.topics.values()
            for name, physical in route.subscriptions.items()
        }
        self._consumer = consumer
        self._options = options
        self._buffer: deque[message_.Message] = deque()
        self._started = False
        self._closed = False
        self._watch: deque[_Watched] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        #: The running loop, looked up once: `_arm` runs for every message.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("subscription is closed")
        if not self._started:
            await self._broker.start()
            await self._consumer.start()
            self._started = True
            self._broker._subscriptions.add(self)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker._subscriptions.discard(self)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._watch.clear()
        # Unsettled buffered messages simply go back: the broker redelivers them.
        self._buffer.clear()
        if self._expiring:
            await asyncio.gather(*self._expiring, return_exceptions=True)
        if self._started:
            await self._consumer.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> message_.Message:
        buffer = self._buffer
        if buffer:
            # `receive` inlined for what nearly every step finds, a message fetched
            # already: one coroutine per message instead of two.
            message = buffer.popleft()
            if metrics_.enabled():
                metrics_.delivered(message.topic, message.subscription)
            if self._consumer.client_redelivery:
                self._arm(message)
            return message
        received = await self.receive()
        if received is None:
            raise StopAsyncIteration
        return received

    async def receive(self, timeout: float | None = None) -> message_.Message | None:
        """The next message, or None when `timeout` seconds pass without one."""
        if not self._buffer and not await self._filled(timeout):
            return None
        message = self._buffer.popleft()
        metrics_.delivered(message.topic, message.subscription)
        if self._consumer.client_redelivery:
            self._arm(message)
        return message

    async def receive_many(
        self, max_messages: int | None = None, timeout: float | None = None
    ) -> list[message_.Message]:
        """Up to `max_messages` (default: the prefetch) messages at once, waiting for the
        first as `receive` does; `[]` when `timeout` seconds pass without one.

        The batch form of `receive`, for an application that works through messages
        in batches: one call per batch and one `ack_many` for it cost a fraction of
        an await per message (docs/messaging.md). Each message is still settled on
        its own terms: acked, nacked, or redelivered after the redelivery timeout.
        """
        if not self._buffer and not await self._filled(timeout):
            return []
        buffer = self._buffer
        count = len(buffer) if max_messages is None else max(1, min(max_messages, len(buffer)))
        if count == len(buffer):
            batch = list(buffer)
            buffer.clear()
        else:
            batch = [buffer.popleft() for _ in range(count)]
        first = batch[0]
        metrics_.delivered(first.topic, first.subscription, len(batch))
        if self._consumer.client_redelivery:
            self._arm_many(batch)
        return batch

    async def ack_many(self, messages: Iterable[message_.Message]) -> None:
        """Ack messages of this subscription, as `ack()` on each does, in one call;
        messages settled already are left alone."""
        # Marked settled here rather than through a method: this runs for every message.
        fresh = []
        for m in messages:
            if not m._settled:
                m._settled = True
                fresh.append(m)
        if not fresh:
            return
        if self._dead_letter is not None:
            for message in fresh:
                self._counts.pop(message.id, None)
        await self._consumer.ack_many(fresh)
        if metrics_.enabled():
            for m in fresh:
                metrics_.settled(
                    m.topic, m.subscription, ack=True, requeue=False, received_at=m.received_at
                )

    async def _filled(self, timeout: float | None) -> bool:
        """Fetch until the buffer has a message: False when closed or out of time."""
        if not self._started:
            await self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._closed:
                return False
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False
            batch = await self._consumer.fetch(self._options.prefetch, max(wait, 0.0))
            if self._read_marks is not None:
                for received in batch:
                    marks = self._read_marks(received.headers)
                    if marks is not None:
                        self._mark_moved_by_broker(received, marks)
            self._buffer.extend(batch)
            if self._dead_letter is not None:
                await self._dead_letter_exhausted()
        return True

    async def _dead_letter_exhausted(self) -> None:
        """Count the buffered deliveries; move those past the attempts (their earlier
        deliveries timed out) instead of handing them to the application."""
        assert self._dead_letter is not None
        kept: deque[message_.Message] = deque()
        for message in self._buffer:
            count = self._counted(message)
            message._settler = self  # nacks and timeouts pass through `settle`
            if count > self._dead_letter.max_delivery_attempts:
                # Its last delivery to the application was the one before this.
                await self._move(message, count - 1)
            else:
                kept.append(message)
        self._buffer = kept

    def _mark_moved_by_broker(
        self, message: message_.Message, marks: _transport.DeadLetterMarks
    ) -> None:
        headers = message.headers
        source = self._sources.get(marks.source)
        if source is None:
            return  # from a subscription this binding does not know: left as it came
        for name in marks.headers:
            del headers[name]
        headers[DEAD_LETTER_TOPIC_HEADER], headers[DEAD_LETTER_SUBSCRIPTION_HEADER] = source
        headers[DEAD_LETTER_COUNT_HEADER] = marks.count

    def _counted(self, message: message_.Message) -> int:
        seen = self._counts.pop(message.id, 0) + 1
        count = max(seen, message.delivery_count or 0)
        self._counts[message.id] = count
        if len(self._counts) > _MAX_COUNTED:
            self._counts.popitem(last=False)
        message.delivery_count = count
        return count

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        """Settle through the consumer; a nack of the last attempt, or without requeue,
        moves the message to the dead-letter topic instead."""
        attempts = self._dead_letter.max_delivery_attempts if self._dead_letter else None
        count = message.delivery_count or 1
        if not ack and attempts is not None and (not requeue or count >= attempts):
            await self._move(message, count)
            return
        if ack:
            self._counts.pop(message.id, None)
        await self._consumer.settle(message, ack=ack, requeue=requeue)

    async def _move(self, message: message_.Message, count: int) -> None:
        """Publish to the dead-letter topic (same data, id, headers, key; plus where it
        came from), then ack it here: at least once, never lost in between."""
        assert self._dead_letter is not None
        headers = {
            **message.headers,
            DEAD_LETTER_TOPIC_HEADER: message.topic,
            DEAD_LETTER_SUBSCRIPTION_HEADER: message.subscription,
            DEAD_LETTER_COUNT_HEADER: str(count),
        }
        moved = message_.OutgoingMessage(
            message.data,
            content_type=message.content_type,
            headers=headers,
            id=message.id,
            key=message.key,
            explicit_id=True,
        )
        await self._broker._publish(self._dead_letter.topic, [moved])
        log.info(
            "message %s of %s/%s dead-lettered to %s after %d deliveries",
            message.id,
            message.topic,
            message.subscription,
            self._dead_letter.topic,
            count,
        )
        self._counts.pop(message.id, None)
        await self._consumer.settle(message, ack=True, requeue=False)

    # The redelivery watch (where the broker does not redeliver by itself): one timer
    # for the oldest entry rather than one per message. Entries are kept in delivery
    # order and dropped from the front as soon as their messages are settled, so that
    # a settled message is not held until its timeout (at thousands a second, that is
    # memory and garbage-collector time).

    def _arm(self, message: message_.Message) -> None:
        loop = self._loop or self._running_loop()
        due = loop.time() + self._options.redelivery_timeout
        watch = self._watch
        if watch:
            front = watch[0]
            if front.messages[front.start]._settled:  # else nothing to drop
                self._prune()
        if watch and due - watch[-1].opened < _WATCH_GROUP:
            last = watch[-1]
            last.messages.append(message)
            last.due = due  # later, never earlier, than each message's own timeout
        else:
            watch.append(_Watched(due, [message]))
        if self._sweeper is None:
            self._sweeper = loop.call_at(watch[0].due, self._sweep)

    def _arm_many(self, messages: list[message_.Message]) -> None:
        # Handed over together, so due together. A copy: the list is the application's.
        loop = self._loop or self._running_loop()
        self._prune()
        due = loop.time() + self._options.redelivery_timeout
        self._watch.append(_Watched(due, list(messages)))
        if self._sweeper is None:
            self._sweeper = loop.call_at(self._watch[0].due, self._sweep)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _prune(self) -> None:
        """Drop the settled messages at the front of the watch."""
        watch = self._watch
        while watch:
            entry = watch[0]
            messages, start = entry.messages, entry.start
            end = len(messages)
            while start < end and messages[start]._settled:  # the attribute: per message
                start += 1
            if start < end:
                entry.start = start
                return
            watch.popleft()

    def _sweep(self) -> None:
        self._sweeper = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        watch = self._watch
        self._prune()
        while watch and watch[0].due <= now:
            entry = watch.popleft()
            for message in entry.messages[entry.start :]:
                if message.expire():
                    self._expire(message)
            self._prune()
        if watch:
            self._sweeper = loop.call_at(watch[0].due, self._sweep)

    def _expire(self, message: message_.Message) -> None:
        log.info(
            "message %s not settled in %ss: redelivering",
            message.id,
            self._options.redelivery_timeout,
        )
        task = asyncio.get_running_loop().create_task(self.settle(message, ack=False, requeue=True))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)
