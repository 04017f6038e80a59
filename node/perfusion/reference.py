"""What the perfusion workflow hands to workflows that place other images on its maps (MAA correlation).

The result of a perfusion analysis carries a :class:`PerfusionReference`: its Parametric Maps as delivered
(DICOM), and the unenhanced CT they were computed from, as one 3D image with patient geometry. A dependent
workflow registers its own CT to that image, so it never needs the 4D series itself (released once the
perfusion analysis ends).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import SimpleITK as sitk
from pydicom import Dataset

from node.imaging.dicomtime import acquisition_datetime
from node.imaging.grids import image_from_affine
from node.imaging.volumes import ct_series_image
from node.perfusion.measurements import PerfusionMeasurements
from node.perfusion.names import method_label
from node.workflow import WorkflowResult

#: method_label is handed over with the result: a workflow reporting perfusion values names their method as the
#: perfusion does (node.perfusion.names)
__all__ = ["PerfusionReference", "PerfusionResult", "first_time_point_image", "reference_from_series",
           "method_label"]


@dataclass(frozen=True)
class PerfusionReference:
    """The unenhanced CT of a perfusion series, the maps computed from it, and the regions drawn on it."""

    ct: sitk.Image  # earliest time point, HU, patient geometry
    patient_id: str
    maps: tuple[Dataset, ...]  # Parametric Maps (the perfusion result's outputs)
    #: ROI name -> mask (uint8 0/1 image with patient geometry) of the RTSTRUCT the perfusion analysis used:
    #: other workflows name the lesions they find after these, so one lesion has one name in every output
    regions: Mapping[str, sitk.Image] = field(default_factory=dict)
    #: ROI name -> (method, parameter) -> why the perfusion analysis reports that value as not measurable
    #: ("max-slope", "ALP"): a workflow that shows the same lesion's perfusion flags it too
    not_measurable: Mapping[str, Mapping[tuple[str, str], str]] = field(default_factory=dict)


@dataclass
class PerfusionResult(WorkflowResult[PerfusionMeasurements]):
    """The perfusion result, with what it hands to the workflows that depend on it."""

    reference: PerfusionReference | None = None


def _time_key(ds: Dataset) -> tuple[float, int, int]:
    when = acquisition_datetime(ds)
    return (when.timestamp() if when is not None else float("inf"),
            int(ds.get("TemporalPositionIdentifier", 0) or 0), int(ds.get("InstanceNumber", 0) or 0))


def first_time_point_image(perfusion_ct: Sequence[Dataset]) -> sitk.Image:
    """The earliest time point (unenhanced, closest to a SPECT/CT's low-dose CT) of the perfusion CT as 3D HU.

    Classic CT: the earliest slice at every position. An Enhanced CT multi-frame goes through the perfusion
    package's 4D reader (its first time point on the working grid).
    """
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in perfusion_ct):
        from node.perfusion.volume4d import assemble  # Enhanced CT: the one reader of its frame timing

        vol = assemble(perfusion_ct)
        return image_from_affine(vol.data[0], vol.grid.affine())
    by_position: dict[tuple[float, ...], list[Dataset]] = defaultdict(list)
    for ds in perfusion_ct:
        by_position[tuple(round(float(v), 2) for v in ds.ImagePositionPatient)].append(ds)
    first = [min(group, key=_time_key) for group in by_position.values()]
    return ct_series_image(first, what="perfusion CT (first time point)")


def reference_from_series(perfusion_ct: Sequence[Dataset], maps: Sequence[Dataset]) -> PerfusionReference:
    """The reference of a perfusion series (datasets with pixel data) and its maps."""
    return PerfusionReference(first_time_point_image(perfusion_ct), str(perfusion_ct[0].get("PatientID", "")),
                              tuple(maps))
