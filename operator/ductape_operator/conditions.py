"""Pure helpers for status conditions (metav1.Condition) and observedGeneration.

A condition keeps its `lastTransitionTime` for as long as its status does not
change, so an unchanged resource produces an identical status and no write.
"""

from __future__ import annotations

import datetime

from ductape_operator import models

READY = "Ready"
PROVISIONED = "Provisioned"
HEALTHY = "Healthy"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lasted(condition: models.Condition) -> str:
    """How long `condition` has had its status, for a log line ("42s"); "" if unknown."""
    try:
        since = datetime.datetime.fromisoformat(condition.last_transition_time)
    except ValueError:
        return ""
    if since.tzinfo is None:
        since = since.replace(tzinfo=datetime.UTC)
    return f"{max(0.0, (datetime.datetime.now(datetime.UTC) - since).total_seconds()):.0f}s"


def set_condition(
    conditions: list[models.Condition],
    *,
    type: str,
    status: models.ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    timestamp: str | None = None,
) -> list[models.Condition]:
    """Return `conditions` with `type` set; the transition time moves only on a status change."""
    previous = find(conditions, type)
    if previous is not None and previous.status == status:
        transition = previous.last_transition_time
    else:
        transition = timestamp or now()
    updated = models.Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type] + [updated]


def find(conditions: list[models.Condition], type: str) -> models.Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: list[models.Condition], type: str) -> bool:
    cond = find(conditions, type)
    return cond is not None and cond.status == models.ConditionStatus.TRUE


def order(conditions: list[models.Condition]) -> list[models.Condition]:
    """Ready, Provisioned, Healthy first, then the rest by type: a stable status."""
    rank = {READY: 0, PROVISIONED: 1, HEALTHY: 2}
    return sorted(conditions, key=lambda c: (rank.get(c.type, 9), c.type))
