"""End to end: a phantom patient, its studies sent in shuffled order to a running node (its own process), comes
out as Parametric Maps, Secondary Captures and an SR in a PACS Orthanc and as one RTSTRUCT in a TPS Orthanc, with
the Y-90 dose the MAA predicts (RT Dose, its plan and regions at the TPS; DVHs in the SR and on a page at the PACS).
Then, as weeks later, the plan dose the TPS returns and the post-therapy Y-90 PET/CT arrive: the node analyses the
case again and reports the GSA plan's functional-liver dose and the delivered-vs-predicted dose on their own."""
from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_rtstruct_roundtrip import dice, plastimatch_masks

import rtstruct
from node.demo import send_files
from node.dose.rtdose import read_rt_dose
from node.report.codes import DOSE_DIFFERENCE, MEAN_DOSE, RATIO
from testpeers.orthanc import OrthancServer, dciodvfy_errors

from conftest import free_port, start_node_process

pytestmark = [pytest.mark.network, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PM, SC, RTSS = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE, RTPLAN, SR3D = "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.88.34"
#: what arrives after the first analysis: the plan dose the TPS sends back, the post-therapy Y-90 PET/CT
LATE = ("tps-rtdose", "y90-pet", "y90-pet-ct")
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory):
    from node.phantom import write_phantom

    tmp = tmp_path_factory.mktemp("e2e")
    phantom = write_phantom(tmp / "phantom", size="small", seed=11, variants=("y90", "tps-rtdose"))
    truth = json.loads((phantom / "truth.json").read_text())
    port = free_port()
    peers = {"LIVERNODE": ("127.0.0.1", port)}
    pacs = OrthancServer(tmp / "pacs", ae_title="PACS", peers=peers).start()
    tps = OrthancServer(tmp / "tps", ae_title="TPS", peers=peers).start()
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[node]
ae_title = "LIVERNODE"
host = "127.0.0.1"
port = {port}
data_dir = "var"
[completion]
stable_seconds = 3
[outbox]
backoff_initial_seconds = 1
[destinations.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs.dicom_port}
outputs = ["parametric-map", "secondary-capture", "report"]
[destinations.tps]
ae_title = "TPS"
host = "127.0.0.1"
port = {tps.dicom_port}
outputs = ["rtstruct", "rtdose"]
[analysis.maa]
normal_liver_dose_gy = 70.0  # a plan above resin's 40 Gy limit, so that the safety flag shows
""")
    log = tmp / "node.log"
    node = start_node_process(cfg, port, log)
    try:
        files = [p for p in phantom.rglob("*.dcm") if "truth" not in p.parts and p.parent.name not in LATE]
        random.Random(3).shuffle(files)  # studies interleaved, any order
        for chunk in (files[: len(files) // 3], files[len(files) // 3: 2 * len(files) // 3],
                      files[2 * len(files) // 3:]):
            stored, refused = send_files("127.0.0.1", port, "LIVERNODE", chunk)
            assert refused == 0 and stored == len(chunk)
        db = sqlite3.connect(tmp / "var" / "index.sqlite3")
        result = _wait_done_and_delivered(db, truth["patient_id"], 1, log)
        phase1 = {"pacs": set(pacs.rest("/instances")), "tps": set(tps.rest("/instances"))}  # Orthanc instance IDs
        late = [p for p in phantom.rglob("*.dcm") if p.parent.name in LATE]
        stored, refused = send_files("127.0.0.1", port, "LIVERNODE", late)
        assert refused == 0 and stored == len(late)
        result2 = _wait_done_and_delivered(db, truth["patient_id"], 2, log)
        db.close()
        yield {"tmp": tmp, "phantom": phantom, "truth": truth, "pacs": pacs, "tps": tps, "cfg": cfg,
               "log": log, "result": result, "phase1": phase1, "result2": result2}
    finally:
        node.terminate()
        node.wait(timeout=60)
        pacs.stop()
        tps.stop()


def _wait_done_and_delivered(db: sqlite3.Connection, case_id: str, version: int, log: Path) -> dict:
    """The case record once analysis `version` is done and every output is delivered."""
    state, reason, seen = "", "", 0
    end = time.time() + 900
    while time.time() < end:
        row = db.execute("SELECT state, reason, version FROM cases WHERE case_id=?", (case_id,)).fetchone()
        state, reason, seen = row if row else ("", "", 0)
        if seen >= version and state in ("done", "failed"):
            break
        time.sleep(1)
    assert state == "done" and seen == version, f"{state} v{seen}: {reason}\n{log.read_text()[-4000:]}"
    end = time.time() + 300
    while time.time() < end:
        pending = db.execute("SELECT COUNT(*) FROM outbox_items WHERE state != 'sent'").fetchone()[0]
        if pending == 0:
            break
        time.sleep(1)
    assert pending == 0, log.read_text()[-4000:]
    return json.loads(db.execute("SELECT result FROM cases WHERE case_id=?", (case_id,)).fetchone()[0])


def _classes(server: OrthancServer, only: set[str] | None = None) -> list[str]:
    """SOP classes of the instances the server holds (`only`: those instance IDs, e.g. after the first phase)."""
    return [server.rest(f"/instances/{i['ID']}/simplified-tags")["SOPClassUID"]
            for i in server.rest("/instances?expand") if only is None or i["ID"] in only]


def _download(server: OrthancServer, sop_class: str, dest: Path, only: set[str] | None = None) -> list[Path]:
    out = []
    for i in server.rest("/instances?expand"):
        if only is not None and i["ID"] not in only:
            continue
        tags = server.rest(f"/instances/{i['ID']}/simplified-tags")
        if tags["SOPClassUID"] == sop_class:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/instances/{i['ID']}/file") as r:
                p = dest / f"{i['ID']}.dcm"
                p.write_bytes(r.read())
                out.append(p)
    return out


def test_pacs_receives_maps_captures_and_report(e2e) -> None:
    classes = _classes(e2e["pacs"], e2e["phase1"]["pacs"])
    assert classes.count(PM) >= 4  # at least ALP, PVP, TLP, HPI
    assert classes.count(SC) >= 2  # fused maps and the curve plot at least
    assert sum(c in SR_CLASSES for c in classes) == 1  # one case report
    assert classes.count(RTSS) <= 1  # at most the MAA regions (with the report); the GSA targets go to the TPS


def test_tps_receives_one_target_rtstruct_that_plastimatch_rasterises(e2e, tmp_path: Path) -> None:
    tps = e2e["tps"]
    assert sorted(_classes(tps, e2e["phase1"]["tps"])) == sorted([RTSS, RTSS, RTDOSE, RTPLAN])  # + the Y-90 dose
    targets = [p for p in _download(tps, RTSS, tmp_path, e2e["phase1"]["tps"])
               if pydicom.dcmread(p, stop_before_pixels=True).StructureSetLabel == "GSA TARGETS"]
    (rtss,) = targets
    ds = pydicom.dcmread(rtss)
    names = {r.ROIName for r in ds.StructureSetROISequence}
    assert {"FLS", "ITV", "PTV"} <= names
    plan = e2e["phantom"] / "planning-ct"
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == \
        pydicom.dcmread(next(plan.glob("*.dcm")), stop_before_pixels=True).FrameOfReferenceUID
    slices = rtstruct.sort_slices([pydicom.dcmread(p, stop_before_pixels=True) for p in plan.glob("*.dcm")])
    masks = plastimatch_masks(rtss, plan, tmp_path / "masks", slices, ("FLS", "ITV", "PTV"))
    truth = np.load(e2e["phantom"] / "truth" / "planning_masks.npz")
    for name, mask in masks.items():
        assert dice(mask, truth[name.lower()]) >= 0.95, name


def test_every_delivered_object_passes_dciodvfy(e2e, tmp_path: Path) -> None:
    files = []
    for server in (e2e["pacs"], e2e["tps"]):
        for cls in set(_classes(server)):
            files += _download(server, cls, tmp_path)
    assert files
    for f in files:
        assert dciodvfy_errors(f) == [], f


def test_status_reports_done_and_delivered(e2e) -> None:
    r = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(e2e["cfg"])], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"CASE {e2e['truth']['patient_id']}" in r.stdout and "state: DONE" in r.stdout
    for role in ("ct-perfusion", "planning-ct", "liver-rtstruct", "spect-gsa", "spect-maa", "spect-ct"):
        assert role in r.stdout
    assert re.search(r"tps\s+\S+\s+rtstruct\s+sent", r.stdout)
    assert "AUDIT event=transfer" in e2e["log"].read_text()


def _sr_groups(path: Path) -> dict[str, Any]:
    sr = hd.sr.srread(path)
    return {g.tracking_identifier: g for g in cast(Any, sr.content).get_image_measurement_groups()}


def _value(group: Any, concept: Any, nth: int = 0) -> float:
    found = group.get_measurements(name=hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning))
    return float(found[nth].value)


def _srs_by_study(server: OrthancServer, dest: Path, only: set[str] | None = None) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in _download(server, SR3D, dest, only):
        out.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID), []).append(p)
    return out


def test_tps_gets_the_predicted_y90_dose_with_its_plan_and_regions_and_the_pacs_its_dvh_report(e2e, tmp_path):
    """Phase 1: the RT Dose at the TPS references the RT Plan and the regions structure set the TPS also holds, in
    the MAA SPECT/CT's frame of reference; the PACS archives the same dose, and its case SR holds the DVH figures
    (whole-liver mean within 3 % of the phantom's LDM truth at the node's activity) and the DVH page."""
    tps, pacs, phase1 = e2e["tps"], e2e["pacs"], e2e["phase1"]
    (rd_path,) = _download(tps, RTDOSE, tmp_path, phase1["tps"])
    (rp_path,) = _download(tps, RTPLAN, tmp_path, phase1["tps"])
    rd, rp = pydicom.dcmread(rd_path), pydicom.dcmread(rp_path, stop_before_pixels=True)
    regions = [pydicom.dcmread(p, stop_before_pixels=True) for p in _download(tps, RTSS, tmp_path, phase1["tps"])]
    (rs,) = [r for r in regions if r.StructureSetLabel == "MAA REGIONS"]
    maa_ct = pydicom.dcmread(next((e2e["phantom"] / "spect-maa-ct").glob("*.dcm")), stop_before_pixels=True)
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert rd.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rd.FrameOfReferenceUID == maa_ct.FrameOfReferenceUID and rd.DoseUnits == "GY"
    assert rp.ApprovalStatus == "UNAPPROVED" and "BeamSequence" not in rp  # beamless: documents the activity
    pacs_doses = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                  for p in _download(pacs, RTDOSE, tmp_path, phase1["pacs"])]
    assert pacs_doses == [rd.SOPInstanceUID]
    ((case_sr,),) = _srs_by_study(pacs, tmp_path, phase1["pacs"]).values()
    groups = _sr_groups(case_sr)
    pd = e2e["result"]["results"]["maa"]["measurements"]["predicted_dose"]
    y90 = e2e["truth"]["y90"]["maa_predicted"]
    whole = _value(groups["Y-90 dose predicted, Liver"], MEAN_DOSE)
    assert whole == pytest.approx(y90["imaged"]["liver"]["mean_gy"] * pd["activity_gbq"]
                                  / y90["planned_activity_gbq"], rel=0.03)
    assert read_rt_dose(rd).image.GetSize() == tuple(int(v) for v in (rd.Columns, rd.Rows, rd.NumberOfFrames))
    pages = [pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription
             for p in _download(pacs, SC, tmp_path, phase1["pacs"])]
    assert any(d.startswith("Y-90 predicted dose DVH") for d in pages)


def test_a_returned_rt_dose_yields_the_gsa_plan_evaluation(e2e, tmp_path) -> None:
    """Phase 2: the TPS's plan dose (in the planning CT's frame of reference) makes the node evaluate it in the GSA
    targets; its own SR joins the planning study with FLV20Gy and F20Gy near the hand-computed truth."""
    planning = pydicom.dcmread(next((e2e["phantom"] / "planning-ct").glob("*.dcm")), stop_before_pixels=True)
    srs = _srs_by_study(e2e["pacs"], tmp_path)
    (plan_sr,) = srs[str(planning.StudyInstanceUID)]
    groups = _sr_groups(plan_sr)
    truth = e2e["truth"]["tps_dose"]
    fls = groups["Plan dose, FLS"]
    flv = next(float(m.value) for m in fls.get_measurements() if m.name.value == "LN-V20GY")
    assert flv == pytest.approx(truth["flv20_percent"], abs=1.0)
    f20 = e2e["result2"]["results"]["gsaplan"]["measurements"]["f_percent"]
    assert f20 == pytest.approx(truth["f20_percent"], abs=1.0)
    assert e2e["result2"]["inputs"]["gsaplan"][0]["series_uid"] == \
        pydicom.dcmread(next((e2e["phantom"] / "tps-rtdose").glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID


def test_the_post_therapy_mismatch_lesion_is_reported_with_its_sign_and_size(e2e, tmp_path) -> None:
    """Phase 2: the Y-90 PET/CT gets its own SR in the post-therapy study: the tumour the microspheres reached less
    than the MAA predicted (T3) shows delivered < predicted, at the truth's ratio (in the node's convention: both at
    the administered activity), and a warning says so."""
    pet = pydicom.dcmread(next((e2e["phantom"] / "y90-pet").glob("*.dcm")), stop_before_pixels=True)
    (post_sr,) = _srs_by_study(e2e["pacs"], tmp_path)[str(pet.StudyInstanceUID)]
    groups = _sr_groups(post_sr)
    m = e2e["result2"]["results"]["y90post"]["measurements"]
    t3_centre = next(t["centre_mm"]["maa"] for t in e2e["truth"]["tumours"] if t["name"] == "T3")
    name = min((n for n, r in m["regions"].items() if r["kind"] == "tumour"),
               key=lambda n: float(np.linalg.norm(np.subtract(m["regions"][n]["centre_mm"], t3_centre))))
    group = groups[f"Y-90 delivered vs predicted, {name}"]
    difference, ratio = _value(group, DOSE_DIFFERENCE), _value(group, RATIO)
    y90 = e2e["truth"]["y90"]
    expected = y90["comparison"]["T3"]["mean_ratio"] * y90["maa_predicted"]["planned_activity_gbq"] \
        / y90["delivered"]["administered_activity_gbq"]
    assert difference < 0 and ratio == pytest.approx(expected, abs=0.05)
    warnings = e2e["result2"]["results"]["y90post"]["warnings"]
    assert any(name in w and "over-predicted" in w for w in warnings)


def test_status_json_shows_the_dose_workflows_and_their_warnings(e2e) -> None:
    r = subprocess.run([sys.executable, "-m", "node", "status", "--json", "--config", str(e2e["cfg"])], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (case,) = json.loads(r.stdout)["cases"]
    workflows = case["workflows"]
    assert {n: w["state"] for n, w in workflows.items()} == {n: "done" for n in
                                                            ("perfusion", "gsa", "maa", "y90post", "gsaplan")}
    assert any("normal liver mean dose" in w for w in workflows["maa"]["flags"])  # the safety flag
    assert any("over-predicted" in w for w in workflows["y90post"]["flags"])
    roles = {s["role"] for s in case["series"]}
    assert {"y90-post", "plan-dose"} <= roles
