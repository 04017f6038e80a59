"""Hospital traffic (issue 13 points 1-5) with real vendor files re-labelled into multi-study patients.

Every file comes from ../shared/realworld-dicom; only identity and link attributes are changed (tests/relabel.py).
Files go to a live node with dcmtk storescu; every behaviour is read back through `liver-node status --json`:
identity conflicts held and nothing merged, corrected re-sends moving series, two issuers two cases, localizers /
reformats / dose pages never chosen, the planning CT chosen by the liver contour, an NM of unknown tracer
explained, late non-input objects not re-running a done case, a late input instance re-running it.
"""
# mypy: disable-error-code="index, union-attr, arg-type"
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy
import pydicom
import pytest
import relabel as R
from pydicom.uid import generate_uid

from node.config import load_config

import factories as F
from conftest import wait_until

pytestmark = pytest.mark.network


def _config(tmp_path: Path, stable: float = 1.0, extra: str = "") -> Path:
    cfg = tmp_path / "node.toml"
    from conftest import free_port

    cfg.write_text(f'[node]\nae_title = "LIVERNODE"\nhost = "127.0.0.1"\nport = {free_port()}\n'
                   f'data_dir = "{tmp_path / "var"}"\n\n[completion]\nstable_seconds = {stable}\n{extra}')
    return cfg


def _start(node_factory: Any, cfg: Path, workflows: dict[str, Any] | None = None) -> Any:
    return node_factory(load_config(cfg), workflows=workflows)


def _ge_ctpace(pid: str, study: str, *, issuer: str | None = None, for_uid: str | None = None,
               series: str | None = None, sops: list[str] | None = None) -> list[pydicom.Dataset]:
    """The GE CT/PACE series (10 axial ORIGINAL slices, 5 mm, raw implicit VR files) as patient `pid`."""
    for_uid = for_uid or generate_uid()
    series = series or generate_uid()
    out = []
    for i, f in enumerate(R.corpus("ct_series", "ge_ctpace_phantom")):
        ds = R.read(f)
        out.append(R.relabel(ds, PatientID=pid, PatientName=f"Traffic^{pid}", IssuerOfPatientID=issuer,
                             StudyInstanceUID=study, SeriesInstanceUID=series, FrameOfReferenceUID=for_uid,
                             SOPInstanceUID=sops[i] if sops else generate_uid()))
    return out


def _one(path: tuple[str, ...], pid: str, study: str, **more: Any) -> pydicom.Dataset:
    """One corpus file as patient `pid` in `study` (its own series, new UIDs)."""
    ds = R.read(R.corpus(*path)[0])
    more.setdefault("IssuerOfPatientID", None)  # the patient's identity is (PatientID, no issuer) unless given
    return R.relabel(ds, PatientID=pid, PatientName=f"Traffic^{pid}", StudyInstanceUID=study,
                     SeriesInstanceUID=generate_uid(), SOPInstanceUID=generate_uid(), **more)


def _tm(seconds: float) -> str:
    """A TM value for `seconds` after midnight."""
    h, rest = divmod(seconds, 3600.0)
    m, sec = divmod(rest, 60.0)
    return f"{int(h):02d}{int(m):02d}{sec:09.6f}"


def _ge_dynamic(pid: str, study: str, slices: int, times_s: list[float],
                description: str) -> list[pydicom.Dataset]:
    """The first `slices` neighbouring GE CT/PACE slices acquired again at each of `times_s` (seconds after
    14:56:00): one series, the slices' positions and pixels as published, only UIDs and AcquisitionTime new."""
    files = sorted(R.corpus("ct_series", "ge_ctpace_phantom"), key=lambda f: -float(R.read(f).ImagePositionPatient[2]))
    series, for_uid = generate_uid(), generate_uid()
    out = []
    for t in times_s:
        for f in files[:slices]:
            out.append(R.relabel(R.read(f), PatientID=pid, PatientName=f"Traffic^{pid}", IssuerOfPatientID=None,
                                 StudyInstanceUID=study, SeriesInstanceUID=series, FrameOfReferenceUID=for_uid,
                                 SOPInstanceUID=generate_uid(), AcquisitionTime=_tm(53760.0 + t),
                                 SeriesDescription=description))
    return out


def _flushed(node: Any) -> None:
    node.receiver.flush()


# ------------------------------------------------------------------------------------------------ point 1
def test_two_patients_in_one_study_are_held_apart_released_and_reassigned(node_factory, tmp_path: Path,
                                                                           caplog: Any) -> None:
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    study = generate_uid()
    a = _ge_ctpace("TRAFFIC-A", study)
    b = [R.relabel(R.read(f), PatientID="TRAFFIC-B", PatientName="Traffic^B", StudyInstanceUID=study,
                   IssuerOfPatientID=None, SOPInstanceUID=generate_uid())
         for f in R.corpus("rt", "rtutils_ct_rtstruct")[:2]]
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write(a, tmp_path / "a"))
        R.storescu(port, R.write(b, tmp_path / "b"))
        _flushed(node)
    st = R.status_json(cfg)
    ca, cb = R.case_of(st, "TRAFFIC-A"), R.case_of(st, "TRAFFIC-B")
    # both held, each with only the series of its own identity: nothing merged, nobody left without series
    assert ca["state"] == cb["state"] == "held"
    assert [s["instances"] for s in ca["series"]] == [10] and [s["instances"] for s in cb["series"]] == [2]
    assert ca["series"][0]["series_uid"] == a[0].SeriesInstanceUID
    assert cb["series"][0]["series_uid"] == b[0].SeriesInstanceUID
    assert all(c["series"] for c in st["cases"])
    assert all(w["state"] == "held" for w in ca["workflows"].values())
    (conflict,) = st["conflicts"]
    assert set(conflict) == {"kind", "key", "identities", "cases", "detected_at"}
    assert all(set(i) == {"patient_id", "issuer_of_patient_id"} for i in conflict["identities"])
    assert conflict["kind"] == "study" and conflict["key"] == study and conflict["detected_at"]
    assert sorted(conflict["cases"]) == ["TRAFFIC-A", "TRAFFIC-B"]
    assert "identity conflict" in ca["reason"] and "release" in ca["reason"] and study in ca["reason"]
    assert {i["patient_id"] for i in conflict["identities"]} == {"TRAFFIC-A", "TRAFFIC-B"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "identity conflict" in r.getMessage()]
    assert warnings and study in warnings[0].getMessage()
    assert "AUDIT event=identity-conflict" in caplog.text and "result=held" in caplog.text
    table = R.cli(cfg, "status")
    assert "IDENTITY CONFLICTS" in table.stdout and study in table.stdout
    assert "CASE TRAFFIC-A" in table.stdout and "state: HELD" in table.stdout  # the table shows the same facts

    # the operator releases A: analysed on its own series only; B stays held
    r = R.cli(cfg, "release", "TRAFFIC-A")
    assert r.returncode == 0 and "released" in r.stdout, r.stderr
    st = R.status_json(cfg)
    assert R.case_of(st, "TRAFFIC-A")["state"] != "held" and R.case_of(st, "TRAFFIC-B")["state"] == "held"
    assert [s["series_uid"] for s in R.case_of(st, "TRAFFIC-A")["series"]] == [a[0].SeriesInstanceUID]

    # ... then says B's two slices are A's after all: the study is one case again, the conflict is gone
    r = R.cli(cfg, "reassign", b[0].SeriesInstanceUID, "--to", "TRAFFIC-A")
    assert r.returncode == 0, r.stderr
    st = R.status_json(cfg)
    assert st["conflicts"] == [] and R.case_of(st, "TRAFFIC-B") is None  # emptied, never analysed: removed
    ca = R.case_of(st, "TRAFFIC-A")
    assert ca["state"] != "held" and len(ca["series"]) == 2
    moved = R.series_by_uid(ca)[b[0].SeriesInstanceUID]
    assert "reassigned" in moved["role_reason"] and "TRAFFIC-B" in moved["role_reason"]
    # a late instance of the reassigned series follows it
    late = R.relabel(R.read(R.corpus("rt", "rtutils_ct_rtstruct")[0]), PatientID="TRAFFIC-B",
                     IssuerOfPatientID=None, StudyInstanceUID=study, SOPInstanceUID=generate_uid())
    R.storescu(port, R.write([late], tmp_path / "late"))
    _flushed(node)
    st = R.status_json(cfg)
    assert R.case_of(st, "TRAFFIC-B") is None and st["conflicts"] == []
    assert R.series_by_uid(R.case_of(st, "TRAFFIC-A"))[b[0].SeriesInstanceUID]["instances"] == 3


def test_two_issuers_are_two_cases_and_a_frame_of_reference_link_conflicts(node_factory, tmp_path: Path) -> None:
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    one = _ge_ctpace("TRAFFIC-C", generate_uid(), issuer="HOSPITAL-1")
    two = [_one(("ct_single", "CT_small.dcm"), "TRAFFIC-C", generate_uid(), IssuerOfPatientID="HOSPITAL-2")]
    R.storescu(port, R.write(one + two, tmp_path / "c"))
    _flushed(node)
    st = R.status_json(cfg)
    c1, c2 = R.case_of(st, "TRAFFIC-C@HOSPITAL-1"), R.case_of(st, "TRAFFIC-C@HOSPITAL-2")
    assert c1["patient_id"] == c2["patient_id"] == "TRAFFIC-C"
    assert (c1["issuer_of_patient_id"], c2["issuer_of_patient_id"]) == ("HOSPITAL-1", "HOSPITAL-2")
    assert [s["instances"] for s in c1["series"]] == [10] and [s["instances"] for s in c2["series"]] == [1]
    assert st["conflicts"] == [] and "held" not in (c1["state"], c2["state"])

    # a SPECT of patient E and a CT of patient F sharing one frame of reference: the SPECT/CT link would join
    # two patients' images, so both are held
    shared_for = generate_uid()
    nm = F.nm_multiframe("TRAFFIC-E", for_uid=shared_for)
    ct = _ge_ctpace("TRAFFIC-F", generate_uid(), for_uid=shared_for)
    R.storescu(port, R.write([nm] + ct, tmp_path / "ef"))
    _flushed(node)
    st = R.status_json(cfg)
    (conflict,) = st["conflicts"]
    assert conflict["kind"] == "frame-of-reference" and conflict["key"] == shared_for
    assert R.case_of(st, "TRAFFIC-E")["state"] == R.case_of(st, "TRAFFIC-F")["state"] == "held"


# ------------------------------------------------------------------------------------------------ point 2
def test_a_corrected_resend_moves_the_series_and_keeps_the_old_copies(node_factory, tmp_path: Path,
                                                                      caplog: Any) -> None:
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    study, series, for_uid = generate_uid(), generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(10)]
    wrong = _ge_ctpace("TRAFFIC-WRONG", study, for_uid=for_uid, series=series, sops=sops)
    R.storescu(port, R.write(wrong, tmp_path / "wrong"))
    _flushed(node)
    st = R.status_json(cfg)
    assert [s["instances"] for s in R.case_of(st, "TRAFFIC-WRONG")["series"]] == [10]
    before = {ds.SOPInstanceUID: Path(node.index.has_instance(ds.SOPInstanceUID)).read_bytes() for ds in wrong}

    R.storescu(port, R.write(wrong, tmp_path / "again"))  # the same content again: nothing changes
    _flushed(node)
    assert not (node.config.node.data_dir / "superseded").exists()

    # the modality corrects the PatientID and sends the same SOP instances again
    right = _ge_ctpace("TRAFFIC-RIGHT", study, for_uid=for_uid, series=series, sops=sops)
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write(right, tmp_path / "right"))
        _flushed(node)
    st = R.status_json(cfg)
    assert R.case_of(st, "TRAFFIC-WRONG") is None  # emptied before any analysis: gone, not left receiving
    cr = R.case_of(st, "TRAFFIC-RIGHT")
    assert [(s["series_uid"], s["instances"]) for s in cr["series"]] == [(series, 10)]
    assert cr["state"] in ("receiving", "stable") and st["conflicts"] == []  # the transient conflict resolved
    for sop in sops:  # the index points at the corrected copies
        assert pydicom.dcmread(node.index.has_instance(sop), stop_before_pixels=True).PatientID == "TRAFFIC-RIGHT"
    kept = sorted((node.config.node.data_dir / "superseded").rglob("*.dcm"))
    assert len(kept) == 10 and sorted(p.read_bytes() for p in kept) == sorted(before.values())
    assert node.index.counts()["instances"] == 10
    assert len(list((node.config.node.data_dir / "instances").rglob("*.dcm"))) == 10
    resent = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "node.resend"]
    assert len(resent) == 10 and "PatientID 'TRAFFIC-WRONG' -> 'TRAFFIC-RIGHT'" in resent[0].getMessage()
    assert "AUDIT event=instance-resent" in caplog.text and "to_case=TRAFFIC-RIGHT" in caplog.text


def test_an_analysed_case_whose_inputs_are_all_resent_under_the_corrected_patient(node_factory, tmp_path: Path,
                                                                                    caplog: Any) -> None:
    """The wrong patient's case was analysed (and its results delivered) before the modality corrected the
    PatientID: the corrected patient's case is analysed; the wrong one is not left receiving with no series, it
    is failed with a reason that sends the operator to what was delivered."""
    cfg = _config(tmp_path, stable=1.0)
    runs: list[str] = []
    node = _start(node_factory, cfg, workflows={"perfusion": lambda ctx: runs.append(ctx.case_id)})
    port = node.address[1]
    study = generate_uid()
    wrong = _ge_dynamic("TRAFFIC-WRONG-P", study, 4, [3.0 * k for k in range(10)], "Liver perfusion")
    R.storescu(port, R.write(wrong, tmp_path / "wrong"))
    assert wait_until(lambda: node.index.get_case("TRAFFIC-WRONG-P").state == "done", timeout=60)
    assert runs == ["TRAFFIC-WRONG-P"]
    right = [R.relabel(ds, PatientID="TRAFFIC-RIGHT-P", PatientName="Traffic^Right") for ds in wrong]
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write(right, tmp_path / "right"))
        assert wait_until(lambda: (c := node.index.get_case("TRAFFIC-RIGHT-P")) is not None and c.state == "done",
                          timeout=60)
    st = R.status_json(cfg)
    old, new = R.case_of(st, "TRAFFIC-WRONG-P"), R.case_of(st, "TRAFFIC-RIGHT-P")
    assert old["series"] == [] and old["state"] == "failed" and old["version"] == 1
    assert "all its instances were re-sent under another identity (now in case TRAFFIC-RIGHT-P)" in old["reason"]
    assert "review what was delivered" in old["reason"]
    assert [(s["series_uid"], s["instances"], s["role"]) for s in new["series"]] == [
        (wrong[0].SeriesInstanceUID, 40, "ct-perfusion")]
    assert new["state"] == "done" and new["version"] == 1 and runs == ["TRAFFIC-WRONG-P", "TRAFFIC-RIGHT-P"]
    assert not [c for c in st["cases"] if c["state"] == "receiving" and not c["series"]]
    assert st["conflicts"] == []
    assert len(node.index.superseded()) == 40
    retired = [r for r in caplog.records if r.name == "node.identity" and "TRAFFIC-WRONG-P" in r.getMessage()]
    assert retired and "review what was delivered" in retired[-1].getMessage()
    assert "AUDIT event=case-retired" in caplog.text


# ------------------------------------------------------------------------------------------------ point 3 + 4
def test_localizers_reformats_and_dose_pages_are_never_chosen_the_contour_picks_the_planning_ct(
        node_factory, tmp_path: Path) -> None:
    # the liver contour is a real RTSTRUCT (rt-utils) whose ROI this site calls the liver
    cfg = _config(tmp_path, stable=600.0, extra='\n[analysis]\nliver_roi_names = ["Liver", "ROI-1"]\n')
    node = _start(node_factory, cfg)  # the real workflows: status shows what GSA would use
    port = node.address[1]
    pid, ct_study = "TRAFFIC-D", generate_uid()
    # the GSA SPECT and its SPECT/CT (made here: the corpus has no liver SPECT with geometry)
    nm_study, nm_for = generate_uid(), generate_uid()
    spect = F.nm_multiframe(pid, study_uid=nm_study, for_uid=nm_for)
    spect_ct = F.ct_series(pid, 8, study_uid=nm_study, for_uid=nm_for, description="SPECT/CT")
    # the real planning CT, then (newer!) a localizer, an MPR, a dose page and a dose report of the same visit
    planning = _ge_ctpace(pid, ct_study)
    others = {
        "localizer": _one(("ct_single", "2020-08-12-Christopher.dcm"), pid, ct_study),
        "surview": _one(("ct_single", "GH342.dcm"), pid, ct_study),
        "reformat": _one(("ct_single", "CT1_J2KI"), pid, ct_study),
        "screen-capture": _one(("sc_misc", "CT-MONO2-16-ankle"), pid, ct_study),
        "dose-page": _one(("sr_dose", "CT-SC-Philips_Brilliance16P.dcm"), pid, ct_study),  # no pixel data
        "colour-capture": _one(("sc_misc", "ColorTestImageJ.dcm"), pid, ct_study),
        "rdsr": _one(("sr_dose", "CT-RDSR-Siemens_Flash-TAP-SS.dcm"), pid, ct_study),
        "short-ct": _one(("ct_single", "CT_small.dcm"), pid, ct_study),
    }
    R.storescu(port, R.write([spect, *spect_ct, *planning], tmp_path / "first"))
    time.sleep(0.2)
    R.storescu(port, R.write(list(others.values()), tmp_path / "later"))
    _flushed(node)
    st = R.status_json(cfg)
    case = R.case_of(st, pid)
    roles = R.series_by_uid(case)
    for name, ds in others.items():
        assert ds.SeriesInstanceUID in roles, (name, st)
        s = roles[ds.SeriesInstanceUID]
        assert s["role"] == "other", (name, s)
    assert roles[others["localizer"].SeriesInstanceUID]["role_reason"].startswith("a localizer")
    assert roles[others["surview"].SeriesInstanceUID]["role_reason"].startswith("a localizer")
    assert "DERIVED" in roles[others["reformat"].SeriesInstanceUID]["role_reason"]
    assert "Secondary Capture" in roles[others["screen-capture"].SeriesInstanceUID]["role_reason"]
    assert "dose page" in roles[others["dose-page"].SeriesInstanceUID]["role_reason"]
    assert "Secondary Capture" in roles[others["colour-capture"].SeriesInstanceUID]["role_reason"]
    assert "dose report" in roles[others["rdsr"].SeriesInstanceUID]["role_reason"]
    assert "too short" in roles[others["short-ct"].SeriesInstanceUID]["role_reason"]
    # without a liver contour, the 10-slice 45 mm CT is too short to be a planning CT by itself: GSA waits
    assert roles[planning[0].SeriesInstanceUID]["role"] == "other"
    gsa = case["workflows"]["gsa"]
    assert gsa["state"] == "waiting" and "planning-ct" in gsa["reason"]
    assert gsa["inputs"]["spect-ct"] == spect_ct[0].SeriesInstanceUID

    # the liver contour drawn on it arrives (a real RTSTRUCT pointed at the planning CT): that CT is the planning CT
    rt = R.point_contour_at(_one(("rt", "rtutils_ct_rtstruct", "rt.dcm"), pid, ct_study), planning[0])
    R.storescu(port, R.write([rt], tmp_path / "rt"))
    _flushed(node)
    case = R.case_of(R.status_json(cfg), pid)
    roles = R.series_by_uid(case)
    assert roles[rt.SeriesInstanceUID]["role"] == "liver-rtstruct"
    assert roles[planning[0].SeriesInstanceUID]["role"] == "planning-ct"
    assert "liver contour" in roles[planning[0].SeriesInstanceUID]["role_reason"]
    gsa = case["workflows"]["gsa"]
    assert gsa["inputs"] == {"spect-gsa": spect.SeriesInstanceUID, "spect-ct": spect_ct[0].SeriesInstanceUID,
                             "planning-ct": planning[0].SeriesInstanceUID, "liver-rtstruct": rt.SeriesInstanceUID}
    assert all(roles[ds.SeriesInstanceUID]["role"] == "other" for ds in others.values())


def test_multi_phase_ct_and_a_test_bolus_are_not_perfusion_series_and_say_why(node_factory, tmp_path: Path) -> None:
    """Real GE slices acquired again at several times (only AcquisitionTime and UIDs new): a 3- and a 4-phase
    diagnostic CT (phases a minute or more apart) and a single-level test bolus are never ct-perfusion, each with
    its reason; the same slices at 10 time points 3 s apart are (the control: the rule can say yes)."""
    cfg = _config(tmp_path, stable=600.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    pid, study = "TRAFFIC-PH", generate_uid()
    series = {
        "three-phase": _ge_dynamic(pid, study, 10, [0.0, 35.0, 150.0], "Abdomen 3 phases"),
        "four-phase": _ge_dynamic(pid, study, 10, [0.0, 30.0, 70.0, 300.0], "Liver 4 phases"),
        "test-bolus": _ge_dynamic(pid, study, 1, [2.0 * k for k in range(20)], "Test bolus"),
        "perfusion": _ge_dynamic(pid, study, 4, [3.0 * k for k in range(10)], "Liver perfusion"),
    }
    R.storescu(port, R.write([ds for group in series.values() for ds in group], tmp_path / "dynamic"))
    _flushed(node)
    case = R.case_of(R.status_json(cfg), pid)
    roles = R.series_by_uid(case)
    got = {name: roles[group[0].SeriesInstanceUID] for name, group in series.items()}
    assert [got[n]["instances"] for n in series] == [30, 40, 20, 40]
    assert all(got[n]["role"] == "other" for n in ("three-phase", "four-phase", "test-bolus"))
    # the reason per role: not ct-perfusion (too few time points / one position), nor one volume to plan on
    assert ("3 time points over 150 s at each position: too few to hold a bolus passage (>= 8 needed), as in a "
            "multi-phase diagnostic CT: not ct-perfusion") in got["three-phase"]["role_reason"]
    assert ("4 time points over 300 s at each position: too few to hold a bolus passage (>= 8 needed), as in a "
            "multi-phase diagnostic CT: not ct-perfusion") in got["four-phase"]["role_reason"]
    assert ("20 time points over 38 s at a single slice position: a test bolus, not a perfusion series: "
            "not ct-perfusion") in got["test-bolus"]["role_reason"]
    for name, n in (("three-phase", 3), ("four-phase", 4), ("test-bolus", 20)):
        assert f"positions repeat {n} times" in got[name]["role_reason"]
        assert "a dynamic or multi-phase series, not one volume: not planning-ct" in got[name]["role_reason"]
    assert got["perfusion"]["role"] == "ct-perfusion"
    assert got["perfusion"]["role_reason"] == ("axial CT with 10 time points over 27 s at each of 4 slice positions: "
                                               "a dynamic (perfusion) series")
    assert case["workflows"]["perfusion"]["inputs"] == {"ct-perfusion": series["perfusion"][0].SeriesInstanceUID}


def test_an_nm_spect_of_unknown_tracer_is_explained_and_a_site_rule_names_it(node_factory, tmp_path: Path) -> None:
    cfg = _config(tmp_path, stable=1.0, extra=r"""
[classify.tracers]
"Tc-99m MAA" = ['\bMAA\b', 'macroaggregated']
""")
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    # the real 13-frame RECON TOMO NM: no RadiopharmaceuticalInformationSequence (and no position either)
    heart = _one(("nm", "NM-MONO2-16-13x-heart"), "TRAFFIC-N", generate_uid())
    R.storescu(port, R.write([heart], tmp_path / "heart"))
    _flushed(node)
    assert wait_until(lambda: node.index.get_case("TRAFFIC-N").state == "stable", timeout=30)
    case = R.case_of(R.status_json(cfg), "TRAFFIC-N")
    (s,) = case["series"]
    assert s["role"] == "spect-unknown-tracer"
    assert "tracer is unknown" in s["role_reason"] and "[classify.tracers]" in s["role_reason"]
    assert "Radiopharmaceutical absent" in s["role_reason"] and "cannot be placed" in s["role_reason"]
    assert "unknown tracer" in case["reason"] and "[classify.tracers]" in case["reason"]
    # a SPECT whose header names no tracer but whose description does: the site's rule names it
    nm = F.nm_multiframe("TRAFFIC-M")
    del nm.RadiopharmaceuticalInformationSequence
    nm.SeriesDescription = "SPECT MAA Leber"
    R.storescu(port, R.write([nm], tmp_path / "maa"))
    _flushed(node)
    (s,) = R.case_of(R.status_json(cfg), "TRAFFIC-M")["series"]
    assert s["role"] == "spect-maa" and "[classify.tracers]" in s["role_reason"] and "MAA" in s["role_reason"]
    # a SPECT sent with the wrong radiopharmaceutical, then re-sent corrected: the corrected copy decides the role
    typo = F.nm_multiframe("TRAFFIC-T", tracer_text="Tc-99m MDP", tracer_code="")
    typo.SeriesDescription = "SPECT abdomen"
    del typo.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalCodeSequence
    R.storescu(port, R.write([typo], tmp_path / "typo"))
    _flushed(node)
    (s,) = R.case_of(R.status_json(cfg), "TRAFFIC-T")["series"]
    assert s["role"] == "spect-unknown-tracer" and "'Tc-99m MDP'" in s["role_reason"]
    typo.RadiopharmaceuticalInformationSequence[0].Radiopharmaceutical = "Tc-99m MAA"
    R.storescu(port, R.write([typo], tmp_path / "corrected"))
    _flushed(node)
    (s,) = R.case_of(R.status_json(cfg), "TRAFFIC-T")["series"]
    assert s["role"] == "spect-maa" and s["instances"] == 1
    (row,) = node.index.superseded("TRAFFIC-T")
    assert row.action == "replaced" and row.differences == (
        "RadiopharmaceuticalInformationSequence > Radiopharmaceutical 'Tc-99m MDP' -> 'Tc-99m MAA'")


# ------------------------------------------------------------------------------------------------ point 5
def test_late_objects_rerun_a_done_case_only_when_an_input_changed(node_factory, tmp_path: Path) -> None:
    cfg = _config(tmp_path, stable=1.0)
    runs: list[float] = []
    node = _start(node_factory, cfg, workflows={"perfusion": lambda ctx: runs.append(time.time())})
    port = node.address[1]
    pid, study = "TRAFFIC-L", generate_uid()
    perfusion = F.ct_series(pid, 2, time_points=8, study_uid=study, description="perfusion")
    R.storescu(port, R.write(perfusion[:-1], tmp_path / "perf"))
    assert wait_until(lambda: node.index.get_case(pid).state == "done" and node.index.get_case(pid).version == 1,
                      timeout=60)
    # late: a presentation state, a dose report, a dose page, a KO-like SR and an MR of the same patient/study
    late = [_one(("pr_ko", "PR000000.dcm"), pid, study), _one(("pr_ko", "Issue168.dcm"), pid, study),
            _one(("sr_dose", "CT-RDSR-GEPixelMed.dcm"), pid, study),
            _one(("sr_dose", "CT-ESR-GE_VCT.dcm"), pid, study),
            _one(("sr_dose", "CT-SC-Philips_Brilliance16P.dcm"), pid, study),
            _one(("sr_other", "test-SR.dcm"), pid, study),
            _one(("mr_series", "philips_abd1", "adb1_1.dcm"), pid, study)]
    R.storescu(port, R.write(late, tmp_path / "late"))
    _flushed(node)
    assert wait_until(lambda: all(s["stable"] for s in R.case_of(R.status_json(cfg), pid)["series"]), timeout=60)
    time.sleep(1.5)
    case = R.case_of(R.status_json(cfg), pid)
    assert case["state"] == "done" and case["version"] == 1 and len(runs) == 1
    assert len(case["series"]) == 1 + len(late)
    # the last instance of the perfusion series arrives late: the input changed, the case runs again
    R.storescu(port, R.write(perfusion[-1:], tmp_path / "last"))
    assert wait_until(lambda: node.index.get_case(pid).version == 2 and node.index.get_case(pid).state == "done",
                      timeout=60)
    case = R.case_of(R.status_json(cfg), pid)
    assert case["state"] == "done" and case["version"] == 2 and len(runs) == 2
    # the modality re-sends an input instance: identical, nothing happens; with corrected pixels, it runs again
    R.storescu(port, R.write(perfusion[:1], tmp_path / "same"))
    _flushed(node)
    time.sleep(2.5)
    assert node.index.get_case(pid).version == 2 and len(runs) == 2
    corrected = perfusion[0]
    corrected.PixelData = bytes(len(corrected.PixelData))
    R.storescu(port, R.write([corrected], tmp_path / "corrected"))
    assert wait_until(lambda: node.index.get_case(pid).version == 3 and node.index.get_case(pid).state == "done",
                      timeout=60)
    assert len(runs) == 3 and [s.action for s in node.index.superseded()] == ["replaced"]


# ------------------------------------------------------------------------------------------------ audit gaps (B1-B4)
def test_a_corrected_study_or_frame_of_reference_frees_the_held_cases_and_a_done_case_is_not_rerun(
        node_factory, tmp_path: Path, caplog: Any) -> None:
    """B1 + B2: patient B's slices arrive in patient A's (analysed) study: both held. The modality re-sends B's
    instances (same SOP Instance UIDs) with the corrected StudyInstanceUID: the series follows it, the conflict is
    resolved, B is evaluated, and A goes back to done without re-running (no input of A changed). The same for a
    CT whose FrameOfReferenceUID wrongly linked it to another patient's SPECT."""
    cfg = _config(tmp_path, stable=1.0)
    runs: list[str] = []
    node = _start(node_factory, cfg, workflows={"perfusion": lambda ctx: runs.append(ctx.case_id)})
    port = node.address[1]
    study = generate_uid()
    a = _ge_dynamic("TRAFFIC-FA", study, 4, [3.0 * k for k in range(10)], "Liver perfusion")
    R.storescu(port, R.write(a, tmp_path / "a"))
    assert wait_until(lambda: node.index.get_case("TRAFFIC-FA").state == "done", timeout=60)
    assert runs == ["TRAFFIC-FA"]
    b_sops = [generate_uid(), generate_uid()]
    b = [R.relabel(R.read(f), PatientID="TRAFFIC-FB", PatientName="Traffic^FB", StudyInstanceUID=study,
                   IssuerOfPatientID=None, SOPInstanceUID=sop)
         for f, sop in zip(R.corpus("rt", "rtutils_ct_rtstruct")[:2], b_sops, strict=True)]
    R.storescu(port, R.write(b, tmp_path / "b"))
    _flushed(node)
    st = R.status_json(cfg)
    assert R.case_of(st, "TRAFFIC-FA")["state"] == R.case_of(st, "TRAFFIC-FB")["state"] == "held"
    assert [c["key"] for c in st["conflicts"]] == [study]

    corrected_study = generate_uid()
    fixed = [R.relabel(ds, StudyInstanceUID=corrected_study) for ds in b]
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write(fixed, tmp_path / "b-fixed"))
        _flushed(node)
        assert wait_until(lambda: node.index.get_case("TRAFFIC-FB").state == "stable", timeout=30)
        time.sleep(2.0)  # both studies' quiet periods pass: A is evaluated again
    st = R.status_json(cfg)
    assert st["conflicts"] == []
    ca, cb = R.case_of(st, "TRAFFIC-FA"), R.case_of(st, "TRAFFIC-FB")
    assert [(s["series_uid"], s["study_uid"], s["instances"]) for s in cb["series"]] == [
        (b[0].SeriesInstanceUID, corrected_study, 2)]
    assert [s["study_uid"] for s in ca["series"]] == [study]
    # A was analysed before it was held and none of its inputs changed: its analysis stands, nothing re-runs
    assert ca["state"] == "done" and ca["version"] == 1 and runs == ["TRAFFIC-FA"]
    assert "back to analysis v1 (done)" in ca["reason"]
    assert cb["state"] == "stable" and cb["version"] == 0
    relinked = [r.getMessage() for r in caplog.records if "re-sent with corrected links" in r.getMessage()]
    assert relinked and f"StudyInstanceUID {study} -> {corrected_study}" in relinked[0]
    assert "AUDIT event=series-relinked" in caplog.text
    resolved = [r for r in caplog.records if r.levelno == logging.WARNING and "resolved" in r.getMessage()
                and study in r.getMessage()]
    assert resolved and "TRAFFIC-FA (back to done" in resolved[0].getMessage()
    assert "unheld=TRAFFIC-FA:done,TRAFFIC-FB:receiving" in caplog.text

    # a CT of patient F wrongly in patient E's SPECT frame of reference, corrected by a re-send
    shared_for = generate_uid()
    nm = F.nm_multiframe("TRAFFIC-FE", for_uid=shared_for)
    ct = _ge_ctpace("TRAFFIC-FF", generate_uid(), for_uid=shared_for)
    R.storescu(port, R.write([nm] + ct, tmp_path / "ef"))
    _flushed(node)
    (conflict,) = R.status_json(cfg)["conflicts"]
    assert conflict["kind"] == "frame-of-reference" and conflict["key"] == shared_for
    new_for = generate_uid()
    R.storescu(port, R.write([R.relabel(ds, FrameOfReferenceUID=new_for) for ds in ct], tmp_path / "f-fixed"))
    _flushed(node)
    st = R.status_json(cfg)
    assert st["conflicts"] == []
    assert "held" not in (R.case_of(st, "TRAFFIC-FE")["state"], R.case_of(st, "TRAFFIC-FF")["state"])
    assert {row.frame_of_reference_uid for row in node.index.series_of_case("TRAFFIC-FF")} == {new_for}


def test_releasing_a_held_case_that_was_analysed_does_not_rerun_it(node_factory, tmp_path: Path,
                                                                     caplog: Any) -> None:
    """B2 + M7: the operator releases a done case held by a conflict: it returns to done (its analysis stands, the
    log and the audit say so) and is not analysed again; the other case stays held."""
    cfg = _config(tmp_path, stable=1.0)
    runs: list[str] = []
    node = _start(node_factory, cfg, workflows={"perfusion": lambda ctx: runs.append(ctx.case_id)})
    port = node.address[1]
    study = generate_uid()
    a = _ge_dynamic("TRAFFIC-RA", study, 4, [3.0 * k for k in range(10)], "Liver perfusion")
    R.storescu(port, R.write(a, tmp_path / "a"))
    assert wait_until(lambda: node.index.get_case("TRAFFIC-RA").state == "done", timeout=60)
    b = [_one(("ct_single", "CT_small.dcm"), "TRAFFIC-RB", study)]
    R.storescu(port, R.write(b, tmp_path / "b"))
    _flushed(node)
    assert node.index.get_case("TRAFFIC-RA").state == "held"
    time.sleep(1.5)  # the study's quiet period passes while held: nothing runs
    with caplog.at_level(logging.INFO):
        r = R.cli(cfg, "release", "TRAFFIC-RA")
        assert r.returncode == 0 and "released" in r.stdout, r.stderr
        assert node.completion.evaluate_case("TRAFFIC-RA") is False  # what the running node's evaluation finds
    case = node.index.get_case("TRAFFIC-RA")
    assert case.state == "done" and case.version == 1 and runs == ["TRAFFIC-RA"]
    assert "released by operator" in case.reason and "back to analysis v1 (done)" in case.reason
    assert node.index.get_case("TRAFFIC-RB").state == "held"
    assert "not analysed again" in caplog.text
    # the release is logged and audited by the CLI process: its stderr carries the log lines
    assert "case TRAFFIC-RA released from 1 identity conflict(s)" in r.stderr + caplog.text
    # M5: the table's conflicts say whom the conflict still holds and whom the operator released
    table = R.cli(cfg, "status").stdout
    heading = next(i for i, line in enumerate(table.splitlines()) if line.startswith("IDENTITY CONFLICTS"))
    header, row = (line.split() for line in table.splitlines()[heading + 1:heading + 3])
    assert header[-2:] == ["HELD", "RELEASED"] and row[-2:] == ["TRAFFIC-RB", "TRAFFIC-RA"] and study in row
    time.sleep(1.5)
    assert node.index.get_case("TRAFFIC-RA").version == 1 and runs == ["TRAFFIC-RA"]


def test_the_series_the_contour_references_wins_over_a_bigger_ct_in_its_frame_of_reference(
        node_factory, tmp_path: Path) -> None:
    """B3: two planning CTs share the liver contour's frame of reference; the contour names the smaller, older
    one by its series: that one is the planning CT (never the newest matching the frame of reference, nor the
    largest), and both role reasons say which is used and why."""
    cfg = _config(tmp_path, stable=600.0, extra='\n[analysis]\nliver_roi_names = ["Liver", "ROI-1"]\n')
    node = _start(node_factory, cfg)
    port = node.address[1]
    pid, study, for_uid = "TRAFFIC-PC", generate_uid(), generate_uid()
    big = F.ct_series(pid, 24, study_uid=study, for_uid=for_uid, description="Abdomen 24 slices")
    drawn = _ge_ctpace(pid, study, for_uid=for_uid)
    R.storescu(port, R.write(drawn, tmp_path / "drawn"))
    time.sleep(0.2)
    R.storescu(port, R.write(big, tmp_path / "big"))  # newer, bigger, same frame of reference
    rt = R.point_contour_at(_one(("rt", "rtutils_ct_rtstruct", "rt.dcm"), pid, study), drawn[0])
    R.storescu(port, R.write([rt], tmp_path / "rt"))
    _flushed(node)
    case = R.case_of(R.status_json(cfg), pid)
    roles = R.series_by_uid(case)
    assert roles[big[0].SeriesInstanceUID]["role"] == roles[drawn[0].SeriesInstanceUID]["role"] == "planning-ct"
    assert case["workflows"]["gsa"]["inputs"]["planning-ct"] == drawn[0].SeriesInstanceUID
    used = roles[drawn[0].SeriesInstanceUID]["role_reason"]
    assert "used as the planning CT: the CT the liver contour" in used and "(its referenced series)" in used
    assert "not the one used" in roles[big[0].SeriesInstanceUID]["role_reason"]
    assert "(its referenced series)" in roles[big[0].SeriesInstanceUID]["role_reason"]


def test_a_corrected_resend_refreshes_every_value_the_index_keeps(node_factory, tmp_path: Path,
                                                                 caplog: Any) -> None:
    """B4: a real RT Dose and an NM SPECT sent with a wrong patient name, study description, dose summation type,
    referenced plan and radionuclide, then re-sent corrected (same SOP Instance UIDs): the case and its series
    show the corrected values."""
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    pid, study = "TRAFFIC-RV", generate_uid()
    dose = _one(("rt", "rtdose.dcm"), pid, study)
    nm = F.nm_multiframe(pid, study_uid=study)
    for ds in (dose, nm):
        ds.PatientName, ds.StudyDescription = "Wrong^Name", "wrong study"
    nuclide = pydicom.Dataset()
    nuclide.CodeValue, nuclide.CodingSchemeDesignator, nuclide.CodeMeaning = "C-163A8", "SRT", "Technetium-99m"
    nm.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence = pydicom.Sequence([nuclide])
    R.storescu(port, R.write([dose, nm], tmp_path / "first"))
    _flushed(node)
    before = {s.modality: s for s in node.index.series_of_case(pid)}
    assert before["RTDOSE"].dose_summation_type == "BEAM" and before["NM"].radionuclide_code == "C-163A8"
    assert before["RTDOSE"].study_description == "wrong study"
    assert R.case_of(R.status_json(cfg), pid)["patient_name"] == "Wrong^Name"

    plan_uid = generate_uid()
    dose.PatientName = nm.PatientName = "Right^Name"
    dose.StudyDescription = nm.StudyDescription = "Liver SIRT"
    dose.DoseSummationType = "PLAN"
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan_uid
    nuclide.CodeValue, nuclide.CodingSchemeDesignator, nuclide.CodeMeaning = "14691008", "SCT", "Yttrium-90"
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write([dose, nm], tmp_path / "corrected"))
        _flushed(node)
    after = {s.modality: s for s in node.index.series_of_case(pid)}
    assert after["RTDOSE"].dose_summation_type == "PLAN" and after["RTDOSE"].referenced_sop_uids == (plan_uid,)
    assert after["NM"].radionuclide_code == "14691008"
    assert after["RTDOSE"].study_description == after["NM"].study_description == "Liver SIRT"
    assert [s.n_instances for s in after.values()] == [1, 1] and len(node.index.superseded(pid)) == 2
    assert R.case_of(R.status_json(cfg), pid)["patient_name"] == "Right^Name"
    assert "PatientName 'Wrong^Name' -> 'Right^Name'" in caplog.text and "AUDIT event=case-renamed" in caplog.text


def test_keep_first_keeps_the_stored_copy_warns_and_audits_and_an_identical_copy_is_a_quiet_no_op(
        node_factory, tmp_path: Path, caplog: Any) -> None:
    """M7: `[receive] duplicates = "keep-first"`: an identical re-send changes nothing and says so at INFO only
    (no warning, no audit line, nothing set aside); a re-send with different content leaves the stored copy in use,
    keeps the new one unused under superseded/, with a WARNING and an audit line naming the differences."""
    cfg = _config(tmp_path, stable=1.0, extra='\n[receive]\nduplicates = "keep-first"\n')
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    ds = _one(("ct_single", "CT_small.dcm"), "TRAFFIC-KF", generate_uid())
    R.storescu(port, R.write([ds], tmp_path / "first"))
    _flushed(node)
    stored = Path(node.index.has_instance(ds.SOPInstanceUID))
    original = stored.read_bytes()
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write([ds], tmp_path / "same"))
        _flushed(node)
    assert "re-sent by MODALITY with identical content: nothing changed" in caplog.text
    assert not [r for r in caplog.records if r.name == "node.resend" and r.levelno >= logging.WARNING]
    assert "AUDIT event=instance-resent" not in caplog.text and node.index.superseded() == []
    caplog.clear()

    ds.PatientName = "Traffic^Corrected"
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write([ds], tmp_path / "changed"))
        _flushed(node)
    (warning,) = [r for r in caplog.records if r.name == "node.resend" and r.levelno == logging.WARNING]
    assert "kept the first copy ([receive] duplicates = keep-first)" in warning.getMessage()
    assert "PatientName 'Traffic^TRAFFIC-KF' -> 'Traffic^Corrected'" in warning.getMessage()
    assert "AUDIT event=instance-resent" in caplog.text and "action=kept-first" in caplog.text
    assert Path(node.index.has_instance(ds.SOPInstanceUID)) == stored and stored.read_bytes() == original
    (row,) = node.index.superseded("TRAFFIC-KF")
    assert row.action == "kept-first" and row.kept_path.is_file() and row.kept_path != stored
    assert pydicom.dcmread(row.kept_path, stop_before_pixels=True).PatientName == "Traffic^Corrected"
    assert R.case_of(R.status_json(cfg), "TRAFFIC-KF")["patient_name"] == "Traffic^TRAFFIC-KF"


def test_a_tracer_code_wins_over_a_disagreeing_text_and_the_disagreement_is_logged(node_factory, tmp_path: Path,
                                                                                  caplog: Any) -> None:
    """M2: code, then text. A SPECT coded 99mTc-GSA whose text says MAA is a GSA SPECT; one whose code names a
    tracer no workflow analyses (here a bone agent's code) is not an MAA SPECT because its text says MAA. Both
    role reasons name the disagreement, and the node logs it at WARNING."""
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    gsa = F.nm_multiframe("TRAFFIC-TC1", tracer_text="Tc-99m MAA", tracer_code="446534003")
    bone = F.nm_multiframe("TRAFFIC-TC2", tracer_text="Tc-99m MAA", tracer_code="C-B1038")  # a code no workflow knows
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write([gsa, bone], tmp_path / "nm"))
        _flushed(node)
        assert wait_until(lambda: all(node.index.get_case(c).state == "stable" for c in ("TRAFFIC-TC1",
                                                                                          "TRAFFIC-TC2")), timeout=30)
    st = R.status_json(cfg)
    (s1,) = R.case_of(st, "TRAFFIC-TC1")["series"]
    (s2,) = R.case_of(st, "TRAFFIC-TC2")["series"]
    assert s1["role"] == "spect-gsa" and "the code wins" in s1["role_reason"]
    assert "RadiopharmaceuticalCodeSequence 446534003" in s1["role_reason"] and "'Tc-99m MAA'" in s1["role_reason"]
    assert s2["role"] == "other" and "the code wins over the text" in s2["role_reason"]
    assert "would make it spect-maa" in s2["role_reason"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "disagree" in r.getMessage()]
    assert any("TRAFFIC-TC1" in m and "spect-gsa, not spect-maa" in m for m in logged)
    assert any("TRAFFIC-TC2" in m and "not spect-maa" in m for m in logged)


def test_an_enhanced_ct_and_a_tilted_stack_are_not_given_a_ct_role_the_reader_would_refuse(
        node_factory, tmp_path: Path) -> None:
    """M3: a liver contour drawn on an enhanced (multi-frame) CT, or on a sheared (gantry-tilted) stack, would make
    it the planning CT, which the CT reader then refuses at analysis time. Both are 'other' with the reason."""
    cfg = _config(tmp_path, stable=600.0, extra='\n[analysis]\nliver_roi_names = ["Liver", "ROI-1"]\n')
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    # the real enhanced CT, as an acquisition would be labelled (ORIGINAL; it is published as a derived map)
    enhanced = _one(("enhanced", "eCT_Supplemental.dcm"), "TRAFFIC-EN", generate_uid(),
                    ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], FrameOfReferenceUID=generate_uid())
    rt_en = R.point_contour_at(_one(("rt", "rtutils_ct_rtstruct", "rt.dcm"), "TRAFFIC-EN",
                                    enhanced.StudyInstanceUID), enhanced)
    # the real GE slices with their origins moving 0.5 mm in y per slice: how a gantry tilt is stacked
    tilted = _ge_ctpace("TRAFFIC-TI", generate_uid())
    for ds in sorted(tilted, key=lambda d: float(d.ImagePositionPatient[2])):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * (z - float(tilted[0].ImagePositionPatient[2])) / 5.0, z]
    rt_ti = R.point_contour_at(_one(("rt", "rtutils_ct_rtstruct", "rt.dcm"), "TRAFFIC-TI",
                                    tilted[0].StudyInstanceUID), tilted[0])
    R.storescu(port, R.write([enhanced, rt_en, *tilted, rt_ti], tmp_path / "odd-ct"))
    _flushed(node)
    st = R.status_json(cfg)
    en = R.series_by_uid(R.case_of(st, "TRAFFIC-EN"))[enhanced.SeriesInstanceUID]
    ti = R.series_by_uid(R.case_of(st, "TRAFFIC-TI"))[tilted[0].SeriesInstanceUID]
    assert en["role"] == "other" and "not used: an enhanced (multi-frame) CT" in en["role_reason"]
    assert "Enhanced CT Image Storage, 2 frame(s) in 1 instance(s)" in en["role_reason"]
    assert ti["role"] == "other" and "not used: slice origins shift in-plane" in ti["role_reason"]
    assert "gantry tilt" in ti["role_reason"]


def test_a_copy_written_differently_is_identical_and_a_changed_value_is_a_correction(node_factory, tmp_path: Path,
                                                                                     caplog: Any) -> None:
    """M1: a PACS re-sending a real CT re-encoded (implicit VR, another implementation's file meta, the person
    name with its trailing delimiters, an empty type 2 element it adds, decimal strings written back from float32)
    sends the same content: a no-op. A changed value (the slice thickness) is a correction that replaces it."""
    cfg = _config(tmp_path, stable=1.0)
    node = _start(node_factory, cfg, workflows={})
    port = node.address[1]
    ds = _one(("ct_single", "CT_small.dcm"), "TRAFFIC-ID", generate_uid())
    R.storescu(port, R.write([ds], tmp_path / "first"))
    _flushed(node)
    again = R.read(R.write([ds], tmp_path / "copy")[0])
    again.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    again.file_meta.ImplementationClassUID = pydicom.uid.UID("1.2.3.4.5")
    again.file_meta.ImplementationVersionName = "OTHER_PACS"
    again.PatientName = f"{again.PatientName}^^"
    again.PatientComments = ""
    again.PixelSpacing = [f"{float(numpy.float32(v)):.14g}" for v in again.PixelSpacing]
    assert [str(v) for v in again.PixelSpacing] != [str(v) for v in ds.PixelSpacing]  # the text really differs
    with caplog.at_level(logging.INFO):
        R.storescu(port, R.write([again], tmp_path / "re-encoded"))
        _flushed(node)
    assert "with identical content: nothing changed" in caplog.text
    assert node.index.superseded() == [] and not (node.config.node.data_dir / "superseded").exists()

    again.SliceThickness = float(ds.SliceThickness) / 2
    R.storescu(port, R.write([again], tmp_path / "changed"))
    _flushed(node)
    (row,) = node.index.superseded()
    assert row.action == "replaced" and row.differences.startswith("SliceThickness")
    assert "PatientName" not in row.differences and "PixelSpacing" not in row.differences
