"""Derived deploy files match their single source (pure file comparisons, no stack).

hack/render-deploy.sh writes them; `hack/render-deploy.sh --check` (tests/deploy/
test_chart.py) also covers the kustomize base, which needs helm to render.
"""

from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ductape-operator"


def test_chart_crd_is_identical_to_the_generated_crd() -> None:
    generated = (ROOT / "crds" / "messagebrokers.ductape.app.yaml").read_bytes()
    in_chart = (CHART / "crds" / "messagebrokers.ductape.app.yaml").read_bytes()
    assert in_chart == generated, "chart CRD is stale: run hack/render-deploy.sh"


def test_argocd_cm_carries_the_health_check_verbatim() -> None:
    lua = (ROOT / "deploy" / "argocd" / "health.lua").read_text()
    cm = yaml.safe_load((ROOT / "deploy" / "argocd" / "argocd-cm.yaml").read_text())
    key = "resource.customizations.health.ductape.app_MessageBroker"
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][key] == lua, "argocd-cm.yaml is stale: run hack/render-deploy.sh"


def test_argocd_applications_point_at_this_repository() -> None:
    for name in ("application-helm.yaml", "application-kustomize.yaml"):
        app = yaml.safe_load((ROOT / "deploy" / "argocd" / name).read_text())
        assert app["kind"] == "Application"
        assert app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
        path = ROOT / app["spec"]["source"]["path"]
        assert (path / "Chart.yaml").exists() or (path / "kustomization.yaml").exists(), path
