"""Completion: quiet-period stability per study, readiness per patient case, re-arming after restart."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from node.classify import classify_series, explain_roles, plan_case
from node.configtable import ConfigTable
from node.index import SeriesRow
from node.seriescontent import InstanceFacts, SeriesContent, encode_frames, summarise
from node.service import Node
from node.workflow import CommonSettings

import factories as F
from conftest import RecordingSink, make_config, stand_ins, store_over_dicom, wait_until

pytestmark = pytest.mark.network


class Recorder:
    """A workflow stand-in that records when it ran and with which series."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def __call__(self, ctx) -> None:
        with self.lock:
            self.calls.append((time.time(), ctx.case_id, tuple(sorted(ctx.case.roles.values()))))


def _patient_studies(pid: str):
    """Perfusion study; planning CT + liver RTSTRUCT study; GSA SPECT + its SPECT/CT study."""
    perf = F.ct_series(pid, 2, time_points=8, description="perfusion")
    plan = F.ct_series(pid, 24, description="planning")
    liver = F.rtstruct(pid, plan, names=("Liver",))
    nm_study, nm_for = generate_uid(), generate_uid()
    spect_ct = F.ct_series(pid, 8, study_uid=nm_study, for_uid=nm_for, description="SPECT/CT")
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
        store_over_dicom(port, s)
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
    perf = F.ct_series("P-LATE", 2, time_points=8)
    store_over_dicom(node.address[1], perf[:-1])
    assert wait_until(lambda: len(rec.calls) == 1)
    assert wait_until(lambda: node.index.get_case("P-LATE").state == "done")
    store_over_dicom(node.address[1], perf[-1:])  # the late instance
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
    store_over_dicom(node.address[1], spect)  # SPECT and SPECT/CT, no planning CT yet
    assert wait_until(lambda: node.index.get_case("P-WAIT").state == "stable")
    assert "planning-ct" in node.index.get_case("P-WAIT").reason
    assert rec.calls == []
    store_over_dicom(node.address[1], planning)
    assert wait_until(lambda: len(rec.calls) == 1)


def test_restart_rearms_pending_timers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "var", completion={"stable_seconds": 2})
    rec = Recorder()
    first = Node(cfg, sink=RecordingSink())
    first.runner.registry, first.runner.report = stand_ins({"perfusion": rec}), None
    first.start()
    store_over_dicom(first.address[1], F.ct_series("P-RESTART", 2, time_points=8))
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
    store_over_dicom(node.address[1], F.ct_series("P-ANALYSING", 2, time_points=8))
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


def _stack(n: int, spacing: float = 5.0, time_points: int = 1, span: float = 0.0, z0: float = 0.0,
           image_type: str = "ORIGINAL\\PRIMARY\\AXIAL", sop: str = F.CT, facts: bool = False) -> Any:
    """The content of an axial stack of n slice positions (each repeated time_points times over span seconds)."""
    items = [InstanceFacts(sop, image_type, (0.0, 0.0, z0 + spacing * k), (1, 0, 0, 0, 1, 0),
                           36000.0 + span * t / max(1, time_points - 1), None, 1, "", "")
             for t in range(time_points) for k in range(n)]
    return items if facts else summarise(items)


def _nm(frames: int = 64, spacing: float = 4.4, z0: float = 0.0) -> SeriesContent:
    pos = [(0.0, 0.0, z0 + spacing * k) for k in range(frames)]
    return summarise([InstanceFacts(F.NM, "ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION", pos[0], (1, 0, 0, 0, 1, 0),
                                    36000.0, None, frames, "", encode_frames(pos, []))])


def _row(uid: str, modality: str, *, for_uid: str = "1.1", rp: str = "", code: str = "", content=None,
         rois: tuple[str, ...] = (), ref_for: str = "", ref_series: tuple[str, ...] = (), description: str = "",
         sop: str = "") -> SeriesRow:
    content = content or SeriesContent()
    return SeriesRow(series_uid=uid, study_uid="9", patient_id="P", modality=modality,
                     sop_class_uid=sop or (content.sop_classes[0] if content.sop_classes else ""),
                     series_description=description, series_number=1, frame_of_reference_uid=for_uid,
                     radiopharmaceutical=rp, radiopharmaceutical_code=code, roi_names=rois,
                     referenced_frame_of_reference=ref_for, first_received=0.0, last_received=0.0,
                     n_instances=max(1, content.instances), max_position_repeats=content.time_points, stable=True,
                     referenced_series=ref_series, content=content)


def test_series_roles_by_content() -> None:
    names = ("Liver", "Leber")
    rows = [
        _row("perf", "CT", for_uid="F1", content=_stack(8, time_points=15, span=42.0)),
        _row("three-phase", "CT", for_uid="F5", content=_stack(40, time_points=3, span=180.0)),
        _row("test-bolus", "CT", for_uid="F7", content=_stack(1, time_points=20, span=40.0)),
        _row("gapped-perf", "CT", for_uid="F9", content=summarise([f for f in _stack(8, time_points=10, span=30.0,
                                                                                      facts=True) if f.position[2]
                                                                    not in (15.0, 20.0)])),
        _row("plan", "CT", for_uid="F2", content=_stack(48)),
        _row("short", "CT", for_uid="F2", content=_stack(10)),
        _row("scout", "CT", for_uid="F2", content=_stack(1, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")),
        _row("mpr", "CT", for_uid="F2", content=_stack(60, image_type="DERIVED\\SECONDARY\\MPR")),
        _row("dose-page", "CT", for_uid="", content=_stack(1, sop="1.2.840.10008.5.1.4.1.1.7")),
        _row("spectct", "CT", for_uid="F3", content=_stack(64, z0=-2.0)),
        _row("gsa", "NM", for_uid="F3", code="446534003", content=_nm()),
        _row("maa-text", "NM", for_uid="F4", rp="Tc99m MAA", content=_nm()),
        _row("maa-code", "NM", for_uid="F4", code="85693008", content=_nm()),
        _row("gsa-text", "NM", for_uid="F3", rp="99mTc-GSA", content=_nm()),
        _row("unknown", "NM", for_uid="F6", rp="Tc-99m MDP", content=_nm(), description="SPECT bone"),
        _row("leber", "RTSTRUCT", rois=("Leber", "Tumor"), ref_for="F2"),
        _row("rois", "RTSTRUCT", rois=("aorta", "spleen"), ref_for="F1"),
        _row("sr", "SR"),
    ]
    explained = explain_roles(rows, names)
    roles = {uid: role for uid, (role, _why) in explained.items()}
    assert roles == {
        "perf": "ct-perfusion", "three-phase": "other", "test-bolus": "other", "gapped-perf": "other",
        "plan": "planning-ct", "short": "other", "scout": "other", "mpr": "other", "dose-page": "other",
        "spectct": "spect-ct",
        "gsa": "spect-gsa", "maa-text": "spect-maa", "maa-code": "spect-maa", "gsa-text": "spect-gsa",
        "unknown": "spect-unknown-tracer", "leber": "liver-rtstruct", "rois": "roi-rtstruct", "sr": "other",
    }
    why = {uid: w for uid, (_r, w) in explained.items()}
    assert "multi-phase" in why["three-phase"] and "3 time points" in why["three-phase"]
    assert "test bolus" in why["test-bolus"]
    assert "gaps in the stack" in why["gapped-perf"]
    assert "too short" in why["short"] and "10 slices" in why["short"]
    assert why["scout"].startswith("a localizer") and "not planning-ct, spect-ct or ct-perfusion" in why["scout"]
    assert "DERIVED" in why["mpr"] and "Secondary Capture" in why["dose-page"]
    assert "[classify.tracers]" in why["unknown"] and "Tc-99m MDP" in why["unknown"]
    assert "covering 100%" in why["spectct"]
    plan = plan_case(rows, names)
    assert plan.runnable == ("perfusion", "gsa", "maa")
    assert plan.notes and "unknown tracer" in plan.notes[0]
    only_spect = plan_case([_row("gsa", "NM", for_uid="F3", code="446534003", content=_nm())], names)
    assert only_spect.runnable == () and only_spect.waiting == {"gsa": ("spect-ct", "planning-ct")}
    # a CT sharing the SPECT's frame of reference but covering only part of it is not its SPECT/CT
    partial = explain_roles([_row("ct", "CT", for_uid="F3", content=_stack(20)),
                             _row("gsa", "NM", for_uid="F3", code="446534003", content=_nm())], names)
    assert partial["ct"][0] == "other" and "covers only" in partial["ct"][1]


def test_planning_ct_is_the_one_the_liver_contour_references_else_the_largest() -> None:
    from node.gsa.workflow import GSA
    from node.workflow import CaseSeries

    names = ("Liver",)
    big = _row("big", "CT", for_uid="F2", content=_stack(120, spacing=2.5))
    drawn = _row("drawn", "CT", for_uid="F8", content=_stack(40))
    spect_ct = _row("spectct", "CT", for_uid="F3", content=_stack(64, z0=-2.0))
    nm = _row("gsa", "NM", for_uid="F3", code="446534003", content=_nm())
    contour = _row("liver", "RTSTRUCT", rois=("Liver",), ref_for="F8", ref_series=("drawn",))
    for rows, chosen, words in (([big, drawn, spect_ct, nm], "big", "largest"),
                                ([big, drawn, spect_ct, nm, contour], "drawn", "liver contour")):
        roles = classify_series(rows, names)
        selection = GSA.select_inputs(CaseSeries("P", tuple(rows), roles), GSA.parse_settings(
            ConfigTable("analysis.gsa", {}), CommonSettings(names)))
        planning = selection.chosen[2]
        assert planning.series.series_uid == chosen and words in planning.why


def test_tracer_from_code_then_text_then_site_rules_and_nothing_guessed_when_rules_disagree() -> None:
    """Issue 13 point 4: the header's code decides over its text; the site's [classify.tracers] rules only where
    the header names no tracer a workflow analyses; two rules matching one series is reported, not guessed."""
    import re

    from node.tracers import TracerRule, TracerRules

    rules = TracerRules((TracerRule("Tc-99m MAA", (re.compile(r"\bMAA\b", re.I),)),
                         TracerRule("Tc-99m GSA", (re.compile(r"\bGSA\b", re.I), re.compile("asialo", re.I)))))
    names = ("Liver",)
    rows = [
        _row("code-gsa-text-maa", "NM", code="446534003", rp="Tc-99m MAA", content=_nm()),  # the code decides
        _row("text-maa", "NM", rp="Tc99m MAA", content=_nm(), description="GSA study"),  # the text beats a rule
        _row("rule-gsa", "NM", rp="Tc-99m", content=_nm(), description="Leber asialo SPECT"),
        _row("unknown-text-rule", "NM", rp="Tc-99m MDP", content=_nm(), description="SPECT MAA"),
        _row("both", "NM", content=_nm(), description="MAA vs GSA comparison"),
        _row("none", "NM", content=_nm(), description="SPECT abdomen"),
    ]
    explained = explain_roles(rows, names, tracers=rules)
    roles = {uid: role for uid, (role, _why) in explained.items()}
    assert roles == {"code-gsa-text-maa": "spect-gsa", "text-maa": "spect-maa", "rule-gsa": "spect-gsa",
                     "unknown-text-rule": "spect-maa", "both": "spect-unknown-tracer", "none": "spect-unknown-tracer"}
    why = {uid: w for uid, (_r, w) in explained.items()}
    assert "446534003" in why["code-gsa-text-maa"] and "[classify.tracers]" not in why["code-gsa-text-maa"]
    assert "[classify.tracers]" not in why["text-maa"]
    assert "tracer named by [classify.tracers]: SeriesDescription 'Leber asialo SPECT' matches 'asialo'" \
        in why["rule-gsa"]
    assert "Radiopharmaceutical 'Tc-99m MDP'" in why["unknown-text-rule"]
    assert "rules of several tracers match" in why["both"] and "nothing is guessed" in why["both"]
    assert "no [classify.tracers] rule matches SeriesDescription 'SPECT abdomen'" in why["none"]
    assert "e.g. [classify.tracers]" in why["none"]  # what to configure
    plan = plan_case(rows, names, tracers=rules)
    assert len(plan.notes) == 2 and all("[classify.tracers]" in n for n in plan.notes)
