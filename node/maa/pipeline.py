"""99mTc-MAA SPECT for Y-90 radioembolization planning, end to end (science.md sections 1 and 3).

inputs checked -> SPECT volume -> liver and tumour regions (RTSTRUCT or automatic) -> T/N per tumour and
overall -> lung shunt fraction (SPECT or configuration) -> partition-model activity and doses -> correlation
with the case's CT perfusion maps (when present) -> review capture and structure set.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

import rtstruct as rtstruct_lib
from node.errors import AnalysisError
from node.imaging.grids import spacing_zyx, voxel_ml
from node.imaging.volumes import ct_series_image, nm_image
from node.maa import outputs
from node.maa.correlation import PerfusionAlignment, align_to_perfusion, correlate, lesion_names
from node.maa.dosimetry import PredictedDose, ct_lung_mass, predict, regions_on_ct
from node.maa.errors import MaaInputError
from node.maa.measurements import (
    CorrelationRecord,
    MaaMeasurements,
    PartitionRecord,
    RegionsRecord,
    ShuntRecord,
    SpectCtRecord,
    SpectRecord,
    UptakeRecord,
)
from node.maa.partition import PartitionPlan, partition_plan
from node.maa.reference import MaaResult
from node.maa.regions import (
    SEGMENT_FILTER_FWHM_MM,
    SPECT_FWHM_MM,
    TUMOR_NAME_PATTERN,
    Regions,
    automatic_liver,
    automatic_tumours,
    rtstruct_regions,
)
from node.maa.settings import MaaSettings
from node.maa.shunt import Shunt, lung_shunt
from node.maa.uptake import SPILL_MARGIN_MM, Uptake, measure_uptake
from node.perfusion.reference import PerfusionReference
from node.workflow import OutputObject

logger = logging.getLogger(__name__)

__all__ = ["run_maa", "tracer_of"]

_MAA_CODES = {"85693008", "81761004"}  # SNOMED CT: Tc-99m aggregated albumin, microaggregated albumin
_OTHER_TRACER_WORDS = ("GSA", "GALACTOSYL", "MEBROFENIN", "SESTAMIBI", "MDP", "HMPAO", "SULFUR COLLOID", "PHYTATE")


def tracer_of(nm: Dataset) -> str:
    """"MAA", "unknown" (nothing declared) or the declared other radiopharmaceutical's text."""
    texts: list[str] = []
    codes: set[str] = set()
    for item in nm.get("RadiopharmaceuticalInformationSequence", []):
        texts.append(str(item.get("Radiopharmaceutical", "") or ""))
        codes.update(str(c.get("CodeValue", "")) for c in item.get("RadiopharmaceuticalCodeSequence", []))
    text = " ".join(texts).upper()
    if codes & _MAA_CODES or "MAA" in text or "MACROAGGREGATED" in text or "AGGREGATED ALBUMIN" in text:
        return "MAA"
    if any(w in text for w in _OTHER_TRACER_WORDS) or codes:
        return " ".join(texts).strip() or "code " + ",".join(sorted(codes))
    return "unknown"


def _check_inputs(nm: Dataset, spect_ct: Sequence[Dataset] | None) -> list[str]:
    notes = []
    tracer = tracer_of(nm)
    if tracer not in ("MAA", "unknown"):
        raise MaaInputError(f"the NM series is a {tracer} SPECT, not 99mTc-MAA: no radioembolization planning")
    if tracer == "unknown":
        notes.append("the NM declares no radiopharmaceutical: assumed to be 99mTc-MAA")
    if spect_ct:
        nm_for = nm.get("FrameOfReferenceUID")
        ct_fors = {ds.get("FrameOfReferenceUID") for ds in spect_ct}
        if not nm_for or ct_fors != {nm_for}:
            raise MaaInputError("the MAA SPECT and the given SPECT/CT CT do not share a FrameOfReferenceUID: they "
                                "are not one hybrid acquisition (lungs and registration would be misplaced)")
        patients = {str(ds.get("PatientID", "")) for ds in (nm, spect_ct[0])} - {""}
        if len(patients) > 1:
            raise MaaInputError("the MAA SPECT and its CT belong to different patients "
                                f"({', '.join(sorted(patients))})")
    return notes


def _rtstruct_frame(rtss: Dataset) -> str | None:
    for item in rtss.get("ReferencedFrameOfReferenceSequence", []):
        return str(item.get("FrameOfReferenceUID", "")) or None
    return str(rtss.get("FrameOfReferenceUID", "")) or None


def _regions(counts: np.ndarray, spect: sitk.Image, nm: Dataset, rtss: Dataset | None,
             ct_ordered: Sequence[Dataset] | None, ct_image: sitk.Image | None,
             analysis: MaaSettings) -> Regions:
    """Liver and tumour fractions on the SPECT grid: RTSTRUCT ROIs where given, automatic otherwise."""
    spacing = spacing_zyx(spect)
    liver: np.ndarray | None = None
    tumours: dict[str, np.ndarray] = {}
    drawn: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if rtss is not None:
        if ct_image is None or ct_ordered is None:
            notes.append("RTSTRUCT not used: no SPECT/CT CT was received to place its contours on")
        elif _rtstruct_frame(rtss) != str(nm.get("FrameOfReferenceUID", "")):
            notes.append("RTSTRUCT not used: it was drawn in another frame of reference than the MAA SPECT/CT")
        else:
            liver, tumours, rt_notes, drawn = rtstruct_regions(rtss, ct_ordered, ct_image, spect,
                                                               analysis.liver_roi_names)
            notes += rt_notes
    details: dict[str, Any] = {}
    if liver is None:
        liver_bin, details["liver"] = automatic_liver(counts, spacing)
        liver = liver_bin.astype(np.float32)
        for frac in tumours.values():  # drawn tumours belong to the liver even where uptake is low
            liver = np.maximum(liver, frac)
        liver_source = "automatic from the MAA SPECT uptake"
    else:
        liver_source = "RTSTRUCT"
    if tumours:
        tumour_source = "RTSTRUCT"
    else:
        found, details["tumours"] = automatic_tumours(counts, liver >= 0.5, spacing, SPILL_MARGIN_MM)
        tumours = {name: mask.astype(np.float32) for name, mask in found.items()}
        tumour_source = "automatic (hot regions in the liver, iterative sphere-model threshold)"
    drawn = {k: v for k, v in drawn.items() if (k == "liver" and liver_source == "RTSTRUCT")
             or (k in tumours and tumour_source == "RTSTRUCT")}
    return Regions(liver, tumours, liver_source, tumour_source, notes, details, drawn)


def _plan(uptake: Uptake, shunt: Shunt, analysis: MaaSettings) -> tuple[PartitionPlan | None, str]:
    """The partition model at the settings' targets (by default the safety limits the predicted dose is checked
    against) with the CT lung mass of the predicted dose when the lungs are on the SPECT/CT."""
    if shunt.lsf is None:
        return None, "no lung shunt fraction (lungs not imaged completely and none configured)"
    if uptake.normal_liver_ml <= 0:
        return None, "no normal liver volume"
    targets = analysis.partition_targets
    if targets.lung_gy <= 0 and shunt.lsf > 0:
        return None, (f"no lung dose left to plan to: {targets.lung_from} gives {targets.lung_gy:g} Gy, and "
                      f"{shunt.lsf:.1%} of the activity would reach the lungs")
    tn = {t.name: t.tn_ratio for t in uptake.tumours}
    vol = {t.name: t.volume_ml for t in uptake.tumours}
    return partition_plan(tn, vol, uptake.normal_liver_ml, shunt.lsf, targets.normal_liver_gy,
                          max(targets.lung_gy, 0.0), shunt.lung_volume_ml,
                          lung_mass=ct_lung_mass(shunt, analysis.ct_density)), ""


def _align(perfusion: PerfusionReference | None, ct_image: sitk.Image | None,
           nm: Dataset) -> tuple[PerfusionAlignment | None, str]:
    """The MAA SPECT/CT registered to this case's perfusion CT, or None and why not."""
    if perfusion is None:
        return None, "no perfusion analysis in this case"
    if ct_image is None:
        return None, "needs the MAA SPECT/CT CT and the perfusion CT"
    if perfusion.patient_id != str(nm.get("PatientID", "")):
        return None, "the perfusion CT belongs to another PatientID"
    try:
        return align_to_perfusion(ct_image, perfusion), ""
    except AnalysisError as exc:  # the MAA results stand without the perfusion CT
        return None, f"registration to the perfusion CT failed: {exc}"


def run_maa(nm: Dataset, spect_ct: Sequence[Dataset] | None, rtstruct: Dataset | None,
            perfusion: PerfusionReference | None, analysis: MaaSettings) -> MaaResult:
    """Uptake ratios, lung shunt, partition-model activity and perfusion correlation of one MAA SPECT.

    `perfusion`: what this case's perfusion analysis handed over (its unenhanced CT and maps), if it ran.

    Raises a :class:`~node.errors.AnalysisError` subclass, with the reason, when the inputs cannot be used.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(max(0.0, time.perf_counter() - t0 - sum(timings.values())), 3)

    notes = _check_inputs(nm, spect_ct)
    spect = nm_image(nm)
    counts = sitk.GetArrayFromImage(spect).astype(np.float32)
    ct_ordered = ct_image = None
    if spect_ct:
        try:
            ct_ordered = rtstruct_lib.sort_slices(spect_ct)
        except rtstruct_lib.RTStructError as exc:
            raise MaaInputError(f"SPECT/CT CT: {exc}") from None
        ct_image = ct_series_image(ct_ordered, what="MAA SPECT/CT CT")
    lap("load_s")

    regions = _regions(counts, spect, nm, rtstruct, ct_ordered, ct_image, analysis)
    lap("regions_s")
    alignment, no_alignment = _align(perfusion, ct_image, nm)
    if alignment is not None and perfusion is not None and regions.tumour_source != "RTSTRUCT":
        # one name per lesion: a hot region that is a lesion of the perfusion RTSTRUCT takes that lesion's name
        names = lesion_names(spect, regions.tumours, alignment, perfusion,
                             lambda roi: TUMOR_NAME_PATTERN.search(roi) is not None)
        if names:
            regions = regions.renamed(names)
    lap("alignment_s")
    uptake = measure_uptake(counts, spect, regions.liver, regions.tumours)
    normal_level = uptake.normal_counts_per_ml * voxel_ml(spect)
    shunt = lung_shunt(counts, spect, regions.liver, ct_image, analysis.lung_shunt_fraction, normal_level)
    plan, no_plan = _plan(uptake, shunt, analysis)
    lap("dosimetry_s")

    warnings = notes + regions.notes + uptake.warnings + shunt.warnings
    if "automatic" in regions.liver_source or "automatic" in regions.tumour_source:
        warnings.append(f"regions found automatically (liver: {regions.liver_source}; tumours: "
                        f"{regions.tumour_source}): review them before planning")
    if not regions.tumours:
        warnings.append("no tumour found: T/N undefined; activity computed for the normal liver only")
    correlation: CorrelationRecord | None = None
    if perfusion is not None and perfusion.maps:
        if alignment is None:
            correlation = CorrelationRecord(False, no_alignment)
        elif not regions.tumours:
            correlation = CorrelationRecord(False, "no tumours")
        else:
            try:
                correlation = correlate(spect, regions.tumours, {t.name: t.tn_ratio for t in uptake.tumours},
                                        alignment, perfusion)
            except AnalysisError as exc:  # the MAA results stand without the correlation
                correlation = CorrelationRecord(False, str(exc))
        if not correlation.done:
            warnings.append(f"perfusion correlation not done: {correlation.reason}")
    lap("correlation_s")

    on_ct = regions_on_ct(regions, spect, ct_image) if ct_image is not None else None
    objects, regions_rtss = outputs.build_outputs(nm, spect, counts, regions, uptake, shunt, plan, ct_ordered,
                                                  ct_image, on_ct, rtstruct, analysis)
    lap("outputs_s")
    predicted: PredictedDose | None = None
    if analysis.predicted_dose:
        structure_set = regions_rtss if regions_rtss is not None else (
            rtstruct if regions.liver_source == "RTSTRUCT" and regions.tumour_source == "RTSTRUCT" else None)
        predicted = predict(nm, spect, regions, on_ct or {}, shunt, plan, ct_ordered, ct_image, structure_set,
                            analysis)
        objects += predicted.outputs
        if predicted.reference is not None and regions_rtss is not None:
            objects.append(OutputObject("rtdose", regions_rtss, "MAA regions structure set (the dose's regions)"))
        warnings += predicted.warnings
    lap("dose_s")
    measurements = MaaMeasurements(
        spect=SpectRecord(series_instance_uid=str(nm.get("SeriesInstanceUID", "")),
                          sop_instance_uid=str(nm.get("SOPInstanceUID", "")), tracer=tracer_of(nm),
                          shape_zyx=[int(n) for n in counts.shape],
                          spacing_mm_zyx=[round(s, 3) for s in spacing_zyx(spect)],
                          total_counts=round(float(counts.sum()), 1)),
        spect_ct=(SpectCtRecord(str(ct_ordered[0].get("SeriesInstanceUID", "")), len(ct_ordered))
                  if ct_ordered else None),
        regions=RegionsRecord(regions.liver_source, regions.tumour_source, SPECT_FWHM_MM, SEGMENT_FILTER_FWHM_MM,
                              regions.details),
        uptake=UptakeRecord.of(uptake),
        lung_shunt=ShuntRecord.of(shunt),
        partition_model=(PartitionRecord.of(plan, analysis.sphere_type.value, analysis.partition_targets.basis)
                         if plan else PartitionRecord(computed=False, reason=no_plan,
                                                      sphere_type=analysis.sphere_type.value,
                                                      limits_basis=analysis.partition_targets.basis)),
        correlation=correlation,
        timings_s=timings,
        predicted_dose=predicted.record if predicted is not None else None,
    )
    logger.info("MAA done: %d tumours (%s), overall T/N %s, LSF %s (%s), maximum activity %s GBq",
                len(uptake.tumours), ", ".join(t.name for t in uptake.tumours) or "none",
                "n/a" if uptake.overall_tn is None else f"{uptake.overall_tn:.2f}",
                "n/a" if shunt.lsf is None else f"{shunt.lsf:.1%}", shunt.source,
                f"{plan.activity_gbq:.2f}" if plan else "n/a")
    return MaaResult("maa", measurements, objects, warnings,
                     dose=predicted.reference if predicted is not None else None)
