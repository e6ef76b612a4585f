"""`message.received`, the hot-path twin of `Message(...)`: the same message, slot for slot."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_build_many_builds_what_build_builds() -> None:
    payloads: list[Any] = [b"raw", bytearray(b"array"), "text", {"n": 1}]
    many = message_.OutgoingMessage.build_many(payloads, key="k", headers={"trace": "t"})
    one = [message_.OutgoingMessage.build(p, key="k", headers={"trace": "t"}) for p in payloads]
    same = ("content_type", "data", "explicit_id", "headers", "key")
    assert [{name: getattr(m, name) for name in same} for m in many] == [
        {name: getattr(m, name) for name in same} for m in one
    ]
    assert all(type(m.data) is bytes for m in many)
    assert len({m.id for m in many + one}) == 8, "every message its own id"
    assert many[0].headers is not many[1].headers, "each message its own headers"
    with pytest.raises(ValueError, match="reserved"):
        message_.OutgoingMessage.build_many([b"x"], headers={"ductape-id": "mine"})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        message_.OutgoingMessage.build_many([object()])
