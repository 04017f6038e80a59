"""The case report: SR TID 1500 with every measurement (read back with highdicom) and the summary capture."""
from __future__ import annotations

import re
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
                               reason="not measurable at this noise: the 95 % interval, 12 % either side, spans 30 % "
                                      "of the value (limit 15 %)")}}),
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
              # T2's ALP: the CT perfusion reports this lesion's value as not measurable
              CorrelationRow("T2", 2.9, {"maxslope": TumourPerfusion(10, 1.0, 8.5, 14.8, None, {
                  "ALP": "not measurable in the CT perfusion (T2 ALP, max-slope: not measurable at this noise)"})})],
        pearson_r_tn_vs_alp={"maxslope": PearsonRecord(0.99, 3)}),
    timings_s={})
MAA_WARNINGS = ["regions found automatically: review them"]

# (group, concept meaning, value, UCUM unit): every figure of the three records above, written out by hand,
# rounded as the SR states them (each unit's precision; T/N 1 decimal, doses in whole Gy, lung volume in mL).
EXPECTED = [
    ("aorta (CT perfusion input)", "Peak contrast enhancement", 267.6, "[hnsf'U]"),
    ("aorta (CT perfusion input)", "Time To Peak", 12.0, "s"),
    ("aorta (CT perfusion input)", "Volume", 18.8, "mL"),
    ("portal vein (CT perfusion input)", "Peak contrast enhancement", 187.2, "[hnsf'U]"),
    ("portal vein (CT perfusion input)", "Time To Peak", 24.0, "s"),
    ("portal vein (CT perfusion input)", "Volume", 3.0, "mL"),
    ("spleen (CT perfusion input)", "Peak contrast enhancement", 83.5, "[hnsf'U]"),
    ("spleen (CT perfusion input)", "Time To Peak", 15.0, "s"),
    ("spleen (CT perfusion input)", "Volume", 101.6, "mL"),
    ("spleen (CT perfusion input)", "Arterial/portal phase split time", 15.0, "s"),
    ("Liver (CT perfusion)", "Volume", 1500.0, "mL"),
    ("Liver (CT perfusion)", "Analysed volume", 1400.5, "mL"),
    *[("Liver (CT perfusion)", name, v, unit) for name, v, unit in [
        ("Arterial liver perfusion", 11.2, UNIT_FLOW), ("Arterial liver perfusion", 3.1, UNIT_FLOW),
        ("Portal venous perfusion", 70.4, UNIT_FLOW), ("Portal venous perfusion", 12.2, UNIT_FLOW),
        ("Absolute Regional Blood Flow", 81.6, UNIT_FLOW), ("Absolute Regional Blood Flow", 13.0, UNIT_FLOW),
        ("Hepatic perfusion index", 14.0, "%"), ("Hepatic perfusion index", 2.0, "%"),
        ("Arterial liver perfusion", 12.5, UNIT_FLOW), ("Arterial liver perfusion", 2.5, UNIT_FLOW),
        ("Mean Transit Time", 9.5, "s"), ("Mean Transit Time", 1.5, "s"),
        ("Distribution volume", 25.0, "%"), ("Distribution volume", 4.0, "%")]],
    ("Tumor 1 (CT perfusion)", "Volume", 14.0, "mL"),
    ("Tumor 1 (CT perfusion)", "Analysed volume", 13.0, "mL"),
    ("Tumor 1 (CT perfusion)", "Arterial liver perfusion", 61.0, UNIT_FLOW),
    ("Tumor 1 (CT perfusion)", "Arterial liver perfusion", 9.0, UNIT_FLOW),
    ("Tumor 1 (CT perfusion)", "Hepatic perfusion index", 80.0, "%"),
    ("Tumor 1 (CT perfusion)", "Hepatic perfusion index", 5.0, "%"),
    # the region values (the ROI curve's), HPI qualified as not measurable
    ("Tumor 1 (CT perfusion)", "Arterial liver perfusion", 60.5, UNIT_FLOW),
    ("Tumor 1 (CT perfusion)", "Hepatic perfusion index", 79.0, "%"),
    ("Liver (GSA, planning CT)", "Volume", 2058.1, "cm3"), ("FLS (GSA, planning CT)", "Volume", 700.2, "cm3"),
    ("ITV (GSA, planning CT)", "Volume", 1357.9, "cm3"), ("PTV (GSA, planning CT)", "Volume", 1500.3, "cm3"),
    ("T1 (MAA SPECT)", "Tumor to normal liver uptake ratio", 8.1, "{ratio}"),
    ("T1 (MAA SPECT)", "Tumor to normal liver uptake ratio, uncorrected", 5.0, "{ratio}"),
    ("T1 (MAA SPECT)", "Volume", 14.1, "mL"),
    ("T1 (MAA SPECT)", "Mass", 15.0, "g"),  # 14.1 mL x 1.03 g/mL = 14.52 g, in whole grams
    ("T1 (MAA SPECT)", "Absorbed Dose", 564.0, "Gy"),
    ("T1 (MAA SPECT)", "Arterial liver perfusion", 63.0, UNIT_FLOW),
    ("T1 (MAA SPECT)", "Portal venous perfusion", 16.0, UNIT_FLOW),
    ("T1 (MAA SPECT)", "Hepatic perfusion index", 80.6, "%"),
    ("T2 (MAA SPECT)", "Tumor to normal liver uptake ratio", 2.9, "{ratio}"),
    ("T2 (MAA SPECT)", "Tumor to normal liver uptake ratio, uncorrected", 2.1, "{ratio}"),
    ("T2 (MAA SPECT)", "Volume", 12.5, "mL"),
    ("T2 (MAA SPECT)", "Mass", 13.0, "g"),  # 12.875 g
    ("T2 (MAA SPECT)", "Absorbed Dose", 203.0, "Gy"),
    ("T2 (MAA SPECT)", "Arterial liver perfusion", 8.5, UNIT_FLOW),
    ("T2 (MAA SPECT)", "Portal venous perfusion", 14.8, UNIT_FLOW),
    ("Normal liver (MAA SPECT)", "Volume", 1992.4, "mL"),
    ("Normal liver (MAA SPECT)", "Mass", 2052.0, "g"),
    ("Normal liver (MAA SPECT)", "Absorbed Dose", 70.0, "Gy"),
    ("Liver (MAA SPECT)", "Volume", 2026.1, "mL"),
    ("Liver (MAA SPECT)", "Tumor to normal liver uptake ratio", 5.1, "{ratio}"),
    ("Lungs (MAA SPECT)", "Lung shunt fraction", 8.0, "%"),
    ("Lungs (MAA SPECT)", "Volume", 2503.0, "mL"),
    ("Lungs (MAA SPECT)", "Mass", 751.0, "g"),
    ("Lungs (MAA SPECT)", "Absorbed Dose", 18.2, "Gy"),
    ("Y-90 activity (partition model)", "Maximum Y-90 activity within the dose limits", 3.43, "GBq"),
    ("Y-90 activity (partition model)", "Y-90 activity at the normal liver dose limit", 3.43, "GBq"),
    ("Y-90 activity (partition model)", "Y-90 activity at the lung dose limit", 5.65, "GBq"),
    # no correlation coefficient: 3 tumours are fewer than MIN_POINTS (the summary says so)
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
    assert all(o.dataset.Modality == "OT" for o in outputs[1:-1])  # the summary pages
    assert outputs[-1].dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"  # and the same pages as one PDF
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
                and f[2] == pytest.approx(value, rel=1e-9, abs=1e-9)]
        assert hits, (group, meaning, value, unit)
    assert len(found) == len(EXPECTED)  # nothing else, nothing twice
    for _g, _n, _v, _u, m in found:
        assert m.method is not None and m.method.meaning
    flows = [m for *_, m in found if m.unit.value == UNIT_FLOW and m.name.meaning == "Arterial liver perfusion"]
    assert {m.method.meaning for m in flows} >= {"Maximum Slope", "Dual-input single-compartment model (Materne)"}


def test_sr_states_values_at_their_precision_with_standard_codes(case):
    """NumericValue strings are short (no "25.3483000000000"); standard codes wherever one exists."""
    sr, found = _read_measurements(case["paths"][0])
    for group, _meaning, _value, _unit, m in found:
        text = str(m[0].MeasuredValueSequence[0].NumericValue)  # the NUM content item's DS
        assert len(text) <= 7 and len(text.partition(".")[2]) <= 2, (group, text)
    schemes = {(m.name.scheme_designator, m.name.meaning) for *_, m in found}
    assert ("SCT", "Volume") in schemes and ("DCM", "Time To Peak") in schemes
    assert ("DCM", "Absolute Regional Blood Flow") in schemes and ("DCM", "Absorbed Dose") in schemes
    methods = {(m.method.scheme_designator, m.method.meaning) for *_, m in found}
    assert ("DCM", "Sum of segmented voxel method for volume") in methods and ("DCM", "Maximum Slope") in methods
    procedures = {(str(item.ConceptCodeSequence[0].CodingSchemeDesignator), str(item.ConceptCodeSequence[0].CodeValue))
                  for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"}
    assert {("LN", "24815-3"), ("LN", "24817-9")} <= procedures  # "Procedure reported": LOINC


def test_sr_identity_study_and_evidence(case):
    sr, _ = _read_measurements(case["paths"][0])
    nm = case["nm_maa"]
    assert sr.PatientID == PATIENT and sr.StudyInstanceUID == nm.StudyInstanceUID  # joins the MAA study
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    evidence = {item[2] for item in sr.get_evidence()}  # (study, series, instance, class)
    assert nm.SOPInstanceUID in evidence and case["pm"].SOPInstanceUID in evidence
    groups = {g.tracking_identifier: g for g in cast(Any, sr.content).get_image_measurement_groups()}
    aorta_refs = {s.referenced_sop_instance_uid for s in groups["aorta (CT perfusion input)"].source_images}
    # the aorta curve's images: its slice position (z = 5 mm) at every time point
    expected = {ds.SOPInstanceUID for ds in case["perfusion_ct"] if float(ds.ImagePositionPatient[2]) == 5.0}
    assert aorta_refs == expected and len(expected) == 3


def test_summary_page_is_a_readable_capture(case):
    page = case["outputs"][1].dataset
    # the page header burns in the patient's name, ID and birth date: the capture says so
    assert "DERIVED" in page.ImageType and page.BurnedInAnnotation == "YES"
    assert page.PatientID == PATIENT and page.StudyInstanceUID == case["nm_maa"].StudyInstanceUID
    rgb = page.pixel_array
    assert rgb.shape == (1080, 1920, 3)
    bright = (rgb.mean(axis=2) > 128).mean()
    assert 0.005 < bright < 0.2  # light text on a dark page
    text = "\n".join(summary_text("CASE-7", case["results"], case["sources"]))
    for needle in ("maximum activity within these limits 3.43 GBq", "reached first: normal liver limit",
                   "not a prescription", "Lung shunt fraction 8.0 % (measured on SPECT)",
                   "ITV | liver - FLS (to treat) | 1357.9", "aorta | 268 | 12.0 | 18.8", "T1 | 14.1 | 8.1 | 5.0 | 564",
                   "n = 3 tumours, too few for a correlation coefficient (needs 5)",
                   "Liver | 2058.1 | planning CT: RTSTRUCT 'Liver'", "Liver | maximum slope | 11.2 \u00b1 3.1",
                   "T/N vs tumour ALP: maximum slope: n = 3 tumours"):
        assert needle in text, needle
    # one liver volume (the received contour's), the other source named without a second number
    assert "2026.1" not in text and "MAA SPECT: automatic from the uptake" in text
    # the typographic forms only (the SR may keep UCUM units; the pages and their text do not)
    assert not re.search(r">=|<=|\+-|\bcm3\b|\bmm2\b", text), re.findall(r".{20}(?:>=|<=|\+-|cm3|mm2).{5}", text)
    # one name per method and per region, whatever the records and map labels spell
    for spelling in ("max-slope", "MaxSlope", "maxslope", "max slope", "one-compartment", "discm",
                     "non-tumoural"):
        assert spelling not in text, spelling


def test_summary_pdf_is_an_encapsulated_pdf_of_the_same_pages(case):
    doc = case["outputs"][-1].dataset
    pdf = bytes(doc.EncapsulatedDocument)[: int(doc.EncapsulatedDocumentLength)]
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    pages = len(case["outputs"]) - 2
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type /Page>") >= pages
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf" and doc.BurnedInAnnotation == "YES"
    assert doc.PatientID == PATIENT and doc.StudyInstanceUID == case["nm_maa"].StudyInstanceUID
    assert "not for primary diagnosis" in doc.DocumentTitle.lower()
    sources = {item.ReferencedSOPInstanceUID for item in doc.SourceInstanceSequence}
    assert {o.dataset.SOPInstanceUID for o in case["outputs"][:-1]} <= sources
    assert b"liver-node" in pdf  # its metadata names the creator


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
    assert [o.kind for o in outputs] == ["report", "report", "report"]  # SR, summary page, its PDF


def test_region_values_carry_their_noise_and_a_qualifier_where_not_measurable(case) -> None:
    """The ROI curve's ALP carries its 1-SD as the measurement uncertainty (TID 310); its HPI, not measurable at
    this noise, carries the qualifier "Value indeterminate" (CID 42), and so does the map's mean HPI; the reason
    is among the algorithm's parameters; the summary page says n.m. instead of the number."""
    sr, found = _read_measurements(case["paths"][0])
    tumour = [f for f in found if f[0] == "Tumor 1 (CT perfusion)"]
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
    assert any(t.startswith("Tumor 1 HPI (maximum slope) not measurable at this noise") for t in texts)
    lines = summary_text("CASE-7", case["results"], case["sources"])
    row = next(line for line in lines if line.startswith("Tumor 1 | maximum slope"))
    assert row.endswith("n.m.") and "| 60.5 \u00b1 1.2 |" in row  # ALP value +- its noise; HPI flagged
    assert any(line.startswith("Tumor 1 HPI (maximum slope) not measurable at this noise") for line in lines)
    # the workflow's warnings (status flags) hold the same sentence: the summary says it once, under the table
    outputs = case["results"]["perfusion"].outputs
    warned = dict(case["results"], perfusion=WorkflowResult("perfusion", PERFUSION, outputs,
                                                            warnings=PERFUSION.not_measurable()))
    assert PERFUSION.not_measurable() == [
        "Tumor 1 HPI (maximum slope) not measurable at this noise: the 95 % interval, 12 % either side, spans 30 % of "
        "the value (limit 15 %)"]
    text = "\n".join(summary_text("CASE-7", warned, case["sources"]))
    assert text.count("Tumor 1 HPI (maximum slope) not measurable at this noise") == 1
    # the MAA's mean of the maps in the same lesion T2: qualified in the SR, its reason among the parameters,
    # n.m. in the MAA table
    t2 = next(f[4] for f in found if f[0] == "T2 (MAA SPECT)" and f[1] == "Arterial liver perfusion")
    assert t2.qualifier is not None and t2.qualifier.value == "114011"
    assert any(t.startswith("ALP mean (maximum slope): not measurable in the CT perfusion (T2 ALP") for t in texts)
    t2_row = next(line for line in lines if line.startswith("T2 | "))
    assert t2_row == "T2 | 12.5 | 2.9 | 2.1 | 203 | n.m. | 14.8 | -", t2_row
    assert "n.m.: the CT perfusion reports the lesion's value as not measurable" in text


def test_summary_pages_keep_every_text_apart(case):
    """The summary's tables fit their columns: no heading, unit or value runs into its neighbour."""
    from node.imaging.pages import Identity
    from node.registry import DEFAULT_REGISTRY
    from node.report.build import _reporting, collect_groups, summary_sections
    from node.report.summary import render_pages

    reporting = _reporting(case["results"], DEFAULT_REGISTRY)
    sections = summary_sections(reporting, collect_groups(case["results"], case["sources"]))
    pages = render_pages(Identity.of(case["nm_maa"], "Case summary"), sections)
    assert pages and all(page.overlaps == () for page in pages), [page.overlaps for page in pages]
