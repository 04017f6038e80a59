"""GSA target volumes on the planning-CT grid: FLS (functional liver), ITV (liver minus FLS), PTV (ITV + margin).

Arrays are numpy ``(z, y, x)`` (SimpleITK array order) with voxel spacing given in the same order, in mm.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from node.gsa.errors import TargetError

logger = logging.getLogger(__name__)

__all__ = ["TargetError", "Targets", "compute_targets", "expand_mm", "volume_cm3"]


@dataclass(frozen=True)
class Targets:
    """The three masks plus the SPECT figures that defined them."""

    fls: np.ndarray
    itv: np.ndarray
    ptv: np.ndarray
    spect_max_in_liver: float  # SPECT value (counts, after rescale) of the hottest liver voxel
    threshold_value: float  # fls_threshold x spect_max_in_liver


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


def compute_targets(spect: np.ndarray, liver: np.ndarray, spacing_zyx: Sequence[float], *, fls_threshold: float,
                    ptv_margin_mm: float, reference_max: float | None = None) -> Targets:
    """FLS = liver voxels with SPECT >= fls_threshold x (max of SPECT inside the liver); ITV = liver minus FLS;
    PTV = ITV expanded by `ptv_margin_mm` (physical mm).

    `spect` is the SPECT already resampled onto the planning-CT grid of `liver`. `reference_max` replaces the
    maximum of `spect` inside the liver (e.g. the maximum of a more strongly filtered SPECT, robust to noise).
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
    fls = liver & (spect >= threshold)
    itv = liver & ~fls
    if not itv.any():
        raise TargetError(f"every liver voxel reaches {fls_threshold:.0%} of the liver maximum: no ITV to treat "
                          "(check the threshold and the SPECT)")
    ptv = expand_mm(itv, spacing_zyx, ptv_margin_mm)
    logger.info("GSA targets: max in liver %.4g, threshold %.4g, FLS %.1f cm3, ITV %.1f cm3, PTV %.1f cm3",
                peak, threshold, volume_cm3(fls, spacing_zyx), volume_cm3(itv, spacing_zyx),
                volume_cm3(ptv, spacing_zyx))
    return Targets(fls=fls, itv=itv, ptv=ptv, spect_max_in_liver=peak, threshold_value=threshold)
