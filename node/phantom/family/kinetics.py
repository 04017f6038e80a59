"""Contrast kinetics of a family case: aortic and portal inputs, spleen, and dual-input one-compartment tissue.

Everything is computed on a uniform fine grid (FINE_DT_S) from t = 0 (the first CT frame) and sampled at the
acquisition times, which the case draws as multiples of FINE_DT_S, so sampling is exact (no interpolation).

* Aorta: a first pass (arrival, rise = time from arrival to peak, shape alpha, peak HU) plus recirculation: the
  normalised cumulative first pass, delayed, rising to a plateau (a fraction of the peak). The first pass is a
  gamma variate by default; a lagged normal (a Gaussian through a mixing chamber, Bassingthwaighte 1966) or a
  local density random walk (inverse Gaussian, Sheppard) can take its place, with the same arrival, time to
  peak and peak, so that a method with a gamma-variate prior is not graded on its own prior alone.
* Portal vein: the aortic curve through the splanchnic bed: pure delay, then a unit-area gamma kernel (mean
  transit time, shape 2).
* Spleen: arterial one-compartment (k1, k2), so it peaks a few seconds after the aorta.
* Tissue: dC/dt = k1a Ca(t - tau_a) + k1p Cpv(t - tau_p) - k2 C(t), C(0) = 0 (science.md 1b; Materne 2000),
  solved by an exponential integrator that is exact for inputs linear between fine grid points.

Shared with nothing in the node (the node must not see these curves except through the images).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter

FINE_DT_S = 0.01
FLOW_SCALE = 6000.0  # (1/s) -> mL/min/100 mL


@dataclass(frozen=True)
class InputParams:
    """The bolus as it arrives: aorta, portal vein and spleen."""

    arrival_s: float
    rise_s: float
    alpha: float
    peak_hu: float
    recirculation_delay_s: float
    recirculation_fraction: float  # plateau / first-pass peak
    portal_delay_s: float
    portal_transit_s: float  # mean of the gamma dispersion kernel
    spleen_k1_per_s: float
    spleen_k2_per_s: float
    first_pass: str = "gamma variate"  # or one of FIRST_PASS_SHAPES


@dataclass(frozen=True)
class TissueParams:
    """DISCM parameters of one region (flows in mL/min/100 mL, distribution volume as a fraction, delays in s)."""

    alp: float
    pvp: float
    dv: float
    tau_a_s: float
    tau_p_s: float

    @property
    def k1a(self) -> float:
        return self.alp / FLOW_SCALE

    @property
    def k1p(self) -> float:
        return self.pvp / FLOW_SCALE

    @property
    def k2(self) -> float:
        return (self.k1a + self.k1p) / self.dv

    def as_dict(self) -> dict[str, float]:
        tlp = self.alp + self.pvp
        return {"ALP": self.alp, "PVP": self.pvp, "TLP": tlp, "HPI": 100.0 * self.alp / tlp,
                "DV": 100.0 * self.dv, "MTT": 1.0 / self.k2, "k1a_per_s": self.k1a, "k1p_per_s": self.k1p,
                "k2_per_s": self.k2, "tau_a_s": self.tau_a_s, "tau_p_s": self.tau_p_s}


def fine_grid(end_s: float) -> np.ndarray:
    return np.arange(int(round(end_s / FINE_DT_S)) + 1) * FINE_DT_S


def _gamma_variate(t: np.ndarray, arrival: float, rise: float, alpha: float, peak: float) -> np.ndarray:
    x = np.clip((t - arrival) / rise, 0.0, None)
    return peak * x ** alpha * np.exp(alpha * (1.0 - x))


def _peak_at(unit: np.ndarray, x: np.ndarray, t: np.ndarray, arrival: float, rise: float,
             peak: float) -> np.ndarray:
    """A shape tabulated on unit time `x` (unit[x] > 0 after x = 0), stretched so that its maximum falls at
    arrival + rise with height `peak`, on the times `t`."""
    mode = x[int(np.argmax(unit))]
    y = np.interp((np.asarray(t, float) - arrival) * mode / rise, x, unit, left=0.0, right=0.0)
    return peak * y / unit.max()


def _lagged_normal(t: np.ndarray, arrival: float, rise: float, alpha: float, peak: float) -> np.ndarray:
    """Gaussian (SD 1, centred 3 SD after arrival) convolved with an exponential of time constant alpha / 2 SD:
    the skew grows with the shape parameter as the gamma variate's does."""
    x = np.arange(-2.0, 60.0, 0.001)
    gauss = np.exp(-0.5 * (x - 3.0) ** 2)
    tau = alpha / 2.0
    kernel = np.exp(-np.arange(0.0, 62.0, 0.001) / tau)
    unit = fftconvolve(gauss, kernel)[: x.size]
    unit[x < 0] = 0.0
    return _peak_at(unit, x, t, arrival, rise, peak)


def _random_walk(t: np.ndarray, arrival: float, rise: float, alpha: float, peak: float) -> np.ndarray:
    """Local density random walk (inverse Gaussian first-passage density, mean 1, lambda = 2 alpha)."""
    lam = 2.0 * alpha
    x = np.arange(0.0, 40.0, 0.0005)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(x > 0, np.sqrt(lam / (2 * np.pi * x ** 3)) * np.exp(-lam * (x - 1.0) ** 2 / (2 * x)), 0.0)
    return _peak_at(np.nan_to_num(unit), x, t, arrival, rise, peak)


FIRST_PASS_SHAPES = {"gamma variate": _gamma_variate, "lagged normal": _lagged_normal,
                     "local density random walk": _random_walk}


def shifted(curve: np.ndarray, tau_s: float) -> np.ndarray:
    """curve(t - tau) on the fine grid (0 before the start); linear between fine points for a fractional shift."""
    t = np.arange(curve.size) * FINE_DT_S
    return np.interp(t - tau_s, t, curve, left=0.0)


def aorta(t: np.ndarray, p: InputParams) -> np.ndarray:
    first = FIRST_PASS_SHAPES[p.first_pass](t, p.arrival_s, p.rise_s, p.alpha, p.peak_hu)
    cumulative = np.cumsum(first)
    cumulative /= cumulative[-1]
    return first + p.recirculation_fraction * p.peak_hu * shifted(cumulative, p.recirculation_delay_s)


def portal_vein(t: np.ndarray, ca: np.ndarray, p: InputParams) -> np.ndarray:
    lag = np.clip(t - p.portal_delay_s, 0.0, None)
    shape = 2.0
    scale = p.portal_transit_s / (shape + 1.0)  # mean of lag^2 exp(-lag/scale) is 3 * scale
    kernel = np.where(t >= p.portal_delay_s, lag ** shape * np.exp(-lag / scale), 0.0)
    kernel /= kernel.sum()
    return fftconvolve(ca, kernel)[: t.size]


def compartment(drive: np.ndarray, k2: float) -> np.ndarray:
    """Solve dC/dt = drive(t) - k2 C, C(0) = 0, on the fine grid (exact for piecewise-linear drive)."""
    h = FINE_DT_S
    e = np.exp(-k2 * h)
    w_next = (h / k2 - (1.0 - e) / k2 ** 2) / h
    w_prev = (1.0 - e) / k2 - w_next
    rhs = np.r_[0.0, w_prev * drive[:-1] + w_next * drive[1:]]
    return lfilter([1.0], [1.0, -e], rhs)


def spleen(ca: np.ndarray, p: InputParams) -> np.ndarray:
    return compartment(p.spleen_k1_per_s * ca, p.spleen_k2_per_s)


def tissue(ca: np.ndarray, cpv: np.ndarray, k: TissueParams) -> np.ndarray:
    return compartment(k.k1a * shifted(ca, k.tau_a_s) + k.k1p * shifted(cpv, k.tau_p_s), k.k2)


def sample(fine: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Values at the acquisition times (multiples of FINE_DT_S)."""
    idx = np.rint(np.asarray(times_s) / FINE_DT_S).astype(int)
    if np.any(np.abs(idx * FINE_DT_S - np.asarray(times_s)) > 1e-6):
        raise ValueError("acquisition times must be multiples of the fine time step")
    return fine[idx]


def textbook_max_slope(times: np.ndarray, tissue_samples: np.ndarray, aorta_samples: np.ndarray,
                       portal_samples: np.ndarray, spleen_samples: np.ndarray) -> dict[str, float]:
    """The dual-input maximum slope as the textbook defines it (science.md 1a; Miles, Blomley), on samples.

    Slopes between consecutive samples, no smoothing; t_spl = time of the largest spleen sample; arterial
    intervals end at or before t_spl, portal intervals start at or after it; ALP = 6000 x steepest arterial
    slope / largest aortic sample, PVP = 6000 x steepest portal slope / largest portal-vein sample.
    """
    t = np.asarray(times, float)
    slopes = np.diff(np.asarray(tissue_samples, float)) / np.diff(t)
    t_spl = float(t[int(np.argmax(spleen_samples))])
    arterial = np.flatnonzero(t[1:] <= t_spl + 1e-9)
    portal = np.flatnonzero(t[:-1] >= t_spl - 1e-9)
    i_a = int(arterial[np.argmax(slopes[arterial])])
    i_p = int(portal[np.argmax(slopes[portal])])
    alp = FLOW_SCALE * max(float(slopes[i_a]), 0.0) / float(np.max(aorta_samples))
    pvp = FLOW_SCALE * max(float(slopes[i_p]), 0.0) / float(np.max(portal_samples))
    tlp = alp + pvp
    return {"ALP": alp, "PVP": pvp, "TLP": tlp, "HPI": 100.0 * alp / tlp if tlp > 0 else 0.0, "t_spl_s": t_spl,
            "arterial_interval": i_a, "portal_interval": i_p,
            "arterial_dt_s": float(t[i_a + 1] - t[i_a]), "portal_dt_s": float(t[i_p + 1] - t[i_p])}
