"""SQLite index (WAL) of received patients/studies/series/instances and of analysis cases.

The files under ``instances/`` are the truth; this index is what the node knows about them, and it also holds
the completion timers (``studies.stable_due``) and the case states, so a restart forgets nothing.
One connection guarded by a lock: SQLite serialises writers anyway, and commits here are tiny.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from node.header import InstanceInfo

logger = logging.getLogger(__name__)

CASE_STATES = ("receiving", "stable", "queued", "analysing", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    modality TEXT NOT NULL,
    frame_of_reference_uid TEXT NOT NULL,
    ipp_x REAL, ipp_y REAL, ipp_z REAL,
    image_orientation TEXT,
    acquisition_time REAL,
    temporal_position INTEGER,
    number_of_frames INTEGER NOT NULL,
    position_repeats INTEGER NOT NULL,
    image_type TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    modality TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    series_description TEXT NOT NULL,
    series_number INTEGER,
    frame_of_reference_uid TEXT NOT NULL,
    radiopharmaceutical TEXT NOT NULL,
    radiopharmaceutical_code TEXT NOT NULL,
    roi_names TEXT NOT NULL,
    referenced_frame_of_reference TEXT NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    n_instances INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_description TEXT NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    stable_due REAL NOT NULL,
    stable INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_case ON studies(case_id);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    last_input_at REAL NOT NULL,
    analysed_input_at REAL,
    version INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    result TEXT NOT NULL DEFAULT '{}'
);
"""


def index_path(data_dir: Path) -> Path:
    """The one SQLite file of a node: received data, cases, timers and (outbox_* tables) the outbox."""
    return Path(data_dir) / "index.sqlite3"


def case_id_for(patient_id: str, study_uid: str) -> str:
    """Cases group a patient's studies by PatientID; without one, a study is its own case."""
    return patient_id if patient_id else f"STUDY-{study_uid}"


class Arrival(NamedTuple):
    """One durably stored instance waiting to be indexed."""

    info: InstanceInfo
    path: Path
    size: int
    calling_ae: str
    received_at: float


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    sop_class_uid: str
    series_description: str
    series_number: int | None
    frame_of_reference_uid: str
    radiopharmaceutical: str
    radiopharmaceutical_code: str
    roi_names: tuple[str, ...]
    referenced_frame_of_reference: str
    first_received: float
    last_received: float
    n_instances: int
    max_position_repeats: int  # how often the most repeated ImagePositionPatient occurs (perfusion detection)
    stable: bool


@dataclass(frozen=True)
class CaseRow:
    case_id: str
    patient_id: str
    patient_name: str
    state: str
    reason: str
    last_input_at: float
    analysed_input_at: float | None
    version: int
    updated_at: float
    result: dict[str, Any]


class Index:
    """Thread-safe access to the node's SQLite index."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes (SIGKILL); after a power cut the newest commits may be lost,
        # which reconcile() repairs from the files on disk, the real source of truth.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> "_Tx":
        return _Tx(self)

    # ------------------------------------------------------------------ receiving
    def has_instance(self, sop_instance_uid: str) -> str | None:
        """The stored path of an instance already indexed, else None."""
        with self._lock:
            row = self._db.execute("SELECT path FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)).fetchone()
        return row[0] if row else None

    def add_instance(self, info: InstanceInfo, path: Path, size: int, calling_ae: str, stable_seconds: float,
                     now: float | None = None) -> tuple[bool, str]:
        """Index one durably stored instance; re-arms its study's stability timer. Returns (new, case_id)."""
        return self.add_instances([Arrival(info, path, size, calling_ae, time.time() if now is None else now)],
                                  stable_seconds)[0]

    def add_instances(self, arrivals: list["Arrival"], stable_seconds: float) -> list[tuple[bool, str]]:
        """Index durably stored instances in one transaction. Returns (new, case_id) per arrival."""
        with self._lock, self._tx() as db:
            return [self._add(db, a, stable_seconds) for a in arrivals]

    def _add(self, db: sqlite3.Connection, arrival: "Arrival", stable_seconds: float) -> tuple[bool, str]:
        info, path, size, calling_ae, now = arrival
        case_id = case_id_for(info.patient_id, info.study_uid)
        ipp = info.image_position or (None, None, None)
        cur = db.execute(
            "INSERT OR IGNORE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (info.sop_instance_uid, info.sop_class_uid, info.study_uid, info.series_uid, info.patient_id,
             info.modality, info.frame_of_reference_uid, ipp[0], ipp[1], ipp[2],
             "\\".join(f"{v:g}" for v in info.image_orientation) if info.image_orientation else None,
             info.acquisition_time, info.temporal_position, info.number_of_frames, info.position_repeats,
             info.image_type,
             info.transfer_syntax_uid, str(path), size, calling_ae, now))
        if cur.rowcount == 0:
            return False, case_id
        db.execute(
            """INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)
               ON CONFLICT(series_uid) DO UPDATE SET last_received=excluded.last_received,
               n_instances=n_instances+1""",
            (info.series_uid, info.study_uid, info.patient_id, info.modality, info.sop_class_uid,
             info.series_description, info.series_number, info.frame_of_reference_uid, info.radiopharmaceutical,
             info.radiopharmaceutical_code, "\\".join(info.roi_names), info.referenced_frame_of_reference,
             now, now))
        db.execute(
            """INSERT INTO studies VALUES (?,?,?,?,?,?,?,?,0)
               ON CONFLICT(study_uid) DO UPDATE SET last_received=excluded.last_received,
               stable_due=excluded.stable_due, stable=0""",
            (info.study_uid, info.patient_id, case_id, info.study_date, info.study_description, now, now,
             now + stable_seconds))
        db.execute(
            """INSERT INTO cases(case_id, patient_id, patient_name, state, last_input_at, updated_at)
               VALUES (?,?,?,'receiving',?,?)
               ON CONFLICT(case_id) DO UPDATE SET last_input_at=excluded.last_input_at,
               updated_at=excluded.updated_at,
               state=CASE WHEN state='analysing' THEN state ELSE 'receiving' END,
               reason=CASE WHEN state='analysing' THEN reason ELSE '' END""",
            (case_id, info.patient_id, info.patient_name, now, now))
        return True, case_id

    # ------------------------------------------------------------------ completion
    def pending_studies(self) -> list[tuple[str, float]]:
        """(study_uid, stable_due) of every study not yet stable: the timers to (re-)arm."""
        with self._lock:
            return [tuple(r) for r in self._db.execute("SELECT study_uid, stable_due FROM studies WHERE stable=0")]

    def study_due(self, study_uid: str) -> tuple[float, bool, str] | None:
        with self._lock:
            r = self._db.execute("SELECT stable_due, stable, case_id FROM studies WHERE study_uid=?",
                                 (study_uid,)).fetchone()
        return (r[0], bool(r[1]), r[2]) if r else None

    def mark_study_stable(self, study_uid: str, now: float | None = None) -> str | None:
        """Mark a study stable if its quiet period has passed. Returns its case_id, or None if not (yet) stable."""
        now = time.time() if now is None else now
        with self._lock, self._tx() as db:
            r = db.execute("SELECT stable_due, case_id FROM studies WHERE study_uid=? AND stable=0",
                           (study_uid,)).fetchone()
            if r is None or r[0] > now:
                return None
            db.execute("UPDATE studies SET stable=1 WHERE study_uid=?", (study_uid,))
            return r[1]

    def case_studies_stable(self, case_id: str) -> bool:
        with self._lock:
            r = self._db.execute("SELECT COUNT(*) FROM studies WHERE case_id=? AND stable=0", (case_id,)).fetchone()
        return r[0] == 0

    def series_of_case(self, case_id: str) -> list[SeriesRow]:
        with self._lock:
            rows = self._db.execute(
                """SELECT s.*, st.stable,
                     (SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM instances i WHERE i.series_uid=s.series_uid
                        AND i.ipp_x IS NOT NULL
                        GROUP BY ROUND(i.ipp_x, 2), ROUND(i.ipp_y, 2), ROUND(i.ipp_z, 2))) AS rep,
                     (SELECT MAX(position_repeats) FROM instances i WHERE i.series_uid=s.series_uid) AS mf
                   FROM series s JOIN studies st ON st.study_uid=s.study_uid
                   WHERE st.case_id=? ORDER BY s.first_received""", (case_id,)).fetchall()
        out = []
        for r in rows:
            # classic slices: the most repeated position; multi-frame: repeats among one object's frames
            repeats = max(r[16] or 0, r[17] or 0)
            out.append(SeriesRow(
                series_uid=r[0], study_uid=r[1], patient_id=r[2], modality=r[3], sop_class_uid=r[4],
                series_description=r[5], series_number=r[6], frame_of_reference_uid=r[7], radiopharmaceutical=r[8],
                radiopharmaceutical_code=r[9], roi_names=tuple(n for n in r[10].split("\\") if n),
                referenced_frame_of_reference=r[11], first_received=r[12], last_received=r[13], n_instances=r[14],
                max_position_repeats=int(repeats), stable=bool(r[15])))
        return out

    def instance_paths(self, series_uid: str) -> list[Path]:
        with self._lock:
            return [Path(r[0]) for r in self._db.execute(
                "SELECT path FROM instances WHERE series_uid=? ORDER BY received_at", (series_uid,))]

    # ------------------------------------------------------------------ cases
    def get_case(self, case_id: str) -> CaseRow | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return _case(r) if r else None

    def cases(self) -> list[CaseRow]:
        with self._lock:
            return [_case(r) for r in self._db.execute("SELECT * FROM cases ORDER BY last_input_at DESC")]

    def set_case_state(self, case_id: str, state: str, reason: str = "", *, only_from: tuple[str, ...] = ()) -> bool:
        """Move a case to `state` (optionally only from given states). Returns whether it changed."""
        assert state in CASE_STATES, state
        with self._lock, self._tx() as db:
            q = "UPDATE cases SET state=?, reason=?, updated_at=? WHERE case_id=?"
            args: list[Any] = [state, reason, time.time(), case_id]
            if only_from:
                q += f" AND state IN ({','.join('?' * len(only_from))})"
                args += list(only_from)
            return db.execute(q, args).rowcount > 0

    def start_analysis(self, case_id: str) -> float | None:
        """queued -> analysing; records which inputs the run sees. Returns that input time, or None if not queued."""
        with self._lock, self._tx() as db:
            r = db.execute("SELECT last_input_at FROM cases WHERE case_id=? AND state='queued'", (case_id,)).fetchone()
            if r is None:
                return None
            db.execute("UPDATE cases SET state='analysing', reason='', analysed_input_at=?, version=version+1, "
                       "updated_at=? WHERE case_id=?", (r[0], time.time(), case_id))
            return r[0]

    def finish_analysis(self, case_id: str, ok: bool, reason: str = "", result: dict[str, Any] | None = None) -> str:
        """analysing -> done/failed, or back to receiving when newer input arrived meanwhile. Returns the state."""
        with self._lock, self._tx() as db:
            r = db.execute("SELECT last_input_at, analysed_input_at FROM cases WHERE case_id=?", (case_id,)).fetchone()
            newer = r is not None and r[1] is not None and r[0] > r[1]
            state = "done" if ok else "failed"
            if newer:
                state, reason = "receiving", f"new input arrived during analysis ({reason or state}); re-analysis pending"
            db.execute("UPDATE cases SET state=?, reason=?, updated_at=?, result=? WHERE case_id=?",
                       (state, reason, time.time(), json.dumps(result or {}, default=str), case_id))
        return state

    def requeue_interrupted(self) -> list[str]:
        """After a restart: cases that were queued or analysing go (back) to the queue."""
        with self._lock, self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT case_id FROM cases WHERE state IN ('queued','analysing')")]
            db.execute("UPDATE cases SET state='queued', reason='re-queued after restart' WHERE state='analysing'")
        return ids

    def queued_cases(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT case_id FROM cases WHERE state='queued' "
                                                    "ORDER BY updated_at")]

    def force_queue(self, case_id: str) -> bool:
        """Operator's `reprocess`: queue a case whatever its state (unless it is analysing right now)."""
        with self._lock, self._tx() as db:
            return db.execute("UPDATE cases SET state='queued', reason='reprocess requested', updated_at=? "
                              "WHERE case_id=? AND state!='analysing'", (time.time(), case_id)).rowcount > 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {f"cases_{s}": 0 for s in CASE_STATES}
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM cases GROUP BY state"):
                out[f"cases_{state}"] = n
            out["instances"] = self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        return out

    def forget_series(self, series_uid: str) -> int:
        """Retention removed a series' files: drop its instance and series rows (and its study when it was the
        study's last series). Returns the number of instance rows removed."""
        with self._lock, self._tx() as db:
            r = db.execute("SELECT study_uid FROM series WHERE series_uid=?", (series_uid,)).fetchone()
            n = db.execute("DELETE FROM instances WHERE series_uid=?", (series_uid,)).rowcount
            db.execute("DELETE FROM series WHERE series_uid=?", (series_uid,))
            left = db.execute("SELECT COUNT(*) FROM series WHERE study_uid=?", (r[0],)).fetchone()[0] if r else 1
            if r is not None and left == 0:
                db.execute("DELETE FROM studies WHERE study_uid=?", (r[0],))
        return n

    def all_paths(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT path FROM instances")}


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT / ROLLBACK on the index connection (caller holds the lock)."""

    def __init__(self, index: Index) -> None:
        self.db = index._db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _case(r: tuple[Any, ...]) -> CaseRow:
    try:
        result = json.loads(r[9] or "{}")
    except json.JSONDecodeError:
        result = {}
    return CaseRow(case_id=r[0], patient_id=r[1], patient_name=r[2], state=r[3], reason=r[4], last_input_at=r[5],
                   analysed_input_at=r[6], version=r[7], updated_at=r[8], result=result)

