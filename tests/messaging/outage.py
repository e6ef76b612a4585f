"""Ways to take a local broker away and bring it back, for the reconnect tests.

Each acts on this test's own local stack only and undoes itself: `rabbitmq_restart`
restarts the RabbitMQ application (its data stays), `redis_kill_clients` closes
every client connection, `kafka_frozen` stops the Kafka process (SIGSTOP) and
always continues it, and `Proxy` is a TCP forwarder the test owns: stopping it
refuses new connections and cuts the open ones, as a network outage would,
without touching the shared broker behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: One line per reconnect-test round (published, failed, duplicates), printed in
#: pytest's terminal summary by conftest.py.
REPORT: list[str] = []


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        [str(ROOT / "hack" / "rabbitmqctl.sh"), *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def rabbitmq_restart() -> None:
    """`rabbitmqctl stop_app` then `start_app` (about 5 s down; queues are durable)."""
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")


async def rabbitmq_ensure_running() -> None:
    """Leave the stack healthy whatever a test did: `start_app` is a no-op when running."""
    await asyncio.to_thread(rabbitmqctl, "start_app")


async def redis_kill_clients() -> None:
    """`CLIENT KILL TYPE normal`: every client connection but this one is closed."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(os.environ["REDIS_URL"])
    try:
        killed = await client.client_kill_filter(_type="normal", skipme=True)
        assert isinstance(killed, int) and killed > 0, f"CLIENT KILL closed {killed!r}"
    finally:
        await client.aclose()


def _kafka_pid() -> int:
    state = pathlib.Path(os.environ.get("DUCTAPE_STATE_DIR", ROOT / ".testenv"))
    return int((state / "kafka" / "pid").read_text().strip())


def _kafka_group(pid: int) -> int:
    group = os.getpgid(pid)
    # The stack starts Kafka in its own session; never signal the test's own group.
    assert group != os.getpgid(0), "Kafka shares the test's process group"
    return group


def _all_threads_stopped(pid: int) -> bool:
    for stat in pathlib.Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # The state is the first field after the command name in parentheses.
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that exited meanwhile
        if state not in "tT":
            return False
    return True


@contextlib.asynccontextmanager
async def kafka_frozen() -> AsyncIterator[None]:
    """Kafka's process group stopped (SIGSTOP) for the block, continued (SIGCONT) after.

    The block starts only once every thread of the JVM is stopped: `killpg` returns
    when the signal is queued, and a network thread already on the other core can
    still answer a request sent right after it (seen: 2 to 3 requests in 100).
    """
    pid = _kafka_pid()
    group = _kafka_group(pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not _all_threads_stopped(pid):
            assert time.monotonic() < deadline, "Kafka's threads did not stop within 10 s"
            await asyncio.sleep(0.005)
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


async def kafka_freeze(seconds: float) -> None:
    async with kafka_frozen():
        await asyncio.sleep(seconds)  # the outage itself, not a wait for a condition


class Proxy:
    """A TCP forwarder on 127.0.0.1 to `target`; `stop()` is the outage, `start()` the cure.

    It keeps its port across restarts, so clients reconnect to the same address.
    `sent` holds every byte the clients sent through it, for tests of what goes on
    the wire.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.sent = bytearray()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, self.sent),
            self._pipe(up_reader, writer),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: bytearray | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if record is not None:
                    record += data
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
