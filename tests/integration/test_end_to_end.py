"""End to end: a phantom patient, its studies sent in shuffled order to a running node (its own process), comes
out as Parametric Maps, Secondary Captures and an SR in a PACS Orthanc and as one RTSTRUCT in a TPS Orthanc."""
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

import numpy as np
import pydicom
import pytest
from test_rtstruct_roundtrip import dice, plastimatch_masks

import rtstruct
from node.demo import send_files
from testpeers.orthanc import OrthancServer, dciodvfy_errors

from conftest import free_port, start_node_process

pytestmark = [pytest.mark.network, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PM, SC, RTSS = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.481.3"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory):
    from node.phantom import write_phantom

    tmp = tmp_path_factory.mktemp("e2e")
    phantom = write_phantom(tmp / "phantom", size="small", seed=11)
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
outputs = ["rtstruct"]
""")
    log = tmp / "node.log"
    node = start_node_process(cfg, port, log)
    try:
        files = [p for p in phantom.rglob("*.dcm") if "truth" not in p.parts]
        random.Random(3).shuffle(files)  # studies interleaved, any order
        for chunk in (files[: len(files) // 3], files[len(files) // 3: 2 * len(files) // 3],
                      files[2 * len(files) // 3:]):
            stored, refused = send_files("127.0.0.1", port, "LIVERNODE", chunk)
            assert refused == 0 and stored == len(chunk)
        db = sqlite3.connect(tmp / "var" / "index.sqlite3")
        state, reason = "", ""
        end = time.time() + 900
        while time.time() < end:
            row = db.execute("SELECT state, reason FROM cases WHERE case_id=?", (truth["patient_id"],)).fetchone()
            state, reason = row if row else ("", "")
            if state in ("done", "failed"):
                break
            time.sleep(1)
        assert state == "done", f"{state}: {reason}\n{log.read_text()[-4000:]}"
        end = time.time() + 300
        while time.time() < end:
            pending = db.execute("SELECT COUNT(*) FROM outbox_items WHERE state != 'sent'").fetchone()[0]
            if pending == 0:
                break
            time.sleep(1)
        assert pending == 0, log.read_text()[-4000:]
        result = json.loads(db.execute("SELECT result FROM cases").fetchone()[0])
        db.close()
        yield {"tmp": tmp, "phantom": phantom, "truth": truth, "pacs": pacs, "tps": tps, "cfg": cfg,
               "log": log, "result": result}
    finally:
        node.terminate()
        node.wait(timeout=60)
        pacs.stop()
        tps.stop()


def _classes(server: OrthancServer) -> list[str]:
    return [server.rest(f"/instances/{i['ID']}/simplified-tags")["SOPClassUID"]
            for i in server.rest("/instances?expand")]


def _download(server: OrthancServer, sop_class: str, dest: Path) -> list[Path]:
    out = []
    for i in server.rest("/instances?expand"):
        tags = server.rest(f"/instances/{i['ID']}/simplified-tags")
        if tags["SOPClassUID"] == sop_class:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/instances/{i['ID']}/file") as r:
                p = dest / f"{i['ID']}.dcm"
                p.write_bytes(r.read())
                out.append(p)
    return out


def test_pacs_receives_maps_captures_and_report(e2e) -> None:
    classes = _classes(e2e["pacs"])
    assert classes.count(PM) >= 4  # at least ALP, PVP, TLP, HPI
    assert classes.count(SC) >= 2  # fused maps and the curve plot at least
    assert sum(c in SR_CLASSES for c in classes) == 1  # one case report
    assert classes.count(RTSS) <= 1  # at most the MAA regions (with the report); the GSA targets go to the TPS


def test_tps_receives_one_rtstruct_that_plastimatch_rasterises(e2e, tmp_path: Path) -> None:
    tps = e2e["tps"]
    assert _classes(tps) == [RTSS]
    (rtss,) = _download(tps, RTSS, tmp_path)
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
