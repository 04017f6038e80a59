"""Secondary Captures for people: matplotlib figures rendered to pixels, and the one encoder (highdicom).

Every capture the node makes (perfusion colour pages and curves, GSA fusion montages, the MAA review, the case
summary pages, the Parametric Map fallback) goes through :func:`secondary_capture`, so all are alike: DERIVED /
SECONDARY, Explicit VR Little Endian, ConversionType WSD (rendered by software from DICOM objects), patient and
study copied from their reference dataset, the source instances named (SourceImageSequence), how they were made
said (DerivationDescription, ImageComments). Pixels carry no patient identity (BurnedInAnnotation NO): the
viewer shows the header.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import matplotlib

matplotlib.use("Agg")  # headless node: never pick an interactive backend
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydicom import Dataset  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pydicom.valuerep import DA, TM  # noqa: E402

from node.derived import copy_patient_study, equipment_kwargs  # noqa: E402

__all__ = ["ImageRef", "figure_rgb", "secondary_capture"]


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 RGB array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # type: ignore[no-untyped-call]  # (matplotlib's Agg canvas is not annotated)
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


@dataclass(frozen=True)
class ImageRef:
    """A source image of a capture: an instance, optionally one frame of it (1-based)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None

    @classmethod
    def of(cls, ds: Dataset, frame: int | None = None) -> ImageRef:
        return cls(str(ds.SOPClassUID), str(ds.SOPInstanceUID), frame)


def _source_items(sources: Sequence[ImageRef | Dataset], purpose: Dataset | None) -> DicomSequence:
    items, seen = [], set()
    for src in sources:
        ref = src if isinstance(src, ImageRef) else ImageRef.of(src)
        if ref in seen:
            continue
        seen.add(ref)
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if ref.frame is not None:
            item.ReferencedFrameNumber = ref.frame
        if purpose is not None:
            item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
        items.append(item)
    return DicomSequence(items)


def secondary_capture(pixels: np.ndarray, ref: Dataset, sources: Sequence[ImageRef | Dataset], *, series_uid: str,
                      series_number: int, instance_number: int, series_description: str, comments: str = "",
                      derivation: str = "", image_plane: bool = True,
                      patient_orientation: tuple[str, str] = ("L", "P"), sop_instance_uid: str | None = None,
                      pixel_spacing: tuple[float, float] | None = None,
                      source_purpose: Dataset | None = None) -> Dataset:
    """A Secondary Capture of `pixels` ((H, W, 3) RGB or (H, W) 8-bit grey) in the study of `ref`.

    `image_plane` False (a text page) leaves PatientOrientation empty: the pixels show no anatomy. The SOP
    Instance UID is new unless given (e.g. derived deterministically, so a retry makes the same object).
    """
    rgb = pixels.ndim == 3
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.ascontiguousarray(pixels, dtype=np.uint8),
        photometric_interpretation="RGB" if rgb else "MONOCHROME2", bits_allocated=8, coordinate_system="PATIENT",
        patient_orientation=patient_orientation, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=instance_number,
        series_description=series_description[:64],
        pixel_spacing=pixel_spacing,  # type: ignore[arg-type]  # (highdicom annotates it as ints; mm are floats)
        transfer_syntax_uid=ExplicitVRLittleEndian, **equipment_kwargs())
    copy_patient_study(ref, sc)
    if not image_plane:
        sc.PatientOrientation = []  # Type 2C, empty: the pixels show no anatomy
    now = _dt.datetime.now()
    sc.ContentDate, sc.ContentTime = DA(now.strftime("%Y%m%d")), TM(now.strftime("%H%M%S"))
    sc.ConversionType = "WSD"  # rendered by software from DICOM objects, not digitised film
    sc.BurnedInAnnotation = "NO"  # labels, units and method text only: no patient identity in the pixels
    if derivation:
        sc.DerivationDescription = derivation[:1024]
    if comments:
        sc.ImageComments = comments[:10240]
    if sources:
        sc.SourceImageSequence = _source_items(sources, source_purpose)
    return sc
