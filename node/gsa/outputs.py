"""DICOM outputs of the GSA workflow: the RTSTRUCT for the TPS and Secondary Captures for the physicist.

The RTSTRUCT lives on the planning CT (its frame of reference, its study). The Secondary Captures show the
registered SPECT fused on the planning CT with the contours drawn, in axial and coronal planes through the
liver, so the registration and the thresholding can be checked at a glance.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pydicom import Dataset

import rtstruct
from node.derived import MANUFACTURER, NOT_FOR_DIAGNOSIS, SOFTWARE_VERSIONS, copy_patient_study, equipment_kwargs
from node.imaging.capture import figure_rgb, secondary_capture

logger = logging.getLogger(__name__)

__all__ = ["Contour", "Layer", "build_rtstruct", "build_fusion_captures", "render_fusion", "lps_view"]

#: CT display window (abdomen soft tissue): level 40 HU, width 400 HU.
CT_WINDOW = (-160.0, 240.0)
#: HU above which a voxel is patient (the panels are zoomed on the patient).
BODY_HU = -500.0
#: SPECT below this fraction of the liver maximum is left transparent in the fusion.
SPECT_DISPLAY_FLOOR = 0.10
#: Series numbers of the outputs (high, so they sort after the scanner's own series).
RTSTRUCT_SERIES_NUMBER = 900
CAPTURE_SERIES_NUMBER = 901
#: Line widths (points) of the contours in the order drawn (liver, FLS, ITV, PTV): they share edges
#: (liver = FLS + ITV), so each is narrower than the one below it and all stay visible.
CONTOUR_WIDTHS = (4.2, 2.7, 1.2, 1.6)


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
            for c, m in zip(contours, masks_in_ct_order, strict=True)]
    ds = rtstruct.write_rtstruct(ordered, rois, structure_set_label="GSA TARGETS",
                                 series_description=series_description[:64], series_number=RTSTRUCT_SERIES_NUMBER,
                                 instance_number=instance_number, manufacturer=MANUFACTURER,
                                 software_versions=SOFTWARE_VERSIONS, approval_status="UNAPPROVED")
    copy_patient_study(ordered[0], ds)
    # Body Part Examined belongs to image series, not to the RT Structure Set IOD (dciodvfy flags it)
    if "BodyPartExamined" in ds:
        del ds.BodyPartExamined
    equipment = equipment_kwargs()
    ds.ManufacturerModelName = equipment["manufacturer_model_name"]
    ds.DeviceSerialNumber = equipment["device_serial_number"]
    return ds


def lps_view(array: np.ndarray, direction: Sequence[float] | np.ndarray, spacing: Sequence[float]
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


@dataclass(frozen=True)
class Layer:
    """A volume as an LPS view [S, P, L] (see :func:`lps_view`) with its spacing and the patient coordinate
    (mm) of the centre of voxel 0 along S, P, L."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def of(cls, array_zyx: np.ndarray, image: sitk.Image) -> Layer:
        """The layer of a (z, y, x) array laid out on `image`'s grid (no copy)."""
        direction = image.GetDirection()
        view, spacing = lps_view(array_zyx, direction, image.GetSpacing())
        size = image.GetSize()
        corners = np.array([image.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, size[0] - 1)
                            for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
        return cls(view, spacing, (float(corners[:, 2].min()), float(corners[:, 1].min()), float(corners[:, 0].min())))

    def edges(self, axis: int) -> tuple[float, float]:
        """Patient coordinates (mm) of the outer voxel edges along `axis` (0 = S, 1 = P, 2 = L)."""
        return (self.origin[axis] - 0.5 * self.spacing[axis],
                self.origin[axis] + (self.array.shape[axis] - 0.5) * self.spacing[axis])

    def section(self, axis: int, mm: float) -> np.ndarray | None:
        """The plane nearest to coordinate `mm` along `axis`, or None outside the volume."""
        idx = int(round((mm - self.origin[axis]) / self.spacing[axis]))
        if not 0 <= idx < self.array.shape[axis]:
            return None
        return self.array[idx] if axis == 0 else self.array[:, idx, :]


def _planes(mask: np.ndarray, axis: int, fractions: Sequence[float]) -> list[int]:
    """Indices along `axis` at given fractions of the mask's extent (the middle of the array if empty)."""
    occupied = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    if occupied.size == 0:
        return [mask.shape[axis] // 2]
    lo, hi = int(occupied[0]), int(occupied[-1])
    return sorted({int(round(lo + f * (hi - lo))) for f in fractions})


def _zoom(sections: Sequence[np.ndarray], ranges: Sequence[tuple[float, float]], margin_mm: float = 15.0
          ) -> list[tuple[float, float]]:
    """Display limits (mm) along the two in-plane axes: the body in any shown plane, plus a margin."""
    body = np.logical_or.reduce([s > BODY_HU for s in sections])
    out = []
    for k, (lo_mm, hi_mm) in enumerate(ranges):
        occupied = np.nonzero(body.any(axis=1 - k))[0]
        if occupied.size == 0:
            out.append((lo_mm, hi_mm))
            continue
        step = (hi_mm - lo_mm) / body.shape[k]
        out.append((max(lo_mm, lo_mm + step * occupied[0] - margin_mm),
                    min(hi_mm, lo_mm + step * (occupied[-1] + 1) + margin_mm)))
    return out


def _rgb(color: Sequence[int]) -> tuple[float, float, float]:
    """An 8-bit RGB colour as matplotlib's 0..1 floats."""
    r, g, b = (float(v) / 255.0 for v in color)
    return (r, g, b)


def render_fusion(ct: Layer, spect: Layer, contours: Sequence[Contour], plane: str, spect_max: float,
                  caption: Sequence[str]) -> np.ndarray:
    """RGB uint8 montage of axial ("axial") or coronal ("coronal") planes through the first contour.

    Contour masks are LPS views on the CT layer's grid; the SPECT layer may have its own (coarser) grid.
    Axial planes are shown in the radiological convention (patient left on image right, anterior up);
    coronal planes with the head up.
    """
    axis = 0 if plane == "axial" else 1
    indices = _planes(contours[0].mask, axis, (0.2, 0.5, 0.8) if plane == "axial" else (0.35, 0.65))
    n = len(indices)
    fig = Figure(figsize=(5.0 * n, 6.2), dpi=100, facecolor="black")
    rows_axis = 1 if axis == 0 else 0  # P down (axial) or S up (coronal); columns are always L to the right
    def take(a: np.ndarray, i: int) -> np.ndarray:
        return a[i] if axis == 0 else a[:, i, :]

    limits = _zoom([take(ct.array, i) for i in indices], [ct.edges(rows_axis), ct.edges(2)])
    for p, idx in enumerate(indices):
        ax = fig.add_axes((p / n + 0.005, 0.08, 1 / n - 0.01, 0.74))
        ax.set_facecolor("black")
        mm = ct.origin[axis] + ct.spacing[axis] * idx
        origin: Literal["upper", "lower"] = "upper" if axis == 0 else "lower"

        def extent(layer: Layer) -> tuple[float, float, float, float]:
            rows = layer.edges(rows_axis)
            return (*layer.edges(2), *(rows[::-1] if axis == 0 else rows))

        ax.imshow(take(ct.array, idx), cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent(ct),
                  interpolation="nearest", origin=origin)
        uptake = spect.section(axis, mm)
        if uptake is not None:
            ax.imshow(np.ma.masked_less(uptake / spect_max, SPECT_DISPLAY_FLOOR), cmap="hot", vmin=0.0, vmax=1.0,
                      alpha=0.4, extent=extent(spect), interpolation="bilinear", origin=origin)
        # Contours share edges (liver = FLS + ITV): draw wide to narrow so each stays visible, with a dark
        # halo so they read against the SPECT colours.
        sections = [(take(c.mask, idx), c.color, float(w)) for c, w in zip(contours, CONTOUR_WIDTHS, strict=False)]
        sections = [(m, colour, w) for m, colour, w in sections if m.any() and not m.all()]
        for halo in (True, False):
            for m, colour, width in sections:
                ax.contour(m.astype(np.float32), levels=[0.5], extent=extent(ct), origin=origin,
                           colors=["black" if halo else _rgb(colour)],
                           linewidths=width + 1.2 if halo else width)
        ax.set_xlim(*limits[1])
        ax.set_ylim(*(limits[0][::-1] if axis == 0 else limits[0]))
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(f"{plane} {'z' if axis == 0 else 'y'} = {mm:.1f} mm", color="white", fontsize=10)
        ax.text(0.02, 0.02, "R", color="white", transform=ax.transAxes, fontsize=11)
        ax.text(0.96, 0.02, "L", color="white", transform=ax.transAxes, fontsize=11)
    fig.text(0.01, 0.97, f"{NOT_FOR_DIAGNOSIS.upper()}  -  GSA SPECT fused on planning CT", color="yellow",
             fontsize=12, va="top", weight="bold")
    for k, line in enumerate(caption):
        fig.text(0.01, 0.925 - 0.035 * k, line, color="white", fontsize=9, va="top")
    fig.legend(handles=[Patch(color=_rgb(c.color), label=c.name) for c in contours],
               loc="lower center", ncol=len(contours), frameon=False, labelcolor="white", fontsize=10)
    return figure_rgb(fig)


def _nearest_slices(planning_ct: Sequence[Dataset], z_mm: Sequence[float]) -> list[Dataset]:
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in planning_ct])
    return [planning_ct[int(np.abs(zs - z).argmin())] for z in z_mm]


def build_fusion_captures(planning_ct: Sequence[Dataset], nm: Dataset, views: dict[str, np.ndarray],
                          axial_z_mm: Sequence[float], series_description: str, derivation: str) -> list[Dataset]:
    """Secondary Capture images (one per montage in `views`: "axial", "coronal") in one new series."""
    ref = planning_ct[0]
    series_uid = hd.UID()
    out = []
    orientation = {"axial": ("L", "P"), "coronal": ("L", "F")}  # row direction, column direction of the montage
    for number, (plane, pixels) in enumerate(views.items(), start=1):
        shown = _nearest_slices(planning_ct, axial_z_mm) if plane == "axial" else list(planning_ct)
        unique = list({ds.SOPInstanceUID: ds for ds in shown}.values())
        out.append(secondary_capture(
            pixels, ref, unique + [nm], series_uid=series_uid, series_number=CAPTURE_SERIES_NUMBER,
            instance_number=number, series_description=series_description,
            comments=f"{plane} planes; {NOT_FOR_DIAGNOSIS}", derivation=derivation,
            patient_orientation=orientation[plane]))
    return out
