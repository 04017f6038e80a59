"""Small geometry helpers on SimpleITK images: arrays, physical distances, masks carried between grids.

Array order is SimpleITK's (z, y, x) = (slice, row, column); spacings passed around here are in that order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["spacing_zyx", "voxel_ml", "distance_mm", "grow_mm", "as_image", "fraction_on", "image_from_affine",
           "fov_mask"]


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
