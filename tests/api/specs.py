"""Spec builders and hypothesis strategies for MessageBroker specs.

Pure (no Kubernetes): the unit tests and the API-server tests share them. The
strategies make mostly valid specs and then, more often than not, break one
thing subtly, so that both verdicts (accept and reject) are well represented.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from ductape_operator import models

Spec = dict[str, Any]

REF = {"secretKeyRef": {"name": "creds", "key": "password"}}

#: A valid value for every config field (wire name), so a field can be put on any env.
SAMPLE_VALUES: dict[str, Any] = {
    "brokers": ["127.0.0.1:29092"],
    "clientId": "ductape",
    "groupId": "ductape-apps",
    "ssl": True,
    "sasl": {"mechanism": "scram-sha-256", "username": "app", "password": REF},
    "replicationFactor": 1,
    "host": "127.0.0.1",
    "port": 6379,
    "username": "guest",
    "password": REF,
    "db": 0,
    "tls": True,
    "vhost": "/",
    "ca": {"secretKeyRef": {"name": "broker-ca", "key": "ca.crt"}},
    "clientCert": {"secretKeyRef": {"name": "client-tls", "key": "tls.crt"}},
    "clientKey": {"secretKeyRef": {"name": "client-tls", "key": "tls.key"}},
    "projectId": "ductape-local",
    "credentials": REF,
    "emulatorHost": "127.0.0.1:28085",
    "region": "us-east-1",
    "endpoint": "http://127.0.0.1:29324",
    "accessKeyId": REF,
    "secretAccessKey": REF,
    "servers": ["nats://127.0.0.1:24222"],
}

TYPES = list(models.MessageBrokerTypes)


def minimal_config(type_: models.MessageBrokerTypes) -> dict[str, Any]:
    required, _ = models.FIELDS_BY_TYPE[type_]
    return {field: copy.deepcopy(SAMPLE_VALUES[field]) for field in sorted(required)}


def full_config(type_: models.MessageBrokerTypes) -> dict[str, Any]:
    required, optional = models.FIELDS_BY_TYPE[type_]
    return {field: copy.deepcopy(SAMPLE_VALUES[field]) for field in sorted(required | optional)}


def env(slug: str, type_: models.MessageBrokerTypes, config: dict[str, Any] | None = None) -> Spec:
    return {
        "slug": slug,
        "type": type_.value,
        "config": minimal_config(type_) if config is None else config,
    }


def spec(*envs: Spec, tag: str = "message-bus", **extra: Any) -> Spec:
    return {
        "name": "Message Bus",
        "tag": tag,
        "envs": list(envs) or [env("dev", models.MessageBrokerTypes.REDIS)],
        **extra,
    }


def foreign_fields(type_: models.MessageBrokerTypes) -> list[str]:
    required, optional = models.FIELDS_BY_TYPE[type_]
    return [field for field in SAMPLE_VALUES if field not in required | optional]


# --- hypothesis ---------------------------------------------------------------

_LABEL_CHARS = "abcz0189-"
#: Valid DNS labels, up to 63 characters, short ones most of the time.
valid_slugs = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z").filter(lambda s: len(s) <= 63)
#: Slug-like strings, valid or not: wrong characters, edges, lengths around 63.
slugish = st.one_of(
    valid_slugs,
    st.text(alphabet=_LABEL_CHARS + "A_. ", min_size=0, max_size=8),
    st.integers(min_value=60, max_value=66).map(lambda n: "a" * n),
)
_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20)


@st.composite
def _config_value(draw: st.DrawFn, field: str) -> Any:
    """A value for `field`: usually valid, sometimes near or past an edge."""
    sample = SAMPLE_VALUES[field]
    if draw(st.sampled_from([*[True] * 19, False])):
        return copy.deepcopy(sample)
    if field in ("port",):
        return draw(st.one_of(st.integers(-1, 2), st.integers(65534, 65537), st.just("6379")))
    if field == "db":
        return draw(st.one_of(st.integers(-1, 1), st.integers(1022, 1024)))
    if field == "replicationFactor":
        return draw(st.integers(0, 33))
    if field in ("ssl", "tls"):
        return draw(st.sampled_from([True, False, "true", 1]))
    if field in ("host",):
        return draw(st.sampled_from(["redis", "a", "-a", "a:1", "redis.svc", "", "10.0.0.1"]))
    if field in ("brokers",):
        hostport = st.sampled_from(["k:9092", "k:0", "k:65535", "k:65536", "k", ":1", "k:09"])
        return draw(st.lists(hostport, min_size=0, max_size=3))
    if field == "servers":
        url = st.sampled_from(
            ["nats://n:4222", "tls://n:4222", "n:4222", "nats://n", "nats://u:p@n:1", "nats://n:0"]
        )
        return draw(st.lists(url, min_size=0, max_size=3))
    if field == "emulatorHost":
        return draw(st.sampled_from(["e:8085", "e", "e:70000", "e:1"]))
    if field == "endpoint":
        return draw(st.sampled_from(["http://s", "https://s:443/x", "ftp://s", "http://", "s"]))
    if field in ("clientId", "groupId", "username", "vhost"):
        return draw(st.one_of(_text, st.just(""), st.just("v" * 254), st.just("v" * 253)))
    if field == "projectId":
        return draw(st.sampled_from(["p1", "p", "P-1", "p-", "ductape-local"]))
    if field == "region":
        return draw(st.sampled_from(["eu-west-1", "EU", "", "r_1"]))
    if field == "sasl":
        return draw(
            st.sampled_from(
                [
                    {"mechanism": "plain", "username": "u", "password": REF},
                    {"mechanism": "gssapi", "username": "u", "password": REF},
                    {"mechanism": "plain", "username": "", "password": REF},
                    {"mechanism": "plain", "username": "u"},
                ]
            )
        )
    # secret references
    return draw(
        st.sampled_from(
            [
                REF,
                {"secretKeyRef": {"name": "Bad_Name", "key": "k"}},
                {"secretKeyRef": {"name": "s", "key": ""}},
                {"secretKeyRef": {"name": "s"}},
                "plain-text",
            ]
        )
    )


@st.composite
def env_specs(draw: st.DrawFn, slug: str) -> Spec:
    type_ = draw(st.sampled_from(TYPES))
    required, optional = models.FIELDS_BY_TYPE[type_]
    fields = set(required) | set(draw(st.sets(st.sampled_from(sorted(optional)))))
    tls_fields = fields & set(models.TLS_FIELDS)
    if tls_fields and draw(st.integers(0, 9)):
        # Mostly coherent: TLS on, and a client certificate with its key.
        fields.add("ssl" if type_ is models.MessageBrokerTypes.KAFKA else "tls")
        if tls_fields & {"clientCert", "clientKey"}:
            fields |= {"clientCert", "clientKey"}
    config = {field: draw(_config_value(field)) for field in sorted(fields)}
    return {"slug": slug, "type": type_.value, "config": config}


def _mostly(valid: list[Any], edges: list[Any]) -> st.SearchStrategy[Any]:
    """One of `valid` nine times in ten, else one of `edges` (some past the limit)."""
    return st.one_of(*[st.sampled_from(valid)] * 9, st.sampled_from(edges))


@st.composite
def topic_specs(draw: st.DrawFn, tag: str) -> Spec:
    topic: Spec = {"tag": tag}
    if draw(st.booleans()):
        topic["name"] = draw(
            _mostly(["orders.created", "orders.v2"], ["Orders_1", "o" * 200, "1orders"])
        )
    if draw(st.booleans()):
        topic["partitions"] = draw(_mostly([1, 3, 12], [10000, 0, 10001]))
    if draw(st.booleans()):
        topic["retentionSeconds"] = draw(_mostly([600, 604800, 1209600], [599, 1209601]))
    subs = draw(st.lists(valid_slugs, max_size=3, unique=True))
    if subs:
        topic["subscriptions"] = subs
    return topic


@st.composite
def valid_ish_specs(draw: st.DrawFn) -> Spec:
    """Specs built from valid parts; a few generated values sit past an edge."""
    slugs = draw(st.lists(valid_slugs, min_size=1, max_size=3, unique=True))
    tags = draw(st.lists(valid_slugs, min_size=0, max_size=3, unique=True))
    result: Spec = {
        "name": draw(_text),
        "tag": draw(valid_slugs),
        "envs": [draw(env_specs(slug)) for slug in slugs],
    }
    if tags:
        result["topics"] = [draw(topic_specs(tag)) for tag in tags]
    if draw(st.booleans()):
        result["deletionPolicy"] = draw(st.sampled_from(["Retain", "Delete"]))
    return result


@st.composite
def mutated_specs(draw: st.DrawFn) -> Spec:
    """A valid-ish spec with, most of the time, one deliberate mistake."""
    base = draw(valid_ish_specs())
    result = copy.deepcopy(base)
    # Unmutated three times in four: about half of the valid-ish specs are valid as they
    # are, so both verdicts stay well represented (test_property checks the mix).
    mutation = (
        "none"
        if draw(st.booleans()) or draw(st.booleans())
        else draw(
            st.sampled_from(
                [
                    "foreign-field",
                    "drop-required",
                    "slug",
                    "duplicate-slug",
                    "duplicate-tag",
                    "duplicate-subscription",
                    "tag",
                    "type",
                    "long-name",
                    "unknown-field",
                    "deletion-policy",
                    "swap-type",
                    "dead-letter",
                ]
            )
        )
    )
    envs = result["envs"]
    target = envs[draw(st.integers(0, len(envs) - 1))]
    type_ = models.MessageBrokerTypes(target["type"])
    if mutation == "foreign-field":
        field = draw(st.sampled_from(foreign_fields(type_)))
        target["config"][field] = copy.deepcopy(SAMPLE_VALUES[field])
    elif mutation == "drop-required":
        required, _ = models.FIELDS_BY_TYPE[type_]
        target["config"].pop(sorted(required)[0])
    elif mutation == "slug":
        target["slug"] = draw(slugish)
    elif mutation == "duplicate-slug":
        envs.append({**copy.deepcopy(envs[0]), "type": draw(st.sampled_from(TYPES)).value})
        envs[-1]["config"] = minimal_config(models.MessageBrokerTypes(envs[-1]["type"]))
    elif mutation == "duplicate-tag":
        result.setdefault("topics", []).extend([{"tag": "t"}, {"tag": "t", "name": "other"}])
    elif mutation == "duplicate-subscription":
        result["topics"] = [{"tag": "t", "subscriptions": ["s", draw(st.sampled_from("sx"))]}]
    elif mutation == "tag":
        result["tag"] = draw(slugish)
    elif mutation == "type":
        target["type"] = draw(st.sampled_from(["kafka", "MQTT", "", "REDIS"]))
    elif mutation == "long-name":
        field, limit = draw(st.sampled_from([("name", 253), ("description", 4096)]))
        result[field] = "n" * draw(st.integers(limit - 1, limit + 1))
    elif mutation == "unknown-field":
        target["config"]["hostName"] = "x"
    elif mutation == "deletion-policy":
        result["deletionPolicy"] = draw(st.sampled_from(["Retain", "retain", "Orphan"]))
    elif mutation == "dead-letter":
        # Valid, or wrong in one of the ways the CEL rules and pydantic both refuse.
        target_tag = draw(st.sampled_from(["dead", "live", "nowhere"]))
        attempts = draw(st.sampled_from([5, 100, 4, 101]))
        dead_subs = draw(st.sampled_from([["ops"], [], ["ops", "audit"]]))
        dead: Spec = {"tag": "dead", "subscriptions": dead_subs}
        if draw(st.booleans()):
            dead["deadLetter"] = {"topic": "live", "maxDeliveryAttempts": 5}
        result["topics"] = [
            {
                "tag": "live",
                "deadLetter": {"topic": target_tag, "maxDeliveryAttempts": attempts},
                "subscriptions": ["billing"],
            },
            dead,
        ]
    elif mutation == "swap-type":
        # The one-line provider swap: valid only if the config happens to fit the new type.
        target["type"] = draw(st.sampled_from(TYPES)).value
    return result
