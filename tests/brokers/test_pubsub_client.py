"""The Pub/Sub messaging transport on the stack's emulator: which id a message gets and
what travels as attributes (docs/messaging.md, "How each broker carries a message").

On a topic without a dead-letter topic the id is the one Pub/Sub gives in the publish
response, and no `ductape-id` attribute goes out; an id the application chose does.
(On a topic with a dead-letter topic the client's id travels as the attribute, so that
a message the service moves keeps it: tests/messaging/test_dead_letters.py.)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from ductape_operator.messaging import Broker
from ductape_operator.messaging import message as message_
from tests.brokers import pubsub as raw
from tests.messaging import stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]
DEADLINE = 30.0


@pytest.fixture
async def topic() -> Any:
    if stack.missing("google-pubsub"):
        pytest.skip("local stack not configured for google-pubsub")
    provisioned = stack.Provisioned("google-pubsub", "orders", ("raw", "app"))
    await provisioned.create()
    try:
        yield provisioned
    finally:
        await provisioned.delete()


async def _pull_raw(topic: stack.Provisioned, count: int) -> list[Any]:
    """`count` messages of subscription `raw` as the SDK hands them over, acked."""
    emulator, project = os.environ["PUBSUB_EMULATOR_HOST"], os.environ["PUBSUB_PROJECT_ID"]
    return await asyncio.to_thread(
        raw.pull_raw, emulator, project, topic.subscription("raw"), count=count, timeout=DEADLINE
    )


async def test_the_id_is_the_servers_unless_the_application_chose_one(
    topic: stack.Provisioned,
) -> None:
    async with Broker.from_binding(mapping=topic.entries()) as broker:
        ids = await broker.publish_many("orders", [b"a", {"n": 2}], headers={"trace": "t"})
        chosen = await broker.publish("orders", b"c", message_id="order-7")
        assert chosen == "order-7"
        on_wire = {m.message_id: m for m in await _pull_raw(topic, 3)}
        assert set(on_wire) >= set(ids), "publish returns the ids Pub/Sub gave"
        for server_id, data in zip(ids, [b"a", b'{"n":2}'], strict=True):
            sent = on_wire[server_id]
            assert sent.data == data
            assert message_.ID_HEADER not in sent.attributes
            assert sent.attributes["trace"] == "t"
        (other,) = (m for i, m in on_wire.items() if i not in ids)
        assert other.data == b"c"
        assert dict(other.attributes) == {message_.ID_HEADER: "order-7"}
        async with broker.subscribe("orders", "app") as app:
            received: list[message_.Message] = []
            end = time.monotonic() + DEADLINE
            while len(received) < 3 and time.monotonic() < end:
                received += await app.receive_many(10, timeout=1.0)
            await app.ack_many(received)
        assert sorted(m.id for m in received) == sorted([*ids, "order-7"])
        by_id = {m.id: m for m in received}
        assert by_id[ids[1]].json() == {"n": 2}
        assert by_id[ids[1]].headers == {"trace": "t"}
        assert by_id["order-7"].headers == {}
