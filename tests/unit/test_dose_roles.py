"""What the dose workflows need from the receive edge and the index, and how their series get roles: RT Dose and
RT Plan stored and indexed with their summation type and references (a real RayStation RT Dose and the phantom's),
a Y-90 PET's radionuclide read past the fast header scanner, the roles and reasons of post-therapy images, plan
doses and plans (and what does not get them), and when the two new workflows become runnable."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from node.classify import explain_roles, plan_case
from node.header import read_header
from node.index import Index, SeriesRow
from node.phantom import write_phantom
from node.sopclasses import NON_IMAGE_SOP_CLASSES, RT_DOSE, RT_PLAN

REAL = Path("/work/shared/realworld-dicom/rt")
RAYSTATION_DOSE = REAL / "raystation_plan03" / "RD1.2.752.243.1.1.20250523160113556.3000.73252.dcm"
LIVER = ("Liver",)


def _row(uid: str, modality: str, *, for_uid: str = "", rp: str = "", code: str = "", nuclide: str = "",
         summation: str = "", refs: tuple[str, ...] = (), description: str = "") -> SeriesRow:
    return SeriesRow(series_uid=uid, study_uid="9", patient_id="P", modality=modality, sop_class_uid="",
                     series_description=description or uid, series_number=1, frame_of_reference_uid=for_uid,
                     radiopharmaceutical=rp, radiopharmaceutical_code=code, roi_names=(),
                     referenced_frame_of_reference="", first_received=0.0, last_received=0.0, n_instances=1,
                     max_position_repeats=1, stable=True, radionuclide_code=nuclide, dose_summation_type=summation,
                     referenced_sop_uids=refs)


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
        assert rows["PT"].radionuclide_code == "14691008"
    finally:
        index.close()


def test_roles_of_post_therapy_images_plan_doses_and_plans() -> None:
    rows = [
        _row("plan-ct", "CT", for_uid="PLAN"),
        _row("maa", "NM", for_uid="MAA", code="85693008"),
        _row("maa-ct", "CT", for_uid="MAA"),
        _row("pet-y90", "PT", for_uid="PET", nuclide="14691008"),
        _row("pet-ct", "CT", for_uid="PET"),
        _row("pet-fdg", "PT", for_uid="FDG", nuclide="35321007", rp="Fluorodeoxyglucose F^18^"),
        _row("brems", "NM", for_uid="BREMS", rp="Y-90 SIR-Spheres"),
        _row("tps-dose", "RTDOSE", for_uid="PLAN", summation="PLAN", refs=("1.2.3",)),
        _row("beam-dose", "RTDOSE", for_uid="PLAN", summation="BEAM", refs=("1.2.3",)),
        _row("own-y90-dose", "RTDOSE", for_uid="MAA", summation="PLAN"),  # the node's own, routed back
        _row("foreign-dose", "RTDOSE", for_uid="ELSEWHERE", summation="PLAN"),
        _row("rt-plan", "RTPLAN", for_uid="PLAN"),
    ]
    roles = explain_roles(rows, LIVER)
    role = {uid: r for uid, (r, _) in roles.items()}
    assert role["pet-y90"] == role["brems"] == "y90-post"
    assert role["pet-ct"] == "spect-ct"  # the CT of the PET/CT (the generic rule)
    assert role["pet-fdg"] == "other" and role["maa"] == "spect-maa"
    assert role["tps-dose"] == "plan-dose" and role["rt-plan"] == "rt-plan"
    assert role["beam-dose"] == role["own-y90-dose"] == role["foreign-dose"] == "other"
    assert "Y-90" in roles["pet-y90"][1] and "planning CT 'plan-ct'" in roles["tps-dose"][1]
    plan = plan_case(rows, LIVER)
    assert "y90post" in plan.runnable  # MAA planning and a post-therapy image
    assert "gsaplan" not in plan.runnable  # no GSA SPECT: nothing to evaluate the plan dose in
    assert plan.waiting["gsaplan"] == ("spect-gsa",)


def test_a_post_therapy_image_without_maa_planning_waits() -> None:
    plan = plan_case([_row("pet", "PT", for_uid="PET", rp="Y90 microspheres"), _row("ct", "CT", for_uid="PET")],
                     LIVER)
    assert plan.roles["pet"] == "y90-post" and "y90post" not in plan.runnable
    assert plan.waiting["y90post"] == ("spect-maa",)
