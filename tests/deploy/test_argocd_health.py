"""The Argo CD health check, run by gopher-lua (the Lua VM Argo CD itself embeds).

Argo CD sets the global `obj` to the resource and reads the table the script returns;
the harness below does the same with glua, built by hack/build-glua.sh.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"


@pytest.fixture(scope="module")
def glua() -> str:
    out = subprocess.run(
        [str(ROOT / "hack" / "build-glua.sh")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def lua_literal(value: Any) -> str:
    """A JSON value as a Lua constructor (JSON null becomes an absent field, as in Argo CD)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua string literal here
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(type(value))


def health(glua: str, tmp_path: pathlib.Path, obj: dict[str, Any]) -> tuple[str, str]:
    script = tmp_path / "run.lua"
    script.write_text(
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(HEALTH_LUA))})\n"
        'print(hs.status .. "\\n" .. (hs.message or ""))\n'
    )
    out = subprocess.run([glua, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    status, _, message = out.stdout.partition("\n")
    return status, message.strip()


def broker(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "ductape.app/v1alpha1",
        "kind": "MessageBroker",
        "metadata": {"name": "message-bus", "namespace": "shop", "generation": generation},
        "spec": {"name": "Message Bus", "tag": "message-bus", "envs": []},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: str, reason: str, observed: int = 2, message: str = "msg") -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "summary": "prd:RABBITMQ dev:REDIS",
        "conditions": [
            {"type": "Provisioned", "status": "True", "reason": "AllEnvsReady"},
            {
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": observed,
                "lastTransitionTime": "2026-11-27T00:00:00Z",
            },
            {"type": "Healthy", "status": status, "reason": reason},
        ],
    }


CASES = {
    "ready": (broker(status=ready("True", "AllEnvsReady", message="all ready")), "Healthy"),
    "provisioning": (broker(status=ready("False", "Provisioning")), "Progressing"),
    "stale-observed-generation": (
        broker(generation=3, status=ready("True", "AllEnvsReady", observed=2)),
        "Progressing",
    ),
    "broker-unreachable": (
        broker(status=ready("False", "BrokerUnreachable", message="prd: connection refused")),
        "Degraded",
    ),
    "secret-not-found": (broker(status=ready("False", "SecretNotFound")), "Degraded"),
    "authentication-failed": (
        broker(
            status=ready(
                "False",
                "AuthenticationFailed",
                message="prd: amqp://rabbitmq:5672/%2F: the broker refused the credentials",
            )
        ),
        "Degraded",
    ),
    "tls-failed": (broker(status=ready("False", "TLSFailed")), "Degraded"),
    "paused": (broker(status=ready("False", "Paused", message="paused")), "Suspended"),
    "paused-while-stale": (broker(generation=5, status=ready("True", "Paused")), "Suspended"),
    "no-status": (broker(), "Progressing"),
    "status-without-conditions": (broker(status={"observedGeneration": 1}), "Progressing"),
    "ready-unknown": (broker(status=ready("Unknown", "Provisioning")), "Progressing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_health_maps_status(glua: str, tmp_path: pathlib.Path, case: str) -> None:
    obj, expected = CASES[case]
    status, message = health(glua, tmp_path, obj)
    assert status == expected, (case, status, message)


def test_degraded_message_names_the_reason(glua: str, tmp_path: pathlib.Path) -> None:
    obj, _ = CASES["broker-unreachable"]
    status, message = health(glua, tmp_path, obj)
    assert status == "Degraded"
    assert message == "BrokerUnreachable: prd: connection refused"
    obj, _ = CASES["authentication-failed"]
    assert health(glua, tmp_path, obj) == (
        "Degraded",
        "AuthenticationFailed: prd: amqp://rabbitmq:5672/%2F: the broker refused the credentials",
    )
