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
from scipy.cluster.vq import kmeans2, vq

#: Classes of curve shape; enough that tumours, liver, spleen remnants and partial-volume mixtures separate.
N_CLASSES = 24
_FIT_SAMPLE = 200_000  # voxels the centroids are fitted on (all are assigned)
COMPONENTS = 4


def principal_axes(curves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve (T, 1) and first `k` principal axes (T, k), largest variance first, of (T, N) curves (fitted
    on at most _FIT_SAMPLE of them)."""
    sample = curves[:, :: max(1, curves.shape[1] // _FIT_SAMPLE)]
    mean = sample.mean(axis=1, keepdims=True)
    _, vecs = np.linalg.eigh((sample - mean) @ (sample - mean).T)
    return mean, vecs[:, ::-1][:, :k]


def curve_classes(curves: np.ndarray, n_classes: int = N_CLASSES, seed: int = 0) -> np.ndarray:
    """Class label (N,) of each of the (T, N) curves: k-means on their first COMPONENTS principal components."""
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
    labels, _ = vq(coords, centroids)
    return labels


def class_mean_curves(curves: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(T, N) where column i is the mean curve of voxel i's class."""
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    means = np.stack([np.bincount(labels, weights=row, minlength=n_classes) for row in curves])
    means /= np.maximum(counts, 1.0)
    return means[:, labels].astype(np.float32)
