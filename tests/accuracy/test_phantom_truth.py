"""The default small phantom: its truth is checked independently of the generator's own code paths."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.integrate import cumulative_trapezoid, solve_ivp
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from node.phantom import write_phantom

from conftest import convention_max_slope

SMALL_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("phantom")
    started = time.perf_counter()
    write_phantom(out, size="small", seed=5)
    elapsed = time.perf_counter() - started
    return {"dir": out, "elapsed": elapsed, "truth": json.loads((out / "truth.json").read_text())}


def _read_series(directory: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(directory.glob("*.dcm"))]


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_small_generation_is_fast(phantom):
    assert phantom["elapsed"] < SMALL_LIMIT_S, f"small phantom took {phantom['elapsed']:.1f} s"


def test_layout_and_identity(phantom):
    out, truth = phantom["dir"], phantom["truth"]
    for sub in ("ct-perfusion", "planning-ct", "planning-rtstruct", "spect-gsa", "spect-gsa-ct", "spect-maa",
                "spect-maa-ct"):
        assert list((out / sub).glob("*.dcm")), sub
    heads = {sub: pydicom.dcmread(next((out / sub).glob("*.dcm")), stop_before_pixels=True)
             for sub in ("ct-perfusion", "planning-ct", "spect-gsa", "spect-gsa-ct", "spect-maa", "spect-maa-ct")}
    assert {h.PatientID for h in heads.values()} == {"PHANTOM5"} == {truth["patient_id"]}
    # SPECT and its CT: same study, same frame of reference; every visit its own study / frame.
    for visit in ("gsa", "maa"):
        nm_, ct_ = heads[f"spect-{visit}"], heads[f"spect-{visit}-ct"]
        assert nm_.StudyInstanceUID == ct_.StudyInstanceUID
        assert nm_.FrameOfReferenceUID == ct_.FrameOfReferenceUID
    studies = {heads[s].StudyInstanceUID for s in ("ct-perfusion", "planning-ct", "spect-gsa", "spect-maa")}
    frames = {heads[s].FrameOfReferenceUID for s in ("ct-perfusion", "planning-ct", "spect-gsa", "spect-maa")}
    assert len(studies) == 4 and len(frames) == 4


def test_perfusion_series_is_one_series_of_15_time_points(phantom):
    files = [pydicom.dcmread(p, stop_before_pixels=True) for p in (phantom["dir"] / "ct-perfusion").glob("*.dcm")]
    assert len({f.SeriesInstanceUID for f in files}) == 1
    positions = {tuple(np.round(np.asarray(f.ImagePositionPatient, float), 2)) for f in files}
    times = sorted({f.AcquisitionTime for f in files})
    assert len(times) == 15 and len(files) == 15 * len(positions)
    seconds = [int(t[:2]) * 3600 + int(t[2:4]) * 60 + float(t[4:]) for t in times]
    assert np.allclose(np.diff(seconds), 3.0)
    for t in times:   # every time point covers every slice position once
        at_t = {tuple(np.round(np.asarray(f.ImagePositionPatient, float), 2)) for f in files if f.AcquisitionTime == t}
        assert at_t == positions
    assert {f.ContentTime for f in files} == set(times)
    assert 12 <= len(positions) <= 16


def test_max_slope_truth_recomputed(phantom):
    perf = phantom["truth"]["perfusion"]
    t = np.array(perf["time_s"])
    c = {k: np.array(v) for k, v in perf["enhancement_hu"].items()}
    assert perf["t_spl_s"] == t[np.argmax(c["spleen"])]
    for region in ("liver", "T1", "T2", "T3"):
        alp, pvp, hpi = convention_max_slope(t, c[region], c["aorta"], c["portal_vein"], c["spleen"])
        ms = perf["regions"][region]["max_slope"]
        assert ms["alp_ml_min_100ml"] == pytest.approx(alp, rel=1e-9)
        assert ms["pvp_ml_min_100ml"] == pytest.approx(pvp, rel=1e-9)
        assert ms["hpi_percent"] == pytest.approx(hpi, rel=1e-9)


def test_sampled_curves_are_the_fine_curves_at_the_acquisition_times(phantom):
    perf = phantom["truth"]["perfusion"]
    fine_t = np.array(perf["fine"]["time_s"])
    for name, values in perf["enhancement_hu"].items():
        fine = np.array(perf["fine"]["enhancement_hu"][name])
        assert np.allclose(np.interp(perf["time_s"], fine_t, fine), values, atol=1e-5), name


def test_tissue_curves_satisfy_the_discm_ode(phantom):
    perf = phantom["truth"]["perfusion"]
    t = np.array(perf["fine"]["time_s"])
    curves = {k: np.array(v) for k, v in perf["fine"]["enhancement_hu"].items()}
    ca, cp = curves["aorta"], curves["portal_vein"]
    for region in ("liver", "T1", "T2", "T3"):
        m = perf["regions"][region]["model"]
        k1a, k1p, k2 = m["k1a_per_s"], m["k1p_per_s"], m["k2_per_s"]
        assert k1a == pytest.approx(m["alp_ml_min_100ml"] / 6000.0)
        assert k1p == pytest.approx(m["pvp_ml_min_100ml"] / 6000.0)
        c = curves[region]
        # Integrated form: C = k1a*int(Ca) + k1p*int(Cpv) - k2*int(C)
        rhs = (k1a * cumulative_trapezoid(ca, t, initial=0) + k1p * cumulative_trapezoid(cp, t, initial=0)
               - k2 * cumulative_trapezoid(c, t, initial=0))
        assert np.max(np.abs(c - rhs)) < 0.02, region
        # An independent ODE solver driven by the stored input curves.
        sol = solve_ivp(lambda tt, y, k1a=k1a, k1p=k1p, k2=k2: [k1a * np.interp(tt, t, ca) + k1p * np.interp(tt, t, cp)
                                                              - k2 * y[0]],
                        (t[0], t[-1]), [0.0], t_eval=t, max_step=0.05, rtol=1e-8, atol=1e-8)
        assert np.max(np.abs(sol.y[0] - c)) < 0.02, region


def test_curves_and_kinetics_are_physiological(phantom):
    perf = phantom["truth"]["perfusion"]
    t = np.array(perf["fine"]["time_s"])
    f = {k: np.array(v) for k, v in perf["fine"]["enhancement_hu"].items()}
    t_peak = {k: t[np.argmax(v)] for k, v in f.items()}
    assert 250 <= f["aorta"].max() <= 350
    assert 6.0 <= t[np.argmax(f["aorta"] > 1.0)] <= 9.0               # arrival
    assert 150 <= f["portal_vein"].max() <= 200 and t_peak["portal_vein"] > t_peak["aorta"] + 5
    assert 1.0 <= t_peak["spleen"] - t_peak["aorta"] <= 6.0
    model = {r: perf["regions"][r]["model"] for r in ("liver", "T1", "T2", "T3")}
    assert model["liver"]["alp_ml_min_100ml"] == pytest.approx(12, abs=2)
    assert model["liver"]["pvp_ml_min_100ml"] == pytest.approx(74, abs=5)
    assert model["T1"]["alp_ml_min_100ml"] > 3 * model["liver"]["alp_ml_min_100ml"]
    assert model["T1"]["pvp_ml_min_100ml"] < 0.25 * model["liver"]["pvp_ml_min_100ml"]
    # hypovascular T2: total perfusion well below the liver's, within the published tumour range (65 +- 30)
    t2_tlp = model["T2"]["alp_ml_min_100ml"] + model["T2"]["pvp_ml_min_100ml"]
    assert 35 <= t2_tlp < 0.7 * model["liver"]["tlp_ml_min_100ml"]
    radii = [tm["radius_mm"] for tm in phantom["truth"]["tumours"]]
    assert len(radii) >= 3 and min(radii) >= 12


def test_perfusion_images_carry_the_truth_curves(phantom):
    """Mean HU inside each truth mask, per time point, equals baseline + truth curve (within noise)."""
    out, truth = phantom["dir"], phantom["truth"]
    masks = np.load(out / "truth" / "perfusion_masks.npz")
    files = _read_series(out / "ct-perfusion")
    iop = np.asarray(files[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    files.sort(key=lambda d: (d.AcquisitionTime, float(np.asarray(d.ImagePositionPatient, float) @ normal)))
    n_t = 15
    vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in files])
    vol = vol.reshape(n_t, -1, files[0].Rows, files[0].Columns)
    perf = truth["perfusion"]
    sd = perf["ct_noise_sd_hu"]
    # 10 HU at the full phantom's 0.78 x 0.78 x 2.5 mm voxel, scaled by sqrt(volume ratio) to 3.2 x 3.2 x 5 mm
    expected_sd = 10.0 * np.sqrt(0.78125 * 0.78125 * 2.5 / (3.2 * 3.2 * 5.0))
    assert sd == pytest.approx(expected_sd, abs=0.01)
    assert truth["ct_noise_sd_hu"] == {s: pytest.approx(expected_sd, abs=0.01)
                                       for s in ("ct-perfusion", "planning-ct", "spect-gsa-ct", "spect-maa-ct")}
    for region, mask_name in (("aorta", "aorta"), ("portal_vein", "portal_vein"), ("spleen", "spleen"),
                              ("liver", "liver_parenchyma"), ("T1", "T1"), ("T2", "T2"), ("T3", "T3")):
        mask = masks[mask_name]
        n = int(mask.sum())
        assert n >= 20, mask_name
        expected = perf["regions"][region]["baseline_hu"] + np.array(perf["enhancement_hu"][region])
        measured = vol[:, mask].mean(axis=1)
        assert np.all(np.abs(measured - expected) < 5 * sd / np.sqrt(n) + 0.6), region
    noise = vol[0][masks["liver_parenchyma"]].std()
    assert 0.8 * expected_sd < noise < 1.2 * expected_sd


def test_spect_hot_and_cold_structures_land_at_truth_positions(phantom):
    out, truth = phantom["dir"], phantom["truth"]
    t1 = next(t for t in truth["tumours"] if t["name"] == "T1")
    # MAA: the hottest (lightly smoothed) point is the T/N = 8 tumour.
    img = sitk.ReadImage(str(out / "spect-maa" / "NM00001.dcm"))
    arr = gaussian_filter(sitk.GetArrayFromImage(img).astype(float), 1.0)
    k, i, j = np.unravel_index(np.argmax(arr), arr.shape)
    hot = np.array(img.TransformIndexToPhysicalPoint([int(j), int(i), int(k)]))
    assert np.linalg.norm(hot - t1["centre_mm"]["maa"]) < 6.0
    # GSA: the tumour centre is cold relative to the liver around it.
    img = sitk.ReadImage(str(out / "spect-gsa" / "NM00001.dcm"))
    arr = gaussian_filter(sitk.GetArrayFromImage(img).astype(float), 1.0)
    idx = np.round(img.TransformPhysicalPointToContinuousIndex(t1["centre_mm"]["gsa"])).astype(int)
    assert arr[idx[2], idx[1], idx[0]] < 0.5 * arr.max()


def test_nm_objects_identify_tracer_and_geometry(phantom):
    for visit, code, text in (("gsa", "446534003", "Tc-99m GSA"), ("maa", "85693008", "Tc-99m MAA")):
        ds = pydicom.dcmread(phantom["dir"] / f"spect-{visit}" / "NM00001.dcm", stop_before_pixels=True)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        assert ds.FrameIncrementPointer == pydicom.tag.Tag("SliceVector")
        assert ds.NumberOfSlices == ds.NumberOfFrames == len(ds.SliceVector)
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        assert rp.Radiopharmaceutical == text
        assert rp.RadiopharmaceuticalCodeSequence[0].CodeValue == code
        assert rp.RadiopharmaceuticalCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert float(ds.SpacingBetweenSlices) > 0 and float(ds.PixelSpacing[0]) == pytest.approx(4.42)
        assert len(ds.DetectorInformationSequence[0].ImageOrientationPatient) == 6
        assert "EnergyWindowInformationSequence" in ds and "RotationInformationSequence" in ds


def test_every_object_passes_dciodvfy(phantom):
    from concurrent.futures import ThreadPoolExecutor

    out = phantom["dir"]
    paths = sorted(p for p in out.rglob("*.dcm") if "truth" not in p.parts)  # every file the phantom writes
    assert {p.parent.name for p in paths} == {"ct-perfusion", "planning-ct", "spect-gsa-ct", "spect-maa-ct",
                                              "spect-gsa", "spect-maa", "planning-rtstruct", "perfusion-rtstruct"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = dict(zip(paths, pool.map(_dciodvfy_errors, paths), strict=True))
    assert {p: e for p, e in errors.items() if e} == {}


def test_perfusion_rtstruct_encodes_the_truth_regions_on_the_first_time_point(phantom):
    import rtstruct

    out = phantom["dir"]
    rtss = pydicom.dcmread(next((out / "perfusion-rtstruct").glob("*.dcm")))
    cts = _read_series(out / "ct-perfusion")
    t0 = min(ds.AcquisitionTime for ds in cts)
    first = [ds for ds in cts if ds.AcquisitionTime == t0]
    masks = rtstruct.read_masks(rtss, first)
    truth = np.load(out / "truth" / "perfusion_masks.npz")
    assert set(masks) == {"Normal liver", "T1", "T2", "T3"}
    assert np.array_equal(masks["Normal liver"], truth["liver_parenchyma"])
    for name in ("T1", "T2", "T3"):
        assert np.array_equal(masks[name], truth[name]) and masks[name].sum() > 50


def test_rigid_transform_aligns_the_spect_ct_with_the_planning_ct(phantom):
    """Resample the GSA SPECT/CT CT onto the planning CT with the truth transform: images agree."""
    out, truth = phantom["dir"], phantom["truth"]
    tr = truth["transforms"]["planning_to_spect_gsa"]
    m = np.array(tr["matrix"])
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
    assert 1.0 < np.degrees(np.arccos((np.trace(m[:3, :3]) - 1) / 2)) < 10.0
    assert 10.0 < np.linalg.norm(m[:3, 3]) < 100.0
    fixed = _read_ct(out / "planning-ct")
    moving = _read_ct(out / "spect-gsa-ct")
    # ITK: a transform maps points of the fixed (planning) space to the moving (SPECT/CT) space.
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(m[:3, :3].ravel().tolist())
    transform.SetTranslation(m[:3, 3].tolist())
    aligned = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, -5000.0))
    naive = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, -5000.0))
    ref = sitk.GetArrayFromImage(fixed)
    body = (ref > -500) & (aligned > -4000) & (naive > -4000)
    err_aligned = np.mean(np.abs(aligned[body] - ref[body]))
    err_naive = np.mean(np.abs(naive[body] - ref[body]))
    assert err_aligned < 30.0 and err_aligned < 0.3 * err_naive


def _read_ct(directory: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    return sitk.Cast(reader.Execute(), sitk.sitkFloat32)


def test_fls_truth_recomputed_with_simpleitk(phantom):
    """FLS = noiseless GSA mapped onto the planning CT (SimpleITK, NM geometry from DICOM) >= 60 % of max, in
    the liver; compared with the stored truth mask."""
    out, truth = phantom["dir"], phantom["truth"]
    planning = _read_ct(out / "planning-ct")
    nm_geometry = sitk.ReadImage(str(out / "spect-gsa" / "NM00001.dcm"))
    expected = np.load(out / "truth" / "spect_gsa_expected.npz")["expected_counts"]
    spect = sitk.GetImageFromArray(expected.astype(np.float32))
    spect.CopyInformation(nm_geometry)
    m = np.array(truth["transforms"]["planning_to_spect_gsa"]["matrix"])
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(m[:3, :3].ravel().tolist())
    transform.SetTranslation(m[:3, 3].tolist())
    mapped = sitk.GetArrayFromImage(sitk.Resample(spect, planning, transform, sitk.sitkLinear, 0.0))
    masks = np.load(out / "truth" / "planning_masks.npz")
    liver = masks["liver"]
    fls = (mapped >= 0.6 * mapped.max()) & liver
    dice = 2 * np.sum(fls & masks["fls"]) / (fls.sum() + masks["fls"].sum())
    assert dice > 0.995
    assert np.array_equal(masks["itv"], liver & ~masks["fls"])
    frac = masks["fls"].sum() / liver.sum()
    assert 0.3 < frac < 0.85, f"FLS is {frac:.0%} of the liver"
    vox = truth["grids"]["planning"]["spacing_mm_kij"]
    assert truth["gsa"]["fls_volume_ml"] == pytest.approx(masks["fls"].sum() * np.prod(vox) / 1000)


def test_ptv_is_itv_plus_5_mm(phantom):
    out, truth = phantom["dir"], phantom["truth"]
    masks = np.load(out / "truth" / "planning_masks.npz")
    itv, ptv = masks["itv"], masks["ptv"]
    affine = masks["affine_kij_to_patient"]
    assert np.all(ptv[itv]), "PTV must contain the ITV"

    def mm(mask):
        idx = np.argwhere(mask).astype(float)
        return idx @ affine[:3, :3].T + affine[:3, 3]

    spacing = np.array(truth["grids"]["planning"]["spacing_mm_kij"])
    tree = cKDTree(mm(itv))
    d_ptv, _ = tree.query(mm(ptv))
    assert d_ptv.max() <= 5.0 + 1e-6 < 5.0 + np.linalg.norm(spacing)
    # ...and every voxel within 5 mm of the ITV is in the PTV (margin is physical, not a voxel ball).
    d_out, _ = tree.query(mm(~ptv), distance_upper_bound=5.0 + 1e-6)
    assert np.all(np.isinf(d_out))


def test_liver_rtstruct_matches_truth_via_plastimatch(phantom, tmp_path):
    out = phantom["dir"]
    rtss = next((out / "planning-rtstruct").glob("*.dcm"))
    prefix = tmp_path / "raster"
    result = subprocess.run(["plastimatch", "convert", "--input", str(rtss), "--referenced-ct",
                             str(out / "planning-ct"), "--output-prefix", str(prefix), "--xor-contours"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    raster = sitk.ReadImage(str(next(prefix.glob("Liver*"))))
    planning = _read_ct(out / "planning-ct")
    raster = sitk.Resample(raster, planning, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    got = sitk.GetArrayFromImage(raster) > 0
    truth_liver = np.load(out / "truth" / "planning_masks.npz")["liver"]
    dice = 2 * np.sum(got & truth_liver) / (got.sum() + truth_liver.sum())
    assert dice >= 0.97, dice


def test_planning_mask_order_is_rtstruct_sort_order(phantom):
    import rtstruct

    out, truth = phantom["dir"], phantom["truth"]
    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in (out / "planning-ct").glob("*.dcm")]
    order = [ds.SOPInstanceUID for ds in rtstruct.sort_slices(cts)]
    assert order == truth["masks"]["planning_sop_instance_uids_in_k_order"]
    rtss = pydicom.dcmread(next((out / "planning-rtstruct").glob("*.dcm")))
    liver = rtstruct.read_masks(rtss, cts)["Liver"]
    assert np.array_equal(liver, np.load(out / "truth" / "planning_masks.npz")["liver"])


def test_maa_truth(phantom):
    maa = phantom["truth"]["maa"]
    assert all(3.0 <= v <= 8.0 for v in maa["tn_ratio"].values())
    assert maa["lung_shunt_fraction_rendered"] == pytest.approx(maa["lung_shunt_fraction"], abs=1e-9)
