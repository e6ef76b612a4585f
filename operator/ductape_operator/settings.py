"""Operator settings: every knob is a flag with an environment-variable twin.

`Settings` (pydantic-settings) is the one declaration: each field's type, default
and description, read from `DUCTAPE_<FIELD>` variables. `parse_settings()` adds
the command line on top, one flag per field built from that declaration, so the
`--help` text, the environment and the Helm values (which set the environment)
cannot drift apart.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "DUCTAPE_"


def _flag(flag: str, metavar: str | None = None) -> dict[str, Any]:
    """How a field appears on the command line (kept in its JSON schema extras)."""
    return {"flag": flag, "metavar": metavar}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    namespaces: Annotated[
        tuple[str, ...],
        NoDecode,
        Field(
            description="watch this namespace; repeatable; default: all namespaces",
            json_schema_extra=_flag("--namespace", "NS"),
        ),
    ] = ()
    envs: Annotated[
        tuple[str, ...],
        NoDecode,
        Field(
            description=(
                "reconcile only this env slug in this cluster (one cluster per environment);"
                " repeatable; default: every env"
            ),
            json_schema_extra=_flag("--env", "SLUG"),
        ),
    ] = ()
    health_interval: Annotated[
        float,
        Field(
            gt=0,
            description="seconds between health probes and drift repair",
            json_schema_extra=_flag("--health-interval", "SECONDS"),
        ),
    ] = 30.0
    probe_timeout: Annotated[
        float,
        Field(
            gt=0,
            description="timeout of one broker probe or call",
            json_schema_extra=_flag("--probe-timeout", "SECONDS"),
        ),
    ] = 5.0
    finalizer_timeout: Annotated[
        float,
        Field(
            ge=0,
            description=(
                "with deletionPolicy Delete, how long deletion retries an unreachable broker"
                " before letting go with a Warning event"
            ),
            json_schema_extra=_flag("--finalizer-timeout", "SECONDS"),
        ),
    ] = 300.0
    metrics_port: Annotated[
        int,
        Field(
            ge=0,
            le=65535,
            description="serve Prometheus metrics on this port; 0 disables",
            json_schema_extra=_flag("--metrics-port", "PORT"),
        ),
    ] = 0
    health_port: Annotated[
        int,
        Field(
            ge=0,
            le=65535,
            description="serve /healthz on this port; 0 disables",
            json_schema_extra=_flag("--health-port", "PORT"),
        ),
    ] = 0
    bind_address: Annotated[
        str,
        Field(
            description="address of the metrics and health endpoints (0.0.0.0 inside a pod)",
            json_schema_extra=_flag("--bind-address", "ADDR"),
        ),
    ] = "127.0.0.1"
    log_format: Annotated[
        Literal["text", "json"],
        Field(description="log format", json_schema_extra=_flag("--log-format")),
    ] = "text"
    verbose: Annotated[
        bool, Field(description="log debug messages", json_schema_extra=_flag("--verbose"))
    ] = False
    standalone: Annotated[
        bool,
        Field(
            description="no peering between replicas: use with exactly one replica",
            json_schema_extra=_flag("--standalone"),
        ),
    ] = False
    peering_priority: Annotated[
        int,
        Field(
            ge=0,
            description=(
                "peering priority of this replica (the live replica with the highest one"
                " reconciles); 0 draws a random one"
            ),
            json_schema_extra=_flag("--peering-priority", "N"),
        ),
    ] = 0
    peering_lifetime: Annotated[
        int,
        Field(
            gt=0,
            description=(
                "validity of a replica's peering record; a standby takes over this long after"
                " the leader died"
            ),
            json_schema_extra=_flag("--peering-lifetime", "SECONDS"),
        ),
    ] = 60
    require_peering: Annotated[
        bool,
        Field(
            description=(
                "reconcile only once the peering object (kopf.dev) confirms this replica leads"
            ),
            json_schema_extra=_flag("--require-peering"),
        ),
    ] = False

    @field_validator("namespaces", "envs", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """A list's environment twin is one comma- or space-separated value."""
        if isinstance(value, str):
            return tuple(item for item in value.replace(",", " ").split() if item)
        return value

    def reconciles_env(self, slug: str) -> bool:
        return not self.envs or slug in self.envs


def _add_flag(parser: argparse.ArgumentParser, name: str, field: Any) -> None:
    extra = field.json_schema_extra or {}
    env = f"[{ENV_PREFIX}{name.upper()}]"
    annotation = field.annotation
    # Every flag defaults to None, "not given": the environment or the field's own
    # default then stands (pydantic-settings), and --help shows the field's default.
    if annotation is bool:
        parser.add_argument(
            extra["flag"], dest=name, action="store_true", default=None,
            help=f"{field.description} {env}",
        )  # fmt: skip
        return
    kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": extra.get("metavar")}
    help_text = f"{field.description} {env}"
    if typing.get_origin(annotation) is tuple:
        kwargs["action"] = "append"
    elif typing.get_origin(annotation) is Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
        kwargs.pop("metavar")
        help_text += f" ({field.default})"
    else:
        assert isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)
        kwargs["type"] = annotation
        help_text += f" ({field.default})"
    parser.add_argument(extra["flag"], help=help_text, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ductape-operator",
        description=(
            "Kubernetes operator for MessageBroker resources (ductape.app/v1alpha1). "
            "Every flag has an environment-variable twin, shown in brackets; "
            "list flags take a comma-separated value there."
        ),
    )
    for name, field in Settings.model_fields.items():
        _add_flag(parser, name, field)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """The command line over the `DUCTAPE_*` environment over the defaults."""
    parser = build_parser()
    given = {
        key: value for key, value in vars(parser.parse_args(argv)).items() if value is not None
    }
    try:
        return Settings(**given)
    except pydantic.ValidationError as exc:
        parser.error("; ".join(_describe(error) for error in exc.errors()))


def _describe(error: Any) -> str:
    """`--flag [DUCTAPE_FIELD]: what is wrong`, for one validation error."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = Settings.model_fields.get(name)
    extra = (field.json_schema_extra if field is not None else None) or {}
    assert isinstance(extra, dict)
    return f"{extra.get('flag', name)} [{ENV_PREFIX}{name.upper()}]: {error['msg']}"
