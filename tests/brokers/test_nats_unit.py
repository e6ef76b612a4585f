"""The NATS package's pure parts, beyond what every broker gets (tests/unit/
test_broker_errors.py, test_broker_entries.py): names, the config rules between
fields, TLS, and why a connect failed (nats-py says it only to its error callback)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import nats.errors as nats_errors
import pytest

from ductape_operator import errors, models
from ductape_operator.brokers.nats import client, entries
from ductape_operator.brokers.nats.errors import classify
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
