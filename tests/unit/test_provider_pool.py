"""ProviderPool without a network: a fake provider records its lifecycle."""

from __future__ import annotations

import asyncio
import builtins
from types import TracebackType
from typing import Self

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import ProviderPool, base

REDIS = models.MessageBrokerTypes.REDIS
CONFIG = models.BrokerConfig.model_validate(
    {"host": "redis.dev.svc", "password": {"secretKeyRef": {"name": "r", "key": "pw"}}}
)


def secrets(password: str) -> base.SecretValues:
    return base.SecretValues({("r", "pw"): password})


class Fake:
    """Enough of a provider for the pool: counts starts and closes."""

    def __init__(self, fail: bool = False) -> None:
        self.starts = 0
        self.closes = 0
        self.fail = fail

    type = REDIS
    endpoint = "redis://fake:6379/0"

    async def start(self) -> None:
        await asyncio.sleep(0)  # yield, so concurrent acquirers interleave here
        self.starts += 1
        if self.fail:
            raise errors.BrokerUnreachableError("down")

    async def aclose(self) -> None:
        self.closes += 1

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


class Factory:
    def __init__(self) -> None:
        self.built: list[Fake] = []
        self.fail_next = False

    def __call__(
        self, env_type: models.MessageBrokerTypes, config: models.BrokerConfig, s: base.SecretValues
    ) -> base.Provider:
        fake = Fake(fail=self.fail_next)
        self.built.append(fake)
        return fake  # type: ignore[return-value]


async def test_concurrent_acquires_start_one_provider() -> None:
    factory = Factory()
    pool = ProviderPool(factory)
    got = await asyncio.gather(
        *(pool.acquire(("ns", f"mb{i}", "dev"), REDIS, CONFIG, secrets("a")) for i in range(10))
    )
    assert len({id(p) for p in got}) == 1
    assert len(factory.built) == 1 and factory.built[0].starts == 1
    await pool.aclose()
    assert factory.built[0].closes == 1


async def test_rotation_closes_the_old_provider_once_unused() -> None:
    factory = Factory()
    pool = ProviderPool(factory)
    old = await pool.acquire("a", REDIS, CONFIG, secrets("a"))
    await pool.acquire("b", REDIS, CONFIG, secrets("a"))
    new = await pool.acquire("a", REDIS, CONFIG, secrets("rotated"))
    assert new is not old
    assert factory.built[0].closes == 0  # b still holds it
    await pool.release("b")
    assert factory.built[0].closes == 1
    assert len(pool) == 1
    await pool.release("a")
    assert factory.built[1].closes == 1
    assert len(pool) == 0


async def test_unreferenced_secrets_do_not_split_identity() -> None:
    factory = Factory()
    pool = ProviderPool(factory)
    one = await pool.acquire("a", REDIS, CONFIG, secrets("a"))
    extra = base.SecretValues({("r", "pw"): "a", ("other", "k"): "v"})
    two = await pool.acquire("b", REDIS, CONFIG, extra)
    assert one is two
    await pool.aclose()


async def test_a_failed_start_is_not_cached() -> None:
    factory = Factory()
    pool = ProviderPool(factory)
    factory.fail_next = True
    with pytest.raises(errors.BrokerUnreachableError):
        await pool.acquire("a", REDIS, CONFIG, secrets("a"))
    assert len(pool) == 0 and factory.built[0].closes == 1
    factory.fail_next = False
    provider = await pool.acquire("a", REDIS, CONFIG, secrets("a"))
    assert provider is factory.built[1]
    await pool.aclose()


async def test_acquires_waiting_for_a_start_that_fails_share_its_failure() -> None:
    """One connect attempt per endpoint, not one per resource after the other: those that
    waited for a failed start fail with it; the next acquire tries again."""
    factory = Factory()
    pool = ProviderPool(factory)
    factory.fail_next = True
    results = await asyncio.gather(
        *(pool.acquire(("ns", f"mb{i}", "dev"), REDIS, CONFIG, secrets("a")) for i in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, errors.BrokerUnreachableError) for r in results)
    assert [f.starts for f in factory.built] == [1]
    assert len(pool) == 0 and factory.built[0].closes == 1

    with pytest.raises(errors.BrokerUnreachableError):  # a later acquire: a new attempt
        await pool.acquire("later", REDIS, CONFIG, secrets("a"))
    assert len(factory.built) == 2
    factory.fail_next = False
    provider = await pool.acquire("later", REDIS, CONFIG, secrets("a"))
    assert provider is factory.built[2] and provider.starts == 1  # type: ignore[attr-defined]
    await pool.aclose()
