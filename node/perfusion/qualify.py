"""Self-qualification of the perfusion values: each region value with its 1-SD noise, and "not measurable" where
the data cannot carry it; checks of the acquisition itself.

A region value is the parameter of the ROI's mean curve (its analysed voxels wholly inside the contour, before any
spatial smoothing: a small lesion is not mixed with its surroundings by the noise reduction, and its own steepest
intervals are used); the mean and SD of the map over the same voxels are reported beside it. It carries the
standard deviation that image noise gives it: the noise of the ROI's mean curve (the image noise per voxel /
sqrt(voxels), measured on the series) propagated through the method, for the maximum slope through the steepest
intervals of the ROI's mean curve (a slope between samples dt apart scales noise by sqrt(2) / dt; the largest SD of
the intervals that may be the steepest, see max_slope_curve_sd), for the model through the Jacobian of its fit
(with the residual of the fit when that is larger: a misfit is uncertainty too). A value is *not measurable* when
its 95 % interval, +-1.96 SD, spans more than `perfusion_tolerance` of the value (3.92 SD > 15 % by default, i.e.
1 SD > 3.8 %), when it is not finite, when an acquisition check that it depends on failed, or (model values)
when its dependence on the input curves' unknown shape between their samples (1.5 times the spread of the value
over five interpolations of them, node.perfusion.discm.input_dependence) exceeds MAX_INPUT_DEPENDENCE (a bias no
averaging removes). Each such value says why.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from node.perfusion.maxslope import FLOW_SCALE, MaxSlopeInputs, phase_windows

Z95 = 1.959964
#: longest sampling interval at which the slopes of a first pass are resolved (the issue's limit), applied to the
#: series' sampling interval: its mean interval, to 0.1 s as protocols state it (a 4 s protocol whose frames jitter
#: by +-15 % samples every 4 s; a single long gap in the first pass is the bolus check's concern)
MAX_SAMPLING_INTERVAL_S = 4.0
#: samples the model needs across the aortic first pass (full width at half maximum W, on its spline, over the mean
#: interval h of the frames spanning it). From sampling theory, not from the phantoms: a bolus of Gaussian shape
#: (sigma = W / 2.355) sampled every h keeps exp(-pi^2 sigma^2 / (2 h^2)) of its peak spectral amplitude at the
#: Nyquist frequency 1 / (2 h), the part of its shape between samples that no interpolation can recover. That is
#: at most the model's 2 % noiseless tolerance (issue 14) when W / h >= 2.1. Typical clinical first passes (W 6-10
#: s) at 3 s sampling pass; at 4 s only the wider ones do.
MIN_SAMPLES_PER_BOLUS_FWHM = 2.1
#: a model value whose estimated error from the inputs' unknown shape between samples exceeds this fraction is not
#: known to the model's noiseless tolerance (issue 14: 2 %). The estimate (node.perfusion.discm.input_dependence)
#: is 1.5 times the spread of the value over five interpolants (cubic spline, monotone cubic, modified Akima, and
#: two gamma-variate first passes fitted to the samples): the spread of a few plausible shapes, widened to the
#: width they are drawn from
MAX_INPUT_DEPENDENCE = 0.02
#: wash-out: at least this many samples after the portal peak, over which the portal curve falls by this much
MIN_SAMPLES_AFTER_PORTAL_PEAK = 2
MIN_PORTAL_WASHOUT_FRACTION = 0.10
#: residual motion (mm) of the liver after correction beyond which voxel curves mix neighbouring tissues
MAX_RESIDUAL_MOTION_MM = 2.0

ALL = ("ALP", "PVP", "TLP", "HPI", "DV", "MTT")


@dataclass(frozen=True)
class RegionValue:
    """One reported region value with its noise and whether it can be trusted."""

    value: float | None  # the parameter of the ROI's mean curve
    sd: float | None  # its 1-SD from image noise (and the model's misfit)
    map_mean: float | None  # mean of the map over the same voxels
    map_sd: float | None  # spatial SD of the map there (heterogeneity and voxel noise, not the value's noise)
    measurable: bool
    reason: str | None = None
    #: model values: its relative uncertainty from the inputs' unknown shape between samples (1.5 times the spread of
    #: the value over five interpolations of them, node.perfusion.discm.input_dependence)
    input_dependence: float | None = None


@dataclass(frozen=True)
class AcquisitionCheck:
    """One check of the acquisition; `affects` lists the (method, parameter) values a failure invalidates."""

    name: str
    passed: bool
    value: float | None
    limit: str
    finding: str
    affects: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _clean(v: float | None) -> float | None:
    """`v` as a float, None when it is not a finite number."""
    return float(v) if v is not None and math.isfinite(v) else None


def qualify(value: float | None, sd: float | None, tolerance: float, unit: str,
            failed: Iterable[AcquisitionCheck] = (), map_mean: float | None = None,
            map_sd: float | None = None, input_dependence: float | None = None) -> RegionValue:
    """The region value with its flag: see the module docstring."""
    reasons = [c.finding for c in failed]
    v, s, dep = _clean(value), _clean(sd), _clean(input_dependence)
    if dep is not None and dep > MAX_INPUT_DEPENDENCE:
        reasons.insert(0, f"depends on the shape of the input curves between samples: other interpolations of them "
                          f"put its uncertainty at {100 * dep:.1f} % (limit {100 * MAX_INPUT_DEPENDENCE:.0f} %)")
    if v is None:
        reasons.insert(0, "not computed (no analysed voxel with a defined value)")
    elif v == 0:
        reasons.insert(0, "no inflow measured (0): the relative noise is undefined")
    elif s is None:
        reasons.insert(0, "noise of the value unknown")
    elif 2 * Z95 * s > tolerance * abs(v):
        # plain ASCII ("either side", not a plus-minus sign): the reason goes into the SR's text as it is
        reasons.insert(0, f"not measurable at this noise: the 95 % interval, {Z95 * s:.2g} {unit} either side, "
                          f"spans {200 * Z95 * s / abs(v):.0f} % of the value (limit {100 * tolerance:.0f} %)")
    return RegionValue(value=v, sd=s, map_mean=_clean(map_mean), map_sd=_clean(map_sd),
                       measurable=not reasons, reason="; ".join(reasons) if reasons else None,
                       input_dependence=dep)


# ------------------------------------------------------------------ 1-SD of the maximum slope
def max_slope_curve_sd(curve: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs,
                       noise_sd: float) -> tuple[dict[str, float], dict[str, float]]:
    """(values, 1-SD) of ALP, PVP, TLP, HPI for one curve whose samples carry independent noise `noise_sd`.

    Once the steepest arterial and portal intervals are chosen, each value is a fixed linear combination of the
    samples (HPI through its gradient), so the noise propagates linearly. But the choice is made on the noisy
    curve: any interval whose slope is not significantly below the steepest one (by less than Z95 SD of their
    difference) may be the true steepest, and the value is only as well known as the least well known of those
    candidates. So each value's SD is the largest over its candidate intervals (jittered frames make some
    intervals short and their slopes noisy: a region whose true steepest interval is short is not reported with the
    smaller SD of a longer neighbour that noise made look steeper)."""
    t = np.asarray(times, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    arterial, portal = phase_windows(t, inputs.t_spl)
    slopes = np.diff(c) / np.diff(t)
    ia = int(np.flatnonzero(arterial)[np.argmax(slopes[arterial])])
    ip = int(np.flatnonzero(portal)[np.argmax(slopes[portal])])

    def weights(i: int, peak: float) -> np.ndarray:
        w = np.zeros(t.size)
        w[i + 1], w[i] = 1.0 / (t[i + 1] - t[i]), -1.0 / (t[i + 1] - t[i])
        return w * FLOW_SCALE / peak

    def candidates(window: np.ndarray, best: int) -> list[int]:
        out = []
        for i in np.flatnonzero(window):
            d = np.zeros(t.size)  # slope[best] - slope[i] as weights on the samples
            d[best + 1] += 1.0 / (t[best + 1] - t[best])
            d[best] -= 1.0 / (t[best + 1] - t[best])
            d[i + 1] -= 1.0 / (t[i + 1] - t[i])
            d[i] += 1.0 / (t[i + 1] - t[i])
            if i == best or float(d @ c) <= Z95 * noise_sd * float(np.linalg.norm(d)):
                out.append(int(i))
        return out

    alp = max(float(weights(ia, inputs.aorta_peak_hu) @ c), 0.0)
    pvp = max(float(weights(ip, inputs.portal_peak_hu) @ c), 0.0)
    tlp = alp + pvp
    values = {"ALP": alp, "PVP": pvp, "TLP": tlp, "HPI": 100.0 * alp / tlp if tlp > 0 else float("nan")}
    sd = dict.fromkeys(("ALP", "PVP", "TLP", "HPI"), 0.0)
    for i in candidates(arterial, ia):
        for j in candidates(portal, ip):
            wa, wp = weights(i, inputs.aorta_peak_hu), weights(j, inputs.portal_peak_hu)
            w_hpi = 100.0 * (wa * pvp - wp * alp) / tlp ** 2 if tlp > 0 else np.zeros(t.size)
            for name, w in (("ALP", wa), ("PVP", wp), ("TLP", wa + wp), ("HPI", w_hpi)):
                sd[name] = max(sd[name], float(noise_sd * np.linalg.norm(w)))
    return values, sd


# ------------------------------------------------------------------ acquisition checks
def _fwhm_s(times: np.ndarray, curve: np.ndarray) -> float:
    """Full width at half maximum (s) of a curve's main peak, on its cubic spline."""
    start, end = _fwhm_window(times, curve)
    return end - start


def _fwhm_window(times: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """Start and end (s) of a curve's main peak at half maximum, on its cubic spline."""
    from scipy.interpolate import CubicSpline

    t = np.asarray(times, dtype=np.float64)
    fine = np.arange(t[0], t[-1], 0.05)
    v = CubicSpline(t, np.asarray(curve, dtype=np.float64))(fine)
    i = int(np.argmax(v))
    half = 0.5 * v[i]
    before = np.flatnonzero(v[:i] < half)
    after = np.flatnonzero(v[i:] < half)
    start = fine[before[-1]] if before.size else fine[0]
    end = fine[i + after[0]] if after.size else fine[-1]
    return float(start), float(end)


def acquisition_checks(times: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
                       residual_motion_mm: float | None) -> list[AcquisitionCheck]:
    """The checks of issue 14: peaks sampled, portal peak plus wash-out covered, sampling interval, the aortic
    bolus resolved for the model, residual motion."""
    t = np.asarray(times, dtype=np.float64)
    n = t.size

    def ms(*ps: str) -> tuple[tuple[str, str], ...]:
        return tuple(("max-slope", p) for p in ps)

    def dm(*ps: str) -> tuple[tuple[str, str], ...]:
        return tuple(("discm", p) for p in ps)

    out = []
    ia, ip = int(np.argmax(aorta)), int(np.argmax(portal))
    ok = 0 < ia < n - 1
    out.append(AcquisitionCheck(
        "aortic peak sampled", ok, float(t[ia]), "not the first or last frame",
        "the aortic peak is not sampled: it is at the " + ("first" if ia == 0 else "last") + " frame"
        if not ok else "aortic peak sampled", ms("ALP", "TLP", "HPI") + dm(*ALL)))
    ok = 0 < ip < n - 1
    out.append(AcquisitionCheck(
        "portal venous peak sampled", ok, float(t[ip]), "not the first or last frame",
        "the portal venous peak is not sampled: it is at the " + ("first" if ip == 0 else "last") + " frame"
        if not ok else "portal venous peak sampled", ms("PVP", "TLP", "HPI") + dm(*ALL)))
    after = n - 1 - ip
    drop = float((portal[ip] - portal[ip:].min()) / portal[ip]) if portal[ip] > 0 else 0.0
    ok = after >= MIN_SAMPLES_AFTER_PORTAL_PEAK and drop >= MIN_PORTAL_WASHOUT_FRACTION
    out.append(AcquisitionCheck(
        "portal peak and wash-out covered", ok, round(float(t[-1] - t[ip]), 2),
        f">= {MIN_SAMPLES_AFTER_PORTAL_PEAK} frames after the portal peak, falling >= "
        f"{100 * MIN_PORTAL_WASHOUT_FRACTION:.0f} %",
        f"the series ends {t[-1] - t[ip]:.1f} s ({after} frames) after the portal peak, the portal curve falls "
        f"{100 * drop:.0f} % by then: wash-out not covered" if not ok else "portal peak and wash-out covered",
        dm("DV", "MTT")))
    dt = round(float(t[-1] - t[0]) / (n - 1), 1)
    ok = dt <= MAX_SAMPLING_INTERVAL_S + 1e-6
    out.append(AcquisitionCheck(
        "sampling interval", ok, dt, f"<= {MAX_SAMPLING_INTERVAL_S:g} s (mean interval)",
        f"frames {dt:.1f} s apart (on average; limit {MAX_SAMPLING_INTERVAL_S:g} s): slopes and the first pass are "
        "not resolved" if not ok else "sampling interval within the limit", ms(*ALL[:4]) + dm(*ALL)))
    fwhm, (start, end) = _fwhm_s(t, aorta), _fwhm_window(t, aorta)
    # the frames spanning the first pass at half maximum: the last one at or before its start to the first one at
    # or after its end
    i0 = int(np.searchsorted(t, start, side="right")) - 1
    i1 = int(np.searchsorted(t, end, side="left"))
    span = t[max(i0, 0):min(i1, n - 1) + 1]
    dt_bolus = float(np.diff(span).mean()) if span.size > 1 else dt
    ratio = fwhm / dt_bolus
    ok = ratio >= MIN_SAMPLES_PER_BOLUS_FWHM
    out.append(AcquisitionCheck(
        "aortic bolus resolved for the model", ok, round(ratio, 2),
        f">= {MIN_SAMPLES_PER_BOLUS_FWHM:g} samples across its full width at half maximum",
        f"the aortic first pass ({fwhm:.1f} s wide at half maximum) is sampled every {dt_bolus:.1f} s "
        f"({ratio:.1f} samples across it): the model's flows depend on its unknown shape between samples"
        if not ok else "aortic bolus resolved", dm(*ALL)))
    if residual_motion_mm is not None:
        ok = residual_motion_mm <= MAX_RESIDUAL_MOTION_MM
        out.append(AcquisitionCheck(
            "residual motion after correction", ok, round(float(residual_motion_mm), 2),
            f"<= {MAX_RESIDUAL_MOTION_MM:g} mm",
            f"the liver still moves by up to {residual_motion_mm:.1f} mm between frames after motion correction: "
            "voxel curves mix neighbouring tissues" if not ok else "residual motion within the limit",
            ms(*ALL[:4]) + dm(*ALL)))
    return out
