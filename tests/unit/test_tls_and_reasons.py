"""TLS contexts from PEM text, and the failure reasons a person can act on (no network)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import botocore.exceptions as botocore_errors
import pytest
from google.api_core import exceptions as google_errors

from ductape_operator import errors, models, tls
from ductape_operator.messaging import binding as binding_
from ductape_operator.providers import _common, base, build_provider
from tests import secure as secure_

T = models.MessageBrokerTypes
ENDPOINT = "amqps://rabbit.shop.svc:5671/%2F"


def test_reasons_are_the_documented_ones() -> None:
    assert errors.BrokerAuthError("x").reason == "AuthenticationFailed"
    assert errors.BrokerTLSError("x").reason == "TLSFailed"
    assert errors.BrokerUnreachableError("x").reason == "BrokerUnreachable"


def test_material_round_trips_through_secret_entries() -> None:
    material = tls.Material(ca="CA", cert="CERT", key="KEY")
    assert material.entries() == {"ca.crt": "CA", "tls.crt": "CERT", "tls.key": "KEY"}
    assert tls.Material.from_entries(material.entries()) == material
    assert tls.Material(ca="CA").entries() == {"ca.crt": "CA"}
    assert "KEY" not in repr(material)


def test_a_ca_bundle_is_trusted_besides_the_system_store() -> None:
    ca = secure_.other_ca()
    context = tls.client_context(ca=ca)
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "ductape-test-untrusted-ca"} in subjects


def test_unusable_pem_is_named_by_its_source_never_quoted() -> None:
    with pytest.raises(errors.BrokerTLSError) as caught:
        tls.client_context(ca="garbage-0xdeadbeef", source="Secret 'ca' key 'ca.crt'")
    assert "Secret 'ca' key 'ca.crt'" in caught.value.message
    assert "garbage-0xdeadbeef" not in caught.value.message
    with pytest.raises(errors.BrokerTLSError) as caught:
        tls.client_context(cert=secure_.other_ca(), key="not-a-key-5eed", source="here")
    assert "not-a-key-5eed" not in caught.value.message
    with pytest.raises(errors.InvalidConfigError):
        tls.client_context(cert="only a certificate")


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_message = message
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    return exc


def _wrapped(inner: BaseException) -> Exception:
    """An SDK-style connection error with the socket's error as its cause."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise ConnectionError("Error 1 connecting to rabbit.shop.svc:5671") from exc
    except ConnectionError as outer:
        return outer


@pytest.mark.parametrize(
    ("inner", "kind", "words"),
    [
        (
            _verify_error("self-signed certificate in certificate chain"),
            errors.BrokerTLSError,
            "is not trusted",
        ),
        (
            _verify_error("Hostname mismatch, certificate is not valid for 'rabbit'."),
            errors.BrokerTLSError,
            "does not match the host name",
        ),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            errors.BrokerTLSError,
            "TLS handshake failed",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            errors.BrokerUnreachableError,
            "host name does not resolve",
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            errors.BrokerUnreachableError,
            "unreachable while connecting",
        ),
    ],
)
def test_transport_failures_are_told_apart(inner: BaseException, kind: type, words: str) -> None:
    if isinstance(inner, ssl.SSLError) and not isinstance(inner, ssl.SSLCertVerificationError):
        inner.reason = "WRONG_VERSION_NUMBER"
    mapped = _common.unreachable(ENDPOINT, "connecting", _wrapped(inner))
    assert type(mapped) is kind
    assert mapped.message.startswith(ENDPOINT)
    assert words in mapped.message


def _provider(type_: T, raw: dict[str, Any]) -> Any:
    return build_provider(type_, models.BrokerConfig.model_validate(raw), base.SecretValues())


def test_sqs_and_pubsub_credential_errors_are_authentication_failed() -> None:
    sqs = _provider(T.AWS_SQS, {"region": "eu-west-1"})
    refused = botocore_errors.ClientError(
        {"Error": {"Code": "InvalidClientTokenId", "Message": "bad token"}}, "ListQueues"
    )
    assert sqs._map(refused, "probing").reason == "AuthenticationFailed"
    pubsub = _provider(T.GOOGLE_PUBSUB, {"projectId": "shop"})
    denied = google_errors.PermissionDenied("caller lacks pubsub.topics.list")
    assert pubsub._map(denied, "probing").reason == "AuthenticationFailed"
    unauthenticated = google_errors.Unauthenticated("invalid credentials")
    assert pubsub._map(unauthenticated, "probing").reason == "AuthenticationFailed"


def test_secret_entries_of_a_secure_env() -> None:
    ca = secure_.other_ca()
    raw = {
        "host": "rabbit.shop.svc",
        "tls": True,
        "ca": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}},
    }
    config = models.BrokerConfig.model_validate(raw)
    provider = build_provider(T.RABBITMQ, config, base.SecretValues({("ca", "ca.crt"): ca}))
    entries = provider.binding()
    assert entries["ca.crt"] == ca
    assert entries["uri"].startswith("amqps://")
    # The messaging client reads the same entries back into a context trusting that CA.
    found = binding_.Binding.from_mapping({**entries, "type": "rabbitmq", "topics.json": "{}"})
    context = found.tls_context()
    assert any(
        dict(x[0] for x in c["subject"]).get("commonName") == "ductape-test-untrusted-ca"
        for c in context.get_ca_certs()
    )
