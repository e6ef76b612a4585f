"""Kafka's messaging client against raw aiokafka, in process CPU time per message too.

`make bench`'s throughput table times each side once or twice over a window of about
0.1 s (consume), which one scheduling hiccup of a shared machine moves by 10 %. This
measures the same loops as benchmarks/throughput.py (1 KiB records with an id header of
the client's size; raw `send` and `getmany(max_records=100)` with auto-commit every
0.1 s, the client's `publish_many` and `receive_many(100)` + `ack_many`, and its
per-message iterator) over ROUNDS rounds in which the sides alternate, and prints the
medians of messages per second, of the CPU time per message (`time.process_time`, which
other processes on the machine do not inflate as much as they do the wall clock) and of
each round's client / raw ratio. Consume is measured on a topic holding the N messages,
published once, each round with a fresh consumer group, so that a round is consume only.

    . .testenv/env && .venv/bin/python -m benchmarks.kafka_cpu [ROUNDS] [MESSAGES]

Figures only, never an assertion; not part of `make bench`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
from aiokafka.abc import ConsumerRebalanceListener
from tests.messaging import stack

from benchmarks.throughput import DEADLINE, PAYLOAD_SIZE, Window, _use
from ductape_operator.messaging import Broker

#: One measurement: messages per second (wall clock) and CPU µs per message.
Figure = tuple[float, float]


def _entries(servers: str, topic: str, group: str) -> dict[str, str]:
    route = {"name": topic, "subscriptions": {"bench": group}}
    return {
        "type": "kafka",
        "provider": "ductape",
        "bootstrap-servers": servers,
        "topics.json": json.dumps({"bench": route}),
    }


async def _clocked(op: Callable[[], Awaitable[None]], n: int) -> Figure:
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.wait_for(op(), DEADLINE)
    return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n * 1e6


async def _publish_raw(servers: str, topic: str, payloads: list[bytes]) -> Figure:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=1)
    await producer.start()
    try:
        ids = [[("message-id", os.urandom(12).hex().encode())] for _ in payloads]

        async def publish() -> None:
            futures = [
                await producer.send(topic, p, headers=h) for p, h in zip(payloads, ids, strict=True)
            ]
            await asyncio.gather(*futures)

        return await _clocked(publish, len(payloads))
    finally:
        await producer.stop()


async def _publish_client(servers: str, topic: str, payloads: list[bytes]) -> Figure:
    async with Broker.from_binding(mapping=_entries(servers, topic, "unused")) as broker:

        async def publish() -> None:
            await broker.publish_many("bench", payloads)

        return await _clocked(publish, len(payloads))


async def _consume_raw(servers: str, topic: str, n: int) -> Figure:
    joined = asyncio.Event()

    class Joined(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            joined.set()

    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"bench.{uuid.uuid4().hex[:10]}",
        enable_auto_commit=True,
        auto_commit_interval_ms=100,
        auto_offset_reset="earliest",
        max_poll_records=100,
    )
    consumer.subscribe([topic], listener=Joined())
    await consumer.start()
    try:
        await asyncio.wait_for(joined.wait(), DEADLINE)
        window = Window()
        cpu = time.process_time()
        seen = 0
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=100)
            for records in batches.values():
                for record in records:
                    _use(record.value, record.headers)
                seen += len(records)
            if seen:
                window.start(seen)
        return window.rate(n), (time.process_time() - cpu) / n * 1e6
    finally:
        await consumer.stop()


async def _consume_client(servers: str, topic: str, n: int, *, batched: bool) -> Figure:
    entries = _entries(servers, topic, f"bench.{uuid.uuid4().hex[:10]}")
    async with (
        Broker.from_binding(mapping=entries) as broker,
        broker.subscribe("bench", "bench", prefetch=100) as messages,
    ):
        window = Window()
        cpu = time.process_time()
        seen = 0
        if batched:
            while seen < n:
                batch = await messages.receive_many(100)
                for message in batch:
                    _use(message.data, message.headers)
                await messages.ack_many(batch)
                seen += len(batch)
                window.start(seen)
        else:
            async for message in messages:
                _use(message.data, message.headers)
                await message.ack()
                seen += 1
                window.start(seen)
                if seen >= n:
                    break
        return window.rate(n), (time.process_time() - cpu) / n * 1e6


def _print(what: str, figures: dict[str, list[Figure]]) -> None:
    med = statistics.median
    raw = figures["raw"]
    for side, got in figures.items():
        line = (
            f"{what:<8} {side:<12} {med(f[0] for f in got):>9.0f}/s"
            f"  cpu {med(f[1] for f in got):5.2f} µs/message"
        )
        if side != "raw":
            ratios = [c[0] / r[0] for c, r in zip(got, raw, strict=True)]
            cpu_ratios = [r[1] / c[1] for c, r in zip(got, raw, strict=True)]
            line += (
                f"  ratio {med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                f"  cpu ratio {med(cpu_ratios):.2f}"
            )
        print(line, flush=True)


async def _main(rounds: int, n: int) -> None:
    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    payloads = [os.urandom(PAYLOAD_SIZE) for _ in range(n)]
    # Publish rounds fill one topic; consume rounds read another holding the n messages
    # alone, as in `make bench` (where a deeper topic makes aiokafka's fetches cheaper per
    # message, 2.8 against 4 µs, and the client's own cost a larger share).
    topics = [stack.Provisioned("kafka", "bench", ("bench",)) for _ in range(2)]
    for topic in topics:
        topic.name = f"bench.{uuid.uuid4().hex[:10]}"
        await topic.create()
    published, consumed = (t.name for t in topics)
    try:
        await _publish_raw(servers, consumed, payloads)
        publish: dict[str, list[Figure]] = {"raw": [], "client": []}
        consume: dict[str, list[Figure]] = {"raw": [], "client": [], "per-message": []}
        for round_ in range(rounds):
            sides = ["raw", "client"] if round_ % 2 == 0 else ["client", "raw"]
            for side in sides:
                measure = _publish_raw if side == "raw" else _publish_client
                publish[side].append(await measure(servers, published, payloads))
        del payloads  # 20 MB the consume rounds do not need
        gc.collect()
        for round_ in range(rounds):
            order = list(consume) if round_ % 2 == 0 else list(consume)[::-1]
            for side in order:
                if side == "raw":
                    figure = await _consume_raw(servers, consumed, n)
                else:
                    batched = side == "client"
                    figure = await _consume_client(servers, consumed, n, batched=batched)
                consume[side].append(figure)
        print(f"kafka: {n} messages of {PAYLOAD_SIZE} B, medians of {rounds} alternating rounds")
        _print("publish", publish)
        _print("consume", consume)
    finally:
        for topic in topics:
            await topic.delete()


def run(rounds: int = 8, messages: int = 20_000) -> None:
    asyncio.run(_main(rounds, messages))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    run(*args)
