"""Dual-input single-compartment model (science.md 1b; Materne 2000), fitted per voxel by linear least squares.

    dC_L/dt = k1a * C_a(t - tau_a) + k1p * C_pv(t - tau_p) - k2 * C_L(t)

is integrated from the first sample: C_L(t) = k1a * A(t) + k1p * P(t) - k2 * L(t), with A, P the running
integrals of the delayed input curves (piecewise-linear between samples, integrated exactly) and L the running
trapezoidal integral of the tissue curve. For each voxel the 3 x 3 normal equations are solved in closed form
(Cramer's rule on stacked arrays: no Python loop over voxels, no exception on a singular voxel). Delays are
either fixed or chosen per voxel from a small grid by the least residual sum of squares.

Outputs: ALP = 6000 k1a, PVP = 6000 k1p (mL/min/100 mL), HPI = 100 k1a/(k1a+k1p) (%),
distribution volume DV = 100 (k1a+k1p)/k2 (%), MTT = 1/k2 (s). Negative rate constants (noise, no uptake) are
set to 0; DV and MTT are 0 where k2 <= 0 and capped at DV_MAX / MTT_MAX so a map never holds inf.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.perfusion.maxslope import FLOW_SCALE

DV_MAX_PCT = 100.0
MTT_MAX_S = 300.0
_CHUNK = 1 << 19  # voxels per chunk


@dataclass(frozen=True)
class DiscmFit:
    """Per-voxel parameters (N,) and the delays (s) used for each voxel."""

    k1a: np.ndarray  # 1/s
    k1p: np.ndarray  # 1/s
    k2: np.ndarray  # 1/s
    tau_a: np.ndarray
    tau_p: np.ndarray
    rss: np.ndarray  # residual sum of squares, HU^2


def delayed_integral(curve: np.ndarray, times: np.ndarray, tau: float, step: float = 0.05) -> np.ndarray:
    """Running integral, sampled at `times`, of `curve` delayed by `tau` s (linear between samples).

    Before the first sample the delayed curve holds its first value (the baseline, ~0 after subtraction).
    """
    t = np.asarray(times, dtype=float)
    c = np.asarray(curve, dtype=float)
    fine = np.union1d(np.arange(t[0], t[-1], step), t)
    vals = np.interp(fine - tau, t, c, left=c[0], right=c[-1])
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (vals[1:] + vals[:-1]) * np.diff(fine))])
    return np.interp(t, fine, cum)


def running_trapezoid(curves: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Running trapezoidal integral over axis 0 of (T, N) curves, starting at 0."""
    dt = np.diff(np.asarray(times, dtype=np.float64)).astype(np.float32)[:, None]
    out = np.zeros_like(curves, dtype=np.float32)
    np.cumsum(0.5 * (curves[1:] + curves[:-1]) * dt, axis=0, out=out[1:])
    return out


def _solve(a: np.ndarray, p: np.ndarray, y: np.ndarray, integ: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least squares of y ~ k1a a + k1p p - k2 L for all voxels: returns k1a, k1p, k2, rss (each (N,))."""
    a64, p64 = a.astype(np.float64), p.astype(np.float64)
    aa, ap, pp = a64 @ a64, a64 @ p64, p64 @ p64
    al, pl = (a64 @ integ).astype(np.float64), (p64 @ integ).astype(np.float64)
    ll = np.einsum("tn,tn->n", integ, integ, dtype=np.float64)
    ay, py = (a64 @ y).astype(np.float64), (p64 @ y).astype(np.float64)
    ly = np.einsum("tn,tn->n", integ, y, dtype=np.float64)
    # M x = b with x = (k1a, k1p, k2); M = [[aa, ap, -al], [ap, pp, -pl], [-al, -pl, ll]], b = (ay, py, -ly).
    # Cofactors of the symmetric M:
    c00 = pp * ll - pl * pl
    c01 = -(ap * ll - pl * al)
    c02 = ap * (-pl) - pp * (-al)
    c11 = aa * ll - al * al
    c12 = -(aa * (-pl) - ap * (-al))
    c22 = aa * pp - ap * ap
    det = aa * c00 + ap * c01 + (-al) * c02
    scale = np.abs(aa * pp * ll) + 1e-30
    ok = np.abs(det) > 1e-10 * scale
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    b0, b1, b2 = ay, py, -ly
    k1a = (c00 * b0 + c01 * b1 + c02 * b2) * inv_det
    k1p = (c01 * b0 + c11 * b1 + c12 * b2) * inv_det
    k2 = (c02 * b0 + c12 * b1 + c22 * b2) * inv_det
    resid = y - np.outer(a, k1a).astype(np.float32) - np.outer(p, k1p).astype(np.float32) \
        + integ * k2.astype(np.float32)
    rss = np.einsum("tn,tn->n", resid, resid, dtype=np.float64)
    return k1a, k1p, k2, rss


def fit_discm(enh: np.ndarray, times: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
              delays_a: Sequence[float] = (0.0,), delays_p: Sequence[float] = (0.0,)) -> DiscmFit:
    """Fit the DISCM to tissue enhancement curves `enh` (T, N) with input curves `aorta`, `portal` (T,).

    Each voxel gets the (tau_a, tau_p) pair from the grid with the least residual; one pair = fixed delays.
    """
    enh = np.asarray(enh, dtype=np.float32)
    n = enh.shape[1]
    ints_a = {ta: delayed_integral(aorta, times, ta).astype(np.float32) for ta in delays_a}
    ints_p = {tp: delayed_integral(portal, times, tp).astype(np.float32) for tp in delays_p}
    out = {k: np.zeros(n) for k in ("k1a", "k1p", "k2", "tau_a", "tau_p")}
    out["rss"] = np.full(n, np.inf)
    for s in range(0, n, _CHUNK):
        y = enh[:, s:s + _CHUNK]
        integ = running_trapezoid(y, times)
        sl = slice(s, s + y.shape[1])
        for ta, ia in ints_a.items():
            for tp, ip in ints_p.items():
                k1a, k1p, k2, rss = _solve(ia, ip, y, integ)
                better = rss < out["rss"][sl]
                for key, val in (("k1a", k1a), ("k1p", k1p), ("k2", k2), ("rss", rss)):
                    out[key][sl] = np.where(better, val, out[key][sl])
                out["tau_a"][sl] = np.where(better, ta, out["tau_a"][sl])
                out["tau_p"][sl] = np.where(better, tp, out["tau_p"][sl])
    return DiscmFit(**out)


def discm_maps(fit: DiscmFit) -> dict[str, np.ndarray]:
    """ALP, PVP (mL/min/100 mL), HPI (%), DV (%), MTT (s) as float32 maps from a fit."""
    k1a = np.maximum(fit.k1a, 0.0)
    k1p = np.maximum(fit.k1p, 0.0)
    k2 = fit.k2
    total = k1a + k1p
    pos = k2 > 0
    hpi = np.where(total > 0, 100.0 * k1a / np.where(total > 0, total, 1.0), 0.0)
    dv = np.where(pos, 100.0 * total / np.where(pos, k2, 1.0), 0.0)
    mtt = np.where(pos, 1.0 / np.where(pos, k2, 1.0), 0.0)
    return {
        "ALP": (FLOW_SCALE * k1a).astype(np.float32),
        "PVP": (FLOW_SCALE * k1p).astype(np.float32),
        "HPI": hpi.astype(np.float32),
        "DV": np.clip(dv, 0, DV_MAX_PCT).astype(np.float32),
        "MTT": np.clip(mtt, 0, MTT_MAX_S).astype(np.float32),
    }
