"""NATS decentralised auth for tests: an operator, an account and its users, as JWTs.

A `.creds` file (the `credentials` config field) only works against a server in
operator mode, where accounts and users are JWTs signed by NKeys. This makes them
with the `nkeys` library (the one nats-py signs with), for a private nats-server
that a test starts with `server_config` (docs/reference.md, "NATS").
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from typing import Any

import nkeys

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
#: No limit on anything, JetStream storage included (a zero would turn JetStream off).
_UNLIMITED_ACCOUNT = {
    k: -1
    for k in (
        "subs",
        "data",
        "payload",
        "imports",
        "exports",
        "conn",
        "leaf",
        "mem_storage",
        "disk_storage",
        "streams",
        "consumer",
    )
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
    claims = {
        "jti": _b64(os.urandom(24)),
        "iat": int(time.time()),
        "iss": _public(issuer),
        "name": name,
        "sub": subject,
        "nats": {**nats_claims, "version": 2},
    }
    signed = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


@dataclasses.dataclass
class Account:
    """An account of `Operator`, and the users it signs."""

    key: nkeys.KeyPair
    jwt: str

    @property
    def public_key(self) -> str:
        return _public(self.key)

    def user_creds(self, name: str) -> str:
        """A `.creds` file: the user's JWT, signed by this account, and its NKey seed."""
        user = new_key(nkeys.PREFIX_BYTE_USER)
        token = _jwt(
            self.key,
            _public(user),
            name,
            {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user"},
        )
        seed = user.seed.decode()
        return (
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )


@dataclasses.dataclass
class Operator:
    """An operator and its system account (JetStream needs one to start)."""

    key: nkeys.KeyPair
    jwt: str
    system: Account

    @classmethod
    def new(cls, name: str = "ductape-test") -> Operator:
        key = new_key(nkeys.PREFIX_BYTE_OPERATOR)
        system = _account(key, "SYS", {"type": "account"})
        claims = {"system_account": system.public_key, "type": "operator"}
        return cls(key, _jwt(key, _public(key), name, claims), system)

    def account(self, name: str) -> Account:
        """A new account of this operator, JetStream on, nothing limited."""
        return _account(self.key, name, {"limits": _UNLIMITED_ACCOUNT, "type": "account"})


def _account(operator: nkeys.KeyPair, name: str, claims: dict[str, Any]) -> Account:
    key = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    return Account(key, _jwt(operator, _public(key), name, claims))


def server_config(port: int, store: str, operator: Operator, accounts: list[Account]) -> str:
    """A nats-server config in operator mode, with JetStream, that knows `accounts`."""
    known = [operator.system, *accounts]
    preload = "\n".join(f"  {a.public_key}: {a.jwt}" for a in known)
    return (
        f"host: 127.0.0.1\nport: {port}\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f"operator: {operator.jwt}\n"
        f"system_account: {operator.system.public_key}\n"
        f"resolver: MEMORY\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )
