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
