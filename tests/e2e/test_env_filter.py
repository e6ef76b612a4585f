"""`--env`: an operator reconciles only the env slugs it is given (one cluster per environment).

The session's operator watches every namespace and reconciles every env, so it
would race a filtered one: it is stopped for this test and started again after.
The filtered operator watches this test's namespace only.
"""

from __future__ import annotations

import pathlib

from tests.e2e import kit, raw
from tests.e2e.conftest import HEALTH_INTERVAL, PROBE_TIMEOUT, OperatorProcess


async def test_an_env_filtered_operator_provisions_only_its_env(
    kube: kit.Kube, namespace: str, operator: OperatorProcess, tmp_path: pathlib.Path
) -> None:
    name = kit.unique("envs")
    topic = f"{name}.t0"
    for secret_name, data in kit.credential_secrets("RABBITMQ").items():
        kube.create_secret(namespace, secret_name, data)
    manifest = kit.broker_manifest(
        name, envs=[("prd", "REDIS"), ("dev", "RABBITMQ")], topics=kit.topics_for(name, count=1)
    )
    filtered = OperatorProcess(
        tmp_path / "filtered-operator.log",
        [
            "--standalone",
            "--verbose",
            f"--namespace={namespace}",
            "--env=prd",
            f"--health-interval={HEALTH_INTERVAL}",
            f"--probe-timeout={PROBE_TIMEOUT}",
        ],
    )
    operator.stop()
    try:
        filtered.start()
        kube.apply(namespace, manifest)
        obj = kube.wait_condition(namespace, name, "True", "AllEnvsReady")

        assert [env["slug"] for env in obj["status"]["envs"]] == ["prd"]
        # Exactly one env is reconciled here: the resource is a Provisioned Service.
        assert obj["status"]["binding"] == {"name": f"{name}-prd"}
        prd = kube.secret(namespace, f"{name}-prd")
        assert prd is not None and prd["type"] == "redis"
        assert await raw.exists("REDIS", kit.topics_json(prd)["t0"])

        assert kube.secret(namespace, f"{name}-dev") is None, "dev is another cluster's env"
        dev_entry = {"name": topic, "subscriptions": {}}
        assert not await raw.exists("RABBITMQ", dev_entry), "dev's exchange was created"

        kube.delete_and_wait(namespace, name, by="the filtered operator")
        filtered.assert_alive()
        assert "Traceback" not in filtered.log()
    finally:
        filtered.stop()
        operator.start()
