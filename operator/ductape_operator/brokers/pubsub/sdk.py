"""Building the google-cloud-pubsub clients, the same way for the operator side and the
client side: an emulator over an insecure channel, Google Cloud with a service-account
key or the ambient credentials (docs/reference.md, "Provider mapping")."""

from __future__ import annotations

import json
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.oauth2 import service_account
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
    PublisherGrpcAsyncIOTransport,
)
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports.grpc_asyncio import (
    SubscriberGrpcAsyncIOTransport,
)

SCOPES = ("https://www.googleapis.com/auth/pubsub",)
#: gRPC reconnects a lost channel with a backoff that grows to 120 s by default;
#: capped here so that a broker back after an outage is used again within seconds.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class BadKeyError(ValueError):
    """A service-account key that is not one; the message names only the parser's error
    type, never the key material."""


def key_credentials(key_json: str) -> Any:
    """Credentials from a service-account JSON key (`BadKeyError` when it is not one)."""
    try:
        info = json.loads(key_json)
        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
    except (ValueError, KeyError, TypeError) as exc:
        # Never chain: the parser's message may quote the key material.
        raise BadKeyError(type(exc).__name__) from None


def emulator_clients(
    emulator: str,
) -> tuple[PublisherAsyncClient, SubscriberAsyncClient, grpc.aio.Channel]:
    """Publisher and subscriber of an emulator (`host:port`), on one insecure channel that
    the caller closes."""
    channel = grpc.aio.insecure_channel(emulator, options=CHANNEL_OPTIONS)
    publisher = PublisherAsyncClient(
        transport=PublisherGrpcAsyncIOTransport(host=emulator, channel=channel)
    )
    subscriber = SubscriberAsyncClient(
        transport=SubscriberGrpcAsyncIOTransport(host=emulator, channel=channel)
    )
    return publisher, subscriber, channel


def cloud_clients(credentials: Any) -> tuple[PublisherAsyncClient, SubscriberAsyncClient]:
    """Publisher and subscriber of Google Cloud (`credentials` None: the ambient ones)."""
    return PublisherAsyncClient(credentials=credentials), SubscriberAsyncClient(
        credentials=credentials
    )
