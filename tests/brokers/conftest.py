"""Fixtures of the per-broker tests beside the raw kits (`tests/brokers/test_<name>_*.py`).

NATS: the stack's nats-server, configs for it, a raw nats-py client to check what the
provider made, and a private server a test may stop.

Stack tests read the environment that `.testenv/env` exports (`make test` sources it;
by hand: `. .testenv/env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from ductape_operator import models
from ductape_operator.providers import base

ROOT = pathlib.Path(__file__).resolve().parents[2]
PASSWORD_REF = ("nats-credentials", "password")


@pytest.fixture(scope="session")
def nats_env() -> dict[str, str]:
    needed = ("NATS_URL", "NATS_USERNAME", "NATS_PASSWORD")
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `make testenv-up` and `. .testenv/env`")
    return {name: os.environ[name] for name in needed}


def nats_config(
    servers: list[str], *, username: str | None = None, password: str | None = None
) -> tuple[models.BrokerConfig, base.SecretValues]:
    """An env's config of `type: NATS`, and the secret values it references."""
    raw: dict[str, object] = {"servers": servers}
    if username is not None:
        raw["username"] = username
    if password is not None:
        name, key = PASSWORD_REF
        raw["password"] = {"secretKeyRef": {"name": name, "key": key}}
    values = {PASSWORD_REF: password} if password is not None else {}
    return models.BrokerConfig.model_validate(raw), base.SecretValues(values)


def unique_topic(
    subscriptions: tuple[str, ...] = ("billing", "shipping"),
    *,
    retention_seconds: int | None = None,
    dead_letter: base.DeadLetterPlan | None = None,
) -> base.TopicPlan:
    """A topic nobody else uses; the dot exercises the stream-name rule."""
    suffix = uuid.uuid4().hex[:12]
    return base.TopicPlan(
        tag=f"t-{suffix}",
        name=f"ductape.t{suffix}",
        subscriptions=subscriptions,
        retention_seconds=retention_seconds,
        dead_letter=dead_letter,
    )


@pytest.fixture
async def raw(nats_env: dict[str, str]) -> AsyncIterator[JetStreamContext]:
    """A plain nats-py JetStream context on the stack's server: the test's own eyes."""
    client: Client = await nats.connect(nats_env["NATS_URL"], connect_timeout=30)
    try:
        yield client.jetstream(timeout=30)
    finally:
        await client.close()


# --- a private server, for the tests that stop one --------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class PrivateServer:
    """A nats-server of the stack's build with JetStream, on its own port and data folder.

    `config`, when set before `start`, is the whole server config instead (it must
    name `port` and put JetStream's store under `data`).
    """

    def __init__(self, binary: str, data: pathlib.Path) -> None:
        self.binary = binary
        self.data = data
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.config: str | None = None

    def start(self, timeout: float = 60.0) -> None:
        args = ["-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.data)]
        if self.config is not None:
            self.data.mkdir(parents=True, exist_ok=True)
            path = self.data / "nats.conf"
            path.write_text(self.config)
            args = ["-c", str(path)]
        self.process = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private nats-server on {self.port} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


@pytest.fixture(scope="session")
def nats_server_binary() -> str:
    out = subprocess.run(
        [str(ROOT / "hack" / "build-nats.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def private_server(nats_server_binary: str, tmp_path: pathlib.Path) -> Iterator[PrivateServer]:
    server = PrivateServer(nats_server_binary, tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()
