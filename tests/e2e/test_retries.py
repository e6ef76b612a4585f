"""A retry postponed for a broken spec does not hold back the fix (docs/operations.md,
"Retries").

The session's operator retries every 3 s (its health interval), too soon to tell a fix
picked up at once from one picked up by the retry: this test runs an operator of its own
with the default cap, 15 s, for its namespace only, and stops the session's meanwhile (as
tests/e2e/test_env_filter.py does).
"""

from __future__ import annotations

import datetime
import json
import pathlib

from tests.e2e import kit
from tests.e2e.conftest import PROBE_TIMEOUT, OperatorProcess

PROGRESS = "ductape.app/create"
MARGIN = datetime.timedelta(seconds=5)


def _postponed_until(obj: dict[str, object]) -> datetime.datetime | None:
    """When the create handler's retry is due, from kopf's progress annotation."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}  # type: ignore[attr-defined]
    record = annotations.get(PROGRESS)
    if record is None:
        return None
    delayed = json.loads(record).get("delayed")
    return datetime.datetime.fromisoformat(delayed) if delayed else None


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_fixed_spec_is_reconciled_before_the_retry_of_the_broken_one_is_due(
    kube: kit.Kube, namespace: str, operator: OperatorProcess, tmp_path: pathlib.Path
) -> None:
    name = kit.unique("fix")
    manifest = kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name))
    good = manifest["spec"]["envs"][0]
    broken = {**good, "config": {**good["config"], "host": "no-such-broker.invalid"}}
    manifest["spec"]["envs"] = [broken]
    own = OperatorProcess(
        tmp_path / "retries-operator.log",
        [
            "--standalone",
            "--verbose",
            f"--namespace={namespace}",
            "--health-interval=60",  # retries every 15 s, the cap
            f"--probe-timeout={PROBE_TIMEOUT}",
        ],
    )
    operator.stop()
    try:
        own.start()
        kube.apply(namespace, manifest)
        kube.wait_condition(namespace, name, "False", "BrokerUnreachable")
        due = kit.wait_until(
            lambda: _postponed_until(kube.get(namespace, name) or {}),
            timeout=30,
            what=f"{name}'s retry to be postponed",
        )

        kube.patch(namespace, name, {"spec": {"envs": [good]}})
        obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady", timeout=60)

        # The retry comes due 15 s after the failure, and the fix is patched within about a
        # second of it; the margin covers the condition's whole-second time stamp (a Ready
        # written by the retry itself reads up to a second before it) and a slow machine.
        ready_at = _time(kit.condition_of(obj)["lastTransitionTime"])  # type: ignore[index]
        assert ready_at < due - MARGIN, (
            f"Ready at {ready_at}, not well before the broken spec's retry was due ({due}):"
            " the fix waited for it"
        )
        assert kube.secret(namespace, f"{name}-dev") is not None
        own.assert_alive()
        assert "Traceback" not in own.log()
    finally:
        kube.delete_and_wait(namespace, name, by="this test's operator")
        own.stop()
        operator.start()
