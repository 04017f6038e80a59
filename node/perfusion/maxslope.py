"""Dual-input maximum slope (science.md 1a; the clinical reference method of the CT perfusion paper).

Discrete convention (the phantom's max-slope truth uses exactly this one on noiseless curves):

* enhancement C(t) = HU(t) - mean HU of the pre-contrast frames;
* tissue curves are smoothed in time with the binomial kernel [1, 2, 1] / 4 over neighbouring samples (the
  first and last sample: [2, 1] / 3 and [1, 2] / 3), the temporal smoothing production software applies
  before slopes are taken (science.md 1a); the input curves (aorta, portal vein, spleen) are region means and
  are used as sampled;
* slopes are forward differences of consecutive smoothed samples, s_i = (C'[i+1] - C'[i]) / (t[i+1] - t[i]);
* t_spl = time of the maximum sample of the spleen curve;
* interval i is arterial if t[i+1] <= t_spl, portal if t[i] >= t_spl;
* ALP = 6000 * max(arterial s_i) / max(C_aorta); PVP = 6000 * max(portal s_i) / max(C_portal);
  TLP = ALP + PVP; HPI = 100 * ALP / TLP  (mL/min/100 mL and %).

A tissue that does not rise in a phase has no measurable inflow in it: negative maxima (noise) are reported as 0.

Noise: the maximum of noisy slopes is biased upwards (the largest of several noisy values), and spatial
averaging of the resulting map does not remove that bias. When curves to choose on are given (`select`: the
pipeline gives each voxel's tissue-class mean curve, node.perfusion.tissue_classes), the steepest interval of
each phase is chosen on them and the slope is read at that interval from the voxel's own (denoised) curve: the
same convention on noiseless data, without the bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.perfusion.errors import InputCurveError

#: mL/min/100 mL per (1/s): x 60 s/min x 100 mL
FLOW_SCALE = 6000.0
_CHUNK = 1 << 20  # voxels per chunk: bounds the (T-1, N) slope array to ~60 MB


@dataclass(frozen=True)
class MaxSlopeInputs:
    """What the maps need from the input curves."""

    t_spl: float  # s, time of the splenic peak sample
    aorta_peak_hu: float  # max enhancement of the aorta
    portal_peak_hu: float  # max enhancement of the portal vein


def phase_windows(times: np.ndarray, t_spl: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the T-1 sampling intervals: (arterial, portal). Raises if either phase is empty."""
    t = np.asarray(times, dtype=float)
    arterial = t[1:] <= t_spl + 1e-9
    portal = t[:-1] >= t_spl - 1e-9
    if not arterial.any():
        raise InputCurveError(f"max slope: the splenic peak ({t_spl:.1f} s) is at the first time point; no "
                              "arterial phase was sampled (acquisition started too late?)")
    if not portal.any():
        raise InputCurveError(f"max slope: the splenic peak ({t_spl:.1f} s) is at the last time point; no portal "
                              "phase was sampled (acquisition too short?)")
    return arterial, portal


def temporal_smooth(enh: np.ndarray) -> np.ndarray:
    """Curves (T, ...) smoothed along time with [1, 2, 1] / 4; end samples [2, 1] / 3 and [1, 2] / 3.

    The kernel is in samples, not seconds: with non-uniform spacing every sample still weighs its two
    neighbours equally, which is what the phantom's max-slope truth does too.
    """
    c = np.asarray(enh)
    if c.dtype.kind != "f":
        c = c.astype(np.float64)
    if c.shape[0] < 3:
        return c.copy()
    out = np.empty_like(c)
    out[1:-1] = (c[:-2] + 2 * c[1:-1] + c[2:]) / 4
    out[0] = (2 * c[0] + c[1]) / 3
    out[-1] = (c[-2] + 2 * c[-1]) / 3
    return out


def slope_operator(times: np.ndarray) -> np.ndarray:
    """(T-1, T) matrix taking sampled curves to the convention's slopes (smoothing, then forward differences).

    Its rows' norms are how the slopes scale independent sample noise (used for the noise floor)."""
    t = np.asarray(times, dtype=np.float64)
    smooth = temporal_smooth(np.eye(t.size))
    return np.diff(smooth, axis=0) / np.diff(t)[:, None]


def forward_slopes(enh: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(T-1, ...) slopes in HU/s between consecutive samples of enhancement curves (T, ...)."""
    dt = np.diff(np.asarray(times, dtype=np.float64)).astype(np.float32)
    return np.diff(enh, axis=0) / dt.reshape((-1,) + (1,) * (enh.ndim - 1))


def _phase_max(s: np.ndarray, window: np.ndarray, sel: np.ndarray | None) -> np.ndarray:
    """Max over the intervals of `window` of slopes s (T-1, N), at the interval chosen on `sel` if given."""
    if sel is None:
        return s[window].max(axis=0)
    idx = np.argmax(np.where(window[:, None], sel, -np.inf), axis=0)
    return np.take_along_axis(s, idx[None], axis=0)[0]


def max_slope_maps(enh: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs,
                   select: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """ALP, PVP, TLP (mL/min/100 mL) and HPI (%) for enhancement curves `enh` of shape (T, N) (unsmoothed:
    the temporal smoothing of the convention is applied here).

    `select` (same shape, e.g. class mean curves) picks the steepest interval per phase (see module doc).
    """
    if inputs.aorta_peak_hu <= 0 or inputs.portal_peak_hu <= 0:
        raise InputCurveError("max slope: an input curve does not enhance (peak <= 0 HU)")
    arterial, portal = phase_windows(times, inputs.t_spl)
    n = enh.shape[1]
    alp = np.empty(n, dtype=np.float32)
    pvp = np.empty(n, dtype=np.float32)
    for a in range(0, n, _CHUNK):
        s = forward_slopes(temporal_smooth(enh[:, a:a + _CHUNK]), times)
        sel = forward_slopes(temporal_smooth(select[:, a:a + _CHUNK]), times) if select is not None else None
        alp[a:a + _CHUNK] = _phase_max(s, arterial, sel)
        pvp[a:a + _CHUNK] = _phase_max(s, portal, sel)
    alp = np.maximum(alp, 0) * np.float32(FLOW_SCALE / inputs.aorta_peak_hu)
    pvp = np.maximum(pvp, 0) * np.float32(FLOW_SCALE / inputs.portal_peak_hu)
    tlp = alp + pvp
    hpi = np.where(tlp > 0, 100.0 * alp / np.where(tlp > 0, tlp, 1), 0).astype(np.float32)
    return {"ALP": alp, "PVP": pvp, "TLP": tlp, "HPI": hpi}


def curve_max_slope(curve: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs) -> dict[str, float]:
    """The same parameters for one curve (e.g. a region mean), as floats."""
    maps = max_slope_maps(np.asarray(curve, dtype=np.float32)[:, None], times, inputs)
    return {k: float(v[0]) for k, v in maps.items()}
