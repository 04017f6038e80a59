"""Sampling the analytic anatomy onto image grids: CT label volumes, truth masks and SPECT activity.

CT voxels take the value of the region containing the voxel centre (no partial volume), so every voxel of a
region shows exactly that region's curve; SPECT activity is averaged over SPECT_SUPERSAMPLE^3 sub-voxels
(partial volume), then blurred.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from node.phantom import anatomy as A
from node.phantom.geometry import Grid, Rigid

PointFn = Callable[[np.ndarray], np.ndarray]


def sample_volume(grid: Grid, pose: Rigid, fn: PointFn, dtype: type = np.uint8,
                  displacement_mm: np.ndarray | None = None) -> np.ndarray:
    """Evaluate `fn` (body-frame points -> values) at every voxel centre of `grid`.

    `pose` maps the body frame to the grid's patient coordinates; `displacement_mm` moves the patient
    (breathing) by that vector in patient coordinates.
    """
    to_body = pose.inverse()
    out = np.empty(grid.shape, dtype=dtype)
    shift = np.zeros(3) if displacement_mm is None else np.asarray(displacement_mm, float)
    for k, points in grid.iter_slices():
        out[k] = fn(to_body.apply(points - shift))
    return out


def label_volume(grid: Grid, pose: Rigid, displacement_mm: np.ndarray | None = None) -> np.ndarray:
    """CT label of every voxel centre (see anatomy.labels)."""
    return sample_volume(grid, pose, A.labels, np.uint8, displacement_mm)


def fine_grid(grid: Grid, factor: int) -> Grid:
    """The grid subdivided `factor` times per axis (sub-voxel centres)."""
    spacing = tuple(s / factor for s in grid.spacing)
    shift = (factor - 1) / (2.0 * factor)
    origin = grid.origin - shift * (grid.spacing[0] * grid.normal + grid.spacing[1] * grid.col_dir
                                     + grid.spacing[2] * grid.row_dir)
    shape = tuple(n * factor for n in grid.shape)
    return Grid(shape, origin, spacing, grid.row_dir, grid.col_dir)


def occupancy(grid: Grid, pose: Rigid, factor: int, labels_of_interest: tuple[int, ...],
              weight_fn: PointFn | None = None) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Fraction of each coarse voxel occupied by each label, from factor^3 sub-voxels per voxel.

    If `weight_fn` is given, also returns the voxel mean of weight_fn over liver-parenchyma sub-voxels
    (used for the spatially varying GSA function).
    """
    fine = fine_grid(grid, factor)
    to_body = pose.inverse()
    nk, nr, nc = grid.shape
    n_labels = A.N_LABELS
    # Coarse in-plane voxel index of every fine sub-voxel of one coarse slice (factor fine slices).
    rows = np.arange(nr * factor) // factor
    cols = np.arange(nc * factor) // factor
    coarse = np.broadcast_to(rows[:, None] * nc + cols[None, :], (factor, nr * factor, nc * factor)).ravel()
    counts = np.empty((nk, nr * nc, n_labels), np.float32)
    weighted = np.zeros(grid.shape, np.float32) if weight_fn is not None else None
    for k in range(nk):
        body = to_body.apply(np.stack([fine.slice_points(k * factor + s) for s in range(factor)]))
        lab = A.labels(body)
        counts[k] = np.bincount(coarse * n_labels + lab.ravel(), minlength=nr * nc * n_labels
                                ).reshape(nr * nc, n_labels)
        if weighted is not None:
            w = np.where(lab == A.LIVER, weight_fn(body), 0.0).ravel()
            weighted[k] = np.bincount(coarse, weights=w, minlength=nr * nc).reshape(nr, nc)
    norm = 1.0 / factor ** 3
    occ = {lab: counts[:, :, lab].reshape(grid.shape) * norm for lab in labels_of_interest}
    return occ, (weighted * norm if weighted is not None else None)


def blur(volume: np.ndarray, grid: Grid, fwhm_mm: float) -> np.ndarray:
    """Isotropic Gaussian resolution blur (FWHM in mm, physical spacing per axis)."""
    sigma = [fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / s for s in grid.spacing]
    return gaussian_filter(volume.astype(np.float64), sigma=sigma, mode="constant")
