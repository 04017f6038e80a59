"""CT perfusion building blocks on synthetic data with hand-computed or independently simulated truth."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage
from scipy.integrate import solve_ivp

from node.perfusion.denoise import CurveFilter, denoise_within, passes_for
from node.perfusion.discm import discm_maps, fit_discm
from node.perfusion.errors import InputCurveError, PerfusionInputError
from node.perfusion.inputs import find_inputs, match_input_rois, sphere_mask
from node.perfusion.maxslope import MaxSlopeInputs, max_slope_maps, phase_windows
from node.perfusion.preprocess import estimate_noise
from node.perfusion.settings import InputRoiOverride, PerfusionSettings
from node.perfusion.stats import max_slope_noise_sd
from node.perfusion.tissue_classes import class_mean_curves, curve_classes
from node.perfusion.volume4d import assemble


# ------------------------------------------------------------------ maximum slope
def test_max_slope_follows_the_documented_convention_on_nonuniform_times() -> None:
    times = np.array([0.0, 2.0, 5.0, 7.0, 10.0, 14.0])
    tissue = np.array([0.0, 1.0, 4.0, 9.0, 12.0, 13.0])
    # [1, 2, 1] / 4 over the samples ([2, 1] / 3 and [1, 2] / 3 at the ends):
    # 1/3, 1.5, 4.5, 8.5, 11.5, 38/3 -> slopes 0.5833, 1.0, 2.0, 1.0, 0.2917 HU/s
    inputs = MaxSlopeInputs(t_spl=7.0, aorta_peak_hu=250.0, portal_peak_hu=200.0)
    maps = max_slope_maps(tissue[:, None].astype(np.float32), times, inputs)
    # arterial intervals end at or before 7 s -> max 2.0 HU/s; portal intervals start at or after 7 s -> 1.0
    assert maps["ALP"][0] == pytest.approx(6000 * 2.0 / 250, rel=1e-5)
    assert maps["PVP"][0] == pytest.approx(6000 * 1.0 / 200, rel=1e-5)
    assert maps["TLP"][0] == pytest.approx(78.0, rel=1e-5)
    assert maps["HPI"][0] == pytest.approx(100 * 48 / 78, rel=1e-5)


def test_phase_split_at_the_first_or_last_sample_is_refused() -> None:
    times = np.arange(5) * 3.0
    with pytest.raises(InputCurveError, match="first time point"):
        phase_windows(times, 0.0)
    with pytest.raises(InputCurveError, match="last time point"):
        phase_windows(times, 12.0)


def test_steepest_interval_selection_removes_the_noise_bias_of_the_maximum() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(8) * 3.0
    curve = np.array([0, 0, 1.0, 2.4, 3.8, 5.2, 6.0, 6.5])  # two nearly equal arterial slopes: worst case
    inputs = MaxSlopeInputs(t_spl=15.0, aorta_peak_hu=300.0, portal_peak_hu=200.0)
    truth = max_slope_maps(curve[:, None].astype(np.float32), times, inputs)["ALP"][0]
    noisy = (curve[:, None] + rng.normal(0, 1.5, (8, 20000))).astype(np.float32)
    plain = max_slope_maps(noisy, times, inputs)["ALP"].mean()
    # the selection curves carry far less noise (a wider smoothing), the values keep the voxel's own noise
    select = (curve[:, None] + rng.normal(0, 0.15, (8, 20000))).astype(np.float32)
    selected = max_slope_maps(noisy, times, inputs, select)["ALP"].mean()
    assert plain > 1.1 * truth
    assert selected == pytest.approx(truth, rel=0.02)


# ------------------------------------------------------------------ DISCM
def _gamma(t: np.ndarray, t0: float, peak: float, rise: float, alpha: float = 3.0) -> np.ndarray:
    x = np.clip((t - t0) / rise, 0, None)
    return peak * x ** alpha * np.exp(alpha * (1 - x))


def _simulate(k1a: float, k1p: float, k2: float, times: np.ndarray, tau_a: float = 0.0) -> tuple[np.ndarray, ...]:
    """DISCM tissue curve by scipy's ODE solver from analytic inputs (independent of the node's code)."""
    ca = lambda t: _gamma(np.asarray(t), 7.0, 280.0, 6.0)  # noqa: E731
    cp = lambda t: _gamma(np.asarray(t), 12.0, 180.0, 9.0, 2.0)  # noqa: E731
    sol = solve_ivp(lambda t, c: k1a * ca(t - tau_a) + k1p * cp(t) - k2 * c, (0, times[-1]), [0.0],
                    t_eval=times, max_step=0.05, rtol=1e-8, atol=1e-10)
    return sol.y[0], ca(times), cp(times)


def test_discm_recovers_known_rate_constants_for_many_voxels_at_once() -> None:
    times = np.arange(15) * 3.0
    params = [(12 / 6000, 74 / 6000, 0.048), (70 / 6000, 8 / 6000, 0.037), (30 / 6000, 40 / 6000, 0.039)]
    curves = []
    for k1a, k1p, k2 in params:
        c, ca, cp = _simulate(k1a, k1p, k2, times)
        curves.append(c)
    maps = discm_maps(fit_discm(np.array(curves).T.astype(np.float32), times, ca, cp))
    for n, (k1a, k1p, k2) in enumerate(params):
        # OSIPI DCE flow tolerance: 5 mL/100 mL/min + 10 %
        assert abs(maps["ALP"][n] - 6000 * k1a) <= 5 + 0.1 * 6000 * k1a
        assert abs(maps["PVP"][n] - 6000 * k1p) <= 5 + 0.1 * 6000 * k1p
        assert maps["HPI"][n] == pytest.approx(100 * k1a / (k1a + k1p), abs=3.0)
        assert maps["MTT"][n] == pytest.approx(1 / k2, rel=0.1)
        assert maps["DV"][n] == pytest.approx(100 * (k1a + k1p) / k2, rel=0.1)


def test_discm_delay_grid_finds_an_arterial_delay() -> None:
    times = np.arange(15) * 3.0
    c, ca, cp = _simulate(40 / 6000, 40 / 6000, 0.05, times, tau_a=3.0)
    fit = fit_discm(c[:, None].astype(np.float32), times, ca, cp, delays_a=(0, 1, 2, 3, 4), delays_p=(0,))
    assert fit.tau_a[0] == pytest.approx(3.0)
    assert 6000 * fit.k1a[0] == pytest.approx(40, rel=0.1)


# ------------------------------------------------------------------ 4D assembly
def _classic_series(data: np.ndarray, times: list[float], spacing: float = 3.0) -> list[Dataset]:
    """Classic CT slices (HU = stored - 1024) of a (T, Z, Y, X) array, in scrambled file order."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    start = dt.datetime(2026, 1, 2, 23, 59, 50)  # crosses midnight: dates must be used
    out = []
    for t, secs in enumerate(times):
        when = start + dt.timedelta(seconds=secs)
        for z in range(data.shape[1]):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.Modality, ds.PatientID = "CT", "P1"
            ds.InstanceNumber = 1 + (t * 7 + z * 3) % 97  # unrelated to position or time
            ds.ImagePositionPatient = [-50.0, -60.0, 10.0 + 5.0 * z]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [spacing, spacing]
            ds.AcquisitionDate = when.strftime("%Y%m%d")
            ds.AcquisitionTime = when.strftime("%H%M%S.%f")
            ds.Rows, ds.Columns = data.shape[2], data.shape[3]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelData = (data[t, z] + 1024).astype(np.uint16).tobytes()
            out.append(ds)
    rng = np.random.default_rng(0)
    return [out[i] for i in rng.permutation(len(out))]


def test_classic_series_is_grouped_by_position_and_sorted_by_time() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(-100, 300, (4, 3, 8, 8)).astype(np.float32)
    times = [0.0, 2.0, 5.0, 11.0]  # non-uniform, crossing midnight
    vol = assemble(_classic_series(data, times))
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.times, times, atol=1e-6)
    np.testing.assert_allclose(vol.grid.origin, [-50, -60, 10])
    np.testing.assert_allclose(vol.grid.spacing, [5, 3, 3])


def test_fine_pixels_are_block_averaged_onto_a_working_grid_with_shifted_origin() -> None:
    data = np.zeros((3, 2, 8, 8), np.float32)
    data[:, :, :2, :2] = 100.0  # one 2x2 block
    vol = assemble(_classic_series(data, [0, 3, 6], spacing=0.8))
    assert vol.factor == 2 and vol.data.shape == (3, 2, 4, 4)
    assert vol.data[0, 0, 0, 0] == pytest.approx(100.0) and vol.data[0, 0, 1, 1] == 0.0
    np.testing.assert_allclose(vol.grid.origin, [-50 + 0.4, -60 + 0.4, 10])  # centre of the first block


@pytest.mark.parametrize("damage, reason", [
    ("two_times", "at least 3"),
    ("no_times", "no acquisition time"),
    ("spacing", "pixel spacing"),
    ("missing_slice", "different numbers of time points"),
    ("duplicate", "same acquisition time"),
])
def test_inconsistent_series_are_refused_with_a_reason(damage: str, reason: str) -> None:
    data = np.zeros((4, 3, 8, 8), np.float32)
    series = _classic_series(data, [0, 3, 6, 9])
    if damage == "two_times":
        series = _classic_series(data[:2], [0, 3])
    elif damage == "no_times":
        for ds in series:
            del ds.AcquisitionTime
    elif damage == "spacing":
        series[5].PixelSpacing = [2.5, 2.5]
    elif damage == "missing_slice":
        series = series[1:]
    elif damage == "duplicate":
        same = [ds for ds in series if ds.ImagePositionPatient == series[0].ImagePositionPatient]
        same[1].AcquisitionDate, same[1].AcquisitionTime = same[0].AcquisitionDate, same[0].AcquisitionTime
    with pytest.raises(PerfusionInputError, match=reason):
        assemble(series)


# ------------------------------------------------------------------ pre-processing
def _two_tissues(noise_hu: float, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 'liver' slab with a 'tumour' block inside it (different curve shapes), white noise on top.
    Returns (enh (T, Z, Y, X), tumour mask, liver curve, tumour curve)."""
    t = np.arange(15) * 3.0
    liver = 30.0 / (1 + np.exp(-(t - 24.0) / 3.0))
    tumour = 35.0 / (1 + np.exp(-(t - 14.0) / 2.0))
    shape = (8, 24, 24)
    tum = np.zeros(shape, bool)
    tum[2:6, 8:16, 8:16] = True
    clean = np.where(tum[None], tumour[:, None, None, None], liver[:, None, None, None]).astype(np.float32)
    noisy = clean + np.random.default_rng(seed).normal(0, noise_hu, clean.shape).astype(np.float32)
    return noisy, tum, liver, tumour


def test_edge_preserving_filter_removes_noise_but_keeps_a_small_lesion_apart() -> None:
    enh, tum, liver, tumour = _two_tissues(2.0)
    mask = np.ones(tum.shape, bool)
    mask[:, :, :2] = False  # e.g. fat: never used, comes out 0
    report = denoise_within(enh, mask, 2.0)
    assert report.passes == passes_for(2.0)[0] >= 2
    # noise within each tissue, away from nothing but its own kind
    core = np.zeros_like(tum)
    core[3:5, 10:14, 10:14] = True
    liver_far = np.zeros_like(tum)
    liver_far[:, :, 18:] = True
    resid_liver = enh[:, liver_far] - liver[:, None]
    assert resid_liver.std() < 0.5  # from 2.0 HU
    # the lesion's edge voxels are not pulled towards the liver: every tumour voxel keeps the tumour curve
    edge = tum & ~core
    assert np.abs(enh[:, edge].mean(axis=1) - tumour).max() < 0.6
    assert np.abs(enh[:, tum].mean(axis=1) - tumour).max() < 0.6
    # a plain Gaussian of the same reach mixes them (what this filter is for)
    from scipy import ndimage
    gauss = ndimage.gaussian_filter(_two_tissues(2.0)[0], (0, 1.15, 1.15, 1.15))
    assert np.abs(gauss[:, edge].mean(axis=1) - tumour).max() > 3.0
    assert np.all(enh[:, ~mask] == 0)


def test_native_image_keeps_apart_tissues_whose_curves_are_alike() -> None:
    """A lesion whose enhancement differs from the liver's by little more than the noise (as the mixed T3's does)
    but whose native attenuation is 13 HU lower: curves alone let the filter mix the two at the lesion's edge;
    with the native image in the similarity they stay apart."""
    t = np.arange(15) * 3.0
    liver = 30.0 / (1 + np.exp(-(t - 24.0) / 3.0))
    lesion = 30.0 / (1 + np.exp(-(t - 22.0) / 3.0))  # 8 HU (norm over 15 samples) from the liver's curve
    shape = (8, 24, 24)
    tum = np.zeros(shape, bool)
    tum[2:6, 8:16, 8:16] = True
    edge = tum & ~ndimage.binary_erosion(tum)
    rng = np.random.default_rng(5)
    clean = np.where(tum[None], lesion[:, None, None, None], liver[:, None, None, None]).astype(np.float32)
    noisy = clean + rng.normal(0, 2.0, clean.shape).astype(np.float32)
    native = (np.where(tum, 42.0, 55.0) + rng.normal(0, 2.0 / np.sqrt(3), shape)).astype(np.float32)
    mask = np.ones(shape, bool)
    liver_share = {}  # how much of the liver's curve the lesion's edge voxels took on
    for guided in (False, True):
        enh = noisy.copy()
        report = denoise_within(enh, mask, 2.0, native if guided else None, 2.0 / np.sqrt(3) if guided else None)
        assert report.native_guide is guided
        moved = enh[:, edge].mean(axis=1) - lesion
        liver_share[guided] = float(np.dot(moved, liver - lesion) / np.dot(liver - lesion, liver - lesion))
    assert liver_share[False] > 0.08
    assert abs(liver_share[True]) < 0.03


def test_no_noise_no_filtering() -> None:
    enh, tum, *_ = _two_tissues(0.0)
    before = enh.copy()
    f = CurveFilter(np.ones(tum.shape, bool), 0.0)
    f.run(enh, 3)
    assert f.passes == 0 and np.array_equal(enh, before)


def test_class_based_interval_choice_removes_the_selection_bias() -> None:
    """Two equal steepest intervals (after the convention's smoothing) under noise of 0.5 HU: choosing per
    voxel on its own curve reads the maximum of noisy slopes (biased up); choosing on the class mean curve reads
    the true steepest interval. Three tissues of different shape share the field, as in a patient."""
    times = np.arange(8) * 3.0
    curve = np.array([0, 0, 3.0, 6.2, 9.3, 12.4, 13.0, 13.2])  # smoothed slopes 6-9 s and 9-12 s both 1.04 HU/s
    others = [np.array([0, 0, 1.0, 5.0, 15.0, 20.0, 22.0, 23.0]), np.array([0, 0, 8.0, 12.0, 14.0, 15.0, 15.5, 16.0])]
    rng = np.random.default_rng(4)
    curves = np.concatenate([c[:, None] + rng.normal(0, 0.5, (8, 20000)) for c in [curve, *others]],
                            axis=1).astype(np.float32)
    inputs = MaxSlopeInputs(t_spl=12.0, aorta_peak_hu=300.0, portal_peak_hu=200.0)
    truth = max_slope_maps(curve[:, None].astype(np.float32), times, inputs)["ALP"][0]
    own = max_slope_maps(curves, times, inputs)["ALP"][:20000].mean()
    labels = curve_classes(curves)
    by_class = max_slope_maps(curves, times, inputs, class_mean_curves(curves, labels))["ALP"][:20000].mean()
    assert own > 1.03 * truth  # the bias the class choice removes (most of)
    assert by_class == pytest.approx(truth, rel=0.025)
    assert by_class - truth < 0.6 * (own - truth)


def test_curve_classes_separate_different_shapes() -> None:
    enh, tum, *_ = _two_tissues(0.5)
    curves = enh.reshape(enh.shape[0], -1)
    labels = curve_classes(curves, n_classes=6)
    t_labels, l_labels = set(labels[tum.ravel()]), set(labels[~tum.ravel()])
    assert not t_labels & l_labels
    means = class_mean_curves(curves, labels)
    assert means.shape == curves.shape
    # noiseless: two distinct shapes, far fewer than the classes asked for; one class each, and no warning
    import warnings
    clean, tum, liver, tumour = _two_tissues(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = curve_classes(clean.reshape(clean.shape[0], -1))
    assert len(set(labels[tum.ravel()])) == len(set(labels[~tum.ravel()])) == 1
    assert labels[tum.ravel()][0] != labels[~tum.ravel()][0]


def test_max_slope_noise_sd_matches_a_simulation() -> None:
    """The recorded 1-SD noise of a region's max slope equals the spread of the slope of the region's mean curve
    over many independent noise draws (temporal [1, 2, 1] smoothing, then a forward difference, the interval
    fixed as on a noiseless curve)."""
    times = np.arange(15) * 3.0
    n_voxels, noise = 150, 1.7
    rng = np.random.default_rng(9)
    means = rng.normal(0, noise, (2000, 15, n_voxels)).mean(axis=2)  # region-mean curves of pure noise
    smoothed = (means[:, 5:8] * [1.0, 2.0, 1.0]).sum(axis=1) / 4, (means[:, 6:9] * [1.0, 2.0, 1.0]).sum(axis=1) / 4
    slopes = (smoothed[1] - smoothed[0]) / 3.0
    sd = max_slope_noise_sd(noise, n_voxels, times, aorta_peak_hu=270.0, portal_peak_hu=190.0)
    # the recorded value is the largest over the intervals (an end interval, ~3 % above the interior ones)
    assert sd["ALP"] == pytest.approx(6000 * slopes.std() / 270.0, rel=0.1)
    assert sd["PVP"] == pytest.approx(6000 * slopes.std() / 190.0, rel=0.1)


def test_noise_estimate() -> None:
    rng = np.random.default_rng(2)
    hu = (50 + rng.normal(0, 8.0, (4, 10, 40, 40))).astype(np.float32)
    hu[2:] += 30.0  # enhancement between frames must not count as noise
    assert estimate_noise(hu) == pytest.approx(8.0, rel=0.1)
    assert passes_for(0.0) == (0, 0.0)
    assert passes_for(2.0)[0] < passes_for(8.0)[0]


# ------------------------------------------------------------------ inputs
def test_rtstruct_roi_names_are_matched_to_inputs() -> None:
    found = match_input_rois(["Liver", "AORTA", "Portal Vein", "V. portae", "Milz", "T1"])
    assert found == {"aorta": "AORTA", "portal_vein": "Portal Vein", "spleen": "Milz"}


def test_configured_spheres_replace_automatic_detection() -> None:
    vol = assemble(_classic_series(np.zeros((3, 5, 20, 20), np.float32), [0, 3, 6]))
    centre = tuple(vol.grid.index_to_patient(np.array([2, 10, 10])))
    sphere = sphere_mask(vol.grid, centre, 7.0)
    # voxel offsets (5 mm slices, 3 mm pixels) within 7 mm, counted by hand
    expected = sum(1 for k in range(-2, 3) for j in range(-3, 4) for i in range(-3, 4)
                   if (5 * k) ** 2 + (3 * j) ** 2 + (3 * i) ** 2 <= 49)
    assert sphere.sum() == expected == 39
    cfg = PerfusionSettings(aorta=InputRoiOverride(centre, 7.0), portal_vein=InputRoiOverride(centre, 4.0),
                         spleen=InputRoiOverride(centre, 1.0))
    rois = find_inputs(vol.data, vol.grid, cfg)
    assert {r.source for r in rois.values()} == {"config"}
    assert rois["aorta"].mask.sum() == 39 and rois["spleen"].mask.sum() == 1
    np.testing.assert_allclose(rois["aorta"].centre_mm, centre, atol=1e-6)


def test_a_series_without_contrast_is_refused_not_mapped() -> None:
    from node.errors import AnalysisError
    from node.perfusion.pipeline import run_perfusion

    rng = np.random.default_rng(4)
    data = np.full((4, 4, 24, 24), -1000.0, np.float32)
    data[:, :, 4:20, 4:20] = 40.0 + rng.normal(0, 5, (4, 4, 16, 16))  # a body that never enhances
    with pytest.raises(AnalysisError, match="no arterial enhancement"):
        run_perfusion(_classic_series(data, [0, 3, 6, 9]), PerfusionSettings())
