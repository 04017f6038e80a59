"""Variants produce what they claim: one phantom with enhanced-ct, feet-first, negative-spacing, jpeg2000,
nonuniform-time, motion, noiseless and shuffled-instance-numbers combined."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from node.phantom import write_phantom
from node.phantom.curves import NONUNIFORM_TIMES_S

from conftest import convention_max_slope

VARIANTS_A = ("enhanced-ct", "feet-first", "negative-spacing", "jpeg2000", "nonuniform-time", "motion",
              "noiseless", "shuffled-instance-numbers")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("phantom_variants")
    write_phantom(out, size="small", seed=2, variants=VARIANTS_A)
    return {"dir": out, "truth": json.loads((out / "truth.json").read_text())}


@pytest.fixture(scope="module")
def enhanced(phantom) -> pydicom.Dataset:
    files = list((phantom["dir"] / "ct-perfusion").glob("*.dcm"))
    assert len(files) == 1
    return pydicom.dcmread(files[0])


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _hu_table(truth: dict) -> np.ndarray:
    labels = {int(k): v["baseline_hu"] for k, v in truth["labels"].items()}
    table = np.zeros(max(labels) + 1)
    for label, hu in labels.items():
        table[label] = hu
    return table


def _assert_equals_label_truth(vol: np.ndarray, labels: np.ndarray, truth: dict) -> None:
    """Noiseless CT = baseline HU of the label at each voxel centre, except the vertebral column, which carries
    the slice-profile partial volume along z: there it lies between the disc and the bone HU (5 mm discs in
5 mm slices: pure bone is reached, pure disc need not be)."""
    ids = {v["name"]: (int(k), v["baseline_hu"]) for k, v in truth["labels"].items()}
    (bone, bone_hu), (disc, disc_hu) = ids["bone"], ids["intervertebral_disc"]
    column = (labels == bone) | (labels == disc)
    np.testing.assert_array_equal(vol[..., ~column], _hu_table(truth)[labels][~column])
    spine = vol[..., column]
    assert spine.min() < (disc_hu + bone_hu) / 2 + 1 and spine.max() == bone_hu
    assert np.all((spine >= disc_hu) & (spine <= bone_hu))


def _frames_by_time(ds: pydicom.Dataset) -> tuple[np.ndarray, list[datetime], np.ndarray]:
    """(volume [t, k, row, col] in HU with k ascending along the normal, frame times, slice positions)."""
    iop = np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    rows = []
    for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        content = frame.FrameContentSequence[0]
        ipp = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        rows.append((int(content.TemporalPositionIndex), float(ipp @ normal), n,
                     datetime.strptime(content.FrameAcquisitionDateTime, "%Y%m%d%H%M%S.%f")))
    rows.sort()
    pixels = ds.pixel_array
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    n_t = len({r[0] for r in rows})
    vol = np.stack([pixels[r[2]] for r in rows]).astype(float) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    vol = vol.reshape(n_t, -1, ds.Rows, ds.Columns)
    times = [r[3] for r in rows][:: vol.shape[1]]
    positions = np.array([r[1] for r in rows[: vol.shape[1]]])
    return vol, times, positions


def test_enhanced_ct_is_one_multiframe_object_with_15_temporal_positions(phantom, enhanced):
    ds = enhanced
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"
    n_slices = phantom["truth"]["grids"]["perfusion"]["shape_kij"][0]
    assert ds.NumberOfFrames == 15 * n_slices
    tpi = [int(f.FrameContentSequence[0].TemporalPositionIndex) for f in ds.PerFrameFunctionalGroupsSequence]
    assert sorted(set(tpi)) == list(range(1, 16))
    _, times, positions = _frames_by_time(ds)
    seconds = [(t - times[0]).total_seconds() for t in times]
    assert np.allclose(seconds, NONUNIFORM_TIMES_S)                       # nonuniform-time
    assert np.allclose(np.diff(positions), phantom["truth"]["grids"]["perfusion"]["spacing_mm_kij"][0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"    # jpeg2000 lossless
    assert _dciodvfy_errors(next((phantom["dir"] / "ct-perfusion").glob("*.dcm"))) == []


def test_noiseless_enhanced_frames_equal_the_truth(phantom, enhanced):
    truth = phantom["truth"]
    vol, _, _ = _frames_by_time(enhanced)
    labels = np.load(phantom["dir"] / "truth" / "perfusion_masks.npz")["labels"]
    _assert_equals_label_truth(vol[0], labels, truth)   # frame 0: no motion, no contrast
    perf = truth["perfusion"]
    masks = np.load(phantom["dir"] / "truth" / "perfusion_masks.npz")
    assert np.allclose(vol[0][masks["aorta"]], perf["regions"]["aorta"]["baseline_hu"])


def test_motion_moves_the_tumour_as_stated(phantom, enhanced):
    """The hypervascular tumour's centroid in each frame moves by the truth displacement."""
    truth = phantom["truth"]
    motion = np.array(truth["perfusion"]["motion_mm_per_frame"])
    assert np.all(motion[0] == 0) and np.any(motion[1:] != 0)
    assert np.all(np.abs(motion[:, 2]) <= 6.0) and np.abs(motion[:, 2]).max() > 2.0
    vol, _, _ = _frames_by_time(enhanced)
    affine = np.load(phantom["dir"] / "truth" / "perfusion_masks.npz")["affine_kij_to_patient"]
    t1 = next(t for t in truth["tumours"] if t["name"] == "T1")
    centre = np.array(t1["centre_mm"]["perfusion"])
    idx = np.indices(vol.shape[1:]).reshape(3, -1).T.astype(float)
    pts = (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*vol.shape[1:], 3)
    box = np.all(np.abs(pts - centre) < 24.0, axis=-1)
    perf = truth["perfusion"]
    hu_t1 = perf["regions"]["T1"]["baseline_hu"] + np.array(perf["enhancement_hu"]["T1"])
    hu_liver = perf["regions"]["liver"]["baseline_hu"] + np.array(perf["enhancement_hu"]["liver"])
    frames = [f for f in range(1, len(hu_t1)) if abs(round(hu_t1[f]) - round(hu_liver[f])) >= 3]
    assert len(frames) >= 5
    for f in frames:
        tumour = box & (np.abs(vol[f] - round(hu_t1[f])) < 0.5)
        assert tumour.sum() > 50
        shift = pts[tumour].mean(axis=0) - centre
        assert np.allclose(shift[:2], motion[f][:2], atol=1.0), (f, shift, motion[f])
        assert abs(shift[2] - motion[f][2]) < 2.0, (f, shift, motion[f])


def test_feet_first_geometry_is_consistent(phantom):
    """FFS CTs: row direction -x, and the spleen (50 HU, patient left) lies at patient x > 0."""
    out, truth = phantom["dir"], phantom["truth"]
    uids = truth["masks"]["planning_sop_instance_uids_in_k_order"]
    files = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in (out / "planning-ct").glob("*.dcm"))}
    slices = [files[u] for u in uids]
    first = slices[0]
    assert first.PatientPosition == "FFS"
    iop = np.asarray(first.ImageOrientationPatient, float)
    assert np.allclose(iop, [-1, 0, 0, 0, 1, 0])
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    vol = np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
    labels = np.load(out / "truth" / "planning_masks.npz")["labels"]
    _assert_equals_label_truth(vol, labels, truth)       # lossless, noiseless, same order
    spleen = np.argwhere(vol == 50.0)
    assert len(spleen) > 100
    ps = np.asarray(first.PixelSpacing, float)
    xs = [float(slices[k].ImagePositionPatient[0]) + j * ps[1] * iop[0] for k, _, j in spleen[::50]]
    assert min(xs) > 40.0, "spleen must be on the patient's left (+x)"
    for sub in ("spect-gsa-ct", "spect-maa-ct", "ct-perfusion"):
        ds = pydicom.dcmread(next((out / sub).glob("*.dcm")), stop_before_pixels=True)
        assert ds.PatientPosition == "FFS"


def test_negative_spacing_nm_keeps_the_physical_volume(phantom):
    out, truth = phantom["dir"], phantom["truth"]
    for visit in ("gsa", "maa"):
        path = out / f"spect-{visit}" / "NM00001.dcm"
        ds = pydicom.dcmread(path)
        sbs = float(ds.SpacingBetweenSlices)
        assert sbs < 0
        det = ds.DetectorInformationSequence[0]
        iop = np.asarray(det.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        ipp = np.asarray(det.ImagePositionPatient, float)
        # By hand: frame f lies at IPP + f * SBS * normal; order the frames ascending along the normal.
        along = np.array([(ipp + f * sbs * normal) @ normal for f in range(ds.NumberOfFrames)])
        frames = ds.pixel_array[np.argsort(along)]
        expected = np.load(out / "truth" / f"spect_{visit}_expected.npz")
        np.testing.assert_array_equal(frames, np.rint(expected["expected_counts"]))   # noiseless counts
        lowest = ipp + (ds.NumberOfFrames - 1) * sbs * normal
        assert np.allclose(lowest, expected["affine_kij_to_patient"][:3, 3], atol=0.01)
        assert _dciodvfy_errors(path) == []
    img = sitk.ReadImage(str(out / "spect-maa" / "NM00001.dcm"))
    arr = gaussian_filter(sitk.GetArrayFromImage(img).astype(float), 1.0)
    k, i, j = np.unravel_index(np.argmax(arr), arr.shape)
    hot = np.array(img.TransformIndexToPhysicalPoint([int(j), int(i), int(k)]))
    t1 = next(t for t in truth["tumours"] if t["name"] == "T1")
    assert np.linalg.norm(hot - t1["centre_mm"]["maa"]) < 6.0


def test_shuffled_instance_numbers(phantom):
    out = phantom["dir"]
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in (out / "planning-ct").glob("*.dcm")]
    numbers = [int(h.InstanceNumber) for h in heads]
    assert sorted(numbers) == list(range(1, len(heads) + 1))
    by_position = [int(h.InstanceNumber) for h in sorted(heads, key=lambda h: float(h.ImagePositionPatient[2]))]
    assert by_position != sorted(by_position) and by_position != sorted(by_position, reverse=True)


def test_truth_follows_the_nonuniform_times(phantom):
    perf = phantom["truth"]["perfusion"]
    assert perf["time_s"] == list(NONUNIFORM_TIMES_S) and perf["time_spacing_s"] is None
    t = np.array(perf["time_s"])
    c = {k: np.array(v) for k, v in perf["enhancement_hu"].items()}
    alp, pvp, _ = convention_max_slope(t, c["liver"], c["aorta"], c["portal_vein"], c["spleen"])
    assert perf["regions"]["liver"]["max_slope"]["alp_ml_min_100ml"] == pytest.approx(alp, rel=1e-9)
    assert perf["regions"]["liver"]["max_slope"]["pvp_ml_min_100ml"] == pytest.approx(pvp, rel=1e-9)
    assert perf["ct_noise_sd_hu"] == 0.0
