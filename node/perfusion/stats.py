"""RTSTRUCT ROIs on the perfusion CT: rasterisation onto the working grid and regional statistics.

ROIs are rasterised with the `rtstruct` library on the native CT grid of one time point (all time points
share the geometry), then reduced to the working grid: a working voxel belongs to an ROI when at least half of
its native pixels do. Statistics are taken over ROI voxels that were analysed (tissue mask), because vessels,
fat and air inside a contour carry no perfusion value, and that lie wholly inside the contour
(interior_on_working_grid); both the contoured and the analysed volume are reported.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
from pydicom import Dataset

import rtstruct
from node.perfusion.errors import PerfusionInputError
from node.perfusion.maxslope import FLOW_SCALE, slope_operator
from node.perfusion.outputs import PARAMETERS, MapSet
from node.perfusion.qualify import AcquisitionCheck, RegionValue, qualify
from node.perfusion.volume4d import Volume4D, block_mean

logger = logging.getLogger(__name__)

#: One region's figures as this module gathers them, keyed as node.perfusion.measurements.RegionStats.of reads them
#: (volumes, per-method map statistics, the ROI curve's values and 1-SD, the qualified values).
Entry = dict[str, Any]


def _referenced_uids(rtss: Dataset) -> set[str]:
    uids: set[str] = set()
    for frame in rtss.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uids.update(str(r.ReferencedSOPInstanceUID) for r in series.get("ContourImageSequence", []))
    for roi in rtss.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            uids.update(str(r.ReferencedSOPInstanceUID) for r in contour.get("ContourImageSequence", []))
    return uids


def _without_image_references(rtss: Dataset) -> Dataset:
    """A copy whose contours are placed by position only (their image references point elsewhere)."""
    out = copy.deepcopy(rtss)
    for frame in out.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if "ContourImageSequence" in series:
                    del series.ContourImageSequence
    for roi in out.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            if "ContourImageSequence" in contour:
                del contour.ContourImageSequence
    return out


def _slice_headers(vol: Volume4D, t: int) -> list[Dataset]:
    """Single-frame stand-ins (geometry only) for the slices of an Enhanced CT time point."""
    mf = vol.multiframe
    assert mf is not None  # called for an Enhanced CT series only
    headers = []
    for k in range(vol.native_grid.shape[0]):
        ds = Dataset()
        ds.SOPClassUID = mf.SOPClassUID
        ds.SOPInstanceUID = mf.SOPInstanceUID
        ds.FrameOfReferenceUID = mf.FrameOfReferenceUID
        ds.ImagePositionPatient = [float(v) for v in vol.native_grid.slice_position(k)]
        ds.ImageOrientationPatient = [float(v) for v in (*vol.native_grid.row_dir, *vol.native_grid.col_dir)]
        ds.PixelSpacing = [float(vol.native_grid.spacing[1]), float(vol.native_grid.spacing[2])]
        ds.Rows, ds.Columns = vol.native_grid.shape[1], vol.native_grid.shape[2]
        headers.append(ds)
    return headers


def read_roi_masks(rtss: Dataset, vol: Volume4D, ref_t: int) -> dict[str, np.ndarray]:
    """{ROI name: bool mask on the native grid (Z, Rows, Columns)} of an RTSTRUCT drawn on this series."""
    try:
        if vol.multiframe is not None:
            return rtstruct.read_masks(rtss, _slice_headers(vol, ref_t))
        referenced = _referenced_uids(rtss)
        overlap = [len(referenced & {str(ds.SOPInstanceUID) for ds in vol.sources[t]}) for t in range(vol.n_times)]
        best = int(np.argmax(overlap)) if max(overlap) > 0 else ref_t
        slices = vol.sources[best]
        if not referenced <= {str(ds.SOPInstanceUID) for ds in slices}:
            # Contours drawn on several time points: all share the geometry, so place them by position.
            logger.info("RTSTRUCT references images of several time points; contours placed by position")
            rtss = _without_image_references(rtss)
        return rtstruct.read_masks(rtss, slices)
    except rtstruct.RTStructError as exc:
        raise PerfusionInputError(f"RTSTRUCT cannot be used on the perfusion CT: {exc}") from exc


def to_working_grid(mask: np.ndarray, factor: int) -> np.ndarray:
    """A native-grid mask on the working grid: set where at least half of the block is set."""
    return block_mean(mask.astype(np.float32), factor) >= 0.5


def interior_on_working_grid(mask: np.ndarray, factor: int) -> np.ndarray:
    """The working voxels whose every native pixel lies in the mask: the region values are taken there, so that
    the working grid's block means do not mix an ROI's edge with its surroundings (a lesion of 8 mm radius would
    otherwise take on ~10 % of the liver around it). An ROI too small to hold such a voxel keeps the
    half-filled rule."""
    inside = block_mean(mask.astype(np.float32), factor) >= 1.0 - 1e-6
    return inside if inside.any() else to_working_grid(mask, factor)


def regional_statistics(map_sets: list[MapSet], roi_masks: dict[str, np.ndarray], analysed: np.ndarray,
                        vol: Volume4D) -> dict[str, Entry]:
    """Mean, SD and volumes per ROI and parameter, for the case record and the report.

    `roi_masks` are native-grid masks (as read from the RTSTRUCT). Voxels whose value is not defined (NaN) do
    not count.
    """
    out: dict[str, Entry] = {}
    for name, native in roi_masks.items():
        used = interior_on_working_grid(native, vol.factor) & analysed
        entry: Entry = {
            "volume_ml": round(float(native.sum()) * vol.native_grid.voxel_volume_ml, 2),
            "analysed_volume_ml": round(float(used.sum()) * vol.grid.voxel_volume_ml, 2),
            "analysed_voxels": int(used.sum()),
        }
        for ms in map_sets:
            stats = {}
            for param, values in ms.maps.items():
                v = values[used]
                v = v[np.isfinite(v)]
                stats[param] = ({"mean": round(float(v.mean()), 3), "sd": round(float(v.std(ddof=1)), 3)}
                                if v.size > 1 else {"mean": None, "sd": None})
            entry[ms.method] = stats
        out[name] = entry
    return out


def roi_mean_curves(enh: np.ndarray, roi_masks: dict[str, np.ndarray], analysed: np.ndarray,
                    vol: Volume4D) -> dict[str, np.ndarray]:
    """Mean enhancement curve (T,) of each ROI over its analysed voxels, before any spatial smoothing."""
    curves = {}
    for name, native in roi_masks.items():
        used = interior_on_working_grid(native, vol.factor) & analysed
        if used.any():
            curves[name] = enh[:, used].mean(axis=1)
    return curves


def max_slope_noise_sd(noise_hu: float, n_voxels: int, times: np.ndarray, aorta_peak_hu: float,
                       portal_peak_hu: float) -> dict[str, float]:
    """Standard deviation (mL/min/100 mL) that image noise alone gives the max-slope ALP and PVP of a region's mean
    curve: the mean of `n_voxels` curves with independent noise `noise_hu` per sample, through the difference of
    two samples over the shortest interval (the largest noise gain, sqrt(2) / dt), scaled like ALP and PVP.
    (The maximum over several intervals adds an upward bias of the same order when their slopes are alike.)"""
    gain = float(np.max(np.linalg.norm(slope_operator(times), axis=1)))  # 1/s per HU of sample noise
    slope_sd = gain * float(noise_hu) / np.sqrt(max(int(n_voxels), 1))
    return {"ALP": round(float(FLOW_SCALE * slope_sd / aorta_peak_hu), 3),
            "PVP": round(float(FLOW_SCALE * slope_sd / portal_peak_hu), 3)}


def add_roi_curve_parameters(regional: dict[str, Entry], curves: dict[str, np.ndarray],
                             parameters: dict[str, dict[str, tuple[dict[str, float], dict[str, float],
                                                                   dict[str, float]]]],
                             noise_sd: dict[str, float]) -> None:
    """Put each ROI's curve-based parameters (method -> (values, 1-SD, dependence on the inputs' interpolation))
    beside its map statistics.

    ROI-curve analysis fits the region's mean curve: no spatial smoothing is needed, so small lesions are not
    mixed with their surroundings (the map means are; both are reported). `noise_sd` is the noise per sample of
    each ROI's mean curve (HU).
    """
    for name in curves:
        if name in regional:
            regional[name]["roi-curve"] = {m: {k: round(v, 4) for k, v in vals.items()}
                                           for m, (vals, _, _) in parameters[name].items()}
            regional[name]["roi-curve-sd"] = {m: {k: round(v, 4) for k, v in sds.items()}
                                              for m, (_, sds, _) in parameters[name].items()}
            regional[name]["roi-curve-input-dependence"] = {m: dict(dep)
                                                            for m, (_, _, dep) in parameters[name].items()}
            regional[name]["roi-curve-noise-hu"] = round(float(noise_sd[name]), 4)


def add_region_values(regional: dict[str, Entry], methods: list[str], tolerance: float,
                      checks: list[AcquisitionCheck]) -> None:
    """The reported value of every ROI, method and parameter (the ROI curve's) with its 1-SD, the map's mean and SD
    over the same voxels, and its qualification (node.perfusion.qualify): `regional[roi]["values"][method][param]`."""
    failed = [c for c in checks if not c.passed]
    for entry in regional.values():
        values: dict[str, dict[str, RegionValue]] = {}
        for method in methods:
            stats = entry.get(method) or {}
            curve = (entry.get("roi-curve") or {}).get(method) or {}
            sds = (entry.get("roi-curve-sd") or {}).get(method) or {}
            deps = (entry.get("roi-curve-input-dependence") or {}).get(method) or {}
            values[method] = {}
            for param, st in stats.items():
                unit = PARAMETERS[param].unit_text
                affected = [c for c in failed if (method, param) in c.affects]
                values[method][param] = qualify(curve.get(param), sds.get(param), tolerance, unit, affected,
                                                st.get("mean"), st.get("sd"), deps.get(param))
        entry["values"] = values
