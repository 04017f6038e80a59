"""Rigid poses and image grids in DICOM patient coordinates (LPS, mm).

A :class:`Rigid` maps points ``p' = R p + t`` (rotation about the coordinate origin, then translation).
A :class:`Grid` is one reconstructed volume: voxel (k, i, j) = (slice, row, column) lies at
``origin + j*dc*row_dir + i*dr*col_dir + k*dk*normal`` where ``normal = row_dir x col_dir`` and
``spacing = (dk, dr, dc)``. Slices therefore ascend along the normal, the order `rtstruct.sort_slices` uses.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


def rotation_matrix(rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """3x3 rotation R = Rz(gamma) @ Ry(beta) @ Rx(alpha) for angles (alpha, beta, gamma) in degrees.

    Extrinsic rotations about the patient x (L), y (P), z (S) axes, applied first x, then y, then z.
    """
    a, b, g = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(g), -np.sin(g), 0], [np.sin(g), np.cos(g), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Rigid:
    """A rigid transform stored as a 4x4 homogeneous matrix acting on column vectors (x, y, z, 1)."""

    matrix: np.ndarray

    @classmethod
    def identity(cls) -> Rigid:
        return cls(np.eye(4))

    @classmethod
    def from_params(cls, rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Rigid:
        """Build ``p' = R(rotation_deg) p + translation_mm`` (see :func:`rotation_matrix`)."""
        m = np.eye(4)
        m[:3, :3] = rotation_matrix(rotation_deg)
        m[:3, 3] = translation_mm
        return cls(m)

    @property
    def rotation(self) -> np.ndarray:
        return self.matrix[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        return self.matrix[:3, 3]

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points of shape (..., 3)."""
        return np.asarray(points, dtype=float) @ self.rotation.T + self.translation

    def inverse(self) -> Rigid:
        return Rigid(np.linalg.inv(self.matrix))

    def then(self, other: Rigid) -> Rigid:
        """The transform applying `self` first, then `other`."""
        return Rigid(other.matrix @ self.matrix)


@dataclass(frozen=True)
class Grid:
    """Geometry of one volume; see the module docstring for the index convention."""

    shape: tuple[int, int, int]            # (slices, rows, columns)
    origin: np.ndarray                     # centre of voxel (0, 0, 0), patient mm
    spacing: tuple[float, float, float]    # (between slices, between rows, between columns) mm
    row_dir: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))  # increasing column
    col_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))  # increasing row

    @classmethod
    def centred(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                centre: np.ndarray, row_dir: tuple[float, float, float] = (1.0, 0.0, 0.0),
                col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> Grid:
        """A grid whose centre lies at `centre`; the origin is rounded to 0.01 mm (DICOM DS friendly)."""
        row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
        normal = np.cross(row_dir, col_dir)
        half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
        origin = np.asarray(centre, float) - half[2] * row_dir - half[1] * col_dir - half[0] * normal
        return cls(tuple(shape), np.round(origin, 2), tuple(spacing), row_dir, col_dir)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (k, i, j, 1) = (slice, row, column, 1) to patient (x, y, z, 1)."""
        a = np.eye(4)
        a[:3, 0] = self.normal * self.spacing[0]
        a[:3, 1] = self.col_dir * self.spacing[1]
        a[:3, 2] = self.row_dir * self.spacing[2]
        a[:3, 3] = self.origin
        return a

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def slice_origin(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k."""
        return self.origin + k * self.spacing[0] * self.normal

    def slice_points(self, k: int) -> np.ndarray:
        """Patient coordinates of every voxel centre of slice k, shape (rows, columns, 3)."""
        i = np.arange(self.shape[1], dtype=float)[:, None, None] * self.spacing[1]
        j = np.arange(self.shape[2], dtype=float)[None, :, None] * self.spacing[2]
        return self.slice_origin(k) + i * self.col_dir + j * self.row_dir

    def iter_slices(self) -> Iterator[tuple[int, np.ndarray]]:
        for k in range(self.shape[0]):
            yield k, self.slice_points(k)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (k, i, j) indices of patient points (..., 3)."""
        inv = np.linalg.inv(self.affine)
        return np.asarray(points, float) @ inv[:3, :3].T + inv[:3, 3]

    def to_patient(self, index: np.ndarray) -> np.ndarray:
        """Patient coordinates of continuous (k, i, j) indices (..., 3)."""
        a = self.affine
        return np.asarray(index, float) @ a[:3, :3].T + a[:3, 3]

    def describe(self) -> dict:
        """JSON-friendly description (shape, spacing, origin, directions, affine)."""
        return {
            "shape_kij": list(self.shape),
            "spacing_mm_kij": [float(s) for s in self.spacing],
            "origin_mm": [float(v) for v in self.origin],
            "row_dir": [float(v) for v in self.row_dir],
            "col_dir": [float(v) for v in self.col_dir],
            "normal": [float(v) for v in self.normal],
            "affine_kij_to_patient": np.round(self.affine, 6).tolist(),
        }
