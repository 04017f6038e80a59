"""Notifications: events read from the status model, delivered to webhooks from a durable, retried queue.

Every ``[notifications] check_interval_seconds`` the watcher compares the status model with what it saw last
(kept in ``data_dir/notifications.sqlite3``, so a restart neither repeats nor loses an event) and emits:

- ``case-done``, ``case-failed``, ``case-held``: a case reached that state (per analysis version);
- ``case-stalled``: a case has waited (receiving or stable) longer than ``stalled_after_minutes`` since its last
  input; once per last input;
- ``destination-failing`` / ``destination-recovered``: a destination has failed without a success for longer
  than ``destination_failing_after_minutes`` / succeeded again;
- ``disk-low``: free space of data_dir fell below ``[node] min_free_disk_mb`` (C-STOREs are being refused).

Each event is queued once per subscribed webhook and POSTed as JSON; failures retry with exponential backoff
until ``max_attempts``. Payloads carry no patient data unless the webhook sets ``include_phi = true``: a case is
named by ``case_ref``, a keyed hash the dashboard resolves (``/ui/ref/<case_ref>``), and described by its state,
version, per-workflow states and counts (series, instances, outputs routed and sent; a held case's number of
identity conflicts), a stalled one by the roles its workflows wait for. Free text about a case (its reason: a held
case's names both patients) goes only to ``include_phi`` webhooks, with the case's IDs and name.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node import __version__
from node.casestatus import CaseStatus, NodeStatus, iso
from node.config import Config, WebhookConfig

__all__ = ["Notifier", "case_ref", "node_secret", "redact"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_cases (case_id TEXT PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL,
                                       stalled_input REAL);
CREATE TABLE IF NOT EXISTS seen_destinations (destination TEXT PRIMARY KEY, alerted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    webhook TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);
"""


def node_secret(data_dir: Path) -> bytes:
    """A random key kept in data_dir (mode 0600), created on first use: keys case_ref and the dashboard's CSRF."""
    path = Path(data_dir) / "node-secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def case_ref(secret: bytes, case_id: str) -> str:
    """An opaque, stable name of a case for messages that must not carry its PatientID."""
    return hmac.new(secret, case_id.encode(), hashlib.sha256).hexdigest()[:16]


class Notifier:
    """Watches the status model, emits events, delivers webhooks. ``start()`` runs both in one thread."""

    def __init__(self, config: Config, status_provider: Callable[[], NodeStatus],
                 on_case_finished: Callable[[CaseStatus], None] | None = None) -> None:
        self.config = config
        self._provider = status_provider
        self._on_case_finished = on_case_finished
        self._secret = node_secret(config.node.data_dir)
        self._db = sqlite3.connect(str(Path(config.node.data_dir) / "notifications.sqlite3"), isolation_level=None,
                                   check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._disk_alerted = False
        self.last_error = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notifications", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            self._db.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
                self.deliver()
            except Exception as exc:  # never let one bad pass end notifications
                logger.exception("notification pass failed")
                self.last_error = repr(exc)
            self._stop.wait(self.config.notifications.check_interval_seconds)

    # ------------------------------------------------------------------ detection
    def check(self, now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Compare the status model with what was seen; queue and return the new events (event, payload)."""
        now = time.time() if now is None else now
        status = self._provider()
        cfg = self.config.notifications
        events: list[tuple[str, dict[str, Any], CaseStatus | None]] = []
        with self._lock:
            db = self._db
            seeded = db.execute("SELECT value FROM meta WHERE key='seeded'").fetchone() is not None
            seen = {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT * FROM seen_cases")}
            for case in status.cases:
                prev = seen.get(case.case_id)
                stalled_input = prev[2] if prev else None
                if prev is None or (prev[0], prev[1]) != (case.state, case.version):
                    if seeded and case.state in ("done", "failed", "held"):
                        held_by = sum(1 for c in status.conflicts if case.case_id in c.cases)
                        events.append((f"case-{case.state}", self._case_payload(case, held_by), case))
                        if case.state != "held" and self._on_case_finished is not None:
                            self._on_case_finished(case)
                if (case.state in ("receiving", "stable") and case.last_input_at
                        and now - case.last_input_at > cfg.stalled_after_minutes * 60
                        and stalled_input != case.last_input_at):
                    if seeded:
                        payload = self._case_payload(case)
                        payload["waiting_minutes"] = round((now - case.last_input_at) / 60, 1)
                        payload["why"] = _waiting_roles(case)
                        events.append(("case-stalled", payload, case))
                    stalled_input = case.last_input_at
                db.execute("INSERT INTO seen_cases VALUES (?,?,?,?) ON CONFLICT(case_id) DO UPDATE SET "
                           "state=excluded.state, version=excluded.version, stalled_input=excluded.stalled_input",
                           (case.case_id, case.state, case.version, stalled_input))
            alerted = {r[0]: bool(r[1]) for r in db.execute("SELECT * FROM seen_destinations")}
            for d in status.destinations:
                threshold = cfg.destination_failing_after_minutes * 60
                failing = d.failing_since is not None and now - d.failing_since >= threshold
                was = alerted.get(d.name, False)
                if failing != was and (failing or d.failing_since is None):
                    events.append(("destination-failing" if failing else "destination-recovered", {
                        "destination": d.name, "target": d.target, "failing_since": iso(d.failing_since),
                        "unsent": sum(n for s, n in d.counts.items() if s != "sent"),
                        "last_error": redact(d.last_error, status, self._secret)}, None))
                    db.execute("INSERT INTO seen_destinations VALUES (?,?) ON CONFLICT(destination) DO UPDATE SET "
                               "alerted=excluded.alerted", (d.name, int(failing)))
            if status.disk is not None:
                if status.disk.low and not self._disk_alerted:
                    events.append(("disk-low", {"data_dir": str(status.disk.path), "free_bytes": status.disk.free_bytes,
                                                "min_free_bytes": status.disk.min_free_bytes}, None))
                self._disk_alerted = status.disk.low
            if not seeded:  # first run on this data dir: what exists now is history, not news
                db.execute("INSERT INTO meta VALUES ('seeded', ?)", (iso(now),))
            out = []
            for event, payload, _case in events:
                body = {"event": event, "time": iso(now), "node": self.config.node.ae_title,
                        "software": f"liver-node {__version__}", **payload}
                self._queue(event, body, _case, now)
                out.append((event, body))
        for event, body in out:
            log = logger.warning if event in ("case-failed", "case-held", "case-stalled", "destination-failing",
                                              "disk-low") else logger.info
            log("notification %s: %s", event, {k: v for k, v in body.items() if k not in ("time", "node", "software")})
        return out

    def _case_payload(self, case: CaseStatus, conflicts: int = 0) -> dict[str, Any]:
        """The case by its opaque reference, state, version and counts only. Never a free-text reason: a held
        case's names both patients' IDs, a failed one may quote a file path or a header value (those go to
        webhooks with include_phi only, see _queue)."""
        sent = sum(1 for o in case.outputs if o.destination and o.state == "sent")
        out = {"case_ref": case_ref(self._secret, case.case_id), "state": case.state, "version": case.version,
               "workflows": {n: w.state for n, w in case.workflows.items()},
               "series": len(case.series), "instances": sum(s.instances for s in case.series),
               "outputs": {"routed": sum(1 for o in case.outputs if o.destination), "sent": sent},
               "dashboard_path": f"/ui/ref/{case_ref(self._secret, case.case_id)}"}
        if case.state == "held":
            out["identity_conflicts"] = conflicts
        return out

    def _queue(self, event: str, body: dict[str, Any], case: CaseStatus | None, now: float) -> None:
        for hook in self.config.notifications.webhooks:
            if event not in hook.events:
                continue
            payload = dict(body)
            if hook.include_phi and case is not None:
                payload.update(case_id=case.case_id, patient_id=case.patient_id, patient_name=case.patient_name,
                               issuer_of_patient_id=case.issuer_of_patient_id, reason=case.reason)
            self._db.execute("INSERT INTO queue (webhook, event, payload, state, next_attempt, created, updated) "
                             "VALUES (?,?,?,'pending',?,?,?)", (hook.name, event, json.dumps(payload), now, now, now))

    # ------------------------------------------------------------------ delivery
    def deliver(self, now: float | None = None) -> int:
        """POST every due queued notification; returns how many were delivered."""
        now = time.time() if now is None else now
        hooks = {h.name: h for h in self.config.notifications.webhooks}
        with self._lock:
            rows = self._db.execute("SELECT id, webhook, payload, attempts FROM queue WHERE state='pending' AND "
                                    "next_attempt<=? ORDER BY id", (now,)).fetchall()
        delivered = 0
        for item_id, name, payload, attempts in rows:
            hook = hooks.get(name)
            if hook is None:  # removed from the configuration: nothing to deliver to
                self._update(item_id, "failed", attempts, now, "webhook no longer configured")
                continue
            error = self._post(hook, payload.encode())
            attempts += 1
            if error is None:
                self._update(item_id, "sent", attempts, now, None)
                delivered += 1
            elif attempts >= hook.max_attempts:
                logger.error("webhook %s: giving up after %d attempts: %s", name, attempts, error)
                self._update(item_id, "failed", attempts, now, error)
            else:
                delay = min(hook.backoff_initial_seconds * 2 ** (attempts - 1), hook.backoff_max_seconds)
                logger.warning("webhook %s: %s; retry %d in %.0f s", name, error, attempts + 1, delay)
                self._update(item_id, "pending", attempts, now + delay, error)
        return delivered

    def _update(self, item_id: int, state: str, attempts: int, next_attempt: float, error: str | None) -> None:
        with self._lock:
            self._db.execute("UPDATE queue SET state=?, attempts=?, next_attempt=?, last_error=?, updated=? "
                             "WHERE id=?", (state, attempts, next_attempt, error, time.time(), item_id))

    @staticmethod
    def _post(hook: WebhookConfig, body: bytes) -> str | None:
        """POST `body`; None on a 2xx answer, else the error in words."""
        headers = {"Content-Type": "application/json", "User-Agent": f"liver-node/{__version__}"}
        if hook.secret:
            headers["X-LiverNode-Signature"] = "sha256=" + hmac.new(hook.secret.encode(), body,
                                                                    hashlib.sha256).hexdigest()
        req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=hook.timeout_seconds) as rsp:
                rsp.read()
                return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"cannot reach {hook.url.split('?')[0]}: {reason}"

    def queue_rows(self) -> list[dict[str, Any]]:
        """The notification queue (dashboard, tests)."""
        with self._lock:
            cur = self._db.execute("SELECT id, webhook, event, state, attempts, last_error, created FROM queue "
                                   "ORDER BY id DESC LIMIT 200")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _waiting_roles(case: CaseStatus) -> list[str]:
    """Why a stalled case waits, from the workflows' role-based reasons only (the case's own reason may name
    patients: a released case's quotes the identity conflict)."""
    out = [f"{w.name}: {w.reason}" for w in case.workflows.values() if w.state in ("waiting", "ready")]
    return out or ["no workflow has its key input yet"]


def redact(text: str, status: NodeStatus, secret: bytes) -> str:
    """`text` (an error message: it may quote an outbox path, data_dir/outbox/<PatientID>/...) with every case ID,
    PatientID and patient name the node knows replaced by the case's case_ref."""
    from node.outbox import case_folder_name

    pairs = []
    for c in status.cases:
        ref = f"<case {case_ref(secret, c.case_id)}>"
        for value in (c.case_id, case_folder_name(c.case_id), c.patient_id, c.patient_name):
            if value:
                pairs.append((value, ref))
    for value, ref in sorted(pairs, key=lambda p: -len(p[0])):  # longest first: a name containing an ID
        # whole values only: a PatientID "12" is not the start of the address 127.0.0.1
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", ref, text)
    return text
