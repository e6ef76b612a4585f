"""Events wait for one of a few slots, made per event loop (no API server needed)."""

from __future__ import annotations

import asyncio

from ductape_operator import kube


async def _slot() -> asyncio.Semaphore:
    return kube._event_slot()


async def _two() -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
    return kube._event_slot(), kube._event_slot()


def test_event_slots_are_shared_within_a_loop_and_made_anew_for_another() -> None:
    first, again = asyncio.run(_two())
    assert first is again
    # A waiter binds a semaphore to its loop: a second loop must not reuse it.
    other = asyncio.run(_slot())
    assert other is not first


def test_no_more_events_than_the_slots_are_posted_at_once() -> None:
    async def run() -> int:
        slots = kube._event_slot()
        running = peak = 0

        async def post() -> None:
            nonlocal running, peak
            async with slots:
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(post() for _ in range(10)))
        return peak

    assert asyncio.run(run()) == kube.EVENT_CONCURRENCY
