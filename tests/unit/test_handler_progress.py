"""kopf's progress records as the operator keeps them: a retry postponed for one spec does
not hold back the next spec (docs/operations.md, "Retries").

Read back through kopf's own `HandlerState`, which decides whether a handler sleeps: that
is what the operator relies on, so that is what is asserted.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf
from kopf._core.actions import progression

from ductape_operator import handlers

CREATE = kopf.HandlerId("create")
#: Far enough ahead that no test run reaches it.
LATER = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
POSTPONED: kopf.ProgressRecord = {
    "started": "2026-12-05T21:00:00.000000+00:00",
    "delayed": LATER.isoformat(timespec="microseconds"),
    "purpose": "create",
    "retries": 1,
    "success": False,
    "failure": False,
    "message": "not ready yet",
}


def broker(generation: int, annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "metadata": {
                "name": "bus",
                "namespace": "default",
                "generation": generation,
                "annotations": annotations or {},
            }
        }
    )


def stored(record: kopf.ProgressRecord, generation: int) -> dict[str, str]:
    """The annotations the operator writes for `record`, handled at `generation`."""
    patch = kopf.Patch()
    handlers.HandlerProgress(prefix=handlers.PREFIX).store(
        key=CREATE, record=record, body=broker(generation), patch=patch
    )
    annotations: dict[str, str] = patch["metadata"]["annotations"]
    return annotations


def read_back(annotations: dict[str, str], generation: int) -> Any:
    storage = handlers.HandlerProgress(prefix=handlers.PREFIX)
    record = storage.fetch(key=CREATE, body=broker(generation, annotations))
    assert record is not None
    return progression.HandlerState.from_storage(record, basetime=progression._get_basetime())


async def test_a_postponed_retry_still_sleeps_while_the_spec_is_the_same() -> None:
    state = read_back(stored(POSTPONED, generation=3), generation=3)

    assert state.sleeping
    assert state.retries == 1
    # What kopf compares before it stores a record again: equal, so a sleeping handler
    # costs no patch (one that changed nothing left kopf waiting 15 s for its own write).
    assert state.as_in_storage() == state._origin


async def test_a_postponed_retry_wakes_up_once_the_spec_changed() -> None:
    state = read_back(stored(POSTPONED, generation=3), generation=4)

    assert not state.sleeping and state.awakened
    assert state.retries == 1, "the attempts so far are kept"


async def test_a_record_of_an_earlier_operator_keeps_its_delay() -> None:
    # Written without the generation, as operators before this one did.
    annotations = stored(POSTPONED, generation=3)
    key = next(iter(annotations))
    annotations[key] = annotations[key].replace(',"generation":3', "")
    assert "generation" not in annotations[key]

    assert read_back(annotations, generation=4).sleeping


def test_only_a_postponed_record_carries_the_generation() -> None:
    finished: kopf.ProgressRecord = {**POSTPONED, "delayed": None, "success": True}

    (postponed,) = stored(POSTPONED, generation=3).values()
    (done,) = stored(finished, generation=3).values()

    assert '"generation":3' in postponed
    assert "generation" not in done


def test_postponed_for_older_spec() -> None:
    body = {"metadata": {"generation": 2}}

    assert handlers.postponed_for_older_spec({"delayed": "t", "generation": 1}, body)
    assert not handlers.postponed_for_older_spec({"delayed": "t", "generation": 2}, body)
    assert not handlers.postponed_for_older_spec({"delayed": None, "generation": 1}, body)
    assert not handlers.postponed_for_older_spec({"delayed": "t"}, body)
