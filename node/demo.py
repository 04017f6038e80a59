"""`demo`: push a phantom patient into a running node, wait for its results, compare them with the truth.

The first thing a new user or a site physicist runs (commissioning QA). It uses the same config file as the
running node, so it can watch the node's index and outbox to see the case progress and where results went.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from node.config import Config
from node.index import Index, index_path
from node.record import CaseRecord, RecordError
from node.registry import DEFAULT_REGISTRY, Registry
from node.status import table
from node.workflow import TruthCheck

logger = logging.getLogger(__name__)

#: phantom variants the demo adds to the default patient (node/phantom/README.md)
DEMO_VARIANTS = ("y90", "tps-rtdose")

def send_files(host: str, port: int, called_ae: str, files: Sequence[Path], ssl_context: Any = None) -> tuple[int, int]:
    """C-STORE every file over one association. Returns (stored, refused)."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ae = AE(ae_title="LIVERDEMO")
    for sop_class, ts in {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}:
        ae.add_requested_context(sop_class, [ts, "1.2.840.10008.1.2.1"] if ts != "1.2.840.10008.1.2.1" else [ts])
    tls_args = (ssl_context, "") if ssl_context is not None else None
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {called_ae} at {host}:{port} (is the node running?)")
    stored = refused = 0
    try:
        for f in files:
            status = assoc.send_c_store(f)
            if getattr(status, "Status", None) == 0:
                stored += 1
            else:
                refused += 1
                logger.error("%s refused: %s", f.name, status)
    finally:
        assoc.release()
    return stored, refused


def wait_for_case(index: Index, case_id: str, after_version: int, timeout: float) -> Any:
    """Wait until the case has a new finished analysis; prints state changes. Returns the case row or None."""
    end = time.time() + timeout
    last = ""
    while time.time() < end:
        case = index.get_case(case_id)
        if case is not None:
            if case.state != last:
                print(f"  case {case_id}: {case.state}{' - ' + case.reason if case.reason else ''}", flush=True)
                last = case.state
            if case.version > after_version and case.state in ("done", "failed"):
                return case
        time.sleep(1.0)
    return None


def wait_for_delivery(config: Config, case_id: str, known: set[str], timeout: float) -> list[dict]:
    """Outbox rows of this run's outputs once each is sent or failed (or at the timeout)."""
    from node.outbox import Outbox

    outbox = Outbox(config)
    try:
        end = time.time() + timeout
        rows: list[dict] = []
        while time.time() < end:
            rows = [r for r in outbox.summary(case_id) if r["sop_instance_uid"] not in known]
            if rows and all(r["state"] in ("sent", "failed") for r in rows):
                break
            time.sleep(1.0)
        return rows
    finally:
        outbox.close()


def _where(config: Config, name: str) -> str:
    for d in config.destinations:
        if d.name == name:
            return str(d.folder) if d.folder else f"{d.ae_title}@{d.host}:{d.port}"
    return name


def compare(result: dict[str, Any], truth: dict[str, Any], registry: Registry = DEFAULT_REGISTRY) -> list[TruthCheck]:
    """Measured (the case record) vs phantom truth for every workflow that ran: each workflow's own checks."""
    try:
        record = CaseRecord.from_json(result)
    except RecordError as exc:
        logger.error("%s", exc)
        return []
    checks: list[TruthCheck] = []
    for wf in registry:
        measurements = record.measurements(wf.name, wf.measurements_type)
        if measurements is not None:
            checks += wf.phantom_checks(measurements, truth)
    return checks


def run_demo(config: Config, args: argparse.Namespace) -> int:
    from node.phantom import write_phantom

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="liver-node-demo-"))
    print(f"1. writing a phantom patient to {workdir}")
    # with the Y-90 dose truth (post-therapy PET/CT with a known MAA mismatch) and a plan dose "from the TPS" for
    # the GSA case, so the dose workflows are checked too (the TPS dose references the phantom's planning CT)
    write_phantom(workdir, size="small", seed=0, variants=DEMO_VARIANTS)
    truth = json.loads((workdir / "truth.json").read_text())
    case_id = truth["patient_id"]
    files = sorted(p for p in workdir.rglob("*.dcm") if "truth" not in p.parts)

    host = args.host or ("127.0.0.1" if config.node.host in ("0.0.0.0", "::", "") else config.node.host)
    index = Index(index_path(config.node.data_dir))
    from node.outbox import Outbox

    before = index.get_case(case_id)
    outbox = Outbox(config)
    known = {r["sop_instance_uid"] for r in outbox.summary(case_id)}
    outbox.close()
    ssl_context = None
    if config.security.tls is not None:
        from node.tls import client_context

        ssl_context = client_context(config.security.tls)
    print(f"2. sending {len(files)} instances to {config.node.ae_title} at {host}:{config.node.port}")
    stored, refused = send_files(host, config.node.port, config.node.ae_title, files, ssl_context)
    print(f"   {stored} stored, {refused} refused")
    print(f"3. waiting for the analysis (the node waits {config.completion.stable_seconds:g} s of quiet first)")
    case = wait_for_case(index, case_id, before.version if before else 0, args.timeout)
    index.close()
    if case is None:
        print(f"   no result within {args.timeout:g} s: see `status` and the node's log")
        return 1
    if config.destinations:
        rows = wait_for_delivery(config, case_id, known, timeout=min(args.timeout, 300.0))
    else:  # nothing can be delivered: do not wait for it
        rows = []
        print("   no destination is configured: the results stay in the node's outbox folder, not waiting for "
              "deliveries")
    print("4. results and where they went")
    print("\n".join(table(("KIND", "DESTINATION", "WHERE", "STATE", "SENT AS"),
                          [(r["kind"], r["destination"], _where(config, r["destination"]), r["state"],
                            r["sent_as"] or "-") for r in rows])))
    print("5. comparison with the phantom's truth")
    checks = compare(case.result, truth, config.workflows)
    print("\n".join(table(("QUANTITY", "MEASURED", "TRUTH", "TOLERANCE", "RESULT"),
                          [(c.quantity, "-" if c.measured is None else f"{c.measured:.2f}", f"{c.truth:.2f}",
                            c.tolerance, "ok" if c.ok else "OUT") for c in checks])))
    delivered = bool(rows) and all(r["state"] == "sent" for r in rows)
    if not config.destinations:
        delivered = False  # said above; the comparison with the truth still runs
    out_of_tolerance = [c.quantity for c in checks if not c.ok]
    ok = case.state == "done" and bool(checks) and not out_of_tolerance and delivered
    print(f"\nDEMO {'PASSED' if ok else 'FAILED'}: case {case_id} {case.state}"
          f"{' - ' + case.reason if case.reason else ''}; results {'all delivered' if delivered else 'NOT delivered'}"
          f"; {len(checks) - len(out_of_tolerance)} of {len(checks)} comparisons within tolerance")
    return 0 if ok else 1
