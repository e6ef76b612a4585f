"""Fixtures of the delivery tests: the chart's tools, a real install of its RBAC, and the
operator run out of cluster with the chart's ServiceAccount token.

The Kubernetes side runs on an API server of this package's own (see `private_kube`); the
brokers are the shared stack's. Names are unique all the same, and removed at the end.
"""

from __future__ import annotations

import base64
import os
import pathlib
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest
import yaml

from tests.e2e import kit

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ductape-operator"
CRD_FILE = ROOT / "crds" / "messagebrokers.ductape.app.yaml"
CHART_CRD_FILE = CHART / "crds" / "messagebrokers.ductape.app.yaml"
PEERING_CRD_FILE = CHART / "crds" / "kopf.dev-peerings.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # test_sync.py compares files only: it runs without the stack (make test-unit).
        path = str(item.fspath)
        if "tests/deploy/" in path and not path.endswith("test_sync.py"):
            item.add_marker(pytest.mark.stack)


def run(
    *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), capture_output=True, text=True, input=input, timeout=300, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from the stack's PATH (.testenv/env), else built into the cache."""
    found = run("bash", "-c", "command -v helm || hack/build-helm.sh").stdout.strip()
    return found.splitlines()[-1]


@pytest.fixture(scope="package")
def private_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A kube-apiserver of this package's own, started by the stack's script.

    The shared stack's API server is no place to prove what the operator did: end-to-end
    tests there run a cluster-wide operator that reconciles every namespace, ours too. So
    these tests start a second etcd, kube-apiserver and controller-manager (RBAC on, the
    same cached binaries) on free ports, and use the shared stack for its brokers only.
    KUBECONFIG points at it while the package's tests run; it is stopped at the end.
    """
    if not os.environ.get("KUBECONFIG"):
        pytest.fail("KUBECONFIG is not set: source .testenv/env (make testenv-up) first")
    state = tmp_path_factory.mktemp("kube")
    env = {
        **os.environ,
        "DUCTAPE_STATE_DIR": str(state),
        "TESTENV_COMPONENTS": "kube",
        "TESTENV_ETCD_PORT": str(free_port()),
        "TESTENV_ETCD_PEER_PORT": str(free_port()),
        "TESTENV_KUBE_PORT": str(free_port()),
    }
    shared = os.environ["KUBECONFIG"]
    try:
        up = subprocess.run(
            [str(ROOT / "hack" / "testenv-up.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert up.returncode == 0, up.stderr[-4000:]
        os.environ["KUBECONFIG"] = str(state / "kubeconfig")
        yield state / "kubeconfig"
    finally:
        os.environ["KUBECONFIG"] = shared
        subprocess.run(
            [str(ROOT / "hack" / "testenv-down.sh")], env=env, capture_output=True, timeout=300
        )


@pytest.fixture(scope="package")
def admin(private_kube: pathlib.Path) -> kit.Kube:
    api = kubernetes.config.new_client_from_config(config_file=str(private_kube))
    return kit.Kube(api)


@pytest.fixture(scope="package")
def crds(admin: kit.Kube) -> None:
    """The chart's CRDs, for real (the MessageBroker CRD only when it is the generated one)."""
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes(), (
        "the chart's CRD differs from crds/: run hack/render-deploy.sh"
    )
    for path in (CHART_CRD_FILE, PEERING_CRD_FILE):
        kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in (
        "messagebrokers.ductape.app",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        kit.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def helm_template(helm: str, release: str, namespace: str, *values: str) -> str:
    sets = [arg for value in values for arg in ("--set", value)]
    return run(helm, "template", release, str(CHART), "--namespace", namespace, *sets).stdout


@dataclass
class Release:
    """A real install of the chart (Deployment disabled) in namespaced mode."""

    name: str
    namespace: str
    service_account: str
    watched: list[str]
    outside: str
    kubeconfig: pathlib.Path
    created: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def token_kubeconfig(admin: kit.Kube, namespace: str, sa: str, path: pathlib.Path) -> None:
    """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
    token = admin.core.create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    with open(os.environ["KUBECONFIG"]) as f:
        admin_config = yaml.safe_load(f)
    context = next(
        c for c in admin_config["contexts"] if c["name"] == admin_config["current-context"]
    )
    cluster = next(
        c for c in admin_config["clusters"] if c["name"] == context["context"]["cluster"]
    )["cluster"]
    ca = cluster.get("certificate-authority-data")
    if ca is None and cluster.get("certificate-authority"):
        ca = base64.b64encode(pathlib.Path(cluster["certificate-authority"]).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stack",
                "cluster": {"server": cluster["server"], "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "stack", "user": sa}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


@pytest.fixture(scope="package")
def release(
    admin: kit.Kube, crds: None, helm: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """`helm install` of the chart's ServiceAccount, RBAC and peering objects, watching
    three namespaces of its own; the operator itself runs out of cluster in the tests."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"dt-{suffix}",
        namespace=f"dt-op-{suffix}",
        service_account=f"dt-{suffix}-ductape-operator",
        watched=[f"dt-app-{suffix}-{i}" for i in range(3)],
        outside=f"dt-out-{suffix}",
        kubeconfig=tmp_path_factory.mktemp("sa") / "kubeconfig",
    )
    try:
        for ns in (rel.namespace, *rel.watched, rel.outside):
            admin.create_namespace(ns)
            rel.created.append(ns)
        run(
            helm,
            "install",
            rel.name,
            str(CHART),
            "--namespace",
            rel.namespace,
            "--set",
            "deployment.enabled=false",
            "--set",
            "watchNamespaces={" + ",".join(rel.watched) + "}",
            "--set",
            "peering.lifetime=10",
        )
        token_kubeconfig(admin, rel.namespace, rel.service_account, rel.kubeconfig)
        yield rel
    finally:
        run(helm, "uninstall", rel.name, "--namespace", rel.namespace, check=False)
        for ns in rel.created:
            admin.delete_namespace(ns)


class OperatorProcess:
    """`python -m ductape_operator` as a subprocess with its own environment and log."""

    def __init__(
        self, log_path: pathlib.Path, args: list[str], env: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self.args = args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ductape_operator", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_alive(self) -> None:
        assert self.running, "the operator process exited:\n" + self.log()[-4000:]


@pytest.fixture
def operators(
    release: Release, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    """Started operator processes, stopped (and their logs kept) at the end of the test."""
    started: list[OperatorProcess] = []
    yield started
    for proc in started:
        proc.stop()
    state = pathlib.Path(os.environ.get("DUCTAPE_STATE_DIR") or ROOT / ".testenv")
    if state.is_dir():
        for i, proc in enumerate(started):
            (state / f"deploy-{request.node.name}-{i}.log").write_text(proc.log())


def sa_operator(
    release: Release,
    log_path: pathlib.Path,
    namespace: str,
    *extra: str,
    env: Mapping[str, str] | None = None,
) -> OperatorProcess:
    """The operator as the chart's ServiceAccount, watching one namespace."""
    return OperatorProcess(
        log_path,
        [
            f"--namespace={namespace}",
            "--verbose",
            "--health-interval=3",
            "--probe-timeout=3",
            "--finalizer-timeout=15",
            *extra,
        ],
        env={"KUBECONFIG": str(release.kubeconfig), **(env or {})},
    )


def wait_ready(
    admin: kit.Kube,
    namespace: str,
    name: str,
    alive: list[OperatorProcess],
    *,
    timeout: float,
) -> dict[str, Any]:
    """Wait for Ready=True (AllEnvsReady) of the current generation; fail at once when an
    operator that should be running has exited."""

    def check() -> dict[str, Any] | None:
        for proc in alive:
            proc.assert_alive()
        obj = admin.get(namespace, name) or {}
        cond = admin.condition(namespace, name, "Ready") or {}
        ready = cond.get("status") == "True" and cond.get("reason") == "AllEnvsReady"
        current = cond.get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return obj if ready and current else None

    return kit.wait_until(check, timeout=timeout, what=f"{namespace}/{name} Ready=True")
