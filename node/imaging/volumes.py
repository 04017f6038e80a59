"""DICOM series -> SimpleITK volumes with their true patient geometry, and masks between CT slices and images.

Geometry is always taken from each slice's own ImagePositionPatient (never SliceLocation or InstanceNumber),
so feet-first series and series with gaps or mixed slice spacing land in the right place.

Mask order convention: a mask for a CT series is a bool array ``(n_slices, rows, cols)`` whose index ``k``
follows the list of CT datasets handed over with it (normally ``rtstruct.sort_slices(datasets)``). The helpers
below locate every slice by its own position, so they work for any order the caller uses.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.pixels import pixel_array

from node.imaging.errors import VolumeError
from rtstruct.errors import RTStructError
from rtstruct.geometry import SliceStack

logger = logging.getLogger(__name__)

__all__ = [
    "VolumeError",
    "SliceGeometry",
    "slice_geometry",
    "ct_series_image",
    "nm_image",
    "mask_to_image",
    "mask_to_array",
    "image_to_mask",
    "array_to_mask",
    "image_geometry",
]

#: Largest deviation (mm) of any slice from a uniform stack before the series counts as non-uniform.
UNIFORM_TOLERANCE_MM = 0.02
#: ... or this fraction of the median spacing, whichever is larger (scanners round IPP to 0.1 mm or so).
UNIFORM_TOLERANCE_FRACTION = 0.01
#: In-plane shift (mm) between slices beyond which the stack is sheared (gantry tilt) and refused.
SHEAR_TOLERANCE_MM = 0.05
#: Orientation vectors of two slices that differ by more than this (unit-vector components) are "different".
ORIENTATION_TOLERANCE = 1e-3


class SliceGeometry:
    """A stack of single-frame slices read by ``rtstruct.geometry.SliceStack`` (the one slice-stack reader), with
    exact (orthonormal) axes for SimpleITK: `row`, `col`, `normal` = row x col; `positions` are each slice's IPP
    projected on `normal` (mm), in the order of the datasets given."""

    def __init__(self, stack: SliceStack) -> None:
        self.row, self.col, self.normal = stack.orthonormal()
        self.ipps = stack.ipps
        self.positions = stack.ipps @ self.normal
        self.pixel_spacing = stack.spacing  # (between rows, between columns) as in DICOM PixelSpacing
        self.rows = stack.rows
        self.cols = stack.cols


def _orthonormal(row: np.ndarray, col: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-orthogonalise IOP (stored with a few decimals) so SimpleITK gets an exact rotation matrix."""
    stack = SliceStack(np.asarray(row, dtype=float), np.asarray(col, dtype=float), np.zeros((0, 3)), (1.0, 1.0), 1, 1)
    try:
        r, c, _ = stack.orthonormal()
    except RTStructError as exc:
        raise VolumeError(f"{what}: {exc}") from None
    return r, c


def slice_geometry(datasets: Sequence[Dataset], what: str = "CT series") -> SliceGeometry:
    """Check that single-frame slices form one stack (same orientation, size, pixel spacing) and read it."""
    try:
        return SliceGeometry(SliceStack.read(datasets, orientation_tolerance=ORIENTATION_TOLERANCE))
    except RTStructError as exc:
        raise VolumeError(f"{what}: {exc}") from None


def _direction(row: np.ndarray, col: np.ndarray, stack: np.ndarray) -> tuple[float, ...]:
    """SimpleITK direction: the columns of the matrix are the image axes (x = row dir, y = col dir, z = stack)."""
    return tuple(float(v) for v in np.column_stack([row, col, stack]).ravel())


def _rescaled(ds: Dataset, out: np.ndarray | None = None) -> np.ndarray:
    """Pixel data with the Modality LUT (RescaleSlope/Intercept) applied, as float32 (into `out` if given).

    Decoded with pydicom.pixels.pixel_array, which, unlike ``ds.pixel_array``, does not keep a decoded copy
    on the dataset (the caller holds the datasets; cached copies would double the memory of every series).
    """
    try:
        pixels = pixel_array(ds)
    except Exception as exc:  # pydicom raises several types for absent/undecodable pixel data
        raise VolumeError(f"cannot decode pixel data of {getattr(ds, 'SOPInstanceUID', '?')}: {exc}") from None
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    out[...] = pixels
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def ct_series_image(datasets: Sequence[Dataset], *, nonuniform: Literal["resample", "refuse"] = "resample",
                    what: str = "CT series", dtype: type = np.float32) -> sitk.Image:
    """A volume (Hounsfield units, float32 or `dtype`) of single-frame CT slices, with the series' geometry.

    An integer `dtype` (e.g. np.int16: half the memory, enough for registration) rounds and clips the values.

    Slices are ordered along row x column by their own ImagePositionPatient. When the slice positions are not
    uniform (gaps, mixed thickness) the stack is linearly resampled along the normal at the smallest spacing
    (``nonuniform="resample"``) or refused (``"refuse"``). Repeated positions (a multi-phase series) and
    sheared stacks (gantry tilt) are refused with :class:`VolumeError`.
    """
    geo = slice_geometry(datasets, what)
    order = np.argsort(geo.positions, kind="stable")
    pos = geo.positions[order]
    ipps = geo.ipps[order]
    if len(pos) > 1 and np.diff(pos).min() < 1e-3:
        raise VolumeError(f"{what}: several images share one slice position (multi-phase or duplicated series); "
                          "send a single 3D series")
    inplane = ipps - np.outer(pos, geo.normal)
    if np.linalg.norm(inplane - inplane[0], axis=1).max() > SHEAR_TOLERANCE_MM:
        raise VolumeError(f"{what}: slice origins shift in-plane from slice to slice (gantry tilt?); "
                          "tilted/sheared stacks are not supported")
    volume: np.ndarray = np.empty((len(order), geo.rows, geo.cols), dtype=dtype)
    limits = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    for k, i in enumerate(order):
        if limits is None:
            _rescaled(datasets[i], out=volume[k])
        else:
            volume[k] = np.clip(np.rint(_rescaled(datasets[i])), limits.min, limits.max)
    if len(pos) == 1:
        dz = float(getattr(datasets[0], "SliceThickness", 1.0) or 1.0)
    else:
        gaps = np.diff(pos)
        dz = float((pos[-1] - pos[0]) / (len(pos) - 1))
        deviation = np.abs(pos - (pos[0] + dz * np.arange(len(pos)))).max()
        if deviation > max(UNIFORM_TOLERANCE_MM, UNIFORM_TOLERANCE_FRACTION * float(np.median(gaps))):
            if nonuniform == "refuse":
                raise VolumeError(f"{what}: slice spacing is not uniform (spacings {gaps.min():.3g}-"
                                  f"{gaps.max():.3g} mm)")
            volume, pos = _resample_stack(volume, pos, float(gaps.min()))
            if limits is not None:
                volume = np.rint(volume).astype(dtype)
            dz = float(pos[1] - pos[0])
            logger.warning("%s: non-uniform slice spacing (%.3g-%.3g mm) resampled to %.3g mm (%d slices)",
                           what, gaps.min(), gaps.max(), dz, len(pos))
    image = sitk.GetImageFromArray(volume)
    del volume  # SimpleITK holds its own copy
    image.SetSpacing((geo.pixel_spacing[1], geo.pixel_spacing[0], dz))
    image.SetOrigin(tuple(float(v) for v in inplane[0] + pos[0] * geo.normal))
    image.SetDirection(_direction(geo.row, geo.col, geo.normal))
    return image


def _resample_stack(volume: np.ndarray, pos: np.ndarray, max_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of slices at sorted positions `pos` onto a uniform grid from the first to the last
    slice with a step of at most `max_step` (so every source slice has a grid slice within half a step)."""
    n = int(np.ceil((pos[-1] - pos[0]) / max_step - 1e-6)) + 1
    target = np.linspace(pos[0], pos[-1], n)
    lower = np.clip(np.searchsorted(pos, target, side="right") - 1, 0, len(pos) - 2)
    w = ((target - pos[lower]) / (pos[lower + 1] - pos[lower])).astype(np.float32)[:, None, None]
    return (1 - w) * volume[lower] + w * volume[lower + 1], target


def nm_image(ds: Dataset) -> sitk.Image:
    """A float32 volume of an NM multi-frame RECON TOMO (reconstructed SPECT) with its patient geometry.

    Origin and orientation come from DetectorInformationSequence[0] (where the NM IOD keeps them); the stack
    direction is sign(SpacingBetweenSlices) x (row x column), the z spacing |SpacingBetweenSlices| (fallback
    SliceThickness); frames are put in SliceVector order; RescaleSlope/Intercept are applied when present.
    """
    image_type = [str(v).upper() for v in getattr(ds, "ImageType", [])]
    if getattr(ds, "Modality", "") != "NM":
        raise VolumeError(f"expected an NM image, got Modality {getattr(ds, 'Modality', '?')!r}")
    if len(image_type) < 3 or image_type[2] != "RECON TOMO":
        shown = "\\".join(image_type)
        raise VolumeError(f"NM image is not a reconstructed tomogram (ImageType {shown!r}; "
                          "value 3 must be RECON TOMO)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    source = ds
    detector = getattr(ds, "DetectorInformationSequence", None)
    if detector and "ImagePositionPatient" in detector[0] and "ImageOrientationPatient" in detector[0]:
        source = detector[0]
    elif "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        logger.warning("NM image: geometry taken from the top level (not DetectorInformationSequence)")
    else:
        raise VolumeError("NM image has no ImagePositionPatient/ImageOrientationPatient in "
                          "DetectorInformationSequence: its position in the patient is unknown")
    iop = [float(x) for x in source.ImageOrientationPatient]
    row, col = _orthonormal(np.asarray(iop[:3]), np.asarray(iop[3:]), "NM image")
    origin = np.asarray([float(x) for x in source.ImagePositionPatient], dtype=float)
    if "PixelSpacing" not in ds:
        raise VolumeError("NM image has no PixelSpacing")
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    sbs = float(getattr(ds, "SpacingBetweenSlices", 0) or 0)
    if sbs == 0:
        sbs = float(getattr(ds, "SliceThickness", 0) or 0)
        if sbs <= 0:
            raise VolumeError("NM image has neither SpacingBetweenSlices nor SliceThickness: slice spacing unknown")
        logger.info("NM image: no SpacingBetweenSlices, using SliceThickness %.3g mm", sbs)
    pixels = _rescaled(ds)
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] != frames:
        raise VolumeError(f"NM image pixel data has shape {pixels.shape}, expected {frames} frames "
                          "(colour or multi-detector NM is not supported)")
    slice_vector = getattr(ds, "SliceVector", None)
    if slice_vector is not None and len(slice_vector) == frames:
        sv = np.asarray([int(v) for v in slice_vector])
        if sorted(sv.tolist()) != list(range(1, frames + 1)):
            raise VolumeError("NM SliceVector does not number the slices 1..N once each")
        pixels = pixels[np.argsort(sv, kind="stable")]
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels, dtype=np.float32))
    image.SetSpacing((spacing[1], spacing[0], abs(sbs)))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(_direction(row, col, np.sign(sbs) * np.cross(row, col)))
    return image


def image_geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin (3,), direction matrix (3, 3) with axes as columns, spacing (3,)) of a SimpleITK image."""
    return (np.asarray(image.GetOrigin(), dtype=float),
            np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
            np.asarray(image.GetSpacing(), dtype=float))


def _slice_indices(image: sitk.Image, ct_datasets: Sequence[Dataset]) -> np.ndarray:
    """Continuous z index in `image` of every CT slice, after checking the slices share its in-plane grid."""
    geo = slice_geometry(ct_datasets)
    origin, direction, spacing = image_geometry(image)
    size = image.GetSize()
    if (geo.cols, geo.rows) != tuple(size[:2]):
        raise VolumeError(f"mask slices are {geo.rows}x{geo.cols} but the image is {size[1]}x{size[0]}")
    if (np.abs(direction[:, 0] - geo.row).max() > ORIENTATION_TOLERANCE
            or np.abs(direction[:, 1] - geo.col).max() > ORIENTATION_TOLERANCE
            or abs(spacing[0] - geo.pixel_spacing[1]) > 1e-4 or abs(spacing[1] - geo.pixel_spacing[0]) > 1e-4):
        raise VolumeError("CT slices and image do not share an in-plane grid (orientation or pixel spacing)")
    index = (np.linalg.inv(direction) @ (geo.ipps - origin).T).T / spacing
    if np.abs(index[:, :2]).max() > 0.05:
        raise VolumeError("CT slices and image do not share an in-plane grid (slice origins differ)")
    return index[:, 2]


def array_to_mask(array: np.ndarray, grid: sitk.Image, ct_datasets: Sequence[Dataset]) -> np.ndarray:
    """Bool mask ``(n_slices, rows, cols)`` following `ct_datasets` from a ``(z, y, x)`` array on `grid`.

    `grid` must share the CT's in-plane grid (as built by :func:`ct_series_image`); its z grid may differ
    (a non-uniform series that was resampled): every CT slice takes the grid slice nearest to it. When the
    grid's slices are the CT slices in order, the (bool) array itself is returned, not a copy.
    """
    nz = grid.GetSize()[2]
    if tuple(array.shape) != tuple(grid.GetSize())[::-1]:
        raise VolumeError(f"array shape {array.shape} does not match the image grid {grid.GetSize()[::-1]}")
    kz = _slice_indices(grid, ct_datasets)
    if kz.min() < -0.5 - 1e-3 or kz.max() > nz - 0.5 + 1e-3:
        raise VolumeError("some CT slices lie outside the image volume")
    mask = array if array.dtype == bool else array != 0
    nearest = np.clip(np.rint(kz).astype(int), 0, nz - 1)
    if len(nearest) == nz and (nearest == np.arange(nz)).all():
        return mask
    return mask[nearest]


def image_to_mask(image: sitk.Image, ct_datasets: Sequence[Dataset]) -> np.ndarray:
    """Bool mask ``(n_slices, rows, cols)`` following `ct_datasets`, sampled from `image` (nearest slice)."""
    # `!= 0` makes a new array, so nothing returned refers to the image's buffer
    return array_to_mask(sitk.GetArrayViewFromImage(image) != 0, image, ct_datasets)


def mask_to_array(mask: np.ndarray, ct_datasets: Sequence[Dataset], reference: sitk.Image) -> np.ndarray:
    """Bool ``(z, y, x)`` array on the grid of `reference` from a mask ``(n_slices, rows, cols)`` following
    `ct_datasets`: each grid slice takes the nearest CT slice (the mask itself when they are the same slices).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or mask.shape[0] != len(ct_datasets):
        raise VolumeError(f"mask shape {mask.shape} does not match {len(ct_datasets)} CT slices")
    kz = _slice_indices(reference, ct_datasets)
    nz = reference.GetSize()[2]
    nearest = np.abs(np.arange(nz)[:, None] - kz[None, :]).argmin(axis=1)
    if len(nearest) == mask.shape[0] and (nearest == np.arange(nz)).all():
        return mask
    return mask[nearest]


def mask_to_image(mask: np.ndarray, ct_datasets: Sequence[Dataset], reference: sitk.Image) -> sitk.Image:
    """uint8 image on the grid of `reference` from a mask ``(n_slices, rows, cols)`` following `ct_datasets`."""
    out = sitk.GetImageFromArray(mask_to_array(mask, ct_datasets, reference).astype(np.uint8))
    out.CopyInformation(reference)
    return out
