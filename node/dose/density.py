"""Tissue mass from CT: a CT-number -> mass-density calibration and the mass of every voxel of a dose grid.

Why a calibration and not a fixed density: the local deposition method divides a voxel's energy by the mass
of the tissue in it, and lung (0.15-0.3 g/mL), fat (0.95) and liver (1.06) differ by up to a factor 7. The CT
measures this per voxel.

Default calibration (:data:`DEFAULT_CALIBRATION`), piecewise linear in HU, constant beyond the end points:

    HU     -1000    0      100    1600
    g/mL   0.0012   1.000  1.100  1.920

i.e. rho = 1 + HU/1000 from air through water to soft tissue (the electron-density line that soft tissues of
water-like composition follow: muscle ~1.05 g/mL at ~50 HU, liver 1.06 at ~60 HU, inflated lung ~0.15-0.3 at
-850 to -700 HU), then a flatter bone line up to cortical bone (1.92 g/mL, ICRU Report 46). It is generic:
a site replaces it with its own scanner calibration (e.g. measured with an electron-density phantom) through
:class:`DensityCalibration`.

Grid: dose is computed on the grid of the emission image (SPECT or PET), where the activity was measured
(interpolating it onto the finer CT would add no information and would put a lung-base voxel's blurred liver
activity into 0.15 g/mL of lung: dose spikes at every interface). Each dose voxel's mass is the CT density
AVERAGED over the voxel (:func:`mass_on_grid`), times the voxel volume: a voxel half lung and half liver is
neither 0.15 nor 1.06 g/mL, and the total mass of a region is kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import SimpleITK as sitk

from node.imaging.grids import bounding_grid

__all__ = ["DensityCalibration", "DEFAULT_CALIBRATION", "MassMap", "mass_on_grid"]

#: Each dose voxel is sampled at f^3 sub-voxel centres (f = 2 x dose spacing / CT spacing, within these bounds)
#: when its mass is averaged from the CT.
SUPERSAMPLE_MIN = 2
SUPERSAMPLE_MAX = 5
#: Sub-voxels resampled at once (bounds the memory: float32, ~32 MB).
_MAX_SUBSAMPLES = 8_000_000


@dataclass(frozen=True)
class DensityCalibration:
    """Piecewise-linear CT number (HU) -> mass density (g/mL); constant beyond the first and last point."""

    hu: tuple[float, ...]
    density_g_per_ml: tuple[float, ...]
    name: str = "site calibration"

    def __post_init__(self) -> None:
        hu, rho = tuple(float(v) for v in self.hu), tuple(float(v) for v in self.density_g_per_ml)
        if len(hu) < 2 or len(hu) != len(rho):
            raise ValueError("density calibration: 'hu' and 'density_g_per_ml' need the same number (>= 2) of "
                             f"points, got {len(hu)} and {len(rho)}")
        if not all(math.isfinite(v) for v in hu + rho):
            raise ValueError("density calibration: every point must be a finite number")
        if any(b <= a for a, b in pairwise(hu)):
            raise ValueError(f"density calibration: 'hu' must increase strictly, got {list(hu)}")
        if any(v <= 0 for v in rho):
            raise ValueError(f"density calibration: 'density_g_per_ml' must be positive, got {list(rho)}")
        if any(b < a for a, b in pairwise(rho)):
            raise ValueError(f"density calibration: 'density_g_per_ml' must not decrease, got {list(rho)}")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "density_g_per_ml", rho)

    def density(self, hu: np.ndarray) -> np.ndarray:
        """Mass density (g/mL, float32) of CT numbers `hu`."""
        return np.interp(np.asarray(hu, dtype=np.float32), self.hu, self.density_g_per_ml).astype(np.float32)

    def describe(self) -> str:
        points = ", ".join(f"{h:g} HU -> {r:g} g/mL" for h, r in zip(self.hu, self.density_g_per_ml, strict=True))
        return f"{self.name}: piecewise linear ({points}), constant beyond the end points"


DEFAULT_CALIBRATION = DensityCalibration(
    hu=(-1000.0, 0.0, 100.0, 1600.0), density_g_per_ml=(0.0012, 1.0, 1.1, 1.92),
    name="generic (air-water-soft tissue line rho = 1 + HU/1000, bone line to 1.92 g/mL at 1600 HU)")


@dataclass(frozen=True)
class MassMap:
    """Tissue mass of every voxel of a dose grid, from the CT.

    `density_g_per_ml` is the mean density over each voxel (NaN where no CT covers the voxel at all) and
    `mass_kg` that density times the voxel volume (NaN there too).
    """

    density_g_per_ml: np.ndarray  # (z, y, x) float64
    mass_kg: np.ndarray  # (z, y, x) float64
    voxel_ml: float
    calibration: DensityCalibration

    @property
    def outside_ct(self) -> np.ndarray:
        return ~np.isfinite(self.mass_kg)


def _fine_grid(grid: sitk.Image, factor: int, z0: int, nz: int) -> sitk.Image:
    """Empty image splitting slices z0 .. z0 + nz - 1 of `grid` into factor^3 sub-voxels each (same corners)."""
    direction = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(grid.GetSpacing(), dtype=float)
    shift = spacing * (factor - 1) / (2.0 * factor)
    corner = np.asarray(grid.TransformIndexToPhysicalPoint((0, 0, int(z0))), dtype=float) - direction @ shift
    size = grid.GetSize()
    fine = sitk.Image([int(size[0]) * factor, int(size[1]) * factor, int(nz) * factor], sitk.sitkUInt8)
    fine.SetSpacing(tuple(float(s) for s in spacing / factor))
    fine.SetOrigin(tuple(float(v) for v in corner))
    fine.SetDirection(grid.GetDirection())
    return fine


def mass_on_grid(ct: sitk.Image, grid: sitk.Image, calibration: DensityCalibration = DEFAULT_CALIBRATION,
                 transform: sitk.Transform | None = None, where: np.ndarray | None = None) -> MassMap:
    """Mass (kg) of the tissue in every voxel of `grid` from the CT `ct` (HU) through `calibration`.

    The CT is taken as what it is, a set of boxes of uniform density: each grid voxel's density is the mean
    over SUPERSAMPLE_MIN..SUPERSAMPLE_MAX^3 sub-voxel centres of the CT box that contains each (nearest
    neighbour; fine CT pixels are first block-averaged, which keeps their mass). A grid voxel that IS a CT
    voxel thus gets exactly its density, and a larger one the volume-weighted mix of the boxes it overlaps.
    `transform` maps `grid` patient coordinates to `ct` patient coordinates (ITK convention; identity when the
    two share a frame of reference, as a SPECT/CT or PET/CT does). Sub-voxels outside the CT do not count;
    a voxel with no sub-voxel inside the CT gets NaN (its mass is unknown, and so is its dose).

    `where` (bool (z, y, x) on `grid`): only the bounding box of these voxels is computed, the rest is NaN; the
    voxels holding activity are all a dose needs (the supersampled average is most of a dose's time).
    """
    if where is not None:
        where = np.asarray(where, dtype=bool)
        size = tuple(int(n) for n in grid.GetSize())[::-1]
        if where.shape != size:
            raise ValueError(f"'where' has shape {where.shape}, the grid {size}")
        voxel = float(np.prod(grid.GetSpacing())) / 1000.0
        density_full = np.full(size, math.nan)
        if where.any():
            sub, box = bounding_grid(grid, where)
            part = mass_on_grid(ct, sub, calibration, transform)
            density_full[box] = part.density_g_per_ml
        return MassMap(density_g_per_ml=density_full, mass_kg=density_full * voxel / 1000.0, voxel_ml=voxel,
                       calibration=calibration)
    density = sitk.GetImageFromArray(calibration.density(sitk.GetArrayViewFromImage(ct)))
    density.CopyInformation(ct)
    grid_spacing = np.asarray(grid.GetSpacing(), dtype=float)
    factor = int(min(SUPERSAMPLE_MAX, max(SUPERSAMPLE_MIN, math.ceil(2.0 * grid_spacing.max()
                                                                     / min(ct.GetSpacing())))))
    # Block-average CT pixels much finer than the sub-voxels (mass-preserving), so nearest sampling sees them all.
    sub = grid_spacing.min() / factor
    # at most the CT's size per axis (BinShrink refuses more: "InputImage is too small"); a CT thinner than one
    # block is averaged whole along that axis, which still keeps its mass
    shrink = [min(max(1, int(sub // s)), n) for s, n in zip(ct.GetSpacing(), ct.GetSize(), strict=True)]
    if max(shrink) > 1:
        density = sitk.BinShrink(density, shrink)
    t = transform if transform is not None else sitk.Transform()
    nx, ny, nz = grid.GetSize()
    chunk = max(1, _MAX_SUBSAMPLES // (nx * ny * factor ** 3))
    mean = np.empty((nz, ny, nx), dtype=np.float64)
    for z0 in range(0, nz, chunk):
        n = min(chunk, nz - z0)
        sampled = sitk.Resample(density, _fine_grid(grid, factor, z0, n), t, sitk.sitkNearestNeighbor, math.nan,
                                sitk.sitkFloat32)
        blocks = sitk.GetArrayViewFromImage(sampled).reshape(n, factor, ny, factor, nx, factor)
        inside = np.isfinite(blocks)
        count = inside.sum(axis=(1, 3, 5))
        part = np.where(inside, blocks, 0.0).sum(axis=(1, 3, 5), dtype=np.float64) / np.maximum(count, 1)
        part[count == 0] = math.nan
        mean[z0:z0 + n] = part
    voxel_ml = float(np.prod(grid_spacing)) / 1000.0
    return MassMap(density_g_per_ml=mean, mass_kg=mean * voxel_ml / 1000.0, voxel_ml=voxel_ml,
                   calibration=calibration)
