"""An outage is two lines: a WARNING when it starts, an INFO when it ends; kopf's retries
and the connection errors of an API server outage are folded into it."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest
import urllib3

from ductape_operator import outages
from ductape_operator.__main__ import ApiOutages

KEYS = (outages.API_SERVER, outages.API_THROTTLED, outages.CRD_GONE, "test-outage")


@pytest.fixture(autouse=True)
def no_open_outage() -> Iterator[None]:
    yield
    for key in KEYS:  # also stops any probe thread
        outages.recovered(key)


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == outages.__name__]


def test_many_failures_one_warning_then_one_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert outages.failing("test-outage", "broker b at h:1 unreachable")
    assert not outages.failing("test-outage", "broker b at h:1 unreachable")
    assert not outages.failing("test-outage", "broker b at h:1 unreachable")
    assert outages.recovered("test-outage")
    assert not outages.recovered("test-outage")
    lines = _lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert lines[0][1] == "broker b at h:1 unreachable"
    assert lines[1][1].startswith("over after ") and "3 failure(s) seen" in lines[1][1]


def test_the_probe_ends_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    answers = iter([False, True])

    def probe() -> None:
        if not next(answers, True):
            raise ConnectionRefusedError

    outages.failing("test-outage", "down", probe=probe)
    deadline = time.monotonic() + 10
    while outages.is_open("test-outage") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not outages.is_open("test-outage")
    assert [level for level, _ in _lines(caplog)] == [logging.WARNING, logging.INFO]


def _record(name: str, level: int, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


def _unreachable() -> BaseException:
    """What the Kubernetes client raises for a refused connection: MaxRetryError from
    NewConnectionError from ConnectionRefusedError."""
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise urllib3.exceptions.MaxRetryError(None, "/api", exc) from exc  # type: ignore[arg-type]
    except urllib3.exceptions.MaxRetryError as outer:
        return outer


def test_kopf_retries_are_folded_into_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    quiet = ApiOutages(verbose=False)
    for attempt in range(1, 6):
        retry = _record(
            "kopf._cogs.clients.watching",
            logging.ERROR,
            f"Request attempt #{attempt}/9 failed; will retry: GET https://h/apis ->"
            " ClientConnectorError(ConnectionKey(host='h'), ConnectionRefusedError(111))",
        )
        assert not quiet.filter(retry)
    # A handler's or a status write's traceback of the same outage goes too.
    assert not quiet.filter(_record("kopf.objects", logging.ERROR, "failed", _unreachable()))
    handler_error = aiohttp.ClientConnectionError("Cannot connect to host")
    assert not quiet.filter(_record("kopf.objects", logging.ERROR, "Handler", handler_error))
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0][0] == logging.WARNING
    assert "unreachable or restarting" in lines[0][1]
    assert outages.is_open(outages.API_SERVER)


def test_throttling_is_its_own_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    throttled = _record(
        "kopf.objects",
        logging.ERROR,
        "Request attempt #1/9 failed; will retry: PATCH https://h/x -> APITooManyRequestsError()",
    )
    assert not ApiOutages(verbose=False).filter(throttled)
    assert outages.is_open(outages.API_THROTTLED)
    assert not outages.is_open(outages.API_SERVER)


def test_verbose_keeps_them_at_debug_without_traceback() -> None:
    record = _record("kopf.objects", logging.ERROR, "Handler 'x' failed", _unreachable())
    assert ApiOutages(verbose=True).filter(record)
    assert record.levelno == logging.DEBUG and record.exc_info is None
    assert "MaxRetryError" in record.getMessage()


def test_anything_else_passes_untouched() -> None:
    quiet = ApiOutages(verbose=False)
    bug = _record("kopf.objects", logging.ERROR, "Handler 'x' failed", ValueError("bug"))
    assert quiet.filter(bug) and bug.exc_info is not None and bug.levelno == logging.ERROR
    assert quiet.filter(_record("ductape_operator.reconcile", logging.WARNING, "not Ready"))
    # A refusal (403) outside an outage is a real denial, not an outage.
    forbidden = _record(
        "kopf.objects",
        logging.ERROR,
        "Request attempt #1/9 failed; will retry: GET https://h/x -> APIForbiddenError()",
    )
    assert quiet.filter(forbidden)
    assert not outages.is_open(outages.API_SERVER)
    # kopf's lines about not serving the CRD's objects go only while the CRD is deleted.
    unserved = "Non-patchable resources will not be served: {messagebrokers.v1alpha1}"
    assert quiet.filter(_record("kopf._core.reactor.observation", logging.WARNING, unserved))
    outages.failing(outages.CRD_GONE, "CRD deleted")
    assert not quiet.filter(_record("kopf._core.reactor.observation", logging.WARNING, unserved))


def test_throttling_while_restarting_is_part_of_the_restart() -> None:
    quiet = ApiOutages(verbose=False)
    assert not quiet.filter(_record("kopf.objects", logging.ERROR, "failed", _unreachable()))
    throttled = _record(
        "kopf.objects",
        logging.ERROR,
        "Request attempt #2/9 failed; will retry: GET https://h/x -> APITooManyRequestsError()",
    )
    assert not quiet.filter(throttled)
    assert outages.is_open(outages.API_SERVER)
    assert not outages.is_open(outages.API_THROTTLED)
