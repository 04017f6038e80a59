"""DICOM outputs of a perfusion analysis (highdicom 0.28): Parametric Maps and Secondary Captures.

* One Parametric Map per parameter and method: float32 on the working grid of the analysis (its own pixel
  spacing, same frame of reference), NaN where nothing was computed (outside the analysed tissue, or a value the
  voxel's curve does not define), a real-world value mapping in UCUM units whose QuantityDefinitionSequence
  codes the quantity and the method (DCM/SCT codes where they exist, else the node's scheme 99LIVERNODE),
  sources = the CT instances of the reference time point (the frame everything was registered to).
* Secondary Captures (RGB, 8 bit) for reading at any PACS station: colour maps fused over the reference CT on
  representative slices with colour bars and units, and the time-attenuation curves with the phase split.

Every object is labelled DERIVED and "not for primary diagnosis", carries the method and its parameters in
SeriesDescription/ContentDescription/ImageComments, and copies patient/study data from the source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
import matplotlib

matplotlib.use("Agg")  # headless node: never pick an interactive backend
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydicom import Dataset  # noqa: E402
from pydicom.sr.coding import Code  # noqa: E402

from node.derived import NOT_FOR_DIAGNOSIS, copy_patient_study, equipment_kwargs  # noqa: E402
from node.imaging.capture import figure_rgb  # noqa: E402
from node.perfusion.volume4d import Volume4D  # noqa: E402

SERIES_NUMBER_BASE = 9500  # derived series numbers: far from scanner series numbers


@dataclass(frozen=True)
class ParamInfo:
    """How a perfusion parameter is labelled, encoded and displayed."""

    name: str
    ucum: str  # UCUM code value
    unit_text: str  # for people
    display: tuple[float, float]  # colour/VOI window (fixed so that slices and patients compare)
    quantity: tuple[str, str, str]  # (code value, scheme, meaning) of the quantity (QuantityDefinitionSequence)


#: The node's own coding scheme where DICOM (DCM) and SNOMED CT (SCT) have no code for the quantity or method
#: (PS3.16 8.2: a private designator starts with "99"); the same values as the case report's (node.report.codes).
PRIVATE_SCHEME = "99LIVERNODE"
PARAMETERS: dict[str, ParamInfo] = {
    "ALP": ParamInfo("Arterial liver perfusion", "mL/min/(100.mL)", "mL/min/100 mL", (0.0, 80.0),
                     ("LN-ALP", PRIVATE_SCHEME, "Arterial liver perfusion")),
    "PVP": ParamInfo("Portal venous perfusion", "mL/min/(100.mL)", "mL/min/100 mL", (0.0, 150.0),
                     ("LN-PVP", PRIVATE_SCHEME, "Portal venous perfusion")),
    # total blood flow per volume of tissue: DICOM's "Absolute Regional Blood Flow" (CID 4108)
    "TLP": ParamInfo("Total liver perfusion", "mL/min/(100.mL)", "mL/min/100 mL", (0.0, 200.0),
                     ("126390", "DCM", "Absolute Regional Blood Flow")),
    "HPI": ParamInfo("Hepatic perfusion index", "%", "%", (0.0, 100.0),
                     ("LN-HPI", PRIVATE_SCHEME, "Hepatic perfusion index")),
    "DV": ParamInfo("Distribution volume", "%", "%", (0.0, 100.0),
                    ("LN-DV", PRIVATE_SCHEME, "Distribution volume")),
    "MTT": ParamInfo("Mean transit time", "s", "s", (0.0, 60.0), ("113052", "DCM", "Mean Transit Time")),
}
METHOD_TITLES = {"max-slope": "dual-input maximum slope", "discm": "dual-input single-compartment model"}
METHOD_SHORT = {"max-slope": "MaxSlope", "discm": "DISCM"}
#: the method as a coded value: DICOM's "Maximum Slope" (CID 4109); the model has no DICOM code
METHOD_CODES = {"max-slope": ("126375", "DCM", "Maximum Slope"),
                "discm": ("LN-M-DISCM", PRIVATE_SCHEME, "Dual-input single-compartment model (Materne)")}
_MEASUREMENT_METHOD = ("370129005", "SCT", "Measurement Method")


def quantity_definitions(param: str, method: str) -> list[Dataset]:
    """QuantityDefinitionSequence items: the quantity (SCT 246205007 "Quantity") and the method (SCT 370129005
    "Measurement Method"), both coded, so that a viewer can tell what the map holds without reading text."""
    items = []
    for name, value in ((("246205007", "SCT", "Quantity"), PARAMETERS[param].quantity),
                        (_MEASUREMENT_METHOD, METHOD_CODES[method])):
        item = Dataset()
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = [_code(*name)]
        item.ConceptCodeSequence = [_code(*value)]
        items.append(item)
    return items


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value, scheme, meaning
    return ds


@dataclass
class MapSet:
    """Maps of one method on the working grid, with the method parameters that produced them."""

    method: str  # "max-slope" or "discm"
    maps: dict[str, np.ndarray]  # parameter -> (Z, Y, X) float32
    parameters: dict[str, Any]  # JSON-friendly; summarised into descriptions
    summary: str  # <= ~40 characters of the key parameters, e.g. "t_spl 15 s, sigma 4 mm"


def parametric_map(values: np.ndarray, param: str, mapset: MapSet, vol: Volume4D, ref_t: int,
                   series_number: int) -> Dataset:
    """A Parametric Map of one parameter (float32 (Z, Y, X) on the working grid)."""
    info = PARAMETERS[param]
    sources = vol.source_images(ref_t)
    arr = np.ascontiguousarray(values, dtype=np.float32)
    volume = hd.Volume(arr, vol.grid.affine(), coordinate_system="PATIENT",
                       frame_of_reference_uid=sources[0].FrameOfReferenceUID)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=param, lut_explanation=f"{info.name} ({METHOD_SHORT[mapset.method]})"[:64],
        unit=Code(info.ucum, "UCUM", info.ucum), value_range=(lo, hi if hi > lo else lo + 1.0),
        slope=1.0, intercept=0.0)
    window = hd.VOILUTTransformation(window_center=sum(info.display) / 2.0,
                                     window_width=info.display[1] - info.display[0])
    method = METHOD_SHORT[mapset.method]
    pm = hd.pm.ParametricMap(
        source_images=sources, pixel_array=volume, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], voi_lut_transformations=[window],
        content_label=f"{method}_{param}".upper()[:16],
        content_description=f"{param} {method}: {mapset.summary}"[:64],
        series_description=f"{param} {method} - {NOT_FOR_DIAGNOSIS}"[:64],
        **equipment_kwargs())
    copy_patient_study(sources[0], pm)
    # the quantity and the method as coded values, in the real-world value mapping that gives the unit
    pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].QuantityDefinitionSequence = \
        quantity_definitions(param, mapset.method)
    return pm


# ------------------------------------------------------------------ rendering helpers
def _display_orientation(vol: Volume4D) -> tuple[bool, bool]:
    """Flips (rows, columns) that put patient posterior down and patient left on the viewer's right."""
    return bool(vol.grid.col_dir[1] < 0), bool(vol.grid.row_dir[0] < 0)


def _orient(img: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    if flips[0]:
        img = img[::-1]
    if flips[1]:
        img = img[:, ::-1]
    return img


def _to_native(work: np.ndarray, vol: Volume4D) -> np.ndarray:
    """A working-grid slice on the native pixel grid (block replication; uncovered border = 0)."""
    f = vol.factor
    rep = np.repeat(np.repeat(work, f, axis=0), f, axis=1)
    out = np.zeros(vol.native_grid.shape[1:], dtype=work.dtype)
    out[:rep.shape[0], :rep.shape[1]] = rep
    return out


def fused_image(mapset: MapSet, vol: Volume4D, ref_t: int, k: int, analysed: np.ndarray) -> np.ndarray:
    """RGB image: every parameter of `mapset` on slice k, colour over the reference CT, with colour bars."""
    flips = _display_orientation(vol)
    ct = _orient(vol.native_slice(ref_t, k), flips)
    names = list(mapset.maps)
    ncols = 3 if len(names) > 4 else 2
    nrows = int(np.ceil(len(names) / ncols))
    fig = Figure(figsize=(5.2 * ncols, 4.6 * nrows + 0.8), dpi=100, facecolor="black")
    z = float(vol.grid.slice_position(k) @ vol.grid.normal)
    fig.suptitle(f"CT perfusion, {METHOD_TITLES[mapset.method]} ({mapset.summary})\n"
                 f"slice {k + 1}/{vol.grid.shape[0]} at {z:.1f} mm - {NOT_FOR_DIAGNOSIS}",
                 color="white", fontsize=11)
    for n, param in enumerate(names):
        info = PARAMETERS[param]
        ax = fig.add_subplot(nrows, ncols, n + 1)
        ax.imshow(ct, cmap="gray", vmin=-160, vmax=240, interpolation="bilinear")
        values = _orient(_to_native(mapset.maps[param][k], vol), flips)
        shown = _orient(_to_native(analysed[k].astype(np.uint8), vol), flips).astype(bool)
        overlay = np.ma.masked_where(~shown | ~np.isfinite(values), values)
        im = ax.imshow(overlay, cmap="jet", vmin=info.display[0], vmax=info.display[1], alpha=0.65,
                       interpolation="nearest")
        ax.set_title(f"{param}: {info.name}", color="white", fontsize=10)
        ax.set_axis_off()
        ax.text(0.01, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
        ax.text(0.97, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label(info.unit_text, color="white")
        bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    return figure_rgb(fig)


def curve_plot(times: np.ndarray, curves: dict[str, np.ndarray], t_spl: float, title: str) -> np.ndarray:
    """RGB time-attenuation-curve plot (enhancement in HU) with the arterial/portal split at t_spl."""
    fig = Figure(figsize=(9.0, 6.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"aorta": ("tab:red", "o"), "portal vein": ("tab:blue", "s"), "spleen": ("tab:purple", "^"),
              "liver": ("tab:brown", "D")}
    for name, c in curves.items():
        colour, marker = styles.get(name, ("black", "."))
        ax.plot(times, c, color=colour, marker=marker, ms=4, label=name)
    ax.axvspan(times[0], t_spl, color="tab:red", alpha=0.06)
    ax.axvline(t_spl, color="black", ls="--", lw=1)
    ax.text(t_spl, ax.get_ylim()[1], f"  t_spl = {t_spl:.1f} s\n  arterial | portal", va="top", fontsize=9)
    ax.set_xlabel("time from first frame (s)")
    ax.set_ylabel("enhancement over baseline (HU)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title(title, fontsize=10)
    fig.text(0.5, 0.01, NOT_FOR_DIAGNOSIS, ha="center", fontsize=9, color="dimgray")
    return figure_rgb(fig)
