"""kopf's per-handler chatter goes to DEBUG; a real failure still reaches the log."""

from __future__ import annotations

import logging
import sys

from ductape_operator import brokers
from ductape_operator.__main__ import KopfChatter, SdkFailures

#: The loggers the operator quiets: every registered broker's SDK.
SDK_LOGGERS = [name for kind in brokers.kinds() for name in kind.sdk_loggers]


def record(
    level: int, msg: str, *, exc: bool = False, logger: str = "kopf.objects"
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(logger, level, __file__, 1, msg, None, exc_info)


def test_handler_chatter_is_dropped_unless_verbose_then_debug() -> None:
    quiet, verbose = KopfChatter(verbose=False), KopfChatter(verbose=True)
    succeeded = record(logging.INFO, "Handler 'health' succeeded.")
    assert not quiet.filter(succeeded)
    assert verbose.filter(succeeded) and succeeded.levelno == logging.DEBUG
    retry = record(logging.ERROR, "Handler 'create' failed temporarily: broker down")
    assert not quiet.filter(retry)


def test_real_failures_are_kept_as_they_are() -> None:
    quiet = KopfChatter(verbose=False)
    crashed = record(logging.ERROR, "Handler 'create' failed with an exception.", exc=True)
    assert quiet.filter(crashed) and crashed.levelno == logging.ERROR
    warning = record(logging.WARNING, "Patching failed with inconsistencies")
    assert quiet.filter(warning) and warning.levelno == logging.WARNING


def test_kopfs_own_wake_up_annotation_is_no_warning() -> None:
    quiet = KopfChatter(verbose=False)
    touch = record(
        logging.WARNING,
        "Merge-patching finished with inconsistencies: (('remove', ('metadata', 'annotations'),"
        " {'ductape.app/touch-dummy': None}, None),)",
    )
    assert not quiet.filter(touch)
    other = record(
        logging.WARNING,
        "Merge-patching finished with inconsistencies: (('change', ('spec', 'tag'), 'a', 'b'),)",
    )
    assert quiet.filter(other) and other.levelno == logging.WARNING


def test_a_broker_sdks_own_failure_lines_go_to_debug() -> None:
    # What aiormq and aiokafka log on every failed connection attempt, beside the
    # operator's one line per transition.
    quiet, verbose = SdkFailures(SDK_LOGGERS, verbose=False), SdkFailures(SDK_LOGGERS, verbose=True)
    amqp = "error when creating transport: <AMQPConnectionError: (111, 'Connect call failed')>"
    kafka = 'Unable connect to "kafka:9093": [Error 58] SaslAuthenticationFailed'
    for logger, text in (("aiormq.connection", amqp), ("aiokafka", kafka)):
        assert not quiet.filter(record(logging.ERROR, text, logger=logger))
        shown = record(logging.ERROR, text, logger=logger)
        assert verbose.filter(shown) and shown.levelno == logging.DEBUG


def test_an_sdk_traceback_and_everyone_elses_lines_are_kept() -> None:
    quiet = SdkFailures(SDK_LOGGERS, verbose=False)
    crashed = record(logging.ERROR, "Unexpected error", exc=True, logger="aiokafka.consumer")
    assert quiet.filter(crashed) and crashed.levelno == logging.ERROR
    for logger in ("ductape_operator.reconcile", "kopf.objects", "aiokafkax", "natsort"):
        line = record(logging.WARNING, "something", logger=logger)
        assert quiet.filter(line) and line.levelno == logging.WARNING
    assert "aiormq" in SDK_LOGGERS and "aiokafka" in SDK_LOGGERS
