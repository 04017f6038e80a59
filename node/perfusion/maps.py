"""Voxel-wise perfusion maps of the analysed tissue for the configured methods.

Maps are computed only where `mask` is set (soft tissue that is not vessel, air, fat or bone, and was inside
the field of view in every frame); elsewhere they are 0.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from node.perfusion.discm import discm_maps, fit_discm
from node.perfusion.maxslope import MaxSlopeInputs, curve_max_slope, max_slope_maps
from node.perfusion.outputs import MapSet
from node.perfusion.tissue_classes import N_CLASSES

logger = logging.getLogger(__name__)

#: Delays (s) searched for the DISCM on the mean tissue curve; the best pair is then used for every voxel.
DELAY_GRID_S = (0.0, 1.0, 2.0, 3.0, 4.0)


def _scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=np.float32)
    out[mask] = values
    return out


def _filter_summary(noise_reduction: dict[str, object]) -> str:
    passes = int(noise_reduction.get("passes", 0))  # type: ignore[call-overload]
    return f"edge-preserving x{passes}" if passes else "no spatial smoothing"


def max_slope_set(enh: np.ndarray, mask: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs,
                  noise_reduction: dict[str, object], select: np.ndarray | None = None) -> MapSet:
    """Dual-input maximum-slope maps (ALP, PVP, TLP, HPI) from denoised enhancement (T, Z, Y, X).

    `noise_reduction` describes what was done to the curves (node.perfusion.denoise), for the record;
    `select` are the (T, N) mean curves of each mask voxel's tissue class (node.perfusion.tissue_classes), on
    which the steepest interval of each phase is chosen (see node.perfusion.maxslope).
    """
    maps = max_slope_maps(enh[:, mask], times, inputs, select)
    params = {"t_spl_s": inputs.t_spl, "aorta_peak_hu": round(inputs.aorta_peak_hu, 2),
              "portal_peak_hu": round(inputs.portal_peak_hu, 2), "noise_reduction": noise_reduction,
              "steepest_interval": (f"chosen per tissue class (k-means of curve shapes, {N_CLASSES} classes) on the "
                                    "class mean curve, read on each voxel's curve" if select is not None
                                    else "chosen on each voxel's curve"),
              "temporal_smoothing": "tissue curves [1, 2, 1] / 4 over the samples (ends [2, 1] / 3, [1, 2] / 3); "
                                    "input curves unsmoothed",
              "slope": "forward differences of consecutive smoothed samples",
              "arterial_window": "t[i+1] <= t_spl", "portal_window": "t[i] >= t_spl",
              "denominators": "ALP: aortic peak, PVP: portal venous peak (direct Blomley form)"}
    summary = f"t_spl {inputs.t_spl:g} s, {_filter_summary(noise_reduction)}, time [1 2 1]"
    return MapSet("max-slope", {k: _scatter(v, mask) for k, v in maps.items()}, params, summary)


def estimate_delays(curve: np.ndarray, times: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
                    grid: Sequence[float] = DELAY_GRID_S) -> tuple[float, float]:
    """Arterial and portal delays (s) minimising the DISCM residual of one representative tissue curve."""
    fit = fit_discm(np.asarray(curve, np.float32)[:, None], times, aorta, portal, grid, grid)
    return float(fit.tau_a[0]), float(fit.tau_p[0])


def discm_set(enh: np.ndarray, mask: np.ndarray, times: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
              noise_reduction: dict[str, object], reference_curve: np.ndarray) -> MapSet:
    """DISCM maps (ALP, PVP, HPI, DV, MTT); delays fitted on `reference_curve` (e.g. mean liver curve)."""
    tau_a, tau_p = estimate_delays(reference_curve, times, aorta, portal)
    fit = fit_discm(enh[:, mask], times, aorta, portal, (tau_a,), (tau_p,))
    maps = discm_maps(fit)
    params = {"tau_a_s": tau_a, "tau_p_s": tau_p, "delay_grid_s": list(DELAY_GRID_S),
              "fit": "linear least squares on the integrated form, per voxel", "noise_reduction": noise_reduction}
    summary = f"tau_a {tau_a:g} s, tau_p {tau_p:g} s, {_filter_summary(noise_reduction)}"
    logger.info("DISCM: delays tau_a %.1f s, tau_p %.1f s (from the reference tissue curve)", tau_a, tau_p)
    return MapSet("discm", {k: _scatter(v, mask) for k, v in maps.items()}, params, summary)


def curve_parameters(curve: np.ndarray, times: np.ndarray, methods: Sequence[str], t_spl: float,
                     aorta: np.ndarray, portal: np.ndarray, reference_curve: np.ndarray) -> dict[str, dict[str, float]]:
    """Both methods' parameters for one tissue curve (e.g. an ROI's mean curve), as floats."""
    out: dict[str, dict[str, float]] = {}
    if "max-slope" in methods:
        out["max-slope"] = curve_max_slope(curve, times, MaxSlopeInputs(
            t_spl=t_spl, aorta_peak_hu=float(aorta.max()), portal_peak_hu=float(portal.max())))
    if "discm" in methods:
        tau_a, tau_p = estimate_delays(reference_curve, times, aorta, portal)
        fit = fit_discm(np.asarray(curve, dtype=np.float32)[:, None], times, aorta, portal, (tau_a,), (tau_p,))
        out["discm"] = {k: float(v[0]) for k, v in discm_maps(fit).items()}
    return out
