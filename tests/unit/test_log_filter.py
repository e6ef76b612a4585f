"""kopf's per-handler chatter goes to DEBUG; a real failure still reaches the log."""

from __future__ import annotations

import logging
import sys

from ductape_operator.__main__ import KopfChatter


def record(level: int, msg: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, exc_info)


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
