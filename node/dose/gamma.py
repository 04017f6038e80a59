"""3D gamma index (Low et al., Med Phys 1998) for tests and QA: dose difference and distance to agreement.

gamma(r) = min over r' of sqrt(|r' - r|^2 / DTA^2 + (D_eval(r') - D_ref(r))^2 / dD^2), evaluated at the voxel
centres r of the reference distribution; the evaluated distribution is interpolated trilinearly (so the search
is not limited to its voxel centres, which matters when voxels are larger than the DTA). Global dose criterion:
dD = percent x the normalisation dose (default: the maximum of the reference). A point passes when gamma <= 1.

Search: spherical shells around each point, radius step DTA / SHELL_STEPS, points on each shell about one step
apart, out to `max_gamma` x DTA; a point stops once the next shell's distance alone exceeds its best gamma.
Points with no agreement within the search get `max_gamma` (a lower bound; they fail either way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

__all__ = ["GammaResult", "gamma_index", "SHELL_STEPS"]

SHELL_STEPS = 10
#: Interpolations per batch (bounds the memory of one shell).
_BATCH = 2_000_000


@dataclass(frozen=True)
class GammaResult:
    """Gamma of every evaluated reference voxel (NaN elsewhere) and the pass rate."""

    gamma: np.ndarray  # (z, y, x) on the reference grid
    pass_rate: float  # share of evaluated points with gamma <= 1
    evaluated_points: int
    dose_criterion_gy: float
    dta_mm: float
    description: str


def _fibonacci_sphere(n: int) -> np.ndarray:
    if n == 1:
        return np.array([[0.0, 0.0, 1.0]])
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _physical_to_index(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(M, origin): continuous (x, y, z) index = M @ (p - origin)."""
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(image.GetSpacing(), dtype=float)
    return np.linalg.inv(d), np.asarray(image.GetOrigin(), dtype=float)


def gamma_index(reference: sitk.Image, evaluated: sitk.Image, *, dose_percent: float = 3.0, dta_mm: float = 3.0,
                normalization_gy: float | None = None, mask: np.ndarray | None = None,
                cutoff_percent: float = 0.0, max_gamma: float = 2.0) -> GammaResult:
    """Global gamma of `evaluated` against `reference` (both dose images in Gy, one frame of reference).

    `mask` (bool, reference grid) selects the points; `cutoff_percent` drops points below that share of the
    normalisation dose.
    """
    ref = sitk.GetArrayFromImage(reference).astype(np.float64)
    ev = sitk.GetArrayFromImage(evaluated).astype(np.float64)
    norm = float(ref.max()) if normalization_gy is None else float(normalization_gy)
    if norm <= 0:
        raise ValueError("gamma: the normalisation dose must be positive")
    dd = dose_percent / 100.0 * norm
    select = np.ones(ref.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    select &= ref >= cutoff_percent / 100.0 * norm
    kji = np.argwhere(select)
    d_ref = ref[select]
    # physical points of the reference voxels, then their continuous index in the evaluated image (x, y, z)
    ref_dir = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(reference.GetSpacing())
    points = kji[:, ::-1].astype(float) @ ref_dir.T + np.asarray(reference.GetOrigin(), dtype=float)
    m, origin = _physical_to_index(evaluated)
    base = (points - origin) @ m.T  # (n, 3) as (x, y, z) index
    best = np.full(len(d_ref), max_gamma * max_gamma)
    active = np.arange(len(d_ref))
    step = dta_mm / SHELL_STEPS
    n_shells = int(math.ceil(max_gamma * SHELL_STEPS))
    for s in range(n_shells + 1):
        radius = s * step
        if active.size == 0:
            break
        dirs = _fibonacci_sphere(max(1, int(math.ceil(4.0 * math.pi * s * s))))
        offsets = (radius * dirs) @ m.T  # index-space offsets of this shell
        dist2 = (radius / dta_mm) ** 2
        chunk = max(1, _BATCH // len(offsets))
        for lo in range(0, active.size, chunk):
            idx = active[lo:lo + chunk]
            coords = base[idx][:, None, :] + offsets[None, :, :]  # (a, o, 3) x, y, z
            flat = coords.reshape(-1, 3)[:, ::-1].T  # (3, a*o) as z, y, x for map_coordinates
            values = map_coordinates(ev, flat, order=1, mode="constant", cval=np.nan).reshape(len(idx), -1)
            diff2 = np.nanmin(np.where(np.isnan(values), np.inf, ((values - d_ref[idx][:, None]) / dd) ** 2), axis=1)
            best[idx] = np.minimum(best[idx], dist2 + diff2)
        next_dist2 = ((s + 1) * step / dta_mm) ** 2
        active = active[best[active] > next_dist2]
    gamma = np.full(ref.shape, np.nan)
    g = np.sqrt(best)
    gamma[select] = g
    rate = float((g <= 1.0).mean()) if g.size else float("nan")
    text = (f"3D gamma {dose_percent:g} % (global, {dd:.3g} Gy of {norm:.3g} Gy) / {dta_mm:g} mm, trilinear "
            f"interpolation of the evaluated dose, {g.size} points, pass rate {rate:.1%}")
    return GammaResult(gamma=gamma, pass_rate=rate, evaluated_points=int(g.size), dose_criterion_gy=dd,
                       dta_mm=dta_mm, description=text)
