"""MAA uptake next to CT perfusion, per tumour (the paper: T/N vs tumour ALP, r = 0.70).

The MAA SPECT is carried to the perfusion CT through its SPECT/CT: the SPECT/CT's CT (moving) is registered
rigidly to one time point of the perfusion CT (fixed) with node.gsa.registration (Mattes MI); the NM shares
the SPECT/CT's frame of reference, so the same transform places every tumour region in perfusion space.

Thin-slab refinement. A perfusion CT covers only 8-15 cm, and in that slab the body outline, spine and aorta
hardly change along z; the registration's MI histogram (-1000..2000 HU in 32 bins) does not see the 10-30 HU
contrasts of liver, spleen and vessels that fix the z position, so it can settle 1-2 cm off in z (measured on
the phantom: 19 mm). The result is therefore refined on soft-tissue windowed images (SOFT_WINDOW_HU): rigid
Mattes-MI optimisations on 4 mm images start from the registration shifted by each of REFINE_Z_STARTS_MM
along z, the best is polished on 3 mm images and kept if it moves the registration by at most
MAX_REFINE_SHIFT_MM (phantom: within 2.5 mm of the truth, ~3-6 s).

The maps are read back from the perfusion result's Parametric Map datasets (DICOM in, nothing else): the
parameter from the Real World Value Mapping's LUT Label (ALP, PVP, HPI), the method from the Content Label
("<METHOD>_<PARAM>"), the geometry from the per-frame plane positions (highdicom get_volume). A tumour region
(partial-volume fraction on the SPECT grid) is resampled linearly onto each map's grid and thresholded at 0.5;
the mean is taken over its voxels the perfusion analysis analysed (non-zero in any map of that method: the
perfusion maps are 0 where tissue was not analysed).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from node.gsa.registration import register_rigid
from node.maa.grid import as_image, image_from_affine
from node.maa.errors import MaaInputError
from node.volumes import ct_series_image

logger = logging.getLogger(__name__)

__all__ = ["PARAMETERS", "MIN_IN_FIELD", "PerfusionMap", "read_maps", "perfusion_ct_image", "correlate"]

PARAMETERS = ("ALP", "PVP", "HPI")
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
#: A tumour whose region lies less than this much inside the perfusion maps gets no perfusion values.
MIN_IN_FIELD = 0.5
#: Soft-tissue window (HU) of the thin-slab refinement.
SOFT_WINDOW_HU = (-150.0, 250.0)
#: z shifts (mm, SPECT/CT side) from which the refinement starts.
REFINE_Z_STARTS_MM = (-24.0, -16.0, -8.0, 0.0, 8.0, 16.0, 24.0)
#: The refinement may move the registration at most this far (mm) and rotate it at most this much (degrees).
MAX_REFINE_SHIFT_MM = 40.0
MAX_ROTATION_DEG = 15.0


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


def _time_key(ds: Dataset) -> tuple:
    when = (str(ds.get("AcquisitionDateTime", "") or "")
            or str(ds.get("AcquisitionDate", "") or "") + str(ds.get("AcquisitionTime", "") or "")
            or str(ds.get("ContentDate", "") or "") + str(ds.get("ContentTime", "") or ""))
    return (when, int(ds.get("TemporalPositionIdentifier", 0) or 0), int(ds.get("InstanceNumber", 0) or 0))


def perfusion_ct_image(perfusion_ct: Sequence[Dataset]) -> sitk.Image:
    """The earliest time point (unenhanced, closest to a SPECT/CT's low-dose CT) of the perfusion CT as 3D HU.

    Classic CT: the earliest slice at every position. An Enhanced CT multi-frame goes through the perfusion
    package's 4D reader (its first time point on the working grid).
    """
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in perfusion_ct):
        from node.perfusion.volume4d import assemble  # Enhanced CT: the one reader of its frame timing

        vol = assemble(perfusion_ct)
        return image_from_affine(vol.data[0], vol.grid.affine())
    by_position: dict[tuple, list[Dataset]] = defaultdict(list)
    for ds in perfusion_ct:
        by_position[tuple(round(float(v), 2) for v in ds.ImagePositionPatient)].append(ds)
    first = [min(group, key=_time_key) for group in by_position.values()]
    return ct_series_image(first, what="perfusion CT (first time point)")


def _soft(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """The CT smoothed (sigma = spacing/2), resampled to isotropic `spacing_mm`, clamped to SOFT_WINDOW_HU."""
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), spacing_mm / 2.0)
    size = [max(1, int(np.ceil(n * s / spacing_mm))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.GetOrigin())
    small = sitk.Resample(smoothed, grid, sitk.Transform(), sitk.sitkLinear, float(SOFT_WINDOW_HU[0]))
    return sitk.Clamp(small, sitk.sitkFloat32, *SOFT_WINDOW_HU)


def _run(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, start: sitk.Transform, sampling: float,
         step_mm: float, iterations: int) -> tuple[float, sitk.Euler3DTransform] | None:
    """One rigid Mattes-MI optimisation from `start` (None when SimpleITK gives up)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, 20240601)
    reg.SetMetricFixedMask(sitk.Resample(mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=step_mm, minStep=0.02, numberOfIterations=iterations,
                                                 relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(start, inPlace=False)
    try:
        result = reg.Execute(fixed, moving)
    except RuntimeError:
        return None  # this start leaves too few samples inside the moving image
    if isinstance(result, sitk.CompositeTransform):
        result = result.GetNthTransform(0)
    return float(reg.GetMetricValue()), sitk.Euler3DTransform(result.Downcast())


def _matrix(t: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous matrix of a rigid transform (fixed patient mm -> moving patient mm)."""
    e = sitk.Euler3DTransform(t)
    r = np.asarray(e.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(e.GetCenter(), dtype=float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c + np.asarray(e.GetTranslation(), dtype=float) - r @ c
    return m


def refine_slab(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform) -> tuple[sitk.Transform, dict]:
    """Multi-start soft-tissue refinement of a rigid CT-CT registration (see module docstring).

    Every start is optimised on 4 mm images; the best is polished on 3 mm images.
    """
    body = sitk.BinaryThreshold(fixed, -400.0, 1e9, 1, 0)
    coarse_f, coarse_m = _soft(fixed, 4.0), _soft(moving, 4.0)
    mask = sitk.BinaryDilate(sitk.Resample(body, coarse_f, sitk.Transform(), sitk.sitkNearestNeighbor, 0), [1, 1, 1])
    runs = []
    for dz in REFINE_Z_STARTS_MM:
        start = sitk.Euler3DTransform(initial)
        start.SetTranslation(tuple(float(v) for v in np.asarray(start.GetTranslation(), dtype=float) + (0, 0, dz)))
        run = _run(coarse_f, coarse_m, mask, start, 0.1, 4.0, 60)
        if run is not None:
            runs.append((run[0], dz, run[1]))
    info: dict = {"method": f"multi-start rigid refinement, Mattes MI on {SOFT_WINDOW_HU[0]:g}..{SOFT_WINDOW_HU[1]:g} "
                            f"HU, z starts {list(REFINE_Z_STARTS_MM)} mm (4 mm images), best polished on 3 mm",
                  "applied": False}
    if not runs:
        info["note"] = "no refinement converged: the registration is used as it is"
        return initial, info
    metric, dz, transform = min(runs, key=lambda r: r[0])
    polished = _run(_soft(fixed, 3.0), _soft(moving, 3.0), body, transform, 0.25, 1.0, 60)
    if polished is not None:
        metric, transform = polished
    mat, base = _matrix(transform), _matrix(initial)
    centre = np.append(np.asarray(fixed.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in fixed.GetSize()]), dtype=float), 1.0)
    shift = float(np.linalg.norm((mat @ centre - base @ centre)[:3]))
    angle = float(np.degrees(np.arccos(np.clip((np.trace(mat[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    if shift > MAX_REFINE_SHIFT_MM or angle > MAX_ROTATION_DEG:
        info["note"] = (f"refinement implausible (moves {shift:.0f} mm, rotation {angle:.1f} deg): the registration "
                        "is used as it is")
        return initial, info
    info.update({"applied": True, "best_start_z_mm": dz, "metric": round(metric, 5),
                 "shift_at_fixed_centre_mm": round(shift, 2)})
    return transform, info


def _mean_or_none(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 2) if values.size else None


def correlate(nm: sitk.Image, tumours: Mapping[str, np.ndarray], tn: Mapping[str, float],
              spect_ct: sitk.Image, perfusion_ct: Sequence[Dataset], maps: Sequence[Dataset]) -> dict:
    """Per-tumour ALP/PVP/HPI next to T/N; `tumours` are fractions on `nm`'s grid, `spect_ct` its CT.

    Raises an AnalysisError subclass when the perfusion CT cannot be read or registered.
    """
    perfusion_maps = read_maps(maps)
    if not perfusion_maps:
        raise MaaInputError("the perfusion result holds no readable ALP/PVP/HPI Parametric Maps")
    fixed = perfusion_ct_image(perfusion_ct)
    reg = register_rigid(fixed, spect_ct)
    transform, refinement = refine_slab(fixed, spect_ct, reg.transform)
    by_method: dict[str, list[PerfusionMap]] = defaultdict(list)
    for m in perfusion_maps:
        by_method[m.method].append(m)
    rows = []
    for name, frac in tumours.items():
        src = as_image(frac.astype(np.float32), nm)
        row: dict = {"tumour": name, "tn_ratio": round(float(tn[name]), 3), "perfusion": {}}
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
            entry: dict = {"voxels": int(used.sum()), "in_field_fraction": round(min(in_field, 1.0), 3)}
            for p in PARAMETERS:
                entry[p] = (_mean_or_none(np.asarray(arrays[p])[used]) if p in arrays and in_field >= MIN_IN_FIELD
                            else None)
            row["perfusion"][method] = entry
        rows.append(row)
    summary = {"method": "SPECT/CT CT rigidly registered to the perfusion CT (first time point); tumour regions "
                         "carried to the map grids; mean over analysed voxels",
               "registration": {"initial": reg.summary(), "refinement": refinement,
                                "matrix_4x4": [[round(float(v), 6) for v in row] for row in _matrix(transform)],
                                "matrix_direction": "maps perfusion-CT patient mm to MAA SPECT/CT patient mm"},
               "rows": rows, "pearson_r_tn_vs_alp": {}}
    for method in sorted(by_method):
        pairs = [(r["tn_ratio"], r["perfusion"][method]["ALP"]) for r in rows
                 if r["perfusion"][method]["ALP"] is not None]
        if len(pairs) >= 3:
            x, y = np.asarray(pairs, dtype=float).T
            r_value = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
            summary["pearson_r_tn_vs_alp"][method] = {"r": None if r_value is None else round(r_value, 3),
                                                      "n": len(pairs)}
    summary["maps"] = [{"method": m.method, "parameter": m.parameter, "unit": m.unit,
                        "sop_instance_uid": m.sop_instance_uid} for m in perfusion_maps]
    logger.info("MAA-perfusion correlation: %d tumours, methods %s", len(rows), sorted(by_method))
    return summary
