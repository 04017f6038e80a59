"""The Y-90 dose the MAA SPECT/CT predicts for the planned activity (local deposition; science.md section 4).

Why here, in the MAA workflow, and not in a workflow of its own: the predicted dose is the dose of the activity
this workflow plans (partition model, or the site's prescription), from the SPECT counts, liver, tumour and lung
regions and the CT this workflow has just read; the planning and its dose check are one decision for the
physicist (an activity whose dose crosses a limit is re-planned). It shares the MAA's inputs and settings table,
and a failure of the dose (no CT for the mass, no lung shunt fraction) leaves the MAA results standing, as the
perfusion correlation does. The post-therapy workflow takes the result (:class:`DoseReference`) from here.

Steps: activity (planned GBq; MAA counts in the liver VOI -> A x (1 - LSF), in the lung VOI -> A x LSF) ->
mass from the SPECT/CT's CT (density calibration, [analysis.maa.ct_density]) -> LDM dose on the SPECT grid
(node.dose) -> DVH figures of every region, the regions being the ones the MAA used, on the CT (the received
contours as drawn, automatic regions carried from the SPECT grid: linear, >= 0.5), so that any TPS or
plastimatch computes the same DVH from the RT Dose and the structure set sent with it -> EANM safety flags
(warnings, never prescriptions) -> RT Dose (+ the beamless RT Plan it references) and a DVH page.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

import rtstruct
from node.derived import NOT_FOR_DIAGNOSIS
from node.dose.density import DensityCalibration
from node.dose.dvh import (
    LUNGS,
    NON_TUMOURAL_LIVER,
    NORMAL_LIVER_V_GY,
    TUMOUR_V_GY,
    V_GY,
    WHOLE_LIVER,
    Dvh,
    LungDose,
    NormalLiverDose,
    RegionDose,
    TumourDose,
    Y90DoseSummary,
    region_dose,
    region_dvh,
)
from node.dose.errors import DoseInputError
from node.dose.ldm import Y90_GY_KG_PER_GBQ, DoseMap
from node.dose.page import PALETTE, Curve, Limit, render_dvh_page
from node.dose.records import RegionDoseRecord, SafetyFlagRecord
from node.dose.rtdose import build_rt_dose, build_rt_plan
from node.dose.safety import (
    DoseLimits,
    SafetyFlag,
    TreatmentContext,
    VoxelActivityLimit,
    check_y90_safety,
    voxel_activity_limit,
)
from node.dose.y90 import predicted_dose, region_mass_kg
from node.imaging.capture import secondary_capture
from node.imaging.grids import as_image, bounding_grid
from node.imaging.pages import Identity, Page
from node.imaging.rois import match_liver_roi
from node.maa.measurements import LungDoseRecord, PredictedDoseRecord
from node.maa.partition import WHY_TWO_DOSES, PartitionPlan
from node.maa.regions import Regions
from node.maa.settings import MaaSettings
from node.maa.shunt import Shunt
from node.report.groups import region_name
from node.workflow import OutputObject

logger = logging.getLogger(__name__)

__all__ = ["DoseRegion", "DoseReference", "PredictedDose", "regions_on_ct", "predict", "ct_lung_mass",
           "DVH_SERIES_NUMBER"]

#: automatic tumours are carried to the CT on the liver's box grown by this margin (they lie in the liver; a region
#: reaching further out is cut there)
TUMOUR_MARGIN_MM = 20.0
DVH_SERIES_NUMBER = 9612


@dataclass(frozen=True)
class DoseRegion:
    """A region of the dose figures: a mask on its own structure grid (a box of the CT, or the binned CT)."""

    name: str
    kind: str  # "tumour", NON_TUMOURAL_LIVER, WHOLE_LIVER, LUNGS
    grid: sitk.Image
    mask: np.ndarray  # bool (z, y, x) on grid


@dataclass(frozen=True)
class DoseReference:
    """What the MAA result hands to the post-therapy workflow: the predicted dose and everything to compare a
    delivered dose with it in the same regions."""

    dose: sitk.Image  # Gy on the MAA SPECT grid
    ct: sitk.Image  # the MAA SPECT/CT's CT (HU): the post-therapy CT is registered to it
    regions: tuple[DoseRegion, ...]
    activity_gbq: float
    lsf: float
    limits: DoseLimits
    treatment: TreatmentContext
    calibration: DensityCalibration
    patient_id: str
    ct_reference: Dataset  # a slice header of that CT: frame of reference, patient and study of derived doses
    rt_plan: Dataset  # the beamless RT Plan of the planned activity (a delivered dose belongs to it too)
    rt_dose_sop_instance_uid: str


@dataclass(frozen=True)
class PredictedDose:
    record: PredictedDoseRecord
    outputs: list[OutputObject]
    warnings: list[str]
    reference: DoseReference | None


def _not_computed(reason: str) -> PredictedDose:
    return PredictedDose(PredictedDoseRecord(computed=False, reason=reason), [],
                         [f"Y-90 dose not predicted: {reason}"], None)


def regions_on_ct(regions: Regions, spect: sitk.Image, ct_image: sitk.Image) -> dict[str, np.ndarray]:
    """The MAA regions ("liver" and tumour names) as bool masks on the CT (its array order): the received
    contours as drawn, automatic regions from their SPECT-grid fractions (linear resampling, >= 0.5)."""

    def moved(fraction: np.ndarray, onto: sitk.Image) -> np.ndarray:
        image = sitk.Resample(as_image(fraction.astype(np.float32), spect), onto, sitk.Transform(),
                              sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayViewFromImage(image) >= 0.5

    liver = regions.drawn_on_ct["liver"] if "liver" in regions.drawn_on_ct else moved(regions.liver, ct_image)
    out = {"liver": liver}
    pad = [int(np.ceil(TUMOUR_MARGIN_MM / sp)) for sp in ct_image.GetSpacing()[::-1]]
    box_grid, box = bounding_grid(ct_image, liver, pad) if liver.any() else (ct_image, None)
    for name, fraction in regions.tumours.items():
        if name in regions.drawn_on_ct:
            out[name] = regions.drawn_on_ct[name]
        elif box is None:
            out[name] = moved(fraction, ct_image)
        else:  # tumours lie in the liver: resampled on its box of the CT only
            mask = np.zeros(liver.shape, dtype=bool)
            mask[box] = moved(fraction, box_grid)
            out[name] = mask
    return out


def _cropped(name: str, kind: str, image: sitk.Image, mask: np.ndarray) -> DoseRegion | None:
    if not mask.any():
        return None
    grid, box = bounding_grid(image, mask)
    return DoseRegion(name, kind, grid, np.ascontiguousarray(mask[box]))


def _dose_regions(on_ct: Mapping[str, np.ndarray], ct_image: sitk.Image, shunt: Shunt) -> list[DoseRegion]:
    liver = on_ct["liver"]
    tumours = {n: m for n, m in on_ct.items() if n != "liver"}
    normal = liver.copy()
    for m in tumours.values():
        normal &= ~m
    found = [_cropped(n, "tumour", ct_image, m) for n, m in tumours.items()]
    found += [_cropped(NON_TUMOURAL_LIVER, NON_TUMOURAL_LIVER, ct_image, normal),
              _cropped(WHOLE_LIVER, WHOLE_LIVER, ct_image, liver)]
    if shunt.lung_ct is not None and shunt.lung_ct_mask is not None:
        found.append(_cropped(LUNGS, LUNGS, shunt.lung_ct, shunt.lung_ct_mask))
    return [r for r in found if r is not None]


def _activity(plan: PartitionPlan | None, shunt: Shunt, analysis: MaaSettings) -> tuple[float, str] | str:
    """(GBq, where it comes from), or why there is none."""
    if shunt.lsf is None:
        return "no lung shunt fraction (the lungs are not in the SPECT/CT and none is configured)"
    if analysis.prescribed_activity_gbq is not None:
        return analysis.prescribed_activity_gbq, "configured prescription ([analysis.maa] prescribed_activity_gbq)"
    if plan is None:
        return "no partition-model activity and no prescription configured"
    return plan.activity_gbq, f"partition model (limited by the {plan.limited_by} limit)"


def ct_lung_mass(shunt: Shunt, calibration: DensityCalibration) -> tuple[float, str] | None:
    """(kg, source) of the lungs on the SPECT/CT's CT through the density calibration, None without CT lungs:
    the one lung mass of the partition model and of the predicted lung mean dose."""
    if shunt.lung_ct is None or shunt.lung_ct_mask is None:
        return None
    mass = region_mass_kg(shunt.lung_ct, shunt.lung_ct_mask, calibration)
    return (mass, "SPECT/CT CT lungs through the density calibration") if mass > 0 else None


def _lung_dose(region: RegionDose | None, shunt: Shunt, plan: PartitionPlan | None, activity: float, lsf: float,
               calibration: DensityCalibration) -> tuple[LungDose, str]:
    shunted = activity * lsf
    ct_mass = ct_lung_mass(shunt, calibration)
    if ct_mass is not None:
        mass = ct_mass[0]
        method = (f"49.67 x A x LSF / lung mass, the mass from the SPECT/CT CT lungs through the density "
                  f"calibration ({mass:.3f} kg; the partition model's lung mass too)")
        return LungDose(region, shunted, mass, Y90_GY_KG_PER_GBQ * shunted / mass), method
    mass_kg = plan.lung_mass_kg if plan is not None else None
    if mass_kg is None:
        return LungDose(region, shunted, None, None), "not available (lungs not imaged, no partition model)"
    return (LungDose(region, shunted, mass_kg, Y90_GY_KG_PER_GBQ * shunted / mass_kg),
            f"49.67 x A x LSF / {plan.lung_mass_source if plan is not None else ''} ({mass_kg:.3g} kg)")


def _summary(dose: sitk.Image, regions: Sequence[DoseRegion]) -> dict[str, RegionDose]:
    return {r.name: region_dose(region_dvh(r.name, dose, r.mask, r.grid)) for r in regions}


def _flag_group_text(flags: Sequence[SafetyFlag], voxel_max: VoxelActivityLimit | None = None) -> list[str]:
    """The flags as warnings; a crossed limit also says what activity the voxel doses would allow."""
    out = [f"Y-90 dose {f.severity}: {f.message}" for f in flags]
    if voxel_max is not None and any(f.severity == "warning" for f in flags):
        out.append(f"Y-90 dose: {voxel_max.text}")
    return out


def _page(figures: Mapping[str, RegionDose], kinds: Mapping[str, str], lung: LungDose, lung_method: str,
          activity: float, source: str, lsf: float, limits: DoseLimits, context: TreatmentContext,
          flags: Sequence[SafetyFlag], voxel_max: VoxelActivityLimit | None, dose: DoseMap,
          calibration: DensityCalibration, identity: Identity) -> Page:
    curves = [Curve(region_name(name), r.dvh, PALETTE[i % len(PALETTE)]) for i, (name, r) in enumerate(figures.items())]
    header = ("region", "volume on CT cm3", "Dmean Gy", "D50 Gy", "D70 Gy", "D90 Gy", "V(d Gy) %")
    rows = []
    for name, r in figures.items():
        vs = V_GY.get(kinds[name], ())
        v_text = " ".join(f"V{v:g}={r.v_percent(v):.0f}" for v in vs) or "-"
        mean = lung.mean_gy if kinds[name] == LUNGS and lung.mean_gy is not None else r.mean_gy
        rows.append((region_name(name), f"{r.volume_ml:.1f}", f"{mean:.1f}", f"{r.d50_gy:.1f}", f"{r.d70_gy:.1f}",
                     f"{r.d90_gy:.1f}", v_text))
    if LUNGS not in figures and lung.mean_gy is not None:
        rows.append((region_name(LUNGS), "-", f"{lung.mean_gy:.1f}", "-", "-", "-", "-"))
    compromised = context.bilobar or context.compromised_liver
    nl_limit = limits.normal_liver_limit(context)
    marks = [Limit(nl_limit, f"{region_name(NON_TUMOURAL_LIVER)} limit {nl_limit:g} Gy"),
             Limit(limits.tumour_min_gy, f"tumour minimum {limits.tumour_min_gy:g} Gy")]
    notes = [f"Planned activity {activity:.3f} GBq ({source}); lung shunt fraction {lsf:.1%}; "
             f"{limits.sphere_type.value} microspheres; {'bilobar or compromised liver' if compromised else 'unilobar'}"
             f"; lung dose of earlier sessions {context.prior_lung_dose_gy:g} Gy.",
             f"Dose: {dose.method}.",
             f"Density: {calibration.describe()}.",
             "DVH: structure voxels on the SPECT/CT's CT, dose interpolated trilinearly at their centres; Dx = the "
             "highest dose received by at least x % of the region; V(d) = % of the region receiving >= d Gy.",
             f"Dmean: voxel Dmean (local deposition); {WHY_TWO_DOSES}.",
             f"Lungs: Dmean in the table is {lung_method}"
             + (f"; the voxel mean over the lung VOI is {lung.region.mean_gy:.1f} Gy." if lung.region else "."),
             f"Limits ({limits.source}): flags are warnings for the physicist, not prescriptions."]
    notes += [f"! {f.message}" for f in flags] or ["No dose limit crossed."]
    if voxel_max is not None:
        notes.append(voxel_max.text[0].upper() + voxel_max.text[1:] + ".")
    return render_dvh_page(identity, "Y-90 radioembolization: dose predicted from the 99mTc-MAA SPECT/CT",
                           "local deposition method, dose-volume histograms per region", curves, header, rows,
                           notes, marks)


def predict(nm: Dataset, spect: sitk.Image, regions: Regions, on_ct: Mapping[str, np.ndarray], shunt: Shunt,
            plan: PartitionPlan | None, ct_ordered: Sequence[Dataset] | None, ct_image: sitk.Image | None,
            structure_set: Dataset | None, analysis: MaaSettings) -> PredictedDose:
    """The predicted dose of one MAA analysis (see the module docstring), or why it was not computed.

    `on_ct` are the regions on the CT (:func:`regions_on_ct`); `structure_set` the RTSTRUCT holding them (the
    node's MAA regions, or the received one they came from), referenced by the RT Dose and its plan.
    """
    if ct_image is None or not ct_ordered:
        return _not_computed("no SPECT/CT CT: the tissue mass of the dose voxels is unknown")
    planned = _activity(plan, shunt, analysis)
    if isinstance(planned, str):
        return _not_computed(planned)
    activity, source = planned
    lsf = float(shunt.lsf or 0.0)
    calibration, limits, context = analysis.ct_density, analysis.dose_limits, analysis.treatment
    try:
        dose = predicted_dose(spect, ct_image, regions.liver, shunt.lung_fraction, activity, lsf, calibration)
    except DoseInputError as exc:
        return _not_computed(str(exc))
    dose_regions = _dose_regions(on_ct, ct_image, shunt)
    figures = _summary(dose.dose, dose_regions)
    kinds = {r.name: r.kind for r in dose_regions}
    if NON_TUMOURAL_LIVER not in figures:
        return _not_computed("no non-tumoural liver left once the tumours are removed from the liver")
    lung, lung_method = _lung_dose(figures.get(LUNGS), shunt, plan, activity, lsf, calibration)
    normal = figures[NON_TUMOURAL_LIVER]
    summary = Y90DoseSummary(
        tumours=tuple(TumourDose(r, r.v_percent(TUMOUR_V_GY[0]), r.v_percent(TUMOUR_V_GY[1]))
                      for n, r in figures.items() if kinds[n] == "tumour"),
        normal_liver=NormalLiverDose(normal, normal.v_percent(NORMAL_LIVER_V_GY[0]),
                                     normal.v_percent(NORMAL_LIVER_V_GY[1])),
        whole_liver=figures[WHOLE_LIVER], lungs=lung)
    flags = check_y90_safety(summary, limits, context)
    voxel_max = voxel_activity_limit(activity, normal.mean_gy, lung.mean_gy, limits, context)
    warnings = _flag_group_text(flags, voxel_max) + [n.removeprefix("warning: ") for n in dose.notes
                                          if n.startswith("warning:")]
    outside = [n for n, r in figures.items() if r.outside_dose_grid_fraction > 0.001]
    if outside:
        warnings.append(f"Y-90 dose: part of {', '.join(outside)} lies outside the SPECT field (counted as 0 Gy)")

    ct_ref = ct_ordered[0]
    prescription = (f"{activity:.3f} GBq Y-90 {limits.sphere_type.value} microspheres ({source}); lung shunt "
                    f"fraction {lsf:.1%}; dose predicted from the 99mTc-MAA SPECT/CT by local deposition")
    same_frame = structure_set is not None and structure_set.get("ReferencedFrameOfReferenceSequence") and str(
        structure_set.ReferencedFrameOfReferenceSequence[0].get("FrameOfReferenceUID", "")) == str(
        ct_ref.get("FrameOfReferenceUID", ""))
    rtss = structure_set if same_frame else None
    rt_plan = build_rt_plan(ct_ref, label="Y90 SIRT", name="Y-90 radioembolization (MAA-predicted dose)",
                            description="Beamless plan: documents the Y-90 activity the predicted dose was computed "
                                        "for; it holds no beams and cannot be delivered.",
                            prescription=prescription, structure_set=rtss)
    dvhs, composite = _rt_dvhs(figures, kinds, rtss, analysis)
    rt_dose = build_rt_dose(dose.dose, ct_ref, series_description="Y-90 dose predicted from MAA (LDM)",
                            comment="Y-90 dose predicted from 99mTc-MAA SPECT/CT (LDM)", rt_plan=rt_plan,
                            method=f"{dose.method}; mass: {calibration.describe()}", structure_set=rtss,
                            dvhs=dvhs, dvh_composite=composite, source_images=[nm])
    page = _page(figures, kinds, lung, lung_method, activity, source, lsf, limits, context, flags, voxel_max,
                 dose, calibration, Identity.of(nm, f"Y-90 predicted dose DVH - {NOT_FOR_DIAGNOSIS}"))
    sc = secondary_capture(
        page, nm, [nm], series_uid=hd.UID(), series_number=DVH_SERIES_NUMBER, instance_number=1,
        series_description=f"Y-90 predicted dose DVH - {NOT_FOR_DIAGNOSIS}",
        comments=f"{NOT_FOR_DIAGNOSIS}. Y-90 dose predicted from the 99mTc-MAA SPECT/CT for {activity:.3f} GBq "
                 f"({source}); RT Dose {rt_dose.SOPInstanceUID}.",
        derivation="dose-volume histograms of the Y-90 local-deposition dose predicted from the 99mTc-MAA SPECT/CT",
        image_plane=False)
    outputs = [OutputObject(kind, ds, what) for ds, what in ((rt_dose, "Y-90 predicted dose (RT Dose)"),
                                                             (rt_plan, "Y-90 activity plan (beamless RT Plan)"))
               for kind in ("report", "rtdose")]
    outputs.append(OutputObject("report", sc, "Y-90 predicted dose DVH page"))

    record = PredictedDoseRecord(
        computed=True, method=f"{dose.method}; DVH on the CT, node.dose.dvh convention",
        activity_gbq=round(activity, 4), activity_source=source, lung_shunt_fraction=round(lsf, 4),
        sphere_type=limits.sphere_type.value, bilobar=context.bilobar, compromised_liver=context.compromised_liver,
        prior_lung_dose_gy=context.prior_lung_dose_gy,
        limits_gy={k: getattr(limits, k) for k in ("normal_liver_max_gy", "normal_liver_compromised_max_gy",
                                                   "tumour_min_gy", "tumour_goal_gy", "lung_session_max_gy",
                                                   "lung_cumulative_max_gy")},
        limits_source=limits.source, density_calibration=calibration.describe(),
        dose_grid="MAA SPECT grid " + "x".join(f"{s:.3g}" for s in spect.GetSpacing()) + " mm",
        structure_grid="MAA SPECT/CT CT " + "x".join(f"{s:.3g}" for s in ct_image.GetSpacing()) + " mm"
                       + (" (lungs on the CT binned in-plane to ~2 mm)" if LUNGS in figures else ""),
        deposited_gbq=round(dose.deposited_gbq, 4), dropped_gbq=round(dose.dropped_gbq, 4),
        regions={n: RegionDoseRecord.of(kinds[n], r, V_GY.get(kinds[n], ())) for n, r in figures.items()},
        lungs=LungDoseRecord(None if lung.mean_gy is None else round(lung.mean_gy, 3), lung_method,
                             round(lung.shunted_gbq, 4), None if lung.mass_kg is None else round(lung.mass_kg, 4),
                             None if lung.region is None else round(lung.region.mean_gy, 3)),
        flags=[SafetyFlagRecord.of(f) for f in flags], notes=list(dose.notes),
        voxel_max_activity_gbq=None if voxel_max is None else round(voxel_max.activity_gbq, 3),
        voxel_max_activity_limited_by="" if voxel_max is None else voxel_max.limited_by,
        rt_dose_sop_instance_uid=str(rt_dose.SOPInstanceUID), rt_plan_sop_instance_uid=str(rt_plan.SOPInstanceUID),
        structure_set_sop_instance_uid=str(rtss.SOPInstanceUID) if rtss is not None else "")
    reference = DoseReference(dose=dose.dose, ct=ct_image, regions=tuple(dose_regions), activity_gbq=activity,
                              lsf=lsf, limits=limits, treatment=context, calibration=calibration,
                              patient_id=str(nm.get("PatientID", "")), ct_reference=ct_ref, rt_plan=rt_plan,
                              rt_dose_sop_instance_uid=str(rt_dose.SOPInstanceUID))
    logger.info("MAA predicted Y-90 dose: %.3f GBq; non-tumoural liver %.1f Gy; %d flag(s)", activity,
                normal.mean_gy, len(flags))
    return PredictedDose(record, outputs, warnings, reference)


def _rt_dvhs(figures: Mapping[str, RegionDose], kinds: Mapping[str, str], rtss: Dataset | None,
             analysis: MaaSettings) -> tuple[dict[str, Dvh], dict[str, tuple[str, tuple[str, ...]]]]:
    """DVHs for the RT Dose's RT DVH module: the regions the structure set holds (liver, tumours, lungs) and the
    non-tumoural liver as the liver minus the tumours."""
    if rtss is None:
        return {}, {}
    names = rtstruct.roi_names(rtss)
    liver = match_liver_roi(names, analysis.liver_roi_names)
    lungs = next((n for n in names if n.lower() in ("lungs", "lung")), None)
    dvhs: dict[str, Dvh] = {}
    composite: dict[str, tuple[str, tuple[str, ...]]] = {}
    tumours = tuple(n for n, k in kinds.items() if k == "tumour" and n in names)
    for name, r in figures.items():
        kind = kinds[name]
        if kind == "tumour" and name in names:
            dvhs[name] = r.dvh
        elif kind == WHOLE_LIVER and liver:
            dvhs[liver] = r.dvh
        elif kind == NON_TUMOURAL_LIVER and liver and len(tumours) == sum(k == "tumour" for k in kinds.values()):
            dvhs[NON_TUMOURAL_LIVER] = r.dvh
            composite[NON_TUMOURAL_LIVER] = (liver, tumours)
        elif kind == LUNGS and lungs:
            dvhs[lungs] = r.dvh
    return dvhs, composite
