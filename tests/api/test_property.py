"""Property: pydantic and the API server give the same verdict on any spec.

The operator validates every resource again with pydantic; if the two disagreed,
the operator would either refuse what users could apply or act on what the
schema never allowed. Hypothesis makes specs that are valid or subtly not.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, event, given, settings
from kubernetes import client

from ductape_operator import models
from tests.api import specs
from tests.api.conftest import dry_run_create


def pydantic_verdict(spec: dict[str, Any]) -> str | None:
    try:
        models.parse_spec(spec)
    except pydantic.ValidationError as exc:
        return models.describe_validation_error(exc)
    return None


def test_the_generator_makes_both_verdicts() -> None:
    verdicts: list[bool] = []

    @settings(max_examples=500, database=None, deadline=None, derandomize=True)
    @given(spec=specs.mutated_specs())
    def sample(spec: dict[str, Any]) -> None:
        verdicts.append(pydantic_verdict(spec) is None)

    sample()
    # Neither verdict may dominate, or the property below would test little.
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8, verdicts


@pytest.mark.stack
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs.mutated_specs())
def test_pydantic_and_the_api_server_agree(
    spec: dict[str, Any], api_objects: client.CustomObjectsApi, api_shared_namespace: str
) -> None:
    manifest = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "property"},
        "spec": spec,
    }
    server = dry_run_create(api_objects, api_shared_namespace, manifest)
    local = pydantic_verdict(spec)
    event("accepted" if server is None else "rejected")
    assert (server is None) == (local is None), f"API server: {server!r}; pydantic: {local!r}"
