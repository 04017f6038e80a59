"""A volume laid out for display panels: patient axes [superior, posterior, left] with its spacing and origin.

Shared by every workflow's pages (GSA fusion, MAA review), so that a plane at a patient coordinate is the same
plane on every page whatever the acquisition's orientation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["Layer", "lps_view"]


def lps_view(array: np.ndarray, direction: Sequence[float] | np.ndarray, spacing: Sequence[float]
             ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """View (no copy) of a (z, y, x) image array indexed [superior, posterior, left] ascending, with its spacing.

    Each image axis is assigned to the patient axis it is closest to (exact for axial/coronal/sagittal stacks,
    nearest-axis for oblique ones, which is good enough for a display).
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # columns: image x, y, z axes in LPS
    patient_axis = np.abs(d).argmax(axis=0)  # for image axis i (x, y, z), the LPS axis it follows
    if sorted(patient_axis.tolist()) != [0, 1, 2]:
        raise ValueError("image axes are too oblique to display as axial/coronal planes")
    view = array
    for i in range(3):
        if d[patient_axis[i], i] < 0:
            view = np.flip(view, axis=2 - i)  # array axis of image axis i is 2 - i
    # array axis (2 - i) follows LPS axis patient_axis[i]; wanted order: S (2), P (1), L (0)
    order = [2 - int(np.nonzero(patient_axis == p)[0][0]) for p in (2, 1, 0)]
    sp = tuple(float(spacing[2 - a]) for a in order)
    return view.transpose(order), sp  # type: ignore[return-value]


@dataclass(frozen=True)
class Layer:
    """A volume as an LPS view [S, P, L] (see :func:`lps_view`) with its spacing and the patient coordinate
    (mm) of the centre of voxel 0 along S, P, L."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def of(cls, array_zyx: np.ndarray, image: sitk.Image) -> Layer:
        """The layer of a (z, y, x) array laid out on `image`'s grid (no copy)."""
        direction = image.GetDirection()
        view, spacing = lps_view(array_zyx, direction, image.GetSpacing())
        size = image.GetSize()
        corners = np.array([image.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, size[0] - 1)
                            for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
        return cls(view, spacing, (float(corners[:, 2].min()), float(corners[:, 1].min()), float(corners[:, 0].min())))

    def edges(self, axis: int) -> tuple[float, float]:
        """Patient coordinates (mm) of the outer voxel edges along `axis` (0 = S, 1 = P, 2 = L)."""
        return (self.origin[axis] - 0.5 * self.spacing[axis],
                self.origin[axis] + (self.array.shape[axis] - 0.5) * self.spacing[axis])

    def section(self, axis: int, mm: float) -> np.ndarray | None:
        """The plane nearest to coordinate `mm` along `axis`, or None outside the volume."""
        idx = int(round((mm - self.origin[axis]) / self.spacing[axis]))
        if not 0 <= idx < self.array.shape[axis]:
            return None
        return self.array[idx] if axis == 0 else self.array[:, idx, :]
