"""Baseline subtraction, air/fat/bone/vessel masks and the noise estimate (science.md 1c steps 3-4).

The noise reduction itself (spatial, edge-preserving, inside the tissue mask) is node.perfusion.denoise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: Baseline (pre-contrast) HU window of soft tissue; below is fat/air, above is bone or calcification.
TISSUE_HU = (-20.0, 150.0)
AIR_HU = -500.0
FAT_HU = -20.0
BONE_HU = 150.0
#: A voxel whose (lightly smoothed) enhancement ever exceeds this is a vessel lumen, not parenchyma: real liver
#: and liver tumours stay well below it at CT perfusion doses.
VESSEL_ENHANCEMENT_HU = 150.0
#: Enhancement above this (HU) over the first frame marks the contrast arrival in the aorta.
ARRIVAL_MIN_HU = 20.0


@dataclass
class Masks:
    """Boolean (Z, Y, X) masks on the working grid."""

    air: np.ndarray
    fat: np.ndarray
    bone: np.ndarray
    vessel: np.ndarray
    tissue: np.ndarray  # soft tissue that gets maps: not air/fat/bone/vessel

    def summary(self, voxel_ml: float) -> dict[str, float]:
        """Volumes (mL) per mask, for the case record."""
        return {f"{k}_ml": round(float(getattr(self, k).sum()) * voxel_ml, 1)
                for k in ("air", "fat", "bone", "vessel", "tissue")}


def baseline_count(aorta_hu: np.ndarray) -> int:
    """Number of leading pre-contrast frames: those before the aortic curve first rises.

    Arrival = first frame whose aortic HU exceeds the first frame's by more than max(20 HU, 10 % of the aortic
    rise). At least one frame is baseline; the frame before arrival may hold a little contrast, so it is
    excluded when there are at least three pre-contrast frames.
    """
    rise = aorta_hu - aorta_hu[0]
    threshold = max(ARRIVAL_MIN_HU, 0.1 * float(rise.max()))
    above = np.nonzero(rise > threshold)[0]
    arrival = int(above[0]) if above.size else 1
    n = max(1, arrival)
    return n - 1 if n >= 3 else n


def subtract_baseline(data: np.ndarray, n_base: int) -> np.ndarray:
    """Turn HU (T, Z, Y, X) into enhancement in place; returns the baseline (mean pre-contrast) image."""
    base = data[:n_base].mean(axis=0)
    data -= base[np.newaxis]
    return base


def estimate_noise(hu: np.ndarray) -> float:
    """Image noise (HU SD) of a (T, Z, Y, X) series from differences of consecutive frames in soft tissue.

    Robust (median absolute deviation) and taken from the pair of frames that differ least, so enhancement
    and the odd moving edge do not count as noise.
    """
    tissue = (hu[0] >= TISSUE_HU[0]) & (hu[0] <= TISSUE_HU[1])
    idx = np.flatnonzero(tissue)[::7]  # a subsample is plenty for a median
    if idx.size < 100:
        return 0.0
    flat = hu.reshape(hu.shape[0], -1)
    values = []
    for t in range(hu.shape[0] - 1):
        d = flat[t + 1, idx] - flat[t, idx]
        values.append(float(np.median(np.abs(d - np.median(d)))) / 0.6745 / np.sqrt(2.0))
    return min(values)


def sigma_voxels(sigma_mm: float, spacing: np.ndarray) -> tuple[float, ...]:
    """Per-axis Gaussian sigma in voxels for a sigma in mm on a grid with `spacing` (mm)."""
    return tuple(float(sigma_mm) / float(s) for s in spacing)


def tissue_masks(baseline: np.ndarray, enh: np.ndarray, spacing: np.ndarray,
                 smoothed_peak_hu: np.ndarray | None = None) -> Masks:
    """Masks from the baseline HU image and the enhancement (T, Z, Y, X).

    `smoothed_peak_hu`, the maximum over the frames of the lightly smoothed HU frames, saves smoothing every frame
    again when input detection has it (node.perfusion.inputs.smoothed_frames, the same 1.5 mm Gaussian): the
    smoothing is linear, so the smoothed enhancement's peak is that minus the smoothed baseline."""
    sig = sigma_voxels(1.5, spacing)  # light smoothing so single noisy voxels do not flip classes
    base = ndimage.gaussian_filter(baseline, sig)
    air = base < AIR_HU
    fat = (base >= AIR_HU) & (base < FAT_HU)
    bone = base > BONE_HU
    if smoothed_peak_hu is not None:
        peak = smoothed_peak_hu - base
    else:
        peak = np.full(baseline.shape, -np.inf, dtype=np.float32)
        for frame in enh:  # frame by frame: no second 4D array
            np.maximum(peak, ndimage.gaussian_filter(frame, sig), out=peak)
    # One voxel of margin: partially-filled vessel-edge voxels would otherwise bleed into parenchyma.
    vessel = ndimage.binary_dilation(peak > VESSEL_ENHANCEMENT_HU, iterations=1)
    tissue = (base >= TISSUE_HU[0]) & (base <= TISSUE_HU[1]) & ~vessel
    return Masks(air=air, fat=fat, bone=bone, vessel=vessel & ~air, tissue=tissue)
