"""`message.received`, the hot-path twin of `Message(...)`: the same message, slot for slot."""

from __future__ import annotations

from typing import Any

from ductape_operator.messaging import message as message_


class _Settler:
    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        pass


def test_received_builds_what_the_constructor_builds() -> None:
    settler = _Settler()
    args: tuple[Any, ...] = (
        b"payload",
        {"a": "b"},
        "id-1",
        message_.JSON,
        "orders",
        "billing",
        settler,
        ("token", 7),
        "key",
        3,
        12.5,
    )
    built = message_.Message(*args)
    fast = message_.received(*args)
    slots = message_.Message.__slots__
    assert {name: getattr(fast, name) for name in slots} == {
        name: getattr(built, name) for name in slots
    }
    assert not fast.settled and fast.received_at == 12.5
