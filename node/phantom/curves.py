"""Contrast enhancement curves: aortic input, portal input, spleen and dual-input single-compartment tissue.

All curves are enhancement in HU above the pre-contrast baseline, computed on a fine time grid (FINE_DT_S)
from t = 0 (first CT frame) and sampled at the acquisition times. Tissue follows the DISCM ODE
(science.md 1b) with zero delays:  dC/dt = k1a * Ca(t) + k1p * Cpv(t) - k2 * C(t).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

FINE_DT_S = 0.05
FINE_END_S = 60.0
UNIFORM_TIMES_S = tuple(3.0 * k for k in range(15))
NONUNIFORM_TIMES_S = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 17.0, 20.0, 24.0, 28.0, 33.0, 38.0, 44.0)

# Aortic first pass: gamma variate (arrival, time to peak after arrival, shape, peak HU) ...
AORTA_ARRIVAL_S, AORTA_RISE_S, AORTA_ALPHA, AORTA_PEAK_HU = 7.0, 6.0, 3.0, 280.0
# ... plus recirculation: the cumulative first pass, delayed, rising to a plateau (HU).
RECIRC_DELAY_S, RECIRC_PLATEAU_HU = 8.0, 120.0
# Portal vein: the aortic curve through the splanchnic bed = pure delay + gamma dispersion (area kept).
PORTAL_DELAY_S, PORTAL_MEAN_TRANSIT_S, PORTAL_ALPHA = 4.0, 7.0, 2.0
# Spleen: arterial-only compartment with a short transit, so it peaks a few seconds after the aorta.
SPLEEN_K1_PER_S, SPLEEN_K2_PER_S = 0.12, 0.30


@dataclass(frozen=True)
class Kinetics:
    """DISCM parameters of one region: flows in mL/min/100 mL, distribution volume as a fraction."""

    alp_ml_min_100ml: float
    pvp_ml_min_100ml: float
    distribution_volume: float

    @property
    def k1a_per_s(self) -> float:
        return self.alp_ml_min_100ml / 6000.0

    @property
    def k1p_per_s(self) -> float:
        return self.pvp_ml_min_100ml / 6000.0

    @property
    def k2_per_s(self) -> float:
        return (self.k1a_per_s + self.k1p_per_s) / self.distribution_volume

    @property
    def hpi_percent(self) -> float:
        return 100.0 * self.alp_ml_min_100ml / (self.alp_ml_min_100ml + self.pvp_ml_min_100ml)


def fine_times() -> np.ndarray:
    return np.round(np.arange(0.0, FINE_END_S + FINE_DT_S / 2, FINE_DT_S), 6)


def _gamma_variate(t: np.ndarray, arrival: float, rise: float, alpha: float, peak: float) -> np.ndarray:
    x = np.clip((t - arrival) / rise, 0.0, None)
    return peak * x ** alpha * np.exp(alpha * (1.0 - x))


def _delay(x: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(seconds / FINE_DT_S))
    return np.concatenate([np.zeros(n), x[:-n]]) if n else x.copy()


def aortic_input(t: np.ndarray) -> np.ndarray:
    """Aortic enhancement (HU) on the uniform fine grid `t`."""
    first_pass = _gamma_variate(t, AORTA_ARRIVAL_S, AORTA_RISE_S, AORTA_ALPHA, AORTA_PEAK_HU)
    cumulative = np.cumsum(first_pass)
    cumulative /= cumulative[-1]
    return first_pass + RECIRC_PLATEAU_HU * _delay(cumulative, RECIRC_DELAY_S)


def portal_input(t: np.ndarray, aorta: np.ndarray) -> np.ndarray:
    """Portal venous enhancement: the aortic curve delayed and dispersed by a unit-area gamma kernel."""
    tau = np.clip(t - PORTAL_DELAY_S, 0.0, None)
    beta = PORTAL_MEAN_TRANSIT_S / (PORTAL_ALPHA + 1.0)
    kernel = np.where(t >= PORTAL_DELAY_S, tau ** PORTAL_ALPHA * np.exp(-tau / beta), 0.0)
    kernel /= kernel.sum()
    return np.convolve(aorta, kernel)[: len(t)]


def compartment(arterial: np.ndarray, portal: np.ndarray, k1a: float, k1p: float, k2: float) -> np.ndarray:
    """Solve dC/dt = k1a*arterial + k1p*portal - k2*C, C(0) = 0, on the fine grid.

    Exact for inputs that are piecewise linear between grid points (exponential integrator), so the
    result is accurate to O(dt^2) for the smooth inputs used here.
    """
    u = k1a * arterial + k1p * portal
    h = FINE_DT_S
    e = np.exp(-k2 * h)
    w_prev = (1.0 - e) / k2 - (h / k2 - (1.0 - e) / k2 ** 2) / h   # weight of u[n-1]
    w_next = (h / k2 - (1.0 - e) / k2 ** 2) / h                     # weight of u[n]
    # C[0] = 0; C[n] = e*C[n-1] + w_prev*u[n-1] + w_next*u[n] (a first-order IIR filter).
    drive = np.r_[0.0, w_prev * u[:-1] + w_next * u[1:]]
    return lfilter([1.0], [1.0, -e], drive)


def sample(t_fine: np.ndarray, curve: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Values of a fine curve at acquisition times (which lie on the fine grid)."""
    idx = np.round(np.asarray(times) / FINE_DT_S).astype(int)
    if np.any(np.abs(t_fine[idx] - times) > 1e-6):
        raise ValueError("acquisition times must be multiples of the fine time step")
    return curve[idx]


def max_slope(times: np.ndarray, tissue: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
              spleen: np.ndarray) -> dict[str, float]:
    """Dual-input maximum slope as the textbook defines it (README, 'Maximum-slope definition'; science.md 1a).

    Inputs are enhancement samples (HU above baseline); slopes between consecutive samples, no smoothing.
    Returns ALP, PVP, TLP (mL/min/100 mL), HPI (%) and the splenic peak time t_spl (s).
    """
    t = np.asarray(times, float)
    c = np.asarray(tissue, float)
    slopes = np.diff(c) / np.diff(t)
    t_spl = float(t[int(np.argmax(spleen))])
    arterial = t[1:] <= t_spl
    portal_window = t[:-1] >= t_spl
    alp = 6000.0 * float(np.max(slopes[arterial])) / float(np.max(aorta))
    pvp = 6000.0 * float(np.max(slopes[portal_window])) / float(np.max(portal))
    tlp = alp + pvp
    return {"alp": alp, "pvp": pvp, "tlp": tlp, "hpi": 100.0 * alp / tlp, "t_spl_s": t_spl}


@dataclass(frozen=True)
class CurveSet:
    """Noiseless enhancement curves on the fine grid for the inputs and every enhancing region."""

    t_fine: np.ndarray
    aorta: np.ndarray
    portal_vein: np.ndarray
    spleen: np.ndarray
    tissues: dict[str, np.ndarray]   # region name -> DISCM curve


def build_curves(kinetics: dict[str, Kinetics]) -> CurveSet:
    """Input curves and the DISCM curve of every region in `kinetics`."""
    t = fine_times()
    ca = aortic_input(t)
    cpv = portal_input(t, ca)
    spleen = compartment(ca, np.zeros_like(ca), SPLEEN_K1_PER_S, 0.0, SPLEEN_K2_PER_S)
    tissues = {name: compartment(ca, cpv, k.k1a_per_s, k.k1p_per_s, k.k2_per_s) for name, k in kinetics.items()}
    return CurveSet(t, ca, cpv, spleen, tissues)
