"""GSA targets end to end on the digital phantom, against its independent truth (truth.json, truth masks).

The phantom knows the planning-CT -> SPECT/CT rigid transform it applied and the FLS/ITV/PTV it defines from
the noise-free SPECT; the node sees only the DICOM files (noisy SPECT, two CTs, the liver RTSTRUCT).
"""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

import rtstruct
from node.errors import AnalysisError
from node.gsa.errors import GsaInputError
from node.gsa.pipeline import run_gsa
from node.gsa.settings import GsaSettings
from node.imaging.volumes import ct_series_image
from node.phantom.build import write_phantom
from node.record import encode
from node.workflow import WorkflowResult

ANALYSIS = GsaSettings()


def load(root: Path) -> dict:
    read = lambda d: [pydicom.dcmread(p) for p in sorted((root / d).glob("*.dcm"))]  # noqa: E731
    return {"root": root, "planning": read("planning-ct"), "nm": read("spect-gsa")[0], "spect_ct": read("spect-gsa-ct"),
            "rtss": read("planning-rtstruct")[0], "truth": json.loads((root / "truth.json").read_text()),
            "masks": np.load(root / "truth" / "planning_masks.npz")}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("gsa-phantom")
    variants = {"default": (), "negative-spacing": ("negative-spacing",), "feet-first": ("feet-first",)}
    return {name: load(write_phantom(base / name, size="small", seed=0, variants=v)) for name, v in variants.items()}


@pytest.fixture(scope="module")
def results(phantoms) -> dict[str, WorkflowResult]:
    out: dict[str, WorkflowResult] = {name: run_gsa(p["planning"], p["nm"], p["spect_ct"], p["rtss"], ANALYSIS)
                                      for name, p in phantoms.items()}
    p = phantoms["default"]
    out["no-rtstruct"] = run_gsa(p["planning"], p["nm"], p["spect_ct"], None, ANALYSIS)
    return out


def rtss_of(result: WorkflowResult) -> pydicom.Dataset:
    (rtss,) = [o.dataset for o in result.outputs if o.kind == "rtstruct"]
    return rtss


def written_masks(result: WorkflowResult, phantom: dict) -> dict[str, np.ndarray]:
    """The written RTSTRUCT read back (rtstruct library) in truth order (sort_slices = truth k order)."""
    ordered = rtstruct.sort_slices(phantom["planning"])
    uids = [ds.SOPInstanceUID for ds in ordered]
    assert uids == list(phantom["truth"]["masks"]["planning_sop_instance_uids_in_k_order"])
    return rtstruct.read_masks(rtss_of(result), ordered)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def liver_points_mm(phantom: dict) -> np.ndarray:
    affine = np.asarray(phantom["masks"]["affine_kij_to_patient"])
    kij = np.argwhere(phantom["masks"]["liver"])
    return kij @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("name", ["default", "negative-spacing", "feet-first"])
def test_registration_recovers_the_phantom_transform(results, phantoms, name):
    reg = results[name].measurements.registration
    m = np.asarray(reg.matrix_4x4)
    truth = phantoms[name]["truth"]["transforms"]["planning_to_spect_gsa"]
    t = np.asarray(truth["matrix"])
    assert "planning CT patient coordinates" in truth["direction"]  # same direction as ours
    angle = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3].T @ t[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 1.0
    pts = liver_points_mm(phantoms[name])
    error = np.linalg.norm(pts @ (m[:3, :3] - t[:3, :3]).T + (m[:3, 3] - t[:3, 3]), axis=1)
    assert error.max() < 2.0
    assert np.linalg.norm(np.asarray(reg.translation_mm) - t[:3, 3]) < 2.0


@pytest.mark.parametrize("name", ["default", "negative-spacing", "feet-first"])
def test_targets_match_truth_masks(results, phantoms, name):
    p = phantoms[name]
    masks = written_masks(results[name], p)
    for roi, truth_key in (("FLS", "fls"), ("ITV", "itv"), ("PTV", "ptv"), ("Liver", "liver")):
        assert dice(masks[roi], p["masks"][truth_key]) >= 0.95, roi
    fls, itv, ptv = masks["FLS"], masks["ITV"], masks["PTV"]
    assert not (fls & itv).any()
    assert (ptv | ~itv).all()  # PTV contains ITV
    # every PTV voxel lies within 5 mm (+ one voxel diagonal) of an ITV voxel, measured in patient mm
    affine = np.asarray(p["masks"]["affine_kij_to_patient"])
    to_mm = lambda m: np.argwhere(m) @ affine[:3, :3].T + affine[:3, 3]  # noqa: E731
    distance, _ = cKDTree(to_mm(itv)).query(to_mm(ptv))
    voxel_diagonal = float(np.linalg.norm(np.linalg.norm(affine[:3, :3], axis=0)))
    assert distance.max() <= 5.0 + voxel_diagonal
    # ... and it does reach out: a 5 mm margin around ITV voxels that are not at the image edge
    assert distance.max() >= 5.0 - voxel_diagonal


def test_no_one_voxel_slivers_reach_the_planning_system(results, phantoms):
    """Read back from the RTSTRUCT, FLS and ITV have no part below the small-part sizes (node.gsa.targets);
    on this coarse test grid (3.2 mm pixels) the rule moves about 1 % of the ITV, which is recorded."""
    from scipy import ndimage

    from node.gsa.targets import MIN_CONTOUR_MM2, MIN_PART_CM3

    masks = written_masks(results["default"], phantoms["default"])
    spacing = results["default"].measurements.planning_ct.voxel_mm_zyx
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    for roi in ("FLS", "ITV"):
        parts = np.bincount(ndimage.label(masks[roi])[0].ravel())[1:]
        contours = np.bincount(ndimage.label(masks[roi], structure=in_plane)[0].ravel())[1:]
        assert parts.min() * float(np.prod(spacing)) / 1000.0 >= MIN_PART_CM3, roi
        assert contours.min() * spacing[1] * spacing[2] >= MIN_CONTOUR_MM2, roi
    tidy = results["default"].measurements.small_parts
    assert tidy is not None and abs(tidy.itv_change_fraction) < 0.03


def test_negative_spacing_nm_gives_the_same_result(results, phantoms):
    a, b = results["default"].measurements, results["negative-spacing"].measurements
    assert np.allclose(a.registration.matrix_4x4, b.registration.matrix_4x4, atol=1e-3)
    for roi in ("FLS", "ITV", "PTV"):
        assert b.volumes_cm3[roi] == pytest.approx(a.volumes_cm3[roi], rel=0.002)
    ma = written_masks(results["default"], phantoms["default"])
    mb = written_masks(results["negative-spacing"], phantoms["negative-spacing"])
    assert dice(ma["FLS"], mb["FLS"]) > 0.995


def test_measurements_record(results, phantoms):
    m = results["default"].measurements
    json.dumps(encode(m))  # JSON-serialisable
    assert m.liver_source == "rtstruct ROI 'Liver'" and not m.liver_derived
    assert m.fls_threshold_fraction == 0.6 and m.ptv_margin_mm == 5.0
    reg = encode(m.registration)
    assert {"final_metric_mattes_mi", "iterations", "matrix_4x4", "matrix_direction", "translation_mm",
            "rotation_deg"} <= set(reg)
    truth = phantoms["default"]["truth"]["gsa"]
    # volumes against the phantom's own truth volumes (cm3 = mL)
    assert m.volumes_cm3["liver"] == pytest.approx(truth["liver_volume_ml"], rel=0.01)
    for roi in ("FLS", "ITV", "PTV"):
        assert m.volumes_cm3[roi] == pytest.approx(truth[f"{roi.lower()}_volume_ml"], rel=0.08), roi


def test_rtstruct_content(results, phantoms):
    p = phantoms["default"]
    rtss = rtss_of(results["default"])
    ct = p["planning"][0]
    assert rtss.StudyInstanceUID == ct.StudyInstanceUID and rtss.PatientID == ct.PatientID
    assert rtss.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.FrameOfReferenceUID
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in rtss.RTROIObservationsSequence}
    # the liver copied from the received RTSTRUCT keeps how it was made there (the phantom writes AUTOMATIC)
    source = phantoms["default"]["rtss"]
    received = {r.ROIName: r.ROIGenerationAlgorithm for r in source.StructureSetROISequence}
    written = {r.ROIName: r.ROIGenerationAlgorithm for r in rtss.StructureSetROISequence}
    assert written["Liver"] == received["Liver"]
    rois = {r.ROIName: (types[r.ROINumber], r.ROIDescription) for r in rtss.StructureSetROISequence}
    assert {k: v[0] for k, v in rois.items()} == {"FLS": "AVOIDANCE", "ITV": "CTV", "PTV": "PTV", "Liver": "ORGAN"}
    volumes = results["default"].measurements.volumes_cm3
    for name, (_, description) in rois.items():
        assert f"{volumes['liver' if name == 'Liver' else name]:.1f} cm3" in description
    assert "60%" in rtss.SeriesDescription and "5mm" in rtss.SeriesDescription
    assert "not for primary diagnosis" in rtss.SeriesDescription


def test_derived_liver_when_no_rtstruct(results, phantoms):
    result = results["no-rtstruct"]
    m = result.measurements
    assert m.liver_source == "derived from GSA SPECT" and m.liver_derived
    assert any("derived" in w for w in result.warnings)
    rtss = rtss_of(result)
    (liver_roi,) = [r for r in rtss.StructureSetROISequence if r.ROIName == m.liver_roi_name]
    assert "derived from GSA SPECT" in liver_roi.ROIDescription
    masks = written_masks(result, phantoms["default"])
    truth = phantoms["default"]["masks"]
    assert dice(masks[m.liver_roi_name], truth["liver"]) >= 0.9  # approximate by nature
    assert dice(masks["FLS"], truth["fls"]) >= 0.95  # the FLS does not depend on the liver edge


def test_a_copied_liver_keeps_its_generation_algorithm(phantoms):
    """A MANUAL liver contour stays MANUAL in the structure set the node writes (it is re-traced, not made)."""
    from node.gsa.liver import find_liver
    from node.gsa.pipeline import _contours
    from node.gsa.targets import Targets

    p = phantoms["default"]
    rtss = copy.deepcopy(p["rtss"])
    for item in rtss.StructureSetROISequence:
        item.ROIGenerationAlgorithm, item.ROIGenerationDescription = "MANUAL", "drawn by Dr. A"
    planning = ct_series_image(rtstruct.sort_slices(p["planning"]))
    liver = find_liver(rtss, p["planning"], planning, sitk.Image((4, 4, 4), sitk.sitkFloat32),
                       sitk.Transform(3, sitk.sitkIdentity), ANALYSIS.liver_roi_names)
    assert liver.generation == ("MANUAL", "drawn by Dr. A")
    empty = np.zeros_like(liver.mask)
    contours = _contours(liver, Targets(empty, liver.mask, liver.mask, 1.0, 0.6), ANALYSIS, (5.0, 3.2, 3.2))
    (written,) = [c for c in contours if c.name == liver.roi_name]
    assert written.generation[0] == "MANUAL" and "drawn by Dr. A" in written.generation[1]


def test_unusable_rtstruct_falls_back_with_the_reason(phantoms):
    # an RTSTRUCT of another CT (here: the planning CT of the feet-first phantom) must not be used
    p, other = phantoms["default"], phantoms["feet-first"]
    from node.gsa.liver import find_liver
    planning = ct_series_image(rtstruct.sort_slices(p["planning"]))
    spect = sitk.Image((8, 8, 8), sitk.sitkFloat32) + 1.0
    spect.SetOrigin(planning.GetOrigin())
    spect.SetSpacing((60.0, 60.0, 40.0))
    liver = find_liver(other["rtss"], p["planning"], planning, spect, sitk.Transform(3, sitk.sitkIdentity),
                       ANALYSIS.liver_roi_names)
    assert liver.derived and "not usable" in liver.note


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_outputs_pass_dciodvfy_and_are_labelled(results, phantoms, tmp_path):
    outputs = results["default"].outputs
    assert [o.kind for o in outputs] == ["rtstruct", "secondary-capture", "secondary-capture"]
    nm = phantoms["default"]["nm"]
    for i, o in enumerate(outputs):
        path = tmp_path / f"{i}.dcm"
        o.dataset.save_as(path, enforce_file_format=True)
        assert _dciodvfy_errors(path) == [], o.kind
        if o.kind == "secondary-capture":
            sc = pydicom.dcmread(path)
            assert sc.ImageType[0] == "DERIVED" and sc.PhotometricInterpretation == "RGB"
            assert sc.pixel_array.dtype == np.uint8 and sc.pixel_array.shape[2] == 3
            assert "not for primary diagnosis" in sc.SeriesDescription.lower()
            assert nm.SOPInstanceUID in {s.ReferencedSOPInstanceUID for s in sc.SourceImageSequence}
            assert sc.StudyInstanceUID == phantoms["default"]["planning"][0].StudyInstanceUID


@pytest.mark.parametrize("name", ["default", "feet-first"])
def test_plastimatch_rasterises_the_rtstruct_like_the_truth(results, phantoms, tmp_path, name):
    p = phantoms[name]
    rtss_path = tmp_path / "rtss.dcm"
    rtss_of(results[name]).save_as(rtss_path, enforce_file_format=True)
    out = tmp_path / "pm"
    subprocess.run(["plastimatch", "convert", "--input", str(rtss_path), "--referenced-ct",
                    str(p["root"] / "planning-ct"), "--output-prefix", str(out), "--xor-contours"],
                   check=True, capture_output=True, timeout=120)
    grid = ct_series_image(p["planning"])  # array order = sort_slices = truth k order
    for roi, key in (("FLS", "fls"), ("ITV", "itv"), ("PTV", "ptv")):
        raster = sitk.Resample(sitk.ReadImage(str(out / f"{roi}.mha")), grid, sitk.Transform(),
                               sitk.sitkNearestNeighbor, 0)
        assert dice(sitk.GetArrayFromImage(raster) > 0, p["masks"][key]) >= 0.95, roi


@pytest.mark.parametrize("change, match", [
    ("frame-of-reference", "FrameOfReferenceUID"),
    ("patient", "different patients"),
    ("no-spect-ct", "CT images of the SPECT/CT"),
])
def test_refusals(phantoms, change, match):
    p = phantoms["default"]
    nm, spect_ct = copy.deepcopy(p["nm"]), list(p["spect_ct"])
    if change == "frame-of-reference":
        nm.FrameOfReferenceUID = pydicom.uid.generate_uid()
    elif change == "patient":
        nm.PatientID = "SOMEONE-ELSE"
    else:
        spect_ct = []
    with pytest.raises(GsaInputError, match=match) as info:
        run_gsa(p["planning"], nm, spect_ct, p["rtss"], ANALYSIS)
    assert isinstance(info.value, AnalysisError)



def test_liver_outside_the_spect_field_is_refused(phantoms):
    from node.gsa.pipeline import _targets
    from node.imaging.volumes import nm_image

    p = phantoms["default"]
    planning = ct_series_image(rtstruct.sort_slices(p["planning"]))
    spect = nm_image(p["nm"])
    spect.SetOrigin(tuple(np.asarray(spect.GetOrigin()) + (0.0, 0.0, 250.0)))  # field moved off the liver
    t = np.asarray(p["truth"]["transforms"]["planning_to_spect_gsa"]["matrix"])
    pose = sitk.AffineTransform(t[:3, :3].ravel().tolist(), t[:3, 3].tolist())
    with pytest.raises(GsaInputError, match="field of view"):
        _targets(spect, planning, pose, p["masks"]["liver"], ANALYSIS)


def test_planning_ct_with_a_gap_is_handled(phantoms):
    # One planning slice missing (non-uniform spacing): the volume is resampled, and the RTSTRUCT still has
    # one mask per received slice, matching the truth there.
    p = phantoms["default"]
    truth = p["masks"]
    empty = [k for k in range(2, len(p["planning"]) - 2) if not truth["liver"][k].any()]
    ordered = rtstruct.sort_slices(p["planning"])
    drop = empty[0] if empty else 2
    kept = [ds for k, ds in enumerate(ordered) if k != drop]
    keep = np.arange(len(ordered)) != drop
    # the phantom's RTSTRUCT references the dropped slice; contour the truth liver on the slices kept
    liver_rtss = rtstruct.write_rtstruct(kept, [rtstruct.RoiMask("Liver", truth["liver"][keep])])
    result = run_gsa(kept, p["nm"], p["spect_ct"], liver_rtss, ANALYSIS)
    masks = rtstruct.read_masks(rtss_of(result), rtstruct.sort_slices(kept))
    assert result.measurements.liver_source == "rtstruct ROI 'Liver'"
    for roi, key in (("FLS", "fls"), ("ITV", "itv"), ("PTV", "ptv")):
        assert dice(masks[roi], truth[key][keep]) >= 0.95, roi
