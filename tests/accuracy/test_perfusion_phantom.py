"""CT perfusion on the digital phantom (node.phantom, small size): accuracy against its independent truth,
input detection, encodings (Enhanced CT, JPEG 2000, shuffled instances, temporal positions, non-uniform
times, motion) and the DICOM outputs (dciodvfy, highdicom read-back).

Truth used:
* max slope: the phantom's own textbook function on its noiseless curves *as stored* (CT pixels are integers,
  so a noiseless series carries the curves rounded to whole HU; for slopes of a few tenths of a HU per second
  that rounding alone moves ALP by tens of percent, so the unrounded curves are not what the images contain).
  With noise the rounding averages out and the unrounded truth is used.
* DISCM: the model parameters, with the OSIPI flow tolerance 5 mL/100 mL/min + 10 %.
Region means are taken over truth masks eroded by one voxel in every direction (5.5 mm: the 3.2 mm in-plane
neighbours and diagonals and the 5 mm slice neighbours): those voxels are partial-volume mixtures, and with
breathing motion every frame is resampled between 5 mm slices, mixing a lesion's first and last slice with the
liver by a different fraction in every frame.
Noisy variants use the phantom's physical noise (10 HU at 0.78 x 0.78 x 2.5 mm, i.e. 1.7 HU at the small
phantom's 3.2 x 3.2 x 5 mm voxel) and are held to the issue's criteria where the noise allows: the max-slope
5 % criterion where the standard deviation noise alone gives the region-mean max slope
(node.perfusion.stats.max_slope_noise_sd: a difference of two samples over the region's voxels) is at most 3 %
of its value; DISCM flows within the OSIPI tolerance everywhere. (The phantom family covers the flags where the
floor is larger: test_perfusion_family.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage

import rtstruct
from node.derived import NOT_FOR_DIAGNOSIS
from node.perfusion.outputs import PARAMETERS
from node.perfusion.pipeline import run_perfusion
from node.perfusion.settings import PerfusionSettings
from node.perfusion.stats import max_slope_noise_sd
from node.phantom import write_phantom
from node.phantom.curves import max_slope as phantom_max_slope
from node.record import encode
from testpeers.orthanc import dciodvfy_errors

REGIONS = {"liver_parenchyma": "liver", "T1": "T1", "T2": "T2", "T3": "T3"}
ERODE_MM = 5.5
#: largest 1-SD noise of a region-mean max slope (relative) at which the 5 % criterion is asserted (issue 14)
MAX_RELATIVE_FLOOR = 0.03


class Case:
    """A phantom, its truth and the analysis result."""

    def __init__(self, outdir: Path, rtss: pydicom.Dataset | None = None,
                 analysis: PerfusionSettings | None = None) -> None:
        self.dir = outdir
        self.truth = json.loads((outdir / "truth.json").read_text())
        self.perf = self.truth["perfusion"]
        self.masks = np.load(outdir / "truth" / "perfusion_masks.npz")
        self.datasets = [pydicom.dcmread(p) for p in sorted((outdir / "ct-perfusion").glob("*.dcm"))]
        self.result = run_perfusion(self.datasets, analysis or PerfusionSettings(), rtss)
        self.m = self.result.measurements
        ref = self.m.reference_time_point
        self.ref_shift = np.asarray(self.perf["motion_mm_per_frame"][ref], float)

    def maps(self) -> dict[tuple[str, str], hd.Volume]:
        out = {}
        for o in self.result.outputs:
            if o.kind == "parametric-map":
                param, method = o.description.split(" (")
                out[(method.rstrip(")"), param)] = hd.pm.ParametricMap.from_dataset(o.dataset).get_volume()
        return out

    def core(self, region: str, erode_mm: float = ERODE_MM) -> np.ndarray:
        """The truth mask of `region` eroded by `erode_mm` (physical distance), on the truth grid."""
        spacing = np.linalg.norm(self.masks["affine_kij_to_patient"][:3, :3], axis=0)
        return ndimage.distance_transform_edt(self.masks[region], sampling=spacing) > erode_mm

    def region_mean(self, volume: hd.Volume, region: str, erode_mm: float = ERODE_MM) -> float:
        """Mean of a map over the map voxels whose centre lies in the eroded truth mask (motion of the
        reference frame applied: the maps live where the reference frame saw the patient)."""
        aff = self.masks["affine_kij_to_patient"]
        core = self.core(region, erode_mm)
        k, j, i = np.indices(volume.shape[:3])
        pts = np.stack([k, j, i, np.ones_like(k)], -1) @ volume.affine.T
        idx = np.rint((pts[..., :3] - self.ref_shift) @ np.linalg.inv(aff)[:3, :3].T
                      + np.linalg.inv(aff)[:3, 3]).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(core.shape)), axis=-1)
        sel = np.zeros(volume.shape[:3], bool)
        sel[ok] = core[tuple(idx[ok].T)]
        values = volume.array[sel]
        values = values[np.isfinite(values)]  # voxels not computed (e.g. vessels inside the region) are NaN
        assert values.size > 10, region
        return float(values.mean())

    def stored_max_slope_truth(self) -> dict[str, dict[str, float]]:
        """Max-slope truth of the curves as the integer CT pixels carry them (noiseless variants)."""
        t = np.array(self.perf["time_s"])

        def stored(name: str) -> np.ndarray:
            base = self.perf["regions"][name]["baseline_hu"]
            return np.rint(base + np.array(self.perf["enhancement_hu"][name])) - base

        inputs = [stored(n) for n in ("aorta", "portal_vein", "spleen")]
        return {n: phantom_max_slope(t, stored(n), *inputs) for n in REGIONS.values()}

    def inside_truth(self, name: str) -> bool:
        centre = np.asarray(self.m.inputs[name].centre_mm) - self.ref_shift
        inv = np.linalg.inv(self.masks["affine_kij_to_patient"])
        idx = np.rint(inv[:3, :3] @ centre + inv[:3, 3]).astype(int)
        return bool(self.masks[name][tuple(idx)])


def _first_time_point(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    key = min({int(ds.TemporalPositionIdentifier) for ds in datasets})
    return [ds for ds in datasets if int(ds.TemporalPositionIdentifier) == key]


@pytest.fixture(scope="module")
def exact_enhanced(tmp_path_factory) -> Case:
    out = write_phantom(tmp_path_factory.mktemp("enh"), "small", 0,
                        ("noiseless", "enhanced-ct", "jpeg2000", "nonuniform-time"))
    return Case(out)


@pytest.fixture(scope="module")
def exact_classic(tmp_path_factory) -> Case:
    """Classic CT, shuffled instance numbers, time only as temporal positions, and an RTSTRUCT naming the inputs
    (drawn on the first time point from the truth masks) plus regions for statistics."""
    out = write_phantom(tmp_path_factory.mktemp("cls"), "small", 1,
                        ("noiseless", "temporal-position", "shuffled-instance-numbers"))
    masks = np.load(out / "truth" / "perfusion_masks.npz")
    first = _first_time_point([pydicom.dcmread(p, stop_before_pixels=True)
                               for p in (out / "ct-perfusion").glob("*.dcm")])
    rois = [rtstruct.RoiMask("Aorta", ndimage.binary_erosion(masks["aorta"])),
            rtstruct.RoiMask("Portal Vein", masks["portal_vein"]),
            rtstruct.RoiMask("Spleen", ndimage.binary_erosion(masks["spleen"])),
            rtstruct.RoiMask("Normal liver", masks["liver_parenchyma"]),
            rtstruct.RoiMask("T1", masks["T1"], "GTV")]
    rtss = rtstruct.write_rtstruct(first, rois)
    return Case(out, rtss)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Case:
    """Default noise; given the planning CT's RTSTRUCT (another frame of reference), which must not be used."""
    out = write_phantom(tmp_path_factory.mktemp("noisy"), "small", 2, ())
    return Case(out, pydicom.dcmread(next((out / "planning-rtstruct").glob("*.dcm"))))


@pytest.fixture(scope="module")
def noisy_motion(tmp_path_factory) -> Case:
    """Smooth breathing (up to 4 mm cranio-caudal, 1 mm in-plane)."""
    return Case(write_phantom(tmp_path_factory.mktemp("motion"), "small", 5, ("motion",)))


@pytest.fixture(scope="module")
def noisy_shuffled_j2k(tmp_path_factory) -> Case:
    """Shuffled instance numbers and JPEG 2000 pixel data in one series."""
    return Case(write_phantom(tmp_path_factory.mktemp("shj2k"), "small", 3,
                              ("shuffled-instance-numbers", "jpeg2000")))


@pytest.fixture(scope="module")
def noisy_enhanced(tmp_path_factory) -> Case:
    """Enhanced CT multi-frame."""
    return Case(write_phantom(tmp_path_factory.mktemp("enhn"), "small", 4, ("enhanced-ct",)))


# ------------------------------------------------------------------ noiseless: the convention, exactly
@pytest.mark.parametrize("case_name", ["exact_enhanced", "exact_classic"])
def test_noiseless_maps_match_the_truth_of_every_region(case_name: str, request) -> None:
    case: Case = request.getfixturevalue(case_name)
    maps = case.maps()
    stored = case.stored_max_slope_truth()
    for region, key in REGIONS.items():
        ms = stored[key]
        for param, truth_key in (("ALP", "alp"), ("PVP", "pvp"), ("TLP", "tlp")):
            got = case.region_mean(maps[("maximum slope", param)], region)
            assert got == pytest.approx(ms[truth_key], rel=0.05), (region, param)
        assert case.region_mean(maps[("maximum slope", "HPI")], region) == pytest.approx(ms["hpi"], abs=3.0)
        model = case.perf["regions"][key]["model"]
        for param, truth_key in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
            got = case.region_mean(maps[("DISCM", param)], region)
            assert abs(got - model[truth_key]) <= 5 + 0.1 * model[truth_key], (region, param, got)
    # the model's HPI: right, or reported as not measurable with the reason (3 s sampling of a 6 s bolus rise
    # leaves the input between samples unknown; whole-HU rounding of a noiseless series is a misfit too)
    liver = case.perf["regions"]["liver"]["model"]
    stats = case.m.regional_statistics
    if "Normal liver" in stats:
        v = stats["Normal liver"].values["discm"]["HPI"]
        assert (v.measurable and v.value is not None and abs(v.value - liver["hpi_percent"]) <= 3.0) or (
            not v.measurable and v.reason), v


@pytest.mark.parametrize("case_name", ["exact_enhanced", "exact_classic"])
def test_input_curves_and_phase_split(case_name: str, request) -> None:
    case: Case = request.getfixturevalue(case_name)
    assert case.m.t_spl_s == case.perf["t_spl_s"]
    assert case.m.aorta_peak_hu == pytest.approx(case.perf["aorta_peak_sample_hu"], rel=0.01)
    assert case.m.portal_peak_hu == pytest.approx(case.perf["portal_peak_sample_hu"], rel=0.01)
    for name in ("aorta", "portal_vein", "spleen"):
        assert case.inside_truth(name), name
    np.testing.assert_allclose(case.m.series.times_s, case.perf["time_s"], atol=1e-3)


def test_enhanced_ct_inputs_are_detected_automatically(exact_enhanced: Case) -> None:
    assert exact_enhanced.m.series.encoding == "enhanced-ct"
    assert {v.source for v in exact_enhanced.m.inputs.values()} == {"automatic"}


def test_rtstruct_inputs_and_regional_statistics(exact_classic: Case) -> None:
    m = exact_classic.m
    assert m.inputs["aorta"].source == "rtstruct:Aorta"
    assert m.inputs["portal_vein"].source == "rtstruct:Portal Vein"
    assert m.inputs["spleen"].source == "rtstruct:Spleen"
    stats = m.regional_statistics
    vox_ml = float(np.prod(np.linalg.norm(exact_classic.masks["affine_kij_to_patient"][:3, :3], axis=0))) / 1000
    for roi, region in (("Normal liver", "liver_parenchyma"), ("T1", "T1")):
        assert stats[roi].volume_ml == pytest.approx(exact_classic.masks[region].sum() * vox_ml, rel=0.02)
    truth = exact_classic.stored_max_slope_truth()
    # the whole T1 contour, edges included: no smoothing on a noiseless series, so no edge effect either
    assert stats["T1"].maps["max-slope"]["ALP"].mean == pytest.approx(truth["T1"]["alp"], rel=0.05)
    assert (stats["T1"].maps["max-slope"]["ALP"].sd or 0.0) < 0.05 * truth["T1"]["alp"]
    assert stats["Normal liver"].maps["discm"]["PVP"].mean == pytest.approx(74.0, abs=5 + 7.4)
    # every region value carries its 1-SD noise (here ~0: a noiseless series; the formula is checked against a
    # simulation in test_perfusion_units) and a measurable flag with the reason when it is not
    values = {roi: stats[roi].values["max-slope"] for roi in ("Normal liver", "T1")}
    liver_sd, t1_sd = values["Normal liver"]["ALP"].sd, values["T1"]["ALP"].sd
    assert liver_sd is not None and t1_sd is not None
    assert 0 <= liver_sd <= t1_sd < 0.05 * truth["T1"]["alp"]  # the larger region, the less noise
    liver_noise, t1_noise = stats["Normal liver"].roi_curve_noise_hu, stats["T1"].roi_curve_noise_hu
    assert liver_noise is not None and t1_noise is not None and 0 <= liver_noise <= t1_noise
    assert values["T1"]["ALP"].measurable and values["T1"]["ALP"].value == pytest.approx(truth["T1"]["alp"], rel=0.02)
    json.dumps(encode(m))  # the case record must be JSON


# ------------------------------------------------------------------ noisy: the criteria
NOISY_CASES = ["noisy", "noisy_motion", "noisy_shuffled_j2k", "noisy_enhanced"]


def _relative_floor(case: Case, region: str, key: str) -> dict[str, float]:
    """1-SD noise of the region-mean max slope over the evaluated core, relative to the truth."""
    sd = max_slope_noise_sd(case.perf["ct_noise_sd_hu"], int(case.core(region).sum()), np.asarray(case.perf["time_s"]),
                            case.perf["aorta_peak_sample_hu"], case.perf["portal_peak_sample_hu"])
    ms = case.perf["regions"][key]["max_slope"]
    return {"ALP": sd["ALP"] / ms["alp_ml_min_100ml"], "PVP": sd["PVP"] / ms["pvp_ml_min_100ml"]}


@pytest.mark.parametrize("case_name", NOISY_CASES)
def test_noisy_variants_meet_the_criteria_in_every_region(case_name: str, request) -> None:
    """Liver parenchyma and tumours T1-T3: max slope ALP/PVP within 5 % of the max-slope truth and HPI within 3
    percentage points, DISCM ALP/PVP within 5 mL/100 mL/min + 10 % of the model (and the liver's DISCM HPI within
    3 points); input ROI centres inside the true aorta / portal vein / spleen."""
    case: Case = request.getfixturevalue(case_name)
    maps = case.maps()
    # the phantom's physical noise: 10 HU x sqrt(0.78^2 x 2.5 / (3.2^2 x 5)) = 1.73 HU (+ integer rounding)
    assert case.perf["ct_noise_sd_hu"] == pytest.approx(1.73, abs=0.01)
    assert 1.4 < case.m.noise_hu < 2.6
    assert case.m.noise_reduction["native_image_in_similarity"] is True
    asserted = 0
    for region, key in REGIONS.items():
        floor = _relative_floor(case, region, key)
        truth = case.perf["regions"][key]
        ms = truth["max_slope"]
        for param, tkey in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
            if floor[param] > MAX_RELATIVE_FLOOR:
                continue  # the noise alone moves this mean by more than 3 %: not a 5 % question (the node flags it)
            asserted += 1
            got = case.region_mean(maps[("maximum slope", param)], region)
            assert got == pytest.approx(ms[tkey], rel=0.05), (region, param, got, ms[tkey])
        if max(floor.values()) <= MAX_RELATIVE_FLOOR:
            got = case.region_mean(maps[("maximum slope", "HPI")], region)
            assert got == pytest.approx(ms["hpi_percent"], abs=3.0), (region, got)
        for param, tkey in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
            if truth["model"][tkey] < 10:
                # T1's PVP (8): 3 s sampling of a 6 s bolus rise does not carry so minor an inflow (the phantom
                # family measures this), and the map of voxel flows is left unclipped (unbiased), so noise shows
                continue
            got = case.region_mean(maps[("DISCM", param)], region)
            assert abs(got - truth["model"][tkey]) <= 5 + 0.1 * truth["model"][tkey], (region, param, got)
    assert asserted >= 3  # at least the liver's ALP and PVP and T1's ALP carry a 5 % criterion
    for name in ("aorta", "portal_vein", "spleen"):
        assert case.inside_truth(name), name


def test_noisy_still_series_and_foreign_rtstruct(noisy: Case) -> None:
    # a still patient is not resampled
    assert not any(f.resampled for f in noisy.m.motion)
    # a structure set of another CT is reported, not used, and costs no map
    assert noisy.m.rtstruct.startswith("not used") and "frame" in noisy.m.rtstruct
    assert noisy.m.regional_statistics == {}


def test_breathing_motion_is_estimated_in_three_directions(noisy_motion: Case) -> None:
    truth = np.asarray(noisy_motion.perf["motion_mm_per_frame"]) - noisy_motion.ref_shift
    assert np.abs(truth[:, 2]).max() > 2.0  # the pattern really moves the patient by more than 2 mm in z
    est = np.array([f.translation_mm for f in noisy_motion.m.motion])
    np.testing.assert_allclose(est[:, :2], truth[:, :2], atol=0.5)
    np.testing.assert_allclose(est[:, 2], truth[:, 2], atol=1.25)  # a quarter of the 5 mm slice


# ------------------------------------------------------------------ DICOM outputs
def test_outputs_pass_dciodvfy_read_back_and_are_labelled(noisy: Case, tmp_path: Path) -> None:
    kinds = [o.kind for o in noisy.result.outputs]
    assert kinds.count("parametric-map") == 10  # ALP PVP TLP HPI + ALP PVP TLP HPI DV MTT
    assert kinds.count("secondary-capture") == 7  # 2 methods x 3 slices + curves
    ref_uids = {str(ds.SOPInstanceUID) for ds in noisy.datasets
                if int(ds.AcquisitionNumber) == noisy.m.reference_time_point + 1}
    for n, obj in enumerate(noisy.result.outputs):
        path = tmp_path / f"{n:02d}.dcm"
        obj.dataset.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], (obj.description, dciodvfy_errors(path))
        ds = pydicom.dcmread(path)
        assert ds.ImageType[0] == "DERIVED"
        assert NOT_FOR_DIAGNOSIS in ds.SeriesDescription
        assert ds.PatientID == noisy.datasets[0].PatientID
        assert ds.StudyInstanceUID == noisy.datasets[0].StudyInstanceUID
        assert ds.Manufacturer == "liver-node"
        refs = {str(item.ReferencedSOPInstanceUID) for item in ds.SourceImageSequence}
        if obj.kind == "parametric-map":
            assert refs == ref_uids  # every slice of the reference time point
            # highdicom's reading of the file equals both the in-memory object and pydicom's raw floats
            back = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path)).get_volume()
            original = hd.pm.ParametricMap.from_dataset(obj.dataset).get_volume()
            np.testing.assert_array_equal(back.array, original.array)
            np.testing.assert_allclose(back.affine, original.affine, atol=1e-4)
            raw = ds.pixel_array
            assert raw.dtype == np.float32
            np.testing.assert_array_equal(np.sort(raw.ravel()), np.sort(back.array.ravel().astype(np.float32)))
            mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
            unit = mapping.MeasurementUnitsCodeSequence[0]
            assert unit.CodingSchemeDesignator == "UCUM"
            assert unit.CodeValue in ("mL/min/(100.mL)", "%", "s")
            # the quantity and the method, coded, read back through highdicom
            quantity = {str(i.ConceptNameCodeSequence[0].CodeValue): i.ConceptCodeSequence[0]
                        for i in mapping.QuantityDefinitionSequence}
            param, method = obj.description.split(" (")
            assert quantity["246205007"].CodeMeaning == PARAMETERS[param].quantity[2]
            assert quantity["370129005"].CodeValue == ("126375" if method == "maximum slope)" else "LN-M-DISCM")
            rwvm = hd.pm.ParametricMap.from_dataset(ds).SharedFunctionalGroupsSequence[0]
            assert rwvm.RealWorldValueMappingSequence[0].QuantityDefinitionSequence[0].ConceptCodeSequence[0] \
                .CodingSchemeDesignator in ("DCM", "99LIVERNODE")
            # not computed (outside the analysed tissue) is NaN, never 0
            assert np.isnan(back.array).any() and np.isfinite(back.array).any()
            assert ds.BitsAllocated == 32 and "FloatPixelData" in ds
            assert obj.description.split(" ")[0] in ds.ContentDescription
        else:
            assert refs and refs <= {str(d.SOPInstanceUID) for d in noisy.datasets}
            assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.dtype == np.uint8
            assert NOT_FOR_DIAGNOSIS in ds.ImageComments


def test_parametric_map_values_equal_the_maps(noisy: Case) -> None:
    """The PM carries exactly the region values the maps hold (units: ALP in mL/min/100 mL, not 1/s)."""
    maps = noisy.maps()
    alp = maps[("maximum slope", "ALP")].array
    assert -100 < float(np.nanmin(alp)) and float(np.nanmax(alp)) < 1000
    tlp = maps[("maximum slope", "TLP")].array
    np.testing.assert_allclose(tlp, alp + maps[("maximum slope", "PVP")].array, rtol=1e-5, atol=1e-4)
    assert np.array_equal(np.isnan(alp), np.isnan(tlp))


def test_only_the_configured_method_is_run(exact_classic: Case) -> None:
    res = run_perfusion(exact_classic.datasets, PerfusionSettings(methods=("discm",)))
    maps = sorted(o.description for o in res.outputs if o.kind == "parametric-map")
    assert maps == sorted(f"{p} (DISCM)" for p in ("ALP", "PVP", "TLP", "HPI", "DV", "MTT"))
    assert list(res.measurements.methods) == ["discm"]
    assert sum(o.kind == "secondary-capture" for o in res.outputs) == 3 + 1  # 3 slices + curves
