"""One typed model of what the node knows: cases, their series and workflows, outputs and deliveries.

`liver-node status` (table and ``--json``), the dashboard, /metrics and the webhooks all read a
:class:`NodeStatus` built here by :func:`collect`, so nothing is computed twice. The JSON form
(:meth:`NodeStatus.to_json`) is the machine-readable contract of ``status --json``::

    {"cases": [{"case_id", "patient_id", "issuer_of_patient_id", "patient_name", "state", "reason", "version",
                "workflows": {NAME: {"state", "reason", "inputs": {ROLE: SERIES_UID}, "flags": [TEXT]}},
                "series": [{"series_uid", "study_uid", "modality", "sop_class_uid", "description", "instances",
                            "role", "role_reason", "stable"}]}],
     "conflicts": [{"kind", "key", "identities": [{"patient_id", "issuer_of_patient_id"}], "cases", "detected_at"}],
     "outbox": [{"destination", "case_id", "kind", "description", "sop_instance_uid", "sop_class_uid", "state",
                 "attempts", "next_attempt", "last_error", "sent_as", "sent_at"}]}

Each field is filled in ONE place here: ``issuer_of_patient_id`` (:func:`_issuer`: the case's identity,
node.identity), ``role_reason`` (why the series has its role, or why not each role it could have had:
node.classify.explain_roles; a series an operator reassigned says so), ``conflicts`` (:func:`_conflicts`: the open
patient-identity conflicts, node.identity) and the case state ``held`` (set by a conflict, left by a corrected
re-send or an operator's release / reassignment).
"""
from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.classify import explain_roles
from node.config import Config
from node.errors import AnalysisError
from node.index import CaseRow, Index, SeriesRow
from node.record import CaseRecord, RecordError
from node.selection import best_of_role
from node.workflow import CaseSeries

if TYPE_CHECKING:
    from node.outbox import Outbox
    from node.sender import Sender

__all__ = ["CASE_STATES", "WORKFLOW_STATES", "SeriesStatus", "WorkflowStatus", "OutputStatus", "Conflict",
           "DestinationStatus", "DiskStatus", "CaseStatus", "NodeStatus", "collect", "disk_status", "iso"]

#: Case states, in the order a case normally moves through them ("held": kept apart after an identity conflict).
CASE_STATES = ("receiving", "stable", "queued", "analysing", "done", "failed", "held")
#: Per-workflow states: no-input (its key series has not arrived), waiting (some inputs missing), ready (inputs
#: complete, the case is not stable yet), then as the case: queued, analysing, done, failed, held.
WORKFLOW_STATES = ("no-input", "waiting", "ready", "queued", "analysing", "done", "failed", "held")
#: Outputs kinds that are pictures a person can look at (Secondary Capture encodings).
SC_CLASSES = {"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.4"}
#: Outbox item states that still need a delivery.
UNSENT = ("pending", "retrying", "sending", "failed")


def iso(t: float | None) -> str | None:
    """Local time with offset, seconds precision (JSON and tables)."""
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


@dataclass(frozen=True)
class SeriesStatus:
    series_uid: str
    study_uid: str
    modality: str
    sop_class_uid: str
    description: str
    instances: int
    role: str
    role_reason: str
    stable: bool
    last_received: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"series_uid": self.series_uid, "study_uid": self.study_uid, "modality": self.modality,
                "sop_class_uid": self.sop_class_uid, "description": self.description, "instances": self.instances,
                "role": self.role, "role_reason": self.role_reason, "stable": self.stable}


@dataclass(frozen=True)
class WorkflowStatus:
    name: str
    state: str
    reason: str
    inputs: dict[str, str]  # role -> series UID the workflow uses (or would use)
    measurements: dict[str, Any] = field(default_factory=dict)  # what the last run recorded (the case record's)
    seconds: float | None = None  # duration of the last run
    warnings: tuple[str, ...] = ()  # what the last run said to review
    title: str = ""  # the workflow's name for people ("Liver CT perfusion"); `name` is its configuration key

    @property
    def flags(self) -> list[str]:
        """What the last run said to review (its warnings): values not to trust blindly, e.g. the region values a
        workflow reported as not measurable, with the reason, and failed checks of its inputs."""
        return list(self.warnings)

    def to_json(self) -> dict[str, Any]:
        """`flags`: what the last analysis said to review (e.g. a dose above a safety limit, a value not
        measurable), from the case record; [] when it said nothing or has not run."""
        return {"state": self.state, "reason": self.reason, "inputs": dict(self.inputs), "flags": self.flags}


@dataclass(frozen=True)
class OutputStatus:
    """One output object and one destination (or destination "" when no destination takes it)."""

    case_id: str
    destination: str
    kind: str
    description: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    state: str  # an outbox state (pending, retrying, sending, failed, sent) or "unrouted"
    attempts: int
    next_attempt: float | None
    last_error: str
    sent_as: str
    sent_at: float | None
    created: float
    path: Path | None  # None once retention removed the file
    item_id: int | None = None

    @property
    def is_picture(self) -> bool:
        return self.sop_class_uid in SC_CLASSES and self.path is not None

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination, "case_id": self.case_id, "kind": self.kind,
                "description": self.description, "sop_instance_uid": self.sop_instance_uid,
                "sop_class_uid": self.sop_class_uid, "state": self.state, "attempts": self.attempts,
                "next_attempt": iso(self.next_attempt) if self.state in ("pending", "retrying") else None,
                "last_error": self.last_error, "sent_as": self.sent_as, "sent_at": iso(self.sent_at)}


@dataclass(frozen=True)
class Conflict:
    """A StudyInstanceUID (or linking FrameOfReferenceUID) seen with two patient identities: both cases held."""

    kind: str  # "study" or "frame-of-reference"
    key: str   # the UID seen with several identities
    identities: tuple[tuple[str, str], ...]  # (PatientID, IssuerOfPatientID)
    cases: tuple[str, ...]
    detected_at: float | None = None
    released: tuple[str, ...] = ()  # cases the operator released from it (no longer held by it; table view only)

    @property
    def held(self) -> tuple[str, ...]:
        """The cases this conflict still holds."""
        return tuple(c for c in self.cases if c not in self.released)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key,
                "identities": [{"patient_id": p, "issuer_of_patient_id": i} for p, i in self.identities],
                "cases": list(self.cases), "detected_at": iso(self.detected_at)}


@dataclass(frozen=True)
class CaseStatus:
    case_id: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    state: str
    reason: str
    version: int
    workflows: dict[str, WorkflowStatus]
    series: list[SeriesStatus]
    last_input_at: float = 0.0
    updated_at: float = 0.0
    outputs: list[OutputStatus] = field(default_factory=list)

    @property
    def waiting_why(self) -> list[str]:
        """Why the case is not (yet) analysed, in words: one line per workflow that has begun to arrive."""
        if self.state == "held":
            return [self.reason or "held after a patient-identity conflict: release it in the dashboard or CLI"]
        out = [f"{w.name}: {w.reason}" for w in self.workflows.values() if w.state in ("waiting", "ready")]
        if not out and self.state in ("receiving", "stable"):
            out.append(self.reason or "no workflow has its key input yet")
        return out

    @property
    def delivered(self) -> bool:
        """Every routed output confirmed by its destination."""
        routed = [o for o in self.outputs if o.destination]
        return bool(routed) and all(o.state == "sent" for o in routed)

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "patient_id": self.patient_id,
                "issuer_of_patient_id": self.issuer_of_patient_id, "patient_name": self.patient_name,
                "state": self.state, "reason": self.reason, "version": self.version,
                "workflows": {n: w.to_json() for n, w in self.workflows.items()},
                "series": [s.to_json() for s in self.series]}


@dataclass(frozen=True)
class DestinationStatus:
    name: str
    target: str  # folder path or AE@host:port
    outputs: tuple[str, ...]
    counts: dict[str, int]  # outbox state -> items
    oldest_unsent: float | None  # creation time of the oldest item not yet delivered
    failing_since: float | None  # first failure since the last success (running node only)
    last_error: str


@dataclass(frozen=True)
class DiskStatus:
    path: Path
    free_bytes: int
    total_bytes: int
    min_free_bytes: int

    @property
    def low(self) -> bool:
        """Below the watermark: the node refuses C-STOREs with 0xA700."""
        return self.min_free_bytes > 0 and self.free_bytes < self.min_free_bytes


@dataclass(frozen=True)
class NodeStatus:
    cases: list[CaseStatus]
    conflicts: list[Conflict]
    outbox: list[OutputStatus]
    destinations: list[DestinationStatus]
    unrouted_outputs: tuple[str, ...]  # output kinds no destination takes
    disk: DiskStatus | None
    generated_at: float

    def case(self, case_id: str) -> CaseStatus | None:
        return next((c for c in self.cases if c.case_id == case_id), None)

    def to_json(self) -> dict[str, Any]:
        """Exactly the documented `status --json` schema (module docstring)."""
        return {"cases": [c.to_json() for c in self.cases], "conflicts": [c.to_json() for c in self.conflicts],
                "outbox": [o.to_json() for o in self.outbox if o.destination]}


# ------------------------------------------------------------------ the fields filled in one place each
def _issuer(case: CaseRow) -> str:
    """IssuerOfPatientID of the case's identity ("" when its instances carry none)."""
    return case.issuer_of_patient_id


def _conflicts(index: Index, case_id: str | None = None) -> list[Conflict]:
    """Open patient-identity conflicts (of one case when given)."""
    return [Conflict(kind=c.kind, key=c.key, identities=c.identities, cases=c.cases, detected_at=c.detected_at,
                     released=c.released)
            for c in index.conflicts() if case_id is None or case_id in c.cases]


# ------------------------------------------------------------------ inputs and workflow states
def _record(case: CaseRow) -> CaseRecord | None:
    """The case's record of its last analysis, or None (none yet, or written by another version: reprocess)."""
    if not case.result:
        return None
    try:
        return CaseRecord.from_json(case.result)
    except RecordError:
        return None


def _inputs(config: Config, case: CaseSeries, record: CaseRecord | None) -> dict[str, dict[str, str]]:
    """workflow -> role -> series UID: what the last analysis used (case record), else what each workflow would
    select now (its own select_inputs; when it cannot select yet, the newest series of each role it takes)."""
    out: dict[str, dict[str, str]] = {}
    for wf in config.workflows:
        used = record.inputs.get(wf.name) if record is not None else None
        if used is not None:
            out[wf.name] = {case.roles.get(i["series_uid"], "other"): i["series_uid"] for i in used}
            continue
        try:
            chosen = wf.select_inputs(case, config.analysis.settings_for(wf)).chosen
            out[wf.name] = {case.roles.get(c.series.series_uid, "other"): c.series.series_uid for c in chosen}
        except AnalysisError:  # not all its inputs yet: the series it would most likely use, per role
            best = {role: best_of_role(case, role, config.analysis.common) for role in (*wf.needs, *wf.uses)}
            out[wf.name] = {role: s.series_uid for role, s in best.items() if s is not None}
    return out


def _workflows(config: Config, case: CaseRow, series: Sequence[SeriesRow],
               roles: dict[str, str]) -> dict[str, WorkflowStatus]:
    present = set(roles.values())
    record = _record(case)
    inputs = _inputs(config, CaseSeries(case.case_id, tuple(series), roles), record)
    ran = set(record.workflows) if record is not None else set()
    out: dict[str, WorkflowStatus] = {}
    for wf in config.workflows:
        name, needs = wf.name, wf.needs
        missing = [r for r in needs if r not in present]
        result = record.results.get(name) if record is not None else None
        error = record.errors.get(name, "") if record is not None else ""
        if case.state == "held":
            state, reason = "held", "the case is held (patient-identity conflict)"
        elif needs[0] not in present:
            state, reason = "no-input", f"no {needs[0]} series"
        elif missing:
            state, reason = "waiting", "waits for " + ", ".join(missing)
        elif case.state in ("queued", "analysing"):
            state, reason = case.state, ""
        elif case.state in ("done", "failed") and name in ran:
            state, reason = ("failed", error or "no result recorded") if error or result is None else ("done", "")
        else:
            state = "ready"
            reason = ("inputs complete; analysed once every study of the case is stable"
                      if case.state in ("receiving", "stable") else "inputs complete; not analysed in the last run")
        out[name] = WorkflowStatus(name=name, state=state, reason=reason, inputs=inputs.get(name, {}),
                                   measurements=dict(result.measurements) if result is not None else {},
                                   seconds=result.seconds if result is not None else None,
                                   warnings=tuple(result.warnings) if result is not None else (),
                                   title=wf.title)
    return out


# ------------------------------------------------------------------ outputs, destinations, disk
def _outputs(outbox: Outbox, case_id: str | None) -> list[OutputStatus]:
    data_dir = outbox.data_dir()
    out = []
    for r in outbox.items(case_id):
        out.append(OutputStatus(
            case_id=r["case_id"], destination=r["destination"], kind=r["kind"], description=r["description"],
            sop_instance_uid=r["sop_instance_uid"], sop_class_uid=r["sop_class_uid"],
            series_instance_uid=r["series_instance_uid"], state=r["state"], attempts=r["attempts"],
            next_attempt=r["next_attempt"], last_error=r["last_error"] or "", sent_as=r["sent_as"] or "",
            sent_at=r["sent_at"], created=r["created"],
            path=None if r["pruned_at"] is not None else data_dir / r["path"], item_id=r["id"]))
    for r in outbox.unrouted(case_id):
        path = data_dir / r["path"]
        out.append(OutputStatus(
            case_id=r["case_id"], destination="", kind=r["kind"], description=r["description"],
            sop_instance_uid=r["sop_instance_uid"], sop_class_uid=r["sop_class_uid"],
            series_instance_uid=r["series_instance_uid"], state="unrouted", attempts=0, next_attempt=None,
            last_error="no destination takes this kind of output", sent_as="", sent_at=None, created=r["created"],
            path=path if path.exists() else None))
    return out


def _destinations(config: Config, outputs: Sequence[OutputStatus], sender: Sender | None) -> list[DestinationStatus]:
    out = []
    for d in config.destinations:
        mine = [o for o in outputs if o.destination == d.name]
        counts = {s: 0 for s in ("pending", "retrying", "sending", "failed", "sent")}
        for o in mine:
            counts[o.state] = counts.get(o.state, 0) + 1
        unsent = [o.created for o in mine if o.state in UNSENT]
        errors = sorted((o for o in mine if o.last_error and o.state != "sent"), key=lambda o: o.created)
        failing = sender.failing_since.get(d.name) if sender is not None else None
        target = str(d.folder) if d.folder is not None else f"{d.ae_title}@{d.host}:{d.port}"
        out.append(DestinationStatus(name=d.name, target=target, outputs=d.outputs, counts=counts,
                                     oldest_unsent=min(unsent) if unsent else None, failing_since=failing,
                                     last_error=errors[-1].last_error if errors else ""))
    return out


def disk_status(config: Config) -> DiskStatus | None:
    """Free space of the volume holding data_dir (None when data_dir does not exist)."""
    try:
        usage = shutil.disk_usage(config.node.data_dir)
    except OSError:
        return None
    return DiskStatus(path=config.node.data_dir, free_bytes=usage.free, total_bytes=usage.total,
                      min_free_bytes=config.node.min_free_disk_mb * 1024 * 1024)


# ------------------------------------------------------------------ the one builder
def case_status(config: Config, index: Index, case: CaseRow, outputs: Sequence[OutputStatus] = ()) -> CaseStatus:
    series = index.series_of_case(case.case_id)
    roles = explain_roles(series, config.analysis.liver_roi_names, config.workflows, config.classify.tracers)
    for uid, who in index.reassigned_series(case.case_id).items():
        role, why = roles[uid]
        roles[uid] = (role, f"{why} (reassigned to this case by an operator; its headers name patient {who})")
    role_of = {uid: r for uid, (r, _) in roles.items()}
    return CaseStatus(
        case_id=case.case_id, patient_id=case.patient_id, issuer_of_patient_id=_issuer(case),
        patient_name=case.patient_name, state=case.state, reason=case.reason, version=case.version,
        workflows=_workflows(config, case, series, role_of),
        series=[SeriesStatus(series_uid=s.series_uid, study_uid=s.study_uid, modality=s.modality,
                             sop_class_uid=s.sop_class_uid, description=s.series_description,
                             instances=s.n_instances, role=roles[s.series_uid][0], role_reason=roles[s.series_uid][1],
                             stable=s.stable, last_received=s.last_received) for s in series],
        last_input_at=case.last_input_at, updated_at=case.updated_at,
        outputs=[o for o in outputs if o.case_id == case.case_id])


def collect(config: Config, index: Index, outbox: Outbox | None = None, sender: Sender | None = None,
            case_id: str | None = None) -> NodeStatus:
    """Everything `status`, the dashboard, /metrics and the webhooks show, read once from index and outbox.
    With `case_id`, only that case (and its outputs)."""
    rows = [c for c in ([index.get_case(case_id)] if case_id is not None else index.cases()) if c is not None]
    outputs = _outputs(outbox, case_id) if outbox is not None else []
    cases = [case_status(config, index, c, outputs) for c in rows]
    return NodeStatus(cases=cases, conflicts=_conflicts(index, case_id), outbox=outputs,
                      destinations=_destinations(config, outputs, sender), unrouted_outputs=config.unrouted_outputs(),
                      disk=disk_status(config), generated_at=time.time())
