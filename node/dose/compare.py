"""Predicted (MAA) versus delivered (post-therapy Y-90 imaging) dose per region.

The post-therapy PET/CT or bremsstrahlung SPECT/CT has its own frame of reference. Its CT is registered to the
MAA SPECT/CT's CT with the node's rigid CT-CT registration (:func:`node.gsa.registration.register_rigid`:
fixed = MAA CT, moving = post-therapy CT, so the transform maps MAA patient coordinates to post-therapy ones),
and the delivered dose, computed on its own emission grid, is carried onto the MAA dose grid by trilinear
interpolation (dose is per mass, an intensive quantity, so interpolating it is legitimate). Both doses are then
read in the same regions with the same DVH convention (:mod:`node.dose.dvh`).

Per region: Dmean and D70, as the difference delivered - predicted (negative: the MAA over-predicted) and
the ratio delivered / predicted.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from node.dose.dvh import region_dose, region_dvh
from node.imaging.registration import RigidRegistration, register_rigid

__all__ = ["RegionComparison", "register_post_therapy", "delivered_on_grid", "compare_predicted_delivered"]


@dataclass(frozen=True)
class RegionComparison:
    name: str
    predicted_mean_gy: float
    delivered_mean_gy: float
    predicted_d70_gy: float
    delivered_d70_gy: float

    @property
    def mean_difference_gy(self) -> float:
        return self.delivered_mean_gy - self.predicted_mean_gy

    @property
    def mean_ratio(self) -> float:
        return self.delivered_mean_gy / self.predicted_mean_gy if self.predicted_mean_gy > 0 else float("nan")

    @property
    def d70_difference_gy(self) -> float:
        return self.delivered_d70_gy - self.predicted_d70_gy

    @property
    def d70_ratio(self) -> float:
        return self.delivered_d70_gy / self.predicted_d70_gy if self.predicted_d70_gy > 0 else float("nan")


def register_post_therapy(maa_ct: sitk.Image, post_ct: sitk.Image) -> RigidRegistration:
    """Rigid registration of the post-therapy CT (moving) to the MAA SPECT/CT's CT (fixed).

    Raises :class:`node.gsa.registration.RegistrationError` when it fails its plausibility checks.
    """
    return register_rigid(maa_ct, post_ct, fixed_name="MAA SPECT/CT's CT", moving_name="post-therapy SPECT/CT's CT")


def delivered_on_grid(delivered: sitk.Image, grid: sitk.Image,
                      registration: RigidRegistration | sitk.Transform | None) -> sitk.Image:
    """The delivered dose (Gy) resampled onto `grid` (the predicted dose's grid): trilinear, 0 outside."""
    if registration is None:
        transform: sitk.Transform = sitk.Transform()
    elif isinstance(registration, RigidRegistration):
        transform = registration.transform
    else:
        transform = registration
    return sitk.Resample(delivered, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def compare_predicted_delivered(predicted: sitk.Image, delivered: sitk.Image, regions: Mapping[str, np.ndarray],
                                regions_grid: sitk.Image) -> tuple[RegionComparison, ...]:
    """Dmean and D70 of both doses (one frame of reference: the delivered dose already carried onto it) in each
    region (masks (z, y, x) on `regions_grid`)."""
    out = []
    for name, mask in regions.items():
        p = region_dose(region_dvh(name, predicted, mask, regions_grid))
        d = region_dose(region_dvh(name, delivered, mask, regions_grid))
        out.append(RegionComparison(name, p.mean_gy, d.mean_gy, p.d70_gy, d.d70_gy))
    return tuple(out)
