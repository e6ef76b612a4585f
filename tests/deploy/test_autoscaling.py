"""docs/autoscaling.md: its manifests apply on a real API server, its queries name metrics
the operator exports.

KEDA's CRDs come from `hack/fetch-keda-crds.sh` (cached, never committed) and are
installed on this package's own API server; the ScaledObject and the HPA of the page are
then applied with `--dry-run=server`, so the API server's schema validation (KEDA's
OpenAPI schema, autoscaling/v2) judges them.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, run
from tests.deploy.test_dashboard import METRIC, exported
from tests.e2e import kit

DOC = ROOT / "docs" / "autoscaling.md"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def blocks() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(text) for text in BLOCK.findall(DOC.read_text())]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def manifests() -> list[dict[str, Any]]:
    return [d for d in blocks() if "apiVersion" in d and "kind" in d]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


@pytest.fixture(scope="module")
def keda_crds(admin: kit.Kube) -> None:
    folder = run("bash", str(ROOT / "hack" / "fetch-keda-crds.sh")).stdout.strip().splitlines()[-1]
    for path in sorted(pathlib.Path(folder).glob("keda.sh_*.yaml")):
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    # Polled: `kubectl wait` fails outright on a CRD whose status has no conditions yet.
    kit.wait_until(
        lambda: (
            kit.kubectl(
                "get",
                "crd/scaledobjects.keda.sh",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False,
            ).strip()
            == "True"
        ),
        timeout=60,
        what="KEDA's ScaledObject CRD established",
    )


def test_the_page_has_a_scaled_object_and_an_hpa_on_the_backlog() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in manifests()}
    assert kinds == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    }
    known = exported()
    named = {name for d in blocks() for text in strings(d) for name in METRIC.findall(text)}
    assert "ductape_subscription_backlog_messages" in named
    assert named <= known, f"{sorted(named - known)} are not exported"


def test_the_manifests_apply_on_the_api_server(admin: kit.Kube, keda_crds: None) -> None:
    namespace = kit.unique("autoscaling")
    admin.create_namespace(namespace)
    try:
        for manifest in manifests():
            out = kit.kubectl(
                "apply",
                "--dry-run=server",
                "-n",
                namespace,
                "-f",
                "-",
                input=yaml.safe_dump(manifest),
            )
            assert "(server dry run)" in out, out
        # The schema is really checked: a ScaledObject with a field of the wrong type is refused.
        broken = next(d for d in manifests() if d["kind"] == "ScaledObject")
        broken = {**broken, "spec": {**broken["spec"], "maxReplicaCount": "twenty"}}
        refused = kit.kubectl(
            "apply",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump(broken),
            check=False,
        )
        assert "(server dry run)" not in refused
    finally:
        admin.delete_namespace(namespace)
