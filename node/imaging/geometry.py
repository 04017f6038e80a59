"""Voxel-grid geometry: how a (slice, row, column) index maps to patient coordinates (mm).

The one description of a 3D grid built from DICOM frames (the perfusion 4D series' native and working grids);
SimpleITK images carry the same information for volumes read through ``node.imaging.volumes``. Slice stacks
of single-frame images are ordered by ``rtstruct.geometry`` (standalone, so the RTSTRUCT library can use it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D grid: voxel index (k, j, i) = (slice, row, column) to patient coordinates (mm).

    position = origin + i * spacing[2] * row_dir + j * spacing[1] * col_dir + k * spacing[0] * normal,
    with row_dir/col_dir the two ImageOrientationPatient vectors (row_dir points along increasing column index).
    """

    origin: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    spacing: np.ndarray  # (slice, row, column) mm
    shape: tuple[int, int, int]

    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (k, j, i, 1) indices to patient (x, y, z, 1)."""
        a = np.eye(4)
        a[:3, 0] = self.normal * self.spacing[0]
        a[:3, 1] = self.col_dir * self.spacing[1]
        a[:3, 2] = self.row_dir * self.spacing[2]
        a[:3, 3] = self.origin
        return a

    def index_to_patient(self, kji: np.ndarray) -> np.ndarray:
        """Patient coordinates (..., 3) of fractional indices (..., 3) in (k, j, i) order."""
        kji = np.asarray(kji, dtype=float)
        return kji @ self.affine()[:3, :3].T + self.origin

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional (k, j, i) indices (..., 3) of patient points (..., 3)."""
        xyz = np.asarray(xyz, dtype=float)
        return (xyz - self.origin) @ np.linalg.inv(self.affine()[:3, :3]).T

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k (centre of its first pixel)."""
        return self.origin + k * self.spacing[0] * self.normal

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0
