"""Unit tests (no broker): retrying with backoff, and batched acknowledgements."""

from __future__ import annotations

import asyncio

import pytest

from ductape_operator import errors
from ductape_operator.messaging import _transport


class Flaky:
    """Fails with `exc` the first `failures` calls, then returns "ok"."""

    def __init__(self, failures: int, exc: BaseException) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def as_unreachable(exc: BaseException) -> errors.DuctapeError | None:
    if isinstance(exc, ConnectionResetError):
        return errors.BrokerUnreachableError(f"lost: {exc}")
    if isinstance(exc, PermissionError):
        return errors.BrokerAuthError("refused")
    return None


async def test_connection_loss_is_retried_until_it_works() -> None:
    op = Flaky(3, ConnectionResetError("reset"))
    result = await _transport.retrying(op, what="t", timeout=10, map_error=as_unreachable)
    assert (result, op.calls) == ("ok", 4)


async def test_retrying_gives_up_after_the_timeout_with_the_mapped_error() -> None:
    op = Flaky(1000, ConnectionResetError("reset"))
    with pytest.raises(errors.BrokerUnreachableError, match="lost: reset") as caught:
        await _transport.retrying(op, what="t", timeout=0.3, map_error=as_unreachable)
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert 1 < op.calls < 1000


async def test_errors_that_retrying_cannot_fix_raise_at_once() -> None:
    auth = Flaky(1, PermissionError("no"))
    with pytest.raises(errors.BrokerAuthError):
        await _transport.retrying(auth, what="t", timeout=10, map_error=as_unreachable)
    assert auth.calls == 1
    foreign = Flaky(1, KeyError("x"))
    with pytest.raises(KeyError):
        await _transport.retrying(foreign, what="t", timeout=10, map_error=as_unreachable)
    assert foreign.calls == 1


async def test_batcher_sends_what_was_added_in_one_turn_together() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> None:
        sent.append(items)
        await asyncio.sleep(0)

    batcher: _transport.Batcher[int] = _transport.Batcher(send, "ack")
    for i in range(5):
        batcher.add(i)
    await batcher.flush()
    batcher.add(5)
    await batcher.flush()
    assert sent == [[0, 1, 2, 3, 4], [5]]


async def test_batcher_survives_a_failed_send() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> None:
        sent.append(items)
        if len(sent) == 1:
            raise ConnectionResetError("gone")

    batcher: _transport.Batcher[int] = _transport.Batcher(send, "ack")
    batcher.add(1)
    await batcher.flush()
    batcher.add(2)
    await batcher.flush()
    assert sent == [[1], [2]]


def test_client_imports_without_the_operator_or_any_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for blocked in ('kopf', 'kubernetes', 'pydantic'): sys.modules[blocked] = None\n"
        "import ductape_operator.messaging\n"
        "sdks = ('aiokafka', 'redis', 'aio_pika', 'google', 'aioboto3', 'botocore')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(sdks))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
