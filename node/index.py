"""SQLite index (WAL) of received patients/studies/series/instances and of analysis cases.

The files under ``instances/`` are the truth; this index is what the node knows about them, and it also holds
the completion timers (``studies.stable_due``) and the case states, so a restart forgets nothing.
One connection guarded by a lock: SQLite serialises writers anyway, and commits here are tiny.

Schema: every statement names its columns; ``index_meta.schema_version`` says which layout a file has. Version 2
stores instance paths relative to the data folder (a data folder can be moved or restored elsewhere); version 3
adds the series' radionuclide, dose summation type and RT references (RT Dose / RT Plan). Opening an older index
migrates it in one transaction (see :data:`MIGRATIONS`); a newer one is refused rather than misread.
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

#: The layout this code reads and writes. 1: data folders made before the index had a version (node 0.1).
INDEX_SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    n_instances INTEGER NOT NULL,
    radionuclide_code TEXT NOT NULL DEFAULT '',
    dose_summation_type TEXT NOT NULL DEFAULT '',
    referenced_sop_uids TEXT NOT NULL DEFAULT ''
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


_INSTANCE_COLUMNS = (
    "sop_instance_uid", "sop_class_uid", "study_uid", "series_uid", "patient_id", "modality",
    "frame_of_reference_uid", "ipp_x", "ipp_y", "ipp_z", "image_orientation", "acquisition_time",
    "temporal_position", "number_of_frames", "position_repeats", "image_type", "transfer_syntax_uid", "path",
    "size", "calling_ae", "received_at")
_CASE_COLUMNS = ("case_id", "patient_id", "patient_name", "state", "reason", "last_input_at", "analysed_input_at",
                 "version", "updated_at", "result")


class IndexSchemaError(RuntimeError):
    """The index file has a layout this version cannot read (written by a newer version, or not an index)."""


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
    radionuclide_code: str = ""  # NM/PT (e.g. SNOMED 14691008 Yttrium-90)
    dose_summation_type: str = ""  # RTDOSE: PLAN, BEAM, ...
    referenced_sop_uids: tuple[str, ...] = ()  # RTDOSE: RT Plan(s), structure set(s); RTPLAN: structure set(s)


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
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes (SIGKILL); after a power cut the newest commits may be lost,
        # which reconcile() repairs from the files on disk, the real source of truth.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self.data_dir = self.path.parent
        with self._lock:
            self._migrate()

    # ------------------------------------------------------------------ schema
    def _stored_version(self) -> int:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "index_meta" in tables:
            row = self._db.execute("SELECT value FROM index_meta WHERE key='schema_version'").fetchone()
            if row is not None:
                return int(row[0])
        return 1 if "instances" in tables else 0

    def _migrate(self) -> None:
        """Create the schema, or bring an older index up to INDEX_SCHEMA_VERSION (one transaction per step)."""
        version = self._stored_version()
        if version > INDEX_SCHEMA_VERSION:
            raise IndexSchemaError(f"{self.path} has index schema {version}; this version of liver-node reads up to "
                                   f"{INDEX_SCHEMA_VERSION} (was the node downgraded?)")
        for step in range(version, INDEX_SCHEMA_VERSION):
            with self._tx() as db:
                MIGRATIONS[step](self, db)
                db.execute("INSERT OR REPLACE INTO index_meta (key, value) VALUES ('schema_version', ?)",
                           (str(step + 1),))
            if version:
                logger.warning("index %s migrated from schema %d to %d", self.path, step, step + 1)

    def _to_stored(self, path: Path) -> str:
        """How a file path is stored: relative to the data folder when inside it (schema 2)."""
        try:
            return str(Path(path).relative_to(self.data_dir))
        except ValueError:
            return str(path)

    def _to_path(self, stored: str) -> Path:
        return self.data_dir / stored  # an absolute stored path stays as it is

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self)

    # ------------------------------------------------------------------ receiving
    def has_instance(self, sop_instance_uid: str) -> str | None:
        """The stored path of an instance already indexed, else None."""
        with self._lock:
            row = self._db.execute("SELECT path FROM instances WHERE sop_instance_uid=?",
                                   (sop_instance_uid,)).fetchone()
        return str(self._to_path(row[0])) if row else None

    def add_instance(self, info: InstanceInfo, path: Path, size: int, calling_ae: str, stable_seconds: float,
                     now: float | None = None) -> tuple[bool, str]:
        """Index one durably stored instance; re-arms its study's stability timer. Returns (new, case_id)."""
        return self.add_instances([Arrival(info, path, size, calling_ae, time.time() if now is None else now)],
                                  stable_seconds)[0]

    def add_instances(self, arrivals: list[Arrival], stable_seconds: float) -> list[tuple[bool, str]]:
        """Index durably stored instances in one transaction. Returns (new, case_id) per arrival."""
        with self._lock, self._tx() as db:
            return [self._add(db, a, stable_seconds) for a in arrivals]

    def _add(self, db: sqlite3.Connection, arrival: Arrival, stable_seconds: float) -> tuple[bool, str]:
        info, path, size, calling_ae, now = arrival
        case_id = case_id_for(info.patient_id, info.study_uid)
        ipp = info.image_position or (None, None, None)
        cur = db.execute(
            f"INSERT OR IGNORE INTO instances ({', '.join(_INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_INSTANCE_COLUMNS))})",
            (info.sop_instance_uid, info.sop_class_uid, info.study_uid, info.series_uid, info.patient_id,
             info.modality, info.frame_of_reference_uid, ipp[0], ipp[1], ipp[2],
             "\\".join(f"{v:g}" for v in info.image_orientation) if info.image_orientation else None,
             info.acquisition_time, info.temporal_position, info.number_of_frames, info.position_repeats,
             info.image_type,
             info.transfer_syntax_uid, self._to_stored(path), size, calling_ae, now))
        if cur.rowcount == 0:
            return False, case_id
        db.execute(
            """INSERT INTO series (series_uid, study_uid, patient_id, modality, sop_class_uid, series_description,
                 series_number, frame_of_reference_uid, radiopharmaceutical, radiopharmaceutical_code, roi_names,
                 referenced_frame_of_reference, first_received, last_received, n_instances, radionuclide_code,
                 dose_summation_type, referenced_sop_uids)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?)
               ON CONFLICT(series_uid) DO UPDATE SET last_received=excluded.last_received,
               n_instances=n_instances+1""",
            (info.series_uid, info.study_uid, info.patient_id, info.modality, info.sop_class_uid,
             info.series_description, info.series_number, info.frame_of_reference_uid, info.radiopharmaceutical,
             info.radiopharmaceutical_code, "\\".join(info.roi_names), info.referenced_frame_of_reference,
             now, now, info.radionuclide_code, info.dose_summation_type, "\\".join(info.referenced_sop_uids)))
        db.execute(
            """INSERT INTO studies (study_uid, patient_id, case_id, study_date, study_description, first_received,
                 last_received, stable_due, stable)
               VALUES (?,?,?,?,?,?,?,?,0)
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
                """SELECT s.series_uid, s.study_uid, s.patient_id, s.modality, s.sop_class_uid, s.series_description,
                     s.series_number, s.frame_of_reference_uid, s.radiopharmaceutical, s.radiopharmaceutical_code,
                     s.roi_names, s.referenced_frame_of_reference, s.first_received, s.last_received,
                     s.n_instances, st.stable, s.radionuclide_code, s.dose_summation_type, s.referenced_sop_uids,
                     (SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM instances i WHERE i.series_uid=s.series_uid
                        AND i.ipp_x IS NOT NULL
                        GROUP BY ROUND(i.ipp_x, 2), ROUND(i.ipp_y, 2), ROUND(i.ipp_z, 2))) AS position_repeats,
                     (SELECT MAX(position_repeats) FROM instances i WHERE i.series_uid=s.series_uid) AS frame_repeats
                   FROM series s JOIN studies st ON st.study_uid=s.study_uid
                   WHERE st.case_id=? ORDER BY s.first_received""", (case_id,)).fetchall()
        out = []
        for r in rows:
            # classic slices: the most repeated position; multi-frame: repeats among one object's frames
            repeats = max(r["position_repeats"] or 0, r["frame_repeats"] or 0)
            out.append(SeriesRow(
                series_uid=r["series_uid"], study_uid=r["study_uid"], patient_id=r["patient_id"],
                modality=r["modality"], sop_class_uid=r["sop_class_uid"], series_description=r["series_description"],
                series_number=r["series_number"], frame_of_reference_uid=r["frame_of_reference_uid"],
                radiopharmaceutical=r["radiopharmaceutical"], radiopharmaceutical_code=r["radiopharmaceutical_code"],
                roi_names=tuple(n for n in r["roi_names"].split("\\") if n),
                referenced_frame_of_reference=r["referenced_frame_of_reference"],
                first_received=r["first_received"], last_received=r["last_received"], n_instances=r["n_instances"],
                max_position_repeats=int(repeats), stable=bool(r["stable"]),
                radionuclide_code=r["radionuclide_code"], dose_summation_type=r["dose_summation_type"],
                referenced_sop_uids=tuple(u for u in r["referenced_sop_uids"].split("\\") if u)))
        return out

    def instance_paths(self, series_uid: str) -> list[Path]:
        with self._lock:
            return [self._to_path(r[0]) for r in self._db.execute(
                "SELECT path FROM instances WHERE series_uid=? ORDER BY received_at", (series_uid,))]

    # ------------------------------------------------------------------ cases
    def get_case(self, case_id: str) -> CaseRow | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(_CASE_COLUMNS)} FROM cases WHERE case_id=?",
                                 (case_id,)).fetchone()
        return _case(r) if r else None

    def cases(self) -> list[CaseRow]:
        with self._lock:
            return [_case(r) for r in self._db.execute(f"SELECT {', '.join(_CASE_COLUMNS)} FROM cases "
                                                       "ORDER BY last_input_at DESC")]

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
                reason = f"new input arrived during analysis ({reason or state}); re-analysis pending"
                state = "receiving"
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
        """Every indexed file, as absolute path strings."""
        with self._lock:
            return {str(self._to_path(r[0])) for r in self._db.execute("SELECT path FROM instances")}


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT / ROLLBACK on the index connection (caller holds the lock)."""

    def __init__(self, index: Index) -> None:
        self.db = index._db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _case(r: sqlite3.Row) -> CaseRow:
    try:
        result = json.loads(r["result"] or "{}")
    except json.JSONDecodeError:
        result = {}
    return CaseRow(case_id=r["case_id"], patient_id=r["patient_id"], patient_name=r["patient_name"],
                   state=r["state"], reason=r["reason"], last_input_at=r["last_input_at"],
                   analysed_input_at=r["analysed_input_at"], version=r["version"], updated_at=r["updated_at"],
                   result=result)


# ------------------------------------------------------------------ migrations
#: Columns of schema 1 (data folders of node 0.1), checked before they are migrated.
_V1_COLUMNS = {
    "instances": set(_INSTANCE_COLUMNS),
    "series": {"series_uid", "study_uid", "patient_id", "modality", "sop_class_uid", "series_description",
               "series_number", "frame_of_reference_uid", "radiopharmaceutical", "radiopharmaceutical_code",
               "roi_names", "referenced_frame_of_reference", "first_received", "last_received", "n_instances"},
    "studies": {"study_uid", "patient_id", "case_id", "study_date", "study_description", "first_received",
                "last_received", "stable_due", "stable"},
    "cases": set(_CASE_COLUMNS),
}


def _create(index: Index, db: sqlite3.Connection) -> None:
    """0 -> 1: a new index (the full current schema; later steps find nothing to change)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _relative_paths(index: Index, db: sqlite3.Connection) -> None:
    """1 -> 2: the schema-1 columns are checked; instance paths inside the data folder become relative to it."""
    for statement in _SCHEMA.split(";"):  # index_meta (and anything missing) is created
        if statement.strip():
            db.execute(statement)
    for table, wanted in _V1_COLUMNS.items():
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if not wanted <= have:
            raise IndexSchemaError(f"{index.path}: table {table} lacks {', '.join(sorted(wanted - have))}; "
                                   "not a liver-node index of a known version")
    rows = db.execute("SELECT sop_instance_uid, path FROM instances").fetchall()
    changed = [(stored, uid) for uid, p in rows if (stored := _v1_relative(index, Path(p))) != p]
    db.executemany("UPDATE instances SET path=? WHERE sop_instance_uid=?", changed)


def _v1_relative(index: Index, path: Path) -> str:
    """A schema-1 (absolute) instance path relative to the data folder; also when the folder was moved or restored
    elsewhere since (its ``instances/...`` part is found in this one). Unchanged when neither holds."""
    stored = index._to_stored(path)
    if not Path(stored).is_absolute() or "instances" not in path.parts:
        return stored
    start = len(path.parts) - 1 - path.parts[::-1].index("instances")
    moved = Path(*path.parts[start:])
    return str(moved) if (index.data_dir / moved).is_file() else stored


#: Series columns of schema 3 (RT Dose / RT Plan / radionuclide roles), added to older indexes.
_V3_SERIES_COLUMNS = ("radionuclide_code", "dose_summation_type", "referenced_sop_uids")


def _rt_columns(index: Index, db: sqlite3.Connection) -> None:
    """2 -> 3: the series' radionuclide, dose summation type and RT references ('' for series received before:
    they were NM/PT of a known tracer or images, which these columns do not change)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(series)")}
    for column in _V3_SERIES_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE series ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")


#: MIGRATIONS[v] brings an index of schema v to v + 1.
MIGRATIONS = {0: _create, 1: _relative_paths, 2: _rt_columns}
