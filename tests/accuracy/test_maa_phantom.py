"""MAA workflow on the digital phantom: T/N against the phantom truth, lung shunt, refusals, DICOM outputs."""
from __future__ import annotations

import copy
import json
from typing import Any, cast

import numpy as np
import pydicom
import pytest

import rtstruct
from node.maa.errors import MaaInputError
from node.maa.pipeline import run_maa
from node.maa.settings import MaaSettings
from node.phantom import anatomy, write_phantom
from node.phantom.layout import poses
from node.record import encode
from testpeers.orthanc import dciodvfy_errors


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = write_phantom(tmp_path_factory.mktemp("maa-phantom"), size="small", seed=0)
    truth = json.loads((out / "truth.json").read_text())
    nm = pydicom.dcmread(next((out / "spect-maa").glob("*.dcm")))
    ct = [pydicom.dcmread(p) for p in sorted((out / "spect-maa-ct").glob("*.dcm"))]
    return {"dir": out, "truth": truth, "nm": nm, "ct": ct}


@pytest.fixture(scope="module")
def automatic(phantom):
    return run_maa(phantom["nm"], phantom["ct"], None, None, MaaSettings())


def _match(found: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Truth tumour name -> the found tumour whose centre is nearest (each truth tumour matched once)."""
    out = {}
    for t in truth["tumours"]:
        centre = np.asarray(t["centre_mm"]["maa"])
        name, entry = min(found.items(), key=lambda kv: np.linalg.norm(np.asarray(kv[1].centre_mm) - centre))
        assert np.linalg.norm(np.asarray(entry.centre_mm) - centre) < 8.0, (t["name"], entry)
        out[t["name"]] = entry
    assert len({id(v) for v in out.values()}) == len(out)
    return out


def test_automatic_tn_within_10_percent_of_truth(phantom, automatic):
    m = automatic.measurements
    tumours = m.uptake.tumours
    assert len(tumours) == len(phantom["truth"]["tumours"])
    for name, entry in _match(tumours, phantom["truth"]).items():
        truth_tn = phantom["truth"]["maa"]["tn_ratio"][name]
        assert entry.tn_ratio == pytest.approx(truth_tn, rel=0.10), name
        # the uncorrected ratio shows why the partial-volume correction is needed
        assert entry.tn_ratio_uncorrected < 0.85 * truth_tn
    assert "automatic" in m.regions.tumour_source and "automatic" in m.regions.liver_source
    truth_liver = phantom["truth"]["gsa"]["liver_volume_ml"]  # same analytic liver in every visit
    assert m.uptake.liver_ml == pytest.approx(truth_liver, rel=0.10)


def test_lung_shunt_measured_on_spect(phantom, automatic):
    shunt = automatic.measurements.lung_shunt
    assert shunt.source == "measured on SPECT"
    assert shunt.lung_shunt_fraction == pytest.approx(phantom["truth"]["maa"]["lung_shunt_fraction"], rel=0.10)


def test_partition_model_in_record_follows_the_formula(automatic):
    """By default the plan targets resin's safety limits (normal liver 40 Gy unilobar, lungs 30 Gy) with the CT
    lung mass, and the predicted dose's lung mean is the plan's lung dose: one lung mass for both (to the record's
    rounding: 0.01 Gy)."""
    m = automatic.measurements
    plan, up, lsf = m.partition_model, m.uptake, m.lung_shunt.lung_shunt_fraction
    weighted = sum(t.tn_ratio * t.volume_ml * 1.03e-3 for t in up.tumours.values())
    expected = 40.0 * (weighted + up.normal_liver_ml * 1.03e-3) / (49.67 * (1 - lsf))
    assert plan.limited_by == "normal liver"
    assert plan.activity_gbq == pytest.approx(expected, rel=2e-3)
    assert plan.normal_liver_dose_gy == pytest.approx(40.0, rel=1e-3)
    assert plan.limits_basis == "normal liver 40 Gy (resin safety limit, unilobar), lungs 30 Gy (safety limit per " \
                                "session)"
    assert plan.lung_mass_source == "SPECT/CT CT lungs through the density calibration"
    assert "lung" not in plan.densities_g_per_ml  # no 0.30 g/mL convention
    pd = m.predicted_dose
    assert pd is not None and pd.lungs is not None and pd.lungs.mean_gy is not None
    assert pd.lungs.mass_kg == pytest.approx(plan.lung_mass_kg, abs=1e-4)
    assert pd.lungs.mean_gy == pytest.approx(plan.lung_dose_gy, abs=0.01) and plan.lung_dose_gy < 30.0
    assert not [f for f in pd.flags if f.quantity.startswith("lung")]


def _ct_points(ct_sorted):
    """Patient coordinates (k, row, col, 3) of every voxel centre of a sorted CT series."""
    first = ct_sorted[0]
    iop = np.asarray(first.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in first.PixelSpacing)
    rows = np.arange(first.Rows)[:, None, None] * dr * iop[3:]
    cols = np.arange(first.Columns)[None, :, None] * dc * iop[:3]
    return np.stack([np.asarray(ds.ImagePositionPatient, float) + rows + cols for ds in ct_sorted])


def test_rtstruct_regions_tn_within_10_percent(phantom):
    """Liver and tumours contoured on the SPECT/CT's CT (from the phantom's analytic anatomy) are used as given."""
    ct = rtstruct.sort_slices(phantom["ct"])
    pts = _ct_points(ct)
    body = poses()["maa"].inverse().apply(pts)
    rois = [rtstruct.RoiMask("Liver", anatomy.liver_envelope(body), interpreted_type="ORGAN")]
    for t in phantom["truth"]["tumours"]:
        inside = np.linalg.norm(pts - np.asarray(t["centre_mm"]["maa"]), axis=-1) <= t["radius_mm"]
        rois.append(rtstruct.RoiMask(f"Tumor {t['name']}", inside, interpreted_type="GTV"))
    rois.append(rtstruct.RoiMask("Body", np.ones(pts.shape[:3], bool), interpreted_type="EXTERNAL"))
    rtss = rtstruct.write_rtstruct(ct, rois, structure_set_label="TEST")
    result = run_maa(phantom["nm"], phantom["ct"], rtss, None, MaaSettings())
    m = result.measurements
    assert m.regions.liver_source == "RTSTRUCT" and m.regions.tumour_source == "RTSTRUCT"
    assert any("Body" in w for w in result.warnings)
    for t in phantom["truth"]["tumours"]:
        entry = m.uptake.tumours[f"Tumor {t['name']}"]
        assert entry.tn_ratio == pytest.approx(phantom["truth"]["maa"]["tn_ratio"][t["name"]], rel=0.10)
        assert entry.volume_ml == pytest.approx(4 / 3 * np.pi * t["radius_mm"] ** 3 / 1000, rel=0.15)
    # nothing automatic to send back: no structure set of the node's; the predicted dose refers to the one received
    assert {(o.kind, o.dataset.Modality) for o in result.outputs} == {
        ("secondary-capture", "OT"), ("report", "RTDOSE"), ("report", "RTPLAN"), ("report", "OT"),
        ("rtdose", "RTDOSE"), ("rtdose", "RTPLAN")}
    (dose,) = [o.dataset for o in result.outputs if o.kind == "rtdose" and o.dataset.Modality == "RTDOSE"]
    assert dose.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rtss.SOPInstanceUID


def test_configured_lsf_when_no_spect_ct(phantom):
    result = run_maa(phantom["nm"], None, None, None, MaaSettings(lung_shunt_fraction=0.12))
    m = result.measurements
    assert m.lung_shunt.source == "configuration"
    assert m.lung_shunt.lung_shunt_fraction == 0.12
    assert m.partition_model.lung_mass_source.startswith("standard 1 kg")
    assert (m.partition_model.activity_gbq or 0.0) > 0
    missing = run_maa(phantom["nm"], None, None, None, MaaSettings())
    assert missing.measurements.partition_model.computed is False
    assert any("no partition-model activity" in w for w in missing.warnings)


def test_refuses_a_gsa_spect(phantom):
    nm = copy.deepcopy(phantom["nm"])
    item = nm.RadiopharmaceuticalInformationSequence[0]
    item.Radiopharmaceutical = "Tc-99m GSA"
    item.RadiopharmaceuticalCodeSequence[0].CodeValue = "446534003"
    with pytest.raises(MaaInputError, match="GSA"):
        run_maa(nm, phantom["ct"], None, None, MaaSettings())


def test_refuses_ct_of_another_frame_of_reference(phantom):
    ct = [copy.deepcopy(ds) for ds in phantom["ct"][:3]]
    for ds in ct:
        ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    with pytest.raises(MaaInputError, match="FrameOfReferenceUID"):
        run_maa(phantom["nm"], ct, None, None, MaaSettings())


def test_outputs_pass_dciodvfy_and_are_labelled(tmp_path, phantom, automatic):
    kinds = {(o.kind, o.dataset.Modality) for o in automatic.outputs}
    # the regions' RTSTRUCT travels with the report, and with the predicted dose it belongs to ("rtdose"), never as
    # the TPS's targets ("rtstruct")
    assert kinds == {("secondary-capture", "OT"), ("report", "RTSTRUCT"), ("report", "RTDOSE"), ("report", "RTPLAN"),
                     ("report", "OT"), ("rtdose", "RTDOSE"), ("rtdose", "RTPLAN"), ("rtdose", "RTSTRUCT")}
    for n, obj in enumerate(automatic.outputs):
        path = tmp_path / f"{n}.dcm"
        obj.dataset.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], obj.description
        assert obj.dataset.PatientID == phantom["nm"].PatientID
    sc = next(o.dataset for o in automatic.outputs if o.kind == "secondary-capture")
    assert "DERIVED" in sc.ImageType and "not for primary diagnosis" in sc.SeriesDescription
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == phantom["nm"].SOPInstanceUID
    rtss = next(o.dataset for o in automatic.outputs if o.kind == "report" and o.dataset.Modality == "RTSTRUCT")
    assert set(rtstruct.roi_names(rtss)) == {"Liver", "Lungs", *automatic.measurements.uptake.tumours}
    # measurement regions, never targets: a planning system must not take them as GTV/CTV/PTV
    types = rtstruct.roi_interpreted_types(rtss)
    assert {types[n] for n in automatic.measurements.uptake.tumours} == {"CONTROL"}
    assert types["Liver"] == types["Lungs"] == "ORGAN"
    assert {item.ROIGenerationAlgorithm for item in rtss.StructureSetROISequence} == {"AUTOMATIC"}
    json.dumps(encode(automatic.measurements))  # the case record must serialise


def test_case_report_from_the_maa_result(tmp_path, phantom, automatic):
    import highdicom as hd

    from node.report.build import build_report

    outputs = build_report("PHANTOM-CASE", {"maa": automatic}, {"spect-maa": [phantom["nm"]],
                                                                "spect-ct": phantom["ct"]})
    path = tmp_path / "sr.dcm"
    outputs[0].dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    groups = {g.tracking_identifier: g for g in cast(Any, hd.sr.srread(path).content).get_image_measurement_groups()}
    for name, entry in automatic.measurements.uptake.tumours.items():
        tn = [m for m in groups[f"{name} (MAA SPECT)"].get_measurements()
              if m.name.meaning == "Tumor to normal liver uptake ratio"]
        assert len(tn) == 1 and float(tn[0].value) == pytest.approx(entry.tn_ratio, abs=0.05)  # 1 decimal
        assert tn[0].unit.value == "{ratio}"
    activity = groups["Y-90 activity (partition model)"].get_measurements()[0]
    assert activity.unit.value == "GBq" and activity.name.meaning == "Maximum Y-90 activity within the dose limits"
    assert float(activity.value) == pytest.approx(automatic.measurements.partition_model.activity_gbq, abs=0.005)


def test_report_states_the_limits_basis_and_which_dose_is_which(tmp_path, phantom, automatic):
    """SR: the plan's parameters say where the limits come from; the partition-model dose and the voxel dose
    carry their own method and the sentence on why they differ; the summary says both too."""
    from node.maa.partition import WHY_TWO_DOSES
    from node.report.build import build_report

    outputs = build_report("PHANTOM-CASE", {"maa": automatic}, {"spect-maa": [phantom["nm"]],
                                                                "spect-ct": phantom["ct"]})
    sr = outputs[0].dataset
    texts: list[str] = []
    meanings: set[str] = set()

    def walk(items: Any) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            for seq in ("ConceptCodeSequence", "ConceptNameCodeSequence"):
                meanings.update(str(c.CodeMeaning) for c in item.get(seq, []))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert "limits from normal liver 40 Gy (resin safety limit, unilobar), lungs 30 Gy (safety limit per session)" \
        in texts
    assert WHY_TWO_DOSES in texts
    assert {"Partition-model mean (Ho 1996, uniform uptake per compartment)",
            "Local deposition voxel dose, Y-90 49.67 Gy kg/GBq, MAA SPECT/CT"} <= meanings
