"""Tumour-to-normal-liver uptake ratio (science.md section 3): T/N = (C_T / m_T) / (C_N / m_N).

With equal tissue density the masses cancel into volumes, so T/N is counts per mL in the tumour over counts
per mL in the normal liver.

Partial-volume handling. A 2-3 cm tumour in a SPECT of ~13 mm resolution shows only 50-70 % of its true
concentration inside its own contour (spill-out), so the plain ratio of mean counts underestimates T/N by a
third or more. The counts are therefore modelled as a geometric transfer matrix (Rousset et al., J Nucl Med
1998;39:904) restricted to spill-capture cells:

* cell V_i = tumour i grown by SPILL_MARGIN_MM (one resolution FWHM, holding >= 95 % of its spilled counts);
  a voxel within reach of several tumours belongs to the nearest;
* model: counts = sum_j c_j (G * t_j) + n (G * N), with t_j the tumour fractions, N the normal-liver fraction
  (liver minus tumours), G the Gaussian PSF of SPECT_FWHM_MM and n the normal-liver level, measured as the
  mean of the normal-liver core (>= the margin from tumours and from the liver surface: no spill reaches it);
* per cell: sum_{V_i} counts = sum_j c_j A_ij + n B_i with A_ij = sum_{V_i} G * t_j, B_i = sum_{V_i} G * N,
  solved for the tumour concentrations c; T/N_i = c_i / n; overall T/N = sum c_i V_i / (n sum V_i).

Because each cell holds nearly all of its tumour's counts, the result depends little on the assumed PSF
(measured on the phantom: +-2 mm FWHM error moves T/N by < 5 %), unlike a full-image PVC. Activity outside the
liver (stomach, lung) inside a cell is not modelled. The uncorrected ratio of means is reported too, for
comparison with other software.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from node.imaging.grids import distance_mm, spacing_zyx, voxel_ml
from node.maa.errors import MaaInputError
from node.maa.regions import SPECT_FWHM_MM, normal_liver_core

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

logger = logging.getLogger(__name__)

__all__ = ["SPILL_MARGIN_MM", "MIN_SHELL_IN_LIVER", "TumourUptake", "Uptake", "measure_uptake"]

#: Margin (mm) around each tumour whose counts are added back to it: one SPECT resolution FWHM.
SPILL_MARGIN_MM = SPECT_FWHM_MM
#: Warn when less of a tumour's margin shell than this lies inside the liver (extra-hepatic uptake not modelled).
MIN_SHELL_IN_LIVER = 0.5
METHOD = (f"T/N = (tumour counts/mL)/(normal-liver counts/mL), partial-volume corrected: geometric transfer "
          f"matrix over tumour + {SPILL_MARGIN_MM:g} mm cells, Gaussian PSF FWHM {SPECT_FWHM_MM:g} mm; normal level "
          f"= mean of the liver >= {SPILL_MARGIN_MM:g} mm from tumours and liver surface")


@dataclass(frozen=True)
class TumourUptake:
    """Uptake figures of one tumour."""

    name: str
    volume_ml: float
    tn_ratio: float
    tn_ratio_uncorrected: float  # ratio of mean counts inside the contour, no spill-out compensation
    shell_in_liver_fraction: float
    centre_mm: tuple[float, float, float]  # SPECT/CT patient coordinates



@dataclass(frozen=True)
class Uptake:
    """Per-tumour and overall T/N with the volumes the partition model needs."""

    tumours: list[TumourUptake]
    overall_tn: float | None  # count-weighted over all tumours; None without tumours
    normal_counts_per_ml: float
    normal_core_ml: float
    liver_ml: float
    normal_liver_ml: float  # liver minus tumours
    tumour_ml: float
    warnings: list[str] = field(default_factory=list)



def _centre(fraction: np.ndarray, image: sitk.Image) -> tuple[float, float, float]:
    idx = np.argwhere(fraction > 0)
    w = fraction[fraction > 0]
    kji = (idx * w[:, None]).sum(axis=0) / w.sum()
    x, y, z = (float(v) for v in image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in kji[::-1])))
    return (x, y, z)


def _cells(tumours: Sequence[np.ndarray], spacing: Sequence[float], margin_mm: float) -> list[np.ndarray]:
    """Each tumour grown by the margin, voxels within reach of several tumours going to the nearest one."""
    if not tumours:
        return []
    distances = np.stack([distance_mm(t, spacing) for t in tumours])
    nearest = distances.argmin(axis=0)
    return [(distances[i] <= margin_mm) & (nearest == i) for i in range(len(tumours))]


def measure_uptake(counts: np.ndarray, image: sitk.Image, liver: np.ndarray, tumours: Mapping[str, np.ndarray],
                   margin_mm: float = SPILL_MARGIN_MM) -> Uptake:
    """T/N per tumour and overall (see module docstring).

    `counts` is the SPECT (z, y, x); `liver` and `tumours` are partial-volume fractions (0..1) on its grid.
    Raises MaaInputError when no normal liver is left to compare with.
    """
    spacing = spacing_zyx(image)
    vml = voxel_ml(image)
    names = list(tumours)
    fractions = [np.clip(tumours[n], 0.0, 1.0) for n in names]
    binaries = [f >= 0.5 for f in fractions]
    liver_bin = liver >= 0.5
    core = normal_liver_core(liver_bin, binaries, spacing, margin_mm)
    if not core.any():
        raise MaaInputError("no normal liver remains outside the tumours: the tumour-to-normal ratio is undefined")
    normal = float(counts[core].mean())
    if normal <= 0:
        raise MaaInputError("the normal liver has no counts in the MAA SPECT: check the image and the liver region")
    tumour_total = np.clip(sum(fractions, np.zeros_like(liver)), 0.0, 1.0) if fractions else np.zeros_like(liver)
    sigma = [SPECT_FWHM_MM * _FWHM_TO_SIGMA / sp for sp in spacing]
    normal_fraction = np.clip(liver - tumour_total, 0.0, 1.0)
    blurred_normal = ndimage.gaussian_filter(normal_fraction, sigma, mode="constant")
    cells = _cells(binaries, spacing, margin_mm)
    for cell, frac in zip(cells, fractions, strict=True):
        cell |= frac > 0
    blurred = [ndimage.gaussian_filter(f, sigma, mode="constant") for f in fractions]
    transfer = np.array([[float(b[cell].sum()) for b in blurred] for cell in cells]).reshape(len(cells), len(cells))
    measured = np.array([float(counts[cell].sum()) - normal * float(blurred_normal[cell].sum()) for cell in cells])
    concentration = np.linalg.lstsq(transfer, measured, rcond=None)[0] if cells else np.zeros(0)
    results, warnings = [], []
    total_counts = total_voxels = 0.0
    for name, frac, cell, c in zip(names, fractions, cells, concentration, strict=True):
        n_t = float(frac.sum())
        shell = cell & ~(frac >= 0.5)
        in_liver = float(np.count_nonzero(shell & liver_bin) / max(1, int(np.count_nonzero(shell))))
        inside = frac > 0
        uncorrected = float((counts[inside] * frac[inside]).sum() / n_t) / normal
        tn = float(c) / normal
        results.append(TumourUptake(name, n_t * vml, tn, uncorrected, in_liver, _centre(frac, image)))
        total_counts += float(c) * n_t
        total_voxels += n_t
        if in_liver < MIN_SHELL_IN_LIVER:
            warnings.append(f"tumour {name}: only {in_liver:.0%} of its {margin_mm:g} mm spill margin lies in the "
                            "liver: uptake outside the liver there is not modelled and would bias its T/N")
        if tn < 1.0:
            warnings.append(f"tumour {name}: T/N {tn:.2f} < 1 (less MAA than normal liver)")
    liver_ml = float(liver.sum()) * vml
    normal_ml = float(normal_fraction.sum()) * vml
    overall = (total_counts / total_voxels / normal) if total_voxels > 0 else None
    logger.info("MAA uptake: %d tumours, overall T/N %s, normal level %.2f counts/voxel", len(results),
                "n/a" if overall is None else f"{overall:.2f}", normal)
    return Uptake(tumours=results, overall_tn=overall, normal_counts_per_ml=normal / vml,
                  normal_core_ml=float(core.sum()) * vml, liver_ml=liver_ml, normal_liver_ml=normal_ml,
                  tumour_ml=float(total_voxels) * vml, warnings=warnings)
