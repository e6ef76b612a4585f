"""Google Pub/Sub: a topic is a topic, a subscription `<topic>.<subscription>` on it.

It talks to the admin API with the asyncio GAPIC clients, so timeouts cancel
cleanly. Against an emulator (`emulatorHost`) it uses an insecure channel and
no credentials; against Google Cloud, the service-account JSON from the Secret,
or else the ambient credentials (workload identity).

A subscription outlives its topic on Pub/Sub: when the topic is deleted, the
subscription stays, detached (its topic reads `_deleted-topic_`). Adopting such
a subscription would receive nothing, so `ensure_topic` re-creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as google_errors
from google.auth import exceptions as google_auth_errors
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient

from ductape_operator import errors, models
from ductape_operator.brokers.pubsub import sdk
from ductape_operator.brokers.pubsub.config import PubSubConfig
from ductape_operator.brokers.pubsub.entries import Entries
from ductape_operator.brokers.pubsub.errors import classify
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

#: What Pub/Sub puts in a subscription's `topic` once its topic is deleted.
DELETED_TOPIC = "_deleted-topic_"
#: Entries asked for per page of a listing (the service may send fewer).
LIST_PAGE_SIZE = 1000
#: The longest a subscription keeps unacked messages, and its default (7 days); a topic
#: keeps them longer (`retentionSeconds` up to 14 days), to be replayed by seek.
MAX_SUBSCRIPTION_RETENTION_SECONDS = 604800
#: A topic retention that reads as "none declared": unset, or the 31 days the emulator
#: reports once a retention was cleared (it has no "unset" after a clear).
_NO_TOPIC_RETENTION = frozenset({0, 2678400})


def subscription_id(topic: str, subscription: str) -> str:
    """The subscription id of a subscription: `<topic>.<subscription>`."""
    return base.default_subscription_name(topic, subscription)


class PubSubProvider(_common.ProviderBase):
    """One Google Cloud project (or emulator) with one set of credentials."""

    TYPE = models.MessageBrokerTypes("GOOGLE_PUBSUB")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        settings = config.narrow(PubSubConfig)
        if not settings.project_id:
            raise errors.InvalidConfigError("GOOGLE_PUBSUB: config.projectId is required")
        self._entries = Entries(
            project_id=settings.project_id,
            emulator_host=settings.emulator_host,
            credentials_json=_common.secret_value(secrets, settings.credentials),
        )
        self._project = self._entries.project_id
        self._emulator = self._entries.emulator_host
        self._credentials_json = self._entries.credentials_json
        if self._credentials_json:
            self._credentials.append(self._credentials_json)
        self._channels: list[grpc.aio.Channel] = []
        self._publisher: PublisherAsyncClient | None = None
        self._subscriber: SubscriberAsyncClient | None = None

    # --- naming and binding -------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._entries.endpoint

    def binding(self) -> dict[str, str]:
        return self._entries.write()

    def _topic_path(self, topic: str) -> str:
        return f"projects/{self._project}/topics/{topic}"

    def _subscription_path(self, subscription: str) -> str:
        return f"projects/{self._project}/subscriptions/{subscription}"

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            if self._emulator:
                self._publisher, self._subscriber, channel = sdk.emulator_clients(self._emulator)
                self._channels = [channel]
                return
            creds = await self._google_credentials()
            self._publisher, self._subscriber = sdk.cloud_clients(creds)

    async def _google_credentials(self) -> Any:
        if self._credentials_json:
            try:
                return sdk.key_credentials(self._credentials_json)
            except sdk.BadKeyError as exc:
                raise errors.InvalidConfigError(
                    f"{self.endpoint}: config.credentials is not a service-account JSON key ({exc})"
                ) from None
        import google.auth  # the ambient credentials (workload identity, ADC)

        creds, _project = await asyncio.to_thread(google.auth.default, scopes=sdk.SCOPES)
        return creds

    async def _close(self) -> None:
        publisher, self._publisher = self._publisher, None
        subscriber, self._subscriber = self._subscriber, None
        channels, self._channels = self._channels, []
        for client in (publisher, subscriber):
            if client is not None and not channels:
                try:
                    await client.transport.close()  # type: ignore[no-untyped-call]
                except Exception:  # a broken channel may fail to close; it is gone either way
                    logger.debug("closing a Pub/Sub client of %s failed", self.endpoint)
        for channel in channels:
            await channel.close()

    def _clients(self) -> tuple[PublisherAsyncClient, SubscriberAsyncClient]:
        if self._publisher is None or self._subscriber is None:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        return self._publisher, self._subscriber

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        await self._ensure_started()
        publisher, _subscriber = self._clients()
        topic_path = self._topic_path(topic.name)
        subs = {sub: subscription_id(topic.name, sub) for sub in topic.subscriptions}
        async with self.guard(f"ensuring topic {topic.name}", self._map):
            with contextlib.suppress(google_errors.AlreadyExists):
                await publisher.create_topic(request={"name": topic_path}, timeout=self._timeout)
            for sid in subs.values():
                await self._ensure_subscription(topic_path, sid)
        return base.TopicRoute(tag=topic.tag, name=topic.name, subscriptions=subs)

    async def _ensure_subscription(self, topic_path: str, sid: str) -> None:
        _publisher, subscriber = self._clients()
        path = self._subscription_path(sid)
        request = {"name": path, "topic": topic_path}
        try:
            await subscriber.create_subscription(request=request, timeout=self._timeout)
            return
        except google_errors.AlreadyExists:
            pass
        existing = await subscriber.get_subscription(
            request={"subscription": path}, timeout=self._timeout
        )
        if existing.topic == topic_path:
            return
        if existing.topic != DELETED_TOPIC:
            raise errors.ProvisioningError(
                f"{self.endpoint}: subscription {sid} exists on another topic"
                f" ({existing.topic}), not {topic_path}",
                retriable=False,
            )
        # Detached from a deleted topic: it would never receive anything again.
        await self._delete_subscription(sid)
        await subscriber.create_subscription(request=request, timeout=self._timeout)

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """The topic's `messageRetentionDuration`, and each subscription's retention and
        `deadLetterPolicy` (towards the dead-letter topic, `maxDeliveryAttempts`).

        Pub/Sub changes all of them in place. A subscription keeps messages 7 days at
        most: a longer `retentionSeconds` holds on the topic, its subscriptions keep 7.
        """
        await self._ensure_started()
        publisher, subscriber = self._clients()
        topic_path = self._topic_path(topic.name)
        retention = topic.retention_seconds
        sub_retention = min(
            retention or MAX_SUBSCRIPTION_RETENTION_SECONDS, MAX_SUBSCRIPTION_RETENTION_SECONDS
        )
        policy: dict[str, Any] | None = None
        if topic.dead_letter is not None:
            policy = {
                "dead_letter_topic": self._topic_path(topic.dead_letter.name),
                "max_delivery_attempts": topic.dead_letter.max_delivery_attempts,
            }
        changed = False
        async with self.guard(
            f"setting retention and dead letters of topic {topic.name}", self._map
        ):
            current = await publisher.get_topic(
                request={"topic": topic_path}, timeout=self._timeout
            )
            have = _seconds(current.message_retention_duration)
            if have != retention and not (retention is None and have in _NO_TOPIC_RETENTION):
                body: dict[str, Any] = {"name": topic_path}
                if retention is not None:
                    body["message_retention_duration"] = {"seconds": retention}
                await publisher.update_topic(
                    request={
                        "topic": body,
                        "update_mask": {"paths": ["message_retention_duration"]},
                    },
                    timeout=self._timeout,
                )
                changed = True
            for sub in topic.subscriptions:
                path = self._subscription_path(subscription_id(topic.name, sub))
                existing = await subscriber.get_subscription(
                    request={"subscription": path}, timeout=self._timeout
                )
                paths: list[str] = []
                update: dict[str, Any] = {"name": path}
                if _seconds(existing.message_retention_duration) != sub_retention:
                    paths.append("message_retention_duration")
                    update["message_retention_duration"] = {"seconds": sub_retention}
                dlp = existing.dead_letter_policy
                have_policy = (
                    (dlp.dead_letter_topic, dlp.max_delivery_attempts)
                    if dlp.dead_letter_topic
                    else None
                )
                want_policy = (
                    (policy["dead_letter_topic"], policy["max_delivery_attempts"])
                    if policy is not None
                    else None
                )
                if have_policy != want_policy:
                    paths.append("dead_letter_policy")
                    if policy is not None:
                        update["dead_letter_policy"] = policy
                if paths:
                    await subscriber.update_subscription(
                        request={"subscription": update, "update_mask": {"paths": paths}},
                        timeout=self._timeout,
                    )
                    changed = True
        return changed

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        publisher, _subscriber = self._clients()
        async with self.guard(f"deleting topic {topic.name}", self._map):
            for sub in topic.subscriptions:
                await self._delete_subscription(subscription_id(topic.name, sub))
            with contextlib.suppress(google_errors.NotFound):
                await publisher.delete_topic(
                    request={"topic": self._topic_path(topic.name)}, timeout=self._timeout
                )

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        sid = subscription_id(topic.name, subscription)
        async with self.guard(f"deleting subscription {sid}", self._map):
            await self._delete_subscription(sid)

    async def _delete_subscription(self, sid: str) -> None:
        _publisher, subscriber = self._clients()
        with contextlib.suppress(google_errors.NotFound):
            await subscriber.delete_subscription(
                request={"subscription": self._subscription_path(sid)}, timeout=self._timeout
            )

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        await self._ensure_started()
        publisher, subscriber = self._clients()
        topic_path = self._topic_path(topic.name)
        async with self.guard(f"looking up topic {topic.name}", self._map):
            try:
                await publisher.get_topic(request={"topic": topic_path}, timeout=self._timeout)
                for sub in topic.subscriptions:
                    found = await subscriber.get_subscription(
                        request={
                            "subscription": self._subscription_path(
                                subscription_id(topic.name, sub)
                            )
                        },
                        timeout=self._timeout,
                    )
                    if found.topic != topic_path:
                        return False
            except google_errors.NotFound:
                return False
        return True

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """Two paged listings of the project: its topics, then its subscriptions.

        The subscriptions are listed only when a topic that exists declares some.
        As in `topic_exists`, a subscription counts only while attached to its
        topic (not detached, `_deleted-topic_`, nor on another topic).
        """
        plans = list(topics)
        if not plans:
            return frozenset()
        await self._ensure_started()
        publisher, subscriber = self._clients()
        project = f"projects/{self._project}"
        request = {"project": project, "page_size": LIST_PAGE_SIZE}
        attached: dict[str, str] = {}
        async with self.guard(f"listing topics and subscriptions of {project}", self._map):
            pager = await publisher.list_topics(request=request, timeout=self._timeout)
            existing = {topic.name async for topic in pager}
            found = [plan for plan in plans if self._topic_path(plan.name) in existing]
            if any(plan.subscriptions for plan in found):
                subs = await subscriber.list_subscriptions(request=request, timeout=self._timeout)
                attached = {sub.name: sub.topic async for sub in subs}
        return frozenset(
            plan
            for plan in found
            if all(
                attached.get(self._subscription_path(subscription_id(plan.name, sub)))
                == self._topic_path(plan.name)
                for sub in plan.subscriptions
            )
        )

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            publisher, _subscriber = self._clients()
            # One page of at most one topic: answers with zero topics too.
            await publisher.list_topics(
                request={"project": f"projects/{self._project}", "page_size": 1},
                timeout=timeout,
            )

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side); no credentials at all is the config's to fix."""
        if isinstance(exc, google_auth_errors.DefaultCredentialsError):
            return errors.InvalidConfigError(
                f"{self.endpoint}: no credentials: set config.credentials or give the operator"
                f" workload identity ({_common.describe(exc)})"
            )
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


def _seconds(duration: Any) -> int:
    """Whole seconds of a Duration field, as proto-plus hands it over (a timedelta)."""
    if duration is None:
        return 0
    total = getattr(duration, "total_seconds", None)
    if total is not None:
        return int(total())
    return int(getattr(duration, "seconds", 0))
