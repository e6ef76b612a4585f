"""Refused credentials and refused operations map to the project's errors."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider
from tests.providers.conftest import stack_config, unique_topic

T = models.MessageBrokerTypes
WRONG = "wrong-password-0f3c"


async def test_rabbitmq_refused_login_is_an_auth_error(stack: dict[str, str]) -> None:
    url = urllib.parse.urlsplit(stack["AMQP_URL"])
    config = models.BrokerConfig.model_validate(
        {
            "host": url.hostname,
            "port": url.port,
            "username": "guest",
            "password": {"secretKeyRef": {"name": "s", "key": "k"}},
        }
    )
    provider = build_provider(T.RABBITMQ, config, base.SecretValues({("s", "k"): WRONG}))
    with pytest.raises(errors.BrokerAuthError) as caught:
        await provider.probe(5.0)
    assert caught.value.retriable
    assert WRONG not in caught.value.message
    assert provider.endpoint in caught.value.message
    assert caught.value.__cause__ is not None


async def test_redis_refused_login_is_an_auth_error(stack: dict[str, str]) -> None:
    url = urllib.parse.urlsplit(stack["REDIS_URL"])
    config = models.BrokerConfig.model_validate(
        {
            "host": url.hostname,
            "port": url.port,
            "username": f"nobody-{uuid.uuid4().hex[:8]}",
            "password": {"secretKeyRef": {"name": "s", "key": "k"}},
        }
    )
    provider = build_provider(T.REDIS, config, base.SecretValues({("s", "k"): WRONG}))
    with pytest.raises(errors.BrokerAuthError) as caught:
        await provider.probe(5.0)
    assert WRONG not in caught.value.message


async def test_redis_key_of_another_type_is_refused_for_good(stack: dict[str, str]) -> None:
    import redis.asyncio as aredis

    config, secrets = stack_config(T.REDIS, stack)
    plan = unique_topic()
    client = aredis.from_url(stack["REDIS_URL"])
    await client.set(plan.name, "not a stream")
    try:
        async with build_provider(T.REDIS, config, secrets) as provider:
            with pytest.raises(errors.ProvisioningError) as caught:
                await provider.ensure_topic(plan)
            assert not caught.value.retriable
            assert plan.name in caught.value.message
            assert not await provider.topic_exists(plan)
    finally:
        await client.delete(plan.name)
        await client.aclose()


async def test_rabbitmq_exchange_of_another_type_is_refused_for_good(
    stack: dict[str, str],
) -> None:
    import aio_pika

    config, secrets = stack_config(T.RABBITMQ, stack)
    plan = unique_topic()
    connection = await aio_pika.connect(stack["AMQP_URL"])
    try:
        channel = await connection.channel()
        await channel.declare_exchange(plan.name, aio_pika.ExchangeType.FANOUT, durable=True)
        async with build_provider(T.RABBITMQ, config, secrets) as provider:
            with pytest.raises(errors.ProvisioningError) as caught:
                await provider.ensure_topic(plan)
            assert not caught.value.retriable
            assert plan.name in caught.value.message
            await provider.delete_topic(plan)
    finally:
        await connection.close()
