"""Keeps credentials out of logs, Events and status.

Every secret value the operator resolves is registered here, under the Secret it
came from; a logging filter and the Kubernetes writers replace any registered
value with `***`. This is a second line of defence: messages are built without
credentials in the first place, but an SDK exception text or traceback might
still quote a URL with a password in it.

Masking runs on every log line, so it costs one pass over the line whatever the
number of secrets (an Aho-Corasick automaton over the registered values), and a
Secret's values are dropped when the operator stops using that Secret.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterable

import ahocorasick

MASK = "***"
#: Values shorter than this are not masked: masking "a" or "1" would garble text.
MIN_LENGTH = 4

_lock = threading.Lock()
#: Registered values by owner (the Secret they came from).
_by_owner: dict[Hashable, frozenset[str]] = {}
#: The automaton over every owner's values; None when there are none.
_automaton: ahocorasick.Automaton | None = None


def _rebuild() -> None:
    global _automaton
    values = set().union(*_by_owner.values()) if _by_owner else set()
    if not values:
        _automaton = None
        return
    automaton = ahocorasick.Automaton()
    for value in values:
        automaton.add_word(value, len(value))
    automaton.make_automaton()
    _automaton = automaton


def register(values: Iterable[str], owner: Hashable = None) -> None:
    """Mask `values` from now on, as values of `owner` (added to what it had)."""
    new = frozenset(v for v in values if len(v) >= MIN_LENGTH)
    with _lock:
        before = _by_owner.get(owner, frozenset())
        if new <= before:
            return
        _by_owner[owner] = before | new
        _rebuild()


def forget(owner: Hashable) -> None:
    """`owner`'s values are no longer in use (its Secret went away or changed)."""
    with _lock:
        if _by_owner.pop(owner, None) is not None:
            _rebuild()


def redact(text: str) -> str:
    automaton = _automaton
    if automaton is None:
        return text
    # Longest match first at each place, so a secret containing another is masked whole.
    spans = [(end - length + 1, end + 1) for end, length in automaton.iter_long(text)]
    if not spans:
        return text
    parts, start = [], 0
    for begin, end in spans:
        parts.append(text[start:begin])
        parts.append(MASK)
        start = end
    parts.append(text[start:])
    return "".join(parts)


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
