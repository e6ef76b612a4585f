"""Least privilege, proven: the operator runs out of cluster with nothing but the token of
the chart's ServiceAccount (namespaced mode), does its whole job, and is refused
everything else."""

from __future__ import annotations

import pathlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.deploy.conftest import (
    CHART,
    ROOT,
    OperatorProcess,
    Release,
    run,
    sa_operator,
    token_kubeconfig,
    wait_ready,
)
from tests.e2e import kit

# kopf logs APIForbiddenError(... status=403); the Kubernetes client "(403) Reason: Forbidden".
FORBIDDEN = re.compile(r"forbidden|status=403|\(403\)", re.IGNORECASE)


def can_i(release: Release, *args: str) -> bool:
    out = run("kubectl", "auth", "can-i", *args, f"--as={release.user}", check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stderr
    return answer == "yes"


def test_two_env_example_goes_ready_as_the_service_account(
    admin: kit.Kube,
    release: Release,
    operators: list[OperatorProcess],
    tmp_path: pathlib.Path,
) -> None:
    namespace = release.watched[0]
    operator = sa_operator(release, tmp_path / "operator.log", namespace, "--standalone")
    operators.append(operator.start())

    kit.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "message-bus.yaml"))
    obj = wait_ready(admin, namespace, "message-bus", [operator], timeout=120)
    assert obj["status"]["summary"] == "prd:RABBITMQ dev:REDIS"
    prd = admin.secret(namespace, "message-bus-prd")
    dev = admin.secret(namespace, "message-bus-dev")
    assert prd is not None and prd["type"] == "rabbitmq"
    assert dev is not None and dev["type"] == "redis"
    assert obj["metadata"]["finalizers"] == ["ductape.app/finalizer"]

    # Deletion goes through the finalizer with the same token (Retain: no broker calls).
    admin.delete(namespace, "message-bus")
    kit.wait_until(
        lambda: admin.get(namespace, "message-bus") is None,
        # kopf re-checks a running health timer only every 60 s before it lets go.
        timeout=90,
        what="message-bus deleted through the finalizer",
    )
    operator.assert_alive()
    log = operator.log()
    assert "message-bus" in log, "the operator never handled the resource:\n" + log[-3000:]
    forbidden = [line for line in log.splitlines() if FORBIDDEN.search(line)]
    assert not forbidden, "the operator hit RBAC refusals:\n" + "\n".join(forbidden[:20])


def test_service_account_can_do_its_job(release: Release) -> None:
    ns = release.watched[0]
    for verb, resource in [
        ("get", "secrets"),
        ("watch", "secrets"),
        ("create", "secrets"),
        ("patch", "secrets"),
        ("patch", "messagebrokers.ductape.app"),
        ("patch", "messagebrokers.ductape.app/status"),
        ("create", "events"),
        ("patch", "kopfpeerings.kopf.dev/ductape-operator"),
    ]:
        assert can_i(release, verb, resource, "-n", ns), f"cannot {verb} {resource} in {ns}"
    # GET /api/v1/namespaces/<ns> is authorized as a request in namespace <ns>: the Role
    # there covers it. A real request with the token proves it, and the refusal outside.
    assert can_i(release, "get", f"namespace/{ns}", "-n", ns)
    sa = ["kubectl", "--kubeconfig", str(release.kubeconfig)]
    run(*sa, "get", "namespace", ns)
    refused = run(*sa, "get", "namespace", release.outside, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr


@pytest.mark.parametrize(
    "what",
    [
        "get secrets -n {outside}",
        "list secrets -n {outside}",
        "list secrets --all-namespaces",
        "get namespace/{outside}",
        "list messagebrokers.ductape.app -n {outside}",
        "patch messagebrokers.ductape.app -n {outside}",
        "list namespaces",
        "watch customresourcedefinitions.apiextensions.k8s.io",
        "delete customresourcedefinitions.apiextensions.k8s.io",
        "create customresourcedefinitions.apiextensions.k8s.io",
        "update customresourcedefinitions.apiextensions.k8s.io",
        "create pods -n {watched}",
        "create pods/exec -n {watched}",
        "create deployments.apps -n {watched}",
        "create messagebrokers.ductape.app -n {watched}",
        "delete messagebrokers.ductape.app -n {watched}",
        "update messagebrokers.ductape.app -n {watched}",
        "update secrets -n {watched}",
        "create clusterroles.rbac.authorization.k8s.io",
        "escalate clusterroles.rbac.authorization.k8s.io",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create rolebindings.rbac.authorization.k8s.io -n {watched}",
        "escalate roles.rbac.authorization.k8s.io -n {watched}",
        "create serviceaccounts/token -n {namespace}",
        "impersonate users",
        "patch kopfpeerings.kopf.dev/someone-else -n {watched}",
        "patch clusterkopfpeerings.kopf.dev/ductape-operator",
    ],
)
def test_service_account_is_refused(release: Release, what: str) -> None:
    args = what.format(
        outside=release.outside, watched=release.watched[0], namespace=release.namespace
    ).split()
    assert not can_i(release, *args), f"the ServiceAccount may {what}"


@dataclass
class ClusterWide:
    namespace: str
    user: str
    kubeconfig: pathlib.Path


@pytest.fixture(scope="module")
def cluster_wide(
    admin: kit.Kube, crds: None, helm: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterWide]:
    """A real install of the chart in cluster-wide mode (no Deployment), with a token."""
    name = f"dt-cw-{uuid.uuid4().hex[:6]}"
    sa = f"{name}-ductape-operator"
    admin.create_namespace(name)
    try:
        run(
            helm, "install", name, str(CHART), "--namespace", name,
            "--set", "deployment.enabled=false", "--set", "peering.lifetime=10",
        )  # fmt: skip
        kubeconfig = tmp_path_factory.mktemp("cw") / "kubeconfig"
        token_kubeconfig(admin, name, sa, kubeconfig)
        yield ClusterWide(name, f"system:serviceaccount:{name}:{sa}", kubeconfig)
    finally:
        run(helm, "uninstall", name, "--namespace", name, check=False)
        admin.delete_namespace(name)


def test_cluster_wide_mode_works_with_its_cluster_role(
    admin: kit.Kube,
    cluster_wide: ClusterWide,
    operators: list[OperatorProcess],
    tmp_path: pathlib.Path,
) -> None:
    """The cluster-wide operator, with peering (ClusterKopfPeering) as the chart sets it."""
    namespace = f"dt-cwapp-{uuid.uuid4().hex[:6]}"
    admin.create_namespace(namespace)
    try:
        operator = OperatorProcess(
            tmp_path / "operator.log",
            ["--verbose", "--health-interval=3", "--require-peering", "--peering-lifetime=10"],
            env={"KUBECONFIG": str(cluster_wide.kubeconfig)},
        )
        operators.append(operator.start())
        kit.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "message-bus.yaml"))
        wait_ready(admin, namespace, "message-bus", [operator], timeout=120)
        assert admin.secret(namespace, "message-bus-prd") is not None
        operator.stop()
        log = operator.log()
        assert "Resuming operations" in log, "the operator never led the ClusterKopfPeering"
        forbidden = [line for line in log.splitlines() if FORBIDDEN.search(line)]
        assert not forbidden, "the operator hit RBAC refusals:\n" + "\n".join(forbidden[:20])
    finally:
        admin.delete_namespace(namespace)


def test_cluster_wide_service_account_is_least_privileged(cluster_wide: ClusterWide) -> None:
    def may(*args: str) -> bool:
        out = run("kubectl", "auth", "can-i", *args, f"--as={cluster_wide.user}", check=False)
        assert out.stdout.strip() in ("yes", "no"), out.stderr
        return out.stdout.strip() == "yes"

    # What cluster-wide mode is for.
    assert may("watch", "messagebrokers.ductape.app", "--all-namespaces")
    assert may("watch", "secrets", "--all-namespaces")
    assert may("watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert may("patch", "clusterkopfpeerings.kopf.dev/ductape-operator")
    # And nothing more.
    for what in (
        "delete customresourcedefinitions.apiextensions.k8s.io",
        "create customresourcedefinitions.apiextensions.k8s.io",
        "create pods -n default",
        "create pods/exec -n default",
        "update secrets -n default",
        "list configmaps --all-namespaces",
        "delete messagebrokers.ductape.app -n default",
        "create clusterroles.rbac.authorization.k8s.io",
        "escalate clusterroles.rbac.authorization.k8s.io",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create clusterrolebindings.rbac.authorization.k8s.io",
        "impersonate serviceaccounts",
        "patch clusterkopfpeerings.kopf.dev/someone-else",
        "delete clusterkopfpeerings.kopf.dev/ductape-operator",
    ):
        assert not may(*what.split()), f"the cluster-wide ServiceAccount may {what}"
