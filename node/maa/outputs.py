"""DICOM outputs of the MAA workflow for review: one page showing what was measured, and the regions' structure set.

* Secondary Capture (the shared page look, node.imaging.pages): axial planes through the tumours and coronal
  planes through the liver and lungs, the MAA SPECT as uptake relative to the normal liver (colour bar, scaled
  to the hottest voxel so nothing saturates) over the SPECT/CT's CT, the liver, each tumour (labelled on its
  contour) and the lungs used for the shunt outlined; beside them the T/N, volumes and doses per region, the
  lung shunt fraction and the partition-model result, stated as what it is: the largest activity within the
  configured dose limits for the stated sphere type, a model figure for the physicist, not a prescription.
* RTSTRUCT on the SPECT/CT's CT with the regions used, when any was found automatically: it can be reviewed,
  edited in any contouring tool and sent back, and the node then uses the edited contours. Its ROIs are typed
  so that no planning system takes them as targets: liver and lungs ORGAN, tumour uptake regions CONTROL; a
  region copied from a received structure set keeps that set's generation algorithm.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.axes import Axes
from pydicom import Dataset

import rtstruct
from node.derived import MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_DIAGNOSIS, SOFTWARE_VERSIONS, copy_patient_study
from node.imaging.capture import secondary_capture
from node.imaging.layers import Layer
from node.imaging.pages import (
    CT_WINDOW,
    DIM,
    LABEL_GID,
    UPTAKE_CMAP,
    Cell,
    Identity,
    Page,
    PageFrame,
    colour_bar,
    halo,
    hex_colour,
    new_page,
    orientation_labels,
    pt,
    table,
    text_block,
)
from node.imaging.volumes import array_to_mask, image_to_mask
from node.maa.partition import PartitionPlan
from node.maa.regions import Regions
from node.maa.settings import MaaSettings
from node.maa.shunt import Shunt
from node.maa.uptake import Uptake
from node.report.groups import region_name
from node.workflow import OutputObject

logger = logging.getLogger(__name__)

__all__ = ["build_outputs", "render_review", "RTSTRUCT_SERIES_NUMBER", "CAPTURE_SERIES_NUMBER", "COLOURS",
           "TUMOUR_ROI_TYPE"]

RTSTRUCT_SERIES_NUMBER = 9610
CAPTURE_SERIES_NUMBER = 9611
#: Region colours (RGB), on the page and in the structure set; none is in the uptake colour scale.
COLOURS = {"liver": (255, 215, 0), "tumour": (255, 80, 40), "lungs": (90, 220, 110)}
#: RTROIInterpretedType of a tumour uptake region: CONTROL (a helper structure) so that a planning system
#: never takes it as a target volume (GTV/CTV/PTV are for the radiotherapy targets of the GSA workflow only).
TUMOUR_ROI_TYPE = "CONTROL"
#: Uptake below this multiple of the normal-liver level is left transparent on the page.
DISPLAY_FLOOR = 0.15
_MAX_AXIAL = 3
_GRID_LEFT, _GRID_WIDTH, _GRID_TOP, _ROW_HEIGHT, _CAPTION_PX = 16.0, 1400.0, 104.0, 436.0, 28.0
_INFO_LEFT, _INFO_WIDTH = 1440.0, 460.0


def _caption(uptake: Uptake, shunt: Shunt, plan: PartitionPlan | None, sphere_type: str) -> str:
    """One line for the capture's ImageComments (the page itself says more)."""
    tn = ", ".join(f"{t.name} {t.tn_ratio:.1f}" for t in uptake.tumours) or "no tumour found"
    lsf = "n/a" if shunt.lsf is None else f"{shunt.lsf:.1%} ({shunt.source})"
    act = (f"maximum {plan.activity_gbq:.2f} GBq within the limits ({sphere_type} spheres; limited by "
           f"{plan.limited_by}), not a prescription" if plan else "not computed")
    return f"T/N: {tn}. Lung shunt fraction: {lsf}. Partition model: {act}"


class _Panel:
    """One image panel: a plane through the volumes, drawn in patient mm (each layer on its own grid)."""

    def __init__(self, plane: str, mm: float, title: str) -> None:
        self.plane, self.mm, self.title = plane, mm, title
        self.axis = 0 if plane == "axial" else 1
        self.rows_axis = 1 if self.axis == 0 else 0
        self.origin: Literal["upper", "lower"] = "upper" if self.axis == 0 else "lower"

    def extent(self, layer: Layer) -> tuple[float, float, float, float]:
        rows = layer.edges(self.rows_axis)
        return (*layer.edges(2), *(rows[::-1] if self.axis == 0 else rows))

    def section(self, layer: Layer) -> np.ndarray | None:
        return layer.section(self.axis, self.mm)

    def outline(self, ax: Axes, layer: Layer, colour: str, width_px: float, label: str = "") -> None:
        section = self.section(layer)
        if section is None:
            return
        mask = section >= 0.5
        if not mask.any() or mask.all():
            return
        ax.contour(mask.astype(np.float32), levels=[0.5], extent=self.extent(layer), origin=self.origin,
                   colors=["black"], linewidths=pt(width_px + 2.0))
        ax.contour(mask.astype(np.float32), levels=[0.5], extent=self.extent(layer), origin=self.origin,
                   colors=[colour], linewidths=pt(width_px))
        if label:
            rows, cols = np.nonzero(mask)
            if self.axis == 0:  # anterior (smallest P) is at the top
                r = int(rows.min())
            else:  # superior (largest S) is at the top
                r = int(rows.max())
            c = float(cols[rows == r].mean())
            x = layer.origin[2] + layer.spacing[2] * c
            edge = layer.origin[self.rows_axis] + layer.spacing[self.rows_axis] * r
            y = edge - 0.5 * layer.spacing[self.rows_axis] if self.axis == 0 else \
                edge + 0.5 * layer.spacing[self.rows_axis]
            ax.text(x, y, label, color="white", fontsize=pt(17), weight="bold", ha="center", va="bottom",
                    path_effects=halo(3.5), clip_on=True, gid=LABEL_GID)


def render_review(identity: Identity, spect: sitk.Image, counts: np.ndarray, ct_image: sitk.Image | None,
                  regions: Regions, uptake: Uptake, shunt: Shunt, plan: PartitionPlan | None,
                  settings: MaaSettings) -> Page:
    """The review page (module docstring)."""
    uptake_layer = Layer.of(counts, spect)
    liver_layer = Layer.of(regions.liver, spect)
    tumour_layers = {name: Layer.of(frac, spect) for name, frac in regions.tumours.items()}
    ct_layer = Layer.of(sitk.GetArrayViewFromImage(ct_image), ct_image) if ct_image is not None else None
    lung_layer = (Layer.of(sitk.GetArrayViewFromImage(shunt.lung_mask), shunt.lung_mask)
                  if shunt.lung_mask is not None else None)
    normal = uptake.normal_counts_per_ml * float(np.prod(spect.GetSpacing())) / 1000.0
    in_liver = regions.liver >= 0.5
    for fraction in regions.tumours.values():
        in_liver = in_liver | (fraction >= 0.5)
    hottest = float(counts[in_liver].max()) / normal if in_liver.any() and normal > 0 else 1.0
    vmax = float(max(2, math.ceil(hottest)))  # the scale reaches the hottest voxel: nothing saturates

    liver_view = liver_layer.array >= 0.5
    panels = [_Panel("axial", t.centre_mm[2], f"axial through {t.name}") for t in uptake.tumours[:_MAX_AXIAL]]
    if len(panels) < _MAX_AXIAL and liver_view.any():
        occupied = np.nonzero(liver_view.any(axis=(1, 2)))[0]
        for q in (0.5, 0.3, 0.7)[: _MAX_AXIAL - len(panels)]:
            k = occupied[0] + q * (occupied[-1] - occupied[0])
            panels.append(_Panel("axial", liver_layer.origin[0] + liver_layer.spacing[0] * k,
                                 "axial through the liver"))
    coronal = []
    if liver_view.any():
        p_idx = np.nonzero(liver_view.any(axis=(0, 2)))[0]
        centre = liver_layer.origin[1] + liver_layer.spacing[1] * float(p_idx.mean())
        coronal.append(_Panel("coronal", centre, "coronal through the liver and lungs"))
    if uptake.tumours:
        hot = max(uptake.tumours, key=lambda t: t.tn_ratio)
        coronal.append(_Panel("coronal", hot.centre_mm[1], f"coronal through {hot.name} (highest T/N)"))

    frame = new_page(identity, "99mTc-MAA SPECT: tumour uptake, lung shunt, Y-90 partition model",
                     "MAA uptake over the SPECT/CT's CT, with the regions used for the uptake ratios and the "
                     "lung shunt",
                     page_number=(1, 1))
    limits_axial = _limits(liver_layer, [liver_view], (1, 2), 30.0)
    coronal_masks = [liver_view] + ([lung_layer.array > 0] if lung_layer is not None else [])
    coronal_layers = [liver_layer] + ([lung_layer] if lung_layer is not None else [])
    limits_coronal = _union_limits(coronal_layers, coronal_masks, (0, 2), 25.0)
    rows = [panels, coronal]
    for r, row in enumerate(rows):
        if not row:
            continue
        top = _GRID_TOP + r * (_ROW_HEIGHT + _CAPTION_PX)
        width = _GRID_WIDTH / len(row)
        for c, panel in enumerate(row):
            left = _GRID_LEFT + c * width
            frame.text(left + 6, top, panel.title, size="small", color=DIM)
            ax = frame.axes(left + 4, top + _CAPTION_PX, width - 8, _ROW_HEIGHT - 8)
            if ct_layer is not None and (section := panel.section(ct_layer)) is not None:
                ax.imshow(section, cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=panel.extent(ct_layer),
                          origin=panel.origin, interpolation="nearest")
            values = panel.section(uptake_layer)
            if values is not None and normal > 0:
                relative = values / normal
                ax.imshow(np.ma.masked_less(relative, DISPLAY_FLOOR), cmap=UPTAKE_CMAP, vmin=0.0, vmax=vmax,
                          alpha=0.85 if ct_layer is not None else 1.0, extent=panel.extent(uptake_layer),
                          origin=panel.origin, interpolation="bilinear")
            panel.outline(ax, liver_layer, hex_colour(COLOURS["liver"]), 1.8)
            if lung_layer is not None and panel.plane == "coronal":
                panel.outline(ax, lung_layer, hex_colour(COLOURS["lungs"]), 1.8)
            for name, layer in tumour_layers.items():
                panel.outline(ax, layer, hex_colour(COLOURS["tumour"]), 2.2, label=name)
            limits = limits_axial if panel.plane == "axial" else limits_coronal
            ax.set_xlim(*limits[1])
            ax.set_ylim(*(limits[0][::-1] if panel.plane == "axial" else limits[0]))
            ax.set_aspect("equal")
            ax.set_axis_off()
            orientation_labels(ax, panel.plane)
    _info_column(frame, regions, uptake, shunt, plan, settings, vmax)
    return frame.render()


def _limits(layer: Layer, masks: Sequence[np.ndarray], axes: tuple[int, int], margin_mm: float
            ) -> tuple[tuple[float, float], tuple[float, float]]:
    return _union_limits([layer] * len(masks), masks, axes, margin_mm)


def _union_limits(layers: Sequence[Layer], masks: Sequence[np.ndarray], axes: tuple[int, int], margin_mm: float
                  ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Display limits (mm) along two LPS view axes covering every mask (each on its layer's grid) + margin."""
    out = []
    for axis in axes:
        lo, hi = math.inf, -math.inf
        for layer, mask in zip(layers, masks, strict=True):
            occupied = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
            if occupied.size:
                lo = min(lo, layer.origin[axis] + layer.spacing[axis] * (occupied[0] - 0.5))
                hi = max(hi, layer.origin[axis] + layer.spacing[axis] * (occupied[-1] + 0.5))
        if not math.isfinite(lo):
            lo, hi = layers[0].edges(axis)
        out.append((lo - margin_mm, hi + margin_mm))
    return out[0], out[1]


def _info_column(frame: PageFrame, regions: Regions, uptake: Uptake, shunt: Shunt, plan: PartitionPlan | None,
                 settings: MaaSettings, vmax: float) -> None:
    x, w = _INFO_LEFT, _INFO_WIDTH
    y = text_block(frame, x, 112, [("heading", "Regions")], w)
    tumour_colour = hex_colour(COLOURS["tumour"])
    rows: list[list[Cell]] = []
    doses = plan.tumour_doses_gy if plan else {}
    for t in uptake.tumours:
        dose = doses.get(t.name)
        rows.append([(t.name, tumour_colour), f"{t.volume_ml:.1f}", f"{t.tn_ratio:.1f}",
                     "-" if dose is None else f"{dose:.0f}"])
    rows.append([(region_name("normal liver"), hex_colour(COLOURS["liver"])), f"{uptake.normal_liver_ml:.0f}",
                 "1 (ref.)",
                 f"{plan.normal_liver_dose_gy:.0f}" if plan else "-"])
    rows.append([(region_name("lungs"), hex_colour(COLOURS["lungs"])),
                 "-" if shunt.lung_volume_ml is None else f"{shunt.lung_volume_ml:.0f}", "",
                 f"{plan.lung_dose_gy:.1f}" if plan else "-"])
    y = table(frame, x, y + 2, [("region", 150, "l"), ("cm\u00b3", 100, "r"), ("T/N", 90, "r"),
                                ("dose Gy", 120, "r")], rows)
    lines: list[tuple[str, str]] = [
        ("small", "T/N: counts per mL, tumour over normal liver (liver minus tumours), partial-volume "
                  "corrected."),
    ]
    if shunt.lsf is not None:
        where = ("measured on the SPECT/CT, lungs outlined" if shunt.source == "measured on SPECT"
                 else f"from the configuration ({shunt.reason})")
        lines.append(("body", f"Lung shunt fraction {100 * shunt.lsf:.1f} % ({where})."))
    else:
        lines.append(("warn", f"Lung shunt fraction not available: {shunt.reason}."))
    y = text_block(frame, x, y + 6, lines, w)
    colour_bar(frame, (x, y + 36, w - 20, 22), UPTAKE_CMAP, 0.0, vmax, "MAA uptake, multiple of the normal liver",
               ticks=list(range(0, int(vmax) + 1, max(1, int(vmax) // 5))), marks=[(1.0, "")])
    y += 100
    lines = [("heading", f"Partition model, Y-90 {settings.sphere_type.value} microspheres")]
    if plan is not None:
        lines += [
            ("body", f"Limits: {settings.partition_targets.basis}."),
            ("key", f"Maximum activity {plan.activity_gbq:.2f} GBq"),
            ("body", f"the largest activity within these limits (reached first: {plan.limited_by}); "
                     f"normal liver {plan.normal_liver_dose_gy:.0f} Gy, lungs {plan.lung_dose_gy:.1f} Gy."),
            ("warn", "A model maximum for the physicist's plan, not a prescription."),
        ]
    else:
        lines.append(("warn", "Not computed: no lung shunt fraction (lungs not imaged completely, none configured)."
                      if shunt.lsf is None else f"Not computed: no lung dose left (limits: "
                                                f"{settings.partition_targets.basis})."))
    lines.append(("small", "Doses: partition-model mean per region at this activity (uniform uptake per "
                           "compartment; 49.67 Gy kg/GBq; tissue 1.03 g/mL"
                  + (f"; lung mass {1000 * plan.lung_mass_kg:.0f} g, {plan.lung_mass_source})." if plan else ").")))
    lines.append(("heading", "Regions from"))
    lines.append(("body", f"liver: {regions.liver_source}; tumours: {regions.tumour_source}."))
    if "automatic" in regions.liver_source or "automatic" in regions.tumour_source:
        lines.append(("warn", "Found automatically: review them (structure set 'MAA REGIONS') before planning."))
    names = regions.details.get("names") if isinstance(regions.details, dict) else None
    if names:  # the lesion's one name only: the provisional names of the search never reach a reader
        lines.append(("small", "Tumour names: those of the perfusion-CT lesions they overlap."))
    text_block(frame, x, y, lines, w)


def _generation(received: Dataset | None, name: str, automatic: bool, how: str) -> tuple[str, str | None]:
    """(ROIGenerationAlgorithm, description) of a region: automatic ones say how; a received ROI keeps its own."""
    if automatic or received is None:
        return "AUTOMATIC", how[:64]
    try:
        algorithm, description = rtstruct.roi_generation(received, name)
    except KeyError:
        return "", "copied from the received structure set"
    return algorithm, ((f"{description}; " if description else "") + "copied from the received structure set")[:64]


def _rtstruct(regions: Regions, uptake: Uptake, on_ct: Mapping[str, np.ndarray], shunt: Shunt,
              ct_ordered: Sequence[Dataset], ct_image: sitk.Image, received: Dataset | None) -> Dataset:
    """The regions used, on the SPECT/CT's CT (liver and lungs ORGAN, tumour uptake regions CONTROL): `on_ct`
    are their bool masks on the CT (node.maa.dosimetry.regions_on_ct), the very regions of the Y-90 dose's
    DVHs; the lungs are those of the lung shunt (and of the dose's lung VOI)."""
    tn = {t.name: t for t in uptake.tumours}
    auto_liver = regions.liver_source != "RTSTRUCT"
    auto_tumours = regions.tumour_source != "RTSTRUCT"
    algorithm, how = _generation(received, "Liver", auto_liver, "liver: MAA SPECT uptake region")
    rois = [rtstruct.RoiMask("Liver", array_to_mask(on_ct["liver"], ct_image, ct_ordered), interpreted_type="ORGAN",
                             color=COLOURS["liver"],
                             description="liver from MAA SPECT uptake" if auto_liver else "liver (received)",
                             generation_algorithm=algorithm, generation_description=how)]
    for name in regions.tumours:
        t = tn[name]
        algorithm, how = _generation(received, name, auto_tumours, "hot region of the MAA SPECT (sphere model)")
        rois.append(rtstruct.RoiMask(name, array_to_mask(on_ct[name], ct_image, ct_ordered),
                                     interpreted_type=TUMOUR_ROI_TYPE,
                                     color=COLOURS["tumour"],
                                     description=f"MAA uptake region {name}: T/N {t.tn_ratio:.1f}, "
                                                 f"{t.volume_ml:.1f} cm3"[:64],
                                     generation_algorithm=algorithm, generation_description=how))
    if shunt.lung_mask is not None and shunt.source == "measured on SPECT":
        lungs = sitk.Resample(shunt.lung_mask, ct_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        rois.append(rtstruct.RoiMask("Lungs", image_to_mask(lungs > 0, ct_ordered), interpreted_type="ORGAN",
                                     color=COLOURS["lungs"], description="lungs used for the lung shunt fraction",
                                     generation_algorithm="AUTOMATIC",
                                     generation_description="SPECT/CT CT below -400 HU inside the body"))
    ds = rtstruct.write_rtstruct(ct_ordered, rois, structure_set_label="MAA REGIONS",
                                 series_description=f"MAA regions - {NOT_FOR_DIAGNOSIS}"[:64],
                                 series_number=RTSTRUCT_SERIES_NUMBER, manufacturer=MANUFACTURER,
                                 software_versions=SOFTWARE_VERSIONS, approval_status="UNAPPROVED")
    copy_patient_study(ct_ordered[0], ds)
    if "BodyPartExamined" in ds:  # not part of the RT Structure Set IOD (dciodvfy flags it)
        del ds.BodyPartExamined
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    return ds


def build_outputs(nm: Dataset, spect: sitk.Image, counts: np.ndarray, regions: Regions, uptake: Uptake,
                  shunt: Shunt, plan: PartitionPlan | None, ct_ordered: Sequence[Dataset] | None,
                  ct_image: sitk.Image | None, on_ct: Mapping[str, np.ndarray] | None,
                  received: Dataset | None = None, settings: MaaSettings | None = None
                  ) -> tuple[list[OutputObject], Dataset | None]:
    """The review page (always) and the regions' RTSTRUCT (when a region was automatic and a CT exists), with
    that RTSTRUCT (None when not made).

    `on_ct`: the regions as bool masks on the CT (node.maa.dosimetry.regions_on_ct); `received` is the RTSTRUCT
    the regions came from, if any (its ROIs' generation algorithms are kept).
    """
    settings = settings or MaaSettings()
    description = f"MAA regions - {NOT_FOR_DIAGNOSIS}"
    caption = _caption(uptake, shunt, plan, settings.sphere_type.value)
    page = render_review(Identity.of(nm, description), spect, counts, ct_image, regions, uptake, shunt, plan,
                         settings)
    sources = [nm] + (list(ct_ordered) if ct_ordered else [])
    sc = secondary_capture(
        page, nm, sources, series_uid=hd.UID(), series_number=CAPTURE_SERIES_NUMBER, instance_number=1,
        series_description=description, comments=f"{NOT_FOR_DIAGNOSIS}. {caption}",
        derivation="99mTc-MAA SPECT (colour, multiple of the normal-liver level) over its SPECT/CT CT with the "
                   "liver, tumour and lung regions used for the uptake ratios and the lung shunt outlined",
        image_plane=False)
    out = [OutputObject("secondary-capture", sc, "MAA regions review")]
    rtss = None
    if ct_ordered and ct_image is not None and on_ct is not None and (regions.liver_source != "RTSTRUCT"
                                                                      or regions.tumour_source != "RTSTRUCT"):
        # Routed with the report (to the PACS), not as "rtstruct": the TPS takes the radiotherapy targets only,
        # and these regions document the T/N measurement for the physicist to review or correct. They are also
        # the regions of the Y-90 dose's DVHs, so they go with that dose ("rtdose") when one is computed.
        rtss = _rtstruct(regions, uptake, on_ct, shunt, ct_ordered, ct_image, received)
        out.append(OutputObject("report", rtss, "MAA regions structure set"))
    return out, rtss
