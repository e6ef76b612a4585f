"""Retention and dead-letter settings on every provider, read back with raw clients.

`ensure_settings` sets them in place, changes them, and removes them (the broker's
default then stands); docs/messaging.md, "Dead letters and retention", has the
per-provider mapping these tests pin down.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from ductape_operator import errors, models
from ductape_operator.brokers.rabbitmq import operator as rabbitmq
from ductape_operator.brokers.sqs import operator as sqs
from ductape_operator.providers import base
from tests.providers import raw
from tests.providers.conftest import TYPES, unique_topic

T = models.MessageBrokerTypes
pytestmark = pytest.mark.parametrize("type_", TYPES, ids=[t.value for t in TYPES])


def _pair() -> tuple[base.TopicPlan, base.TopicPlan]:
    """A dead-letter topic with its one subscription, and a topic dead-lettering into it."""
    dead = unique_topic(subscriptions=("ops",))
    live = dataclasses.replace(
        unique_topic(subscriptions=("billing",)),
        retention_seconds=600,
        dead_letter=base.DeadLetterPlan(
            tag=dead.tag, name=dead.name, subscription="ops", max_delivery_attempts=5
        ),
    )
    return dead, live


async def test_settings_set_changed_and_removed(
    type_: T, provider: base.Provider, plans: list[base.TopicPlan], stack: dict[str, str]
) -> None:
    dead, live = _pair()
    plans += [live, dead]
    await provider.ensure_topic(dead)
    await provider.ensure_topic(live)
    await provider.ensure_settings(live)
    # Applied: a second round finds nothing to change.
    assert await provider.ensure_settings(live) is False
    changed = dataclasses.replace(
        live,
        retention_seconds=1209600,
        dead_letter=base.DeadLetterPlan(
            tag=dead.tag, name=dead.name, subscription="ops", max_delivery_attempts=100
        ),
    )
    removed = dataclasses.replace(live, retention_seconds=None, dead_letter=None)
    dead_queue = sqs.queue_name(dead.name, "ops")

    if type_ is T.KAFKA:
        assert await raw.read_settings(type_, stack, live) == {None: raw.QueueSettings(600)}
        assert await provider.ensure_settings(changed) is True
        assert await raw.read_settings(type_, stack, live) == {None: raw.QueueSettings(1209600)}
        assert await provider.ensure_settings(removed) is True
        assert await raw.read_settings(type_, stack, live) == {None: raw.QueueSettings(None)}
    elif type_ is T.AWS_SQS:
        read = await raw.read_settings(type_, stack, live)
        # One receive above the attempts: the client moves it first, with its headers.
        assert read == {"billing": raw.QueueSettings(600, (dead_queue, 6))}
        assert await provider.ensure_settings(changed) is True
        read = await raw.read_settings(type_, stack, live)
        assert read == {"billing": raw.QueueSettings(1209600, (dead_queue, 101))}
        assert await provider.ensure_settings(removed) is True
        read = await raw.read_settings(type_, stack, live)
        assert read == {"billing": raw.QueueSettings(sqs.DEFAULT_RETENTION_SECONDS, None)}
    elif type_ is T.GOOGLE_PUBSUB:
        read = await raw.read_settings(type_, stack, live)
        assert read == {
            None: raw.QueueSettings(600),
            "billing": raw.QueueSettings(600, (dead.name, 5)),
        }
        assert await provider.ensure_settings(changed) is True
        read = await raw.read_settings(type_, stack, live)
        # A subscription keeps messages 7 days at most; the topic keeps them 14.
        assert read == {
            None: raw.QueueSettings(1209600),
            "billing": raw.QueueSettings(604800, (dead.name, 100)),
        }
        assert await provider.ensure_settings(removed) is True
        read = await raw.read_settings(type_, stack, live)
        assert read["billing"] == raw.QueueSettings(604800)
        # Cleared: unset on Pub/Sub; the emulator reports a cleared retention as 31 days.
        assert read[None].retention in (None, 2678400)
    elif type_ is T.RABBITMQ:
        queue = rabbitmq.queue_name(live.name, "billing")
        assert await raw.rabbit_queue_has_arguments(stack, queue, {"x-message-ttl": 600000})
        # An empty, unused queue is re-declared with the new argument.
        assert await provider.ensure_settings(changed) is True
        assert await raw.rabbit_queue_has_arguments(stack, queue, {"x-message-ttl": 1209600000})
        assert await provider.ensure_settings(removed) is True
        assert await raw.rabbit_queue_has_arguments(stack, queue, {})
        # Still bound to the exchange: a published message arrives there.
        location = base.TopicRoute(tag="live", name=live.name, subscriptions={"billing": queue})
        await raw.publish({"type": "rabbitmq", "uri": stack["AMQP_URL"]}, location, b"kept")
        # A queue holding a message is never deleted: the change waits, naming topic and field.
        with pytest.raises(errors.ProvisioningError) as info:
            await provider.ensure_settings(live)
        assert f"topic {live.tag}: retentionSeconds" in info.value.message
        assert "1 message(s)" in info.value.message
        assert await raw.rabbit_queue_has_arguments(stack, queue, {})
    elif type_ is T.NATS:
        # The stream's MaxAge; each consumer's MaxDeliver is one above the attempts (the
        # client moves the message on that last delivery; no target on the server).
        read = await raw.read_settings(type_, stack, live)
        assert read == {None: raw.QueueSettings(600), "billing": raw.QueueSettings(None, ("", 6))}
        assert await provider.ensure_settings(changed) is True
        read = await raw.read_settings(type_, stack, live)
        assert read == {
            None: raw.QueueSettings(1209600),
            "billing": raw.QueueSettings(None, ("", 101)),
        }
        assert await provider.ensure_settings(removed) is True
        read = await raw.read_settings(type_, stack, live)
        assert read == {None: raw.QueueSettings(None), "billing": raw.QueueSettings(None)}
    elif type_ is T.REDIS:
        async with raw.redis_client(stack) as client:
            now_ms = int(time.time() * 1000)
            await client.xadd(live.name, {"data": "old"}, id=f"{now_ms - 700_000}-0")
            await client.xadd(live.name, {"data": "new"})
            assert await provider.ensure_settings(live) is False  # trimming is not drift
            entries = await client.xrange(live.name)
        assert [fields["data"] for _id, fields in entries] == ["new"]
    if type_ is not T.RABBITMQ and type_ is not T.REDIS:
        # Drift: set back to what is declared.
        assert await provider.ensure_settings(live) is True
        assert await provider.ensure_settings(live) is False
