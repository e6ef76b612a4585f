"""Many resources on one broker endpoint: probed once per round, quiet when healthy,
drift repaired from one inventory, an outage reported for all and recovered by all.

Each test owns its Redis (`private_redis`), so the server's own command counts
(`INFO commandstats`) say how often the operator probed it, and stopping it is an
outage nobody else sees. Rounds are counted in the operator's log ("health round
for ns/name", one DEBUG line per resource per round), so the tests wait on
rounds, not on wall-clock time.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.e2e import kit
from tests.e2e.conftest import HEALTH_INTERVAL, OperatorProcess


def create_many(kube: kit.Kube, ns: str, manifests: list[dict[str, Any]]) -> None:
    def create(body: dict[str, Any]) -> None:
        kube.custom.create_namespaced_custom_object(kit.GROUP, kit.VERSION, ns, kit.PLURAL, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, manifests))


def ready_counts(kube: kit.Kube, ns: str) -> dict[str, int]:
    """Resources by their Ready condition: "True", or the reason it is not."""
    listed = kube.custom.list_namespaced_custom_object(kit.GROUP, kit.VERSION, ns, kit.PLURAL)
    counts: dict[str, int] = {}
    for obj in listed["items"]:
        ready = kit.condition_of(obj)
        key = (
            "missing"
            if ready is None
            else ("True" if ready["status"] == "True" else ready["reason"])
        )
        counts[key] = counts.get(key, 0) + 1
    return counts


def wait_all(kube: kit.Kube, ns: str, count: int, state: str, *, timeout: float) -> None:
    kit.wait_until(
        lambda: ready_counts(kube, ns).get(state) == count,
        timeout=timeout,
        what=f"all {count} resources in {ns} at Ready {state} (seen: {ready_counts(kube, ns)})",
    )


def rounds_of(operator: OperatorProcess, ns: str, name: str) -> int:
    return operator.log().count(f"health round for {ns}/{name}\n")


def wait_rounds(operator: OperatorProcess, ns: str, name: str, more: int) -> None:
    start = rounds_of(operator, ns, name)
    kit.wait_until(
        lambda: rounds_of(operator, ns, name) >= start + more,
        timeout=HEALTH_INTERVAL * more * 3 + 60,
        what=f"{more} more health rounds of {ns}/{name}",
    )


def manifests(private_redis: kit.PrivateRedis, prefix: str, count: int) -> list[dict[str, Any]]:
    return [private_redis.manifest(f"{prefix}-{i:03d}") for i in range(count)]


class ReadyWatch:
    """Records every Ready condition a watch delivers, with the time it arrived."""

    def __init__(self, kube: kit.Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.seen: list[tuple[float, str, str, str]] = []  # (time, name, status, reason)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        def record(_: str, obj: Any) -> None:
            ready = kit.condition_of(obj)
            if ready is not None:
                seen = (time.monotonic(), obj["metadata"]["name"], ready["status"], ready["reason"])
                self.seen.append(seen)

        list_fn = functools.partial(
            self.kube.custom.list_namespaced_custom_object,
            kit.GROUP,
            kit.VERSION,
            self.ns,
            kit.PLURAL,
        )
        kit.follow(list_fn, self._stop, record)

    def false_since(self, since: float, until: float) -> list[tuple[str, str]]:
        return [
            (name, reason)
            for at, name, status, reason in self.seen
            if since <= at <= until and status != "True" and reason != "Provisioning"
        ]


@pytest.fixture
def auth_secret(kube: kit.Kube, namespace: str, private_redis: kit.PrivateRedis) -> Iterator[None]:
    kube.create_secret(namespace, "redis-auth", {"password": private_redis.password})
    yield


def test_a_shared_endpoint_is_probed_once_per_round_and_quiet_and_repaired(
    kube: kit.Kube,
    namespace: str,
    operator: OperatorProcess,
    private_redis: kit.PrivateRedis,
    auth_secret: None,
) -> None:
    count = 100
    bodies = manifests(private_redis, "shared", count)
    create_many(kube, namespace, bodies)
    wait_all(kube, namespace, count, "True", timeout=180)
    first, last = bodies[0]["metadata"]["name"], bodies[-1]["metadata"]["name"]
    # Let the creates' own writes (kopf's bookkeeping, events) settle: one full round.
    wait_rounds(operator, namespace, last, 1)

    # Steady state: three rounds of every resource, no write at all, one probe per round.
    pings_before, window_start = private_redis.pings(), time.monotonic()
    # A backlog reading asks the server's clock once (TIME) and each stream once.
    readings_before, streams_before = private_redis.calls("time"), stream_lookups(private_redis)
    counter = kit.WriteCounter(kube, namespace).start()
    wait_rounds(operator, namespace, first, 3)
    wait_rounds(operator, namespace, last, 1)
    writes = counter.stop()
    pings, window = private_redis.pings() - pings_before, time.monotonic() - window_start
    readings = private_redis.calls("time") - readings_before
    streams = stream_lookups(private_redis) - streams_before
    assert writes == {"messagebrokers": [], "secrets": [], "events": []}
    # Probed per resource, that would be `count` PINGs an interval; per endpoint it is
    # one an interval, plus one for each end of the window.
    intervals = window / HEALTH_INTERVAL
    assert 3 <= pings <= intervals + 2, f"{pings} PINGs in {intervals:.1f} intervals"
    # The backlog likewise: one reading per round for the whole endpoint (each stream
    # looked at once in it, pipelined), not one per resource.
    assert 2 <= readings <= intervals + 2, f"{readings} readings in {intervals:.1f} intervals"
    assert streams <= readings * count, f"{streams} stream lookups in {readings} readings"
    backlog = kit.samples(operator.metrics(), "ductape_subscription_backlog_messages")
    ours = [labels for labels in backlog if ("namespace", namespace) in labels]
    assert len(ours) == count * 2, f"{len(ours)} backlog series for {count} resources"

    # Drift: one resource's stream deleted out of band comes back within a round, and
    # nothing of the others is written.
    victim = bodies[count // 2]["metadata"]["name"]
    stream = f"{victim}.t0"
    client = private_redis.client()
    counter = kit.WriteCounter(kube, namespace).start()
    try:
        assert client.delete(stream) == 1
        kit.wait_until(
            lambda: (
                client.exists(stream) == 1
                and {g["name"].decode() for g in client.xinfo_groups(stream)}
                == {"billing", "shipping"}
            ),
            timeout=HEALTH_INTERVAL * 2 + 30,
            what=f"stream {stream} and its groups re-created",
        )
        kit.wait_until(
            lambda: any("DriftRepaired" in w or victim in w for w in counter.writes["events"]),
            timeout=30,
            what="the DriftRepaired event",
        )
        wait_rounds(operator, namespace, first, 1)
    finally:
        writes = counter.stop()
        client.close()
    assert writes["messagebrokers"] == [] and writes["secrets"] == [], writes
    assert writes["events"] and all(victim in w for w in writes["events"]), writes["events"]
    others = [f"{b['metadata']['name']}.t0" for b in bodies if b["metadata"]["name"] != victim]
    assert all(int(n) == 1 for n in _exists_many(private_redis, others))


def stream_lookups(private_redis: kit.PrivateRedis) -> int:
    return private_redis.calls("xinfo|stream")


def _exists_many(private_redis: kit.PrivateRedis, keys: list[str]) -> list[int]:
    client: redis.Redis = private_redis.client()
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            return [int(n) for n in pipe.execute()]
    finally:
        client.close()


def test_an_outage_of_a_shared_redis_is_seen_by_all_and_all_recover(
    kube: kit.Kube,
    namespace: str,
    operator: OperatorProcess,
    private_redis: kit.PrivateRedis,
    auth_secret: None,
) -> None:
    count = 200
    bodies = manifests(private_redis, "outage", count)
    with ReadyWatch(kube, namespace) as watch:
        started = time.monotonic()
        create_many(kube, namespace, bodies)
        wait_all(kube, namespace, count, "True", timeout=240)
        # Two more rounds of the last one created, with the broker up: no false outage.
        wait_rounds(operator, namespace, bodies[-1]["metadata"]["name"], 2)
        stopped = time.monotonic()
        assert watch.false_since(started, stopped) == []

        private_redis.stop()
        # Within two health intervals, plus the probe timeout and slack for a busy machine.
        wait_all(kube, namespace, count, "BrokerUnreachable", timeout=2 * HEALTH_INTERVAL + 30)

        private_redis.start()
        wait_all(kube, namespace, count, "True", timeout=2 * HEALTH_INTERVAL + 60)
    operator.assert_alive()
    assert "Traceback" not in operator.log()
