"""Local deposition method (LDM): D_voxel [Gy] = 49.67 Gy kg/GBq x A_voxel [GBq] / m_voxel [kg].

Why LDM: Y-90 betas travel ~2.5 mm on average (11 mm at most), less than the resolution of the SPECT or PET the
activity comes from; depositing each voxel's energy in its own mass is the EANM-endorsed method for Y-90
radioembolization (Chiesa et al., EJNMMI Physics 2021), close to Monte Carlo for mean doses in soft tissue.
49.67 Gy kg/GBq is Y-90's mean beta energy (~0.93 MeV) times the decays of 1 GBq over its mean life
(T1/2 / ln 2), per kg (Ho et al. 1996).

The dose is computed on the grid of the activity (see :mod:`node.dose.density` for the mass). Voxels without
tissue (mean density below MIN_TISSUE_DENSITY_G_PER_ML: air outside the body, where reconstruction noise and
blur put counts) or without CT (mass unknown) cannot absorb: their activity is dropped, counted, and their dose
is 0. Everything else conserves energy exactly: sum(D x m) = 49.67 x deposited activity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from node.dose.activity import ActivityMap
from node.dose.density import MassMap
from node.dose.errors import DoseInputError

__all__ = ["Y90_GY_KG_PER_GBQ", "MIN_TISSUE_DENSITY_G_PER_ML", "DoseMap", "ldm_dose"]

#: Absorbed dose (Gy) per GBq of Y-90 per kg of tissue, complete decay (Ho et al. 1996: 49.67 Gy kg/GBq); the
#: partition model (node.maa.partition) uses the same constant.
Y90_GY_KG_PER_GBQ = 49.67
#: Below this mean density (g/mL) a voxel holds no tissue to deposit energy in (inflated lung is ~0.15).
MIN_TISSUE_DENSITY_G_PER_ML = 0.05
#: Note the dropped activity when it exceeds this share of the total.
DROPPED_NOTE_FRACTION = 0.001


@dataclass(frozen=True)
class DoseMap:
    """Absorbed dose (Gy) on the activity grid with the masses and activities it came from."""

    dose: sitk.Image  # float32 Gy, geometry of the activity grid
    mass_kg: np.ndarray  # (z, y, x), 0 where no tissue
    activity_gbq: np.ndarray  # (z, y, x), the deposited activity (dropped voxels are 0)
    deposited_gbq: float
    dropped_gbq: float
    method: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def array(self) -> np.ndarray:
        """Dose (Gy) as a (z, y, x) view (no copy)."""
        return sitk.GetArrayViewFromImage(self.dose)

    def energy_gy_kg(self) -> float:
        """sum(D x m): equals 49.67 x deposited_gbq (energy conservation)."""
        return float((self.array.astype(np.float64) * self.mass_kg).sum())


def ldm_dose(activity: ActivityMap, mass: MassMap,
             min_density_g_per_ml: float = MIN_TISSUE_DENSITY_G_PER_ML) -> DoseMap:
    """LDM dose of `activity` in the tissue `mass` (both on the same grid)."""
    if activity.gbq.shape != mass.mass_kg.shape:
        raise DoseInputError(f"activity grid {activity.gbq.shape} and mass grid {mass.mass_kg.shape} differ")
    density = mass.density_g_per_ml
    tissue = np.isfinite(density) & (density >= min_density_g_per_ml)
    gbq = np.where(tissue, activity.gbq, 0.0)
    m = np.where(tissue, mass.mass_kg, 0.0)
    dose = np.zeros(gbq.shape, dtype=np.float64)
    np.divide(Y90_GY_KG_PER_GBQ * gbq, m, out=dose, where=tissue)
    total = activity.total_gbq
    deposited = float(gbq.sum())
    dropped = total - deposited
    notes = list(activity.notes)
    if total > 0 and dropped > DROPPED_NOTE_FRACTION * total:
        no_ct = float(activity.gbq[~np.isfinite(density)].sum())
        notes.append(f"{dropped / total:.1%} of the activity ({dropped:.3g} GBq) lies in voxels without tissue "
                     f"(< {min_density_g_per_ml:g} g/mL: {dropped - no_ct:.3g} GBq) or outside the CT "
                     f"({no_ct:.3g} GBq): not deposited")
    image = sitk.GetImageFromArray(dose.astype(np.float32))
    image.CopyInformation(activity.grid)
    method = (f"local deposition (LDM): D = {Y90_GY_KG_PER_GBQ} Gy kg/GBq x A / m per voxel of the emission grid "
              f"{'x'.join(f'{s:.3g}' for s in activity.grid.GetSpacing())} mm; mass from CT "
              f"({mass.calibration.name}) averaged over each voxel; {activity.method}")
    return DoseMap(dose=image, mass_kg=m, activity_gbq=gbq, deposited_gbq=deposited, dropped_gbq=dropped,
                   method=method, notes=tuple(notes))
