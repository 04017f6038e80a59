"""The whole liver on the planning CT: from a received RTSTRUCT ROI, or derived from the GSA SPECT uptake.

99mTc-GSA binds to hepatocytes only, so the uptake region outlines the functioning liver; it misses liver that
takes up nothing (large tumours at the edge), which is why an RTSTRUCT liver contour is preferred and the
fallback is declared in the ROI description and the measurements.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset
from scipy import ndimage

import rtstruct
from node.gsa.errors import LiverError
from node.imaging.rois import match_liver_roi
from node.imaging.volumes import mask_to_array

logger = logging.getLogger(__name__)

__all__ = ["LiverError", "LiverMask", "liver_from_rtstruct", "liver_from_spect", "find_liver",
           "SPECT_LIVER_FRACTION", "DERIVED_SOURCE"]

#: Uptake region = smoothed SPECT >= this fraction of its maximum: about half the parenchymal uptake, i.e. the
#: half-maximum edge of the blurred liver (GSA liver/background contrast is high).
SPECT_LIVER_FRACTION = 0.30
#: Morphological closing radius (mm) that bridges photopenic notches before holes are filled.
CLOSING_RADIUS_MM = 8.0
DERIVED_SOURCE = "derived from GSA SPECT"
#: 4-connectivity within a slice only: filling with it closes, slice by slice, cavities enclosed in their slice
#: but open above or below (a cold lesion at the liver dome), which a 3D fill leaves open.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


@dataclass(frozen=True)
class LiverMask:
    """The liver used for the targets, and where it came from (said in the RTSTRUCT and the case record)."""

    mask: np.ndarray  # bool (z, y, x) on the planning-CT image grid
    source: str  # "rtstruct ROI 'Liver'" or DERIVED_SOURCE
    roi_name: str  # name of the ROI written back
    derived: bool
    note: str = ""  # why the SPECT fallback was used, if it was
    #: how the ROI was made (ROIGenerationAlgorithm, ROIGenerationDescription): a received ROI keeps its own
    generation: tuple[str, str] = ("AUTOMATIC", "")


def liver_from_rtstruct(rtss: Dataset, planning_ct: Sequence[Dataset], planning: sitk.Image,
                        wanted: Sequence[str]) -> LiverMask:
    """The liver ROI of `rtss` rasterised on the planning-CT image grid.

    Raises rtstruct.RTStructError (incl. ReferenceMismatchError) when the RTSTRUCT does not fit this CT, and
    LookupError when no ROI name matches `wanted` or the ROI is empty.
    """
    name = match_liver_roi(rtstruct.roi_names(rtss), wanted)
    if name is None:
        raise LookupError(f"the RTSTRUCT has no ROI named {', '.join(wanted)} "
                          f"(it has {', '.join(rtstruct.roi_names(rtss)) or 'none'})")
    ordered = rtstruct.sort_slices(planning_ct)
    mask = rtstruct.read_masks(rtss, ordered, names=[name])[name]
    if not mask.any():
        raise LookupError(f"the RTSTRUCT ROI {name!r} has no contours on the planning CT")
    return LiverMask(mask=mask_to_array(mask, ordered, planning), source=f"rtstruct ROI '{name}'", roi_name=name,
                     derived=False, generation=rtstruct.roi_generation(rtss, name))


def liver_from_spect(spect: sitk.Image, transform: sitk.Transform, planning: sitk.Image, note: str) -> LiverMask:
    """Liver = GSA uptake region (>= SPECT_LIVER_FRACTION of max, largest component, closed, holes filled).

    Segmented on the SPECT's own grid (cheap, and where its blur is isotropic), then carried onto the planning
    grid with `transform` (planning -> SPECT/CT coordinates) by linear interpolation of the mask at 0.5.
    """
    # sigma of one voxel: voxel noise must not cut the region into pieces or pepper it with holes
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(spect, sitk.sitkFloat32), float(min(spect.GetSpacing())))
    values = sitk.GetArrayFromImage(smooth)
    region = values >= SPECT_LIVER_FRACTION * float(values.max())
    labels, n = ndimage.label(region)
    if n == 0 or not np.isfinite(values.max()) or values.max() <= 0:
        raise LiverError(f"no liver: {note}, and the GSA SPECT has no uptake region to derive it from")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    region = labels == int(sizes.argmax())
    spacing_zyx = np.asarray(spect.GetSpacing(), dtype=float)[::-1]
    radius = np.maximum(1, np.rint(CLOSING_RADIUS_MM / spacing_zyx)).astype(int)
    zz, yy, xx = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = (zz / radius[0]) ** 2 + (yy / radius[1]) ** 2 + (xx / radius[2]) ** 2 <= 1.0
    pad = [(int(r), int(r)) for r in radius]  # closing must not glue the region to the array border
    region = ndimage.binary_closing(np.pad(region, pad), structure=ball)[tuple(slice(r, -r) for r in radius)]
    region = ndimage.binary_fill_holes(region)
    region = ndimage.binary_fill_holes(region, structure=_IN_PLANE)
    as_image = sitk.GetImageFromArray(region.astype(np.float32))
    as_image.CopyInformation(spect)
    on_ct = sitk.Resample(as_image, planning, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(on_ct) >= 0.5
    if not mask.any():
        raise LiverError(f"no liver: {note}, and the GSA uptake region lies outside the planning CT")
    logger.info("liver derived from the GSA SPECT (%s): %d voxels on the planning CT", note, int(mask.sum()))
    return LiverMask(mask=mask, source=DERIVED_SOURCE, roi_name="Liver_SPECT", derived=True, note=note,
                     generation=("AUTOMATIC", "GSA SPECT uptake region, carried to the planning CT"))


def find_liver(rtss: Dataset | None, planning_ct: Sequence[Dataset], planning: sitk.Image, spect: sitk.Image,
               transform: sitk.Transform, wanted: Sequence[str]) -> LiverMask:
    """The RTSTRUCT liver when one fits the planning CT, otherwise the SPECT-derived liver with the reason."""
    if rtss is None:
        note = "no liver RTSTRUCT was received"
    else:
        try:
            return liver_from_rtstruct(rtss, planning_ct, planning, wanted)
        except (rtstruct.RTStructError, LookupError) as exc:
            note = f"liver RTSTRUCT not usable: {exc}"
            logger.warning("%s; deriving the liver from the GSA SPECT", note)
    return liver_from_spect(spect, transform, planning, note)
