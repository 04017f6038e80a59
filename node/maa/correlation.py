"""MAA uptake next to CT perfusion, per tumour (the paper: T/N vs tumour ALP, r = 0.70).

The MAA SPECT is carried to the perfusion CT through its SPECT/CT: the SPECT/CT's CT (moving) is registered
rigidly to the unenhanced time point of the perfusion CT (fixed, handed over by the perfusion workflow as a
node.perfusion.reference.PerfusionReference) with node.imaging.registration (Mattes MI, then its thin-slab
refinement: a perfusion CT covers only 8-15 cm); the NM shares the SPECT/CT's frame of reference, so the same
transform places every tumour region in perfusion space.

The maps are read back from the perfusion result's Parametric Map datasets (DICOM in, nothing else): the
parameter from the Real World Value Mapping's LUT Label (ALP, PVP, HPI), the method from the Content Label
("<METHOD>_<PARAM>"), the geometry from the per-frame plane positions (highdicom get_volume). A tumour region
(partial-volume fraction on the SPECT grid) is resampled linearly onto each map's grid and thresholded at 0.5;
the mean is taken over its voxels the perfusion analysis analysed (a finite, non-zero value in any map of that
method: the maps hold NaN where nothing was computed, older ones 0), over the voxels where the parameter has a
value. A tumour named after a lesion of the perfusion RTSTRUCT inherits that lesion's flags: a value the perfusion
analysis reports as not measurable is flagged here too, with its reason, and does not enter the correlation.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from node.imaging.grids import as_image, image_from_affine
from node.imaging.registration import refine_slab, register_rigid, rigid_matrix
from node.maa.errors import MaaInputError
from node.maa.measurements import (
    CorrelationRecord,
    CorrelationRegistration,
    CorrelationRow,
    MapRecord,
    PearsonRecord,
    TumourPerfusion,
)
from node.perfusion.reference import PerfusionReference, method_label

logger = logging.getLogger(__name__)

__all__ = ["PARAMETERS", "MIN_IN_FIELD", "MIN_POINTS", "MIN_NAME_DICE", "PerfusionMap", "PerfusionAlignment",
           "read_maps", "align_to_perfusion", "lesion_names", "correlate"]

PARAMETERS = ("ALP", "PVP", "HPI")
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
#: A tumour whose region lies less than this much inside the perfusion maps gets no perfusion values.
MIN_IN_FIELD = 0.5
#: A correlation coefficient is computed from at least this many tumours: with fewer, r is mostly chance
#: (n = 3 leaves one degree of freedom; even r = 0.95 is not significant at 5 %).
MIN_POINTS = 5
#: An automatically found hot region takes the name of the perfusion-RTSTRUCT lesion it overlaps best when
#: their Dice coefficient (on the perfusion grid, after registration) reaches this.
MIN_NAME_DICE = 0.3


@dataclass(frozen=True)
class PerfusionMap:
    """One Parametric Map read back: method, parameter, unit, values as an image, and its identity."""

    method: str
    parameter: str
    unit: str
    image: sitk.Image
    sop_instance_uid: str
    sop_class_uid: str


def _parameter_and_unit(ds: Dataset) -> tuple[str, str]:
    groups = list(ds.get("SharedFunctionalGroupsSequence", []))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if per_frame:
        groups.append(per_frame[0])
    for group in groups:
        for mapping in group.get("RealWorldValueMappingSequence", []):
            unit = mapping.MeasurementUnitsCodeSequence[0].CodeValue if "MeasurementUnitsCodeSequence" in mapping \
                else ""
            return str(mapping.get("LUTLabel", "")).strip().upper(), str(unit)
    return "", ""


def read_maps(datasets: Sequence[Dataset]) -> list[PerfusionMap]:
    """The ALP/PVP/HPI Parametric Maps among `datasets` (others are skipped), as images with patient geometry."""
    out = []
    for ds in datasets:
        if ds.get("SOPClassUID") != PARAMETRIC_MAP_STORAGE:
            continue
        parameter, unit = _parameter_and_unit(ds)
        if parameter not in PARAMETERS:
            continue
        label = str(ds.get("ContentLabel", "")).upper()
        method = label[: -len(parameter) - 1] if label.endswith("_" + parameter) else "PERFUSION"
        try:
            volume = hd.pm.ParametricMap.from_dataset(ds, copy=False).get_volume(dtype=np.float32)
        except (ValueError, RuntimeError, AttributeError) as exc:
            logger.warning("Parametric Map %s skipped: no usable 3D geometry (%s)", ds.get("SOPInstanceUID"), exc)
            continue
        image = image_from_affine(np.asarray(volume.array, dtype=np.float32), volume.affine)
        out.append(PerfusionMap(method.lower(), parameter, unit, image, str(ds.SOPInstanceUID),
                                str(ds.SOPClassUID)))
    return out


def _mean_or_none(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]  # NaN: the voxel's curve does not define the parameter
    return round(float(finite.mean()), 2) if finite.size else None


def _flags(perfusion: PerfusionReference, tumour: str, method: str) -> dict[str, str]:
    """Parameter -> why the perfusion analysis reports lesion `tumour`'s value of `method` as not measurable
    (map method "maxslope" is the perfusion's "max-slope")."""
    out = {}
    for (m, param), reason in perfusion.not_measurable.get(tumour, {}).items():
        if m.replace("-", "").lower() == method.replace("-", "").lower() and param in PARAMETERS:
            out[param] = f"not measurable in the CT perfusion ({tumour} {param}, {method_label(m)}: {reason})"
    return out


@dataclass(frozen=True)
class PerfusionAlignment:
    """The MAA SPECT/CT's CT registered to the perfusion CT: `transform` maps perfusion-CT patient mm to MAA
    SPECT/CT patient mm (ITK's fixed-to-moving direction; the NM shares the SPECT/CT's frame)."""

    transform: sitk.Transform
    record: CorrelationRegistration


def align_to_perfusion(spect_ct: sitk.Image, perfusion: PerfusionReference) -> PerfusionAlignment:
    """Register the SPECT/CT's CT (moving) to the perfusion CT's unenhanced time point (fixed).

    Raises an AnalysisError subclass (RegistrationError) when it fails.
    """
    fixed = perfusion.ct
    reg = register_rigid(fixed, spect_ct, fixed_name="perfusion CT")
    transform, refinement = refine_slab(fixed, spect_ct, reg.transform)
    return PerfusionAlignment(transform, CorrelationRegistration(
        initial=reg.summary(), refinement=refinement,
        matrix_4x4=[[round(float(v), 6) for v in row] for row in rigid_matrix(transform)],
        matrix_direction="maps perfusion-CT patient mm to MAA SPECT/CT patient mm"))


def lesion_names(nm: sitk.Image, tumours: Mapping[str, np.ndarray], alignment: PerfusionAlignment,
                 perfusion: PerfusionReference, is_lesion: Callable[[str], bool]) -> dict[str, str]:
    """{found name: perfusion ROI name} for the tumours that overlap a lesion ROI of the perfusion RTSTRUCT.

    Each tumour region (fraction on `nm`'s grid) is carried onto the ROI's grid; pairs are taken best Dice
    first, each ROI and tumour once, down to MIN_NAME_DICE. So "H1" found on the MAA SPECT is called "T3"
    when it is the lesion the perfusion RTSTRUCT calls T3, in every output of the case.
    """
    rois = {name: image for name, image in perfusion.regions.items() if is_lesion(name)}
    if not rois or not tumours:
        return {}
    pairs = []
    for name, frac in tumours.items():
        src = as_image(frac.astype(np.float32), nm)
        moved_on: dict[tuple[object, ...], np.ndarray] = {}  # the ROIs of one RTSTRUCT share one grid
        for roi, image in rois.items():
            grid = (image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())
            if grid not in moved_on:
                moved_on[grid] = sitk.GetArrayFromImage(sitk.Resample(src, image, alignment.transform,
                                                                      sitk.sitkLinear, 0.0, sitk.sitkFloat32)) >= 0.5
            moved = moved_on[grid]
            target = sitk.GetArrayViewFromImage(image) > 0
            total = int(moved.sum()) + int(target.sum())
            dice = 2.0 * float(np.count_nonzero(moved & target)) / total if total else 0.0
            pairs.append((dice, name, roi))
    names: dict[str, str] = {}
    for dice, name, roi in sorted(pairs, reverse=True):
        if dice < MIN_NAME_DICE:
            break
        if name not in names and roi not in names.values() and roi not in tumours:
            names[name] = roi
            logger.info("MAA hot region %s is perfusion ROI %s (Dice %.2f)", name, roi, dice)
    return names


def correlate(nm: sitk.Image, tumours: Mapping[str, np.ndarray], tn: Mapping[str, float],
              alignment: PerfusionAlignment, perfusion: PerfusionReference) -> CorrelationRecord:
    """Per-tumour ALP/PVP/HPI next to T/N; `tumours` are fractions on `nm`'s grid.

    Raises an AnalysisError subclass when the perfusion maps cannot be read.
    """
    perfusion_maps = read_maps(perfusion.maps)
    if not perfusion_maps:
        raise MaaInputError("the perfusion result holds no readable ALP/PVP/HPI Parametric Maps")
    transform = alignment.transform
    by_method: dict[str, list[PerfusionMap]] = defaultdict(list)
    for m in perfusion_maps:
        by_method[m.method].append(m)
    rows = []
    for name, frac in tumours.items():
        src = as_image(frac.astype(np.float32), nm)
        values: dict[str, TumourPerfusion] = {}
        volume_nm = float(frac.sum()) * float(np.prod(nm.GetSpacing()))
        for method, group in sorted(by_method.items()):
            ref = group[0].image
            moved = sitk.GetArrayFromImage(sitk.Resample(src, ref, transform, sitk.sitkLinear, 0.0,
                                                         sitk.sitkFloat32)) >= 0.5
            arrays = {m.parameter: sitk.GetArrayViewFromImage(m.image) for m in group
                      if m.image.GetSize() == ref.GetSize()}
            analysed = np.zeros(moved.shape, bool)
            for a in arrays.values():
                analysed |= np.isfinite(a) & (a != 0)
            used = moved & analysed
            in_field = float(moved.sum()) * float(np.prod(ref.GetSpacing())) / volume_nm if volume_nm else 0.0
            mean = {p: (_mean_or_none(np.asarray(arrays[p])[used]) if p in arrays and in_field >= MIN_IN_FIELD
                        else None) for p in PARAMETERS}
            values[method] = TumourPerfusion(int(used.sum()), round(min(in_field, 1.0), 3), mean["ALP"], mean["PVP"],
                                             mean["HPI"], _flags(perfusion, name, method))
        rows.append(CorrelationRow(name, round(float(tn[name]), 3), values))
    pearson = {}
    for method in sorted(by_method):
        # a tumour ALP the perfusion analysis reports as not measurable does not enter the statistic
        pairs = [(r.tn_ratio, r.perfusion[method].ALP) for r in rows
                 if r.perfusion[method].ALP is not None and "ALP" not in r.perfusion[method].not_measurable]
        r_value = None
        if len(pairs) >= MIN_POINTS:
            x, y = np.asarray(pairs, dtype=float).T
            r_value = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
        if pairs:  # r only from MIN_POINTS tumours on; n always, so the report can say why there is none
            pearson[method] = PearsonRecord(None if r_value is None else round(r_value, 3), len(pairs))
    logger.info("MAA-perfusion correlation: %d tumours, methods %s", len(rows),
                ", ".join(sorted(method_label(m) for m in by_method)))
    return CorrelationRecord(
        done=True,
        method="SPECT/CT CT rigidly registered to the perfusion CT (first time point); tumour regions carried to "
               "the map grids; mean over analysed voxels",
        registration=alignment.record,
        rows=rows, pearson_r_tn_vs_alp=pearson,
        maps=[MapRecord(m.method, m.parameter, m.unit, m.sop_instance_uid) for m in perfusion_maps])
