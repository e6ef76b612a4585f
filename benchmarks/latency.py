"""Latency benchmark: create to Ready, per provider, against its own floor.

For each provider a MessageBroker with one env and 3 topics of 2 subscriptions
each is created RUNS times (fresh names each time) with the Python client, and
the first Ready=True for its generation is taken from a watch started before
the first create: no polling, no subprocess on the timed path. Interleaved with
those runs, in the same process:

- raw: the broker calls the same provisioning needs, made directly with the
  SDK (connect, create the topics and subscriptions, close);
- floor: the Kubernetes writes a Ready resource needs (create the object, patch
  its status, create its Secret), made directly with the client in a namespace
  no operator watches.

It prints median and p95 of each, and the ratio `operator / (raw + floor)` of
the medians and of the p95s, and writes the same as JSON to
`.bench/latency.json`. Figures only: nothing is asserted.

    . .testenv/env && python -m benchmarks.latency            # every provider
    BENCH_RUNS=5 python -m benchmarks.latency KAFKA REDIS     # some
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import kubernetes

from benchmarks import kit
from benchmarks.kit import BENCH_DIR, CRD_FILE, GROUP, PLURAL, ROOT, VERSION, Obj

TYPES = ("KAFKA", "REDIS", "RABBITMQ", "GOOGLE_PUBSUB", "AWS_SQS", "NATS")
#: Runs per provider: with 10, one slow moment of a shared 2-core machine moved a median
#: ratio by a few tenths, and the "p95" was the slowest run.
RUNS = int(os.environ.get("BENCH_RUNS", "20"))
TOPICS, SUBS = 3, 2
READY_TIMEOUT = 120.0
RABBIT_SECRET, SQS_SECRET = "bench-rabbit", "bench-sqs"
SQS_KEY = {"id": "testing", "secret": "testing"}


def _config(type_: str) -> Obj:
    return kit.stack_config(type_, RABBIT_SECRET, SQS_SECRET)


def _topic_names(prefix: str) -> list[tuple[str, list[str]]]:
    return [(f"{prefix}.t{i}", [f"s{j}" for j in range(SUBS)]) for i in range(TOPICS)]


def _manifest(name: str, type_: str) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
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


def _fresh_name(kind: str, type_: str) -> str:
    return f"{kind}-{type_.lower().replace('_', '')}-{uuid.uuid4().hex[:6]}"


# --- the three measurements -------------------------------------------------


class Timed:
    """Creates MessageBrokers in the operator's namespace; the watch says when each is Ready."""

    def __init__(self, namespace: str, api: kubernetes.client.ApiClient) -> None:
        self.namespace = namespace
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.tracker = kit.ReadyTracker()
        self.watcher = kit.Watcher(
            "messagebrokers",
            self.custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            self.tracker.on_event,
            self.tracker.on_list,
        )
        self.watcher.list_now()
        self.watcher.start()

    def create_to_ready(self, type_: str) -> float:
        name = _fresh_name("lat", type_)
        body = _manifest(name, type_)
        start = time.monotonic()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        self.tracker.wait_all({name}, start + READY_TIMEOUT, self.watcher)
        if name not in self.tracker.first_ready:
            raise RuntimeError(f"{self.namespace}/{name} not Ready within {READY_TIMEOUT:.0f} s")
        return self.tracker.first_ready[name] - start

    def stop(self) -> None:
        kit.stop_all([self.watcher])


def floor_once(api: kubernetes.client.ApiClient, namespace: str, type_: str) -> float:
    """The writes a Ready resource needs, made directly: create, status patch, Secret."""
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    name = _fresh_name("floor", type_)
    status = {"status": {"observedGeneration": 1, "summary": f"dev:{type_}"}}
    secret: Any = {"metadata": {"name": f"{name}-dev"}, "stringData": {"uri": "x"}}
    start = time.monotonic()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _manifest(name, type_)
    )
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, status)
    core.create_namespaced_secret(namespace, secret)
    return time.monotonic() - start


async def _raw_kafka(prefix: str) -> None:
    """Create the topics, then give each subscription's group its start offsets (0 on a
    new topic), as the operator must for a group to see every message."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.protocol.commit import OffsetCommitRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        topics = _topic_names(prefix)
        await admin.create_topics([NewTopic(t, 1, 1) for t, _ in topics])
        for topic, subs in topics:
            for sub in subs:
                group = f"{topic}.{sub}"
                coordinator = await admin.find_coordinator(group)
                request = OffsetCommitRequest(group, -1, "", -1, [(topic, [(0, 0, "")])])
                await admin._send_request(request, coordinator)
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
    import grpc  # type: ignore[import-untyped]
    from google.auth.credentials import AnonymousCredentials
    from google.pubsub_v1.services.publisher import PublisherAsyncClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
    from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

    project, host = os.environ["PUBSUB_PROJECT_ID"], os.environ["PUBSUB_EMULATOR_HOST"]
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    channels = [grpc.aio.insecure_channel(host), grpc.aio.insecure_channel(host)]
    publisher = PublisherAsyncClient(
        transport=PublisherGrpcAsyncIOTransport(channel=channels[0], credentials=anonymous)
    )
    subscriber = SubscriberAsyncClient(
        transport=SubscriberGrpcAsyncIOTransport(channel=channels[1], credentials=anonymous)
    )
    try:
        for topic, subs in _topic_names(prefix):
            topic_path = f"projects/{project}/topics/{topic}"
            await publisher.create_topic(request={"name": topic_path})
            for sub in subs:
                name = f"projects/{project}/subscriptions/{topic}.{sub}"
                await subscriber.create_subscription(request={"name": name, "topic": topic_path})
    finally:
        for channel in channels:
            await channel.close()


async def _raw_sqs(prefix: str) -> None:
    import aioboto3

    async with aioboto3.Session().client(
        "sqs",
        endpoint_url=os.environ["SQS_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=SQS_KEY["id"],
        aws_secret_access_key=SQS_KEY["secret"],
    ) as sqs:
        for topic, subs in _topic_names(prefix):
            for sub in subs:
                await sqs.create_queue(QueueName=f"{topic}-{sub}".replace(".", "-"))


async def _raw_nats(prefix: str) -> None:
    """A stream per topic (subject = its name) and a durable pull consumer per subscription."""
    import nats
    from nats.js import api

    client = await nats.connect(os.environ["NATS_URL"])
    try:
        js = client.jetstream()
        for topic, subs in _topic_names(prefix):
            stream = topic.replace(".", "-")
            await js.add_stream(name=stream, subjects=[topic])
            for sub in subs:
                config = api.ConsumerConfig(
                    durable_name=sub,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.NEW,
                )
                await js.add_consumer(stream, config)
    finally:
        await client.close()


RAW: dict[str, Callable[[str], Awaitable[None]]] = {
    "KAFKA": _raw_kafka,
    "REDIS": _raw_redis,
    "RABBITMQ": _raw_rabbitmq,
    "GOOGLE_PUBSUB": _raw_pubsub,
    "AWS_SQS": _raw_sqs,
    "NATS": _raw_nats,
}


def raw_once(loop: asyncio.AbstractEventLoop, type_: str) -> float:
    prefix = _fresh_name("raw", type_)
    start = time.monotonic()
    loop.run_until_complete(RAW[type_](prefix))
    return time.monotonic() - start


# --- the run ----------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 4),
        "p95_s": round(kit.percentile(values, 0.95) or 0.0, 4),
    }


def _row(type_: str, op: list[float], raw: list[float], floor: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "type": type_,
        "runs": len(op),
        "operator": _summary(op),
        "raw": _summary(raw),
        "floor": _summary(floor),
    }
    for stat in ("median_s", "p95_s"):
        base = row["raw"][stat] + row["floor"][stat]
        row[f"ratio_{stat[:-2]}"] = round(row["operator"][stat] / base, 2)
    return row


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\nCreate -> Ready ({RUNS} runs per provider; 1 env, {TOPICS} topics x {SUBS}"
        " subscriptions; seconds; ratio = operator / (raw + floor))"
    )
    header = (
        f"{'type':<14}{'operator':>10}{'p95':>8}{'raw':>8}{'p95':>8}"
        f"{'floor':>8}{'p95':>8}{'ratio':>8}{'p95':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        op, raw, floor = row["operator"], row["raw"], row["floor"]
        print(
            f"{row['type']:<14}{op['median_s']:>10.3f}{op['p95_s']:>8.3f}"
            f"{raw['median_s']:>8.3f}{raw['p95_s']:>8.3f}"
            f"{floor['median_s']:>8.3f}{floor['p95_s']:>8.3f}"
            f"{row['ratio_median']:>8.2f}{row['ratio_p95']:>7.2f}"
        )


def _namespace_with_secrets(core: Any, namespace: str) -> None:
    core.create_namespace({"metadata": {"name": namespace}})
    password = urllib.parse.urlparse(os.environ.get("AMQP_URL", "")).password or ""
    for name, data in ((RABBIT_SECRET, {"password": password}), (SQS_SECRET, SQS_KEY)):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})


def run(types: tuple[str, ...] = TYPES) -> list[dict[str, Any]]:
    kit.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kit.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    BENCH_DIR.mkdir(exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    namespace, floor_ns = f"bench-lat-{run_id}", f"bench-floor-{run_id}"
    api = kit.new_api_client()
    core = kubernetes.client.CoreV1Api(api)
    for ns in (namespace, floor_ns):
        _namespace_with_secrets(core, ns)
    log_path = BENCH_DIR / "latency-operator.log"
    operator = kit.Operator(namespace, 30.0, log_path)
    loop = asyncio.new_event_loop()
    timed: Timed | None = None
    rows = []
    try:
        operator.start()
        timed = Timed(namespace, api)
        for type_ in types:
            # Warm-up, untimed: the first connection to each broker, each code path.
            timed.create_to_ready(type_)
            raw_once(loop, type_)
            floor_once(api, floor_ns, type_)
            op, raw, floor = [], [], []
            for _ in range(RUNS):
                op.append(timed.create_to_ready(type_))
                raw.append(raw_once(loop, type_))
                floor.append(floor_once(api, floor_ns, type_))
            rows.append(_row(type_, op, raw, floor))
            print(f"{type_}: done", file=sys.stderr, flush=True)
    finally:
        if timed is not None:
            timed.stop()
        loop.close()
        kit.kubectl("delete", "namespace", floor_ns, "--wait=false")
        # Deleted while the operator runs: it lets its finalizers go (Retain keeps the
        # topics on the brokers); whatever it left is let go after it stopped.
        gone = kit.delete_namespace(namespace, 60) is not None
        operator.stop()
        if not gone:
            kit.drop_finalizers(namespace)
        api.close()  # type: ignore[no-untyped-call]
    result = {"machine": kit.machine(), "runs": RUNS, "rows": rows}
    out = BENCH_DIR / "latency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(rows)
    print(f"(JSON: {out.relative_to(ROOT)}; operator log: {log_path.relative_to(ROOT)})")
    return rows


if __name__ == "__main__":
    run(tuple(sys.argv[1:]) or TYPES)
