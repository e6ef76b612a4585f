"""Least privilege, proven: the operator runs out of cluster with nothing but the token of
the chart's ServiceAccount (namespaced mode), does its whole job, and is refused
everything else."""

from __future__ import annotations

import pathlib
import re

import pytest

from tests.deploy.conftest import ROOT, OperatorProcess, Release, run, sa_operator, wait_ready
from tests.e2e import kit

FORBIDDEN = re.compile(r"\b403\b|forbidden", re.IGNORECASE)


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
        "patch secrets -n {watched}",
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
