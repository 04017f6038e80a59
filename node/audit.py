"""Audit trail: one parseable line per association and per transfer, on the `node.audit` logger.

Format: ``AUDIT event=<name> key=value ...`` with values quoted when they contain spaces, so that
`grep AUDIT | sed` or any log shipper can parse it.
"""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    s = str(value)
    if s == "" or any(c.isspace() or c in '"=' for c in s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def audit(event: str, **fields: Any) -> None:
    """Log one audit event, e.g. ``audit("association", peer_ae="CT1", address="10.0.0.5", result="accepted")``."""
    parts = [f"event={_fmt(event)}"] + [f"{k}={_fmt(v)}" for k, v in fields.items()]
    logger.info("AUDIT %s", " ".join(parts))
