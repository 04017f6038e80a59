"""What the CT perfusion workflow records for a case (typed; serialised to the case record by node.record)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.perfusion.inputs import InputRoi
from node.perfusion.motion import FrameMotion

__all__ = ["SeriesInfo", "InputCurve", "MeanSd", "RegionStats", "LiverCurve", "PerfusionMeasurements"]


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    encoding: str  # "classic-ct" or "enhanced-ct"
    n_time_points: int
    times_s: list[float]
    time_spread_within_time_point_s: float
    native_shape_zyx: list[int]
    working_shape_zyx: list[int]
    working_spacing_mm_zyx: list[float]


@dataclass(frozen=True)
class InputCurve:
    """An input ROI (aorta, portal vein, spleen) and its enhancement curve."""

    source: str  # "config", "rtstruct:<ROI name>" or "automatic"
    centre_mm: list[float]
    volume_ml: float
    voxels: int
    peak_enhancement_hu: float | None
    peak_time_s: float | None
    enhancement_hu: list[float]

    @classmethod
    def of(cls, roi: InputRoi, times: np.ndarray) -> InputCurve:
        e = roi.enhancement
        peak = int(np.argmax(e)) if e.size else 0
        return cls(source=roi.source, centre_mm=[round(v, 1) for v in roi.centre_mm], volume_ml=round(roi.volume_ml, 2),
                   voxels=int(roi.mask.sum()), peak_enhancement_hu=round(float(e[peak]), 1) if e.size else None,
                   peak_time_s=round(float(times[peak]), 2) if e.size else None,
                   enhancement_hu=[round(float(v), 2) for v in e])


@dataclass(frozen=True)
class MeanSd:
    mean: float | None
    sd: float | None


@dataclass(frozen=True)
class RegionStats:
    """One RTSTRUCT region: map statistics per method and parameter, and the values of its mean curve."""

    volume_ml: float
    analysed_volume_ml: float
    maps: dict[str, dict[str, MeanSd]]  # method -> parameter -> mean and SD over the analysed map voxels
    roi_curve: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> parameter -> value
    #: 1-SD noise (mL/min/100 mL) that image noise alone gives the region's max-slope ALP and PVP
    max_slope_noise_sd: dict[str, float] | None = None

    @classmethod
    def of(cls, entry: Mapping[str, Any], methods: tuple[str, ...]) -> RegionStats:
        """From node.perfusion.stats' record of one region (strict: a missing key raises KeyError)."""
        maps = {m: {p: MeanSd(v["mean"], v["sd"]) for p, v in entry[m].items()} for m in methods if m in entry}
        curve = dict(entry.get("roi-curve", {}))
        noise = curve.pop("max-slope-noise-sd", None)
        return cls(entry["volume_ml"], entry["analysed_volume_ml"], maps,
                   {m: dict(v) for m, v in curve.items()}, noise)


@dataclass(frozen=True)
class LiverCurve:
    source: str
    volume_ml: float
    enhancement_hu: list[float]


@dataclass(frozen=True)
class PerfusionMeasurements:
    series: SeriesInfo
    reference_time_point: int
    reference_time_s: float
    motion: list[FrameMotion]
    baseline_frames: int
    noise_hu: float
    noise_reduction: dict[str, Any]  # the noise filter's own description of what it did
    inputs: dict[str, InputCurve]  # "aorta", "portal_vein", "spleen"
    t_spl_s: float
    aorta_peak_hu: float
    aorta_peak_time_s: float
    portal_peak_hu: float
    portal_peak_time_s: float
    liver_curve: LiverCurve
    masks: dict[str, float]  # mL per tissue mask
    methods: dict[str, dict[str, Any]]  # method -> its parameters (as the method reports them)
    rtstruct: str  # how a received RTSTRUCT was used
    regional_statistics: dict[str, RegionStats]  # ROI name -> statistics
    stages: dict[str, dict[str, float]]  # stage -> wall time and peak memory
