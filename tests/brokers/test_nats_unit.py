"""The NATS package's pure parts, beyond what every broker gets (tests/unit/
test_broker_errors.py, test_broker_entries.py): names, the config rules between
fields, TLS, and why a connect failed (nats-py says it only to its error callback)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import nats.errors as nats_errors
import nats.js.errors as js_errors
import pytest
from nats.aio.msg import Msg

from ductape_operator import errors, models
from ductape_operator.brokers.nats import client, entries
from ductape_operator.brokers.nats.errors import classify
from ductape_operator.messaging import message as message_
from ductape_operator.providers import base, build_provider

T = models.MessageBrokerTypes
REF = {"secretKeyRef": {"name": "s", "key": "k"}}


def _provider(**config: Any) -> Any:
    raw = {"servers": ["nats://broker:4222"], **config}
    values = base.SecretValues({("s", "k"): "secret-value"})
    return build_provider(T("NATS"), models.BrokerConfig.model_validate(raw), values)


def _handshake_failure() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    exc.verify_message = "unable to get local issuer certificate"
    return exc


def test_names() -> None:
    assert entries.stream_name("orders.created") == "orders-created"
    assert entries.consumer_name("billing") == "billing"
    assert entries.server_urls(["nats://a:4222", "tls://b:1"], True) == (
        "tls://a:4222",
        "tls://b:1",
    )
    assert entries.server_urls(["nats://a:4222"], False) == ("nats://a:4222",)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"username": "app"}, "set together"),
        ({"password": REF}, "set together"),
        ({"credentials": REF, "username": "app", "password": REF}, "exclusive"),
    ],
)
def test_config_rules_are_invalid_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidConfigError, match=message):
        _provider(**config)


def test_server_urls_are_checked_by_the_api() -> None:
    for bad in ("a:4222", "nats://u:p@a:4222", "http://a:4222"):
        with pytest.raises(ValueError, match="servers"):
            models.BrokerConfig.model_validate({"servers": [bad]})


def test_tls_writes_tls_urls_and_credentials_stay_out() -> None:
    provider = _provider(tls=True, username="app", password=REF)
    assert provider.endpoint == "tls://broker:4222"
    assert provider.binding() == {
        "uri": "tls://broker:4222",
        "servers": "tls://broker:4222",
        "username": "app",
        "password": "secret-value",
    }
    with_creds = _provider(credentials=REF)
    assert with_creds.binding()["credentials"] == "secret-value"
    assert "secret-value" not in with_creds.endpoint


@pytest.mark.parametrize(
    ("cause", "failure", "operator_error"),
    [
        (
            nats_errors.Error("nats: 'Authorization Violation'"),
            errors.Failure.AUTH,
            errors.BrokerAuthError,
        ),
        (_handshake_failure(), errors.Failure.UNREACHABLE, errors.BrokerTLSError),
        (nats_errors.SecureConnRequiredError(), errors.Failure.UNREACHABLE, errors.BrokerTLSError),
        (
            OSError(socket.EAI_NONAME, "Name or service not known"),
            errors.Failure.UNREACHABLE,
            errors.BrokerUnreachableError,
        ),
    ],
)
def test_why_a_connect_failed_comes_from_the_error_callback(
    cause: BaseException, failure: errors.Failure, operator_error: type[Exception]
) -> None:
    exc = nats_errors.NoServersError()
    assert classify(exc, cause) is failure
    provider = _provider()
    provider._last_error.error = cause
    mapped = provider._map(exc, "probing")
    assert type(mapped) is operator_error, mapped
    assert mapped.message.startswith("nats://broker:4222")
    on_client = client.map_error(exc, cause)
    assert on_client is not None
    assert type(on_client) is (
        errors.BrokerAuthError if failure is errors.Failure.AUTH else errors.BrokerUnreachableError
    )


# The reply subjects of a JetStream delivery: the older form, and the one with domain
# and account hash (plus a random token) that newer servers send.
_V1 = "$JS.ACK.orders-created.billing.3.41.17.1733380000000000000.5"
_V2 = "$JS.ACK._.ACCHASH.orders-created.billing.3.41.17.1733380000000000000.5.rnd"


@pytest.mark.parametrize("reply", [_V1, _V2, _V2.removesuffix(".rnd")])
def test_a_delivery_reads_stream_sequence_and_count_as_nats_py_does(reply: str) -> None:
    msg = Msg(None, subject="orders.created", reply=reply, data=b"")  # type: ignore[arg-type]
    meta = Msg.Metadata._from_reply(reply)
    assert client._delivery(msg) == ("orders-created", "41", 3)
    assert (meta.stream, meta.sequence.stream, meta.num_delivered) == ("orders-created", 41, 3)


def test_a_reply_subject_that_is_not_jetstreams_raises_nats_py_error() -> None:
    with pytest.raises(nats_errors.Error):
        client._delivery(Msg(None, subject="x", reply="_INBOX.abc", data=b""))  # type: ignore[arg-type]


def _received(headers: dict[str, str] | None) -> message_.Message:
    consumer = client.NatsConsumer.__new__(client.NatsConsumer)
    consumer._tag, consumer._subscription = "orders", "billing"
    msg = Msg(None, subject="orders.created", reply=_V2, data=b"{}", headers=headers)  # type: ignore[arg-type]
    return consumer._message(msg, 12.5)


def test_the_id_travels_once_as_the_servers_dedup_header() -> None:
    out = message_.OutgoingMessage.build({"n": 1}, key="k", headers={"trace": "t"})
    wire = client._headers(out)
    assert wire == {
        "trace": "t",
        client.MSG_ID_HEADER: out.id,
        message_.CONTENT_TYPE_HEADER: message_.JSON,
        client.KEY_HEADER: "k",
    }
    got = _received(wire)
    assert (got.id, got.key, got.content_type, got.headers) == (
        out.id,
        "k",
        message_.JSON,
        {"trace": "t"},
    )
    assert got.delivery_count == 3
    plain = client._headers(message_.OutgoingMessage.build(b"raw"))
    assert list(plain) == [client.MSG_ID_HEADER], "octet-stream and no key: the id alone"


def test_a_received_id_comes_from_ductape_id_then_the_dedup_header_then_the_sequence() -> None:
    # ductape-id: what earlier versions of the client sent beside the dedup header.
    both = _received({message_.ID_HEADER: "mine", client.MSG_ID_HEADER: "other", "x": "1"})
    assert (both.id, both.headers) == ("mine", {"x": "1"})
    alone = _received({client.MSG_ID_HEADER: "server"})  # what the client sends: the id alone
    assert (alone.id, alone.headers, alone.content_type, alone.key) == (
        "server",
        {},
        message_.OCTET_STREAM,
        None,
    )
    assert (alone.delivery_count, alone.received_at, alone.settled) == (3, 12.5, False)
    bare = _received(None)
    assert (bare.id, bare.headers, bare.content_type) == (
        "orders-created:41",
        {},
        message_.OCTET_STREAM,
    )
    assert _received({"ductape-other": "dropped"}).headers == {}


async def test_publish_acks_time_out_without_progress_and_raise_the_first_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)
    loop = asyncio.get_running_loop()
    answered, silent = loop.create_future(), loop.create_future()
    answered.set_result("ack")
    with pytest.raises(nats_errors.TimeoutError):
        await client._all_acked([answered, silent])
    with pytest.raises(nats_errors.TimeoutError):
        await client._acked(silent)
    late = loop.create_future()
    loop.call_later(0.02, late.set_result, "ack")
    await client._all_acked([answered, late])
    refused = loop.create_future()
    refused.set_exception(js_errors.APIError(code=503, description="busy"))
    with pytest.raises(js_errors.APIError):
        await client._all_acked([answered, refused])
    client._release([answered, silent, refused])
    assert silent.cancelled(), "an ack still awaited is given up (nats-py frees its slot)"


async def test_publish_acks_are_awaited_on_the_last_and_on_any_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `_all_acked` waits on the last ack (the server acks in order) but relies on no order.
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.5)
    loop = asyncio.get_running_loop()
    behind = [loop.create_future() for _ in range(3)]
    behind[2].set_result("ack")
    behind[0].set_result("ack")
    loop.call_later(0.05, behind[1].set_result, "ack")
    await client._all_acked(behind)
    assert behind[1].done(), "an ack left behind the last one is waited for"
    # Acks 0.1 s apart, 0.8 s in all: longer than the timeout, never that long without one.
    # (Timers fire in deadline order, so this holds on a loaded machine too.)
    trickle = [loop.create_future() for _ in range(8)]
    for n, future in enumerate(trickle, start=1):
        loop.call_later(0.1 * n, future.set_result, "ack")
    await client._all_acked(trickle)
    assert all(f.done() for f in trickle)
    # Errors: the first in publish order is raised, once every ack is in.
    first, second, last = (loop.create_future() for _ in range(3))
    last.set_result("ack")
    second.set_exception(js_errors.APIError(code=503, description="second"))
    loop.call_later(0.05, first.set_exception, js_errors.APIError(code=503, description="first"))
    with pytest.raises(js_errors.APIError, match="first"):
        await client._all_acked([first, second, last])
