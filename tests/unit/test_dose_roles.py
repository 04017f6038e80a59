"""What the dose workflows need from the receive edge and the index, and how their series get roles: RT Dose and
RT Plan stored and indexed with their summation type and references (a real RayStation RT Dose and the phantom's),
a Y-90 PET's radionuclide read past the fast header scanner, the roles and reasons of post-therapy images, plan
doses and plans (and what does not get them), and when the two new workflows become runnable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from node.classify import explain_roles, plan_case
from node.header import read_header
from node.index import Index, SeriesRow
from node.phantom import write_phantom
from node.seriescontent import InstanceFacts, SeriesContent, encode_frames, summarise
from node.sopclasses import NON_IMAGE_SOP_CLASSES, RT_DOSE, RT_PLAN

REAL = Path("/work/shared/realworld-dicom/rt")
RAYSTATION_DOSE = REAL / "raystation_plan03" / "RD1.2.752.243.1.1.20250523160113556.3000.73252.dcm"
LIVER = ("Liver",)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CT_CLASS, NM_CLASS, PET_CLASS = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128"


def _stack(n: int, sop: str, image_type: str, spacing: float = 5.0, z0: float = 0.0,
           time_points: int = 1) -> SeriesContent:
    """An axial stack of n slice positions, one instance per slice (each repeated time_points times)."""
    return summarise([InstanceFacts(sop, image_type, (0.0, 0.0, z0 + spacing * k), AXIAL, 36000.0 + 60.0 * t, None,
                                    1, "", "") for t in range(time_points) for k in range(n)])


def _ct(n: int = 48) -> SeriesContent:
    return _stack(n, CT_CLASS, "ORIGINAL\\PRIMARY\\AXIAL", z0=-20.0)


def _pet(n: int = 40, image_type: str = "ORIGINAL\\PRIMARY", time_points: int = 1) -> SeriesContent:
    return _stack(n, PET_CLASS, image_type, spacing=4.0, time_points=time_points)


def _nm(frames: int = 40, image_type: str = "ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION") -> SeriesContent:
    pos = [(0.0, 0.0, 4.4 * k) for k in range(frames)]
    return summarise([InstanceFacts(NM_CLASS, image_type, pos[0], AXIAL, 36000.0, None, frames, "",
                                    encode_frames(pos, []))])


def _grid(planes: int = 30, unusable: str = "") -> SeriesContent:
    """An RT Dose: one multi-frame instance whose planes the index keeps (GridFrameOffsetVector); 0 planes: DVHs
    only (no ImagePositionPatient)."""
    pos = [(0.0, 0.0, 3.0 * k) for k in range(planes)]
    return summarise([InstanceFacts(RT_DOSE, "", pos[0] if pos else None, AXIAL if pos else None, None, None,
                                    max(1, planes), unusable, encode_frames(pos, []))])


def _row(uid: str, modality: str, *, for_uid: str = "", rp: str = "", code: str = "", nuclide: str = "",
         summation: str = "", refs: tuple[str, ...] = (), description: str = "",
         content: SeriesContent | None = None) -> SeriesRow:
    content = content or SeriesContent()
    return SeriesRow(series_uid=uid, study_uid="9", patient_id="P", modality=modality,
                     sop_class_uid=content.sop_classes[0] if content.sop_classes else "",
                     series_description=description or uid, series_number=1, frame_of_reference_uid=for_uid,
                     radiopharmaceutical=rp, radiopharmaceutical_code=code, roi_names=(),
                     referenced_frame_of_reference="", first_received=0.0, last_received=0.0,
                     n_instances=max(1, content.instances), max_position_repeats=content.time_points, stable=True,
                     radionuclide_code=nuclide, dose_summation_type=summation, referenced_sop_uids=refs,
                     content=content)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("roles"), size="small", seed=1, variants=("y90", "tps-rtdose"))


def test_rt_dose_and_plan_are_named_storage_classes_without_a_pixel_requirement() -> None:
    assert NON_IMAGE_SOP_CLASSES[RT_DOSE] == "RT Dose Storage" and NON_IMAGE_SOP_CLASSES[RT_PLAN] == "RT Plan Storage"


def test_headers_of_real_and_phantom_rt_doses_carry_what_the_roles_need(phantom: Path) -> None:
    real = read_header(RAYSTATION_DOSE)
    ds = pydicom.dcmread(RAYSTATION_DOSE, stop_before_pixels=True)
    assert real.modality == "RTDOSE" and real.dose_summation_type == str(ds.DoseSummationType).upper()
    assert real.referenced_sop_uids == tuple(i.ReferencedSOPInstanceUID for i in ds.ReferencedRTPlanSequence)
    assert real.frame_of_reference_uid == ds.FrameOfReferenceUID
    # the grid's planes, from its GridFrameOffsetVector (the content the plan-dose role is decided on)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:],
                                                                                      float))
    assert len(real.frame_positions) == int(ds.NumberOfFrames) == len(offsets)
    assert real.frame_positions[0] == pytest.approx(tuple(float(v) for v in ds.ImagePositionPatient), abs=1e-3)
    steps = [float(np.dot(np.subtract(p, real.frame_positions[0]), normal)) for p in real.frame_positions]
    assert steps == pytest.approx([o - offsets[0] for o in offsets], abs=1e-3)
    tps = read_header(next((phantom / "tps-rtdose").glob("*.dcm")))
    truth = pydicom.dcmread(next((phantom / "tps-rtdose").glob("*.dcm")), stop_before_pixels=True)
    assert (tps.dose_summation_type, tps.referenced_sop_uids) == ("PLAN", (truth.ReferencedRTPlanSequence[0]
                                                                            .ReferencedSOPInstanceUID,))


def test_a_y90_pet_slice_is_read_past_the_fast_scanner_for_its_radionuclide(phantom: Path) -> None:
    path = sorted((phantom / "y90-pet").glob("*.dcm"))[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    info = read_header(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))
    assert info.modality == "PT" and info.radionuclide_code == "14691008"  # ^90^Yttrium
    assert info.radiopharmaceutical_code == "764678003"
    ct = read_header(sorted((phantom / "y90-pet-ct").glob("*.dcm"))[0])
    assert ct.radionuclide_code == "" and ct.dose_summation_type == "" and ct.referenced_sop_uids == ()


def test_the_index_keeps_them_per_series(tmp_path: Path, phantom: Path) -> None:
    index = Index(tmp_path / "index.sqlite3")
    try:
        for folder in ("tps-rtdose", "y90-pet"):
            path = sorted((phantom / folder).glob("*.dcm"))[0]
            index.add_instance(read_header(path), path, path.stat().st_size, "TPS", 1.0)
        rows = {s.modality: s for s in index.series_of_case("PHANTOM1")}
        assert rows["RTDOSE"].dose_summation_type == "PLAN" and len(rows["RTDOSE"].referenced_sop_uids) == 1
        tps = pydicom.dcmread(sorted((phantom / "tps-rtdose").glob("*.dcm"))[0], stop_before_pixels=True)
        assert rows["RTDOSE"].content.positions == int(tps.NumberOfFrames) and rows["RTDOSE"].content.gaps == 0
        assert rows["PT"].radionuclide_code == "14691008"
    finally:
        index.close()


def test_roles_of_post_therapy_images_plan_doses_and_plans() -> None:
    rows = [
        _row("plan-ct", "CT", for_uid="PLAN", content=_ct()),
        _row("maa", "NM", for_uid="MAA", code="85693008", content=_nm()),
        _row("maa-ct", "CT", for_uid="MAA", content=_ct()),
        _row("pet-y90", "PT", for_uid="PET", nuclide="14691008", content=_pet()),
        _row("pet-ct", "CT", for_uid="PET", content=_ct()),
        _row("pet-fdg", "PT", for_uid="FDG", nuclide="35321007", rp="Fluorodeoxyglucose F^18^", content=_pet()),
        _row("brems", "NM", for_uid="BREMS", rp="Y-90 SIR-Spheres", content=_nm()),
        _row("tps-dose", "RTDOSE", for_uid="PLAN", summation="PLAN", refs=("1.2.3",), content=_grid()),
        _row("beam-dose", "RTDOSE", for_uid="PLAN", summation="BEAM", refs=("1.2.3",), content=_grid()),
        _row("own-y90-dose", "RTDOSE", for_uid="MAA", summation="PLAN", content=_grid()),  # the node's own, routed back
        _row("foreign-dose", "RTDOSE", for_uid="ELSEWHERE", summation="PLAN", content=_grid()),
        _row("rt-plan", "RTPLAN", for_uid="PLAN"),
        _row("own-y90-plan", "RTPLAN", for_uid="MAA"),
    ]
    roles = explain_roles(rows, LIVER)
    role = {uid: r for uid, (r, _) in roles.items()}
    why = {uid: w for uid, (_, w) in roles.items()}
    assert role["pet-y90"] == role["brems"] == "y90-post"
    assert role["pet-ct"] == "spect-ct"  # the CT of the PET/CT (the generic rule)
    assert role["pet-fdg"] == "other" and role["maa"] == "spect-maa"
    assert role["tps-dose"] == "plan-dose" and role["rt-plan"] == "rt-plan"
    assert role["beam-dose"] == role["own-y90-dose"] == role["foreign-dose"] == role["own-y90-plan"] == "other"
    # each role says why, with the series' own values; each refusal says why not
    assert "Y-90" in why["pet-y90"] and "reconstructed PET volume (40 slices" in why["pet-y90"]
    assert "bremsstrahlung SPECT" in why["brems"] and "40 slices" in why["brems"]
    assert "planning CT 'plan-ct'" in why["tps-dose"] and "dose grid of 30 slices" in why["tps-dose"]
    assert "planning CT 'plan-ct'" in why["rt-plan"]
    assert "is not Y-90" in why["pet-fdg"] and "Fluorodeoxyglucose" in why["pet-fdg"]
    assert "summation type BEAM" in why["beam-dose"] and "not the whole plan" in why["beam-dose"]
    assert "NM 'maa'" in why["own-y90-dose"] and "not a plan on a planning CT" in why["own-y90-dose"]
    assert "no planning CT of the case shares its frame of reference" in why["foreign-dose"]
    assert "beamless Y-90 activity plan" in why["own-y90-plan"]
    plan = plan_case(rows, LIVER)
    assert "y90post" in plan.runnable  # MAA planning and a post-therapy image
    assert "gsaplan" not in plan.runnable  # no GSA SPECT: nothing to evaluate the plan dose in
    assert plan.waiting["gsaplan"] == ("spect-gsa",)


def test_y90_series_that_are_not_one_volume_and_doses_without_a_grid_get_no_role() -> None:
    rows = [
        _row("plan-ct", "CT", for_uid="PLAN", content=_ct()),
        _row("mip", "PT", for_uid="PET", nuclide="14691008", content=_pet(1, "DERIVED\\SECONDARY\\MIP")),
        _row("dynamic", "PT", for_uid="PET2", rp="Y-90 TheraSphere", content=_pet(20, time_points=6)),
        _row("capture", "PT", for_uid="PET3", nuclide="14691008",
             content=_stack(1, "1.2.840.10008.5.1.4.1.1.7", "DERIVED\\SECONDARY")),
        _row("planar", "NM", for_uid="", rp="Y-90 microspheres", content=_nm(1, "ORIGINAL\\PRIMARY\\WHOLE BODY")),
        _row("dvh-only", "RTDOSE", for_uid="PLAN", summation="PLAN", content=_grid(0)),
        _row("unusable", "RTDOSE", for_uid="PLAN", summation="PLAN",
             content=_grid(30, "unknown-sop-class: private or unknown SOP class")),
        _row("short-ct-dose", "RTDOSE", for_uid="SHORT", summation="PLAN", content=_grid()),
        _row("short-ct", "CT", for_uid="SHORT", content=_ct(8)),
    ]
    roles = explain_roles(rows, LIVER)
    assert {uid: r for uid, (r, _) in roles.items() if uid != "plan-ct" and uid != "short-ct"} == {
        "mip": "other", "dynamic": "other", "capture": "other", "planar": "other", "dvh-only": "other",
        "unusable": "other", "short-ct-dose": "other"}
    why = {uid: w for uid, (_, w) in roles.items()}
    assert "Y-90 PT, but a mip" in why["mip"]
    assert "Y-90 PT, but positions repeat 6 times" in why["dynamic"] and "dynamic or gated PET" in why["dynamic"]
    assert "Secondary Capture" in why["capture"] and "not PET image data" in why["capture"]
    assert "planar whole body image" in why["planar"]
    assert "no dose grid placed in the patient" in why["dvh-only"]
    assert "accepted but not usable (unknown-sop-class)" in why["unusable"]
    assert "no planning CT of the case shares its frame of reference" in why["short-ct-dose"]
    assert not plan_case(rows, LIVER).runnable


def test_a_post_therapy_image_without_maa_planning_waits() -> None:
    plan = plan_case([_row("pet", "PT", for_uid="PET", rp="Y90 microspheres", content=_pet()),
                      _row("ct", "CT", for_uid="PET", content=_ct())], LIVER)
    assert plan.roles["pet"] == "y90-post" and plan.roles["ct"] == "spect-ct" and "y90post" not in plan.runnable
    assert plan.waiting["y90post"] == ("spect-maa",)


def test_the_site_may_name_a_bremsstrahlung_spect_in_its_tracer_rules() -> None:
    """[classify.tracers] can name Y-90 for an NM SPECT whose header names no tracer (y90post lists its tracer)."""
    from node.classify import known_tracers, recognises_tracer

    assert "Y-90 microspheres" in known_tracers() and recognises_tracer("Y-90 microspheres") == "y90-post"
