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
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable

from ductape_operator import errors
from ductape_operator.providers import base

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


@dataclasses.dataclass
class RoundStats:
    """What the last rounds did, for the operator's periodic summary line."""

    probes: int = 0
    inventories: int = 0
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
    ) -> None:
        self.round_seconds = round_seconds
        self.probe_timeout = probe_timeout
        self.stats = RoundStats()
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._probes: dict[str, Probe] = {}
        self._inventories: dict[str, Inventory] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[Probe | Inventory]] = {}
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
        self._wanted.setdefault(endpoint, {})[owner] = frozenset(plans)

    def drop(self, owner: Hashable) -> None:
        """`owner` is gone; an endpoint nobody wants is forgotten with its results."""
        endpoint = self._endpoint_of.pop(owner, None)
        if endpoint is None:
            return
        owners = self._wanted.get(endpoint, {})
        owners.pop(owner, None)
        if not owners:
            self._wanted.pop(endpoint, None)
            self._probes.pop(endpoint, None)
            self._inventories.pop(endpoint, None)

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
        """This round's listing of every topic wanted on `endpoint`."""
        last = self._inventories.get(endpoint)
        if last is not None and self._fresh(last.at, failed=last.error is not None):
            return last
        wanted = frozenset().union(*self._wanted.get(endpoint, {}).values())
        result = await self._single_flight(
            "inventory", endpoint, lambda: self._inventory(endpoint, provider, wanted)
        )
        assert isinstance(result, Inventory)
        return result

    def _fresh(self, at: float, *, failed: bool) -> bool:
        age = self._clock() - at
        return age < (min(RETRY_SECONDS, self.round_seconds) if failed else self.round_seconds)

    async def _single_flight(
        self, kind: str, endpoint: str, run: Callable[[], Awaitable[Probe | Inventory]]
    ) -> Probe | Inventory:
        key = (kind, endpoint)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._bounded(run))
            self._inflight[key] = task

            def done(finished: asyncio.Task[Probe | Inventory]) -> None:
                if self._inflight.get(key) is finished:
                    del self._inflight[key]

            task.add_done_callback(done)
        # Shielded: one waiter being cancelled must not cancel the round for the others.
        return await asyncio.shield(task)

    async def _bounded(self, run: Callable[[], Awaitable[Probe | Inventory]]) -> Probe | Inventory:
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
