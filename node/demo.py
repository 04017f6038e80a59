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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pynetdicom import AE

from node.config import Config
from node.index import Index, index_path
from node.perfusion.stats import max_slope_noise_sd
from node.status import table

logger = logging.getLogger(__name__)

PERFUSION_TOLERANCE = 0.05   # max-slope ALP/PVP region means: 5 % of the max-slope truth
HPI_TOLERANCE_PP = 3.0       # HPI: 3 percentage points
VOLUME_TOLERANCE = 0.10      # FLS/ITV/PTV volumes: 10 % (the Dice criteria are checked by the tests)
TRANSLATION_TOLERANCE_MM = 2.0
ROTATION_TOLERANCE_DEG = 1.0
TN_TOLERANCE = 0.10          # MAA tumour/normal ratios: 10 %


@dataclass(frozen=True)
class Check:
    quantity: str
    measured: float | None
    truth: float
    tolerance: str
    ok: bool


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


def compare(result: dict[str, Any], truth: dict[str, Any]) -> list[Check]:
    """Measured vs phantom truth for every workflow that ran."""
    checks: list[Check] = []
    checks += _compare_perfusion(result.get("perfusion") or {}, truth)
    checks += _compare_gsa(result.get("gsa") or {}, truth)
    checks += _compare_maa(result.get("maa") or {}, truth)
    return checks


def _rel(measured: float | None, truth: float, tol: float) -> bool:
    return measured is not None and abs(measured - truth) <= tol * abs(truth)


def max_slope_noise_floor(truth: dict[str, Any], volume_ml: float) -> dict[str, float]:
    """Standard deviation (mL/min/100 mL) of a region-mean max slope that the phantom's CT noise alone causes, for
    a region of `volume_ml` (node.perfusion.stats.max_slope_noise_sd with the phantom's noise and geometry)."""
    perf = truth["perfusion"]
    voxels = round(volume_ml * 1000.0 / float(np.prod(truth["grids"]["perfusion"]["spacing_mm_kij"])))
    return max_slope_noise_sd(float(perf["ct_noise_sd_hu"]), voxels, np.asarray(perf["time_s"]),
                              perf["aorta_peak_sample_hu"], perf["portal_peak_sample_hu"])


def _compare_perfusion(m: dict[str, Any], truth: dict[str, Any]) -> list[Check]:
    """Per phantom region (the phantom's perfusion RTSTRUCT): map means and ROI-curve values vs the truth.

    Max slope is compared with the max-slope truth: 5 %, widened by 3 standard deviations of what the CT noise
    alone allows for a region of that volume (max_slope_noise_floor; 0.1-0.6 mL/min/100 mL for the phantom's
    regions at its own noise, more if a site runs it with --ct-noise). DISCM with the model truth (OSIPI:
    5 mL/100 mL/min + 10 %).
    """
    stats = m.get("regional_statistics") or {}
    regions = truth["perfusion"]["regions"]
    out = []
    for roi, region in (("Normal liver", "liver"), ("T1", "T1"), ("T2", "T2"), ("T3", "T3")):
        if roi not in stats:
            continue
        ms, model = regions[region]["max_slope"], regions[region]["model"]
        floor = max_slope_noise_floor(truth, float(stats[roi].get("volume_ml") or 0.0))
        for source, label in ((stats[roi].get("max-slope") or {}, "map mean"),
                              ((stats[roi].get("roi-curve") or {}).get("max-slope") or {}, "ROI curve")):
            for p, key in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
                v = source.get(p)
                v = v.get("mean") if isinstance(v, dict) else v
                tol = PERFUSION_TOLERANCE * abs(ms[key]) + 3.0 * floor[p]
                out.append(Check(f"{roi} max-slope {p}, {label} (mL/min/100 mL)", v, ms[key],
                                 f"5 % + {3.0 * floor[p]:.1f}", v is not None and abs(v - ms[key]) <= tol))
        curve = (stats[roi].get("roi-curve") or {}).get("discm") or {}
        for p, key in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
            v, t = curve.get(p), model[key]
            out.append(Check(f"{roi} DISCM {p}, ROI curve (mL/min/100 mL)", v, t, "5 + 10 %",
                             v is not None and abs(v - t) <= 5.0 + 0.10 * abs(t)))
    return out


def _compare_gsa(m: dict[str, Any], truth: dict[str, Any]) -> list[Check]:
    if not m:
        return []
    out = []
    vols = m.get("volumes_cm3") or {}
    for name in ("FLS", "ITV", "PTV"):
        v, tv = vols.get(name), truth["gsa"][f"{name.lower()}_volume_ml"]
        out.append(Check(f"{name} volume (cm3)", v, tv, "10 %", _rel(v, tv, VOLUME_TOLERANCE)))
    reg = m.get("registration") or {}
    t_true = truth["transforms"]["planning_to_spect_gsa"]
    if reg.get("translation_mm") is not None:
        err_t = max(abs(a - b) for a, b in zip(reg["translation_mm"], t_true["translation_mm"]))
        out.append(Check("registration translation error (mm)", err_t, 0.0, "2 mm",
                         err_t <= TRANSLATION_TOLERANCE_MM))
    if reg.get("euler_xyz_deg") is not None:
        err_r = max(abs(a - b) for a, b in zip(reg["euler_xyz_deg"], t_true["rotation_deg_xyz"]))
        out.append(Check("registration rotation error (deg)", err_r, 0.0, "1 deg", err_r <= ROTATION_TOLERANCE_DEG))
    return out


def _compare_maa(m: dict[str, Any], truth: dict[str, Any]) -> list[Check]:
    """T/N per tumour: automatic regions are matched to the truth tumours by centre (within their radius)."""
    if not m:
        return []
    found = (m.get("uptake") or {}).get("tumours") or {}
    out = []
    for t in truth["tumours"]:
        centre = t["centre_mm"]["maa"]
        best = min(found.values(), default=None,
                   key=lambda f: sum((a - b) ** 2 for a, b in zip(f["centre_mm"], centre)))
        near = best is not None and sum((a - b) ** 2 for a, b in zip(best["centre_mm"], centre)) ** 0.5 <= \
            t["radius_mm"]
        v = best["tn_ratio"] if near else None
        out.append(Check(f"MAA T/N {t['name']}", v, t["maa_tn_ratio"], "10 %", _rel(v, t["maa_tn_ratio"],
                                                                                    TN_TOLERANCE)))
    return out


def run_demo(config: Config, args: argparse.Namespace) -> int:
    from node.phantom import write_phantom

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="liver-node-demo-"))
    print(f"1. writing a phantom patient to {workdir}")
    write_phantom(workdir, size="small", seed=0)
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
    checks = compare(case.result, truth)
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
