"""RabbitMQ's operator side alone: N resources' worth of declarations through one provider.

Why: `make bench-scale` measures the whole operator, and on a shared machine the
Kubernetes API server dominates its figures. This one drives the RabbitMQ
provider directly against the local stack the way the reconcile loop does (every
resource's two topics, one subscription each, all at once), then an inventory of
all of them, then their deletion, and reports the wall time, the per-resource
latency, the operator's CPU time and the AMQP methods that waited for an answer
(counted on aiormq's channel, so a round trip each). Figures only.

    . .testenv/env && python -m benchmarks.rabbitmq_provision --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import time
import urllib.parse
import uuid
from typing import Any

import aiormq.channel

from ductape_operator import models
from ductape_operator.providers import base, build_provider

RPCS: collections.Counter[str] = collections.Counter()
_rpc = aiormq.channel.Channel.rpc


async def _counted_rpc(self: aiormq.channel.Channel, frame: Any, timeout: Any = None) -> Any:
    RPCS[type(frame).__qualname__] += 1
    return await _rpc(self, frame, timeout=timeout)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _provider() -> base.Provider:
    url = urllib.parse.urlsplit(os.environ["AMQP_URL"])
    config = models.BrokerConfig.model_validate(
        {
            "host": url.hostname,
            "port": url.port or 5672,
            "username": urllib.parse.unquote(url.username or "guest"),
            "password": {"secretKeyRef": {"name": "bench", "key": "password"}},
        }
    )
    secrets = base.SecretValues({("bench", "password"): urllib.parse.unquote(url.password or "")})
    return build_provider(models.MessageBrokerTypes("RABBITMQ"), config, secrets)


async def _run(count: int) -> None:
    run = uuid.uuid4().hex[:6]
    resources = [
        [base.TopicPlan(tag=t, name=f"bench-{run}-{i}-{t}", subscriptions=("s",)) for t in "ab"]
        for i in range(count)
    ]
    latencies: list[float] = []
    async with _provider() as provider:
        await provider.probe(5)

        async def one(plans: list[base.TopicPlan]) -> None:
            began = time.monotonic()
            await asyncio.gather(*(provider.ensure_topic(plan) for plan in plans))
            latencies.append(time.monotonic() - began)

        RPCS.clear()
        began, cpu = time.monotonic(), _cpu()
        await asyncio.gather(*(one(plans) for plans in resources))
        ensure_s, ensure_cpu, ensure_rpcs = time.monotonic() - began, _cpu() - cpu, dict(RPCS)
        everything = [plan for plans in resources for plan in plans]
        RPCS.clear()
        began = time.monotonic()
        present = await provider.inventory(everything)
        inventory_s, inventory_rpcs = time.monotonic() - began, dict(RPCS)
        assert len(present) == len(everything), f"{len(present)} of {len(everything)} found"
        began = time.monotonic()
        await asyncio.gather(*(provider.delete_topic(plan) for plan in everything))
        delete_s = time.monotonic() - began
    print(f"load average {os.getloadavg()}")
    print(
        f"ensure {count} resources x 2 topics: {ensure_s:.2f} s, per resource p50/p95/p99"
        f" {_pct(latencies, 0.5):.2f}/{_pct(latencies, 0.95):.2f}/{_pct(latencies, 0.99):.2f} s,"
        f" operator CPU {ensure_cpu:.2f} s"
    )
    print(f"  AMQP methods: {ensure_rpcs} ({sum(ensure_rpcs.values()) / count:.1f} per resource)")
    print(f"inventory of {len(everything)} topics: {inventory_s:.2f} s; {inventory_rpcs}")
    print(f"delete {len(everything)} topics: {delete_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="resources (%(default)s)")
    args = parser.parse_args()
    aiormq.channel.Channel.rpc = _counted_rpc  # type: ignore[method-assign]
    asyncio.run(_run(args.count))


if __name__ == "__main__":
    main()
