"""Unit tests (no broker): retrying with backoff and a deadline, connection-loss logging,
and batched acknowledgements."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

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


async def test_an_attempt_that_never_answers_is_cut_off_at_the_timeout() -> None:
    # A frozen broker closes nothing: without the deadline this would wait forever.
    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    started = time.monotonic()
    with pytest.raises(errors.BrokerUnreachableError, match=r"no answer from the broker in 0\.3s"):
        await _transport.retrying(hang, what="t", timeout=0.3, map_error=as_unreachable)
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_giving_up_takes_about_the_timeout_not_less() -> None:
    op = Flaky(1000, ConnectionResetError("reset"))
    started = time.monotonic()
    with pytest.raises(errors.BrokerUnreachableError):
        await _transport.retrying(op, what="t", timeout=1.0, map_error=as_unreachable)
    assert 0.95 <= time.monotonic() - started < 1.5


async def test_zero_timeout_means_one_attempt() -> None:
    op = Flaky(1, ConnectionResetError("reset"))
    with pytest.raises(errors.BrokerUnreachableError):
        await _transport.retrying(op, what="t", timeout=0, map_error=as_unreachable)
    assert op.calls == 1


async def test_a_future_the_sdk_cancelled_is_retried_but_the_callers_cancel_is_not() -> None:
    calls = 0

    async def cut_once() -> str:
        # The way aiormq ends what waits on a connection that closed.
        nonlocal calls
        calls += 1
        if calls == 1:
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.cancel)
            await future
        return "ok"

    assert await _transport.retrying(cut_once, what="t", timeout=5, map_error=as_unreachable)
    assert calls == 2

    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(
        _transport.retrying(forever, what="t", timeout=5, map_error=as_unreachable)
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _link_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name.startswith("ductape_operator.messaging") and r.levelno >= logging.INFO
    ]


async def test_a_loss_logs_one_warning_and_one_info_however_many_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductape_operator.messaging")
    link = _transport.Link("broker b")
    op = Flaky(5, ConnectionResetError("reset"))
    await _transport.retrying(op, what="t", timeout=10, map_error=as_unreachable, link=link)
    assert op.calls == 6
    lines = _link_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    assert lines[0][1] == "broker b: connection lost (lost: reset); reconnecting"
    assert re.fullmatch(r"broker b: connection back after \d+\.\ds", lines[1][1])
    # A later success while up logs nothing.
    await _transport.retrying(
        Flaky(0, OSError()), what="t", timeout=1, map_error=as_unreachable, link=link
    )
    assert len(_link_lines(caplog)) == 2


def answers_after(seconds: float) -> Callable[[], Awaitable[str]]:
    """A broker call that answers "ok" after `seconds` (the slow broker under test)."""

    async def call() -> str:
        await asyncio.sleep(seconds)
        return "ok"

    return call


async def test_a_call_without_an_answer_for_a_while_is_reported_lost(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductape_operator.messaging")
    monkeypatch.setattr(_transport, "STALL", 0.05)
    link = _transport.Link("frozen")
    await _transport.retrying(
        answers_after(0.3), what="publish", timeout=5, map_error=as_unreachable, link=link
    )
    lines = _link_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    assert "publish: no answer in" in lines[0][1]


async def test_many_slow_calls_at_once_log_one_loss_and_one_recovery(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that answers each of many overlapping calls after the stall time: one
    WARNING when the first call stalls, one INFO once the last stalled call answered
    (it logged a loss and a recovery per call)."""
    caplog.set_level(logging.DEBUG, logger="ductape_operator.messaging")
    monkeypatch.setattr(_transport, "STALL", 0.05)
    link = _transport.Link("slow")

    async def staggered(delay: float) -> str:
        await asyncio.sleep(delay)
        return await _transport.retrying(
            answers_after(0.12), what="publish", timeout=5, map_error=as_unreachable, link=link
        )

    answers = await asyncio.gather(*(staggered(0.03 * n) for n in range(8)))
    assert answers == ["ok"] * 8
    lines = _link_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO], lines
    assert "publish: no answer in" in lines[0][1]
    # Up again: a quick call logs nothing more.
    await _transport.retrying(
        Flaky(0, OSError()), what="t", timeout=1, map_error=as_unreachable, link=link
    )
    assert len(_link_lines(caplog)) == 2


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
    batcher.extend([6, 7])
    batcher.add(8)
    await batcher.flush()
    assert sent == [[0, 1, 2, 3, 4], [5], [6, 7, 8]]


async def test_batcher_lingers_for_more_and_flush_cuts_it_short() -> None:
    sent: list[list[int]] = []
    arrived = asyncio.Event()

    async def send(items: list[int]) -> None:
        sent.append(items)
        arrived.set()

    linger = 1.0
    batcher: _transport.Batcher[int] = _transport.Batcher(send, "commit", linger=linger)
    started = time.monotonic()
    batcher.add(1)
    await asyncio.sleep(0.01)  # without a linger, [1] would be sent by now
    batcher.add(2)
    assert sent == [], "sent before the linger"
    await asyncio.wait_for(arrived.wait(), 10)
    assert sent == [[1, 2]]
    assert time.monotonic() - started >= linger * 0.9
    batcher.add(3)
    flushing = time.monotonic()
    await batcher.flush()
    assert sent == [[1, 2], [3]]
    assert time.monotonic() - flushing < linger / 2, "flush waited out the linger"


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
        "sdks = ('aiokafka', 'redis', 'aio_pika', 'google', 'aioboto3', 'botocore', 'nats')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(sdks))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
