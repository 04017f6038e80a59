"""Slice stacks: reading, ordering and the pixel <-> patient mapping of single-frame image series.

:class:`SliceStack` is the one reader of slice-stack geometry in the project: this library's RTSTRUCT reader
and writer (through :class:`CtGeometry`), the node's volume loader (``node.imaging.volumes``) and the CT perfusion
4D assembly (``node.perfusion.volume4d``, through :meth:`SliceStack.from_planes`, Enhanced CT frames included)
build on it.

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


_STACK_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@dataclass(frozen=True)
class SliceStack:
    """Single-frame slices that form one stack (same orientation, size and pixel spacing), in the order given.

    `row_dir` and `col_dir` are ImageOrientationPatient as stored (row_dir = direction of increasing column
    index); `ipps` are each slice's ImagePositionPatient. :meth:`orthonormal` gives exact axes for resampling.
    Errors are :class:`RTStructError` with a message that names the problem (callers may prefix their context).
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    ipps: np.ndarray  # (K, 3), in the order of the datasets given
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns), mm
    rows: int
    cols: int

    @classmethod
    def read(cls, datasets: Sequence[Dataset], orientation_tolerance: float = _ORIENTATION_TOLERANCE) -> SliceStack:
        """Check that `datasets` are single-frame slices of one stack and read their geometry."""
        if not datasets:
            raise RTStructError("no slices given")
        for ds in datasets:
            for kw in _STACK_KEYWORDS:
                if kw not in ds or ds.get(kw) in (None, ""):
                    raise RTStructError(f"slice {ds.get('SOPInstanceUID', '?')} lacks {kw}")
            if int(ds.get("NumberOfFrames", 1) or 1) != 1:
                raise RTStructError(f"instance {ds.get('SOPInstanceUID', '?')} is multi-frame; one slice per file "
                                    "is required")
        try:
            iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets], dtype=float)
            ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets], dtype=float)
            spacings = np.array([[float(v) for v in ds.PixelSpacing] for ds in datasets], dtype=float)
        except (TypeError, ValueError) as exc:
            raise RTStructError(f"invalid ImagePositionPatient/ImageOrientationPatient/PixelSpacing ({exc})") from None
        sizes = [(int(ds.Rows), int(ds.Columns)) for ds in datasets]
        return cls.from_planes(iops, ipps, spacings, sizes, orientation_tolerance)

    @classmethod
    def from_planes(cls, iops: np.ndarray, ipps: np.ndarray, spacings: np.ndarray,
                    sizes: Sequence[tuple[int, int]], orientation_tolerance: float = _ORIENTATION_TOLERANCE,
                    spacing_tolerance: float = 1e-4) -> SliceStack:
        """The same checks on planes already read (one per slice or frame: orientation (6), position (3), pixel
        spacing (2), (rows, columns)): also the frames of an Enhanced multi-frame image or of a time series."""
        iops, ipps, spacings = (np.asarray(a, dtype=float) for a in (iops, ipps, spacings))
        if len(iops) == 0:
            raise RTStructError("no slices given")
        if iops.shape[1:] != (6,) or ipps.shape[1:] != (3,) or spacings.shape[1:] != (2,):
            raise RTStructError("ImageOrientationPatient must have 6 values, ImagePositionPatient 3, PixelSpacing 2")
        if np.abs(iops - iops[0]).max() > orientation_tolerance:
            raise RTStructError("slices have different ImageOrientationPatient (not one stack)")
        rows, cols = sizes[0]
        for r, c in sizes[1:]:
            if (r, c) != (rows, cols):
                raise RTStructError(f"slices have different sizes ({r}x{c} vs {rows}x{cols})")
        if np.abs(spacings - spacings[0]).max() > spacing_tolerance:
            raise RTStructError(f"slices have different pixel spacing (PixelSpacing {spacings[0].tolist()} and others)")
        if spacings[0].min() <= 0:
            raise RTStructError(f"PixelSpacing must be positive, got {spacings[0].tolist()}")
        return cls(iops[0, :3], iops[0, 3:], ipps, (float(spacings[0, 0]), float(spacings[0, 1])), rows, cols)

    @property
    def normal(self) -> np.ndarray:
        """row_dir x col_dir (slices ascend along it)."""
        return np.cross(self.row_dir, self.col_dir)

    @property
    def positions(self) -> np.ndarray:
        """Each slice's position along :attr:`normal` (mm), in the order given."""
        return self.ipps @ self.normal

    def orthonormal(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, normal) unit vectors, col re-orthogonalised (IOP is stored with a few decimals); raises
        when row and col are not direction cosines or not perpendicular."""
        row, col = self.row_dir, self.col_dir
        for name, v in (("row", row), ("column", col)):
            n = float(np.linalg.norm(v))
            if not np.isfinite(n) or n < 0.5:
                raise RTStructError(f"ImageOrientationPatient {name} is not a direction cosine vector: {v.tolist()}")
        row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
        if abs(float(row @ col)) > 0.01:
            raise RTStructError("ImageOrientationPatient row and column are not perpendicular")
        normal = np.cross(row, col)
        normal /= np.linalg.norm(normal)
        col = np.cross(normal, row)
        return row, col / np.linalg.norm(col), normal


def sort_slices(ct_datasets: Sequence[Dataset]) -> list[Dataset]:
    """Return the CT slices sorted ascending along the slice normal (row x column direction cosines).

    All slices must be single-frame and share FrameOfReferenceUID, orientation, Rows, Columns and PixelSpacing;
    two slices at the same position (e.g. a perfusion time series) are refused. A mask for this CT has shape
    (len(slices), Rows, Columns) and its first index follows the returned order.
    """
    slices = list(ct_datasets)
    if not slices:
        raise RTStructError("no CT slices given")
    for ds in slices:
        for kw in ("FrameOfReferenceUID", "SOPInstanceUID", "SOPClassUID"):
            if kw not in ds or ds.get(kw) in (None, ""):
                raise RTStructError(f"CT slice {ds.get('SOPInstanceUID', '?')} lacks {kw}")
        if ds.FrameOfReferenceUID != slices[0].FrameOfReferenceUID:
            raise RTStructError("CT slices belong to different frames of reference")
    try:
        stack = SliceStack.read(slices)
    except RTStructError as exc:
        raise RTStructError(f"CT slices: {exc}") from None
    positions = stack.positions
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
