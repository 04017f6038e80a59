"""What the index keeps of one received instance beyond its flat header, for choosing series by content.

Read from the header only (pixel data is never touched): the patient identity's issuer, the protocol name (tracer
rules), the series an RTSTRUCT was drawn on, and for multi-frame objects the position and time of every frame
(an Enhanced CT perfusion series is one object; an NM SPECT is one object whose frames are slices). Single-frame
images need none of this: their position and time are in the instance row. Called by node.header for objects that
take pydicom's path; the fast path (single-frame images) reads the flat attributes only.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.imaging.dicomtime import acquisition_datetime

__all__ = ["FrameGeometry", "frame_geometry", "referenced_series"]

_EPOCH = dt.datetime(1970, 1, 1)
#: Frames kept per object: an Enhanced CT perfusion object can have thousands; positions beyond are sampled.
MAX_FRAMES_KEPT = 4096


@dataclass(frozen=True)
class FrameGeometry:
    """Positions (patient mm) and acquisition times (seconds since 1970) of a multi-frame object's frames, and
    the orientation (row, column direction cosines) the frames share, where the object records them."""

    positions: tuple[tuple[float, float, float], ...] = ()
    times: tuple[float, ...] = ()
    orientation: tuple[float, ...] | None = None


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


def _first(seq: Any) -> Any:
    try:
        return seq[0]
    except (IndexError, TypeError, KeyError):
        return None


def _orientation_of(item: Any) -> tuple[float, ...] | None:
    plane = _first(item.get("PlaneOrientationSequence")) if item is not None else None
    return _floats(plane.get("ImageOrientationPatient"), 6) if plane is not None else None


def _seconds(when: dt.datetime | None) -> float | None:
    """Seconds since 1970 (naive), as node.imaging.dicomtime.acquisition_seconds counts them."""
    return None if when is None else (when - _EPOCH).total_seconds()


def frame_geometry(ds: Any, ipp: tuple[float, ...] | None, iop: tuple[float, ...] | None,
                   n_frames: int) -> FrameGeometry:
    """Frame positions/times of a multi-frame object (empty for a single frame or where not recorded).

    Enhanced objects: each frame's PlanePositionSequence and FrameContentSequence; the orientation from the
    shared (else the first per-frame) functional group. NM: frame k of a tomographic stack lies at
    ``ipp + k * SpacingBetweenSlices * (row x column)`` (|SliceThickness| when the spacing is not recorded), the
    convention node.imaging.volumes uses to build the volume. RT Dose: the planes of its GridFrameOffsetVector.
    Other multi-frame objects: no frame positions.
    """
    if n_frames <= 1:
        return FrameGeometry()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        shared = _first(ds.get("SharedFunctionalGroupsSequence"))
        orientation = _orientation_of(shared) or iop
        positions: list[tuple[float, float, float]] = []
        times: list[float] = []
        step = max(1, -(-len(per_frame) // MAX_FRAMES_KEPT))  # ceil: at most MAX_FRAMES_KEPT frames
        for i, item in enumerate(per_frame):
            if i % step:
                continue
            if orientation is None:
                orientation = _orientation_of(item)
            plane = _first(item.get("PlanePositionSequence"))
            pos = _floats(plane.get("ImagePositionPatient"), 3) if plane is not None else None
            if pos is not None:
                positions.append((pos[0], pos[1], pos[2]))
            content = _first(item.get("FrameContentSequence"))
            seconds = _seconds(acquisition_datetime(ds, content)) if content is not None else None
            if seconds is not None:
                times.append(seconds)
        return FrameGeometry(tuple(positions), tuple(times), orientation)
    modality = str(ds.get("Modality", "")).strip()
    if ipp is None or iop is None or modality not in ("NM", "RTDOSE"):
        return FrameGeometry(orientation=iop)
    if modality == "RTDOSE":
        return _dose_planes(ds, ipp, iop, n_frames)
    spacing = _number(ds.get("SpacingBetweenSlices"))
    if not spacing:
        spacing = abs(_number(ds.get("SliceThickness")) or 0.0)
    if not spacing:
        return FrameGeometry(orientation=iop)
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    origin = np.array(ipp)
    n = min(n_frames, MAX_FRAMES_KEPT)
    pts = origin + np.outer(np.arange(n) * spacing, normal)
    return FrameGeometry(tuple((float(p[0]), float(p[1]), float(p[2])) for p in np.round(pts, 3)), (), iop)


def _dose_planes(ds: Any, ipp: tuple[float, ...], iop: tuple[float, ...], n_frames: int) -> FrameGeometry:
    """RT Dose grid planes: frame k lies at ``ipp + (GridFrameOffsetVector[k] - GridFrameOffsetVector[0]) *
    (row x column)`` (offsets relative to the first plane, or absolute along the normal: PS3.3 C.8.8.3.2)."""
    try:
        offsets = [float(v) for v in ds.get("GridFrameOffsetVector") or ()]
    except (TypeError, ValueError):
        offsets = []
    if len(offsets) != n_frames:
        return FrameGeometry(orientation=iop)
    normal = np.cross(np.array(iop[:3]), np.array(iop[3:]))
    steps = np.array(offsets[:MAX_FRAMES_KEPT]) - offsets[0]
    pts = np.array(ipp) + np.outer(steps, normal)
    return FrameGeometry(tuple((float(p[0]), float(p[1]), float(p[2])) for p in np.round(pts, 3)), (), iop)


def _number(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def referenced_series(ds: Any) -> tuple[str, ...]:
    """The series an RTSTRUCT's contours were drawn on (ReferencedFrameOfReference > RTReferencedStudy >
    RTReferencedSeries), in order, without repeats."""
    out: list[str] = []
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence") or ():
        for study in ref_for.get("RTReferencedStudySequence") or ():
            for series in study.get("RTReferencedSeriesSequence") or ():
                uid = str(series.get("SeriesInstanceUID", "") or "").strip()
                if uid and uid not in out:
                    out.append(uid)
    return tuple(out)
