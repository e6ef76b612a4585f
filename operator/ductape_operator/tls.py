"""TLS client contexts from PEM text, for the operator and the messaging client alike.

A config's `ca`, `clientCert` and `clientKey` (README.md, "Secure connections") arrive as
PEM text read from Secrets, and the connection Secret hands the same PEM to applications
(`ca.crt`, `tls.crt`, `tls.key`). Both sides build their context here, so they trust
exactly the same certificates. With no `ca` the system trust store is used.

A message never carries PEM: a broken bundle is reported by where it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Mapping

from ductape_operator import errors

#: The connection Secret's entries (Service Binding conventions, as in kubernetes.io/tls).
CA_ENTRY = "ca.crt"
CERT_ENTRY = "tls.crt"
KEY_ENTRY = "tls.key"


@dataclasses.dataclass(frozen=True)
class Material:
    """The PEM a TLS client may need besides the system store: a CA bundle, a client pair."""

    ca: str | None = dataclasses.field(default=None, repr=False)
    cert: str | None = dataclasses.field(default=None, repr=False)
    key: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_entries(cls, entries: Mapping[str, str]) -> Material:
        """Read back what `entries()` wrote into a connection Secret."""
        return cls(
            ca=entries.get(CA_ENTRY) or None,
            cert=entries.get(CERT_ENTRY) or None,
            key=entries.get(KEY_ENTRY) or None,
        )

    def entries(self) -> dict[str, str]:
        """The connection Secret's entries for this material (only those that are set)."""
        pairs = ((CA_ENTRY, self.ca), (CERT_ENTRY, self.cert), (KEY_ENTRY, self.key))
        return {entry: value for entry, value in pairs if value}

    def context(self, source: str = "the configuration") -> ssl.SSLContext:
        return client_context(ca=self.ca, cert=self.cert, key=self.key, source=source)


def client_context(
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    source: str = "the configuration",
) -> ssl.SSLContext:
    """A verifying client context: the system store plus `ca` (PEM), and an optional pair.

    Host names are checked. `ca` is trusted in addition to the system store, as
    redis-py does with the same bundle (README.md, "Secure connections"). `source`
    says where the PEM came from, for messages. Raises `BrokerTLSError` when the
    PEM is unusable (the message never quotes it).
    """
    try:
        context = ssl.create_default_context()
        if ca:
            context.load_verify_locations(cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise errors.BrokerTLSError(
            f"the CA bundle from {source} holds no usable PEM certificate ({_reason(exc)})"
        ) from None
    if cert or key:
        if not (cert and key):
            raise errors.InvalidConfigError(
                f"a client certificate needs its key and the key its certificate ({source})"
            )
        _load_pair(context, cert, key, source)
    return context


def _load_pair(context: ssl.SSLContext, cert: str, key: str, source: str) -> None:
    with pair_files(cert, key) as (cert_path, key_path):
        try:
            context.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as exc:
            raise errors.BrokerTLSError(
                f"the client certificate and key from {source} are not a usable PEM pair "
                f"({_reason(exc)})"
            ) from None


class PairFiles:
    """A client certificate and key written to a private folder until `cleanup()`.

    The ssl module, and clients that build their own context from paths (redis-py),
    load a certificate chain from files only.
    """

    def __init__(self, cert: str, key: str) -> None:
        self.folder = tempfile.mkdtemp(prefix="ductape-tls-")
        self.cert_path = os.path.join(self.folder, CERT_ENTRY)
        self.key_path = os.path.join(self.folder, KEY_ENTRY)
        try:
            for path, text in ((self.cert_path, cert), (self.key_path, key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def pair_files(cert: str, key: str) -> Iterator[tuple[str, str]]:
    files = PairFiles(cert, key)
    try:
        yield files.cert_path, files.key_path
    finally:
        files.cleanup()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__


def failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error in `exc`'s chain (`__cause__`, `__context__`), if any."""
    return errors.find_cause(exc, ssl.SSLError)


def describe_failure(exc: ssl.SSLError) -> str:
    """What went wrong in a handshake, in words a person can act on; never PEM."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or "certificate verify failed"
        if "Hostname mismatch" in detail or "IP address mismatch" in detail:
            return (
                f"the server's certificate does not match the host name ({detail.rstrip('.')});"
                " connect with a name the certificate was issued for"
            )
        return (
            f"the server's certificate is not trusted ({detail}); set config.ca to the CA"
            " that signed it"
        )
    reason = exc.reason or type(exc).__name__
    if reason == "WRONG_VERSION_NUMBER":
        return "TLS handshake failed: the server does not speak TLS on this port"
    return f"TLS handshake failed: {reason}"
