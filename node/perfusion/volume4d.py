"""4D assembly of a CT perfusion series: (time, slice, row, column) HU array plus an explicit time vector.

Accepts classic CT (one file per slice, each ImagePositionPatient repeated once per time point) or one Enhanced
CT multi-frame. Never trusts InstanceNumber or SliceLocation: frames are grouped by ImagePositionPatient and
sorted by acquisition time (dicom-notes.md "CT perfusion encoding"). The time vector may be non-uniform.

The volume is reduced in-plane by block averaging to a working grid of about 1.5-2 mm pixels: the maps are
smoothed by a few mm anyway, block means cut noise and memory fourfold for a 512 x 512 series.
"""
from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom.pixels
from pydicom import Dataset

from node.imaging.dicomtime import UNDATED, acquisition_datetime
from node.imaging.geometry import Grid
from node.perfusion.errors import PerfusionInputError
from rtstruct.errors import RTStructError
from rtstruct.geometry import SliceStack

__all__ = ["Grid", "Volume4D", "assemble", "block_mean", "WORKING_PIXEL_MM"]

logger = logging.getLogger(__name__)

#: In-plane working pixel size the block-mean reduction aims at (largest factor with pixel <= this).
WORKING_PIXEL_MM = 2.0
_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit / explicit VR little endian
_POS_TOL_MM = 0.05  # two frames closer than this along the slice normal are the same slice position
_GEOM_TOL = 1e-3


@dataclass
class Volume4D:
    """A perfusion series on the working grid, with what is needed to reference and display its sources."""

    data: np.ndarray  # (T, Z, Y, X) float32 HU
    times: np.ndarray  # (T,) seconds from the first time point
    grid: Grid  # working grid (after block averaging)
    native_grid: Grid  # acquisition grid
    factor: int  # in-plane block-average factor native -> working
    #: classic CT: sources[t][k] is the dataset of time point t, slice k; Enhanced CT: one-element lists unused
    sources: list[list[Dataset]] = field(default_factory=list)
    multiframe: Dataset | None = None  # Enhanced CT source
    frame_index: np.ndarray | None = None  # Enhanced CT: (T, Z) 0-based frame numbers
    rescale: np.ndarray | None = None  # (T, Z, 2) slope, intercept per frame
    time_spread_s: float = 0.0  # largest deviation of a slice's time from its time point's time

    @property
    def n_times(self) -> int:
        return int(self.data.shape[0])

    def source_images(self, t: int) -> list[Dataset]:
        """Datasets to name as sources of maps derived at time point t (classic: its slices; else the multi-frame)."""
        if self.multiframe is not None:
            return [self.multiframe]
        return list(self.sources[t])

    def source_ref(self, t: int, k: int) -> tuple[Dataset, int | None]:
        """(dataset, 1-based frame number or None) holding time point t, slice k."""
        if self.multiframe is not None:
            assert self.frame_index is not None  # set with `multiframe`
            return self.multiframe, int(self.frame_index[t, k]) + 1
        return self.sources[t][k], None

    def native_slice(self, t: int, k: int) -> np.ndarray:
        """Full-resolution HU image of time point t, slice k (decoded on demand, for display)."""
        assert self.rescale is not None  # set by assemble()
        slope, intercept = self.rescale[t, k]
        if self.multiframe is not None:
            assert self.frame_index is not None
            raw = pydicom.pixels.pixel_array(self.multiframe, index=int(self.frame_index[t, k]))
        else:
            raw = pydicom.pixels.pixel_array(self.sources[t][k])
        return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


@dataclass
class _Frame:
    """One 2D frame of the input with its geometry and time, independent of classic/enhanced encoding."""

    ipp: np.ndarray
    iop: np.ndarray
    spacing: np.ndarray  # PixelSpacing: (row spacing, column spacing)
    rows: int
    cols: int
    time: _dt.datetime | None
    slope: float
    intercept: float
    label: str  # for messages: SOP Instance UID or "frame n"
    dataset: Dataset
    frame: int | None  # index into a multi-frame, None for single-frame


# ------------------------------------------------------------------ frame extraction
def _require(ds: Dataset, keyword: str, where: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise PerfusionInputError(f"CT perfusion: {where} has no {keyword}; cannot place it in the 4D volume")
    return value


def _nominal_time(ds: Dataset) -> _dt.datetime | None:
    """Time from TemporalPositionIdentifier x TemporalResolution (ms) when a scanner writes no clock time."""
    tpi, res = ds.get("TemporalPositionIdentifier"), ds.get("TemporalResolution")
    if tpi is None or res in (None, "") or float(res) <= 0:
        return None
    return _dt.datetime.combine(UNDATED, _dt.time(0)) + _dt.timedelta(seconds=(int(tpi) - 1) * float(res) / 1000.0)


def _classic_frames(datasets: Sequence[Dataset]) -> list[_Frame]:
    if all(acquisition_datetime(ds) is None for ds in datasets) and all(_nominal_time(ds) for ds in datasets):
        logger.info("CT perfusion: no acquisition times; using TemporalPositionIdentifier x TemporalResolution")
        timer = _nominal_time
    else:
        timer = acquisition_datetime
    frames = []
    for ds in datasets:
        label = f"instance {ds.get('SOPInstanceUID', '?')}"
        if "PixelData" not in ds:
            raise PerfusionInputError(f"CT perfusion: {label} has no pixel data")
        frames.append(_Frame(
            ipp=np.array(_require(ds, "ImagePositionPatient", label), dtype=float),
            iop=np.array(_require(ds, "ImageOrientationPatient", label), dtype=float),
            spacing=np.array(_require(ds, "PixelSpacing", label), dtype=float),
            rows=int(_require(ds, "Rows", label)), cols=int(_require(ds, "Columns", label)),
            time=timer(ds), slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
            intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0), label=label, dataset=ds, frame=None))
    return frames


def _group_item(ds: Dataset, i: int, sequence: str) -> Dataset | None:
    """Item of functional group `sequence` for frame i: per-frame if present, else shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for item in (per_frame[i] if per_frame else None, shared[0] if shared else None):
        seq = item.get(sequence) if item is not None else None
        if seq:
            return seq[0]
    return None


def _enhanced_frames(ds: Dataset) -> list[_Frame]:
    n = int(ds.NumberOfFrames)
    if "PerFrameFunctionalGroupsSequence" not in ds or len(ds.PerFrameFunctionalGroupsSequence) != n:
        raise PerfusionInputError("Enhanced CT perfusion: Per-frame Functional Groups are missing or incomplete")
    frames = []
    for i in range(n):
        label = f"frame {i + 1}"
        pos = _group_item(ds, i, "PlanePositionSequence")
        ori = _group_item(ds, i, "PlaneOrientationSequence")
        meas = _group_item(ds, i, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None:
            raise PerfusionInputError(f"Enhanced CT perfusion: {label} lacks plane position/orientation/pixel "
                                      "measures; cannot place it in the 4D volume")
        rescale = _group_item(ds, i, "PixelValueTransformationSequence")
        src = rescale if rescale is not None else ds
        frames.append(_Frame(
            ipp=np.array(_require(pos, "ImagePositionPatient", label), dtype=float),
            iop=np.array(_require(ori, "ImageOrientationPatient", label), dtype=float),
            spacing=np.array(_require(meas, "PixelSpacing", label), dtype=float),
            rows=int(ds.Rows), cols=int(ds.Columns),
            time=acquisition_datetime(ds, _group_item(ds, i, "FrameContentSequence")),
            slope=float(src.get("RescaleSlope", 1.0) or 1.0), intercept=float(src.get("RescaleIntercept", 0.0) or 0.0),
            label=label, dataset=ds, frame=i))
    return frames


# ------------------------------------------------------------------ checks and grouping
def _stack(frames: list[_Frame]) -> SliceStack:
    """The frames' common geometry, checked by the project's one slice-stack reader (same orientation, size and
    pixel spacing), and one frame of reference."""
    try:
        stack = SliceStack.from_planes(np.array([f.iop for f in frames]), np.array([f.ipp for f in frames]),
                                       np.array([f.spacing for f in frames]), [(f.rows, f.cols) for f in frames],
                                       orientation_tolerance=_GEOM_TOL, spacing_tolerance=_GEOM_TOL)
        stack.orthonormal()
    except RTStructError as exc:
        raise PerfusionInputError(f"CT perfusion: inconsistent geometry: {exc}") from None
    forms = {str(f.dataset.get("FrameOfReferenceUID", "")) for f in frames}
    if len(forms) > 1:
        raise PerfusionInputError("CT perfusion: the series spans several frames of reference (patient moved "
                                  "off the table or mixed series); cannot build one 4D volume")
    return stack


def _group_positions(frames: list[_Frame], s: np.ndarray) -> list[list[int]]:
    """Indices of frames per slice position, positions (`s`, each frame's along the normal) sorted."""
    order = np.argsort(s, kind="stable")
    groups: list[list[int]] = [[int(order[0])]]
    for a, b in zip(order[:-1], order[1:], strict=True):
        if s[b] - s[a] > _POS_TOL_MM:
            groups.append([])
        groups[-1].append(int(b))
    # Same offset along the normal but shifted in-plane means a tilted or mixed series.
    for g in groups:
        ipps = np.array([frames[i].ipp for i in g])
        if np.abs(ipps - ipps[0]).max() > 0.5:
            raise PerfusionInputError("CT perfusion: inconsistent geometry: frames at the same slice position "
                                      "have different ImagePositionPatient in-plane (table moved?)")
    return groups


def _time_matrix(frames: list[_Frame], groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(Z, T) frame indices sorted by time per slice, and their times in seconds from the earliest frame."""
    missing = [f.label for f in frames if f.time is None]
    if missing:
        raise PerfusionInputError(f"CT perfusion: {len(missing)} frame(s) have no acquisition time "
                                  f"(AcquisitionDateTime / AcquisitionTime / ContentTime), e.g. {missing[0]}; "
                                  "the time vector cannot be built")
    counts = {len(g) for g in groups}
    if len(counts) != 1:
        lo = min(groups, key=len)
        pos = frames[lo[0]].ipp
        raise PerfusionInputError(f"CT perfusion: slice positions have different numbers of time points "
                                  f"({sorted(counts)}), e.g. the slice at {np.round(pos, 1).tolist()} mm has "
                                  f"{len(lo)}; the series is incomplete or mixed")
    when = [f.time for f in frames if f.time is not None]  # all of them (checked above)
    t0 = min(when)
    index = np.zeros((len(groups), counts.pop()), dtype=np.int64)
    secs = np.zeros(index.shape)
    for z, g in enumerate(groups):
        tz = np.array([(when[i] - t0).total_seconds() for i in g])
        order = np.argsort(tz, kind="stable")
        if np.any(np.diff(tz[order]) <= 1e-6):
            raise PerfusionInputError(f"CT perfusion: two frames at slice position "
                                      f"{np.round(frames[g[0]].ipp, 1).tolist()} mm have the same acquisition "
                                      "time (duplicate instances or missing time resolution)")
        index[z] = np.array(g)[order]
        secs[z] = tz[order]
    return index, secs


def _reduction_factor(spacing: np.ndarray) -> int:
    return max(1, int(np.floor(WORKING_PIXEL_MM / float(max(spacing)) + 1e-6)))


def block_mean(img: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f pixel blocks of the last two axes (trailing rows/columns that do not fill a block dropped).

    Summed as f x f strided views (a reshaped mean over two non-adjacent axes is several times slower)."""
    if f == 1:
        return img.astype(np.float32, copy=False)
    r, c = img.shape[-2] // f * f, img.shape[-1] // f * f
    out = np.zeros(img.shape[:-2] + (r // f, c // f), dtype=np.float32)
    for i in range(f):
        for j in range(f):
            out += img[..., i:r:f, j:c:f]
    out *= np.float32(1.0 / (f * f))
    return out


def _native_pixels(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame instance: read straight from uncompressed little-endian pixel
    data (the common case, several times faster than the general decoder), else via pydicom."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    bits, signed = int(ds.get("BitsAllocated", 0)), int(ds.get("PixelRepresentation", 0))
    if (ts in _NATIVE_LITTLE_ENDIAN and bits == 16 and int(ds.get("SamplesPerPixel", 1)) == 1
            and int(ds.get("NumberOfFrames", 1) or 1) == 1 and "PixelData" in ds):
        rows, cols = int(ds.Rows), int(ds.Columns)
        raw = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2", count=rows * cols)
        stored = int(ds.get("BitsStored", 16))
        if stored < 16:  # bits above BitsStored are not part of the value
            raw = raw & np.array((1 << stored) - 1, raw.dtype)
            if signed:
                raw = np.where(raw >= (1 << (stored - 1)), raw - (1 << stored), raw).astype(np.int16)
        return raw.reshape(rows, cols)
    return pydicom.pixels.pixel_array(ds)


def assemble(datasets: Sequence[Dataset]) -> Volume4D:
    """Build the 4D volume of one CT perfusion series; raises PerfusionInputError with the reason if it cannot."""
    if not datasets:
        raise PerfusionInputError("CT perfusion: the series has no instances")
    multi = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi and len(datasets) > 1:
        raise PerfusionInputError("CT perfusion: the series mixes multi-frame and other instances; send either "
                                  "one Enhanced CT multi-frame or classic single-frame slices")
    enhanced = multi[0] if multi else None
    frames = _enhanced_frames(enhanced) if enhanced is not None else _classic_frames(datasets)
    stack = _stack(frames)
    f0 = frames[0]
    row_dir, col_dir, normal = stack.orthonormal()
    along = stack.ipps @ normal
    groups = _group_positions(frames, along)
    index, secs = _time_matrix(frames, groups)
    n_z, n_t = index.shape
    if n_t < 3:
        raise PerfusionInputError(f"CT perfusion: only {n_t} time point(s); at least 3 are needed for slopes")
    times = np.median(secs, axis=0)
    times -= times[0]
    spread = float(np.abs(secs - secs[:, :1] - times).max())
    min_dt = float(np.diff(times).min())
    if min_dt <= 0 or spread > 0.5 * min_dt:
        raise PerfusionInputError(f"CT perfusion: slices of one time point were acquired up to {spread:.1f} s apart "
                                  f"while time points are {min_dt:.1f} s apart; cannot form volumes at common times")
    s = np.array([along[g[0]] for g in groups])
    if n_z > 1:
        steps = np.diff(s)
        if np.abs(steps - steps.mean()).max() > max(0.05, 0.01 * steps.mean()):
            raise PerfusionInputError(f"CT perfusion: inconsistent geometry: slice spacing varies "
                                      f"({steps.min():.2f}-{steps.max():.2f} mm); missing slices?")
        dz = float(steps.mean())
    else:
        dz = float(enhanced.get("SliceThickness", 1.0) if enhanced is not None
                   else f0.dataset.get("SliceThickness", 1.0) or 1.0)
    first = frames[index[0, 0]]
    native = Grid(origin=first.ipp.copy(), row_dir=row_dir, col_dir=col_dir, normal=normal,
                  spacing=np.array([dz, f0.spacing[0], f0.spacing[1]]), shape=(n_z, f0.rows, f0.cols))
    f = _reduction_factor(f0.spacing)
    half = (f - 1) / 2.0  # a block's centre sits half a block minus half a pixel from its first pixel
    grid = Grid(origin=first.ipp + half * (f0.spacing[1] * row_dir + f0.spacing[0] * col_dir),
                row_dir=row_dir, col_dir=col_dir, normal=normal,
                spacing=np.array([dz, f0.spacing[0] * f, f0.spacing[1] * f]),
                shape=(n_z, f0.rows // f, f0.cols // f))
    data = np.empty((n_t, n_z, f0.rows // f, f0.cols // f), dtype=np.float32)
    rescale = np.empty((n_t, n_z, 2))
    all_pixels = pydicom.pixels.pixel_array(enhanced) if enhanced is not None else None
    if all_pixels is not None and all_pixels.ndim == 2:
        all_pixels = all_pixels[np.newaxis]
    for z in range(n_z):
        for t in range(n_t):
            fr = frames[index[z, t]]
            raw = all_pixels[fr.frame] if all_pixels is not None else _native_pixels(fr.dataset)
            img = raw.astype(np.float32) * np.float32(fr.slope) + np.float32(fr.intercept)
            data[t, z] = block_mean(img, f)
            rescale[t, z] = fr.slope, fr.intercept
    del all_pixels
    vol = Volume4D(data=data, times=times, grid=grid, native_grid=native, factor=f, rescale=rescale,
                   time_spread_s=spread)
    if enhanced is not None:
        vol.multiframe = enhanced
        vol.frame_index = np.array([[frames[index[z, t]].frame for z in range(n_z)] for t in range(n_t)])
    else:
        vol.sources = [[frames[index[z, t]].dataset for z in range(n_z)] for t in range(n_t)]
    logger.info("CT perfusion 4D: %d time points over %.1f s, %d slices, %dx%d -> %dx%d (factor %d)",
                n_t, times[-1], n_z, f0.rows, f0.cols, grid.shape[1], grid.shape[2], f)
    return vol
