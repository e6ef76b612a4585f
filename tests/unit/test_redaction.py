"""Registered secret values never reach a log line, a traceback or an Event."""

from __future__ import annotations

import io
import logging

from ductape_operator import redaction


def test_redact_masks_registered_values_only() -> None:
    redaction.register(["hunter2-secret", "abc"])  # "abc" is too short to mask safely
    assert redaction.redact("amqp://u:hunter2-secret@h/") == "amqp://u:***@h/"
    assert redaction.redact("abc stays") == "abc stays"


def test_filter_masks_messages_args_and_tracebacks() -> None:
    redaction.register(["s3cr3t-value-1"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redaction.RedactingFilter())
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting with %s", "s3cr3t-value-1")
        try:
            raise ValueError("bad url redis://:s3cr3t-value-1@h")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "s3cr3t-value-1" not in text
    assert text.count("***") >= 2
    assert "ValueError" in text


def test_a_secret_containing_another_is_masked_whole() -> None:
    redaction.register(["pass-word"], owner=("ns", "short"))
    redaction.register(["pass-word-extended"], owner=("ns", "long"))
    try:
        assert redaction.redact("x=pass-word-extended y=pass-word") == "x=*** y=***"
    finally:
        redaction.forget(("ns", "short"))
        redaction.forget(("ns", "long"))


def test_values_of_a_forgotten_secret_are_no_longer_kept_or_masked() -> None:
    owner = ("ns", "rotated")
    redaction.register(["old-password-1"], owner=owner)
    assert redaction.redact("old-password-1") == "***"
    redaction.forget(owner)
    assert redaction.redact("old-password-1") == "old-password-1"
    redaction.register(["new-password-2"], owner=owner)
    redaction.register(["other-key-3"], owner=owner)  # more keys of the same Secret add up
    assert redaction.redact("new-password-2 other-key-3") == "*** ***"
    redaction.forget(owner)
    assert redaction.redact("new-password-2 other-key-3") == "new-password-2 other-key-3"


def test_many_secrets_mask_in_one_pass() -> None:
    owners = [("ns", f"s{i}") for i in range(2000)]
    for i, owner in enumerate(owners):
        redaction.register([f"secret-value-{i:05d}"], owner=owner)
    try:
        line = "a " * 500 + "secret-value-01999 and secret-value-00007" + " b" * 500
        redacted = redaction.redact(line)
        assert "secret-value" not in redacted
        assert redacted.count("***") == 2
    finally:
        for owner in owners:
            redaction.forget(owner)
