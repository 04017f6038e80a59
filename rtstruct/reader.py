"""RT Structure Set + its CT -> boolean masks on the CT grid.

Each CLOSED_PLANAR contour is assigned to the CT slice whose own ImagePositionPatient, projected on the slice
normal, is nearest to the contour's plane (within 0.3 of the local slice gap, so non-uniform spacing and
feet-first or reversed series work), mapped to that slice's pixel coordinates, and filled with an even-odd
point-in-polygon test at the voxel centres; all contours of a slice are XORed, so inner contours make holes.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset

from rtstruct.errors import ReferenceMismatchError, RTStructError
from rtstruct.geometry import CtGeometry
from rtstruct.raster import fill_polygons

logger = logging.getLogger(__name__)

#: A contour belongs to a slice when its plane is within this fraction of the local slice gap.
SLICE_TOLERANCE_FRACTION = 0.3
#: Tolerance (mm) for a single-slice CT, which has no gap to take a fraction of.
_SINGLE_SLICE_TOLERANCE_MM = 0.5
_AREA_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")


def roi_names(rtss: Dataset) -> list[str]:
    """ROI names in StructureSetROISequence order."""
    return [str(item.ROIName) for item in rtss.get("StructureSetROISequence", [])]


def _referenced_instances(rtss: Dataset, frame_uid: str, roi_items: Sequence[Dataset]) -> set[str]:
    """SOP instances listed under frame `frame_uid` and referenced by the selected ROIs' contours."""
    uids: set[str] = set()
    for frame in rtss.get("ReferencedFrameOfReferenceSequence", []):
        if str(frame.get("FrameOfReferenceUID", "")) != frame_uid:
            continue  # e.g. a registered MR's frame: its images are not expected in this CT
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uids.update(str(ref.ReferencedSOPInstanceUID) for ref in series.get("ContourImageSequence", []))
    for roi in roi_items:
        for contour in roi.get("ContourSequence", []):
            uids.update(str(ref.ReferencedSOPInstanceUID) for ref in contour.get("ContourImageSequence", []))
    return uids


def _check_references(rtss: Dataset, geom: CtGeometry, ss_items: Sequence[Dataset],
                      roi_items: Sequence[Dataset]) -> None:
    """Raise ReferenceMismatchError unless the structure set was drawn on this CT."""
    ct_frame = str(geom.slices[0].FrameOfReferenceUID)
    frames = {str(item.ReferencedFrameOfReferenceUID) for item in ss_items}
    if frames - {ct_frame}:
        raise ReferenceMismatchError(
            f"RTSTRUCT frame(s) of reference {sorted(frames - {ct_frame})} differ from the CT's {ct_frame}: "
            "the structure set belongs to another CT (register it or supply its CT)")
    missing = _referenced_instances(rtss, ct_frame, roi_items) - {str(ds.SOPInstanceUID) for ds in geom.slices}
    if missing:
        raise ReferenceMismatchError(
            f"RTSTRUCT references {len(missing)} CT image(s) not among the {len(geom.slices)} given "
            f"(e.g. {sorted(missing)[0]}): supply the complete CT series it was drawn on")


def _slice_tolerances(positions: np.ndarray) -> np.ndarray:
    """Per-slice tolerance (mm): a fraction of the smaller gap to a neighbouring slice."""
    if len(positions) == 1:
        return np.array([_SINGLE_SLICE_TOLERANCE_MM])
    gaps = np.diff(positions)
    nearest_gap = np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])
    return SLICE_TOLERANCE_FRACTION * nearest_gap


def _assign_slice(geom: CtGeometry, points: np.ndarray, tolerances: np.ndarray, roi: str) -> int:
    """Index of the CT slice whose plane holds the contour `points` (n, 3)."""
    heights = points @ geom.normal
    level = float(np.mean(heights))
    positions = geom.positions
    k = int(np.argmin(np.abs(positions - level)))
    off = abs(positions[k] - level)
    if off > tolerances[k] or np.ptp(heights) > tolerances[k]:
        raise ReferenceMismatchError(
            f"a contour of ROI {roi!r} at {level:.2f} mm along the slice normal is not on a CT slice plane "
            f"(nearest slice {off:.2f} mm away, contour thickness {np.ptp(heights):.2f} mm)")
    return k


def read_masks(rtss: Dataset, ct_datasets: Sequence[Dataset],
               names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Rasterise ROIs of an RT Structure Set onto its CT: {name: bool mask (slices, Rows, Columns)}.

    Slices follow :func:`sort_slices` order. `names` selects ROIs (default: all, in structure set order).
    Raises ReferenceMismatchError when the structure set's frame of reference or referenced images do not
    match the CT, RTStructError for unknown/ambiguous ROI names or a dataset that is not an RT Structure Set.
    """
    if rtss.get("Modality") != "RTSTRUCT" or "StructureSetROISequence" not in rtss:
        raise RTStructError("dataset is not an RT Structure Set")
    geom = CtGeometry.from_slices(ct_datasets)
    available = roi_names(rtss)
    wanted = list(available if names is None else names)
    for name in wanted:
        if available.count(name) != 1:
            problem = "is not in" if name not in available else "occurs more than once in"
            raise RTStructError(f"ROI {name!r} {problem} the structure set (ROIs: {available})")
    ss_items = {str(item.ROIName): item for item in rtss.StructureSetROISequence}
    contour_items = {int(item.ReferencedROINumber): item for item in rtss.get("ROIContourSequence", [])}
    selected = [ss_items[name] for name in wanted]
    roi_items = [contour_items.get(int(item.ROINumber), Dataset()) for item in selected]
    _check_references(rtss, geom, selected, roi_items)

    tolerances = _slice_tolerances(geom.positions)
    masks = {}
    for name, roi in zip(wanted, roi_items, strict=True):
        slice_index, polygons = [], []
        for contour in roi.get("ContourSequence", []):
            if contour.get("ContourGeometricType") not in _AREA_TYPES:
                logger.debug("ROI %r: skipped a %s contour (no area)", name, contour.get("ContourGeometricType"))
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            if len(points) < 3:
                continue
            k = _assign_slice(geom, points, tolerances, name)
            slice_index.append(k)
            polygons.append(geom.to_pixel(k, points))
        masks[name] = fill_polygons(slice_index, polygons, geom.shape)
    return masks
