"""Grids of SimpleITK images: sub-grids, physical distances, masks and images carried between grids.

Array order is SimpleITK's (z, y, x) = (slice, row, column); spacings passed around here are in that order.

Sub-grids: a full 512x512x120 planning grid holds 31 M voxels; a SPECT is only needed around the liver (targets)
and coarsely everywhere (display, sanity checks), so it is resampled onto smaller grids that share the planning
CT's geometry: a bounding box (same voxels, a sub-range of indices) or a binned grid (coarser voxels).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["bounding_grid", "binned_grid", "binned_mask", "spect_on_grid", "fraction_inside_fov", "spacing_zyx",
           "voxel_ml", "distance_mm", "grow_mm", "as_image", "fraction_on", "image_from_affine", "fov_mask"]


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
                for r, p, n in zip(ranges, pad_zyx, mask.shape, strict=True))
    index = [b.start for b in box][::-1]  # SimpleITK index order is (x, y, z)
    grid = _empty_like([b.stop - b.start for b in box][::-1], image.GetSpacing(),
                       image.TransformIndexToPhysicalPoint(index), image.GetDirection())
    return grid, box  # type: ignore[return-value]


def binned_grid(image: sitk.Image, spacing_mm: float) -> tuple[sitk.Image, tuple[int, int, int]]:
    """Empty image whose voxels are blocks of about `spacing_mm` of `image`'s voxels (whole blocks only), and
    the block factors (z, y, x). Voxel centres sit at the centres of the blocks."""
    factors_xyz = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    size = [max(1, n // f) for n, f in zip(image.GetSize(), factors_xyz, strict=True)]
    spacing = [s * f for s, f in zip(image.GetSpacing(), factors_xyz, strict=True)]
    centre = image.TransformContinuousIndexToPhysicalPoint([(f - 1) / 2.0 for f in factors_xyz])
    grid = _empty_like(size, spacing, centre, image.GetDirection())
    return grid, tuple(factors_xyz[::-1])  # type: ignore[return-value]


def binned_mask(mask: np.ndarray, grid: sitk.Image, factors_zyx: Sequence[int]) -> np.ndarray:
    """`mask` (full grid) sampled at the voxel nearest each block centre of a :func:`binned_grid`."""
    shape = tuple(grid.GetSize())[::-1]
    return mask[tuple(slice((f - 1) // 2, (f - 1) // 2 + f * n, f) for f, n in zip(factors_zyx, shape, strict=True))]


def spect_on_grid(spect: sitk.Image, grid: sitk.Image, transform: sitk.Transform, fwhm_mm: float) -> np.ndarray:
    """The SPECT Gaussian-filtered (FWHM, mm) on its own grid, resampled linearly onto `grid` (float32 array;
    zero outside the SPECT field of view). `transform` maps `grid` coordinates to SPECT coordinates."""
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    filtered = sitk.SmoothingRecursiveGaussian(spect, float(sigma)) if sigma > 0 else spect
    return sitk.GetArrayFromImage(sitk.Resample(filtered, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def fraction_inside_fov(spect: sitk.Image, grid: sitk.Image, transform: sitk.Transform, mask: np.ndarray) -> float:
    """Fraction of the voxels of `mask` (on `grid`) that map inside the SPECT's field of view."""
    inside = fov_mask(spect, grid, transform)
    return float(np.count_nonzero(inside[mask]) / max(1, int(np.count_nonzero(mask))))


def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing (mm) in array order."""
    sx, sy, sz = image.GetSpacing()
    return (float(sz), float(sy), float(sx))


def voxel_ml(image: sitk.Image) -> float:
    """Volume of one voxel in mL."""
    return float(np.prod(image.GetSpacing())) / 1000.0


def distance_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm, physical spacing) of every voxel to the nearest voxel of `mask` (0 inside)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=spacing).astype(np.float32)


def grow_mm(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """`mask` grown by `margin_mm` (voxels whose centre lies within that physical distance of it)."""
    return distance_mm(mask, spacing) <= margin_mm


def as_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """`array` (z, y, x) as an image on the grid of `reference` (uint8 for bool arrays)."""
    data = array.astype(np.uint8) if array.dtype == bool else array
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    image.CopyInformation(reference)
    return image


def fraction_on(mask: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
                supersample: int = 2) -> np.ndarray:
    """Fraction (0..1, float32) of each `reference` voxel covered by the binary image `mask`.

    `transform` maps reference patient coordinates to mask coordinates (ITK convention; identity when None).
    Each reference voxel is split into supersample^3 sub-voxels sampled by nearest neighbour and averaged, so
    a contour drawn on a fine CT keeps its partial-volume share on the coarse SPECT grid.
    """
    f = int(supersample)
    size = [int(n) * f for n in reference.GetSize()]
    spacing = [s / f for s in reference.GetSpacing()]
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    shift = np.asarray(reference.GetSpacing(), dtype=float) * (f - 1) / (2.0 * f)
    origin = np.asarray(reference.GetOrigin(), dtype=float) - direction @ shift
    fine = sitk.Image(size, sitk.sitkUInt8)
    fine.SetSpacing(spacing)
    fine.SetOrigin(tuple(float(v) for v in origin))
    fine.SetDirection(reference.GetDirection())
    moved = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), fine,
                          transform if transform is not None else sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a = sitk.GetArrayViewFromImage(moved).astype(np.float32)
    nz, ny, nx = (n // f for n in a.shape)
    return a.reshape(nz, f, ny, f, nx, f).mean(axis=(1, 3, 5))


def fov_mask(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None) -> np.ndarray:
    """Bool (z, y, x) on `reference`: voxels that lie inside the field of view of `image`."""
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    moved = sitk.Resample(ones, reference, transform if transform is not None else sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(moved) > 0


def image_from_affine(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of `array` whose 4x4 `affine` maps (index0, index1, index2, 1) to patient mm.

    This is highdicom's Volume convention; SimpleITK's x axis is the last array axis.
    """
    a = np.asarray(affine, dtype=float)
    columns = a[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length axis")
    unit = columns / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    image.SetOrigin(tuple(float(v) for v in a[:3, 3]))
    image.SetDirection(tuple(float(v) for v in unit[:, ::-1].ravel()))
    return image
