"""The Grafana dashboard: every query names series the operator or the client exports,
and the chart ships the file as it is."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import prometheus_client
import yaml

from ductape_operator import metrics as operator_metrics
from ductape_operator.messaging import metrics as client_metrics
from tests.deploy.conftest import CHART, helm_template

DASHBOARD = CHART / "dashboards" / "ductape-operator.json"
#: A metric name as PromQL spells it: ours all start with `ductape_`.
METRIC = re.compile(r"\bductape_[a-z0-9_]+\b")


def exposed(registry: prometheus_client.CollectorRegistry) -> set[str]:
    """The sample names a registry serves, read from its collectors' families (a labelled
    family with no child yet has no samples to read)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


def exported() -> set[str]:
    client = prometheus_client.CollectorRegistry()
    assert client_metrics.enable(client)
    try:
        return exposed(operator_metrics.REGISTRY) | exposed(client)
    finally:
        client_metrics.disable()


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield str(value["query"])
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported()
    found = list(queries(dashboard))
    assert len(found) >= 20, f"only {len(found)} queries found: is the walk right?"
    used: set[str] = set()
    for query in found:
        names = set(METRIC.findall(query))
        assert names, f"a query names no ductape metric: {query}"
        assert names <= known, f"{sorted(names - known)} are not exported; query: {query}"
        used |= names
    # The figures the dashboard is for are all there.
    for needed in (
        "ductape_subscription_backlog_messages",
        "ductape_topic_messages_total",
        "ductape_subscription_oldest_message_age_seconds",
        "ductape_env_healthy",
        "ductape_reconcile_total",
        "ductape_client_messages_acked_total",
    ):
        assert needed in used, f"the dashboard does not show {needed}"


def test_the_chart_ships_the_dashboard_when_enabled(helm: str) -> None:
    rendered = helm_template(helm, "x", "ns", "metrics.grafanaDashboard.enabled=true")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = config_map["data"]["ductape-operator.json"]
    assert json.loads(shipped) == json.loads(DASHBOARD.read_text())
    default = [d for d in yaml.safe_load_all(helm_template(helm, "x", "ns")) if d]
    assert "ConfigMap" not in [d["kind"] for d in default]
