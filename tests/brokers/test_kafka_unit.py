"""The Kafka client side's pure parts, beyond what every broker gets (tests/unit/
test_broker_errors.py, test_broker_entries.py): how a publish waits on its records'
deliveries, and the messages a consumer builds from records."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import aiokafka
import aiokafka.errors as kafka_errors
import pytest
from aiokafka.structs import ConsumerRecord

from ductape_operator.brokers.kafka import client
from ductape_operator.messaging import Broker
from ductape_operator.messaging import message as message_


async def test_a_publish_waits_for_every_delivery() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(3)]
    futures[0].set_result(None)
    waiting = asyncio.ensure_future(client._delivered(futures))
    await asyncio.sleep(0)
    futures[2].set_result(None)
    await asyncio.sleep(0)
    assert not waiting.done()  # the second is not delivered yet
    futures[1].set_result(None)
    await asyncio.wait_for(waiting, 5)


async def test_a_publish_raises_the_first_failure_and_retrieves_the_others() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(4)]
        futures[0].set_result(None)
        futures[1].set_exception(kafka_errors.KafkaTimeoutError("first"))
        futures[2].set_exception(kafka_errors.KafkaTimeoutError("second"))
        with pytest.raises(kafka_errors.KafkaTimeoutError, match="first"):
            await client._delivered(futures)
        # One still under way fails later: nobody awaits it, and asyncio must not log it.
        futures[3].set_exception(kafka_errors.KafkaTimeoutError("late"))
        await asyncio.sleep(0)
        del futures
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(previous)


def _consumer() -> client.KafkaConsumer:
    """A consumer that never connects: its bookkeeping only."""
    entries = {
        "type": "kafka",
        "provider": "ductape",
        "bootstrap-servers": "127.0.0.1:9",
        "topics.json": json.dumps({"orders": {"name": "t.orders", "subscriptions": {"b": "g"}}}),
    }
    consumer = Broker.from_binding(mapping=entries).subscribe("orders", "b")._consumer
    assert isinstance(consumer, client.KafkaConsumer)
    return consumer


def _record(offset: int) -> Any:
    return ConsumerRecord(
        "t.orders", 1, offset, 0, 0, None, b"v", None, -1, 1, (("ductape-id", b"i"),)
    )


async def test_offsets_are_committed_up_to_the_first_unacked_message() -> None:
    consumer = _consumer()
    tp = aiokafka.TopicPartition("t.orders", 1)
    await consumer.on_partitions_assigned({tp})
    consumer._buffer.append((tp, [_record(offset) for offset in range(10, 15)], 0))
    try:
        got = await consumer.fetch(10, 0)  # what is buffered: no fetch from the broker
        assert [m.token.offset for m in got] == [10, 11, 12, 13, 14]
        await consumer.settle(got[0], ack=True, requeue=False)  # in order
        assert consumer._committable({tp}) == {tp: 11}
        await consumer.ack_many([got[2], got[3]])
        assert consumer._committable({tp}) == {}  # 11 is not acked
        await consumer.settle(got[1], ack=True, requeue=False)
        assert consumer._committable({tp}) == {tp: 14}
        await consumer.ack_many([got[3], got[4]])  # 13 again: nothing changes for it
        assert consumer._committable({tp}) == {tp: 15}
        assert not consumer._partitions[1].inflight
    finally:
        await consumer._commits.flush()
        await consumer._consumer.stop()


async def test_a_record_becomes_the_message_received_builds() -> None:
    consumer = _consumer()
    tp = aiokafka.TopicPartition("t.orders", 1)
    records = [
        ConsumerRecord(
            "t.orders", 1, 7, 0, 0, b"k", b"one", None, 1, 3, (("ductape-id", b"id-1"),)
        ),
        ConsumerRecord(
            "t.orders",
            1,
            8,
            0,
            0,
            None,
            b"two",
            None,
            -1,
            3,
            (("trace", b"t"), ("ductape-content-type", b"text/plain"), ("ductape-x", b"-")),
        ),
    ]
    try:
        built = consumer._messages(records, tp, 12.5)
    finally:
        await consumer._consumer.stop()
    expected = [
        message_.received(
            b"one",
            {},
            "id-1",
            message_.OCTET_STREAM,
            "orders",
            "b",
            consumer,
            records[0],
            "k",
            None,
            12.5,
        ),
        message_.received(
            b"two",
            {"trace": "t"},
            "t.orders:1:8",
            "text/plain",
            "orders",
            "b",
            consumer,
            records[1],
            None,
            None,
            12.5,
        ),
    ]
    slots = message_.Message.__slots__
    assert [{n: getattr(m, n) for n in slots} for m in built] == [
        {n: getattr(m, n) for n in slots} for m in expected
    ]
