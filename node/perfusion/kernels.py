"""Compiled inner loops (numba) of the edge-preserving filter (node.perfusion.denoise): 26 neighbours x all time
points per voxel and pass, which numpy can only do as one pass over the whole 4D array per neighbour and time
point (4-6 x slower on a 512 x 512 x 100 x 15 series, where memory traffic, not arithmetic, set the pace).
Compiled once per machine (cache=True keeps the machine code beside this file).
"""
from __future__ import annotations

import itertools

import numpy as np
from numba import njit, prange

#: the 26 neighbour offsets (dz, dy, dx) of a voxel, as an int array; OFFSETS[i] and OFFSETS[25 - i] are mirrors
OFFSETS = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)], dtype=np.int64)


@njit(cache=True, parallel=True)
def neighbour_d2_sample(coeff: np.ndarray, mask: np.ndarray, points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Squared distance of the guide coefficients (K, Z, Y, X) between each sample point (n, 3) and each of its
    neighbours `offsets` (m, 3); NaN where the neighbour is outside the volume or the mask."""
    k_n, z_n, y_n, x_n = coeff.shape
    out = np.full((offsets.shape[0], points.shape[0]), np.nan, dtype=np.float32)
    for i in prange(points.shape[0]):
        z, y, x = points[i, 0], points[i, 1], points[i, 2]
        for n in range(offsets.shape[0]):
            zz, yy, xx = z + offsets[n, 0], y + offsets[n, 1], x + offsets[n, 2]
            if 0 <= zz < z_n and 0 <= yy < y_n and 0 <= xx < x_n and mask[zz, yy, xx]:
                d2 = 0.0
                for k in range(k_n):
                    d = coeff[k, z, y, x] - coeff[k, zz, yy, xx]
                    d2 += d * d
                out[n, i] = d2
    return out


@njit(cache=True, parallel=True)
def similarity_filter_pass(src: np.ndarray, extra: np.ndarray, coeff: np.ndarray, mask: np.ndarray,
                           offsets: np.ndarray, expected: np.ndarray, dst: np.ndarray,
                           extra_dst: np.ndarray) -> None:
    """One pass of the curve-similarity filter (node.perfusion.denoise): every mask voxel of `src` (C, Z, Y, X)
    becomes the weighted mean of itself (weight 1) and its mask neighbours, w = exp(-max(d2 - E, 0) / E) with d2
    the squared distance of the guide `coeff` (K, Z, Y, X) and E = `expected[n]` for neighbour n. `extra`
    (E, Z, Y, X; e.g. the native image) is filtered with the same weights. Outside the mask the result is 0."""
    c_n, z_n, y_n, x_n = src.shape
    k_n = coeff.shape[0]
    e_n = extra.shape[0]
    m = offsets.shape[0]
    plane = y_n * x_n
    vol = z_n * plane
    s2 = src.reshape(c_n, vol)
    d2_ = dst.reshape(c_n, vol)
    e2 = extra.reshape(e_n, vol)
    ed2 = extra_dst.reshape(e_n, vol)
    g2 = coeff.reshape(k_n, vol)
    m2 = mask.reshape(vol)
    step = np.empty(m, dtype=np.int64)
    for n in range(m):
        step[n] = offsets[n, 0] * plane + offsets[n, 1] * x_n + offsets[n, 2]
    for z in prange(z_n):
        nb = np.empty((x_n, m), dtype=np.int64)  # flat indices of the weighted neighbours of each voxel of a row
        wt = np.empty((x_n, m), dtype=np.float32)
        cnt = np.zeros(x_n, dtype=np.int64)
        inv = np.zeros(x_n, dtype=np.float32)
        for y in range(y_n):
            row = z * plane + y * x_n
            for x in range(x_n):
                p = row + x
                cnt[x] = 0
                if not m2[p]:
                    continue
                norm = np.float32(1.0)
                for n in range(m):
                    zz, yy, xx = z + offsets[n, 0], y + offsets[n, 1], x + offsets[n, 2]
                    if zz < 0 or zz >= z_n or yy < 0 or yy >= y_n or xx < 0 or xx >= x_n:
                        continue
                    q = p + step[n]
                    if not m2[q]:
                        continue
                    d2 = np.float32(0.0)
                    for k in range(k_n):
                        d = g2[k, p] - g2[k, q]
                        d2 += d * d
                    e = expected[n]
                    excess = d2 - e
                    wn = np.float32(np.exp(-excess / e)) if excess > 0 else np.float32(1.0)
                    if wn > 1e-6:
                        nb[x, cnt[x]] = q
                        wt[x, cnt[x]] = wn
                        cnt[x] += 1
                        norm += wn
                inv[x] = 1.0 / norm
            for c in range(c_n):
                for x in range(x_n):
                    p = row + x
                    if not m2[p]:
                        d2_[c, p] = 0.0
                        continue
                    acc = s2[c, p]
                    for j in range(cnt[x]):
                        acc += wt[x, j] * s2[c, nb[x, j]]
                    d2_[c, p] = acc * inv[x]
            for c in range(e_n):
                for x in range(x_n):
                    p = row + x
                    if not m2[p]:
                        ed2[c, p] = 0.0
                        continue
                    acc = e2[c, p]
                    for j in range(cnt[x]):
                        acc += wt[x, j] * e2[c, nb[x, j]]
                    ed2[c, p] = acc * inv[x]
