"""Throughput of the messaging client against the raw SDKs, per provider.

For each provider of the local stack: a fresh topic with one subscription; the
raw SDK publishes N 1 KiB messages with delivery confirmed and then consumes
and acknowledges them, and the client (`Broker.publish_many`, then `subscribe`)
does the same, in the same run. Like with like: where the raw side consumes and
settles per batch (Kafka, Redis, Pub/Sub, SQS, NATS) the client's figure is its batch
path (`receive_many`, then `ack_many`), where it acks each message (RabbitMQ) the
client's is the per-message iterator (`ack()` per message); the per-message
iterator's consume figure is printed beside the batch one. Printed: messages per
second for each (best of BENCH_ROUNDS, default 2, alternating) and the ratio
client / raw, and beside it the ratio of this process's CPU time per message, raw /
client, which other processes on a shared machine move much less than the wall clock
(for steadier figures on one provider: BENCH_PROVIDERS=kafka BENCH_ROUNDS=7); also
written to `.bench/throughput.json`. Every timed section starts after a garbage
collection, so that no side pays for the garbage the one before it left. Figures
only, never an assertion.

What the consume figure measures is steady throughput, on both sides alike: both
have joined their group (or bound their consumer) before anything is timed, and
the clock starts once the first batch (or message) is consumed and settled; the
messages of that batch are left out of the count (`Window`). Before, the clock
started with the first fetch, which on Kafka pays the group's offset lookup and
a fetch round trip (6 to 16 ms) inside a run of 10 to 20 ms: whichever side paid
it first lost. For the same reason Kafka and Redis move 20,000 messages per run
(other providers 2,000; SQS 500), so that the timed window is well over 100 ms.

Both sides read each message's payload and headers (what any consumer does at
least) and acknowledge it. The raw side is what a careful application would
write with that SDK alone:
Kafka sends everything then awaits every delivery, each record with an id header
of the size of the client's (so both sides send and consume the same bytes), and
consumes with the SDK's auto-commit every 0.1 s (the fastest it offers, as often
as the client commits acked offsets); Redis
pipelines XADD and XACKs per batch; RabbitMQ publishes with confirms and
`mandatory`, and acks each message; Pub/Sub publishes 1000 messages per call
and acknowledges per pulled batch; SQS sends batches of 10 (16 in flight) and
deletes per received batch; NATS publishes with `publish_async` (acks awaited
together), each message with a `Nats-Msg-Id` header of the client's size, fetches
100 at a time and acks each message on its reply subject (JetStream
has no batch ack; the client's `ack_many` sends the same acks). Environment:
BENCH_MESSAGES (every provider but SQS, Pub/Sub and NATS; default above),
BENCH_SQS_MESSAGES (500), BENCH_PUBSUB_MESSAGES (10000), BENCH_NATS_MESSAGES (4000),
BENCH_PROVIDERS (comma list of binding types; default: every configured one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import gc
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from tests.messaging import stack

from benchmarks import kit
from ductape_operator.messaging import Broker

#: Messages per run and provider: enough that the timed consume window lasts well over
#: 100 ms on the fast brokers (2,000 Kafka records are consumed in 10 to 20 ms, shorter
#: than one scheduling hiccup of a shared machine). BENCH_MESSAGES sets every provider
#: but SQS.
DEFAULT_COUNT = 2000
MESSAGES = os.environ.get("BENCH_MESSAGES")
#: moto's SQS receive scans the whole queue, so deep queues measure moto, not clients.
N_SQS = int(os.environ.get("BENCH_SQS_MESSAGES", "500"))
#: Where 2,000 messages pass in a few tens of milliseconds (two Publish calls on Pub/Sub),
#: a longer run, so that one scheduling hiccup of a shared machine does not make the figure.
N_PUBSUB = int(os.environ.get("BENCH_PUBSUB_MESSAGES", "10000"))
N_NATS = int(os.environ.get("BENCH_NATS_MESSAGES", "4000"))
COUNTS = {"kafka": 20_000, "redis": 20_000, "google-pubsub": N_PUBSUB, "nats": N_NATS}
PAYLOAD_SIZE = 1024
#: Alternating raw and client runs per provider; the best of each is reported.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
DEADLINE = 120.0
OPS = ("publish", "consume")


def _payloads(n: int) -> list[bytes]:
    return [os.urandom(PAYLOAD_SIZE) for _ in range(n)]


def _use(data: Any, headers: Any) -> None:
    """What every consumer here does with a message: look at its payload and headers."""
    if data is None or headers is None:
        pass


def _count(kind: str) -> int:
    if kind == "aws-sqs":
        return N_SQS
    if MESSAGES and kind not in ("google-pubsub", "nats"):
        return int(MESSAGES)
    return COUNTS.get(kind, DEFAULT_COUNT)


class Figure(NamedTuple):
    """One side's measurement of one operation."""

    #: Messages per second, wall clock.
    rate: float
    #: This process's CPU time per message, µs (`time.process_time`): what the client
    #: itself costs, which other processes on the machine move less than the wall clock.
    cpu: float


#: glibc's `mallopt` parameters, and the values pinned for the whole run (see
#: `_pin_allocator`): large blocks from the heap, and the heap's top kept.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD


def _pin_allocator() -> None:
    """Fix glibc's mmap and trim thresholds for the run, so that no side's figure depends
    on what the sections before it allocated.

    glibc raises both thresholds by itself whenever a large block is freed, and never
    lowers them. Until a section happens to free a block of several megabytes, each
    fetch buffer of a megabyte or more is mapped, faulted in page by page and unmapped
    again: measured here, a raw aiokafka consumer read the very same records at 2.6 µs
    a record after a raw publish (which frees two lists of every message at the end)
    and at 3.6 µs after the client's (which publishes 5,000 at a time), and at 2.6 µs
    after either once an 8 MB list was freed in between. Pinned, both sides run as a
    warmed-up process does, whatever ran before. A no-op where the C library is not
    glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _settle_garbage() -> None:
    """Collect before a timed section: otherwise whichever side runs after the one that
    left the most garbage pays for its collection (the order of the sides decided it)."""
    gc.collect()


async def _timed(op: Callable[[], Awaitable[Any]], n: int) -> Figure:
    _settle_garbage()
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.wait_for(op(), DEADLINE)
    return Figure(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)


class Window:
    """The consume clock: it starts once the first batch (or message) is consumed and
    settled, so what it measures is steady throughput on both sides, not the first
    fetch after the join (offset lookup, first fetch round trip: 6 to 16 ms on Kafka)."""

    __slots__ = ("cpu", "skipped", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.cpu = 0.0
        self.skipped = 0

    def start(self, seen: int) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.cpu = time.process_time()
            self.skipped = seen

    def figure(self, n: int) -> Figure:
        assert self.started is not None, "nothing was consumed"
        counted = n - self.skipped
        return Figure(
            counted / (time.perf_counter() - self.started),
            (time.process_time() - self.cpu) / counted * 1e6,
        )


async def _timed_consume(op: Callable[[Window], Awaitable[Any]], n: int) -> Figure:
    _settle_garbage()
    window = Window()
    await asyncio.wait_for(op(window), DEADLINE)
    return window.figure(n)


# -- raw SDK -------------------------------------------------------------------


async def _raw_kafka(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    n = len(payloads)
    import aiokafka
    from aiokafka.abc import ConsumerRebalanceListener

    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=1)
    await producer.start()
    try:
        # Each record carries a message id in a header of the size of the client's
        # (`ductape-id`, 24 hex digits): both sides then send and consume the same bytes.
        ids = [[("message-id", os.urandom(12).hex().encode())] for _ in payloads]

        async def publish() -> None:
            futures = [
                await producer.send(topic.name, p, headers=h)
                for p, h in zip(payloads, ids, strict=True)
            ]
            await asyncio.gather(*futures)

        pub = await _timed(publish, n)
    finally:
        await producer.stop()
    joined = asyncio.Event()

    class Joined(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            joined.set()

    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=topic.subscription("bench"),
        enable_auto_commit=True,
        # Committed as often as the client commits acked offsets (COMMIT_LINGER, 0.1 s):
        # the same bound on what a crash redelivers.
        auto_commit_interval_ms=100,
        auto_offset_reset="earliest",
        max_poll_records=100,
    )
    consumer.subscribe([topic.name], listener=Joined())
    await consumer.start()
    # As the client's subscribe() does: the group join is not part of the figure.
    await asyncio.wait_for(joined.wait(), DEADLINE)
    try:

        async def consume(window: Window) -> None:
            seen = 0
            while seen < n:
                batches = await consumer.getmany(timeout_ms=1000, max_records=100)
                for records in batches.values():
                    for record in records:
                        _use(record.value, record.headers)
                    seen += len(records)
                if seen:
                    window.start(seen)

        con = await _timed_consume(consume, n)
    finally:
        await consumer.stop()
    return pub, con


async def _raw_redis(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    n = len(payloads)
    import redis.asyncio as aredis

    client = aredis.from_url(os.environ["REDIS_URL"])
    group = topic.subscription("bench")
    try:

        async def publish() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for p in payloads:
                    pipe.xadd(topic.name, {"data": p}, nomkstream=True)
                await pipe.execute()

        async def consume(window: Window) -> None:
            seen = 0
            while seen < n:
                response: Any = await client.xreadgroup(
                    group, "raw", {topic.name: ">"}, count=100, block=1000
                )
                for _stream, entries in response or []:
                    for _id, fields in entries:
                        _use(fields[b"data"], fields)
                    seen += len(entries)
                    await client.xack(topic.name, group, *(i for i, _ in entries))
                if seen:
                    window.start(seen)

        return await _timed(publish, n), await _timed_consume(consume, n)
    finally:
        await client.aclose()


async def _raw_rabbitmq(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    n = len(payloads)
    import aio_pika

    connection = await aio_pika.connect_robust(os.environ["AMQP_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topic.name)

        async def publish() -> None:
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=topic.name,
                        mandatory=True,
                    )
                    for p in payloads
                )
            )

        pub = await _timed(publish, n)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=100)
        queue = await consume_channel.get_queue(topic.subscription("bench"))

        async def consume(window: Window) -> None:
            seen = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    _use(message.body, message.headers)
                    await message.ack()
                    seen += 1
                    if seen == 1:
                        window.start(seen)
                    if seen >= n:
                        break

        con = await _timed_consume(consume, n)
        return pub, con
    finally:
        await connection.close()


async def _raw_pubsub(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    n = len(payloads)
    import grpc  # type: ignore[import-untyped]
    from google.pubsub_v1 import types
    from google.pubsub_v1.services.publisher import PublisherAsyncClient
    from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
        PublisherGrpcAsyncIOTransport,
    )
    from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
    from google.pubsub_v1.services.subscriber.transports.grpc_asyncio import (
        SubscriberGrpcAsyncIOTransport,
    )

    host, project = os.environ["PUBSUB_EMULATOR_HOST"], os.environ["PUBSUB_PROJECT_ID"]
    channel = grpc.aio.insecure_channel(host)
    publisher = PublisherAsyncClient(
        transport=PublisherGrpcAsyncIOTransport(host=host, channel=channel)
    )
    subscriber = SubscriberAsyncClient(
        transport=SubscriberGrpcAsyncIOTransport(host=host, channel=channel)
    )
    topic_path = f"projects/{project}/topics/{topic.name}"
    sub_path = f"projects/{project}/subscriptions/{topic.subscription('bench')}"
    try:

        async def publish() -> None:
            for i in range(0, n, 1000):
                await publisher.publish(
                    topic=topic_path,
                    messages=[types.PubsubMessage(data=p) for p in payloads[i : i + 1000]],
                )

        async def consume(window: Window) -> None:
            seen = 0
            # Each batch's acknowledge goes out while the next pull is under way (as the
            # client's do), all of them awaited before the clock stops.
            acks: list[asyncio.Task[None]] = []
            while seen < n:
                response = await subscriber.pull(subscription=sub_path, max_messages=100)
                ids = []
                for received in response.received_messages:
                    _use(received.message.data, received.message.attributes)
                    ids.append(received.ack_id)
                if ids:
                    acks.append(
                        asyncio.create_task(
                            subscriber.acknowledge(subscription=sub_path, ack_ids=ids)
                        )
                    )
                seen += len(ids)
                if seen:
                    window.start(seen)
            await asyncio.gather(*acks)

        return await _timed(publish, n), await _timed_consume(consume, n)
    finally:
        await channel.close()


async def _raw_sqs(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    n = len(payloads)
    import aioboto3

    queue = topic.subscription("bench")
    session = aioboto3.Session()
    async with session.client(
        "sqs",
        region_name=os.environ["AWS_REGION"],
        endpoint_url=os.environ["SQS_ENDPOINT"],
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    ) as sqs:
        limit = asyncio.Semaphore(16)

        async def send(chunk: list[bytes]) -> None:
            async with limit:
                entries = [
                    {"Id": str(i), "MessageBody": base64.b64encode(p).decode()}
                    for i, p in enumerate(chunk)
                ]
                response = await sqs.send_message_batch(QueueUrl=queue, Entries=entries)
                if response.get("Failed"):
                    raise RuntimeError(response["Failed"])

        async def publish() -> None:
            await asyncio.gather(*(send(payloads[i : i + 10]) for i in range(0, n, 10)))

        async def consume(window: Window) -> None:
            seen = 0
            while seen < n:
                response = await sqs.receive_message(
                    QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                got = response.get("Messages") or []
                for m in got:
                    _use(base64.b64decode(m["Body"]), m.get("MessageAttributes"))
                if got:
                    await sqs.delete_message_batch(
                        QueueUrl=queue,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(got)
                        ],
                    )
                seen += len(got)
                if seen:
                    window.start(seen)

        return await _timed(publish, n), await _timed_consume(consume, n)


async def _raw_nats(topic: stack.Provisioned, payloads: list[bytes]) -> tuple[Figure, Figure]:
    """JetStream publishes sent without waiting (`publish_async`) and their acks awaited
    together, then fetches of 100 from the durable pull consumer, each message acked."""
    n = len(payloads)
    import nats
    import nats.errors

    client = await nats.connect(os.environ["NATS_URL"])
    try:
        js = client.jetstream(timeout=DEADLINE)
        subject = topic.name

        # Each message carries a `Nats-Msg-Id` of the client's size, as the client's do (the
        # server's duplicate window then works for both): both sides send, store and parse
        # the same headers.
        ids = [{"Nats-Msg-Id": os.urandom(12).hex()} for _ in payloads]

        async def publish() -> None:
            acks = [
                await js.publish_async(subject, p, headers=h)
                for p, h in zip(payloads, ids, strict=True)
            ]
            await asyncio.gather(*acks)

        pub = await _timed(publish, n)
        # As the client's subscribe() does: bound before the timer.
        pull = await js.pull_subscribe_bind(
            topic.subscription("bench"), stream=subject.replace(".", "-")
        )

        async def consume(window: Window) -> None:
            seen = 0
            while seen < n:
                try:
                    got = await pull.fetch(100, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for m in got:
                    _use(m.data, m.headers)
                    await m.ack()
                seen += len(got)
                if seen:
                    window.start(seen)

        return pub, await _timed_consume(consume, n)
    finally:
        await client.close()


RAW: dict[str, Callable[[stack.Provisioned, list[bytes]], Awaitable[tuple[Figure, Figure]]]] = {
    "kafka": _raw_kafka,
    "redis": _raw_redis,
    "rabbitmq": _raw_rabbitmq,
    "google-pubsub": _raw_pubsub,
    "aws-sqs": _raw_sqs,
    "nats": _raw_nats,
}


# -- the client ----------------------------------------------------------------


async def _client(
    topic: stack.Provisioned, payloads: list[bytes], *, batched: bool
) -> tuple[Figure, Figure]:
    n = len(payloads)
    with tempfile.TemporaryDirectory() as root:
        folder = topic.write(Path(root) / "bench")
        async with Broker.from_binding(path=folder) as broker:
            pub = await _timed(lambda: broker.publish_many("bench", payloads), n)
            async with broker.subscribe("bench", "bench", prefetch=100) as messages:

                async def consume(window: Window) -> None:
                    seen = 0
                    if not batched:
                        async for message in messages:
                            _use(message.data, message.headers)
                            await message.ack()
                            seen += 1
                            if seen == 1:
                                window.start(seen)
                            if seen >= n:
                                break
                        return
                    while seen < n:
                        batch = await messages.receive_many(100)
                        for message in batch:
                            _use(message.data, message.headers)
                        await messages.ack_many(batch)
                        seen += len(batch)
                        window.start(seen)

                con = await _timed_consume(consume, n)
    return pub, con


#: Providers whose raw side consumes and settles per batch: the client's figure there is
#: `receive_many` and `ack_many`, like with like; its per-message iterator is printed beside.
BATCHED = {"kafka", "redis", "google-pubsub", "aws-sqs", "nats"}


def _best(a: Figure, b: Figure) -> Figure:
    return Figure(max(a.rate, b.rate), min(a.cpu, b.cpu))


async def _one(kind: str) -> dict[str, list[Figure]]:
    """Best of ROUNDS alternating raw and client runs, each on a fresh topic:
    side -> [publish, consume], the highest rate and the lowest CPU time of the rounds."""
    payloads = _payloads(_count(kind))
    sides: dict[str, Callable[[stack.Provisioned, list[bytes]], Awaitable[tuple[Figure, Figure]]]]
    sides = {
        "raw": RAW[kind],
        "client": functools.partial(_client, batched=kind in BATCHED),
    }
    if kind in BATCHED:
        sides["per-message"] = functools.partial(_client, batched=False)
    none = Figure(0.0, float("inf"))
    best = {side: [none, none] for side in sides}
    for _ in range(ROUNDS):
        for side, measure in sides.items():
            topic = stack.Provisioned(kind, "bench", ("bench",))
            topic.name = f"bench.{uuid.uuid4().hex[:10]}"
            await topic.create()
            try:
                pub, con = await measure(topic, payloads)
            finally:
                await topic.delete()
            best[side] = [_best(best[side][0], pub), _best(best[side][1], con)]
    return best


def _ratios(client: Figure, raw: Figure) -> tuple[float, float]:
    """client / raw in messages per second, and raw / client in CPU time per message
    (both: above 1 is the client doing better)."""
    return client.rate / raw.rate, raw.cpu / client.cpu


def run() -> None:
    _pin_allocator()
    wanted = os.environ.get("BENCH_PROVIDERS")
    kinds = [k for k in stack.PROVIDERS if not wanted or k in wanted.split(",")]
    counts = ", ".join(f"{k} {_count(k)}" for k in kinds)
    print(
        f"throughput: messages of {PAYLOAD_SIZE} B ({counts}); messages/s, client / raw SDK ="
        " ratio; cpu: raw / client CPU time per message"
    )
    header = f"{'provider':<14} {'publish raw':>12} {'client':>8} {'ratio':>6} {'cpu':>5}"
    header += f"   {'consume raw':>12} {'client':>8} {'ratio':>6} {'cpu':>5}"
    header += f"   {'per-message':>12} {'ratio':>6} {'cpu':>5}"
    print(header)
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        if stack.missing(kind):
            print(f"{kind:<14} skipped: {', '.join(stack.missing(kind))} unset")
            continue
        try:
            best = asyncio.run(_one(kind))
        except Exception as exc:
            print(f"{kind:<14} failed: {type(exc).__name__}: {exc}")
            continue
        (raw_pub, raw_con), (cli_pub, cli_con) = best["raw"], best["client"]
        pub_ratio, pub_cpu = _ratios(cli_pub, raw_pub)
        con_ratio, con_cpu = _ratios(cli_con, raw_con)
        line = (
            f"{kind:<14} {raw_pub.rate:>12.0f} {cli_pub.rate:>8.0f}"
            f" {pub_ratio:>6.2f} {pub_cpu:>5.2f}"
            f"   {raw_con.rate:>12.0f} {cli_con.rate:>8.0f} {con_ratio:>6.2f} {con_cpu:>5.2f}"
        )
        row: dict[str, Any] = {
            "provider": kind,
            "messages": _count(kind),
            "consume_batched": kind in BATCHED,
            **{
                f"{side}_{op}": round(figure.rate)
                for side in best
                for op, figure in zip(OPS, best[side], strict=True)
            },
            **{
                f"{side}_{op}_cpu_us": round(figure.cpu, 2)
                for side in best
                for op, figure in zip(OPS, best[side], strict=True)
            },
            "publish_ratio": round(pub_ratio, 3),
            "consume_ratio": round(con_ratio, 3),
            "publish_cpu_ratio": round(pub_cpu, 3),
            "consume_cpu_ratio": round(con_cpu, 3),
        }
        if "per-message" in best:
            one_ratio, one_cpu = _ratios(best["per-message"][1], raw_con)
            line += f"   {best['per-message'][1].rate:>12.0f} {one_ratio:>6.2f} {one_cpu:>5.2f}"
            row["per_message_consume_ratio"] = round(one_ratio, 3)
            row["per_message_consume_cpu_ratio"] = round(one_cpu, 3)
        rows.append(row)
        print(line, flush=True)
    kit.BENCH_DIR.mkdir(exist_ok=True)
    result = {"machine": kit.machine(), "rounds": ROUNDS, "payload": PAYLOAD_SIZE, "rows": rows}
    (kit.BENCH_DIR / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run()
