"""What the benchmarks share: the local stack's API client, watches, the operator process.

`benchmarks.scale` and `benchmarks.latency` both start the operator as a local
process, watch MessageBrokers for their first Ready=True and sample the
operator; the pieces live here once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

ROOT = pathlib.Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "messagebrokers.ductape.app.yaml"
BENCH_DIR = ROOT / ".bench"
GROUP, VERSION, PLURAL = "ductape.app", "v1alpha1", "messagebrokers"
#: Server-side timeout of one watch request: a watch is re-opened this often,
#: which bounds how long a watcher takes to notice that it should stop.
WATCH_SECONDS = 5
Obj = dict[str, Any]


def kubectl(*args: str, input: str | None = None, timeout: float = 120) -> str:
    out = subprocess.run(
        ["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def new_api_client() -> kubernetes.client.ApiClient:
    """A client of its own (connection pool included), from $KUBECONFIG."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=os.environ["KUBECONFIG"]
    )
    return client


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def ready_condition(obj: Obj) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def is_ready(obj: Obj) -> bool:
    """Ready=True, and (when the condition says) for the object's current generation."""
    cond = ready_condition(obj)
    if cond is None or cond.get("status") != "True":
        return False
    observed = cond.get("observedGeneration")
    return observed is None or observed == (obj.get("metadata") or {}).get("generation")


def list_raw(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[list[Obj], str]:
    """One list call, raw JSON (no model objects): its items and resourceVersion."""
    resp = func(*args, _preload_content=False, _request_timeout=120)
    body = json.loads(resp.data)
    return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])


class Watcher(threading.Thread):
    """Watches one collection from a resourceVersion, calling `on_event` per change.

    ADDED, MODIFIED and DELETED events go to `on_event(type, object, monotonic
    time)`. When the watch expires (410 Gone) it lists afresh, hands the items
    to `on_list` and goes on from there; `restarts` counts those. It stops at
    `until` (events after it are dropped) or when `stop()` is called; an error
    ends the thread and is kept in `error` for the caller to raise.
    """

    def __init__(
        self,
        label: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        on_event: Callable[[str, Obj, float], None],
        on_list: Callable[[list[Obj], float], None] | None = None,
        until: float | None = None,
    ) -> None:
        super().__init__(name=f"watch-{label}", daemon=True)
        self.label, self.func, self.args = label, func, args
        self.on_event, self.on_list, self.until = on_event, on_list, until
        self.resource_version: str | None = None
        self.restarts = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]

    def list_now(self) -> None:
        """List the collection (call before `start()`); the watch begins after this list."""
        items, self.resource_version = list_raw(self.func, self.args)
        if self.on_list is not None:
            self.on_list(items, time.monotonic())

    def stop(self) -> None:
        self._stopping.set()
        self._watch.stop()  # type: ignore[no-untyped-call]  # also cuts a blocked read

    def _remaining(self) -> float:
        return math.inf if self.until is None else self.until - time.monotonic()

    def run(self) -> None:
        try:
            if self.resource_version is None:
                self.list_now()
            while not self._stopping.is_set() and self._remaining() > 0:
                timeout = max(1, math.ceil(min(WATCH_SECONDS, self._remaining())))
                try:
                    self._stream(timeout)
                except ApiException as exc:
                    if exc.status != 410 or self._stopping.is_set():
                        raise
                    self.restarts += 1
                    self.list_now()
        except BaseException as exc:
            if not self._stopping.is_set():  # a stop() cuts the socket: not an error
                self.error = exc

    def _stream(self, timeout: int) -> None:
        events = self._watch.stream(  # type: ignore[no-untyped-call]
            self.func,
            *self.args,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=timeout + 30,
        )
        for event in events:
            now = time.monotonic()
            obj = event["raw_object"]
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = str(rv)
            if self._stopping.is_set() or self._remaining() <= 0:
                self._watch.stop()  # type: ignore[no-untyped-call]
                return
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(event["type"], obj, now)


def check(watchers: Iterable[Watcher]) -> None:
    for watcher in watchers:
        if watcher.error is not None:
            raise RuntimeError(f"watch of {watcher.label} failed") from watcher.error


def stop_all(watchers: Iterable[Watcher], timeout: float = WATCH_SECONDS + 30) -> None:
    watchers = list(watchers)
    for watcher in watchers:
        watcher.stop()
    for watcher in watchers:
        watcher.join(timeout)


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, ...); empty once it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Samples the operator's VmRSS every `period` seconds (keeping the peak), and
    every few periods looks for other operator processes on this machine."""

    def __init__(self, pid: int, period: float = 0.5, others_every: int = 4) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pid, self.period, self.others_every = pid, period, others_every
        self.peak_kb = 0
        self.last_kb = 0
        self.samples = 0
        self.others: dict[int, str] = {}
        self._stopping = threading.Event()

    def sample(self) -> None:
        rss = proc_status(self.pid).get("VmRSS")
        if rss is not None:
            self.last_kb, self.peak_kb = rss, max(self.peak_kb, rss)
            self.samples += 1

    def run(self) -> None:
        own = {os.getpid(), self.pid}
        tick = 0
        while True:
            self.sample()
            if tick % self.others_every == 0:
                self.others.update(other_operators(own))
            tick += 1
            if self._stopping.wait(self.period):
                return

    def stop(self) -> None:
        self._stopping.set()
        self.join(self.period + 5)


class Operator:
    """`python -m ductape_operator` for one namespace, its output in a log file."""

    def __init__(self, namespace: str, health_interval: float, log_path: pathlib.Path) -> None:
        self.namespace, self.health_interval, self.log_path = namespace, health_interval, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until kopf logged in (or `timeout`, then go on).

        Resources created before its watch begins are found by its first list
        anyway, so this only keeps the operator's own start out of the figures.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ductape_operator",
                    "--standalone",
                    "--namespace",
                    self.namespace,
                    "--health-interval",
                    str(self.health_interval),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            log_text = self.log_path.read_text(errors="replace")
            if "'login' succeeded" in log_text:  # kopf logged in: its watches start now
                return
            time.sleep(0.1)  # poll the log
        print(f"note: no login line in the operator log after {timeout:.0f} s; going on")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> int | None:
        """Terminate it (kill after 30 s); its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def other_operators(own: set[int]) -> dict[int, str]:
    """Other ductape operator processes on this machine, by PID: their command lines.

    One that watches every namespace (say, the one of a concurrent e2e run)
    reconciles the benchmark's resources too, and the figures are no longer
    those of the operator measured here.
    """
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [arg.decode(errors="replace") for arg in argv if arg]
        # `python -m ductape_operator` or the installed `ductape-operator` script
        if "ductape_operator" in args or any(a.endswith("/ductape-operator") for a in args[:2]):
            found[int(entry.name)] = " ".join(args)[:300]
    return found


def tracebacks(log_path: pathlib.Path) -> int | None:
    return _count_lines(log_path, lambda line: line.startswith("Traceback"))


def warning_lines(log_path: pathlib.Path) -> int | None:
    """WARNING and ERROR lines: a healthy run, teardown included, has none."""
    return _count_lines(log_path, lambda line: "[WARNING " in line or "[ERROR " in line)


def _count_lines(log_path: pathlib.Path, matches: Callable[[str], bool]) -> int | None:
    try:
        with log_path.open(errors="replace") as log:
            return sum(1 for line in log if matches(line))
    except OSError:
        return None


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class ReadyTracker:
    """The first moment each MessageBroker was seen Ready=True."""

    def __init__(self) -> None:
        self.first_ready: dict[str, float] = {}
        self.seen_on_relist = 0
        self.changed = threading.Condition()

    def on_event(self, type_: str, obj: Obj, now: float) -> None:
        if type_ != "DELETED" and is_ready(obj):
            self._record(name_of(obj), now, relist=False)

    def on_list(self, items: list[Obj], now: float) -> None:
        for obj in items:
            if is_ready(obj):
                self._record(name_of(obj), now, relist=True)

    def _record(self, name: str, now: float, relist: bool) -> None:
        with self.changed:
            if name not in self.first_ready:
                self.first_ready[name] = now
                self.seen_on_relist += relist
                self.changed.notify_all()

    def wait_all(self, names: set[str], deadline: float, watcher: Watcher) -> None:
        with self.changed:
            while not names <= self.first_ready.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.changed.wait(min(1.0, remaining))
                check([watcher])


def namespace_gone(core: Any, namespace: str) -> bool:
    try:
        core.read_namespace(namespace, _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def delete_namespace(namespace: str, timeout: float) -> float | None:
    """Delete the namespace; seconds until it is gone, None when `timeout` passed first."""
    with new_api_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        start = time.monotonic()
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace, _request_timeout=60)
        while time.monotonic() - start < timeout:
            if namespace_gone(core, namespace):
                return time.monotonic() - start
            time.sleep(0.2)  # poll
    return None


def drop_finalizers(namespace: str) -> int:
    """Let go of what a stopped operator left behind, so the namespace can go."""
    with new_api_client() as api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        try:
            items, _ = list_raw(
                custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
            )
        except ApiException:
            return 0
        held = [obj for obj in items if (obj.get("metadata") or {}).get("finalizers")]
        for obj in held:
            with contextlib.suppress(ApiException):
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name_of(obj),
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json",
                )
    return len(held)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def stack_config(type_: str, rabbit_secret: str, sqs_secret: str = "") -> Obj:
    """One env's config on the local stack, from the variables of .testenv/env; the
    credentials it needs come from the named Secrets (key `password`; `id` and `secret`)."""
    if type_ == "KAFKA":
        return {"brokers": os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    if type_ == "REDIS":
        url = urllib.parse.urlparse(os.environ["REDIS_URL"])
        return {"host": url.hostname, "port": url.port}
    if type_ == "RABBITMQ":
        url = urllib.parse.urlparse(os.environ["AMQP_URL"])
        return {
            "host": url.hostname,
            "port": url.port,
            "username": url.username,
            "password": {"secretKeyRef": {"name": rabbit_secret, "key": "password"}},
        }
    if type_ == "GOOGLE_PUBSUB":
        return {
            "projectId": os.environ["PUBSUB_PROJECT_ID"],
            "emulatorHost": os.environ["PUBSUB_EMULATOR_HOST"],
        }
    if type_ == "NATS":
        return {"servers": os.environ["NATS_URL"].split(",")}
    return {
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "endpoint": os.environ["SQS_ENDPOINT"],
        "accessKeyId": {"secretKeyRef": {"name": sqs_secret, "key": "id"}},
        "secretAccessKey": {"secretKeyRef": {"name": sqs_secret, "key": "secret"}},
    }
