"""What the CT perfusion workflow records for a case (typed; serialised to the case record by node.record)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.perfusion.inputs import InputRoi
from node.perfusion.motion import FrameMotion
from node.perfusion.names import method_label
from node.perfusion.qualify import AcquisitionCheck, RegionValue

__all__ = ["SeriesInfo", "InputCurve", "MeanSd", "RegionStats", "RegionValue", "AcquisitionCheck", "LiverCurve",
           "PerfusionMeasurements", "flag_text"]


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
    """One RTSTRUCT region: map statistics per method and parameter, the values of its mean curve with their 1-SD,
    and the values the report gives, each qualified (node.perfusion.qualify)."""

    volume_ml: float
    analysed_volume_ml: float
    analysed_voxels: int  # working-grid voxels wholly inside the contour that were analysed
    maps: dict[str, dict[str, MeanSd]]  # method -> parameter -> mean and SD over the analysed map voxels
    #: method -> parameter -> value of the region's mean curve (None where the curve does not define it)
    roi_curve: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: method -> parameter -> 1-SD of that value from image noise (and, for the model, its misfit)
    roi_curve_sd: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: noise per sample of the region's mean curve (HU): the image noise / sqrt(analysed voxels)
    roi_curve_noise_hu: float | None = None
    #: method -> parameter -> the reported value: the ROI curve's, its 1-SD, the map's mean and SD over the same
    #: voxels, and whether it is measurable (with the reason when not)
    values: dict[str, dict[str, RegionValue]] = field(default_factory=dict)

    @classmethod
    def of(cls, entry: Mapping[str, Any], methods: tuple[str, ...]) -> RegionStats:
        """From node.perfusion.stats' record of one region (strict: a missing key raises KeyError)."""
        maps = {m: {p: MeanSd(v["mean"], v["sd"]) for p, v in entry[m].items()} for m in methods if m in entry}
        return cls(entry["volume_ml"], entry["analysed_volume_ml"], int(entry["analysed_voxels"]), maps,
                   {m: dict(v) for m, v in entry.get("roi-curve", {}).items()},
                   {m: dict(v) for m, v in entry.get("roi-curve-sd", {}).items()},
                   entry.get("roi-curve-noise-hu"),
                   {m: dict(v) for m, v in entry["values"].items()})

    def not_measurable(self) -> list[tuple[str, str, str]]:
        """(method, parameter, reason) of every value reported as not measurable."""
        return [(m, p, v.reason or "not measurable") for m, params in self.values.items()
                for p, v in params.items() if not v.measurable]


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
    stages: dict[str, dict[str, float]]  # stage -> wall time, CPU time and peak memory
    #: checks of the acquisition (peaks sampled, wash-out covered, sampling interval, bolus resolved, motion); a
    #: failed one makes the values it affects not measurable
    acquisition_checks: list[AcquisitionCheck] = field(default_factory=list)
    #: a region value whose 95 % interval spans more than this fraction of it is not measurable
    tolerance: float = 0.15

    def not_measurable(self) -> list[str]:
        """Every region value reported as not measurable, in words with the reason (status flags, warnings)."""
        return [flag_text(roi, param, method, reason) for roi, stats in self.regional_statistics.items()
                for method, param, reason in stats.not_measurable()]


def flag_text(region: str, param: str, method: str, reason: str) -> str:
    """A value reported as not measurable, in words: "T2 ALP (maximum slope) not measurable at this noise: ..."; the
    same text in the warnings, the status flags and the summary's notes (which then say it once)."""
    return f"{region} {param} ({method_label(method)}) " + (reason if reason.startswith("not measurable")
                                               else f"not measurable: {reason}")
