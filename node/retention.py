"""Retention: what may be deleted, by the ``[retention]`` policy, and deleting it with an audit line each.

Only cases that are **done** and whose every routed output is **delivered** are touched, and only when the
later of "analysis finished" and "last output delivered" is older than the policy's days:

- ``received_days``: the received instances of the case (files and their index rows), one audit line per series;
- ``outbox_days``: the case's delivered output files in data_dir/outbox/<case>/ (the queue rows and the manifest
  stay as the record; ``resend`` then says the file is gone), one audit line per file;
- ``superseded_days``: superseded copies of re-sent instances under data_dir/superseded/, by file age, and only
  when every case the copy concerns is done and delivered too: the cases its index record names (the one it was
  superseded in, the one the new copy went to) and every case with a series of its study
  (superseded/<study>/<series>/). A copy of a case still receiving, held, analysing or undelivered stays: it may
  be what the operator needs to undo a wrong re-send.

Outputs not yet delivered (pending, retrying, failed or routed nowhere) and cases in any other state
(receiving, stable, queued, analysing, failed, held) are never touched. ``liver-node prune --dry-run`` lists
what would go; the running node applies the policy every ``check_interval_minutes``.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node import resend
from node.audit import audit
from node.casestatus import CaseStatus, collect
from node.config import Config
from node.index import Index

if TYPE_CHECKING:
    from node.outbox import Outbox

__all__ = ["Deletion", "plan", "apply", "SUPERSEDED_DIR"]

logger = logging.getLogger(__name__)

#: Where superseded copies of re-sent instances are kept, under data_dir (node.resend puts them there).
SUPERSEDED_DIR = resend.SUPERSEDED_DIR
_DAY = 86400.0


@dataclass(frozen=True)
class Deletion:
    """One unit the policy removes: a received series, a delivered output file, or a superseded copy."""

    kind: str  # "received", "outbox", "superseded"
    case_id: str
    what: str  # series description / output description / file name
    key: str  # series UID, outbox item ids ("1,2"), or the superseded file path
    paths: tuple[Path, ...]
    bytes: int
    why: str


def _size(paths: Sequence[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def _finished_at(case: CaseStatus) -> float:
    """When the case was last done and delivered: the later of its last state change and its last delivery."""
    sent = [o.sent_at for o in case.outputs if o.destination and o.sent_at]
    return max([case.updated_at, *sent])


def _eligible(case: CaseStatus) -> bool:
    """Done, and every output that has a destination delivered (outputs routed nowhere stay where they are)."""
    return case.state == "done" and all(o.state == "sent" for o in case.outputs if o.destination)


def plan(config: Config, index: Index, outbox: Outbox | None, now: float | None = None) -> list[Deletion]:
    """Everything the policy would delete now (nothing is deleted here)."""
    now = time.time() if now is None else now
    pol = config.retention
    out: list[Deletion] = []
    status = collect(config, index, outbox)
    for case in status.cases:
        if not _eligible(case):
            continue
        age_days = (now - _finished_at(case)) / _DAY
        if pol.received_days and age_days >= pol.received_days:
            for s in case.series:
                paths = tuple(index.instance_paths(s.series_uid, case.case_id))
                out.append(Deletion("received", case.case_id, f"{s.modality} {s.description or s.series_uid}",
                                    s.series_uid, paths, _size(paths),
                                    f"done and delivered {age_days:.1f} days ago "
                                    f"(received_days = {pol.received_days:g})"))
        if pol.outbox_days and outbox is not None:
            by_sop: dict[str, list] = {}
            for o in case.outputs:
                if o.destination and o.path is not None:
                    by_sop.setdefault(o.sop_instance_uid, []).append(o)
            for items in by_sop.values():
                sent = [o.sent_at or 0.0 for o in items]
                if all(o.state == "sent" for o in items) and (now - max(sent)) / _DAY >= pol.outbox_days:
                    path = items[0].path
                    assert path is not None
                    out.append(Deletion("outbox", case.case_id, f"{items[0].kind} {items[0].description}".strip(),
                                        ",".join(str(o.item_id) for o in items), (path,), _size([path]),
                                        f"delivered to {', '.join(o.destination for o in items)} "
                                        f"{(now - max(sent)) / _DAY:.1f} days ago (outbox_days = {pol.outbox_days:g})"))
    if pol.superseded_days:
        root = Path(config.node.data_dir) / SUPERSEDED_DIR
        cases = {c.case_id: c for c in status.cases}
        recorded: dict[str, set[str]] = {}
        for row in index.superseded():
            recorded.setdefault(str(row.kept_path.resolve()), set()).update({row.old_case, row.new_case})
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            try:
                st = p.stat()
            except OSError:
                continue
            if not p.is_file() or (now - st.st_mtime) / _DAY < pol.superseded_days:
                continue
            concerned = set(recorded.get(str(p.resolve()), ()))
            for uid in p.relative_to(root).parts[:-1]:  # <study>/<series>/: every case with a series of them
                concerned.update(index.series_cases(uid))
            live = sorted(c for c in concerned if c in cases)
            if any(not _eligible(cases[c]) for c in live):
                continue  # a case it concerns is not done and delivered: keep it
            out.append(Deletion("superseded", ",".join(live), p.name, str(p), (p,), st.st_size,
                                f"superseded copy {(now - st.st_mtime) / _DAY:.1f} days old "
                                f"(superseded_days = {pol.superseded_days:g})"
                                + (", its case(s) done and delivered" if live else "")))
    return out


def apply(config: Config, index: Index, outbox: Outbox | None, deletions: Sequence[Deletion]) -> int:
    """Delete what `plan` listed, one audit line per deletion. Returns the number of deletions done."""
    done = 0
    touched: set[str] = set()
    for d in deletions:
        try:
            for p in d.paths:
                p.unlink(missing_ok=True)
            if d.kind == "received":
                index.forget_series(d.key, d.case_id)
                _remove_empty_dirs({p.parent for p in d.paths}, Path(config.node.data_dir) / "instances")
            elif d.kind == "outbox" and outbox is not None:
                outbox.mark_pruned([int(i) for i in d.key.split(",")])
                touched.add(d.case_id)
        except OSError as exc:
            logger.error("retention: cannot delete %s %s of case %s: %s", d.kind, d.what, d.case_id, exc)
            audit("retention-delete", kind=d.kind, case=d.case_id, what=d.what, result="error", detail=str(exc))
            continue
        audit("retention-delete", kind=d.kind, case=d.case_id, what=d.what, files=len(d.paths), bytes=d.bytes,
              reason=d.why, result="deleted")
        done += 1
    received = {d.case_id for d in deletions if d.kind == "received"}
    for case_id in received:
        index.set_case_state(case_id, "done", f"received instances removed by retention on "
                                              f"{time.strftime('%Y-%m-%d')} (received_days = "
                                              f"{config.retention.received_days:g})", only_from=("done",))
    if outbox is not None and touched:
        outbox.changed(touched)
    if deletions:
        logger.info("retention: %d deletion(s), %.1f MB", done, sum(d.bytes for d in deletions) / 1e6)
    return done


def _remove_empty_dirs(dirs: set[Path], stop: Path) -> None:
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        while d != stop and stop in d.parents:
            try:
                os.rmdir(d)
            except OSError:
                break
            d = d.parent
