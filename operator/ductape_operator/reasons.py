"""Every reason the operator reports, as one enum (docs/reference.md, "Status").

Condition reasons and Event reasons are CamelCase and stable: users, Argo CD's
health check and alerts match on them. A `StrEnum`, so each member is the string
it names wherever a reason is written.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # Ready, when True, and the other conditions' success reasons.
    ALL_ENVS_READY = "AllEnvsReady"
    ALL_ENVS_PROVISIONED = "AllEnvsProvisioned"
    ALL_BROKERS_HEALTHY = "AllBrokersHealthy"
    # Why a condition is False.
    PROVISIONING = "Provisioning"
    PROVISIONING_FAILED = "ProvisioningFailed"
    BROKER_UNREACHABLE = "BrokerUnreachable"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    TLS_FAILED = "TLSFailed"
    INVALID_CONFIG = "InvalidConfig"
    SECRET_NOT_FOUND = "SecretNotFound"
    TAG_CONFLICT = "TagConflict"
    PAUSED = "Paused"
    # Events only.
    DRIFT_REPAIRED = "DriftRepaired"
    SECRET_WRITTEN = "SecretWritten"
    RETAINED = "Retained"
    DELETED = "Deleted"
    ENV_REMOVED = "EnvRemoved"
    DELETION_INCOMPLETE = "DeletionIncomplete"


#: Which failure names the Ready condition when envs fail for different reasons: the one
#: a user must act on first (a broken spec before a missing Secret before a broker).
PRIORITY = (
    Reason.INVALID_CONFIG,
    Reason.TAG_CONFLICT,
    Reason.SECRET_NOT_FOUND,
    Reason.AUTHENTICATION_FAILED,
    Reason.TLS_FAILED,
    Reason.PROVISIONING_FAILED,
    Reason.BROKER_UNREACHABLE,
    Reason.PROVISIONING,
)
