"""Command line entry point: `python -m ductape_operator` (also installed as `ductape-operator`)."""

from __future__ import annotations

import logging
import sys

import kopf

from ductape_operator import handlers, redaction, settings


def main(argv: list[str] | None = None) -> int:
    app = settings.parse_settings(sys.argv[1:] if argv is None else argv)
    kopf.configure(
        verbose=app.verbose,
        log_format=kopf.LogFormat.JSON if app.log_format == "json" else kopf.LogFormat.FULL,
    )
    redaction.install()
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
