"""The broker registry: every registered package supplies what the shared machinery asks
for, and the shared machinery names no broker (README.md, "Layout")."""

from __future__ import annotations

import importlib
import pathlib

import pytest

from ductape_operator import brokers, models, schema
from ductape_operator.messaging import binding as binding_
from ductape_operator.providers import base

PACKAGE = pathlib.Path(brokers.__file__).parents[1]
#: The modules every broker goes through; none may spell a broker's name as code.
SHARED = [
    "__main__.py",
    "core.py",
    "crdgen.py",
    "handlers.py",
    "health.py",
    "kube.py",
    "models.py",
    "reconcile.py",
    "schema.py",
    "topics.py",
    "messaging/binding.py",
    "messaging/broker.py",
    "messaging/_transport.py",
    "providers/__init__.py",
    "providers/_common.py",
    "providers/base.py",
]
KINDS = brokers.kinds()


@pytest.mark.parametrize("kind", KINDS, ids=[k.type for k in KINDS])
def test_each_package_supplies_both_sides(kind: brokers.BrokerKind) -> None:
    assert models.MessageBrokerTypes(kind.type).kind is kind
    assert brokers.by_binding_type(kind.binding_type) is kind
    provider = kind.provider_class()
    assert kind.type == provider.TYPE
    for verb in ("ensure_topic", "delete_topic", "inventory", "backlog", "probe", "binding"):
        assert callable(getattr(provider, verb)), verb
    assert callable(kind.transport_factory())
    model = kind.config_module().MODEL
    assert issubclass(model, schema.ConfigModel)
    wire = {info.alias for info in model.model_fields.values()}
    assert wire == kind.required | kind.optional
    assert set(kind.identity_fields) <= wire
    assert kind.tls_flag is None or kind.tls_flag in wire
    for module in ("errors", "entries"):
        assert importlib.import_module(f"{kind.package}.{module}")
    assert {entry for group in kind.required_entries for entry in group} - {"uri"} <= set(
        kind.entries
    )


def test_the_api_is_the_union_of_the_packages() -> None:
    assert [t.value for t in models.MessageBrokerTypes] == [k.type for k in KINDS]
    assert tuple(k.binding_type for k in KINDS) == binding_.TYPES
    union = {info.alias for info in models.BrokerConfig.model_fields.values()}
    assert union == {field for k in KINDS for field in k.required | k.optional}
    assert base.TopicRoute.__module__ == "ductape_operator.topics"


@pytest.mark.parametrize("path", SHARED)
def test_shared_machinery_names_no_broker(path: str) -> None:
    source = (PACKAGE / path).read_text()
    for kind in KINDS:
        for name in (kind.type, kind.binding_type):
            assert f'"{name}"' not in source and f"'{name}'" not in source, (path, name)
            assert f"MessageBrokerTypes.{kind.type}" not in source, (path, kind.type)
