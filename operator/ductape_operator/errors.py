"""The project's error types, sorted by what the caller should do about them.

    DuctapeError                 base; carries a condition `reason` and `retriable`
    ├── NamespaceTerminatingError  the namespace is going: nothing in it can be created
    ├── InvalidConfigError       the resource or its config cannot work as written (no retry)
    ├── SecretNotFoundError      a referenced Secret or key is missing (retry; watch the Secret)
    ├── TagConflictError         another, older resource owns this tag (no retry)
    └── BrokerError              anything that happened talking to a broker
        ├── BrokerUnreachableError   connect, timeout, transport (retry with backoff)
        ├── BrokerAuthError          the broker refused the credentials (retry: they may rotate)
        ├── BrokerTLSError           the TLS handshake failed: an untrusted certificate, a
        │                            host name it was not issued for, a client certificate
        │                            refused (retry: the CA or certificate may be fixed)
        └── ProvisioningError        the broker refused an operation (retriable or not)

Each broker sorts its SDK's exceptions into a `Failure` in one place
(`brokers/<name>/errors.py`), used by its operator side and its client side alike;
each side turns a `Failure` into one of these (`providers._common.from_failure`,
`messaging._transport.error_for`) and chains the original with `raise ... from exc`.
Handlers turn them into kopf's `TemporaryError`/`PermanentError` and into status
conditions. A message never
contains a credential.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from ductape_operator.reasons import Reason

_E = TypeVar("_E", bound=BaseException)


class DuctapeError(Exception):
    """Base of every error this project raises on purpose."""

    #: The status condition reason this error is reported with.
    reason: Reason = Reason.PROVISIONING_FAILED
    #: Whether trying again later, with nothing else changed, can succeed.
    retriable: bool = True

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable


class NamespaceTerminatingError(DuctapeError):
    """The API server refused to create something (a connection Secret) in a namespace
    that is being deleted: no failure of the resource, which is going too."""

    retriable = False


class InvalidConfigError(DuctapeError):
    reason = Reason.INVALID_CONFIG
    retriable = False


class SecretNotFoundError(DuctapeError):
    reason = Reason.SECRET_NOT_FOUND
    retriable = True

    def __init__(self, message: str, *, secret_name: str) -> None:
        super().__init__(message)
        self.secret_name = secret_name


class TagConflictError(DuctapeError):
    reason = Reason.TAG_CONFLICT
    retriable = False


class BrokerError(DuctapeError):
    reason = Reason.PROVISIONING_FAILED


class BrokerUnreachableError(BrokerError):
    reason = Reason.BROKER_UNREACHABLE
    retriable = True


class BrokerAuthError(BrokerError):
    reason = Reason.AUTHENTICATION_FAILED
    retriable = True


class BrokerTLSError(BrokerError):
    reason = Reason.TLS_FAILED
    retriable = True


class ProvisioningError(BrokerError):
    reason = Reason.PROVISIONING_FAILED


class Failure(enum.Enum):
    """What an SDK exception means, whichever broker raised it."""

    #: The broker refused the credentials, or they lack a permission.
    AUTH = "auth"
    #: No connection, a lost one, a timeout: the broker may be back soon.
    UNREACHABLE = "unreachable"
    #: The topic, queue or subscription is not there (yet).
    NOT_FOUND = "not found"
    #: The broker is busy or rate-limits us: the same request will succeed later.
    THROTTLED = "throttled"
    #: The request or the config is at fault: the same request will fail again.
    INVALID = "invalid"
    #: Any other error of the broker.
    FAILED = "failed"


def find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first `kind` in `exc`'s chain (`__cause__`, else `__context__`), if any.

    SDKs wrap a socket's TLS or DNS error in their own connection errors; what a
    person can act on is the one inside.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
