"""An independent implementation of the dual-input one-compartment model to check the node's fit against:
dcmri's two-inlet liver model (dcmri.conc_liver, kinetics "2I-EC", hematocrit 0 so that concentrations are the
enhancement curves as they are), fitted here with scipy's least squares.

dcmri's parameters map onto the node's: k1a = Fp fa, k1p = Fp (1 - fa), k2 = Fp / ve; its arterial transit Ta is
the arterial delay. Its model has no portal delay: the portal input is delayed with dcmri's own plug-flow
system (dcmri.flux_plug) before it is handed over, and that delay is fitted too.
The inputs are given on the same 0.1 s grid as the node uses, from the same sampled curves by a cubic spline
(the choice of interpolation is part of "identical curves"; the convolution, the delays and the fit are
dcmri's and scipy's).
"""
from __future__ import annotations

import itertools

import dcmri
import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares

STEP_S = 0.1


def _fine_input(times: np.ndarray, samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    spline = CubicSpline(times, samples)
    return np.where(grid >= times[0], spline(np.clip(grid, times[0], times[-1])), 0.0)


def dcmri_fit(times: np.ndarray, aorta: np.ndarray, portal: np.ndarray, tissue: np.ndarray) -> dict[str, float]:
    """ALP, PVP (mL/min/100 mL), k2 (1/s), tau_a, tau_p (s) of `tissue` by dcmri's model, best of several
    starts."""
    t = np.asarray(times, float)
    grid = np.arange(0.0, t[-1] + STEP_S, STEP_S)
    ca, cv = _fine_input(t, aorta, grid), _fine_input(t, portal, grid)
    y = np.asarray(tissue, float)

    def model(x: np.ndarray) -> np.ndarray:
        fp, fa, ve, ta, tp = x
        cv_delayed = dcmri.flux_plug(cv, tp, t=grid)
        conc = dcmri.conc_liver(ca, t=grid, cv=cv_delayed, H=0.0, ve=ve, Fp=fp, fa=fa, Ta=ta)
        return np.interp(t, grid, conc)

    best = None
    for ta, tp in itertools.product((0.0, 1.5, 3.0), (0.0, 1.5, 3.0)):
        res = least_squares(lambda x: model(x) - y, [0.015, 0.2, 0.3, ta, tp],
                            bounds=([1e-5, 0.0, 0.01, 0.0, 0.0], [0.2, 1.0, 1.0, 6.0, 6.0]),
                            x_scale=[0.01, 0.1, 0.1, 1.0, 1.0], xtol=1e-12, ftol=1e-12, gtol=1e-12)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    fp, fa, ve, ta, tp = best.x
    return {"ALP": 6000.0 * fp * fa, "PVP": 6000.0 * fp * (1.0 - fa), "k2": fp / ve, "tau_a": ta, "tau_p": tp,
            "rss": 2.0 * float(best.cost)}
