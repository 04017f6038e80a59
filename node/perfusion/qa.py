"""Commissioning checks of the perfusion workflow against the digital phantom's truth (the `demo` command)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from node.perfusion.measurements import PerfusionMeasurements
from node.perfusion.stats import max_slope_noise_sd
from node.workflow import TruthCheck

__all__ = ["phantom_checks", "max_slope_noise_floor", "PERFUSION_TOLERANCE"]

PERFUSION_TOLERANCE = 0.05   # max-slope ALP/PVP region means: 5 % of the max-slope truth


def max_slope_noise_floor(truth: Mapping[str, Any], volume_ml: float) -> dict[str, float]:
    """Standard deviation (mL/min/100 mL) of a region-mean max slope that the phantom's CT noise alone causes, for
    a region of `volume_ml` (node.perfusion.stats.max_slope_noise_sd with the phantom's noise and geometry)."""
    perf = truth["perfusion"]
    voxels = round(volume_ml * 1000.0 / float(np.prod(truth["grids"]["perfusion"]["spacing_mm_kij"])))
    return max_slope_noise_sd(float(perf["ct_noise_sd_hu"]), voxels, np.asarray(perf["time_s"]),
                              perf["aorta_peak_sample_hu"], perf["portal_peak_sample_hu"])


def phantom_checks(m: PerfusionMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    """Per phantom region (the phantom's perfusion RTSTRUCT): map means and ROI-curve values vs the truth.

    Max slope is compared with the max-slope truth: 5 %, widened by 3 standard deviations of what the CT noise
    alone allows for a region of that volume (max_slope_noise_floor; 0.1-0.6 mL/min/100 mL for the phantom's
    regions at its own noise, more if a site runs it with --ct-noise). DISCM with the model truth (OSIPI:
    5 mL/100 mL/min + 10 %).
    """
    regions = truth["perfusion"]["regions"]
    out = []
    for roi, region in (("Normal liver", "liver"), ("T1", "T1"), ("T2", "T2"), ("T3", "T3")):
        stats = m.regional_statistics.get(roi)
        if stats is None:
            continue
        ms, model = regions[region]["max_slope"], regions[region]["model"]
        floor = max_slope_noise_floor(truth, stats.volume_ml)
        map_means = {p: v.mean for p, v in stats.maps.get("max-slope", {}).items()}
        for values, label in ((map_means, "map mean"), (stats.roi_curve.get("max-slope", {}), "ROI curve")):
            for p, key in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
                v = values.get(p)
                tol = PERFUSION_TOLERANCE * abs(ms[key]) + 3.0 * floor[p]
                out.append(TruthCheck(f"{roi} max-slope {p}, {label} (mL/min/100 mL)", v, ms[key],
                                      f"5 % + {3.0 * floor[p]:.1f}", v is not None and abs(v - ms[key]) <= tol))
        curve = stats.roi_curve.get("discm", {})
        for p, key in (("ALP", "alp_ml_min_100ml"), ("PVP", "pvp_ml_min_100ml")):
            v, t = curve.get(p), model[key]
            out.append(TruthCheck(f"{roi} DISCM {p}, ROI curve (mL/min/100 mL)", v, t, "5 + 10 %",
                                  v is not None and abs(v - t) <= 5.0 + 0.10 * abs(t)))
    return out
