"""Completion: quiet-period stability per study, readiness per patient case, re-arming after restart."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from node.classify import classify_series, plan_case
from node.index import SeriesRow
from node.service import Node

import factories as F
from conftest import RecordingSink, make_config, stand_ins, wait_until

pytestmark = pytest.mark.network


class Recorder:
    """A workflow stand-in that records when it ran and with which series."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def __call__(self, ctx) -> None:
        with self.lock:
            self.calls.append((time.time(), ctx.case_id, tuple(sorted(ctx.case.roles.values()))))


def _send(port: int, datasets) -> None:
    ae = AE(ae_title="MODALITY")
    for uid in {ds.SOPClassUID for ds in datasets}:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()


def _patient_studies(pid: str):
    """Perfusion study; planning CT + liver RTSTRUCT study; GSA SPECT + its SPECT/CT study."""
    perf = F.ct_series(pid, 2, time_points=3, description="perfusion")
    plan = F.ct_series(pid, 3, description="planning")
    liver = F.rtstruct(pid, plan, names=("Liver",))
    nm_study, nm_for = generate_uid(), generate_uid()
    spect_ct = F.ct_series(pid, 3, study_uid=nm_study, for_uid=nm_for, description="SPECT/CT")
    nm = F.nm_multiframe(pid, study_uid=nm_study, for_uid=nm_for)
    return perf, plan + [liver], spect_ct + [nm]


def test_three_studies_make_one_case_ready_once(node_factory, tmp_path: Path) -> None:
    rec = Recorder()
    stable = 1.5
    node = node_factory(make_config(tmp_path / "var", completion={"stable_seconds": stable}),
                        workflows={"perfusion": rec, "gsa": rec})
    port = node.address[1]
    studies = _patient_studies("P-CASE")
    for s in studies:  # arriving one after another, each within the quiet period of the previous
        _send(port, s)
        last_sent = time.time()
        time.sleep(stable * 0.5)
        assert node.index.get_case("P-CASE").state == "receiving"
    assert wait_until(lambda: len(rec.calls) >= 2)
    time.sleep(stable * 2)  # nothing more may fire
    assert len(rec.calls) == 2  # perfusion + gsa, from ONE ready event
    assert all(t >= last_sent + stable - 0.05 for t, *_ in rec.calls)
    roles = rec.calls[0][2]
    assert roles == tuple(sorted(["ct-perfusion", "planning-ct", "liver-rtstruct", "spect-ct", "spect-gsa"]))
    case = node.index.get_case("P-CASE")
    assert case.state == "done" and case.version == 1
    assert len(node.index.cases()) == 1  # grouped by PatientID across three studies


def test_late_instance_rearms_and_reanalyses(node_factory, tmp_path: Path) -> None:
    rec = Recorder()
    node = node_factory(make_config(tmp_path / "var", completion={"stable_seconds": 1}),
                        workflows={"perfusion": rec})
    perf = F.ct_series("P-LATE", 2, time_points=3)
    _send(node.address[1], perf[:-1])
    assert wait_until(lambda: len(rec.calls) == 1)
    assert wait_until(lambda: node.index.get_case("P-LATE").state == "done")
    _send(node.address[1], perf[-1:])  # the late instance
    node.receiver.flush()
    assert node.index.get_case("P-LATE").state == "receiving"
    assert wait_until(lambda: len(rec.calls) == 2)
    assert wait_until(lambda: node.index.get_case("P-LATE").version == 2)
    time.sleep(2)
    assert len(rec.calls) == 2


def test_case_waits_for_missing_inputs(node_factory, tmp_path: Path) -> None:
    rec = Recorder()
    node = node_factory(make_config(tmp_path / "var", completion={"stable_seconds": 1}), workflows={"gsa": rec})
    _, planning, spect = _patient_studies("P-WAIT")
    _send(node.address[1], spect)  # SPECT and SPECT/CT, no planning CT yet
    assert wait_until(lambda: node.index.get_case("P-WAIT").state == "stable")
    assert "planning-ct" in node.index.get_case("P-WAIT").reason
    assert rec.calls == []
    _send(node.address[1], planning)
    assert wait_until(lambda: len(rec.calls) == 1)


def test_restart_rearms_pending_timers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "var", completion={"stable_seconds": 2})
    rec = Recorder()
    first = Node(cfg, sink=RecordingSink())
    first.runner.registry, first.runner.report = stand_ins({"perfusion": rec}), None
    first.start()
    _send(first.address[1], F.ct_series("P-RESTART", 2, time_points=3))
    first.stop()  # stopped before the study became stable: its timer must survive
    assert rec.calls == []
    second = Node(cfg, sink=RecordingSink())
    second.runner.registry, second.runner.report = stand_ins({"perfusion": rec}), None
    second.start()
    try:
        assert wait_until(lambda: len(rec.calls) == 1, timeout=15)
        assert wait_until(lambda: second.index.get_case("P-RESTART").state == "done")
    finally:
        second.stop()


def test_interrupted_analysis_is_requeued_after_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "var", completion={"stable_seconds": 1})
    node = Node(cfg, sink=RecordingSink())
    node.runner.registry, node.runner.report = stand_ins({"perfusion": Recorder()}), None
    node.start()
    _send(node.address[1], F.ct_series("P-ANALYSING", 2, time_points=3))
    assert wait_until(lambda: node.index.get_case("P-ANALYSING").state == "done")
    node.stop()
    # simulate a crash mid-analysis: the index says "analysing"
    from node.index import Index
    idx = Index(tmp_path / "var" / "index.sqlite3")
    idx._db.execute("UPDATE cases SET state='analysing'")
    idx.close()
    rec = Recorder()
    node = Node(cfg, sink=RecordingSink())
    node.runner.registry, node.runner.report = stand_ins({"perfusion": rec}), None
    node.start()
    try:
        assert wait_until(lambda: len(rec.calls) == 1)
    finally:
        node.stop()


def _row(uid: str, modality: str, *, for_uid: str = "1.1", repeats: int = 1, rp: str = "", code: str = "",
         rois: tuple[str, ...] = (), ref_for: str = "") -> SeriesRow:
    return SeriesRow(series_uid=uid, study_uid="9", patient_id="P", modality=modality, sop_class_uid="",
                     series_description="", series_number=1, frame_of_reference_uid=for_uid, radiopharmaceutical=rp,
                     radiopharmaceutical_code=code, roi_names=rois, referenced_frame_of_reference=ref_for,
                     first_received=0.0, last_received=0.0, n_instances=1, max_position_repeats=repeats, stable=True)


def test_series_roles() -> None:
    names = ("Liver", "Leber")
    rows = [
        _row("perf", "CT", for_uid="F1", repeats=15),
        _row("two-phase", "CT", for_uid="F5", repeats=2),
        _row("plan", "CT", for_uid="F2"),
        _row("spectct", "CT", for_uid="F3"),
        _row("gsa", "NM", for_uid="F3", code="446534003"),
        _row("maa-text", "NM", for_uid="F4", rp="Tc99m MAA"),
        _row("maa-code", "NM", for_uid="F4", code="85693008"),
        _row("gsa-text", "NM", for_uid="F3", rp="99mTc-GSA"),
        _row("unknown", "NM", for_uid="F6", rp="Tc-99m MDP"),
        _row("leber", "RTSTRUCT", rois=("Leber", "Tumor"), ref_for="F2"),
        _row("rois", "RTSTRUCT", rois=("aorta", "spleen"), ref_for="F1"),
        _row("sr", "SR"),
    ]
    roles = classify_series(rows, names)
    assert roles == {
        "perf": "ct-perfusion", "two-phase": "planning-ct", "plan": "planning-ct", "spectct": "spect-ct",
        "gsa": "spect-gsa", "maa-text": "spect-maa", "maa-code": "spect-maa", "gsa-text": "spect-gsa",
        "unknown": "other", "leber": "liver-rtstruct", "rois": "roi-rtstruct", "sr": "other",
    }
    plan = plan_case(rows, names)
    assert plan.runnable == ("perfusion", "gsa", "maa")
    only_spect = plan_case([_row("gsa", "NM", for_uid="F3", code="446534003")], names)
    assert only_spect.runnable == () and only_spect.waiting == {"gsa": ("spect-ct", "planning-ct")}
