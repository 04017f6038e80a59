"""Per-case result folders: ``data_dir/outbox/<case>/`` holds the case's output files and ``manifest.json``.

The manifest lists each output (kind, description, SOP Class and Instance UIDs, series, file) with every
destination it goes to and its delivery state. It is rewritten atomically from the status model whenever the
outbox changes for that case (an output produced, a delivery batch finished, a resend, a retention deletion), so
it is a readable copy of the queue, never the queue itself.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.casestatus import CaseStatus, collect, iso
from node.config import Config
from node.index import Index
from node.outbox import atomic_write, case_folder_name
from node.sopclasses import STORAGE_SOP_CLASSES

if TYPE_CHECKING:
    from node.outbox import Outbox

__all__ = ["MANIFEST_NAME", "manifest", "write_manifests"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest(case: CaseStatus, data_dir: Path) -> dict[str, Any]:
    """The manifest of one case (outputs grouped by SOP instance)."""
    outputs: dict[str, dict[str, Any]] = {}
    for o in case.outputs:
        entry = outputs.setdefault(o.sop_instance_uid, {
            "kind": o.kind, "description": o.description, "sop_class_uid": o.sop_class_uid,
            "sop_class": STORAGE_SOP_CLASSES.get(o.sop_class_uid, o.sop_class_uid),
            "sop_instance_uid": o.sop_instance_uid, "series_instance_uid": o.series_instance_uid,
            "file": o.path.name if o.path is not None else None, "created": iso(o.created), "destinations": []})
        if o.path is None:
            entry["file"] = None  # removed by retention; the record stays
        entry["destinations"].append({"name": o.destination or None, "state": o.state, "attempts": o.attempts,
                                      "sent_at": iso(o.sent_at), "sent_as": o.sent_as or None,
                                      "last_error": o.last_error or None})
    states = [d["state"] for e in outputs.values() for d in e["destinations"] if d["name"]]
    return {"manifest_version": MANIFEST_VERSION, "case_id": case.case_id, "case_state": case.state,
            "analysis_version": case.version, "all_delivered": bool(states) and all(s == "sent" for s in states),
            "outputs": list(outputs.values())}


def write_manifests(config: Config, index: Index, outbox: Outbox, cases: set[str]) -> None:
    """Rewrite the manifests of `cases` (the outbox's change listener)."""
    root = Path(config.node.data_dir) / "outbox"
    for case_id in sorted(cases):
        status = collect(config, index, outbox, case_id=case_id)
        case = status.case(case_id)
        if case is None:  # outputs of a case the index no longer has (or not yet): outputs only
            continue
        folder = root / case_folder_name(case_id)
        body = json.dumps(manifest(case, config.node.data_dir), indent=1, ensure_ascii=False).encode()
        def write(fh: Any, data: bytes = body) -> None:
            fh.write(data)

        atomic_write(folder / MANIFEST_NAME, write)
