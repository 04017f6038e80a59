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
from matplotlib.axes import Axes
from pydicom import Dataset

import rtstruct
from node.derived import MANUFACTURER, NOT_FOR_DIAGNOSIS, SOFTWARE_VERSIONS, copy_patient_study, equipment_kwargs
from node.gsa.targets import TidyRecord
from node.imaging.capture import secondary_capture
from node.imaging.layers import Layer
from node.imaging.pages import (
    CT_WINDOW,
    DIM,
    TEXT,
    UPTAKE_CMAP,
    Cell,
    Identity,
    Page,
    PageFrame,
    colour_bar,
    hex_colour,
    new_page,
    orientation_labels,
    pt,
    rgb01,
    table,
    text_block,
)

logger = logging.getLogger(__name__)

__all__ = ["Contour", "GsaFigures", "build_rtstruct", "build_fusion_captures", "render_page", "CT_WINDOW"]

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
    #: (ROIGenerationAlgorithm, ROIGenerationDescription): a received ROI keeps its own; "" description =
    #: the writer's default (how the contours were traced)
    generation: tuple[str, str] = ("AUTOMATIC", "")
    volume_cm3: float = float("nan")


def build_rtstruct(planning_ct: Sequence[Dataset], masks_in_ct_order: Sequence[np.ndarray],
                   contours: Sequence[Contour], series_description: str, instance_number: int = 1) -> Dataset:
    """RTSTRUCT on the planning CT; `masks_in_ct_order[i]` is contours[i] in rtstruct.sort_slices order."""
    ordered = rtstruct.sort_slices(planning_ct)
    rois = [rtstruct.RoiMask(c.name, m, interpreted_type=c.interpreted_type, color=c.color, description=c.description,
                             generation_algorithm=c.generation[0], generation_description=c.generation[1] or None)
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


def _planes(mask: np.ndarray, axis: int, fractions: Sequence[float]) -> list[int]:
    """Indices along `axis` at given fractions of the mask's extent (the middle of the array if empty)."""
    occupied = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    if occupied.size == 0:
        return [mask.shape[axis] // 2]
    lo, hi = int(occupied[0]), int(occupied[-1])
    return sorted({int(round(lo + f * (hi - lo))) for f in fractions})


def _extent_mm(mask: np.ndarray, layer: Layer, axis: int, margin_mm: float) -> tuple[float, float]:
    """Patient coordinates (mm) spanned by `mask` along `axis` (an LPS view axis), grown by a margin."""
    occupied = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    lo_mm, hi_mm = layer.edges(axis)
    if occupied.size == 0:
        return lo_mm, hi_mm
    a = layer.origin[axis] + layer.spacing[axis] * (occupied[0] - 0.5) - margin_mm
    b = layer.origin[axis] + layer.spacing[axis] * (occupied[-1] + 0.5) + margin_mm
    return max(lo_mm, a), min(hi_mm, b)


@dataclass(frozen=True)
class GsaFigures:
    """What a GSA page states beside its images (all in words a clinician uses)."""

    threshold_fraction: float
    margin_mm: float
    liver_source: str  # e.g. "RTSTRUCT ROI 'Liver' (planning CT)"
    registration: str  # one line: shift, rotation, agreement
    method: str  # how the SPECT was prepared
    small_parts: TidyRecord | None
    warnings: tuple[str, ...] = ()


#: Rows of the image grid: (caption, what is drawn)
_ROWS = (("GSA uptake on the planning CT", "uptake"), ("Structures", "targets"))
_GRID_LEFT, _GRID_WIDTH, _GRID_TOP = 16.0, 1400.0, 104.0
_ROW_HEIGHT, _CAPTION_PX = 436.0, 28.0
_INFO_LEFT, _INFO_WIDTH = 1440.0, 460.0
SPECT_SHOWN_FROM = SPECT_DISPLAY_FLOOR


def render_page(identity: Identity, plane: str, ct: Layer, spect: Layer, liver: Contour, fls: Contour, itv: Contour,
                ptv: Contour, spect_max: float, figures: GsaFigures, page: tuple[int, int]) -> Page:
    """One GSA page: three axial ("axial") or coronal ("coronal") planes through the liver.

    Top row: the registered SPECT (% of the liver maximum) over the planning CT with the liver outlined and the
    FLS threshold drawn as a dashed line. Bottom row: the structures as the TPS receives them: FLS and ITV
    filled (they split the liver, so they share edges and need no lines of their own), the liver outline, the
    PTV as a line. Masks are LPS views on the CT layer's grid; the SPECT layer may have its own grid. Axial
    planes are shown in the radiological convention (patient left on the right, anterior up), coronal planes
    head up.
    """
    axis = 0 if plane == "axial" else 1
    rows_axis = 1 if axis == 0 else 0  # P down (axial) or S up (coronal); columns are always L to the right
    indices = _planes(liver.mask, axis, (0.2, 0.5, 0.8))
    origin: Literal["upper", "lower"] = "upper" if axis == 0 else "lower"
    union = liver.mask | ptv.mask
    limits = (_extent_mm(union, ct, rows_axis, 25.0), _extent_mm(union, ct, 2, 25.0))
    pct = figures.threshold_fraction * 100.0
    frame = new_page(
        identity, f"GSA SPECT functional liver and radiotherapy targets: {plane}",
        f"99mTc-GSA SPECT/CT registered to the planning CT;  FLS = uptake >= {pct:g} % of the liver maximum;  "
        f"ITV = liver - FLS;  PTV = ITV + {figures.margin_mm:g} mm", page_number=page)

    def take(a: np.ndarray, i: int) -> np.ndarray:
        return a[i] if axis == 0 else a[:, i, :]

    def extent(layer: Layer) -> tuple[float, float, float, float]:
        rows = layer.edges(rows_axis)
        return (*layer.edges(2), *(rows[::-1] if axis == 0 else rows))

    def outline(ax: Axes, mask: np.ndarray, colour: str, width_px: float, style: str = "solid") -> None:
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], extent=extent(ct), origin=origin, colors=[colour],
                       linewidths=pt(width_px), linestyles=style)

    n = len(indices)
    col_width = _GRID_WIDTH / 3.0
    for r, (caption, what) in enumerate(_ROWS):
        top = _GRID_TOP + r * (_ROW_HEIGHT + _CAPTION_PX)
        for c, idx in enumerate(indices):
            left = _GRID_LEFT + (c + (3 - n) / 2.0) * col_width
            mm = ct.origin[axis] + ct.spacing[axis] * idx
            where = f"{'z' if axis == 0 else 'y'} = {mm:.1f} mm"
            frame.text(left + 6, top, f"{caption},  {where}", size="small", color=DIM)
            ax = frame.axes(left + 4, top + _CAPTION_PX, col_width - 8, _ROW_HEIGHT - 8)
            ax.imshow(take(ct.array, idx), cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent(ct),
                      interpolation="nearest", origin=origin)
            if what == "uptake":
                uptake = spect.section(axis, mm)
                if uptake is not None:
                    percent = 100.0 * uptake / spect_max
                    ax.imshow(np.ma.masked_less(percent, 100.0 * SPECT_SHOWN_FROM), cmap=UPTAKE_CMAP, vmin=0.0,
                              vmax=100.0, alpha=0.85, extent=extent(spect), interpolation="bilinear", origin=origin)
                outline(ax, take(liver.mask, idx), hex_colour(liver.color), 2.0)
                outline(ax, take(fls.mask, idx), hex_colour(fls.color), 1.6, "dashed")
            else:
                for contour, alpha in ((fls, 0.38), (itv, 0.45)):
                    m = take(contour.mask, idx)
                    fill = np.zeros((*m.shape, 4), dtype=np.float32)
                    fill[m] = (*rgb01(contour.color), alpha)
                    ax.imshow(fill, extent=extent(ct), interpolation="nearest", origin=origin)
                outline(ax, take(liver.mask, idx), hex_colour(liver.color), 1.6)
                section = take(ptv.mask, idx)
                if section.any():
                    ax.contour(section.astype(np.float32), levels=[0.5], extent=extent(ct), origin=origin,
                               colors=["black"], linewidths=pt(4.5))
                outline(ax, section, hex_colour(ptv.color), 2.4)
            ax.set_xlim(*limits[1])
            ax.set_ylim(*(limits[0][::-1] if axis == 0 else limits[0]))
            ax.set_aspect("equal")
            ax.set_axis_off()
            orientation_labels(ax, plane)
    _info_column(frame, liver, fls, itv, ptv, figures)
    return frame.render()


def _info_column(frame: PageFrame, liver: Contour, fls: Contour, itv: Contour, ptv: Contour,
                 figures: GsaFigures) -> None:
    x, w = _INFO_LEFT, _INFO_WIDTH
    pct = figures.threshold_fraction * 100.0
    y = text_block(frame, x, 112, [("heading", "Structures sent to the planning system")], w)
    rows: list[list[Cell]] = []
    for c, what in ((liver, f"whole liver ({figures.liver_source})"),
                    (fls, f"functional: uptake \u2265 {pct:g} % of max."),
                    (itv, "liver \u2212 FLS (to treat)"),
                    (ptv, f"ITV + {figures.margin_mm:g} mm margin")):
        rows.append([(c.name, hex_colour(c.color)), f"{c.volume_cm3:.1f}", "", what])
    # volume right after the name, the definition last (left-aligned): a long definition runs into the margin,
    # never into a number
    y = table(frame, x, y + 4, [("", 64, "l"), ("cm\u00b3", 90, "r"), ("", 12, "l"), ("", 294, "l")], rows,
              size="body")
    y = text_block(frame, x, y + 6, [
        ("body", f"PTV margin {figures.margin_mm:g} mm, isotropic (measured in mm on the CT grid)."),
        ("small", "Top row: FLS edge dashed. Bottom row: FLS and ITV filled, PTV outlined."),
    ], w)
    colour_bar(frame, (x, y + 40, w - 20, 22), UPTAKE_CMAP, 0.0, 100.0, "GSA uptake, % of the liver maximum",
               ticks=[0, 20, 40, 60, 80, 100], marks=[(pct, "")])
    frame.text(x + (w - 20) * pct / 100.0, y + 92, f"FLS threshold {pct:g} %", size="small", color=TEXT, ha="center")
    lines: list[tuple[str, str]] = [("heading", "Method"), ("body", figures.method),
                                    ("body", f"Registration: {figures.registration}")]
    tidy = figures.small_parts
    if tidy is not None:
        lines.append(("body", f"Small parts: FLS/ITV parts under {tidy.min_part_cm3:g} cm\u00b3, and contours under "
                              f"{tidy.min_contour_mm2:g} mm\u00b2 on a slice, join the neighbouring structure "
                              f"(ITV {100 * tidy.itv_change_fraction:+.1f} %, PTV "
                              f"{100 * tidy.ptv_change_fraction:+.1f} %)."))
    lines.append(("body", "Structure set UNAPPROVED: review and approve it in the planning system."))
    if figures.warnings:
        lines.append(("heading", "Check"))
        lines += [("warn", w_) for w_ in figures.warnings]
    text_block(frame, x, y + 124, lines, w)


def _nearest_slices(planning_ct: Sequence[Dataset], z_mm: Sequence[float]) -> list[Dataset]:
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in planning_ct])
    return [planning_ct[int(np.abs(zs - z).argmin())] for z in z_mm]


def build_fusion_captures(planning_ct: Sequence[Dataset], nm: Dataset, views: dict[str, Page],
                          axial_z_mm: Sequence[float], series_description: str, derivation: str,
                          series_uid: str | None = None) -> list[Dataset]:
    """Secondary Capture images (one per page in `views`: "axial", "coronal") in one new series."""
    ref = planning_ct[0]
    series_uid = series_uid or hd.UID()
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
