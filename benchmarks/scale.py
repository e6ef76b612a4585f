"""Scale benchmark: N MessageBrokers in one namespace, created at once.

Why: `benchmarks.latency` times one resource at a time, which says nothing about
how the operator copes with many. This one creates N resources (1,000 by
default) from 16 concurrent clients against the local stack and reports:

- when each resource first turned Ready=True, as seen on a watch started before
  the first create: time until all are Ready, and p50/p95/p99 of the
  per-resource latency (its create call to its first Ready=True);
- once all are Ready, the writes to MessageBrokers and Secrets (watch events
  ADDED/MODIFIED/DELETED) over a steady window in which nothing changes, so
  health rounds that rewrite an unchanged status show up as writes; Events are
  counted separately, and so are resources whose Ready left True although
  every broker stayed up (false outages);
- the operator's peak RSS, sampled every 0.5 s, and its VmHWM;
- how long deleting the namespace takes until it is gone;
- how many tracebacks the operator logged.

It prints a table and writes the same figures as JSON to
`.bench/scale-<provider>-<N>.json`. Figures only: nothing is asserted.

    make bench-scale N=200 PROVIDER=KAFKA
    . .testenv/env && python -m benchmarks.scale --count 20 --provider RABBITMQ

The operator runs as a local process started here (`python -m ductape_operator
--standalone --namespace <ns>`); `--no-operator` measures one already running
(it must watch all namespaces, e.g. `make run`), without RSS figures.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import math
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

ROOT = pathlib.Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "messagebrokers.ductape.app.yaml"
BENCH_DIR = ROOT / ".bench"
GROUP, VERSION, PLURAL = "ductape.app", "v1alpha1", "messagebrokers"
PROVIDERS = ("REDIS", "RABBITMQ", "KAFKA")
RABBIT_SECRET = "bench-scale-rabbit"
#: Topic tags of every resource, each with one subscription.
TOPICS, SUBSCRIPTION = ("a", "b"), "s"
#: Server-side timeout of one watch request: a watch is re-opened this often,
#: which bounds how long a watcher takes to notice that it should stop.
WATCH_SECONDS = 5
#: Status codes worth retrying a create on (the API server is busy, not refusing).
RETRY_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
CREATE_ATTEMPTS = 5
Obj = dict[str, Any]


# --- Kubernetes helpers -----------------------------------------------------


def _kubectl(*args: str, input: str | None = None, timeout: float = 120) -> str:
    out = subprocess.run(
        ["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _api_client() -> kubernetes.client.ApiClient:
    """A client of its own (connection pool included), from $KUBECONFIG."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=os.environ["KUBECONFIG"]
    )
    return client


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _ready_condition(obj: Obj) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def _is_ready(obj: Obj) -> bool:
    """Ready=True, and (when the condition says) for the object's current generation."""
    cond = _ready_condition(obj)
    if cond is None or cond.get("status") != "True":
        return False
    observed = cond.get("observedGeneration")
    return observed is None or observed == (obj.get("metadata") or {}).get("generation")


def _list(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[list[Obj], str]:
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
        items, self.resource_version = _list(self.func, self.args)
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


def _check(watchers: Iterable[Watcher]) -> None:
    for watcher in watchers:
        if watcher.error is not None:
            raise RuntimeError(f"watch of {watcher.label} failed") from watcher.error


def _stop_all(watchers: Iterable[Watcher], timeout: float = WATCH_SECONDS + 30) -> None:
    watchers = list(watchers)
    for watcher in watchers:
        watcher.stop()
    for watcher in watchers:
        watcher.join(timeout)


# --- the resources ----------------------------------------------------------


def _config(provider: str) -> Obj:
    """One env's config on the local stack, from the variables of .testenv/env."""
    if provider == "KAFKA":
        return {"brokers": os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    if provider == "REDIS":
        url = urllib.parse.urlparse(os.environ["REDIS_URL"])
        return {"host": url.hostname, "port": url.port}
    url = urllib.parse.urlparse(os.environ["AMQP_URL"])
    return {
        "host": url.hostname,
        "port": url.port,
        "username": url.username,
        "password": {"secretKeyRef": {"name": RABBIT_SECRET, "key": "password"}},
    }


def _manifest(
    name: str, physical_prefix: str, provider: str, config: Obj, deletion_policy: str
) -> Obj:
    """One env, topics `a` and `b` with subscription `s`; physical names unique to it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MessageBroker",
        "metadata": {"name": name},
        "spec": {
            "name": name,
            "tag": name,
            "deletionPolicy": deletion_policy,
            "envs": [{"slug": "dev", "type": provider, "config": config}],
            "topics": [
                {"tag": tag, "name": f"{physical_prefix}-{tag}", "subscriptions": [SUBSCRIPTION]}
                for tag in TOPICS
            ],
        },
    }


def _create_one(api: Any, namespace: str, body: Obj) -> str | None:
    """Create `body`, retrying while the API server is busy; None or the error."""
    error = "no attempt"
    for attempt in range(CREATE_ATTEMPTS):
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=60
            )
            return None
        except ApiException as exc:
            if exc.status == 409 and attempt > 0:  # an earlier attempt got through
                return None
            error = f"{exc.status} {exc.reason}"
            if exc.status not in RETRY_STATUSES:
                return error
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2 * 2**attempt)  # back off, then try again
    return error


def _create_all(
    namespace: str, bodies: list[Obj], clients: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Create `bodies` from `clients` threads, each with its own ApiClient.

    Returns the monotonic time taken just before each create call, by name, and
    the error of each create that failed for good.
    """
    pending = collections.deque(bodies)
    lock = threading.Lock()
    created: dict[str, float] = {}
    failed: dict[str, str] = {}

    def client() -> None:
        with _api_client() as api_client:
            api = kubernetes.client.CustomObjectsApi(api_client)
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.popleft()
                name = _name(body)
                started = time.monotonic()
                error = _create_one(api, namespace, body)
                with lock:
                    if error is None:
                        created[name] = started
                    else:
                        failed[name] = error

    threads = [
        threading.Thread(target=client, name=f"client-{i}", daemon=True) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return created, failed


# --- the operator process ---------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
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


def _cpu_seconds(pid: int) -> float | None:
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
        rss = _proc_status(self.pid).get("VmRSS")
        if rss is not None:
            self.last_kb, self.peak_kb = rss, max(self.peak_kb, rss)
            self.samples += 1

    def run(self) -> None:
        own = {os.getpid(), self.pid}
        tick = 0
        while True:
            self.sample()
            if tick % self.others_every == 0:
                self.others.update(_other_operators(own))
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


def _other_operators(own: set[int]) -> dict[int, str]:
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


def _tracebacks(log_path: pathlib.Path) -> int | None:
    try:
        with log_path.open(errors="replace") as log:
            return sum(1 for line in log if line.startswith("Traceback"))
    except OSError:
        return None


# --- the phases -------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
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
        if type_ != "DELETED" and _is_ready(obj):
            self._record(_name(obj), now, relist=False)

    def on_list(self, items: list[Obj], now: float) -> None:
        for obj in items:
            if _is_ready(obj):
                self._record(_name(obj), now, relist=True)

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
                _check([watcher])


class SteadyCounter:
    """Counts the changes of one collection in the steady window."""

    def __init__(self, ready_at_start: set[str] | None = None) -> None:
        self.by_type: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()
        self.ready_at_start = ready_at_start
        self.outages: set[str] = set()
        self.outage_reasons: collections.Counter[str] = collections.Counter()

    def on_event(self, type_: str, obj: Obj, now: float) -> None:
        self.by_type[type_] += 1
        if obj.get("kind") == "Event":
            kind = (obj.get("involvedObject") or {}).get("kind", "?")
            self.reasons[f"{kind}/{obj.get('reason', '?')}"] += 1
        if self.ready_at_start is not None and type_ != "DELETED":
            self._check_ready(obj)

    def on_list(self, items: list[Obj], now: float) -> None:
        if self.ready_at_start is not None:
            for obj in items:
                self._check_ready(obj)

    def _check_ready(self, obj: Obj) -> None:
        name = _name(obj)
        assert self.ready_at_start is not None
        if name in self.ready_at_start and not _is_ready(obj):
            cond = _ready_condition(obj) or {}
            if name not in self.outages:
                self.outage_reasons[f"{cond.get('status', '-')}/{cond.get('reason', '-')}"] += 1
            self.outages.add(name)

    @property
    def writes(self) -> int:
        return sum(self.by_type.values())


def _steady_window(namespace: str, seconds: float) -> dict[str, Any]:
    """Watch MessageBrokers, Secrets and Events for `seconds`; count their changes."""
    with _api_client() as api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        core = kubernetes.client.CoreV1Api(api_client)
        mb_source = (custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL))
        mb_items, _ = _list(*mb_source)
        ready_at_start = {_name(obj) for obj in mb_items if _is_ready(obj)}
        counters = {
            "messagebrokers": SteadyCounter(ready_at_start),
            "secrets": SteadyCounter(),
            "events": SteadyCounter(),
        }
        sources: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
            "messagebrokers": mb_source,
            "secrets": (core.list_namespaced_secret, (namespace,)),
            "events": (core.list_namespaced_event, (namespace,)),
        }
        watchers = []
        for key, (func, args) in sources.items():
            counter = counters[key]
            watcher = Watcher(key, func, args, counter.on_event, counter.on_list)
            watcher.list_now()  # every watch starts from a list taken now
            watchers.append(watcher)
        start = time.monotonic()
        for watcher in watchers:
            watcher.until = start + seconds
            watcher.start()
        try:
            while time.monotonic() < start + seconds:
                _check(watchers)
                time.sleep(min(0.5, max(0.0, start + seconds - time.monotonic())))
            _check(watchers)
        finally:
            _stop_all(watchers)
        elapsed = time.monotonic() - start
    mb, secrets, events = (counters[k] for k in ("messagebrokers", "secrets", "events"))
    return {
        "seconds": round(elapsed, 3),
        "messagebroker_writes": dict(mb.by_type),
        "secret_writes": dict(secrets.by_type),
        "writes_per_minute": round((mb.writes + secrets.writes) * 60 / elapsed, 2),
        "events": events.writes,
        "event_reasons": dict(events.reasons.most_common(10)),
        "ready_at_start": len(ready_at_start),
        "not_ready_at_start": len(mb_items) - len(ready_at_start),
        "false_outages": len(mb.outages),
        "false_outage_reasons": dict(mb.outage_reasons),
        "watch_restarts": sum(w.restarts for w in watchers),
    }


def _warm_up(namespace: str, body: Obj, timeout: float) -> float:
    """One resource to Ready and deleted again, before anything is timed.

    It proves that the operator reconciles this namespace, and keeps its start
    (kopf's first lists and indices, the first broker connection) out of the
    figures. Returns the seconds from its create to Ready.
    """
    name = _name(body)
    with _api_client() as api_client:
        api = kubernetes.client.CustomObjectsApi(api_client)

        def get() -> Obj:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            assert isinstance(obj, dict)
            return obj

        start = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        while not _is_ready(get()):
            if time.monotonic() - start > timeout:
                raise RuntimeError(
                    f"warm-up resource {namespace}/{name} not Ready within {timeout:.0f} s:"
                    " is an operator reconciling this namespace?"
                )
            time.sleep(0.1)  # poll
        ready = time.monotonic() - start
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        while True:
            try:
                get()
            except ApiException as exc:
                if exc.status == 404:
                    return ready
                raise
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"warm-up resource {namespace}/{name} not deleted")
            time.sleep(0.1)  # poll


def _namespace_gone(core: Any, namespace: str) -> bool:
    try:
        core.read_namespace(namespace, _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _delete_namespace(namespace: str, timeout: float) -> float | None:
    """Delete the namespace; seconds until it is gone, None when `timeout` passed first."""
    with _api_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        start = time.monotonic()
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace, _request_timeout=60)
        while time.monotonic() - start < timeout:
            if _namespace_gone(core, namespace):
                return time.monotonic() - start
            time.sleep(0.2)  # poll
    return None


def _drop_finalizers(namespace: str) -> int:
    """Let go of what a stopped operator left behind, so the namespace can go."""
    with _api_client() as api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        try:
            items, _ = _list(
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
                    _name(obj),
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json",
                )
    return len(held)


def _api_floor(bodies: list[Obj], clients: int) -> dict[str, Any]:
    """The Kubernetes floor: the writes one Ready resource needs (create it, patch its
    status, create its Secret), done directly by `clients` threads for every resource,
    in a namespace no operator watches. What the operator adds is the rest."""
    namespace = f"bench-floor-{uuid.uuid4().hex[:6]}"
    _kubectl("create", "namespace", namespace)
    local = threading.local()

    def one(body: Obj) -> tuple[float, float]:
        if not hasattr(local, "api"):
            local.api = _api_client()
        custom = kubernetes.client.CustomObjectsApi(local.api)
        core = kubernetes.client.CoreV1Api(local.api)
        name = body["metadata"]["name"]
        started = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        status = {"status": {"observedGeneration": 1, "summary": "dev:floor"}}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, status
        )
        secret: Any = {"metadata": {"name": f"{name}-dev"}, "stringData": {"uri": "x"}}
        core.create_namespaced_secret(namespace, secret)
        return started, time.monotonic()

    try:
        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            spans = list(pool.map(one, bodies))
        total = time.monotonic() - began
    finally:
        with contextlib.suppress(Exception):
            _kubectl("delete", "namespace", namespace, "--wait=false")
    latencies = [end - start for start, end in spans]
    return {
        "writes": 3 * len(bodies),
        "all_s": _round(total),
        "writes_per_s": _round(3 * len(bodies) / total, 1),
        "p50_s": _round(_percentile(latencies, 0.50)),
        "p99_s": _round(_percentile(latencies, 0.99)),
    }


def _machine() -> dict[str, Any]:
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


# --- the run ----------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--count", type=int, default=1000, help="resources (%(default)s)")
    parser.add_argument(
        "--provider", choices=PROVIDERS, default="REDIS", help="broker type (%(default)s)"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent creating clients (%(default)s)"
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=10.0,
        help="the operator's --health-interval, seconds (%(default)s)",
    )
    parser.add_argument(
        "--steady-seconds", type=float, default=60.0, help="steady window (%(default)s)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds from the first create until giving up on Ready (%(default)s)",
    )
    parser.add_argument(
        "--teardown-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the namespace to be gone (%(default)s)",
    )
    parser.add_argument(
        "--deletion-policy",
        choices=("Retain", "Delete"),
        default="Retain",
        help="spec.deletionPolicy of the resources; Delete makes the teardown remove the"
        " topics from the broker too (%(default)s)",
    )
    parser.add_argument(
        "--operator-log",
        type=pathlib.Path,
        default=None,
        help="the operator's log (default .bench/scale-<provider>-<N>-operator.log)",
    )
    parser.add_argument(
        "--no-operator",
        action="store_true",
        help="do not start the operator: measure one already running (no RSS figures)",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.clients < 1:
        parser.error("--count and --clients must be at least 1")
    if args.operator_log is None and not args.no_operator:
        args.operator_log = BENCH_DIR / f"scale-{args.provider.lower()}-{args.count}-operator.log"
    return args


def _delta(marks: dict[str, float | None], start: str, end: str) -> float | None:
    """`marks[end] - marks[start]`, None when either is missing."""
    a, b = marks.get(start), marks.get(end)
    return None if a is None or b is None else b - a


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _print_table(result: dict[str, Any]) -> None:
    ready, steady, rss = result["ready"], result["steady"], result["operator"]
    machine = result["machine"]
    teardown = result["teardown_s"]
    rows = [
        ("provider", result["provider"]),
        ("resources (N)", result["count"]),
        ("created", f"{ready['created']} of {result['count']}"),
        ("ready", f"{ready['ready']} of {result['count']}"),
        ("warm-up resource to Ready", _fmt(result.get("warm_up_s"), " s") + " (not counted)"),
        (
            "time to all Ready",
            _fmt(ready["time_to_all_ready_s"], " s")
            + ("" if ready["all_ready"] or not ready["ready"] else f" ({ready['ready']} only)"),
        ),
        ("create -> Ready p50", _fmt(ready["p50_s"], " s", 3)),
        ("create -> Ready p95", _fmt(ready["p95_s"], " s", 3)),
        ("create -> Ready p99", _fmt(ready["p99_s"], " s", 3)),
        ("peak RSS (0.5 s samples)", _fmt(rss["peak_rss_mb"], " MB", 1)),
        ("VmHWM", _fmt(rss["hwm_mb"], " MB", 1)),
        ("steady writes/min (MB+Secrets)", _fmt(steady.get("writes_per_minute"))),
        ("events in steady window", _fmt(steady.get("events"))),
        ("false outages", _fmt(steady.get("false_outages"))),
        ("operator CPU, steady window", _fmt(rss["steady_cpu_percent"], " %", 1)),
        ("teardown", "timeout" if teardown is None else _fmt(teardown, " s")),
        ("tracebacks in the log", _fmt(result["tracebacks"])),
    ]
    floor = result.get("api_floor")
    if floor:
        rows.append(
            (
                "API floor (same N, no operator)",
                f"all in {_fmt(floor['all_s'], ' s')}, {_fmt(floor['writes_per_s'])} writes/s,"
                f" per resource p50 {_fmt(floor['p50_s'], ' s', 3)}"
                f" p99 {_fmt(floor['p99_s'], ' s', 3)}",
            )
        )
    print(
        f"\nScale: {result['count']} x {result['provider']} from {result['clients']} clients;"
        f" 1 env, {len(TOPICS)} topics x 1 subscription; health interval"
        f" {result['health_interval_s']:g} s, steady window {steady.get('seconds', 0):g} s"
    )
    print(
        f"machine: {machine['nproc']} CPUs, {machine['memory_gb']} GB, {machine['platform']},"
        f" Python {machine['python']}"
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    mb_writes, secret_writes = steady.get("messagebroker_writes"), steady.get("secret_writes")
    print(f"  (steady writes: MessageBrokers {mb_writes}, Secrets {secret_writes})")
    if steady.get("false_outage_reasons"):
        print(f"  (false outages by Ready status/reason: {steady['false_outage_reasons']})")
    if result["other_operators"]:
        print(
            "  WARNING: other operator processes ran during the benchmark; they may have"
            f" reconciled these resources too: {result['other_operators']}"
        )
    if ready["failed"]:
        print(f"  (create errors, first: {next(iter(ready['failed'].values()))})")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if "KUBECONFIG" not in os.environ:
        raise SystemExit("KUBECONFIG is not set: source .testenv/env (make testenv-up) first")
    BENCH_DIR.mkdir(exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    namespace = f"bench-scale-{run_id}"
    _kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    _kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    _kubectl("create", "namespace", namespace)
    if args.provider == "RABBITMQ":
        password = urllib.parse.urlparse(os.environ["AMQP_URL"]).password or ""
        _kubectl(
            "create", "secret", "generic", RABBIT_SECRET, "-n", namespace,
            f"--from-literal=password={password}",
        )  # fmt: skip
    config = _config(args.provider)
    bodies = [
        _manifest(f"scale-{i}", f"scale-{run_id}-{i}", args.provider, config, args.deletion_policy)
        for i in range(args.count)
    ]

    # The floor first, while no operator runs: the same N, the same number of clients.
    result_floor = _api_floor(
        [_manifest(f"floor-{i}", f"floor-{run_id}-{i}", args.provider, _config(args.provider),
                   args.deletion_policy) for i in range(args.count)],
        args.clients,
    )  # fmt: skip
    operator = None if args.no_operator else Operator(
        namespace, args.health_interval, args.operator_log
    )  # fmt: skip
    sampler: Sampler | None = None
    ready_watcher: Watcher | None = None
    torn_down = False
    result: dict[str, Any] = {
        "provider": args.provider,
        "count": args.count,
        "clients": args.clients,
        "health_interval_s": args.health_interval,
        "deletion_policy": args.deletion_policy,
        "namespace": namespace,
        "machine": _machine(),
        "operator_log": str(args.operator_log) if args.operator_log else None,
        "api_floor": result_floor,
    }
    cpu: dict[str, float | None] = {}
    watch_client = _api_client()
    try:
        if operator is not None:
            operator.start()
            sampler = Sampler(operator.pid)
            sampler.start()
        warm_up = _manifest(
            "scale-warm-up", f"scale-{run_id}-warm-up", args.provider, config, "Retain"
        )
        result["warm_up_s"] = _round(_warm_up(namespace, warm_up, 120))
        print(f"namespace {namespace}: creating {args.count} {args.provider} resources", flush=True)

        # Ready: a watch from before the first create, then the creates.
        tracker = ReadyTracker()
        ready_watcher = Watcher(
            "messagebrokers",
            kubernetes.client.CustomObjectsApi(watch_client).list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            tracker.on_event,
            tracker.on_list,
        )
        ready_watcher.list_now()
        ready_watcher.start()
        cpu["start"] = _cpu_seconds(operator.pid) if operator else None
        created, failed = _create_all(namespace, bodies, args.clients)
        first_create = min(created.values(), default=time.monotonic())
        print(
            f"created {len(created)} in {time.monotonic() - first_create:.1f} s; waiting for Ready",
            flush=True,
        )
        tracker.wait_all(set(created), first_create + args.ready_timeout, ready_watcher)
        _stop_all([ready_watcher])
        _check([ready_watcher])
        cpu["ready"] = _cpu_seconds(operator.pid) if operator else None
        ready_times = {n: t for n, t in tracker.first_ready.items() if n in created}
        latencies = [ready_times[n] - created[n] for n in ready_times]
        result["ready"] = {
            "created": len(created),
            "failed": failed,
            "ready": len(ready_times),
            "time_to_all_ready_s": (
                round(max(ready_times.values()) - first_create, 3) if ready_times else None
            ),
            "all_ready": len(ready_times) == args.count,
            "p50_s": _round(_percentile(latencies, 0.50)),
            "p95_s": _round(_percentile(latencies, 0.95)),
            "p99_s": _round(_percentile(latencies, 0.99)),
            "max_s": _round(max(latencies, default=None)),
            "seen_ready_on_relist": tracker.seen_on_relist,
            "watch_restarts": ready_watcher.restarts,
        }
        print(f"{len(ready_times)} of {args.count} Ready", flush=True)

        # Steady: one more health interval, then count writes over the window.
        time.sleep(args.health_interval)  # let the first health round after Ready pass
        print(f"steady window: {args.steady_seconds:g} s", flush=True)
        cpu["steady_start"] = _cpu_seconds(operator.pid) if operator else None
        result["steady"] = _steady_window(namespace, args.steady_seconds)
        cpu["steady_end"] = _cpu_seconds(operator.pid) if operator else None

        # Teardown, with the operator still running: it removes the finalizers.
        rss_before_teardown = sampler.last_kb if sampler else None
        print("deleting the namespace", flush=True)
        result["teardown_s"] = _round(_delete_namespace(namespace, args.teardown_timeout))
        torn_down = result["teardown_s"] is not None
        hwm = _proc_status(operator.pid).get("VmHWM") if operator else None
        steady_cpu = _delta(cpu, "steady_start", "steady_end")
        result["operator"] = {
            "pid": operator.pid if operator else None,
            "peak_rss_mb": round(sampler.peak_kb / 1024, 1) if sampler else None,
            "rss_before_teardown_mb": (
                round(rss_before_teardown / 1024, 1) if rss_before_teardown else None
            ),
            "hwm_mb": round(hwm / 1024, 1) if hwm else None,
            "rss_samples": sampler.samples if sampler else 0,
            "cpu_s_to_ready": _round(_delta(cpu, "start", "ready"), 2),
            "steady_cpu_percent": _round(
                None if steady_cpu is None else 100 * steady_cpu / result["steady"]["seconds"], 1
            ),
            "alive_at_end": operator.alive() if operator else None,
        }
    finally:
        if ready_watcher is not None:
            _stop_all([ready_watcher])
        if not torn_down:
            # A run cut short: start the deletion while the operator can still finalize.
            with contextlib.suppress(Exception):
                _delete_namespace(namespace, 60)
        if sampler is not None:
            sampler.stop()
        exit_status = operator.stop() if operator else None
        if not torn_down and not args.no_operator:
            with contextlib.suppress(Exception):
                if _drop_finalizers(namespace):
                    print(f"note: removed finalizers left in {namespace}", file=sys.stderr)
        watch_client.close()  # type: ignore[no-untyped-call]

    result["operator"]["exit_status"] = exit_status
    result["tracebacks"] = _tracebacks(args.operator_log) if args.operator_log else None
    # With --no-operator, another operator is the point: nothing to compare with.
    result["other_operators"] = (
        {str(pid): cmd for pid, cmd in sampler.others.items()} if sampler else None
    )
    out = BENCH_DIR / f"scale-{args.provider.lower()}-{args.count}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    print(f"(JSON: {out.relative_to(ROOT)}; operator log: {args.operator_log})")
    return result


def main() -> int:
    # A SIGTERM (a CI timeout, say) unwinds like Ctrl-C: the namespace and the operator go.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted; the namespace and the operator were cleaned up", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
