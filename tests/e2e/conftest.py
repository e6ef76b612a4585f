"""End-to-end fixtures: the real operator process against the local stack.

The operator runs as a subprocess (`python -m ductape_operator`) with a short
health interval, its log captured to a file the tests can grep. Every test
works in a namespace of its own.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.e2e import kit

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "messagebrokers.ductape.app.yaml"

#: Short intervals keep the suite fast; the defaults (30 s / 5 s) are for clusters.
HEALTH_INTERVAL = 3.0
PROBE_TIMEOUT = 3.0
FINALIZER_TIMEOUT = 15.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def kube() -> kit.Kube:
    if not os.environ.get("KUBECONFIG"):
        pytest.fail("KUBECONFIG is not set: source .testenv/env (make testenv-up) first")
    kubernetes.config.load_kube_config()
    return kit.Kube(kubernetes.client.ApiClient())


CRD_NAME = "messagebrokers.ductape.app"


def apply_crd() -> None:
    """Apply the MessageBroker CRD and wait until it is served."""
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    # Polled, not `kubectl wait`: right after a (re)create the CRD has no conditions at
    # all yet, and `kubectl wait` fails on that at once instead of waiting.
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    kit.wait_until(
        lambda: (
            "True" in kit.kubectl("get", f"crd/{CRD_NAME}", "--ignore-not-found", "-o", established)
        ),
        timeout=60,
        what="the MessageBroker CRD to be Established",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def crd(kube: kit.Kube) -> None:
    apply_crd()


class OperatorProcess:
    def __init__(self, log_path: pathlib.Path, args: list[str], metrics_port: int = 0) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.args = [*args, f"--metrics-port={metrics_port}"] if metrics_port else args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ductape_operator", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self, since: int = 0) -> str:
        """The log, or what was written after byte offset `since` (see `log_size`)."""
        with self.log_path.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the metrics port: (name, labels) -> value."""
        return kit.scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            "the operator process exited:\n" + self.log()[-4000:]
        )


@pytest.fixture(scope="session")
def operator(
    crd: None, kube: kit.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = OperatorProcess(
        log_path,
        [
            "--standalone",
            "--verbose",
            f"--health-interval={HEALTH_INTERVAL}",
            f"--probe-timeout={PROBE_TIMEOUT}",
            f"--finalizer-timeout={FINALIZER_TIMEOUT}",
        ],
        metrics_port=free_port(),
    )
    proc.start()
    yield proc
    # The namespaces the last tests deleted are still going: their MessageBrokers'
    # finalizers need this operator, so wait for them (a while) before stopping it,
    # else they stay Terminating on the stack for whoever runs tests next.
    try:
        kit.wait_until(
            lambda: not [ns for ns in kube.namespace_names() if ns.startswith("e2e-")] or None,
            timeout=120,
            what="the test namespaces to go",
        )
    except AssertionError as exc:
        print(f"note: {exc}")
    proc.stop()
    # Keep the log where CI can find it after a failure.
    state = os.environ.get("DUCTAPE_STATE_DIR") or str(ROOT / ".testenv")
    if pathlib.Path(state).is_dir():
        (pathlib.Path(state) / "e2e-operator.log").write_text(proc.log())


@pytest.fixture(autouse=True)
def no_traceback_in_operator_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that runs the operator fails when the operator printed a traceback
    meanwhile: expected failures are lines, a traceback is a bug (docs/operations.md)."""
    if "operator" not in request.fixturenames:
        yield
        return
    operator: OperatorProcess = request.getfixturevalue("operator")
    since = operator.log_size()
    yield
    written = operator.log(since)
    assert "Traceback" not in written, "the operator logged a traceback:\n" + written[-6000:]


@pytest.fixture
def namespace(kube: kit.Kube, operator: OperatorProcess) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(name)
    yield name
    operator.assert_alive()
    kube.delete_namespace(name)


@pytest.fixture
def private_redis() -> Iterator[kit.PrivateRedis]:
    with tempfile.TemporaryDirectory() as workdir:
        redis_proc = kit.PrivateRedis(pathlib.Path(workdir))
        redis_proc.start()
        yield redis_proc
        redis_proc.stop()
