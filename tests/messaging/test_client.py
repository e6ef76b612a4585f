"""The messaging client against real brokers: the same test code for all five providers.

Each test provisions its own topic (unique names) with two subscriptions, writes
the connection Secret's entries as a binding folder and loads it the way an
application does, with `Broker.from_binding`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
import sys
import time

import pytest

from ductape_operator import errors
from ductape_operator.messaging import Broker, Message, Subscription
from tests.messaging import stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

#: Small, so that redelivery tests stay fast (SQS and Pub/Sub count whole seconds).
REDELIVERY = 2.0
#: How long any single expected message may take to arrive.
DEADLINE = 30.0


def broker_for(topic: stack.Provisioned, tmp_path: pathlib.Path, **options: float) -> Broker:
    root = tmp_path / "bindings"
    topic.write(root / "message-bus")
    return Broker.from_binding(
        "message-bus", environ={"SERVICE_BINDING_ROOT": str(root)}, **options
    )


async def collect(sub: Subscription, count: int, *, deadline: float = DEADLINE) -> list[Message]:
    """Receive and ack `count` messages, failing when the deadline passes first."""
    got: list[Message] = []
    end = time.monotonic() + deadline
    while len(got) < count:
        remaining = end - time.monotonic()
        assert remaining > 0, f"received {len(got)} of {count} messages in {deadline}s"
        message = await sub.receive(timeout=remaining)
        if message is not None:
            got.append(message)
            await message.ack()
    return got


async def test_every_subscription_gets_every_message_with_headers_and_ids(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    async with broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker:
        assert broker.binding.type == topic.kind
        ids = [
            await broker.publish("orders", b"\x00\xffraw", headers={"trace": "t-1"}),
            await broker.publish("orders", "héllo", headers={"trace": "t-2", "x-b": "2"}),
            await broker.publish("orders", {"order": 42, "items": ["a"]}, key="customer-7"),
        ]
        assert len(set(ids)) == 3
        for subscription in ("billing", "shipping"):
            async with broker.subscribe("orders", subscription) as sub:
                got = {m.id: m for m in await collect(sub, 3)}
            assert set(got) == set(ids), subscription
            raw, text, obj = (got[i] for i in ids)
            assert raw.data == b"\x00\xffraw"
            assert raw.content_type == "application/octet-stream"
            assert raw.headers == {"trace": "t-1"}
            assert text.text() == "héllo"
            assert text.content_type.startswith("text/plain")
            assert text.headers == {"trace": "t-2", "x-b": "2"}
            assert obj.json() == {"order": 42, "items": ["a"]}
            assert obj.content_type == "application/json"
            assert obj.headers == {}
            assert obj.key == "customer-7"
            assert {m.topic for m in got.values()} == {"orders"}
            assert {m.subscription for m in got.values()} == {subscription}


async def test_consumers_of_one_subscription_share_its_messages(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    count = 40
    publisher = broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY)
    first = broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY)
    second = broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY)
    async with (
        publisher,
        first,
        second,
        first.subscribe("orders", "billing", prefetch=1) as a,
        second.subscribe("orders", "billing", prefetch=1) as b,
    ):
        ids = set(await publisher.publish_many("orders", [f"m{i}" for i in range(count)]))
        assert len(ids) == count
        seen: dict[str, list[str]] = {"a": [], "b": []}
        done = asyncio.Event()

        async def drain(name: str, sub: Subscription) -> None:
            while not done.is_set():
                message = await sub.receive(timeout=0.5)
                if message is not None:
                    seen[name].append(message.id)
                    await message.ack()
                    if len(seen["a"]) + len(seen["b"]) >= count:
                        done.set()

        tasks = [asyncio.create_task(drain("a", a)), asyncio.create_task(drain("b", b))]
        try:
            await asyncio.wait_for(done.wait(), DEADLINE)
        finally:
            done.set()
            await asyncio.gather(*tasks)
        everything = seen["a"] + seen["b"]
        assert sorted(everything) == sorted(ids), "each message exactly once, none lost"
        assert seen["a"] and seen["b"], f"not shared: {len(seen['a'])} / {len(seen['b'])}"


async def test_batches_are_received_and_acked_in_bulk(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    count, most = 30, 7
    async with broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker:
        bodies = [f"m{i}" for i in range(count)]
        ids = await broker.publish_many("orders", bodies, headers={"batch": "yes"})
        async with broker.subscribe("orders", "billing", prefetch=10) as sub:
            got: list[Message] = []
            previous: list[Message] = []
            end = time.monotonic() + DEADLINE
            while len(got) < count:
                assert time.monotonic() < end, f"received {len(got)} of {count} in {DEADLINE}s"
                batch = await sub.receive_many(most, timeout=1.0)
                assert len(batch) <= most
                assert not any(m.settled for m in batch)
                got.extend(batch)
                # The previous batch is settled already: left alone, not acked twice.
                await sub.ack_many(previous + batch)
                assert all(m.settled for m in batch)
                previous = batch
            assert sorted(m.id for m in got) == sorted(ids), "each message once, none lost"
            assert sorted(m.text() for m in got) == sorted(bodies)
            assert all(m.headers == {"batch": "yes"} for m in got)
        # Every ack reached the broker: a new consumer past the redelivery timeout gets none.
        async with broker.subscribe("orders", "billing") as again:
            left = await again.receive_many(timeout=REDELIVERY * 2)
            assert [m.id for m in left] == []


#: Brokers that take a large batch in one operation fast enough for the test below.
BULK_PROVIDERS = {"kafka", "redis", "nats"}


async def test_a_large_batch_is_neither_cut_off_nor_sent_twice(
    topic: stack.Provisioned, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`publish_many` of far more messages than the broker takes within `retry_timeout`:
    sent in chunks of `PUBLISH_CHUNK`, each its own operation, so the batch is neither
    cut off as unreachable (and sent again) nor reported as a lost connection."""
    if topic.kind not in BULK_PROVIDERS:
        pytest.skip(f"{topic.kind} takes {COUNT_BULK} messages in more than a few seconds")
    async with broker_for(topic, tmp_path, retry_timeout=0.5) as broker:
        started = time.monotonic()
        ids = await broker.publish_many("orders", (b"x" * 64 for _ in range(COUNT_BULK)))
        took = time.monotonic() - started
        assert took > 0.5, f"the batch took {took:.2f}s: too few messages to test the budget"
        async with broker.subscribe("orders", "billing", prefetch=1000) as sub:
            got: list[str] = []
            end = time.monotonic() + DEADLINE
            while len(got) < COUNT_BULK:
                assert time.monotonic() < end, f"received {len(got)} of {COUNT_BULK}"
                batch = await sub.receive_many(timeout=1.0)
                got.extend(m.id for m in batch)
                await sub.ack_many(batch)
            extra = await sub.receive_many(timeout=0.5)
    assert sorted(got) == sorted(ids), "each message once, none lost"
    assert extra == [], "nothing sent twice"
    lost = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
    assert lost == []


#: More than the fastest local broker takes in one `retry_timeout` (0.5 s) above.
COUNT_BULK = 100_000


async def test_nack_redelivers_and_ack_settles(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    async with (
        broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker,
        broker.subscribe("orders", "billing") as sub,
    ):
        chosen = f"order-{time.time_ns()}"
        sent = await broker.publish(
            "orders", "again", headers={"attempt": "one"}, message_id=chosen
        )
        assert sent == chosen
        first = await sub.receive(timeout=DEADLINE)
        assert first is not None and first.id == sent
        await first.nack(requeue=True)
        second = await sub.receive(timeout=DEADLINE)
        assert second is not None, "nacked message was not delivered again"
        assert second.id == sent
        assert second.text() == "again"
        assert second.headers == {"attempt": "one"}
        await second.ack()
        # Acked: it must not come back, not even after the redelivery timeout.
        assert await sub.receive(timeout=REDELIVERY + 3) is None


async def test_unsettled_message_is_redelivered_after_the_timeout(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    async with (
        broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker,
        broker.subscribe("orders", "shipping") as sub,
    ):
        sent = await broker.publish("orders", {"n": 1})
        held = await sub.receive(timeout=DEADLINE)
        assert held is not None and held.id == sent
        started = time.monotonic()
        again = await sub.receive(timeout=DEADLINE)
        assert again is not None, "unsettled message was not delivered again"
        assert again.id == sent and again.json() == {"n": 1}
        assert time.monotonic() - started >= REDELIVERY * 0.5, "redelivered before the timeout"
        await again.ack()
        await held.ack()  # settled already by the timeout: ignored, must not fail
        assert await sub.receive(timeout=REDELIVERY + 3) is None


async def test_an_unsettled_message_among_acked_ones_is_redelivered(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    """Messages handed over one by one in a row share a redelivery watch entry (where the
    client redelivers); the one left unsettled among them still comes back."""
    async with (
        broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker,
        broker.subscribe("orders", "shipping", prefetch=10) as sub,
    ):
        ids = await broker.publish_many("orders", [f"m{i}" for i in range(6)])
        held: Message | None = None
        for _ in ids:
            message = await sub.receive(timeout=DEADLINE)
            assert message is not None, "a published message did not arrive"
            if message.id == ids[2]:
                held = message
            else:
                await message.ack()
        assert held is not None, f"{ids[2]} was not delivered"
        # Kafka rewinds the partition to it, so the messages after it may come again too.
        end = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < end, "the unsettled message was not delivered again"
            again = await sub.receive(timeout=DEADLINE)
            assert again is not None, "the unsettled message was not delivered again"
            await again.ack()
            if again.id == ids[2]:
                break
        assert again.text() == "m2"


async def test_settled_messages_are_let_go(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    """A settled message is not kept until its redelivery timeout (memory at high rates)."""
    count, prefetch = 60, 10
    async with broker_for(topic, tmp_path, redelivery_timeout=120.0) as broker:
        ids = set(await broker.publish_many("orders", [f"m{i}" for i in range(count)]))
        async with broker.subscribe("orders", "billing", prefetch=prefetch) as sub:
            got = 0
            end = time.monotonic() + DEADLINE
            while got < count // 2:  # the batch path
                assert time.monotonic() < end, f"received {got} of {count} in {DEADLINE}s"
                batch = await sub.receive_many(timeout=1.0)
                await sub.ack_many(batch)
                got += len(batch)
            while got < count:  # the per-message path
                assert time.monotonic() < end, f"received {got} of {count} in {DEADLINE}s"
                message = await sub.receive(timeout=1.0)
                if message is not None:
                    await message.ack()
                    got += 1
            batch, message = [], None
            gc.collect()
            held = [o for o in gc.get_objects() if isinstance(o, Message) and o.id in ids]
            # At most the last few, until the next delivery passes them: not all of them.
            assert len(held) <= prefetch, f"{len(held)} of {count} settled messages still held"


async def test_nack_without_requeue_drops(topic: stack.Provisioned, tmp_path: pathlib.Path) -> None:
    async with (
        broker_for(topic, tmp_path, redelivery_timeout=REDELIVERY) as broker,
        broker.subscribe("orders", "billing") as sub,
    ):
        dropped = await broker.publish("orders", "poison")
        message = await sub.receive(timeout=DEADLINE)
        assert message is not None and message.id == dropped
        await message.nack(requeue=False)
        assert await sub.receive(timeout=REDELIVERY + 3) is None


async def test_publish_to_a_topic_missing_on_the_broker_raises(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    if topic.kind == "kafka":
        pytest.skip("Kafka brokers may create topics on first use (auto.create.topics.enable)")
    gone = stack.Provisioned(topic.kind, "orders", ("billing",))
    await gone.create()
    await gone.delete()
    async with broker_for(gone, tmp_path, retry_timeout=1.0) as broker:
        with pytest.raises(errors.BrokerError):
            await broker.publish("orders", "into the void")


async def test_unknown_tag_and_subscription_name_the_binding(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    async with broker_for(topic, tmp_path) as broker:
        with pytest.raises(errors.InvalidConfigError, match=r"'nope' is not in topics\.json"):
            await broker.publish("nope", "x")
        with pytest.raises(errors.InvalidConfigError, match="no subscription 'audit'"):
            broker.subscribe("orders", "audit")


async def test_cli_publishes_and_consumes_json_lines(
    topic: stack.Provisioned, tmp_path: pathlib.Path
) -> None:
    folder = topic.write(tmp_path / "message-bus")
    cli = [sys.executable, "-m", "ductape_operator.messaging"]
    common = ["--binding", str(folder), "--topic", "orders"]

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *cli, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE * 2)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    published = json.loads(await run("publish", *common, "--header", "k=v", "--json", '{"a": 1}'))
    out = await run(
        "consume", *common, "--subscription", "shipping", "--count", "1", "--timeout", "30"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1
    assert lines[0]["id"] == published["id"]
    assert lines[0]["headers"] == {"k": "v"}
    assert lines[0]["data"] == {"a": 1}
    assert lines[0]["content_type"] == "application/json"
