"""Even-odd rasterisation of planar polygons at pixel centres, vectorised over all edges of all polygons.

For every pixel row the crossings of the polygon edges with the row's centre line are found (half-open rule, so
a vertex exactly on the line counts once); each crossing toggles every pixel whose centre lies to its right.
XOR-accumulating the toggles along the row gives the even-odd inside test for all polygons of a slice at once,
which is how readers combine holes and islands (contours of one slice are XORed).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fill_polygons(slice_index: Sequence[int], polygons: Sequence[np.ndarray],
                  shape: tuple[int, int, int]) -> np.ndarray:
    """Boolean (K, R, C) mask of the pixel centres inside the XOR of the polygons on each slice.

    `polygons[i]` is an (n, 2) array of (row, col) pixel coordinates on slice `slice_index[i]`; it is closed
    implicitly (last point joins the first). Polygons may extend beyond the grid.
    """
    n_slices, n_rows, n_cols = shape
    out = np.zeros(shape, dtype=bool)
    if len(polygons) == 0:
        return out
    starts = np.concatenate([np.asarray(p, dtype=float) for p in polygons])
    ends = np.concatenate([np.roll(np.asarray(p, dtype=float), -1, axis=0) for p in polygons])
    kk = np.repeat(np.asarray(slice_index, dtype=np.int64), [len(p) for p in polygons])
    r0, c0, r1, c1 = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]
    # Rows j with min(r0, r1) <= j < max(r0, r1), clipped to the grid; horizontal edges cross no row.
    lo = np.maximum(np.ceil(np.minimum(r0, r1)), 0).astype(np.int64)
    hi = np.minimum(np.ceil(np.maximum(r0, r1)) - 1, n_rows - 1).astype(np.int64)
    counts = np.maximum(hi - lo + 1, 0)
    edge = np.repeat(np.arange(len(kk)), counts)
    if edge.size == 0:
        return out
    row = lo[edge] + np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    x = c0[edge] + (row - r0[edge]) * (c1[edge] - c0[edge]) / (r1[edge] - r0[edge])
    first_right = np.clip(np.floor(x).astype(np.int64) + 1, 0, n_cols)  # first pixel centre right of x
    flat = (kk[edge] * n_rows + row) * (n_cols + 1) + first_right
    where, times = np.unique(flat, return_counts=True)
    toggles = np.zeros((n_slices, n_rows, n_cols + 1), dtype=bool)
    toggles.reshape(-1)[where[times % 2 == 1]] = True
    return np.logical_xor.accumulate(toggles, axis=2)[:, :, :n_cols]
