"""Operator settings: every knob is a flag with an environment-variable twin.

`parse_settings()` is the one place they are read. Each field's help text is
both the `--help` output and the documentation of the Helm value that sets it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

ENV_PREFIX = "DUCTAPE_"


@dataclasses.dataclass(frozen=True)
class Settings:
    #: Namespaces to watch; empty means all namespaces (cluster-wide).
    namespaces: tuple[str, ...] = ()
    #: Env slugs reconciled in this cluster; empty means every env.
    envs: tuple[str, ...] = ()
    #: Seconds between health probes (and drift repair) of each resource.
    health_interval: float = 30.0
    #: Seconds one broker probe or broker call may take before it counts as failed.
    probe_timeout: float = 5.0
    #: Seconds a finalizer with deletionPolicy Delete keeps retrying an unreachable broker.
    finalizer_timeout: float = 300.0
    #: Port of the Prometheus metrics endpoint; 0 disables it.
    metrics_port: int = 0
    #: Port of the liveness/readiness endpoint (/healthz); 0 disables it.
    health_port: int = 0
    #: Address the metrics and health endpoints listen on (0.0.0.0 inside a pod).
    bind_address: str = "127.0.0.1"
    #: text or json.
    log_format: str = "text"
    #: Log debug messages.
    verbose: bool = False
    #: Run alone, without kopf peering (leader election) between replicas.
    standalone: bool = False
    #: Peering priority of this replica: the live replica with the highest one reconciles,
    #: the others stand by. 0 draws a random one at startup (replicas must differ: kopf
    #: pauses every replica when two share the highest priority).
    peering_priority: int = 0
    #: Seconds a replica's peering record stays valid without a keep-alive; a standby
    #: takes over this long after the leader stopped without saying goodbye (SIGKILL).
    peering_lifetime: int = 60
    #: Stay paused until the peering object confirms this replica leads; without it, a
    #: missing peering object or CRD silently means every replica reconciles.
    require_peering: bool = False

    def reconciles_env(self, slug: str) -> bool:
        return not self.envs or slug in self.envs


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.replace(",", " ").split() if item.strip()]


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    defaults = Settings()

    def default(name: str, fallback: object) -> object:
        return env.get(ENV_PREFIX + name, fallback)

    parser = argparse.ArgumentParser(
        prog="ductape-operator",
        description=(
            "Kubernetes operator for MessageBroker resources (ductape.app/v1alpha1). "
            "Every flag has an environment-variable twin, shown in brackets; "
            "list flags take a comma-separated value there."
        ),
    )
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace; repeatable; default: all namespaces [DUCTAPE_NAMESPACES]",
    )
    parser.add_argument(
        "--env",
        dest="envs",
        action="append",
        default=None,
        metavar="SLUG",
        help=(
            "reconcile only this env slug in this cluster (one cluster per environment); "
            "repeatable; default: every env [DUCTAPE_ENVS]"
        ),
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=float(str(default("HEALTH_INTERVAL", defaults.health_interval))),
        metavar="SECONDS",
        help="seconds between health probes and drift repair"
        " [DUCTAPE_HEALTH_INTERVAL] (%(default)s)",
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=float(str(default("PROBE_TIMEOUT", defaults.probe_timeout))),
        metavar="SECONDS",
        help="timeout of one broker probe or call [DUCTAPE_PROBE_TIMEOUT] (%(default)s)",
    )
    parser.add_argument(
        "--finalizer-timeout",
        type=float,
        default=float(str(default("FINALIZER_TIMEOUT", defaults.finalizer_timeout))),
        metavar="SECONDS",
        help=(
            "with deletionPolicy Delete, how long deletion retries an unreachable broker "
            "before letting go with a Warning event [DUCTAPE_FINALIZER_TIMEOUT] (%(default)s)"
        ),
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(str(default("METRICS_PORT", defaults.metrics_port))),
        metavar="PORT",
        help="serve Prometheus metrics on this port; 0 disables"
        " [DUCTAPE_METRICS_PORT] (%(default)s)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(str(default("HEALTH_PORT", defaults.health_port))),
        metavar="PORT",
        help="serve /healthz on this port; 0 disables [DUCTAPE_HEALTH_PORT] (%(default)s)",
    )
    parser.add_argument(
        "--bind-address",
        default=str(default("BIND_ADDRESS", defaults.bind_address)),
        metavar="ADDR",
        help="address of the metrics and health endpoints [DUCTAPE_BIND_ADDRESS] (%(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=str(default("LOG_FORMAT", defaults.log_format)),
        help="log format [DUCTAPE_LOG_FORMAT] (%(default)s)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=str(default("VERBOSE", "")).lower() in ("1", "true", "yes"),
        help="log debug messages [DUCTAPE_VERBOSE]",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=str(default("STANDALONE", "")).lower() in ("1", "true", "yes"),
        help="no peering between replicas: use with exactly one replica [DUCTAPE_STANDALONE]",
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=int(str(default("PEERING_PRIORITY", defaults.peering_priority))),
        metavar="N",
        help="peering priority of this replica; 0 draws a random one"
        " [DUCTAPE_PEERING_PRIORITY] (%(default)s)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(str(default("PEERING_LIFETIME", defaults.peering_lifetime))),
        metavar="SECONDS",
        help="validity of a replica's peering record; a standby takes over this long after"
        " the leader died [DUCTAPE_PEERING_LIFETIME] (%(default)s)",
    )
    parser.add_argument(
        "--require-peering",
        action="store_true",
        default=str(default("REQUIRE_PEERING", "")).lower() in ("1", "true", "yes"),
        help="reconcile only once the peering object (kopf.dev) confirms this replica leads"
        " [DUCTAPE_REQUIRE_PEERING]",
    )
    return parser


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    args = build_parser(env).parse_args(argv)
    namespaces = args.namespaces or _split(env.get(ENV_PREFIX + "NAMESPACES", ""))
    envs = args.envs or _split(env.get(ENV_PREFIX + "ENVS", ""))
    if args.health_interval <= 0 or args.probe_timeout <= 0:
        raise SystemExit("--health-interval and --probe-timeout must be positive")
    return Settings(
        namespaces=tuple(namespaces),
        envs=tuple(envs),
        health_interval=args.health_interval,
        probe_timeout=args.probe_timeout,
        finalizer_timeout=args.finalizer_timeout,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        bind_address=args.bind_address,
        log_format=args.log_format,
        verbose=args.verbose,
        standalone=args.standalone,
        peering_priority=args.peering_priority,
        peering_lifetime=args.peering_lifetime,
        require_peering=args.require_peering,
    )
