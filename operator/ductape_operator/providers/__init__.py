"""The provider layer: building a broker's operator side, and a pool that shares them.

Each broker's operator side lives in its package (`brokers/<name>/operator.py`);
the registry (`ductape_operator.brokers`) finds it by the env's type.

    build_provider(type, config, secrets)  a provider for one env, not yet started
    ProviderPool                           started providers shared across resources

A provider's identity is its type, its connection config and the values of
the Secrets it references. Every env with the same identity shares one
provider (docs/operations.md, "Health rounds"); an env whose endpoint or credentials
change gets a new one, and the old one is closed once no env uses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Hashable
from typing import cast

from ductape_operator import brokers, errors, models
from ductape_operator.providers import base

__all__ = [
    "ProviderPool",
    "build_provider",
    "identity",
]

logger = logging.getLogger(__name__)

Factory = Callable[
    [models.MessageBrokerTypes, models.BrokerConfig, base.SecretValues], base.Provider
]


def build_provider(
    env_type: models.MessageBrokerTypes,
    config: models.BrokerConfig,
    secrets: base.SecretValues,
) -> base.Provider:
    """A provider for `env_type`, built with no network I/O; `start()` it (or `async with`).

    Raises `InvalidConfigError` when a required field is missing and
    `SecretNotFoundError` when a referenced Secret value is not in `secrets`.
    """
    provider_class = brokers.kind(env_type.value).provider_class()
    return cast(base.Provider, provider_class(config, secrets))


def identity(
    env_type: models.MessageBrokerTypes,
    config: models.BrokerConfig,
    secrets: base.SecretValues,
) -> str:
    """What makes two envs share a provider: type, config and referenced secret values.

    A digest, so that the pool's keys never hold a credential in the clear.
    """
    refs = {(ref.name, ref.key) for ref in config.secret_refs()}
    values = sorted((key, value) for key, value in secrets.values.items() if key in refs)
    digest = hashlib.sha256()
    digest.update(env_type.value.encode())
    digest.update(b"\0" + config.model_dump_json(exclude_none=True).encode())
    for (name, key), value in values:
        digest.update(b"\0" + name.encode() + b"\0" + key.encode() + b"\0" + value.encode())
    return digest.hexdigest()


class ProviderPool:
    """Started providers, one per identity, shared by every owner that needs it.

    An owner is whatever holds a provider (the operator uses
    `(namespace, name, env slug)`). It holds one provider at a time: acquiring
    another identity moves it, and closes the one it left when nobody else uses
    it. A provider that fails to start is not kept, so the next acquire retries; the
    acquires that waited for that start get its failure instead of trying again one
    after the other (docs/operations.md, "Retries").
    """

    def __init__(self, factory: Factory = build_provider) -> None:
        self._factory = factory
        self._lock = asyncio.Lock()
        self._providers: dict[str, base.Provider] = {}
        self._owners: dict[Hashable, str] = {}
        #: Owners per identity: whether a provider is still used, without a scan of all owners.
        self._holders: dict[str, int] = {}
        #: One per identity being started, so a slow broker holds up only its own owners.
        self._starting: dict[str, asyncio.Lock] = {}
        #: Per identity, how many starts failed in a row, and the last failure: an acquire
        #: that waited while one failed fails with it. A thousand resources on a broker that
        #: is down used to try one after the other, each for the whole connect timeout.
        self._failed: dict[str, tuple[int, errors.DuctapeError]] = {}

    def __len__(self) -> int:
        return len(self._providers)

    def build(
        self,
        env_type: models.MessageBrokerTypes,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
    ) -> base.Provider:
        """A provider of the pool's kind that is not shared: the caller starts and closes it."""
        return self._factory(env_type, config, secrets)

    async def acquire(
        self,
        owner: Hashable,
        env_type: models.MessageBrokerTypes,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
    ) -> base.Provider:
        """The started provider for this identity, now held by `owner`."""
        key = identity(env_type, config, secrets)
        async with self._lock:
            start_lock = self._starting.setdefault(key, asyncio.Lock())
            failures_before = self._failed.get(key, (0, None))[0]
        stale: base.Provider | None = None
        async with start_lock:
            async with self._lock:
                provider = self._providers.get(key)
                if provider is not None:
                    stale = self._assign(owner, key)
            if provider is None:
                failures, failure = self._failed.get(key, (0, None))
                if failure is not None and failures > failures_before:
                    raise failure.with_traceback(None)  # the start it waited for failed
                provider = self._factory(env_type, config, secrets)
                try:
                    await provider.start()
                except BaseException as exc:
                    if isinstance(exc, errors.DuctapeError):  # not a bug or a cancellation
                        self._failed[key] = (failures + 1, exc)
                    await _close_quietly(provider)
                    raise
                async with self._lock:
                    self._failed.pop(key, None)
                    self._providers[key] = provider
                    stale = self._assign(owner, key)
        if stale is not None:
            await _close_quietly(stale)
        return provider

    def key_of(self, owner: Hashable) -> str | None:
        """The identity (a digest) of the provider `owner` holds: its endpoint's key."""
        return self._owners.get(owner)

    async def release(self, owner: Hashable) -> None:
        """`owner` no longer needs its provider; close it if nobody else uses it."""
        async with self._lock:
            key = self._owners.pop(owner, None)
            if key is not None:
                self._holders[key] -= 1
            stale = self._drop_if_unused(key)
        if stale is not None:
            await _close_quietly(stale)

    async def aclose(self) -> None:
        """Close every provider; the pool stays usable (acquire starts new ones)."""
        async with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
            self._owners.clear()
            self._holders.clear()
            self._starting.clear()
            self._failed.clear()
        await asyncio.gather(*(_close_quietly(p) for p in providers))

    def _assign(self, owner: Hashable, key: str) -> base.Provider | None:
        """Record that `owner` holds `key`; return the provider it left, if now unused."""
        previous = self._owners.get(owner)
        if previous == key:
            return None
        self._owners[owner] = key
        self._holders[key] = self._holders.get(key, 0) + 1
        if previous is None:
            return None
        self._holders[previous] -= 1
        return self._drop_if_unused(previous)

    def _drop_if_unused(self, key: str | None) -> base.Provider | None:
        if key is None or self._holders.get(key, 0) > 0:
            return None
        self._holders.pop(key, None)
        return self._providers.pop(key, None)


async def _close_quietly(provider: base.Provider) -> None:
    try:
        await provider.aclose()
    except Exception:
        logger.warning("closing provider %s failed", provider.endpoint, exc_info=True)
