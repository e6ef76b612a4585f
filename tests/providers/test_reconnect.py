"""A connection the broker closed is reopened on the next use (RabbitMQ, the real broker).

RabbitMQ itself closes every client connection (`rabbitmqctl close_all_connections`)
while a hundred topics are being provisioned through one provider; every topic
must still be provisioned, from the same provider, with no restart.
"""

from __future__ import annotations

import asyncio
import pathlib
import subprocess

from ductape_operator import errors, models
from ductape_operator.providers import build_provider
from tests.providers.conftest import stack_config, unique_topic

ROOT = pathlib.Path(__file__).resolve().parents[2]
RABBITMQ = models.MessageBrokerTypes.RABBITMQ


def close_all_connections() -> None:
    subprocess.run(
        [str(ROOT / "hack" / "rabbitmqctl.sh"), "close_all_connections", "test: broker-side close"],
        check=True,
        capture_output=True,
        timeout=90,
    )


async def test_rabbitmq_connection_closed_by_the_broker_is_reopened(
    stack: dict[str, str],
) -> None:
    config, secrets = stack_config(RABBITMQ, stack)
    plans = [unique_topic(subscriptions=("billing",)) for _ in range(100)]
    async with build_provider(RABBITMQ, config, secrets) as provider:
        await provider.probe(5)
        closing = asyncio.create_task(asyncio.to_thread(close_all_connections))
        outcomes = await asyncio.gather(
            *(provider.ensure_topic(plan) for plan in plans), return_exceptions=True
        )
        await closing
        # Some operations may have been cut off by the close itself; the next use
        # reopens the connection, so a retry of each of them succeeds.
        failed = [
            plan
            for plan, outcome in zip(plans, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        ]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, errors.BrokerError), repr(outcome)
        for plan in failed:
            await provider.ensure_topic(plan)
        # After the broker closed it, the connection is usable again without a restart.
        close_all_connections()
        await provider.probe(5)
        assert await provider.inventory(plans) == frozenset(plans)
        for plan in plans:
            await provider.delete_topic(plan)
