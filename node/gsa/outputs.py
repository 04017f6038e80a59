"""DICOM outputs of the GSA workflow: the RTSTRUCT for the TPS and Secondary Captures for the physicist.

The RTSTRUCT lives on the planning CT (its frame of reference, its study). The Secondary Captures show the
registered SPECT fused on the planning CT with the contours drawn, in axial and coronal planes through the
liver, so the registration and the thresholding can be checked at a glance.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import highdicom as hd
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

import rtstruct
from node.derived import (MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_DIAGNOSIS, SOFTWARE_VERSIONS,
                          copy_patient_study)

logger = logging.getLogger(__name__)

__all__ = ["Contour", "build_rtstruct", "build_fusion_captures", "render_fusion", "lps_view"]

#: CT display window (abdomen soft tissue): level 40 HU, width 400 HU.
CT_WINDOW = (-160.0, 240.0)
#: SPECT below this fraction of the liver maximum is left transparent in the fusion.
SPECT_DISPLAY_FLOOR = 0.10
#: Series numbers of the outputs (high, so they sort after the scanner's own series).
RTSTRUCT_SERIES_NUMBER = 900
CAPTURE_SERIES_NUMBER = 901


@dataclass(frozen=True)
class Contour:
    """One structure for the outputs: mask on the planning-CT image grid (z, y, x) and how to label it."""

    name: str
    mask: np.ndarray
    interpreted_type: str
    color: tuple[int, int, int]
    description: str


def build_rtstruct(planning_ct: Sequence[Dataset], masks_in_ct_order: Sequence[np.ndarray],
                   contours: Sequence[Contour], series_description: str, instance_number: int = 1) -> Dataset:
    """RTSTRUCT on the planning CT; `masks_in_ct_order[i]` is contours[i] in rtstruct.sort_slices order."""
    ordered = rtstruct.sort_slices(planning_ct)
    rois = [rtstruct.RoiMask(c.name, m, interpreted_type=c.interpreted_type, color=c.color, description=c.description)
            for c, m in zip(contours, masks_in_ct_order)]
    ds = rtstruct.write_rtstruct(ordered, rois, structure_set_label="GSA TARGETS",
                                 series_description=series_description[:64], series_number=RTSTRUCT_SERIES_NUMBER,
                                 instance_number=instance_number, manufacturer=MANUFACTURER,
                                 software_versions=SOFTWARE_VERSIONS, approval_status="UNAPPROVED")
    copy_patient_study(ordered[0], ds)
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    return ds


def lps_view(array: np.ndarray, direction: Sequence[float], spacing: Sequence[float]
             ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """View (no copy) of a (z, y, x) image array indexed [superior, posterior, left] ascending, with its spacing.

    Each image axis is assigned to the patient axis it is closest to (exact for axial/coronal/sagittal stacks,
    nearest-axis for oblique ones, which is good enough for a display).
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # columns: image x, y, z axes in LPS
    patient_axis = np.abs(d).argmax(axis=0)  # for image axis i (x, y, z), the LPS axis it follows
    if sorted(patient_axis.tolist()) != [0, 1, 2]:
        raise ValueError("image axes are too oblique to display as axial/coronal planes")
    view = array
    for i in range(3):
        if d[patient_axis[i], i] < 0:
            view = np.flip(view, axis=2 - i)  # array axis of image axis i is 2 - i
    # array axis (2 - i) follows LPS axis patient_axis[i]; wanted order: S (2), P (1), L (0)
    order = [2 - int(np.nonzero(patient_axis == p)[0][0]) for p in (2, 1, 0)]
    sp = tuple(float(spacing[2 - a]) for a in order)
    return view.transpose(order), sp  # type: ignore[return-value]


def _planes(mask: np.ndarray, axis: int, fractions: Sequence[float]) -> list[int]:
    """Indices along `axis` at given fractions of the mask's extent (the middle of the array if empty)."""
    occupied = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    if occupied.size == 0:
        return [mask.shape[axis] // 2]
    lo, hi = int(occupied[0]), int(occupied[-1])
    return sorted({int(round(lo + f * (hi - lo))) for f in fractions})


def render_fusion(ct: np.ndarray, spect: np.ndarray, contours: Sequence[Contour], spacing_spl: Sequence[float],
                  origin_spl: Sequence[float], plane: str, spect_max: float, caption: Sequence[str]) -> np.ndarray:
    """RGB uint8 montage of axial ("axial") or coronal ("coronal") planes through the first contour.

    Arrays are LPS views [S, P, L] (see :func:`lps_view`); `origin_spl` is the patient coordinate (mm) of
    index 0 along S, P, L. Axial planes are shown in the radiological convention (patient left on image right,
    anterior up); coronal planes with the head up.
    """
    axis = 0 if plane == "axial" else 1
    indices = _planes(contours[0].mask, axis, (0.2, 0.5, 0.8) if plane == "axial" else (0.35, 0.65))
    n = len(indices)
    fig = Figure(figsize=(5.0 * n, 6.2), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    s_mm = [origin_spl[k] + spacing_spl[k] * np.array([-0.5, ct.shape[k] - 0.5]) for k in range(3)]
    for i, idx in enumerate(indices):
        ax = fig.add_axes((i / n + 0.005, 0.10, 1 / n - 0.01, 0.74))
        ax.set_facecolor("black")
        take = (lambda a: a[idx]) if axis == 0 else (lambda a: a[:, idx, :])
        if axis == 0:
            extent = (s_mm[2][0], s_mm[2][1], s_mm[1][1], s_mm[1][0])  # L right, P down
            where = f"axial z = {origin_spl[0] + spacing_spl[0] * idx:.1f} mm"
            kwargs = {"origin": "upper"}
        else:
            extent = (s_mm[2][0], s_mm[2][1], s_mm[0][0], s_mm[0][1])  # L right, S up
            where = f"coronal y = {origin_spl[1] + spacing_spl[1] * idx:.1f} mm"
            kwargs = {"origin": "lower"}
        ax.imshow(take(ct), cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent,
                  interpolation="nearest", **kwargs)
        uptake = np.ma.masked_less(take(spect) / spect_max, SPECT_DISPLAY_FLOOR)
        ax.imshow(uptake, cmap="hot", vmin=0.0, vmax=1.0, alpha=0.55, extent=extent, interpolation="bilinear",
                  **kwargs)
        for c in contours:
            section = take(c.mask)
            if section.any() and not section.all():
                ax.contour(section.astype(np.float32), levels=[0.5], colors=[np.asarray(c.color) / 255.0],
                           linewidths=1.2, extent=extent, origin=kwargs["origin"])
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(where, color="white", fontsize=10)
        ax.text(0.02, 0.02, "R", color="white", transform=ax.transAxes, fontsize=11)
        ax.text(0.96, 0.02, "L", color="white", transform=ax.transAxes, fontsize=11)
    fig.text(0.01, 0.97, f"{NOT_FOR_DIAGNOSIS.upper()}  -  GSA SPECT fused on planning CT", color="yellow",
             fontsize=12, va="top", weight="bold")
    for k, line in enumerate(caption):
        fig.text(0.01, 0.925 - 0.035 * k, line, color="white", fontsize=9, va="top")
    fig.legend(handles=[Patch(color=np.asarray(c.color) / 255.0, label=c.name) for c in contours],
               loc="lower center", ncol=len(contours), frameon=False, labelcolor="white", fontsize=10)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def _nearest_slices(planning_ct: Sequence[Dataset], z_mm: Sequence[float]) -> list[Dataset]:
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in planning_ct])
    return [planning_ct[int(np.abs(zs - z).argmin())] for z in z_mm]


def _source_items(datasets: Sequence[Dataset]) -> DicomSequence:
    items = []
    for ds in datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        items.append(item)
    return DicomSequence(items)


def build_fusion_captures(planning_ct: Sequence[Dataset], nm: Dataset, views: dict[str, np.ndarray],
                          axial_z_mm: Sequence[float], series_description: str, derivation: str) -> list[Dataset]:
    """Secondary Capture images (one per montage in `views`: "axial", "coronal") in one new series."""
    ref = planning_ct[0]
    series_uid = hd.UID()
    out = []
    orientation = {"axial": ("L", "P"), "coronal": ("L", "F")}  # row direction, column direction of the montage
    for number, (plane, pixels) in enumerate(views.items(), start=1):
        sc = hd.sc.SCImage.from_ref_dataset(
            ref, pixels, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            series_instance_uid=series_uid, series_number=CAPTURE_SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=number, manufacturer=MANUFACTURER, patient_orientation=orientation[plane],
            transfer_syntax_uid="1.2.840.10008.1.2.1")
        copy_patient_study(ref, sc)
        sc.ManufacturerModelName = MANUFACTURER_MODEL_NAME
        sc.SoftwareVersions = SOFTWARE_VERSIONS
        sc.SeriesDescription = series_description[:64]
        sc.ImageComments = f"{plane} planes; {NOT_FOR_DIAGNOSIS}"[:10240]
        sc.DerivationDescription = derivation[:1024]
        sc.BurnedInAnnotation = "NO"  # method text only; no patient identification is drawn
        shown = _nearest_slices(planning_ct, axial_z_mm) if plane == "axial" else list(planning_ct)
        unique = list({ds.SOPInstanceUID: ds for ds in shown}.values())
        sc.SourceImageSequence = _source_items(unique + [nm])
        out.append(sc)
    return out
