"""Ground truth derived from the analytic phantom: radiotherapy volumes, mask files, curve tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from node.phantom.curves import CurveSet, Kinetics, max_slope, sample
from node.phantom.geometry import Grid, Rigid

FLS_THRESHOLD = 0.60
PTV_MARGIN_MM = 5.0


def map_volume(src: np.ndarray, src_grid: Grid, dst_grid: Grid, dst_to_src: Rigid) -> np.ndarray:
    """Trilinear resampling of `src` onto `dst_grid`; `dst_to_src` maps destination patient coordinates to
    source patient coordinates. Outside the source field the value is 0."""
    out = np.empty(dst_grid.shape, np.float64)
    for k, points in dst_grid.iter_slices():
        idx = src_grid.to_index(dst_to_src.apply(points))
        out[k] = map_coordinates(src, np.moveaxis(idx, -1, 0), order=1, mode="constant", cval=0.0)
    return out


def rt_volumes(mapped_spect: np.ndarray, liver: np.ndarray, grid: Grid,
               threshold: float = FLS_THRESHOLD, margin_mm: float = PTV_MARGIN_MM) -> dict[str, np.ndarray]:
    """FLS = mapped SPECT >= threshold x its maximum, inside the liver; ITV = liver - FLS;
    PTV = ITV grown by `margin_mm` with a Euclidean distance transform on the physical voxel spacing."""
    fls = (mapped_spect >= threshold * float(mapped_spect.max())) & liver
    itv = liver & ~fls
    return {"fls": fls, "itv": itv, "ptv": grow(itv, grid.spacing, margin_mm)}


def grow(mask: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Voxels whose centre lies within `margin_mm` (Euclidean, physical spacing) of a voxel of `mask`.

    The distance transform runs on the mask's bounding box padded by the margin (same result, far less
    memory on a 512x512 CT)."""
    out = np.zeros_like(mask, dtype=bool)
    if not mask.any():
        return out
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[box] = distance_transform_edt(~mask[box], sampling=spacing) <= margin_mm
    return out


def curve_tables(curves: CurveSet, times_s: np.ndarray, kinetics: dict[str, Kinetics],
                 baseline_hu: dict[str, float]) -> dict:
    """JSON block with sampled and fine noiseless curves, model parameters and max-slope values."""
    sampled = {"aorta": sample(curves.t_fine, curves.aorta, times_s),
               "portal_vein": sample(curves.t_fine, curves.portal_vein, times_s),
               "spleen": sample(curves.t_fine, curves.spleen, times_s)}
    sampled.update({name: sample(curves.t_fine, c, times_s) for name, c in curves.tissues.items()})
    regions = {}
    for name, k in kinetics.items():
        ms = max_slope(times_s, sampled[name], sampled["aorta"], sampled["portal_vein"], sampled["spleen"])
        regions[name] = {
            "baseline_hu": baseline_hu[name],
            "model": {
                "alp_ml_min_100ml": k.alp_ml_min_100ml, "pvp_ml_min_100ml": k.pvp_ml_min_100ml,
                "tlp_ml_min_100ml": k.alp_ml_min_100ml + k.pvp_ml_min_100ml, "hpi_percent": k.hpi_percent,
                "k1a_per_s": k.k1a_per_s, "k1p_per_s": k.k1p_per_s, "k2_per_s": k.k2_per_s,
                "distribution_volume": k.distribution_volume, "mtt_s": 1.0 / k.k2_per_s,
                "tau_a_s": 0.0, "tau_p_s": 0.0,
            },
            "max_slope": {"alp_ml_min_100ml": ms["alp"], "pvp_ml_min_100ml": ms["pvp"],
                          "tlp_ml_min_100ml": ms["tlp"], "hpi_percent": ms["hpi"]},
        }
    for name in ("aorta", "portal_vein", "spleen"):
        regions[name] = {"baseline_hu": baseline_hu[name]}
    t_spl = float(times_s[int(np.argmax(sampled["spleen"]))])
    return {
        "time_s": [float(t) for t in times_s],
        "enhancement_hu": {n: [float(v) for v in c] for n, c in sampled.items()},
        "fine": {
            "dt_s": float(curves.t_fine[1] - curves.t_fine[0]),
            "time_s": [round(float(t), 6) for t in curves.t_fine],
            "enhancement_hu": {n: [round(float(v), 6) for v in c] for n, c in
                               {"aorta": curves.aorta, "portal_vein": curves.portal_vein,
                                "spleen": curves.spleen, **curves.tissues}.items()},
        },
        "t_spl_s": t_spl,
        "aorta_peak_sample_hu": float(np.max(sampled["aorta"])),
        "portal_peak_sample_hu": float(np.max(sampled["portal_vein"])),
        "regions": regions,
    }


def save_masks(path: Path, grid: Grid, masks: dict[str, np.ndarray], **extra: np.ndarray) -> None:
    """npz with boolean masks (k, row, col), the grid affine and any extra arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(m, bool) for name, m in masks.items()}
    np.savez_compressed(path, affine_kij_to_patient=grid.affine, **arrays, **extra)
