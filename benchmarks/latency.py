"""Latency benchmark: from `kubectl apply` to `Ready=True`, per provider type.

For each type, a MessageBroker with one env and 3 topics of 2 subscriptions
each is applied RUNS times (fresh names each run) against the operator running
as a local process; the time until its Ready condition is True for the new
generation is measured. Next to it, the same provisioning done with raw SDK
calls alone, in the same run, and the ratio of the two medians. Figures only.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
TYPES = ("KAFKA", "REDIS", "RABBITMQ", "GOOGLE_PUBSUB", "AWS_SQS")
RUNS = int(os.environ.get("BENCH_RUNS", "10"))
TOPICS, SUBS = 3, 2


def _kubectl(*args: str, input: str | None = None) -> str:
    out = subprocess.run(
        ["kubectl", *args], input=input, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def _config(type_: str) -> dict[str, Any]:
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
            "password": {"secretKeyRef": {"name": "bench-rabbit", "key": "password"}},
        }
    if type_ == "GOOGLE_PUBSUB":
        return {
            "projectId": os.environ["PUBSUB_PROJECT_ID"],
            "emulatorHost": os.environ["PUBSUB_EMULATOR_HOST"],
        }
    return {
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "endpoint": os.environ["SQS_ENDPOINT"],
        "accessKeyId": {"secretKeyRef": {"name": "bench-sqs", "key": "id"}},
        "secretAccessKey": {"secretKeyRef": {"name": "bench-sqs", "key": "secret"}},
    }


def _topic_names(prefix: str) -> list[tuple[str, list[str]]]:
    return [(f"{prefix}.t{i}", [f"s{j}" for j in range(SUBS)]) for i in range(TOPICS)]


def _manifest(name: str, type_: str) -> dict[str, Any]:
    return {
        "apiVersion": "ductape.app/v1alpha1",
        "kind": "MessageBroker",
        "metadata": {"name": name},
        "spec": {
            "name": name,
            "tag": name,
            "envs": [{"slug": "dev", "type": type_, "config": _config(type_)}],
            "topics": [
                {"tag": f"t{i}", "name": topic, "subscriptions": subs}
                for i, (topic, subs) in enumerate(_topic_names(name))
            ],
        },
    }


def _ready(ns: str, name: str) -> bool:
    raw = _kubectl("get", "mb", name, "-n", ns, "-o", "json")
    obj = json.loads(raw)
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return bool(
                cond["status"] == "True"
                and cond.get("observedGeneration") == obj["metadata"]["generation"]
            )
    return False


def _apply_to_ready(ns: str, type_: str) -> float:
    name = f"lat-{type_.lower().replace('_', '')}-{uuid.uuid4().hex[:6]}"
    body = json.dumps(_manifest(name, type_))
    start = time.monotonic()
    _kubectl("apply", "-n", ns, "-f", "-", input=body)
    deadline = start + 120
    while not _ready(ns, name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not Ready within 120 s")
        time.sleep(0.05)
    return time.monotonic() - start


# --- the same provisioning with raw SDK calls -------------------------------


async def _raw_kafka(prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=1, replication_factor=1) for t, _ in _topic_names(prefix)]
        )
    finally:
        await admin.close()


async def _raw_redis(prefix: str) -> None:
    import redis.asyncio as aredis

    client = aredis.from_url(os.environ["REDIS_URL"])
    try:
        for topic, subs in _topic_names(prefix):
            for sub in subs:
                await client.xgroup_create(topic, sub, id="$", mkstream=True)
    finally:
        await client.aclose()


async def _raw_rabbitmq(prefix: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(os.environ["AMQP_URL"])
    try:
        channel = await conn.channel()
        for topic, subs in _topic_names(prefix):
            exchange = await channel.declare_exchange(
                topic, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for sub in subs:
                queue = await channel.declare_queue(f"{topic}.{sub}", durable=True)
                await queue.bind(exchange, routing_key="#")
    finally:
        await conn.close()


async def _raw_pubsub(prefix: str) -> None:
    from google.cloud import pubsub_v1

    project = os.environ["PUBSUB_PROJECT_ID"]

    def create() -> None:
        pub = pubsub_v1.PublisherClient()
        sub = pubsub_v1.SubscriberClient()
        for topic, subs in _topic_names(prefix):
            tpath = pub.topic_path(project, topic)
            pub.create_topic(request={"name": tpath})
            for s in subs:
                sub.create_subscription(
                    request={"name": sub.subscription_path(project, f"{topic}.{s}"), "topic": tpath}
                )
        sub.close()

    await asyncio.to_thread(create)


async def _raw_sqs(prefix: str) -> None:
    import aioboto3

    async with aioboto3.Session().client(
        "sqs",
        endpoint_url=os.environ["SQS_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as sqs:
        for topic, subs in _topic_names(prefix):
            for s in subs:
                await sqs.create_queue(QueueName=f"{topic}-{s}".replace(".", "-"))


RAW: dict[str, Callable[[str], Awaitable[None]]] = {
    "KAFKA": _raw_kafka,
    "REDIS": _raw_redis,
    "RABBITMQ": _raw_rabbitmq,
    "GOOGLE_PUBSUB": _raw_pubsub,
    "AWS_SQS": _raw_sqs,
}


def _raw_once(type_: str) -> float:
    prefix = f"raw-{type_.lower().replace('_', '')}-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    asyncio.run(RAW[type_](prefix))
    return time.monotonic() - start


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run() -> None:
    _kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    _kubectl("create", "namespace", ns)
    for secret, data in (
        ("bench-rabbit", {"password": urllib.parse.urlparse(os.environ["AMQP_URL"]).password}),
        ("bench-sqs", {"id": "testing", "secret": "testing"}),
    ):
        args = [f"--from-literal={k}={v}" for k, v in data.items()]
        _kubectl("create", "secret", "generic", secret, "-n", ns, *args)
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "ductape_operator", "--standalone", "--namespace", ns],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        print(
            f"\nApply -> Ready latency ({RUNS} runs per type;"
            f" 1 env, {TOPICS} topics x {SUBS} subscriptions)"
        )
        header = (
            f"{'type':<14}{'median s':>10}{'p95 s':>10}"
            f"{'raw median s':>14}{'raw p95 s':>11}{'ratio':>8}"
        )
        print(header)
        print("-" * len(header))
        _apply_to_ready(ns, "REDIS")  # warm-up: CRD discovery, first connections
        for type_ in TYPES:
            operator_times = [_apply_to_ready(ns, type_) for _ in range(RUNS)]
            raw_times = [_raw_once(type_) for _ in range(RUNS)]
            med, raw_med = statistics.median(operator_times), statistics.median(raw_times)
            print(
                f"{type_:<14}{med:>10.3f}{_p95(operator_times):>10.3f}"
                f"{raw_med:>14.3f}{_p95(raw_times):>11.3f}{med / raw_med:>8.1f}"
            )
        print(f"(operator log: {log.name})")
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)


if __name__ == "__main__":
    run()
