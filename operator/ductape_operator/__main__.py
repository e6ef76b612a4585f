"""Command line entry point: `python -m ductape_operator` (also installed as `ductape-operator`)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import re
import sys
from collections.abc import Iterable

import aiohttp
import kopf
import urllib3

from ductape_operator import brokers, handlers, kube, outages, redaction, settings

#: kopf removing its wake-up annotation from an object that has no other annotation: the
#: answer has no annotations at all, which kopf reports as an inconsistency.
_TOUCH_ONLY = re.compile(
    r"Merge-patching finished with inconsistencies: "
    r"\(\('remove', \('metadata', 'annotations'\), \{'[^']+/touch-dummy': None\}, None\),\)$"
)


class KopfChatter(logging.Filter):
    """kopf's per-handler lines ("Handler 'health' succeeded", "failed temporarily") go to
    DEBUG: the reconciler logs one line per transition instead (docs/operations.md, "Logs").
    So does kopf's warning about its own wake-up annotation (`_TOUCH_ONLY`), which every
    resource without annotations gave on deletion.

    Dropping a record here also keeps kopf from posting it as an Event.
    """

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        chatter = (
            record.levelno <= logging.INFO
            or (
                record.levelno == logging.ERROR
                and "failed temporarily" in str(record.msg)
                and not record.exc_info
            )
            or (record.levelno == logging.WARNING and bool(_TOUCH_ONLY.match(str(record.msg))))
        )
        if not chatter:
            return True
        if not self.verbose:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class SdkFailures(logging.Filter):
    """A broker SDK's own warnings and errors ("Unable connect to ...", "error when creating
    transport: ...") go to DEBUG: the operator reports every broker failure itself, on the
    resource and in one line per transition, where the SDKs repeat theirs on every attempt
    (docs/operations.md, "Logs"). A record with a traceback is kept as it is: a traceback
    means a bug, in the SDK or here.

    On the root's handlers: a logger's own filter would miss its children's records
    (`aiormq.connection` under `aiormq`).
    """

    def __init__(self, loggers: Iterable[str], *, verbose: bool) -> None:
        super().__init__()
        self.loggers = tuple(loggers)
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.exc_info or not self._from_sdk(record):
            return True
        if not self.verbose:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    def _from_sdk(self, record: logging.LogRecord) -> bool:
        name = record.name
        return any(name == sdk or name.startswith(sdk + ".") for sdk in self.loggers)


#: kopf's line for each failed attempt of a request it retries (kopf/_cogs/clients/api.py).
_KOPF_ATTEMPT = re.compile(r"Request attempt #\S+ failed; (will retry|escalating): .* -> (\w+)")
#: kopf's lines when it stops serving a resource (kopf/_core/reactor/observation.py):
#: while the CRD is being deleted, the operator's own line says it.
_KOPF_UNSERVED = (
    "Non-patchable resources will not be served",
    "Unresolved resources cannot be served",
)
#: kopf's errors for an API server that answered 5xx or 429 (matched by name: kopf's
#: error classes are private).
_KOPF_DOWN, _KOPF_THROTTLED = "APIServerError", "APITooManyRequestsError"
#: Errors, named as in kopf's retry lines, of an API server that is away or restarting.
_DOWN_NAMES = frozenset(
    {
        _KOPF_DOWN,
        "ClientConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ClientPayloadError",
        "TimeoutError",
    }
)


class ApiOutages(logging.Filter):
    """An API server outage (unreachable, restarting, throttling), or the CRD being
    deleted, is two lines, not one per failed call (docs/operations.md, "Logs").

    kopf logs every retry of its requests at ERROR, and every handler or watch that
    finally fails with the traceback of a connection error. Such a record is handed to
    `outages` instead, which logs a WARNING when the outage starts and an INFO line
    when the API server is ready again; the record itself goes (to DEBUG, without the
    traceback, with `--verbose`). Anything else passes untouched.
    """

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        outage = self._outage_of(record)
        if outage is None:
            return True
        key, cause = outage
        if key == outages.API_THROTTLED:
            kube.report_throttled()
        elif key == outages.API_SERVER:
            kube.report_unreachable(cause)
        if not self.verbose:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"{record.getMessage()}: {cause}", None
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    @staticmethod
    def _outage_of(record: logging.LogRecord) -> tuple[str, str] | None:
        if record.levelno < logging.WARNING:
            return None
        if outages.is_open(outages.CRD_GONE) and record.getMessage().startswith(_KOPF_UNSERVED):
            return outages.CRD_GONE, "CRD deleted"
        if record.exc_info and record.exc_info[1] is not None:
            return _outage_in(record.exc_info[1])
        if not record.name.startswith("kopf"):
            return None
        attempt = _KOPF_ATTEMPT.search(record.getMessage())
        if attempt is None:
            return None
        name = attempt.group(2)
        if name == _KOPF_THROTTLED:
            return outages.API_THROTTLED, name
        if name in _DOWN_NAMES:
            return outages.API_SERVER, name
        # During a restart the API server refuses requests (403) until its RBAC is
        # loaded: part of the outage, if one is open; a real denial otherwise.
        if name == "APIForbiddenError" and outages.is_open(outages.API_SERVER):
            return outages.API_SERVER, name
        return None


def _outage_in(exc: BaseException) -> tuple[str, str] | None:
    """Whether `exc`, or an exception it was raised from, is an API server outage.

    Only failures of the transports that talk to the API server count: kopf's
    aiohttp session and the Kubernetes client's urllib3 pool. A broker's errors are
    mapped by its provider and never reach here as these.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        if _KOPF_THROTTLED in names:
            return outages.API_THROTTLED, _KOPF_THROTTLED
        if _KOPF_DOWN in names or isinstance(
            current,
            (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                urllib3.exceptions.HTTPError,
            ),
        ):
            return outages.API_SERVER, type(current).__name__
        current = current.__cause__ or current.__context__
    return None


def _fewer_malloc_arenas() -> None:
    """glibc gives every thread that allocates an arena of its own, up to eight per core,
    and each keeps its peak: the Kubernetes API threads would each hold on to the
    memory of their busiest moment. Two arenas are plenty (the GIL serializes most
    allocations anyway). A no-op where the C library is not glibc."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 2)


#: Allocations between two young-generation collections (Python's default is 700).
GC_THRESHOLD = 10_000


def _fewer_collections() -> None:
    """Python's cyclic collector ran about a thousand times in a burst of 300 creates and
    took a tenth of the operator's CPU, most of it walking the same long-lived objects
    (modules, kopf's registry, SDKs) again and again. Fewer young collections here, and
    what exists at startup is frozen out of the collector's view (`handlers.startup`).
    See docs/operations.md, "A burst of creates"."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


def main(argv: list[str] | None = None) -> int:
    app = settings.parse_settings(sys.argv[1:] if argv is None else argv)
    _fewer_malloc_arenas()
    _fewer_collections()
    kopf.configure(
        verbose=app.verbose,
        log_format=kopf.LogFormat.JSON if app.log_format == "json" else kopf.LogFormat.FULL,
    )
    redaction.install()
    logging.getLogger("kopf.objects").addFilter(KopfChatter(verbose=app.verbose))
    # On the root's handlers, where every logger's records arrive (a logger's own filter
    # sees only its own records), and on kopf.objects, whose records kopf also posts
    # as Events.
    outage_filter = ApiOutages(verbose=app.verbose)
    # Third-party clients log connection URLs at INFO; keep them to warnings, and those
    # to DEBUG unless they carry a traceback (`SdkFailures`).
    noisy = [logger for kind in brokers.kinds() for logger in kind.sdk_loggers]
    sdk_filter = SdkFailures(noisy, verbose=app.verbose)
    for handler in logging.getLogger().handlers:
        handler.addFilter(outage_filter)
        handler.addFilter(sdk_filter)
    logging.getLogger("kopf.objects").addFilter(outage_filter)
    for name in [*noisy, "kubernetes"]:
        logging.getLogger(name).setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, app)
    insights = handlers.new_insights()
    liveness = f"http://{app.bind_address}:{app.health_port}/healthz" if app.health_port else None
    kopf.run(
        registry=registry,
        clusterwide=not app.namespaces,
        namespaces=list(app.namespaces),
        standalone=app.standalone or None,
        liveness_endpoint=liveness,
        insights=insights,
        memo=handlers.memo_for(app, registry, insights),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
