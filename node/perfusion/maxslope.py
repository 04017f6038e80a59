"""Dual-input maximum slope (science.md 1a; Miles, Blomley): the clinical reference method, as the textbook defines it.

Discrete definition (the phantoms' max-slope truth is this, computed by their own code on noiseless curves):

* enhancement C(t) = HU(t) - mean HU of the pre-contrast frames;
* slopes between consecutive samples, s_i = (C[i+1] - C[i]) / (t[i+1] - t[i]): no temporal smoothing (a
  smoothing kernel carries the portal rise into the arterial window and lowers peaks, so it changes what is
  measured even without noise: about +12 % ALP, -12 % PVP on a normal liver);
* t_spl = time of the maximum sample of the spleen curve;
* interval i is arterial if t[i+1] <= t_spl, portal if t[i] >= t_spl;
* ALP = 6000 * max(arterial s_i) / max(C_aorta); PVP = 6000 * max(portal s_i) / max(C_portal);
  TLP = ALP + PVP; HPI = 100 * ALP / TLP  (mL/min/100 mL and %).

Voxel maps keep a negative maximum (a voxel whose noise outweighs its rise) as it is: clipping it at 0 would
bias every region mean of the map upwards (by ~20 % where the voxel noise is as large as the slope). A region's
own curve, which carries little noise, reports a negative maximum as 0 (no measurable inflow). HPI is NaN where
TLP <= 0 and limited to 0-100 %.

Noise: the maximum of noisy slopes is biased upwards (the largest of several noisy values), and spatial
averaging of the resulting map does not remove that bias. When curves to choose on are given (`select`: the
pipeline gives each voxel's tissue-class mean curve, node.perfusion.tissue_classes), the steepest interval of
each phase is chosen on them and the slope is read at that interval from the voxel's own (spatially denoised)
curve: the same definition on noiseless data, without the bias. Noise reduction is spatial only
(node.perfusion.denoise), so it never changes what is measured on noiseless data.
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


def slope_operator(times: np.ndarray) -> np.ndarray:
    """(T-1, T) matrix taking sampled curves to the slopes between consecutive samples (HU/s per HU).

    Row i is how slope i weighs the samples: its norm is how the slope scales independent sample noise
    (sqrt(2) / (t[i+1] - t[i])), used for the values' 1-SD noise."""
    t = np.asarray(times, dtype=np.float64)
    return np.diff(np.eye(t.size), axis=0) / np.diff(t)[:, None]


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
    """ALP, PVP, TLP (mL/min/100 mL) and HPI (%) for enhancement curves `enh` of shape (T, N).

    `select` (same shape, e.g. class mean curves) picks the steepest interval per phase (see module doc).
    """
    if inputs.aorta_peak_hu <= 0 or inputs.portal_peak_hu <= 0:
        raise InputCurveError("max slope: an input curve does not enhance (peak <= 0 HU)")
    arterial, portal = phase_windows(times, inputs.t_spl)
    n = enh.shape[1]
    alp = np.empty(n, dtype=np.float32)
    pvp = np.empty(n, dtype=np.float32)
    for a in range(0, n, _CHUNK):
        s = forward_slopes(enh[:, a:a + _CHUNK], times)
        sel = forward_slopes(select[:, a:a + _CHUNK], times) if select is not None else None
        alp[a:a + _CHUNK] = _phase_max(s, arterial, sel)
        pvp[a:a + _CHUNK] = _phase_max(s, portal, sel)
    alp *= np.float32(FLOW_SCALE / inputs.aorta_peak_hu)
    pvp *= np.float32(FLOW_SCALE / inputs.portal_peak_hu)
    tlp = alp + pvp
    hpi = np.where(tlp > 0, np.clip(100.0 * alp / np.where(tlp > 0, tlp, 1), 0.0, 100.0), np.nan).astype(np.float32)
    return {"ALP": alp, "PVP": pvp, "TLP": tlp, "HPI": hpi}


def curve_max_slope(curve: np.ndarray, times: np.ndarray, inputs: MaxSlopeInputs) -> dict[str, float]:
    """The same parameters for one curve (e.g. a region mean), as floats; a negative maximum is no inflow (0)."""
    maps = max_slope_maps(np.asarray(curve, dtype=np.float32)[:, None], times, inputs)
    alp, pvp = max(float(maps["ALP"][0]), 0.0), max(float(maps["PVP"][0]), 0.0)
    tlp = alp + pvp
    return {"ALP": alp, "PVP": pvp, "TLP": tlp, "HPI": 100.0 * alp / tlp if tlp > 0 else float("nan")}
