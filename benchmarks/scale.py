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
- how many tracebacks, and how many WARNING or ERROR lines, the operator logged.

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
import os
import pathlib
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from benchmarks import kit
from benchmarks.kit import BENCH_DIR, CRD_FILE, GROUP, PLURAL, ROOT, VERSION, Obj

PROVIDERS = ("REDIS", "RABBITMQ", "KAFKA")
RABBIT_SECRET = "bench-scale-rabbit"
#: Topic tags of every resource, each with one subscription.
TOPICS, SUBSCRIPTION = ("a", "b"), "s"
#: Status codes worth retrying a create on (the API server is busy, not refusing).
RETRY_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
CREATE_ATTEMPTS = 5
#: What the watch shows of a resource on its way to Ready, in the order it usually comes:
#: the operator's finalizer, the tag label, a first status, Ready=True. See `StageTracker`.
STAGES = ("seen", "finalizer", "label", "status", "ready")
FINALIZER = "ductape.app/finalizer"
TAG_LABEL = "ductape.app/tag"


# --- the resources ----------------------------------------------------------


def _config(provider: str) -> Obj:
    return kit.stack_config(provider, RABBIT_SECRET)


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
        with kit.new_api_client() as api_client:
            api = kubernetes.client.CustomObjectsApi(api_client)
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.popleft()
                name = kit.name_of(body)
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


class StageTracker:
    """When each resource first showed each of `STAGES` on the watch, and its events.

    Where a resource's time goes between its create call and Ready: waiting for
    the operator to pick up its ADDED event (the finalizer), the handler's own
    writes (label, status).
    """

    def __init__(self) -> None:
        self.first: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.events: collections.Counter[str] = collections.Counter()

    def on_event(self, type_: str, obj: Obj, now: float) -> None:
        if type_ == "DELETED":
            return
        name = kit.name_of(obj)
        self.events[name] += 1
        meta = obj.get("metadata") or {}
        reached = {
            "seen": True,
            "finalizer": FINALIZER in (meta.get("finalizers") or []),
            "label": TAG_LABEL in (meta.get("labels") or {}),
            "status": bool(obj.get("status")),
            "ready": kit.is_ready(obj),
        }
        stages = self.first[name]
        for stage, yes in reached.items():
            if yes and stage not in stages:
                stages[stage] = now

    def summary(self, created: dict[str, float]) -> dict[str, Any]:
        """Per stage, p50/p99 of the seconds from the create call, and of the step
        from the stage before it; the watch events per resource."""
        out: dict[str, Any] = {}
        previous: str | None = None
        for stage in STAGES:
            since_create = [
                t[stage] - created[n] for n, t in self.first.items() if stage in t and n in created
            ]
            step = [
                t[stage] - t[previous]
                for t in self.first.values()
                if previous is not None and stage in t and previous in t
            ]
            out[stage] = {
                "p50_s": kit.rounded(kit.percentile(since_create, 0.50)),
                "p99_s": kit.rounded(kit.percentile(since_create, 0.99)),
                "step_p50_s": kit.rounded(kit.percentile(step, 0.50)),
                "step_p99_s": kit.rounded(kit.percentile(step, 0.99)),
            }
            previous = stage
        counts = [self.events[n] for n in created]
        out["events_per_resource"] = kit.rounded(sum(counts) / len(counts), 2) if counts else None
        return out

    def on_list(self, items: list[Obj], now: float) -> None:
        for obj in items:
            self.on_event("MODIFIED", obj, now)


def _api_requests() -> collections.Counter[str]:
    """The API server's own request counters (`apiserver_request_total`), summed by
    verb, resource and subresource, e.g. `PATCH messagebrokers/status`."""
    counts: collections.Counter[str] = collections.Counter()
    for line in kit.kubectl("get", "--raw", "/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
        if labels.get("verb") == "WATCH" or not labels.get("resource"):
            continue
        key = f"{labels['verb']} {labels['resource']}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        counts[key] += int(float(value))
    return counts


class Fanout:
    """Hands each watch event and list to several trackers."""

    def __init__(self, *trackers: Any) -> None:
        self.trackers = trackers

    def on_event(self, type_: str, obj: Obj, now: float) -> None:
        for tracker in self.trackers:
            tracker.on_event(type_, obj, now)

    def on_list(self, items: list[Obj], now: float) -> None:
        for tracker in self.trackers:
            tracker.on_list(items, now)


# --- the phases -------------------------------------------------------------


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
        name = kit.name_of(obj)
        assert self.ready_at_start is not None
        if name in self.ready_at_start and not kit.is_ready(obj):
            cond = kit.ready_condition(obj) or {}
            if name not in self.outages:
                self.outage_reasons[f"{cond.get('status', '-')}/{cond.get('reason', '-')}"] += 1
            self.outages.add(name)

    @property
    def writes(self) -> int:
        return sum(self.by_type.values())


def _steady_window(namespace: str, seconds: float) -> dict[str, Any]:
    """Watch MessageBrokers, Secrets and Events for `seconds`; count their changes."""
    with kit.new_api_client() as api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        core = kubernetes.client.CoreV1Api(api_client)
        mb_source = (custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL))
        mb_items, _ = kit.list_raw(*mb_source)
        ready_at_start = {kit.name_of(obj) for obj in mb_items if kit.is_ready(obj)}
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
            watcher = kit.Watcher(key, func, args, counter.on_event, counter.on_list)
            watcher.list_now()  # every watch starts from a list taken now
            watchers.append(watcher)
        start = time.monotonic()
        for watcher in watchers:
            watcher.until = start + seconds
            watcher.start()
        try:
            while time.monotonic() < start + seconds:
                kit.check(watchers)
                time.sleep(min(0.5, max(0.0, start + seconds - time.monotonic())))
            kit.check(watchers)
        finally:
            kit.stop_all(watchers)
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
    name = kit.name_of(body)
    with kit.new_api_client() as api_client:
        api = kubernetes.client.CustomObjectsApi(api_client)

        def get() -> Obj:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            assert isinstance(obj, dict)
            return obj

        start = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        while not kit.is_ready(get()):
            if time.monotonic() - start > timeout:
                raise RuntimeError(
                    f"warm-up resource {namespace}/{name} not Ready within {timeout:.0f} s:"
                    " is an operator reconciling this namespace?"
                )
            time.sleep(0.1)  # poll
        ready = time.monotonic() - start
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        core = kubernetes.client.CoreV1Api(api_client)
        # Its Secret too: the garbage collector deletes it when it gets to it, and in a
        # burst that can be the steady window, where it would count as a write.
        reads: list[Callable[[], Any]] = [
            get,
            lambda: core.read_namespaced_secret(f"{name}-dev", namespace),
        ]
        for read in reads:
            while True:
                try:
                    read()
                except ApiException as exc:
                    if exc.status == 404:
                        break
                    raise
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"warm-up resource {namespace}/{name} not deleted")
                time.sleep(0.1)  # poll
        return ready


def _api_floor(bodies: list[Obj], clients: int) -> dict[str, Any]:
    """The Kubernetes floor: the writes one Ready resource needs (create it, patch its
    status, create its Secret), done directly by `clients` threads for every resource,
    in a namespace no operator watches. What the operator adds is the rest."""
    namespace = f"bench-floor-{uuid.uuid4().hex[:6]}"
    kit.kubectl("create", "namespace", namespace)
    local = threading.local()

    def one(body: Obj) -> tuple[float, float]:
        if not hasattr(local, "api"):
            local.api = kit.new_api_client()
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
            kit.kubectl("delete", "namespace", namespace, "--wait=false")
    latencies = [end - start for start, end in spans]
    return {
        "writes": 3 * len(bodies),
        "all_s": kit.rounded(total),
        "writes_per_s": kit.rounded(3 * len(bodies) / total, 1),
        "p50_s": kit.rounded(kit.percentile(latencies, 0.50)),
        "p99_s": kit.rounded(kit.percentile(latencies, 0.99)),
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
        ("WARNING/ERROR lines in the log", _fmt(result["warnings"])),
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
    stages = ready.get("stages") or {}
    for stage in STAGES:
        if stage in stages:
            figures = stages[stage]
            rows.append(
                (
                    f"  stage {stage}",
                    f"after create p50 {_fmt(figures['p50_s'], ' s', 3)}"
                    f" p99 {_fmt(figures['p99_s'], ' s', 3)}; step p50"
                    f" {_fmt(figures['step_p50_s'], ' s', 3)} p99"
                    f" {_fmt(figures['step_p99_s'], ' s', 3)}",
                )
            )
    requests = result.get("api_requests_to_ready") or {}
    if requests:
        per = ", ".join(f"{k} {v / result['count']:.2f}" for k, v in requests.items())
        rows.append(("API requests per resource to Ready", per))
    if stages.get("events_per_resource") is not None:
        rows.append(("  watch events per resource", _fmt(stages["events_per_resource"])))
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
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kit.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    kit.kubectl("create", "namespace", namespace)
    if args.provider == "RABBITMQ":
        password = urllib.parse.urlparse(os.environ["AMQP_URL"]).password or ""
        kit.kubectl(
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
    operator = None if args.no_operator else kit.Operator(
        namespace, args.health_interval, args.operator_log
    )  # fmt: skip
    sampler: kit.Sampler | None = None
    ready_watcher: kit.Watcher | None = None
    torn_down = False
    result: dict[str, Any] = {
        "provider": args.provider,
        "count": args.count,
        "clients": args.clients,
        "health_interval_s": args.health_interval,
        "deletion_policy": args.deletion_policy,
        "namespace": namespace,
        "machine": kit.machine(),
        "operator_log": str(args.operator_log) if args.operator_log else None,
        "api_floor": result_floor,
    }
    cpu: dict[str, float | None] = {}
    watch_client = kit.new_api_client()
    try:
        if operator is not None:
            operator.start()
            sampler = kit.Sampler(operator.pid)
            sampler.start()
        warm_up = _manifest(
            "scale-warm-up", f"scale-{run_id}-warm-up", args.provider, config, "Retain"
        )
        result["warm_up_s"] = kit.rounded(_warm_up(namespace, warm_up, 120))
        print(f"namespace {namespace}: creating {args.count} {args.provider} resources", flush=True)

        # Ready: a watch from before the first create, then the creates.
        tracker = kit.ReadyTracker()
        stages = StageTracker()
        both = Fanout(tracker, stages)
        ready_watcher = kit.Watcher(
            "messagebrokers",
            kubernetes.client.CustomObjectsApi(watch_client).list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            both.on_event,
            both.on_list,
        )
        ready_watcher.list_now()
        ready_watcher.start()
        cpu["start"] = kit.cpu_seconds(operator.pid) if operator else None
        requests_before = _api_requests()
        created, failed = _create_all(namespace, bodies, args.clients)
        first_create = min(created.values(), default=time.monotonic())
        print(
            f"created {len(created)} in {time.monotonic() - first_create:.1f} s; waiting for Ready",
            flush=True,
        )
        tracker.wait_all(set(created), first_create + args.ready_timeout, ready_watcher)
        kit.stop_all([ready_watcher])
        kit.check([ready_watcher])
        cpu["ready"] = kit.cpu_seconds(operator.pid) if operator else None
        # Every request up to here, the creates and the benchmark's own lists included.
        requests = _api_requests()
        requests.subtract(requests_before)
        result["api_requests_to_ready"] = {k: v for k, v in requests.most_common() if v > 0}
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
            "p50_s": kit.rounded(kit.percentile(latencies, 0.50)),
            "p95_s": kit.rounded(kit.percentile(latencies, 0.95)),
            "p99_s": kit.rounded(kit.percentile(latencies, 0.99)),
            "max_s": kit.rounded(max(latencies, default=None)),
            "seen_ready_on_relist": tracker.seen_on_relist,
            "stages": stages.summary(created),
            "watch_restarts": ready_watcher.restarts,
        }
        print(f"{len(ready_times)} of {args.count} Ready", flush=True)

        # Steady: one more health interval, then count writes over the window.
        time.sleep(args.health_interval)  # let the first health round after Ready pass
        print(f"steady window: {args.steady_seconds:g} s", flush=True)
        cpu["steady_start"] = kit.cpu_seconds(operator.pid) if operator else None
        result["steady"] = _steady_window(namespace, args.steady_seconds)
        cpu["steady_end"] = kit.cpu_seconds(operator.pid) if operator else None

        # Teardown, with the operator still running: it removes the finalizers.
        rss_before_teardown = sampler.last_kb if sampler else None
        print("deleting the namespace", flush=True)
        result["teardown_s"] = kit.rounded(kit.delete_namespace(namespace, args.teardown_timeout))
        torn_down = result["teardown_s"] is not None
        hwm = kit.proc_status(operator.pid).get("VmHWM") if operator else None
        steady_cpu = _delta(cpu, "steady_start", "steady_end")
        result["operator"] = {
            "pid": operator.pid if operator else None,
            "peak_rss_mb": round(sampler.peak_kb / 1024, 1) if sampler else None,
            "rss_before_teardown_mb": (
                round(rss_before_teardown / 1024, 1) if rss_before_teardown else None
            ),
            "hwm_mb": round(hwm / 1024, 1) if hwm else None,
            "rss_samples": sampler.samples if sampler else 0,
            "cpu_s_to_ready": kit.rounded(_delta(cpu, "start", "ready"), 2),
            "steady_cpu_percent": kit.rounded(
                None if steady_cpu is None else 100 * steady_cpu / result["steady"]["seconds"], 1
            ),
            "alive_at_end": operator.alive() if operator else None,
        }
    finally:
        if ready_watcher is not None:
            kit.stop_all([ready_watcher])
        if not torn_down:
            # A run cut short: start the deletion while the operator can still finalize.
            with contextlib.suppress(Exception):
                kit.delete_namespace(namespace, 60)
        if sampler is not None:
            sampler.stop()
        exit_status = operator.stop() if operator else None
        if not torn_down and not args.no_operator:
            with contextlib.suppress(Exception):
                if kit.drop_finalizers(namespace):
                    print(f"note: removed finalizers left in {namespace}", file=sys.stderr)
        watch_client.close()  # type: ignore[no-untyped-call]

    result["operator"]["exit_status"] = exit_status
    result["tracebacks"] = kit.tracebacks(args.operator_log) if args.operator_log else None
    result["warnings"] = kit.warning_lines(args.operator_log) if args.operator_log else None
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
