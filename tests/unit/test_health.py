"""Per-endpoint health rounds and the providers' own concurrency limit, without a network.

A fake provider counts its probes and listings; a fake clock moves rounds on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from ductape_operator import errors, health, models
from ductape_operator.providers import _common, base

A = base.TopicPlan(tag="a", name="a", subscriptions=("s",))
B = base.TopicPlan(tag="b", name="b")
C = base.TopicPlan(tag="c", name="c")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Fake:
    """Counts probes and listings; `down` makes the probe fail."""

    endpoint = "redis://fake:6379/0"

    def __init__(self, present: Collection[base.TopicPlan] = ()) -> None:
        self.probes = 0
        self.listings: list[frozenset[base.TopicPlan]] = []
        self.present = frozenset(present)
        self.down = False

    async def probe(self, timeout: float) -> None:
        self.probes += 1
        await asyncio.sleep(0)  # let concurrent callers pile up on the round in flight
        if self.down:
            raise errors.BrokerUnreachableError(f"{self.endpoint}: down")

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        self.listings.append(frozenset(topics))
        await asyncio.sleep(0)
        return self.present & frozenset(topics)


def rounds(clock: Clock) -> health.EndpointHealth:
    return health.EndpointHealth(round_seconds=10.0, probe_timeout=1.0, clock=clock)


async def test_many_envs_on_one_endpoint_cost_one_probe_per_round() -> None:
    clock, fake = Clock(), Fake()
    checks = rounds(clock)
    results = await asyncio.gather(*(checks.probe("e1", fake) for _ in range(500)))  # type: ignore[arg-type]
    assert fake.probes == 1
    assert all(r.healthy for r in results)
    clock.now += 9.9
    await checks.probe("e1", fake)  # type: ignore[arg-type]
    assert fake.probes == 1, "a result younger than a round is reused"
    clock.now += 0.2
    await asyncio.gather(*(checks.probe("e1", fake) for _ in range(500)))  # type: ignore[arg-type]
    assert fake.probes == 2


async def test_endpoints_are_probed_separately() -> None:
    clock, first, second = Clock(), Fake(), Fake()
    checks = rounds(clock)
    await asyncio.gather(checks.probe("e1", first), checks.probe("e2", second))  # type: ignore[arg-type]
    assert (first.probes, second.probes) == (1, 1)


async def test_a_failed_probe_is_retried_sooner_but_not_per_resource() -> None:
    clock, fake = Clock(), Fake()
    fake.down = True
    checks = rounds(clock)
    results = await asyncio.gather(*(checks.probe("e1", fake) for _ in range(100)))  # type: ignore[arg-type]
    assert fake.probes == 1
    assert all(r.error is not None and "down" in r.error.message for r in results)
    clock.now += health.RETRY_SECONDS - 0.1
    await checks.probe("e1", fake)  # type: ignore[arg-type]
    assert fake.probes == 1
    fake.down = False
    clock.now += 0.2
    recovered = await checks.probe("e1", fake)  # type: ignore[arg-type]
    assert fake.probes == 2 and recovered.healthy


async def test_one_inventory_covers_every_owner_of_the_endpoint() -> None:
    clock, fake = Clock(), Fake(present=[A, C])
    checks = rounds(clock)
    checks.want("e1", ("ns", "one", "dev"), [A, B])
    checks.want("e1", ("ns", "two", "dev"), [C])
    checks.want("e2", ("ns", "three", "dev"), [B])
    listings = await asyncio.gather(*(checks.inventory("e1", fake) for _ in range(50)))  # type: ignore[arg-type]
    assert fake.listings == [frozenset({A, B, C})]
    listing = listings[0]
    assert listing.knows(A) and listing.has(A)
    assert listing.knows(B) and not listing.has(B)
    assert listing.has(C)


async def test_an_owner_that_moves_or_goes_is_no_longer_listed() -> None:
    clock, fake = Clock(), Fake()
    checks = rounds(clock)
    checks.want("e1", "one", [A])
    checks.want("e1", "two", [B])
    checks.want("e2", "one", [A])  # moved to another endpoint
    await checks.inventory("e1", fake)  # type: ignore[arg-type]
    assert fake.listings[-1] == frozenset({B})
    checks.drop("two")
    assert checks.endpoints == 1
    clock.now += 11
    listing = await checks.inventory("e1", fake)  # type: ignore[arg-type]
    assert fake.listings[-1] == frozenset() and not listing.knows(B)


async def test_a_cancelled_waiter_does_not_cancel_the_round_for_the_others() -> None:
    clock = Clock()
    started = asyncio.Event()
    release = asyncio.Event()

    class Slow(Fake):
        async def probe(self, timeout: float) -> None:
            self.probes += 1
            started.set()
            await release.wait()

    slow = Slow()
    checks = rounds(clock)
    first = asyncio.create_task(checks.probe("e1", slow))  # type: ignore[arg-type]
    second = asyncio.create_task(checks.probe("e1", slow))  # type: ignore[arg-type]
    await started.wait()
    first.cancel()
    release.set()
    assert (await second).healthy
    assert slow.probes == 1


# --- the providers' own limit --------------------------------------------------


class Limited(_common.ProviderBase):
    """A provider whose operations only count how many run at once."""

    TYPE = models.MessageBrokerTypes.REDIS

    def __init__(self, concurrency: int) -> None:
        super().__init__(models.BrokerConfig(), base.SecretValues(), concurrency=concurrency)
        self.running = 0
        self.peak = 0

    @property
    def endpoint(self) -> str:
        return "redis://limited:6379/0"

    async def _open(self) -> None:
        async with self.guard("connecting", self._map, limited=False):
            pass

    async def _close(self) -> None:
        pass

    async def operation(self, *, nested: bool = False) -> None:
        async with self.guard("operating", self._map, timeout=0.5):
            if nested:
                async with self.guard("nested", self._map, timeout=0.5):
                    pass
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.01)
            self.running -= 1

    def _map(self, exc: Exception, what: str) -> errors.DuctapeError:
        return errors.ProvisioningError(f"{what}: {exc}")


async def test_operations_queue_on_our_side_and_waiting_is_not_a_timeout() -> None:
    provider = Limited(concurrency=4)
    # 200 operations of 10 ms through 4 slots take ~0.5 s in all, far beyond each
    # operation's 0.5 s timeout if waiting for a slot counted: none may time out.
    await asyncio.gather(*(provider.operation() for _ in range(200)))
    assert provider.peak == 4


async def test_a_nested_guard_does_not_wait_for_a_second_slot() -> None:
    provider = Limited(concurrency=1)
    await asyncio.wait_for(provider.operation(nested=True), timeout=5)


async def test_a_caller_right_after_a_round_ends_reuses_it() -> None:
    """The round caches its result before its task completes. A caller whose first step
    runs between the round's end and its waiters resuming (the round no longer in
    flight) must reuse that result, not start a second probe."""
    clock = Clock()
    checks = rounds(clock)
    late: list[asyncio.Task[health.Probe]] = []

    class Busy(Fake):
        async def probe(self, timeout: float) -> None:
            self.probes += 1
            if self.probes == 1:
                # Scheduled now, so its first step runs right after the round ends and
                # before the waiter of the round resumes.
                loop = asyncio.get_running_loop()
                loop.call_soon(lambda: late.append(asyncio.ensure_future(checks.probe("e1", self))))  # type: ignore[arg-type]

    busy = Busy()
    await checks.probe("e1", busy)  # type: ignore[arg-type]
    await late[0]
    assert busy.probes == 1


# --- backlog readings ------------------------------------------------------------


class Sink:
    """Records what the rounds publish per owner, as the metrics would show it."""

    def __init__(self) -> None:
        self.shown: dict[object, dict[str, int]] = {}

    def publish(self, owner: object, readings: dict[base.TopicPlan, base.TopicBacklog]) -> None:
        self.shown[owner] = {
            f"{plan.tag}/{sub}": found.messages
            for plan, reading in readings.items()
            for sub, found in reading.subscriptions.items()
        }

    def forget(self, owner: object) -> None:
        self.shown.pop(owner, None)


class Counting(Fake):
    def __init__(self) -> None:
        super().__init__()
        self.readings: list[frozenset[base.TopicPlan]] = []
        self.failing = False

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> dict[base.TopicPlan, base.TopicBacklog]:
        self.readings.append(frozenset(topics))
        await asyncio.sleep(0)
        if self.failing:
            raise errors.BrokerUnreachableError(f"{self.endpoint}: down")
        return {
            plan: base.TopicBacklog(
                subscriptions={s: base.SubscriptionBacklog(messages=3) for s in plan.subscriptions}
            )
            for plan in topics
        }


async def test_one_backlog_reading_per_round_fans_out_to_every_owner() -> None:
    clock, fake, sink = Clock(), Counting(), Sink()
    checks = health.EndpointHealth(round_seconds=10.0, probe_timeout=1.0, clock=clock, sink=sink)
    D = base.TopicPlan(tag="d", name="a", subscriptions=("s", "t"))  # same stream, other tag
    checks.want("e1", ("ns", "one", "dev"), [A])
    checks.want("e1", ("ns", "two", "dev"), [D, B])
    # Every resource's health round asks for the inventory; one reading starts.
    await asyncio.gather(*(checks.inventory("e1", fake) for _ in range(100)))  # type: ignore[arg-type]
    reading = await checks.backlog("e1", fake)  # type: ignore[arg-type]
    assert fake.readings == [frozenset({A, B, D})] and reading.error is None
    assert sink.shown == {
        ("ns", "one", "dev"): {"a/s": 3},
        ("ns", "two", "dev"): {"d/s": 3, "d/t": 3},
    }
    clock.now += 5
    await checks.inventory("e1", fake)  # type: ignore[arg-type]
    assert len(fake.readings) == 1, "a reading younger than a round is reused"

    # A topic removed from the spec loses its series at once; a gone owner all of them.
    checks.want("e1", ("ns", "two", "dev"), [B])
    assert sink.shown[("ns", "two", "dev")] == {}
    checks.drop(("ns", "one", "dev"))
    assert ("ns", "one", "dev") not in sink.shown

    # A reading that fails leaves the series absent, not stale.
    checks.want("e1", ("ns", "one", "dev"), [A])
    fake.failing = True
    clock.now += 11
    failed = await checks.backlog("e1", fake)  # type: ignore[arg-type]
    assert failed.error is not None and len(fake.readings) == 2
    assert sink.shown == {}
