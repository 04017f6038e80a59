"""Audit trail: one parseable line per association, transfer, operator action (done or refused), refused access
and retention deletion, on the `node.audit` logger.

Format: ``AUDIT event=<name> key=value ...`` with values quoted when they contain spaces, so that
`grep AUDIT | sed` or any log shipper can parse it. The lines are written whatever ``[node] log_level`` says:
the `node.audit` logger has its own level (INFO), so they reach the log (the journal under systemd) at WARNING
too, and every process working on a data dir (the node, and the CLI's operator commands) appends them to
``data_dir/audit.log`` (:func:`open_file`; reopened when logrotate moves it). The most recent events of this
process are also kept in memory (:func:`recent`) for the dashboard.
"""
from __future__ import annotations

import logging
import logging.handlers
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AUDIT_FILE", "AuditEvent", "audit", "close_file", "open_file", "recent"]

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)  # independent of log_level: an audit line is never filtered out

#: The audit file in data_dir, appended by the node and by the CLI's operator commands.
AUDIT_FILE = "audit.log"

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


def open_file(data_dir: Path) -> Path | None:
    """Append every audit line of this process to ``data_dir/audit.log`` too (idempotent). Returns the path, or
    None when the file cannot be opened (e.g. made by root): a warning, and the lines still go to the log."""
    path = (Path(data_dir) / AUDIT_FILE).resolve()
    with _LOCK:
        if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
            try:
                handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
            except OSError as exc:
                logger.warning("cannot append audit lines to %s: %s; they go to the log only", path,
                               exc.strerror or exc)
                return None
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
    return path


def close_file(data_dir: Path) -> None:
    """Stop appending to ``data_dir/audit.log`` (the node's stop)."""
    path = str((Path(data_dir) / AUDIT_FILE).resolve())
    with _LOCK:
        for h in [h for h in logger.handlers if getattr(h, "baseFilename", None) == path]:
            logger.removeHandler(h)
            h.close()
