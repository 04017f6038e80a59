"""Dual-input single-compartment model (science.md 1b; Materne 2000), fitted as the convolution model it is.

    dC/dt = k1a Ca(t - tau_a) + k1p Cpv(t - tau_p) - k2 C(t),  C(0) = 0
    C(t)  = k1a (Ca(. - tau_a) * e^{-k2 t})(t) + k1p (Cpv(. - tau_p) * e^{-k2 t})(t)

Inputs: the sampled aortic and portal enhancement curves, interpolated by a cubic spline (not-a-knot) onto a
fine grid (FINE_STEP_S) and zero before the first frame; delays are continuous (the input is evaluated at
t - tau, not shifted by whole samples). The convolution with e^{-k2 t} is computed on the fine grid by the
exponential integrator (exact for an input linear between fine points), then read at the acquisition times.
A spline was chosen over linear interpolation because the tissue curve depends on the area of the input
between samples: at 3-4 s sampling, linear interpolation cuts the aortic peak and moves the arterial flow of a
normal liver by 5-30 %; a spline by a few % (measured on the phantom family; README "Known limits").

Estimator (not the integrated linear form, whose running integral of the noisy tissue curve is a regressor with
error in it and biases k2 and the flows under noise): nonlinear least squares by variable projection. For given
k2 and delays the model is linear in (k1a, k1p), solved in closed form with k1a, k1p >= 0; only k2 and the
delays are searched:

* curves that carry little noise (a region's mean curve; the mean curve of a tissue class) get all five
  parameters: a grid over (tau_a, tau_p, k2) with the flows in closed form, then a bounded Levenberg-Marquardt
  refinement of (k2, tau_a, tau_p) from the best grid point of each basin (the residual is a narrow valley
  along which the two delays trade off, with more than one minimum), and the parameters' covariance from the
  model's Jacobian (the values' 1-SD);
* voxels take their tissue class's k2 and delays (fitted on the class's practically noiseless mean curve) and
  get their own flows by linear least squares: unbiased under noise, whereas a per-voxel search over k2 is
  not (nonlinear in the noise: -8 % on a normal liver's mean ALP at 1 HU of voxel noise, phantom family). The
  DV and MTT maps therefore hold one k2 per class (tissue), the flow maps vary voxel by voxel.

Outputs: ALP = 6000 k1a, PVP = 6000 k1p (mL/min/100 mL), TLP, HPI = 100 k1a/(k1a+k1p) (%), distribution volume
DV = 100 (k1a+k1p)/k2 (%), MTT = 1/k2 (s). Where the model cannot be fitted (no uptake), values are NaN.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import Akima1DInterpolator, CubicSpline, PchipInterpolator
from scipy.signal import lfilter

from node.perfusion.firstpass import first_pass_interpolant, recirculating_interpolant
from node.perfusion.maxslope import FLOW_SCALE

FINE_STEP_S = 0.1
#: k2 search range (1/s): MTT from 0.3 s to 500 s; a log grid for the curve fits' first search
K2_RANGE = (0.002, 3.0)
COARSE_K2 = np.geomspace(*K2_RANGE, 40)
#: delays searched (s): blood reaches the liver after the aortic / portal ROI, within a few seconds
DELAY_RANGE_S = (0.0, 6.0)
DELAY_GRID_S = np.arange(0.0, 6.01, 0.5)
START_SEPARATION_S = 1.0
_CHUNK = 1 << 18  # voxels per chunk
PARAMETERS = ("ALP", "PVP", "TLP", "HPI", "DV", "MTT")


Maker = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
_SPLINE: Maker = lambda t, y: CubicSpline(t, y)  # noqa: E731
_PCHIP: Maker = lambda t, y: PchipInterpolator(t, y)  # noqa: E731
_MAKIMA: Maker = lambda t, y: Akima1DInterpolator(t, y, method="makima")  # noqa: E731
#: interpolants of the sampled inputs (aortic, portal): the cubic spline the model uses, and four others that pass
#: through the same samples, to measure how much a value depends on the inputs' unknown shape between samples
#: (input_dependence): two local ones (shape-preserving monotone cubic; modified Akima) and two that put a bolus
#: where a bolus is (node.perfusion.firstpass): a gamma-variate first pass with a recirculation fitted to every
#: sample of each input, and a gamma-variate first pass fitted to the aortic first pass alone (the portal curve, a
#: bolus dispersed through the splanchnic bed, has no first pass apart from its plateau: it keeps the spline).
#: The portal shape matters as much as the aortic one: the normal liver's minor (arterial) inflow takes up what
#: the portal interpolation gets wrong.
INTERPOLANTS: dict[str, tuple[Maker, Maker]] = {
    "spline": (_SPLINE, _SPLINE),
    "pchip": (_PCHIP, _PCHIP),
    "makima": (_MAKIMA, _MAKIMA),
    "gamma-variate": (first_pass_interpolant, _SPLINE),
    "gamma-variate+recirculation": (recirculating_interpolant, recirculating_interpolant),
}


class Convolver:
    """Model basis curves (input delayed, convolved with e^{-k2 t}, read at the acquisition times)."""

    def __init__(self, times: np.ndarray, aorta: np.ndarray, portal: np.ndarray, step: float = FINE_STEP_S,
                 interpolant: str = "spline") -> None:
        self.times = np.asarray(times, dtype=np.float64)
        self.step = step
        self.grid = np.arange(0.0, self.times[-1] + step, step)
        self.inputs = (np.asarray(aorta, float), np.asarray(portal, float))
        make_a, make_p = INTERPOLANTS[interpolant]
        self._splines = {"a": make_a(self.times, self.inputs[0]), "p": make_p(self.times, self.inputs[1])}
        pos = np.clip(self.times / step, 0, self.grid.size - 1.000001)
        self._lo = np.floor(pos).astype(int)
        self._w = pos - self._lo
        self.interpolant = interpolant
        self._cache: dict[tuple[str, float], np.ndarray] = {}
        self._coarse_kernels: np.ndarray | None = None
        self._alternatives: dict[str, Convolver] = {}

    def alternative(self, interpolant: str) -> Convolver:
        """The same inputs through another of INTERPOLANTS (built once: the model-based shapes are fits)."""
        if interpolant == self.interpolant:
            return self
        if interpolant not in self._alternatives:
            self._alternatives[interpolant] = Convolver(self.times, *self.inputs, step=self.step,
                                                        interpolant=interpolant)
        return self._alternatives[interpolant]

    def delayed(self, which: str, tau: float) -> np.ndarray:
        """The input `which` ('a' or 'p') at t - tau on the fine grid; zero before the first frame."""
        key = (which, round(float(tau), 6))
        if key not in self._cache:
            x = self.grid - tau
            inside = x >= self.times[0]
            vals = np.where(inside, self._splines[which](np.clip(x, self.times[0], self.times[-1])), 0.0)
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = vals
        return self._cache[key]

    def _sample(self, fine: np.ndarray) -> np.ndarray:
        return fine[..., self._lo] * (1.0 - self._w) + fine[..., self._lo + 1] * self._w

    def convolved(self, drive: np.ndarray, k2: float) -> np.ndarray:
        """(drive * e^{-k2 t}) at the acquisition times, for drive on the fine grid (exact if linear between
        fine points)."""
        h = self.step
        e = np.exp(-k2 * h)
        w_next = (h / k2 - (1.0 - e) / k2 ** 2) / h
        w_prev = (1.0 - e) / k2 - w_next
        rhs = np.concatenate([[0.0], w_prev * drive[:-1] + w_next * drive[1:]])
        return self._sample(lfilter([1.0], [1.0, -e], rhs))

    def kernels(self, k2s: np.ndarray) -> np.ndarray:
        """(K, T, G) matrices taking an input on the fine grid (G,) to its convolution with e^{-k2 t} at the
        acquisition times, for every k2 of `k2s` (the exponential integrator of `convolved`, written out)."""
        h = self.step
        n = np.concatenate([self._lo, self._lo + 1])[:, None]  # the fine rows the times are read from
        g = np.arange(self.grid.size)[None, :]
        lag = n - g
        out = np.empty((len(k2s), self.times.size, self.grid.size))
        for i, k2 in enumerate(np.atleast_1d(k2s)):
            e = np.exp(-k2 * h)
            w_next = (h / k2 - (1.0 - e) / k2 ** 2) / h
            w_prev = (1.0 - e) / k2 - w_next
            with np.errstate(over="ignore"):
                rows = (np.where(lag >= 1, w_prev * e ** (lag - 1.0), 0.0)
                        + np.where((lag >= 0) & (g >= 1), w_next * e ** lag.astype(float), 0.0))
            t = self.times.size
            out[i] = rows[:t] * (1.0 - self._w)[:, None] + rows[t:] * self._w[:, None]
        return out

    @property
    def coarse_kernels(self) -> np.ndarray:
        """kernels(COARSE_K2), computed once."""
        if self._coarse_kernels is None:
            self._coarse_kernels = self.kernels(COARSE_K2)
        return self._coarse_kernels

    def bases(self, which: str, taus: np.ndarray, k2s: np.ndarray, kernels: np.ndarray | None = None) -> np.ndarray:
        """(n_tau, K, T) basis curves for every delay of `taus` and k2 of `k2s`."""
        m = self.kernels(k2s) if kernels is None else kernels
        u = np.stack([self.delayed(which, float(tau)) for tau in np.atleast_1d(taus)], axis=1)  # (G, n_tau)
        return np.moveaxis(m @ u, -1, 0)

    def basis(self, which: str, tau: float, k2s: np.ndarray) -> np.ndarray:
        """(K, T) basis curves for every k2 of `k2s`."""
        u = self.delayed(which, tau)
        return np.stack([self.convolved(u, float(k)) for k in np.atleast_1d(k2s)])

    def model(self, k1a: float, k1p: float, k2: float, tau_a: float, tau_p: float) -> np.ndarray:
        return self.convolved(k1a * self.delayed("a", tau_a) + k1p * self.delayed("p", tau_p), k2)


def _flows(a: np.ndarray, p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least squares y ~ k1a a + k1p p with k1a, k1p >= 0, for K pairs of bases a, p (K, T) and curves
    y (T, N): k1a, k1p and the residual sum of squares minus |y|^2, each (K, N).

    Closed form: the unconstrained solution where both are >= 0, else the better of the two one-input fits (or
    neither). The residual is returned without the |y|^2 term shared by every candidate of a curve."""
    aa = np.einsum("kt,kt->k", a, a)[:, None]
    ap = np.einsum("kt,kt->k", a, p)[:, None]
    pp = np.einsum("kt,kt->k", p, p)[:, None]
    ay, py = a @ y, p @ y
    det = aa * pp - ap * ap
    good = det > 1e-12 * aa * pp
    det = np.where(good, det, 1.0)
    k1a = np.where(good, (pp * ay - ap * py) / det, -1.0)
    k1p = np.where(good, (aa * py - ap * ay) / det, -1.0)
    rss = -(k1a * ay + k1p * py)
    ok = (k1a >= 0) & (k1p >= 0)
    if not ok.all():
        ka = np.maximum(ay, 0) / np.maximum(aa, 1e-30)
        kp = np.maximum(py, 0) / np.maximum(pp, 1e-30)
        rss_a, rss_p = -ka * ay, -kp * py
        use_a = rss_a <= rss_p
        k1a = np.where(ok, k1a, np.where(use_a, ka, 0.0))
        k1p = np.where(ok, k1p, np.where(use_a, 0.0, kp))
        rss = np.where(ok, rss, np.minimum(rss_a, rss_p))
    return k1a, k1p, rss


@dataclass(frozen=True)
class CurveFit:
    """The five parameters of one curve with their 1-SD (from the fit's Jacobian)."""

    k1a: float
    k1p: float
    k2: float
    tau_a: float
    tau_p: float
    rss: float
    values: dict[str, float]
    sd: dict[str, float]
    converged: bool


def _derived(k1a: float, k1p: float, k2: float) -> np.ndarray:
    total = k1a + k1p
    return np.array([FLOW_SCALE * k1a, FLOW_SCALE * k1p, FLOW_SCALE * total,
                     100.0 * k1a / total if total > 0 else np.nan,
                     100.0 * total / k2 if k2 > 0 else np.nan, 1.0 / k2 if k2 > 0 else np.nan])


def _grid_starts(conv: Convolver, y: np.ndarray, n_starts: int) -> list[tuple[float, float, float]]:
    """The best (k2, tau_a, tau_p) of the delay x k2 grid, at up to `n_starts` distinct delay pairs.

    The residual is a narrow valley along tau_a - tau_p = const (the portal input is a delayed, dispersed copy of
    the aortic one, so the two delays trade off), so several starts are kept, not one."""
    kern = conv.coarse_kernels
    bases_a = conv.bases("a", DELAY_GRID_S, COARSE_K2, kern)  # (n_tau, K, T)
    bases_p = conv.bases("p", DELAY_GRID_S, COARSE_K2, kern).reshape(-1, y.size)  # (n_tau * K, T)
    n_tau, n_k = DELAY_GRID_S.size, COARSE_K2.size
    best_rss = np.empty((n_tau, n_tau))
    best_k = np.empty(best_rss.shape, dtype=int)
    for i in range(n_tau):
        rss = _flows(np.tile(bases_a[i], (n_tau, 1)), bases_p, y[:, None])[2][:, 0].reshape(n_tau, n_k)
        best_k[i] = np.argmin(rss, axis=1)
        best_rss[i] = rss[np.arange(n_tau), best_k[i]]
    starts: list[tuple[float, float, float]] = []
    for flat in np.argsort(best_rss, axis=None):
        i, j = np.unravel_index(flat, best_rss.shape)
        ta, tp = float(DELAY_GRID_S[i]), float(DELAY_GRID_S[j])
        # one start per basin: at least START_SEPARATION_S from every start taken
        if all(max(abs(ta - s[1]), abs(tp - s[2])) >= START_SEPARATION_S for s in starts):
            starts.append((float(COARSE_K2[best_k[i, j]]), ta, tp))
            if len(starts) == n_starts:
                break
    return starts


def _projected(conv: Convolver, y: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Residual and the optimal (non-negative) flows at theta = (k2, tau_a, tau_p)."""
    k2, ta, tp = theta
    a = conv.convolved(conv.delayed("a", ta), k2)
    p = conv.convolved(conv.delayed("p", tp), k2)
    k1a, k1p, _ = _flows(a[None], p[None], y[:, None])
    ka, kp = float(k1a[0, 0]), float(k1p[0, 0])
    return y - ka * a - kp * p, ka, kp


def _levenberg_marquardt(fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                         steps: np.ndarray, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Minimise |fun(x)|^2 within the box [lo, hi]: Levenberg-Marquardt with Marquardt's diagonal scaling, steps
    clipped to the box, forward-difference Jacobian (`steps` per parameter). Few parameters, cheap residuals:
    a plain loop beats a general solver's overhead by an order of magnitude here."""
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    r = fun(x)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(max_iter):
        jac = np.empty((r.size, x.size))
        for i in range(x.size):
            h = steps[i] if x[i] + steps[i] <= hi[i] else -steps[i]
            xi = x.copy()
            xi[i] += h
            jac[:, i] = (fun(xi) - r) / h
        grad = jac.T @ r
        hess = jac.T @ jac
        diag = np.maximum(np.diag(hess), 1e-30)
        improved = False
        for _ in range(12):
            try:
                step = np.linalg.solve(hess + lam * np.diag(diag), -grad)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            x_new = np.clip(x + step, lo, hi)
            r_new = fun(x_new)
            cost_new = float(r_new @ r_new)
            if cost_new < cost:
                improved = True
                done = cost - cost_new <= 1e-12 * max(cost, 1e-30) or np.all(np.abs(x_new - x) <= 1e-9 * (
                    np.abs(x) + steps))
                x, r, cost = x_new, r_new, cost_new
                lam = max(lam / 4.0, 1e-9)
                break
            lam *= 4.0
        if not improved or done:
            break
    return x, cost


def fit_curve(conv: Convolver, curve: np.ndarray, noise_sd: float = 0.0, n_starts: int = 3,
              start: tuple[float, float, float] | None = None) -> CurveFit:
    """All five parameters of one curve: a grid over delays and k2 with closed-form flows, then a bounded
    least-squares refinement of (k2, tau_a, tau_p) with the flows projected out, from the best `n_starts`
    grid points (or from `start` alone, when given). `noise_sd` is the curve's noise per sample (HU); the
    parameters' SD uses the larger of it and the residual RMS (misfit of the model counts as uncertainty too)."""
    y = np.asarray(curve, dtype=np.float64)
    lo = np.array([K2_RANGE[0], DELAY_RANGE_S[0], DELAY_RANGE_S[0]])
    hi = np.array([K2_RANGE[1], DELAY_RANGE_S[1], DELAY_RANGE_S[1]])
    best_x: np.ndarray | None = None
    best_cost = np.inf
    steps = np.array([1e-4, 1e-3, 1e-3])
    for x0 in [start] if start is not None else _grid_starts(conv, y, n_starts):
        x, cost = _levenberg_marquardt(lambda th: _projected(conv, y, th)[0], np.asarray(x0), lo, hi,
                                       steps * np.array([max(x0[0], 1e-3) * 1e2, 1.0, 1.0]))
        if cost < best_cost:
            best_x, best_cost = x, cost
    assert best_x is not None  # _grid_starts gives at least one start, and any cost beats inf
    k2, ta, tp = best_x
    r, k1a, k1p = _projected(conv, y, best_x)
    x = np.array([k1a, k1p, k2, ta, tp])
    rss = float(r @ r)
    # covariance of all five parameters from the model's Jacobian at the solution
    jac = np.empty((y.size, 5))
    for i in range(5):
        h = 1e-4 * max(abs(x[i]), 1e-4) if i < 3 else 1e-3
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        jac[:, i] = (conv.model(*up) - conv.model(*down)) / (2 * h)
    s2 = max(noise_sd ** 2, rss / max(y.size - 5, 1))
    cov = s2 * np.linalg.pinv(jac.T @ jac)
    values = _derived(k1a, k1p, k2)
    g = np.zeros((6, 5))
    for i in range(3):
        h = 1e-4 * max(abs(x[i]), 1e-5)
        up, down = x[:3].copy(), x[:3].copy()
        up[i] += h
        down[i] -= h
        g[:, i] = (_derived(*up) - _derived(*down)) / (2 * h)
    sd = np.sqrt(np.maximum(np.diag(g @ cov @ g.T), 0.0))
    return CurveFit(k1a=float(k1a), k1p=float(k1p), k2=float(k2), tau_a=float(ta), tau_p=float(tp), rss=rss,
                    values=dict(zip(PARAMETERS, (float(v) for v in values), strict=True)),
                    sd=dict(zip(PARAMETERS, (float(v) for v in sd), strict=True)),
                    converged=bool(np.isfinite(best_cost)))


def input_dependence(conv: Convolver, curve: np.ndarray, fit: CurveFit) -> dict[str, float]:
    """An estimate of how far (relative) each value of `fit` may be from the model because the inputs' shape
    between their samples is unknown: (n + 1) / (n - 1) times the spread (largest minus smallest) of the value
    over the n INTERPOLANTS, the others refitted from `fit`'s solution.

    The model sees the inputs only at the samples; between them their shape is assumed, and a minor inflow (the
    normal liver's arterial flow, a hypervascular lesion's portal flow) takes up what the assumed shape gets
    wrong about the major one: at 3-4 s sampling a few % of the value, more when the first pass is barely
    sampled. The interpolants are n plausible shapes through the same samples, and the true one is another: the
    spread of n draws underestimates the width of what is plausible, whose unbiased estimate from n draws of a
    uniform spread is (n + 1) / (n - 1) times their range (1.5 for n = 5); the value of the true shape may lie
    anywhere in that width, so the width is the bound. Local interpolants alone agree with each other, and are
    all wrong, when the bolus arrives inside a long gap (each starts the rise right after the last baseline
    sample); the model-based shapes do not share that error. Validated on first passes that are not gamma
    variates (bench/accuracy.py --first-pass). A value whose estimate exceeds the model's tolerance is not known
    to it (node.perfusion.qualify)."""
    values = {p: [fit.values[p]] for p in PARAMETERS}
    for name in INTERPOLANTS:
        if name == conv.interpolant:
            continue
        alt = fit_curve(conv.alternative(name), curve, start=(fit.k2, fit.tau_a, fit.tau_p))
        for p in PARAMETERS:
            values[p].append(alt.values[p])
    n = len(INTERPOLANTS)
    out = {}
    for p, vs in values.items():
        v = fit.values[p]
        ok = all(np.isfinite(w) for w in vs) and v != 0
        out[p] = float((n + 1) / (n - 1) * (max(vs) - min(vs)) / abs(v)) if ok else float("inf")
    return out


@dataclass
class VoxelFit:
    """Per-voxel parameters (N,)."""

    k1a: np.ndarray
    k1p: np.ndarray
    k2: np.ndarray


def voxel_flows(conv: Convolver, y: np.ndarray, k2: float, tau_a: float, tau_p: float) -> VoxelFit:
    """k1a, k1p of every curve y (T, N) for the given k2 and delays: linear least squares in closed form,
    unbiased under noise (unlike a per-voxel search over k2, which moved a normal liver's mean ALP by -8 % at
    1 HU of voxel noise on the phantom family). Not constrained to >= 0: a voxel's noise may make a small flow
    negative, and cutting those off would bias region means of the map upwards."""
    a = conv.convolved(conv.delayed("a", tau_a), k2)
    p = conv.convolved(conv.delayed("p", tau_p), k2)
    gram = np.array([[a @ a, a @ p], [a @ p, p @ p]])
    solve = np.linalg.pinv(gram) @ np.stack([a, p])  # (2, T)
    flows = solve @ np.asarray(y, dtype=np.float64)
    return VoxelFit(flows[0], flows[1], np.full(y.shape[1], float(k2)))


def voxel_maps(fit: VoxelFit) -> dict[str, np.ndarray]:
    """ALP, PVP, TLP (mL/min/100 mL), HPI (%, limited to 0-100), DV (%), MTT (s) as float32; HPI, DV and MTT are
    NaN where there is no uptake (k1a + k1p <= 0)."""
    total = fit.k1a + fit.k1p
    up = total > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        hpi = np.where(up, np.clip(100.0 * fit.k1a / total, 0.0, 100.0), np.nan)
        dv = np.where(up, 100.0 * total / fit.k2, np.nan)
        mtt = np.where(up, 1.0 / fit.k2, np.nan)
    return {"ALP": (FLOW_SCALE * fit.k1a).astype(np.float32), "PVP": (FLOW_SCALE * fit.k1p).astype(np.float32),
            "TLP": (FLOW_SCALE * total).astype(np.float32), "HPI": hpi.astype(np.float32),
            "DV": dv.astype(np.float32), "MTT": mtt.astype(np.float32)}
