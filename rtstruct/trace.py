"""Exact voxel-edge tracing of binary masks into closed rectilinear polygons.

Every boundary edge between a foreground and a background pixel becomes a unit-length directed edge between
voxel corners, oriented so that its pixel stays on the same side (pixel (0, 0) alone gives the loop
(-.5,-.5) -> (-.5,.5) -> (.5,.5) -> (.5,-.5)). Edges are chained into closed loops; at a corner shared by two
diagonal foreground pixels the walk turns back around the pixel it came from, so foreground is 4-connected and
loops never cross. Only the corners are kept, which removes every collinear point.

Because the loops are exactly the boundary of the mask, an even-odd (XOR) point-in-polygon test at the pixel
centres of all loops of a slice gives the mask back exactly: holes come out as separate inner loops and islands
as separate outer loops. The chaining is vectorised: each edge's successor is found by a sorted-key lookup and
the loops are ordered by pointer jumping (O(n log n) numpy work for n boundary edges, no Python loop per edge).
"""
from __future__ import annotations

import numpy as np

# Edge directions in (row, col): 0 = +col, 1 = +row, 2 = -col, 3 = -row. Going around one pixel the direction
# index increases by one at each corner, so (d + 1) % 4 is the turn that stays with the pixel just passed.
_DROW = np.array([0, 1, 0, -1])
_DCOL = np.array([1, 0, -1, 0])


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Directed boundary edges of a (K, R, C) mask as (slice, start row, start col, direction) in corner indices.

    Corner index (r, c) is the voxel corner at pixel coordinates (r - 0.5, c - 0.5).
    """
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    above, below = p[:, :-1, 1:-1], p[:, 1:, 1:-1]   # pixels either side of horizontal edge (r, c)-(r, c+1)
    left, right = p[:, 1:-1, :-1], p[:, 1:-1, 1:]    # pixels either side of vertical edge (r, c)-(r+1, c)
    parts = []
    for sel, dr, dc, d in (
        (below & ~above, 0, 0, 0),   # top edge of a pixel: (r, c) -> (r, c+1)
        (above & ~below, 0, 1, 2),   # bottom edge: (r, c+1) -> (r, c)
        (left & ~right, 0, 0, 1),    # right edge: (r, c) -> (r+1, c)
        (right & ~left, 1, 0, 3),    # left edge: (r+1, c) -> (r, c)
    ):
        k, r, c = np.nonzero(sel)
        parts.append((k, r + dr, c + dc, np.full(k.size, d)))
    return tuple(np.concatenate(col) for col in zip(*parts, strict=True))


def _jump_rounds(n: int) -> int:
    """Pointer-jumping rounds that cover a cycle of up to n elements."""
    return max(1, int(np.ceil(np.log2(max(n, 2)))))


def trace_loops(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Trace the voxel-edge boundary of a (K, R, C) boolean mask.

    Returns one (slice index, corners) pair per closed loop; corners is an (n >= 4, 2) float array of
    (row, col) pixel coordinates at half-integers, without repeating the first point, in deterministic order
    (slices ascending, each loop starting at its top-left corner). Outer boundaries and hole boundaries run in
    opposite senses.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (slices, rows, cols), got shape {mask.shape}")
    k, r, c, d = _boundary_edges(mask)
    n = k.size
    if n == 0:
        return []
    nr, nc = mask.shape[1] + 1, mask.shape[2] + 1

    def slot(kk: np.ndarray, rr: np.ndarray, cc: np.ndarray, dd: np.ndarray) -> np.ndarray:
        return ((kk * nr + rr) * nc + cc) * 4 + dd

    # Edge ids are positions in start-slot order, so a successor lookup is a binary search.
    key = slot(k, r, c, d)
    order = np.argsort(key)
    k, r, c, d, key = k[order], r[order], c[order], d[order], key[order]
    er, ec = r + _DROW[d], c + _DCOL[d]
    nxt = np.full(n, -1)
    for turn in (1, 0, 3):  # stay with the pixel, straight on, turn away: the first existing edge wins
        want = slot(k, er, ec, (d + turn) % 4)
        pos = np.minimum(np.searchsorted(key, want), n - 1)
        hit = (nxt < 0) & (key[pos] == want)
        nxt[hit] = pos[hit]
    if np.any(nxt < 0):  # cannot happen for a boundary: every corner has as many edges in as out
        raise AssertionError("open boundary while tracing mask")

    rounds = _jump_rounds(n)
    # Label each loop by its smallest edge id (pointer jumping: after m rounds a label covers 2**m edges).
    label, jump = np.arange(n), nxt.copy()
    for _ in range(rounds):
        label = np.minimum(label, label[jump])
        jump = jump[jump]
    # Cut each loop before its label edge and rank edges by distance to the cut (Wyllie list ranking).
    tail = nxt == label
    dist = (~tail).astype(np.int64)
    jump = np.where(tail, np.arange(n), nxt)
    for _ in range(rounds):
        dist = dist + dist[jump]
        jump = jump[jump]
    walk = np.lexsort((-dist, label))  # loop by loop, each from its label edge onwards

    label, d = label[walk], d[walk]
    starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
    ends = np.r_[starts[1:], n]
    prev = np.arange(n) - 1
    prev[starts] = ends - 1
    corner = d != d[prev]  # direction changes here: a corner, anything else is collinear
    verts = np.column_stack([r[walk], c[walk]]).astype(float) - 0.5
    kept_counts = np.add.reduceat(corner.astype(np.int64), starts)
    pieces = np.split(verts[corner], np.cumsum(kept_counts)[:-1])
    return list(zip(k[walk][starts].tolist(), pieces, strict=True))


def trace_slice(mask2d: np.ndarray, max_points: int) -> list[np.ndarray]:
    """Loops of one slice with at most `max_points` corners each.

    A slice whose loops are too long is cut in two along a voxel boundary through the middle of the longest
    loop's bounding box (across its longer side) and each half is traced again, recursively. The halves are
    disjoint sets of voxels, so the XOR of all pieces' interiors still equals the mask exactly; the pieces share
    edges on the cut line, where no voxel centre lies.
    """
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    loops = [v for _, v in trace_loops(mask2d[None])]
    longest = max(loops, key=len, default=None)
    if longest is None or len(longest) <= max_points:
        return loops
    lo, hi = longest.min(axis=0), longest.max(axis=0)
    axis = int(np.argmax(hi - lo))
    cut = int(np.floor((lo[axis] + hi[axis]) / 2)) + 1  # first pixel index of the second half
    first, second = mask2d.copy(), mask2d.copy()
    if axis == 0:
        first[cut:], second[:cut] = False, False
    else:
        first[:, cut:], second[:, :cut] = False, False
    return trace_slice(first, max_points) + trace_slice(second, max_points)
