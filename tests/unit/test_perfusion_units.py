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
from node.perfusion.discm import Convolver, fit_curve, voxel_flows, voxel_maps
from node.perfusion.errors import InputCurveError, PerfusionInputError
from node.perfusion.inputs import find_inputs, match_input_rois, sphere_mask
from node.perfusion.maxslope import MaxSlopeInputs, max_slope_maps, phase_windows
from node.perfusion.preprocess import estimate_noise
from node.perfusion.qualify import Z95, AcquisitionCheck, acquisition_checks, max_slope_curve_sd, qualify
from node.perfusion.settings import InputRoiOverride, PerfusionSettings
from node.perfusion.stats import max_slope_noise_sd
from node.perfusion.tissue_classes import class_mean_curves, curve_classes
from node.perfusion.volume4d import assemble


# ------------------------------------------------------------------ maximum slope
def test_max_slope_is_the_textbook_definition_on_nonuniform_times() -> None:
    times = np.array([0.0, 2.0, 5.0, 7.0, 10.0, 14.0])
    tissue = np.array([0.0, 1.0, 4.0, 9.0, 12.0, 13.0])
    # slopes between consecutive samples, no smoothing: 0.5, 1.0, 2.5, 1.0, 0.25 HU/s
    inputs = MaxSlopeInputs(t_spl=7.0, aorta_peak_hu=250.0, portal_peak_hu=200.0)
    maps = max_slope_maps(tissue[:, None].astype(np.float32), times, inputs)
    # arterial intervals end at or before 7 s -> max 2.5 HU/s; portal intervals start at or after 7 s -> 1.0
    assert maps["ALP"][0] == pytest.approx(6000 * 2.5 / 250, rel=1e-5)
    assert maps["PVP"][0] == pytest.approx(6000 * 1.0 / 200, rel=1e-5)
    assert maps["TLP"][0] == pytest.approx(90.0, rel=1e-5)
    assert maps["HPI"][0] == pytest.approx(100 * 60 / 90, rel=1e-5)


def test_a_tissue_without_inflow_has_no_hpi() -> None:
    times = np.arange(6) * 3.0
    flat = np.zeros((6, 1), np.float32)
    maps = max_slope_maps(flat, times, MaxSlopeInputs(t_spl=6.0, aorta_peak_hu=250.0, portal_peak_hu=200.0))
    assert maps["ALP"][0] == maps["PVP"][0] == 0 and np.isnan(maps["HPI"][0])


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


def _simulate(k1a: float, k1p: float, k2: float, times: np.ndarray, tau_a: float = 0.0,
              tau_p: float = 0.0) -> tuple[np.ndarray, ...]:
    """DISCM tissue curve by scipy's ODE solver from analytic inputs (independent of the node's code)."""
    ca = lambda t: _gamma(np.asarray(t), 7.0, 280.0, 6.0)  # noqa: E731
    cp = lambda t: _gamma(np.asarray(t), 12.0, 180.0, 9.0, 2.0)  # noqa: E731
    sol = solve_ivp(lambda t, c: k1a * ca(t - tau_a) + k1p * cp(t - tau_p) - k2 * c, (0, times[-1]), [0.0],
                    t_eval=times, max_step=0.05, rtol=1e-8, atol=1e-10)
    return sol.y[0], ca(times), cp(times)


def test_discm_fits_the_convolution_model_with_delays_off_the_grid() -> None:
    """Tissue curves from scipy's ODE solver (independent of the node's convolution) with arterial and portal
    delays between samples: the five-parameter fit of a curve recovers flows, k2 and delays."""
    times = np.arange(30) * 1.5
    for k1a, k1p, k2, tau_a, tau_p in ((12 / 6000, 74 / 6000, 0.048, 1.3, 0.4), (70 / 6000, 8 / 6000, 0.037, 2.2, 1.7),
                                       (30 / 6000, 40 / 6000, 0.039, 0.0, 2.9)):
        c, ca, cp = _simulate(k1a, k1p, k2, times, tau_a, tau_p)
        fit = fit_curve(Convolver(times, ca, cp), c)
        assert fit.values["ALP"] == pytest.approx(6000 * k1a, rel=0.02)
        assert fit.values["PVP"] == pytest.approx(6000 * k1p, rel=0.02)
        assert fit.k2 == pytest.approx(k2, rel=0.02)
        assert fit.tau_a == pytest.approx(tau_a, abs=0.1) and fit.tau_p == pytest.approx(tau_p, abs=0.15)
        assert fit.values["HPI"] == pytest.approx(100 * k1a / (k1a + k1p), abs=0.5)
        assert fit.sd["ALP"] < 0.01 * fit.values["ALP"]  # noiseless and the model fits: small uncertainty


def test_discm_curve_uncertainty_matches_a_simulation() -> None:
    """The 1-SD a curve fit reports for its flows equals their spread over independent noise draws."""
    times = np.arange(20) * 2.0
    c, ca, cp = _simulate(15 / 6000, 70 / 6000, 0.05, times, 1.0, 0.5)
    conv = Convolver(times, ca, cp)
    rng = np.random.default_rng(3)
    noise = 0.8
    fits = [fit_curve(conv, c + rng.normal(0, noise, c.size), noise) for _ in range(40)]
    for p in ("ALP", "PVP"):
        spread = np.std([f.values[p] for f in fits], ddof=1)
        reported = np.median([f.sd[p] for f in fits])
        assert reported == pytest.approx(spread, rel=0.35), p


def test_discm_voxel_flows_are_unbiased_under_noise() -> None:
    """Many voxels of one tissue with 1 HU of noise each: the mean of the per-voxel flows at the tissue's k2
    and delays is the flow fitted on the noiseless curve (linear least squares)."""
    times = np.arange(15) * 3.0
    c, ca, cp = _simulate(12 / 6000, 74 / 6000, 0.048, times, 1.0, 0.5)
    conv = Convolver(times, ca, cp)
    fit = fit_curve(conv, c)
    y = c[:, None] + np.random.default_rng(1).normal(0, 1.0, (times.size, 50000))
    maps = voxel_maps(voxel_flows(conv, y, fit.k2, fit.tau_a, fit.tau_p))
    assert float(np.mean(maps["ALP"])) == pytest.approx(fit.values["ALP"], rel=0.01)
    assert float(np.mean(maps["PVP"])) == pytest.approx(fit.values["PVP"], rel=0.005)
    assert fit.values["ALP"] == pytest.approx(12.0, rel=0.06)  # 3 s sampling of a 6 s bolus rise: spline input
    assert float(np.mean(maps["MTT"])) == pytest.approx(fit.values["MTT"], rel=1e-6)


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
    ("orientation", "inconsistent geometry: slices have different ImageOrientationPatient"),
    ("size", "inconsistent geometry: slices have different sizes"),
    ("not_perpendicular", "not perpendicular"),
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
    elif damage == "orientation":
        series[4].ImageOrientationPatient = [1, 0, 0, 0, 0.995, 0.0998]
    elif damage == "size":
        series[4].Rows = 9
    elif damage == "not_perpendicular":
        for ds in series:
            ds.ImageOrientationPatient = [1, 0, 0, 0.1, 0.995, 0]
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
    """Two equal steepest intervals under noise of 0.5 HU: choosing per voxel on its own curve reads the maximum
    of noisy slopes (biased up); choosing on the class mean curve reads the true steepest interval. Three tissues
    of different shape share the field, as in a patient."""
    times = np.arange(8) * 3.0
    curve = np.array([0, 0, 2.0, 5.0, 8.0, 10.0, 11.0, 11.5])  # slopes 6-9 s and 9-12 s both 1.0 HU/s
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
    """The 1-SD noise of a region's max slope equals the spread of the slope of the region's mean curve over many
    independent noise draws (a difference of two samples, the interval fixed as on a noiseless curve); so does
    the 1-SD the node reports with each region value (node.perfusion.qualify)."""
    times = np.arange(15) * 3.0
    n_voxels, noise = 150, 1.7
    rng = np.random.default_rng(9)
    means = rng.normal(0, noise, (2000, 15, n_voxels)).mean(axis=2)  # region-mean curves of pure noise
    slopes = (means[:, 7] - means[:, 6]) / 3.0
    sd = max_slope_noise_sd(noise, n_voxels, times, aorta_peak_hu=270.0, portal_peak_hu=190.0)
    curve = np.concatenate([np.zeros(4), np.arange(1, 12) * 3.0])
    _, reported = max_slope_curve_sd(curve, times, MaxSlopeInputs(9.0, 270.0, 190.0), noise / np.sqrt(n_voxels))
    assert reported["ALP"] == pytest.approx(6000 * slopes.std() / 270.0, rel=0.1)
    assert sd["ALP"] == pytest.approx(6000 * slopes.std() / 270.0, rel=0.1)
    assert sd["PVP"] == pytest.approx(6000 * slopes.std() / 190.0, rel=0.1)


def test_max_slope_sd_is_that_of_the_least_well_known_interval_that_may_be_the_steepest() -> None:
    """Jittered frames: a short interval (2 s) and a long one (4 s) rise about as steeply; noise made the long one
    look steepest. Either may be the true steepest, so the value is reported with the short one's SD (sqrt(2)
    sigma / 2 s), not the smaller SD of the long one it happened to take (seed 2003's T2 ALP, issue 14 audit)."""
    times = np.array([0.0, 3.0, 6.0, 8.0, 12.0, 15.0, 18.0, 21.0, 24.0])
    curve = np.array([0.0, 0.0, 2.0, 12.0, 32.4, 40.0, 44.0, 46.0, 47.0])  # slopes 5.0 (6-8 s) and 5.1 (8-12 s)
    inputs = MaxSlopeInputs(t_spl=12.0, aorta_peak_hu=300.0, portal_peak_hu=200.0)
    sigma = 0.3
    values, sd = max_slope_curve_sd(curve, times, inputs, sigma)
    assert values["ALP"] == pytest.approx(6000 * 5.1 / 300.0)  # the long interval's slope is reported
    assert sd["ALP"] == pytest.approx(6000 * np.sqrt(2) * sigma / 2.0 / 300.0)  # with the short interval's SD
    # far from each other (no noise can swap them), the steepest interval's own SD stands
    _, sd_clear = max_slope_curve_sd(curve, times, inputs, 0.01)
    assert sd_clear["ALP"] == pytest.approx(6000 * np.sqrt(2) * 0.01 / 4.0 / 300.0)


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


# ------------------------------------------------------------------ self-qualification
def test_a_value_is_not_measurable_when_its_95_percent_interval_is_wider_than_the_tolerance() -> None:
    # 95 % interval +-1.96 SD: width 3.92 SD against 15 % of the value
    limit = 0.15 * 50.0 / (2 * Z95)
    assert qualify(50.0, 0.99 * limit, 0.15, "mL/min/100 mL").measurable
    flagged = qualify(50.0, 1.01 * limit, 0.15, "mL/min/100 mL")
    assert not flagged.measurable and "not measurable at this noise" in (flagged.reason or "") and flagged.value == 50.0
    assert not qualify(None, 1.0, 0.15, "%").measurable
    assert not qualify(0.0, 0.1, 0.15, "%").measurable  # no inflow: relative noise undefined
    check = AcquisitionCheck("sampling interval", False, 5.0, "<= 4 s", "frames 5 s apart", (("discm", "ALP"),))
    failed = qualify(50.0, 0.1, 0.15, "mL/min/100 mL", [check])
    assert not failed.measurable and failed.reason == "frames 5 s apart"


def test_a_model_value_that_depends_on_the_inputs_interpolation_is_not_measurable() -> None:
    assert qualify(50.0, 0.1, 0.15, "mL/min/100 mL", input_dependence=0.019).measurable
    flagged = qualify(50.0, 0.1, 0.15, "mL/min/100 mL", input_dependence=0.031)
    assert not flagged.measurable and "shape of the input curves between samples" in (flagged.reason or "")
    assert "3.1 %" in (flagged.reason or "") and flagged.input_dependence == pytest.approx(0.031)


def _inputs(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gamma(times, 7.0, 280.0, 6.0), _gamma(times, 12.0, 180.0, 9.0, 2.0)


def test_acquisition_checks_pass_on_a_complete_series_and_name_what_a_short_one_lacks() -> None:
    times = np.arange(15) * 3.0
    aorta, portal = _inputs(times)
    assert all(c.passed for c in acquisition_checks(times, aorta, portal, 0.3))
    # ends at the portal peak: portal peak at the last frame, no wash-out
    short = times[:8]
    by_name = {c.name: c for c in acquisition_checks(short, *_inputs(short), 0.3)}
    assert not by_name["portal venous peak sampled"].passed
    assert not by_name["portal peak and wash-out covered"].passed
    assert ("discm", "MTT") in by_name["portal peak and wash-out covered"].affects
    # 5 s sampling, and residual motion of 3 mm
    slow = np.arange(10) * 5.0
    by_name = {c.name: c for c in acquisition_checks(slow, *_inputs(slow), 3.0)}
    assert not by_name["sampling interval"].passed and not by_name["residual motion after correction"].passed
    assert not by_name["aortic bolus resolved for the model"].passed
    # the aortic peak before the first frame
    late = times + 12.0
    assert not {c.name: c for c in acquisition_checks(late, *_inputs(late), None)}["aortic peak sampled"].passed


def test_sampling_checks_judge_the_protocol_interval_and_the_bolus_against_its_own_width() -> None:
    """A 4 s protocol whose frames jitter by +-15 % (single gaps up to 4.6 s) samples every 4 s: within the limit.
    The bolus check compares the measured width of the aortic first pass with the frames spanning it: a 7 s wide
    (FWHM) first pass is resolved at 3 s sampling (clinical routine: the normal liver's model values must not be
    flagged for it) and not at 4 s; a wide one (12 s) is at 4 s."""
    rng = np.random.default_rng(5)

    def series(dt: float, rise: float) -> list[AcquisitionCheck]:
        times = np.round(np.arange(16) * dt + np.r_[0.0, rng.uniform(-0.15, 0.15, 15) * dt], 2)
        aorta = _gamma(times, 6.0, 300.0, rise)
        portal = _gamma(times, 12.0, 180.0, rise + 4.0, 2.0)
        return acquisition_checks(times, aorta, portal, 0.2)

    def by_name(checks: list[AcquisitionCheck]) -> dict[str, AcquisitionCheck]:
        return {c.name: c for c in checks}

    jittered = by_name(series(4.0, 5.5))
    interval = jittered["sampling interval"].value
    assert jittered["sampling interval"].passed and interval is not None and interval <= 4.0 + 1e-6
    narrow_3s, narrow_4s = by_name(series(3.0, 5.5)), jittered  # x^3 e^{3(1-x)}, rise 5.5 s: FWHM about 7 s
    assert narrow_3s["aortic bolus resolved for the model"].passed
    assert not narrow_4s["aortic bolus resolved for the model"].passed
    wide_4s = by_name(series(4.0, 9.5))  # FWHM about 12 s
    assert wide_4s["aortic bolus resolved for the model"].passed
    assert not by_name(series(4.6, 5.5))["sampling interval"].passed


def test_filter_kernel_is_the_plain_weighted_mean() -> None:
    """The compiled pass equals the filter written out with numpy on a small volume."""
    from node.perfusion.kernels import OFFSETS, similarity_filter_pass

    rng = np.random.default_rng(6)
    src = rng.normal(0, 1, (5, 4, 6, 7)).astype(np.float32)
    extra = rng.normal(0, 1, (1, 4, 6, 7)).astype(np.float32)
    coeff = rng.normal(0, 1, (3, 4, 6, 7)).astype(np.float32)
    mask = rng.random((4, 6, 7)) > 0.2
    expected = rng.uniform(0.5, 2.0, 26).astype(np.float32)
    dst, extra_dst = np.empty_like(src), np.empty_like(extra)
    similarity_filter_pass(src, extra, coeff, mask, OFFSETS, expected, dst, extra_dst)
    ref = np.zeros_like(src)
    for z, y, x in zip(*np.nonzero(mask), strict=True):
        acc, norm = src[:, z, y, x].astype(np.float64), 1.0
        for n, (dz, dy, dx) in enumerate(OFFSETS):
            q = (z + dz, y + dy, x + dx)
            if all(0 <= v < lim for v, lim in zip(q, mask.shape, strict=True)) and mask[q]:
                d2 = float(((coeff[:, z, y, x] - coeff[(slice(None),) + q]) ** 2).sum())
                w = np.exp(-max(d2 - expected[n], 0.0) / expected[n])
                acc += w * src[(slice(None),) + q]
                norm += w
        ref[:, z, y, x] = acc / norm
    np.testing.assert_allclose(dst, ref, rtol=1e-4, atol=1e-5)
    assert np.all(dst[:, ~mask] == 0)


def test_first_pass_shapes_pass_through_the_samples_and_put_the_arrival_inside_the_gap() -> None:
    """Each model-based shape is an interpolant (it reproduces every sample); the gamma-variate one starts the
    bolus inside the gap after the last baseline sample, where the cubic spline already rises (or dips below 0)."""
    from scipy.interpolate import CubicSpline

    from node.perfusion.firstpass import first_pass_interpolant, gamma_variate, recirculating_interpolant

    times = np.arange(0.0, 48.0, 4.0)
    truth = gamma_variate(np.arange(0.0, 44.01, 0.01), 9.3, 6.0, 3.0, 300.0)
    samples = gamma_variate(times, 9.3, 6.0, 3.0, 300.0)
    fine = np.arange(0.0, 44.01, 0.01)
    for make in (first_pass_interpolant, recirculating_interpolant):
        shape = make(times, samples)
        assert np.allclose(shape(times), samples, atol=1e-6)
    gv = first_pass_interpolant(times, samples)(fine)
    spline = CubicSpline(times, samples)(fine)
    gap = (fine > 8.0) & (fine < 9.3)  # after the last baseline sample, before the bolus arrives
    assert np.max(np.abs(gv[gap])) < 1.0 < np.max(np.abs(spline[gap]))
    assert np.max(np.abs(gv - truth)) < 0.2 * np.max(np.abs(spline - truth))


def test_first_pass_shape_without_a_bolus_falls_back_to_the_spline() -> None:
    from scipy.interpolate import CubicSpline

    from node.perfusion.firstpass import first_pass_interpolant

    times = np.arange(0.0, 40.0, 4.0)
    ramp = np.linspace(0.0, 90.0, times.size)  # peaks at the last frame: no sampled bolus
    fine = np.linspace(0.0, 36.0, 200)
    assert np.allclose(first_pass_interpolant(times, ramp)(fine), CubicSpline(times, ramp)(fine))

