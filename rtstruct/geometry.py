"""CT slice ordering and the pixel <-> patient mapping of a single-frame CT series.

Conventions (DICOM PS3.3 C.7.6.2.1.1): the first ImageOrientationPatient triplet is the row direction (the
direction of increasing column index), the second the column direction (increasing row index); PixelSpacing is
(spacing between rows, spacing between columns). Pixel coordinates here are (row, col) with pixel centres at
integer values, so voxel edges lie at half-integers. Slices are ordered by their own ImagePositionPatient
projected on the slice normal (row x col), never by SliceLocation or InstanceNumber.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from rtstruct.errors import RTStructError

#: Direction cosines of two slices agree when they differ by less than this (DICOM stores them as DS text).
_ORIENTATION_TOLERANCE = 1e-4
#: Two slices closer than this along the normal (mm) are the same position: a time series, not a volume.
_MIN_SLICE_GAP_MM = 1e-3


def _plane_position(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(ImagePositionPatient, ImageOrientationPatient) of one slice as float arrays, with clear errors."""
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
               "FrameOfReferenceUID", "SOPInstanceUID", "SOPClassUID"):
        if kw not in ds or ds.get(kw) in (None, ""):
            raise RTStructError(f"CT slice {ds.get('SOPInstanceUID', '?')} lacks {kw}")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise RTStructError(f"CT instance {ds.SOPInstanceUID} is multi-frame; single-frame slices are required")
    return (np.asarray(ds.ImagePositionPatient, dtype=float),
            np.asarray(ds.ImageOrientationPatient, dtype=float))


def sort_slices(ct_datasets: Sequence[Dataset]) -> list[Dataset]:
    """Return the CT slices sorted ascending along the slice normal (row x column direction cosines).

    All slices must be single-frame and share FrameOfReferenceUID, orientation, Rows, Columns and PixelSpacing;
    two slices at the same position (e.g. a perfusion time series) are refused. A mask for this CT has shape
    (len(slices), Rows, Columns) and its first index follows the returned order.
    """
    slices = list(ct_datasets)
    if not slices:
        raise RTStructError("no CT slices given")
    ipp_iop = [_plane_position(ds) for ds in slices]
    first = slices[0]
    iop0 = ipp_iop[0][1]
    for ds, (_, iop) in zip(slices, ipp_iop):
        if ds.FrameOfReferenceUID != first.FrameOfReferenceUID:
            raise RTStructError("CT slices belong to different frames of reference")
        if not np.allclose(iop, iop0, atol=_ORIENTATION_TOLERANCE):
            raise RTStructError("CT slices have different ImageOrientationPatient")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns) or not np.allclose(
                np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float)):
            raise RTStructError("CT slices differ in Rows, Columns or PixelSpacing")
    normal = np.cross(iop0[:3], iop0[3:])
    positions = np.array([ipp @ normal for ipp, _ in ipp_iop])
    order = np.argsort(positions, kind="stable")
    if len(order) > 1 and np.min(np.diff(positions[order])) < _MIN_SLICE_GAP_MM:
        raise RTStructError("two CT slices share one position: give one volume, not a time series")
    return [slices[i] for i in order]


@dataclass(frozen=True)
class CtGeometry:
    """Geometry of a sorted CT series: per-slice origins, shared direction cosines and pixel spacing."""

    slices: tuple[Dataset, ...]
    row_dir: np.ndarray      # unit vector of increasing column index
    col_dir: np.ndarray      # unit vector of increasing row index
    normal: np.ndarray       # row_dir x col_dir; slices ascend along it
    origins: np.ndarray      # (K, 3) ImagePositionPatient of each slice (centre of pixel [0, 0])
    positions: np.ndarray    # (K,) position of each slice along the normal (mm), ascending
    spacing: tuple[float, float]  # (between rows, between columns) in mm
    shape: tuple[int, int, int]   # (K, Rows, Columns)

    @classmethod
    def from_slices(cls, ct_datasets: Sequence[Dataset]) -> CtGeometry:
        """Sort the slices (see :func:`sort_slices`) and collect their geometry."""
        slices = sort_slices(ct_datasets)
        iop = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
        row_dir, col_dir = iop[:3], iop[3:]
        normal = np.cross(row_dir, col_dir)
        origins = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in slices])
        spacing = tuple(float(v) for v in slices[0].PixelSpacing)
        return cls(
            slices=tuple(slices), row_dir=row_dir, col_dir=col_dir, normal=normal, origins=origins,
            positions=origins @ normal, spacing=(spacing[0], spacing[1]),
            shape=(len(slices), int(slices[0].Rows), int(slices[0].Columns)),
        )

    def to_patient(self, k: int, rc: np.ndarray) -> np.ndarray:
        """Patient coordinates (n, 3) of pixel coordinates `rc` (n, 2) = (row, col) on slice `k`."""
        rc = np.asarray(rc, dtype=float)
        return (self.origins[k] + np.outer(rc[:, 1] * self.spacing[1], self.row_dir)
                + np.outer(rc[:, 0] * self.spacing[0], self.col_dir))

    def to_pixel(self, k: int, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (n, 2) = (row, col) of patient points (n, 3) projected on slice `k`'s plane."""
        rel = np.asarray(points, dtype=float) - self.origins[k]
        return np.column_stack([rel @ self.col_dir / self.spacing[0], rel @ self.row_dir / self.spacing[1]])
