"""Delivered Y-90 dose from post-therapy imaging, compared with the dose the MAA predicted (science.md section 4).

post-therapy image + its CT -> activity at administration (quantitative Y-90 PET: Bq/mL decay-corrected to the
RadiopharmaceuticalStartDateTime; bremsstrahlung SPECT: its counts in the MAA liver, carried onto it, scaled to
the administered activity x (1 - LSF)) -> LDM dose on its own grid (mass from its own CT) -> its CT registered
rigidly to the MAA SPECT/CT's CT -> both doses read in the MAA's regions (the same structure voxels on the MAA
CT, each dose interpolated trilinearly at their centres: the delivered one through the registration) -> Dmean
and D70 per region, difference and ratio -> flags: mismatches beyond [analysis.y90post] mismatch_warning and the
delivered dose against the MAA's limits -> RT Dose of the delivered dose on the MAA grid (the MAA's frame of
reference, so it overlays the predicted one) and a DVH page predicted vs delivered.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

import rtstruct
from node.derived import NOT_FOR_DIAGNOSIS
from node.dose.activity import pet_decay_info
from node.dose.compare import delivered_on_grid, register_post_therapy
from node.dose.dvh import (
    NON_TUMOURAL_LIVER,
    NORMAL_LIVER_V_GY,
    TUMOUR_V_GY,
    V_GY,
    WHOLE_LIVER,
    LungDose,
    NormalLiverDose,
    RegionDose,
    TumourDose,
    Y90DoseSummary,
    region_dose,
    region_dvh,
)
from node.dose.ldm import DoseMap
from node.dose.page import PALETTE, Curve, render_dvh_page
from node.dose.records import RegionDoseRecord, SafetyFlagRecord
from node.dose.rtdose import build_rt_dose
from node.dose.safety import SafetyFlag, check_y90_safety
from node.dose.y90 import delivered_dose_from_counts, delivered_dose_from_pet
from node.imaging.capture import secondary_capture
from node.imaging.grids import as_image, fraction_on
from node.imaging.pages import Identity, Page
from node.imaging.volumes import ct_series_image, nm_image
from node.maa.reference import DoseReference, DoseRegion
from node.report.groups import region_name
from node.workflow import OutputObject, WorkflowResult
from node.y90post.errors import PostTherapyInputError
from node.y90post.measurements import ComparisonRecord, SourceRecord, Y90PostMeasurements
from node.y90post.settings import Y90PostSettings

logger = logging.getLogger(__name__)

__all__ = ["run_y90post", "COMPARISON_SERIES_NUMBER", "DELIVERED_DOSE_SERIES_NUMBER"]

COMPARISON_SERIES_NUMBER = 9613
DELIVERED_DOSE_SERIES_NUMBER = 904


def _r(v: float | None, n: int = 3) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), n)


def _administered(first: Dataset, settings: Y90PostSettings, reference: DoseReference) -> tuple[float, str]:
    try:
        bq = float(first.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose)
    except (AttributeError, IndexError, TypeError, ValueError):
        bq = 0.0
    if bq > 0:
        return bq / 1e9, "the image header (RadionuclideTotalDose)"
    if settings.administered_activity_gbq is not None:
        return settings.administered_activity_gbq, "[analysis.y90post] administered_activity_gbq"
    return reference.activity_gbq, "the MAA plan's activity (no administered activity recorded or configured)"


def _check_inputs(images: Sequence[Dataset], ct: Sequence[Dataset], reference: DoseReference) -> None:
    if not ct:
        raise PostTherapyInputError("the post-therapy image has no CT sharing its frame of reference: it cannot be "
                                    "registered to the MAA SPECT/CT")
    for_image = str(images[0].get("FrameOfReferenceUID", ""))
    if {str(d.get("FrameOfReferenceUID", "")) for d in ct} != {for_image}:
        raise PostTherapyInputError("the post-therapy image and the CT given with it do not share a frame of "
                                    "reference: they are not one hybrid acquisition")
    patients = {str(d.get("PatientID", "")) for d in (images[0], ct[0])} | {reference.patient_id}
    if len(patients - {""}) > 1:
        raise PostTherapyInputError(f"the post-therapy images and the MAA planning belong to different patients "
                                    f"({', '.join(sorted(patients - {''}))})")


def _delivered(images: Sequence[Dataset], ct_image: sitk.Image, reference: DoseReference,
               administered: float, where: str, transform: sitk.Transform
               ) -> tuple[DoseMap, SourceRecord, list[str]]:
    first = images[0]
    modality = str(first.get("Modality", ""))
    notes: list[str] = []
    if modality == "PT" and str(first.get("Units", "")).upper() == "BQML":
        pet = ct_series_image(rtstruct.sort_slices(images), what="Y-90 PET")
        decay = pet_decay_info(first)
        dose = delivered_dose_from_pet(pet, images, ct_image, reference.calibration)
        in_field = dose.deposited_gbq + dose.dropped_gbq
        if administered > 0 and abs(in_field / administered - 1.0) > 0.25:
            notes.append(f"the PET holds {in_field:.2f} GBq at administration, {in_field / administered:.0%} of the "
                         f"administered {administered:.2f} GBq ({where}): check the PET quantification and field")
        source = SourceRecord(modality, str(first.get("SeriesInstanceUID", "")),
                              str(first.get("SeriesDescription", "")), True,
                              "quantitative Y-90 PET (Bq/mL x voxel volume), decay-corrected to the administration",
                              round(administered, 4), where, round(in_field, 4),
                              round(decay.factor_to_administration, 5), round(decay.elapsed_h, 3))
        return dose, source, notes
    # not quantitative: a bremsstrahlung SPECT (or a PET not in Bq/mL): counts in the MAA liver, carried onto its
    # grid through the registration, scaled to the activity that reached the liver
    image = nm_image(first) if modality == "NM" else ct_series_image(rtstruct.sort_slices(images),
                                                                     what="post-therapy image")
    liver = next(r for r in reference.regions if r.kind == WHOLE_LIVER)
    voi = fraction_on(as_image(liver.mask.astype(np.uint8), liver.grid), image, transform.GetInverse())
    if not (voi >= 0.5).any():
        raise PostTherapyInputError("the MAA liver does not lie in the post-therapy image's field of view after "
                                    "registration")
    dose = delivered_dose_from_counts(image, ct_image, voi, administered, 1.0 - reference.lsf, reference.calibration)
    units = f", units {first.get('Units', '')}" if modality == "PT" else ""
    notes.append(f"the image is not quantitative ({modality}{units}): its counts in the liver were scaled to the "
                 f"administered {administered:.3g} GBq x (1 - LSF {reference.lsf:.1%}) ({where}); ratios compare "
                 "distributions, not the administered activity")
    source = SourceRecord(modality, str(first.get("SeriesInstanceUID", "")), str(first.get("SeriesDescription", "")),
                          False, dose.method, round(administered, 4), where, round(dose.deposited_gbq, 4), None, None)
    return dose, source, notes


def _coverage(post: sitk.Image, region: DoseRegion, transform: sitk.Transform) -> float:
    ones = sitk.Image(post.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(post)
    inside = sitk.GetArrayViewFromImage(sitk.Resample(ones, region.grid, transform, sitk.sitkNearestNeighbor, 0))
    return float(np.count_nonzero(inside[region.mask])) / max(1, int(np.count_nonzero(region.mask)))


def _centre(region: DoseRegion) -> list[float]:
    idx = np.argwhere(region.mask).mean(axis=0)
    return [round(float(v), 1) for v in region.grid.TransformContinuousIndexToPhysicalPoint(
        tuple(float(v) for v in idx[::-1]))]


def _compare(region: DoseRegion, predicted: RegionDose, delivered: RegionDose, coverage: float,
             min_coverage: float) -> ComparisonRecord:
    if coverage < min_coverage:
        return ComparisonRecord(region.kind, _centre(region), round(coverage, 4), False, _r(predicted.mean_gy), None,
                                None, None, _r(predicted.d70_gy), None, None, None)

    def ratio(d: float, p: float) -> float | None:
        return _r(d / p, 4) if p > 0 else None

    return ComparisonRecord(
        region.kind, _centre(region), round(coverage, 4), True, _r(predicted.mean_gy), _r(delivered.mean_gy),
        _r(delivered.mean_gy - predicted.mean_gy), ratio(delivered.mean_gy, predicted.mean_gy),
        _r(predicted.d70_gy), _r(delivered.d70_gy), _r(delivered.d70_gy - predicted.d70_gy),
        ratio(delivered.d70_gy, predicted.d70_gy),
        RegionDoseRecord.of(region.kind, delivered, V_GY.get(region.kind, ())))


def flag_warning(flag: SafetyFlag) -> str:
    return f"Y-90 delivered dose {flag.severity}: {flag.message}"


def page_notes_of(flags: Sequence[SafetyFlag], warnings: Sequence[str], most: int = 8) -> list[str]:
    """What the page lists: each safety flag once (its message), then the mismatches and notes."""
    said = {flag_warning(f) for f in flags}
    return [*(f.message for f in flags), *(w for w in warnings if w not in said)][:most]


def _page(rows: dict[str, ComparisonRecord], predicted: dict[str, RegionDose], delivered: dict[str, RegionDose],
          source: SourceRecord, reference: DoseReference, notes: Sequence[str], identity: Identity) -> Page:
    curves = []
    for i, (name, rec) in enumerate(rows.items()):
        if not rec.compared:
            continue
        colour = PALETTE[i % len(PALETTE)]
        curves += [Curve(f"{region_name(name)} predicted", predicted[name].dvh, colour, "--"),
                   Curve(f"{region_name(name)} delivered", delivered[name].dvh, colour, "-")]

    def f(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    header = ("region", "in field", "Dmean P Gy", "Dmean D Gy", "D-P Gy", "D/P", "D70 P Gy", "D70 D Gy", "D-P Gy",
              "D/P")
    table = [(region_name(name), f"{r.coverage:.0%}", f(r.predicted_mean_gy), f(r.delivered_mean_gy),
              f(r.mean_difference_gy), f(r.mean_ratio, 2), f(r.predicted_d70_gy), f(r.delivered_d70_gy),
              f(r.d70_difference_gy), f(r.d70_ratio, 2)) for name, r in rows.items()]
    text = [f"P: predicted from the 99mTc-MAA SPECT/CT (planned for {reference.activity_gbq:.3f} GBq), scaled to the "
            f"administered {f(source.administered_gbq, 3)} GBq (dashed); D: delivered, "
            f"from the {source.modality} '{source.description}' ({source.activity_method}; administered "
            f"{f(source.administered_gbq, 3)} GBq from {source.administered_source}) (solid). Gy; D-P < 0: the MAA "
            "over-predicted.", "Both doses by local deposition, read in the MAA's regions on the MAA SPECT/CT's CT; "
            "the delivered dose through the rigid CT-CT registration of the post-therapy CT to the MAA CT.",
            "Regions not fully inside the post-therapy field of view are not compared."]
    text += [f"! {n}" for n in notes]
    return render_dvh_page(identity, "Y-90 radioembolization: dose delivered vs predicted", "post-therapy dosimetry",
                           curves, header, table, text)


def run_y90post(images: Sequence[Dataset], ct: Sequence[Dataset], reference: DoseReference,
                settings: Y90PostSettings) -> WorkflowResult[Y90PostMeasurements]:
    """Delivered vs predicted dose of one post-therapy image (see the module docstring)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(max(0.0, time.perf_counter() - t0 - sum(timings.values())), 3)

    _check_inputs(images, ct, reference)
    try:
        ct_ordered = rtstruct.sort_slices(ct)
    except rtstruct.RTStructError as exc:
        raise PostTherapyInputError(f"post-therapy CT: {exc}") from None
    ct_image = ct_series_image(ct_ordered, what="post-therapy CT")
    lap("load_s")
    registration = register_post_therapy(reference.ct, ct_image)  # maps MAA coordinates to post-therapy ones
    lap("register_s")
    administered, where = _administered(images[0], settings, reference)
    dose, source, notes = _delivered(images, ct_image, reference, administered, where, registration.transform)
    # The MAA's dose is linear in the activity: compared at the administered activity, the ratios show where the
    # microspheres went differently from the MAA, not a change of activity between plan and treatment.
    scale = administered / reference.activity_gbq
    predicted_dose = sitk.Cast(reference.dose, sitk.sitkFloat64) * scale
    lap("dose_s")
    predicted: dict[str, RegionDose] = {}
    delivered: dict[str, RegionDose] = {}
    rows: dict[str, ComparisonRecord] = {}
    for region in reference.regions:
        predicted[region.name] = region_dose(region_dvh(region.name, predicted_dose, region.mask, region.grid))
        delivered[region.name] = region_dose(region_dvh(region.name, dose.dose, region.mask, region.grid,
                                                        transform=registration.transform))
        rows[region.name] = _compare(region, predicted[region.name], delivered[region.name],
                                     _coverage(dose.dose, region, registration.transform), settings.min_coverage)
    lap("compare_s")
    warnings = []
    for name, r in rows.items():
        if r.compared and r.mean_ratio is not None and abs(r.mean_ratio - 1.0) > settings.mismatch_warning:
            way = "over" if r.mean_ratio < 1 else "under"
            what = f"tumour {name}" if r.kind == "tumour" else name
            warnings.append(f"Y-90 {what}: delivered mean dose {r.delivered_mean_gy:.1f} Gy is "
                            f"{r.mean_ratio:.2f} x the predicted {r.predicted_mean_gy:.1f} Gy "
                            f"({r.mean_difference_gy:+.1f} Gy): the MAA {way}-predicted it (beyond "
                            f"{settings.mismatch_warning:.0%}; check also the registration)")
    not_compared = [n for n, r in rows.items() if not r.compared]
    if not_compared:
        notes.append(f"not in the post-therapy field of view (< {settings.min_coverage:.0%} inside): "
                     f"{', '.join(not_compared)}")
    kinds = {r.name: r.kind for r in reference.regions}
    compared = {n: delivered[n] for n, r in rows.items() if r.compared}
    flags = []
    if NON_TUMOURAL_LIVER in compared and WHOLE_LIVER in compared:
        normal = compared[NON_TUMOURAL_LIVER]
        summary = Y90DoseSummary(
            tumours=tuple(TumourDose(d, d.v_percent(TUMOUR_V_GY[0]), d.v_percent(TUMOUR_V_GY[1]))
                          for n, d in compared.items() if kinds[n] == "tumour"),
            normal_liver=NormalLiverDose(normal, normal.v_percent(NORMAL_LIVER_V_GY[0]),
                                         normal.v_percent(NORMAL_LIVER_V_GY[1])),
            whole_liver=compared[WHOLE_LIVER], lungs=LungDose(None, 0.0, None, None))
        flags = list(check_y90_safety(summary, reference.limits, reference.treatment))
        warnings += [flag_warning(f) for f in flags]
    warnings += notes
    page_notes = page_notes_of(flags, warnings)
    on_maa = delivered_on_grid(dose.dose, reference.dose, registration)
    rt_dose = build_rt_dose(
        on_maa, reference.ct_reference, series_description="Y-90 dose delivered, on the MAA grid",
        comment="Y-90 dose delivered (post-therapy), LDM", rt_plan=reference.rt_plan,
        method=f"{dose.method}; carried onto the MAA SPECT grid through the rigid CT-CT registration (trilinear)",
        source_images=[images[0]])
    rt_dose.SeriesNumber = DELIVERED_DOSE_SERIES_NUMBER
    page = _page(rows, predicted, delivered, source, reference, page_notes,
                 Identity.of(images[0], f"Y-90 delivered vs predicted DVH - {NOT_FOR_DIAGNOSIS}"))
    sc = secondary_capture(
        page, images[0], [images[0]], series_uid=hd.UID(), series_number=COMPARISON_SERIES_NUMBER,
        instance_number=1, series_description=f"Y-90 delivered vs predicted DVH - {NOT_FOR_DIAGNOSIS}",
        comments=f"{NOT_FOR_DIAGNOSIS}. Y-90 dose delivered ({source.modality}) vs predicted (MAA) per region.",
        derivation="dose-volume histograms of the Y-90 dose delivered (post-therapy imaging) and predicted (MAA)",
        image_plane=False)
    lap("outputs_s")
    summary_reg = dataclasses.replace(
        registration.summary(), matrix_direction="maps MAA SPECT/CT patient coordinates (DICOM LPS, mm) to the "
                                                 "post-therapy CT's; its inverse carries the delivered dose onto "
                                                 "the MAA grid")
    measurements = Y90PostMeasurements(
        source=source, registration=summary_reg, dose_method=dose.method,
        predicted_activity_gbq=round(reference.activity_gbq, 4), compared_at_gbq=round(administered, 4),
        mismatch_warning=settings.mismatch_warning,
        regions=rows, flags=[SafetyFlagRecord.of(f) for f in flags], notes=list(dose.notes) + notes,
        rt_dose_sop_instance_uid=str(rt_dose.SOPInstanceUID), timings_s=timings)
    outputs = [OutputObject(kind, rt_dose, "Y-90 delivered dose (RT Dose, MAA frame)") for kind in ("report", "rtdose")]
    outputs.append(OutputObject("report", sc, "Y-90 delivered vs predicted DVH page"))
    logger.info("post-therapy Y-90 dose: %s; %d region(s) compared, %d warning(s)", source.modality,
                sum(r.compared for r in rows.values()), len(warnings))
    return WorkflowResult("y90post", measurements, outputs, warnings)
