"""Outages of something the operator depends on, logged as two lines each.

An expected failure (the API server restarting, throttling, the CRD gone) fails
many calls at once: every watch, every handler, every status write. Logging
each of them buries everything else, so each outage is a `key` here: the first
failure logs one WARNING line (what, where, why), later failures only count,
and the first success logs one INFO line with how long it lasted and how many
calls failed (docs/operations.md, "Logs").

An outage can be ended by any caller that saw the thing work again, or by a
`probe` given when it starts: a daemon thread calls it every `PROBE_INTERVAL`
seconds until it returns without raising. That covers failures seen only by
kopf, whose successes this process does not otherwise hear of.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Seconds between two probes of an open outage.
PROBE_INTERVAL = 1.0

#: The Kubernetes API server did not answer, or answered 5xx (restarting, etcd away).
API_SERVER = "kubernetes-api"
#: The Kubernetes API server answered 429 (API priority and fairness, throttling).
API_THROTTLED = "kubernetes-api-throttled"
#: The MessageBroker CRD is terminating or gone.
CRD_GONE = "crd-gone"


@dataclasses.dataclass
class Outage:
    what: str
    since: float
    failures: int = 1


_lock = threading.Lock()
_open: dict[str, Outage] = {}


def failing(key: str, what: str, *, probe: Callable[[], object] | None = None) -> bool:
    """A call failed because of outage `key` ("what" says what and where, and why).

    Logs a WARNING when this starts the outage and returns True; else only counts.
    With `probe`, a daemon thread ends the outage once `probe()` stops raising.
    """
    with _lock:
        outage = _open.get(key)
        if outage is not None:
            outage.failures += 1
            return False
        _open[key] = Outage(what=what, since=time.monotonic())
    logger.warning("%s", what)
    if probe is not None:
        threading.Thread(
            target=_probe_until_recovered, args=(key, probe), name=f"outage-{key}", daemon=True
        ).start()
    return True


def recovered(key: str) -> bool:
    """A call that outage `key` would have failed succeeded: log its end (INFO) once."""
    if key not in _open:  # the common case, without the lock
        return False
    with _lock:
        outage = _open.pop(key, None)
    if outage is None:
        return False
    logger.info(
        "over after %.1fs (%d failure(s) seen): %s",
        time.monotonic() - outage.since,
        outage.failures,
        outage.what,
    )
    return True


def is_open(key: str) -> bool:
    return key in _open


def _probe_until_recovered(key: str, probe: Callable[[], object]) -> None:
    while is_open(key):
        time.sleep(PROBE_INTERVAL)
        try:
            probe()
        except Exception:  # still down: that is what the probe is for
            continue
        recovered(key)
