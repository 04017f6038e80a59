"""Partition-model Y-90 activity (Ho et al., Eur J Nucl Med 1996; science.md section 3).

    D [Gy] = 49.67 * A [GBq] / m [kg]                  (Y-90 decaying completely in the tissue)
    A_N    = D_N * (T/N * m_T + m_N) / (49.67 * (1 - LSF))    activity giving the normal liver D_N
    A_lung = D_lung,limit * m_lung / (49.67 * LSF)             activity giving the lungs their limit
    A      = min(A_N, A_lung)
    D_N = 49.67 * A * (1 - LSF) / (T/N * m_T + m_N);  D_T = T/N * D_N;  D_lung = 49.67 * A * LSF / m_lung

With several tumours, T/N * m_T is the sum of T/N_i * m_T,i (equal to the count-weighted overall T/N times the
total tumour mass) and each tumour's dose is T/N_i * D_N. Liver and tumour masses are volumes times
TISSUE_DENSITY_G_PER_ML. The lung mass is the one the caller gives (`lung_mass`: the MAA workflow gives the CT
lung mass through the density calibration, the very mass of the predicted voxel dose's lung figure, so the plan's
lung dose and the predicted lung mean dose agree). Only without it (no CT lungs) does the model fall back on
the papers' conventions: the CT lung volume times LUNG_DENSITY_G_PER_ML, or a standard lung mass of
STANDARD_LUNG_MASS_KG when the lungs were not imaged (the source is stated in the record either way).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from node.dose.ldm import Y90_GY_KG_PER_GBQ

__all__ = ["Y90_GY_KG_PER_GBQ", "TISSUE_DENSITY_G_PER_ML", "LUNG_DENSITY_G_PER_ML", "STANDARD_LUNG_MASS_KG",
           "WHY_TWO_DOSES",
           "PartitionPlan", "activity_for_normal_liver", "activity_for_lung", "partition_plan"]

TISSUE_DENSITY_G_PER_ML = 1.03
#: Fallback only (no CT lung mass given): aerated lung density of the partition-model papers.
LUNG_DENSITY_G_PER_ML = 0.30
#: Why a region's partition-model mean and its voxel Dmean (local deposition) differ: said next to both.
WHY_TWO_DOSES = ("partition-model mean vs voxel Dmean (local deposition): the partition model gives each compartment "
                 "(tumour, normal liver) a uniform uptake from its partial-volume corrected T/N, the voxel dose "
                 "follows the SPECT counts voxel by voxel, blurred by the SPECT resolution, so a small tumour's "
                 "voxel Dmean is lower and the normal liver's near tumours higher")
#: Lung mass assumed when the lungs are not imaged completely (the convention of the partition-model papers).
STANDARD_LUNG_MASS_KG = 1.0


@dataclass(frozen=True)
class PartitionPlan:
    """The partition-model activity and the doses it gives."""

    activity_gbq: float
    limited_by: str  # "normal liver" or "lung"
    activity_normal_liver_limit_gbq: float
    activity_lung_limit_gbq: float | None  # None when LSF = 0 (no lung limit)
    normal_liver_dose_gy: float
    tumour_dose_gy: float | None  # at the overall T/N; None without tumours
    lung_dose_gy: float
    tumour_doses_gy: dict[str, float]
    tumour_mass_kg: float
    normal_liver_mass_kg: float
    lung_mass_kg: float
    lung_mass_source: str
    lsf: float
    normal_liver_limit_gy: float
    lung_limit_gy: float
    lung_density_g_per_ml: float | None = None  # the volume convention's density, None for a given lung mass



def activity_for_normal_liver(dose_gy: float, tn_times_tumour_mass_kg: float, normal_mass_kg: float,
                              lsf: float) -> float:
    """GBq that gives the normal liver `dose_gy` (T/N-weighted tumour mass = sum of T/N_i * m_T,i, in kg)."""
    return dose_gy * (tn_times_tumour_mass_kg + normal_mass_kg) / (Y90_GY_KG_PER_GBQ * (1.0 - lsf))


def activity_for_lung(dose_gy: float, lung_mass_kg: float, lsf: float) -> float:
    """GBq that gives the lungs `dose_gy`; infinite when nothing shunts."""
    return math.inf if lsf <= 0 else dose_gy * lung_mass_kg / (Y90_GY_KG_PER_GBQ * lsf)


def partition_plan(tn_ratios: Mapping[str, float], tumour_ml: Mapping[str, float], normal_liver_ml: float,
                   lsf: float, normal_liver_limit_gy: float, lung_limit_gy: float,
                   lung_ml: float | None = None, lung_mass: tuple[float, str] | None = None) -> PartitionPlan:
    """Activity for the normal-liver and lung limits (the smaller wins) and the resulting doses.

    `tn_ratios`/`tumour_ml` per tumour; `lung_mass` (kg, where it comes from) replaces the volume convention when
    given; otherwise `lung_ml` is the CT lung volume (x 0.30 g/mL), None for the standard lung mass.
    """
    if not 0.0 <= lsf < 1.0:
        raise ValueError(f"lung shunt fraction must be in [0, 1), got {lsf}")
    if normal_liver_ml <= 0:
        raise ValueError("normal liver volume must be positive")
    kg = TISSUE_DENSITY_G_PER_ML / 1000.0
    weighted = sum(tn_ratios[n] * tumour_ml[n] * kg for n in tn_ratios)
    m_t = sum(tumour_ml[n] for n in tn_ratios) * kg
    m_n = normal_liver_ml * kg
    if lung_mass is not None:
        (m_lung, lung_source), lung_density = lung_mass, None
        if not (math.isfinite(m_lung) and m_lung > 0):
            raise ValueError(f"lung mass must be a positive number of kg, got {m_lung}")
    elif lung_ml is not None and lung_ml > 0:
        m_lung, lung_density = lung_ml * LUNG_DENSITY_G_PER_ML / 1000.0, LUNG_DENSITY_G_PER_ML
        lung_source = "CT lung volume x 0.30 g/mL (volume convention: no CT lung mass)"
    else:
        m_lung, lung_density = STANDARD_LUNG_MASS_KG, None
        lung_source = f"standard {STANDARD_LUNG_MASS_KG:g} kg (lungs not imaged)"
    a_n = activity_for_normal_liver(normal_liver_limit_gy, weighted, m_n, lsf)
    a_l = activity_for_lung(lung_limit_gy, m_lung, lsf)
    activity = min(a_n, a_l)
    d_n = Y90_GY_KG_PER_GBQ * activity * (1.0 - lsf) / (weighted + m_n)
    overall = weighted / m_t if m_t > 0 else None
    return PartitionPlan(
        activity_gbq=activity, limited_by="normal liver" if a_n <= a_l else "lung",
        activity_normal_liver_limit_gbq=a_n, activity_lung_limit_gbq=None if math.isinf(a_l) else a_l,
        normal_liver_dose_gy=d_n, tumour_dose_gy=None if overall is None else overall * d_n,
        lung_dose_gy=Y90_GY_KG_PER_GBQ * activity * lsf / m_lung,
        tumour_doses_gy={n: tn_ratios[n] * d_n for n in tn_ratios},
        tumour_mass_kg=m_t, normal_liver_mass_kg=m_n, lung_mass_kg=m_lung, lung_mass_source=lung_source, lsf=lsf,
        normal_liver_limit_gy=normal_liver_limit_gy, lung_limit_gy=lung_limit_gy, lung_density_g_per_ml=lung_density)
