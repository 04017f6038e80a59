"""Durable outbox: every output object is written and fsynced, then queued in SQLite, before it counts as produced.

Files live under ``data_dir/outbox/<case>/<SOPInstanceUID>.dcm``; queue rows live in the node's SQLite database
(``data_dir/index.sqlite3``) in tables named ``outbox_*``, one row per (SOP instance, destination).

Item states::

    pending --claim--> sending --C-STORE ok--> sent
       ^                  |----failure------> retrying (next_attempt = now + backoff) --due--> sending ...
       |                  |----failure, attempts >= max_attempts or permanent refusal--> failed (parked)
       +-- resend() / restart recovery (sending -> pending) / stop()

Only the sender moves items out of ``sending``; a crash leaves them there and :meth:`Outbox.recover_interrupted`
(called by :class:`node.sender.Sender` at start) puts them back to ``pending``. An item is marked ``sent`` as soon
as its own C-STORE succeeded, so nothing confirmed is ever sent again; only the one instance in flight at a crash
can reach a peer twice (peers keep one copy of a SOP instance).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from node.config import Config, OutboxConfig
from node.index import index_path
from node.store import fsync_dir
from node.workflow import OutputObject

__all__ = ["STATES", "OutboxItem", "Outbox", "backoff_delay", "atomic_write"]

logger = logging.getLogger(__name__)

STATES = ("pending", "retrying", "sending", "failed", "sent")
_SCHEMA_VERSION = "2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_items (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    case_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    path TEXT NOT NULL,                 -- relative to data_dir
    state TEXT NOT NULL CHECK (state IN ('pending', 'retrying', 'sending', 'failed', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,         -- unix time; due when <= now
    last_error TEXT,
    sent_as TEXT,                       -- how it went out when not as stored (fallback), for the record
    created REAL NOT NULL,
    updated REAL NOT NULL,
    sent_at REAL,
    description TEXT NOT NULL DEFAULT '',       -- schema 2: what the object is, for the manifest and dashboard
    series_instance_uid TEXT NOT NULL DEFAULT '',  -- schema 2
    pruned_at REAL,                              -- schema 2: file removed by retention (the row is the record)
    UNIQUE (sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS outbox_items_due ON outbox_items (destination, state, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_items_case ON outbox_items (case_id);
CREATE TABLE IF NOT EXISTS outbox_unrouted (     -- outputs no destination takes: kept in the folder, listed
    sop_instance_uid TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    description TEXT NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL
);
"""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: Columns added by schema version 2 (ALTER TABLE on a version-1 database at open).
_V2_COLUMNS = (("description", "TEXT NOT NULL DEFAULT ''"), ("series_instance_uid", "TEXT NOT NULL DEFAULT ''"),
               ("pruned_at", "REAL"))


def case_folder_name(case_id: str) -> str:
    """The case's result folder under data_dir/outbox (case ids are PatientIDs: made safe as a file name)."""
    return _SAFE_NAME.sub("_", case_id) or "_"


def backoff_delay(attempts: int, cfg: OutboxConfig) -> float:
    """Seconds to wait after the `attempts`-th failure: initial * 2**(attempts-1), capped at the maximum."""
    exponent = min(max(attempts - 1, 0), 60)  # cap the exponent so huge attempt counts cannot overflow
    return min(cfg.backoff_initial_seconds * (2.0 ** exponent), cfg.backoff_max_seconds)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that a crash leaves either the old file or the complete new one: temp file in the same
    folder, fsync, rename over `path`, fsync the folder (the rename itself must survive a power cut)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _encode(ds: Dataset) -> tuple[Dataset, str]:
    """The dataset to write (with file meta) and its transfer syntax; the caller's object is not modified."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None:
        return ds, str(ts)
    out = copy.copy(ds)  # shallow: only file_meta is replaced
    out.file_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return out, str(ExplicitVRLittleEndian)


@dataclass(frozen=True)
class OutboxItem:
    """One queued delivery of one stored object to one destination."""

    id: int
    destination: str
    case_id: str
    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    patient_id: str
    path: Path  # absolute
    attempts: int


class Outbox:
    """The queue of objects to deliver. Thread-safe; several processes may open the same database."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._data_dir = Path(config.node.data_dir)
        self._root = self._data_dir / "outbox"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._db = sqlite3.connect(index_path(config.node.data_dir), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed queue row must survive a power cut, or "produced" would be a lie.
        self._db.execute("PRAGMA synchronous = FULL")
        # executescript commits implicitly, so the schema is created outside _tx (idempotent DDL)
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate()
        self.on_change: Callable[[set[str]], None] | None = None  # cases whose items changed (manifests)

    def _migrate(self) -> None:
        """Bring an older outbox schema to the current version (idempotent; upgrades keep every row)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(outbox_items)")}
        for name, decl in _V2_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE outbox_items ADD COLUMN {name} {decl}")
                logger.info("outbox schema: added column %s", name)
        self._db.execute("INSERT INTO outbox_meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key)"
                         " DO UPDATE SET value = excluded.value", (_SCHEMA_VERSION,))

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front: no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also when COMMIT itself failed (disk full, I/O error)
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @property
    def config(self) -> Config:
        return self._config

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after each produce() that queued something (the sender wakes up on it)."""
        self._listeners.append(callback)

    # ------------------------------------------------------------------ producing
    def produce(self, case_id: str, obj: OutputObject) -> list[int]:
        """Store `obj` durably and queue it for every destination taking `obj.kind`; returns the item ids.

        Idempotent per (SOP Instance UID, destination): producing the same object again returns the existing
        items and queues nothing new.
        """
        ds = obj.dataset
        sop_uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
        dests = [d.name for d in self._config.destinations_for(obj.kind)]
        rel = Path(case_folder_name(case_id)) / f"{sop_uid}.dcm"
        existing = {r["destination"]: r["id"] for r in self._query(
            "SELECT id, destination FROM outbox_items WHERE sop_instance_uid = ?", (sop_uid,))}
        if all(d in existing for d in dests) and (self._data_dir / "outbox" / rel).exists():
            return [existing[d] for d in dests]
        to_write, ts = _encode(ds)
        atomic_write(self._root / rel, lambda fh: pydicom.dcmwrite(fh, to_write, enforce_file_format=True))
        now = time.time()
        with self._tx() as db:
            for dest in dests:
                db.execute(
                    "INSERT INTO outbox_items (destination, case_id, kind, sop_instance_uid, sop_class_uid,"
                    " transfer_syntax_uid, study_instance_uid, patient_id, path, state, next_attempt, created,"
                    " updated, description, series_instance_uid)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)"
                    " ON CONFLICT (sop_instance_uid, destination) DO NOTHING",
                    (dest, case_id, obj.kind, sop_uid, sop_class, ts, str(ds.get("StudyInstanceUID", "")),
                     str(ds.get("PatientID", "")), str(Path("outbox") / rel), now, now, now,
                     obj.description or str(ds.get("SeriesDescription", "")), str(ds.get("SeriesInstanceUID", ""))))
            ids = {r["destination"]: r["id"] for r in db.execute(
                "SELECT id, destination FROM outbox_items WHERE sop_instance_uid = ?", (sop_uid,))}
        if not dests:
            logger.warning("case %s: no destination takes %s outputs; %s kept in the outbox folder only",
                           case_id, obj.kind, sop_uid)
            self._unrouted(case_id, obj, sop_uid, sop_class, str(Path("outbox") / rel))
        else:
            logger.info("case %s: queued %s %s for %s", case_id, obj.kind, sop_uid, ", ".join(dests))
            for callback in self._listeners:
                callback()
        self.changed({case_id})
        return [ids[d] for d in dests]

    def _unrouted(self, case_id: str, obj: OutputObject, sop_uid: str, sop_class: str, rel: str) -> None:
        """Record an object no destination takes (for the manifest; never sent)."""
        ds, now = obj.dataset, time.time()
        with self._tx() as db:
            db.execute("INSERT INTO outbox_unrouted (sop_instance_uid, case_id, kind, sop_class_uid,"
                       " study_instance_uid, series_instance_uid, description, path, created)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sop_instance_uid) DO NOTHING",
                       (sop_uid, case_id, obj.kind, sop_class, str(ds.get("StudyInstanceUID", "")),
                        str(ds.get("SeriesInstanceUID", "")), obj.description or str(ds.get("SeriesDescription", "")),
                        rel, now))

    def changed(self, cases: set[str]) -> None:
        """Tell the listener (the manifest writer) which cases' items changed; never fails the caller."""
        if self.on_change is not None and cases:
            try:
                self.on_change(cases)
            except Exception:  # a manifest is a convenience copy of the queue: log, never lose a delivery over it
                logger.exception("outbox change listener failed for %s", sorted(cases))

    # ------------------------------------------------------------------ sender side
    def recover_interrupted(self) -> int:
        """Put items left in 'sending' by a crash back to 'pending'; returns how many. Call before sending."""
        with self._tx() as db:
            n = db.execute("UPDATE outbox_items SET state = 'pending', updated = ? WHERE state = 'sending'",
                           (time.time(),)).rowcount
        if n:
            logger.warning("outbox: %d item(s) were being sent when the node stopped; queued again", n)
        return n

    def claim(self, destination: str, limit: int, now: float | None = None) -> list[OutboxItem]:
        """Atomically take up to `limit` due items of `destination` (oldest first) and mark them 'sending'."""
        now = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM outbox_items WHERE destination = ? AND state IN ('pending', 'retrying')"
                " AND next_attempt <= ? ORDER BY next_attempt, id LIMIT ?", (destination, now, limit)).fetchall()
            db.executemany("UPDATE outbox_items SET state = 'sending', updated = ? WHERE id = ?",
                           [(now, r["id"]) for r in rows])
        return [self._item(r) for r in rows]

    def _item(self, r: sqlite3.Row) -> OutboxItem:
        return OutboxItem(id=r["id"], destination=r["destination"], case_id=r["case_id"], kind=r["kind"],
                          sop_instance_uid=r["sop_instance_uid"], sop_class_uid=r["sop_class_uid"],
                          transfer_syntax_uid=r["transfer_syntax_uid"], study_instance_uid=r["study_instance_uid"],
                          patient_id=r["patient_id"], path=self._data_dir / r["path"], attempts=r["attempts"])

    def mark_sent(self, item_id: int, sent_as: str = "") -> None:
        """Record a confirmed delivery (the peer answered Success or Warning)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE outbox_items SET state = 'sent', sent_at = ?, updated = ?, last_error = NULL,"
                       " sent_as = ?, attempts = attempts + 1 WHERE id = ?", (now, now, sent_as or None, item_id))

    def mark_failed(self, item_id: int, error: str, permanent: bool = False) -> str:
        """Record a failed attempt; the item retries after a backoff or, after the last attempt (or a permanent
        refusal), is parked as 'failed'. Returns the new state."""
        return self.mark_failed_many([item_id], error, permanent).get(item_id, "missing")

    def mark_failed_many(self, item_ids: list[int], error: str, permanent: bool = False) -> dict[int, str]:
        """:meth:`mark_failed` for several items in one transaction (a destination that could not be reached)."""
        now = time.time()
        cfg = self._config.outbox
        states: dict[int, str] = {}
        with self._tx() as db:
            for item_id in item_ids:
                row = db.execute("SELECT attempts FROM outbox_items WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    continue
                attempts = row["attempts"] + 1
                state = "failed" if permanent or attempts >= cfg.max_attempts else "retrying"
                nxt = now + backoff_delay(attempts, cfg) if state == "retrying" else now
                db.execute("UPDATE outbox_items SET state = ?, attempts = ?, next_attempt = ?, last_error = ?,"
                           " updated = ? WHERE id = ?", (state, attempts, nxt, error, now, item_id))
                states[item_id] = state
        return states

    def release(self, item_ids: list[int]) -> None:
        """Return claimed items that were not attempted (shutdown) to 'pending' without counting an attempt."""
        if not item_ids:
            return
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE outbox_items SET state = 'pending', updated = ? WHERE id = ? AND state = 'sending'",
                           [(now, i) for i in item_ids])

    def destinations_with_due_items(self, names: list[str], now: float | None = None) -> list[str]:
        """Which of the destinations `names` have items due now."""
        now = time.time() if now is None else now
        return [n for n, t in self.next_due_by_destination(names).items() if t <= now]

    def next_due_by_destination(self, names: list[str]) -> dict[str, float]:
        """Earliest next_attempt (unix time) of waiting items, per destination among `names` that has any."""
        if not names:
            return {}
        marks = ", ".join("?" * len(names))
        rows = self._query(f"SELECT destination, MIN(next_attempt) FROM outbox_items WHERE state IN"
                           f" ('pending', 'retrying') AND destination IN ({marks}) GROUP BY destination", tuple(names))
        return {r[0]: r[1] for r in rows}

    # ------------------------------------------------------------------ operations
    def summary(self, case_id: str | None = None) -> list[dict]:
        """Rows for `status`: destination, case, sop_instance_uid, kind, state, attempts, next_attempt (ISO local
        time, only while waiting), last_error, sent_as, updated (ISO)."""
        sql = "SELECT * FROM outbox_items"
        args: tuple = ()
        if case_id is not None:
            sql, args = sql + " WHERE case_id = ?", (case_id,)
        rows = self._query(sql + " ORDER BY case_id, destination, id", args)
        return [{
            "destination": r["destination"], "case": r["case_id"], "sop_instance_uid": r["sop_instance_uid"],
            "kind": r["kind"], "state": r["state"], "attempts": r["attempts"],
            "next_attempt": _iso(r["next_attempt"]) if r["state"] in ("pending", "retrying") else None,
            "last_error": r["last_error"], "sent_as": r["sent_as"], "updated": _iso(r["updated"]),
        } for r in rows]

    def items(self, case_id: str | None = None) -> list[sqlite3.Row]:
        """Every queue row (all columns), oldest first; of one case when given. For the status model."""
        if case_id is None:
            return self._query("SELECT * FROM outbox_items ORDER BY case_id, id")
        return self._query("SELECT * FROM outbox_items WHERE case_id = ? ORDER BY id", (case_id,))

    def unrouted(self, case_id: str | None = None) -> list[sqlite3.Row]:
        """Outputs no destination took, oldest first."""
        if case_id is None:
            return self._query("SELECT * FROM outbox_unrouted ORDER BY case_id, created")
        return self._query("SELECT * FROM outbox_unrouted WHERE case_id = ? ORDER BY created", (case_id,))

    def has_case(self, case_id: str) -> bool:
        """Whether the outbox ever held an output of this case."""
        return bool(self._query("SELECT 1 FROM outbox_items WHERE case_id = ? UNION ALL "
                                "SELECT 1 FROM outbox_unrouted WHERE case_id = ? LIMIT 1", (case_id, case_id)))

    def mark_pruned(self, item_ids: list[int]) -> None:
        """Record that retention removed these items' files (rows stay as the delivery record)."""
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE outbox_items SET pruned_at = ?, updated = ? WHERE id = ?",
                           [(now, now, i) for i in item_ids])

    def data_dir(self) -> Path:
        return self._data_dir

    def depths(self) -> dict[str, int]:
        """Item counts by state (every state present, zero if none)."""
        counts = dict.fromkeys(STATES, 0)
        for r in self._query("SELECT state, COUNT(*) FROM outbox_items GROUP BY state"):
            counts[r[0]] = r[1]
        return counts

    def last_error(self) -> dict | None:
        """The most recent failure still recorded on an unsent item, for health/status output."""
        rows = self._query("SELECT destination, case_id, sop_instance_uid, last_error, updated FROM outbox_items"
                           " WHERE last_error IS NOT NULL ORDER BY updated DESC LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        return {"destination": r[0], "case": r[1], "sop_instance_uid": r[2], "error": r[3], "time": _iso(r[4])}

    def resend(self, case_id: str | None = None, failed_only: bool = False) -> int:
        """Queue items again with a fresh attempt count; returns how many.

        - ``resend(case_id)``: every item of the case that is not in flight, sent ones included.
        - ``resend(failed_only=True)``: every parked item; with a case, only that case's parked items.
        Items currently being sent are left alone.
        """
        if case_id is None and not failed_only:
            raise ValueError("resend needs a case id or failed_only=True")
        where, args = ["state != 'sending'", "pruned_at IS NULL"], []
        if failed_only:
            where.append("state = 'failed'")
        if case_id is not None:
            where.append("case_id = ?")
            args.append(case_id)
        now = time.time()
        with self._tx() as db:
            n = db.execute(f"UPDATE outbox_items SET state = 'pending', attempts = 0, next_attempt = ?, updated = ?,"
                           f" last_error = NULL WHERE {' AND '.join(where)}", (now, now, *args)).rowcount
        logger.info("outbox: %d item(s) queued again (case=%s, failed_only=%s)", n, case_id, failed_only)
        if n:
            for callback in self._listeners:
                callback()
            pending = "SELECT DISTINCT case_id FROM outbox_items WHERE state = 'pending'"
            self.changed({case_id} if case_id is not None else {r[0] for r in self._query(pending)})
        return n


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t is not None else None
