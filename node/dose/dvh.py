"""Dose-volume histograms and the dose figures of regions.

DVH convention (stated so that an independent tool can be compared with it; plastimatch's `dvh` follows it
for binary structures):

* A region is a mask on some grid, the *structure grid* (the CT a structure set was drawn on, or the dose grid
  itself). A binary mask counts each voxel whose centre lies inside the structure once, with its volume.
  A fractional mask (0..1, a partial-volume map on a coarse grid) counts each voxel by its fraction; this is
  how partial voxels are counted. A weighted DVH (e.g. the functional DVH of the liver, weighted by GSA counts)
  counts each voxel by its weight instead of its volume.
* The dose of a structure voxel is the dose grid interpolated trilinearly at the voxel centre (exactly the
  dose-grid value when the structure grid is the dose grid). Voxels beyond the outermost dose-voxel centres
  (where no interpolation is defined) get 0 Gy; the share of the region there is recorded.
* The DVH is cumulative: V(d) = share (percent) of the region's volume (or weight) receiving a dose >= d.
  Dx = the highest dose received by at least x % of the region: sort the voxels by dose, highest first, and
  take the dose of the voxel at which the running volume first reaches x % (ties count together). So D50 is
  a median, D90 a near-minimum. Dmean is the volume-weighted mean of the voxel doses (the energy per mass for
  a region of uniform density, which the liver and tumours are).
* No binning: every voxel dose is kept (plastimatch bins; compare with a bin width far below the tolerance).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

from node.dose.errors import DoseInputError
from node.dose.ldm import Y90_GY_KG_PER_GBQ

__all__ = ["Dvh", "RegionDose", "TumourDose", "NormalLiverDose", "LungDose", "Y90Structures", "Y90DoseSummary",
           "TUMOUR_V_GY", "NORMAL_LIVER_V_GY", "sample_dose", "dvh_from_samples", "region_dvh", "region_dose",
           "summarize_y90", "normal_liver_mask", "WHOLE_LIVER", "NON_TUMOURAL_LIVER", "LUNGS", "V_GY"]

#: V(d) thresholds reported for tumours and for the non-tumoural liver (EANM 2021/2022 reporting).
TUMOUR_V_GY = (100.0, 120.0)
NORMAL_LIVER_V_GY = (30.0, 40.0)
#: Kinds of Y-90 dose regions (a tumour's kind is "tumour"), as every dose record and report names them.
WHOLE_LIVER, NON_TUMOURAL_LIVER, LUNGS = "whole liver", "non-tumoural liver", "lungs"
#: Every region kind's V(d) thresholds (Gy) in the records: tumours V100/V120, non-tumoural liver V30/V40.
V_GY = {"tumour": TUMOUR_V_GY, NON_TUMOURAL_LIVER: NORMAL_LIVER_V_GY, WHOLE_LIVER: NORMAL_LIVER_V_GY, LUNGS: ()}


@dataclass(frozen=True)
class Dvh:
    """A cumulative DVH kept as every voxel's dose (sorted, highest first) and weight."""

    name: str
    doses_gy: np.ndarray  # descending
    weights: np.ndarray  # same order; mL (volume DVH) or counts (weighted DVH)
    unit: str  # "mL" or what the weights are
    outside_fraction: float = 0.0  # share of the weight outside the dose grid (given 0 Gy)
    _cumulative: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.doses_gy.shape != self.weights.shape or self.doses_gy.ndim != 1:
            raise ValueError("DVH doses and weights must be 1-D arrays of one length")
        object.__setattr__(self, "_cumulative", np.cumsum(self.weights, dtype=np.float64))

    @property
    def total(self) -> float:
        """Volume (mL) or total weight of the region."""
        return float(self._cumulative[-1]) if self._cumulative.size else 0.0

    @property
    def empty(self) -> bool:
        return self.total <= 0

    def mean_gy(self) -> float:
        return float((self.doses_gy * self.weights).sum() / self.total) if not self.empty else float("nan")

    def min_gy(self) -> float:
        return float(self.doses_gy[self.weights > 0].min()) if not self.empty else float("nan")

    def max_gy(self) -> float:
        return float(self.doses_gy[self.weights > 0].max()) if not self.empty else float("nan")

    def d(self, percent: float) -> float:
        """Dx: the highest dose that at least `percent` % of the region receives."""
        if self.empty:
            return float("nan")
        if not 0.0 < percent <= 100.0:
            raise ValueError(f"Dx needs 0 < x <= 100, got {percent}")
        need = self.total * percent / 100.0 * (1.0 - 1e-12)
        i = int(np.searchsorted(self._cumulative, need, side="left"))
        return float(self.doses_gy[min(i, self.doses_gy.size - 1)])

    def v(self, dose_gy: float) -> float:
        """V(d) in percent: share of the region receiving at least `dose_gy`."""
        if self.empty:
            return float("nan")
        n = int(np.searchsorted(-self.doses_gy, -float(dose_gy), side="right"))  # doses >= dose_gy
        return 100.0 * (float(self._cumulative[n - 1]) if n > 0 else 0.0) / self.total

    def curve(self, step_gy: float) -> tuple[np.ndarray, np.ndarray]:
        """(dose points 0, step, ..., >= max, V(d) in percent) for plotting or an RT DVH."""
        top = self.max_gy() if not self.empty else 0.0
        points = np.arange(0.0, top + step_gy, step_gy)
        n = np.searchsorted(-self.doses_gy, -points, side="right")
        cum = np.concatenate([[0.0], self._cumulative])[n]
        return points, 100.0 * cum / max(self.total, 1e-300)


def dvh_from_samples(name: str, doses_gy: np.ndarray, weights: np.ndarray, unit: str = "mL",
                     outside_fraction: float = 0.0) -> Dvh:
    """A DVH from voxel doses and weights (any order; zero weights dropped)."""
    doses = np.asarray(doses_gy, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    keep = w > 0
    doses, w = doses[keep], w[keep]
    order = np.argsort(-doses, kind="stable")
    return Dvh(name=name, doses_gy=doses[order], weights=w[order], unit=unit, outside_fraction=outside_fraction)


def _box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    nz = np.nonzero(mask)
    return tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)  # type: ignore[return-value]


def _affine(transform: sitk.Transform | None) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) with p' = R p + t for an identity or matrix-offset (rigid, affine) SimpleITK transform."""
    if transform is None or transform.GetTransformEnum() == sitk.sitkIdentity:
        return np.eye(3), np.zeros(3)
    try:
        tr = transform.Downcast()
        r = np.asarray(tr.GetMatrix(), dtype=float).reshape(3, 3)
        c = np.asarray(tr.GetCenter(), dtype=float)
        t = np.asarray(tr.GetTranslation(), dtype=float)
    except (AttributeError, RuntimeError):
        raise ValueError(f"only rigid or affine transforms are supported here, not {transform.GetName()}") from None
    return r, c + t - r @ c


def sample_dose(dose: sitk.Image, grid: sitk.Image, box: tuple[slice, slice, slice] | None = None,
                transform: sitk.Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dose (Gy) interpolated trilinearly at the voxel centres of `grid` (within the array `box`), and the mask
    of the voxels inside the hull of the dose grid's voxel centres (dose 0 outside it). `transform` maps `grid`
    patient coordinates to the dose's (None: one frame of reference)."""
    size = grid.GetSize()
    if box is None:
        box = (slice(0, size[2]), slice(0, size[1]), slice(0, size[0]))
    r, t = _affine(transform)
    g_axes = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(grid.GetSpacing(), dtype=float)
    d_axes = np.asarray(dose.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(dose.GetSpacing(), dtype=float)
    to_index = np.linalg.inv(d_axes) @ r @ g_axes  # grid (x, y, z) index -> dose (x, y, z) index
    offset = np.linalg.inv(d_axes) @ (r @ np.asarray(grid.GetOrigin(), dtype=float) + t
                                      - np.asarray(dose.GetOrigin(), dtype=float))
    upper = np.asarray(dose.GetSize(), dtype=float) - 1.0
    array = sitk.GetArrayViewFromImage(dose)
    ys, xs = np.meshgrid(np.arange(box[1].start, box[1].stop), np.arange(box[2].start, box[2].stop), indexing="ij")
    shape = tuple(s.stop - s.start for s in box)
    values = np.zeros(shape, dtype=np.float64)
    inside = np.zeros(shape, dtype=bool)
    for n, z in enumerate(range(box[0].start, box[0].stop)):
        xyz = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)], axis=1).astype(float)
        idx = xyz @ to_index.T + offset
        ok = np.all((idx >= -1e-6) & (idx <= upper + 1e-6), axis=1)
        v = map_coordinates(array, np.clip(idx[ok], 0.0, upper)[:, ::-1].T, order=1, mode="nearest")
        plane = np.zeros(xs.size)
        plane[ok] = v
        values[n] = plane.reshape(xs.shape)
        inside[n] = ok.reshape(xs.shape)
    return values, inside


def region_dvh(name: str, dose: sitk.Image, mask: np.ndarray, grid: sitk.Image,
               weights: np.ndarray | None = None, transform: sitk.Transform | None = None,
               unit: str = "mL") -> Dvh:
    """DVH of the region `mask` (bool or fractions, (z, y, x) on `grid`); `weights` (same shape) replace the
    voxel volumes for a weighted DVH."""
    mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(grid.GetSize())[::-1]:
        raise DoseInputError(f"region {name!r}: mask shape {mask.shape} does not match its grid "
                             f"{tuple(grid.GetSize())[::-1]}")
    frac = np.clip(mask.astype(np.float64), 0.0, 1.0)
    if not (frac > 0).any():
        return dvh_from_samples(name, np.zeros(0), np.zeros(0), unit)
    box = _box(frac > 0)
    values, inside = sample_dose(dose, grid, box, transform)
    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    w = frac[box] * (voxel_ml if weights is None else np.asarray(weights, dtype=np.float64)[box])
    total = float(w.sum())
    outside = float(w[~inside].sum()) / total if total > 0 else 0.0
    sel = w > 0
    return dvh_from_samples(name, values[sel], w[sel], unit, outside)


@dataclass(frozen=True)
class RegionDose:
    """Dose figures of one region (the module docstring gives the convention)."""

    name: str
    volume_ml: float
    mean_gy: float
    min_gy: float
    max_gy: float
    d50_gy: float
    d70_gy: float
    d90_gy: float
    outside_dose_grid_fraction: float
    dvh: Dvh

    def v_percent(self, dose_gy: float) -> float:
        return self.dvh.v(dose_gy)


def region_dose(dvh: Dvh) -> RegionDose:
    return RegionDose(name=dvh.name, volume_ml=dvh.total, mean_gy=dvh.mean_gy(), min_gy=dvh.min_gy(),
                      max_gy=dvh.max_gy(), d50_gy=dvh.d(50), d70_gy=dvh.d(70), d90_gy=dvh.d(90),
                      outside_dose_grid_fraction=dvh.outside_fraction, dvh=dvh)


@dataclass(frozen=True)
class TumourDose:
    region: RegionDose
    v100_percent: float
    v120_percent: float


@dataclass(frozen=True)
class NormalLiverDose:
    region: RegionDose
    v30_percent: float
    v40_percent: float


@dataclass(frozen=True)
class LungDose:
    """Lung dose two ways: the voxel map over the lung VOI (when the lungs are in the image) and the EANM
    mean 49.67 x A x LSF / m_lung with the CT lung mass (the figure the lung limits apply to)."""

    region: RegionDose | None
    shunted_gbq: float
    mass_kg: float | None
    mean_from_shunt_gy: float | None

    @property
    def mean_gy(self) -> float | None:
        """The lung mean dose to report: from the shunt when the lung mass is known, else the voxel mean."""
        if self.mean_from_shunt_gy is not None:
            return self.mean_from_shunt_gy
        return None if self.region is None else self.region.mean_gy


@dataclass(frozen=True)
class Y90Structures:
    """Regions for a Y-90 dose summary: masks (z, y, x; bool or fractions) on one structure grid."""

    grid: sitk.Image
    liver: np.ndarray
    tumours: Mapping[str, np.ndarray]
    lungs: np.ndarray | None = None
    transform: sitk.Transform | None = None  # structure-grid patient coordinates -> dose patient coordinates


@dataclass(frozen=True)
class Y90DoseSummary:
    tumours: tuple[TumourDose, ...]
    normal_liver: NormalLiverDose
    whole_liver: RegionDose
    lungs: LungDose


def normal_liver_mask(liver: np.ndarray, tumours: Mapping[str, np.ndarray]) -> np.ndarray:
    """Non-tumoural liver: liver minus every tumour (booleans), or clip(liver - sum(tumours), 0, 1) (fractions)."""
    if liver.dtype == bool and all(t.dtype == bool for t in tumours.values()):
        out = liver.copy()
        for t in tumours.values():
            out &= ~t
        return out
    total = sum((np.asarray(t, dtype=np.float64) for t in tumours.values()), np.zeros(liver.shape))
    return np.clip(np.asarray(liver, dtype=np.float64) - total, 0.0, 1.0)


def summarize_y90(dose: sitk.Image, structures: Y90Structures, shunted_gbq: float = 0.0,
                  lung_mass_kg: float | None = None) -> Y90DoseSummary:
    """Tumour (Dmean, D50, D70, D90, V100, V120), non-tumoural liver (Dmean, V30, V40), whole liver and lung
    figures of a Y-90 dose map. `shunted_gbq` (A x LSF) and `lung_mass_kg` (from CT) give the EANM lung mean."""
    s = structures

    def dvh(name: str, mask: np.ndarray) -> Dvh:
        return region_dvh(name, dose, mask, s.grid, transform=s.transform)

    tumours = []
    for name, mask in s.tumours.items():
        r = region_dose(dvh(name, mask))
        tumours.append(TumourDose(r, r.v_percent(TUMOUR_V_GY[0]), r.v_percent(TUMOUR_V_GY[1])))
    normal = region_dose(dvh("non-tumoural liver", normal_liver_mask(np.asarray(s.liver), s.tumours)))
    if normal.dvh.empty:
        raise DoseInputError("no non-tumoural liver left once the tumours are removed from the liver")
    whole = region_dose(dvh("whole liver", np.asarray(s.liver)))
    lung_region = None
    if s.lungs is not None and np.asarray(s.lungs).any():
        lung_region = region_dose(dvh("lungs", np.asarray(s.lungs)))
    from_shunt = None
    if lung_mass_kg is not None and lung_mass_kg > 0:
        from_shunt = Y90_GY_KG_PER_GBQ * shunted_gbq / lung_mass_kg
    return Y90DoseSummary(
        tumours=tuple(tumours),
        normal_liver=NormalLiverDose(normal, normal.v_percent(NORMAL_LIVER_V_GY[0]),
                                     normal.v_percent(NORMAL_LIVER_V_GY[1])),
        whole_liver=whole,
        lungs=LungDose(lung_region, shunted_gbq, lung_mass_kg, from_shunt))
