"""The case report: SR TID 1500 with every measurement (read back with highdicom) and the summary capture."""
from __future__ import annotations

from typing import Any, cast

import highdicom as hd
import pytest

from node.gsa.measurements import GsaMeasurements, SeriesRef
from node.imaging.registration import RefinementRecord, RegistrationRecord
from node.maa.measurements import (
    CorrelationRecord,
    CorrelationRegistration,
    CorrelationRow,
    MaaMeasurements,
    PartitionRecord,
    PearsonRecord,
    RegionsRecord,
    ShuntRecord,
    SpectRecord,
    TumourPerfusion,
    TumourRecord,
    UptakeRecord,
)
from node.perfusion.measurements import (
    InputCurve,
    LiverCurve,
    MeanSd,
    PerfusionMeasurements,
    RegionStats,
    RegionValue,
    SeriesInfo,
)
from node.report.build import build_report, summary_text
from node.workflow import OutputObject, WorkflowResult
from testpeers.orthanc import dciodvfy_errors, make_parametric_map

import factories

PATIENT = "REPORT01"
UNIT_FLOW = "mL/min/(100.mL)"

REGISTRATION = RegistrationRecord("rigid", -0.5, 50, "converged", 0.95, 1.0, [[1, 0, 0, 0], [0, 1, 0, 0],
                                  [0, 0, 1, 0], [0, 0, 0, 1]], "fixed to moving", [0, 0, 0], 0.0, [0, 0, 0])


def _input(source: str, centre: list[float], volume: float, peak: float, t_peak: float) -> InputCurve:
    return InputCurve(source, centre, volume, 0, peak, t_peak, [])


def perfusion_record(inputs: dict[str, InputCurve], regions: dict[str, RegionStats]) -> PerfusionMeasurements:
    """A perfusion record with the figures the report uses (the rest neutral)."""
    return PerfusionMeasurements(
        series=SeriesInfo("1.2.3", "classic-ct", 3, [0.0, 3.0, 6.0], 0.0, [4, 64, 64], [4, 32, 32], [5.0, 2.0, 2.0]),
        reference_time_point=1, reference_time_s=3.0, motion=[], baseline_frames=1, noise_hu=10.0,
        noise_reduction={}, inputs=inputs, t_spl_s=15.0, aorta_peak_hu=267.6, aorta_peak_time_s=12.0,
        portal_peak_hu=187.2, portal_peak_time_s=24.0, liver_curve=LiverCurve("automatic estimate", 1500.0, []),
        masks={}, methods={"max-slope": {"t_spl_s": 15.0, "spatial_sigma_mm": 4.0}, "discm": {"delays_s": [0, 1]}},
        rtstruct="used", regional_statistics=regions, stages={})


INPUTS = {
    "aorta": InputCurve("automatic", [17.6, 27.7, 5.0], 18.79, 367, 267.6, 12.0, [0.0, 76.8, 267.6]),
    "portal_vein": _input("rtstruct", [-13.0, 0.0, 10.0], 2.97, 187.2, 24.0),
    "spleen": _input("automatic", [94.9, 38.0, 0.0], 101.58, 83.5, 15.0),
}
PERFUSION = perfusion_record(INPUTS, {
    "Liver": RegionStats(1500.0, 1400.5, 11000, {
        "max-slope": {"ALP": MeanSd(11.2, 3.1), "PVP": MeanSd(70.4, 12.2), "TLP": MeanSd(81.6, 13.0),
                      "HPI": MeanSd(14.0, 2.0)},
        "discm": {"ALP": MeanSd(12.5, 2.5), "MTT": MeanSd(9.5, 1.5), "DV": MeanSd(25.0, 4.0)}}),
    "Tumor 1": RegionStats(
        14.0, 13.0, 100, {"max-slope": {"ALP": MeanSd(61.0, 9.0), "HPI": MeanSd(80.0, 5.0)}},
        # region values (the ROI curve's) with their 1-SD noise; HPI not measurable at this noise
        values={"max-slope": {
            "ALP": RegionValue(60.5, 1.2, 61.0, 9.0, measurable=True),
            "HPI": RegionValue(79.0, 6.0, 80.0, 5.0, measurable=False,
                               reason="not measurable at this noise: 95 % interval +-12 % spans 30 % of the value "
                                      "(limit 15 %)")}}),
})
GSA = GsaMeasurements(
    method="threshold", fls_threshold_fraction=0.6, ptv_margin_mm=5.0, spect_filter="", spect_max_in_liver=1.0,
    fls_threshold_value=0.6, liver_source="rtstruct ROI 'Liver'", liver_derived=False, liver_roi_name="Liver",
    liver_note="", volumes_cm3={"liver": 2058.1, "FLS": 700.2, "ITV": 1357.9, "PTV": 1500.3},
    liver_in_spect_fov_fraction=1.0, hot_spect_in_liver_fraction=1.0, registration=REGISTRATION,
    planning_ct=SeriesRef("1.2.4"), spect=SeriesRef("1.2.5"), timings_s={})
MAA = MaaMeasurements(
    spect=SpectRecord("1.2.6", "1.2.7", "MAA", [64, 64, 64], [4.4, 4.4, 4.4], 1e6), spect_ct=None,
    regions=RegionsRecord("automatic", "automatic", 15.0, 10.0, {}),
    uptake=UptakeRecord("GTM", 13.0, 5.12, 1.0, 100.0, 2026.1, 1992.4, 33.8, {
        "T1": TumourRecord(14.1, 8.05, 5.05, 1.0, [0, 0, 0]), "T2": TumourRecord(12.5, 2.9, 2.07, 1.0, [0, 0, 0])}),
    lung_shunt=ShuntRecord(0.0803, "measured on SPECT", "covered", None, "counts", 2502.9, None, None),
    partition_model=PartitionRecord(
        computed=True, model="partition", activity_gbq=3.431, limited_by="normal liver",
        activity_normal_liver_limit_gbq=3.431, activity_lung_limit_gbq=5.647, normal_liver_dose_gy=70.0,
        tumour_dose_gy=376.3, lung_dose_gy=18.23, tumour_doses_gy={"T1": 563.6, "T2": 203.0},
        normal_liver_mass_kg=2.0521, lung_mass_kg=0.7509, normal_liver_limit_gy=70.0, lung_limit_gy=30.0),
    correlation=CorrelationRecord(
        done=True, registration=CorrelationRegistration(REGISTRATION, RefinementRecord("slab", False), [], ""),
        rows=[CorrelationRow("T1", 8.05, {"maxslope": TumourPerfusion(10, 1.0, 63.0, 16.0, 80.6)}),
              CorrelationRow("T2", 2.9, {"maxslope": TumourPerfusion(10, 1.0, 8.5, 14.8, None)})],
        pearson_r_tn_vs_alp={"maxslope": PearsonRecord(0.99, 3)}),
    timings_s={})
MAA_WARNINGS = ["regions found automatically: review them"]

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
    results: dict[str, WorkflowResult[Any]] = {
        "perfusion": WorkflowResult("perfusion", PERFUSION, [OutputObject("parametric-map", pm)]),
        "gsa": WorkflowResult("gsa", GSA),
        "maa": WorkflowResult("maa", MAA, warnings=MAA_WARNINGS),
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
    for group in cast(Any, sr.content).get_image_measurement_groups():
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
    groups = {g.tracking_identifier: g for g in cast(Any, sr.content).get_image_measurement_groups()}
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
    text = "\n".join(summary_text("CASE-7", case["results"], case["sources"]))
    for needle in ("Y-90 ACTIVITY 3.43 GBq (limited by normal liver)", "lung shunt fraction 8.03 % (measured on SPECT)",
                   "ITV          1358 cm3", "aorta", "8.05"):
        assert needle in text, needle


def test_subset_and_empty_results():
    assert build_report("EMPTY", {}, {}) == []
    nothing = {"other": WorkflowResult("other", {"note": "no figures"})}
    assert build_report("NOTHING", nothing, {"planning-ct": factories.ct_series(PATIENT, n_slices=2)}) == []
    ct = factories.ct_series(PATIENT, n_slices=2, time_points=2)
    only = {"perfusion": WorkflowResult("perfusion", perfusion_record(INPUTS, {}))}
    outputs = build_report("ONLY-PERFUSION", only, {"ct-perfusion": ct})
    sr = outputs[0].dataset
    assert sr.StudyInstanceUID == ct[0].StudyInstanceUID
    assert len(cast(Any, hd.sr.Comprehensive3DSR.from_dataset(sr).content).get_image_measurement_groups()) == 3
    assert [o.kind for o in outputs] == ["report", "report"]


def test_region_values_carry_their_noise_and_a_qualifier_where_not_measurable(case) -> None:
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
    texts: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert any(t.startswith("HPI (max-slope) not measurable: not measurable at this noise") for t in texts)
    lines = summary_text("CASE-7", case["results"], case["sources"])
    row = next(line for line in lines if line.startswith("Tumor 1") and "max-slope" in line)
    assert "n.m." in row and "60.5+-1.20" in row.replace(" ", "")
