"""GSA SPECT-guided targets, end to end: inputs checked, SPECT registered onto the planning CT, FLS/ITV/PTV
defined, RTSTRUCT + fusion Secondary Captures built, figures recorded (science.md section 2).
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
from node.gsa.errors import GsaInputError
from node.gsa.liver import LiverMask, find_liver
from node.gsa.measurements import GsaMeasurements, SeriesRef
from node.gsa.outputs import Contour, GsaFigures, build_fusion_captures, build_rtstruct, render_page
from node.gsa.reference import GsaReference, GsaResult
from node.gsa.settings import GsaSettings
from node.gsa.targets import Targets, compute_targets, volume_cm3
from node.imaging.grids import binned_grid, binned_mask, bounding_grid, fraction_inside_fov, spect_on_grid
from node.imaging.layers import Layer
from node.imaging.pages import Identity
from node.imaging.registration import RigidRegistration, register_rigid
from node.imaging.volumes import array_to_mask, ct_series_image, nm_image
from node.workflow import OutputObject

logger = logging.getLogger(__name__)

__all__ = ["GsaInputError", "run_gsa"]

#: The liver must lie inside the SPECT field of view at least this much, or the FLS threshold is meaningless.
MIN_LIVER_IN_SPECT_FOV = 0.95
#: Warn when less of the hot SPECT region (>= threshold x global max) lies in the liver than this.
MIN_HOT_IN_LIVER = 0.5
#: Gaussian filter (FWHM, mm) of the SPECT that is thresholded: removes voxel noise (ragged, holed contours)
#: while staying well below the ~13-15 mm resolution of a Tc-99m SPECT, so the uptake pattern is kept.
SPECT_FILTER_FWHM_MM = 5.0
#: Gaussian filter (FWHM, mm) of the SPECT whose maximum in the liver is the reference of the threshold.
#: "The maximum pixel value" of a noisy SPECT is set by noise (Poisson noise lifts it 5-10 %, shrinking the
#: FLS); the maximum of a smoother image estimates the true peak (like PET's SUVpeak over ~1 cm3).
REFERENCE_FILTER_FWHM_MM = 10.0
#: Voxel size (mm) of the SPECT layer of the fusion images and of the whole-field sanity check.
DISPLAY_SPACING_MM = 4.0

# ROI colours (RGB): functional liver green (spare it), ITV red, PTV magenta, liver yellow; none of them is in
# the uptake colour scale of the pages (node.imaging.pages.UPTAKE_CMAP, blue to white).
_COLORS = {"FLS": (0, 190, 140), "ITV": (240, 64, 40), "PTV": (255, 60, 255), "liver": (255, 215, 0)}


def _check_inputs(planning_ct: Sequence[Dataset], nm: Dataset, spect_ct: Sequence[Dataset]) -> None:
    if not planning_ct:
        raise GsaInputError("no planning CT images")
    if not spect_ct:
        raise GsaInputError("no CT images of the SPECT/CT (needed to register the SPECT to the planning CT)")
    nm_for = nm.get("FrameOfReferenceUID")
    ct_fors = {ds.get("FrameOfReferenceUID") for ds in spect_ct}
    if not nm_for:
        raise GsaInputError("the NM SPECT has no FrameOfReferenceUID: its position relative to its CT is unknown")
    if ct_fors != {nm_for}:
        raise GsaInputError("the NM SPECT and the SPECT/CT's CT do not share a FrameOfReferenceUID "
                            f"(NM {nm_for}, CT {', '.join(sorted(str(f) for f in ct_fors))}): they are not one "
                            "hybrid acquisition, so the SPECT cannot be carried by the CT registration")
    patients = {str(ds.get("PatientID", "")) for ds in (planning_ct[0], nm, spect_ct[0])} - {""}
    if len(patients) > 1:
        raise GsaInputError(f"the inputs belong to different patients (PatientID {', '.join(sorted(patients))})")


def _targets(spect: sitk.Image, planning: sitk.Image, transform: sitk.Transform, liver: np.ndarray,
             analysis: GsaSettings) -> tuple[Targets, float, sitk.Image, tuple[slice, slice, slice], np.ndarray]:
    """FLS/ITV/PTV on the full planning grid, the fraction of the liver inside the SPECT field of view, and the
    box of the planning grid they lie in with the (filtered) SPECT thresholded there.

    The SPECT is resampled only onto the liver's bounding box grown by the PTV margin (+1 voxel), which holds
    every voxel the targets can reach, so the result equals a full-grid computation at a fraction of the cost.
    """
    spacing_zyx = tuple(float(s) for s in planning.GetSpacing()[::-1])
    pad = [int(np.ceil(analysis.ptv_margin_mm / s)) + 1 for s in spacing_zyx]
    grid, box = bounding_grid(planning, liver, pad)
    in_box = liver[box]
    in_fov = fraction_inside_fov(spect, grid, transform, in_box)
    if in_fov < MIN_LIVER_IN_SPECT_FOV:
        raise GsaInputError(f"only {in_fov:.0%} of the liver lies inside the SPECT field of view after "
                            "registration: the functional threshold would be wrong (check the SPECT/CT range "
                            "and the registration)")
    reference_max = float(spect_on_grid(spect, grid, transform, REFERENCE_FILTER_FWHM_MM)[in_box].max())
    counts = spect_on_grid(spect, grid, transform, SPECT_FILTER_FWHM_MM)
    found = compute_targets(counts, in_box, spacing_zyx, fls_threshold=analysis.fls_threshold,
                            ptv_margin_mm=analysis.ptv_margin_mm, reference_max=reference_max)

    def full(part: np.ndarray) -> np.ndarray:
        out = np.zeros(liver.shape, dtype=bool)
        out[box] = part
        return out

    return (dataclasses.replace(found, fls=full(found.fls), itv=full(found.itv), ptv=full(found.ptv)), in_fov, grid,
            box, counts)


def _contours(liver: LiverMask, targets: Targets, analysis: GsaSettings,
              spacing_zyx: Sequence[float]) -> list[Contour]:
    """The four ROIs, with volumes (cm3) and method in their descriptions (LO: at most 64 characters)."""
    pct = f"{analysis.fls_threshold * 100:g}%"
    v = {k: volume_cm3(m, spacing_zyx) for k, m in
         (("liver", liver.mask), ("FLS", targets.fls), ("ITV", targets.itv), ("PTV", targets.ptv))}
    liver_desc = (f"liver derived from GSA SPECT uptake; {v['liver']:.1f} cm3" if liver.derived
                  else f"liver from received RTSTRUCT; {v['liver']:.1f} cm3")
    algorithm, how = liver.generation
    if not liver.derived:  # the received ROI keeps how it was made; the contours are traced again from its mask
        how = (f"{how}; " if how else "") + "copied from the received structure set"
    return [
        Contour("FLS", targets.fls, "AVOIDANCE", _COLORS["FLS"],
                f"functional liver: GSA >= {pct} of liver max; {v['FLS']:.1f} cm3", volume_cm3=v["FLS"]),
        Contour("ITV", targets.itv, "CTV", _COLORS["ITV"], f"ITV = liver minus FLS; {v['ITV']:.1f} cm3",
                volume_cm3=v["ITV"]),
        Contour("PTV", targets.ptv, "PTV", _COLORS["PTV"],
                f"PTV = ITV + {analysis.ptv_margin_mm:g} mm; {v['PTV']:.1f} cm3", volume_cm3=v["PTV"]),
        Contour(liver.roi_name, liver.mask, "ORGAN", _COLORS["liver"], liver_desc, generation=(algorithm, how[:64]),
                volume_cm3=v["liver"]),
    ]


def registration_words(reg: RigidRegistration) -> str:
    """The registration's result for people: how far the SPECT/CT moved, and how well the bodies agree."""
    summary = reg.summary()
    shift = float(np.linalg.norm(summary.translation_mm))
    return (f"SPECT/CT moved {shift:.1f} mm and turned {summary.rotation_deg:.1f}\u00b0 onto the planning CT "
            f"(rigid, CT to CT); body outlines agree to Dice {summary.body_dice:.3f}")


def _captures(planning_ct: Sequence[Dataset], nm: Dataset, planning: sitk.Image, spect: Layer,
              contours: list[Contour], targets: Targets, reg: RigidRegistration, liver: LiverMask,
              analysis: GsaSettings, description: str, warnings: Sequence[str]) -> list[Dataset]:
    """Axial and coronal pages through the liver, as Secondary Capture datasets of one series."""
    ct = Layer.of(sitk.GetArrayViewFromImage(planning), planning)  # `planning` outlives this view
    shown = {c.name: Contour(c.name, Layer.of(c.mask, planning).array, c.interpreted_type, c.color, c.description,
                             c.generation, c.volume_cm3) for c in contours}
    liver_shown = shown[liver.roi_name]
    source = ("derived from the GSA SPECT uptake (review it)" if liver.derived
              else f"RTSTRUCT '{liver.roi_name}'")
    figures = GsaFigures(
        threshold_fraction=analysis.fls_threshold, margin_mm=analysis.ptv_margin_mm, liver_source=source,
        registration=registration_words(reg),
        method=(f"SPECT smoothed to {SPECT_FILTER_FWHM_MM:g} mm before the threshold; its liver maximum is taken "
                f"on the SPECT smoothed to {REFERENCE_FILTER_FWHM_MM:g} mm (robust to noise)."),
        small_parts=targets.tidy, warnings=tuple(warnings))
    series_uid = hd.UID()
    identity = Identity.of(planning_ct[0], description)
    images = {plane: render_page(identity, plane, ct, spect, liver_shown, shown["FLS"], shown["ITV"], shown["PTV"],
                                 targets.spect_max_in_liver, figures, (n, 2))
              for n, plane in enumerate(("axial", "coronal"), start=1)}
    occupied = np.nonzero(liver_shown.mask.any(axis=(1, 2)))[0]
    axial_z = []
    if occupied.size:
        lo, hi = int(occupied[0]), int(occupied[-1])
        axial_z = [ct.origin[0] + ct.spacing[0] * round(lo + f * (hi - lo)) for f in (0.2, 0.5, 0.8)]
    derivation = ("GSA SPECT rigidly registered (CT-CT mutual information) onto the planning CT and fused; "
                  "contours: " + "; ".join(c.description for c in contours))
    return build_fusion_captures(planning_ct, nm, images, axial_z, description, derivation, series_uid)


def run_gsa(planning_ct: Sequence[Dataset], nm: Dataset, spect_ct: Sequence[Dataset],
            liver_rtstruct: Dataset | None, analysis: GsaSettings) -> GsaResult:
    """FLS/ITV/PTV from a 99mTc-GSA SPECT/CT on the planning CT, as an RTSTRUCT and fusion Secondary Captures.

    Raises an :class:`~node.errors.AnalysisError` subclass, with the reason, when the inputs cannot be used
    (frames of reference, geometry, failed or implausible registration, liver outside the SPECT field).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 3)

    _check_inputs(planning_ct, nm, spect_ct)
    try:
        ordered = rtstruct.sort_slices(planning_ct)
    except rtstruct.RTStructError as exc:
        raise GsaInputError(f"planning CT: {exc}") from None
    planning = ct_series_image(ordered, what="planning CT")
    spect = nm_image(nm)
    lap("load_s")
    # int16 is exact for HU and halves the memory of a volume that only the registration reads
    reg = register_rigid(planning, ct_series_image(spect_ct, what="SPECT/CT CT", dtype=np.int16))
    lap("register_s")

    liver = find_liver(liver_rtstruct, ordered, planning, spect, reg.transform, analysis.liver_roi_names)
    targets, in_fov, box_grid, box, counts = _targets(spect, planning, reg.transform, liver.mask, analysis)
    # Whole-field check on a coarse grid: the hottest SPECT region should be liver.
    display, factors = binned_grid(planning, DISPLAY_SPACING_MM)
    spect_display = spect_on_grid(spect, display, reg.transform, SPECT_FILTER_FWHM_MM)
    hot = spect_display >= analysis.fls_threshold * float(spect_display.max())
    hot_in_liver = float(np.count_nonzero(hot & binned_mask(liver.mask, display, factors))
                         / max(1, int(np.count_nonzero(hot))))
    warnings = []
    if hot_in_liver < MIN_HOT_IN_LIVER:
        warnings.append(f"only {hot_in_liver:.0%} of the hottest SPECT region lies in the liver: check the "
                        "registration and the liver contour")
    if liver.derived:
        warnings.append(f"liver {liver.source} ({liver.note}); review it before planning")
    lap("targets_s")

    spacing_zyx = tuple(float(s) for s in planning.GetSpacing()[::-1])
    contours = _contours(liver, targets, analysis, spacing_zyx)
    description = (f"GSA FLS>={analysis.fls_threshold * 100:g}%max PTV=ITV+{analysis.ptv_margin_mm:g}mm "
                   f"{NOT_FOR_DIAGNOSIS}")
    rtss = build_rtstruct(ordered, [array_to_mask(c.mask, planning, ordered) for c in contours], contours,
                          description)
    lap("rtstruct_s")
    captures = _captures(ordered, nm, planning, Layer.of(spect_display, display), contours, targets, reg, liver,
                         analysis, description, warnings)
    lap("captures_s")

    measurements = _measurements(analysis, reg, liver, targets, contours, spacing_zyx, in_fov, hot_in_liver,
                                 ordered, nm, timings)
    outputs = [OutputObject(kind="rtstruct", dataset=rtss, description="GSA FLS/ITV/PTV structure set")]
    outputs += [OutputObject(kind="secondary-capture", dataset=sc, description=f"GSA fusion check ({plane})")
                for sc, plane in zip(captures, ("axial", "coronal"), strict=True)]
    reference = GsaReference(
        grid=box_grid, liver=np.ascontiguousarray(liver.mask[box]), fls=np.ascontiguousarray(targets.fls[box]),
        itv=np.ascontiguousarray(targets.itv[box]), ptv=np.ascontiguousarray(targets.ptv[box]),
        gsa_counts=np.asarray(counts, dtype=np.float32),
        counts_filter=f"GSA SPECT registered onto the planning CT, Gaussian FWHM {SPECT_FILTER_FWHM_MM:g} mm (the "
                      "image the FLS threshold was applied to)",
        frame_of_reference_uid=str(ordered[0].get("FrameOfReferenceUID", "")),
        patient_id=str(ordered[0].get("PatientID", "")), liver_roi_name=liver.roi_name)
    return GsaResult("gsa", measurements, outputs, warnings, reference=reference)


def _measurements(analysis: GsaSettings, reg: RigidRegistration, liver: LiverMask, targets: Targets,
                  contours: list[Contour], spacing_zyx: Sequence[float], in_fov: float, hot_in_liver: float,
                  planning_ct: Sequence[Dataset], nm: Dataset, timings: dict[str, float]) -> GsaMeasurements:
    """The case record: method, parameters, registration quality, volumes."""
    volumes = {c.name: round(volume_cm3(c.mask, spacing_zyx), 2) for c in contours}
    return GsaMeasurements(
        method="FLS = registered GSA SPECT >= threshold x max inside the liver; ITV = liver - FLS; "
               "PTV = ITV + margin (Euclidean, physical mm)",
        fls_threshold_fraction=analysis.fls_threshold,
        ptv_margin_mm=analysis.ptv_margin_mm,
        spect_filter=f"thresholded SPECT: Gaussian FWHM {SPECT_FILTER_FWHM_MM:g} mm; reference maximum "
                     f"taken on the SPECT filtered to FWHM {REFERENCE_FILTER_FWHM_MM:g} mm",
        spect_max_in_liver=round(targets.spect_max_in_liver, 4),
        fls_threshold_value=round(targets.threshold_value, 4),
        liver_source=liver.source,
        liver_derived=liver.derived,
        liver_roi_name=liver.roi_name,
        liver_note=liver.note,
        volumes_cm3={"liver": volumes[liver.roi_name], "FLS": volumes["FLS"], "ITV": volumes["ITV"],
                     "PTV": volumes["PTV"]},
        liver_in_spect_fov_fraction=round(in_fov, 4),
        hot_spect_in_liver_fraction=round(hot_in_liver, 4),
        registration=reg.summary(),
        planning_ct=SeriesRef(series_instance_uid=str(planning_ct[0].SeriesInstanceUID),
                              study_instance_uid=str(planning_ct[0].StudyInstanceUID),
                              slices=len(planning_ct), voxel_mm_zyx=[round(s, 4) for s in spacing_zyx]),
        spect=SeriesRef(series_instance_uid=str(nm.SeriesInstanceUID), sop_instance_uid=str(nm.SOPInstanceUID)),
        timings_s=timings,
        small_parts=targets.tidy,
    )
