"""The node's DVH figures against an independent implementation: `plastimatch dvh` (Debian) on the node's RT Dose
and an RTSTRUCT written by the rtstruct package, and on the phantom's TPS RT Dose (32-bit) with the planning
RTSTRUCT. plastimatch rasterises the structures on the CT and interpolates the dose there, the convention of
node/dose/dvh.py; its histogram is binned (0.02 Gy here), so figures agree to within a bin."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import rtstruct
from node.dose.dvh import region_dose, region_dvh
from node.dose.rtdose import build_rt_dose, build_rt_plan, read_rt_dose
from node.dose.y90 import predicted_dose
from node.imaging.grids import image_from_affine
from node.imaging.volumes import ct_series_image, nm_image
from node.phantom import layout, write_phantom, y90

BIN_GY = 0.02
ROIS = {"liver": "Liver", "normal_liver": "NormalLiver", "T1": "T1", "T2": "T2", "T3": "T3", "lungs": "Lungs"}


def plastimatch_dvh(rtss: Path, ct_dir: Path, dose: Path, work: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{ROI: (bin doses in Gy, cumulative voxel counts)} from plastimatch convert + dvh."""
    exe = shutil.which("plastimatch")
    assert exe, "plastimatch is required (scripts/install-test-tools.sh)"
    run = subprocess.run([exe, "convert", "--input", str(rtss), "--referenced-ct", str(ct_dir), "--output-ss-img",
                          str(work / "ss.nrrd"), "--output-ss-list", str(work / "ss.txt"), "--xor-contours"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([exe, "dvh", "--input-ss-img", str(work / "ss.nrrd"), "--input-ss-list",
                          str(work / "ss.txt"), "--input-dose", str(dose), "--output-csv", str(work / "dvh.csv"),
                          "--num-bins", "40000", "--bin-width", str(BIN_GY), "--normalization", "vox"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = list(csv.reader((work / "dvh.csv").open()))
    data = np.array([[float(v) for v in r] for r in rows[1:]])
    return {name: (data[:, 0], data[:, i]) for i, name in enumerate(rows[0]) if i > 0}


def figures_from_histogram(doses: np.ndarray, cumulative: np.ndarray) -> dict[str, float]:
    n = cumulative[0]
    per_bin = cumulative - np.append(cumulative[1:], 0.0)

    def d(x: float) -> float:
        return float(doses[np.nonzero(cumulative / n >= x / 100.0 - 1e-12)[0].max()])

    def v(gy: float) -> float:
        return float(100.0 * cumulative[int(round(gy / BIN_GY))] / n)

    return {"mean": float((doses * per_bin).sum() / n), "d50": d(50), "d70": d(70), "d90": d(90),
            "v30": v(30), "v40": v(40), "v100": v(100), "v120": v(120)}


def node_figures(region) -> dict[str, float]:
    return {"mean": region.mean_gy, "d50": region.d50_gy, "d70": region.d70_gy, "d90": region.d90_gy,
            **{f"v{g}": region.v_percent(float(g)) for g in (30, 40, 100, 120)}}


def assert_agree(node: dict[str, float], other: dict[str, float], what: str) -> None:
    for key, value in node.items():
        if key.startswith("v"):  # percent of the volume: within 2 percentage points
            assert value == pytest.approx(other[key], abs=2.0), (what, key)
        else:  # doses: within 2 %, and never more than two bins apart
            assert value == pytest.approx(other[key], rel=0.02, abs=2 * BIN_GY), (what, key)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("dose-pm"), size="small", seed=7, variants=("y90", "tps-rtdose"))


def test_y90_dvh_figures_agree_with_plastimatch(phantom: Path, tmp_path: Path) -> None:
    nm = pydicom.dcmread(next((phantom / "spect-maa").glob("*.dcm")))
    spect = nm_image(nm)
    cts = rtstruct.sort_slices([pydicom.dcmread(p) for p in (phantom / "spect-maa-ct").glob("*.dcm")])
    ct = ct_series_image(cts)
    npz = np.load(phantom / "truth" / "y90_maa_predicted.npz")

    def on_spect(a: np.ndarray) -> np.ndarray:
        img = image_from_affine(a.astype(np.float32), npz["affine_kij_to_patient"])
        return sitk.GetArrayFromImage(sitk.Resample(img, spect, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0.5

    truth = json.loads((phantom / "truth.json").read_text())["y90"]["maa_predicted"]
    dose = predicted_dose(spect, ct, on_spect(npz["mask_liver"]), on_spect(npz["mask_lungs"]),
                          truth["planned_activity_gbq"], truth["lung_shunt_fraction"])
    # structures on the MAA SPECT/CT's CT (the phantom's analytic regions at its voxel centres)
    lay = layout.build_layout("small")
    masks = y90.region_masks(lay.grids["maa-ct"], lay.poses["maa"])
    rs = rtstruct.write_rtstruct(cts, [rtstruct.RoiMask(ROIS[k], masks[k]) for k in ROIS])
    rs.save_as(tmp_path / "rs.dcm", enforce_file_format=True)
    plan = build_rt_plan(cts[0], label="Y90", name="Y-90", description="phantom", prescription="phantom",
                         structure_set=rs)
    dvhs = {ROIS[k]: region_dvh(ROIS[k], dose.dose, masks[k], ct) for k in ROIS}
    build_rt_dose(dose.dose, cts[0], series_description="Y-90 dose", comment="LDM", method=dose.method,
                  rt_plan=plan, structure_set=rs, dvhs=dvhs).save_as(tmp_path / "rd.dcm", enforce_file_format=True)
    theirs = plastimatch_dvh(tmp_path / "rs.dcm", phantom / "spect-maa-ct", tmp_path / "rd.dcm", tmp_path)
    for roi, dvh in dvhs.items():
        doses, cumulative = theirs[roi]
        assert cumulative[0] * float(np.prod(ct.GetSpacing())) / 1000.0 == pytest.approx(dvh.total, rel=0.01), roi
        assert_agree(node_figures(region_dose(dvh)), figures_from_histogram(doses, cumulative), roi)


def test_tps_dose_read_by_the_node_agrees_with_plastimatch(phantom: Path, tmp_path: Path) -> None:
    """The phantom's own (32-bit) RT Dose, read by both: the node's reader and interpolation against plastimatch's."""
    cts = rtstruct.sort_slices([pydicom.dcmread(p) for p in (phantom / "planning-ct").glob("*.dcm")])
    ct = ct_series_image(cts)
    rs_path = next((phantom / "planning-rtstruct").glob("*.dcm"))
    liver = rtstruct.read_masks(pydicom.dcmread(rs_path), cts)["Liver"]
    rd_path = next((phantom / "tps-rtdose").glob("*.dcm"))
    assert pydicom.dcmread(rd_path).BitsAllocated == 32
    dvh = region_dvh("Liver", read_rt_dose(pydicom.dcmread(rd_path)).image, liver, ct)
    doses, cumulative = plastimatch_dvh(rs_path, phantom / "planning-ct", rd_path, tmp_path)["Liver"]
    assert_agree(node_figures(region_dose(dvh)), figures_from_histogram(doses, cumulative), "Liver (TPS dose)")
