"""Mass density of every phantom tissue: the truth the dose tests divide by.

Each label is a tissue at the CT number the phantom gives it (layout.BASELINE_HU); its density is the reference
value of that tissue (ICRU Report 46), except where the CT number fixes it:

* lung (-850 HU) is aerated lung, a mixture of air (-1000 HU, 0.0012 g/mL) and lung tissue (+40 HU,
  1.05 g/mL). CT numbers mix linearly, so the tissue share is (HU + 1000) / 1040 = 0.144 and the density
  0.144 x 1.05 + 0.856 x 0.0012 = 0.1525 g/mL.
* bone (700 HU) is a vertebral body (cortical shell and spongiosa); 1.40 g/mL.
This table is written independently of the node's CT calibration (node/dose/density.py), which maps these CT
numbers to densities within about 1-2 % in soft tissue and lung (as a measured scanner calibration would).
"""
from __future__ import annotations

import numpy as np

from node.phantom import anatomy as A

_LUNG_TISSUE_SHARE = (-850.0 + 1000.0) / (40.0 + 1000.0)

TISSUE_DENSITY_G_PER_ML = {
    A.AIR: 0.0012,
    A.FAT: 0.95,            # ICRU 46 adipose tissue
    A.SOFT_TISSUE: 1.05,    # ICRU 46 muscle / soft tissue
    A.BONE: 1.40,           # vertebral body (cortex + spongiosa)
    A.LUNG: round(_LUNG_TISSUE_SHARE * 1.05 + (1.0 - _LUNG_TISSUE_SHARE) * 0.0012, 4),
    A.SPLEEN: 1.06,         # ICRU 46 spleen
    A.LIVER: 1.06,          # ICRU 46 liver
    A.PORTAL_VEIN: 1.06,    # blood
    A.AORTA: 1.06,          # blood
    A.tumour_label(0): 1.05,
    A.tumour_label(1): 1.05,
    A.tumour_label(2): 1.05,
    A.DISC: 1.10,           # intervertebral disc (fibrocartilage)
}


def density_table() -> np.ndarray:
    """Density (g/mL) indexed by label."""
    table = np.zeros(A.N_LABELS)
    for label, rho in TISSUE_DENSITY_G_PER_ML.items():
        table[label] = rho
    return table


def voxel_mass_kg(occupancy: dict[int, np.ndarray], voxel_ml: float) -> np.ndarray:
    """Mass (kg) of each voxel from the fraction of it each label occupies."""
    rho = sum(occupancy[label] * TISSUE_DENSITY_G_PER_ML[label] for label in occupancy)
    return np.asarray(rho, dtype=np.float64) * voxel_ml / 1000.0
