"""SQLite index (WAL) of received patients/studies/series/instances and of analysis cases.

The files under ``instances/`` are the truth; this index is what the node knows about them, and it also holds
the completion timers (``studies.stable_due``) and the case states, so a restart forgets nothing.
One connection guarded by a lock: SQLite serialises writers anyway, and commits here are tiny.

Schema: every statement names its columns; ``index_meta.schema_version`` says which layout a file has.
Version 2 stores instance paths relative to the data folder (a data folder can be moved or restored
elsewhere). Version 3 keys a case by patient identity (PatientID, IssuerOfPatientID; node.identity): a series row
is (SeriesInstanceUID, case), instances know their case, and the index keeps what series selection needs without
reading pixel data (ImageType, orientation, positions, times, frames of multi-frame objects, unusable reasons;
node.seriescontent), identity conflicts and reassignments, the inputs of each case's last analysis (so a late
object re-runs a case only when it changes an input) and the superseded copies of re-sent instances. Version 4
adds the series' radionuclide, dose summation type and RT references (the roles of RT Dose, RT Plan and Y-90
PET/SPECT series). Opening an older index migrates it in one transaction per step (see :data:`MIGRATIONS`); a
newer one is refused rather than misread.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from node import identity
from node.header import InstanceInfo
from node.identity import IdentityEvent
from node.seriescontent import SeriesContent, encode_frames, facts_from_row, summarise

logger = logging.getLogger(__name__)

CASE_STATES = ("receiving", "stable", "queued", "analysing", "done", "failed", "held")

#: The layout this code reads and writes. 1: data folders made before the index had a version (node 0.1).
INDEX_SCHEMA_VERSION = 4

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
    received_at REAL NOT NULL,
    case_id TEXT NOT NULL DEFAULT '',
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    unusable TEXT NOT NULL DEFAULT '',
    frames TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_case ON instances(case_id);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT NOT NULL,
    case_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    series_description TEXT NOT NULL,
    series_number INTEGER,
    frame_of_reference_uid TEXT NOT NULL,
    radiopharmaceutical TEXT NOT NULL,
    radiopharmaceutical_code TEXT NOT NULL,
    roi_names TEXT NOT NULL,
    referenced_frame_of_reference TEXT NOT NULL,
    referenced_series TEXT NOT NULL DEFAULT '',
    protocol_name TEXT NOT NULL DEFAULT '',
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    changed_at REAL NOT NULL DEFAULT 0,
    n_instances INTEGER NOT NULL,
    radionuclide_code TEXT NOT NULL DEFAULT '',
    dose_summation_type TEXT NOT NULL DEFAULT '',
    referenced_sop_uids TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (series_uid, case_id)
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_case ON series(case_id);
CREATE INDEX IF NOT EXISTS series_for ON series(frame_of_reference_uid);
CREATE INDEX IF NOT EXISTS series_ref_for ON series(referenced_frame_of_reference);
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
    result TEXT NOT NULL DEFAULT '{}',
    issuer_of_patient_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cases_identity ON cases(patient_id, issuer_of_patient_id);
CREATE TABLE IF NOT EXISTS case_inputs (
    case_id TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    PRIMARY KEY (case_id, series_uid)
);
CREATE TABLE IF NOT EXISTS conflicts (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    identities TEXT NOT NULL,
    cases TEXT NOT NULL,
    released TEXT NOT NULL DEFAULT '[]',
    detected_at REAL NOT NULL,
    resolved_at REAL,
    resolution TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS reassignments (
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    to_case TEXT NOT NULL,
    operator TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (series_uid, study_uid, patient_id, issuer_of_patient_id)
);
CREATE TABLE IF NOT EXISTS superseded (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid TEXT NOT NULL,
    action TEXT NOT NULL,
    kept_path TEXT NOT NULL UNIQUE,
    replaced_path TEXT NOT NULL,
    current_path TEXT NOT NULL,
    old_case TEXT NOT NULL,
    new_case TEXT NOT NULL,
    differences TEXT NOT NULL,
    at REAL NOT NULL
);
"""


_INSTANCE_COLUMNS = (
    "sop_instance_uid", "sop_class_uid", "study_uid", "series_uid", "patient_id", "modality",
    "frame_of_reference_uid", "ipp_x", "ipp_y", "ipp_z", "image_orientation", "acquisition_time",
    "temporal_position", "number_of_frames", "position_repeats", "image_type", "transfer_syntax_uid", "path",
    "size", "calling_ae", "received_at", "case_id", "issuer_of_patient_id", "unusable", "frames")
_CASE_COLUMNS = ("case_id", "patient_id", "patient_name", "state", "reason", "last_input_at", "analysed_input_at",
                 "version", "updated_at", "result", "issuer_of_patient_id")
#: Series columns of schema 3 (the 2 -> 3 migration fills exactly these), and those schema 4 adds.
_V3_SERIES_COLUMNS = ("series_uid", "case_id", "study_uid", "patient_id", "issuer_of_patient_id", "modality",
                      "sop_class_uid", "series_description", "series_number", "frame_of_reference_uid",
                      "radiopharmaceutical", "radiopharmaceutical_code", "roi_names", "referenced_frame_of_reference",
                      "referenced_series", "protocol_name", "first_received", "last_received", "changed_at",
                      "n_instances")
_DOSE_SERIES_COLUMNS = ("radionuclide_code", "dose_summation_type", "referenced_sop_uids")
_SERIES_COLUMNS = _V3_SERIES_COLUMNS + _DOSE_SERIES_COLUMNS


class IndexSchemaError(RuntimeError):
    """The index file has a layout this version cannot read (written by a newer version, or not an index)."""


class ReassignError(ValueError):
    """A reassignment that cannot be done (unknown UID, ambiguous source, target case unknown); says why."""


def index_path(data_dir: Path) -> Path:
    """The one SQLite file of a node: received data, cases, timers and (outbox_* tables) the outbox."""
    return Path(data_dir) / "index.sqlite3"


def case_id_for(patient_id: str, study_uid: str, issuer: str = "") -> str:
    """The natural case id of a patient identity (node.identity): PatientID[@Issuer]; no PatientID: the study."""
    return identity.case_id_for(patient_id, study_uid, issuer)


class Arrival(NamedTuple):
    """One durably stored instance waiting to be indexed."""

    info: InstanceInfo
    path: Path
    size: int
    calling_ae: str
    received_at: float


@dataclass(frozen=True)
class SeriesRow:
    """One series of one case (a series whose instances carry two identities is two rows, one per case)."""

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
    case_id: str = ""
    issuer_of_patient_id: str = ""
    protocol_name: str = ""
    study_description: str = ""
    referenced_series: tuple[str, ...] = ()  # RTSTRUCT: the series its contours were drawn on
    changed_at: float = 0.0  # last instance added, replaced or moved away
    #: what the series is (SOP classes, ImageType, geometry, times), from the index: node.seriescontent
    content: SeriesContent = field(default_factory=SeriesContent)
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
    issuer_of_patient_id: str = ""


@dataclass(frozen=True)
class StoredInstance:
    """Where the index has an instance, and under which case."""

    sop_instance_uid: str
    path: Path
    study_uid: str
    series_uid: str
    case_id: str
    received_at: float


@dataclass(frozen=True)
class Replacement:
    """What replacing a stored instance by a re-sent copy changed."""

    old_case: str
    new_case: str
    old_study: str
    new_study: str
    evaluate: tuple[str, ...]  # cases whose state changed and must be evaluated again


@dataclass(frozen=True)
class SupersededRow:
    sop_instance_uid: str
    action: str  # "replaced" (the stored copy was superseded) or "kept-first" (the re-sent copy was not used)
    kept_path: Path
    replaced_path: Path
    current_path: Path
    old_case: str
    new_case: str
    differences: str
    at: float


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
        self._identity_cache: dict[tuple[str, str], str] = {}
        self._reassigned = True  # whether any reassignment exists (refreshed per transaction that adds instances)
        self._content_cache: dict[tuple[str, str], tuple[tuple[int, float, float], SeriesContent]] = {}
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

    def stored_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """Where and under which case an instance is indexed (None: not indexed)."""
        with self._lock:
            r = self._db.execute("SELECT sop_instance_uid, path, study_uid, series_uid, case_id, received_at "
                                 "FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)).fetchone()
        if r is None:
            return None
        return StoredInstance(r[0], self._to_path(r[1]), r[2], r[3], r[4], r[5])

    def known_instances(self, sop_instance_uids: Iterable[str]) -> set[str]:
        """Which of these SOP Instance UIDs are indexed already."""
        uids = list(dict.fromkeys(sop_instance_uids))
        out: set[str] = set()
        with self._lock:
            for i in range(0, len(uids), 500):
                chunk = uids[i:i + 500]
                out.update(r[0] for r in self._db.execute(
                    f"SELECT sop_instance_uid FROM instances WHERE sop_instance_uid IN ({','.join('?' * len(chunk))})",
                    chunk))
        return out

    def add_instance(self, info: InstanceInfo, path: Path, size: int, calling_ae: str, stable_seconds: float,
                     now: float | None = None) -> tuple[bool, str]:
        """Index one durably stored instance; re-arms its study's stability timer. Returns (new, case_id)."""
        return self.add_instances([Arrival(info, path, size, calling_ae, time.time() if now is None else now)],
                                  stable_seconds)[0]

    def add_instances(self, arrivals: list[Arrival], stable_seconds: float) -> list[tuple[bool, str]]:
        """Index durably stored instances in one transaction. Returns (new, case_id) per arrival; an instance whose
        SOP Instance UID is indexed already is not added (new = False): a re-send, see node.resend."""
        events: list[IdentityEvent] = []
        with self._lock:
            with self._tx() as db:
                self._reassigned = db.execute("SELECT 1 FROM reassignments LIMIT 1").fetchone() is not None
                results = [self._add(db, a, stable_seconds, events) for a in arrivals]
            self._forget_cached_content()
        identity.emit(events)
        return results

    def _case_for(self, db: sqlite3.Connection, info: InstanceInfo) -> str:
        """The case an instance joins: an operator's reassignment of its series or study, else its identity's."""
        pid, issuer = info.patient_id, info.issuer_of_patient_id
        if self._reassigned:  # looked up once per transaction: most nodes never reassign anything
            r = db.execute("SELECT to_case FROM reassignments WHERE patient_id=? AND issuer_of_patient_id=? AND "
                           "(series_uid=? OR (series_uid='' AND study_uid=?)) ORDER BY series_uid DESC LIMIT 1",
                           (pid, issuer, info.series_uid, info.study_uid)).fetchone()
            if r is not None:
                return str(r[0])
        if not pid:
            return case_id_for("", info.study_uid)
        cached = self._identity_cache.get((pid, issuer))
        if cached is not None:
            return cached
        r = db.execute("SELECT case_id FROM cases WHERE patient_id=? AND issuer_of_patient_id=? "
                       "ORDER BY rowid LIMIT 1", (pid, issuer)).fetchone()
        if r is not None:
            case_id = str(r[0])
        else:  # a new identity: its natural id, made unique should another identity hold it (e.g. "A@B" vs A/B)
            base = case_id = case_id_for(pid, info.study_uid, issuer)
            n = 1
            while db.execute("SELECT 1 FROM cases WHERE case_id=?", (case_id,)).fetchone() is not None:
                n += 1
                case_id = f"{base}#{n}"
        self._identity_cache[(pid, issuer)] = case_id
        return case_id

    def _instance_values(self, info: InstanceInfo, case_id: str, path: Path, size: int, calling_ae: str,
                         now: float) -> tuple[Any, ...]:
        ipp = info.image_position or (None, None, None)
        return (info.sop_instance_uid, info.sop_class_uid, info.study_uid, info.series_uid, info.patient_id,
                info.modality, info.frame_of_reference_uid, ipp[0], ipp[1], ipp[2],
                "\\".join(f"{v:g}" for v in info.image_orientation) if info.image_orientation else None,
                info.acquisition_time, info.temporal_position, info.number_of_frames, info.position_repeats,
                info.image_type, info.transfer_syntax_uid, self._to_stored(path), size, calling_ae, now, case_id,
                info.issuer_of_patient_id, info.unusable, encode_frames(info.frame_positions, info.frame_times))

    def _add(self, db: sqlite3.Connection, arrival: Arrival, stable_seconds: float,
             events: list[IdentityEvent]) -> tuple[bool, str]:
        info, path, size, calling_ae, now = arrival
        case_id = self._case_for(db, info)
        cur = db.execute(
            f"INSERT OR IGNORE INTO instances ({', '.join(_INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_INSTANCE_COLUMNS))})",
            self._instance_values(info, case_id, path, size, calling_ae, now))
        if cur.rowcount == 0:
            return False, case_id
        new_series = self._add_to_series(db, info, case_id, now)
        self._touch_study(db, info, case_id, now, stable_seconds)
        self._touch_case(db, case_id, info, now)
        if new_series:
            found, _changed = identity.check_conflicts(db, self._link_keys(info), now)
            events += found
        return True, case_id

    @staticmethod
    def _link_keys(info: InstanceInfo) -> list[tuple[str, str]]:
        return [("study", info.study_uid), ("frame-of-reference", info.frame_of_reference_uid),
                ("frame-of-reference", info.referenced_frame_of_reference)]

    def _add_to_series(self, db: sqlite3.Connection, info: InstanceInfo, case_id: str, now: float) -> bool:
        """Count the instance into its (series, case) row. Returns whether the row is new."""
        cur = db.execute("UPDATE series SET last_received=?, changed_at=?, n_instances=n_instances+1 "
                         "WHERE series_uid=? AND case_id=?", (now, now, info.series_uid, case_id))
        if cur.rowcount:
            return False
        db.execute(
            f"INSERT INTO series ({', '.join(_SERIES_COLUMNS)}) VALUES ({', '.join('?' * len(_SERIES_COLUMNS))})",
            (info.series_uid, case_id, info.study_uid, info.patient_id, info.issuer_of_patient_id, info.modality,
             info.sop_class_uid, info.series_description, info.series_number, info.frame_of_reference_uid,
             info.radiopharmaceutical, info.radiopharmaceutical_code, "\\".join(info.roi_names),
             info.referenced_frame_of_reference, "\\".join(info.referenced_series), info.protocol_name, now, now,
             now, 1, info.radionuclide_code, info.dose_summation_type, "\\".join(info.referenced_sop_uids)))
        return True

    @staticmethod
    def _touch_study(db: sqlite3.Connection, info: InstanceInfo, case_id: str, now: float,
                     stable_seconds: float) -> None:
        """The study's quiet-period timer starts again (one timer per StudyInstanceUID, whatever its cases)."""
        db.execute(
            """INSERT INTO studies (study_uid, patient_id, case_id, study_date, study_description, first_received,
                 last_received, stable_due, stable)
               VALUES (?,?,?,?,?,?,?,?,0)
               ON CONFLICT(study_uid) DO UPDATE SET last_received=excluded.last_received,
               stable_due=excluded.stable_due, stable=0""",
            (info.study_uid, info.patient_id, case_id, info.study_date, info.study_description, now, now,
             now + stable_seconds))

    @staticmethod
    def _touch_case(db: sqlite3.Connection, case_id: str, info: InstanceInfo, now: float) -> None:
        """A new case starts receiving. An existing one: analysing and held stay as they are; done and failed stay
        unless the instance belongs to an input of the last analysis (anything else is judged when the study is
        stable: node.completion); every other state goes back to receiving."""
        series_uid = info.series_uid
        db.execute(
            """INSERT INTO cases(case_id, patient_id, issuer_of_patient_id, patient_name, state, last_input_at,
                 updated_at)
               VALUES (?,?,?,?,'receiving',?,?)
               ON CONFLICT(case_id) DO UPDATE SET last_input_at=excluded.last_input_at,
               updated_at=excluded.updated_at,
               state=CASE WHEN state IN ('analysing', 'held') THEN state
                          WHEN state IN ('done', 'failed') AND NOT EXISTS (SELECT 1 FROM case_inputs ci
                               WHERE ci.case_id=cases.case_id AND ci.series_uid=?) THEN state
                          ELSE 'receiving' END,
               reason=CASE WHEN state IN ('analysing', 'held') THEN reason
                           WHEN state IN ('done', 'failed') AND NOT EXISTS (SELECT 1 FROM case_inputs ci
                                WHERE ci.case_id=cases.case_id AND ci.series_uid=?) THEN reason
                           WHEN state IN ('done', 'failed') THEN 'an input series of analysis v' || version ||
                                ' changed: analysed again when its study is stable'
                           ELSE '' END""",
            (case_id, info.patient_id, info.issuer_of_patient_id, info.patient_name, now, now, series_uid,
             series_uid))

    # ------------------------------------------------------------------ re-sent instances
    def replace_instance(self, arrival: Arrival, kept_path: Path, differences: str,
                         stable_seconds: float) -> Replacement:
        """The re-sent `arrival` replaces the indexed copy of its SOP instance (whose file has been kept at
        `kept_path`): the instance row moves to the new file and the new header's series, study and case; both
        series, studies and cases are updated (an emptied case is retired) and conflicts re-examined, in one
        transaction. The caller removes the old file afterwards (a crash in between leaves it recorded here)."""
        info, path, size, calling_ae, now = arrival
        events: list[IdentityEvent] = []
        with self._lock:
            with self._tx() as db:
                self._reassigned = db.execute("SELECT 1 FROM reassignments LIMIT 1").fetchone() is not None
                old = db.execute("SELECT * FROM instances WHERE sop_instance_uid=?",
                                 (info.sop_instance_uid,)).fetchone()
                if old is None:  # vanished meanwhile (retention): then it is simply new
                    _new, case_id = self._add(db, arrival, stable_seconds, events)
                    replacement = Replacement("", case_id, "", info.study_uid, (case_id,))
                else:
                    replacement = self._replace(db, old, arrival, kept_path, differences, stable_seconds, events)
            self._forget_cached_content()
        identity.emit(events)
        return replacement

    def _replace(self, db: sqlite3.Connection, old: sqlite3.Row, arrival: Arrival, kept_path: Path,
                 differences: str, stable_seconds: float, events: list[IdentityEvent]) -> Replacement:
        info, path, size, calling_ae, now = arrival
        new_case = self._case_for(db, info)
        old_series = db.execute("SELECT * FROM series WHERE series_uid=? AND case_id=?",
                                (old["series_uid"], old["case_id"])).fetchone()
        db.execute("DELETE FROM instances WHERE sop_instance_uid=?", (info.sop_instance_uid,))
        db.execute(f"INSERT INTO instances ({', '.join(_INSTANCE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(_INSTANCE_COLUMNS))})",
                   self._instance_values(info, new_case, path, size, calling_ae, now))
        new_series = self._add_to_series(db, info, new_case, now)  # first: the same series keeps its row
        relinked: list[str] = []
        if not new_series:  # ... and takes the corrected header (a corrected tracer decides the series' role)
            relinked = self._refresh_series(db, info, new_case, events)
        self._remove_from_series(db, old["series_uid"], old["case_id"], now)
        self._touch_study(db, info, new_case, now, stable_seconds)
        self._refresh_study_and_name(db, info, new_case, events)
        db.execute("UPDATE studies SET stable=0, stable_due=? WHERE study_uid=?",
                   (now + stable_seconds, old["study_uid"]))
        self._touch_case(db, new_case, info, now)
        evaluate = {new_case}
        if old["case_id"] != new_case:
            self._touch_moved_from(db, old["case_id"], old["series_uid"], now)
            evaluate.add(old["case_id"])
        db.execute("INSERT OR IGNORE INTO superseded (sop_instance_uid, action, kept_path, replaced_path, "
                   "current_path, old_case, new_case, differences, at) VALUES (?,?,?,?,?,?,?,?,?)",
                   (info.sop_instance_uid, "replaced", self._to_stored(kept_path), old["path"],
                    self._to_stored(path), old["case_id"], new_case, differences, now))
        keys = self._link_keys(info) + [("study", old["study_uid"]),
                                        ("frame-of-reference", old["frame_of_reference_uid"])]
        if old_series is not None:  # the links the series row had (an RTSTRUCT's referenced frame of reference)
            keys += [("study", old_series["study_uid"]),
                     ("frame-of-reference", old_series["frame_of_reference_uid"]),
                     ("frame-of-reference", old_series["referenced_frame_of_reference"])]
        # conflicts are looked at again whenever the copy moved, made a series, or corrected a link (study, frame of
        # reference): a corrected re-send is how a modality resolves a conflict, and every case it touches is
        # evaluated again (held ones freed, freed ones evaluated)
        found, changed = identity.check_conflicts(db, keys, now) if (new_series or old["case_id"] != new_case
                                                                    or relinked) else ([], set())
        events += found
        evaluate |= changed
        retired = self._retire_if_empty(db, old["case_id"], new_case, now, events)
        if retired:
            evaluate.discard(old["case_id"])
        return Replacement(old["case_id"], new_case, old["study_uid"], info.study_uid, tuple(sorted(evaluate)))

    #: Series-level values a corrected re-send refreshes: (series column, the header attribute it comes from).
    _SERIES_REFRESH: tuple[tuple[str, str], ...] = (
        ("study_uid", "StudyInstanceUID"), ("modality", "Modality"), ("sop_class_uid", "SOPClassUID"),
        ("series_description", "SeriesDescription"), ("series_number", "SeriesNumber"),
        ("frame_of_reference_uid", "FrameOfReferenceUID"), ("radiopharmaceutical", "Radiopharmaceutical"),
        ("radiopharmaceutical_code", "RadiopharmaceuticalCodeSequence"), ("roi_names", "ROIName"),
        ("referenced_frame_of_reference", "ReferencedFrameOfReferenceSequence"),
        ("referenced_series", "RTReferencedSeriesSequence"), ("protocol_name", "ProtocolName"),
        ("radionuclide_code", "RadionuclideCodeSequence"), ("dose_summation_type", "DoseSummationType"),
        ("referenced_sop_uids", "ReferencedRTPlanSequence/ReferencedStructureSetSequence"))
    #: Of those, the ones that link series across cases (identity conflicts are looked at again when they change).
    _LINK_COLUMNS = ("study_uid", "frame_of_reference_uid", "referenced_frame_of_reference")

    @staticmethod
    def _series_values(info: InstanceInfo) -> dict[str, Any]:
        return {"study_uid": info.study_uid, "modality": info.modality, "sop_class_uid": info.sop_class_uid,
                "series_description": info.series_description, "series_number": info.series_number,
                "frame_of_reference_uid": info.frame_of_reference_uid,
                "radiopharmaceutical": info.radiopharmaceutical,
                "radiopharmaceutical_code": info.radiopharmaceutical_code, "roi_names": "\\".join(info.roi_names),
                "referenced_frame_of_reference": info.referenced_frame_of_reference,
                "referenced_series": "\\".join(info.referenced_series), "protocol_name": info.protocol_name,
                "radionuclide_code": info.radionuclide_code, "dose_summation_type": info.dose_summation_type,
                "referenced_sop_uids": "\\".join(info.referenced_sop_uids)}

    def _refresh_series(self, db: sqlite3.Connection, info: InstanceInfo, case_id: str,
                        events: list[IdentityEvent]) -> list[str]:
        """A re-sent, corrected instance's series-level header values become the series' (the index keeps them
        from the first instance otherwise): every value the index keeps per series, its study included. A change
        of a linking value (study, frame of reference) is logged and audited. Returns the linking columns that
        changed (conflicts must be looked at again)."""
        row = db.execute("SELECT * FROM series WHERE series_uid=? AND case_id=?", (info.series_uid, case_id)
                         ).fetchone()
        if row is None:
            return []
        values = self._series_values(info)
        changed = {c: kw for c, kw in self._SERIES_REFRESH if row[c] != values[c]}
        if not changed:
            return []
        db.execute(f"UPDATE series SET {', '.join(c + '=?' for c in changed)} WHERE series_uid=? AND case_id=?",
                   (*(values[c] for c in changed), info.series_uid, case_id))
        links = [c for c in self._LINK_COLUMNS if c in changed]
        if links:
            what = "; ".join(f"{changed[c]} {row[c] or '(none)'} -> {values[c] or '(none)'}" for c in links)
            events.append(IdentityEvent(
                "series-relinked", logging.WARNING,
                f"series {info.series_uid} of case {case_id} re-sent with corrected links ({what}): the index "
                "follows the corrected copy; identity conflicts looked at again",
                {"case": case_id, "series": info.series_uid, "changes": what, "result": "relinked"}))
        return links

    def _refresh_study_and_name(self, db: sqlite3.Connection, info: InstanceInfo, case_id: str,
                                events: list[IdentityEvent]) -> None:
        """A corrected re-send's study description and date become its study's, and its PatientName the case's
        (only when the copy carries the case's own identity: a series an operator reassigned does not rename it)."""
        db.execute("UPDATE studies SET study_description=?, study_date=? WHERE study_uid=? AND "
                   "(study_description!=? OR study_date!=?)",
                   (info.study_description, info.study_date, info.study_uid, info.study_description,
                    info.study_date))
        r = db.execute("SELECT patient_name FROM cases WHERE case_id=? AND patient_id=? AND issuer_of_patient_id=?",
                       (case_id, info.patient_id, info.issuer_of_patient_id)).fetchone()
        if r is not None and r[0] != info.patient_name:
            db.execute("UPDATE cases SET patient_name=? WHERE case_id=?", (info.patient_name, case_id))
            events.append(IdentityEvent(
                "case-renamed", logging.WARNING,
                f"case {case_id}: PatientName {r[0]!r} -> {info.patient_name!r} (a corrected re-send)",
                {"case": case_id, "from": r[0], "to": info.patient_name, "result": "renamed"}))

    def record_kept_first(self, sop_instance_uid: str, kept_path: Path, current: Path, case_id: str,
                          differences: str) -> None:
        """[receive] duplicates = "keep-first": the re-sent copy was set aside at `kept_path`, unused."""
        with self._lock, self._tx() as db:
            db.execute("INSERT OR IGNORE INTO superseded (sop_instance_uid, action, kept_path, replaced_path, "
                       "current_path, old_case, new_case, differences, at) VALUES (?,?,?,?,?,?,?,?,?)",
                       (sop_instance_uid, "kept-first", self._to_stored(kept_path), "", self._to_stored(current),
                        case_id, case_id, differences, time.time()))

    def superseded(self, case_id: str | None = None) -> list[SupersededRow]:
        """Superseded copies of re-sent instances (newest first), optionally those touching one case."""
        q = "SELECT * FROM superseded"
        args: tuple[str, ...] = ()
        if case_id is not None:
            q, args = q + " WHERE old_case=? OR new_case=?", (case_id, case_id)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id DESC", args).fetchall()
        return [SupersededRow(r["sop_instance_uid"], r["action"], self._to_path(r["kept_path"]),
                              self._to_path(r["replaced_path"]) if r["replaced_path"] else Path(),
                              self._to_path(r["current_path"]), r["old_case"], r["new_case"], r["differences"],
                              r["at"]) for r in rows]

    def replaced_paths(self) -> dict[str, Path]:
        """Old instance paths that a replacement recorded (files a crash may have left before their removal) ->
        the superseded copy kept of each (a hard link of the same file)."""
        with self._lock:
            return {str(self._to_path(r[0])): self._to_path(r[1]) for r in self._db.execute(
                "SELECT replaced_path, kept_path FROM superseded WHERE replaced_path != ''")}

    def _remove_from_series(self, db: sqlite3.Connection, series_uid: str, case_id: str, now: float) -> None:
        db.execute("UPDATE series SET n_instances=n_instances-1, changed_at=? WHERE series_uid=? AND case_id=?",
                   (now, series_uid, case_id))
        db.execute("DELETE FROM series WHERE series_uid=? AND case_id=? AND n_instances <= 0", (series_uid, case_id))

    @staticmethod
    def _touch_moved_from(db: sqlite3.Connection, case_id: str, series_uid: str, now: float) -> None:
        """An instance left this case: an input of its last analysis changed when it was one."""
        db.execute(
            """UPDATE cases SET last_input_at=?, updated_at=?,
               state=CASE WHEN state IN ('analysing', 'held') THEN state
                          WHEN state IN ('done', 'failed') AND NOT EXISTS (SELECT 1 FROM case_inputs ci
                               WHERE ci.case_id=cases.case_id AND ci.series_uid=?) THEN state
                          ELSE 'receiving' END,
               reason=CASE WHEN state IN ('analysing', 'held') THEN reason
                           WHEN state IN ('done', 'failed') AND NOT EXISTS (SELECT 1 FROM case_inputs ci
                                WHERE ci.case_id=cases.case_id AND ci.series_uid=?) THEN reason
                           ELSE 'an instance was re-sent under another identity and moved out of this case: '
                                || 'analysed again when its study is stable' END
               WHERE case_id=?""", (now, now, series_uid, series_uid, case_id))

    def _retire_if_empty(self, db: sqlite3.Connection, case_id: str, moved_to: str, now: float,
                         events: list[IdentityEvent]) -> bool:
        """A case left without series (all re-sent under another identity) is never left receiving: removed when
        it was never analysed, else failed with the reason (what was delivered came from data since corrected)."""
        if db.execute("SELECT 1 FROM series WHERE case_id=? LIMIT 1", (case_id,)).fetchone() is not None:
            return False
        r = db.execute("SELECT version FROM cases WHERE case_id=?", (case_id,)).fetchone()
        if r is None:
            return False
        if r[0] == 0:
            db.execute("DELETE FROM cases WHERE case_id=?", (case_id,))
            db.execute("DELETE FROM case_inputs WHERE case_id=?", (case_id,))
            text = f"case {case_id} removed: all its instances were re-sent under another identity (case {moved_to})"
        else:
            text = (f"no series left: all its instances were re-sent under another identity (now in case "
                    f"{moved_to}); the results of analysis v{r[0]} were made from them: review what was delivered")
            db.execute("UPDATE cases SET state='failed', reason=?, updated_at=? WHERE case_id=?", (text, now, case_id))
            text = f"case {case_id}: {text}"
        self._identity_cache = {k: v for k, v in self._identity_cache.items() if v != case_id}
        events.append(IdentityEvent("case-retired", logging.WARNING, text,
                                    {"case": case_id, "moved_to": moved_to, "result": "retired"}))
        return True

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

    def mark_study_stable(self, study_uid: str, now: float | None = None) -> list[str] | None:
        """Mark a study stable if its quiet period has passed. Returns the cases with series in it (a study seen
        with two identities has two), or None if not (yet) stable."""
        now = time.time() if now is None else now
        with self._lock, self._tx() as db:
            r = db.execute("SELECT stable_due FROM studies WHERE study_uid=? AND stable=0", (study_uid,)).fetchone()
            if r is None or r[0] > now:
                return None
            db.execute("UPDATE studies SET stable=1 WHERE study_uid=?", (study_uid,))
            return [x[0] for x in db.execute("SELECT DISTINCT case_id FROM series WHERE study_uid=? ORDER BY case_id",
                                             (study_uid,))]

    def case_studies_stable(self, case_id: str) -> bool:
        with self._lock:
            r = self._db.execute("SELECT COUNT(*) FROM studies WHERE stable=0 AND study_uid IN "
                                 "(SELECT study_uid FROM series WHERE case_id=?)", (case_id,)).fetchone()
        return r[0] == 0

    def series_of_case(self, case_id: str) -> list[SeriesRow]:
        """The case's series, oldest first, each with its content summary (node.seriescontent)."""
        with self._lock:
            rows = self._db.execute(
                f"""SELECT {', '.join('s.' + c for c in _SERIES_COLUMNS)}, st.stable, st.study_description
                   FROM series s JOIN studies st ON st.study_uid=s.study_uid
                   WHERE s.case_id=? ORDER BY s.first_received, s.series_uid""", (case_id,)).fetchall()
            contents = self._contents(case_id, rows)
        out = []
        for r in rows:
            content = contents[r["series_uid"]]
            out.append(SeriesRow(
                series_uid=r["series_uid"], study_uid=r["study_uid"], patient_id=r["patient_id"],
                modality=r["modality"], sop_class_uid=r["sop_class_uid"], series_description=r["series_description"],
                series_number=r["series_number"], frame_of_reference_uid=r["frame_of_reference_uid"],
                radiopharmaceutical=r["radiopharmaceutical"], radiopharmaceutical_code=r["radiopharmaceutical_code"],
                roi_names=tuple(n for n in r["roi_names"].split("\\") if n),
                referenced_frame_of_reference=r["referenced_frame_of_reference"],
                first_received=r["first_received"], last_received=r["last_received"], n_instances=r["n_instances"],
                max_position_repeats=content.time_points, stable=bool(r["stable"]), case_id=r["case_id"],
                issuer_of_patient_id=r["issuer_of_patient_id"], protocol_name=r["protocol_name"],
                study_description=r["study_description"],
                referenced_series=tuple(u for u in r["referenced_series"].split("\\") if u),
                changed_at=r["changed_at"], content=content,
                radionuclide_code=r["radionuclide_code"], dose_summation_type=r["dose_summation_type"],
                referenced_sop_uids=tuple(u for u in r["referenced_sop_uids"].split("\\") if u)))
        return out

    def _contents(self, case_id: str, rows: list[sqlite3.Row]) -> dict[str, SeriesContent]:
        """Content summaries of a case's series, computed from their instance rows (cached until they change)."""
        out: dict[str, SeriesContent] = {}
        stale = []
        for r in rows:
            stamp = (r["n_instances"], r["changed_at"], r["last_received"])
            hit = self._content_cache.get((case_id, r["series_uid"]))
            if hit is not None and hit[0] == stamp:
                out[r["series_uid"]] = hit[1]
            else:
                stale.append((r["series_uid"], stamp))
        if stale:
            wanted = [uid for uid, _ in stale]
            by_series: dict[str, list[Any]] = {uid: [] for uid in wanted}
            for i in range(0, len(wanted), 500):  # only the series that changed are read again
                chunk = wanted[i:i + 500]
                for r in self._db.execute(
                        "SELECT series_uid, sop_class_uid, image_type, ipp_x, ipp_y, ipp_z, image_orientation, "
                        "acquisition_time, temporal_position, number_of_frames, unusable, frames FROM instances "
                        f"WHERE case_id=? AND series_uid IN ({','.join('?' * len(chunk))})", (case_id, *chunk)):
                    by_series[r["series_uid"]].append(facts_from_row(r))
            for uid, stamp in stale:
                content = summarise(by_series[uid])
                self._content_cache[(case_id, uid)] = (stamp, content)
                out[uid] = content
        return out

    def _forget_cached_content(self) -> None:
        if len(self._content_cache) > 20000:
            self._content_cache.clear()

    def instance_paths(self, series_uid: str, case_id: str | None = None) -> list[Path]:
        """The stored files of a series (of one case when given: a series split between identities is read per
        case, never mixed)."""
        q, args = "SELECT path FROM instances WHERE series_uid=?", [series_uid]
        if case_id is not None:
            q, args = q + " AND case_id=?", [*args, case_id]
        with self._lock:
            return [self._to_path(r[0]) for r in self._db.execute(q + " ORDER BY received_at", args)]

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

    def finish_analysis(self, case_id: str, ok: bool, reason: str = "", result: dict[str, Any] | None = None,
                        inputs: Iterable[str] | None = None) -> str:
        """analysing -> done/failed; back to receiving when one of its input series (`inputs`; every series of the
        case when not given) changed during the analysis; held stays held. Records the inputs (a late object
        re-runs the case only when it changes one). Returns the state."""
        with self._lock, self._tx() as db:
            r = db.execute("SELECT analysed_input_at, state FROM cases WHERE case_id=?", (case_id,)).fetchone()
            used = list(dict.fromkeys(inputs)) if inputs is not None else [
                x[0] for x in db.execute("SELECT series_uid FROM series WHERE case_id=?", (case_id,))]
            since = r[0] if r is not None and r[0] is not None else None
            newer = since is not None and any(
                db.execute("SELECT 1 FROM series WHERE case_id=? AND series_uid=? AND changed_at>?",
                           (case_id, uid, since)).fetchone() is not None for uid in used)
            state = "done" if ok else "failed"
            if r is not None and r[1] == "held":
                state, reason = "held", db.execute("SELECT reason FROM cases WHERE case_id=?",
                                                   (case_id,)).fetchone()[0]
            elif newer:
                reason = f"new input arrived during analysis ({reason or state}); re-analysis pending"
                state = "receiving"
            db.execute("UPDATE cases SET state=?, reason=?, updated_at=?, result=? WHERE case_id=?",
                       (state, reason, time.time(), json.dumps(result or {}, default=str), case_id))
            db.execute("DELETE FROM case_inputs WHERE case_id=?", (case_id,))
            db.executemany("INSERT OR IGNORE INTO case_inputs (case_id, series_uid) VALUES (?,?)",
                           [(case_id, uid) for uid in used])
        return state

    def case_inputs(self, case_id: str) -> set[str]:
        """Series UIDs the case's last analysis used (its inputs)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT series_uid FROM case_inputs WHERE case_id=?", (case_id,))}

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
        """Operator's `reprocess`: queue a case whatever its state (unless it is analysing right now or held)."""
        with self._lock, self._tx() as db:
            return db.execute("UPDATE cases SET state='queued', reason='reprocess requested', updated_at=? "
                              "WHERE case_id=? AND state NOT IN ('analysing', 'held')",
                              (time.time(), case_id)).rowcount > 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {f"cases_{s}": 0 for s in CASE_STATES}
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM cases GROUP BY state"):
                out[f"cases_{state}"] = n
            out["instances"] = self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        return out

    def forget_series(self, series_uid: str, case_id: str | None = None) -> int:
        """Retention removed a series' files: drop its instance and series rows (of one case when given), and its
        study when it was the study's last series. Returns the number of instance rows removed."""
        where, args = "series_uid=?", [series_uid]
        if case_id is not None:
            where, args = where + " AND case_id=?", [*args, case_id]
        with self._lock, self._tx() as db:
            studies = [r[0] for r in db.execute(f"SELECT DISTINCT study_uid FROM series WHERE {where}", args)]
            n = db.execute(f"DELETE FROM instances WHERE {where}", args).rowcount
            db.execute(f"DELETE FROM series WHERE {where}", args)
            for study in studies:
                if db.execute("SELECT 1 FROM series WHERE study_uid=? LIMIT 1", (study,)).fetchone() is None:
                    db.execute("DELETE FROM studies WHERE study_uid=?", (study,))
        return n

    def all_paths(self) -> set[str]:
        """Every indexed file, as absolute path strings."""
        with self._lock:
            return {str(self._to_path(r[0])) for r in self._db.execute("SELECT path FROM instances")}

    # ------------------------------------------------------------------ identity conflicts (node.identity)
    def conflicts(self, include_resolved: bool = False) -> list[identity.ConflictRow]:
        """Identity conflicts, open ones (or all), oldest first."""
        with self._lock:
            if include_resolved:
                return [identity._row(r) for r in self._db.execute("SELECT * FROM conflicts ORDER BY detected_at")]
            return identity.open_conflicts(self._db)

    def release_case(self, case_id: str) -> list[identity.ConflictRow] | None:
        """A held case leaves 'held' (to 'stable', or back to its last analysis' outcome: node.identity.resume_state),
        released from the conflicts that hold it; logged and audited. None when it is not held."""
        with self._lock, self._tx() as db:
            r = db.execute("SELECT state FROM cases WHERE case_id=?", (case_id,)).fetchone()
            if r is None or r[0] != "held":
                return None
            conflicts, event = identity.release_case(db, case_id)
        identity.emit([event])
        return conflicts

    def series_cases(self, uid: str) -> dict[str, list[tuple[str, str]]]:
        """For a series or study UID: case -> [(series UID, study UID)] of the rows it names."""
        with self._lock:
            rows = self._db.execute("SELECT case_id, series_uid, study_uid FROM series WHERE series_uid=? OR "
                                    "study_uid=? ORDER BY case_id, series_uid", (uid, uid)).fetchall()
        out: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            out.setdefault(r[0], []).append((r[1], r[2]))
        return out

    def reassign(self, uid: str, to_case: str, from_case: str | None, operator: str) -> Replacement:
        """Move a series (or every series of a study) of `from_case` into `to_case`, and make later instances of it
        from the same identity follow. Files stay as received (the reader gives them the case's identity)."""
        events: list[IdentityEvent] = []
        now = time.time()
        with self._lock:
            with self._tx() as db:
                if db.execute("SELECT 1 FROM cases WHERE case_id=?", (to_case,)).fetchone() is None:
                    raise ReassignError(f"no case {to_case!r} to reassign to")
                rows = db.execute("SELECT * FROM series WHERE (series_uid=? OR study_uid=?) AND case_id!=?",
                                  (uid, uid, to_case)).fetchall()
                sources = sorted({r["case_id"] for r in rows})
                if from_case is not None:
                    rows = [r for r in rows if r["case_id"] == from_case]
                elif len(sources) > 1:
                    raise ReassignError(f"{uid} is in cases {', '.join(sources)}: say which one to move from")
                if not rows:
                    raise ReassignError(f"no series or study {uid} outside case {to_case}"
                                        + (f" in case {from_case}" if from_case else ""))
                source = rows[0]["case_id"]
                study_level = all(r["study_uid"] == uid for r in rows)
                keys: list[tuple[str, str]] = []
                for r in rows:
                    self._move_series(db, r, to_case, now)
                    db.execute("INSERT OR REPLACE INTO reassignments (series_uid, study_uid, patient_id, "
                               "issuer_of_patient_id, to_case, operator, at) VALUES (?,?,?,?,?,?,?)",
                               ("" if study_level else r["series_uid"], r["study_uid"], r["patient_id"],
                                r["issuer_of_patient_id"], to_case, operator, now))
                    keys += [("study", r["study_uid"]), ("frame-of-reference", r["frame_of_reference_uid"]),
                             ("frame-of-reference", r["referenced_frame_of_reference"])]
                for case in (source, to_case):
                    db.execute("UPDATE cases SET state=CASE WHEN state IN ('analysing','held') THEN state "
                               "ELSE 'receiving' END, reason=CASE WHEN state IN ('analysing','held') THEN reason "
                               "ELSE 'series reassigned by operator: analysed again when stable' END, "
                               "last_input_at=?, updated_at=? WHERE case_id=?", (now, now, case))
                found, changed = identity.check_conflicts(db, keys, now)
                events += found
                retired = self._retire_if_empty(db, source, to_case, now, events)
                evaluate = ({to_case} | changed | ({source} if not retired else set())) - ({source} if retired
                                                                                           else set())
                self._identity_cache.clear()
            self._forget_cached_content()
        identity.emit(events)
        return Replacement(source, to_case, rows[0]["study_uid"], rows[0]["study_uid"], tuple(sorted(evaluate)))

    def _move_series(self, db: sqlite3.Connection, r: sqlite3.Row, to_case: str, now: float) -> None:
        existing = db.execute("SELECT n_instances FROM series WHERE series_uid=? AND case_id=?",
                              (r["series_uid"], to_case)).fetchone()
        if existing is None:
            db.execute("UPDATE series SET case_id=?, changed_at=? WHERE series_uid=? AND case_id=?",
                       (to_case, now, r["series_uid"], r["case_id"]))
        else:
            db.execute("UPDATE series SET n_instances=n_instances+?, changed_at=?, last_received=MAX(last_received, ?) "
                       "WHERE series_uid=? AND case_id=?",
                       (r["n_instances"], now, r["last_received"], r["series_uid"], to_case))
            db.execute("DELETE FROM series WHERE series_uid=? AND case_id=?", (r["series_uid"], r["case_id"]))
        db.execute("UPDATE instances SET case_id=? WHERE series_uid=? AND case_id=?",
                   (to_case, r["series_uid"], r["case_id"]))

    def reassigned_series(self, case_id: str) -> dict[str, str]:
        """Series of this case that an operator moved here: series UID -> the identity in their headers."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.series_uid, s.patient_id, s.issuer_of_patient_id FROM series s JOIN cases c "
                "ON c.case_id=s.case_id WHERE s.case_id=? AND (s.patient_id!=c.patient_id OR "
                "s.issuer_of_patient_id!=c.issuer_of_patient_id)", (case_id,)).fetchall()
        return {r[0]: identity.identity_text(r[1], r[2]) for r in rows}


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
                   result=result, issuer_of_patient_id=r["issuer_of_patient_id"])


# ------------------------------------------------------------------ migrations
#: Columns of schema 1 (data folders of node 0.1), checked before they are migrated.
_V1_COLUMNS = {
    "instances": set(_INSTANCE_COLUMNS[:21]),
    "series": {"series_uid", "study_uid", "patient_id", "modality", "sop_class_uid", "series_description",
               "series_number", "frame_of_reference_uid", "radiopharmaceutical", "radiopharmaceutical_code",
               "roi_names", "referenced_frame_of_reference", "first_received", "last_received", "n_instances"},
    "studies": {"study_uid", "patient_id", "case_id", "study_date", "study_description", "first_received",
                "last_received", "stable_due", "stable"},
    "cases": set(_CASE_COLUMNS[:10]),
}


def _create(index: Index, db: sqlite3.Connection) -> None:
    """0 -> 1: a new index (the full current schema; later steps find nothing to change)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _relative_paths(index: Index, db: sqlite3.Connection) -> None:
    """1 -> 2: the schema-1 columns are checked; instance paths inside the data folder become relative to it."""
    db.execute("CREATE TABLE IF NOT EXISTS index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
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


def _identity_and_content(index: Index, db: sqlite3.Connection) -> None:
    """2 -> 3: cases by patient identity, series per (series, case), what series selection needs.

    Instances take the case their study was in (their identity's issuer unknown: ""); series rows are re-keyed
    by (series, case); multi-frame objects and RTSTRUCTs are read once (headers only) for their frame positions and
    the series their contours were drawn on. Analysed cases count every series as an input of their last analysis.
    """
    def columns(table: str) -> set[str]:
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}

    if "case_id" in columns("series"):  # made by _create in this version: nothing to migrate
        _create(index, db)
        return
    for name, ddl in (("case_id", "TEXT NOT NULL DEFAULT ''"), ("issuer_of_patient_id", "TEXT NOT NULL DEFAULT ''"),
                      ("unusable", "TEXT NOT NULL DEFAULT ''"), ("frames", "TEXT NOT NULL DEFAULT ''")):
        if name not in columns("instances"):
            db.execute(f"ALTER TABLE instances ADD COLUMN {name} {ddl}")
    if "issuer_of_patient_id" not in columns("cases"):
        db.execute("ALTER TABLE cases ADD COLUMN issuer_of_patient_id TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE instances SET case_id=(SELECT st.case_id FROM studies st WHERE st.study_uid=instances.study_uid)"
               " WHERE case_id=''")
    db.execute("ALTER TABLE series RENAME TO series_v2")
    db.execute("DROP INDEX IF EXISTS series_study")
    _create(index, db)  # the new series table, its indexes, and the tables new in schema 3
    db.execute(
        f"INSERT INTO series ({', '.join(_V3_SERIES_COLUMNS)}) "
        "SELECT s.series_uid, st.case_id, s.study_uid, s.patient_id, '', s.modality, s.sop_class_uid, "
        "s.series_description, s.series_number, s.frame_of_reference_uid, s.radiopharmaceutical, "
        "s.radiopharmaceutical_code, s.roi_names, s.referenced_frame_of_reference, '', '', s.first_received, "
        "s.last_received, s.last_received, s.n_instances FROM series_v2 s JOIN studies st ON st.study_uid=s.study_uid")
    db.execute("DROP TABLE series_v2")
    db.execute("INSERT OR IGNORE INTO case_inputs (case_id, series_uid) SELECT s.case_id, s.series_uid FROM series s "
               "JOIN cases c ON c.case_id=s.case_id WHERE c.version > 0")
    _reread_multiframe(index, db)


def _reread_multiframe(index: Index, db: sqlite3.Connection) -> None:
    """Frame positions/times of stored multi-frame objects and the referenced series of RTSTRUCTs (schema 3)."""
    from node.header import read_header

    rows = db.execute("SELECT sop_instance_uid, path, modality, series_uid, case_id FROM instances "
                      "WHERE number_of_frames > 1 OR modality='RTSTRUCT'").fetchall()
    for uid, stored, modality, series_uid, case_id in rows:
        try:
            info = read_header(index._to_path(stored))
        except Exception as exc:  # a file that cannot be read keeps what the index knew
            logger.warning("index migration: cannot re-read %s: %s", stored, exc)
            continue
        db.execute("UPDATE instances SET frames=?, unusable=? WHERE sop_instance_uid=?",
                   (encode_frames(info.frame_positions, info.frame_times), info.unusable, uid))
        if info.image_orientation and modality != "RTSTRUCT":
            db.execute("UPDATE instances SET image_orientation=? WHERE sop_instance_uid=? AND image_orientation IS "
                       "NULL", ("\\".join(f"{v:g}" for v in info.image_orientation), uid))
        if modality == "RTSTRUCT":
            db.execute("UPDATE series SET referenced_series=? WHERE series_uid=? AND case_id=?",
                       ("\\".join(info.referenced_series), series_uid, case_id))


def _dose_columns(index: Index, db: sqlite3.Connection) -> None:
    """3 -> 4: the series' radionuclide, dose summation type and RT references (the roles of RT Dose, RT Plan and
    Y-90 PET/SPECT series), from the stored headers, so a series received before the upgrade (a Y-90 PET, a plan
    dose) gets the role it would get today. Columns missing are added; each NM, PT, RTDOSE and RTPLAN series row
    takes them from its first instance (as a new row does). RT Dose and RT Plan instances are re-read whole:
    schema 3 knew neither SOP class (stored as unknown, unusable) nor an RT Dose's grid planes."""
    from node.header import read_header

    have = {r[1] for r in db.execute("PRAGMA table_info(series)")}
    for column in _DOSE_SERIES_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE series ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    rows = db.execute("SELECT sop_instance_uid, path, series_uid, case_id, modality FROM instances WHERE modality "
                      "IN ('NM', 'PT', 'RTDOSE', 'RTPLAN') ORDER BY received_at, sop_instance_uid").fetchall()
    done: set[tuple[str, str]] = set()
    for uid, stored, series_uid, case_id, modality in rows:
        whole = modality in ("RTDOSE", "RTPLAN")
        if (series_uid, case_id) in done and not whole:
            continue
        try:
            info = read_header(index._to_path(stored))
        except Exception as exc:  # a file that cannot be read keeps what the index knew
            logger.warning("index migration: cannot re-read %s: %s", stored, exc)
            continue
        if whole:
            db.execute("UPDATE instances SET unusable=?, frames=? WHERE sop_instance_uid=?",
                       (info.unusable, encode_frames(info.frame_positions, info.frame_times), uid))
        if (series_uid, case_id) not in done:
            done.add((series_uid, case_id))
            db.execute("UPDATE series SET radionuclide_code=?, dose_summation_type=?, referenced_sop_uids=? "
                       "WHERE series_uid=? AND case_id=?",
                       (info.radionuclide_code, info.dose_summation_type, "\\".join(info.referenced_sop_uids),
                        series_uid, case_id))


#: MIGRATIONS[v] brings an index of schema v to v + 1.
MIGRATIONS = {0: _create, 1: _relative_paths, 2: _identity_and_content, 3: _dose_columns}
