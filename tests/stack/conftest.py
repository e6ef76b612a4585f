"""Fixtures of the local-stack smoke tests: the stack's endpoints and a Kubernetes client.

The endpoints come from the environment that `.testenv/env` exports (`make test`
sources it before pytest; by hand: `. .testenv/env`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

NEEDED = (
    "KUBECONFIG",
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "AMQP_URL",
    "PUBSUB_EMULATOR_HOST",
    "PUBSUB_PROJECT_ID",
    "SQS_ENDPOINT",
    "AWS_REGION",
    "NATS_URL",
)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run `make testenv-up` and `. .testenv/env`")
    return {name: os.environ[name] for name in NEEDED}


@pytest.fixture
def name() -> str:
    """A fresh name, valid for every broker and as a Kubernetes object name."""
    return f"stack-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def kube(stack_env: dict[str, str]) -> Iterator[kubernetes.client.ApiClient]:
    api = kubernetes.config.new_client_from_config(config_file=stack_env["KUBECONFIG"])
    yield api
    api.close()
