"""Prometheus metrics: reconcile counts and durations, per-env health, Ready counts.

Series (all prefixed `ductape_`):
    reconcile_total{result}                         counter; result = ready | not_ready | error
    reconcile_duration_seconds                      histogram of one reconcile
    env_healthy{namespace,name,env,type}            1 when the env's broker answered its last probe
    probe_latency_seconds{namespace,name,env,type}  duration of the env's last probe
    brokers_ready                                   MessageBrokers whose Ready condition is True
    brokers_total                                   MessageBrokers this operator reconciles
    subscription_backlog_messages{namespace,name,env,topic,subscription}
                                                    messages published and not yet acked
    subscription_oldest_message_age_seconds{namespace,name,env,topic,subscription}
                                                    age of the oldest of them (where cheap)
    topic_messages_total{namespace,name,env,topic}  messages ever published (where counted)
Labels carry names only, never a credential; `topic` and `subscription` are the
tags of the spec, never physical names. The backlog figures are read once per
broker endpoint per health round; what each provider counts is in
docs/operations.md ("Metrics"). They never reach the status.
"""

from __future__ import annotations

import contextlib
import threading

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()

RECONCILES = prometheus_client.Counter(
    "ductape_reconcile_total",
    "Reconciles of MessageBrokers, by result.",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    "ductape_reconcile_duration_seconds",
    "Duration of one reconcile of one MessageBroker.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ENV_HEALTHY = prometheus_client.Gauge(
    "ductape_env_healthy",
    "1 when the env's broker answered its last probe, else 0.",
    ["namespace", "name", "env", "type"],
    registry=REGISTRY,
)
PROBE_SECONDS = prometheus_client.Gauge(
    "ductape_probe_latency_seconds",
    "Duration of the env's last broker probe.",
    ["namespace", "name", "env", "type"],
    registry=REGISTRY,
)
BROKERS_READY = prometheus_client.Gauge(
    "ductape_brokers_ready", "MessageBrokers whose Ready condition is True.", registry=REGISTRY
)
BROKERS_TOTAL = prometheus_client.Gauge(
    "ductape_brokers_total", "MessageBrokers this operator reconciles.", registry=REGISTRY
)

BACKLOG = prometheus_client.Gauge(
    "ductape_subscription_backlog_messages",
    "Messages published to the topic and not yet acked on the subscription.",
    ["namespace", "name", "env", "topic", "subscription"],
    registry=REGISTRY,
)
OLDEST_AGE = prometheus_client.Gauge(
    "ductape_subscription_oldest_message_age_seconds",
    "Age of the subscription's oldest message not yet acked, where the broker gives it.",
    ["namespace", "name", "env", "topic", "subscription"],
    registry=REGISTRY,
)
# A gauge by type, named as a counter: the broker keeps the count, we only copy it,
# and `rate()` over it is the topic's throughput (resets when the topic is re-created).
TOPIC_MESSAGES = prometheus_client.Gauge(
    "ductape_topic_messages_total",
    "Messages ever published to the topic, as the broker counts them.",
    ["namespace", "name", "env", "topic"],
    registry=REGISTRY,
)

#: One env's backlog figures: topic tag -> published count (None: not counted), and
#: (topic tag, subscription) -> (messages, oldest age or None).
TopicCounts = dict[str, int | None]
SubscriptionCounts = dict[tuple[str, str], tuple[int, float | None]]

_lock = threading.Lock()
#: (namespace, name) -> env -> the label tails of the backlog series it has now.
_backlog: dict[tuple[str, str], dict[str, tuple[set[str], set[tuple[str, str]]]]] = {}
_ready: dict[tuple[str, str], bool] = {}
_envs: dict[tuple[str, str], set[tuple[str, str]]] = {}


def observe_reconcile(seconds: float, result: str) -> None:
    RECONCILES.labels(result=result).inc()
    RECONCILE_SECONDS.observe(seconds)


def observe_env(
    namespace: str, name: str, env: str, type: str, *, healthy: bool, probe_seconds: float | None
) -> None:
    ENV_HEALTHY.labels(namespace, name, env, type).set(1 if healthy else 0)
    if probe_seconds is not None:
        PROBE_SECONDS.labels(namespace, name, env, type).set(probe_seconds)
    with _lock:
        _envs.setdefault((namespace, name), set()).add((env, type))


def set_ready(namespace: str, name: str, ready: bool) -> None:
    with _lock:
        if _ready.get((namespace, name)) is ready:
            return
        _ready[(namespace, name)] = ready
        _publish_counts()


def forget(namespace: str, name: str) -> None:
    """A MessageBroker is gone: drop its series."""
    with _lock:
        _ready.pop((namespace, name), None)
        for env, type in _envs.pop((namespace, name), set()):
            for gauge in (ENV_HEALTHY, PROBE_SECONDS):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name, env, type)
        _publish_counts()
    forget_backlog(namespace, name)


def observe_backlog(
    namespace: str, name: str, env: str, topics: TopicCounts, subscriptions: SubscriptionCounts
) -> None:
    """One env's backlog figures as of the last reading; series it no longer has go."""
    with _lock:
        envs = _backlog.setdefault((namespace, name), {})
        old_topics, old_subs = envs.get(env, (set(), set()))
        new_topics = {topic for topic, count in topics.items() if count is not None}
        for topic in new_topics:
            TOPIC_MESSAGES.labels(namespace, name, env, topic).set(topics[topic] or 0)
        aged: set[tuple[str, str]] = set()
        for (topic, sub), (messages, age) in subscriptions.items():
            BACKLOG.labels(namespace, name, env, topic, sub).set(messages)
            if age is not None:
                OLDEST_AGE.labels(namespace, name, env, topic, sub).set(age)
                aged.add((topic, sub))
        for topic in old_topics - new_topics:
            with contextlib.suppress(KeyError):
                TOPIC_MESSAGES.remove(namespace, name, env, topic)
        for topic, sub in old_subs - set(subscriptions):
            with contextlib.suppress(KeyError):
                BACKLOG.remove(namespace, name, env, topic, sub)
        for topic, sub in old_subs - aged:
            with contextlib.suppress(KeyError):
                OLDEST_AGE.remove(namespace, name, env, topic, sub)
        envs[env] = (new_topics, set(subscriptions))


def forget_backlog(namespace: str, name: str, env: str | None = None) -> None:
    """An env (or, with `env` None, every env of a MessageBroker) is gone: drop its series."""
    with _lock:
        envs = _backlog.get((namespace, name), {})
        for slug in [env] if env is not None else list(envs):
            topics, subs = envs.pop(slug, (set(), set()))
            for topic in topics:
                with contextlib.suppress(KeyError):
                    TOPIC_MESSAGES.remove(namespace, name, slug, topic)
            for topic, sub in subs:
                for gauge in (BACKLOG, OLDEST_AGE):
                    with contextlib.suppress(KeyError):
                        gauge.remove(namespace, name, slug, topic, sub)
        if not envs:
            _backlog.pop((namespace, name), None)


def _publish_counts() -> None:
    # Only on a change (set_ready, forget), so the sum is not paid on every reconcile.
    BROKERS_READY.set(sum(1 for ready in _ready.values() if ready))
    BROKERS_TOTAL.set(len(_ready))


def serve(port: int, address: str) -> None:
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
