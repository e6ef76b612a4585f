"""Client metrics: what this application published, received and settled (docs/messaging.md).

Off until the application asks, with one call before or after creating brokers:

    from ductape_operator.messaging import enable_metrics
    enable_metrics()              # prometheus-client's default registry
    prometheus_client.start_http_server(9100)

Series (all prefixed `ductape_client_`), labelled by topic tag and subscription
name, never by message content, id or physical name:
    messages_published_total{topic}                 counter
    publish_duration_seconds{topic}                 histogram of one publish call (a batch)
    messages_delivered_total{topic,subscription}    counter; redeliveries count again
    messages_acked_total{topic,subscription}        counter
    messages_nacked_total{topic,subscription}       counter, every nack
    messages_dead_lettered_total{topic,subscription}
        counter of nacks without requeue: the application gave up on the message,
        which goes to the topic's dead-letter topic where it has one, else is dropped
    ack_delay_seconds{topic,subscription}           histogram, delivery to ack

prometheus-client is imported only by `enable()`: an application that does not
ask for metrics does not need it installed, and pays one attribute check per
message for the hooks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_ACK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Series:
    """The collectors, registered once in one registry."""

    def __init__(self, prometheus_client: Any, registry: Any) -> None:
        counter, histogram = prometheus_client.Counter, prometheus_client.Histogram
        sub = ["topic", "subscription"]
        self.published = counter(
            "ductape_client_messages_published_total",
            "Messages this client published, by topic tag.",
            ["topic"],
            registry=registry,
        )
        self.publish_seconds = histogram(
            "ductape_client_publish_duration_seconds",
            "Duration of one publish call (one message or one batch) until the broker had it.",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivered = counter(
            "ductape_client_messages_delivered_total",
            "Messages delivered to this client (redeliveries count again).",
            sub,
            registry=registry,
        )
        self.acked = counter(
            "ductape_client_messages_acked_total",
            "Messages this client acked.",
            sub,
            registry=registry,
        )
        self.nacked = counter(
            "ductape_client_messages_nacked_total",
            "Messages this client nacked, with or without requeue.",
            sub,
            registry=registry,
        )
        self.dead_lettered = counter(
            "ductape_client_messages_dead_lettered_total",
            "Messages this client gave up on (nack without requeue): dead-lettered where the"
            " topic has a dead-letter topic, dropped otherwise.",
            sub,
            registry=registry,
        )
        self.ack_seconds = histogram(
            "ductape_client_ack_delay_seconds",
            "Time from a message's delivery to this client until its ack.",
            sub,
            buckets=_ACK_BUCKETS,
            registry=registry,
        )


_series: _Series | None = None
_registry: Any = None


def enable(registry: Any = None) -> bool:
    """Export the client's metrics in `registry` (prometheus-client's default one when
    None); False, with a warning, when prometheus-client is not installed.

    Calling it again with the same registry does nothing; with another registry the
    series move there.
    """
    global _series, _registry
    try:
        import prometheus_client
    except ImportError:
        log.warning("metrics asked for, but prometheus-client is not installed: none exported")
        return False
    target = registry if registry is not None else prometheus_client.REGISTRY
    if _series is not None and _registry is target:
        return True
    disable()
    _series, _registry = _Series(prometheus_client, target), target
    return True


def disable() -> None:
    """Stop exporting; the series leave the registry they were in."""
    global _series, _registry
    series, registry = _series, _registry
    _series, _registry = None, None
    if series is None:
        return
    for collector in vars(series).values():
        registry.unregister(collector)


def enabled() -> bool:
    return _series is not None


# --- hooks (broker.py, message.py) --------------------------------------------


def published(topic: str, count: int, seconds: float) -> None:
    series = _series
    if series is not None:
        series.published.labels(topic).inc(count)
        series.publish_seconds.labels(topic).observe(seconds)


def delivered(topic: str, subscription: str, count: int = 1) -> None:
    series = _series
    if series is not None:
        series.delivered.labels(topic, subscription).inc(count)


def settled(topic: str, subscription: str, *, ack: bool, requeue: bool, received_at: float) -> None:
    series = _series
    if series is None:
        return
    if ack:
        series.acked.labels(topic, subscription).inc()
        series.ack_seconds.labels(topic, subscription).observe(time.monotonic() - received_at)
        return
    series.nacked.labels(topic, subscription).inc()
    if not requeue:
        series.dead_lettered.labels(topic, subscription).inc()
