"""The Kafka client side's pure parts, beyond what every broker gets (tests/unit/
test_broker_errors.py, test_broker_entries.py): how a publish waits on its records'
deliveries."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiokafka.errors as kafka_errors
import pytest

from ductape_operator.brokers.kafka import client


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
