"""GSA target volumes on the planning-CT grid: FLS (functional liver), ITV (liver minus FLS), PTV (ITV + margin).

Arrays are numpy ``(z, y, x)`` (SimpleITK array order) with voxel spacing given in the same order, in mm.

Small parts. Thresholding a SPECT (13 mm FWHM) on a CT grid leaves parts far below its resolution: single
voxels and diagonal chains of them where the 60 % iso-surface runs along the liver surface, and pin holes.
A planning system shows each as its own tiny contour. So the liver's split into FLS and ITV is tidied on the
structures themselves (the RTSTRUCT and the pages show the same masks), before the PTV is grown:

* a 3D part (face-connected) of the ITV or the FLS smaller than :data:`MIN_PART_CM3` goes to the other
  structure (an ITV island becomes FLS, an FLS island inside the ITV becomes ITV);
* then, slice by slice, a contour (in-plane 4-connected part, what the RTSTRUCT writes as one contour)
  smaller than :data:`MIN_CONTOUR_MM2` does the same;
* holes of the PTV smaller than these sizes are filled.

Both sizes are far below what a 13 mm FWHM SPECT can resolve, and the liver is never changed (FLS + ITV =
liver stays exact). The volume each structure gained or lost is recorded (``Targets.tidy``); on a clinical
planning-CT grid (1 mm pixels) it is far below 1 %; on the coarse 3.2 mm test grid single voxels are 10 mm2
each and the ITV changes by about 1 %.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from node.gsa.errors import TargetError

logger = logging.getLogger(__name__)

__all__ = ["TargetError", "Targets", "TidyRecord", "compute_targets", "expand_mm", "volume_cm3", "tidy_partition",
           "fill_small_holes", "MIN_PART_CM3", "MIN_CONTOUR_MM2"]

#: 3D parts (face-connected) of FLS or ITV smaller than this (cm3) join the other structure.
MIN_PART_CM3 = 0.1
#: In-plane parts (one RTSTRUCT contour each) of FLS or ITV smaller than this (mm2 on a slice) do the same.
MIN_CONTOUR_MM2 = 15.0
_IN_PLANE = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 0, 0],
                                                                                         [0, 0, 0]]], dtype=bool)


@dataclass(frozen=True)
class TidyRecord:
    """What the small-part rule changed: voxels moved between FLS and ITV, holes filled in the PTV (cm3)."""

    min_part_cm3: float
    min_contour_mm2: float
    itv_to_fls_cm3: float  # ITV parts that became FLS
    fls_to_itv_cm3: float  # FLS parts that became ITV
    ptv_filled_cm3: float
    itv_change_fraction: float  # (tidied - untidied) / untidied ITV volume
    fls_change_fraction: float
    ptv_change_fraction: float  # against the PTV grown from the untidied ITV


@dataclass(frozen=True)
class Targets:
    """The three masks plus the SPECT figures that defined them."""

    fls: np.ndarray
    itv: np.ndarray
    ptv: np.ndarray
    spect_max_in_liver: float  # SPECT value (counts, after rescale) of the hottest liver voxel
    threshold_value: float  # fls_threshold x spect_max_in_liver
    tidy: TidyRecord | None = None  # the small-part rule's changes (None: not applied)


def volume_cm3(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Volume of a voxel mask in cm3."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_zyx)) / 1000.0


def expand_mm(mask: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels whose centre lies within `margin_mm` (physical, Euclidean) of a voxel centre of `mask`.

    Exact Euclidean distance transform with the real anisotropic spacing, computed on the bounding box of the
    mask grown by the margin (the rest of the grid cannot be reached), so cost follows the structure's size.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    if margin_mm <= 0 or not mask.any():
        return out
    reach = [int(np.floor(margin_mm / s)) for s in spacing_zyx]
    occupied = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    box = tuple(slice(max(0, int(o[0]) - r), min(n, int(o[-1]) + r + 1))
                for o, r, n in zip(occupied, reach, mask.shape, strict=True))
    distance = ndimage.distance_transform_edt(~mask[box], sampling=tuple(float(s) for s in spacing_zyx))
    # A hair of tolerance so a voxel exactly at the margin (e.g. 5 mm = 2 x 2.5 mm) is in, despite rounding.
    out[box] = distance <= margin_mm + 1e-6
    return out


def _small_parts(mask: np.ndarray, min_voxels: float, structure: np.ndarray | None = None) -> np.ndarray:
    """Voxels of `mask` in connected parts of fewer than `min_voxels` voxels (face connectivity by default)."""
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_voxels
    small[0] = False
    return small[labels]


def tidy_partition(liver: np.ndarray, fls: np.ndarray, spacing_zyx: Sequence[float],
                   min_part_cm3: float = MIN_PART_CM3, min_contour_mm2: float = MIN_CONTOUR_MM2) -> np.ndarray:
    """The FLS after the small-part rule (module docstring); the ITV is ``liver & ~result``."""
    liver = np.asarray(liver, dtype=bool)
    fls = np.asarray(fls, dtype=bool) & liver
    voxel_mm3 = float(np.prod(spacing_zyx))
    pixel_mm2 = float(spacing_zyx[1]) * float(spacing_zyx[2])
    min_voxels, min_pixels = min_part_cm3 * 1000.0 / voxel_mm3, min_contour_mm2 / pixel_mm2
    for _ in range(3):  # moving a part can leave a new small part next to it; settles in one or two rounds
        before = fls.copy()
        for voxels, structure in ((min_voxels, None), (min_pixels, _IN_PLANE)):
            fls = fls | _small_parts(liver & ~fls, voxels, structure)  # ITV slivers -> FLS
            fls = fls & ~_small_parts(fls, voxels, structure)  # FLS specks inside the ITV -> ITV
        if np.array_equal(fls, before):
            break
    return fls


def fill_small_holes(mask: np.ndarray, spacing_zyx: Sequence[float], min_part_cm3: float = MIN_PART_CM3,
                     min_contour_mm2: float = MIN_CONTOUR_MM2) -> np.ndarray:
    """`mask` with its enclosed holes smaller than the small-part sizes filled (3D, then slice by slice)."""
    mask = np.asarray(mask, dtype=bool)
    voxel_mm3 = float(np.prod(spacing_zyx))
    pixel_mm2 = float(spacing_zyx[1]) * float(spacing_zyx[2])
    out = mask.copy()
    for voxels, structure in ((min_part_cm3 * 1000.0 / voxel_mm3, None), (min_contour_mm2 / pixel_mm2, _IN_PLANE)):
        holes = ndimage.binary_fill_holes(out, structure=structure) & ~out
        out |= _small_parts(holes, voxels, structure)
    return out


def compute_targets(spect: np.ndarray, liver: np.ndarray, spacing_zyx: Sequence[float], *, fls_threshold: float,
                    ptv_margin_mm: float, reference_max: float | None = None, tidy: bool = True) -> Targets:
    """FLS = liver voxels with SPECT >= fls_threshold x (max of SPECT inside the liver); ITV = liver minus FLS;
    PTV = ITV expanded by `ptv_margin_mm` (physical mm).

    `spect` is the SPECT already resampled onto the planning-CT grid of `liver`. `reference_max` replaces the
    maximum of `spect` inside the liver (e.g. the maximum of a more strongly filtered SPECT, robust to noise).
    `tidy` applies the small-part rule (module docstring) to FLS/ITV and to the PTV's holes.
    """
    liver = np.asarray(liver, dtype=bool)
    if spect.shape != liver.shape:
        raise ValueError(f"SPECT grid {spect.shape} differs from liver grid {liver.shape}")
    if not liver.any():
        raise TargetError("the liver mask is empty")
    peak = float(spect[liver].max()) if reference_max is None else float(reference_max)
    if not np.isfinite(peak) or peak <= 0:
        raise TargetError("the SPECT has no counts inside the liver (wrong series, or the liver lies outside the "
                          "SPECT field of view)")
    threshold = fls_threshold * peak
    raw_fls = liver & (spect >= threshold)
    if not (liver & ~raw_fls).any():
        raise TargetError(f"every liver voxel reaches {fls_threshold:.0%} of the liver maximum: no ITV to treat "
                          "(check the threshold and the SPECT)")
    fls = tidy_partition(liver, raw_fls, spacing_zyx) if tidy else raw_fls
    itv = liver & ~fls
    if not itv.any():
        raise TargetError(f"every liver voxel reaches {fls_threshold:.0%} of the liver maximum once parts below "
                          f"{MIN_PART_CM3:g} cm3 are merged: no ITV to treat (check the threshold and the SPECT)")
    grown = expand_mm(itv, spacing_zyx, ptv_margin_mm)
    ptv = fill_small_holes(grown, spacing_zyx) if tidy else grown
    record = None
    if tidy:
        raw_itv = liver & ~raw_fls
        raw_ptv = expand_mm(raw_itv, spacing_zyx, ptv_margin_mm)
        cm3 = float(np.prod(spacing_zyx)) / 1000.0

        def change(new: np.ndarray, old: np.ndarray) -> float:
            n_old = int(np.count_nonzero(old))
            return round((int(np.count_nonzero(new)) - n_old) / n_old, 5) if n_old else 0.0

        record = TidyRecord(MIN_PART_CM3, MIN_CONTOUR_MM2,
                            itv_to_fls_cm3=round(float(np.count_nonzero(fls & ~raw_fls)) * cm3, 3),
                            fls_to_itv_cm3=round(float(np.count_nonzero(raw_fls & ~fls)) * cm3, 3),
                            ptv_filled_cm3=round(float(np.count_nonzero(ptv & ~grown)) * cm3, 3),
                            itv_change_fraction=change(itv, raw_itv), fls_change_fraction=change(fls, raw_fls),
                            ptv_change_fraction=change(ptv, raw_ptv))
    logger.info("GSA targets: max in liver %.4g, threshold %.4g, FLS %.1f cm3, ITV %.1f cm3, PTV %.1f cm3%s",
                peak, threshold, volume_cm3(fls, spacing_zyx), volume_cm3(itv, spacing_zyx),
                volume_cm3(ptv, spacing_zyx),
                f" (small parts: ITV {record.itv_change_fraction:+.2%}, PTV {record.ptv_change_fraction:+.2%})"
                if record else "")
    return Targets(fls=fls, itv=itv, ptv=ptv, spect_max_in_liver=peak, threshold_value=threshold, tidy=record)
