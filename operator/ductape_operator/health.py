"""Health rounds per broker endpoint, not per resource (docs/operations.md, "Health rounds").

Every env that points at the same endpoint with the same credentials shares one
provider (the pool's identity, `providers.identity`). A probe and an inventory
listing are made once per endpoint per round, and their result fans out to
every env on that endpoint: a thousand resources on one Redis cost one PING and
one pipelined lookup per health interval, not a thousand of each.

Rounds are single-flight and cached: whoever asks first once the last result is
a round old starts the next one, everybody else awaits or reuses it. A failed
probe is kept for a shorter time (`RETRY_SECONDS`), so recovery shows quickly
while a dead broker still costs a bounded number of probes, whatever the number
of resources. Rounds of different endpoints run concurrently, at most
`concurrency` at once; waiting for that slot is our own limit and never counts
against the probe's timeout.

The backlog reading (docs/operations.md, "Metrics") rides on the same rounds:
the first inventory of a round starts it in the background, once per endpoint,
and its figures fan out to the metrics of every env there (`BacklogSink`). It
never delays a health round and never reaches a status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Protocol

from ductape_operator import errors, metrics
from ductape_operator.providers import base

logger = logging.getLogger(__name__)

#: How long a failed probe is reused before the endpoint is asked again.
RETRY_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Probe:
    """One probe of one endpoint: when it started, how long it took, what failed."""

    at: float
    seconds: float
    error: errors.DuctapeError | None = None

    @property
    def healthy(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True)
class Inventory:
    """Which of the topics wanted on one endpoint exist there, as of one listing."""

    at: float
    checked: frozenset[base.TopicPlan] = frozenset()
    present: frozenset[base.TopicPlan] = frozenset()
    error: errors.DuctapeError | None = None

    def knows(self, plan: base.TopicPlan) -> bool:
        return self.error is None and plan in self.checked

    def has(self, plan: base.TopicPlan) -> bool:
        return plan in self.present


@dataclasses.dataclass(frozen=True)
class Backlog:
    """The backlog of every topic wanted on one endpoint, as of one reading."""

    at: float
    readings: Mapping[base.TopicPlan, base.TopicBacklog] = dataclasses.field(default_factory=dict)
    error: errors.DuctapeError | None = None


Result = Probe | Inventory | Backlog


class BacklogSink(Protocol):
    """Where backlog readings go, per owner (one env of one resource)."""

    def publish(
        self, owner: Hashable, readings: Mapping[base.TopicPlan, base.TopicBacklog]
    ) -> None: ...

    def forget(self, owner: Hashable) -> None: ...


class MetricsSink:
    """Readings to the operator's metrics; an owner is `(namespace, name, env)`.

    Labels are the spec's tags: the topic's tag and the subscription's name.
    """

    def publish(
        self, owner: Hashable, readings: Mapping[base.TopicPlan, base.TopicBacklog]
    ) -> None:
        labels = _labels(owner)
        if labels is None:
            return
        topics: metrics.TopicCounts = {}
        subscriptions: metrics.SubscriptionCounts = {}
        for plan, reading in readings.items():
            topics[plan.tag] = reading.published
            for sub in plan.subscriptions:
                found = reading.subscriptions.get(sub)
                if found is not None:
                    subscriptions[(plan.tag, sub)] = (found.messages, found.oldest_age_seconds)
        metrics.observe_backlog(*labels, topics, subscriptions)

    def forget(self, owner: Hashable) -> None:
        labels = _labels(owner)
        if labels is not None:
            metrics.forget_backlog(*labels)


def _labels(owner: Hashable) -> tuple[str, str, str] | None:
    if isinstance(owner, tuple) and len(owner) == 3 and all(isinstance(p, str) for p in owner):
        return owner[0], owner[1], owner[2]
    return None


@dataclasses.dataclass
class RoundStats:
    """What the last rounds did, for the operator's periodic summary line."""

    probes: int = 0
    inventories: int = 0
    backlogs: int = 0
    last_round_seconds: float = 0.0


class EndpointHealth:
    """Cached, single-flight probes and inventories, keyed by endpoint identity."""

    def __init__(
        self,
        *,
        round_seconds: float,
        probe_timeout: float,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
        sink: BacklogSink | None = None,
    ) -> None:
        self.round_seconds = round_seconds
        self.probe_timeout = probe_timeout
        self.stats = RoundStats()
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._probes: dict[str, Probe] = {}
        self._inventories: dict[str, Inventory] = {}
        self._backlogs: dict[str, Backlog] = {}
        self._backlog_errors: dict[str, str] = {}
        self._sink: BacklogSink = sink or MetricsSink()
        self._inflight: dict[tuple[str, str], asyncio.Task[Result]] = {}
        #: endpoint -> owner -> the topics that owner declares there.
        self._wanted: dict[str, dict[Hashable, frozenset[base.TopicPlan]]] = {}
        self._endpoint_of: dict[Hashable, str] = {}

    # --- who wants what -----------------------------------------------------

    def want(self, endpoint: str, owner: Hashable, plans: Iterable[base.TopicPlan]) -> None:
        """`owner` (one env of one resource) declares `plans` on `endpoint`."""
        previous = self._endpoint_of.get(owner)
        if previous is not None and previous != endpoint:
            self.drop(owner)
        self._endpoint_of[owner] = endpoint
        owners = self._wanted.setdefault(endpoint, {})
        wanted = frozenset(plans)
        if owners.get(owner) != wanted:
            owners[owner] = wanted
            # A topic or subscription removed from the spec loses its series now, not
            # at the next reading; a new one appears with the next reading.
            last = self._backlogs.get(endpoint)
            if last is not None and last.error is None:
                self._sink.publish(owner, _share(last.readings, wanted))

    def drop(self, owner: Hashable) -> None:
        """`owner` is gone; an endpoint nobody wants is forgotten with its results."""
        endpoint = self._endpoint_of.pop(owner, None)
        if endpoint is None:
            return
        owners = self._wanted.get(endpoint, {})
        owners.pop(owner, None)
        self._sink.forget(owner)
        if not owners:
            self._wanted.pop(endpoint, None)
            self._probes.pop(endpoint, None)
            self._inventories.pop(endpoint, None)
            self._backlogs.pop(endpoint, None)
            self._backlog_errors.pop(endpoint, None)

    @property
    def endpoints(self) -> int:
        return len(self._wanted)

    # --- rounds -------------------------------------------------------------

    async def probe(self, endpoint: str, provider: base.Provider) -> Probe:
        """This round's probe of `endpoint`, made now if there is none yet."""
        last = self._probes.get(endpoint)
        if last is not None and self._fresh(last.at, failed=not last.healthy):
            return last
        result = await self._single_flight(
            "probe", endpoint, lambda: self._probe(endpoint, provider)
        )
        assert isinstance(result, Probe)
        return result

    async def inventory(self, endpoint: str, provider: base.Provider) -> Inventory:
        """This round's listing of every topic wanted on `endpoint`; starts the round's
        backlog reading too, in the background."""
        self._start_backlog(endpoint, provider)
        last = self._inventories.get(endpoint)
        if last is not None and self._fresh(last.at, failed=last.error is not None):
            return last
        wanted = frozenset().union(*self._wanted.get(endpoint, {}).values())
        result = await self._single_flight(
            "inventory", endpoint, lambda: self._inventory(endpoint, provider, wanted)
        )
        assert isinstance(result, Inventory)
        return result

    async def backlog(self, endpoint: str, provider: base.Provider) -> Backlog:
        """This round's backlog reading of `endpoint`, made now if there is none yet."""
        last = self._backlogs.get(endpoint)
        if last is not None and self._fresh(last.at, failed=last.error is not None):
            return last
        result = await self._single_flight(
            "backlog", endpoint, lambda: self._backlog(endpoint, provider)
        )
        assert isinstance(result, Backlog)
        return result

    def _start_backlog(self, endpoint: str, provider: base.Provider) -> None:
        last = self._backlogs.get(endpoint)
        if last is not None and self._fresh(last.at, failed=last.error is not None):
            return
        if endpoint in self._wanted:
            self._start("backlog", endpoint, lambda: self._backlog(endpoint, provider))

    def _fresh(self, at: float, *, failed: bool) -> bool:
        age = self._clock() - at
        return age < (min(RETRY_SECONDS, self.round_seconds) if failed else self.round_seconds)

    async def _single_flight(
        self, kind: str, endpoint: str, run: Callable[[], Awaitable[Result]]
    ) -> Result:
        # Shielded: one waiter being cancelled must not cancel the round for the others.
        return await asyncio.shield(self._start(kind, endpoint, run))

    def _start(
        self, kind: str, endpoint: str, run: Callable[[], Awaitable[Result]]
    ) -> asyncio.Task[Result]:
        """The round of `kind` in flight for `endpoint`, started now if there is none."""
        key = (kind, endpoint)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._bounded(run))
            self._inflight[key] = task

            def done(finished: asyncio.Task[Result]) -> None:
                if self._inflight.get(key) is finished:
                    del self._inflight[key]

            task.add_done_callback(done)
        return task

    async def _bounded(self, run: Callable[[], Awaitable[Result]]) -> Result:
        async with self._slots:
            started = self._clock()
            result = await run()
            self.stats.last_round_seconds = self._clock() - started
            return result

    # The round stores its own result before it completes: a caller arriving between
    # the round's end and its waiters resuming must find it, not start another one.

    async def _probe(self, endpoint: str, provider: base.Provider) -> Probe:
        started = self._clock()
        self.stats.probes += 1
        error: errors.DuctapeError | None = None
        try:
            await provider.probe(self.probe_timeout)
        except errors.DuctapeError as exc:
            error = exc
        result = self._probes[endpoint] = Probe(
            at=started, seconds=self._clock() - started, error=error
        )
        return result

    async def _inventory(
        self, endpoint: str, provider: base.Provider, wanted: frozenset[base.TopicPlan]
    ) -> Inventory:
        started = self._clock()
        self.stats.inventories += 1
        try:
            result = Inventory(at=started, checked=wanted, present=await provider.inventory(wanted))
        except errors.DuctapeError as exc:
            result = Inventory(at=started, error=exc)
        self._inventories[endpoint] = result
        return result

    async def _backlog(self, endpoint: str, provider: base.Provider) -> Backlog:
        started = self._clock()
        self.stats.backlogs += 1
        owners = dict(self._wanted.get(endpoint, {}))
        wanted = frozenset().union(*owners.values())
        try:
            result = Backlog(at=started, readings=await provider.backlog(wanted))
        except errors.DuctapeError as exc:
            result = Backlog(at=started, error=exc)
        except Exception as exc:  # an SDK error nobody mapped: metrics must not take us down
            logger.exception("unexpected error reading the backlog of %s", provider.endpoint)
            result = Backlog(at=started, error=errors.BrokerError(f"unexpected {exc!r}"))
        self._backlogs[endpoint] = result
        self._report(endpoint, provider, result)
        # Owners that came, went or changed while the reading ran: as they are now.
        for owner in owners:
            plans = self._wanted.get(endpoint, {}).get(owner)
            if plans is None:
                continue
            if result.error is None:
                self._sink.publish(owner, _share(result.readings, plans))
            else:
                # An unknown backlog is absent, not its last value.
                self._sink.forget(owner)
        return result

    def _report(self, endpoint: str, provider: base.Provider, result: Backlog) -> None:
        """One log line when reading the backlog starts or stops failing, not one a round."""
        before = self._backlog_errors.get(endpoint)
        if result.error is None:
            if before is not None:
                del self._backlog_errors[endpoint]
                logger.info("reading the backlog of %s works again", provider.endpoint)
            return
        if before != result.error.message:
            self._backlog_errors[endpoint] = result.error.message
            logger.warning("cannot read the backlog: %s", result.error.message)


def _share(
    readings: Mapping[base.TopicPlan, base.TopicBacklog], plans: frozenset[base.TopicPlan]
) -> dict[base.TopicPlan, base.TopicBacklog]:
    """The readings of one owner's topics."""
    return {plan: readings[plan] for plan in plans if plan in readings}
