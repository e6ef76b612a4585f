"""What every provider module shares: lifecycle, timeouts and the error boundary.

No broker SDK is imported here. Each provider module passes its own error
mapper to `guard`, so the SDK-to-project mapping stays in one place per module,
while the timeout, the chaining (`raise ... from exc`) and the scrubbing of
credentials out of messages are written once.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import ClassVar, Self

from ductape_operator import errors, models, tls
from ductape_operator.providers import base

logger = logging.getLogger(__name__)

#: Upper bound of one provisioning operation (a network round trip or a few).
DEFAULT_TIMEOUT = 30.0
#: Operations one provider runs at once against its broker. A thousand resources
#: reconciling together queue here, on our side, instead of exhausting the SDK's
#: connection pool or racing channel opens, which the broker would see as a storm
#: and we would misreport as the broker being down.
DEFAULT_CONCURRENCY = 16

#: The providers whose operation slot the current task holds: nested `guard`s (a
#: lazy start inside an operation) must not wait for a second slot of their own.
_holding: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "ductape_provider_slots", default=frozenset()
)

#: `scheme://user:password@host` -> `scheme://***@host`, whatever the SDK put in a message.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")

#: An SDK error mapped to the project's: given the exception and what was being done.
Mapper = Callable[[Exception, str], errors.DuctapeError]


def secret_value(secrets: base.SecretValues, ref: models.SecretRef | None) -> str | None:
    """The value of a referenced Secret key, or `SecretNotFoundError` naming the Secret."""
    if ref is None:
        return None
    try:
        return secrets.get(ref)
    except KeyError:
        sel = ref.secret_key_ref
        raise errors.SecretNotFoundError(
            f"Secret {sel.name!r} has no key {sel.key!r}", secret_name=sel.name
        ) from None


def tls_material(secrets: base.SecretValues, config: models.BrokerConfig) -> tls.Material:
    """The config's `ca`, `clientCert` and `clientKey` values (each may be unset)."""
    return tls.Material(
        ca=secret_value(secrets, config.ca),
        cert=secret_value(secrets, config.client_cert),
        key=secret_value(secrets, config.client_key),
    )


def tls_context(
    endpoint: str, config: models.BrokerConfig, material: tls.Material
) -> ssl.SSLContext:
    """The verifying client context of an env; a broken PEM is named by its Secret."""
    refs = [
        f"{field} from Secret {ref.secret_key_ref.name!r} key {ref.secret_key_ref.key!r}"
        for field, ref in (
            ("ca", config.ca),
            ("clientCert", config.client_cert),
            ("clientKey", config.client_key),
        )
        if ref is not None
    ]
    source = "config (" + "; ".join(refs) + ")" if refs else "config"
    try:
        return material.context(source)
    except errors.DuctapeError as exc:
        exc.message = f"{endpoint}: {exc.message}"
        exc.args = (exc.message,)
        raise


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` without any of the `secrets` and without URL user info."""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return _USERINFO.sub(r"\g<scheme>***@", text)


def describe(exc: BaseException) -> str:
    """`TypeName: message`, or just the type name when the message is empty."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


class ProviderBase:
    """Lifecycle shared by the providers: idempotent start/aclose, async context manager.

    Subclasses implement `_open()` and `_close()`; `_close()` must release
    whatever a failed `_open()` left half open.
    """

    TYPE: ClassVar[models.MessageBrokerTypes]

    def __init__(
        self,
        config: models.BrokerConfig,
        secrets: base.SecretValues,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()
        #: Every credential this provider holds, scrubbed out of error messages.
        self._credentials: list[str] = []

    @property
    def type(self) -> models.MessageBrokerTypes:
        return self.TYPE

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint}>"

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _tls_setup(self, enabled: bool) -> tuple[tls.Material, ssl.SSLContext | None]:
        """The env's TLS material and context (None: TLS off), built with no network I/O."""
        material = tls_material(self._secrets, self._config)
        # A PEM body never belongs in a message, whatever an SDK puts there.
        self._credentials += [v for v in (material.ca, material.cert, material.key) if v]
        if not enabled:
            return tls.Material(), None
        return material, tls_context(self.endpoint, self._config, material)

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            try:
                await self._open()
            except BaseException:
                await self._close_bounded()
                raise
            self._started = True
            self._closed = False

    async def aclose(self) -> None:
        async with self._start_lock:
            if not self._started:
                return
            self._started = False
            self._closed = True
            await self._close_bounded()

    async def _close_bounded(self) -> None:
        # Closing talks to the broker too (goodbye frames); a dead one must not hang us.
        try:
            async with asyncio.timeout(self._timeout):
                await self._close()
        except TimeoutError:
            logger.warning("closing the connection to %s timed out; dropped", self.endpoint)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _ensure_started(self) -> None:
        """Start on first use; after `aclose()`, refuse until started again explicitly.

        A pool closes a provider that an in-flight operation may still hold; that
        operation must fail rather than quietly open a connection nobody closes.
        """
        if self._started:
            return
        if self._closed:
            raise errors.ProvisioningError(f"{self.endpoint}: provider is closed")
        await self.start()

    async def topic_exists(self, topic: base.TopicPlan) -> bool:
        raise NotImplementedError

    async def inventory(self, topics: Collection[base.TopicPlan]) -> frozenset[base.TopicPlan]:
        """One lookup per topic; providers whose broker can list do it in one call."""
        return frozenset([topic for topic in topics if await self.topic_exists(topic)])

    async def backlog(
        self, topics: Collection[base.TopicPlan]
    ) -> Mapping[base.TopicPlan, base.TopicBacklog]:
        """Nothing: a provider whose broker cannot count cheaply exports no backlog."""
        return {}

    @contextlib.asynccontextmanager
    async def _slot(self, limited: bool) -> AsyncIterator[None]:
        held = _holding.get()
        if not limited or id(self) in held:
            yield
            return
        async with self._slots:
            token = _holding.set(held | {id(self)})
            try:
                yield
            finally:
                _holding.reset(token)

    @contextlib.asynccontextmanager
    async def guard(
        self, what: str, mapper: Mapper, timeout: float | None = None, *, limited: bool = True
    ) -> AsyncIterator[None]:
        """Run a block under a timeout, mapping every SDK error to the project's.

        `what` says what was being done ("creating topic orders"); messages name
        the endpoint and that, never a credential. A `limited` block first waits
        for one of the provider's operation slots; that wait is ours, so the
        timeout (the broker's answer) starts only once the slot is held. Probes
        are not limited: one per endpoint per round, they must not queue behind
        a provisioning storm.
        """
        limit = self._timeout if timeout is None else timeout
        async with self._slot(limited), self._guarded(what, mapper, limit):
            yield

    @contextlib.asynccontextmanager
    async def _guarded(self, what: str, mapper: Mapper, limit: float) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(limit):
                yield
        except errors.DuctapeError as exc:
            exc.message = scrub(exc.message, self._credentials)
            exc.args = (exc.message,)
            raise
        except TimeoutError as exc:
            raise errors.BrokerUnreachableError(
                f"{self.endpoint}: no answer within {limit:g}s while {what}"
            ) from exc
        except Exception as exc:
            mapped = mapper(exc, what)
            mapped.message = scrub(mapped.message, self._credentials)
            mapped.args = (mapped.message,)
            raise mapped from exc


def unreachable(endpoint: str, what: str, exc: BaseException) -> errors.BrokerError:
    """A transport failure; a TLS handshake or a DNS lookup that failed is told apart.

    SDKs wrap both in their own connection errors, so the chain is searched: a
    failed handshake is `TLSFailed` (README.md, "Conditions"), a name that does not
    resolve stays `BrokerUnreachable` but says so.
    """
    handshake = tls.failure(exc)
    if handshake is not None:
        return tls_failed(endpoint, what, handshake)
    lookup = errors.find_cause(exc, socket.gaierror)
    if lookup is not None:
        return errors.BrokerUnreachableError(
            f"{endpoint}: the host name does not resolve (DNS: {lookup.strerror or lookup})"
            f" while {what}"
        )
    return errors.BrokerUnreachableError(f"{endpoint}: unreachable while {what}: {describe(exc)}")


def tls_failed(endpoint: str, what: str, exc: BaseException) -> errors.BrokerTLSError:
    handshake = tls.failure(exc)
    detail = tls.describe_failure(handshake) if handshake is not None else describe(exc)
    return errors.BrokerTLSError(f"{endpoint}: {detail}, while {what}")


def auth_failed(endpoint: str, what: str, exc: BaseException) -> errors.BrokerAuthError:
    return errors.BrokerAuthError(
        f"{endpoint}: the broker refused the credentials while {what}: {describe(exc)}"
    )


def from_failure(
    failure: errors.Failure | None, endpoint: str, what: str, exc: BaseException
) -> errors.DuctapeError:
    """The operator side's error for a failure a broker's `classify` found (None: an
    exception that is not the SDK's, taken as a refusal worth retrying)."""
    if failure is errors.Failure.AUTH:
        return auth_failed(endpoint, what, exc)
    if failure is errors.Failure.UNREACHABLE:
        return unreachable(endpoint, what, exc)
    return refused(endpoint, what, exc, retriable=failure is not errors.Failure.INVALID)


def refused(
    endpoint: str, what: str, exc: BaseException, *, retriable: bool
) -> errors.ProvisioningError:
    return errors.ProvisioningError(
        f"{endpoint}: refused while {what}: {describe(exc)}", retriable=retriable
    )
