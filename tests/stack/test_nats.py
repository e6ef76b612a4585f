"""Smoke test of the local stack's nats-server: JetStream answers, and credentials count.

Driven with nats-py, the client library the operator and the messaging client use,
so a failure here points at the stack (hack/testenv-up.sh), not at the provider.
"""

from __future__ import annotations

import os

import nats
import nats.errors
import pytest
from nats.js import api

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def nats_env() -> dict[str, str]:
    needed = ("NATS_URL", "NATS_USERNAME", "NATS_PASSWORD")
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `make testenv-up` and `. .testenv/env`")
    return {name: os.environ[name] for name in needed}


async def test_jetstream_round_trip(nats_env: dict[str, str], name: str) -> None:
    nc = await nats.connect(nats_env["NATS_URL"], connect_timeout=TIMEOUT)
    try:
        js = nc.jetstream(timeout=TIMEOUT)
        account = await js.account_info()
        assert account.limits is not None  # JetStream is enabled for this account
        await js.add_stream(name=name, subjects=[name], max_age=600)
        await js.add_consumer(
            name, api.ConsumerConfig(durable_name="group", ack_policy=api.AckPolicy.EXPLICIT)
        )
        ack = await js.publish(name, b"hello nats", headers={"greeting": "hi"})
        assert ack.stream == name
        sub = await js.pull_subscribe_bind("group", stream=name)
        [msg] = await sub.fetch(1, timeout=TIMEOUT)
        assert msg.data == b"hello nats"
        assert msg.headers == {"greeting": "hi"}
        await msg.ack_sync()
        info = await js.consumer_info(name, "group")
        assert info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.jetstream().delete_stream(name)
        await nc.close()


async def test_credentials_are_checked(nats_env: dict[str, str]) -> None:
    url = nats_env["NATS_URL"]
    nc = await nats.connect(url, user=nats_env["NATS_USERNAME"], password=nats_env["NATS_PASSWORD"])
    try:
        assert (await nc.jetstream().account_info()).streams >= 0
    finally:
        await nc.close()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            url,
            user=nats_env["NATS_USERNAME"],
            password="wrong",
            allow_reconnect=False,
            max_reconnect_attempts=1,
        )
