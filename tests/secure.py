"""The local stack's secure listeners as MessageBroker configs, for provider and e2e tests.

`hack/testenv-up.sh` exports `TESTENV_CA_FILE`, `REDIS_TLS_URL`, `AMQPS_URL`,
`NATS_TLS_URL` and `KAFKA_SASL_*`; its server certificates are issued for IP 127.0.0.1 only, so
`localhost` is a host name mismatch. A client certificate for mutual TLS sits
next to the CA (`client.crt`, `client.key`).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import urllib.parse
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ductape_operator import models

T = models.MessageBrokerTypes
SECURE_TYPES = (T.KAFKA, T.REDIS, T.RABBITMQ, T.NATS)
#: The URL of each secure listener that is one (Kafka's is a list of brokers).
URL_VARIABLES = {T.REDIS: "REDIS_TLS_URL", T.RABBITMQ: "AMQPS_URL", T.NATS: "NATS_TLS_URL"}
NEEDED = (
    "TESTENV_CA_FILE",
    *URL_VARIABLES.values(),
    "KAFKA_SASL_BOOTSTRAP_SERVERS",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
)
CREDS_SECRET = "secure-credentials"
CA_SECRET = "secure-ca"
CLIENT_SECRET = "secure-client"


def _ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


@dataclasses.dataclass(frozen=True)
class Secure:
    """One env's config on a secure listener, and the Secrets it references."""

    config: dict[str, Any]
    #: Secret name -> key -> value.
    secrets: dict[str, dict[str, str]]
    #: host:port the config connects to: every failure message names it.
    address: str
    password: str


def stack_password(env: dict[str, str]) -> str:
    return env["KAFKA_SASL_PASSWORD"]


def stack_ca(env: dict[str, str]) -> str:
    return pathlib.Path(env["TESTENV_CA_FILE"]).read_text()


def client_pair(env: dict[str, str]) -> tuple[str, str]:
    folder = pathlib.Path(env["TESTENV_CA_FILE"]).parent
    return (folder / "client.crt").read_text(), (folder / "client.key").read_text()


def secure_config(
    type_: models.MessageBrokerTypes,
    env: dict[str, str],
    *,
    host: str | None = None,
    ca: str | None = "stack",
    password: str | None = None,
    mutual: bool = False,
    prefix: str = "",
) -> Secure:
    """A config for the stack's secure listener of `type_`.

    `host` replaces 127.0.0.1 (e.g. "localhost": a name the certificate lacks); `ca`
    is "stack" (the stack's CA), a PEM, or None (no `ca`: the system store); `password`
    replaces the right one; `mutual` adds the client certificate and key; `prefix`
    goes before the Secrets' names.
    """
    creds, ca_secret, client = (prefix + n for n in (CREDS_SECRET, CA_SECRET, CLIENT_SECRET))
    secret = password if password is not None else stack_password(env)
    secrets: dict[str, dict[str, str]] = {creds: {"password": secret}}
    if type_ is T.KAFKA:
        server_host, _, port = env["KAFKA_SASL_BOOTSTRAP_SERVERS"].split(",")[0].rpartition(":")
        config: dict[str, Any] = {
            "brokers": [f"{host or server_host}:{port}"],
            "ssl": True,
            "sasl": {
                "mechanism": "scram-sha-512",
                "username": env["KAFKA_SASL_USERNAME"],
                "password": _ref(creds, "password"),
            },
        }
    else:
        url = urllib.parse.urlsplit(env[URL_VARIABLES[type_]])
        server_host = url.hostname or "127.0.0.1"
        port = str(url.port)
        config = {
            "username": urllib.parse.unquote(url.username or ""),
            "password": _ref(creds, "password"),
            "tls": True,
        }
        if type_ is T.NATS:
            config["servers"] = [f"nats://{host or server_host}:{port}"]
        else:
            config.update(host=host or server_host, port=url.port)
    if ca is not None:
        secrets[ca_secret] = {"ca.crt": stack_ca(env) if ca == "stack" else ca}
        config["ca"] = _ref(ca_secret, "ca.crt")
    if mutual:
        cert, key = client_pair(env)
        secrets[client] = {"tls.crt": cert, "tls.key": key}
        config["clientCert"] = _ref(client, "tls.crt")
        config["clientKey"] = _ref(client, "tls.key")
    address = f"{host or server_host}:{port}"
    return Secure(config, secrets, address, secret)


def other_ca() -> str:
    """A CA certificate (PEM) that signed none of the stack's certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ductape-test-untrusted-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pem_bodies(secure: Secure) -> list[str]:
    """Every PEM body and the password of a config: none may appear in status, events, logs."""
    found = [secure.password]
    for data in secure.secrets.values():
        for value in data.values():
            if "-----BEGIN" in value:
                # The base64 body, one line of it is enough to recognise a leak.
                found += [line for line in value.splitlines() if line and "-----" not in line]
    return found
