"""Secondary Capture rendition of a Parametric Map, for destinations that refuse the Parametric Map SOP class.

The map's frames are converted to real-world values, windowed to 8-bit grayscale and tiled into one single-frame
Secondary Capture image (highdicom ``SCImage`` is single-frame), top-left first, in slice-position order. The SC
names the map and the map's own source images in SourceImageSequence and states the window and unit in
DerivationDescription, so a reader can tell what a grey level means. Its UIDs are derived from the map's SOP
Instance UID, so a repeated fallback produces the same instance (peers keep one copy, nothing is duplicated).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from pydicom import Dataset
from pydicom.uid import ParametricMapStorage, generate_uid

from node.derived import NOT_FOR_DIAGNOSIS
from node.imaging.capture import ImageRef, secondary_capture

__all__ = ["FallbackError", "pm_to_secondary_capture", "MAX_MOSAIC_SIDE"]

logger = logging.getLogger(__name__)

#: Longest side of the mosaic in pixels; larger maps are subsampled by an integer stride to stay viewable.
MAX_MOSAIC_SIDE = 4096


class FallbackError(ValueError):
    """The object cannot be rendered as a Secondary Capture (not a Parametric Map, or no pixel data)."""


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    """First item of `keyword` in the shared functional groups, else in the first per-frame group."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if seq and keyword in seq[0] and seq[0][keyword].value:
            return seq[0][keyword].value[0]
    return None


def _rwv_mapping(ds: Dataset) -> tuple[float, float, str, str]:
    """(slope, intercept, LUT label, unit) of the first real-world value mapping (identity if there is none)."""
    rwv = _first(ds, "RealWorldValueMappingSequence")
    if rwv is None:
        return 1.0, 0.0, "", ""
    slope = float(rwv.get("RealWorldValueSlope", 1.0) or 1.0)
    intercept = float(rwv.get("RealWorldValueIntercept", 0.0) or 0.0)
    units = rwv.get("MeasurementUnitsCodeSequence")
    return slope, intercept, str(rwv.get("LUTLabel", "")), str(units[0].CodeValue) if units else ""


def _window(ds: Dataset, values: np.ndarray, stored_to_real: tuple[float, float]) -> tuple[float, float]:
    """(low, high) in real-world units: the map's own VOI window if it has one, else the 1st-99th percentile."""
    voi = _first(ds, "FrameVOILUTSequence")
    if voi is not None and "WindowCenter" in voi and "WindowWidth" in voi:
        c = float(np.ravel(voi.WindowCenter)[0])
        w = float(np.ravel(voi.WindowWidth)[0])
        slope, intercept = stored_to_real  # the VOI window applies to stored values
        lo, hi = sorted(((c - w / 2) * slope + intercept, (c + w / 2) * slope + intercept))
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if finite.size else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _frame_order(ds: Dataset, n: int) -> np.ndarray:
    """Frame indices sorted along the slice normal (feet to head for axial), else the stored order."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    orient = _first(ds, "PlaneOrientationSequence")
    if not per_frame or orient is None or len(per_frame) != n:
        return np.arange(n)
    try:
        iop = np.asarray(orient.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in per_frame])
    except (AttributeError, IndexError, KeyError, ValueError):
        return np.arange(n)
    return np.argsort(pos @ normal, kind="stable")


def _patient_orientation(ds: Dataset) -> tuple[str, str]:
    """Dominant patient-axis letters of the row and column directions (LPS: +x L, +y P, +z H)."""
    orient = _first(ds, "PlaneOrientationSequence")
    iop = np.asarray(orient.ImageOrientationPatient, dtype=float) if orient is not None else \
        np.array([1.0, 0, 0, 0, 1.0, 0])
    letters = (("R", "L"), ("A", "P"), ("F", "H"))

    def letter(v: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(v)))
        return letters[axis][1 if v[axis] > 0 else 0]

    return letter(iop[:3]), letter(iop[3:])


def _sources(ds: Dataset) -> list[tuple[str, str]]:
    """(SOP Class, SOP Instance) of the map's own source images, without duplicates, in first-seen order."""
    seen: dict[str, str] = {}
    for series in ds.get("ReferencedSeriesSequence", []):
        for inst in series.get("ReferencedInstanceSequence", []):
            seen.setdefault(str(inst.ReferencedSOPInstanceUID), str(inst.ReferencedSOPClassUID))
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups, []):
            for der in group.get("DerivationImageSequence", []):
                for src in der.get("SourceImageSequence", []):
                    seen.setdefault(str(src.ReferencedSOPInstanceUID), str(src.ReferencedSOPClassUID))
    return [(cls, uid) for uid, cls in seen.items()]


def _mosaic(frames: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Tile (n, r, c) frames into one image; returns (image, tile rows, tile columns, subsampling stride)."""
    n, r, c = frames.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    stride = max(1, math.ceil(max(rows * r, cols * c) / MAX_MOSAIC_SIDE))
    frames = frames[:, ::stride, ::stride]
    _, r, c = frames.shape
    padded = np.zeros((rows * cols, r, c), dtype=frames.dtype)
    padded[:n] = frames
    image = padded.reshape(rows, cols, r, c).transpose(0, 2, 1, 3).reshape(rows * r, cols * c)
    return image, rows, cols, stride


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def pm_to_secondary_capture(ds: Dataset) -> Dataset:
    """A derived, windowed-grayscale Secondary Capture image of Parametric Map `ds` (see module docstring)."""
    if str(ds.get("SOPClassUID", "")) != ParametricMapStorage:
        raise FallbackError(f"not a Parametric Map (SOP Class {ds.get('SOPClassUID')})")
    try:
        stored = np.asarray(ds.pixel_array)
    except (AttributeError, ValueError, RuntimeError) as exc:
        raise FallbackError(f"cannot decode the Parametric Map's pixel data: {exc}") from exc
    if stored.ndim == 2:
        stored = stored[np.newaxis]
    slope, intercept, label, unit = _rwv_mapping(ds)
    values = stored.astype(np.float64) * slope + intercept
    lo, hi = _window(ds, values, (slope, intercept))
    grey = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    grey = np.where(np.isfinite(grey), np.rint(grey * 255.0), 0.0).astype(np.uint8)
    grey = grey[_frame_order(ds, grey.shape[0])]
    image, rows, cols, stride = _mosaic(grey)

    pm_uid = str(ds.SOPInstanceUID)
    spacing = _first(ds, "PixelMeasuresSequence")
    pixel_spacing = None
    if spacing is not None and "PixelSpacing" in spacing:
        pixel_spacing = (float(spacing.PixelSpacing[0]) * stride, float(spacing.PixelSpacing[1]) * stride)
    name = label or str(ds.get("ContentLabel", "MAP"))
    sc = secondary_capture(
        image, ds, [ImageRef(ParametricMapStorage, pm_uid)] + [ImageRef(cls, uid) for cls, uid in _sources(ds)],
        series_uid=generate_uid(entropy_srcs=[pm_uid, "secondary-capture series"]),
        series_number=int(ds.get("SeriesNumber", 0) or 0) % 100000 + 1000,
        sop_instance_uid=generate_uid(entropy_srcs=[pm_uid, "secondary-capture"]),
        instance_number=int(ds.get("InstanceNumber", 1) or 1),
        series_description=f"{name} map (grayscale), {NOT_FOR_DIAGNOSIS}",
        patient_orientation=_patient_orientation(ds), pixel_spacing=pixel_spacing,
        source_purpose=_code_item("121322", "DCM", "Source image for image processing operation"))
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.LossyImageCompression = "01"  # 8-bit windowing discards value resolution (PS3.3 C.7.6.1.1.5)
    sc.WindowCenter, sc.WindowWidth = 127.5, 256.0
    unit_text = f" {unit}" if unit else ""
    sc.DerivationDescription = (
        f"liver-node Secondary Capture fallback of Parametric Map {pm_uid} ({name}{unit_text}) for a peer that "
        f"refused the Parametric Map SOP class. Grey 0-255 = {lo:.4g}..{hi:.4g}{unit_text} (linear; below/above "
        f"clipped; non-finite = 0). {grey.shape[0]} frames tiled {rows}x{cols}, left to right, top to bottom, "
        f"in slice order{f', subsampled by {stride}' if stride > 1 else ''}. {NOT_FOR_DIAGNOSIS}."
    )[:1024]
    logger.info("Parametric Map %s rendered as Secondary Capture %s (%d frames, window %.4g..%.4g%s)",
                pm_uid, sc.SOPInstanceUID, grey.shape[0], lo, hi, unit_text)
    return sc
