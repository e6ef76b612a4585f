"""Command line entry point: `python -m ductape_operator` (also installed as `ductape-operator`)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

import kopf

from ductape_operator import handlers, redaction, settings


class KopfChatter(logging.Filter):
    """kopf's per-handler lines ("Handler 'health' succeeded", "failed temporarily") go to
    DEBUG: the reconciler logs one line per transition instead (docs/operations.md, "Logs").

    Dropping a record here also keeps kopf from posting it as an Event.
    """

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        chatter = record.levelno <= logging.INFO or (
            record.levelno == logging.ERROR
            and "failed temporarily" in str(record.msg)
            and not record.exc_info
        )
        if not chatter:
            return True
        if not self.verbose:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _fewer_malloc_arenas() -> None:
    """glibc gives every thread that allocates an arena of its own, up to eight per core,
    and each keeps its peak: the Kubernetes API threads would each hold on to the
    memory of their busiest moment. Two arenas are plenty (the GIL serializes most
    allocations anyway). A no-op where the C library is not glibc."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 2)


def main(argv: list[str] | None = None) -> int:
    app = settings.parse_settings(sys.argv[1:] if argv is None else argv)
    _fewer_malloc_arenas()
    kopf.configure(
        verbose=app.verbose,
        log_format=kopf.LogFormat.JSON if app.log_format == "json" else kopf.LogFormat.FULL,
    )
    redaction.install()
    logging.getLogger("kopf.objects").addFilter(KopfChatter(verbose=app.verbose))
    # Third-party clients log connection URLs at INFO; keep them to warnings.
    for noisy in ("aiokafka", "aio_pika", "aiormq", "botocore", "aiobotocore", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, app)
    liveness = f"http://{app.bind_address}:{app.health_port}/healthz" if app.health_port else None
    kopf.run(
        registry=registry,
        clusterwide=not app.namespaces,
        namespaces=list(app.namespaces),
        standalone=app.standalone or None,
        liveness_endpoint=liveness,
        memo=handlers.memo_for(app),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
