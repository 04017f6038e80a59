"""The case report: SR TID 1500 with every measurement (read back with highdicom) and the summary capture."""
from __future__ import annotations

import sys
from pathlib import Path

import highdicom as hd
import pytest

from node.report.build import build_report
from node.report.summary import summary_lines
from node.report.items import collect_groups
from node.results import AnalysisResult, OutputObject

sys.path.insert(0, str(Path(__file__).parent))
import factories  # noqa: E402
from orthanc import dciodvfy_errors, make_parametric_map  # noqa: E402

PATIENT = "REPORT01"
UNIT_FLOW = "mL/min/(100.mL)"

PERFUSION = {
    "inputs": {
        "aorta": {"source": "automatic", "centre_mm": [17.6, 27.7, 5.0], "volume_ml": 18.79, "voxels": 367,
                  "peak_enhancement_hu": 267.6, "peak_time_s": 12.0, "enhancement_hu": [0.0, 76.8, 267.6]},
        "portal_vein": {"source": "rtstruct", "centre_mm": [-13.0, 0.0, 10.0], "volume_ml": 2.97,
                        "peak_enhancement_hu": 187.2, "peak_time_s": 24.0},
        "spleen": {"source": "automatic", "centre_mm": [94.9, 38.0, 0.0], "volume_ml": 101.58,
                   "peak_enhancement_hu": 83.5, "peak_time_s": 15.0},
    },
    "t_spl_s": 15.0,
    "methods": {"max-slope": {"t_spl_s": 15.0, "spatial_sigma_mm": 4.0}, "discm": {"delays_s": [0, 1]}},
    "regional_statistics": {
        "Liver": {"volume_ml": 1500.0, "analysed_volume_ml": 1400.5,
                  "max-slope": {"ALP": {"mean": 11.2, "sd": 3.1}, "PVP": {"mean": 70.4, "sd": 12.2},
                                "TLP": {"mean": 81.6, "sd": 13.0}, "HPI": {"mean": 14.0, "sd": 2.0}},
                  "discm": {"ALP": {"mean": 12.5, "sd": 2.5}, "MTT": {"mean": 9.5, "sd": 1.5},
                            "DV": {"mean": 25.0, "sd": 4.0}}},
        "Tumor 1": {"volume_ml": 14.0, "analysed_volume_ml": 13.0,
                    "max-slope": {"ALP": {"mean": 61.0, "sd": 9.0}, "HPI": {"mean": 80.0, "sd": 5.0}},
                    # region values (the ROI curve's) with their 1-SD noise; HPI not measurable at this noise
                    "values": {"max-slope": {
                        "ALP": {"value": 60.5, "sd": 1.2, "map_mean": 61.0, "map_sd": 9.0, "measurable": True,
                                "reason": None},
                        "HPI": {"value": 79.0, "sd": 6.0, "map_mean": 80.0, "map_sd": 5.0, "measurable": False,
                                "reason": "not measurable at this noise: 95 % interval +-12 % spans 30 % of the "
                                          "value (limit 15 %)"}}}},
    },
}
GSA = {"volumes_cm3": {"liver": 2058.1, "FLS": 700.2, "ITV": 1357.9, "PTV": 1500.3}, "fls_threshold_fraction": 0.6,
       "ptv_margin_mm": 5.0, "liver_source": "rtstruct ROI 'Liver'", "warnings": []}
MAA = {
    "uptake": {"method": "GTM", "spill_margin_mm": 13.0, "overall_tn_ratio": 5.12, "liver_ml": 2026.1,
               "normal_liver_ml": 1992.4, "tumour_ml": 33.8,
               "tumours": {"T1": {"volume_ml": 14.1, "tn_ratio": 8.05, "tn_ratio_uncorrected": 5.05,
                                  "centre_mm": [0, 0, 0]},
                           "T2": {"volume_ml": 12.5, "tn_ratio": 2.9, "tn_ratio_uncorrected": 2.07,
                                  "centre_mm": [0, 0, 0]}}},
    "lung_shunt": {"lung_shunt_fraction": 0.0803, "source": "measured on SPECT", "reason": "covered",
                   "lung_volume_ml": 2502.9},
    "partition_model": {"model": "partition", "activity_gbq": 3.431, "limited_by": "normal liver",
                        "activity_normal_liver_limit_gbq": 3.431, "activity_lung_limit_gbq": 5.647,
                        "normal_liver_dose_gy": 70.0, "tumour_dose_gy": 376.3, "lung_dose_gy": 18.23,
                        "tumour_doses_gy": {"T1": 563.6, "T2": 203.0}, "normal_liver_mass_kg": 2.0521,
                        "lung_mass_kg": 0.7509, "normal_liver_limit_gy": 70.0, "lung_limit_gy": 30.0},
    "correlation": {"done": True, "rows": [
        {"tumour": "T1", "tn_ratio": 8.05, "perfusion": {"maxslope": {"ALP": 63.0, "PVP": 16.0, "HPI": 80.6}}},
        {"tumour": "T2", "tn_ratio": 2.9, "perfusion": {"maxslope": {"ALP": 8.5, "PVP": 14.8, "HPI": None}}}],
        "pearson_r_tn_vs_alp": {"maxslope": {"r": 0.99, "n": 3}}},
    "warnings": ["regions found automatically: review them"],
}

# (group, concept meaning, value, UCUM unit): every figure of the three records above, written out by hand.
EXPECTED = [
    ("CT perfusion input aorta", "Peak contrast enhancement", 267.6, "[hnsf'U]"),
    ("CT perfusion input aorta", "Time to peak enhancement", 12.0, "s"),
    ("CT perfusion input aorta", "Volume", 18.79, "mL"),
    ("CT perfusion input portal vein", "Peak contrast enhancement", 187.2, "[hnsf'U]"),
    ("CT perfusion input portal vein", "Time to peak enhancement", 24.0, "s"),
    ("CT perfusion input portal vein", "Volume", 2.97, "mL"),
    ("CT perfusion input spleen", "Peak contrast enhancement", 83.5, "[hnsf'U]"),
    ("CT perfusion input spleen", "Time to peak enhancement", 15.0, "s"),
    ("CT perfusion input spleen", "Volume", 101.58, "mL"),
    ("CT perfusion input spleen", "Arterial/portal phase split time", 15.0, "s"),
    ("CT perfusion ROI Liver", "Volume", 1500.0, "mL"),
    ("CT perfusion ROI Liver", "Analysed volume", 1400.5, "mL"),
    *[("CT perfusion ROI Liver", name, v, unit) for name, v, unit in [
        ("Arterial liver perfusion", 11.2, UNIT_FLOW), ("Arterial liver perfusion", 3.1, UNIT_FLOW),
        ("Portal venous perfusion", 70.4, UNIT_FLOW), ("Portal venous perfusion", 12.2, UNIT_FLOW),
        ("Total liver perfusion", 81.6, UNIT_FLOW), ("Total liver perfusion", 13.0, UNIT_FLOW),
        ("Hepatic perfusion index", 14.0, "%"), ("Hepatic perfusion index", 2.0, "%"),
        ("Arterial liver perfusion", 12.5, UNIT_FLOW), ("Arterial liver perfusion", 2.5, UNIT_FLOW),
        ("Mean Transit Time", 9.5, "s"), ("Mean Transit Time", 1.5, "s"),
        ("Distribution volume", 25.0, "%"), ("Distribution volume", 4.0, "%")]],
    ("CT perfusion ROI Tumor 1", "Volume", 14.0, "mL"),
    ("CT perfusion ROI Tumor 1", "Analysed volume", 13.0, "mL"),
    ("CT perfusion ROI Tumor 1", "Arterial liver perfusion", 61.0, UNIT_FLOW),
    ("CT perfusion ROI Tumor 1", "Arterial liver perfusion", 9.0, UNIT_FLOW),
    ("CT perfusion ROI Tumor 1", "Hepatic perfusion index", 80.0, "%"),
    ("CT perfusion ROI Tumor 1", "Hepatic perfusion index", 5.0, "%"),
    ("CT perfusion ROI Tumor 1", "Arterial liver perfusion", 60.5, UNIT_FLOW),
    ("CT perfusion ROI Tumor 1", "Hepatic perfusion index", 79.0, "%"),
    ("GSA liver", "Volume", 2058.1, "cm3"), ("GSA FLS", "Volume", 700.2, "cm3"),
    ("GSA ITV", "Volume", 1357.9, "cm3"), ("GSA PTV", "Volume", 1500.3, "cm3"),
    ("MAA tumour T1", "Tumor to normal liver uptake ratio", 8.05, "{ratio}"),
    ("MAA tumour T1", "Tumor to normal liver uptake ratio, uncorrected", 5.05, "{ratio}"),
    ("MAA tumour T1", "Volume", 14.1, "mL"),
    ("MAA tumour T1", "Mass", 14.1 * 1.03, "g"),
    ("MAA tumour T1", "Absorbed Dose", 563.6, "Gy"),
    ("MAA tumour T1", "Arterial liver perfusion", 63.0, UNIT_FLOW),
    ("MAA tumour T1", "Portal venous perfusion", 16.0, UNIT_FLOW),
    ("MAA tumour T1", "Hepatic perfusion index", 80.6, "%"),
    ("MAA tumour T2", "Tumor to normal liver uptake ratio", 2.9, "{ratio}"),
    ("MAA tumour T2", "Tumor to normal liver uptake ratio, uncorrected", 2.07, "{ratio}"),
    ("MAA tumour T2", "Volume", 12.5, "mL"),
    ("MAA tumour T2", "Mass", 12.5 * 1.03, "g"),
    ("MAA tumour T2", "Absorbed Dose", 203.0, "Gy"),
    ("MAA tumour T2", "Arterial liver perfusion", 8.5, UNIT_FLOW),
    ("MAA tumour T2", "Portal venous perfusion", 14.8, UNIT_FLOW),
    ("MAA normal liver", "Volume", 1992.4, "mL"),
    ("MAA normal liver", "Mass", 2052.1, "g"),
    ("MAA normal liver", "Absorbed Dose", 70.0, "Gy"),
    ("MAA whole liver", "Volume", 2026.1, "mL"),
    ("MAA whole liver", "Tumor to normal liver uptake ratio", 5.12, "{ratio}"),
    ("MAA lungs", "Lung shunt fraction", 8.03, "%"),
    ("MAA lungs", "Volume", 2502.9, "mL"),
    ("MAA lungs", "Mass", 750.9, "g"),
    ("MAA lungs", "Absorbed Dose", 18.23, "Gy"),
    ("Y-90 activity, partition model", "Planned Y-90 activity", 3.431, "GBq"),
    ("Y-90 activity, partition model", "Y-90 activity at the normal liver dose limit", 3.431, "GBq"),
    ("Y-90 activity, partition model", "Y-90 activity at the lung dose limit", 5.647, "GBq"),
    ("MAA T/N vs tumour ALP", "Correlation coefficient T/N vs ALP", 0.99, "1"),
]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    perfusion_ct = factories.ct_series(PATIENT, n_slices=4, time_points=3)
    pm = make_parametric_map(perfusion_ct[:4])
    nm_maa = factories.nm_multiframe(PATIENT, tracer_text="Tc-99m MAA", tracer_code="85693008")
    nm_gsa = factories.nm_multiframe(PATIENT)
    results = {
        "perfusion": AnalysisResult("ct-perfusion", [OutputObject("parametric-map", pm)], PERFUSION),
        "gsa": AnalysisResult("gsa-targets", [], GSA),
        "maa": AnalysisResult("maa-radioembolization", [], MAA),
    }
    sources = {"ct-perfusion": perfusion_ct, "spect-maa": [nm_maa], "spect-gsa": [nm_gsa]}
    outputs = build_report("CASE-7", results, sources)
    folder = tmp_path_factory.mktemp("report")
    paths = []
    for n, obj in enumerate(outputs):
        paths.append(folder / f"{n}.dcm")
        obj.dataset.save_as(paths[-1], enforce_file_format=True)
    return {"outputs": outputs, "paths": paths, "nm_maa": nm_maa, "pm": pm, "perfusion_ct": perfusion_ct,
            "results": results, "sources": sources}


def test_report_objects_are_routed_as_report_and_pass_dciodvfy(case):
    outputs = case["outputs"]
    assert [o.kind for o in outputs] == ["report"] * len(outputs) and len(outputs) >= 2
    assert outputs[0].dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert all(o.dataset.Modality == "OT" for o in outputs[1:])
    for path in case["paths"]:
        assert dciodvfy_errors(path) == [], path.name


def _read_measurements(path):
    sr = hd.sr.srread(path)
    found = []
    for group in sr.content.get_image_measurement_groups():
        for m in group.get_measurements():
            found.append((group.tracking_identifier, m.name.meaning, float(m.value), m.unit.value, m))
    return sr, found


def test_sr_holds_every_measurement_with_its_unit_and_method(case):
    sr, found = _read_measurements(case["paths"][0])
    for group, meaning, value, unit in EXPECTED:
        hits = [f for f in found if f[0] == group and f[1] == meaning and f[3] == unit
                and f[2] == pytest.approx(value, rel=1e-6, abs=1e-9)]
        assert hits, (group, meaning, value, unit)
    assert len(found) == len(EXPECTED)  # nothing else, nothing twice
    for _g, _n, _v, _u, m in found:
        assert m.method is not None and m.method.meaning
    flows = [m for *_, m in found if m.unit.value == UNIT_FLOW and m.name.meaning == "Arterial liver perfusion"]
    assert {m.method.meaning for m in flows} >= {"Dual-input maximum slope (Blomley, direct)",
                                                 "Dual-input single-compartment model (Materne)"}


def test_sr_identity_study_and_evidence(case):
    sr, _ = _read_measurements(case["paths"][0])
    nm = case["nm_maa"]
    assert sr.PatientID == PATIENT and sr.StudyInstanceUID == nm.StudyInstanceUID  # joins the MAA study
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    evidence = {item[2] for item in sr.get_evidence()}  # (study, series, instance, class)
    assert nm.SOPInstanceUID in evidence and case["pm"].SOPInstanceUID in evidence
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    aorta_refs = {s.referenced_sop_instance_uid for s in groups["CT perfusion input aorta"].source_images}
    # the aorta curve's images: its slice position (z = 5 mm) at every time point
    expected = {ds.SOPInstanceUID for ds in case["perfusion_ct"] if float(ds.ImagePositionPatient[2]) == 5.0}
    assert aorta_refs == expected and len(expected) == 3


def test_summary_page_is_a_readable_capture(case):
    page = case["outputs"][1].dataset
    assert "DERIVED" in page.ImageType and page.BurnedInAnnotation == "NO"
    assert page.PatientID == PATIENT and page.StudyInstanceUID == case["nm_maa"].StudyInstanceUID
    rgb = page.pixel_array
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] > 1000
    dark = (rgb.mean(axis=2) < 128).mean()
    assert 0.005 < dark < 0.3  # black text on a white page
    text = "\n".join(summary_lines("CASE-7", collect_groups(case["results"], case["sources"]), {}))
    for needle in ("Y-90 ACTIVITY 3.43 GBq (limited by normal liver)", "lung shunt fraction 8.03 % (measured on SPECT)",
                   "ITV          1358 cm3", "aorta", "8.05"):
        assert needle in text, needle


def test_subset_and_empty_results():
    assert build_report("EMPTY", {}, {}) == []
    nothing = {"other": AnalysisResult("something-else", [], {"note": "no figures"})}
    assert build_report("NOTHING", nothing, {"planning-ct": factories.ct_series(PATIENT, n_slices=2)}) == []
    ct = factories.ct_series(PATIENT, n_slices=2, time_points=2)
    only = {"perfusion": AnalysisResult("ct-perfusion", [], {"inputs": PERFUSION["inputs"], "t_spl_s": 15.0})}
    outputs = build_report("ONLY-PERFUSION", only, {"ct-perfusion": ct})
    sr = outputs[0].dataset
    assert sr.StudyInstanceUID == ct[0].StudyInstanceUID
    assert len(hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()) == 3
    assert [o.kind for o in outputs] == ["report", "report"]


def test_region_values_carry_their_noise_and_a_qualifier_where_not_measurable(case):
    """The ROI curve's ALP carries its 1-SD as the measurement uncertainty (TID 310); its HPI, not measurable at
    this noise, carries the qualifier "Value indeterminate" (CID 42), and so does the map's mean HPI; the reason
    is among the algorithm's parameters; the summary page says n.m. instead of the number."""
    sr, found = _read_measurements(case["paths"][0])
    tumour = [f for f in found if f[0] == "CT perfusion ROI Tumor 1"]
    alp = next(f[4] for f in tumour if f[1] == "Arterial liver perfusion" and f[2] == pytest.approx(60.5))
    props = {str(i.ConceptNameCodeSequence[0].CodeValue): float(i.MeasuredValueSequence[0].NumericValue)
             for i in alp[0].ContentSequence if "MeasuredValueSequence" in i}
    assert props["371886008"] == pytest.approx(1.2) and props["371885007"] == pytest.approx(1.2)
    assert alp.qualifier is None
    for value in (79.0, 80.0):
        hpi = next(f[4] for f in tumour if f[1] == "Hepatic perfusion index" and f[2] == pytest.approx(value))
        assert hpi.qualifier is not None and hpi.qualifier.value == "114011"
    sd_item = next(f[4] for f in tumour if f[1] == "Hepatic perfusion index" and f[2] == pytest.approx(5.0))
    assert sd_item.qualifier is None
    texts = []

    def walk(items) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert any(t.startswith("HPI (max-slope) not measurable: not measurable at this noise") for t in texts)
    groups = collect_groups(case["results"], case["sources"])
    lines = summary_lines("CASE-7", groups, {})
    row = next(line for line in lines if line.startswith("Tumor 1") and "max-slope" in line)
    assert "n.m." in row and "60.5+-1.20" in row.replace(" ", "")
