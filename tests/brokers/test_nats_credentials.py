"""`credentials` (a `.creds` file) against a nats-server in operator mode.

The provider provisions with a user JWT and its NKey seed, the messaging client
publishes and consumes from the entries the operator writes, and a user of an
account the server does not know is refused as an authentication failure, the
seed never in the message.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import pytest

from ductape_operator import errors, models
from ductape_operator.brokers.nats.operator import NatsProvider
from ductape_operator.messaging import Broker
from ductape_operator.providers import base
from tests.brokers import nats_jwt
from tests.brokers.conftest import PrivateServer, unique_topic

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]
CREDS_REF = ("nats-creds", "app.creds")


def creds_config(url: str, creds: str) -> tuple[models.BrokerConfig, base.SecretValues]:
    name, key = CREDS_REF
    raw = {"servers": [url], "credentials": {"secretKeyRef": {"name": name, "key": key}}}
    return models.BrokerConfig.model_validate(raw), base.SecretValues({CREDS_REF: creds})


@pytest.fixture
def operator_mode(
    nats_server_binary: str, tmp_path: pathlib.Path
) -> Iterator[tuple[PrivateServer, nats_jwt.Operator, nats_jwt.Account]]:
    """A private nats-server that knows one operator and one account of it."""
    operator = nats_jwt.Operator.new()
    account = operator.account("app")
    server = PrivateServer(nats_server_binary, tmp_path / "nats")
    server.config = nats_jwt.server_config(
        server.port, str(server.data / "jetstream"), operator, [account]
    )
    server.start()
    try:
        yield server, operator, account
    finally:
        server.stop()


async def test_a_creds_file_provisions_and_the_client_uses_it(
    operator_mode: tuple[PrivateServer, nats_jwt.Operator, nats_jwt.Account],
) -> None:
    server, _, account = operator_mode
    creds = account.user_creds("app")
    config, secrets = creds_config(server.url, creds)
    plan = unique_topic(("billing",))
    async with NatsProvider(config, secrets) as provider:
        await provider.probe(10)
        location = await provider.ensure_topic(plan)
        assert await provider.topic_exists(plan)
        entries = provider.binding()
        assert entries["credentials"] == creds
        assert "username" not in entries and "password" not in entries
        # What the operator writes to the connection Secret, read by an application.
        mapping = {
            **entries,
            "type": "nats",
            "topics.json": json.dumps({plan.tag: location.as_json()}),
        }
        async with (
            Broker.from_binding(mapping=mapping) as broker,
            broker.subscribe(plan.tag, "billing") as billing,
        ):
            sent = await broker.publish(plan.tag, {"paid": True})
            got = None
            deadline = time.monotonic() + 60
            while got is None and time.monotonic() < deadline:
                got = await billing.receive(timeout=5)
            assert got is not None and got.id == sent and got.json() == {"paid": True}
            await got.ack()
        await provider.delete_topic(plan)


async def test_a_user_of_an_unknown_account_is_refused(
    operator_mode: tuple[PrivateServer, nats_jwt.Operator, nats_jwt.Account],
) -> None:
    server, operator, _ = operator_mode
    stranger = operator.account("not-preloaded")  # signed by the operator, unknown to the server
    creds = stranger.user_creds("app")
    config, secrets = creds_config(server.url, creds)
    provider = NatsProvider(config, secrets)
    try:
        with pytest.raises(errors.BrokerAuthError) as refused:
            await provider.probe(10)
    finally:
        await provider.aclose()
    seed = creds.split("-----BEGIN USER NKEY SEED-----\n")[1].split("\n")[0]
    assert seed.startswith("SU")
    assert seed not in refused.value.message
    assert server.url.removeprefix("nats://") in refused.value.message
