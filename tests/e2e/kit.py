"""Test kit for end-to-end tests: Kubernetes helpers, manifests for the local stack,
and raw broker clients that check what the operator did, without the operator's code.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from ductape_operator import brokers

GROUP, VERSION, PLURAL = "ductape.app", "v1alpha1", "messagebrokers"
T = TypeVar("T")


def kubectl(*args: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, input=input, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout + result.stderr


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


async def await_until(
    predicate: Callable[[], Awaitable[T | None]], *, timeout: float, what: str
) -> T:
    deadline = time.monotonic() + timeout
    delay = 0.1
    last: T | None = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def namespace_names(self) -> list[str]:
        return [ns.metadata.name for ns in self.core.list_namespace().items]

    def create_secret(self, ns: str, name: str, data: Mapping[str, str]) -> None:
        self.core.create_namespaced_secret(
            ns, {"metadata": {"name": name}, "stringData": dict(data)}
        )

    def replace_secret(self, ns: str, name: str, data: Mapping[str, str]) -> None:
        self.core.replace_namespaced_secret(
            name, ns, {"metadata": {"name": name}, "stringData": dict(data)}
        )

    def secret(self, ns: str, name: str) -> dict[str, str] | None:
        try:
            s = self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def secret_object(self, ns: str, name: str) -> Any:
        return self.core.read_namespaced_secret(name, ns)

    def apply(self, ns: str, body: Mapping[str, Any]) -> None:
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def patch(self, ns: str, name: str, patch: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)

    def delete(self, ns: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_and_wait(self, ns: str, name: str, *, by: str = "the operator") -> None:
        """Delete the MessageBroker and wait until `by` has finalized it."""
        self.delete(ns, name)
        wait_until(
            lambda: self.get(ns, name) is None or None,
            timeout=60,
            what=f"{ns}/{name} to be finalized by {by}",
        )

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        return condition_of(self.get(ns, name) or {}, type_)

    def wait_condition(
        self,
        ns: str,
        name: str,
        status: str,
        reason: str | None = None,
        *,
        type_: str = "Ready",
        timeout: float = 90,
        generation: bool = True,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(ns, name) or {}
            # The condition from the same read as the object it is returned with.
            cond = condition_of(obj, type_)
            if cond is None or cond.get("status") != status:
                return None
            if reason is not None and cond.get("reason") != reason:
                return None
            if generation and cond.get("observedGeneration") != obj["metadata"]["generation"]:
                return None
            return obj

        return wait_until(
            check, timeout=timeout, what=f"{ns}/{name} {type_}={status} reason={reason}"
        )

    def events(self, ns: str) -> list[Any]:
        return list(self.core.list_namespaced_event(ns).items)


# --- manifests for the local stack -------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


#: Every registered broker (`ductape_operator.brokers`).
TYPES = tuple(kind.type for kind in brokers.kinds())
RABBIT_PASSWORD_SECRET = "rabbit-credentials"
SQS_KEYS_SECRET = "sqs-credentials"


def env_config(type_: str) -> dict[str, Any]:
    """An env's config pointing at the local stack (from .testenv/env)."""
    if type_ == "KAFKA":
        return {"brokers": os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    if type_ == "REDIS":
        url = urllib.parse.urlparse(os.environ["REDIS_URL"])
        return {"host": url.hostname, "port": url.port or 6379}
    if type_ == "RABBITMQ":
        url = urllib.parse.urlparse(os.environ["AMQP_URL"])
        return {
            "host": url.hostname,
            "port": url.port or 5672,
            "username": url.username or "guest",
            "password": {"secretKeyRef": {"name": RABBIT_PASSWORD_SECRET, "key": "password"}},
        }
    if type_ == "GOOGLE_PUBSUB":
        return {
            "projectId": os.environ["PUBSUB_PROJECT_ID"],
            "emulatorHost": os.environ["PUBSUB_EMULATOR_HOST"],
        }
    if type_ == "AWS_SQS":
        return {
            "region": os.environ.get("AWS_REGION", "us-east-1"),
            "endpoint": os.environ["SQS_ENDPOINT"],
            "accessKeyId": {"secretKeyRef": {"name": SQS_KEYS_SECRET, "key": "access-key-id"}},
            "secretAccessKey": {
                "secretKeyRef": {"name": SQS_KEYS_SECRET, "key": "secret-access-key"}
            },
        }
    if type_ == "NATS":
        return {"servers": os.environ["NATS_URL"].split(",")}
    raise ValueError(type_)


def credential_secrets(type_: str) -> dict[str, dict[str, str]]:
    """The Secrets an env of this type references on the local stack."""
    if type_ == "RABBITMQ":
        url = urllib.parse.urlparse(os.environ["AMQP_URL"])
        return {RABBIT_PASSWORD_SECRET: {"password": url.password or "guest"}}
    if type_ == "AWS_SQS":
        return {
            SQS_KEYS_SECRET: {
                "access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                "secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            }
        }
    return {}


def broker_manifest(
    name: str,
    *,
    envs: list[tuple[str, str]],
    topics: list[dict[str, Any]],
    tag: str | None = None,
    deletion_policy: str = "Retain",
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MessageBroker",
        "metadata": metadata,
        "spec": {
            "name": f"Test {name}",
            "tag": tag or name,
            "description": "end-to-end test",
            "deletionPolicy": deletion_policy,
            "envs": [
                {"slug": slug, "type": type_, "config": env_config(type_)} for slug, type_ in envs
            ],
            "topics": topics,
        },
    }


def topics_for(
    prefix: str, count: int = 2, subs: tuple[str, ...] = ("billing", "shipping")
) -> list[dict[str, Any]]:
    return [
        {"tag": f"t{i}", "name": f"{prefix}.t{i}", "partitions": 2, "subscriptions": list(subs)}
        for i in range(count)
    ]


def topics_json(secret: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(secret["topics.json"])
    return data


def condition_of(obj: Mapping[str, Any], type_: str = "Ready") -> dict[str, Any] | None:
    """The status condition `type_` of a MessageBroker body, if it has one."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def kube_condition_message(obj: Mapping[str, Any], type_: str = "Ready") -> str:
    return str((condition_of(obj, type_) or {}).get("message", ""))


def lax_crd(crd_file: Any) -> str:
    """The CRD as an older, laxer version might have had it: any spec goes."""
    import yaml

    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        schema.pop("x-kubernetes-validations", None)
        schema["properties"]["spec"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"tag": {"type": "string"}},
        }
    return json.dumps(crd)


def try_apply(ns: str, body: Mapping[str, Any]) -> bool:
    result = subprocess.run(
        ["kubectl", "apply", "-n", ns, "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0


def invalid_broker(name: str) -> dict[str, Any]:
    """A KAFKA env with a Redis field and no brokers: the schema would refuse it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MessageBroker",
        "metadata": {"name": name},
        "spec": {
            "name": "Invalid",
            "tag": name,
            "envs": [{"slug": "dev", "type": "KAFKA", "config": {"host": "127.0.0.1"}}],
        },
    }


def assert_outage_reported_and_recovers(
    kube: Kube,
    ns: str,
    name: str,
    *,
    stop: Callable[[], None],
    start: Callable[[], None],
    health_interval: float,
) -> None:
    """A Ready resource whose broker `stop`s: Ready=False with BrokerUnreachable, the env
    Degraded and Healthy=False, within two health intervals (plus the probe timeout and
    slack for a busy machine); after `start`, Ready again without anyone's help."""
    kube.wait_condition(ns, name, "True", "AllEnvsReady")
    stop()
    obj = kube.wait_condition(
        ns, name, "False", "BrokerUnreachable", timeout=2 * health_interval + 20
    )
    assert obj["status"]["envs"][0]["phase"] == "Degraded"
    healthy = kube.condition(ns, name, "Healthy")
    assert healthy is not None and healthy["status"] == "False"
    start()
    kube.wait_condition(ns, name, "True", "AllEnvsReady", timeout=2 * health_interval + 30)


class PrivateRedis:
    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.password = f"pw-{uuid.uuid4().hex}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not on PATH (make testenv-up installs it)"
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--requirepass",
                self.password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout=20, what=f"private redis on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def pings(self) -> int:
        """PING commands this server answered so far (its own count: `INFO commandstats`)."""
        return self.calls("ping")

    def calls(self, command: str) -> int:
        """How often this server ran `command` (`xinfo|stream` for a subcommand)."""
        client = self.client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def set_password(self, password: str) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        client.config_set("requirepass", password)
        client.close()
        self.password = password

    def manifest(self, name: str) -> dict[str, Any]:
        m = broker_manifest(name, envs=[("dev", "REDIS")], topics=topics_for(name, 1))
        m["spec"]["envs"][0]["config"] = {
            "host": "127.0.0.1",
            "port": self.port,
            "password": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
        }
        return m


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample a Prometheus metrics endpoint serves: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def samples(
    scraped: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
    metric: str,
    /,
    **labels: str,
) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one metric whose labels include `labels`."""
    want = set(labels.items())
    return {key: value for (n, key), value in scraped.items() if n == metric and want <= key}


class WriteCounter:
    """Counts writes in a namespace, as the watches see them: MessageBrokers, Secrets, Events.

    Every ADDED, MODIFIED or DELETED event after `start()` is one write. Watches run
    in threads from the resourceVersion of a fresh list, so nothing before is counted.
    """

    KINDS = ("messagebrokers", "secrets", "events")

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.writes: dict[str, list[str]] = {kind: [] for kind in self.KINDS}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _list(self, kind: str) -> Callable[..., Any]:
        ns = self.namespace
        if kind == "messagebrokers":
            return functools.partial(
                self.kube.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
            )
        if kind == "secrets":
            return functools.partial(self.kube.core.list_namespaced_secret, ns)
        return functools.partial(self.kube.core.list_namespaced_event, ns)

    def start(self) -> WriteCounter:
        ready = threading.Barrier(len(self.KINDS) + 1)
        for kind in self.KINDS:
            thread = threading.Thread(target=self._watch, args=(kind, ready), daemon=True)
            thread.start()
            self._threads.append(thread)
        ready.wait(timeout=60)
        return self

    def _watch(self, kind: str, ready: threading.Barrier) -> None:
        def count(type_: str, obj: Any) -> None:
            if type_ in ("ADDED", "MODIFIED", "DELETED"):
                self.writes[kind].append(f"{type_} {_metadata(obj, 'name')}")

        follow(self._list(kind), self._stop, count, started=ready)

    def stop(self) -> dict[str, list[str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.writes


def _metadata(obj: Any, key: str) -> Any:
    """A metadata field of a watched object, a dict or one of the client's models."""
    if isinstance(obj, dict):
        return obj["metadata"][key]
    return getattr(obj.metadata, {"resourceVersion": "resource_version"}.get(key, key))


def follow(
    list_fn: Callable[..., Any],
    stop: threading.Event,
    on_event: Callable[[str, Any], None],
    *,
    started: threading.Barrier | None = None,
) -> None:
    """Watch what `list_fn` lists, from a fresh list's resourceVersion, until `stop` is set.

    Each event goes to `on_event(type, object)`; the watch is renewed every 2 s so a
    `stop` is noticed. `started` is passed once the list is taken: nothing after it is missed.
    """
    listed = list_fn()
    version = _metadata(listed, "resourceVersion")
    if started is not None:
        started.wait(timeout=60)
    while not stop.is_set():
        watch = kubernetes.watch.Watch()
        for event in watch.stream(list_fn, resource_version=version, timeout_seconds=2):
            version = _metadata(event["object"], "resourceVersion")
            on_event(event["type"], event["object"])
            if stop.is_set():
                watch.stop()
