"""Delivery to real peers on loopback: two Orthancs (PACS, TPS), a folder, dcmtk storescp refusing Parametric
Maps, and a sender killed with SIGKILL in the middle of a batch."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from node.outbox import Outbox
from node.sender import Sender
from node.workflow import OutputObject
from testpeers.orthanc import (
    OrthancServer,
    StorescpServer,
    make_ct_series,
    make_parametric_map,
    storescp_profile_without,
)

import factories
from conftest import make_config

pytestmark = pytest.mark.network
REPO = Path(__file__).resolve().parents[2]
NODE_AE = "LIVERNODE"


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    base = tmp_path_factory.mktemp("peers")
    allow = {NODE_AE: ("127.0.0.1", 11112)}  # Orthanc accepts C-STORE from this calling AE only
    pacs = OrthancServer(base / "pacs", ae_title="PACS", peers=allow).start()
    tps = OrthancServer(base / "tps", ae_title="TPS", peers=allow).start()
    yield pacs, tps
    pacs.stop(graceful=False)
    tps.stop(graceful=False)


def _dicom(name: str, port: int, outputs: list[str]) -> dict:
    return {"ae_title": name, "host": "127.0.0.1", "port": port, "outputs": outputs}


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _audit(caplog, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "node.audit" and f"event={event} " in r.getMessage()]


def test_results_reach_the_pacs_the_tps_and_a_folder(peers, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="node.audit")
    pacs, tps = peers
    cfg = make_config(tmp_path / "var", destinations={
        "pacs": _dicom("PACS", pacs.dicom_port, ["parametric-map", "secondary-capture"]),
        "tps": _dicom("TPS", tps.dicom_port, ["rtstruct"]),
        "archive": {"folder": "results/archive", "outputs": ["parametric-map", "rtstruct"]},
    })
    ct = make_ct_series(n_slices=4, rows=16, cols=16, patient_id="E2E01")
    pm = make_parametric_map(ct)
    rt = factories.rtstruct("E2E01", ct)
    ob = Outbox(cfg)
    ob.produce("e2e", OutputObject("parametric-map", pm))
    for ds in ct:  # stand-ins for rendered secondary captures
        ob.produce("e2e", OutputObject("secondary-capture", ds))
    ob.produce("e2e", OutputObject("rtstruct", rt))
    sender = Sender(cfg, ob)
    sender.start()
    try:
        assert _wait(lambda: ob.depths()["sent"] == 8, 20), ob.summary()
    finally:
        sender.stop()

    to_pacs = {pm.SOPInstanceUID, *(d.SOPInstanceUID for d in ct)}
    pacs_got = [r for r in pacs.received() if r.sop_instance_uid in to_pacs | {rt.SOPInstanceUID}]
    assert Counter(r.sop_instance_uid for r in pacs_got) == Counter(to_pacs)  # each exactly once, no RTSTRUCT
    assert {r.calling_ae for r in pacs_got} == {NODE_AE}
    assert set(pacs.sop_instance_uids()) >= to_pacs
    assert pacs.instance_tags(pm.SOPInstanceUID)["PatientID"] == "E2E01"
    tps_got = [r.sop_instance_uid for r in tps.received() if r.sop_instance_uid in to_pacs | {rt.SOPInstanceUID}]
    assert tps_got == [rt.SOPInstanceUID]
    archive = cfg.node.data_dir / "results" / "archive" / ct[0].StudyInstanceUID
    assert sorted(p.name for p in archive.iterdir()) == sorted(f"{u}.dcm" for u in (pm.SOPInstanceUID,
                                                                                   rt.SOPInstanceUID))
    # One association per destination batch (5 instances to the PACS), audited with its result.
    assoc = _audit(caplog, "association")
    assert len([a for a in assoc if "peer_ae=PACS " in a]) == 1
    assert any("peer_ae=PACS " in a and "result=released sent=5 failed=0" in a for a in assoc)
    assert any("peer_ae=TPS " in a and "result=released sent=1" in a for a in assoc)
    transfers = _audit(caplog, "transfer")
    assert len(transfers) == 8
    assert all(f"study={ct[0].StudyInstanceUID}" in t and "result=sent" in t for t in transfers)


def test_a_peer_rejecting_our_calling_ae_keeps_items_retrying_with_the_reason(peers, tmp_path: Path,
                                                                              caplog) -> None:
    caplog.set_level(logging.INFO, logger="node.audit")
    pacs, _ = peers
    cfg = make_config(tmp_path / "var", node={"ae_title": "STRANGER"},
                      destinations={"pacs": _dicom("PACS", pacs.dicom_port, ["secondary-capture"])})
    ob = Outbox(cfg)
    ds = make_ct_series(n_slices=1, rows=8, cols=8)[0]
    ob.produce("rej", OutputObject("secondary-capture", ds))
    Sender(cfg, ob).run_once()
    row = ob.summary()[0]
    assert row["state"] == "retrying" and row["attempts"] == 1
    assert "association rejected by PACS" in row["last_error"] and "Calling AE" in row["last_error"]
    assert ds.SOPInstanceUID not in {r.sop_instance_uid for r in pacs.received()}
    assert any("calling_ae=STRANGER result=failed" in a for a in _audit(caplog, "association"))


def _write_toml(path: Path, data_dir: Path, port: int) -> Path:
    path.write_text(f"""
[node]
ae_title = "{NODE_AE}"
data_dir = "{data_dir}"
[outbox]
batch_size = 1000
[destinations.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {port}
outputs = ["secondary-capture"]
""")
    return path


CHILD = """
import logging, sys, time
from node.config import load_config
from node.outbox import Outbox
from node.sender import Sender
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
cfg = load_config(sys.argv[1])
Sender(cfg, Outbox(cfg)).start()
time.sleep(600)
"""


def test_sender_killed_mid_batch_resumes_and_never_resends_confirmed_items(peers, tmp_path: Path) -> None:
    pacs, _ = peers
    cfg_file = _write_toml(tmp_path / "node.toml", tmp_path / "var", pacs.dicom_port)
    from node.config import load_config

    cfg = load_config(cfg_file)
    n = 150
    objs = make_ct_series(n_slices=n, rows=32, cols=32, patient_id="KILL01")
    uids = {d.SOPInstanceUID for d in objs}
    ob = Outbox(cfg)
    for ds in objs:
        ob.produce("kill", OutputObject("secondary-capture", ds))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_file)], cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: sum(r.sop_instance_uid in uids for r in pacs.received()) >= 10, 30), \
            (tmp_path / "child.log").read_text()[-2000:]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)

    at_kill = {r["sop_instance_uid"]: r["state"] for r in ob.summary("kill")}
    counts = Counter(at_kill.values())
    assert counts["sent"] >= 1 and counts["sending"] >= 1, counts  # killed in the middle of one batch
    confirmed = {u for u, s in at_kill.items() if s == "sent"}

    restarted = Outbox(cfg)
    sender = Sender(cfg, restarted)
    sender.start()
    try:
        assert _wait(lambda: restarted.depths()["sent"] == n, 60), restarted.depths()
    finally:
        sender.stop()
    got = Counter(r.sop_instance_uid for r in pacs.received() if r.sop_instance_uid in uids)
    assert set(got) == uids
    twice = {u for u, c in got.items() if c > 1}
    assert not twice & confirmed  # nothing confirmed before the kill was sent again
    assert len(twice) <= 1  # at most the one instance in flight at the kill
    assert all(c <= 2 for c in got.values())
    assert uids <= set(pacs.sop_instance_uids())


@pytest.fixture
def pm_refusing_peer(tmp_path: Path):
    profile = storescp_profile_without(tmp_path / "storescp.cfg", {
        "CTImageStorage": "1.2.840.10008.5.1.4.1.1.2",
        "SecondaryCaptureImageStorage": SecondaryCaptureImageStorage,
    }, name="NoParametricMap")
    with StorescpServer(tmp_path / "scp", ae_title="NOPM", profile=profile) as scp:
        yield scp


def test_peer_refusing_parametric_maps_gets_the_secondary_capture_and_decompressed_images(
        pm_refusing_peer, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    scp = pm_refusing_peer
    cfg = make_config(tmp_path / "var", destinations={
        "pacs": _dicom("NOPM", scp.port, ["parametric-map", "secondary-capture"])})
    ct = make_ct_series(n_slices=3, rows=64, cols=64, patient_id="FALLBACK1")  # J2K needs >= 64 px
    pm = make_parametric_map(ct)
    j2k = factories.jpeg2000(ct[1])  # this peer accepts uncompressed CT only
    assert j2k.file_meta.TransferSyntaxUID.is_compressed
    ob = Outbox(cfg)
    ob.produce("fb", OutputObject("parametric-map", pm))
    ob.produce("fb", OutputObject("secondary-capture", j2k))
    Sender(cfg, ob).run_once()

    rows = {r["sop_instance_uid"]: r for r in ob.summary()}
    assert {r["state"] for r in rows.values()} == {"sent"}
    got = {str(d.SOPClassUID): d for d in scp.received_datasets()}
    assert set(got) == {SecondaryCaptureImageStorage, "1.2.840.10008.5.1.4.1.1.2"}
    sc = got[SecondaryCaptureImageStorage]
    assert pm.SOPInstanceUID in {str(i.ReferencedSOPInstanceUID) for i in sc.SourceImageSequence}
    assert sc.PatientID == "FALLBACK1"
    assert rows[pm.SOPInstanceUID]["sent_as"] == f"secondary-capture {sc.SOPInstanceUID}"
    ct_got = got["1.2.840.10008.5.1.4.1.1.2"]
    assert ct_got.SOPInstanceUID == j2k.SOPInstanceUID  # same instance, only re-encoded
    assert not ct_got.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(ct_got.pixel_array, ct[1].pixel_array)  # lossless: same pixels
    assert rows[j2k.SOPInstanceUID]["sent_as"].startswith("decompressed from JPEG 2000")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "sent as secondary-capture" in messages and "fallbacks=2" in messages


def test_without_fallback_a_refused_parametric_map_is_parked_with_the_reason(pm_refusing_peer,
                                                                             tmp_path: Path) -> None:
    scp = pm_refusing_peer
    cfg = make_config(tmp_path / "var", analysis={"parametric_map_fallback": "none"},
                      destinations={"pacs": _dicom("NOPM", scp.port, ["parametric-map"])})
    ct = make_ct_series(n_slices=2, rows=8, cols=8)
    ob = Outbox(cfg)
    ob.produce("nofb", OutputObject("parametric-map", make_parametric_map(ct)))
    Sender(cfg, ob).run_once()
    row = ob.summary()[0]
    assert (row["state"], row["attempts"]) == ("failed", 1)
    assert "Parametric Map" in row["last_error"] and "parametric_map_fallback is 'none'" in row["last_error"]
    assert scp.received_datasets() == []
    assert pydicom.dcmread(next((tmp_path / "var" / "outbox").rglob("*.dcm"))).SOPClassUID == ParametricMapStorage
