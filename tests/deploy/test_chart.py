"""The chart and the kustomize base against the real kube-apiserver: lint, render, and a
server-side dry-run of everything they install (admission, schemas and RBAC validation
run; nothing is persisted)."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT, helm_template, run
from tests.e2e import kit


@pytest.fixture
def release_namespace(admin: kit.Kube, crds: None) -> Iterator[str]:
    """A real namespace for dry-runs: the server refuses namespaced objects in a namespace
    that only exists in the same dry-run."""
    name = f"dt-dry-{uuid.uuid4().hex[:6]}"
    admin.create_namespace(name)
    yield name
    admin.delete_namespace(name)


def dry_run(manifest: str) -> str:
    out = run(
        "kubectl",
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "-f",
        "-",
        input=manifest,
    )
    return out.stdout


def kinds(manifest: str) -> list[tuple[str, str]]:
    return [(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(manifest) if doc]


def test_helm_lint(helm: str) -> None:
    run(helm, "lint", "--strict", str(CHART))
    run(helm, "lint", "--strict", str(CHART), "--set", "watchNamespaces={a,b}")


def test_rendered_files_are_current() -> None:
    run(str(ROOT / "hack" / "render-deploy.sh"), "--check")


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("metrics.serviceMonitor.enabled=false", "replicas=2"),
    ],
    ids=["defaults", "two-replicas"],
)
def test_template_cluster_wide_applies_on_server(
    helm: str, release_namespace: str, values: tuple[str, ...]
) -> None:
    manifest = helm_template(helm, "ductape-operator", release_namespace, *values)
    objects = kinds(manifest)
    assert ("ClusterRole", "ductape-operator") in objects
    assert ("ClusterKopfPeering", "ductape-operator") in objects
    assert not [k for k, _ in objects if k in ("Role", "RoleBinding")]
    assert (("PodDisruptionBudget", "ductape-operator") in objects) == ("replicas=2" in values)
    out = dry_run(manifest)
    assert "deployment.apps/ductape-operator serverside-applied (server dry run)" in out


def test_template_namespaced_applies_on_server(
    helm: str, admin: kit.Kube, release_namespace: str
) -> None:
    watched = [f"{release_namespace}-w{i}" for i in range(2)]
    for ns in watched:
        admin.create_namespace(ns)
    try:
        manifest = helm_template(
            helm,
            "ductape-operator",
            release_namespace,
            "watchNamespaces={" + ",".join(watched) + "}",
            "envs={prd}",
            "logFormat=text",
        )
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        roles = [d for d in docs if d["kind"] == "Role"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
        # Namespaced mode grants nothing cluster-scoped: no ClusterRole at all.
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        env = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["DUCTAPE_NAMESPACES"] == ",".join(watched)
        assert env["DUCTAPE_ENVS"] == "prd"
        out = dry_run(manifest)
        applied = [line.split()[0] for line in out.splitlines()]
        assert applied.count("role.rbac.authorization.k8s.io/ductape-operator") == 2
        assert applied.count("kopfpeering.kopf.dev/ductape-operator") == 2
    finally:
        for ns in watched:
            admin.delete_namespace(ns)


def test_service_monitor_renders_when_enabled(helm: str) -> None:
    docs = [
        d
        for d in yaml.safe_load_all(
            helm_template(helm, "x", "ns", "metrics.serviceMonitor.enabled=true")
        )
        if d
    ]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert "ServiceMonitor" not in [
        d["kind"] for d in yaml.safe_load_all(helm_template(helm, "x", "ns")) if d
    ]


def test_pod_security(helm: str) -> None:
    docs = [d for d in yaml.safe_load_all(helm_template(helm, "x", "ns")) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize(
    "bad",
    [
        "replicas=many",
        "logFormat=xml",
        "watchNamespaces={Not_A_Namespace}",
        "healthPort=0",
        "unknownValue=1",
        "peering.enabled=false,replicas=2",
    ],
)
def test_bad_values_fail_at_install(helm: str, bad: str) -> None:
    out = run(helm, "template", "x", str(CHART), "--set", bad, check=False)
    assert out.returncode != 0, f"{bad} was accepted"


def test_kustomize_applies_on_server(admin: kit.Kube, crds: None, tmp_path: pathlib.Path) -> None:
    manifest = run("kubectl", "kustomize", str(ROOT / "deploy" / "kustomize")).stdout
    objects = kinds(manifest)
    assert ("Deployment", "ductape-operator") in objects
    assert ("CustomResourceDefinition", "messagebrokers.ductape.app") in objects
    for doc in yaml.safe_load_all(manifest):
        if doc["kind"] == "CustomResourceDefinition":
            assert doc["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    # The base installs into ductape-system; the dry-run needs that namespace to exist,
    # so an overlay moves it to a namespace of this test (which is how users adapt it).
    ns = f"dt-kz-{uuid.uuid4().hex[:6]}"
    admin.create_namespace(ns)
    try:
        (tmp_path / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": ns,
                    # kustomize takes only relative paths to other kustomizations.
                    "resources": [os.path.relpath(ROOT / "deploy" / "kustomize", tmp_path)],
                }
            )
        )
        overlay = run("kubectl", "kustomize", str(tmp_path)).stdout
        binding = next(d for d in yaml.safe_load_all(overlay) if d["kind"] == "ClusterRoleBinding")
        assert binding["subjects"][0]["namespace"] == ns
        out = dry_run(overlay)
        assert "deployment.apps/ductape-operator serverside-applied (server dry run)" in out
    finally:
        admin.delete_namespace(ns)


def test_argocd_cm_patch_merges_the_health_check(admin: kit.Kube, release_namespace: str) -> None:
    """The documented command, against a stand-in argocd-cm that already has settings."""
    ns = release_namespace
    admin.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "argocd-cm"}, "data": {"url": "https://argocd.example"}}
    )
    cm_file = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
    run("kubectl", "-n", ns, "patch", "configmap", "argocd-cm", "--patch-file", str(cm_file))
    data = admin.core.read_namespaced_config_map("argocd-cm", ns).data
    lua = (ROOT / "deploy" / "argocd" / "health.lua").read_text()
    assert data["resource.customizations.health.ductape.app_MessageBroker"] == lua
    assert data["url"] == "https://argocd.example"
