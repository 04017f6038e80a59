"""MAA uptake next to CT perfusion on the phantom.

The perfusion maps are Parametric Maps built here from known arrays (the phantom's kinetic-model ALP/PVP/HPI
painted into its truth masks on the perfusion CT), so the test knows every tumour's value exactly and checks
the registration and the read-back of the maps, not the perfusion pipeline (tested on its own).
"""
from __future__ import annotations

import json
from collections import defaultdict

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.coding import Code

from node.imaging.grids import image_from_affine
from node.maa.pipeline import run_maa
from node.maa.settings import MaaSettings
from node.perfusion.reference import PerfusionReference, reference_from_series
from node.phantom import write_phantom

PARAMS = {"ALP": ("alp_ml_min_100ml", "mL/min/(100.mL)"), "PVP": ("pvp_ml_min_100ml", "mL/min/(100.mL)"),
          "HPI": ("hpi_percent", "%")}


def _first_time_point(datasets):
    by_position = defaultdict(list)
    for ds in datasets:
        by_position[tuple(float(v) for v in ds.ImagePositionPatient)].append(ds)
    slices = [min(group, key=lambda d: str(d.AcquisitionTime)) for group in by_position.values()]
    return sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))


def _parametric_map(values, affine, sources, param, unit, number):
    volume = hd.Volume(values.astype(np.float32), affine, coordinate_system="PATIENT",
                       frame_of_reference_uid=sources[0].FrameOfReferenceUID)
    mapping = hd.pm.RealWorldValueMapping(lut_label=param, lut_explanation=param, unit=Code(unit, "UCUM", unit),
                                          value_range=(0.0, float(values.max())), slope=1.0, intercept=0.0)
    return hd.pm.ParametricMap(
        source_images=sources, pixel_array=volume, series_instance_uid=hd.UID(), series_number=number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="tests", manufacturer_model_name="tests",
        software_versions="0", device_serial_number="0", contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], content_label=f"MAXSLOPE_{param}", content_description=param,
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=50.0, window_width=100.0)])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = write_phantom(tmp_path_factory.mktemp("maa-corr"), size="small", seed=0)
    truth = json.loads((out / "truth.json").read_text())
    perfusion = [pydicom.dcmread(p) for p in sorted((out / "ct-perfusion").glob("*.dcm"))]
    masks = np.load(out / "truth" / "perfusion_masks.npz")
    regions = {"liver_parenchyma": "liver", "T1": "T1", "T2": "T2", "T3": "T3"}
    maps = []
    for n, (param, (key, unit)) in enumerate(PARAMS.items()):
        values = np.zeros(masks["liver"].shape, np.float32)
        for mask_name, region in regions.items():
            values[masks[mask_name]] = truth["perfusion"]["regions"][region]["model"][key]
        maps.append(_parametric_map(values, masks["affine_kij_to_patient"], _first_time_point(perfusion), param,
                                    unit, 9501 + n))
    nm = pydicom.dcmread(next((out / "spect-maa").glob("*.dcm")))
    ct = [pydicom.dcmread(p) for p in sorted((out / "spect-maa-ct").glob("*.dcm"))]
    result = run_maa(nm, ct, None, reference_from_series(perfusion, maps), MaaSettings())
    return truth, result, (nm, ct, perfusion, maps, masks)


def test_correlation_lists_every_tumour_with_both_measurements(case):
    truth, result, _ = case
    corr = result.measurements.correlation
    assert corr is not None and corr.done is True, corr
    rows = corr.rows
    tumours = result.measurements.uptake.tumours
    assert {r.tumour for r in rows} == set(tumours) and len(rows) == len(truth["tumours"])
    by_truth = {}
    for t in truth["tumours"]:
        centre = np.asarray(t["centre_mm"]["maa"])
        name = min(tumours, key=lambda n: np.linalg.norm(np.asarray(tumours[n].centre_mm) - centre))
        by_truth[t["name"]] = next(r for r in rows if r.tumour == name)
    for name, row in by_truth.items():
        assert row.tn_ratio == pytest.approx(truth["maa"]["tn_ratio"][name], rel=0.10)
        values = row.perfusion["maxslope"]
        assert values.in_field_fraction >= 0.9
        model = truth["perfusion"]["regions"][name]["model"]
        liver = truth["perfusion"]["regions"]["liver"]["model"]
        # the SPECT-derived region carried onto the CT grid takes in a rim of liver: its value may move at most
        # 25 % of the way towards the liver's (and 2 units)
        for param, (key, _unit) in PARAMS.items():
            value = getattr(values, param)
            assert value is not None
            allowed = 0.25 * abs(liver[key] - model[key]) + 2.0
            assert abs(value - model[key]) <= allowed, (name, param, value, model[key])
    # hypervascular T1 > mixed T3 > hypovascular T2 in ALP, as in T/N: a positive correlation
    alp = {n: r.perfusion["maxslope"].ALP for n, r in by_truth.items()}
    assert alp["T1"] > alp["T3"] > alp["T2"]
    # three tumours: no correlation coefficient (it needs MIN_POINTS = 5), the count is recorded
    assert corr.pearson_r_tn_vs_alp["maxslope"].n == 3
    assert corr.pearson_r_tn_vs_alp["maxslope"].r is None


def test_registration_places_tumours_where_the_truth_has_them(case):
    truth, result, _ = case
    # fixed = perfusion CT, moving = MAA SPECT/CT: the matrix maps perfusion mm to MAA mm
    matrix = np.asarray(result.measurements.correlation.registration.matrix_4x4)
    for t in truth["tumours"]:
        mapped = matrix[:3, :3] @ np.asarray(t["centre_mm"]["perfusion"]) + matrix[:3, 3]
        assert np.linalg.norm(mapped - np.asarray(t["centre_mm"]["maa"])) < 4.0, t["name"]  # SPECT voxel 4.4 mm


def test_a_lesion_value_the_perfusion_cannot_measure_is_flagged_and_left_out_of_the_correlation(case):
    """Hot regions take the names of the perfusion RTSTRUCT's lesions; where the perfusion analysis reports a
    lesion's value as not measurable, the MAA record flags that value with the reason (its report qualifies it,
    its summary shows n.m.) and the T/N-ALP correlation counts only the measurable ones."""
    _, _, (nm, ct, perfusion, maps, masks) = case
    plain = reference_from_series(perfusion, maps)
    regions = {name: image_from_affine(masks[name].astype(np.uint8), masks["affine_kij_to_patient"])
               for name in ("T1", "T2", "T3")}
    flagged = PerfusionReference(plain.ct, plain.patient_id, plain.maps, regions,
                                 {"T2": {("max-slope", "ALP"): "not measurable at this noise: test reason"},
                                  "T1": {("discm", "ALP"): "another method's flag"}})
    corr = run_maa(nm, ct, None, flagged, MaaSettings()).measurements.correlation
    assert corr is not None and corr.done is True
    rows = {r.tumour: r for r in corr.rows}
    assert set(rows) == {"T1", "T2", "T3"}  # named after the perfusion lesions
    reason = rows["T2"].perfusion["maxslope"].not_measurable["ALP"]
    assert "T2 ALP, maximum slope" in reason and "test reason" in reason and reason.startswith("not measurable")
    assert rows["T2"].perfusion["maxslope"].ALP is not None  # the mean is kept, flagged, not dropped
    assert rows["T1"].perfusion["maxslope"].not_measurable == {}  # a flag of the other method stays there
    assert rows["T3"].perfusion["maxslope"].not_measurable == {}
    assert corr.pearson_r_tn_vs_alp["maxslope"].n == 2  # T2's ALP is not among the points
