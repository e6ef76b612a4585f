"""Kafka transport: a topic is a topic, a subscription a consumer group id.

Headers travel as Kafka record headers (UTF-8), with the message id and content
type in the reserved `ductape-id` and `ductape-content-type` headers. `publish`
hands the whole batch to the producer before awaiting the delivery of each, so
records are batched on the wire and every failure still raises (acks=all).

Consumers commit offsets themselves, only for acknowledged messages and only up
to the first unsettled one of each partition, so a crash redelivers everything
not yet acked (and what was acked in the last `COMMIT_LINGER`, 0.1 s, before
it: acks are committed together, and at once when partitions are revoked or
the subscription closes). A nack with requeue seeks the partition back to that message,
which redelivers it and what followed it; a message left unsettled past the
redelivery timeout is nacked by the client. Consumers of one subscription share
the topic's partitions: there are at most as many busy consumers as partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiokafka
import aiokafka.errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener

from ductape_operator import errors
from ductape_operator.brokers.kafka.entries import Entries
from ductape_operator.brokers.kafka.errors import classify
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

log = logging.getLogger(__name__)

#: What a commit raises when the group rebalanced since the messages were fetched.
_REBALANCED = (
    kafka_errors.CommitFailedError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.RebalanceInProgressError,
)


#: Seconds acked offsets wait to be committed together: one commit request per
#: partition set at most this often, instead of one per batch of acks (each costs
#: the consumer about as much as a fetch). A crash redelivers at most that much more.
COMMIT_LINGER = 0.1
#: Records taken from aiokafka per call, at least: it has read them ahead already (up to a
#: MiB a partition), and they are handed out `prefetch` at a time from here. Each call
#: goes through the retry wrapper (about 10 µs with `getmany`'s own): paid per call, so a
#: few times per hundred messages rather than once (README.md, "The messaging client:
#: throughput"). Nothing taken is committed before it was handed out and acked.
TAKE = 500
# Module attributes looked up once: `_messages` runs for every record.
_new = object.__new__
_Message = message_.Message
_ID_HEADER = message_.ID_HEADER
_CONTENT_TYPE_HEADER = message_.CONTENT_TYPE_HEADER
_RESERVED_PREFIX = message_.RESERVED_PREFIX
_OCTET_STREAM = message_.OCTET_STREAM


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The client side's error for an aiokafka exception (None: not one): `errors.classify`,
    shared with the operator side."""
    text = f"kafka: {type(exc).__name__}: {exc}"
    return _transport.error_for(classify(exc), text)


def make_transport(binding: binding_.Binding, options: _transport.Options) -> KafkaTransport:
    return KafkaTransport(binding, options)


def _client_kwargs(binding: binding_.Binding) -> dict[str, Any]:
    entries = Entries.read(binding)
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(entries.bootstrap_servers),
        "security_protocol": entries.security_protocol,
    }
    if entries.tls:
        kwargs["ssl_context"] = binding.tls_context()
    if entries.sasl:
        kwargs["sasl_mechanism"] = entries.sasl_mechanism
        kwargs["sasl_plain_username"] = entries.username
        kwargs["sasl_plain_password"] = entries.password
    return kwargs


class KafkaTransport:
    """One producer. aiokafka reconnects to the brokers by itself and keeps records
    until they are acknowledged; `retrying` bounds how long a publish waits on that
    (`retry_timeout`) and sends again what failed (docs/messaging.md, "Through a
    broker restart")."""

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._kwargs = _client_kwargs(binding)
        self._options = options
        self._producer: aiokafka.AIOKafkaProducer | None = None
        self.link = _transport.Link(f"kafka {','.join(self._kwargs['bootstrap_servers'])}")
        self.retrying = _transport.Retrier("kafka", options, map_error)

    @property
    def client_kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs)

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = aiokafka.AIOKafkaProducer(**self._kwargs, acks="all", linger_ms=1)

        async def connect() -> None:
            await producer.start()

        try:
            await self.retrying(connect, "connect", self.link)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        topic = route.name
        assert topic is not None
        producer = self._producer
        if producer is None:
            raise RuntimeError("broker is not started")

        async def send() -> None:
            futures: list[asyncio.Future[Any]] = []
            append = futures.append
            for m in messages:
                if m.headers or m.content_type != _OCTET_STREAM:
                    headers = [(k, v.encode()) for k, v in m.wire_headers().items()]
                else:  # what `wire_headers` gives then, without the dictionary
                    headers = [(_ID_HEADER, m.id.encode())]
                key = m.key
                append(
                    await producer.send(
                        topic,
                        m.data,
                        key=key.encode() if key is not None else None,
                        headers=headers,
                    )
                )
            await _delivered(futures)

        await self.retrying(send, "publish", self.link)

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> KafkaConsumer:
        return KafkaConsumer(self, route, subscription, physical, options)


async def _delivered(futures: list[asyncio.Future[Any]]) -> None:
    """Wait for every record's delivery; raise the first failure in send order.

    Awaited one by one rather than gathered: the producer resolves a whole batch's
    futures at once, so past the first of a batch they are done and cost no wait,
    where `asyncio.gather` schedules a callback for every record (about 1 µs each,
    README.md, "The messaging client: throughput").
    """
    try:
        for future in futures:
            await future
    except BaseException:
        # The failures after the first are retrieved too: asyncio would log each.
        for future in futures:
            if future.done():
                _retrieve(future)
            else:
                future.add_done_callback(_retrieve)
        raise


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# A message's token is its record while it is in flight, and the record's offset (an int)
# once it is done, acked or dropped (its offset may be committed): nothing is made per
# record for it (README.md, "The messaging client: throughput").


def _read_headers(m: message_.Message, record: Any) -> None:
    """A record's id, content type and application headers, in one pass over its headers
    (the reserved ones picked out); without an id header, its place in the topic."""
    headers: dict[str, str] = {}
    message_id = content_type = None
    for name, value in record.headers or ():
        if name == _ID_HEADER:
            message_id = value.decode()
        elif name == _CONTENT_TYPE_HEADER:
            content_type = value.decode()
        elif not name.startswith(_RESERVED_PREFIX):
            headers[name] = value.decode("utf-8", "replace")
    m.headers = headers
    m.id = message_id or f"{record.topic}:{record.partition}:{record.offset}"
    m.content_type = content_type or _OCTET_STREAM


def _offset(token: Any) -> int:
    return token if type(token) is int else token.offset


@dataclasses.dataclass
class _Partition:
    """Delivered, not yet committed messages of one assigned partition."""

    tp: aiokafka.TopicPartition
    #: In offset order; popped from the front as they are done.
    inflight: deque[message_.Message] = dataclasses.field(default_factory=deque)
    #: The next offset to commit, once it moved past the last commit.
    commit: int | None = None


class KafkaConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    client_redelivery = True

    def __init__(
        self,
        transport: KafkaTransport,
        route: binding_.TopicRoute,
        subscription: str,
        group: str,
        options: _transport.Options,
    ) -> None:
        assert route.name is not None
        self._transport = transport
        self.link = _transport.Link(f"kafka subscription {route.tag}/{subscription}")
        self._topic = route.name
        self._tag = route.tag
        self._subscription = subscription
        self._options = options
        self._consumer = aiokafka.AIOKafkaConsumer(
            **transport.client_kwargs,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=options.prefetch,
        )
        #: By partition number (the consumer reads one topic): what a record says.
        self._partitions: dict[int, _Partition] = {}
        #: Fetched, not yet handed out: (partition, records from `getmany`, next index).
        self._buffer: deque[tuple[aiokafka.TopicPartition, list[Any], int]] = deque()
        self._joined = asyncio.Event()
        self._commits: _transport.Batcher[aiokafka.TopicPartition] = _transport.Batcher(
            self._commit, "kafka commit", linger=COMMIT_LINGER
        )

    async def start(self) -> None:
        self._consumer.subscribe([self._topic], listener=self)

        async def connect() -> None:
            await self._consumer.start()

        await self._transport.retrying(connect, "subscribe", self.link)
        # Joining the group takes a rebalance; wait for it so that messages published
        # after the subscription is open are all seen (more consumers than partitions
        # leave some idle, hence no error when none arrives).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._joined.wait(), self._options.ready_timeout)

    # ConsumerRebalanceListener
    async def on_partitions_revoked(self, revoked: set[aiokafka.TopicPartition]) -> None:
        offsets = self._committable(revoked)
        if offsets:
            try:
                await self._consumer.commit(offsets)
            except kafka_errors.KafkaError as exc:
                log.warning("kafka: commit on revoke failed: %s", exc)
        for tp in revoked:
            self._partitions.pop(tp.partition, None)
        self._buffer = deque(b for b in self._buffer if b[0] not in revoked)

    async def on_partitions_assigned(self, assigned: set[aiokafka.TopicPartition]) -> None:
        for tp in assigned:
            if tp.partition not in self._partitions:
                self._partitions[tp.partition] = _Partition(tp)
        self._joined.set()

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        if not self._buffer:
            batches = await self._transport.retrying(
                lambda: self._consumer.getmany(
                    timeout_ms=int(timeout * 1000), max_records=max(max_messages, TAKE)
                ),
                "fetch",
                self.link,
                wait=timeout,
            )
            self._buffer.extend((tp, records, 0) for tp, records in batches.items() if records)
        # Per partition rather than per record: this runs for every message.
        out: list[message_.Message] = []
        now = time.monotonic()
        while self._buffer and len(out) < max_messages:
            tp, records, start = self._buffer.popleft()
            state = self._partitions.get(tp.partition)
            if state is None:
                continue  # revoked meanwhile
            end = min(len(records), start + max_messages - len(out))
            if end < len(records):
                self._buffer.appendleft((tp, records, end))
            if start or end < len(records):
                records = records[start:end]
            new = self._messages(records, tp, now)
            state.inflight.extend(new)
            out.extend(new)
        return out

    def _messages(
        self, records: list[Any], tp: aiokafka.TopicPartition, now: float
    ) -> list[message_.Message]:
        """Messages from one partition's records, in one loop with no call per record.

        Each is built as `message_.received` builds it, slot by slot, with that call
        inlined (half the cost of building a message: README.md, "The messaging
        client: throughput"); tests/brokers/test_kafka_unit.py holds the two alike.
        """
        out: list[message_.Message] = []
        append = out.append
        tag, subscription = self._tag, self._subscription
        for record in records:
            m = _new(_Message)
            wire = record.headers
            if len(wire) == 1 and wire[0][0] == _ID_HEADER:
                # What the client publishes without application headers: the id alone.
                m.id = wire[0][1].decode()
                m.headers = {}
                m.content_type = _OCTET_STREAM
            else:
                _read_headers(m, record)
            key = record.key
            m.key = None if key is None else key.decode("utf-8", "replace")
            value = record.value
            m.data = b"" if value is None else value
            m.topic = tag
            m.subscription = subscription
            m.delivery_count = None
            m.token = record
            m._settler = self
            m._settled = False
            m._received_at = now
            append(m)
        return out

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        record = message.token
        if type(record) is int:
            return  # done already
        state = self._partitions.get(record.partition)
        if state is None:
            return  # revoked since: it will be delivered again
        offset = record.offset
        if ack or not requeue:
            # Marked even if it was rewound since: then no partition holds it any more.
            message.token = offset
            inflight = state.inflight
            if inflight and inflight[0] is message:
                # Acked in order, as one by one they mostly are: dropped without a scan.
                inflight.popleft()
                if not inflight or type(inflight[0].token) is not int:
                    self._committed_up_to(state, offset + 1)
                    return
            self._advance(state)
            return
        if not any(m is message for m in state.inflight):
            return  # rewound since: it will be delivered again
        # Rewind: this message and everything after it in the partition come again.
        state.inflight = deque(m for m in state.inflight if _offset(m.token) < offset)
        tp = state.tp
        kept: deque[tuple[aiokafka.TopicPartition, list[Any], int]] = deque()
        for held, records, start in self._buffer:
            if held == tp:
                records = [r for r in records[start:] if r.offset < offset]
                start = 0
            if start < len(records):
                kept.append((held, records, start))
        self._buffer = kept
        self._consumer.seek(tp, offset)

    async def ack_many(self, messages: list[message_.Message]) -> None:
        # Every message marked done first, then each partition's commit point moved once:
        # a partition with nothing newly done at its front stops at its first message.
        for message in messages:
            record = message.token
            if type(record) is not int:
                message.token = record.offset
        for state in self._partitions.values():
            if state.inflight:
                self._advance(state)

    def _advance(self, state: _Partition) -> None:
        """Drop the done messages at the front; the offset after them is the next commit."""
        inflight = state.inflight
        done = 0
        for message in inflight:  # iterated, not popped one by one: per message
            if type(message.token) is not int:
                break
            done += 1
        if not done:
            return
        self._committed_up_to(state, inflight[done - 1].token + 1)
        if done == len(inflight):  # a batch acked whole: the usual case
            inflight.clear()
        else:
            for _ in range(done):
                inflight.popleft()

    def _committed_up_to(self, state: _Partition, offset: int) -> None:
        """The partition's next commit; queued once until it is sent (not once per ack)."""
        queued = state.commit is not None
        state.commit = offset
        if not queued:
            self._commits.add(state.tp)

    def _committable(self, tps: set[aiokafka.TopicPartition]) -> dict[Any, int]:
        offsets: dict[Any, int] = {}
        for tp in tps:
            state = self._partitions.get(tp.partition)
            if state is not None and state.commit is not None:
                offsets[tp] = state.commit
                state.commit = None
        return offsets

    async def _commit(self, tps: list[aiokafka.TopicPartition]) -> None:
        offsets = self._committable(set(tps))
        if offsets:
            # Retried through a lost connection. A commit the group refuses because
            # it rebalanced meanwhile (as it does after an outage) is expected: the
            # partitions' new owner starts from the last commit, so those messages
            # come again, which at-least-once allows.
            try:
                await self._transport.retrying(
                    lambda: self._consumer.commit(offsets), "commit", self.link
                )
            except errors.BrokerError as exc:
                if not isinstance(exc.__cause__, _REBALANCED):
                    raise
                log.debug("kafka: commit refused after a rebalance: %s", exc)

    async def aclose(self) -> None:
        try:
            await self._commits.flush()
        finally:
            await self._consumer.stop()
