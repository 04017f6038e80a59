"""Lung shunt fraction LSF = C_lung / (C_lung + C_liver) (science.md section 3).

Measured on the SPECT when its SPECT/CT covers the lungs completely; otherwise taken from the configuration
(`analysis.maa.lung_shunt_fraction`, e.g. from planar imaging). Which one was used is always recorded.

Lungs come from the SPECT/CT's CT (block-averaged in-plane to ~LUNG_PIXEL_MM): air-density voxels
(< LUNG_HU_MAX) enclosed by the body in the axial plane, in connected parts of at least MIN_LUNG_PART_ML whose
centre lies above the liver's centre. They count as covered when at most EDGE_FRACTION of them sit on the
first/last CT slice and at least MIN_IN_SPECT_FOV of them lie inside the SPECT field of view.

Counting (spill-robust, like the uptake ratio): the lung's MAA concentration is the mean of the lung core
(>= one resolution FWHM inside the lung and >= two from the liver, so no liver counts spill into it) times the
lung volume; the liver's counts are all counts within two FWHM of the liver, minus the lung concentration in
the lung voxels of that band. Activity elsewhere in that band (stomach, kidney) counts as liver.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from node.imaging.grids import as_image, distance_mm, fov_mask, fraction_on, grow_mm, spacing_zyx, voxel_ml
from node.maa.regions import SPECT_FWHM_MM

logger = logging.getLogger(__name__)

__all__ = ["LUNG_HU_MAX", "LungMask", "Shunt", "find_lungs", "lung_shunt"]

#: Lung parenchyma is -950..-600 HU; soft tissue and even partial-volume lung edges are above this.
LUNG_HU_MAX = -400.0
#: Air pockets smaller than this (bowel gas, trachea pieces) are not lung.
MIN_LUNG_PART_ML = 100.0
#: Below this total the lungs are not (sufficiently) in the SPECT/CT.
MIN_LUNG_ML = 500.0
#: Lungs with more than this share of their voxels on the first or last CT slice are cut by the field of view.
EDGE_FRACTION = 0.01
MIN_IN_SPECT_FOV = 0.99
#: The lung core must hold at least this much for a stable mean.
MIN_LUNG_CORE_ML = 50.0
#: The CT is block-averaged in-plane to about this pixel size (mm) before the lungs are found: plenty for a
#: 4-6 L organ and ~10x faster on a 512 x 512 CT.
LUNG_PIXEL_MM = 2.0
#: LSF above this usually contraindicates Y-90 radioembolization: flagged.
HIGH_LSF = 0.20
METHOD = (f"LSF = C_lung/(C_lung + C_liver); lungs from the SPECT/CT CT (< {LUNG_HU_MAX:g} HU inside the body); "
          f"C_lung = mean of the lung core (>= {SPECT_FWHM_MM:g} mm inside the lung, >= {2 * SPECT_FWHM_MM:g} mm "
          f"from the liver) x lung volume; C_liver = counts within {2 * SPECT_FWHM_MM:g} mm of the liver")


@dataclass(frozen=True)
class LungMask:
    """Lungs on the SPECT/CT's CT grid and whether they are complete in the image."""

    mask: np.ndarray  # bool (z, y, x) on the CT image
    volume_ml: float
    complete: bool
    reason: str  # why they are not complete ("" if they are)


@dataclass(frozen=True)
class Shunt:
    """The lung shunt fraction used, where it came from, and the lung mass basis."""

    lsf: float | None
    source: str  # "measured on SPECT", "configuration", or "not available"
    reason: str
    configured: float | None
    lung_volume_ml: float | None  # CT lung volume when the lungs were complete in the SPECT/CT
    lung_core_ml: float | None = None
    lung_to_liver_concentration: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: the lungs found on the SPECT/CT's CT (uint8 0/1 image on the in-plane-binned CT grid), for the review
    #: page and structure set; None when there was no CT or no lung in it
    lung_mask: sitk.Image | None = field(default=None, repr=False)
    #: when measured: the lungs as a fraction (0..1) on the SPECT grid, and as a mask on the (in-plane binned) CT
    #: they were found on, with that CT (for the Y-90 dose: lung VOI, CT lung mass)
    lung_fraction: np.ndarray | None = field(default=None, repr=False)
    lung_ct: sitk.Image | None = field(default=None, repr=False)
    lung_ct_mask: np.ndarray | None = field(default=None, repr=False)



def _body_filled(ct: np.ndarray) -> np.ndarray:
    """Largest non-air component with its in-plane holes filled (lungs are holes of the body in axial slices)."""
    labels, n = ndimage.label(ct > LUNG_HU_MAX)
    if n == 0:
        return np.zeros(ct.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == int(np.argmax(sizes)) + 1
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(body, structure=in_plane)


def find_lungs(ct_image: sitk.Image, liver_centre_z_mm: float) -> LungMask:
    """The lungs on the SPECT/CT's CT (see module docstring)."""
    ct = sitk.GetArrayViewFromImage(ct_image)
    vml = voxel_ml(ct_image)
    labels, n = ndimage.label((ct < LUNG_HU_MAX) & _body_filled(ct))
    keep = np.zeros(n + 1, bool)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        centres = ndimage.center_of_mass(np.ones(ct.shape, np.uint8), labels, range(1, n + 1))
        for i, c in enumerate(centres, start=1):
            z_mm = ct_image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c[::-1]))[2]
            keep[i] = sizes[i] * vml >= MIN_LUNG_PART_ML and z_mm > liver_centre_z_mm
    mask = keep[labels]
    volume = float(mask.sum()) * vml
    if volume < MIN_LUNG_ML:
        return LungMask(mask, volume, False, f"the SPECT/CT shows only {volume:.0f} mL of lung (< {MIN_LUNG_ML:g} mL)")
    edge = float(mask[0].sum() + mask[-1].sum()) / float(mask.sum())
    if edge > EDGE_FRACTION:
        return LungMask(mask, volume, False, f"the SPECT/CT field of view cuts the lungs ({edge:.1%} of the lung "
                                             "voxels lie on its first or last slice)")
    return LungMask(mask, volume, True, "")


def _configured(configured: float | None, reason: str, lung_ml: float | None) -> Shunt:
    if configured is None:
        return Shunt(None, "not available", f"{reason}; no analysis.maa.lung_shunt_fraction configured",
                     None, lung_ml, warnings=[f"lung shunt fraction not available ({reason}) and none configured: "
                                              "no partition-model activity; set analysis.maa.lung_shunt_fraction"])
    return Shunt(configured, "configuration", f"{reason}; analysis.maa.lung_shunt_fraction = {configured:g} used",
                 configured, lung_ml)


def lung_shunt(counts: np.ndarray, nm: sitk.Image, liver: np.ndarray, ct_image: sitk.Image | None,
               configured: float | None, normal_level: float | None = None) -> Shunt:
    """The LSF of this case: measured on the SPECT if the SPECT/CT covers the lungs, else the configured one.

    `counts` is the SPECT (z, y, x) on `nm`'s grid, `liver` a fraction (0..1) on that grid, `ct_image` the
    SPECT/CT's CT (same frame of reference as the NM) or None; `normal_level` (counts per voxel of normal liver)
    only scales the reported lung-to-liver concentration.
    """
    if ct_image is None:
        return _configured(configured, "no SPECT/CT CT to find the lungs on", None)
    liver_bin = liver >= 0.5
    idx = np.argwhere(liver_bin).mean(axis=0)
    liver_z = nm.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1]))[2]
    # never more than the image has (BinShrink refuses a factor above the size: "InputImage is too small")
    factor = [min(max(1, int(LUNG_PIXEL_MM / s)), n) for s, n in zip(ct_image.GetSpacing()[:2], ct_image.GetSize()[:2],
                                                                       strict=True)] + [1]
    ct_image = sitk.BinShrink(ct_image, factor) if max(factor) > 1 else ct_image
    lungs = find_lungs(ct_image, liver_z)
    shown = as_image(lungs.mask.astype(np.uint8), ct_image) if lungs.mask.any() else None
    shunt = _measured(counts, nm, liver_bin, ct_image, lungs, configured, normal_level)
    return dataclasses.replace(shunt, lung_mask=shown)


def _measured(counts: np.ndarray, nm: sitk.Image, liver_bin: np.ndarray, ct_image: sitk.Image, lungs: LungMask,
              configured: float | None, normal_level: float | None) -> Shunt:
    if not lungs.complete:
        return _configured(configured, lungs.reason, None)
    in_fov = float(np.count_nonzero(lungs.mask & fov_mask(nm, ct_image)) / max(1, int(np.count_nonzero(lungs.mask))))
    if in_fov < MIN_IN_SPECT_FOV:
        return _configured(configured, f"only {in_fov:.1%} of the lungs lie inside the SPECT field of view",
                           lungs.volume_ml)
    spacing = spacing_zyx(nm)
    lung = fraction_on(as_image(lungs.mask, ct_image), nm)
    lung_bin = lung >= 0.5
    core = (distance_mm(~lung_bin, spacing) >= SPECT_FWHM_MM) & (distance_mm(liver_bin, spacing) >= 2 * SPECT_FWHM_MM)
    core_ml = float(core.sum()) * voxel_ml(nm)
    if core_ml < MIN_LUNG_CORE_ML:
        return _configured(configured, f"the lung core away from the liver is only {core_ml:.0f} mL", lungs.volume_ml)
    lung_conc = float(counts[core].mean())
    c_lung = lung_conc * float(lung.sum())
    band = grow_mm(liver_bin, spacing, 2 * SPECT_FWHM_MM)
    c_liver = float(counts[band].sum()) - lung_conc * float(lung[band].sum())
    if c_liver <= 0:
        return _configured(configured, "no liver counts in the SPECT", lungs.volume_ml)
    lsf = c_lung / (c_lung + c_liver)
    warnings = []
    if lsf > HIGH_LSF:
        warnings.append(f"lung shunt fraction {lsf:.1%} > {HIGH_LSF:.0%}: radioembolization is usually "
                        "contraindicated or needs reduced activity")
    if configured is not None and abs(configured - lsf) > 0.05:
        warnings.append(f"measured LSF {lsf:.1%} differs from the configured {configured:.1%}")
    logger.info("MAA lung shunt fraction %.4f (lungs %.0f mL, core %.0f mL)", lsf, lungs.volume_ml, core_ml)
    return Shunt(lsf, "measured on SPECT", "the SPECT/CT covers the lungs", configured, lungs.volume_ml,
                 core_ml, lung_conc / normal_level if normal_level else None, warnings,
                 lung_fraction=lung, lung_ct=ct_image, lung_ct_mask=lungs.mask)
