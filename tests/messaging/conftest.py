"""Fixtures of the messaging client suite: a provisioned topic per test, per provider."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.messaging import outage, stack


@pytest.fixture(params=list(stack.PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    absent = stack.missing(kind)
    if absent:
        pytest.skip(f"local stack not configured for {kind}: {', '.join(absent)} unset")
    return kind


@pytest.fixture
async def topic(provider: str, tmp_path: pathlib.Path) -> AsyncIterator[stack.Provisioned]:
    """A fresh topic `orders` with subscriptions billing and shipping, as a binding folder.

    The folder is `tmp_path/bindings/<name>`, the $SERVICE_BINDING_ROOT layout.
    """
    provisioned = stack.Provisioned(provider, "orders", ("billing", "shipping"))
    await provisioned.create()
    try:
        yield provisioned
    finally:
        await provisioned.delete()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reconnect tests' per-round figures (published, failed, duplicates)."""
    if outage.REPORT:
        terminalreporter.section("messaging client through broker outages")
        for line in outage.REPORT:
            terminalreporter.write_line(line)
