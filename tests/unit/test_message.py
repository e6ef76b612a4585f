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


def _outgoing_slots(m: message_.OutgoingMessage) -> dict[str, Any]:
    return {name: getattr(m, name) for name in message_.OutgoingMessage.__slots__}


def test_build_builds_what_the_constructor_builds() -> None:
    fast = message_.OutgoingMessage.build({"n": 1}, key="k", headers={"h": "v"}, message_id="i")
    built = message_.OutgoingMessage(
        b'{"n":1}',
        content_type=message_.JSON,
        headers={"h": "v"},
        id="i",
        key="k",
        explicit_id=True,
    )
    assert _outgoing_slots(fast) == _outgoing_slots(built)


def test_build_many_builds_what_build_builds() -> None:
    payloads = [b"raw", bytearray(b"ba"), "text", {"n": 1}]
    many = message_.OutgoingMessage.build_many(payloads, key="k", headers={"h": "v"})
    one = [message_.OutgoingMessage.build(p, key="k", headers={"h": "v"}) for p in payloads]
    ids = {m.id for m in many + one}
    assert len(ids) == 2 * len(payloads)  # every message its own id
    for fast, built in zip(many, one, strict=True):
        assert {**_outgoing_slots(fast), "id": None} == {**_outgoing_slots(built), "id": None}
        assert type(fast.data) is bytes
    # Each message its own headers: a transport changing one changes no other.
    assert many[0].headers is not many[1].headers


def test_ids_are_unique_and_of_one_length() -> None:
    ids = [message_.new_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert {len(i) for i in ids} == {24}


def test_build_many_refuses_what_build_refuses() -> None:
    with pytest.raises(ValueError, match="reserved"):
        message_.OutgoingMessage.build_many([b"x"], headers={"ductape-id": "mine"})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        message_.OutgoingMessage.build_many([object()])
