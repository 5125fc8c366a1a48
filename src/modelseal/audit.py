"""Structured audit events: one record per verification on the `modelseal.audit` logger.

Successes log at INFO, failures at ERROR. Each record carries the event as a
dict in `record.modelseal_event`; `JsonLinesHandler` appends them to a file.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelseal.verification import Failure, Verification

LOGGER_NAME = "modelseal.audit"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _emit(level: int, event: dict[str, Any]) -> None:
    event = {"time": _now(), "event": "verify", **event}
    message = f"{event['outcome']}: {event['model_path']}"
    if event["reasons"]:
        message += " (" + "; ".join(event["reasons"][:3]) + ")"
    logger.log(level, message, extra={"modelseal_event": event})


def emit_success(result: Verification) -> None:
    _emit(
        logging.INFO,
        {
            "outcome": "verified",
            "model_name": result.model_name,
            "model_path": result.model,
            "seal_path": result.seal,
            "expected_root": result.root_digest,
            "actual_root": result.root_digest,
            "signed": result.signed,
            "signer_key_ids": list(result.signers),
            "reasons": [],
        },
    )


def emit_failure(failure: Failure) -> None:
    _emit(
        logging.ERROR,
        {
            "outcome": "failed",
            "model_name": failure.model_name,
            "model_path": failure.model,
            "seal_path": failure.seal,
            "expected_root": failure.expected_root,
            "actual_root": failure.actual_root,
            "signed": bool(failure.signers),
            "signer_key_ids": list(failure.signers),
            "reasons": [
                f"{f.kind} {f.name}: {f.detail}" if f.name else f"{f.kind}: {f.detail}"
                for f in failure.findings
            ],
        },
    )


def emit_skipped(model_path: str, seal_path: str, how: str) -> None:
    """The emergency escape was used: CRITICAL, and also said on stderr whatever logging does."""
    event = {
        "outcome": "skipped-unsafe",
        "model_name": None,
        "model_path": model_path,
        "seal_path": seal_path,
        "expected_root": None,
        "actual_root": None,
        "signed": False,
        "signer_key_ids": [],
        "reasons": [f"verification skipped by {how}: NOTHING was checked"],
    }
    _emit(logging.CRITICAL, event)
    print(
        f"modelseal: CRITICAL: loading {model_path} WITHOUT verification ({how})",
        file=sys.stderr,
    )


class JsonLinesHandler(logging.FileHandler):
    """Appends each audit event as one JSON line."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename, mode="a", encoding="utf-8")

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "modelseal_event", None)
        if event is None:
            event = {"time": _now(), "message": record.getMessage()}
        return json.dumps({"level": record.levelname, **event}, sort_keys=True)
