"""AWS SQS: one queue per subscription, or one queue for a topic without any.

SQS has no fan-out of its own, so a subscription is a queue `<topic>-<sub>` and
publishers send to every subscription's queue (`topics.json` lists them; the
topic's `name` is null then). A topic without subscriptions is one queue
`<topic>`. SQS forbids dots in queue names, so dots become dashes. Physical
names in `topics.json` are queue URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Collection
from typing import Any

from botocore import exceptions as botocore_errors
from botocore.config import Config

from ductape_operator import errors, models
from ductape_operator.brokers.sqs import errors as sqs_errors
from ductape_operator.brokers.sqs import sdk
from ductape_operator.brokers.sqs.config import SQSConfig
from ductape_operator.brokers.sqs.entries import Entries
from ductape_operator.brokers.sqs.errors import classify
from ductape_operator.providers import _common, base

logger = logging.getLogger(__name__)

QUEUE_NAME_MAX_LENGTH = 80
#: SQS's own retention (4 days): what a queue gets back when `retentionSeconds` goes away.
DEFAULT_RETENTION_SECONDS = 345600
#: Queue URLs per ListQueues page: the most SQS sends.
LIST_PAGE_SIZE = 1000
#: GetQueueAttributes calls a backlog reading makes at once (one per queue).
ATTRIBUTE_CONCURRENCY = 8
#: Visible plus in flight (received, not deleted yet): the backlog of a queue.
_BACKLOG_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_ALREADY_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})


def queue_name(topic: str, subscription: str | None = None) -> str:
    """`<topic>-<subscription>` (or `<topic>`), dots turned into dashes."""
    name = topic if subscription is None else f"{topic}-{subscription}"
    return name.replace(".", "-")


def queue_names(topic: base.TopicPlan) -> dict[str | None, str]:
    """Queue of each subscription; the key None is the topic's own queue (no subscriptions)."""
    if not topic.subscriptions:
        return {None: queue_name(topic.name)}
    return {sub: queue_name(topic.name, sub) for sub in topic.subscriptions}


class SQSProvider(_common.ProviderBase):
    """One AWS region (or SQS-compatible endpoint) with one set of credentials."""

    TYPE = models.MessageBrokerTypes("AWS_SQS")

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = _common.DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(config, secrets, timeout=timeout)
        settings = config.narrow(SQSConfig)
        if not settings.region:
            raise errors.InvalidConfigError("AWS_SQS: config.region is required")
        self._entries = Entries(
            region=settings.region,
            endpoint_url=settings.endpoint or None,
            access_key_id=_common.secret_value(secrets, settings.access_key_id),
            secret_access_key=_common.secret_value(secrets, settings.secret_access_key),
        )
        self._credentials += [v for v in (self._entries.secret_access_key,) if v]
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    # --- naming and binding -------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._entries.endpoint

    def binding(self) -> dict[str, str]:
        return self._entries.write()

    # --- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            stack = contextlib.AsyncExitStack()
            self._stack = stack
            config = Config(
                connect_timeout=min(self._timeout, 10.0),
                read_timeout=self._timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            )
            self._client = await sdk.open_client(self._entries, config, stack)

    async def _close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            try:
                await stack.aclose()
            except Exception:  # closing the HTTP session may fail; it is gone either way
                logger.debug("closing the SQS client of %s failed", self.endpoint)

    def _require_client(self) -> Any:
        if self._client is None:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        return self._client

    def _check_names(self, topic: base.TopicPlan) -> dict[str | None, str]:
        names = queue_names(topic)
        for name in names.values():
            if not _QUEUE_NAME.match(name):
                raise errors.InvalidConfigError(
                    f"{self.endpoint}: queue name {name!r} of topic {topic.tag!r} is not a valid"
                    f" SQS queue name (at most {QUEUE_NAME_MAX_LENGTH} letters, digits,"
                    " '-' and '_'); shorten the topic's name or its subscription names"
                )
        return names

    # --- the interface ------------------------------------------------------

    async def ensure_topic(self, topic: base.TopicPlan) -> base.TopicRoute:
        names = self._check_names(topic)
        await self._ensure_started()
        urls: dict[str | None, str] = {}
        async with self.guard(f"ensuring queues of topic {topic.name}", self._map):
            client = self._require_client()
            for key, name in names.items():
                try:
                    reply = await client.create_queue(QueueName=name)
                except botocore_errors.ClientError as exc:
                    if sqs_errors.code(exc) not in _ALREADY_EXISTS:
                        raise
                    # Exists with other attributes: adopt it as it is.
                    reply = await client.get_queue_url(QueueName=name)
                urls[key] = str(reply["QueueUrl"])
        if None in urls:
            return base.TopicRoute(tag=topic.tag, name=urls[None])
        return base.TopicRoute(
            tag=topic.tag,
            name=None,
            subscriptions={str(k): v for k, v in urls.items() if k is not None},
        )

    async def ensure_settings(self, topic: base.TopicPlan) -> bool:
        """`MessageRetentionPeriod` and `RedrivePolicy` of every queue of the topic.

        The redrive target is the dead-letter topic's one subscription queue, with
        `maxReceiveCount` one above `maxDeliveryAttempts`: the messaging client moves a
        message on the receive past the attempts, adding the source headers, and SQS
        moves it one receive later only when no such client consumes (a backstop).
        Both attributes change in place (docs/messaging.md, "Dead letters and retention").
        """
        names = self._check_names(topic)
        await self._ensure_started()
        changed = False
        async with self.guard(f"setting attributes of the queues of topic {topic.name}", self._map):
            client = self._require_client()
            wanted = {
                "MessageRetentionPeriod": str(topic.retention_seconds or DEFAULT_RETENTION_SECONDS),
                "RedrivePolicy": await self._redrive_policy(topic.dead_letter),
            }
            for name in names.values():
                url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
                reply = await client.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted))
                current = reply.get("Attributes") or {}
                different = {
                    key: value
                    for key, value in wanted.items()
                    if _attribute(key, current.get(key, "")) != _attribute(key, value)
                }
                if different:
                    await client.set_queue_attributes(QueueUrl=url, Attributes=different)
                    changed = True
        return changed

    async def _redrive_policy(self, dead_letter: base.DeadLetterPlan | None) -> str:
        """The RedrivePolicy JSON towards the dead-letter queue, or "" for none."""
        if dead_letter is None:
            return ""
        client = self._require_client()
        target = queue_name(dead_letter.name, dead_letter.subscription)
        url = (await client.get_queue_url(QueueName=target))["QueueUrl"]
        reply = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return json.dumps(
            {
                "deadLetterTargetArn": reply["Attributes"]["QueueArn"],
                "maxReceiveCount": dead_letter.max_delivery_attempts + 1,
            }
        )

    async def delete_topic(self, topic: base.TopicPlan) -> None:
        await self._ensure_started()
        async with self.guard(f"deleting queues of topic {topic.name}", self._map):
            for name in queue_names(topic).values():
                await self._delete_queue(name)

    async def delete_subscription(self, topic: base.TopicPlan, subscription: str) -> None:
        await self._ensure_started()
        name = queue_name(topic.name, subscription)
        async with self.guard(f"deleting queue {name}", self._map):
            await self._delete_queue(name)

    async def _delete_queue(self, name: str) -> None:
        client = self._require_client()
        try:
            reply = await client.get_queue_url(QueueName=name)
            await client.delete_queue(QueueUrl=reply["QueueUrl"])
        except botocore_errors.ClientError as exc:
            if sqs_errors.code(exc) not in sqs_errors.NOT_FOUND_CODES:
                raise

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        await self._ensure_started()
        async with self.guard(f"looking up queues of topic {topic.name}", self._map):
            client = self._require_client()
            for name in queue_names(topic).values():
                try:
                    await client.get_queue_url(QueueName=name)
                except botocore_errors.ClientError as exc:
                    if sqs_errors.code(exc) in sqs_errors.NOT_FOUND_CODES:
                        return False
                    raise
        return True

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """One ListQueues listing, paged, under the longest prefix the queue names share.

        A topic counts when every one of its queues is listed. A name SQS would
        refuse cannot exist, so it is left out of the prefix and counts as missing.
        """
        wanted = {plan: set(queue_names(plan).values()) for plan in topics}
        valid = [name for names in wanted.values() for name in names if _QUEUE_NAME.match(name)]
        if not valid:
            return frozenset()
        await self._ensure_started()
        prefix = _common_prefix(valid)
        request: dict[str, Any] = {"MaxResults": LIST_PAGE_SIZE}
        if prefix:
            request["QueueNamePrefix"] = prefix
        existing: set[str] = set()
        async with self.guard(f"listing queues {prefix}*", self._map):
            client = self._require_client()
            while True:
                reply = await client.list_queues(**request)
                existing.update(str(url).rsplit("/", 1)[-1] for url in reply.get("QueueUrls", []))
                token = reply.get("NextToken")
                if not token:
                    break
                request["NextToken"] = token
        return frozenset(plan for plan, names in wanted.items() if names <= existing)

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        """Visible plus in-flight messages of each subscription's queue: one ListQueues
        listing for the URLs (as `inventory`), then one GetQueueAttributes per queue
        (SQS has no batched form), a few at a time.

        Both figures are SQS's approximations; the oldest message's age is only in
        CloudWatch, and SQS keeps no count of what was sent, so neither is exported.
        """
        wanted = {
            (plan, sub): queue_name(plan.name, sub)
            for plan in topics
            for sub in plan.subscriptions
            if _QUEUE_NAME.match(queue_name(plan.name, sub))
        }
        if not wanted:
            return {}
        await self._ensure_started()
        prefix = _common_prefix(sorted(set(wanted.values())))
        request: dict[str, Any] = {"MaxResults": LIST_PAGE_SIZE}
        if prefix:
            request["QueueNamePrefix"] = prefix
        urls: dict[str, str] = {}
        counts: dict[str, int] = {}
        async with self.guard(f"reading the backlog of queues {prefix}*", self._map):
            client = self._require_client()
            while True:
                reply = await client.list_queues(**request)
                for url in reply.get("QueueUrls", []):
                    urls[str(url).rsplit("/", 1)[-1]] = str(url)
                token = reply.get("NextToken")
                if not token:
                    break
                request["NextToken"] = token
            limit = asyncio.Semaphore(ATTRIBUTE_CONCURRENCY)

            async def count(name: str, url: str) -> None:
                async with limit:
                    try:
                        reply = await client.get_queue_attributes(
                            QueueUrl=url, AttributeNames=_BACKLOG_ATTRIBUTES
                        )
                    except botocore_errors.ClientError as exc:
                        if sqs_errors.code(exc) in sqs_errors.NOT_FOUND_CODES:
                            return  # deleted since the listing: no figure
                        raise
                attributes = reply.get("Attributes", {})
                counts[name] = sum(int(attributes.get(a, 0)) for a in _BACKLOG_ATTRIBUTES)

            await asyncio.gather(
                *(count(name, urls[name]) for name in set(wanted.values()) if name in urls)
            )
        subs: dict[base.TopicPlan, dict[str, base.SubscriptionBacklog]] = {}
        for (plan, sub), name in wanted.items():
            found = subs.setdefault(plan, {})
            if name in counts:
                found[sub] = base.SubscriptionBacklog(messages=counts[name])
        return {plan: base.TopicBacklog(subscriptions=found) for plan, found in subs.items()}

    async def probe(self, timeout: float) -> None:
        async with self.guard("probing", self._map, timeout=timeout, limited=False):
            await self._ensure_started()
            await self._require_client().list_queues(MaxResults=1)

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        """The operator side's error for an SDK exception (`errors.classify`, shared with
        the client side)."""
        return _common.from_failure(classify(exc), self.endpoint, what, exc)


def _common_prefix(names: list[str]) -> str:
    """The longest string every one of `names` starts with (character by character)."""
    first, last = min(names), max(names)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _attribute(key: str, value: str) -> object:
    """An attribute's value, comparable: RedrivePolicy as parsed JSON (SQS may send the
    count as a string or a number), anything else as sent."""
    if key != "RedrivePolicy" or not value:
        return value
    policy = json.loads(value)
    return (str(policy.get("deadLetterTargetArn")), int(policy.get("maxReceiveCount", 0)))
