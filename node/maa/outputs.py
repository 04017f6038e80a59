"""DICOM outputs of the MAA workflow for review: a fusion capture of the regions and their structure set.

* Secondary Capture: axial planes through each tumour (and a coronal plane through the liver) of the MAA
  SPECT in colour over the SPECT/CT's CT, liver (yellow) and tumours (red) outlined, with T/N, LSF and the
  partition-model activity in the caption, so the physicist sees at a glance what was measured.
* RTSTRUCT on the SPECT/CT's CT with the regions used, when any was found automatically: it can be reviewed,
  edited in any contouring tool and sent back, and the node then uses the edited contours.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure
from pydicom import Dataset

import rtstruct
from node.derived import MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_DIAGNOSIS, SOFTWARE_VERSIONS, copy_patient_study
from node.gsa.outputs import lps_view
from node.imaging.capture import figure_rgb, secondary_capture
from node.imaging.grids import as_image
from node.imaging.volumes import array_to_mask, image_to_mask
from node.maa.partition import PartitionPlan
from node.maa.regions import Regions
from node.maa.shunt import Shunt
from node.maa.uptake import Uptake
from node.workflow import OutputObject

logger = logging.getLogger(__name__)

__all__ = ["build_outputs", "RTSTRUCT_SERIES_NUMBER", "CAPTURE_SERIES_NUMBER"]

RTSTRUCT_SERIES_NUMBER = 9610
CAPTURE_SERIES_NUMBER = 9611
CT_WINDOW = (-160.0, 240.0)
_MAX_AXIAL = 4


def _caption(uptake: Uptake, shunt: Shunt, plan: PartitionPlan | None) -> str:
    tn = ", ".join(f"{t.name} {t.tn_ratio:.2f}" for t in uptake.tumours) or "no tumour found"
    lsf = "n/a" if shunt.lsf is None else f"{shunt.lsf:.1%} ({shunt.source})"
    act = (f"{plan.activity_gbq:.2f} GBq (limited by {plan.limited_by}; normal liver {plan.normal_liver_dose_gy:.0f} "
           f"Gy, lung {plan.lung_dose_gy:.1f} Gy)" if plan else "not computed")
    return f"T/N: {tn}.  LSF: {lsf}.  Partition model: {act}"


def _planes(uptake: Uptake, views: dict[str, np.ndarray], spect: sitk.Image,
            spacing_spl: Sequence[float]) -> list[tuple[str, int]]:
    """(title, index along S) of the axial planes: through each tumour centre, else through the liver."""
    size = spect.GetSize()
    corners = np.array([spect.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, size[0] - 1)
                        for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    z0 = corners[:, 2].min()
    planes = []
    for t in uptake.tumours[:_MAX_AXIAL]:
        planes.append((f"axial through {t.name}", int(round((t.centre_mm[2] - z0) / spacing_spl[0]))))
    if not planes:
        occupied = np.nonzero(views["liver"].any(axis=(1, 2)))[0]
        if occupied.size:
            planes = [(f"axial liver {q:.0%}", int(occupied[0] + q * (occupied[-1] - occupied[0])))
                      for q in (0.3, 0.5, 0.7)]
    return [(title, int(np.clip(k, 0, views["spect"].shape[0] - 1))) for title, k in planes]


def render_review(spect: sitk.Image, counts: np.ndarray, ct_on_spect: np.ndarray | None, regions: Regions,
                  uptake: Uptake, caption: str) -> np.ndarray:
    """RGB montage: axial planes through the tumours and a coronal plane through the liver."""
    direction = np.asarray(spect.GetDirection(), dtype=float)
    spacing = spect.GetSpacing()
    views = {"spect": lps_view(counts, direction, spacing)[0],
             "liver": lps_view(regions.liver >= 0.5, direction, spacing)[0]}
    sp = lps_view(counts, direction, spacing)[1]
    tumour_views = {n: lps_view(f >= 0.5, direction, spacing)[0] for n, f in regions.tumours.items()}
    ct_view = lps_view(ct_on_spect, direction, spacing)[0] if ct_on_spect is not None else None
    planes = _planes(uptake, views, spect, sp)
    liver_p = np.nonzero(views["liver"].any(axis=(0, 2)))[0]
    coronal = int(liver_p.mean()) if liver_p.size else views["spect"].shape[1] // 2
    panels = [(title, "axial", k) for title, k in planes] + [("coronal through the liver", "coronal", coronal)]
    normal = uptake.normal_counts_per_ml * float(np.prod(spacing)) / 1000.0
    vmax = max(float(np.percentile(counts[regions.liver >= 0.5], 99.5)) if (regions.liver >= 0.5).any() else 1.0,
               3.0 * normal)
    ncols = 2 if len(panels) == 4 else min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 4.4 * nrows + 1.2), dpi=100, facecolor="black")
    fig.suptitle(f"99mTc-MAA SPECT regions - {NOT_FOR_DIAGNOSIS}\nliver: {regions.liver_source}\n"
                 f"tumours: {regions.tumour_source}", color="white", fontsize=9)
    for n, (title, plane, index) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, n + 1)

        def cut(view: np.ndarray, plane: str = plane, index: int = index) -> np.ndarray:
            return view[index] if plane == "axial" else view[:, index, :]

        aspect = sp[1] / sp[2] if plane == "axial" else sp[0] / sp[2]
        # coronal: superior at the top; contours use data coordinates (row index = y), matching either origin
        origin: Literal["upper", "lower"] = "upper" if plane == "axial" else "lower"
        if ct_view is not None:
            ax.imshow(cut(ct_view), cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], aspect=aspect, origin=origin)
        shown = np.ma.masked_less(cut(views["spect"]), 0.15 * normal)
        ax.imshow(shown, cmap="hot", vmin=0.0, vmax=vmax, alpha=0.6 if ct_view is not None else 1.0, aspect=aspect,
                  origin=origin)
        if cut(views["liver"]).any():
            ax.contour(cut(views["liver"]).astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
        for name, tv in tumour_views.items():
            sl = cut(tv)
            if sl.any():
                ax.contour(sl.astype(float), levels=[0.5], colors="red", linewidths=1.0)
                r, c = np.argwhere(sl).min(axis=0)
                ax.text(c, r - 2, name, color="cyan", fontsize=8, ha="right", va="bottom")
        ax.set_title(title, color="white", fontsize=9)
        ax.text(0.01, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=8, va="center")
        ax.text(0.97, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=8, va="center")
        ax.set_axis_off()
    fig.text(0.5, 0.01, caption, color="white", fontsize=8, ha="center", wrap=True)
    return figure_rgb(fig)


def _rtstruct(regions: Regions, uptake: Uptake, on_ct: Mapping[str, np.ndarray], shunt: Shunt,
              ct_ordered: Sequence[Dataset], ct_image: sitk.Image) -> Dataset:
    """The regions used (`on_ct`: bool masks on the CT, see node.maa.dosimetry.regions_on_ct) and, when they were
    found, the lungs (the lung VOI of the shunt and of the Y-90 dose), on the SPECT/CT's CT."""
    tn = {t.name: t for t in uptake.tumours}
    auto_liver = regions.liver_source != "RTSTRUCT"
    auto_tumours = regions.tumour_source != "RTSTRUCT"
    rois = [rtstruct.RoiMask("Liver", array_to_mask(on_ct["liver"], ct_image, ct_ordered), interpreted_type="ORGAN",
                             color=(255, 215, 0),
                             description=("liver from MAA SPECT uptake" if auto_liver else "liver (received)"))]
    for name in regions.tumours:
        t = tn[name]
        rois.append(rtstruct.RoiMask(name, array_to_mask(on_ct[name], ct_image, ct_ordered), interpreted_type="GTV",
                                     color=(230, 30, 30),
                                     description=(f"MAA {'hot region' if auto_tumours else 'tumour'}: T/N "
                                                  f"{t.tn_ratio:.2f}, {t.volume_ml:.1f} mL")[:64]))
    if shunt.lung_ct is not None and shunt.lung_ct_mask is not None:
        lungs = sitk.Resample(as_image(shunt.lung_ct_mask.astype(np.uint8), shunt.lung_ct), ct_image,
                              sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        rois.append(rtstruct.RoiMask("Lungs", image_to_mask(lungs, ct_ordered), interpreted_type="ORGAN",
                                     color=(100, 180, 255), description="lungs from the SPECT/CT CT (lung shunt VOI)"))
    ds = rtstruct.write_rtstruct(ct_ordered, rois, structure_set_label="MAA REGIONS",
                                 series_description=f"MAA regions - {NOT_FOR_DIAGNOSIS}"[:64],
                                 series_number=RTSTRUCT_SERIES_NUMBER, manufacturer=MANUFACTURER,
                                 software_versions=SOFTWARE_VERSIONS, approval_status="UNAPPROVED")
    copy_patient_study(ct_ordered[0], ds)
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    return ds


def build_outputs(nm: Dataset, spect: sitk.Image, counts: np.ndarray, regions: Regions, uptake: Uptake,
                  shunt: Shunt, plan: PartitionPlan | None, ct_ordered: Sequence[Dataset] | None,
                  ct_image: sitk.Image | None, on_ct: Mapping[str, np.ndarray] | None
                  ) -> tuple[list[OutputObject], Dataset | None]:
    """The review capture (always) and the regions' RTSTRUCT (when a region was automatic and a CT exists),
    with that RTSTRUCT (None when not made)."""
    ct_on_spect = None
    if ct_image is not None:
        ct_on_spect = sitk.GetArrayFromImage(sitk.Resample(ct_image, spect, sitk.Transform(), sitk.sitkLinear,
                                                           -1000.0, sitk.sitkFloat32))
    caption = _caption(uptake, shunt, plan)
    rgb = render_review(spect, counts, ct_on_spect, regions, uptake, caption)
    sources = [nm] + (list(ct_ordered) if ct_ordered else [])
    sc = secondary_capture(
        rgb, nm, sources, series_uid=hd.UID(), series_number=CAPTURE_SERIES_NUMBER, instance_number=1,
        series_description=f"MAA regions - {NOT_FOR_DIAGNOSIS}",
        comments=f"{NOT_FOR_DIAGNOSIS}. {caption}",
        derivation="99mTc-MAA SPECT (colour) over its SPECT/CT CT with the liver and tumour regions used for the "
                   "tumour-to-normal ratio outlined", image_plane=False)
    out = [OutputObject("secondary-capture", sc, "MAA regions review")]
    logger.debug("MAA review capture %dx%d", rgb.shape[1], rgb.shape[0])
    rtss = None
    if ct_ordered and ct_image is not None and on_ct is not None and (regions.liver_source != "RTSTRUCT"
                                                                      or regions.tumour_source != "RTSTRUCT"):
        # Routed with the report (to the PACS), not as "rtstruct": the TPS takes the radiotherapy targets only,
        # and these regions document the T/N measurement for the physicist to review or correct. They are also
        # the regions of the Y-90 dose's DVHs, so they go with that dose ("rtdose") when one is computed.
        rtss = _rtstruct(regions, uptake, on_ct, shunt, ct_ordered, ct_image)
        out.append(OutputObject("report", rtss, "MAA regions structure set"))
    return out, rtss
