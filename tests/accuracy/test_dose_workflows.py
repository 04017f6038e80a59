"""The dose workflows as the node runs them, on the phantom (variants y90 and tps-rtdose) against its truth and
against independent tools: the MAA's predicted dose (automatic regions, partition-model activity), its RT Dose and
regions read by `plastimatch dvh` against the figures the node reports, the post-therapy comparison (T3 mismatch:
sign and size; a non-quantitative image too), the returned plan's FLV20Gy / F20Gy, the reports (SR read back with
highdicom: dose concepts, safety flags as qualitative evaluations, separate reports in the later visits' studies)
and dciodvfy on every object. One condition (seed 3, NM stored with negative spacing, feet-first CTs): the demo
checks seed 0 through a running node, and the dose science's own tests sweep seeds and conditions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_dose_plastimatch import assert_agree, figures_from_histogram, plastimatch_dvh

import rtstruct
from node.dose.records import SafetyFlagRecord
from node.gsa.pipeline import run_gsa
from node.gsa.settings import GsaSettings
from node.gsaplan.pipeline import run_gsaplan
from node.gsaplan.settings import GsaPlanSettings
from node.gsaplan.workflow import GSAPLAN
from node.maa.pipeline import run_maa
from node.maa.reference import MaaResult
from node.maa.settings import MaaSettings
from node.maa.workflow import MAA
from node.record import decode, dumps, encode
from node.registry import DEFAULT_REGISTRY
from node.report.build import build_report
from node.report.codes import ABOVE_RANGE, BELOW_RANGE, MEAN_DOSE, NORMALITY, RATIO, rounded
from node.workflow import WorkflowResult
from node.y90post.measurements import Y90PostMeasurements
from node.y90post.pipeline import run_y90post
from node.y90post.report import AGREEMENT
from node.y90post.settings import Y90PostSettings
from node.y90post.workflow import Y90POST
from testpeers.orthanc import dciodvfy_errors

SEED, VARIANTS = 3, ("y90", "tps-rtdose", "negative-spacing", "feet-first")


def series(root: Path, folder: str) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((root / folder).glob("*.dcm"))]


class Case:
    """One phantom through MAA (+ predicted dose), post-therapy dosimetry, GSA and the returned plan's evaluation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.truth = json.loads((root / "truth.json").read_text())
        self.nm = series(root, "spect-maa")[0]
        self.maa_ct = series(root, "spect-maa-ct")
        # a site plan above resin's 40 Gy normal-liver limit, so that the safety flags show
        self.maa = run_maa(self.nm, self.maa_ct, None, None, MaaSettings(normal_liver_dose_gy=70.0))
        assert isinstance(self.maa, MaaResult) and self.maa.dose is not None
        self.pet, self.pet_ct = series(root, "y90-pet"), series(root, "y90-pet-ct")
        self.post = run_y90post(self.pet, self.pet_ct, self.maa.dose, Y90PostSettings())
        planning, gsa_nm, gsa_ct = series(root, "planning-ct"), series(root, "spect-gsa")[0], series(root,
                                                                                                   "spect-gsa-ct")
        self.gsa = run_gsa(planning, gsa_nm, gsa_ct, series(root, "planning-rtstruct")[0], GsaSettings())
        assert self.gsa.reference is not None
        self.rt_dose = series(root, "tps-rtdose")[0]
        self.plan = run_gsaplan(self.rt_dose, None, self.gsa.reference, GsaPlanSettings())
        self.sources = {"spect-maa": [self.nm], "spect-ct": self.maa_ct[:1], "y90-post": self.pet[:1],
                        "plan-dose": [self.rt_dose], "spect-gsa": [gsa_nm], "planning-ct": planning[:1]}
        self.results: dict[str, WorkflowResult[Any]] = {"maa": self.maa, "y90post": self.post, "gsa": self.gsa,
                                                        "gsaplan": self.plan}

    def matched(self, name: str) -> str:
        """The node's MAA region nearest the truth tumour `name` (automatic regions are named H1, H2, ...)."""
        t = next(t for t in self.truth["tumours"] if t["name"] == name)
        found = self.maa.measurements.uptake.tumours
        return min(found, key=lambda n: float(np.linalg.norm(np.subtract(found[n].centre_mm, t["centre_mm"]["maa"]))))


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Case:
    from node.phantom import write_phantom

    return Case(write_phantom(tmp_path_factory.mktemp("dose-workflows"), size="small", seed=SEED, variants=VARIANTS))


def test_predicted_dose_of_the_partition_activity_against_the_truth(case) -> None:
    """Automatic regions, the partition-model activity: means per region against the phantom's LDM truth at that
    activity (linear in it); the MAA's own commissioning checks pass."""
    pd = case.maa.measurements.predicted_dose
    assert pd is not None and pd.computed and pd.activity_gbq is not None
    assert pd.activity_gbq == pytest.approx(case.maa.measurements.partition_model.activity_gbq, rel=1e-3)
    imaged = case.truth["y90"]["maa_predicted"]["imaged"]
    scale = pd.activity_gbq / case.truth["y90"]["maa_predicted"]["planned_activity_gbq"]
    assert pd.regions["whole liver"].mean_gy == pytest.approx(imaged["liver"]["mean_gy"] * scale, rel=0.03)
    assert pd.regions["non-tumoural liver"].mean_gy == pytest.approx(imaged["normal_liver"]["mean_gy"] * scale,
                                                                     rel=0.03)
    for t in ("T1", "T2", "T3"):
        assert pd.regions[case.matched(t)].mean_gy == pytest.approx(imaged[t]["mean_gy"] * scale, rel=0.05), t
    assert pd.lungs is not None and pd.lungs.voxel_mean_gy == pytest.approx(imaged["lungs"]["mean_gy"] * scale,
                                                                            rel=0.05)
    assert pd.deposited_gbq == pytest.approx(pd.activity_gbq, rel=0.01)  # energy stays in tissue
    checks = MAA.phantom_checks(case.maa.measurements, case.truth)
    assert len(checks) >= 9 and all(c.ok for c in checks), [c for c in checks if not c.ok]


def _flags(result: MaaResult) -> list[SafetyFlagRecord]:
    assert result.measurements.predicted_dose is not None
    return result.measurements.predicted_dose.flags


def test_safety_flags_follow_the_sphere_type_and_the_treatment(case) -> None:
    """At the partition activity of a site's 70 Gy normal-liver target resin's 40 Gy limit is crossed; at the
    default targets (the safety limits themselves) the plan meets its limits up to the partition model's uniform
    compartments; at the phantom's planned 1.8 GBq it is not, unless the liver is compromised (30 Gy); glass flags
    every tumour below 205 Gy and keeps 70 Gy for a compromised liver."""
    from node.dose.safety import DoseLimits, SphereType

    site = case.maa.measurements.predicted_dose
    flagged = next(f for f in site.flags if f.quantity == "non-tumoural liver mean dose")
    assert flagged.value_gy > flagged.limit_gy == 40.0 and "exceeds" in flagged.message
    assert any("normal liver mean dose" in w for w in case.maa.warnings)
    assert "site setting" in case.maa.measurements.partition_model.limits_basis

    defaults = {"resin": MaaSettings(), "compromised": MaaSettings(compromised_liver=True),
                "glass": MaaSettings(sphere_type=SphereType.GLASS, dose_limits=DoseLimits.eanm("glass"))}
    results = {name: run_maa(case.nm, case.maa_ct, None, None, settings) for name, settings in defaults.items()}

    for name, settings in defaults.items():
        m = results[name].measurements
        plan, pd = m.partition_model, m.predicted_dose
        assert pd is not None and pd.lungs is not None and pd.lungs.mean_gy is not None, name
        limit = settings.dose_limits.normal_liver_limit(settings.treatment)
        assert plan.limits_basis.startswith(f"normal liver {limit:g} Gy ({settings.sphere_type.value} safety"), name
        ntl = pd.regions["non-tumoural liver"].mean_gy
        assert ntl is not None and ntl == pytest.approx(limit if plan.limited_by == "normal liver"
                                                        else plan.normal_liver_dose_gy, rel=0.03), name
        assert ntl <= limit * 1.03, name  # the plan is at most at its limit; the voxel mean within 3 % of it
        nl_flags = [f for f in pd.flags if f.quantity == "non-tumoural liver mean dose"]
        assert bool(nl_flags) == (round(ntl, 1) > limit), (name, ntl)
        assert not [f for f in pd.flags if f.quantity.startswith("lung")], name
        assert pd.lungs.mean_gy == pytest.approx(plan.lung_dose_gy, abs=0.01), name  # one lung mass
        vmax, by = pd.voxel_max_activity_gbq, pd.voxel_max_activity_limited_by
        assert vmax is not None and pd.activity_gbq is not None and by in ("normal liver", "lungs"), name
        at_vmax = {"normal liver": ntl, "lungs": pd.lungs.mean_gy}[by] * vmax / pd.activity_gbq
        bound = limit if by == "normal liver" else settings.dose_limits.lung_limit(settings.treatment)
        assert at_vmax == pytest.approx(bound, rel=2e-3), name
        if nl_flags:  # the warning names the activity that keeps the voxel doses within the limits
            assert vmax < pd.activity_gbq and any(f"{vmax:.3f} GBq" in w for w in results[name].warnings), name

    resin_vmax = results["resin"].measurements.predicted_dose
    assert resin_vmax is not None and resin_vmax.voxel_max_activity_gbq is not None
    at = MaaSettings(prescribed_activity_gbq=resin_vmax.voxel_max_activity_gbq)
    checked = run_maa(case.nm, case.maa_ct, None, None, at).measurements.predicted_dose
    assert checked is not None and not [f for f in checked.flags if f.quantity == "non-tumoural liver mean dose"]
    assert checked.regions["non-tumoural liver"].mean_gy == pytest.approx(40.0, abs=0.06)  # at the limit, not over

    planned = MaaSettings(prescribed_activity_gbq=1.8)
    at_plan = run_maa(case.nm, case.maa_ct, None, None, planned).measurements.predicted_dose
    assert at_plan is not None and at_plan.activity_source.startswith("configured prescription")
    assert "non-tumoural liver mean dose" not in {f.quantity for f in at_plan.flags}
    assert {f.quantity for f in at_plan.flags} == {f"tumour {case.matched('T2')} mean dose"}  # ~88 Gy < 100 Gy
    glass = MaaSettings(prescribed_activity_gbq=1.8, compromised_liver=True, dose_limits=DoseLimits.eanm("glass"))
    flags = _flags(run_maa(case.nm, case.maa_ct, None, None, glass))
    assert {f.quantity for f in flags} == {f"tumour {case.matched(t)} mean dose" for t in ("T1", "T2", "T3")}
    assert all(f.limit_gy == 205.0 for f in flags)  # glass: no compromised-liver limit below its 70 Gy
    resin = MaaSettings(prescribed_activity_gbq=1.8, compromised_liver=True)
    flags = _flags(run_maa(case.nm, case.maa_ct, None, None, resin))
    assert "non-tumoural liver mean dose" in {f.quantity for f in flags}  # ~35 Gy > resin's 30 Gy compromised


def test_the_rt_dose_and_regions_the_node_sends_give_plastimatch_the_reported_dvh(case, tmp_path) -> None:
    """plastimatch rasterises the node's regions structure set on the MAA CT and reads the node's RT Dose: its
    figures agree with the ones the node reports (the SR's), and the RT Dose references the plan and regions."""
    objects = {(o.kind, str(o.dataset.SOPClassUID)): o.dataset for o in case.maa.outputs}
    rd = objects[("rtdose", "1.2.840.10008.5.1.4.1.1.481.2")]
    rp = objects[("rtdose", "1.2.840.10008.5.1.4.1.1.481.5")]
    rs = objects[("rtdose", "1.2.840.10008.5.1.4.1.1.481.3")]
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert rd.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rd.FrameOfReferenceUID == rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID \
        == case.maa_ct[0].FrameOfReferenceUID
    rois = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    nontumoural = [d for d in rd.DVHSequence if len(d.DVHReferencedROISequence) > 1]
    assert len(nontumoural) == 1 and [r.DVHROIContributionType for r in nontumoural[0].DVHReferencedROISequence] \
        == ["INCLUDED"] + ["EXCLUDED"] * (len(rois) - 2)  # liver minus every tumour (not the lungs)
    for ds, name in ((rd, "rd.dcm"), (rs, "rs.dcm"), (rp, "rp.dcm")):
        ds.save_as(tmp_path / name, enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / name) == [], name
    theirs = plastimatch_dvh(tmp_path / "rs.dcm", case.root / "spect-maa-ct", tmp_path / "rd.dcm", tmp_path)
    pd = case.maa.measurements.predicted_dose
    assert pd is not None
    names = {"Liver": "whole liver", "Lungs": "lungs", **{n: n for n in case.maa.measurements.uptake.tumours}}
    for roi, region in names.items():
        doses, cumulative = theirs[roi]
        r = pd.regions[region]
        mine = {"mean": r.mean_gy, "d50": r.d50_gy, "d70": r.d70_gy, "d90": r.d90_gy,
                **{f"v{k}": v for k, v in r.v_percent.items()}}
        # the RT Dose stores the dose in 16 bits (step max / 65535) and the record rounds: a hair more than the bins
        assert_agree({k: v for k, v in mine.items() if v is not None}, figures_from_histogram(doses, cumulative),
                     roi)


def test_post_therapy_mismatch_has_the_right_sign_and_size(case) -> None:
    m = case.post.measurements
    assert m.source.quantitative and m.source.administered_gbq == pytest.approx(1.75)
    assert m.source.decay_factor_to_administration == pytest.approx(
        case.truth["y90"]["delivered"]["decay_factor_to_administration"], rel=1e-3)
    t3 = m.regions[case.matched("T3")]
    truth = case.truth["y90"]["comparison"]
    factor = case.truth["y90"]["maa_predicted"]["planned_activity_gbq"] / 1.75  # node compares at the administered
    assert t3.compared and t3.mean_difference_gy is not None and t3.mean_difference_gy < 0 \
        and t3.d70_difference_gy is not None and t3.d70_difference_gy < 0
    assert t3.mean_ratio == pytest.approx(truth["T3"]["mean_ratio"] * factor, abs=0.05)
    assert t3.d70_ratio == pytest.approx(truth["T3"]["d70_ratio"] * factor, abs=0.06)
    others = [r.mean_ratio for n, r in m.regions.items() if r.compared and n != case.matched("T3")]
    assert others and all(r is not None and abs(r - 1.0) < 0.15 for r in others)
    assert not m.regions["lungs"].compared  # one bed position over the liver
    mismatch = [w for w in case.post.warnings if "over-predicted" in w]
    assert len(mismatch) == 1 and case.matched("T3") in mismatch[0]
    checks = Y90POST.phantom_checks(m, case.truth)
    assert len(checks) == 4 and all(c.ok for c in checks), checks


def test_a_non_quantitative_post_therapy_image_still_shows_the_mismatch(case) -> None:
    """The same PET declared in counts (as a bremsstrahlung SPECT would be): scaled to the administered activity
    in the liver, the distribution's mismatch remains."""
    pet = [pydicom.dcmread(p) for p in sorted((case.root / "y90-pet").glob("*.dcm"))]
    for ds in pet:
        ds.Units = "CNTS"
    m = run_y90post(pet, case.pet_ct, case.maa.dose, Y90PostSettings()).measurements
    assert not m.source.quantitative and "not quantitative" in " ".join(m.notes)
    liver = m.regions["whole liver"]
    assert liver.mean_ratio == pytest.approx(1.0, abs=0.03)  # all of A x (1 - LSF) in the liver, as predicted
    t3 = m.regions[case.matched("T3")]
    assert t3.mean_ratio is not None and t3.mean_ratio < 0.7


def test_returned_plan_flv20_and_f20_against_the_hand_computed_truth(case) -> None:
    m = case.plan.measurements
    truth = case.truth["tps_dose"]
    assert m.flv_percent == pytest.approx(truth["flv20_percent"], abs=1.0)
    assert m.f_percent == pytest.approx(truth["f20_percent"], abs=1.0)
    assert m.dose.referenced_plan_uids == [truth["referenced_rt_plan_uid"]] and not m.dose.plan_received
    checks = GSAPLAN.phantom_checks(m, case.truth)
    assert len(checks) == 6 and all(c.ok for c in checks), checks
    assert case.plan.warnings == []  # FLV20Gy ~ 10 % < 20 %
    strict = run_gsaplan(case.rt_dose, None, case.gsa.reference, GsaPlanSettings(flv_warning_percent=5.0))
    assert len(strict.warnings) == 1 and "FLV20Gy" in strict.warnings[0]


def test_reports_carry_dose_figures_and_flags_and_the_later_visits_report_on_their_own(case, tmp_path) -> None:
    objects = build_report(case.truth["patient_id"], case.results, case.sources, DEFAULT_REGISTRY)
    srs = [o.dataset for o in objects if o.dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"]
    assert len(srs) == 3  # the case (MAA + GSA), the post-therapy visit, the returned plan
    by_study = {str(sr.StudyInstanceUID): sr for sr in srs}
    case_sr = by_study[str(case.nm.StudyInstanceUID)]
    post_sr = by_study[str(case.pet[0].StudyInstanceUID)]
    plan_sr = by_study[str(case.rt_dose.StudyInstanceUID)]
    assert "Y-90 post-therapy dose" in post_sr.SeriesDescription
    for n, o in enumerate(objects):
        o.dataset.save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"{n}.dcm") == [], o.description
    report = hd.sr.srread(tmp_path / f"{objects.index(next(o for o in objects if o.dataset is case_sr))}.dcm")
    groups = cast(Any, report.content).get_image_measurement_groups()
    dose = {g.tracking_identifier: g for g in groups if g.tracking_identifier.startswith("Y-90 dose predicted, ")}
    assert {"Y-90 dose predicted, Liver", "Y-90 dose predicted, Normal liver",
            "Y-90 dose predicted, Lungs"} <= set(dose)
    normal = dose["Y-90 dose predicted, Normal liver"]
    (mean,) = normal.get_measurements(name=hd.sr.CodedConcept(MEAN_DOSE.value, MEAN_DOSE.scheme, MEAN_DOSE.meaning))
    pd = case.maa.measurements.predicted_dose
    # the SR states each value rounded to its unit's precision (node.report.codes.DECIMALS: Gy to 0.1)
    assert pd is not None and float(mean.value) == rounded(pd.regions["non-tumoural liver"].mean_gy, "Gy")
    evaluations = [str(e.value.value) for e in normal.get_qualitative_evaluations()]
    assert evaluations == [ABOVE_RANGE.value]  # 70 Gy > resin's 40 Gy
    post = hd.sr.srread(tmp_path / f"{objects.index(next(o for o in objects if o.dataset is post_sr))}.dcm")
    pgroups = cast(Any, post.content).get_image_measurement_groups()
    t3 = next(g for g in pgroups if g.tracking_identifier.endswith(case.matched("T3")))
    ratios = t3.get_measurements(name=hd.sr.CodedConcept(RATIO.value, RATIO.scheme, RATIO.meaning))
    pairs = {(str(e.name.value), str(e.value.value)) for e in t3.get_qualitative_evaluations()}
    # the mismatch (delivered below the prediction) and the delivered dose below resin's 100 Gy tumour minimum
    assert float(ratios[0].value) < 0.7 and pairs == {(AGREEMENT.value, BELOW_RANGE.value),
                                                            (NORMALITY.value, BELOW_RANGE.value)}
    assert "gsaplan" not in {str(o.description) for o in objects if o.dataset is case_sr}
    assert str(plan_sr.SeriesDescription).startswith("Functional-liver plan dose")


def test_dose_measurements_go_through_the_case_record_unchanged(case) -> None:
    for wf, result in ((MAA, case.maa), (Y90POST, case.post), (GSAPLAN, case.plan)):
        data = json.loads(dumps(encode(result.measurements)))
        assert decode(data, wf.measurements_type) == result.measurements, wf.name
    post = decode(json.loads(dumps(encode(case.post.measurements))), Y90PostMeasurements)
    assert post.regions[case.matched("T3")].delivered is not None


def test_predicted_dose_uses_drawn_regions_as_drawn(case) -> None:
    """A structure set drawn on the MAA SPECT/CT (here the truth's tumours and liver): the DVHs are read in the
    contours as drawn, on the CT, and the RT Dose's DVHs reference that structure set (no new one is made)."""
    from node.phantom import layout, y90

    lay = layout.build_layout("small", feet_first="feet-first" in VARIANTS)
    masks = y90.region_masks(lay.grids["maa-ct"], lay.poses["maa"])
    cts = rtstruct.sort_slices(case.maa_ct)
    rs = rtstruct.write_rtstruct(cts, [rtstruct.RoiMask("Liver", masks["liver"])]
                                 + [rtstruct.RoiMask(t, masks[t], interpreted_type="GTV") for t in ("T1", "T2", "T3")])
    result = run_maa(case.nm, case.maa_ct, rs, None, MaaSettings(prescribed_activity_gbq=1.8))
    pd = result.measurements.predicted_dose
    assert pd is not None and pd.structure_set_sop_instance_uid == rs.SOPInstanceUID
    imaged = case.truth["y90"]["maa_predicted"]["imaged"]
    # the truth reads its regions as voxel-centre masks of the SPECT grid, the node the contours on the CT: for the
    # smallest tumour (T1, 3 cm, in the dose's steepest gradient) the two discretisations differ by ~4 %
    for t in ("T1", "T2", "T3"):
        assert pd.regions[t].mean_gy == pytest.approx(imaged[t]["mean_gy"], rel=0.05), t
    assert pd.regions["non-tumoural liver"].mean_gy == pytest.approx(imaged["normal_liver"]["mean_gy"], rel=0.03)
    (rd,) = [o.dataset for o in result.outputs if o.kind == "rtdose" and o.dataset.Modality == "RTDOSE"]
    assert rd.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert not [o for o in result.outputs if o.dataset.Modality == "RTSTRUCT"]
