"""The providers on the stack's secure listeners: TLS, SASL_SSL with SCRAM, ACL users.

Each failure a person meets with TLS and credentials gets its own error, and its
message names the endpoint and never a password or PEM.
"""

from __future__ import annotations

import os

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import base, build_provider
from tests import secure as secure_
from tests.providers.conftest import unique_topic


@pytest.fixture(scope="module")
def secure_env(stack: dict[str, str]) -> dict[str, str]:
    missing = [name for name in secure_.NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: the stack's secure listeners are missing")
    return dict(os.environ)


def build(type_: models.MessageBrokerTypes, secure: secure_.Secure) -> base.Provider:
    values = {
        (name, key): value for name, data in secure.secrets.items() for key, value in data.items()
    }
    config = models.BrokerConfig.model_validate(secure.config)
    return build_provider(type_, config, base.SecretValues(values))


def assert_clean(text: str, secure: secure_.Secure) -> None:
    for leak in secure_.pem_bodies(secure):
        assert leak not in text


@pytest.mark.parametrize("type_", secure_.SECURE_TYPES, ids=lambda t: t.value)
@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
async def test_provisions_over_tls(
    type_: models.MessageBrokerTypes, mutual: bool, secure_env: dict[str, str]
) -> None:
    secure = secure_.secure_config(type_, secure_env, mutual=mutual)
    plan = unique_topic()
    async with build(type_, secure) as provider:
        await provider.ensure_topic(plan)
        assert await provider.topic_exists(plan)
        await provider.probe(10.0)
        entries = provider.binding()
        assert entries["ca.crt"] == secure_.stack_ca(secure_env)
        assert ("tls.crt" in entries) is mutual and ("tls.key" in entries) is mutual
        await provider.delete_topic(plan)


FAILURES = {
    "untrusted-ca": (dict(ca="other"), errors.BrokerTLSError, "not trusted"),
    "system-store": (dict(ca=None), errors.BrokerTLSError, "not trusted"),
    "host-name-mismatch": (dict(host="localhost"), errors.BrokerTLSError, "host name"),
    "wrong-password": (dict(password="wrong-0f3c9a"), errors.BrokerAuthError, "credentials"),
    "unresolvable-host": (
        dict(host="no-such-broker.invalid"),
        errors.BrokerUnreachableError,
        "does not resolve",
    ),
}


@pytest.mark.parametrize("type_", secure_.SECURE_TYPES, ids=lambda t: t.value)
@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_failure_has_its_own_reason(
    type_: models.MessageBrokerTypes, case: str, secure_env: dict[str, str]
) -> None:
    options, kind, words = FAILURES[case]
    if options.get("ca") == "other":
        options = {**options, "ca": secure_.other_ca()}
    secure = secure_.secure_config(type_, secure_env, **options)  # type: ignore[arg-type]
    provider = build(type_, secure)
    try:
        with pytest.raises(errors.BrokerError) as caught:
            await provider.probe(15.0)
    finally:
        await provider.aclose()
    assert type(caught.value) is kind, caught.value.message
    assert caught.value.retriable
    assert words in caught.value.message
    assert provider.endpoint in caught.value.message
    assert secure.address in caught.value.message
    assert_clean(caught.value.message, secure)


async def test_a_broken_ca_bundle_is_named_by_its_secret(secure_env: dict[str, str]) -> None:
    secure = secure_.secure_config(models.MessageBrokerTypes.REDIS, secure_env, ca="not a PEM")
    with pytest.raises(errors.BrokerTLSError) as caught:
        build(models.MessageBrokerTypes.REDIS, secure)
    assert f"Secret {secure_.CA_SECRET!r} key 'ca.crt'" in caught.value.message
    assert "not a PEM" not in caught.value.message
