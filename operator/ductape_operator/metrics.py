"""Prometheus metrics: reconcile counts and durations, per-env health, Ready counts.

Series (all prefixed `ductape_`):
    reconcile_total{result}                         counter; result = ready | not_ready | error
    reconcile_duration_seconds                      histogram of one reconcile
    env_healthy{namespace,name,env,type}            1 when the env's broker answered its last probe
    probe_latency_seconds{namespace,name,env,type}  duration of the env's last probe
    brokers_ready                                   MessageBrokers whose Ready condition is True
    brokers_total                                   MessageBrokers this operator reconciles
Labels carry names only, never a credential.
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

_lock = threading.Lock()
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


def _publish_counts() -> None:
    # Only on a change (set_ready, forget), so the sum is not paid on every reconcile.
    BROKERS_READY.set(sum(1 for ready in _ready.values() if ready))
    BROKERS_TOTAL.set(len(_ready))


def serve(port: int, address: str) -> None:
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
