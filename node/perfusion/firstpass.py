"""Model-based shapes of a sampled input curve between its samples: a gamma-variate first pass (Thompson 1964),
alone or with a smooth recirculation, fitted to the samples, plus a cubic spline of what it leaves at the samples.

Both pass through every sample, as an interpolant must, but put the bolus between the samples where a bolus
physically is: nothing before its arrival, which may fall anywhere inside the gap after the last baseline sample
(a cubic spline starts rising right after that sample and shifts area forward in time), and a peak that may lie
between two samples (a spline cuts or overshoots it). They are candidates, not the estimate: the model is fitted
with the spline input, and these shapes join the other interpolants in node.perfusion.discm.input_dependence to
measure how much a value depends on what the samples do not show. Shapes of the first pass other than a gamma
variate (lagged normal, local density random walk) are what the qualification is validated on (bench/accuracy.py
--first-pass), so that a gamma-variate phantom does not grade its own prior.

A fit that fails (too few samples, no bolus) falls back to the cubic spline: the candidate then adds no spread.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares
from scipy.special import expit

logger = logging.getLogger(__name__)

Interpolant = Callable[[np.ndarray], np.ndarray]
#: a sample at or below this fraction of the peak counts as baseline (before the bolus arrives)
BASELINE_FRACTION = 0.05
#: the first-pass window ends at the first sample after the peak below this fraction of the peak, where
#: recirculation has not yet taken over the down-slope
FIRST_PASS_END_FRACTION = 0.6
_SHAPES = (2.0, 3.5, 6.0)  # starting gamma-variate shapes (alpha)
_ARRIVALS = (0.2, 0.5, 0.8)  # starting arrival, as a fraction of the gap after the last baseline sample


def gamma_variate(t: np.ndarray, arrival: float, rise: float, alpha: float, peak: float) -> np.ndarray:
    """Gamma variate normalised to its peak: `peak` at arrival + rise, 0 before arrival."""
    x = np.clip((np.asarray(t, dtype=np.float64) - arrival) / rise, 0.0, None)
    return peak * x ** alpha * np.exp(alpha * (1.0 - x))


def _recirculating(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    arrival, rise, alpha, peak, fraction, delay, width = p
    return gamma_variate(t, arrival, rise, alpha, peak) + fraction * peak * expit((t - arrival - delay) / width)


def _first_pass(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return gamma_variate(t, *p)


def _shape(recirculation: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The fitted shape as a function of (times, parameters)."""
    return _recirculating if recirculation else _first_pass


def _bolus_frame(y: np.ndarray) -> tuple[int, int]:
    """(last baseline sample before the peak, peak sample)."""
    ip = int(np.argmax(y))
    base = np.flatnonzero(y[:ip] <= BASELINE_FRACTION * y[ip])
    return (int(base[-1]) if base.size else 0), ip


def _fit(t: np.ndarray, y: np.ndarray, recirculation: bool) -> np.ndarray:
    """Least-squares parameters of the first pass (with recirculation: fitted to every sample; without: to the
    samples from before arrival to the end of the first pass)."""
    i0, ip = _bolus_frame(y)
    peak = float(y[ip])
    if peak <= 0 or ip == 0 or ip == y.size - 1:
        raise ValueError("no sampled bolus")
    gap_end = float(t[min(i0 + 1, ip)])
    lo = [float(t[i0]) - 1e-6, 0.5, 0.5, 0.2 * peak]
    hi = [gap_end + 1e-6, 40.0, 15.0, 3.0 * peak]
    if recirculation:
        fun_t, fun_y = t, y
        lo += [0.0, 0.0, 0.5]
        hi += [1.5, 60.0, 20.0]
    else:
        j = ip + 1
        while j < y.size - 1 and y[j] > FIRST_PASS_END_FRACTION * peak:
            j += 1
        sel = slice(max(i0 - 1, 0), j + 1)
        fun_t, fun_y = t[sel], y[sel]
    lo_a, hi_a = np.array(lo), np.array(hi)
    model = _shape(recirculation)
    best: tuple[float, np.ndarray] | None = None
    for alpha in _SHAPES:
        for f in _ARRIVALS:
            arrival = float(t[i0]) + f * (gap_end - float(t[i0]))
            rise = max(float(t[ip]) - arrival, 1.0)
            start = [arrival, rise, alpha, peak] + ([0.3, 1.3 * rise, 3.0] if recirculation else [])
            x0 = np.clip(start, lo_a + 1e-9, hi_a - 1e-9)
            r = least_squares(lambda p: model(fun_t, p) - fun_y, x0, bounds=(lo_a, hi_a))
            if best is None or r.cost < best[0]:
                best = (float(r.cost), r.x)
    assert best is not None
    return best[1]


def _with_residual(t: np.ndarray, y: np.ndarray, shape: Callable[[np.ndarray], np.ndarray]) -> Interpolant:
    residual = CubicSpline(t, y - shape(t))
    return lambda x: shape(np.asarray(x, dtype=np.float64)) + residual(x)


def first_pass_interpolant(t: np.ndarray, y: np.ndarray) -> Interpolant:
    """A gamma-variate first pass fitted to the samples around the bolus, plus the spline of the rest."""
    return _shape_interpolant(t, y, recirculation=False)


def recirculating_interpolant(t: np.ndarray, y: np.ndarray) -> Interpolant:
    """A gamma-variate first pass with a logistic recirculation fitted to every sample, plus the spline of the
    rest."""
    return _shape_interpolant(t, y, recirculation=True)


def _shape_interpolant(t: np.ndarray, y: np.ndarray, recirculation: bool) -> Interpolant:
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    try:
        p = _fit(t, y, recirculation)
    except (ValueError, np.linalg.LinAlgError) as exc:
        logger.debug("first-pass fit failed (%s): the cubic spline stands in", exc)
        spline = CubicSpline(t, y)
        return lambda x: spline(x)
    model = _shape(recirculation)
    return _with_residual(t, y, lambda x: model(x, p))
