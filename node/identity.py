"""Patient identity: which case an instance joins, and identity conflicts between cases.

A case is one patient, identified by (PatientID, IssuerOfPatientID) as written in each instance's own header:
series join the case of the identity in their headers, never another's, so the same PatientID from two issuers is
two cases. A PatientID-less instance makes its study a case of its own (``STUDY-<uid>``). An operator may reassign
a series (or a study) to another case; later instances of it follow.

A StudyInstanceUID whose series are in two cases, or a FrameOfReferenceUID that links series of two cases (an NM
or PET and a CT sharing it, an RTSTRUCT drawn on it), is an identity conflict: every case involved is *held*
(never analysed) until the conflict goes away (a corrected re-send moved the series) or an operator releases or
reassigns. Each conflict is logged at WARNING and audited; `status` lists the open ones.

The functions here work inside the index's transactions (node.index owns the connection); events are returned
and emitted (log + audit) by the index after commit.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from node.audit import audit

logger = logging.getLogger(__name__)

__all__ = ["IdentityEvent", "ConflictRow", "case_id_for", "check_conflicts", "emit", "open_conflicts",
           "release_case", "held_by", "identity_text", "resume_state", "STUDY_CASE_PREFIX"]

STUDY_CASE_PREFIX = "STUDY-"
KINDS = ("study", "frame-of-reference")


def case_id_for(patient_id: str, study_uid: str, issuer: str = "") -> str:
    """The natural case id of an identity: the PatientID, ``PatientID@Issuer`` with an issuer; a study without a
    PatientID is its own case."""
    if not patient_id:
        return f"{STUDY_CASE_PREFIX}{study_uid}"
    return f"{patient_id}@{issuer}" if issuer else patient_id


def identity_text(patient_id: str, issuer: str) -> str:
    if not patient_id:
        return "(no PatientID)"
    return f"{patient_id} (issuer {issuer})" if issuer else f"{patient_id} (no issuer)"


@dataclass(frozen=True)
class IdentityEvent:
    """Something the operator must hear about: a conflict found, grown or resolved; a case held or released."""

    event: str  # identity-conflict | identity-conflict-resolved | case-retired | case-released | case-renamed | ...
    level: int
    message: str
    fields: dict[str, str] = field(default_factory=dict)


def emit(events: Iterable[IdentityEvent]) -> None:
    """Log (WARNING for conflicts) and audit each event."""
    for e in events:
        logger.log(e.level, "%s", e.message)
        audit(e.event, **e.fields)


@dataclass(frozen=True)
class ConflictRow:
    kind: str
    key: str
    identities: tuple[tuple[str, str], ...]
    cases: tuple[str, ...]
    released: tuple[str, ...]
    detected_at: float
    resolved_at: float | None
    resolution: str


def _row(r: sqlite3.Row) -> ConflictRow:
    return ConflictRow(kind=r["kind"], key=r["key"],
                       identities=tuple((str(i[0]), str(i[1])) for i in json.loads(r["identities"])),
                       cases=tuple(json.loads(r["cases"])), released=tuple(json.loads(r["released"])),
                       detected_at=r["detected_at"], resolved_at=r["resolved_at"], resolution=r["resolution"])


def open_conflicts(db: sqlite3.Connection) -> list[ConflictRow]:
    return [_row(r) for r in db.execute("SELECT * FROM conflicts WHERE resolved_at IS NULL ORDER BY detected_at")]


def held_by(db: sqlite3.Connection, case_id: str) -> list[ConflictRow]:
    """Open conflicts that hold this case (it is involved and was not released from them)."""
    return [c for c in open_conflicts(db) if case_id in c.cases and case_id not in c.released]


def _cases_of(db: sqlite3.Connection, kind: str, key: str) -> list[str]:
    if kind == "study":
        rows = db.execute("SELECT DISTINCT case_id FROM series WHERE study_uid=?", (key,))
        return sorted(r[0] for r in rows)
    # a frame of reference conflicts only where the node would use it as a link: an NM/PT and a CT sharing it, or
    # an RTSTRUCT drawn on it, with the linked series in different cases
    links = db.execute("SELECT case_id, modality, referenced_frame_of_reference=? AS refers FROM series "
                       "WHERE frame_of_reference_uid=? OR referenced_frame_of_reference=?", (key, key, key)).fetchall()
    cases = sorted({r[0] for r in links})
    if len(cases) < 2:
        return cases
    mods = {r[1] for r in links}
    linked = bool(mods & {"NM", "PT"}) and "CT" in mods or any(r[2] for r in links)
    return cases if linked else []


def _identities(db: sqlite3.Connection, cases: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for c in cases:
        r = db.execute("SELECT patient_id, issuer_of_patient_id FROM cases WHERE case_id=?", (c,)).fetchone()
        ident = (r[0], r[1]) if r is not None else ("", "")
        if ident not in out:
            out.append(ident)
    return tuple(out)


def _set_held(db: sqlite3.Connection, case_id: str, reason: str, now: float) -> None:
    db.execute("UPDATE cases SET state='held', reason=?, updated_at=? WHERE case_id=?", (reason, now, case_id))


def _describe(kind: str, key: str, identities: Sequence[tuple[str, str]], cases: Sequence[str]) -> str:
    what = "study" if kind == "study" else "frame of reference"
    return (f"{what} {key} seen with {len(identities)} patient identities "
            f"({'; '.join(identity_text(p, i) for p, i in identities)}) in cases {', '.join(cases)}")


def resume_state(db: sqlite3.Connection, case_id: str, never_analysed: str = "receiving") -> tuple[str, str]:
    """Where a case goes when nothing holds it any more, and why in words. Never analysed: `never_analysed`
    (completion evaluates it). Analysed: the outcome of its last analysis (done, or failed), so completion re-runs
    it only when an input changed since; a release never re-runs an analysis by itself."""
    r = db.execute("SELECT version, result FROM cases WHERE case_id=?", (case_id,)).fetchone()
    if r is None or not r[0]:
        return never_analysed, "never analysed: analysed when its studies are stable and a workflow has its inputs"
    try:
        result = json.loads(r[1] or "{}")
    except json.JSONDecodeError:
        result = {}
    errors = result.get("errors") if isinstance(result, dict) else None
    if not result or errors:
        why = "; ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else "internal error"
        return "failed", (f"back to the outcome of analysis v{r[0]} (failed: {why}); analysed again only if an "
                          "input changed since")
    return "done", f"back to analysis v{r[0]} (done); analysed again only if an input changed since"


def _unhold(db: sqlite3.Connection, cases: Iterable[str], why: str, now: float) -> dict[str, str]:
    """Cases held by no other open conflict leave 'held' (:func:`resume_state`: a case analysed before goes back to
    its last outcome, not to a re-run; completion evaluates them). Returns case -> the state it went to."""
    out: dict[str, str] = {}
    for c in cases:
        r = db.execute("SELECT state FROM cases WHERE case_id=?", (c,)).fetchone()
        if r is None or r[0] != "held" or held_by(db, c):
            continue
        state, resumed = resume_state(db, c)
        db.execute("UPDATE cases SET state=?, reason=?, updated_at=? WHERE case_id=?",
                   (state, f"{why}; {resumed}", now, c))
        out[c] = state
    return out


def check_conflicts(db: sqlite3.Connection, keys: Iterable[tuple[str, str]], now: float | None = None
                    ) -> tuple[list[IdentityEvent], set[str]]:
    """Re-examine the given (kind, UID) keys after series moved or arrived: open, grow or resolve conflicts and
    hold / un-hold their cases. Returns the events and the cases that changed state (to evaluate again)."""
    now = time.time() if now is None else now
    events: list[IdentityEvent] = []
    changed: set[str] = set()
    for kind, key in dict.fromkeys((k, v) for k, v in keys if v):
        cases = _cases_of(db, kind, key)
        r = db.execute("SELECT * FROM conflicts WHERE kind=? AND key=?", (kind, key)).fetchone()
        existing = _row(r) if r is not None else None
        is_open = existing is not None and existing.resolved_at is None
        if len(cases) >= 2:
            identities = _identities(db, cases)
            text = _describe(kind, key, identities, cases)
            grew = is_open and existing is not None and bool(set(cases) - set(existing.cases))
            if is_open and not grew:
                continue
            db.execute("INSERT OR REPLACE INTO conflicts (kind, key, identities, cases, released, detected_at, "
                       "resolved_at, resolution) VALUES (?,?,?,?,?,?,NULL,'')",
                       (kind, key, json.dumps(identities), json.dumps(cases), "[]",
                        existing.detected_at if grew and existing is not None else now))
            reason = (f"held: identity conflict, {text}; never analysed together: correct and re-send, or "
                      "release / reassign (liver-node release|reassign, or the dashboard)")
            for c in cases:
                _set_held(db, c, reason, now)
                changed.add(c)
            events.append(IdentityEvent(
                "identity-conflict", logging.WARNING,
                f"identity conflict: {text}: cases held" + (" (a new identity joined it)" if grew else ""),
                {"kind": kind, "key": key, "identities": "; ".join(f"{p}/{i}" for p, i in identities),
                 "cases": ",".join(cases), "result": "held"}))
        elif is_open and existing is not None:
            resolution = ("only one case left with this UID (a corrected re-send or reassignment moved the others)"
                          if cases else "no series carry this UID any more")
            db.execute("UPDATE conflicts SET resolved_at=?, resolution=? WHERE kind=? AND key=?",
                       (now, resolution, kind, key))
            what = "study" if kind == "study" else "frame of reference"
            freed = _unhold(db, existing.cases, f"identity conflict on {what} {key} resolved: {resolution}", now)
            changed.update(freed)
            events.append(IdentityEvent(
                "identity-conflict-resolved", logging.WARNING,
                f"identity conflict on {what} {key} resolved: {resolution}; no longer held: "
                f"{', '.join(f'{c} ({_resumed_text(s)})' for c, s in freed.items()) or 'none'}",
                {"kind": kind, "key": key, "cases": ",".join(existing.cases), "result": "resolved",
                 "detail": resolution, "unheld": ",".join(f"{c}:{s}" for c, s in freed.items())}))
    return events, changed


def _resumed_text(state: str) -> str:
    return {"done": "back to done: its last analysis stands unless an input changed",
            "failed": "back to failed: analysed again only if an input changed",
            }.get(state, "never analysed: evaluated for analysis")


def release_case(db: sqlite3.Connection, case_id: str, now: float | None = None
                 ) -> tuple[list[ConflictRow], IdentityEvent]:
    """The operator releases a held case: it is released from every open conflict that holds it (they stay open
    for the other cases) and leaves 'held': to 'stable' when never analysed, else back to the outcome of its last
    analysis (:func:`resume_state`; completion re-runs it only when an input changed). Returns the conflicts it
    was released from and the event to log and audit."""
    now = time.time() if now is None else now
    conflicts = held_by(db, case_id)
    for c in conflicts:
        db.execute("UPDATE conflicts SET released=? WHERE kind=? AND key=?",
                   (json.dumps(sorted({*c.released, case_id})), c.kind, c.key))
    what = "; ".join(_describe(c.kind, c.key, c.identities, c.cases) for c in conflicts)
    state, resumed = resume_state(db, case_id, never_analysed="stable")
    db.execute("UPDATE cases SET state=?, reason=?, updated_at=? WHERE case_id=? AND state='held'",
               (state, f"released by operator{' from the identity conflict: ' + what if what else ''}; {resumed}",
                now, case_id))
    event = IdentityEvent("case-released", logging.WARNING,
                          f"case {case_id} released from {len(conflicts)} identity conflict(s) "
                          f"({what or 'none open'}): {_resumed_text(state)}",
                          {"case": case_id, "state": state, "result": "released",
                           "conflicts": ",".join(f"{c.kind}:{c.key}" for c in conflicts) or "none"})
    return conflicts, event
