"""Tissue classes by curve shape, for choosing the steepest interval of the maximum slope robustly.

The maximum-slope convention takes, per phase, the steepest of several sampling intervals. Choosing it on a
voxel's own noisy curve biases the result upwards (the largest of several noisy slopes), and choosing it on a
smoothed copy of the same curve still does (the copy carries much of the same noise). Here voxels are grouped
by the shape of their (denoised) curves with k-means (N_CLASSES classes in the curves' principal components);
each class's mean curve, averaged over hundreds to thousands of voxels, is practically noiseless and decides
the steepest interval for its members. Each voxel's value is then its own slope at that interval, so the mean
over a region of one tissue is exactly the slope of the region's mean curve: no selection bias.

A tumour whose curves differ from the liver's forms its own class(es); a voxel on a boundary joins the class
whose shape it is closest to.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2

#: Classes of curve shape; enough that tumours, liver, spleen remnants and partial-volume mixtures separate.
N_CLASSES = 24
_FIT_SAMPLE = 100_000  # voxels the centroids are fitted on (all are assigned)
COMPONENTS = 4
#: classes whose centroids all lie within this many noise SDs (per coordinate) of each other are one tissue
MERGE_DIAMETER_SD = 4.0


def principal_axes(curves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve (T, 1) and first `k` principal axes (T, k), largest variance first, of (T, N) curves (fitted
    on at most _FIT_SAMPLE of them)."""
    sample = curves[:, :: max(1, curves.shape[1] // _FIT_SAMPLE)]
    mean = sample.mean(axis=1, keepdims=True)
    _, vecs = np.linalg.eigh((sample - mean) @ (sample - mean).T)
    return mean, vecs[:, ::-1][:, :k]


def curve_noise(curves: np.ndarray) -> float:
    """Noise per sample (HU SD) of (T, N) curves, from the pair of consecutive frames that differ least (robust:
    median absolute deviation; before the bolus two frames differ by noise only)."""
    sample = curves[:, :: max(1, curves.shape[1] // _FIT_SAMPLE)].astype(np.float64)
    d = np.diff(sample, axis=0)
    mad = np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)
    return float(mad.min() / 0.6745 / np.sqrt(2.0))


def curve_classes(curves: np.ndarray, n_classes: int = N_CLASSES, seed: int = 0,
                  noise_sd: float | None = None) -> np.ndarray:
    """Class label (N,) of each of the (T, N) curves: k-means on their first COMPONENTS principal components,
    then classes whose centroids all lie within MERGE_DIAMETER_SD x the curves' noise of each other merged
    (complete linkage).

    Why the merge: k-means cuts one large tissue (the liver) into several classes along its noise; each such
    class's mean then carries its members' common noise, and a steepest interval chosen on it is biased towards
    its members' own noise again (measured: 40 % of the bias of choosing on each voxel's own curve, with 24
    classes over three tissues). Classes one tissue was cut into lie within a few noise SDs of each other;
    distinct tissues lie many apart. `noise_sd` defaults to curve_noise(curves)."""
    n = curves.shape[1]
    if n <= n_classes:
        return np.arange(n)
    mean, basis = principal_axes(curves, COMPONENTS)
    coords = ((curves - mean).T @ basis).astype(np.float64)  # (N, K), in HU: major shape differences dominate
    fit = coords[:: max(1, n // _FIT_SAMPLE)]
    # never more classes than distinct shapes (noiseless data): k-means++ needs a new distinct point per class
    k = min(n_classes, len(np.unique(np.round(fit, 3), axis=0)))
    with warnings.catch_warnings():  # a class may still come out empty; that is harmless
        warnings.simplefilter("ignore", UserWarning)
        centroids, _ = kmeans2(fit, k, minit="++", seed=seed)
    labels = nearest_centroid(coords.astype(np.float32), centroids.astype(np.float32))
    sigma = curve_noise(curves) if noise_sd is None else float(noise_sd)
    if sigma > 0 and k > 1:
        groups = fcluster(linkage(centroids, method="complete"), MERGE_DIAMETER_SD * sigma, criterion="distance")
        labels = (groups - 1)[labels]
    return labels


def nearest_centroid(coords: np.ndarray, centroids: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Index of the nearest centroid (K, D) of every point (N, D): |x - c|^2 = |c|^2 - 2 x.c + |x|^2, the last term
    the same for every centroid (a matrix product instead of scipy's pairwise distances, several times faster)."""
    c2 = (centroids ** 2).sum(axis=1)
    out = np.empty(coords.shape[0], dtype=np.int64)
    for a in range(0, coords.shape[0], chunk):
        out[a:a + chunk] = np.argmin(c2[None, :] - 2.0 * (coords[a:a + chunk] @ centroids.T), axis=1)
    return out


def class_curves(curves: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve (K, T) and voxel count (K,) of every class of the (T, N) curves."""
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.stack([np.bincount(labels, weights=row, minlength=n_classes) for row in curves], axis=1)
    return sums / np.maximum(counts, 1)[:, None], counts


def class_mean_curves(curves: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(T, N) where column i is the mean curve of voxel i's class."""
    means, _ = class_curves(curves, labels)
    return means.T[:, labels].astype(np.float32)
