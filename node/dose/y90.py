"""Y-90 dose maps end to end from images (what the workflows call): predicted from the MAA SPECT/CT, delivered
from a Y-90 PET/CT or a bremsstrahlung SPECT/CT. Each one is activity -> mass -> LDM (see those modules).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from node.dose.activity import delivered_from_pet, pet_decay_info, predicted_from_maa, scaled_to_administered
from node.dose.density import DEFAULT_CALIBRATION, DensityCalibration, mass_on_grid
from node.dose.errors import DoseInputError
from node.dose.ldm import DoseMap, ldm_dose

__all__ = ["predicted_dose", "delivered_dose_from_pet", "delivered_dose_from_counts", "region_mass_kg"]


def predicted_dose(spect: sitk.Image, ct: sitk.Image, liver: np.ndarray, lungs: np.ndarray | None,
                   planned_gbq: float, lsf: float, calibration: DensityCalibration = DEFAULT_CALIBRATION) -> DoseMap:
    """Y-90 dose predicted by a 99mTc-MAA SPECT (counts image) with its own CT (same frame of reference), for
    `planned_gbq` and lung shunt `lsf`; `liver`/`lungs` are VOIs on the SPECT grid."""
    activity = predicted_from_maa(sitk.GetArrayViewFromImage(spect), spect, liver, lungs, planned_gbq, lsf)
    return ldm_dose(activity, mass_on_grid(ct, spect, calibration, where=activity.gbq > 0))


def delivered_dose_from_pet(pet: sitk.Image, pet_headers: Sequence[Dataset], ct: sitk.Image,
                            calibration: DensityCalibration = DEFAULT_CALIBRATION) -> DoseMap:
    """Delivered Y-90 dose from a quantitative PET (Bq/mL image; its slice headers give units and times) and
    the PET/CT's CT."""
    if not pet_headers:
        raise DoseInputError("no PET headers: units and administration time unknown")
    return ldm_dose(delivered_from_pet(pet, pet_decay_info(pet_headers[0])), mass_on_grid(ct, pet, calibration))


def delivered_dose_from_counts(image: sitk.Image, ct: sitk.Image, voi: np.ndarray | None, administered_gbq: float,
                               fraction: float = 1.0,
                               calibration: DensityCalibration = DEFAULT_CALIBRATION) -> DoseMap:
    """Delivered Y-90 dose from a non-quantitative image (bremsstrahlung SPECT): counts in `voi` (None: the whole
    field) scaled to `administered_gbq` x `fraction`."""
    activity = scaled_to_administered(sitk.GetArrayViewFromImage(image), image, voi, administered_gbq, fraction)
    return ldm_dose(activity, mass_on_grid(ct, image, calibration, where=activity.gbq > 0))


def region_mass_kg(ct: sitk.Image, mask: np.ndarray, calibration: DensityCalibration = DEFAULT_CALIBRATION) -> float:
    """Mass (kg) of a region drawn on the CT (mask (z, y, x) on the CT grid): the CT's own resolution, so a lung
    mass is not inflated by the chest wall as it would be on a coarse emission grid."""
    mask = np.asarray(mask, dtype=bool)
    if tuple(mask.shape) != tuple(ct.GetSize())[::-1]:
        raise DoseInputError(f"region mask {mask.shape} does not match the CT {tuple(ct.GetSize())[::-1]}")
    rho = calibration.density(sitk.GetArrayViewFromImage(ct)[mask])
    return float(rho.astype(np.float64).sum()) * float(np.prod(ct.GetSpacing())) / 1e6
