"""GSA SPECT-guided targets, end to end: inputs checked, SPECT registered onto the planning CT, FLS/ITV/PTV
defined, RTSTRUCT + fusion Secondary Captures built, figures recorded (science.md section 2).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

import rtstruct
from node.config import AnalysisConfig
from node.derived import NOT_FOR_DIAGNOSIS
from node.gsa.liver import LiverMask, find_liver
from node.gsa.outputs import Contour, build_fusion_captures, build_rtstruct, lps_view, render_fusion
from node.gsa.registration import RigidRegistration, register_rigid
from node.gsa.targets import Targets, compute_targets, volume_cm3
from node.results import AnalysisError, AnalysisResult, OutputObject
from node.volumes import ct_series_image, image_geometry, image_to_mask, nm_image

logger = logging.getLogger(__name__)

__all__ = ["GsaInputError", "run_gsa", "ANALYSIS_NAME"]

ANALYSIS_NAME = "gsa-targets"
#: The liver must lie inside the SPECT field of view at least this much, or the FLS threshold is meaningless.
MIN_LIVER_IN_SPECT_FOV = 0.95
#: Warn when less of the hot SPECT region (>= threshold x global max) lies in the liver than this.
MIN_HOT_IN_LIVER = 0.5
#: Gaussian post-filter (FWHM, mm) of the SPECT before thresholding. Without it the single hottest noisy voxel
#: sets "the maximum" (Poisson noise lifts it 5-10 %) and the FLS shrinks; 7 mm is well below the ~13-15 mm
#: resolution of a Tc-99m SPECT, so it removes voxel noise without blurring the uptake pattern much.
SPECT_FILTER_FWHM_MM = 7.0

# ROI colours (RGB): functional liver green (spare it), ITV red, PTV cyan, liver yellow.
_COLORS = {"FLS": (0, 200, 0), "ITV": (230, 30, 30), "PTV": (0, 200, 255), "liver": (255, 215, 0)}


class GsaInputError(AnalysisError):
    """The inputs do not form a usable GSA case (wrong frames of reference, patients, series)."""


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


def _fraction_inside_fov(spect: sitk.Image, planning: sitk.Image, transform: sitk.Transform,
                         mask: np.ndarray) -> float:
    """Fraction of the mask's voxels that map inside the SPECT's field of view."""
    ones = sitk.Image(spect.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(spect)
    inside = sitk.GetArrayViewFromImage(sitk.Resample(ones, planning, transform, sitk.sitkNearestNeighbor, 0))
    return float(np.count_nonzero(inside[mask]) / max(1, np.count_nonzero(mask)))


def _contours(liver: LiverMask, targets: Targets, analysis: AnalysisConfig,
              spacing_zyx: Sequence[float]) -> list[Contour]:
    """The four ROIs, with volumes (cm3) and method in their descriptions (LO: at most 64 characters)."""
    pct = f"{analysis.fls_threshold * 100:g}%"
    v = {k: volume_cm3(m, spacing_zyx) for k, m in
         (("liver", liver.mask), ("FLS", targets.fls), ("ITV", targets.itv), ("PTV", targets.ptv))}
    liver_desc = (f"liver derived from GSA SPECT uptake; {v['liver']:.1f} cm3" if liver.derived
                  else f"liver from received RTSTRUCT; {v['liver']:.1f} cm3")
    return [
        Contour("FLS", targets.fls, "AVOIDANCE", _COLORS["FLS"],
                f"functional liver: GSA >= {pct} of liver max; {v['FLS']:.1f} cm3"),
        Contour("ITV", targets.itv, "CTV", _COLORS["ITV"], f"ITV = liver minus FLS; {v['ITV']:.1f} cm3"),
        Contour("PTV", targets.ptv, "PTV", _COLORS["PTV"],
                f"PTV = ITV + {analysis.ptv_margin_mm:g} mm; {v['PTV']:.1f} cm3"),
        Contour(liver.roi_name, liver.mask, "ORGAN", _COLORS["liver"], liver_desc),
    ]


def _captures(planning_ct: Sequence[Dataset], nm: Dataset, planning: sitk.Image, spect_on_ct: sitk.Image,
              contours: list[Contour], targets: Targets, reg: RigidRegistration, liver: LiverMask,
              description: str) -> list[Dataset]:
    """Axial and coronal fusion montages through the liver, as Secondary Capture datasets."""
    origin, direction, spacing = image_geometry(planning)
    ct_view, sp = lps_view(sitk.GetArrayViewFromImage(planning), direction.ravel(), spacing)
    spect_view, _ = lps_view(sitk.GetArrayViewFromImage(spect_on_ct), direction.ravel(), spacing)
    # order: liver first (planes are placed through the first contour), then the targets
    shown = [contours[-1]] + contours[:-1]
    views = [Contour(c.name, lps_view(c.mask, direction.ravel(), spacing)[0], c.interpreted_type, c.color,
                     c.description) for c in shown]
    # patient coordinate (mm) of view index 0 along S, P, L: the corner of the image's bounding box
    size = planning.GetSize()
    corners = np.array([planning.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, size[0] - 1)
                        for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    origin_spl = (corners[:, 2].min(), corners[:, 1].min(), corners[:, 0].min())
    summary = reg.summary()
    caption = [
        f"FLS (green) = SPECT >= {targets.threshold_value / targets.spect_max_in_liver:.0%} of liver max;  "
        f"ITV (red) = liver - FLS;  PTV (cyan) = ITV + margin;  liver (yellow): {liver.source}",
        f"registration SPECT/CT -> planning CT: translation {summary['translation_mm']} mm, rotation "
        f"{summary['rotation_deg']:.2f} deg, Mattes MI {summary['final_metric_mattes_mi']:.3f}, "
        f"body Dice {summary['body_dice']:.3f}",
    ]
    images = {}
    axial_z = []
    for plane in ("axial", "coronal"):
        images[plane] = render_fusion(ct_view, spect_view, views, sp, origin_spl, plane,
                                      targets.spect_max_in_liver, caption)
    liver_view = views[0].mask
    occupied = np.nonzero(liver_view.any(axis=(1, 2)))[0]
    if occupied.size:
        lo, hi = int(occupied[0]), int(occupied[-1])
        axial_z = [origin_spl[0] + sp[0] * round(lo + f * (hi - lo)) for f in (0.2, 0.5, 0.8)]
    derivation = ("GSA SPECT rigidly registered (CT-CT mutual information) onto the planning CT and fused; "
                  "contours: " + "; ".join(c.description for c in contours))
    return build_fusion_captures(planning_ct, nm, images, axial_z, description, derivation)


def run_gsa(planning_ct: Sequence[Dataset], nm: Dataset, spect_ct: Sequence[Dataset],
            liver_rtstruct: Dataset | None, analysis: AnalysisConfig) -> AnalysisResult:
    """FLS/ITV/PTV from a 99mTc-GSA SPECT/CT on the planning CT, as an RTSTRUCT and fusion Secondary Captures.

    Raises an :class:`~node.results.AnalysisError` subclass, with the reason, when the inputs cannot be used
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
    spect_ct_image = ct_series_image(spect_ct, what="SPECT/CT CT")
    spect = nm_image(nm)
    lap("load_s")

    reg = register_rigid(planning, spect_ct_image)
    sigma = SPECT_FILTER_FWHM_MM / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    filtered = sitk.SmoothingRecursiveGaussian(spect, float(sigma)) if sigma > 0 else spect
    spect_on_ct = sitk.Resample(filtered, planning, reg.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    lap("register_s")

    liver = find_liver(liver_rtstruct, ordered, planning, spect, reg.transform, analysis.liver_roi_names)
    in_fov = _fraction_inside_fov(spect, planning, reg.transform, liver.mask)
    if in_fov < MIN_LIVER_IN_SPECT_FOV:
        raise GsaInputError(f"only {in_fov:.0%} of the liver lies inside the SPECT field of view after "
                            "registration: the functional threshold would be wrong (check the SPECT/CT range "
                            "and the registration)")
    spacing_zyx = tuple(float(s) for s in planning.GetSpacing()[::-1])
    spect_array = sitk.GetArrayViewFromImage(spect_on_ct)
    targets = compute_targets(spect_array, liver.mask, spacing_zyx, fls_threshold=analysis.fls_threshold,
                              ptv_margin_mm=analysis.ptv_margin_mm)
    hot = spect_array >= analysis.fls_threshold * float(spect_array.max())
    hot_in_liver = float(np.count_nonzero(hot & liver.mask) / max(1, np.count_nonzero(hot)))
    warnings = []
    if hot_in_liver < MIN_HOT_IN_LIVER:
        warnings.append(f"only {hot_in_liver:.0%} of the hottest SPECT region lies in the liver: check the "
                        "registration and the liver contour")
    if liver.derived:
        warnings.append(f"liver {liver.source} ({liver.note}); review it before planning")
    lap("targets_s")

    contours = _contours(liver, targets, analysis, spacing_zyx)
    masks = [image_to_mask(_as_image(c.mask, planning), ordered) for c in contours]
    description = (f"GSA FLS>={analysis.fls_threshold * 100:g}%max PTV=ITV+{analysis.ptv_margin_mm:g}mm "
                   f"{NOT_FOR_DIAGNOSIS}")
    rtss = build_rtstruct(ordered, masks, contours, description)
    lap("rtstruct_s")
    captures = _captures(ordered, nm, planning, spect_on_ct, contours, targets, reg, liver, description)
    lap("captures_s")

    measurements = _measurements(analysis, reg, liver, targets, contours, spacing_zyx, in_fov, hot_in_liver,
                                 warnings, ordered, nm, timings)
    outputs = [OutputObject(kind="rtstruct", dataset=rtss, description="GSA FLS/ITV/PTV structure set")]
    outputs += [OutputObject(kind="secondary-capture", dataset=sc, description=f"GSA fusion check ({plane})")
                for sc, plane in zip(captures, ("axial", "coronal"))]
    return AnalysisResult(name=ANALYSIS_NAME, outputs=outputs, measurements=measurements)


def _as_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def _measurements(analysis: AnalysisConfig, reg: RigidRegistration, liver: LiverMask, targets: Targets,
                  contours: list[Contour], spacing_zyx: Sequence[float], in_fov: float, hot_in_liver: float,
                  warnings: list[str], planning_ct: Sequence[Dataset], nm: Dataset,
                  timings: dict[str, float]) -> dict[str, Any]:
    """JSON-serialisable record of the case: method, parameters, registration quality, volumes."""
    volumes = {c.name: round(volume_cm3(c.mask, spacing_zyx), 2) for c in contours}
    return {
        "analysis": ANALYSIS_NAME,
        "method": "FLS = registered GSA SPECT >= threshold x max inside the liver; ITV = liver - FLS; "
                  "PTV = ITV + margin (Euclidean, physical mm)",
        "fls_threshold_fraction": analysis.fls_threshold,
        "ptv_margin_mm": analysis.ptv_margin_mm,
        "spect_filter": f"Gaussian, FWHM {SPECT_FILTER_FWHM_MM:g} mm, before thresholding",
        "spect_max_in_liver": round(targets.spect_max_in_liver, 4),
        "fls_threshold_value": round(targets.threshold_value, 4),
        "liver_source": liver.source,
        "liver_derived": liver.derived,
        "liver_roi_name": liver.roi_name,
        "liver_note": liver.note,
        "volumes_cm3": {"liver": volumes[liver.roi_name], "FLS": volumes["FLS"], "ITV": volumes["ITV"],
                        "PTV": volumes["PTV"]},
        "liver_in_spect_fov_fraction": round(in_fov, 4),
        "hot_spect_in_liver_fraction": round(hot_in_liver, 4),
        "registration": reg.summary(),
        "planning_ct": {"series_instance_uid": str(planning_ct[0].SeriesInstanceUID),
                        "study_instance_uid": str(planning_ct[0].StudyInstanceUID),
                        "slices": len(planning_ct), "voxel_mm_zyx": [round(s, 4) for s in spacing_zyx]},
        "spect": {"series_instance_uid": str(nm.SeriesInstanceUID), "sop_instance_uid": str(nm.SOPInstanceUID)},
        "warnings": warnings,
        "timings_s": timings,
    }
