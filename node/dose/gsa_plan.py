"""Functional-liver dose of a radiotherapy plan (GSA-guided liver SBRT; Shirai et al., World J Radiol 2014).

Inputs: the plan's RT Dose (any grid in the planning CT's frame of reference, read by
:mod:`node.dose.rtdose`), the planning-CT structures (whole liver, FLS, ITV, PTV) and the GSA SPECT registered
onto the planning CT (counts per planning-CT voxel, the same data FLS came from).

* FLV20Gy = percent of the FLS volume receiving >= 20 Gy (keep <= 20 % against radiation-induced liver disease).
* F20Gy = GSA counts of the liver voxels receiving >= 20 Gy / GSA counts of the whole liver (percent): the share
  of liver function irradiated, whatever the FLS threshold.
* Mean (and D50/D70/D90) dose to FLS, ITV, PTV and whole liver; the anatomical DVH of the liver (volume) and
  its functional DVH (weighted by GSA counts).
DVH convention: :mod:`node.dose.dvh` (structure voxels on the planning CT, dose interpolated at their centres).
The threshold applies to the plan's total physical dose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from node.dose.dvh import Dvh, RegionDose, region_dose, region_dvh
from node.dose.errors import DoseInputError

__all__ = ["GsaPlanEvaluation", "evaluate_gsa_plan", "THRESHOLD_GY", "FLV_WARNING_PERCENT"]

THRESHOLD_GY = 20.0
FLV_WARNING_PERCENT = 20.0


@dataclass(frozen=True)
class GsaPlanEvaluation:
    threshold_gy: float
    flv_percent: float  # FLV20Gy: % of FLS volume >= threshold
    f_percent: float  # F20Gy: % of liver GSA counts in voxels >= threshold
    liver: RegionDose
    fls: RegionDose
    itv: RegionDose
    ptv: RegionDose
    functional_dvh: Dvh  # liver weighted by GSA counts
    anatomical_dvh: Dvh  # liver volume (same data as liver.dvh)
    flv_warning_percent: float
    warnings: tuple[str, ...]


def evaluate_gsa_plan(dose: sitk.Image, grid: sitk.Image, liver: np.ndarray, fls: np.ndarray, itv: np.ndarray,
                      ptv: np.ndarray, gsa_counts: np.ndarray, threshold_gy: float = THRESHOLD_GY,
                      flv_warning_percent: float = FLV_WARNING_PERCENT) -> GsaPlanEvaluation:
    """Evaluate a plan dose on the planning CT (`grid`; masks and counts are (z, y, x) arrays on it)."""
    counts = np.clip(np.asarray(gsa_counts, dtype=np.float64), 0.0, None)
    liver = np.asarray(liver, dtype=bool)
    if not liver.any():
        raise DoseInputError("no liver on the planning CT: the functional liver dose cannot be evaluated")
    if not np.asarray(fls, dtype=bool).any():
        raise DoseInputError("the functional liver structure (FLS) is empty: FLV20Gy is undefined")
    if counts[liver].sum() <= 0:
        raise DoseInputError("the registered GSA SPECT has no counts in the liver: F20Gy is undefined")
    regions = {name: region_dose(region_dvh(name, dose, np.asarray(mask, dtype=bool), grid))
               for name, mask in (("whole liver", liver), ("FLS", fls), ("ITV", itv), ("PTV", ptv))}
    functional = region_dvh("whole liver (GSA-weighted)", dose, liver, grid, weights=counts, unit="GSA counts")
    flv = regions["FLS"].dvh.v(threshold_gy)
    f = functional.v(threshold_gy)
    warnings = []
    if flv > flv_warning_percent:
        warnings.append(f"FLV{threshold_gy:g}Gy = {flv:.1f} % of the functional liver receives >= {threshold_gy:g} Gy, "
                        f"above the {flv_warning_percent:g} % warning level: risk of radiation-induced liver disease "
                        "(a warning for the physicist, not a prescription)")
    for name, r in regions.items():
        if r.outside_dose_grid_fraction > 0.001:
            warnings.append(f"{r.outside_dose_grid_fraction:.1%} of the {name} lies outside the RT Dose grid "
                            "(counted as 0 Gy)")
    return GsaPlanEvaluation(threshold_gy=threshold_gy, flv_percent=flv, f_percent=f, liver=regions["whole liver"],
                             fls=regions["FLS"], itv=regions["ITV"], ptv=regions["PTV"], functional_dvh=functional,
                             anatomical_dvh=regions["whole liver"].dvh, flv_warning_percent=flv_warning_percent,
                             warnings=tuple(warnings))
