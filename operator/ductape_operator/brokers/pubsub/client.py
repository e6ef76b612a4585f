"""Google Pub/Sub transport: publish to the topic, pull from the subscription.

Application headers and the content type travel as message attributes
(`ductape-content-type`; the key as `ductape-key`). The message id is the one Pub/Sub
gives each message in the publish response, which the consumer reads as `message_id`;
the client's own id travels as the `ductape-id` attribute only where the server's
would not do: an id the application chose, and a topic with a dead-letter topic (a
message the service moves there gets a new server id, while the attribute stays).
It uses the asyncio gRPC clients of google-cloud-pubsub directly: `publish_many`
is one Publish call per 1000 messages, a consumer pulls batches of up to
`prefetch` messages and acknowledges in batches. A received message's ack
deadline is set to the redelivery timeout (Pub/Sub allows 0 to 600 s), so an
unsettled message comes back after it; a nack sets it to 0 and it comes back at
once. With `emulator-host` in the binding the client talks plain gRPC to the
emulator without credentials; otherwise it uses `credentials.json`, or the
environment's default credentials (workload identity) when there is none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.pubsub_v1 import types as pubsub_types
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient

from ductape_operator import errors
from ductape_operator.brokers.pubsub import sdk
from ductape_operator.brokers.pubsub.entries import Entries
from ductape_operator.brokers.pubsub.errors import classify
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

KEY_ATTRIBUTE = "ductape-key"
#: Pub/Sub's limits: messages per Publish call, ack ids per Acknowledge call.
MAX_PUBLISH = 1000
MAX_PUBLISH_BYTES = 9 * 1024 * 1024
MAX_ACK_IDS = 1000
# The protobuf classes under proto-plus' wrappers: building and reading messages
# through them directly costs a fraction of the wrappers' per-field marshalling.
_PB_MESSAGE: Any = pubsub_types.PubsubMessage.pb()
_PB_PUBLISH: Any = pubsub_types.PublishRequest.pb()


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The client side's error for a Google API exception (None: not one): `errors.classify`,
    shared with the operator side."""
    text = f"pubsub: {type(exc).__name__}: {exc}"
    return _transport.error_for(classify(exc), text, missing="the topic or subscription")


#: Attributes Pub/Sub adds to a message it moved to a dead-letter topic itself.
_DEAD_LETTER_MARKS = "CloudPubSubDeadLetterSource"
_DEAD_LETTER_SOURCE = "CloudPubSubDeadLetterSourceSubscription"
_DEAD_LETTER_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"


def dead_letter_marks(headers: Mapping[str, str]) -> _transport.DeadLetterMarks | None:
    """Pub/Sub's marks on a message it dead-lettered (None: not one it moved)."""
    source = headers.get(_DEAD_LETTER_SOURCE)
    if source is None:
        return None
    return _transport.DeadLetterMarks(
        source=source,
        count=headers.get(_DEAD_LETTER_COUNT, ""),
        headers=tuple(name for name in headers if name.startswith(_DEAD_LETTER_MARKS)),
    )


def _attributes(m: message_.OutgoingMessage, with_id: bool) -> dict[str, str]:
    """A message's attributes: its headers, and the reserved ones it needs."""
    attributes = dict(m.headers)
    if with_id:
        attributes[message_.ID_HEADER] = m.id
    if m.content_type != message_.OCTET_STREAM:
        attributes[message_.CONTENT_TYPE_HEADER] = m.content_type
    if m.key is not None:
        attributes[KEY_ATTRIBUTE] = m.key
    return attributes


def make_transport(binding: binding_.Binding, options: _transport.Options) -> PubSubTransport:
    return PubSubTransport(binding, options)


class PubSubTransport:
    """The gRPC publisher and subscriber clients, over one channel with the emulator.

    Every call is a request of its own: after an outage gRPC reconnects the
    channel by itself, and `retrying` sends a failed call again for up to
    `retry_timeout`. The clients' own retry policies are switched off
    (`retry=None`) so the two never stack (docs/messaging.md, "Through a broker
    restart").
    """

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        entries = Entries.read(binding)
        self._project = entries.project_id
        self._emulator = entries.emulator_host
        self._credentials_json = entries.credentials_json
        self._source = binding.source
        self._options = options
        self._publisher: PublisherAsyncClient | None = None
        self._subscriber: SubscriberAsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self.link = _transport.Link(f"pubsub {self._emulator or 'pubsub.googleapis.com'}")
        self.retrying = _transport.Retrier("pubsub", options, map_error)

    def topic_path(self, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self._project}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        if name.startswith("projects/"):
            return name
        return f"projects/{self._project}/subscriptions/{name}"

    @property
    def publisher(self) -> PublisherAsyncClient:
        if self._publisher is None:
            raise RuntimeError("broker is not started")
        return self._publisher

    @property
    def subscriber(self) -> SubscriberAsyncClient:
        if self._subscriber is None:
            raise RuntimeError("broker is not started")
        return self._subscriber

    async def start(self) -> None:
        if self._publisher is not None:
            return
        if self._emulator:
            self._publisher, self._subscriber, self._channel = sdk.emulator_clients(self._emulator)
            return
        credentials = None
        if self._credentials_json:
            try:
                credentials = sdk.key_credentials(self._credentials_json)
            except sdk.BadKeyError as exc:
                raise binding_.BindingError(
                    f"binding {self._source}: entry 'credentials.json' is not a service "
                    f"account key: {exc}"
                ) from None
        try:
            self._publisher, self._subscriber = sdk.cloud_clients(credentials)
        except auth_errors.GoogleAuthError as exc:
            raise errors.BrokerAuthError(f"pubsub: no usable credentials: {exc}") from exc

    async def aclose(self) -> None:
        publisher, self._publisher = self._publisher, None
        subscriber, self._subscriber = self._subscriber, None
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
            return
        for client in (publisher, subscriber):
            if client is not None:
                await client.transport.close()  # type: ignore[no-untyped-call]

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        assert route.name is not None
        topic = self.topic_path(route.name)
        # Without a dead-letter topic the server's message id is the id: one attribute
        # less to build, send and store for every message (docs/messaging.md).
        own_ids = route.dead_letter is not None
        batch: list[Any] = []
        sent: list[message_.OutgoingMessage] = []
        size = 0
        for m in messages:
            attributes = _attributes(m, own_ids or m.explicit_id)
            if attributes:
                batch.append(_PB_MESSAGE(data=m.data, attributes=attributes))
                size += sum(len(k) + len(v) for k, v in attributes.items())
            else:
                batch.append(_PB_MESSAGE(data=m.data))
            sent.append(m)
            size += len(m.data)
            if len(batch) >= MAX_PUBLISH or size >= MAX_PUBLISH_BYTES:
                await self._publish(topic, batch, sent, own_ids=own_ids)
                batch, sent, size = [], [], 0
        if batch:
            await self._publish(topic, batch, sent, own_ids=own_ids)

    async def _publish(
        self,
        topic: str,
        batch: list[Any],
        sent: list[message_.OutgoingMessage],
        *,
        own_ids: bool,
    ) -> None:
        request = pubsub_types.PublishRequest.wrap(_PB_PUBLISH(topic=topic, messages=batch))

        async def send() -> Sequence[str]:
            response = await self.publisher.publish(request=request, retry=None)
            ids: Sequence[str] = pubsub_types.PublishResponse.pb(response).message_ids
            if len(ids) != len(batch):
                raise errors.BrokerError(f"pubsub: {len(batch)} messages sent, {len(ids)} accepted")
            return ids

        ids = await self.retrying(send, "publish", self.link)
        if not own_ids:
            for m, server_id in zip(sent, ids, strict=True):
                if not m.explicit_id:
                    m.id = server_id

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> PubSubConsumer:
        return PubSubConsumer(self, route, subscription, physical, options)


class PubSubConsumer:
    client_redelivery = False

    def __init__(
        self,
        transport: PubSubTransport,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> None:
        self._transport = transport
        self._tag = route.tag
        self._subscription = subscription
        self._path = transport.subscription_path(physical)
        self._options = options
        self._deadline = min(600, max(1, math.ceil(options.redelivery_timeout)))
        self._modify = True
        self._acks: _transport.Batcher[str] = _transport.Batcher(
            self._acknowledge, "pubsub acknowledge"
        )
        self.link = _transport.Link(f"pubsub subscription {route.tag}/{subscription}")

    async def start(self) -> None:
        async def check() -> Any:
            return await self._transport.subscriber.get_subscription(
                subscription=self._path, retry=None
            )

        found = await self._transport.retrying(check, "subscribe", self.link)
        # The subscription's own deadline already is the redelivery timeout: no need
        # to change it for each batch.
        self._modify = found.ack_deadline_seconds != self._deadline

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        async def pull() -> Any:
            try:
                return await self._transport.subscriber.pull(
                    subscription=self._path,
                    max_messages=max_messages,
                    timeout=max(timeout, 0.1),
                    retry=None,
                )
            except google_errors.DeadlineExceeded:
                return None

        response = await self._transport.retrying(pull, "pull", self.link, wait=timeout)
        if response is None:
            return []
        received = list(pubsub_types.PullResponse.pb(response).received_messages)
        if not received:
            return []
        if self._modify:

            async def extend() -> None:
                await self._transport.subscriber.modify_ack_deadline(
                    subscription=self._path,
                    ack_ids=[r.ack_id for r in received],
                    ack_deadline_seconds=self._deadline,
                    retry=None,
                )

            await self._transport.retrying(extend, "modify ack deadline", self.link)
        return [self._message(r) for r in received]

    def _message(self, received: Any) -> message_.Message:
        pubsub_message = received.message
        attributes = pubsub_message.attributes
        if not attributes:
            # The common case since the id is Pub/Sub's own: nothing to split.
            return message_.Message(
                data=pubsub_message.data,
                headers={},
                id=pubsub_message.message_id,
                content_type=message_.OCTET_STREAM,
                topic=self._tag,
                subscription=self._subscription,
                settler=self,
                token=received.ack_id,
                delivery_count=received.delivery_attempt or None,
            )
        wire = dict(attributes)
        key = wire.pop(KEY_ATTRIBUTE, None)
        return message_.make_message(
            data=bytes(pubsub_message.data),
            wire_headers=wire,
            topic=self._tag,
            subscription=self._subscription,
            settler=self,
            token=received.ack_id,
            fallback_id=pubsub_message.message_id,
            key=key,
            delivery_count=received.delivery_attempt or None,
        )

    async def ack_many(self, messages: list[message_.Message]) -> None:
        self._acks.extend([m.token for m in messages])

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        if ack or not requeue:
            self._acks.add(message.token)
            return

        async def release() -> None:
            await self._transport.subscriber.modify_ack_deadline(
                subscription=self._path,
                ack_ids=[message.token],
                ack_deadline_seconds=0,
                retry=None,
            )

        await self._transport.retrying(release, "nack", self.link)

    async def _acknowledge(self, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), MAX_ACK_IDS):
            chunk = ack_ids[start : start + MAX_ACK_IDS]

            async def acknowledge(chunk: list[str] = chunk) -> None:
                await self._transport.subscriber.acknowledge(
                    subscription=self._path, ack_ids=chunk, retry=None
                )

            # Retried through an outage, so that a reconnect does not turn acks
            # into redeliveries.
            await self._transport.retrying(acknowledge, "acknowledge", self.link)

    async def aclose(self) -> None:
        await self._acks.flush()
