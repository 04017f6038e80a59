"""RGB Secondary Captures for people: matplotlib figures rendered to pixels, wrapped with highdicom.

Every capture is DERIVED/SECONDARY, names its source instances (SourceImageSequence), says how it was made
(DerivationDescription, ImageComments) and copies patient/study from its reference dataset. Pixels carry no
patient identity (BurnedInAnnotation NO): the viewer shows the header.
"""
from __future__ import annotations

import datetime as _dt
from typing import Sequence

import highdicom as hd
import matplotlib

matplotlib.use("Agg")  # headless node: never pick an interactive backend
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydicom import Dataset  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402

from node.derived import copy_patient_study, equipment_kwargs  # noqa: E402

__all__ = ["figure_rgb", "secondary_capture"]


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 RGB array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3], dtype=np.uint8)


def _source_items(sources: Sequence[Dataset]) -> DicomSequence:
    items, seen = [], set()
    for ds in sources:
        uid = str(ds.SOPInstanceUID)
        if uid in seen:
            continue
        seen.add(uid)
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    return DicomSequence(items)


def secondary_capture(rgb: np.ndarray, ref: Dataset, sources: Sequence[Dataset], *, series_uid: str,
                      series_number: int, instance_number: int, series_description: str, comments: str,
                      derivation: str, image_plane: bool = True) -> Dataset:
    """An RGB Secondary Capture of `rgb` in the study of `ref`, derived from `sources`.

    `image_plane` False (a text page) leaves PatientOrientation empty: the pixels show no anatomy.
    """
    eq = equipment_kwargs()
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "P"),
        series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=instance_number, manufacturer=eq["manufacturer"],
        manufacturer_model_name=eq["manufacturer_model_name"], software_versions=eq["software_versions"],
        device_serial_number=eq["device_serial_number"], series_description=series_description[:64])
    copy_patient_study(ref, sc)
    if not image_plane:
        sc.PatientOrientation = None
    now = _dt.datetime.now()
    sc.ContentDate, sc.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = derivation[:1024]
    sc.ImageComments = comments[:10240]
    if sources:
        sc.SourceImageSequence = _source_items(sources)
    return sc
