"""Dead letters through the messaging client, the same test code on all five providers.

A topic `orders` (subscription billing) dead-letters into `orders-dead` (subscription
ops) after 5 deliveries. Both are provisioned as the operator does it (ensure_topic,
then ensure_settings for the native part), and the client works from the entries
alone (topics.json with `deadLetter`). docs/messaging.md, "Dead letters and retention".
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from ductape_operator import providers
from ductape_operator.messaging import Broker, Message, Subscription
from ductape_operator.messaging import broker as broker_
from ductape_operator.providers import base
from tests.messaging import stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

ATTEMPTS = 5
#: Short, so that the never-acked message runs out of attempts fast (SQS and Pub/Sub
#: count whole seconds).
REDELIVERY = 1.0
DEADLINE = 60.0


class Pair:
    """`orders` dead-lettering into `orders-dead`, on one broker."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        suffix = uuid.uuid4().hex[:10]
        self.dead = base.TopicPlan("orders-dead", f"dl.{suffix}.dead", ("ops",))
        self.live = base.TopicPlan(
            "orders",
            f"dl.{suffix}.live",
            ("billing",),
            dead_letter=base.DeadLetterPlan("orders-dead", self.dead.name, "ops", ATTEMPTS),
        )
        self.entries: dict[str, str] = {}

    def _provider(self) -> base.Provider:
        return providers.build_provider(stack.TYPES[self.kind], *stack.config(self.kind))

    async def create(self) -> None:
        async with self._provider() as provider:
            dead = await provider.ensure_topic(self.dead)
            live = await provider.ensure_topic(self.live)
            await provider.ensure_settings(self.live)
            topics = {
                "orders": live.as_json()
                | {"deadLetter": {"topic": "orders-dead", "maxDeliveryAttempts": ATTEMPTS}},
                "orders-dead": dead.as_json(),
            }
            self.entries = {
                **provider.binding(),
                "type": self.kind,
                "provider": "ductape",
                "topics.json": json.dumps(topics),
            }

    async def delete(self) -> None:
        async with self._provider() as provider:
            for plan in (self.live, self.dead):
                await provider.delete_topic(plan)

    def broker(self) -> Broker:
        return Broker.from_binding(mapping=self.entries, redelivery_timeout=REDELIVERY)


@pytest.fixture(params=list(stack.PROVIDERS))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    kind: str = request.param
    absent = stack.missing(kind)
    if absent:
        pytest.skip(f"local stack not configured for {kind}: {', '.join(absent)} unset")
    created = Pair(kind)
    await created.create()
    try:
        yield created
    finally:
        await created.delete()


async def _deliveries(
    subscription: Subscription, dead: Subscription, message_id: str, *, nack: bool
) -> tuple[int, Message]:
    """Take every delivery of the message (nacking it, or leaving it unsettled) until it
    shows up on the dead-letter subscription; how many deliveries, and the dead letter."""
    seen = 0
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        message = await subscription.receive(timeout=0.5)
        if message is not None:
            assert message.id == message_id
            seen += 1
            if nack:
                await message.nack()
        dead_letter = await dead.receive(timeout=0.1)
        if dead_letter is not None:
            await dead_letter.ack()
            return seen, dead_letter
    pytest.fail(f"not dead-lettered within {DEADLINE}s after {seen} deliveries")


async def _published(broker: Broker) -> str:
    return await broker.publish("orders", {"order": 7}, headers={"trace": "t-7"}, key="c-1")


def _is_the_dead_letter(dead_letter: Message, message_id: str, count: int) -> None:
    assert dead_letter.id == message_id
    assert dead_letter.json() == {"order": 7}
    assert dead_letter.headers["trace"] == "t-7"
    assert dead_letter.headers[broker_.DEAD_LETTER_TOPIC_HEADER] == "orders"
    assert dead_letter.headers[broker_.DEAD_LETTER_SUBSCRIPTION_HEADER] == "billing"
    assert dead_letter.headers[broker_.DEAD_LETTER_COUNT_HEADER] == str(count)


async def _nothing_left(subscription: Subscription, dead: Subscription) -> None:
    # Past a redelivery timeout: anything unsettled would have come back by now.
    assert await subscription.receive(timeout=REDELIVERY + 2) is None
    assert await dead.receive(timeout=1) is None


async def test_nacked_every_time_it_is_dead_lettered_after_the_attempts(pair: Pair) -> None:
    async with (
        pair.broker() as broker,
        broker.subscribe("orders", "billing") as billing,
        broker.subscribe("orders-dead", "ops") as ops,
    ):
        message_id = await _published(broker)
        seen, dead_letter = await _deliveries(billing, ops, message_id, nack=True)
        assert seen == ATTEMPTS
        _is_the_dead_letter(dead_letter, message_id, ATTEMPTS)
        await _nothing_left(billing, ops)


async def test_nack_without_requeue_dead_letters_at_once(pair: Pair) -> None:
    async with (
        pair.broker() as broker,
        broker.subscribe("orders", "billing") as billing,
        broker.subscribe("orders-dead", "ops") as ops,
    ):
        message_id = await _published(broker)
        message = await billing.receive(timeout=DEADLINE)
        assert message is not None and message.id == message_id
        await message.nack(requeue=False)
        dead_letter = await ops.receive(timeout=DEADLINE)
        assert dead_letter is not None
        await dead_letter.ack()
        _is_the_dead_letter(dead_letter, message_id, 1)
        await _nothing_left(billing, ops)


async def test_never_acked_it_is_dead_lettered_after_the_timeouts(pair: Pair) -> None:
    async with (
        pair.broker() as broker,
        broker.subscribe("orders", "billing") as billing,
        broker.subscribe("orders-dead", "ops") as ops,
    ):
        message_id = await _published(broker)
        seen, dead_letter = await _deliveries(billing, ops, message_id, nack=False)
        assert seen == ATTEMPTS
        _is_the_dead_letter(dead_letter, message_id, ATTEMPTS)
        await _nothing_left(billing, ops)
