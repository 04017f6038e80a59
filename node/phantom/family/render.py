"""Images and truth of a family case: label volume, noiseless curves, HU frames, and the independent truth.

Geometry: axial slices, row direction +x (patient left), column direction +y (posterior), slices ascending in z
(the order rtstruct.sort_slices uses). Each voxel takes the value of the region that contains its centre (no
partial volume). Noise: white Gaussian, independent per voxel and frame.

Truth (`truth(spec)`):
* model: the DISCM parameters the curves were made with;
* max-slope: the textbook maximum slope (kinetics.textbook_max_slope) on the region's noiseless sampled curve;
* floor: the 1-SD noise of each region value over the region (N voxels, noise SD sigma): for the maximum slope
  the linear propagation through the steepest intervals (sqrt(2) sigma / dt / sqrt(N) for an interval of length
  dt), for the model the Cramer-Rao bound sigma^2 / N (J^T J)^-1 of the five parameters (k1a, k1p, k2, tau_a,
  tau_p) from finite differences of this module's own model. Relative to the value; this is how well any
  unbiased method can know the value at this noise.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.phantom.family import kinetics as K
from node.phantom.family.case import BASELINE_HU, LAYOUTS, CaseSpec

LABELS = {"air": 0, "fat": 1, "soft_tissue": 2, "bone": 3, "spleen": 4, "liver_parenchyma": 5, "portal_vein": 6,
          "aorta": 7}
LESION_LABEL0 = 10
TAIL_S = 5.0  # the fine curves run this long past the last frame


@dataclass(frozen=True)
class Curves:
    """Noiseless enhancement (HU) on the fine grid and at the acquisition times, per region name."""

    fine_t: np.ndarray
    fine: dict[str, np.ndarray]
    times: np.ndarray
    sampled: dict[str, np.ndarray]


def region_kinetics(spec: CaseSpec) -> dict[str, K.TissueParams]:
    out = {"liver_parenchyma": spec.liver}
    out.update({les.name: les.kinetics for les in spec.lesions})
    return out


def curves(spec: CaseSpec) -> Curves:
    times = np.asarray(spec.times_s, float)
    t = K.fine_grid(times[-1] + TAIL_S)
    ca = K.aorta(t, spec.inputs)
    cpv = K.portal_vein(t, ca, spec.inputs)
    fine = {"aorta": ca, "portal_vein": cpv, "spleen": K.spleen(ca, spec.inputs)}
    fine.update({name: K.tissue(ca, cpv, k) for name, k in region_kinetics(spec).items()})
    return Curves(t, fine, times, {name: K.sample(c, times) for name, c in fine.items()})


# ------------------------------------------------------------------ anatomy
def grid_axes(spec: CaseSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centre coordinates (mm) along x (columns), y (rows) and z (slices)."""
    xy = (np.arange(spec.rows) - (spec.rows - 1) / 2.0) * spec.pixel_mm
    z = (np.arange(spec.n_slices) + 0.5) * spec.slice_mm
    return xy, xy.copy(), z


def labels(spec: CaseSpec) -> np.ndarray:
    """uint8 label volume (slice, row, column)."""
    lay = LAYOUTS[spec.layout]
    x, y, z = grid_axes(spec)
    xx, yy = np.meshgrid(x, y)  # (rows, columns)
    plane = np.full(xx.shape, LABELS["air"], np.uint8)
    for organ, name in ((lay.body, "fat"), (lay.body_inner, "soft_tissue"), (lay.spine, "bone"),
                        (lay.spleen, "spleen"), (lay.liver, "liver_parenchyma"), (lay.portal_vein, "portal_vein"),
                        (lay.aorta, "aorta")):
        plane[organ.inside(xx, yy)] = LABELS[name]
    vol = np.repeat(plane[None], spec.n_slices, axis=0)
    for n, les in enumerate(spec.lesions):
        cx, cy, cz = les.centre_mm
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        for k, zk in enumerate(z):
            r2 = les.radius_mm ** 2 - (zk - cz) ** 2
            if r2 > 0:
                vol[k][(d2 <= r2) & (vol[k] == LABELS["liver_parenchyma"])] = LESION_LABEL0 + n
    return vol


def masks(spec: CaseSpec, label_volume: np.ndarray) -> dict[str, np.ndarray]:
    out = {name: label_volume == LABELS[name] for name in ("liver_parenchyma", "aorta", "portal_vein", "spleen")}
    out.update({les.name: label_volume == LESION_LABEL0 + n for n, les in enumerate(spec.lesions)})
    return out


def _baselines(spec: CaseSpec) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for name, value in BASELINE_HU.items():
        if name in LABELS:
            lut[LABELS[name]] = value
    lut[LABELS["liver_parenchyma"]] = spec.liver_baseline_hu
    for n, les in enumerate(spec.lesions):
        lut[LESION_LABEL0 + n] = les.baseline_hu
    return lut


def _enhancement_luts(spec: CaseSpec, c: Curves) -> np.ndarray:
    """(T, 256) enhancement per label and frame."""
    lut = np.zeros((len(spec.times_s), 256), np.float32)
    for name in ("aorta", "portal_vein", "spleen", "liver_parenchyma"):
        lut[:, LABELS[name]] = c.sampled[name]
    for n, les in enumerate(spec.lesions):
        lut[:, LESION_LABEL0 + n] = c.sampled[les.name]
    return lut


def frames_hu(spec: CaseSpec, label_volume: np.ndarray | None = None,
              c: Curves | None = None) -> Iterator[np.ndarray]:
    """The HU volume (slice, row, column) of every frame, in time order, with the case's noise.

    Noiseless cases carry a static sub-0.1 HU dither per voxel, so that the stored rounding averages out over a
    region instead of biasing every voxel of it alike (the images are stored in 1/16 HU then).
    """
    lab = labels(spec) if label_volume is None else label_volume
    c = curves(spec) if c is None else c
    base = _baselines(spec)[lab]
    rng = np.random.default_rng([spec.seed, 7])
    if spec.noise_hu <= 0:
        base += rng.uniform(-0.5, 0.5, base.shape).astype(np.float32) / 16.0
    enh = _enhancement_luts(spec, c)
    for ti in range(len(spec.times_s)):
        frame = base + enh[ti][lab]
        if spec.noise_hu > 0:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(spec.noise_hu)
        yield frame


# ------------------------------------------------------------------ truth
_PARAMS = ("ALP", "PVP", "TLP", "HPI")


def _derived(k1a: float, k1p: float, k2: float) -> np.ndarray:
    alp, pvp = K.FLOW_SCALE * k1a, K.FLOW_SCALE * k1p
    return np.array([alp, pvp, alp + pvp, 100.0 * alp / (alp + pvp), 100.0 * (k1a + k1p) / k2, 1.0 / k2])


def _model_samples(spec: CaseSpec, c: Curves, theta: np.ndarray) -> np.ndarray:
    k1a, k1p, k2, ta, tp = theta
    drive = k1a * K.shifted(c.fine["aorta"], ta) + k1p * K.shifted(c.fine["portal_vein"], tp)
    return K.sample(K.compartment(drive, k2), c.times)


def discm_floor(spec: CaseSpec, c: Curves, k: K.TissueParams, sigma_mean: float) -> dict[str, float]:
    """Cramer-Rao 1-SD of ALP, PVP, TLP, HPI, DV, MTT (absolute) for a curve with noise `sigma_mean` per sample."""
    theta = np.array([k.k1a, k.k1p, k.k2, k.tau_a_s, k.tau_p_s])
    steps = np.array([1e-3 * max(k.k1a, 1e-4), 1e-3 * max(k.k1p, 1e-4), 1e-3 * k.k2, 0.02, 0.02])
    jac = np.empty((len(c.times), 5))
    for i, h in enumerate(steps):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        jac[:, i] = (_model_samples(spec, c, up) - _model_samples(spec, c, down)) / (2 * h)
    cov = sigma_mean ** 2 * np.linalg.pinv(jac.T @ jac)
    g = np.empty((6, 5))
    for i, h in enumerate(steps[:3]):
        up, down = theta[:3].copy(), theta[:3].copy()
        up[i] += h
        down[i] -= h
        g[:, i] = (_derived(*up) - _derived(*down)) / (2 * h)
    g[:, 3:] = 0.0
    sd = np.sqrt(np.maximum(np.diag(g @ cov @ g.T), 0.0))
    return dict(zip(("ALP", "PVP", "TLP", "HPI", "DV", "MTT"), (float(v) for v in sd), strict=True))


def max_slope_floor(c: Curves, ms: dict[str, float], sigma_mean: float, tissue_key: str) -> dict[str, float]:
    """1-SD of ALP, PVP, TLP, HPI (absolute) of the textbook max slope at its steepest intervals (linear noise
    propagation: each value is a fixed linear combination of the samples once the intervals are chosen)."""
    t = c.times
    n = t.size
    pa, pp = float(np.max(c.sampled["aorta"])), float(np.max(c.sampled["portal_vein"]))
    wa, wp = np.zeros(n), np.zeros(n)
    ia, ip = int(ms["arterial_interval"]), int(ms["portal_interval"])
    wa[ia + 1], wa[ia] = 1 / (t[ia + 1] - t[ia]), -1 / (t[ia + 1] - t[ia])
    wp[ip + 1], wp[ip] = 1 / (t[ip + 1] - t[ip]), -1 / (t[ip + 1] - t[ip])
    wa *= K.FLOW_SCALE / pa
    wp *= K.FLOW_SCALE / pp
    alp, pvp = ms["ALP"], ms["PVP"]
    tlp = alp + pvp
    w_hpi = 100.0 * (wa * pvp - wp * alp) / tlp ** 2 if tlp > 0 else np.zeros(n)
    out = {}
    for name, w in (("ALP", wa), ("PVP", wp), ("TLP", wa + wp), ("HPI", w_hpi)):
        out[name] = float(sigma_mean * np.linalg.norm(w))
    return out


def truth(spec: CaseSpec, label_volume: np.ndarray | None = None, c: Curves | None = None) -> dict[str, Any]:
    """The case's truth (JSON-ready): see the module docstring."""
    lab = labels(spec) if label_volume is None else label_volume
    c = curves(spec) if c is None else c
    regions_k = region_kinetics(spec)
    kinds = {"liver_parenchyma": "normal liver"} | {les.name: les.kind for les in spec.lesions}
    radii = {les.name: les.radius_mm for les in spec.lesions}
    counts = {name: int(m.sum()) for name, m in masks(spec, lab).items()}
    regions = {}
    for name, k in regions_k.items():
        n_vox = counts[name]
        sigma_mean = spec.noise_hu / np.sqrt(max(n_vox, 1))
        ms = K.textbook_max_slope(c.times, c.sampled[name], c.sampled["aorta"], c.sampled["portal_vein"],
                                  c.sampled["spleen"])
        model = k.as_dict()
        ms_floor = max_slope_floor(c, ms, sigma_mean, name)
        dm_floor = discm_floor(spec, c, k, sigma_mean)
        regions[name] = {
            "kind": kinds[name], "radius_mm": radii.get(name), "voxels": n_vox,
            "volume_ml": round(n_vox * spec.voxel_ml, 3),
            "model": model,
            "max-slope": {p: ms[p] for p in _PARAMS} | {k_: ms[k_] for k_ in ("arterial_interval", "portal_interval",
                                                                                 "arterial_dt_s", "portal_dt_s")},
            "floor_sd": {"max-slope": ms_floor, "discm": dm_floor},
            "floor_relative": {
                "max-slope": {p: (ms_floor[p] / abs(ms[p]) if ms[p] else float("inf")) for p in _PARAMS},
                "discm": {p: dm_floor[p] / abs(model[p]) for p in ("ALP", "PVP", "TLP", "HPI", "DV", "MTT")}},
        }
    return {
        "description": spec.describe(),
        "seed": spec.seed, "layout": spec.layout,
        "times_s": [float(t) for t in c.times],
        "noise_hu": spec.noise_hu, "noise_hu_at_0.78mm": round(spec.noise_hu_at_078, 3),
        "voxel_mm": [spec.slice_mm, spec.pixel_mm, spec.pixel_mm], "voxel_ml": spec.voxel_ml,
        "t_spl_s": float(c.times[int(np.argmax(c.sampled["spleen"]))]),
        "aorta_peak_sample_hu": float(np.max(c.sampled["aorta"])),
        "portal_peak_sample_hu": float(np.max(c.sampled["portal_vein"])),
        "aorta_peak_time_s": float(c.times[int(np.argmax(c.sampled["aorta"]))]),
        "portal_peak_time_s": float(c.times[int(np.argmax(c.sampled["portal_vein"]))]),
        "inputs": {"parameters": spec.inputs.__dict__,
                   "enhancement_hu": {n: [float(v) for v in c.sampled[n]] for n in ("aorta", "portal_vein",
                                                                                   "spleen")}},
        "enhancement_hu": {n: [float(v) for v in c.sampled[n]] for n in regions_k},
        "regions": regions,
    }
