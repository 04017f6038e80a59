"""Liver and tumour regions on the MAA SPECT grid: from a received RTSTRUCT, or found automatically.

RTSTRUCT: ROIs drawn on the SPECT/CT's CT (same frame of reference as the NM) are rasterised on the CT with
the `rtstruct` library and carried to the SPECT grid as partial-volume fractions. The liver ROI is matched by
`analysis.liver_roi_names`; tumour ROIs are those of RTROIInterpretedType GTV or named like a tumour
(TUMOR_NAME_PATTERN).

Automatic (documented threshold method):

* Liver: the SPECT smoothed to SEGMENT_FILTER_FWHM_MM; Otsu's threshold separates "uptake" from background;
  the median of the largest uptake component is the liver level L; the liver is the largest connected region
  >= LIVER_EDGE_FRACTION x L (the half-level edge of a large blurred uniform organ), holes filled. Tumours
  inside it are hotter than L and so are included.
* Tumours: hot seeds = voxels of the smoothed SPECT >= HOT_FACTOR x the liver median, inside the liver, of at
  least MIN_TUMOUR_ML. Two tumours a couple of cm apart blur into one hot area, so the area is split by a
  watershed between its maxima that stand out by at least SEPARATION_FRACTION x the liver median above the
  saddle to a higher one (h-maxima: far above the smoothed Poisson noise, a few % of the liver level).
  Each seed's region is then found by an iterative background-adapted threshold (after Jentzen et al.,
  J Nucl Med 2007;48:108): voxels >= n + f x (peak - n), n the normal-liver level, where f is the iso-level
  at which a uniform sphere of the region's current volume, blurred by the effective resolution
  (SPECT_FWHM_MM combined with the smoothing), crosses its true edge. f and the volume are iterated to
  agreement (typically 0.38-0.45 for 2-3 cm tumours). Regions do not overlap: a voxel claimed
  by two goes to the seed it is nearer to.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset
from scipy import ndimage
from scipy.special import erf
from skimage.filters import threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

import rtstruct
from node.imaging.grids import distance_mm, fraction_on, grow_mm, spacing_zyx
from node.imaging.rois import match_liver_roi
from node.imaging.volumes import mask_to_array, mask_to_image
from node.maa.errors import MaaInputError

logger = logging.getLogger(__name__)

__all__ = ["Regions", "SPECT_FWHM_MM", "SEGMENT_FILTER_FWHM_MM", "smooth", "automatic_liver",
           "automatic_tumours", "rtstruct_regions", "normal_liver_core", "sphere_iso_fraction",
           "TUMOR_NAME_PATTERN", "volume_ml", "effective_sigma_mm"]

#: Assumed spatial resolution (FWHM, mm) of a reconstructed Tc-99m SPECT (LEHR collimator, OSEM with
#: resolution recovery: typically 10-15 mm). Used for the sphere model of the automatic threshold and for the
#: spill-out margin of the uptake measurement.
SPECT_FWHM_MM = 13.0
#: Gaussian smoothing (FWHM, mm) of the SPECT before any threshold: Poisson noise would otherwise decide edges.
SEGMENT_FILTER_FWHM_MM = 9.0
#: Liver edge: this fraction of the liver level (half-level edge of a large uniform object after blurring).
LIVER_EDGE_FRACTION = 0.5
#: A tumour seed is at least this many times the liver median (smoothed SPECT).
HOT_FACTOR = 1.5
#: A second maximum in a hot area is a tumour of its own if it rises this many liver medians above the saddle.
SEPARATION_FRACTION = 0.5
#: Smaller hot seeds are noise or vessels, not tumours that a partition model could treat.
MIN_TUMOUR_ML = 1.0
#: A tumour region may extend this far (mm) beyond its seed.
SEARCH_RADIUS_MM = 15.0
#: ROI names taken as tumours (besides RTROIInterpretedType GTV).
TUMOR_NAME_PATTERN = re.compile(r"tum|lesion|gtv|hcc|met|nodul|^t\d+$", re.IGNORECASE)

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass
class Regions:
    """Regions on the SPECT grid as partial-volume fractions (float32 (z, y, x), 0..1), with provenance."""

    liver: np.ndarray
    tumours: dict[str, np.ndarray]
    liver_source: str
    tumour_source: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # thresholds and levels of the automatic method
    #: the received contours rasterised on the SPECT/CT's CT (bool (z, y, x) in the CT image's array order), by
    #: region: "liver" and tumour names; empty for automatic regions (they are made on the SPECT grid)
    drawn_on_ct: dict[str, np.ndarray] = field(default_factory=dict)

    def renamed(self, names: dict[str, str]) -> Regions:
        """The regions with tumours renamed (`names`: old -> new; others keep theirs); renamed ones first, in
        the order of their new names, so "T1, T2, T3" read in order on every page."""
        order = sorted((n for n in self.tumours if n in names), key=lambda n: _natural(names[n]))
        order += [n for n in self.tumours if n not in names]
        tumours = {names.get(n, n): self.tumours[n] for n in order}
        details = dict(self.details)
        auto = dict(details.get("tumours", {}))
        for key in ("threshold_fraction", "peak_to_normal_smoothed"):
            if isinstance(auto.get(key), dict):
                auto[key] = {names.get(k, k): v for k, v in auto[key].items()}
        if auto:
            details["tumours"] = auto
        details["names"] = {old: new for old, new in names.items()}
        return Regions(self.liver, tumours, self.liver_source, self.tumour_source, list(self.notes), details)


def _natural(name: str) -> tuple[str, int, str]:
    """Sort key: "T2" before "T10"."""
    match = re.match(r"^(\D*)(\d+)(.*)$", name)
    return (match.group(1), int(match.group(2)), match.group(3)) if match else (name, 0, "")


def smooth(array: np.ndarray, spacing: Sequence[float], fwhm_mm: float) -> np.ndarray:
    """Gaussian filter with a physical FWHM (mm) on an array with `spacing` (z, y, x)."""
    sigma = [fwhm_mm * _FWHM_TO_SIGMA / s for s in spacing]
    return ndimage.gaussian_filter(array.astype(np.float32), sigma=sigma, mode="nearest")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def automatic_liver(spect: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, dict[str, Any]]:
    """The liver from the MAA uptake (see module docstring); raises MaaInputError when none is found."""
    sm = smooth(spect, spacing, SEGMENT_FILTER_FWHM_MM)
    positive = sm[sm > 0.01 * float(sm.max())]
    if positive.size < 100:
        raise MaaInputError("the MAA SPECT shows no uptake region: cannot find the liver (is the image empty?)")
    otsu = float(threshold_otsu(positive))
    uptake = _largest_component(sm > otsu)
    level = float(np.median(sm[uptake]))
    liver = ndimage.binary_fill_holes(_largest_component(sm >= LIVER_EDGE_FRACTION * level))
    if not liver.any():
        raise MaaInputError("no liver found in the MAA SPECT uptake")
    return liver, {"liver_level_smoothed": round(level, 3), "otsu_threshold": round(otsu, 3),
                   "liver_edge_fraction_of_level": LIVER_EDGE_FRACTION}


def _sphere_profile(r: float, radius: float, sigma: float) -> float:
    """Value at distance r from the centre of a unit-concentration sphere blurred by a 3D Gaussian (sigma)."""
    q = np.sqrt(2.0) * sigma
    if r < 1e-6:
        return float(erf(radius / q) - np.sqrt(2.0 / np.pi) * radius / sigma * np.exp(-radius ** 2 / (2 * sigma ** 2)))
    gauss = np.exp(-(radius - r) ** 2 / (2 * sigma ** 2)) - np.exp(-(radius + r) ** 2 / (2 * sigma ** 2))
    return float(0.5 * (erf((radius - r) / q) + erf((radius + r) / q)) - sigma / (r * np.sqrt(2 * np.pi)) * gauss)


def sphere_iso_fraction(radius_mm: float, sigma_mm: float) -> float:
    """Fraction of the centre value (above background) at which a blurred uniform sphere crosses its edge."""
    return _sphere_profile(radius_mm, radius_mm, sigma_mm) / _sphere_profile(0.0, radius_mm, sigma_mm)


def effective_sigma_mm(spacing: Sequence[float]) -> float:
    """Blur of the smoothed SPECT: system resolution, smoothing filter and voxel size combined (Gaussian sigma)."""
    voxel = float(np.mean(spacing))
    return float(np.sqrt((SPECT_FWHM_MM * _FWHM_TO_SIGMA) ** 2 + (SEGMENT_FILTER_FWHM_MM * _FWHM_TO_SIGMA) ** 2
                         + voxel ** 2 / 12.0))


def normal_liver_core(liver: np.ndarray, tumours: Sequence[np.ndarray], spacing: Sequence[float],
                      margin_mm: float) -> np.ndarray:
    """Normal liver away from tumours and from the liver surface by `margin_mm`: free of spill in and out.

    Falls back to the liver minus grown tumours (no erosion) when the eroded core would be under 20 mL.
    """
    near_tumour = np.zeros(liver.shape, bool)
    for t in tumours:
        near_tumour |= grow_mm(t, spacing, margin_mm)
    normal = liver & ~near_tumour
    core = normal & (distance_mm(~liver, spacing) > margin_mm)
    if core.sum() * float(np.prod(spacing)) / 1000.0 < 20.0:
        logger.warning("normal-liver core under 20 mL: using the whole normal liver (spill from the edge)")
        return normal
    return core


def _iterate_threshold(sm: np.ndarray, allowed: np.ndarray, peak_index: tuple[int, ...], normal: float,
                       sigma: float, voxel_mm3: float) -> tuple[np.ndarray, float]:
    """Region of one tumour by the iterative sphere-model threshold; returns (mask, final fraction f)."""
    peak = float(sm[peak_index])
    f = 0.5
    region = np.zeros(sm.shape, bool)
    for _ in range(30):
        labels, _n = ndimage.label(allowed & (sm >= normal + f * (peak - normal)))
        region = labels == labels[peak_index]
        radius = (3.0 * region.sum() * voxel_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
        f_new = sphere_iso_fraction(radius, sigma)
        if abs(f_new - f) < 0.002:
            break
        f = f_new
    return region, f


def automatic_tumours(spect: np.ndarray, liver: np.ndarray, spacing: Sequence[float],
                      margin_mm: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Hot tumour regions inside `liver` (see module docstring): {"H1": mask, ...} hottest first."""
    sm = smooth(spect, spacing, SEGMENT_FILTER_FWHM_MM)
    voxel_mm3 = float(np.prod(spacing))
    median = float(np.median(sm[liver]))
    hot = (sm >= HOT_FACTOR * median) & liver
    markers, _ = ndimage.label(h_maxima(np.where(hot, sm, 0.0), SEPARATION_FRACTION * median) & hot)
    labels = watershed(-sm, markers, mask=hot)
    n = int(labels.max())
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    seeds = [i for i in range(1, n + 1) if sizes[i] * voxel_mm3 / 1000.0 >= MIN_TUMOUR_ML]
    details: dict[str, Any] = {"liver_median_smoothed": round(median, 3), "hot_factor": HOT_FACTOR,
               "separation_fraction": SEPARATION_FRACTION,
               "min_tumour_ml": MIN_TUMOUR_ML, "seeds": len(seeds), "seeds_too_small": n - len(seeds)}
    if not seeds:
        return {}, details
    seed_masks = [labels == i for i in seeds]
    core = normal_liver_core(liver, seed_masks, spacing, margin_mm)
    normal = float(sm[core].mean())
    sigma = effective_sigma_mm(spacing)
    # nearest seed of every voxel: overlapping regions are split between seeds
    seed_labels = np.zeros(labels.shape, np.int32)
    for k, m in enumerate(seed_masks, start=1):
        seed_labels[m] = k
    _, nearest_idx = ndimage.distance_transform_edt(seed_labels == 0, sampling=spacing, return_indices=True)
    nearest = seed_labels[tuple(nearest_idx)]
    found = []
    for k, seed in enumerate(seed_masks, start=1):
        peak_index = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(seed, sm, -np.inf))), sm.shape))
        allowed = grow_mm(seed, spacing, SEARCH_RADIUS_MM) & liver & (nearest == k)
        region, f = _iterate_threshold(sm, allowed, peak_index, normal, sigma, voxel_mm3)
        excess = float((sm[region] - normal).sum())
        found.append((excess, region, round(f, 3), round(float(sm[peak_index]) / normal, 3)))
    found.sort(key=lambda x: -x[0])
    tumours = {f"H{i}": region for i, (_e, region, _f, _p) in enumerate(found, start=1)}
    details.update({"normal_level_smoothed": round(normal, 3), "effective_sigma_mm": round(sigma, 2),
                    "threshold_fraction": {f"H{i}": f for i, (_e, _r, f, _p) in enumerate(found, start=1)},
                    "peak_to_normal_smoothed": {f"H{i}": p for i, (_e, _r, _f, p) in enumerate(found, start=1)}})
    return tumours, details


def _interpreted_types(rtss: Dataset) -> dict[str, str]:
    by_number = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
                 for o in rtss.get("RTROIObservationsSequence", [])}
    return {str(r.ROIName): by_number.get(int(r.ROINumber), "") for r in rtss.get("StructureSetROISequence", [])}


def rtstruct_regions(rtss: Dataset, ct_ordered: Sequence[Dataset], ct_image: sitk.Image, nm: sitk.Image,
                     liver_names: Sequence[str]
                     ) -> tuple[np.ndarray | None, dict[str, np.ndarray], list[str], dict[str, np.ndarray]]:
    """(liver fraction or None, {tumour name: fraction}, notes, masks on the CT ("liver" and tumour names)) of an
    RTSTRUCT drawn on the SPECT/CT's CT.

    Raises MaaInputError when the structure set cannot be placed on that CT.
    """
    types = _interpreted_types(rtss)
    names = rtstruct.roi_names(rtss)
    liver_name = match_liver_roi(names, liver_names)
    tumour_names = [n for n in names if n != liver_name
                    and (types.get(n, "").upper() == "GTV" or TUMOR_NAME_PATTERN.search(n))]
    wanted = ([liver_name] if liver_name else []) + tumour_names
    notes = []
    ignored = [n for n in names if n not in wanted]
    if ignored:
        notes.append(f"RTSTRUCT ROIs not used (neither liver nor tumour): {', '.join(ignored)}")
    if not wanted:
        return None, {}, notes, {}
    try:
        masks = rtstruct.read_masks(rtss, ct_ordered, names=wanted)
    except rtstruct.RTStructError as exc:
        raise MaaInputError(f"the received RTSTRUCT cannot be placed on the MAA SPECT/CT's CT: {exc}. Send a "
                            "structure set drawn on this SPECT/CT (or none for automatic regions)") from None
    fractions = {name: fraction_on(mask_to_image(m, ct_ordered, ct_image), nm) for name, m in masks.items()}
    empty = [n for n, f in fractions.items() if f.sum() == 0]
    for n in empty:
        notes.append(f"RTSTRUCT ROI {n!r} is empty or outside the SPECT field of view: not used")
        fractions.pop(n)
    liver = fractions.pop(liver_name, None) if liver_name else None
    on_ct = {("liver" if n == liver_name else n): mask_to_array(masks[n], ct_ordered, ct_image)
             for n in masks if n == liver_name and liver is not None or n in fractions}
    return liver, fractions, notes, on_ct


def volume_ml(fraction: np.ndarray, image: sitk.Image) -> float:
    """Volume (mL) of a partial-volume fraction map on `image`'s grid."""
    return float(fraction.sum()) * float(np.prod(spacing_zyx(image))) / 1000.0
