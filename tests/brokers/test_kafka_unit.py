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


async def test_a_record_becomes_the_message_received_builds() -> None:
    entries = {
        "type": "kafka",
        "provider": "ductape",
        "bootstrap-servers": "127.0.0.1:9",
        "topics.json": json.dumps({"orders": {"name": "t.orders", "subscriptions": {"b": "g"}}}),
    }
    subscription = Broker.from_binding(mapping=entries).subscribe("orders", "b")
    consumer = subscription._consumer
    assert isinstance(consumer, client.KafkaConsumer)
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
            [tp, 7, False],
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
            [tp, 8, False],
            None,
            None,
            12.5,
        ),
    ]
    slots = message_.Message.__slots__
    assert [{n: getattr(m, n) for n in slots} for m in built] == [
        {n: getattr(m, n) for n in slots} for m in expected
    ]
