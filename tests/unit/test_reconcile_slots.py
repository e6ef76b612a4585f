"""`reconcile.Slots`: bounded reconciles, changes ahead of health rounds.

A burst of creates longer than a health interval must not wait behind the health
rounds of resources already Ready (docs/operations.md, "A burst of creates").
"""

from __future__ import annotations

import asyncio

from ductape_operator import reconcile


async def _hold(slots: reconcile.Slots, name: str, urgent: bool, order: list[str],
                release: asyncio.Event) -> None:  # fmt: skip
    async with slots.hold(urgent=urgent):
        order.append(name)
        await release.wait()


async def _settle() -> None:
    """Let every ready task run until it blocks (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_urgent_waiters_go_before_earlier_health_rounds() -> None:
    slots = reconcile.Slots(1)
    order: list[str] = []
    gates = {name: asyncio.Event() for name in ("first", "h1", "h2", "c1", "c2")}
    tasks = [asyncio.create_task(_hold(slots, "first", True, order, gates["first"]))]
    await _settle()
    for name, urgent in (("h1", False), ("h2", False), ("c1", True), ("c2", True)):
        tasks.append(asyncio.create_task(_hold(slots, name, urgent, order, gates[name])))
        await _settle()
    assert order == ["first"]
    for name in ("first", "c1", "c2", "h1"):
        gates[name].set()
        await _settle()
    gates["h2"].set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert order == ["first", "c1", "c2", "h1", "h2"]


async def test_at_most_size_hold_a_slot() -> None:
    slots = reconcile.Slots(3)
    holding = 0
    most = 0

    async def one(urgent: bool) -> None:
        nonlocal holding, most
        async with slots.hold(urgent=urgent):
            holding += 1
            most = max(most, holding)
            await asyncio.sleep(0)
            holding -= 1

    await asyncio.wait_for(asyncio.gather(*(one(i % 2 == 0) for i in range(40))), timeout=5)
    assert most == 3
    assert holding == 0


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    slots = reconcile.Slots(1)
    order: list[str] = []
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(slots, "holder", True, order, release))
    await _settle()
    waiting = asyncio.create_task(_hold(slots, "cancelled", True, order, asyncio.Event()))
    await _settle()
    waiting.cancel()
    await _settle()
    release.set()
    await asyncio.wait_for(holder, timeout=5)
    # The slot is free again: a newcomer takes it at once.
    await asyncio.wait_for(_hold(slots, "later", False, order, release), timeout=5)
    assert order == ["holder", "later"]
    assert waiting.cancelled()


async def test_a_waiter_cancelled_once_granted_passes_the_slot_on() -> None:
    slots = reconcile.Slots(1)
    order: list[str] = []
    held = slots.hold(urgent=True)
    await held.__aenter__()
    granted_then_cancelled = asyncio.create_task(
        _hold(slots, "never", True, order, asyncio.Event())
    )
    await _settle()
    # Releasing hands the slot over without yielding; the waiter is cancelled before
    # it runs, so it must hand the slot on in turn.
    await held.__aexit__(None, None, None)
    granted_then_cancelled.cancel()
    await _settle()
    assert granted_then_cancelled.cancelled()
    await asyncio.wait_for(_hold(slots, "next", False, order, _set()), timeout=5)
    assert order == ["next"]


def _set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
