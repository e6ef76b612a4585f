"""The Prometheus endpoint and the health endpoint the chart's probes use, with the
operator configured exactly by the chart: the environment of the rendered Deployment's
container (so a chart value that the operator does not read fails here)."""

from __future__ import annotations

import pathlib
import urllib.request

import yaml

from tests.deploy.conftest import (
    CHART,
    OperatorProcess,
    Release,
    free_port,
    run,
    wait_ready,
)
from tests.e2e import kit

SERIES = (
    "ductape_reconcile_total",
    "ductape_reconcile_duration_seconds",
    "ductape_env_healthy",
    "ductape_probe_latency_seconds",
    "ductape_brokers_ready",
)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as rsp:
        return rsp.status, rsp.read().decode()


def scrape(port: int) -> dict[str, float]:
    """Sample name (with labels) -> value."""
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def chart_env(helm: str, *values: str) -> dict[str, str]:
    """The operator container's environment as the chart renders it."""
    sets = [arg for value in values for arg in ("--set", value)]
    manifest = run(helm, "template", "m", str(CHART), "--namespace", "m", *sets).stdout
    deployment = next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert str(ports["health"]) == env["DUCTAPE_HEALTH_PORT"]
    assert str(ports["metrics"]) == env["DUCTAPE_METRICS_PORT"]
    return env


def test_metrics_after_a_reconcile(
    admin: kit.Kube,
    helm: str,
    release: Release,
    operators: list[OperatorProcess],
    tmp_path: pathlib.Path,
) -> None:
    namespace = release.watched[2]
    metrics_port, health_port = free_port(), free_port()
    env = chart_env(
        helm,
        f"watchNamespaces={{{namespace}}}",
        f"metrics.port={metrics_port}",
        f"healthPort={health_port}",
        "healthInterval=3",
        "probeTimeout=3",
        "peering.enabled=false",
        "logFormat=text",
        "verbose=true",
    )
    assert env["DUCTAPE_BIND_ADDRESS"] == "0.0.0.0"
    # Out of cluster: the pod's address would be every interface of this machine.
    env["DUCTAPE_BIND_ADDRESS"] = "127.0.0.1"
    operator = OperatorProcess(
        tmp_path / "operator.log", [], env={**env, "KUBECONFIG": str(release.kubeconfig)}
    )
    operators.append(operator.start())

    def healthz() -> bool:
        try:
            return get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
        except OSError:
            return False

    kit.wait_until(healthz, timeout=60, what="/healthz answering 200")

    name = kit.unique("metrics")
    admin.apply(
        namespace,
        kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1)),
    )
    wait_ready(admin, namespace, name, [operator], timeout=90)

    labels = (f'namespace="{namespace}"', f'name="{name}"', 'env="dev"', 'type="REDIS"')

    def of_env(samples: dict[str, float], series: str) -> list[float]:
        return [
            value
            for key, value in samples.items()
            if key.startswith(series + "{") and all(label in key for label in labels)
        ]

    def reported() -> dict[str, float] | None:
        # The env's gauges may first appear with the first health probe after Ready.
        samples = scrape(metrics_port)
        ready = samples.get("ductape_brokers_ready", 0) >= 1
        return samples if ready and of_env(samples, "ductape_env_healthy") else None

    samples = kit.wait_until(reported, timeout=30, what="brokers_ready >= 1 and env gauges")
    for series in SERIES:
        assert any(key.startswith(series) for key in samples), f"{series} missing"
    assert sum(v for k, v in samples.items() if k.startswith("ductape_reconcile_total{")) >= 1
    assert samples["ductape_reconcile_duration_seconds_count"] >= 1
    assert of_env(samples, "ductape_env_healthy") == [1], sorted(samples)
    assert len(of_env(samples, "ductape_probe_latency_seconds")) == 1, sorted(samples)
    operator.assert_alive()
