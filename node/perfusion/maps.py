"""Voxel-wise perfusion maps of the analysed tissue for the configured methods, and the same parameters of one
region curve with their 1-SD.

Maps are computed only where `mask` is set (soft tissue that is not vessel, air, fat or bone, and was inside
the field of view in every frame); elsewhere they are NaN (not computed), and so are values a voxel's curve does
not define (HPI, DV, MTT without uptake).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from node.perfusion.discm import (
    K2_RANGE,
    Convolver,
    CurveFit,
    VoxelFit,
    fit_curve,
    input_dependence,
    voxel_flows,
    voxel_maps,
)
from node.perfusion.maxslope import MaxSlopeInputs, max_slope_maps
from node.perfusion.outputs import MapSet
from node.perfusion.qualify import max_slope_curve_sd
from node.perfusion.tissue_classes import N_CLASSES

logger = logging.getLogger(__name__)

#: a class's model is fitted on its mean curve when it has at least this many voxels; smaller classes (partial
#: volume slivers) take the fit of the nearest large class by curve shape
MIN_CLASS_VOXELS_FOR_FIT = 50


def scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A (Z, Y, X) float32 map holding `values` at the mask voxels and NaN elsewhere."""
    out = np.full(mask.shape, np.nan, dtype=np.float32)
    out[mask] = values
    return out


def _filter_summary(noise_reduction: dict[str, object]) -> str:
    passes = int(noise_reduction.get("passes", 0))  # type: ignore[call-overload]
    return f"edge-preserving x{passes}" if passes else "no spatial smoothing"


def max_slope_set(curves: np.ndarray, mask: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs,
                  noise_reduction: dict[str, object], select: np.ndarray | None = None) -> MapSet:
    """Dual-input maximum-slope maps (ALP, PVP, TLP, HPI) from the denoised enhancement curves (T, N) of the mask
    voxels.

    `noise_reduction` describes what was done to the curves (node.perfusion.denoise), for the record;
    `select` are the (T, N) mean curves of each voxel's tissue class (node.perfusion.tissue_classes), on which the
    steepest interval of each phase is chosen (see node.perfusion.maxslope).
    """
    maps = max_slope_maps(curves, times, inputs, select)
    params = {"t_spl_s": inputs.t_spl, "aorta_peak_hu": round(inputs.aorta_peak_hu, 2),
              "portal_peak_hu": round(inputs.portal_peak_hu, 2), "noise_reduction": noise_reduction,
              "steepest_interval": (f"chosen per tissue class (k-means of curve shapes, {N_CLASSES} classes) on the "
                                    "class mean curve, read on each voxel's curve" if select is not None
                                    else "chosen on each voxel's curve"),
              "temporal_smoothing": "none",
              "slope": "differences of consecutive samples (textbook)",
              "arterial_window": "t[i+1] <= t_spl", "portal_window": "t[i] >= t_spl",
              "denominators": "ALP: aortic peak, PVP: portal venous peak (direct Blomley form)"}
    summary = f"t_spl {inputs.t_spl:g} s, {_filter_summary(noise_reduction)}"
    return MapSet("max-slope", {k: scatter(v, mask) for k, v in maps.items()}, params, summary)


def _class_fits(conv: Convolver, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(K, 3): k2, tau_a, tau_p of every class, fitted on its mean curve; small classes (partial-volume slivers, a
    few voxels) borrow those of the large class whose mean curve is nearest."""
    k = means.shape[0]
    out = np.full((k, 3), np.nan)
    large = np.flatnonzero(counts >= MIN_CLASS_VOXELS_FOR_FIT)
    if large.size == 0:
        large = np.array([int(np.argmax(counts))])
    for c in large:
        fit = fit_curve(conv, means[c])
        out[c] = fit.k2, fit.tau_a, fit.tau_p
    for c in np.setdiff1d(np.arange(k), large):
        out[c] = out[large[int(np.argmin(((means[large] - means[c]) ** 2).sum(axis=1)))]]
    return out


def discm_set(curves: np.ndarray, mask: np.ndarray, conv: Convolver, labels: np.ndarray, class_means: np.ndarray,
              counts: np.ndarray, noise_reduction: dict[str, object]) -> MapSet:
    """DISCM maps (ALP, PVP, TLP, HPI, DV, MTT) from the denoised curves (T, N) of the mask voxels: each tissue
    class's k2 and delays from its mean curve, the flows per voxel (node.perfusion.discm)."""
    per_class = _class_fits(conv, class_means, counts)
    n = curves.shape[1]
    k1a, k1p, k2 = np.zeros(n), np.zeros(n), np.ones(n)
    for c in np.unique(labels):
        sel = np.flatnonzero(labels == c)
        fit = voxel_flows(conv, curves[:, sel], *(float(v) for v in per_class[c]))
        k1a[sel], k1p[sel], k2[sel] = fit.k1a, fit.k1p, fit.k2
    maps = voxel_maps(VoxelFit(k1a, k1p, k2))
    used = counts > 0
    w = counts[used] / counts[used].sum()
    tau_a, tau_p = per_class[used, 1], per_class[used, 2]
    params = {"fit": "convolution model, nonlinear least squares by variable projection (flows in closed form, "
                     "k1a, k1p >= 0): k2 and delays per tissue class from its mean curve, flows per voxel",
              "inputs": "aortic and portal curves, cubic spline onto a 0.1 s grid, zero before the first frame",
              "tau_a_s_classes": {"weighted_mean": round(float(w @ tau_a), 2), "min": round(float(tau_a.min()), 2),
                                  "max": round(float(tau_a.max()), 2)},
              "tau_p_s_classes": {"weighted_mean": round(float(w @ tau_p), 2), "min": round(float(tau_p.min()), 2),
                                  "max": round(float(tau_p.max()), 2)},
              "k2_range_per_s": [float(v) for v in K2_RANGE], "noise_reduction": noise_reduction}
    summary = f"tau_a {w @ tau_a:.1f} s, tau_p {w @ tau_p:.1f} s, {_filter_summary(noise_reduction)}"
    logger.info("DISCM: class delays tau_a %.1f-%.1f s, tau_p %.1f-%.1f s", tau_a.min(), tau_a.max(),
                tau_p.min(), tau_p.max())
    return MapSet("discm", {k: scatter(v, mask) for k, v in maps.items()}, params, summary)


#: per method: the values of a region curve, their 1-SD, and (model) their relative dependence on the inputs'
#: interpolation between samples (node.perfusion.discm.input_dependence; empty for the maximum slope)
CurveParameters = tuple[dict[str, float], dict[str, float], dict[str, float]]


def curve_parameters(curve: np.ndarray, times: np.ndarray, methods: Sequence[str], ms_inputs: MaxSlopeInputs,
                     conv: Convolver, noise_sd: float) -> dict[str, CurveParameters]:
    """{method: (values, 1-SD, input dependence)} for one region curve whose samples carry independent noise
    `noise_sd` (HU)."""
    out: dict[str, CurveParameters] = {}
    if "max-slope" in methods:
        out["max-slope"] = (*max_slope_curve_sd(curve, times, ms_inputs, noise_sd), {})
    if "discm" in methods:
        y = np.asarray(curve, dtype=np.float64)
        fit: CurveFit = fit_curve(conv, y, noise_sd)
        out["discm"] = (dict(fit.values) | {"tau_a_s": fit.tau_a, "tau_p_s": fit.tau_p}, dict(fit.sd),
                        input_dependence(conv, y, fit))
    return out
