"""Kubernetes API calls per event: what one create, one spec change, one delete and a
steady health round cost the API server, counted by the API server itself.

`python -m benchmarks.api_calls [--count N]` runs an operator for a namespace of its
own, drives N Redis resources through their life, and reads the API server's
`apiserver_request_total` before and after each phase. The benchmark's own calls
(the creates, patches and deletes it sends, its LIST polls) and the garbage
collector's (each owned Secret read and deleted) are left out; what is left per
resource is the operator's. The operator starts only once the controller manager
watches MessageBrokers: until its garbage collector has picked up a new CRD, it reads
the owner of every new Secret, several times each (6 reads per resource measured on a
fresh stack), and those reads would count as the operator's. Watches are not counted
(one per kind, not per event). Figures only: it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from benchmarks import kit

GROUP, VERSION, PLURAL = "ductape.app", "v1alpha1", "messagebrokers"
#: Objects the operator reads and writes per resource.
RESOURCES = ("messagebrokers", "secrets", "events", "namespaces")
#: Verbs that are one call each (LIST and WATCH are per kind, and the benchmark lists).
VERBS = ("GET", "POST", "PUT", "PATCH", "APPLY", "DELETE")
HEALTH_INTERVAL = 3.0

Counts = collections.Counter[tuple[str, str]]


def _samples(api: kubernetes.client.ApiClient, family_name: str) -> Iterator[Sample]:
    """The samples of one metric family of the API server's `/metrics`."""
    # Any: the generated client leaves the response's `read` untyped.
    response: Any = api.call_api(
        "GET", api.configuration.host + "/metrics", header_params={"Accept": "text/plain"}
    )
    for family in text_string_to_metric_families(response.read().decode()):
        if family.name == family_name:
            yield from family.samples


def api_calls(api: kubernetes.client.ApiClient) -> Counts:
    """apiserver_request_total by (verb, resource[/subresource]) for our resources."""
    counts: Counts = collections.Counter()
    for sample in _samples(api, "apiserver_request"):
        labels = sample.labels
        if not sample.name.endswith("_total") or labels.get("resource") not in RESOURCES:
            continue
        if labels.get("verb") not in VERBS:
            continue
        resource = labels["resource"]
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels["verb"], resource)] += int(sample.value)
    return counts


def controller_manager_watches(api: kubernetes.client.ApiClient) -> bool:
    """Whether something watches MessageBrokers cluster-wide before the operator runs: the
    controller manager's garbage collector, once it has picked up the CRD."""
    return any(
        sample.labels.get("resource") == "messagebrokers"
        and sample.labels.get("verb") == "WATCH"
        and sample.labels.get("scope") == "cluster"
        and sample.value > 0
        for sample in _samples(api, "apiserver_longrunning_requests")
    )


def settled(api: kubernetes.client.ApiClient, quiet: float = 2.0, timeout: float = 60) -> Counts:
    """The counts once they stop moving for `quiet` seconds: the operator posts Events in
    the background, after the Ready status, and they belong to the phase that caused them."""
    deadline = time.monotonic() + timeout
    last = api_calls(api)
    while time.monotonic() < deadline:
        time.sleep(quiet)  # the quiet period is the measurement
        now = api_calls(api)
        if now == last:
            break
        last = now
    return last


def per_resource(before: Counts, after: Counts, ours: Counts, count: int) -> dict[str, float]:
    diff = after.copy()
    diff.subtract(before)
    diff.subtract(ours)
    return {f"{verb} {res}": n / count for (verb, res), n in sorted(diff.items()) if n > 0}


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MessageBroker",
        "metadata": {"name": name},
        "spec": {
            "name": name,
            "tag": name,
            "description": "api calls benchmark",
            "envs": [{"slug": "dev", "type": "REDIS", "config": kit.stack_config("REDIS", "")}],
            "topics": [{"tag": "t0", "name": f"{name}.t0", "subscriptions": ["s0"]}],
        },
    }


def wait_for(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)  # poll interval
    raise TimeoutError(f"timed out waiting for {what}")


def terminating(core: Any) -> list[str]:
    return [
        ns.metadata.name for ns in core.list_namespace().items if ns.status.phase == "Terminating"
    ]


def run(count: int = 20) -> dict[str, dict[str, float]]:
    api = kit.new_api_client()
    # Any, as in benchmarks/latency.py: the benchmark writes and reads plain manifests,
    # which the generated client accepts and returns but does not type.
    core: Any = kubernetes.client.CoreV1Api(api)
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    namespace = f"bench-api-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    log_path = pathlib.Path(".bench") / "api-calls-operator.log"
    operator = kit.Operator(namespace, HEALTH_INTERVAL, log_path)
    names = [f"calls-{i}" for i in range(count)]

    def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL
        )["items"]
        return items

    def all_ready(generation: int) -> bool:
        items = listed()
        return len(items) == count and all(
            kit.is_ready(obj)
            and (kit.ready_condition(obj) or {}).get("observedGeneration") == generation
            for obj in items
        )

    phases: dict[str, dict[str, float]] = {}
    # Namespaces still being deleted (by an earlier test run) would add the namespace
    # controller's calls to the figures: let them finish first, for a while.
    try:
        wait_for(lambda: not terminating(core), "earlier namespaces to finish deleting", 30)
    except TimeoutError:
        print("note: namespaces still terminating; their deletes may show in the figures")
    if not controller_manager_watches(api):
        # About 30 s after the CRD is first installed on a stack (measured), at times more.
        print("waiting for the controller manager to watch MessageBrokers (see the docstring)")
        wait_for(lambda: controller_manager_watches(api), "the controller manager", 600)
    operator.start()
    try:
        before = api_calls(api)
        for name in names:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest(name)
            )
        wait_for(lambda: all_ready(1), f"{count} resources Ready")
        after = settled(api)
        ours = collections.Counter({("POST", "messagebrokers"): count})
        phases["create"] = per_resource(before, after, ours, count)

        before = after
        time.sleep(3 * HEALTH_INTERVAL)  # the steady window is the measurement itself
        after = api_calls(api)
        phases["steady (3 health rounds)"] = per_resource(
            before, after, collections.Counter(), count
        )

        before = after
        for name in names:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"spec": {"description": "changed"}}
            )
        wait_for(lambda: all_ready(2), f"{count} resources Ready at generation 2")
        after = settled(api)
        ours = collections.Counter({("PATCH", "messagebrokers"): count})
        phases["spec change"] = per_resource(before, after, ours, count)

        before = after
        for name in names:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        wait_for(lambda: not listed(), f"{count} resources deleted")
        after = settled(api)
        # The garbage collector reads and deletes each owned Secret: its calls, not ours.
        ours = collections.Counter(
            {
                ("DELETE", "messagebrokers"): count,
                ("GET", "secrets"): count,
                ("DELETE", "secrets"): count,
            }
        )
        phases["delete"] = per_resource(before, after, ours, count)
    finally:
        operator.stop()
        kit.delete_namespace(namespace, timeout=120)

    print(f"Kubernetes API calls per resource, {count} Redis resources (the operator's only)")
    for phase, calls in phases.items():
        total = sum(calls.values())
        detail = ", ".join(f"{k} {v:g}" for k, v in calls.items()) or "none"
        print(f"  {phase:<26} {total:5.2f}  ({detail})")
    out = pathlib.Path(".bench") / "api-calls.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"count": count, "phases": phases}, indent=2) + "\n")
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    run(parser.parse_args().count)


if __name__ == "__main__":
    main()
