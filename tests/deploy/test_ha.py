"""HA: two replicas peer through the chart's KopfPeering; exactly one reconciles, and
when it dies (SIGKILL: no goodbye) the other takes over."""

from __future__ import annotations

import pathlib
import signal
import uuid
from typing import Any

from tests.deploy.conftest import OperatorProcess, Release, sa_operator, wait_ready
from tests.e2e import kit

LIFETIME = 10  # seconds; the chart's default is 60


def redis_broker(name: str) -> dict[str, Any]:
    return kit.broker_manifest(name, envs=[("dev", "REDIS")], topics=kit.topics_for(name, 1))


def handled(proc: OperatorProcess, name: str) -> bool:
    """The replica saw the resource at all (--verbose logs every handling cycle with the
    body; a paused replica does not even watch it)."""
    return name in proc.log()


def peers(admin: kit.Kube, namespace: str) -> dict[str, Any]:
    peering = admin.custom.get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", "ductape-operator"
    )
    status: dict[str, Any] = peering.get("status") or {}
    return status


def test_one_replica_reconciles_and_a_standby_takes_over(
    admin: kit.Kube,
    release: Release,
    operators: list[OperatorProcess],
    tmp_path: pathlib.Path,
) -> None:
    namespace = release.watched[1]
    ids = [f"replica-{i}-{uuid.uuid4().hex[:4]}" for i in range(2)]
    replicas = {
        pod_id: sa_operator(
            release,
            tmp_path / f"{pod_id}.log",
            namespace,
            "--require-peering",
            f"--peering-lifetime={LIFETIME}",
            # Distinct priorities make the leader known in advance.
            f"--peering-priority={100 - i}",
            env={"POD_ID": pod_id},
        )
        for i, pod_id in enumerate(ids)
    }
    leader, standby = replicas[ids[0]], replicas[ids[1]]
    # The leader first: replicas that start in the same instant can both work for the
    # moment it takes the peering object to show them each other (kopf peering is not a
    # lock; reconciling is idempotent, so that overlap is harmless). Steady state is tested.
    operators.append(leader.start())
    kit.wait_until(
        lambda: "Resuming operations" in leader.log() and ids[0] in peers(admin, namespace),
        timeout=60,
        what="the first replica leading",
    )
    operators.append(standby.start())
    kit.wait_until(
        lambda: set(peers(admin, namespace)) >= set(ids),
        timeout=60,
        what="both replicas in the KopfPeering",
    )
    first = kit.unique("ha")
    admin.apply(namespace, redis_broker(first))
    wait_ready(admin, namespace, first, [leader, standby], timeout=90)
    assert handled(leader, first), leader.log()[-3000:]
    assert not handled(standby, first), "the standby reconciled too"
    # --require-peering: a replica starts paused and resumes only once the peering object
    # shows it leads; the standby never did.
    assert "Resuming operations" not in standby.log()

    leader.stop(signal.SIGKILL)
    second = kit.unique("ha")
    admin.apply(namespace, redis_broker(second))
    wait_ready(admin, namespace, second, [standby], timeout=LIFETIME * 3 + 60)
    assert handled(standby, second), standby.log()[-3000:]
    assert "Resuming operations" in standby.log()
    standby.assert_alive()
    # The dead leader's record is gone once the standby cleaned up after it.
    kit.wait_until(
        lambda: ids[0] not in peers(admin, namespace),
        timeout=LIFETIME * 3,
        what="the dead replica's peering record cleaned",
    )
