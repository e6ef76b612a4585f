"""The stack's secure listeners, with the raw clients: TLS with the stack's CA, users, refusals.

The operator's own code is not used here: this checks the stack the secure tests
(tests/providers/test_secure.py, tests/e2e/test_secure.py) stand on.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.parse

import aio_pika
import nats
import pytest
import redis.asyncio
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient

from tests import secure as secure_

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    missing = [name for name in secure_.NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `make testenv-up` and `. .testenv/env`")
    return dict(os.environ)


def context(env: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=env["TESTENV_CA_FILE"])


def kafka_admin(env: dict[str, str], password: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=env["KAFKA_SASL_BOOTSTRAP_SERVERS"],
        security_protocol="SASL_SSL",
        ssl_context=context(env),
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=env["KAFKA_SASL_USERNAME"],
        sasl_plain_password=password,
        request_timeout_ms=10000,
    )


def test_the_server_certificate_names_127_0_0_1_only(env: dict[str, str]) -> None:
    url = urllib.parse.urlsplit(env["REDIS_TLS_URL"])
    assert url.scheme == "rediss" and url.hostname == "127.0.0.1"
    with (
        socket.create_connection(("127.0.0.1", url.port or 0), timeout=5) as raw,
        context(env).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    assert cert["subjectAltName"] == (("IP Address", "127.0.0.1"),)


async def test_redis_tls_port_takes_the_acl_user(env: dict[str, str]) -> None:
    client = redis.asyncio.from_url(env["REDIS_TLS_URL"], ssl_ca_certs=env["TESTENV_CA_FILE"])
    try:
        assert await client.acl_whoami() == "ductape"
    finally:
        await client.aclose()


async def test_amqps_listener_takes_the_user(env: dict[str, str]) -> None:
    assert env["AMQPS_URL"].startswith("amqps://")
    connection = await aio_pika.connect(env["AMQPS_URL"], ssl_context=context(env), timeout=10)
    try:
        channel = await connection.channel()
        await channel.close()
    finally:
        await connection.close()


async def test_kafka_sasl_ssl_listener_takes_the_scram_user_only(env: dict[str, str]) -> None:
    admin = kafka_admin(env, env["KAFKA_SASL_PASSWORD"])
    await admin.start()
    try:
        assert isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()
    refused = kafka_admin(env, "not-the-password")
    with pytest.raises(kafka_errors.KafkaConnectionError):
        await refused.start()
    await refused.close()


async def test_nats_tls_server_requires_tls_and_the_user(env: dict[str, str]) -> None:
    url = urllib.parse.urlsplit(env["NATS_TLS_URL"])
    server = f"tls://{url.hostname}:{url.port}"
    client = await nats.connect(
        server, user=url.username, password=url.password, tls=context(env), connect_timeout=10
    )
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None  # JetStream answers on the secure server too
    finally:
        await client.close()
    # Its INFO, the first line on the wire, tells every client to start TLS.
    with socket.create_connection((url.hostname or "", url.port or 0), timeout=5) as raw:
        info_line = raw.makefile("rb").readline()
    assert info_line.startswith(b"INFO ")
    info = json.loads(info_line.removeprefix(b"INFO "))
    assert info["tls_required"] is True and info["auth_required"] is True
