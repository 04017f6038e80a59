"""Audit trail: one parseable line per association, transfer, operator action and retention deletion, on the
`node.audit` logger.

Format: ``AUDIT event=<name> key=value ...`` with values quoted when they contain spaces, so that
`grep AUDIT | sed` or any log shipper can parse it. The most recent events of this process are also kept in
memory (:func:`recent`) for the dashboard; the log (the journal under systemd) is the durable record.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_RECENT: deque[AuditEvent] = deque(maxlen=500)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class AuditEvent:
    time: float
    event: str
    fields: dict[str, str]

    @property
    def line(self) -> str:
        return " ".join([f"event={_fmt(self.event)}"] + [f"{k}={_fmt(v)}" for k, v in self.fields.items()])


def _fmt(value: Any) -> str:
    s = str(value)
    if s == "" or any(c.isspace() or c in '"=' for c in s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def audit(event: str, **fields: Any) -> None:
    """Log one audit event, e.g. ``audit("association", peer_ae="CT1", address="10.0.0.5", result="accepted")``."""
    ev = AuditEvent(time.time(), event, {k: str(v) for k, v in fields.items()})
    with _LOCK:
        _RECENT.append(ev)
    logger.info("AUDIT %s", ev.line)


def recent(limit: int = 100, exclude: tuple[str, ...] = ()) -> list[AuditEvent]:
    """The newest audit events of this process, newest first."""
    with _LOCK:
        events = [e for e in reversed(_RECENT) if e.event not in exclude]
    return events[:limit]
