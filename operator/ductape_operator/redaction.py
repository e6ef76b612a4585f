"""Keeps credentials out of logs, Events and status.

Every secret value the operator resolves is registered here; a logging filter
and the Kubernetes writers replace any registered value with `***`. This is a
second line of defence: messages are built without credentials in the first
place, but an SDK exception text or traceback might still quote a URL with a
password in it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

MASK = "***"
#: Values shorter than this are not masked: masking "a" or "1" would garble text.
MIN_LENGTH = 4

_lock = threading.Lock()
_values: set[str] = set()
#: `_values`, longest first (a secret containing another is masked whole); sorted on change.
_ordered: tuple[str, ...] = ()


def register(values: Iterable[str]) -> None:
    global _ordered
    new = {v for v in values if len(v) >= MIN_LENGTH} - _values
    if not new:
        return
    with _lock:
        _values.update(new)
        _ordered = tuple(sorted(_values, key=len, reverse=True))


def redact(text: str) -> str:
    for value in _ordered:
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback with registered secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
            record.msg = f"{record.msg}\n{record.exc_text}"
            record.exc_text = None
        return True


def install() -> None:
    """Attach the filter to the root logger's handlers and to kopf's object logger.

    kopf turns records of its `kopf.objects` logger into Kubernetes Events, so
    that logger gets the filter itself, ahead of both its handlers and Events.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RedactingFilter) for f in objects.filters):
        objects.addFilter(RedactingFilter())
