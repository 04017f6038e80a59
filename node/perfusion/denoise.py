"""Edge-preserving noise reduction of enhancement curves: a curve-similarity weighted (bilateral) filter.

A Gaussian blur of a few mm brings CT noise down but mixes the curves of neighbouring tissues: a 12-15 mm
tumour takes on some of the liver's curve, and its maximum slope moves towards the liver's. Here a voxel is
averaged only with neighbours whose *curves* look alike:

1. similarity: the curves are projected onto their first GUIDE_COMPONENTS principal components (the shapes
   perfusion curves differ by; the rest is mostly noise), plus, when given, the native (pre-contrast) HU image
   as one more coordinate, scaled to the same noise. Enhancement alone hardly tells a mixed tumour from the
   liver (their curves differ by ~8 HU RMS, close to the noise), but its native attenuation differs by 10-15 HU,
   an edge the unenhanced CT shows plainly; the native image is filtered with the same weights, so its noise
   falls with the curves';
2. weights: for every neighbour in the 3 x 3 x 3 neighbourhood, w = exp(-max(d2 - E, 0) / E), where d2 is the
   squared distance of the two projections and E its expected value between two neighbours of the *same* tissue,
   measured at every pass from the median d2 (most neighbours are of one tissue, their d2 is noise). Same tissue:
   w ~ 1; liver next to a tumour: d2 >> E, w ~ 0;
3. iterate: each pass replaces a voxel by the weighted mean of itself and its neighbours (inside the tissue
   mask only), the weights recomputed from the curves as they are (an iterated bilateral filter, whose
   similarity sharpens as the noise falls). k passes reach about as far as a Gaussian of sigma sqrt(2k/3)
   voxels, but not across a curve edge. k is the smallest that brings the predicted noise down to
   NOISE_TARGET_HU (at most MAX_PASSES).

A lightly blurred guide was tried first and rejected: its own blur puts gradients into 4-5 voxel tumours that
block their smoothing (measured: half the weights inside a hypovascular tumour).

Spatial only: the temporal smoothing belongs to the maximum-slope convention (maxslope.py, which the phantom's
truth follows too); the DISCM fit sees the samples as filtered here.
The pass itself is a compiled loop (node.perfusion.kernels): 26 neighbours x all time points per voxel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from node.perfusion.kernels import OFFSETS, neighbour_d2_sample, similarity_filter_pass
from node.perfusion.tissue_classes import principal_axes

logger = logging.getLogger(__name__)

#: Noise (HU SD) the filter aims at, and the most passes it may take for that.
NOISE_TARGET_HU = 0.3
MAX_PASSES = 4
#: Principal components of the curves that the similarity is measured on.
GUIDE_COMPONENTS = 4

#: Median of a chi-square variable with k degrees of freedom.
_CHI2_MEDIAN = {1: 0.4549, 2: 1.3863, 3: 2.3660, 4: 3.3567, 5: 4.3515, 6: 5.3481}


@dataclass(frozen=True)
class DenoiseReport:
    """What was done, for the case record."""

    passes: int
    noise_in_hu: float
    predicted_noise_out_hu: float
    components: int
    native_guide: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"method": "curve-similarity weighted 3x3x3 filter (edge-preserving), iterated",
                "passes": self.passes, "noise_in_hu": round(self.noise_in_hu, 3),
                "predicted_noise_out_hu": round(self.predicted_noise_out_hu, 3),
                "similarity_components": self.components, "native_image_in_similarity": self.native_guide}


def _kernel_energy(passes: int) -> float:
    """Sum of squared weights of `passes` 3 x 3 x 3 box passes: the factor white-noise variance is multiplied by
    (the similarity weights make the real filter a little weaker: a prediction, not a guarantee)."""
    n = 2 * passes + 1
    k = np.zeros((n, n, n))
    k[passes, passes, passes] = 1.0
    for _ in range(passes):
        k = ndimage.uniform_filter(k, 3, mode="constant")
    return float((k ** 2).sum())


def passes_for(noise_hu: float) -> tuple[int, float]:
    """Passes needed to bring white noise `noise_hu` to NOISE_TARGET_HU (capped), and the noise predicted."""
    if noise_hu <= NOISE_TARGET_HU:
        return 0, noise_hu
    for k in range(1, MAX_PASSES + 1):
        out = noise_hu * np.sqrt(_kernel_energy(k))
        if out <= NOISE_TARGET_HU:
            break
    return k, float(out)


class CurveFilter:
    """The edge-preserving filter of one series, applied pass by pass; the weights of each pass come from the
    curves as they are at that pass, compared against the noise they carry by then (measured)."""

    def __init__(self, mask: np.ndarray, noise_hu: float, native: np.ndarray | None = None,
                 native_noise_hu: float | None = None) -> None:
        """`native` (Z, Y, X): the pre-contrast HU image, whose noise is `native_noise_hu` (e.g. the frame noise
        / sqrt(number of baseline frames)); it joins the similarity as one more coordinate."""
        self.mask = mask
        self.noise_hu = float(noise_hu)
        self.passes, predicted = passes_for(noise_hu) if mask.any() else (0, noise_hu)
        self.done = 0  # passes applied so far
        self._basis: np.ndarray | None = None
        self._points: np.ndarray | None = None  # mask voxels sampled for the expected distances
        self._native: np.ndarray | None = None
        if native is not None and native_noise_hu and native_noise_hu > 0:
            # scaled so that its noise equals the curves' per component: d2 stays chi-square-like
            self._native = (native * np.float32(self.noise_hu / native_noise_hu) * mask)[None].astype(np.float32)
        self.dof = GUIDE_COMPONENTS + (self._native is not None)
        self.report = DenoiseReport(self.passes, self.noise_hu, float(predicted),
                                    (GUIDE_COMPONENTS if self.passes else 0), self._native is not None)

    def _coefficients(self, enh: np.ndarray) -> np.ndarray:
        """(K, Z, Y, X) coordinates of the curves in their first principal components (fixed at first use), and
        the scaled native image if given."""
        if self._basis is None:
            self._basis = principal_axes(enh[:, self.mask], GUIDE_COMPONENTS)[1].astype(np.float32)
        k = self._basis.shape[1]
        coeff = np.empty((k + (self._native is not None),) + enh.shape[1:], dtype=np.float32)
        np.matmul(self._basis.T, enh.reshape(enh.shape[0], -1), out=coeff[:k].reshape(k, -1))
        if self._native is not None:
            coeff[k] = self._native[0]
        return coeff

    def _expected(self, coeff: np.ndarray) -> np.ndarray:
        """E[d2] per neighbour offset (26,), measured at this pass (see _expected_d2); mirrored offsets share it."""
        if self._points is None:
            idx = np.flatnonzero(self.mask)[::7]
            self._points = np.stack(np.unravel_index(idx, self.mask.shape), axis=1).astype(np.int64)
        d2 = neighbour_d2_sample(coeff, self.mask, self._points, OFFSETS[13:])
        half = np.array([self._expected_d2(row[np.isfinite(row)]) for row in d2], dtype=np.float32)
        return np.concatenate([half[::-1], half])  # OFFSETS[12 - j] mirrors OFFSETS[13 + j]

    def _expected_d2(self, values: np.ndarray) -> float:
        """E[d2] between two neighbours of one tissue, measured: most neighbour pairs are of one tissue, and their
        d2 is noise, chi-square with K degrees of freedom up to scale, so E = median x K / median(chi2_K).

        Measured rather than predicted because after a pass the noise of neighbours is correlated (their
        differences shrink faster than the noise): a predicted E would be too large at first and too small later.
        """
        if values.size < 50:  # a sliver of tissue: fall back on the white-noise prediction
            return max(2.0 * self.dof * self.noise_hu ** 2 * _kernel_energy(self.done), 1e-6)
        return max(float(np.median(values)) * self.dof / _CHI2_MEDIAN[self.dof], 1e-6)

    def run(self, enh: np.ndarray, passes: int) -> None:
        """`passes` more passes over `enh` (T, Z, Y, X) in place; outside the mask the result is 0."""
        if passes <= 0 or self.passes == 0:
            return
        original, acc = enh, np.empty_like(enh)
        native = self._native if self._native is not None else np.zeros((0,) + self.mask.shape, np.float32)
        native_acc = np.empty_like(native)
        for _ in range(passes):
            coeff = self._coefficients(enh)
            similarity_filter_pass(enh, native, coeff, self.mask, OFFSETS, self._expected(coeff), acc, native_acc)
            enh, acc = acc, enh
            native, native_acc = native_acc, native
            if self._native is not None:
                self._native = native  # the next pass's guide uses the native image as filtered so far
            self.done += 1
        if enh is not original:  # odd number of passes: the result is in the scratch array
            original[...] = enh
        logger.info("edge-preserving filter: %d passes done (noise %.2f HU, ~%.2f HU after %d)", self.done,
                    self.noise_hu, self.report.predicted_noise_out_hu, self.passes)


def denoise_within(enh: np.ndarray, mask: np.ndarray, noise_hu: float, native: np.ndarray | None = None,
                   native_noise_hu: float | None = None) -> DenoiseReport:
    """Edge-preserving smoothing of every curve of `enh` (T, Z, Y, X) inside `mask`, in place, with the passes
    the noise needs; `native` (pre-contrast HU, noise `native_noise_hu`) joins the similarity if given. Voxels
    outside the mask are not used and come out as 0."""
    f = CurveFilter(mask, noise_hu, native, native_noise_hu)
    f.run(enh, f.passes)
    return f.report
