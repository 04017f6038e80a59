"""Sub-grids of the planning CT and the SPECT carried onto them.

A full 512x512x120 planning grid holds 31 M voxels; the SPECT is only needed around the liver (targets) and
coarsely everywhere (display, sanity checks), so it is resampled onto smaller grids that share the planning
CT's geometry: a bounding box (same voxels, a sub-range of indices) or a binned grid (coarser voxels).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["bounding_grid", "binned_grid", "binned_mask", "spect_on_grid", "fraction_inside_fov"]


def _empty_like(size: Sequence[int], spacing: Sequence[float], origin: Sequence[float],
                direction: Sequence[float]) -> sitk.Image:
    grid = sitk.Image([int(v) for v in size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(v) for v in spacing))
    grid.SetOrigin(tuple(float(v) for v in origin))
    grid.SetDirection(tuple(direction))
    return grid


def bounding_grid(image: sitk.Image, mask: np.ndarray, pad_zyx: Sequence[int] = (0, 0, 0)
                  ) -> tuple[sitk.Image, tuple[slice, slice, slice]]:
    """Empty image on the sub-grid of `image` bounding `mask` (z, y, x) grown by `pad_zyx` voxels (clipped to
    the grid), and the array slices of that box."""
    ranges = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    box = tuple(slice(max(0, int(r[0]) - p), min(n, int(r[-1]) + 1 + p))
                for r, p, n in zip(ranges, pad_zyx, mask.shape))
    index = [b.start for b in box][::-1]  # SimpleITK index order is (x, y, z)
    grid = _empty_like([b.stop - b.start for b in box][::-1], image.GetSpacing(),
                       image.TransformIndexToPhysicalPoint(index), image.GetDirection())
    return grid, box  # type: ignore[return-value]


def binned_grid(image: sitk.Image, spacing_mm: float) -> tuple[sitk.Image, tuple[int, int, int]]:
    """Empty image whose voxels are blocks of about `spacing_mm` of `image`'s voxels (whole blocks only), and
    the block factors (z, y, x). Voxel centres sit at the centres of the blocks."""
    factors_xyz = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    size = [max(1, n // f) for n, f in zip(image.GetSize(), factors_xyz)]
    spacing = [s * f for s, f in zip(image.GetSpacing(), factors_xyz)]
    centre = image.TransformContinuousIndexToPhysicalPoint([(f - 1) / 2.0 for f in factors_xyz])
    grid = _empty_like(size, spacing, centre, image.GetDirection())
    return grid, tuple(factors_xyz[::-1])  # type: ignore[return-value]


def binned_mask(mask: np.ndarray, grid: sitk.Image, factors_zyx: Sequence[int]) -> np.ndarray:
    """`mask` (full grid) sampled at the voxel nearest each block centre of a :func:`binned_grid`."""
    shape = tuple(grid.GetSize())[::-1]
    return mask[tuple(slice((f - 1) // 2, (f - 1) // 2 + f * n, f) for f, n in zip(factors_zyx, shape))]


def spect_on_grid(spect: sitk.Image, grid: sitk.Image, transform: sitk.Transform, fwhm_mm: float) -> np.ndarray:
    """The SPECT Gaussian-filtered (FWHM, mm) on its own grid, resampled linearly onto `grid` (float32 array;
    zero outside the SPECT field of view). `transform` maps `grid` coordinates to SPECT coordinates."""
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    filtered = sitk.SmoothingRecursiveGaussian(spect, float(sigma)) if sigma > 0 else spect
    return sitk.GetArrayFromImage(sitk.Resample(filtered, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def fraction_inside_fov(spect: sitk.Image, grid: sitk.Image, transform: sitk.Transform, mask: np.ndarray) -> float:
    """Fraction of the voxels of `mask` (on `grid`) that map inside the SPECT's field of view."""
    ones = sitk.Image(spect.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(spect)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, grid, transform, sitk.sitkNearestNeighbor, 0))
    return float(np.count_nonzero(inside[mask]) / max(1, np.count_nonzero(mask)))
