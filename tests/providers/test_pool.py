"""The provider pool with real providers: sharing, credential rotation, closing.

SQS is the broker here because the local SQS server accepts any credentials,
so a rotated key is as valid as the first one, as it would be after a real
rotation.
"""

from __future__ import annotations

import pytest

from ductape_operator import errors, models
from ductape_operator.providers import ProviderPool, base
from tests.providers.conftest import SQS_SECRET, stack_config

SQS = models.MessageBrokerTypes.AWS_SQS


async def test_pool_shares_rotates_and_closes(stack: dict[str, str]) -> None:
    config, secrets = stack_config(SQS, stack)
    rotated = base.SecretValues({**secrets.values, SQS_SECRET[1]: "rotated-secret"})
    pool = ProviderPool()
    try:
        one = await pool.acquire(("ns", "a", "dev"), SQS, config, secrets)
        two = await pool.acquire(("ns", "b", "dev"), SQS, config, secrets)
        assert one is two
        await one.probe(5.0)

        moved = await pool.acquire(("ns", "a", "dev"), SQS, config, rotated)
        assert moved is not one
        assert moved.binding()["secret-access-key"] == "rotated-secret"
        await one.probe(5.0)  # still open: owner b holds it

        same = await pool.acquire(("ns", "b", "dev"), SQS, config, rotated)
        assert same is moved
        with pytest.raises(errors.ProvisioningError, match="closed"):
            await one.probe(5.0)  # nobody held it any more: closed
        await moved.probe(5.0)
    finally:
        await pool.aclose()
    with pytest.raises(errors.ProvisioningError, match="closed"):
        await moved.probe(5.0)


async def test_pool_does_not_keep_a_provider_that_failed_to_start(stack: dict[str, str]) -> None:
    dead, secrets = stack_config(models.MessageBrokerTypes.REDIS, stack, dead=True)
    pool = ProviderPool()
    try:
        for _attempt in range(2):
            with pytest.raises(errors.BrokerUnreachableError):
                await pool.acquire(
                    ("ns", "a", "dev"), models.MessageBrokerTypes.REDIS, dead, secrets
                )
            assert len(pool) == 0
    finally:
        await pool.aclose()
