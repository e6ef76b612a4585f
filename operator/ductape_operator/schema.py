"""The API's building blocks, below `models` and the brokers' config fields.

`models` assembles the MessageBroker API from these and from each broker's
config model (`brokers/<name>/config.py`); both import them from here, so a
broker package never imports `models` while `models` is being built.

Every pattern here is written so that Python (pydantic's Rust regex engine) and
the API server (Go RE2) read it the same way: ASCII classes only, no `\\s` or
`\\d` (Unicode-aware in one engine, ASCII in the other), no lookaround.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, TypeVar, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

#: Names of Kubernetes objects (Secrets): a DNS subdomain.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
OBJECT_NAME_MAX_LENGTH = 253
_HOST = r"[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?"
#: 1..65535, spelled out so that the schema can check the range of a port inside a string.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
#: A host name or IPv4 address.
HOST_PATTERN = rf"^{_HOST}$"
HOST_MAX_LENGTH = 253
#: host:port, port 1..65535.
HOST_PORT_PATTERN = rf"^{_HOST}:{_PORT}$"
#: An http(s) URL: scheme, host, optional port and path; printable ASCII only.
URL_PATTERN = rf"^https?://{_HOST}(:{_PORT})?(/[!-~]*)?$"

ObjectName = Annotated[
    str,
    Field(pattern=OBJECT_NAME_PATTERN, min_length=1, max_length=OBJECT_NAME_MAX_LENGTH),
]
# Numbers and flags are strict, as in the API server: "5672" is not a port, 1 is not true.
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Flag = Annotated[bool, Field(strict=True)]


class ApiModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields rejected.

    A `null` value counts as absent, as it does for the API server, which prunes
    nulls of non-nullable fields before validating.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


class SecretKeySelector(ApiModel):
    """A key of a Secret in the MessageBroker's own namespace."""

    name: Annotated[
        ObjectName, Field(description="Name of a Secret in the MessageBroker's namespace.")
    ]
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[-._a-zA-Z0-9]+$",
            description="Key within that Secret.",
        ),
    ]


class SecretRef(ApiModel):
    """A secret value: never a plain string, always a reference to a Secret key.

    There is deliberately no namespace field: a tenant can never make the
    operator read another namespace's Secret.
    """

    secret_key_ref: Annotated[
        SecretKeySelector, Field(description="The Secret key holding the value.")
    ]


def _check_host_port(value: str) -> str:
    # The pattern already says this; the check stays as a guard should the pattern loosen.
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


HostPort = Annotated[
    str,
    Field(min_length=3, max_length=HOST_MAX_LENGTH + 6, pattern=HOST_PORT_PATTERN),
    AfterValidator(_check_host_port),
]


ConfigModelT = TypeVar("ConfigModelT", bound="ConfigModel")


class ConfigModel(ApiModel):
    """Base of a broker's config model (`brokers/<name>/config.py`) and of the union of
    them all that the API carries (`models.BrokerConfig`)."""

    def set_fields(self) -> set[str]:
        """Wire names of the fields this config sets."""
        return {
            type(self).model_fields[name].alias or name
            for name in self.model_fields_set
            if getattr(self, name) is not None
        }

    def secret_refs(self) -> list[SecretKeySelector]:
        """Every Secret key this config references, at any depth."""
        return [ref.secret_key_ref for ref in _secret_refs(self)]

    def narrow(self, model: type[ConfigModelT]) -> ConfigModelT:
        """This config as one broker's own, typed model (the union holds every field).

        No validation again: the union already validated each field as that model would.
        """
        fields = model.model_fields
        values = {name: getattr(self, name, None) for name in fields}
        narrowed = model.model_construct(
            _fields_set={name for name in self.model_fields_set if name in fields}, **values
        )
        return cast(ConfigModelT, narrowed)


def _secret_refs(model: BaseModel) -> Iterator[SecretRef]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretRef):
            yield value
        elif isinstance(value, BaseModel):
            yield from _secret_refs(value)


class TrustFields(ConfigModel):
    """The trust and client-certificate fields of a broker that speaks TLS.

    A broker's config model inherits them; their descriptions in the API say which
    types have them and which field switches TLS on (`models`, built from the registry).
    """

    ca: Annotated[
        SecretRef | None,
        Field(
            description=(
                "PEM bundle of the CA certificates to trust, from a Secret (default: the"
                " system trust store). Needs {tls_flag}."
            )
        ),
    ] = None
    client_cert: Annotated[
        SecretRef | None,
        Field(
            description="PEM client certificate for mutual TLS, from a Secret; set with clientKey."
        ),
    ] = None
    client_key: Annotated[
        SecretRef | None,
        Field(description="PEM private key of clientCert, from a Secret; set with clientCert."),
    ] = None
