"""Secure connections end to end: TLS, SASL_SSL with SCRAM and ACL users on the stack.

Each of Kafka, Redis and RabbitMQ goes Ready over its secure listener, its topics
exist on the broker, and the messaging client publishes and consumes through the
connection Secret alone (which carries `ca.crt`). The failures people meet there,
an untrusted CA, a host name the certificate lacks, a refused login, a name that
does not resolve, each get their own reason, naming the env and the endpoint and
never a password or a certificate, and the operator keeps running.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
import urllib.parse
from typing import Any

import pytest

from ductape_operator import brokers
from ductape_operator.messaging import Broker
from tests import secure as secure_
from tests.brokers import nats as nats_kit
from tests.e2e import kit
from tests.e2e.conftest import HEALTH_INTERVAL, OperatorProcess

TYPES = [t.value for t in secure_.SECURE_TYPES]
#: The endpoint's scheme on each secure listener.
SCHEMES = {"KAFKA": "kafka", "REDIS": "rediss", "RABBITMQ": "amqps", "NATS": "tls"}


@pytest.fixture(scope="module", autouse=True)
def _secure_listeners() -> None:
    missing = [name for name in secure_.NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: the stack's secure listeners are missing")


def manifest(name: str, type_: str, secure: secure_.Secure, topics: list[dict[str, Any]]) -> Any:
    body = kit.broker_manifest(name, envs=[("dev", type_)], topics=topics)
    body["spec"]["envs"][0]["config"] = secure.config
    return body


def create_secrets(kube: kit.Kube, ns: str, secure: secure_.Secure) -> None:
    for secret_name, data in secure.secrets.items():
        kube.create_secret(ns, secret_name, data)


def assert_no_leak(
    kube: kit.Kube, ns: str, name: str, operator: OperatorProcess, leaks: list[str]
) -> None:
    status = json.dumps((kube.get(ns, name) or {}).get("status"))
    events = kit.kubectl("get", "events", "-n", ns, "-o", "yaml")
    log = operator.log()
    for leak in leaks:
        assert leak not in status
        assert leak not in events
        assert leak not in log


def warning_event(kube: kit.Kube, ns: str, name: str, reason: str) -> list[Any]:
    return [
        e
        for e in kube.events(ns)
        if e.involved_object.name == name and e.reason == reason and e.type == "Warning"
    ]


# --- raw broker checks, with the stack's CA and none of the operator's code -----------


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ["TESTENV_CA_FILE"])


async def exists_on_broker(type_: str, entry: dict[str, Any]) -> bool:
    name = entry["name"]
    subs = list(entry["subscriptions"].values())
    if type_ == "KAFKA":
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=os.environ["KAFKA_SASL_BOOTSTRAP_SERVERS"],
            security_protocol="SASL_SSL",
            ssl_context=_context(),
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username=os.environ["KAFKA_SASL_USERNAME"],
            sasl_plain_password=os.environ["KAFKA_SASL_PASSWORD"],
        )
        await admin.start()
        try:
            return name in await admin.list_topics()
        finally:
            await admin.close()
    if type_ == "REDIS":
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(
            os.environ["REDIS_TLS_URL"], ssl_ca_certs=os.environ["TESTENV_CA_FILE"]
        )
        try:
            if await client.type(name) != b"stream":
                return False
            groups = {g["name"].decode() for g in await client.xinfo_groups(name)}
            return set(subs) <= groups
        finally:
            await client.aclose()
    if type_ == "NATS":
        import nats
        import nats.js.errors as js_errors

        url = urllib.parse.urlsplit(os.environ["NATS_TLS_URL"])
        client = await nats.connect(
            f"tls://{url.hostname}:{url.port}",
            user=url.username,
            password=url.password,
            tls=_context(),
        )
        try:
            js = client.jetstream()
            try:
                durables = {c.name for c in await js.consumers_info(nats_kit.stream(name))}
            except js_errors.NotFoundError:
                return False
            return set(subs) <= durables
        finally:
            await client.close()
    import aio_pika

    connection = await aio_pika.connect(os.environ["AMQPS_URL"], ssl_context=_context())
    try:
        channel = await connection.channel()
        await channel.declare_exchange(name, passive=True)
        for queue in subs:
            await channel.declare_queue(queue, passive=True)
        return True
    finally:
        await connection.close()


# --- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
@pytest.mark.parametrize("type_", TYPES)
async def test_secure_env_goes_ready_and_the_client_uses_the_secret(
    kube: kit.Kube, namespace: str, operator: OperatorProcess, type_: str, mutual: bool
) -> None:
    name = kit.unique(f"tls-{type_.lower()}")
    secure = secure_.secure_config(secure_.T(type_), dict(os.environ), mutual=mutual)
    create_secrets(kube, namespace, secure)
    topics = kit.topics_for(name, count=1)
    kube.apply(namespace, manifest(name, type_, secure, topics))
    obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady")

    endpoint = obj["status"]["envs"][0]["endpoint"]
    assert endpoint.startswith(f"{SCHEMES[type_]}://")
    secret = kube.secret(namespace, f"{name}-dev")
    assert secret is not None
    # The Secret carries what the client needs: the CA (Service Binding style) and TLS on.
    assert secret["ca.crt"] == secure_.stack_ca(dict(os.environ))
    if mutual:
        cert, key = secure_.client_pair(dict(os.environ))
        assert (secret["tls.crt"], secret["tls.key"]) == (cert, key)
    else:
        assert "tls.crt" not in secret and "tls.key" not in secret
    if type_ == "KAFKA":
        assert secret["security-protocol"] == "SASL_SSL"
        assert secret["sasl-mechanism"] == "SCRAM-SHA-512"
    else:
        assert urllib.parse.urlsplit(secret["uri"]).scheme == SCHEMES[type_]
    entry = kit.topics_json(secret)["t0"]
    assert await exists_on_broker(type_, entry)

    # The messaging client, from the Secret alone, over TLS: publish, consume on both.
    async with (
        Broker.from_binding(mapping=secret, redelivery_timeout=5) as broker,
        broker.subscribe("t0", "billing") as billing,
        broker.subscribe("t0", "shipping") as shipping,
    ):
        sent = await broker.publish("t0", {"order": name})
        for messages in (billing, shipping):
            deadline = time.monotonic() + 60
            got = None
            while got is None and time.monotonic() < deadline:
                got = await messages.receive(timeout=5)
            assert got is not None and got.id == sent
            assert got.json() == {"order": name}
            await got.ack()
    assert_no_leak(kube, namespace, name, operator, secure_.pem_bodies(secure))


#: A broker SDK's own WARNING or ERROR line in the operator's log (kopf's format: the time,
#: the logger's name cut to 20 characters, the level).
SDK_LINE = re.compile(
    r"^\[[^\]]+\] (?:"
    + "|".join(re.escape(name) for kind in brokers.kinds() for name in kind.sdk_loggers)
    + r")\S*\s+\[(?:WARNING|ERROR)"
)

#: case -> (secure_config options, reason, words of the message)
FAILURES: dict[str, tuple[dict[str, Any], str, str]] = {
    "untrusted-ca": ({"ca": "other"}, "TLSFailed", "not trusted"),
    "wrong-host-name": ({"host": "localhost"}, "TLSFailed", "does not match the host name"),
    "wrong-password": (
        {"password": "wrong-e2e-7d41c0"},
        "AuthenticationFailed",
        "refused the credentials",
    ),
    "unresolvable-host": (
        {"host": "no-such-broker.invalid"},
        "BrokerUnreachable",
        "does not resolve",
    ),
}


@pytest.mark.parametrize("type_", TYPES)
def test_secure_failures_have_their_own_reasons(
    kube: kit.Kube, namespace: str, operator: OperatorProcess, type_: str
) -> None:
    env = dict(os.environ)
    since = operator.log_size()
    cases: dict[str, secure_.Secure] = {}
    for case, (options, _reason, _words) in FAILURES.items():
        if options.get("ca") == "other":
            options = {**options, "ca": secure_.other_ca()}
        name = f"{case}-{type_.lower()}"
        # Each resource its own Secrets, so each case is alone with its values.
        secure = secure_.secure_config(secure_.T(type_), env, prefix=f"{name}-", **options)
        create_secrets(kube, namespace, secure)
        kube.apply(namespace, manifest(name, type_, secure, kit.topics_for(name, count=1)))
        cases[case] = secure

    for case, secure in cases.items():
        _options, reason, words = FAILURES[case]
        name = f"{case}-{type_.lower()}"
        obj = kube.wait_condition(namespace, name, "False", reason, timeout=90)
        ready = kit.condition_of(obj)
        assert ready is not None
        message = ready["message"]
        env_status = obj["status"]["envs"][0]
        assert message.startswith("dev: "), message
        assert secure.address in message, message
        assert words in message, message
        assert env_status["phase"] in ("Pending", "Degraded")
        # Events are posted in the background: the condition may come first.
        kit.wait_until(
            lambda name=name, reason=reason: warning_event(kube, namespace, name, reason),
            timeout=30,
            what=f"a Warning event {reason} for {name}",
        )
        leaks = secure_.pem_bodies(secure)
        if case != "wrong-password":
            leaks.append(secure_.stack_password(env))
        assert_no_leak(kube, namespace, name, operator, leaks)
    # Each failure is the operator's line on a transition, not the SDK's on every attempt.
    sdk_lines = [line for line in operator.log(since).splitlines() if SDK_LINE.match(line)]
    assert not sdk_lines, "a broker SDK logged its own failure:\n" + "\n".join(sdk_lines[:5])
    operator.assert_alive()


def test_kafka_sasl_password_rotation_is_picked_up_without_restart(
    kube: kit.Kube, namespace: str, operator: OperatorProcess
) -> None:
    env = dict(os.environ)
    name = kit.unique("rotate")
    secure = secure_.secure_config(secure_.T.KAFKA, env, password="old-e2e-5be1f2")
    create_secrets(kube, namespace, secure)
    kube.apply(namespace, manifest(name, "KAFKA", secure, kit.topics_for(name, count=1)))
    obj = kube.wait_condition(namespace, name, "False", "AuthenticationFailed", timeout=90)
    generation = obj["metadata"]["generation"]

    # The password is rotated in its Secret only; the MessageBroker is not touched.
    right = secure_.stack_password(env)
    kube.replace_secret(namespace, secure_.CREDS_SECRET, {"password": right})
    obj = kube.wait_condition(
        namespace, name, "True", "AllEnvsReady", timeout=2 * HEALTH_INTERVAL + 60
    )
    assert obj["metadata"]["generation"] == generation
    kit.wait_until(
        lambda: (kube.secret(namespace, f"{name}-dev") or {}).get("password") == right,
        timeout=30,
        what="the connection Secret carries the rotated password",
    )

    # And back to a refused one: the operator uses what the Secret says now.
    kube.replace_secret(namespace, secure_.CREDS_SECRET, {"password": "rotated-e2e-90aa7e"})
    kube.wait_condition(
        namespace, name, "False", "AuthenticationFailed", timeout=2 * HEALTH_INTERVAL + 60
    )
    operator.assert_alive()
    assert_no_leak(kube, namespace, name, operator, [right, "old-e2e-5be1f2"])
