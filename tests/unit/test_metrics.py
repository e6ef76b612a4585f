"""The operator's backlog series: set from a reading, gone when their topic, env or
resource goes (docs/operations.md, "Metrics")."""

from __future__ import annotations

from ductape_operator import metrics


def value(metric: str, **labels: str) -> float | None:
    result: float | None = metrics.REGISTRY.get_sample_value(metric, labels)
    return result


BACKLOG = "ductape_subscription_backlog_messages"
AGE = "ductape_subscription_oldest_message_age_seconds"
COUNT = "ductape_topic_messages_total"


def test_series_follow_the_readings_and_go_with_their_resource() -> None:
    env = {"namespace": "unit", "name": "bus", "env": "dev"}
    metrics.observe_backlog(
        "unit",
        "bus",
        "dev",
        {"orders": 12, "audit": None},
        {("orders", "billing"): (4, 1.5), ("orders", "shipping"): (7, None)},
    )
    metrics.observe_backlog("unit", "bus", "prd", {"orders": 3}, {("orders", "billing"): (1, None)})
    assert value(BACKLOG, **env, topic="orders", subscription="billing") == 4
    assert value(BACKLOG, **env, topic="orders", subscription="shipping") == 7
    assert value(AGE, **env, topic="orders", subscription="billing") == 1.5
    assert value(AGE, **env, topic="orders", subscription="shipping") is None
    assert value(COUNT, **env, topic="orders") == 12
    assert value(COUNT, **env, topic="audit") is None, "not counted: absent, not 0"

    # The next reading has no shipping and no age: those series go, the rest is updated.
    metrics.observe_backlog(
        "unit", "bus", "dev", {"orders": 15}, {("orders", "billing"): (0, None)}
    )
    assert value(BACKLOG, **env, topic="orders", subscription="billing") == 0
    assert value(BACKLOG, **env, topic="orders", subscription="shipping") is None
    assert value(AGE, **env, topic="orders", subscription="billing") is None
    assert value(COUNT, **env, topic="orders") == 15

    metrics.forget_backlog("unit", "bus", "dev")
    assert value(BACKLOG, **env, topic="orders", subscription="billing") is None
    assert value(COUNT, **env, topic="orders") is None
    prd = {**env, "env": "prd"}
    assert value(BACKLOG, **prd, topic="orders", subscription="billing") == 1, "other envs stay"

    metrics.forget("unit", "bus")
    assert value(BACKLOG, **prd, topic="orders", subscription="billing") is None
    assert value(COUNT, **prd, topic="orders") is None
