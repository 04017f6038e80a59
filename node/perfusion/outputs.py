"""DICOM outputs of a perfusion analysis (highdicom 0.28): Parametric Maps and Secondary Captures.

* One Parametric Map per parameter and method: float32 on the working grid of the analysis (its own pixel
  spacing, same frame of reference), NaN where nothing was computed (outside the analysed tissue, or a value the
  voxel's curve does not define), a real-world value mapping in UCUM units whose QuantityDefinitionSequence
  codes the quantity and the method (DCM/SCT codes where they exist, else the node's scheme 99LIVERNODE),
  sources = the CT instances of the reference time point (the frame everything was registered to).
* Secondary Captures (RGB, 8 bit, the shared page look of node.imaging.pages, drawn by node.perfusion.pages)
  for reading at any PACS station: per method, pages of every map on the slices through the lesions' largest
  sections, colour only inside the liver, fixed scales per quantity with colour bars, lesions outlined with
  their values; and the time-attenuation curves of the inputs, the liver and each lesion.

Every object is labelled DERIVED and "not for primary diagnosis", carries the method and its parameters in
SeriesDescription/ContentDescription/ImageComments, and copies patient/study data from the source.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import matplotlib

matplotlib.use("Agg")  # headless node: never pick an interactive backend
import numpy as np  # noqa: E402
from pydicom import Dataset  # noqa: E402
from pydicom.sr.coding import Code  # noqa: E402

from node.derived import NOT_FOR_DIAGNOSIS, copy_patient_study, equipment_kwargs  # noqa: E402
from node.imaging.pages import Identity, Page  # noqa: E402
from node.perfusion.names import METHOD_LABEL, METHOD_NAME  # noqa: E402
from node.perfusion.pages import MapSlice, render_curve_page, render_map_page  # noqa: E402
from node.perfusion.qualify import RegionValue  # noqa: E402
from node.perfusion.volume4d import Volume4D  # noqa: E402
from node.report.summary import NOT_MEASURABLE_TEXT, with_spread  # noqa: E402

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
#: the Parametric Maps' content labels ("MAXSLOPE_ALP"): identifiers that readers (node.maa.correlation) parse,
#: kept as they were; every text for people uses node.perfusion.names
CONTENT_LABEL = {"max-slope": "MaxSlope", "discm": "DISCM"}
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
    summary: str  # <= ~40 characters of the key parameters, e.g. "t_spl 15 s, edge-preserving x4"


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
        lut_label=param, lut_explanation=f"{info.name} ({METHOD_LABEL[mapset.method]})"[:64],
        unit=Code(info.ucum, "UCUM", info.ucum), value_range=(lo, hi if hi > lo else lo + 1.0),
        slope=1.0, intercept=0.0)
    window = hd.VOILUTTransformation(window_center=sum(info.display) / 2.0,
                                     window_width=info.display[1] - info.display[0])
    method = METHOD_LABEL[mapset.method]
    pm = hd.pm.ParametricMap(
        source_images=sources, pixel_array=volume, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], voi_lut_transformations=[window],
        content_label=f"{CONTENT_LABEL[mapset.method]}_{param}".upper()[:16],
        content_description=f"{param} {method}: {mapset.summary}"[:64],
        series_description=f"{param} {method} - {NOT_FOR_DIAGNOSIS}"[:64],
        **equipment_kwargs())
    copy_patient_study(sources[0], pm)
    # the quantity and the method as coded values, in the real-world value mapping that gives the unit
    pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].QuantityDefinitionSequence = \
        quantity_definitions(param, mapset.method)
    return pm


# ------------------------------------------------------------------ pages (node.perfusion.pages)
#: A region's name marks it a lesion (outlined and labelled on the maps, chosen slices go through it).
LESION_NAME = re.compile(r"tum|lesion|gtv|hcc|met|nodul|^t\d+$|^h\d+$", re.IGNORECASE)
#: At most this many map pages per method (slices through the lesions' largest sections).
MAX_SLICES = 4
METHOD_WORDS = {
    "max-slope": "Maximum slope (dual input): the steepest rise of each voxel's enhancement curve before the spleen's "
                 "peak, divided by the aortic peak, is its arterial perfusion (ALP); after the spleen's peak, "
                 "divided by the portal-vein peak, its portal perfusion (PVP). TLP = ALP + PVP; HPI = ALP / TLP.",
    "discm": "Dual-input single-compartment model (DISCM): each voxel's curve is fitted as the liver's response "
             "to the aortic and portal-vein curves, giving its arterial and portal inflow (ALP, PVP), "
             "HPI = ALP / (ALP + PVP), the distribution volume (DV) and the mean transit time (MTT).",
}


def display_orientation(vol: Volume4D) -> tuple[bool, bool]:
    """Flips (rows, columns) that put patient posterior down and patient left on the viewer's right."""
    return bool(vol.grid.col_dir[1] < 0), bool(vol.grid.row_dir[0] < 0)


def orient(img: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    if flips[0]:
        img = img[::-1]
    if flips[1]:
        img = img[:, ::-1]
    return img


def to_native(work: np.ndarray, vol: Volume4D, fill: float = np.nan) -> np.ndarray:
    """A working-grid slice on the native pixel grid (block replication; the uncovered border gets `fill`)."""
    f = vol.factor
    rep = np.repeat(np.repeat(work, f, axis=0), f, axis=1)
    out = np.full(vol.native_grid.shape[1:], fill, dtype=np.float32 if np.isnan(fill) else work.dtype)
    out[:rep.shape[0], :rep.shape[1]] = rep
    return out


def native_mask(work: np.ndarray, vol: Volume4D) -> np.ndarray:
    """A working-grid (Z, Y, X) mask on the native grid (block replication)."""
    return np.stack([to_native(work[k].astype(np.float32), vol, 0.0) > 0.5 for k in range(work.shape[0])])


def lesion_slices(lesions: dict[str, np.ndarray], liver: np.ndarray, n_max: int = MAX_SLICES
                  ) -> list[tuple[int, str]]:
    """(slice index, why) of the slices to show: each lesion's largest section (lesions sharing a slice are
    named together), the largest lesions first up to `n_max`, in slice order; else the liver's quartiles."""
    best: dict[int, list[str]] = {}
    by_size = sorted(lesions.items(), key=lambda kv: -int(kv[1].sum()))
    for name, mask in by_size:
        areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
        if areas.max() == 0:
            continue
        k = int(np.argmax(areas))
        if k in best or len(best) < n_max:
            best.setdefault(k, []).append(name)
    if best:
        return [(k, f"chosen through the largest section of {' and '.join(sorted(names))}")
                for k, names in sorted(best.items())]
    zs = np.nonzero(liver.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return [(liver.shape[0] // 2, "the middle slice (no liver found)")]
    picks = sorted({int(z) for z in np.quantile(zs, (0.25, 0.5, 0.75)).round()})
    return [(k, "through the liver at a quarter of its height" if q == 0 else
             "through the middle of the liver" if q == 1 else "through the liver at three quarters of its height")
            for q, k in enumerate(picks)]


def map_slice(mapset: MapSet, vol: Volume4D, ref_t: int, k: int, analysed: np.ndarray, liver_native: np.ndarray,
              lesions_native: dict[str, np.ndarray], values: dict[str, dict[str, str]],
              flags: Sequence[str] = ()) -> MapSlice:
    """Slice k of the maps on the display grid (native pixels, radiological orientation) for the pages."""
    flips = display_orientation(vol)
    computed = to_native(analysed[k].astype(np.float32), vol, 0.0) > 0.5
    maps = {}
    for param, work in mapset.maps.items():
        native = to_native(work[k].astype(np.float32), vol)
        maps[param] = orient(np.where(computed, native, np.nan), flips)  # NaN where nothing was computed
    spacing = vol.native_grid.spacing
    return MapSlice(ct=orient(vol.native_slice(ref_t, k), flips), maps=maps, liver=orient(liver_native[k], flips),
                    lesions={n: orient(m[k], flips) for n, m in lesions_native.items()},
                    pixel_mm=(float(spacing[1]), float(spacing[2])), values=values, flags=tuple(flags))


def map_pages(mapset: MapSet, vol: Volume4D, ref_t: int, analysed: np.ndarray, liver_native: np.ndarray,
              liver_source: str, lesions_native: dict[str, np.ndarray], values: dict[str, dict[str, str]],
              series_description: str, t_spl: float, flags: Sequence[str] = ()) -> list[tuple[int, Page]]:
    """(slice index, page) of every map page of one method; `flags` say why values are not measurable."""
    slices = lesion_slices(lesions_native, liver_native)
    ref_ds, _ = vol.source_ref(ref_t, slices[0][0])
    identity = Identity.of(ref_ds, series_description)
    notes = [f"Arterial and portal phases split at the spleen's peak, {t_spl:.0f} s."] if mapset.method == \
        "max-slope" else []
    pages = []
    for n, (k, why) in enumerate(slices, start=1):
        z = float(vol.grid.slice_position(k) @ vol.grid.normal)
        page, _ = render_map_page(
            identity, METHOD_NAME[mapset.method], METHOD_WORDS[mapset.method], list(mapset.maps),
            map_slice(mapset, vol, ref_t, k, analysed, liver_native, lesions_native, values, flags),
            f"slice {k + 1} of {vol.grid.shape[0]} (z = {z:.1f} mm)", why, (n, len(slices)),
            f"time point {ref_t + 1}", liver_source, notes)
        pages.append((k, page))
    return pages


def curve_page(vol: Volume4D, ref_t: int, inputs: dict[str, np.ndarray], tissue: dict[str, np.ndarray],
               t_spl: float, series_description: str) -> Page:
    """The time-attenuation curves page."""
    ref_ds, _ = vol.source_ref(ref_t, vol.grid.shape[0] // 2)
    return render_curve_page(Identity.of(ref_ds, series_description), vol.times, inputs, tissue, t_spl, (1, 1))


def region_text(value: RegionValue | None, unit: str) -> str:
    """A region's value for a page exactly as the report and the summary state it (node.report.summary's format,
    the unit's precision): "52.1 \u00b1 1.3" (the value of the region's mean curve \u00b1 1 SD of image noise),
    "n.m." when it is not measurable, "-" when there is none. `unit`: its UCUM unit."""
    if value is None:
        return "-"
    if not value.measurable or value.value is None:
        return NOT_MEASURABLE_TEXT
    return with_spread(value.value, value.sd, unit)
